"""Turn an `EnvSettings` record into argparse flags and back, so every setting has a flag, an env
var and a documented default in exactly one place (the record)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec.inspect as mi

from livedub.settings import EnvSettings
from livedub.typed import NODEFAULT, FieldDoc, fields_of

S = TypeVar("S", bound=EnvSettings)


def _default_text(field: FieldDoc, unset: str, show: Callable[[Any], str] = repr) -> str:
    if field.has_factory:
        return "(per process)"
    if field.default is None or field.default is NODEFAULT:
        return unset
    return show(field.default)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[EnvSettings], skip: tuple[str, ...] = ()
) -> None:
    """One `--field-name` flag per field; help shows the description, env var and default."""
    for field in fields_of(model):
        if field.name in skip:
            continue
        flag = _flag(field.name)
        default = _default_text(field, "(derived)")
        env = model.env_name(field.name)
        help_text = f"{field.description or field.name} [env {env}; default {default}]"
        base = field.base
        if isinstance(base, mi.BoolType):
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            conv = (
                int
                if isinstance(base, mi.IntType)
                else float
                if isinstance(base, mi.FloatType)
                else str
            )
            parser.add_argument(flag, dest=field.name, type=conv, default=None, help=help_text)


def settings_from_args(model: type[S], args: argparse.Namespace) -> S:
    """Build the settings: CLI flags given win over env vars, which win over defaults."""
    return model.load({f.name: getattr(args, f.name, None) for f in fields_of(model)})


def markdown_table(model: type[EnvSettings], flag_names: dict[str, str] | None = None) -> str:
    """A Markdown table of a settings model (env | flag | default | meaning), for the docs."""
    flags = flag_names or {}
    rows = ["| env | flag | default | meaning |", "|---|---|---|---|"]
    for field in fields_of(model):
        default = _default_text(field, "unset", show=lambda v: f"`{v}`")
        flag = flags.get(field.name, _flag(field.name))
        env = model.env_name(field.name)
        rows.append(f"| `{env}` | `{flag}` | {default} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - `python -m livedub.settings_cli`: print the tables
    import sys

    from livedub.orchestrator.media_server import MediaServerSettings
    from livedub.sts.settings import StsSettings
    from livedub.worker.config import WorkerSettings

    for title, model, names in (
        ("worker", WorkerSettings, {"input_url": "--input", "output_url": "--output"}),
        ("sts", StsSettings, {}),
        ("media-server", MediaServerSettings, {}),
    ):
        sys.stdout.write(f"\n### {title}\n\n{markdown_table(model, names)}\n")
