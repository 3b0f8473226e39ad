"""Contract tests: every protocol model accepts the spec's valid examples and rejects invalid
ones with the right protocol error code."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from livedub.protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    AudioPayload,
    Backpressure,
    BackpressureConfig,
    BackpressureEmit,
    BackpressureThresholds,
    ControlAck,
    DisconnectSimulation,
    ErrorCode,
    ErrorEvent,
    ErrorRule,
    ErrorSimulationConfig,
    EventName,
    FragmentAck,
    FragmentData,
    FragmentProcessed,
    LanguagePair,
    LanguagesInfo,
    LatencyConfig,
    ProcessingError,
    ProtocolValidationError,
    ResetConfig,
    SpeechSegment,
    StreamComplete,
    StreamConfig,
    StreamEnd,
    StreamInit,
    StreamPause,
    StreamReady,
    StreamResume,
    WireModel,
    WorkerFragmentAck,
    constants,
    control_ack_event,
    decode_base64,
    encode_base64,
    expected_samples,
    parse_as,
    parse_client_event,
    parse_server_event,
)
from livedub.typed import ValidationError

FID = "0b8f9a52-3c4d-4e5f-8a6b-7c8d9e0f1a2b"
SID = "1c9e8b63-4d5e-4f60-9b7c-8d9e0f1a2b3c"
AUDIO = {
    "format": "m4a",
    "sample_rate_hz": 48000,
    "channels": 2,
    "duration_ms": 6000,
    "data_base64": encode_base64(b"\x00\x01\x02audio"),
}

# One valid wire example per model (as a peer would send it).
VALID: dict[type[WireModel], dict[str, Any]] = {
    StreamInit: {
        "stream_id": "stream-1",
        "worker_id": "worker_1",
        "config": {
            "source_language": "en",
            "target_language": "es",
            "voice_profile": "default",
            "chunk_duration_ms": 6000,
            "sample_rate_hz": 48000,
            "channels": 2,
            "format": "m4a",
        },
        "max_inflight": 3,
        "timeout_ms": 8000,
    },
    StreamReady: {
        "stream_id": "stream-1",
        "session_id": SID,
        "max_inflight": 3,
        "capabilities": {"async_delivery": True, "formats": ["m4a", "wav", "flac"]},
    },
    FragmentData: {
        "fragment_id": FID,
        "stream_id": "stream-1",
        "sequence_number": 0,
        "timestamp": 1_700_000_000_000,
        "audio": AUDIO,
        "metadata": {"pts_ns": 0, "source_pts_ns": 123, "camera": "A"},
    },
    FragmentAck: {"fragment_id": FID, "status": "queued", "queue_position": 0},
    WorkerFragmentAck: {"fragment_id": FID, "status": "applied", "timestamp": 1_700_000_000_000},
    FragmentProcessed: {
        "fragment_id": FID,
        "stream_id": "stream-1",
        "sequence_number": 0,
        "status": "success",
        "processing_time_ms": 42,
        "dubbed_audio": AUDIO,
        "transcript": "hello",
        "translated_text": "hola",
        "stage_timings": {"asr_ms": 10, "translation_ms": 5, "tts_ms": 27},
    },
    Backpressure: {
        "stream_id": "stream-1",
        "severity": "medium",
        "action": "slow_down",
        "current_inflight": 2,
        "queue_depth": 2,
        "recommended_delay_ms": 500,
    },
    StreamPause: {"stream_id": "stream-1", "reason": "operator"},
    StreamResume: {"stream_id": "stream-1", "reason": "operator"},
    StreamEnd: {"stream_id": "stream-1", "reason": "source ended"},
    StreamComplete: {
        "stream_id": "stream-1",
        "total_fragments": 10,
        "total_duration_ms": 60000,
        "statistics": {
            "success_count": 9,
            "partial_count": 0,
            "failed_count": 1,
            "avg_processing_time_ms": 12.5,
            "p95_processing_time_ms": 30,
        },
    },
    ErrorEvent: {
        "error_id": str(uuid.uuid4()),
        "stream_id": "stream-1",
        "fragment_id": FID,
        "code": "INVALID_SEQUENCE",
        "message": "expected 3",
        "severity": "error",
        "retryable": False,
    },
    ErrorSimulationConfig: {
        "stream_id": "stream-1",
        "enabled": True,
        "rules": [
            {
                "trigger": "sequence_number",
                "value": 3,
                "error_code": "TIMEOUT",
                "error_message": "boom",
                "retryable": True,
                "stage": "asr",
            },
            {"trigger": "fragment_id", "value": FID, "error_code": "MODEL_ERROR"},
            {"trigger": "nth_fragment", "value": 5, "error_code": "GPU_OOM"},
            {"trigger": "count", "value": 2, "error_code": "QUEUE_FULL"},
        ],
    },
    LatencyConfig: {"stream_id": "stream-1", "min_delay_ms": 10, "max_delay_ms": 50, "seed": 7},
    BackpressureConfig: {
        "stream_id": "stream-1",
        "enabled": True,
        "thresholds": {"low": 0.5, "medium": 0.7, "high": 0.9},
        "emit": {"severity": "high", "action": "pause", "recommended_delay_ms": 0},
    },
    DisconnectSimulation: {"stream_id": "stream-1", "delay_ms": 100, "refuse_reconnect_ms": 2000},
    ResetConfig: {"stream_id": "stream-1"},
    ControlAck: {"status": "accepted", "message": "ok"},
}


def _set(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy of payload with `a.b.c` set to value (or deleted when value is DELETE)."""
    out = copy.deepcopy(payload)
    node: Any = out
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


