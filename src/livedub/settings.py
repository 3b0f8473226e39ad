"""A process's settings object: a `Record` read from its env vars (`<PREFIX><FIELD>`) and flags.

`MySettings.load(given)` builds one: a value in `given` (flags that were given) wins over the env
var, which wins over the field's default. Env vars are matched by their exact upper-case name and
converted to the field's type: numbers as written, booleans from `1/true/yes/on` and
`0/false/no/off` (any case), dicts and lists as JSON (an empty value: the default), an empty value
of an optional non-text field as unset. A flag given as text for a JSON field (a dict or list) is
read the same way. Unknown `<PREFIX>*` variables are ignored. Built in code (`MySettings(...)`), a
settings object reads no environment: that is what `load` is for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import msgspec.inspect as mi

from livedub.typed import FieldDoc, Record, ValidationError, fields_of

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})


class EnvSettings(Record):
    """Base of the settings of one process (worker, STS, media server, orchestrator)."""

    env_prefix: ClassVar[str] = ""

    @classmethod
    def env_name(cls, field: str) -> str:
        """The env var of `field`: `WORKER_` + `segment_s` → `WORKER_SEGMENT_S`."""
        return f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def load(
        cls, given: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> Self:
        """Settings from `given` (None values skipped), else the env var, else the default.
        Raises `ValidationError` naming the field."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for field in fields_of(cls):
            if given is not None and given.get(field.name) is not None:
                value = given[field.name]
                if isinstance(value, str) and _is_json(field.base):
                    value = from_env(field, value)  # a flag's JSON text, as its env var's
                    if value is None:
                        continue
                data[field.name] = value
                continue
            raw = env.get(cls.env_name(field.name))
            if raw is not None:
                value = from_env(field, raw)
                if value is not None or field.default is None:
                    data[field.name] = value
        return cls.parse(data, lax=True)


def _optional(t: Any) -> bool:
    return isinstance(t, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in t.types)


def _is_json(base: Any) -> bool:
    return isinstance(
        base, mi.DictType | mi.ListType | mi.TupleType | mi.VarTupleType | mi.StructType
    )


def from_env(field: FieldDoc, raw: str) -> Any:
    """The env var's text as a value msgspec can convert (in lax mode) to the field's type;
    None for unset. Raises `ValidationError` naming the field when JSON text is not JSON."""
    base = field.base
    if raw.strip() == "" and (
        _is_json(base) or (_optional(field.type) and not isinstance(base, mi.StrType))
    ):
        return None
    if isinstance(base, mi.BoolType):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return raw  # msgspec names the field and the problem
    if _is_json(base):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc} - at `$.{field.name}`") from None
    return raw
