"""Reliability: property-based fuzzing beyond the existing property tests.

Existing (not repeated): random payloads parse or raise `ProtocolValidationError` and round-trip
(`tests/unit/test_protocol_property.py`); random event sequences never break `StsCore` and every
reply validates (`tests/unit/test_sts_property.py`); the same over a real Socket.IO connection
(`tests/integration/test_sts_wire_property.py`).

Added here:
- **The worker's side**: random server events (valid, mutated and garbage `fragment:processed`,
  errors naming fragments in flight, acks, backpressure, `stream:*`) go through the worker's real
  Socket.IO handlers into a `WorkerRunner` with fragments in flight. Nothing raises; every
  fragment ends exactly once; the books balance (sent = processed + fallback + in flight); a
  segment that got dubbed audio got exactly the right number of samples.
- **Mutations of valid protocol payloads** (every event, both directions): parse or a typed
  error, never anything else; error messages stay short (they are echoed in `error` events);
  parsing a multi-megabyte hostile field is fast.
- **Memory bounded**: hundreds of STS sessions with random traffic and abrupt disconnects leave
  no connection, session, task or per-session state behind, and Python heap growth flattens.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import io
import logging
import time
import tracemalloc
import uuid
import wave
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedub.clock import FakeClock
from livedub.media.segment import Segment, SegmentAudio
from livedub.protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    ProtocolValidationError,
    parse_client_event,
    parse_server_event,
)
from livedub.sts.core import StsCore
from livedub.sts.settings import StsSettings
from livedub.sts.testing import make_fragment
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from livedub.worker.session import Pending

RATE = 8000
N_SAMPLES = 800  # 100 ms fragments: small, so hundreds of examples stay fast
N_PENDING = 4

# --- the worker's handlers ----------------------------------------------------------------------


def wav(n_samples: int, rate: int = RATE, channels: int = 1) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * channels * n_samples)
    return base64.b64encode(buf.getvalue()).decode("ascii")


GOOD_AUDIO = {"format": "wav", "sample_rate_hz": RATE, "channels": 1, "duration_ms": 100, "data_base64": wav(N_SAMPLES)}
AUDIO_VARIANTS = [
    GOOD_AUDIO,
    dict(GOOD_AUDIO, data_base64=wav(N_SAMPLES * 2)),  # 100 % too long
    dict(GOOD_AUDIO, data_base64=wav(N_SAMPLES + 40)),  # 5 %: trimmed
    dict(GOOD_AUDIO, data_base64=wav(N_SAMPLES, rate=16000, channels=2), sample_rate_hz=16000, channels=2),
    dict(GOOD_AUDIO, data_base64="AAAA"),  # decodes to 3 bytes of nothing
    dict(GOOD_AUDIO, data_base64="***"),  # not base64
    {"format": "wav"},
]


class _CapturingSio:
    """Stands in for python-socketio's client: records the handlers `StsClient` registers."""

    connected = False

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def on(self, name: str) -> Any:
        def register(fn: Any) -> Any:
            self.handlers[name] = fn
            return fn

        return register


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _runner_with_pending() -> tuple[WorkerRunner, _CapturingSio, list[str], list[Segment]]:
    runner = WorkerRunner(
        WorkerSettings(stream_id="fuzz", input_url="in.mp4", output_url="out.mp4", metrics_port=0, paced=False),
        clock=FakeClock(),
    )
    sio = _CapturingSio()
    runner.session.link.client._register(sio)  # type: ignore[attr-defined]
    ids: list[str] = []
    segments: list[Segment] = []
    for i in range(N_PENDING):
        pcm = np.zeros((N_SAMPLES, 1), dtype=np.int16)
        seg = Segment(
            id=str(uuid.uuid4()), stream_id="fuzz", batch=i, t0_ns=i * 100_000_000, n_samples=N_SAMPLES,
            sample_rate=RATE, channels=1, audio=SegmentAudio(pcm),
        )
        runner.session.tracker.add(seg.id, Pending(seg, i, False, runner.clock.monotonic()))
        runner.metrics.fragment_sent()
        ids.append(seg.id)
        segments.append(seg)
    return runner, sio, ids, segments


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=8), ch, max_size=3),
    max_leaves=8,
)
ERROR_CODES = ["TIMEOUT", "MODEL_ERROR", "INVALID_FRAGMENT", "QUEUE_FULL", "STREAM_NOT_FOUND", "NOPE"]