DELETE = object()

INVALID: list[tuple[type[WireModel], str, Any]] = [
    # stream:init
    (StreamInit, "stream_id", DELETE),
    (StreamInit, "worker_id", DELETE),
    (StreamInit, "config", DELETE),
    (StreamInit, "stream_id", "has space"),
    (StreamInit, "stream_id", "x" * 65),
    (StreamInit, "stream_id", ""),
    (StreamInit, "worker_id", "ünïcode"),
    (StreamInit, "max_inflight", 0),
    (StreamInit, "max_inflight", 11),
    (StreamInit, "max_inflight", "3"),
    (StreamInit, "max_inflight", 3.0),
    (StreamInit, "max_inflight", True),
    (StreamInit, "timeout_ms", 999),
    (StreamInit, "timeout_ms", 30001),
    (StreamInit, "config.chunk_duration_ms", 99),
    (StreamInit, "config.chunk_duration_ms", 60001),
    (StreamInit, "config.sample_rate_hz", 7999),
    (StreamInit, "config.sample_rate_hz", 96001),
    (StreamInit, "config.channels", 0),
    (StreamInit, "config.channels", 3),
    (StreamInit, "config.format", "mp3"),
    (StreamInit, "config.source_language", ""),
    (StreamInit, "config", "not an object"),
    # stream:ready
    (StreamReady, "session_id", "not-a-uuid"),
    (StreamReady, "session_id", "6673452e-e7d2-11f1-b82e-02fc00000001"),  # a uuid1, not uuid4
    (StreamReady, "max_inflight", 0),
    (StreamReady, "capabilities.formats", ["ogg"]),
    # fragment:data
    (FragmentData, "fragment_id", DELETE),
    (FragmentData, "fragment_id", "frag-1"),
    (FragmentData, "fragment_id", 12345),
    (FragmentData, "stream_id", DELETE),
    (FragmentData, "sequence_number", -1),
    (FragmentData, "sequence_number", "0"),
    (FragmentData, "sequence_number", None),
    (FragmentData, "timestamp", -5),
    (FragmentData, "audio", DELETE),
    (FragmentData, "audio", "base64 here"),
    (FragmentData, "audio.format", "ogg"),
    (FragmentData, "audio.sample_rate_hz", 7000),
    (FragmentData, "audio.channels", 3),
    (FragmentData, "audio.duration_ms", 0),
    (FragmentData, "audio.duration_ms", 60001),
    (FragmentData, "audio.data_base64", ""),
    (FragmentData, "audio.data_base64", "not base64!!"),
    (FragmentData, "audio.data_base64", "abc"),
    (FragmentData, "audio.data_base64", "é" * 8),
    (FragmentData, "audio.data_base64", 123),
    (FragmentData, "metadata.pts_ns", "0"),
    # fragment:ack (both)
    (FragmentAck, "status", "received"),
    (FragmentAck, "queue_position", -1),
    (FragmentAck, "fragment_id", DELETE),
    (WorkerFragmentAck, "status", "queued"),
    (WorkerFragmentAck, "timestamp", DELETE),
    (WorkerFragmentAck, "fragment_id", "x"),
    # fragment:processed
    (FragmentProcessed, "status", "done"),
    (FragmentProcessed, "dubbed_audio", DELETE),  # success without audio
    (FragmentProcessed, "processing_time_ms", -1),
    (FragmentProcessed, "processing_time_ms", DELETE),
    (FragmentProcessed, "sequence_number", DELETE),
    (FragmentProcessed, "stage_timings.asr_ms", -3),
    # backpressure
    (Backpressure, "severity", "critical"),
    (Backpressure, "action", "stop"),
    (Backpressure, "recommended_delay_ms", -1),
    # lifecycle
    (StreamPause, "stream_id", "bad id"),
    (StreamEnd, "reason", 5),
    (StreamComplete, "statistics", DELETE),
    (StreamComplete, "statistics.avg_processing_time_ms", -1.0),
    (StreamComplete, "statistics.success_count", "9"),
    # error
    (ErrorEvent, "code", "NOPE"),
    (ErrorEvent, "message", DELETE),
    (ErrorEvent, "retryable", DELETE),
    (ErrorEvent, "retryable", "no"),
    (ErrorEvent, "severity", "info"),
    # controls
    (ErrorSimulationConfig, "rules.0.trigger", "always"),
    (ErrorSimulationConfig, "rules.0.value", "3"),
    (ErrorSimulationConfig, "rules.1.value", 5),
    (ErrorSimulationConfig, "rules.2.value", 0),
    (ErrorSimulationConfig, "rules.3.value", -1),
    (ErrorSimulationConfig, "rules.0.error_code", "BAD"),
    (ErrorSimulationConfig, "rules.0.stage", "mt"),
    (ErrorSimulationConfig, "rules.0.unknown_key", 1),
    (ErrorSimulationConfig, "enabled", "yes"),
    (ErrorSimulationConfig, "typo", True),
    (LatencyConfig, "min_delay_ms", DELETE),
    (LatencyConfig, "max_delay_ms", 5),
    (LatencyConfig, "max_delay_ms", 60001),
    (LatencyConfig, "delay_ms", 20),
    (LatencyConfig, "seed", "7"),
    (BackpressureConfig, "thresholds.low", 0.95),
    (BackpressureConfig, "thresholds.high", 0),
    (BackpressureConfig, "emit.action", "stop"),
    (BackpressureConfig, "emit.severity", DELETE),
    (DisconnectSimulation, "delay_ms", -1),
    (DisconnectSimulation, "delay_ms", 60001),
    (DisconnectSimulation, "refuse_reconnect_ms", -1),
    (DisconnectSimulation, "stream_id", "bad id"),
    (ResetConfig, "everything", True),
    (ControlAck, "status", "ok"),
]


