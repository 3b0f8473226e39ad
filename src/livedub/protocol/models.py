"""Typed records (`livedub.typed.Record`, msgspec) of every Audio Fragment Protocol event.

One model per wire event (plus the nested objects). `model.to_wire()` gives the JSON-ready dict to
emit (None fields left out); `parse_as(Model, payload)` in `livedub.protocol.parse` turns a
received dict into a model or a `ProtocolValidationError` (`Model.parse(payload)` raises
`livedub.typed.ValidationError` instead). Constraints and cross-field rules hold whether a model
is parsed or built in code.

Conventions: scalar fields are strict (no "5" -> 5, no 1 -> True; an int is a float); unknown
fields are ignored in protocol events (forward compatible); `fragment:data`'s `metadata` is a
free-form object whose known keys are checked. Nothing here does I/O or keeps state. No pydantic:
a worker process imports this (≈ 10 MB of memory per process saved; docs/performance.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, TypedDict

import msgspec

from livedub.protocol import constants as c
from livedub.protocol.audio import decode_base64, encode_base64
from livedub.protocol.constants import (
    AudioFormat,
    BackpressureAction,
    BackpressureSeverity,
    EventName,
    FragmentAckStatus,
    ProcessedStatus,
    Severity,
    Stage,
    WorkerAckStatus,
)
from livedub.protocol.errors import ErrorCode
from livedub.typed import Meta, Record


def is_uuid4(value: object) -> bool:
    """True for a string that `uuid.UUID` reads as a version-4 UUID."""
    if not isinstance(value, str):
        return False
    try:
        return uuid.UUID(value).version == 4
    except ValueError:
        return False


def _require_uuid4(record: Record, *names: str) -> None:
    """`check()` helper: each named field, when not None, is a version-4 UUID string."""
    for name in names:
        value = getattr(record, name)
        if value is not None and not is_uuid4(value):
            raise ValueError(f"{name}: must be a version-4 UUID")


# Field types shared by the models (msgspec's `Meta` constraints; strictness comes from parsing
# strictly, see `Record.parse`).
Uuid4Str = str
"""A version-4 UUID as text; checked by the model's `check()` (`_require_uuid4`)."""
IdStr = Annotated[str, Meta(pattern=c.ID_PATTERN)]
"""`stream_id` / `worker_id`: `[A-Za-z0-9_-]{1,64}`, like the connection headers."""
LooseIdStr = Annotated[str, Meta(max_length=128)]
"""An id echoed back in an error; may be whatever the peer sent (bounded)."""
Text = Annotated[str, Meta(max_length=10_000)]
StrictInt = int
NonNegInt = Annotated[int, Meta(ge=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
StrictBool = bool
Language = Annotated[str, Meta(min_length=1, max_length=32)]


class WireModel(Record):
    """Base of every protocol event and nested object. Unknown fields are ignored."""

    event: ClassVar[EventName | None] = None
    """The Socket.IO event this model is the payload of (None for nested objects)."""
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_CONFIG
    """The protocol error an invalid payload of this model is answered with."""

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict to emit (enums as values, None fields left out)."""
        return self.to_builtins()


# --- stream:init / stream:ready ----------------------------------------------------------------


class StreamConfig(WireModel):
    source_language: Language = c.DEFAULT_SOURCE_LANGUAGE
    target_language: Language = c.DEFAULT_TARGET_LANGUAGE
    voice_profile: Annotated[str, Meta(min_length=1, max_length=128)] = c.DEFAULT_VOICE_PROFILE
    chunk_duration_ms: Annotated[
        int, Meta(ge=c.CHUNK_DURATION_MS_MIN, le=c.CHUNK_DURATION_MS_MAX)
    ] = c.CHUNK_DURATION_MS_DEFAULT
    sample_rate_hz: Annotated[int, Meta(ge=c.SAMPLE_RATE_HZ_MIN, le=c.SAMPLE_RATE_HZ_MAX)] = (
        c.SAMPLE_RATE_HZ_DEFAULT
    )
    channels: Annotated[int, Meta(ge=c.CHANNELS_MIN, le=c.CHANNELS_MAX)] = c.CHANNELS_DEFAULT
    format: AudioFormat = c.DEFAULT_AUDIO_FORMAT


MaxInflight = Annotated[int, Meta(ge=c.MAX_INFLIGHT_MIN, le=c.MAX_INFLIGHT_MAX)]


class StreamInit(WireModel):
    """W→S `stream:init`."""

    event: ClassVar[EventName | None] = EventName.STREAM_INIT
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_CONFIG

    stream_id: IdStr
    worker_id: IdStr
    config: StreamConfig
    max_inflight: MaxInflight = c.MAX_INFLIGHT_DEFAULT
    timeout_ms: Annotated[int, Meta(ge=c.TIMEOUT_MS_MIN, le=c.TIMEOUT_MS_MAX)] = (
        c.TIMEOUT_MS_DEFAULT
    )


class Capabilities(WireModel):
    async_delivery: StrictBool = True
    formats: list[AudioFormat] = msgspec.field(default_factory=lambda: list(c.AUDIO_FORMATS))


class StreamReady(WireModel):
    """S→W `stream:ready`. `max_inflight` is the grant; the worker uses min(own, grant)."""

    event: ClassVar[EventName | None] = EventName.STREAM_READY

    stream_id: IdStr
    session_id: Uuid4Str
    max_inflight: MaxInflight
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)

    def check(self) -> None:
        _require_uuid4(self, "session_id")


# --- fragment:data -----------------------------------------------------------------------------

_ENCODED_FROM: ContextVar[bytes | None] = ContextVar("livedub_audio_encoded_from", default=None)
"""Set by `AudioPayload.from_bytes` only while it builds the payload: the bytes `data_base64` was
just made from. A context variable, not a field: nothing a peer sends can reach it."""


class AudioPayload(WireModel, dict=True):
    """`audio` of `fragment:data` and `dubbed_audio` of `fragment:processed`.

    `data_base64` is decoded (strict base64, at least one byte) when the payload is made, parsed
    or built in code; `to_bytes()` returns those bytes (kept in the instance's `__dict__`, which
    is not a field: not parsed from, nor written to, the wire). `from_bytes` keeps the bytes it
    encodes instead of decoding them back.
    """

    format: AudioFormat
    sample_rate_hz: Annotated[int, Meta(ge=c.SAMPLE_RATE_HZ_MIN, le=c.SAMPLE_RATE_HZ_MAX)]
    channels: Annotated[int, Meta(ge=c.CHANNELS_MIN, le=c.CHANNELS_MAX)]
    duration_ms: Annotated[int, Meta(ge=c.AUDIO_DURATION_MS_MIN, le=c.AUDIO_DURATION_MS_MAX)]
    data_base64: Annotated[str, Meta(min_length=1)]

    def check(self) -> None:
        raw = _ENCODED_FROM.get()
        if raw is None:
            raw = decode_base64(self.data_base64)
        if not raw:
            raise ValueError("data_base64 decodes to no bytes")
        self._raw = raw

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        format: AudioFormat,
        sample_rate_hz: int,
        channels: int,
        duration_ms: int,
    ) -> AudioPayload:
        """Wrap encoded audio bytes (an m4a file, a wav file, ...) for the wire."""
        raw = bytes(data)
        token = _ENCODED_FROM.set(raw)
        try:
            return cls(
                format=format,
                sample_rate_hz=sample_rate_hz,
                channels=channels,
                duration_ms=duration_ms,
                data_base64=encode_base64(raw),
            )
        finally:
            _ENCODED_FROM.reset(token)

    def to_bytes(self) -> bytes:
        """The decoded audio bytes (decoded once, when the payload was made)."""
        return self._raw


class FragmentMetadata(TypedDict, total=False):
    """The keys of `fragment:data`'s `metadata` that livedub reads and checks (integers when
    present; None is the same as absent). Any other key is kept as sent."""

    pts_ns: int
    source_pts_ns: int


METADATA_INT_KEYS: tuple[str, ...] = ("pts_ns", "source_pts_ns")


def _checked_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` with its known keys checked (int, not bool) and a None one left out."""
    out = dict(metadata)
    for key in METADATA_INT_KEYS:
        value = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"metadata.{key}: Expected `int`, got `{type(value).__name__}`")
    return out