@st.composite
def server_events(draw: st.DrawFn) -> tuple[str, Any, int]:
    """(event, payload, index of the pending fragment it names or -1)."""
    k = draw(st.integers(min_value=-1, max_value=N_PENDING - 1))
    fid_choice = draw(st.sampled_from(["pending", "unknown", "garbage"]))
    fid: Any = {"pending": None, "unknown": str(uuid.uuid4()), "garbage": draw(json_scalars)}[fid_choice]
    kind = draw(
        st.sampled_from(["processed", "processed", "processed", "failed", "error", "ack", "backpressure", "random"])
    )
    if kind == "processed":
        doc: dict[str, Any] = {
            "fragment_id": fid, "stream_id": draw(st.sampled_from(["fuzz", "fuzz", "other"])),
            "sequence_number": draw(st.integers(min_value=0, max_value=5)), "status": draw(st.sampled_from(["success", "partial"])),
            "processing_time_ms": draw(st.integers(min_value=0, max_value=10)),
            "dubbed_audio": copy.deepcopy(draw(st.sampled_from(AUDIO_VARIANTS))),
        }
        for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):  # mutations
            doc[key] = draw(json_values)
        return "fragment:processed", doc, k
    if kind == "failed":
        return "fragment:processed", {
            "fragment_id": fid, "stream_id": "fuzz", "sequence_number": 0, "status": "failed", "processing_time_ms": 1,
            "error": {"code": draw(st.sampled_from(ERROR_CODES)), "message": "x", "retryable": draw(st.booleans())},
        }, k
    if kind == "error":
        return "error", {
            "error_id": str(uuid.uuid4()), "fragment_id": fid, "code": draw(st.sampled_from(ERROR_CODES)),
            "message": draw(st.text(max_size=20)), "severity": "error", "retryable": draw(st.booleans()),
        }, k
    if kind == "ack":
        return "fragment:ack", {"fragment_id": fid, "status": draw(st.sampled_from(["queued", "processing", "x"]))}, k
    if kind == "backpressure":
        return "backpressure", {
            "stream_id": "fuzz", "severity": "high", "action": draw(st.sampled_from(["none", "slow_down", "pause", "boom"])),
            "recommended_delay_ms": draw(st.integers(min_value=-5, max_value=5000)),
        }, k
    event = draw(st.sampled_from(sorted(SERVER_EVENTS) + ["stream:ready", "stream:complete", "error"]))
    return event, draw(json_values), k


async def _drive(events: list[tuple[str, Any, int]]) -> None:
    runner, sio, ids, segments = _runner_with_pending()
    errors = _Errors()
    root = logging.getLogger("livedub")
    root.addHandler(errors)
    try:
        for event, payload, k in events:
            if isinstance(payload, dict) and payload.get("fragment_id", "") is None:
                payload["fragment_id"] = ids[max(0, k)]
            handler = sio.handlers.get(event)
            if handler is not None:
                await handler(payload)  # must never raise
        # Whatever is still in flight times out (the tracker calls the runner's on_timeout).
        runner.clock.advance(runner.settings.fragment_timeout_s + 1)  # type: ignore[attr-defined]
        runner.session.tracker.expire_due()
    finally:
        root.removeHandler(errors)
    assert errors.records == [], [r.getMessage() for r in errors.records]
    stats = runner.session.tracker.stats()
    assert runner.session.tracker.inflight == 0
    assert stats.sent == N_PENDING == stats.processed + stats.fallback
    m = {s.labels.get("status"): s.value for f in _families(runner) for s in f.samples if s.name == "worker_audio_fragments_total"}
    assert m["sent"] == m["processed"] + m["fallback"] == N_PENDING, m
    assert m["processed"] == stats.processed
    for seg in segments:
        assert seg.audio.resolved
        pcm, source, _ = seg.audio.take("deadline")
        assert pcm.shape == (N_SAMPLES, 1), "dubbed audio always fitted to the exact sample count"
        if source == "dubbed":
            assert int(np.asarray(pcm)[:, 0].astype(np.int32).sum()) > 0, "the dubbed samples, not the original zeros"


def _families(runner: WorkerRunner) -> Any:
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families(runner.metrics.render().decode())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(server_events(), max_size=14))
def test_random_server_events_never_break_the_worker(events: list[tuple[str, Any, int]]) -> None:
    asyncio.run(_drive(events))


# --- mutations of valid payloads ----------------------------------------------------------------


def _valid_examples() -> dict[str, dict[str, Any]]:
    frag = make_fragment("s-1", 0)
    fid = frag["fragment_id"]
    audio = frag["audio"]
    return {
        "stream:init": {"stream_id": "s-1", "worker_id": "w", "config": {"sample_rate_hz": 44100, "channels": 1}},
        "fragment:data": frag,
        "fragment:ack": {"fragment_id": fid, "status": "applied", "timestamp": 1},
        "stream:end": {"stream_id": "s-1", "reason": "x"},
        "config:latency": {"stream_id": "s-1", "min_delay_ms": 1, "max_delay_ms": 5, "seed": 1},
        "config:error_simulation": {"enabled": True, "rules": [{"trigger": "count", "value": 1, "error_code": "TIMEOUT"}]},
        "stream:ready": {"stream_id": "s-1", "session_id": str(uuid.uuid4()), "max_inflight": 3},
        "fragment:processed": {
            "fragment_id": fid, "stream_id": "s-1", "sequence_number": 0, "status": "success",
            "processing_time_ms": 3, "dubbed_audio": audio, "stage_timings": {"asr_ms": 1},
        },
        "backpressure": {"stream_id": "s-1", "severity": "low", "action": "none", "current_inflight": 0},
        "error": {"error_id": str(uuid.uuid4()), "code": "TIMEOUT", "message": "m", "retryable": True},
        "stream:complete": {
            "stream_id": "s-1", "total_fragments": 1, "total_duration_ms": 100,
            "statistics": {"success_count": 1, "partial_count": 0, "failed_count": 0,
                           "avg_processing_time_ms": 1.0, "p95_processing_time_ms": 1.0},
        },
    }  # fmt: skip