@pytest.mark.parametrize("model", list(VALID), ids=lambda m: m.__name__)
def test_valid_example_round_trips(model: type[WireModel]) -> None:
    parsed = parse_as(model, VALID[model])
    assert isinstance(parsed, model)
    wire = parsed.to_wire()
    assert wire == json.loads(json.dumps(wire))  # JSON-ready: plain dicts, lists, str, numbers
    assert parse_as(model, wire) == parsed


@pytest.mark.parametrize(
    ("model", "path", "value"),
    INVALID,
    ids=[f"{m.__name__}-{p}-{v if v is not DELETE else 'missing'}"[:80] for m, p, v in INVALID],
)
def test_invalid_example_rejected_with_protocol_code(
    model: type[WireModel], path: str, value: Any
) -> None:
    payload = _set(VALID[model], path, value)
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(model, payload)
    assert info.value.code is model.invalid_code
    assert info.value.message


@pytest.mark.parametrize("model", list(VALID), ids=lambda m: m.__name__)
@pytest.mark.parametrize("payload", [None, [], "text", 5, b"bytes"])
def test_non_object_payload_rejected(model: type[WireModel], payload: Any) -> None:
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(model, payload)
    assert info.value.code is model.invalid_code


def test_error_code_per_event() -> None:
    assert StreamInit.invalid_code is ErrorCode.INVALID_CONFIG
    assert FragmentData.invalid_code is ErrorCode.INVALID_FRAGMENT
    assert WorkerFragmentAck.invalid_code is ErrorCode.INVALID_FRAGMENT
    for model in (StreamPause, StreamResume, StreamEnd, LatencyConfig):
        assert model.invalid_code is ErrorCode.INVALID_CONFIG


