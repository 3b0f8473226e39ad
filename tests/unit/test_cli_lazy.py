"""`livedub <command>` imports only that command's module (issue 16: worker RSS), and parses the
same as the full parser."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from livedub import cli


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_command_table_matches_the_modules() -> None:
    """Every command of the full parser is in `_COMMAND_MODULES`, mapped to the module that registers it."""
    assert _commands(cli.build_parser()) == set(cli._COMMAND_MODULES)
    for module_name in cli._SUBCOMMAND_MODULES:
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_parsers(parser.add_subparsers())
        for command in _commands(parser):
            assert cli._COMMAND_MODULES[command] == module_name, command


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["worker", "--passthrough"], "worker"),
        (["--log-level", "DEBUG", "--log-format", "json", "sts", "--port", "1"], "sts"),
        (["--log-level=DEBUG", "serve"], "serve"),
        (["--log-level", "worker", "sts"], "sts"),  # a flag's value is not the command
        (["--help", "worker"], None),  # top-level help lists every command
        (["-h"], None),
        ([], None),
        (["nosuch"], None),  # the full parser reports the unknown command
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert cli.command_of(argv) == command


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--input", "a.mp4", "--output", "b.flv", "--passthrough", "--metrics-port", "0"],
        ["sts", "--port", "0"],
        ["analyze", "x.mp4"],
        ["serve", "--grace-s", "7"],
    ],
)
def test_narrow_parser_parses_like_the_full_one(argv: list[str]) -> None:
    full = vars(cli.build_parser().parse_args(argv))
    narrow = vars(cli.build_parser(cli.command_of(argv)).parse_args(argv))
    assert narrow == full


def test_worker_command_does_not_import_other_concerns() -> None:
    code = (
        "import sys; from livedub import cli; cli.build_parser(cli.command_of(['worker'])); "
        "print(sorted(m for m in sys.modules if m.startswith(('livedub.sts', 'livedub.orchestrator', "
        "'livedub.media.cli', 'psutil'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
