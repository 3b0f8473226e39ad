"""Every default, limit and name of the Audio Fragment Protocol, written once.

The spec (`shared/spec/protocol.md`) is the source; this module is the only place in the code
where its numbers and event names appear. Both sides (worker and STS service) import from here.
Never put logic or I/O in this module, and never redefine one of these values elsewhere.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, Literal

# --- transport -------------------------------------------------------------------------------
DEFAULT_STS_HOST: Final = "127.0.0.1"
DEFAULT_STS_PORT: Final = 8080
SOCKETIO_PATH: Final = "/socket.io/"
NAMESPACE: Final = "/"
TRANSPORTS: Final = ("websocket",)
PING_INTERVAL_S: Final = 25.0
PING_TIMEOUT_S: Final = 10.0

HEADER_STREAM_ID: Final = "X-Stream-ID"
HEADER_WORKER_ID: Final = "X-Worker-ID"
ID_CHARS: Final = r"[A-Za-z0-9_-]{1,64}"
"""The one definition of a stream / worker id (unanchored: build other patterns from it)."""
ID_PATTERN: Final = rf"\A{ID_CHARS}\Z"
"""Allowed values of `X-Stream-ID` / `X-Worker-ID` (and of `stream_id` / `worker_id`), anchored
for a `msgspec.Meta` pattern (Python's `re.search`: end of string, as `$` would accept a trailing
newline). In Python use `ID_RE`."""
ID_RE: Final = re.compile(ID_CHARS)
"""Always use with `fullmatch` (`re.match` with `^…$` would accept a trailing newline)."""


def is_valid_id(value: object) -> bool:
    """True when `value` is a string that is a whole stream / worker id."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


JSON_CONTENT_TYPE: Final = "application/json"
"""The only Content-Type accepted for HTTP bodies (hooks, STS controls): a browser cannot send it
cross-site without a CORS preflight, so a web page cannot POST to them (CSRF)."""

AUTH_TOKEN_KEY: Final = "token"
"""Key of the token in the Socket.IO `auth` payload: `auth={"token": "..."}`."""

# --- size --------------------------------------------------------------------------------------
MAX_FRAGMENT_BASE64_BYTES: Final = 10 * 1024 * 1024
"""`fragment:data` whose `audio.data_base64` is longer than this gets FRAGMENT_TOO_LARGE."""
DEFAULT_MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
"""Socket.IO message buffer: big enough that an over-limit fragment (e.g. 11 MiB of audio,
~14.7 MiB as base64) is answered with FRAGMENT_TOO_LARGE instead of a dropped connection.
A client that receives echoed audio larger than aiohttp's 4 MiB default must raise its own
`max_msg_size` (python-socketio: `websocket_extra_options={"max_msg_size": ...}`)."""

# --- stream:init limits and defaults -----------------------------------------------------------
AudioFormat = Literal["m4a", "wav", "flac"]
AUDIO_FORMATS: Final[tuple[AudioFormat, ...]] = ("m4a", "wav", "flac")
DEFAULT_AUDIO_FORMAT: Final[AudioFormat] = "m4a"
DEFAULT_SOURCE_LANGUAGE: Final = "en"
DEFAULT_TARGET_LANGUAGE: Final = "es"
DEFAULT_VOICE_PROFILE: Final = "default"

CHUNK_DURATION_MS_MIN: Final = 100
CHUNK_DURATION_MS_MAX: Final = 60_000
CHUNK_DURATION_MS_DEFAULT: Final = 6_000
SAMPLE_RATE_HZ_MIN: Final = 8_000
SAMPLE_RATE_HZ_MAX: Final = 96_000
SAMPLE_RATE_HZ_DEFAULT: Final = 48_000
CHANNELS_MIN: Final = 1
CHANNELS_MAX: Final = 2
CHANNELS_DEFAULT: Final = 2
MAX_INFLIGHT_MIN: Final = 1
MAX_INFLIGHT_MAX: Final = 10
MAX_INFLIGHT_DEFAULT: Final = 3
TIMEOUT_MS_MIN: Final = 1_000
TIMEOUT_MS_MAX: Final = 30_000
TIMEOUT_MS_DEFAULT: Final = 8_000

