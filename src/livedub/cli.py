"""The one `livedub` command. Each concern registers its own subcommands here.

Subcommand modules expose `add_parsers(subparsers)`; each parser sets `func` to a callable
`(argparse.Namespace) -> int` returning the process exit code. This module never holds logic.

`main` imports only the module of the command given (`_COMMAND_MODULES`), so a worker process
never loads the STS server, the orchestrator or the media tools (issue 16: ≈ 3 MB less RSS per
worker); help without a command, or an unknown command, still builds the full parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from livedub import __version__
from livedub.log import setup_logging

# Command → the module that registers it, in help order (tests/unit/test_cli_lazy.py checks it
# against what each module registers).
_COMMAND_MODULES = {
    "sts": "livedub.sts.cli",
    "worker": "livedub.worker.cli",
    "make-fixture": "livedub.media.cli",
    "analyze": "livedub.media.cli",
    "publish": "livedub.media.cli",
    "passthrough": "livedub.media.cli",
    "media-server": "livedub.orchestrator.cli",
    "serve": "livedub.orchestrator.serve_cli",
    "demo": "livedub.orchestrator.demo",
}
# Modules that contribute subcommands, in help order.
_SUBCOMMAND_MODULES = tuple(dict.fromkeys(_COMMAND_MODULES.values()))
_GLOBAL_VALUE_FLAGS = ("--log-level", "--log-format")  # top-level flags that take a value


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `command` (a key of `_COMMAND_MODULES`), only that command's module is
    imported and registered (the same parse for that command, less memory)."""
    parser = argparse.ArgumentParser(prog="livedub", description="Live broadcast dubbing.")
    parser.add_argument("--version", action="version", version=f"livedub {__version__}")
    # default None: the env var (read by setup_logging) must win over an absent flag
    parser.add_argument(
        "--log-level", default=None, help="log level (env LIVEDUB_LOG_LEVEL; default INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log line format (env LIVEDUB_LOG_FORMAT; default text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (_COMMAND_MODULES[command],) if command in _COMMAND_MODULES else _SUBCOMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a concern not built yet
            if exc.name != name:
                raise
            continue
        module.add_parsers(sub)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in `argv` when it is a known one and no help is asked before it, else None
    (then `main` builds the full parser, so top-level help and errors list every command)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_VALUE_FLAGS:
            skip = True
        elif arg in ("-h", "--help"):
            return None
        elif not arg.startswith("-"):
            return arg if arg in _COMMAND_MODULES else None
    return None


def setup_logging_from_args(args: argparse.Namespace) -> None:
    """Flags given win over `LIVEDUB_LOG_LEVEL` / `LIVEDUB_LOG_FORMAT`, which win over defaults."""
    setup_logging(args.log_level, args.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    setup_logging_from_args(args)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