VALID = _valid_examples()
HOSTILE_VALUES = st.one_of(
    json_values,
    st.just("x" * 100_000),
    st.just(-(2**70)),
    st.just(2**70),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.just([[[[[[[[[[[]]]]]]]]]]]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    event = draw(st.sampled_from(sorted(VALID)))
    doc = copy.deepcopy(VALID[event])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "delete", "wrap"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(HOSTILE_VALUES))
    return event, doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_valid_payloads_parse_or_fail_typed_and_short(case: tuple[str, Any]) -> None:
    event, doc = case
    parse = parse_client_event if event in CLIENT_EVENTS else parse_server_event
    try:
        model = parse(event, doc)
    except ProtocolValidationError as exc:
        assert exc.code.value and exc.message
        assert len(exc.message) <= 1000, "an error reply must not echo (or amplify) hostile input"
        return
    assert parse(event, model.to_wire()) == model


def test_parsing_huge_hostile_fields_is_fast() -> None:
    big = "A" * (8 * 1024 * 1024)  # 8 MiB of base64-looking text in every string field
    frag = make_fragment("s-1", 0)
    cases = [
        ("fragment:data", dict(frag, stream_id=big)),
        ("fragment:data", dict(frag, audio=dict(frag["audio"], data_base64=big + "!"))),
        ("fragment:data", dict(frag, metadata={"k" * 1000: big})),
        ("fragment:processed", dict(VALID["fragment:processed"], transcript=big)),
        ("error", dict(VALID["error"], message=big)),
    ]
    for event, doc in cases:
        parse = parse_client_event if event in CLIENT_EVENTS else parse_server_event
        started = time.perf_counter()
        try:
            parse(event, doc)
        except ProtocolValidationError as exc:
            assert len(exc.message) <= 1000
        assert time.perf_counter() - started < 0.5, event


# --- memory bounded: many STS sessions ----------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.core: StsCore | None = None
        self.sent = 0

    async def emit(self, sid: str, event: str, data: dict[str, Any]) -> None:
        self.sent += 1

    async def close(self, sid: str) -> None:
        await self.drop(sid)

    async def drop(self, sid: str) -> None:
        assert self.core is not None
        await self.core.disconnect(sid)


async def _sessions(core: StsCore, start: int, count: int, rng: np.random.Generator) -> None:
    for i in range(start, start + count):
        sid = f"sid-{i}"
        stream = f"mem-{i % 5}"
        await core.connect(sid, {"x-stream-id": stream}, None)
        await core.handle(sid, "stream:init", {"stream_id": stream, "worker_id": "w", "config": {}})
        n = int(rng.integers(0, 8))
        for seq in range(n):
            frag = make_fragment(stream, seq, duration_ms=20)
            if rng.random() < 0.2:
                frag["audio"]["data_base64"] = "%%%"
            await core.handle(sid, "fragment:data", frag)
            if rng.random() < 0.5:
                await core.handle(sid, "fragment:ack", {"fragment_id": frag["fragment_id"], "status": "applied", "timestamp": 1})
        if rng.random() < 0.3:
            await core.handle(sid, "stream:end", {})
        for _ in range(3):
            await asyncio.sleep(0)
        await core.disconnect(sid)  # abrupt, often with work in flight


def test_sts_state_and_heap_stay_bounded_over_many_sessions() -> None:
    async def main() -> tuple[int, int, int]:
        transport = _Transport()
        core = StsCore(StsSettings(close_delay_s=0, debug_history_limit=20), transport, clock=FakeClock())
        transport.core = core
        rng = np.random.default_rng(7)
        await _sessions(core, 0, 150, rng)  # warm-up: histories fill up to their limit
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            await _sessions(core, 150, 300, rng)
            await asyncio.sleep(0)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert core.connections == {}
        assert core.summary()["sessions"] == 0
        for hist in core.histories.values():
            for items in hist.to_json().values():
                assert not isinstance(items, list) or len(items) <= 20
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await core.shutdown()
        return grown, len(leftover), len(core.histories)

    logging.disable(logging.CRITICAL)  # pytest keeps every log record: that is not the STS's heap
    try:
        grown, leftover, streams = asyncio.run(main())
    finally:
        logging.disable(logging.NOTSET)
    assert leftover == 0, "no task outlives its session"
    assert streams == 5
    # 300 sessions, ~1000 fragments: measured ~55 KiB (interpreter caches); a leak of even one
    # fragment payload (~1 KiB) or one session per cycle would exceed the bound.
    assert grown < 200 * 1024, f"heap grew {grown / 1024:.0f} KiB over 300 sessions"