def test_error_names_fragment_and_stream_from_raw_payload() -> None:
    payload = _set(VALID[FragmentData], "sequence_number", -1)
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(FragmentData, payload)
    assert info.value.fragment_id == FID
    assert info.value.stream_id == "stream-1"
    assert info.value.details and info.value.details[0]["loc"] == "sequence_number"
    assert "sequence_number" in info.value.message


def test_oversize_audio_is_fragment_too_large_before_other_checks() -> None:
    payload = _set(VALID[FragmentData], "audio.data_base64", "A" * 101)
    payload["sequence_number"] = "garbage too"
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(FragmentData, payload, max_audio_base64_bytes=100)
    assert info.value.code is ErrorCode.FRAGMENT_TOO_LARGE
    assert info.value.fragment_id == FID
    # exactly at the limit is fine
    ok = _set(VALID[FragmentData], "audio.data_base64", "A" * 100)
    assert parse_as(FragmentData, ok, max_audio_base64_bytes=100).audio.data_base64 == "A" * 100


def test_default_size_limit_is_10_mib() -> None:
    assert constants.MAX_FRAGMENT_BASE64_BYTES == 10 * 1024 * 1024
    payload = _set(VALID[FragmentData], "audio.data_base64", "A" * (10 * 1024 * 1024 + 4))
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(FragmentData, payload)
    assert info.value.code is ErrorCode.FRAGMENT_TOO_LARGE


SPEC_ERROR_TABLE = {
    "AUTH_FAILED": ("fatal", False),
    "STREAM_NOT_FOUND": ("error", False),
    "STREAM_PAUSED": ("warning", False),
    "INVALID_CONFIG": ("error", False),
    "INVALID_FRAGMENT": ("error", False),
    "INVALID_SEQUENCE": ("error", False),
    "DUPLICATE_FRAGMENT": ("error", False),
    "FRAGMENT_TOO_LARGE": ("error", False),
    "TIMEOUT": ("error", True),
    "MODEL_ERROR": ("error", True),
    "GPU_OOM": ("error", True),
    "QUEUE_FULL": ("warning", True),
    "RATE_LIMIT": ("warning", True),
}


def test_error_code_table_matches_spec() -> None:
    assert {code.value for code in ErrorCode} == set(SPEC_ERROR_TABLE)
    for code in ErrorCode:
        assert (code.severity, code.retryable) == SPEC_ERROR_TABLE[code.value]
        assert ErrorCode(code.value) is code
        assert code == code.value  # a plain string on the wire


def test_error_event_from_code_fills_table_values() -> None:
    event = ErrorEvent.from_code(ErrorCode.QUEUE_FULL, "busy", stream_id="s", fragment_id=FID)
    wire = event.to_wire()
    assert wire["code"] == "QUEUE_FULL"
    assert wire["severity"] == "warning"
    assert wire["retryable"] is True
    assert uuid.UUID(wire["error_id"]).version == 4
    assert parse_server_event("error", wire) == event


