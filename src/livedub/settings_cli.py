"""Turn a pydantic-settings model into argparse flags and back, so every setting has a flag, an
env var and a documented default in exactly one place (the model)."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if args else str
    return annotation


def add_settings_flags(parser: argparse.ArgumentParser, model: type[BaseSettings], skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` flag per field; help shows the description, env var and default."""
    prefix = str(model.model_config.get("env_prefix", ""))
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        typ = _base_type(field.annotation)
        default = "(derived)" if field.default is None and field.default_factory is None else (
            "(per process)" if field.default_factory is not None else repr(field.default)
        )
        help_text = f"{field.description or name} [env {prefix}{name.upper()}; default {default}]"
        if typ is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            conv = typ if typ in (int, float) else str
            parser.add_argument(flag, dest=name, type=conv, default=None, help=help_text)


def settings_from_args(model: type[S], args: argparse.Namespace) -> S:
    """Build the settings: CLI flags given win over env vars, which win over defaults."""
    given = {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}
    return model(**given)


def markdown_table(model: type[BaseSettings], flag_names: dict[str, str] | None = None) -> str:
    """A Markdown table of a settings model (env | flag | default | meaning), for the docs."""
    prefix = str(model.model_config.get("env_prefix", ""))
    flags = flag_names or {}
    rows = ["| env | flag | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            default = "(per process)"
        elif field.default is None:
            default = "unset"
        else:
            default = f"`{field.default}`"
        flag = flags.get(name, "--" + name.replace("_", "-"))
        rows.append(f"| `{prefix}{name.upper()}` | `{flag}` | {default} | {field.description or ''} |")
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
