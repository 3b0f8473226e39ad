"""Pydantic v2 models of every Audio Fragment Protocol event, both directions.

One model per wire event (plus the nested objects). `model.to_wire()` (the same as
`model_dump(mode="json", exclude_none=True)`) gives the dict to emit; `parse_as(Model, payload)`
in `livedub.protocol.parse` turns a received dict into a model or a `ProtocolValidationError`.

Conventions: scalar fields are strict (no "5" -> 5, no 1 -> True); unknown fields are ignored in
protocol events (forward compatible) and allowed in `FragmentMetadata`. Nothing here does I/O
or keeps state.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

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


def _check_uuid4(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise ValueError("must be a UUID") from exc
    if parsed.version != 4:
        raise ValueError("must be a version-4 UUID")
    return value


# Field types shared by the models.
Uuid4Str = Annotated[str, Strict(), AfterValidator(_check_uuid4)]
IdStr = Annotated[str, StringConstraints(strict=True, pattern=c.ID_PATTERN)]
"""`stream_id` / `worker_id`: `[A-Za-z0-9_-]{1,64}`, like the connection headers."""
LooseIdStr = Annotated[str, StringConstraints(strict=True, max_length=128)]
"""An id echoed back in an error; may be whatever the peer sent (bounded)."""
Text = Annotated[str, StringConstraints(strict=True, max_length=10_000)]
StrictInt = Annotated[int, Strict()]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
StrictBool = Annotated[bool, Strict()]


class WireModel(BaseModel):
    """Base of every protocol event and nested object."""

    model_config = ConfigDict(extra="ignore", validate_default=False)

    event: ClassVar[EventName | None] = None
    """The Socket.IO event this model is the payload of (None for nested objects)."""
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_CONFIG
    """The protocol error an invalid payload of this model is answered with."""

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict to emit: `model_dump(mode="json", exclude_none=True)`."""
        return self.model_dump(mode="json", exclude_none=True)


# --- stream:init / stream:ready ----------------------------------------------------------------


class StreamConfig(WireModel):
    source_language: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)] = (
        c.DEFAULT_SOURCE_LANGUAGE
    )
    target_language: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)] = (
        c.DEFAULT_TARGET_LANGUAGE
    )
    voice_profile: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)] = (
        c.DEFAULT_VOICE_PROFILE
    )
    chunk_duration_ms: Annotated[
        int, Strict(), Field(ge=c.CHUNK_DURATION_MS_MIN, le=c.CHUNK_DURATION_MS_MAX)
    ] = c.CHUNK_DURATION_MS_DEFAULT
    sample_rate_hz: Annotated[
        int, Strict(), Field(ge=c.SAMPLE_RATE_HZ_MIN, le=c.SAMPLE_RATE_HZ_MAX)
    ] = c.SAMPLE_RATE_HZ_DEFAULT
    channels: Annotated[int, Strict(), Field(ge=c.CHANNELS_MIN, le=c.CHANNELS_MAX)] = (
        c.CHANNELS_DEFAULT
    )
    format: AudioFormat = c.DEFAULT_AUDIO_FORMAT


class StreamInit(WireModel):
    """W→S `stream:init`."""

    event: ClassVar[EventName | None] = EventName.STREAM_INIT
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_CONFIG

    stream_id: IdStr
    worker_id: IdStr
    config: StreamConfig
    max_inflight: Annotated[int, Strict(), Field(ge=c.MAX_INFLIGHT_MIN, le=c.MAX_INFLIGHT_MAX)] = (
        c.MAX_INFLIGHT_DEFAULT
    )
    timeout_ms: Annotated[int, Strict(), Field(ge=c.TIMEOUT_MS_MIN, le=c.TIMEOUT_MS_MAX)] = (
        c.TIMEOUT_MS_DEFAULT
    )


class Capabilities(WireModel):
    async_delivery: StrictBool = True
    formats: list[AudioFormat] = Field(default_factory=lambda: list(c.AUDIO_FORMATS))


class StreamReady(WireModel):
    """S→W `stream:ready`. `max_inflight` is the grant; the worker uses min(own, grant)."""

    event: ClassVar[EventName | None] = EventName.STREAM_READY

    stream_id: IdStr
    session_id: Uuid4Str
    max_inflight: Annotated[int, Strict(), Field(ge=c.MAX_INFLIGHT_MIN, le=c.MAX_INFLIGHT_MAX)]
    capabilities: Capabilities = Field(default_factory=Capabilities)


# --- fragment:data -----------------------------------------------------------------------------


_ENCODED_FROM = "livedub.encoded_from"  # validation context: the bytes `data_base64` was made from