def test_processing_error_from_code() -> None:
    err = ProcessingError.from_code(ErrorCode.GPU_OOM, "oom", stage="tts")
    assert err.retryable is True
    assert ProcessingError.from_code(ErrorCode.GPU_OOM, "oom", retryable=False).retryable is False


def test_failed_processed_requires_error_and_allows_no_audio() -> None:
    base = {k: v for k, v in VALID[FragmentProcessed].items() if k != "dubbed_audio"}
    with pytest.raises(ProtocolValidationError):
        parse_as(FragmentProcessed, {**base, "status": "failed"})
    failed = parse_as(
        FragmentProcessed,
        {
            **base,
            "status": "failed",
            "error": {"code": "TIMEOUT", "message": "slow", "stage": "asr", "retryable": True},
        },
    )
    assert failed.error is not None and failed.error.code is ErrorCode.TIMEOUT
    with pytest.raises(ProtocolValidationError):  # partial needs audio too
        parse_as(FragmentProcessed, {**base, "status": "partial"})


def test_processed_speech_segments_are_optional_and_checked() -> None:
    base = VALID[FragmentProcessed]
    assert parse_as(FragmentProcessed, base).segments is None  # old peers omit them
    span = {"start_ms": 1000, "end_ms": 2500, "text": "Hi.", "translated_text": "Hola."}
    got = parse_as(FragmentProcessed, {**base, "segments": [span]})
    assert got.segments == [SpeechSegment(**span)]
    assert got.to_wire()["segments"] == [span]
    for bad in (
        {**span, "end_ms": 999},  # ends before it starts
        {**span, "start_ms": -1},
        {**span, "start_ms": "1000"},  # strict
        {"end_ms": 5},
    ):
        with pytest.raises(ProtocolValidationError):
            parse_as(FragmentProcessed, {**base, "segments": [bad]})
    with pytest.raises(ProtocolValidationError):
        parse_as(FragmentProcessed, {**base, "segments": [span] * (constants.SEGMENTS_MAX + 1)})


def test_stream_init_defaults_follow_spec() -> None:
    init = parse_as(StreamInit, {"stream_id": "s", "worker_id": "w", "config": {}})
    assert init.max_inflight == 3
    assert init.timeout_ms == 8000
    assert init.config == StreamConfig(
        source_language="en",
        target_language="es",
        voice_profile="default",
        chunk_duration_ms=6000,
        sample_rate_hz=48000,
        channels=2,
        format="m4a",
    )


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [
        ("max_inflight", 1, 10),
        ("timeout_ms", 1000, 30000),
    ],
)
def test_stream_init_limits_inclusive(field: str, low: int, high: int) -> None:
    for value in (low, high):
        init = parse_as(
            StreamInit, {"stream_id": "s", "worker_id": "w", "config": {}, field: value}
        )
        assert getattr(init, field) == value


def test_unknown_fields_ignored_in_events_kept_in_metadata() -> None:
    payload = {**VALID[FragmentData], "future_field": 1}
    frag = parse_as(FragmentData, payload)
    assert "future_field" not in frag.to_wire()
    assert frag.metadata is not None and frag.to_wire()["metadata"]["camera"] == "A"


def test_audio_payload_bytes_round_trip() -> None:
    raw = bytes(range(256)) * 3
    audio = AudioPayload.from_bytes(
        raw, format="wav", sample_rate_hz=16000, channels=1, duration_ms=24
    )
    assert audio.to_bytes() == raw
    again = parse_as(AudioPayload, audio.to_wire())
    assert again.to_bytes() == raw
    assert decode_base64(encode_base64(raw)) == raw
    for bad in ("QUJD\n", "QUJ", "QU=D", "=QUJ", "QUJD====", "QUJDé", "QU JD", "QUJD-_=="):
        with pytest.raises(ValueError):
            decode_base64(bad)
    assert decode_base64("QUI=") == b"AB" and encode_base64(b"AB") == "QUI="
    assert expected_samples(6000, 48000) == 288_000
    assert expected_samples(1, 44100) == 44


