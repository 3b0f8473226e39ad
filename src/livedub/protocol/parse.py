"""Turn received event payloads into models, or into one typed `ProtocolValidationError`.

`parse_as(Model, payload)` validates against a known model; `parse_client_event(event, payload)`
(what a server receives: worker events and test controls) and `parse_server_event(event,
payload)` (what a worker receives) look the model up by event name. Every failure — wrong type,
missing field, out-of-range value, unknown event, oversize audio — becomes a
`ProtocolValidationError` whose `code` is the protocol error to answer with. Never raises
anything else for bad input; never does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from livedub.protocol.constants import (
    CONTROL_EVENTS,
    MAX_FRAGMENT_BASE64_BYTES,
    EventName,
    control_ack_event,
)
from livedub.protocol.control import (
    BackpressureConfig,
    ControlAck,
    DisconnectSimulation,
    ErrorSimulationConfig,
    LatencyConfig,
    ResetConfig,
)
from livedub.protocol.errors import ErrorCode, ProtocolValidationError
from livedub.protocol.models import (
    Backpressure,
    ErrorEvent,
    FragmentAck,
    FragmentData,
    FragmentProcessed,
    StreamComplete,
    StreamEnd,
    StreamInit,
    StreamPause,
    StreamReady,
    StreamResume,
    WireModel,
    WorkerFragmentAck,
)
from livedub.typed import ValidationError, describe, explain

M = TypeVar("M", bound=WireModel)

WORKER_EVENTS: Final[Mapping[str, type[WireModel]]] = {
    EventName.STREAM_INIT: StreamInit,
    EventName.FRAGMENT_DATA: FragmentData,
    EventName.FRAGMENT_ACK: WorkerFragmentAck,
    EventName.STREAM_PAUSE: StreamPause,
    EventName.STREAM_RESUME: StreamResume,
    EventName.STREAM_END: StreamEnd,
}
"""Events a worker sends (W→S) and their models."""

CONTROL_MODELS: Final[Mapping[str, type[WireModel]]] = {
    EventName.CONFIG_ERROR_SIMULATION: ErrorSimulationConfig,
    EventName.CONFIG_LATENCY: LatencyConfig,
    EventName.CONFIG_BACKPRESSURE: BackpressureConfig,
    EventName.SIMULATE_DISCONNECT: DisconnectSimulation,
    EventName.CONFIG_RESET: ResetConfig,
}
"""Test-control events (any client → echo service) and their models."""

CLIENT_EVENTS: Final[Mapping[str, type[WireModel]]] = {**WORKER_EVENTS, **CONTROL_MODELS}
"""Everything a server may receive."""

SERVER_EVENTS: Final[Mapping[str, type[WireModel]]] = {
    EventName.STREAM_READY: StreamReady,
    EventName.FRAGMENT_ACK: FragmentAck,
    EventName.FRAGMENT_PROCESSED: FragmentProcessed,
    EventName.BACKPRESSURE: Backpressure,
    EventName.STREAM_COMPLETE: StreamComplete,
    EventName.ERROR: ErrorEvent,
    **{control_ack_event(e): ControlAck for e in CONTROL_EVENTS},
}
"""Everything a server sends (S→W, and `<control>:ack` to a control caller)."""

_MAX_ID_ECHO = 128


def _readable_str(payload: Any, key: str) -> str | None:
    if isinstance(payload, Mapping):
        value = payload.get(key)
        if isinstance(value, str) and 0 < len(value) <= _MAX_ID_ECHO:
            return value
    return None


def _audio_b64_length(payload: Any) -> int | None:
    if isinstance(payload, Mapping):
        audio = payload.get("audio")
        if isinstance(audio, Mapping):
            data = audio.get("data_base64")
            if isinstance(data, str):
                return len(data)
    return None


_QUOTED = re.compile(r"'[^']*'|`[^`]*`")
_QUOTE_MAX = 64
_REASON_MAX = 300


def short_reason(text: str) -> str:
    """`text` (a validation error) without the bulk of what a hostile peer sent, for a reply or a
    log line: msgspec quotes the offending value in some errors ("Invalid enum value '…'",
    "unknown field `…`"), so each quoted part is cut to `_QUOTE_MAX` characters and the whole to
    `_REASON_MAX`."""

    def cut(m: re.Match[str]) -> str:
        quoted = m.group(0)
        if len(quoted) <= _QUOTE_MAX:
            return quoted
        return f"{quoted[: _QUOTE_MAX - 1]}…{quoted[-1]}"

    text = _QUOTED.sub(cut, text)
    return text if len(text) <= _REASON_MAX else f"{text[: _REASON_MAX - 1]}…"


def parse_as(
    model: type[M],
    payload: Any,
    *,
    event: str | None = None,
    max_audio_base64_bytes: int = MAX_FRAGMENT_BASE64_BYTES,
) -> M:
    """Validate `payload` (the decoded JSON of one event) as `model`.

    Raises `ProtocolValidationError` with `model.invalid_code` (INVALID_CONFIG for
    `stream:init`, INVALID_FRAGMENT for `fragment:*`, ...). For `FragmentData`, audio longer
    than `max_audio_base64_bytes` (as base64 text) raises FRAGMENT_TOO_LARGE before anything
    else is checked.
    """
    name = event or (model.event.value if model.event else model.__name__)
    stream_id = _readable_str(payload, "stream_id")
    fragment_id = _readable_str(payload, "fragment_id")
    if model is FragmentData:
        size = _audio_b64_length(payload)
        if size is not None and size > max_audio_base64_bytes:
            raise ProtocolValidationError(
                ErrorCode.FRAGMENT_TOO_LARGE,
                f"audio.data_base64 is {size} bytes; the limit is {max_audio_base64_bytes}",
                event=name,
                stream_id=stream_id,
                fragment_id=fragment_id,
            )
    if not isinstance(payload, Mapping):
        raise ProtocolValidationError(
            model.invalid_code,
            f"{name}: payload must be a JSON object, got {type(payload).__name__}",
            event=name,
        )
    try:
        return model.parse(payload)
    except ValidationError as exc:
        loc, reason = (short_reason(part) for part in describe(exc))
        raise ProtocolValidationError(
            model.invalid_code,
            f"{name}: {short_reason(explain(exc))}",
            event=name,
            stream_id=stream_id,
            fragment_id=fragment_id,
            details=[{"loc": loc, "msg": reason}],
        ) from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: odd inputs
        raise ProtocolValidationError(
            model.invalid_code,
            f"{name}: {short_reason(str(exc))}",
            event=name,
            stream_id=stream_id,
            fragment_id=fragment_id,
        ) from None


def _parse_by_name(
    table: Mapping[str, type[WireModel]], event: str, payload: Any, **kwargs: Any
) -> WireModel:
    model = table.get(event)
    if model is None:
        raise ProtocolValidationError(
            ErrorCode.INVALID_CONFIG, f"unknown event {event!r}", event=event
        )
    return parse_as(model, payload, event=event, **kwargs)


def parse_client_event(
    event: str, payload: Any, *, max_audio_base64_bytes: int = MAX_FRAGMENT_BASE64_BYTES
) -> WireModel:
    """Validate an event a server received (worker event or test control)."""
    return _parse_by_name(
        CLIENT_EVENTS, event, payload, max_audio_base64_bytes=max_audio_base64_bytes
    )


def parse_server_event(event: str, payload: Any) -> WireModel:
    """Validate an event a worker (or control caller) received from the server."""
    return _parse_by_name(SERVER_EVENTS, event, payload)
