"""Property tests: parsing never fails with anything but ProtocolValidationError, and whatever
parses round-trips through the wire form unchanged."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedub.protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    AudioPayload,
    FragmentData,
    ProtocolValidationError,
    parse_as,
    parse_client_event,
    parse_server_event,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

KNOWN_KEYS = [
    "stream_id",
    "worker_id",
    "config",
    "fragment_id",
    "sequence_number",
    "timestamp",
    "audio",
    "status",
    "data_base64",
    "format",
    "sample_rate_hz",
    "channels",
    "duration_ms",
    "trigger",
    "value",
    "rules",
    "enabled",
    "delay_ms",
    "emit",
    "code",
    "message",
    "retryable",
]
# Dicts that use the protocol's keys, so validation gets deep rather than failing at once.
protocolish = st.recursive(
    json_scalars,
    lambda children: st.dictionaries(st.sampled_from(KNOWN_KEYS), children, max_size=8),
    max_leaves=20,
)
payloads = json_values | protocolish


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.sampled_from(sorted(CLIENT_EVENTS)), payload=payloads)
def test_client_events_parse_or_raise_protocol_error(event: str, payload: Any) -> None:
    try:
        model = parse_client_event(event, payload)
    except ProtocolValidationError as exc:
        assert exc.code.value and exc.message
        return
    assert parse_client_event(event, model.to_wire()) == model


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.sampled_from(sorted(SERVER_EVENTS)), payload=payloads)
def test_server_events_parse_or_raise_protocol_error(event: str, payload: Any) -> None:
    try:
        model = parse_server_event(event, payload)
    except ProtocolValidationError:
        return
    assert parse_server_event(event, model.to_wire()) == model


@given(
    fragment_id=st.uuids(version=4).map(str),
    stream_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    seq=st.integers(min_value=0, max_value=2**40),
    timestamp=st.integers(min_value=0, max_value=2**45),
    data=st.binary(min_size=1, max_size=2048),
    rate=st.integers(min_value=8000, max_value=96000),
    channels=st.integers(min_value=1, max_value=2),
    duration_ms=st.integers(min_value=1, max_value=60000),
    pts_ns=st.none() | st.integers(),
)
def test_valid_fragments_round_trip_byte_for_byte(
    fragment_id: str,
    stream_id: str,
    seq: int,
    timestamp: int,
    data: bytes,
    rate: int,
    channels: int,
    duration_ms: int,
    pts_ns: int | None,
) -> None:
    frag = FragmentData(
        fragment_id=fragment_id,
        stream_id=stream_id,
        sequence_number=seq,
        timestamp=timestamp,
        audio=AudioPayload.from_bytes(
            data, format="flac", sample_rate_hz=rate, channels=channels, duration_ms=duration_ms
        ),
        metadata={"pts_ns": pts_ns},
    )
    parsed = parse_as(FragmentData, frag.to_wire())
    assert parsed == frag
    assert parsed.audio.to_bytes() == data


@given(garbage=st.text(min_size=1, max_size=64))
def test_non_uuid_fragment_ids_are_rejected(garbage: str) -> None:
    try:
        ok = uuid.UUID(garbage).version == 4
    except ValueError:
        ok = False
    payload = {
        "fragment_id": garbage,
        "stream_id": "s",
        "sequence_number": 0,
        "timestamp": 0,
        "audio": {
            "format": "wav",
            "sample_rate_hz": 8000,
            "channels": 1,
            "duration_ms": 1,
            "data_base64": "AAAA",
        },
    }
    try:
        parse_as(FragmentData, payload)
        assert ok
    except ProtocolValidationError:
        assert not ok