class FragmentData(WireModel):
    """W→S `fragment:data`."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_DATA
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    stream_id: IdStr
    sequence_number: NonNegInt
    timestamp: NonNegInt
    """Unix time in ms at which the worker sent the fragment."""
    audio: AudioPayload
    metadata: Mapping[str, Any] | None = None
    """Free-form object, kept as sent; its `FragmentMetadata` keys are checked (`pts_ns`)."""

    def check(self) -> None:
        _require_uuid4(self, "fragment_id")
        if self.metadata is not None:
            self.metadata = _checked_metadata(self.metadata)

    @property
    def pts_ns(self) -> int | None:
        """`metadata.pts_ns`: the fragment's presentation time in the worker's timeline."""
        return None if self.metadata is None else self.metadata.get("pts_ns")

    @property
    def source_pts_ns(self) -> int | None:
        """`metadata.source_pts_ns`: the fragment's presentation time in the source."""
        return None if self.metadata is None else self.metadata.get("source_pts_ns")


# --- fragment:ack (both directions) ------------------------------------------------------------


class FragmentAck(WireModel):
    """S→W `fragment:ack`: the server has the fragment (informational)."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_ACK
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    status: FragmentAckStatus
    queue_position: NonNegInt | None = None

    def check(self) -> None:
        _require_uuid4(self, "fragment_id")


class WorkerFragmentAck(WireModel):
    """W→S `fragment:ack`: the worker got (`received`) / used (`applied`) a processed fragment.
    The server's in-flight count drops on it."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_ACK
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    status: WorkerAckStatus
    timestamp: NonNegInt

    def check(self) -> None:
        _require_uuid4(self, "fragment_id")