AUDIO_DURATION_MS_MIN: Final = 1
"""A fragment's audio may be shorter than a chunk (the last one of a stream)."""
AUDIO_DURATION_MS_MAX: Final = CHUNK_DURATION_MS_MAX

# --- lifecycle timing --------------------------------------------------------------------------
READY_TIMEOUT_S: Final = 10.0
"""The worker waits at most this long for `stream:ready`."""
CLOSE_AFTER_COMPLETE_S: Final = 5.0
"""The server closes the connection this long after `stream:complete`."""

# --- dubbed audio ------------------------------------------------------------------------------
DUBBED_DURATION_TOLERANCE: Final = 0.10
"""Dubbed audio within ±10 % of the fragment's duration is trimmed/padded; outside, rejected."""

# --- test controls -----------------------------------------------------------------------------
SIMULATED_DELAY_MS_MAX: Final = 60_000
REFUSE_RECONNECT_MS_MAX: Final = 600_000
BACKPRESSURE_LOW_DEFAULT: Final = 0.5
BACKPRESSURE_MEDIUM_DEFAULT: Final = 0.7
BACKPRESSURE_HIGH_DEFAULT: Final = 0.9
BACKPRESSURE_SLOW_DOWN_DELAY_MS_DEFAULT: Final = 500

SEGMENTS_MAX: Final = 256
"""Most speech segments one `fragment:processed` may carry (livedub extension)."""

# --- wire enumerations -------------------------------------------------------------------------
Severity = Literal["warning", "error", "fatal"]
BackpressureSeverity = Literal["low", "medium", "high"]
BackpressureAction = Literal["none", "slow_down", "pause"]
FragmentAckStatus = Literal["queued", "processing"]
WorkerAckStatus = Literal["received", "applied"]
ProcessedStatus = Literal["success", "partial", "failed"]
ControlAckStatus = Literal["accepted", "rejected"]
ErrorTrigger = Literal["sequence_number", "fragment_id", "nth_fragment", "count"]
Stage = Literal["asr", "translation", "tts"]


class EventName(StrEnum):
    """Socket.IO event names, both directions and the test controls."""

    # worker -> server
    STREAM_INIT = "stream:init"
    FRAGMENT_DATA = "fragment:data"
    FRAGMENT_ACK = "fragment:ack"  # both directions (different payloads)
    STREAM_PAUSE = "stream:pause"
    STREAM_RESUME = "stream:resume"
    STREAM_END = "stream:end"
    # server -> worker
    STREAM_READY = "stream:ready"
    FRAGMENT_PROCESSED = "fragment:processed"
    BACKPRESSURE = "backpressure"
    STREAM_COMPLETE = "stream:complete"
    ERROR = "error"
    # test controls (any client -> echo server), answered with "<event>:ack"
    CONFIG_ERROR_SIMULATION = "config:error_simulation"
    CONFIG_LATENCY = "config:latency"
    CONFIG_BACKPRESSURE = "config:backpressure"
    SIMULATE_DISCONNECT = "simulate:disconnect"
    CONFIG_RESET = "config:reset"


CONTROL_EVENTS: Final[tuple[EventName, ...]] = (
    EventName.CONFIG_ERROR_SIMULATION,
    EventName.CONFIG_LATENCY,
    EventName.CONFIG_BACKPRESSURE,
    EventName.SIMULATE_DISCONNECT,
    EventName.CONFIG_RESET,
)
CONTROL_ACK_SUFFIX: Final = ":ack"


def control_ack_event(event: str) -> str:
    """`config:latency` -> `config:latency:ack`."""
    return f"{event}{CONTROL_ACK_SUFFIX}"