def test_audio_payload_from_bytes_keeps_its_bytes_without_decoding_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import livedub.protocol.models as models

    def no_decode(_text: str) -> bytes:
        raise AssertionError("from_bytes decoded its own base64")

    raw = b"RIFF" + bytes(range(256)) * 4
    monkeypatch.setattr(models, "decode_base64", no_decode)
    audio = AudioPayload.from_bytes(raw, format="wav", sample_rate_hz=16000, channels=1, duration_ms=32)
    assert audio.to_bytes() is raw and audio.data_base64 == encode_base64(raw)
    monkeypatch.undo()
    # a payload from the wire is still decoded (and checked) on validation, context or not
    wire = audio.to_wire()["data_base64"]
    bad = {"format": "wav", "sample_rate_hz": 16000, "channels": 1, "duration_ms": 32, "data_base64": wire + "!"}
    with pytest.raises(ProtocolValidationError):
        parse_as(AudioPayload, bad)
    with pytest.raises(ValidationError):
        AudioPayload.parse(bad)


def test_parse_by_event_name_both_directions() -> None:
    assert isinstance(
        parse_client_event("fragment:ack", VALID[WorkerFragmentAck]), WorkerFragmentAck
    )
    assert isinstance(parse_server_event("fragment:ack", VALID[FragmentAck]), FragmentAck)
    with pytest.raises(ProtocolValidationError):
        parse_client_event("fragment:ack", VALID[FragmentAck])  # "queued" is the server's status
    with pytest.raises(ProtocolValidationError) as info:
        parse_client_event("no:such", {})
    assert info.value.code is ErrorCode.INVALID_CONFIG
    for event in constants.CONTROL_EVENTS:
        assert SERVER_EVENTS[control_ack_event(event)] is ControlAck
        assert event in CLIENT_EVENTS
    assert control_ack_event(EventName.CONFIG_LATENCY) == "config:latency:ack"


def test_event_registries_cover_every_event() -> None:
    names = {str(e) for e in EventName}
    assert (
        set(CLIENT_EVENTS) | {k for k in SERVER_EVENTS if not k.endswith(":ack")} | {"fragment:ack"}
        == names
    )
    for event, model in {**CLIENT_EVENTS, **SERVER_EVENTS}.items():
        if model is not ControlAck:
            assert model.event == event


def test_constants_match_spec() -> None:
    c = constants
    assert (c.DEFAULT_STS_PORT, c.PING_INTERVAL_S, c.PING_TIMEOUT_S) == (8080, 25.0, 10.0)
    assert (c.CHUNK_DURATION_MS_MIN, c.CHUNK_DURATION_MS_MAX) == (100, 60000)
    assert (c.MAX_INFLIGHT_MIN, c.MAX_INFLIGHT_MAX, c.MAX_INFLIGHT_DEFAULT) == (1, 10, 3)
    assert (c.TIMEOUT_MS_MIN, c.TIMEOUT_MS_MAX, c.TIMEOUT_MS_DEFAULT) == (1000, 30000, 8000)
    assert (c.READY_TIMEOUT_S, c.CLOSE_AFTER_COMPLETE_S) == (10.0, 5.0)
    assert c.ID_RE.fullmatch("abc_DEF-123")
    assert not c.ID_RE.fullmatch("abc\n")
    assert not c.ID_RE.fullmatch("x" * 65)
    assert c.SOCKETIO_PATH == "/socket.io/"


