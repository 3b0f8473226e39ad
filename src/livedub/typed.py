"""Typed records: msgspec Structs whose constraints hold however a record is made.

livedub's wire models (`livedub.protocol`) and its process settings are `Record`s. A record's
fields are declared with types and `msgspec.Meta` constraints (`Annotated[int, Meta(ge=0)]`) and
its cross-field rules in `check()`. Made from data (`Record.parse`, i.e. `msgspec.convert`: strict
types, unknown fields ignored unless the class forbids them) or built in code (`Record(...)`), the
same constraints are enforced and a violation raises `ValidationError` with the field's path.

Why not pydantic: a worker is one process per stream, and pydantic costs ≈ 10 MB of resident
memory per process to import (docs/performance.md); msgspec ≈ 0.3 MB.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Self

import msgspec
import msgspec.inspect as mi

ValidationError = msgspec.ValidationError
"""What an invalid record raises (a `ValueError`); `describe(exc)` splits it into path and reason."""

Meta = msgspec.Meta
NODEFAULT = msgspec.NODEFAULT

_CONVERTING: ContextVar[bool] = ContextVar("livedub_typed_converting", default=False)


class Secret:
    """A credential: `str()`/`repr()` show `**********`; `get_secret_value()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


_FROM_TEXT: tuple[type, ...] = (Path, Secret)
"""Field types a record makes from text, parsed or given in code."""


def _from_text(typ: type, obj: Any) -> Any:
    """`obj` as `typ` (one of `_FROM_TEXT`): text converted, an instance kept, else `obj`."""
    return typ(obj) if isinstance(obj, str) and not isinstance(obj, typ) else obj


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ in _FROM_TEXT and isinstance(obj, str | typ):
        return _from_text(typ, obj)
    raise NotImplementedError(
        f"Expected `{getattr(typ, '__name__', typ)}`, got `{type(obj).__name__}`"
    )


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Secret):
        return str(obj)  # never the value
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


class Record(msgspec.Struct, kw_only=True):
    """Base of every typed record. Subclasses declare fields and may override `check()`."""

    def __post_init__(self) -> None:
        converting = _CONVERTING.get()
        try:
            if not converting:  # msgspec.convert has checked the field constraints already
                _check_fields(self)
                self.check()
            else:  # a record that check() builds in code is checked in full
                token = _CONVERTING.set(False)
                try:
                    self.check()
                finally:
                    _CONVERTING.reset(token)
        except ValidationError:
            raise
        except ValueError as exc:
            if converting:
                raise  # msgspec adds the path
            raise ValidationError(str(exc)) from None

    def check(self) -> None:
        """Cross-field rules: raise `ValueError` with the reason. Runs however the record is made."""

    @classmethod
    def parse(cls, data: Any, *, lax: bool = False) -> Self:
        """`data` (decoded JSON: dicts, lists, str, numbers) as this record, or `ValidationError`.
        Strict by default (no "5" → 5, no 1 → True); `lax` converts strings (env vars, flags)."""
        token = _CONVERTING.set(True)
        try:
            return msgspec.convert(data, cls, strict=not lax, dec_hook=_dec_hook)
        finally:
            _CONVERTING.reset(token)

    def to_builtins(self, *, drop_none: bool = True) -> dict[str, Any]:
        """JSON-ready dict of the record (enums as values); fields that are None left out."""
        out = msgspec.to_builtins(self, enc_hook=_enc_hook)
        result: dict[str, Any] = _drop_none(out) if drop_none else out
        return result

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, checked like a new record."""
        return msgspec.structs.replace(self, **changes)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# --- field introspection (constraints, docs) ------------------------------------------------------


@dataclass(frozen=True)
class FieldDoc:
    """One field of a record, for flags and documentation."""

    name: str
    type: Any
    """The field's msgspec.inspect type (Metadata unwrapped)."""
    default: Any
    """The default value, or `NODEFAULT` when it has a factory or none."""
    has_factory: bool
    required: bool
    description: str

    @property
    def base(self) -> Any:
        """The inspect type without `None` (`int | None` → IntType)."""
        return _without_none(self.type)


def _without_none(t: Any) -> Any:
    if isinstance(t, mi.UnionType):
        rest = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return t


def _unwrap(t: Any) -> Any:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


@cache
def fields_of(cls: type[Record]) -> tuple[FieldDoc, ...]:
    """The fields of a record class, in declaration order."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    out = []
    for f in info.fields:
        out.append(
            FieldDoc(
                name=f.name,
                type=_unwrap(f.type),
                default=f.default,
                has_factory=f.default_factory is not NODEFAULT,
                required=f.required,
                description=_description(f.type),
            )
        )
    return tuple(out)


def _description(t: Any) -> str:
    """The `Meta(description=...)` of a field's type: on the type, or on the member of an
    optional one (`Annotated[int, Meta(ge=0, description="...")] | None`)."""
    while isinstance(t, mi.Metadata):
        if t.extra_json_schema and "description" in t.extra_json_schema:
            return str(t.extra_json_schema["description"])
        t = t.type
    if isinstance(t, mi.UnionType):
        for member in t.types:
            found = _description(member)
            if found:
                return found
    return ""


_Check = Callable[[Any], str | None]

_BOUNDS: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
    ("ge", operator.ge, ">="),
    ("gt", operator.gt, ">"),
    ("le", operator.le, "<="),
    ("lt", operator.lt, "<"),
)
_LENGTHS: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
    ("min_length", operator.ge, ">="),
    ("max_length", operator.le, "<="),
)


def _make_check(op: Callable[[Any, Any], bool], bound: Any, text: str, of_len: bool) -> _Check:
    def check(value: Any) -> str | None:
        return None if op(len(value) if of_len else value, bound) else text

    return check


def _table_checks(
    t: Any, kind: str, table: tuple[tuple[str, Callable[[Any, Any], bool], str], ...], of_len: bool
) -> list[_Check]:
    checks = []
    for attr, op, sign in table:
        bound = getattr(t, attr, None)
        if bound is not None:
            text = (
                f"Expected `{kind}` of length {sign} {bound}"
                if of_len
                else f"Expected `{kind}` {sign} {bound}"
            )
            checks.append(_make_check(op, bound, text, of_len))
    return checks


def _bounds(t: Any, kind: str) -> list[_Check]:
    return _table_checks(t, kind, _BOUNDS, of_len=False)


def _lengths(t: Any, kind: str) -> list[_Check]:
    return _table_checks(t, kind, _LENGTHS, of_len=True)


def _choice_check(t: Any) -> _Check:
    if isinstance(t, mi.EnumType):
        allowed = frozenset(t.cls) | frozenset(m.value for m in t.cls)
    else:
        allowed = frozenset(t.values)
    text = f"Expected one of {sorted(map(str, allowed))}"

    def check(value: Any) -> str | None:
        try:
            return None if value in allowed else text
        except TypeError:  # unhashable
            return text

    return check


def _pattern_check(rx: re.Pattern[str]) -> _Check:
    def check(value: str) -> str | None:
        return None if rx.search(value) else f"Expected `str` matching regex {rx.pattern!r}"

    return check


def _checks_for(t: Any) -> list[tuple[type | tuple[type, ...], list[_Check]]]:
    """(python types the check applies to, checks) for one inspect type."""
    t = _unwrap(t)
    if isinstance(t, mi.UnionType):
        out = []
        for member in t.types:
            out.extend(_checks_for(member))
        return out
    if isinstance(t, mi.IntType):
        return [(int, _bounds(t, "int"))]
    if isinstance(t, mi.FloatType):
        return [((int, float), _bounds(t, "float"))]
    if isinstance(t, mi.StrType):
        checks = _lengths(t, "str")
        if t.pattern is not None:
            checks.append(_pattern_check(re.compile(t.pattern)))
        return [(str, checks)]
    if isinstance(t, mi.ListType | mi.TupleType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return [((list, tuple, set, frozenset), _lengths(t, "array"))]
    if isinstance(t, mi.DictType):
        return [(dict, _lengths(t, "object"))]
    if isinstance(t, mi.LiteralType | mi.EnumType):
        return [(object, [_choice_check(t)])]
    return []


@cache
def _field_checks(
    cls: type[Record],
) -> tuple[tuple[str, tuple[tuple[type | tuple[type, ...], tuple[_Check, ...]], ...]], ...]:
    out = []
    for f in fields_of(cls):
        per_type = tuple((py, tuple(c)) for py, c in _checks_for(f.type) if c)
        if per_type:
            out.append((f.name, per_type))
    return tuple(out)


def _coercion(t: Any) -> Callable[[Any], Any] | None:
    """What a value given in code becomes, as parsing would make it: an enum's value its member,
    text a `Path` or a `Secret` (so `Settings(backend="dub")` is `BackendKind.DUB`, not "dub")."""
    t = _without_none(t)
    if isinstance(t, mi.EnumType):
        members = {m.value: m for m in t.cls}
        return lambda v: members.get(v, v) if not isinstance(v, t.cls) else v
    if isinstance(t, mi.CustomType) and t.cls in _FROM_TEXT:
        return partial(_from_text, t.cls)
    return None


@cache
def _field_coercions(cls: type[Record]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    return tuple((f.name, c) for f in fields_of(cls) if (c := _coercion(f.type)) is not None)


def _check_fields(record: Record) -> None:
    for name, coerce in _field_coercions(type(record)):
        value = getattr(record, name)
        if value is not None:
            converted = coerce(value)
            if converted is not value:
                msgspec.structs.force_setattr(record, name, converted)
    for name, per_type in _field_checks(type(record)):
        value = getattr(record, name)
        if value is None or isinstance(value, bool):
            continue
        for py, checks in per_type:
            if isinstance(value, py):
                for check in checks:
                    problem = check(value)
                    if problem is not None:
                        raise ValidationError(f"{problem} - at `$.{name}`")
                break


# --- errors ---------------------------------------------------------------------------------------

_AT = re.compile(r" - at `\$\.?(?P<loc>[^`]*)`$")


def describe(exc: ValidationError) -> tuple[str, str]:
    """(`path`, `reason`) of a validation error: ("audio.sample_rate_hz", "Expected `int` >= 8000").
    The path is "" when the error is about the whole record."""
    text = str(exc)
    m = _AT.search(text)
    if m is None:
        return "", text
    return m.group("loc"), text[: m.start()]


def field_error(name: str, reason: str) -> ValueError:
    """What `check()` raises about one field, so that `describe()` names it however the record
    was made (a `check()` error has no path otherwise): `raise field_error("port", "in use")`."""
    return ValueError(f"{reason} - at `$.{name}`")


def explain(exc: ValidationError) -> str:
    """One line: "path: reason" (or the reason alone)."""
    loc, reason = describe(exc)
    return f"{loc}: {reason}" if loc else reason
