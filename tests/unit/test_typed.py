"""livedub.typed (Record, Secret) and livedub.settings (EnvSettings): constraints hold however a
record is made; settings come from flags given > env vars > defaults."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import msgspec
import pytest

from livedub.settings import EnvSettings
from livedub.typed import Meta, Record, Secret, ValidationError, describe, explain, fields_of


class Inner(Record):
    n: Annotated[int, Meta(ge=0, le=10, description="a small number")]
    name: Annotated[str, Meta(pattern="^[a-z]+$", max_length=8)] = "abc"

    def check(self) -> None:
        if self.n == 7:
            raise ValueError("n must not be 7")


class Outer(Record):
    inner: Inner
    kind: Literal["a", "b"] = "a"
    ratio: Annotated[float, Meta(gt=0)] = 1.0
    items: Annotated[list[int], Meta(max_length=2)] = []
    label: Annotated[str, Meta(min_length=1)] | None = None


@pytest.mark.parametrize(
    ("kw", "path", "reason"),
    [
        ({"n": -1}, "n", "Expected `int` >= 0"),
        ({"n": 11}, "n", "Expected `int` <= 10"),
        ({"n": 1, "name": "ABC"}, "name", "Expected `str` matching regex '^[a-z]+$'"),
        ({"n": 1, "name": "abcdefghi"}, "name", "Expected `str` of length <= 8"),
        ({"n": 7}, "", "n must not be 7"),
    ],
)
def test_built_in_code_and_parsed_fail_alike(kw: dict[str, object], path: str, reason: str) -> None:
    with pytest.raises(ValidationError) as built:
        Inner(**kw)
    assert describe(built.value) == (path, reason)
    with pytest.raises(ValidationError) as parsed:
        Inner.parse(kw)
    assert describe(parsed.value) == (path, reason)


def test_nested_errors_name_their_path() -> None:
    with pytest.raises(ValidationError) as exc:
        Outer.parse({"inner": {"n": 20}})
    assert explain(exc.value) == "inner.n: Expected `int` <= 10"
    with pytest.raises(ValidationError) as exc:
        Outer.parse({"inner": {"n": 7}})
    assert explain(exc.value) == "inner: n must not be 7"
    with pytest.raises(ValidationError, match="items"):
        Outer.parse({"inner": {"n": 1}, "items": [1, 2, 3]})
    with pytest.raises(ValidationError, match="label"):
        Outer(inner=Inner(n=1), label="")
    with pytest.raises(ValidationError, match="kind"):
        Outer(inner=Inner(n=1), kind="c")
    with pytest.raises(ValidationError, match="ratio"):
        Outer(inner=Inner(n=1), ratio=0.0)


def test_parse_is_strict_unless_lax() -> None:
    for bad in ("5", True, 1.5):
        with pytest.raises(ValidationError, match="Expected `int`"):
            Inner.parse({"n": bad})
    assert Inner.parse({"n": "5"}, lax=True).n == 5
    assert Outer.parse({"inner": {"n": 1}, "ratio": 2}).ratio == 2.0  # an int is a float
    assert Inner.parse({"n": 1, "unknown": "ignored"}).n == 1


def test_to_builtins_leaves_out_none_and_replace_checks() -> None:
    o = Outer(inner=Inner(n=1))
    assert o.to_builtins() == {
        "inner": {"n": 1, "name": "abc"},
        "kind": "a",
        "ratio": 1.0,
        "items": [],
    }
    assert o.replace(ratio=3.0).ratio == 3.0
    with pytest.raises(ValidationError, match="ratio"):
        o.replace(ratio=-1.0)


def test_a_secret_never_shows_its_value() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in f"{s}"
    assert s.get_secret_value() == "hunter2" and s == Secret("hunter2") and s != Secret("x")

    class WithSecret(Record):
        token: Secret | None = None

    w = WithSecret.parse({"token": "hunter2"})
    assert w.token is not None and w.token.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(w) and "hunter2" not in str(w.to_builtins())


class DemoSettings(EnvSettings):
    env_prefix: ClassVar[str] = "DEMO_"

    port: Annotated[int, Meta(ge=0, le=65535, description="TCP port")] = 8000
    ratio: float = 1.5
    on: Annotated[bool, Meta(description="a switch")] = False
    name: str = "x"
    token: Secret | None = None
    timeout_s: Annotated[float, Meta(gt=0)] | None = None
    mapping: dict[str, str] = msgspec.field(default_factory=dict)
    where: Path | None = None
    mode: Literal["fast", "slow"] = "fast"


def test_env_settings_precedence_and_conversions() -> None:
    env = {
        "DEMO_PORT": "9000",
        "DEMO_RATIO": "2.5",
        "DEMO_ON": "Yes",
        "DEMO_NAME": "from-env",
        "DEMO_TOKEN": "s3cret",
        "DEMO_TIMEOUT_S": "",
        "DEMO_MAPPING": '{"a": "b"}',
        "DEMO_WHERE": "/tmp/x",
        "DEMO_MODE": "slow",
        "DEMO_UNKNOWN": "ignored",
        "OTHER_PORT": "1",
    }
    s = DemoSettings.load({"name": "from-flag", "port": None}, environ=env)
    assert (s.port, s.ratio, s.on, s.name, s.timeout_s) == (9000, 2.5, True, "from-flag", None)
    assert s.token == Secret("s3cret") and s.mapping == {"a": "b"} and s.where == Path("/tmp/x")
    assert s.mode == "slow"
    assert DemoSettings.load(environ={}) == DemoSettings()
    for word, value in (("0", False), ("off", False), ("TRUE", True), ("on", True)):
        assert DemoSettings.load(environ={"DEMO_ON": word}).on is value
    assert DemoSettings.env_name("timeout_s") == "DEMO_TIMEOUT_S"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DEMO_PORT": "70000"}, "port"),
        ({"DEMO_PORT": "many"}, "port"),
        ({"DEMO_ON": "maybe"}, "on"),
        ({"DEMO_MAPPING": "not json"}, "mapping"),
        ({"DEMO_MODE": "medium"}, "mode"),
        ({"DEMO_TIMEOUT_S": "-1"}, "timeout_s"),
    ],
)
def test_a_bad_env_value_names_its_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DemoSettings.load(environ=env)
    assert describe(exc.value)[0] == field


def test_fields_of_gives_names_defaults_and_descriptions() -> None:
    docs = {f.name: f for f in fields_of(DemoSettings)}
    assert list(docs)[:3] == ["port", "ratio", "on"]
    assert docs["port"].default == 8000 and docs["port"].description == "TCP port"
    assert docs["mapping"].has_factory and not docs["port"].has_factory
    assert docs["timeout_s"].default is None


class Kind(enum.StrEnum):
    ECHO = "echo"
    DUB = "dub"


class Conf(Record):
    kind: Kind = Kind.ECHO
    where: Path | None = None
    token: Secret | None = None


def test_values_given_in_code_become_what_parsing_makes() -> None:
    c = Conf(kind="dub", where="/tmp/x", token="t0k")
    assert c.kind is Kind.DUB and c.where == Path("/tmp/x") and c.token == Secret("t0k")
    assert Conf.parse({"kind": "dub", "where": "/tmp/x", "token": "t0k"}) == c
    with pytest.raises(ValidationError, match="kind"):
        Conf(kind="nope")


class Builds(Record):
    """A record whose check() builds another in code (as WorkerSettings builds MediaSettings)."""

    n: int = 0

    def check(self) -> None:
        Inner(n=self.n)


def test_a_record_built_inside_check_is_checked_in_full_when_parsed() -> None:
    assert Builds.parse({"n": 3}).n == 3
    for make in (lambda: Builds(n=-1), lambda: Builds.parse({"n": -1})):
        with pytest.raises(ValidationError, match="Expected `int` >= 0"):
            make()
