"""The one `livedub` command. Each concern registers its own subcommands here.

Subcommand modules expose `add_parsers(subparsers)`; each parser sets `func` to a callable
`(argparse.Namespace) -> int` returning the process exit code. This module never holds logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from livedub import __version__
from livedub.log import setup_logging

# Modules that contribute subcommands, in help order.
_SUBCOMMAND_MODULES = (
    "livedub.sts.cli",
    "livedub.worker.cli",
    "livedub.media.cli",
    "livedub.orchestrator.cli",
    "livedub.orchestrator.serve_cli",
    "livedub.orchestrator.demo",
)


def build_parser() -> argparse.ArgumentParser:
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
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a concern not built yet
            if exc.name != name:
                raise
            continue
        module.add_parsers(sub)
    return parser


def setup_logging_from_args(args: argparse.Namespace) -> None:
    """Flags given win over `LIVEDUB_LOG_LEVEL` / `LIVEDUB_LOG_FORMAT`, which win over defaults."""
    setup_logging(args.log_level, args.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