def test_control_models_semantics() -> None:
    assert LatencyConfig(delay_ms=0).delay_ms == 0
    with pytest.raises(ValueError):
        LatencyConfig()
    rule = ErrorRule(trigger="count", value=2, error_code=ErrorCode.INVALID_FRAGMENT)
    assert rule.effective_retryable is False
    assert ErrorRule(trigger="count", value=2, error_code=ErrorCode.TIMEOUT).effective_retryable
    thresholds = BackpressureThresholds(low=0.1, medium=0.2, high=0.3)
    assert BackpressureConfig(thresholds=thresholds).threshold_mode
    emit = BackpressureEmit(severity="low", action="none")
    assert BackpressureConfig(emit=emit).threshold_mode is None
    assert BackpressureConfig(enabled=False).threshold_mode is False
    with pytest.raises(ValueError):
        BackpressureConfig()
    assert DisconnectSimulation().delay_ms == 0
    assert ResetConfig().stream_id is None
    assert ControlAck.rejected("no").to_wire() == {"status": "rejected", "message": "no"}


# --- msgspec records: what pydantic did implicitly, checked explicitly ----------------------------


def test_metadata_keeps_extra_keys_and_checks_the_known_ones() -> None:
    frag = parse_as(FragmentData, VALID[FragmentData])
    assert frag.metadata == {"pts_ns": 0, "source_pts_ns": 123, "camera": "A"}
    assert (frag.pts_ns, frag.source_pts_ns) == (0, 123)
    assert frag.to_wire()["metadata"] == {"pts_ns": 0, "source_pts_ns": 123, "camera": "A"}
    nested = {"camera": {"id": "A", "tags": ["x", 1]}, "ratio": 0.5}
    assert parse_as(FragmentData, {**VALID[FragmentData], "metadata": nested}).metadata == nested
    # None is the same as absent for a known key (as the typed field was); round trips equal
    built = FragmentData.parse({**VALID[FragmentData], "metadata": {"pts_ns": None, "camera": "A"}})
    assert built.metadata == {"camera": "A"} and built.pts_ns is None
    assert parse_as(FragmentData, built.to_wire()) == built
    for bad in ("0", True, 1.5, [1]):
        with pytest.raises(ProtocolValidationError) as info:
            parse_as(FragmentData, {**VALID[FragmentData], "metadata": {"source_pts_ns": bad}})
        assert "metadata.source_pts_ns" in info.value.message
    with pytest.raises(ProtocolValidationError):
        parse_as(FragmentData, {**VALID[FragmentData], "metadata": ["not", "an", "object"]})
    audio = AudioPayload.parse(AUDIO)
    with pytest.raises(ValidationError, match="metadata.pts_ns"):  # built in code, too
        FragmentData(fragment_id=FID, stream_id="s", sequence_number=0, timestamp=0, audio=audio,
                     metadata={"pts_ns": "1"})  # fmt: skip


def test_the_audio_cache_cannot_be_injected_by_a_peer() -> None:
    real = b"real audio bytes"
    injected = {**AUDIO, "data_base64": encode_base64(real), "_raw": "aW5qZWN0ZWQ=", "raw": "x"}
    audio = parse_as(AudioPayload, injected)
    assert audio.to_bytes() == real
    assert "_raw" not in audio.to_wire() and "raw" not in audio.to_wire()
    frag = parse_as(FragmentData, {**VALID[FragmentData], "audio": injected, "_raw": b"x"})
    assert frag.audio.to_bytes() == real
    # from_bytes' shortcut lives only while it builds its own payload
    encoded = AudioPayload.from_bytes(real, format="wav", sample_rate_hz=16000, channels=1, duration_ms=5)
    with pytest.raises(ValidationError):
        AudioPayload(format="wav", sample_rate_hz=16000, channels=1, duration_ms=5, data_base64="!!")
    assert encoded.to_bytes() == real
    assert AudioPayload.parse(encoded.to_wire()) == encoded  # the cache is not part of equality


def test_audio_payload_is_decoded_once_on_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import livedub.protocol.models as models

    calls: list[str] = []

    def counting(text: str) -> bytes:
        calls.append(text)
        return decode_base64(text)

    monkeypatch.setattr(models, "decode_base64", counting)
    audio = AudioPayload.parse(AUDIO)
    assert audio.to_bytes() == audio.to_bytes() == b"\x00\x01\x02audio"
    assert len(calls) == 1
    with pytest.raises(ValidationError, match="length >= 1"):
        AudioPayload.parse({**AUDIO, "data_base64": ""})


