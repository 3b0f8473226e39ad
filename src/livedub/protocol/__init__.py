"""The Audio Fragment Protocol (worker ⇄ STS service): models, error codes, constants, parsing.

Both the worker and the STS service import from here; nothing of the protocol is defined twice.
Build an event with its model and emit `model.to_wire()`; validate a received payload with
`parse_as(Model, payload)` (or `parse_client_event` / `parse_server_event` by event name),
which raises `ProtocolValidationError(code, message)` carrying the protocol error to answer
with. This package never does I/O.
"""

from livedub.protocol import constants
from livedub.protocol.audio import decode_base64, encode_base64, expected_samples
from livedub.protocol.constants import EventName, control_ack_event
from livedub.protocol.control import (
    BackpressureConfig,
    BackpressureEmit,
    BackpressureThresholds,
    ControlAck,
    ControlModel,
    DisconnectSimulation,
    ErrorRule,
    ErrorSimulationConfig,
    LatencyConfig,
    ResetConfig,
)
from livedub.protocol.errors import ErrorCode, ProtocolValidationError
from livedub.protocol.models import (
    AudioPayload,
    Backpressure,
    Capabilities,
    ErrorEvent,
    FragmentAck,
    FragmentData,
    FragmentMetadata,
    FragmentProcessed,
    ProcessingError,
    SpeechSegment,
    StageTimings,
    StreamComplete,
    StreamConfig,
    StreamEnd,
    StreamInit,
    StreamPause,
    StreamReady,
    StreamResume,
    StreamStatistics,
    WireModel,
    WorkerFragmentAck,
)
from livedub.protocol.parse import (
    CLIENT_EVENTS,
    CONTROL_MODELS,
    SERVER_EVENTS,
    WORKER_EVENTS,
    parse_as,
    parse_client_event,
    parse_server_event,
)

__all__ = [
    "CLIENT_EVENTS",
    "CONTROL_MODELS",
    "SERVER_EVENTS",
    "WORKER_EVENTS",
    "AudioPayload",
    "Backpressure",
    "BackpressureConfig",
    "BackpressureEmit",
    "BackpressureThresholds",
    "Capabilities",
    "ControlAck",
    "ControlModel",
    "DisconnectSimulation",
    "ErrorCode",
    "ErrorEvent",
    "ErrorRule",
    "ErrorSimulationConfig",
    "EventName",
    "FragmentAck",
    "FragmentData",
    "FragmentMetadata",
    "FragmentProcessed",
    "LatencyConfig",
    "ProcessingError",
    "ProtocolValidationError",
    "ResetConfig",
    "SpeechSegment",
    "StageTimings",
    "StreamComplete",
    "StreamConfig",
    "StreamEnd",
    "StreamInit",
    "StreamPause",
    "StreamReady",
    "StreamResume",
    "StreamStatistics",
    "WireModel",
    "WorkerFragmentAck",
    "constants",
    "control_ack_event",
    "decode_base64",
    "encode_base64",
    "expected_samples",
    "parse_as",
    "parse_client_event",
    "parse_server_event",
]
