"""`livedub serve`: command-line flags of the orchestrator, one per setting.

Flags are generated from `OrchestratorSettings` (flag `--grace-s` ↔ field `grace_s` ↔ env
`ORCH_GRACE_S`), so a setting cannot exist without its flag and its documented default. The hook
secret has no flag on purpose: a flag would show it in `ps`; set `ORCH_HOOK_SECRET`. This module
never holds orchestration logic.
"""

from __future__ import annotations

import argparse

from livedub.exitcodes import ExitCode
from livedub.log import bind
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.settings_cli import add_settings_flags, settings_from_args
from livedub.typed import ValidationError, describe

log = bind("livedub.orchestrator.cli")

#: Settings that have no command-line flag (environment only).
ENV_ONLY_FIELDS = ("hook_secret", "api_token", "media_api_credentials", "input_pass", "output_pass")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the orchestrator: media-server hooks → one worker process per stream",
        description="The media service: an HTTP API for the media server's ready/not-ready "
        "hooks that starts, restarts and stops one `livedub worker` process per stream. "
        "Every flag also reads its ORCH_* env var; flags win. The hook secret is env-only "
        "(ORCH_HOOK_SECRET).",
    )
    add_settings_flags(parser, OrchestratorSettings, skip=ENV_ONLY_FIELDS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(OrchestratorSettings, args)
    except ValidationError as exc:
        field, reason = describe(exc)
        log.error("invalid setting", ctx={"field": field or "settings", "error": reason})
        return int(ExitCode.USAGE)
    from livedub.orchestrator.service import run_serve  # aiohttp only when serving

    return run_serve(settings)