# --- fragment:processed ------------------------------------------------------------------------


class StageTimings(WireModel):
    asr_ms: NonNegInt | None = None
    translation_ms: NonNegInt | None = None
    tts_ms: NonNegInt | None = None


class SpeechSegment(WireModel):
    """One speech span of a `fragment:processed` (livedub extension, optional). `start_ms` /
    `end_ms` are relative to the fragment start: where `text` was spoken in the original, and
    where the dubbed voice of `translated_text` plays in the returned audio (the dub backend fits
    the voice to exactly the span where the source spoke)."""

    start_ms: NonNegInt
    end_ms: NonNegInt
    text: Text = ""
    translated_text: Text = ""

    def check(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError("end_ms must not be before start_ms")


class ProcessingError(WireModel, kw_only=True):
    """`error` of a failed `fragment:processed`."""

    code: ErrorCode
    message: Text
    stage: Stage | None = None
    retryable: StrictBool

    @classmethod
    def from_code(
        cls,
        code: ErrorCode,
        message: str,
        *,
        stage: Stage | None = None,
        retryable: bool | None = None,
    ) -> ProcessingError:
        """`retryable` defaults to the code's value in the error table."""
        return cls(
            code=code,
            message=message,
            stage=stage,
            retryable=code.retryable if retryable is None else retryable,
        )


class FragmentProcessed(WireModel):
    """S→W `fragment:processed`, delivered in `sequence_number` order per session."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_PROCESSED
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    stream_id: IdStr
    sequence_number: NonNegInt
    status: ProcessedStatus
    processing_time_ms: NonNegInt
    dubbed_audio: AudioPayload | None = None
    transcript: str | None = None
    translated_text: str | None = None
    stage_timings: StageTimings | None = None
    error: ProcessingError | None = None
    segments: Annotated[list[SpeechSegment], Meta(max_length=c.SEGMENTS_MAX)] | None = None
    """livedub extension: the speech spans of the fragment (captions per span); old peers omit it."""

    def check(self) -> None:
        _require_uuid4(self, "fragment_id")
        if self.status in ("success", "partial") and self.dubbed_audio is None:
            raise ValueError(f"dubbed_audio is required when status is {self.status}")
        if self.status == "failed" and self.error is None:
            raise ValueError("error is required when status is failed")


# --- flow control and lifecycle ----------------------------------------------------------------


class Backpressure(WireModel):
    """S→W `backpressure`."""

    event: ClassVar[EventName | None] = EventName.BACKPRESSURE

    stream_id: IdStr
    severity: BackpressureSeverity
    action: BackpressureAction
    current_inflight: NonNegInt | None = None
    queue_depth: NonNegInt | None = None
    recommended_delay_ms: NonNegInt | None = None


class _StreamControl(WireModel):
    stream_id: IdStr | None = None
    """Optional: the connection's session is meant; when given it must be that session's."""
    reason: Text | None = None


class StreamPause(_StreamControl):
    """W→S `stream:pause`."""

    event: ClassVar[EventName | None] = EventName.STREAM_PAUSE


class StreamResume(_StreamControl):
    """W→S `stream:resume`."""

    event: ClassVar[EventName | None] = EventName.STREAM_RESUME


class StreamEnd(_StreamControl):
    """W→S `stream:end`."""

    event: ClassVar[EventName | None] = EventName.STREAM_END


class StreamStatistics(WireModel):
    success_count: NonNegInt
    partial_count: NonNegInt
    failed_count: NonNegInt
    avg_processing_time_ms: NonNegFloat
    p95_processing_time_ms: NonNegFloat


class StreamComplete(WireModel):
    """S→W `stream:complete`."""

    event: ClassVar[EventName | None] = EventName.STREAM_COMPLETE

    stream_id: IdStr
    total_fragments: NonNegInt
    total_duration_ms: NonNegInt
    statistics: StreamStatistics


class ErrorEvent(WireModel, kw_only=True):
    """S→W `error`. One that names a `fragment_id` resolves that fragment as failed."""

    event: ClassVar[EventName | None] = EventName.ERROR

    error_id: Uuid4Str | None = None
    stream_id: LooseIdStr | None = None
    fragment_id: LooseIdStr | None = None
    code: ErrorCode
    message: Text
    severity: Severity | None = None
    retryable: StrictBool

    def check(self) -> None:
        _require_uuid4(self, "error_id")

    @classmethod
    def from_code(
        cls,
        code: ErrorCode,
        message: str,
        *,
        stream_id: str | None = None,
        fragment_id: str | None = None,
    ) -> ErrorEvent:
        """An error with a fresh `error_id` and the table's severity and retryable."""
        return cls(
            error_id=str(uuid.uuid4()),
            stream_id=stream_id,
            fragment_id=fragment_id,
            code=code,
            message=message[:10_000],
            severity=code.severity,
            retryable=code.retryable,
        )


# --- HTTP: what an STS service can dub (GET /v1/languages) ----------------------------------------

LANGUAGES_ROUTE = "/v1/languages"
"""`GET` on an STS service: the language pairs it can dub (`LanguagesInfo`); no auth needed."""


# msgspec lets a frozen struct extend a non-frozen one that declares no fields (WireModel);
# mypy's dataclass rule does not know that.
class LanguagePair(WireModel, frozen=True):  # type: ignore[misc]
    """One (source, target) pair an STS backend can dub, ISO 639-1 codes. Frozen (hashable)."""

    source: Language
    target: Language


class LanguagesInfo(WireModel):
    """`GET /v1/languages` of an STS service (a livedub extension; docs/protocol.md).

    `any_pair` true: the backend accepts every pair (the echo); `pairs` then lists nothing.
    Otherwise `pairs` is every pair a `stream:init` may ask for without `INVALID_CONFIG`."""

    backend: Annotated[str, Meta(max_length=64)]
    any_pair: StrictBool = False
    pairs: Annotated[list[LanguagePair], Meta(max_length=1024)] = msgspec.field(
        default_factory=list
    )

    def supports(self, source: str, target: str) -> bool:
        return self.any_pair or any(p.source == source and p.target == target for p in self.pairs)

    def targets_of(self, source: str) -> list[str]:
        """Every target language dubbed from `source` (empty with `any_pair`)."""
        return [p.target for p in self.pairs if p.source == source]
