"""`livedub worker`: run one stream worker (or the passthrough media path with --passthrough)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from livedub.exitcodes import ExitCode
from livedub.settings_cli import add_settings_flags, settings_from_args
from livedub.typed import ValidationError
from livedub.worker.config import WorkerSettings

_log = logging.getLogger(__name__)

_ALIASES = {"input_url": "--input", "output_url": "--output"}
ENV_ONLY_FIELDS = ("control_token",)  # a flag would show it in `ps`


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "worker",
        help="dub one live stream: input → STS → output",
        description="Dub one live stream. Every flag also reads its WORKER_* env var.",
    )
    p.add_argument(
        "--input",
        dest="input_url",
        default=None,
        help="input URL (rtsp/rtmp/srt/file) [env WORKER_INPUT_URL]",
    )
    p.add_argument(
        "--output",
        dest="output_url",
        default=None,
        help="output URL (rtmp/rtsp/srt/file) [env WORKER_OUTPUT_URL]",
    )
    add_settings_flags(p, WorkerSettings, skip=(*_ALIASES, *ENV_ONLY_FIELDS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(WorkerSettings, args)
    except ValidationError as exc:
        _log.error("invalid worker settings: %s", exc)
        return int(ExitCode.USAGE)
    if not settings.input_url or not settings.output_url:
        _log.error("--input and --output are required")
        return int(ExitCode.USAGE)
    if settings.malloc_tuning:  # before the worker's threads start (see livedub/worker/memory.py)
        from livedub.worker.memory import tune_malloc

        _log.debug("malloc tuned", extra={"ctx": {"set": tune_malloc()}})
    from livedub.worker.runner import WorkerRunner

    return asyncio.run(WorkerRunner(settings).run())
