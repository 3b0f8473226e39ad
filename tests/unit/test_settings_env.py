"""Every environment variable in docs/operations.md's settings tables reaches its setting through
the real command-line path (issue 17 #9: `LIVEDUB_LOG_LEVEL` lost to argparse's default)."""

from __future__ import annotations

import argparse
import enum
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest

from livedub import cli
from livedub.orchestrator.media_server import MediaServerSettings
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.settings import EnvSettings
from livedub.settings_cli import settings_from_args
from livedub.sts import cli as sts_cli
from livedub.sts.settings import StsSettings
from livedub.typed import FieldDoc, Secret, ValidationError, explain, fields_of
from livedub.worker.config import WorkerSettings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\|\s*`(?P<env>(?:WORKER|STS|MEDIA|ORCH|LIVEDUB)_[A-Z0-9_]+)`\s*\|")

Build = Callable[[argparse.Namespace], EnvSettings]
#: env prefix → (subcommand, settings model, how that subcommand builds its settings)
COMMANDS: dict[str, tuple[str, type[EnvSettings], Build]] = {
    "WORKER_": ("worker", WorkerSettings, lambda a: settings_from_args(WorkerSettings, a)),
    "STS_": ("sts", StsSettings, sts_cli.settings_from_args),
    "MEDIA_": ("media-server", MediaServerSettings, lambda a: settings_from_args(MediaServerSettings, a)),
    "ORCH_": ("serve", OrchestratorSettings, lambda a: settings_from_args(OrchestratorSettings, a)),
}
#: process-wide variables (not in a settings model) → how to read what they set
GLOBAL_ENV = {"LIVEDUB_LOG_LEVEL", "LIVEDUB_LOG_FORMAT"}


def documented_env_vars() -> list[str]:
    found = [m["env"] for line in OPERATIONS.read_text().splitlines() if (m := ROW.match(line))]
    return sorted(set(found))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.startswith(("WORKER_", "STS_", "MEDIA_", "ORCH_", "LIVEDUB_LOG_")):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield monkeypatch
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_the_docs_table_covers_every_prefix() -> None:
    names = documented_env_vars()
    for prefix, (_cmd, model, _build) in COMMANDS.items():
        assert {f"{prefix}{f.name.upper()}" for f in fields_of(model)} <= set(names), prefix
    assert GLOBAL_ENV <= set(names)


def candidates(field: FieldDoc) -> list[Any]:
    """Values different from the default, most likely valid first."""
    typ, default = field.base, field.default  # a msgspec.inspect type; NODEFAULT with a factory
    if isinstance(typ, mi.LiteralType):
        return [v for v in typ.values if v != default] or list(typ.values)
    if isinstance(typ, mi.EnumType):
        values = [m.value for m in typ.cls]  # a one-member enum: its only value is still set by env
        return [v for v in values if v != getattr(default, "value", default)] or values
    if isinstance(typ, mi.DictType):
        return [{"xx": "yy"}]
    if isinstance(typ, mi.BoolType):
        return [not default] if isinstance(default, bool) else [True, False]
    if isinstance(typ, mi.IntType):
        d = default if isinstance(default, int) else 0
        return [d + 1, d - 1, 1, 2, 1000, 40000]
    if isinstance(typ, mi.FloatType):
        d = default if isinstance(default, float | int) else 0.0
        return [d + 0.25, d * 1.5, d - 0.25, d / 2, 0.5, 1.0, 2.0, 30.0]
    if isinstance(typ, mi.CustomType) and typ.cls is Secret:
        return ["s3cret-from-env"]
    if isinstance(typ, mi.CustomType) and typ.cls is Path:
        return ["/tmp/livedub-env-test"]
    return [
        "1,2",
        "x-from-env",
        "http://127.0.0.9:1234",
        "rtsp://127.0.0.9:1234",
        "abc",
        "/tmp/livedub-env-test",
    ]


def _value(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Secret):
        return v.get_secret_value()
    if isinstance(v, Path):
        return str(v)
    return v


@pytest.mark.parametrize("env", documented_env_vars())
def test_documented_env_var_reaches_its_setting(env: str, clean_env: pytest.MonkeyPatch) -> None:
    if env in GLOBAL_ENV:
        value = {"LIVEDUB_LOG_LEVEL": "WARNING", "LIVEDUB_LOG_FORMAT": "json"}[env]
        clean_env.setenv(env, value)
        args = cli.build_parser("sts").parse_args(["sts"])
        cli.setup_logging_from_args(args)
        root = logging.getLogger()
        if env == "LIVEDUB_LOG_LEVEL":
            assert root.level == logging.WARNING
        else:
            record = logging.LogRecord("t", logging.WARNING, __file__, 1, "m", None, None)
            assert root.handlers[0].format(record).startswith("{")
        return
    if env.startswith("LIVEDUB_"):
        pytest.skip(f"{env} is read by a library at use time, not a settings model")
    prefix = next(p for p in COMMANDS if env.startswith(p))
    command, model, build = COMMANDS[prefix]
    name = env.removeprefix(prefix).lower()
    fields = {f.name: f for f in fields_of(model)}
    assert name in fields, f"{env} is documented but {model.__name__} has no {name}"
    tried: list[str] = []
    for candidate in candidates(fields[name]):
        if isinstance(candidate, bool):
            raw = str(candidate).lower()
        elif isinstance(candidate, dict):
            raw = json.dumps(candidate)
        else:
            raw = str(candidate)
        clean_env.setenv(env, raw)
        args = cli.build_parser(command).parse_args([command])  # as `livedub <command>` does
        try:
            settings = build(args)
        except ValidationError as exc:
            tried.append(f"{raw!r}: {explain(exc)}")
            continue
        got = _value(getattr(settings, name))
        assert got == candidate or str(got) == raw, f"{env}={raw!r} gave {name}={got!r}"
        return
    pytest.fail(f"no valid sample value for {env}: {tried}")
