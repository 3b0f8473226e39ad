"""Subcommands of the orchestrator concern: `livedub media-server` (and later `serve`, `demo`).

Each subcommand has its own `add_<name>_parser(sub)` function; `add_parsers` calls them all.
This module parses flags and runs a component until it is told to stop; it holds no logic of
its own and never prints anything but result lines (the ready line) on stdout.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from livedub.exitcodes import ExitCode
from livedub.settings_cli import add_settings_flags, settings_from_args
from livedub.typed import ValidationError, explain

_log = logging.getLogger(__name__)

#: How often `media-server` checks that its child processes are alive.
MEDIA_SERVER_HEALTH_INTERVAL_S = 0.5
#: Settings of `media-server` that have no flag (secrets: environment only).
MEDIA_SERVER_ENV_ONLY_FIELDS = ("hook_secret", "publish_pass", "worker_pass", "read_pass")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    add_media_server_parser(sub)


# -- livedub media-server ------------------------------------------------------------------
def add_media_server_parser(sub: argparse._SubParsersAction) -> None:
    from livedub.orchestrator.media_server import MediaServerSettings

    p = sub.add_parser(
        "media-server",
        help="run the embedded media server (RTSP 8554 + RTMP 1935, MediaMTX-style paths)",
        description=(
            "Serve rtsp://HOST:RTSP_PORT/live/<id>/{in,out} (any id) and "
            "rtmp://HOST:RTMP_PORT/live/<id>/{in,out} (ids from --streams) until SIGTERM/SIGINT. "
            "Prints one line 'media-server ready ...' on stdout when both accept connections. "
            "Every flag also reads its MEDIA_* env var; secrets are env-only "
            "(MEDIA_HOOK_SECRET, MEDIA_PUBLISH_PASS, MEDIA_WORKER_PASS, MEDIA_READ_PASS). "
            "Publishing needs credentials (rtsp://user:pass@... or rtmp://...?user=..&pass=..); "
            "passwords not set are generated and written to <workdir>/credentials.env. "
            "Exit codes: 0 stopped by a signal, "
            "1 a server process failed, 2 bad settings or a port already in use."
        ),
    )
    # secrets have no flag (a flag shows in `ps`): env MEDIA_HOOK_SECRET, MEDIA_*_PASS only
    add_settings_flags(p, MediaServerSettings, skip=MEDIA_SERVER_ENV_ONLY_FIELDS)
    p.set_defaults(func=run_media_server)


def run_media_server(args: argparse.Namespace) -> int:
    from livedub.orchestrator.media_server import (
        MediaServer,
        MediaServerError,
        MediaServerSettings,
        PortInUseError,
        Role,
    )

    try:
        settings = settings_from_args(MediaServerSettings, args)
    except ValidationError as exc:
        _log.error("invalid media-server settings: %s", explain(exc))
        return int(ExitCode.USAGE)

    stop = threading.Event()
    received: list[int] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = MediaServer(settings)
    try:
        try:
            server.start()
            server.wait_ready()
            server.write_credentials_file()
        except PortInUseError as exc:
            _log.error("media server cannot start: %s", exc)
            return int(ExitCode.USAGE)
        except MediaServerError as exc:
            _log.error("media server cannot start: %s", exc)
            return int(ExitCode.ERROR)
        sys.stdout.write(
            f"media-server ready rtsp={server.rtsp_url('', Role.ANONYMOUS)} "
            f"rtmp={server.rtmp_url('', Role.ANONYMOUS)} "
            f"streams={','.join(server.streams)} api={server.api_url or 'off'} ready_after_ms="
            f"{round((server.ready_after_s or 0.0) * 1000)}\n"
        )
        sys.stdout.flush()
        while not stop.wait(MEDIA_SERVER_HEALTH_INTERVAL_S):
            failure = server.failure()
            if failure is not None:
                _log.error("media server failed: %s", failure)
                return int(ExitCode.ERROR)
        _log.info("stopping on %s", signal.Signals(received[0]).name)
        return int(ExitCode.OK)
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
