"""Why a segment went out with its original audio, and why a received result was not used.

The values are the `reason` labels of `worker_fallback_total` and `worker_rejected_results_total`
(docs/operations.md "Metrics"); they are defined here once, as enums, for the worker and the media
path (which decides `short_tail`, `input_late`, `passthrough`, `hook_error` and `deadline` itself).
This module holds no logic.
"""

from __future__ import annotations

from enum import StrEnum


class FallbackReason(StrEnum):
    """A segment's fallback reason, decided once, when the worker decides it."""

    TIMEOUT = "timeout"  # no result within timeout_ms
    CIRCUIT_OPEN = "circuit_open"  # breaker open: not sent
    BACKPRESSURE = "backpressure"  # could not be sent before its deadline (pause / slow_down / slots / its encode)
    DISCONNECT = "disconnect"  # in flight when the connection dropped, or not connected
    DEADLINE = "deadline"  # sent, but no usable result by the segment's output deadline
    STS_ERROR = "sts_error"  # fragment:processed status failed, or an `error` naming the fragment
    INVALID_AUDIO = "invalid_audio"  # undecodable audio, bad base64, wrong format
    DURATION_MISMATCH = "duration_mismatch"  # dubbed duration outside ±10 %
    INVALID_MESSAGE = "invalid_message"  # schema-invalid fragment:processed
    CONFIG_REFUSED = "config_refused"  # the STS refused stream:init (INVALID_CONFIG)
    SEND_ERROR = "send_error"  # a bug while sending (logged with its traceback)
    PASSTHROUGH = "passthrough"  # configured without an STS
    SHORT_TAIL = "short_tail"  # a sub-second end-of-stream tail: never sent, never counted
    INPUT_LATE = "input_late"  # the segment reached the output after its deadline
    HOOK_ERROR = "hook_error"  # the media path's hook failed (a bug)
    ORIGINAL_ONLY = "original_only"  # the operator switched the worker to original only (worker/control.py)


# Created up front as 0-valued series of `worker_fallback_total` (any other reason is counted too).
COUNTED_UPFRONT: tuple[FallbackReason, ...] = (
    FallbackReason.TIMEOUT,
    FallbackReason.CIRCUIT_OPEN,
    FallbackReason.BACKPRESSURE,
    FallbackReason.DISCONNECT,
    FallbackReason.DEADLINE,
    FallbackReason.STS_ERROR,
    FallbackReason.INVALID_AUDIO,
    FallbackReason.DURATION_MISMATCH,
    FallbackReason.INVALID_MESSAGE,
    FallbackReason.ORIGINAL_ONLY,
)


class RejectedReason(StrEnum):
    """Why a received result was not used (besides being late): `worker_rejected_results_total`."""

    UNKNOWN_FRAGMENT = "unknown_fragment"
    ALREADY_RESOLVED = "already_resolved"
    INVALID_MESSAGE = "invalid_message"
    INVALID_AUDIO = "invalid_audio"
    DURATION_MISMATCH = "duration_mismatch"