class AudioPayload(WireModel):
    """`audio` of `fragment:data` and `dubbed_audio` of `fragment:processed`.

    `data_base64` is checked to be strict base64 on validation; `to_bytes()` returns the
    decoded bytes (decoded once, then cached). Build one from bytes with `from_bytes`.
    """

    format: AudioFormat
    sample_rate_hz: Annotated[
        int, Strict(), Field(ge=c.SAMPLE_RATE_HZ_MIN, le=c.SAMPLE_RATE_HZ_MAX)
    ]
    channels: Annotated[int, Strict(), Field(ge=c.CHANNELS_MIN, le=c.CHANNELS_MAX)]
    duration_ms: Annotated[
        int, Strict(), Field(ge=c.AUDIO_DURATION_MS_MIN, le=c.AUDIO_DURATION_MS_MAX)
    ]
    data_base64: Annotated[str, StringConstraints(strict=True, min_length=1)]

    _raw: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _decode(self, info: ValidationInfo) -> Self:
        # `from_bytes` hands over the bytes it has just encoded: no need to decode them back
        raw = info.context.get(_ENCODED_FROM) if isinstance(info.context, dict) else None
        self._raw = raw if isinstance(raw, bytes) else decode_base64(self.data_base64)
        if not self._raw:
            raise ValueError("data_base64 decodes to no bytes")
        return self

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
        fields = {
            "format": format,
            "sample_rate_hz": sample_rate_hz,
            "channels": channels,
            "duration_ms": duration_ms,
            "data_base64": encode_base64(data),
        }
        return cls.model_validate(fields, context={_ENCODED_FROM: bytes(data)})

    def to_bytes(self) -> bytes:
        """The decoded audio bytes."""
        if self._raw is None:
            self._raw = decode_base64(self.data_base64)
        return self._raw


class FragmentMetadata(WireModel):
    """Free-form fragment metadata; the known keys are typed, others are kept as sent."""

    model_config = ConfigDict(extra="allow")

    pts_ns: StrictInt | None = None
    source_pts_ns: StrictInt | None = None


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
    metadata: FragmentMetadata | None = None


# --- fragment:ack (both directions) ------------------------------------------------------------


class FragmentAck(WireModel):
    """S→W `fragment:ack`: the server has the fragment (informational)."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_ACK
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    status: FragmentAckStatus
    queue_position: NonNegInt | None = None


class WorkerFragmentAck(WireModel):
    """W→S `fragment:ack`: the worker got (`received`) / used (`applied`) a processed fragment.
    The server's in-flight count drops on it."""

    event: ClassVar[EventName | None] = EventName.FRAGMENT_ACK
    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_FRAGMENT

    fragment_id: Uuid4Str
    status: WorkerAckStatus
    timestamp: NonNegInt


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

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_ms < self.start_ms:
            raise ValueError("end_ms must not be before start_ms")
        return self


class ProcessingError(WireModel):
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
    segments: Annotated[list[SpeechSegment], Field(max_length=c.SEGMENTS_MAX)] | None = None
    """livedub extension: the speech spans of the fragment (captions per span); old peers omit it."""

    @model_validator(mode="after")
    def _status_fields(self) -> Self:
        if self.status in ("success", "partial") and self.dubbed_audio is None:
            raise ValueError(f"dubbed_audio is required when status is {self.status}")
        if self.status == "failed" and self.error is None:
            raise ValueError("error is required when status is failed")
        return self


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


class ErrorEvent(WireModel):
    """S→W `error`. One that names a `fragment_id` resolves that fragment as failed."""

    event: ClassVar[EventName | None] = EventName.ERROR

    error_id: Uuid4Str | None = None
    stream_id: LooseIdStr | None = None
    fragment_id: LooseIdStr | None = None
    code: ErrorCode
    message: Text
    severity: Severity | None = None
    retryable: StrictBool

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


class LanguagePair(WireModel):
    """One (source, target) pair an STS backend can dub, ISO 639-1 codes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    source: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)]
    target: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)]


class LanguagesInfo(WireModel):
    """`GET /v1/languages` of an STS service (a livedub extension; docs/protocol.md).

    `any_pair` true: the backend accepts every pair (the echo); `pairs` then lists nothing.
    Otherwise `pairs` is every pair a `stream:init` may ask for without `INVALID_CONFIG`."""

    backend: Annotated[str, StringConstraints(strict=True, max_length=64)]
    any_pair: StrictBool = False
    pairs: list[LanguagePair] = Field(default_factory=list, max_length=1024)

    def supports(self, source: str, target: str) -> bool:
        return self.any_pair or LanguagePair(source=source, target=target) in self.pairs

    def targets_of(self, source: str) -> list[str]:
        """Every target language dubbed from `source` (empty with `any_pair`)."""
        return [p.target for p in self.pairs if p.source == source]