def test_to_wire_leaves_none_out() -> None:
    ack = FragmentAck(fragment_id=FID, status="queued")
    assert ack.to_wire() == {"fragment_id": FID, "status": "queued"}
    err = ProcessingError(code=ErrorCode.TIMEOUT, message="slow", retryable=True)
    assert err.to_wire() == {"code": "TIMEOUT", "message": "slow", "retryable": True}
    failed = parse_as(
        FragmentProcessed,
        {k: v for k, v in VALID[FragmentProcessed].items() if k not in ("dubbed_audio", "stage_timings")}
        | {"status": "failed", "error": err.to_wire(), "stage_timings": {"asr_ms": 3}},
    )
    wire = failed.to_wire()
    assert "dubbed_audio" not in wire and "segments" not in wire
    assert wire["stage_timings"] == {"asr_ms": 3}
    assert StreamEnd().to_wire() == {}


def test_constraints_hold_when_built_in_code() -> None:
    with pytest.raises(ValidationError, match="stream_id"):
        StreamInit(stream_id="bad id", worker_id="w", config=StreamConfig())
    with pytest.raises(ValidationError, match="channels"):
        StreamConfig(channels=3)
    with pytest.raises(ValidationError):
        StreamReady(stream_id="s", session_id="not-a-uuid", max_inflight=3)
    with pytest.raises(ValidationError):
        StreamReady(stream_id="s", session_id=SID, max_inflight=0)
    with pytest.raises(ValidationError, match="end_ms"):
        SpeechSegment(start_ms=10, end_ms=5)
    with pytest.raises(ValidationError):
        FragmentProcessed(fragment_id=FID, stream_id="s", sequence_number=0, status="success",
                          processing_time_ms=1)  # fmt: skip
    with pytest.raises(ValidationError):
        LatencyConfig(min_delay_ms=5)
    with pytest.raises(ValidationError):
        BackpressureThresholds(low=0.9, medium=0.5)
    with pytest.raises(ValidationError):
        ErrorRule(trigger="fragment_id", value=3)
    assert issubclass(ValidationError, ValueError)


@pytest.mark.parametrize("bad", ["abc\n", "abc\r\n", "\nabc", "", "x" * 65, "a/b", "a b"])
def test_ids_are_matched_whole(bad: str) -> None:
    with pytest.raises(ProtocolValidationError):
        parse_as(StreamInit, {**VALID[StreamInit], "stream_id": bad})
    with pytest.raises(ValidationError):
        StreamPause(stream_id=bad)


def test_errors_do_not_echo_hostile_input_at_length() -> None:
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(Backpressure, {**VALID[Backpressure], "severity": "x" * 100_000})
    assert len(info.value.message) < 200 and info.value.details[0]["loc"] == "severity"
    with pytest.raises(ProtocolValidationError) as info:
        parse_as(ResetConfig, {"k" * 100_000: 1})
    assert len(info.value.message) < 200 and "unknown field" in info.value.message


def test_control_models_refuse_unknown_fields_events_ignore_them() -> None:
    with pytest.raises(ValidationError, match="unknown field `typo`"):
        LatencyConfig.parse({"delay_ms": 1, "typo": 2})
    assert StreamEnd.parse({"reason": "x", "future": 1}) == StreamEnd(reason="x")


def test_language_pairs_are_frozen_and_hashable() -> None:
    pair = LanguagePair(source="en", target="es")
    assert {pair, LanguagePair.parse({"source": "en", "target": "es"})} == {pair}
    with pytest.raises(AttributeError):
        pair.source = "fr"  # type: ignore[misc]
    info = LanguagesInfo.parse({"backend": "b", "pairs": [{"source": "en", "target": "es"}], "x": 1})
    assert info.supports("en", "es") and not info.supports("en", "") and info.targets_of("en") == ["es"]


def test_importing_the_protocol_does_not_import_pydantic() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    import livedub

    code = (
        "import sys, livedub.protocol, livedub.protocol.parse\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(livedub.__file__).parents[1])}  # this checkout's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
