"""Unit tests of the echo service's protocol logic (`StsCore`) with a fake transport and clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from livedub.clock import FakeClock
from livedub.protocol import (
    ErrorCode,
    FragmentData,
    ProcessingError,
    ProtocolValidationError,
    StreamConfig,
    parse_server_event,
)
from livedub.sts.backend import BackendResult
from livedub.sts.core import ConnectionRefused, StsCore
from livedub.sts.settings import StsSettings
from livedub.sts.testing import make_fragment
from livedub.typed import Secret


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.closed: list[str] = []
        self.dropped: list[str] = []
        self.invalid: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, sid: str, event: str, data: dict[str, Any]) -> None:
        try:
            parse_server_event(event, data)  # every reply validates against the models
        except ProtocolValidationError:
            self.invalid.append((event, data))
        self.sent.append((sid, event, data))

    async def close(self, sid: str) -> None:
        self.closed.append(sid)

    async def drop(self, sid: str) -> None:
        self.dropped.append(sid)

    def events(self, sid: str, event: str) -> list[dict[str, Any]]:
        return [d for s, e, d in self.sent if s == sid and e == event]


async def until(cond: Callable[[], bool], timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


@pytest.fixture
async def core() -> AsyncIterator[StsCore]:
    c = StsCore(StsSettings(max_inflight=5, close_delay_s=0.0), FakeTransport(), clock=FakeClock())
    yield c
    await c.shutdown()
    assert tx(c).invalid == []


def tx(core: StsCore) -> FakeTransport:
    assert isinstance(core.transport, FakeTransport)
    return core.transport


async def start(core: StsCore, sid: str = "A", stream: str = "s1", **init: Any) -> dict[str, Any]:
    await core.connect(sid, {}, None)
    await core.handle(
        sid, "stream:init", {"stream_id": stream, "worker_id": "w", "config": {}, **init}
    )
    return tx(core).events(sid, "stream:ready")[-1]


def errors(core: StsCore, sid: str = "A") -> list[str]:
    return [d["code"] for d in tx(core).events(sid, "error")]


async def test_lifecycle_echo_and_statistics(core: StsCore) -> None:
    ready = await start(core, max_inflight=7)
    assert ready["max_inflight"] == 5  # min(requested 7, server 5)
    assert uuid.UUID(ready["session_id"]).version == 4
    frags = [make_fragment("s1", i, duration_ms=100 + i) for i in range(3)]
    for f in frags:
        await core.handle("A", "fragment:data", f)
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 3)
    processed = tx(core).events("A", "fragment:processed")
    assert [p["fragment_id"] for p in processed] == [f["fragment_id"] for f in frags]
    for p, f in zip(processed, frags, strict=True):
        assert p["status"] == "success"
        assert p["dubbed_audio"] == f["audio"]  # byte-for-byte
        assert p["transcript"] and p["translated_text"]
    acks = tx(core).events("A", "fragment:ack")
    assert [(a["status"], a["queue_position"]) for a in acks] == [
        ("processing", 0),
        ("queued", 1),
        ("queued", 2),
    ]
    await core.handle("A", "stream:end", {"stream_id": "s1", "reason": "done"})
    await until(lambda: tx(core).closed == ["A"])
    complete = tx(core).events("A", "stream:complete")[0]
    assert complete["total_fragments"] == 3
    assert complete["total_duration_ms"] == 100 + 101 + 102
    assert complete["statistics"]["success_count"] == 3
    order = [e for s, e, _ in tx(core).sent if e in ("fragment:processed", "stream:complete")]
    assert order[-1] == "stream:complete"


async def test_order_kept_under_random_latency(core: StsCore) -> None:
    await start(core)
    ack = await core.control(
        "config:latency", {"stream_id": "s1", "min_delay_ms": 0, "max_delay_ms": 500, "seed": 3}
    )
    assert ack.status == "accepted"
    ids = []
    for i in range(20):
        f = make_fragment("s1", i)
        ids.append(f["fragment_id"])
        await core.handle("A", "fragment:data", f)
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 20)
    assert [p["fragment_id"] for p in tx(core).events("A", "fragment:processed")] == ids
    assert [p["sequence_number"] for p in tx(core).events("A", "fragment:processed")] == list(
        range(20)
    )


async def test_errors_before_init_and_bad_init(core: StsCore) -> None:
    await core.connect("A", {}, None)
    f = make_fragment("s1", 0)
    await core.handle("A", "fragment:data", f)
    await core.handle("A", "stream:pause", {})
    await core.handle("A", "stream:init", {"stream_id": "s1", "worker_id": "w"})
    await core.handle(
        "A", "stream:init", {"stream_id": "s1", "worker_id": "w", "config": {}, "max_inflight": 0}
    )
    assert errors(core) == [
        "STREAM_NOT_FOUND",
        "STREAM_NOT_FOUND",
        "INVALID_CONFIG",
        "INVALID_CONFIG",
    ]
    assert tx(core).events("A", "error")[0]["fragment_id"] == f["fragment_id"]


async def test_fragment_error_codes_and_sequence_rules(core: StsCore) -> None:
    await start(core)
    f0 = make_fragment("s1", 0)
    await core.handle("A", "fragment:data", f0)
    await core.handle("A", "fragment:data", f0)  # same id again
    await core.handle("A", "fragment:data", make_fragment("s1", 0))  # repeat seq
    await core.handle("A", "fragment:data", make_fragment("s1", 3))  # gap: 1 expected
    await core.handle("A", "fragment:data", make_fragment("s1", 4))  # resynchronised: accepted
    bad = make_fragment("s1", 5)
    bad["audio"]["sample_rate_hz"] = 5
    await core.handle("A", "fragment:data", bad)  # invalid, but uses up seq 5
    await core.handle("A", "fragment:data", make_fragment("s2", 6))  # other stream
    await core.handle("A", "fragment:data", make_fragment("s1", 6))  # accepted
    assert errors(core) == [
        "DUPLICATE_FRAGMENT",
        "INVALID_SEQUENCE",
        "INVALID_SEQUENCE",
        "INVALID_FRAGMENT",
        "STREAM_NOT_FOUND",
    ]
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 3)
    assert [p["sequence_number"] for p in tx(core).events("A", "fragment:processed")] == [0, 4, 6]
    for e in tx(core).events("A", "error"):
        assert e["fragment_id"] and e["stream_id"] and e["error_id"]


async def test_too_large_fragment_uses_configured_limit() -> None:
    core = StsCore(StsSettings(max_fragment_base64_bytes=1000), FakeTransport(), clock=FakeClock())
    try:
        await start(core)
        await core.handle("A", "fragment:data", make_fragment("s1", 0, audio=b"x" * 2000))
        await core.handle("A", "fragment:data", make_fragment("s1", 1, audio=b"x" * 10))
        assert errors(core) == ["FRAGMENT_TOO_LARGE"]
        await until(lambda: len(tx(core).events("A", "fragment:processed")) == 1)
    finally:
        await core.shutdown()


async def test_pause_resume(core: StsCore) -> None:
    await start(core)
    await core.handle("A", "stream:pause", {"stream_id": "s1", "reason": "x"})
    await core.handle("A", "fragment:data", make_fragment("s1", 0))
    assert errors(core) == ["STREAM_PAUSED"]
    assert tx(core).events("A", "error")[0]["severity"] == "warning"
    await core.handle("A", "stream:resume", {"stream_id": "s1"})
    await core.handle("A", "fragment:data", make_fragment("s1", 1))
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 1)
    await core.handle("A", "stream:pause", {"stream_id": "other"})
    assert errors(core) == ["STREAM_PAUSED", "STREAM_NOT_FOUND"]


async def test_fragments_after_end_are_refused_and_second_init_replaces(core: StsCore) -> None:
    await start(core)
    await core.handle("A", "stream:end", {})
    await until(lambda: len(tx(core).events("A", "stream:complete")) == 1)
    await core.handle("A", "fragment:data", make_fragment("s1", 0))
    assert errors(core) == ["STREAM_NOT_FOUND"]
    first = tx(core).events("A", "stream:ready")[0]["session_id"]
    ready = await start(core, sid="B")
    assert ready["session_id"] != first
    await core.handle("B", "stream:init", {"stream_id": "s1", "worker_id": "w", "config": {}})
    assert len(tx(core).events("B", "stream:ready")) == 2
    await core.handle("B", "fragment:data", make_fragment("s1", 0))  # seq restarts at 0
    await until(lambda: len(tx(core).events("B", "fragment:processed")) == 1)


async def test_connect_checks_auth_headers() -> None:
    core = StsCore(StsSettings(auth_token=Secret("s3cret")), FakeTransport(), clock=FakeClock())
    for auth in (None, {}, {"token": "wrong"}, {"token": 5}, "wrong"):
        with pytest.raises(ConnectionRefused) as info:
            await core.connect("X", {}, auth)
        assert info.value.code is ErrorCode.AUTH_FAILED
        assert "s3cret" not in str(info.value.data())
    await core.connect("A", {}, {"token": "s3cret"})
    with pytest.raises(ConnectionRefused) as info:
        await core.connect("B", {"x-stream-id": "bad id"}, {"token": "s3cret"})
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert core.check_http_auth("Bearer s3cret")
    assert not core.check_http_auth("Bearer nope")
    assert not core.check_http_auth(None)


async def test_init_must_match_connection_headers(core: StsCore) -> None:
    await core.connect("A", {"x-stream-id": "s1", "x-worker-id": "w"}, None)
    await core.handle("A", "stream:init", {"stream_id": "s2", "worker_id": "w", "config": {}})
    assert errors(core) == ["INVALID_CONFIG"]
    await core.handle("A", "stream:init", {"stream_id": "s1", "worker_id": "w", "config": {}})
    assert len(tx(core).events("A", "stream:ready")) == 1


async def test_simulated_errors_answer_failed_in_order(core: StsCore) -> None:
    await start(core)
    ack = await core.control(
        "config:error_simulation",
        {
            "stream_id": "s1",
            "rules": [
                {"trigger": "sequence_number", "value": 1, "error_code": "TIMEOUT", "stage": "asr"},
                {"trigger": "count", "value": 1, "error_code": "INVALID_FRAGMENT"},
            ],
        },
    )
    assert ack.status == "accepted"
    for i in range(3):
        await core.handle("A", "fragment:data", make_fragment("s1", i))
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 3)
    p = tx(core).events("A", "fragment:processed")
    assert [x["status"] for x in p] == ["failed", "failed", "success"]
    assert p[0]["error"]["code"] == "INVALID_FRAGMENT" and p[0]["error"]["retryable"] is False
    assert p[1]["error"] == {
        "code": "TIMEOUT",
        "message": "simulated error",
        "stage": "asr",
        "retryable": True,
    }
    await core.handle("A", "stream:end", {})
    await until(lambda: len(tx(core).events("A", "stream:complete")) == 1)
    stats = tx(core).events("A", "stream:complete")[0]["statistics"]
    assert (stats["success_count"], stats["failed_count"]) == (1, 2)


async def test_rejected_control_changes_nothing(core: StsCore) -> None:
    await start(core)
    for event, payload in [
        ("config:latency", {"stream_id": "s1"}),
        ("config:latency", {"delay_ms": 5, "typo": 1}),
        ("config:error_simulation", {"rules": [{"trigger": "count", "value": "x"}]}),
        ("config:backpressure", {}),
        ("config:backpressure", {"emit": {"severity": "low", "action": "none"}, "stream_id": "zz"}),
        ("simulate:disconnect", {"delay_ms": -1}),
        ("config:reset", "all"),
        ("config:unknown", {}),
    ]:
        ack = await core.control(event, payload)
        assert ack.status == "rejected", (event, payload)
        assert ack.message
    assert core.simulations.active_counts() == {
        "error_simulation": 0,
        "latency": 0,
        "backpressure": 0,
        "refuse_reconnect": 0,
    }


async def test_control_ack_goes_to_the_caller(core: StsCore) -> None:
    await start(core)
    await core.connect("C", {}, None)
    reply = await core.handle("C", "config:latency", {"stream_id": "s1", "delay_ms": 1})
    assert reply == {"status": "accepted", "message": "latency 1 ms for stream s1"}
    assert tx(core).events("C", "config:latency:ack") == [reply]
    assert tx(core).events("A", "config:latency:ack") == []


async def test_backpressure_threshold_mode_follows_worker_acks(core: StsCore) -> None:
    await start(core, max_inflight=2)
    await core.control("config:backpressure", {"stream_id": "s1", "enabled": True})
    ids = []
    for i in range(2):
        f = make_fragment("s1", i)
        ids.append(f["fragment_id"])
        await core.handle("A", "fragment:data", f)
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 2)
    for fid in ids:
        await core.handle(
            "A", "fragment:ack", {"fragment_id": fid, "status": "applied", "timestamp": 1}
        )
    bp = [
        (b["severity"], b["action"], b["current_inflight"])
        for b in tx(core).events("A", "backpressure")
    ]
    assert bp == [("low", "none", 1), ("high", "pause", 2), ("low", "none", 1), ("low", "none", 0)]
    # thresholds: slow_down at 0.5 with a custom delay; switching off sends "none"
    await core.control(
        "config:backpressure",
        {
            "stream_id": "s1",
            "thresholds": {"low": 0.2, "medium": 0.5, "high": 0.99},
            "slow_down_delay_ms": 750,
        },
    )
    await core.handle("A", "fragment:data", make_fragment("s1", 2))
    last = tx(core).events("A", "backpressure")[-1]
    assert (last["action"], last["recommended_delay_ms"]) == ("slow_down", 750)
    await core.control("config:backpressure", {"stream_id": "s1", "enabled": False})
    assert tx(core).events("A", "backpressure")[-1]["action"] == "none"


async def test_backpressure_one_shot_emit_and_reset(core: StsCore) -> None:
    await start(core)
    ack = await core.control(
        "config:backpressure",
        {"emit": {"severity": "high", "action": "pause"}},
    )
    assert ack.status == "accepted"
    assert tx(core).events("A", "backpressure")[-1]["action"] == "pause"


async def test_simulated_disconnect_and_refusal(core: StsCore) -> None:
    await start(core)
    await core.connect("C", {}, None)
    ack = await core.control(
        "simulate:disconnect", {"stream_id": "s1", "delay_ms": 0, "refuse_reconnect_ms": 1000}
    )
    assert ack.status == "accepted"
    await until(lambda: tx(core).dropped == ["A"])
    await core.disconnect("A")
    with pytest.raises(ConnectionRefused) as info:
        await core.connect("A2", {"x-stream-id": "s1"}, None)
    assert info.value.code is ErrorCode.RATE_LIMIT and info.value.code.retryable
    await core.connect("A3", {}, None)  # no header: refused at stream:init instead
    await core.handle("A3", "stream:init", {"stream_id": "s1", "worker_id": "w", "config": {}})
    assert errors(core, "A3") == ["RATE_LIMIT"]
    assert "A3" in tx(core).dropped
    await core.control("config:reset", {"stream_id": "s1"})
    await core.connect("A4", {"x-stream-id": "s1"}, None)


class _HeldBackend:
    """Echo that answers only when `release` is set: fragments stay in flight on a fake clock."""

    name = "held"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        await self.release.wait()
        return BackendResult.failed(ProcessingError.from_code(ErrorCode.TIMEOUT, "released"))


@pytest.fixture
async def held_core() -> AsyncIterator[StsCore]:
    c = StsCore(StsSettings(close_delay_s=0.0), FakeTransport(), backend=_HeldBackend(), clock=FakeClock())
    yield c
    await c.shutdown()


async def settle() -> None:
    """Let every ready task run (no wall-clock wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_disconnect_armed_on_inflight_fires_when_the_session_holds_that_many(
    held_core: StsCore,
) -> None:
    core = held_core
    await start(core)
    ack = await core.control("simulate:disconnect", {"stream_id": "s1", "min_inflight": 2})
    assert ack.status == "accepted"
    await core.handle("A", "fragment:data", make_fragment("s1", 0))
    await settle()
    assert tx(core).dropped == [], "one unanswered fragment: not yet"
    await core.handle("A", "fragment:data", make_fragment("s1", 1))
    await until(lambda: tx(core).dropped == ["A"])
    await core.disconnect("A")
    await start(core, sid="B")  # one-shot: a new session with fragments in flight stays up
    for i in range(3):
        await core.handle("B", "fragment:data", make_fragment("s1", i))
    await settle()
    assert tx(core).dropped == ["A"]


async def test_armed_disconnect_fires_at_once_if_already_true_and_reset_disarms(
    held_core: StsCore,
) -> None:
    core = held_core
    await start(core)
    await core.control("simulate:disconnect", {"stream_id": "s1", "min_inflight": 3})
    await core.control("config:reset", {"stream_id": "s1"})
    for i in range(3):
        await core.handle("A", "fragment:data", make_fragment("s1", i))
    await settle()
    assert tx(core).dropped == [], "reset disarmed it"
    await core.control("simulate:disconnect", {"stream_id": "s1", "min_inflight": 3})
    await until(lambda: tx(core).dropped == ["A"])


async def test_reset_cancels_a_pending_disconnect(core: StsCore) -> None:
    await start(core)
    await core.control("simulate:disconnect", {"stream_id": "s1", "delay_ms": 60000})
    await core.control("config:reset", {})
    await asyncio.sleep(0.01)
    assert tx(core).dropped == []


class _BrokenBackend:
    name = "broken"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        if self.mode == "raise":
            raise RuntimeError("kaput")
        return BackendResult(status="success")  # success without audio: invalid

    async def check_config(self, config: StreamConfig) -> str | None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["raise", "invalid"])
async def test_backend_failures_become_model_error(mode: str) -> None:
    core = StsCore(StsSettings(), FakeTransport(), backend=_BrokenBackend(mode), clock=FakeClock())
    try:
        await start(core)
        await core.handle("A", "fragment:data", make_fragment("s1", 0))
        await until(lambda: len(tx(core).events("A", "fragment:processed")) == 1)
        p = tx(core).events("A", "fragment:processed")[0]
        assert p["status"] == "failed" and p["error"]["code"] == "MODEL_ERROR"
        assert p["error"]["retryable"] is True
    finally:
        await core.shutdown()


async def test_debug_history_records_fragment_ids(core: StsCore) -> None:
    await start(core)
    f = make_fragment("s1", 0)
    await core.handle("A", "fragment:data", f)
    await core.handle("A", "fragment:data", make_fragment("s1", 5))
    await until(lambda: len(tx(core).events("A", "fragment:processed")) == 1)
    await core.handle(
        "A", "fragment:ack", {"fragment_id": f["fragment_id"], "status": "received", "timestamp": 0}
    )
    doc = core.debug_stream("s1")
    assert doc is not None
    assert [x["fragment_id"] for x in doc["fragment_data"]][0] == f["fragment_id"]
    assert doc["fragment_data"][1]["outcome"] == "INVALID_SEQUENCE"
    assert [x["fragment_id"] for x in doc["acks_sent"]] == [f["fragment_id"]]
    assert [x["fragment_id"] for x in doc["processed_sent"]] == [f["fragment_id"]]
    assert [x["fragment_id"] for x in doc["worker_acks"]] == [f["fragment_id"]]
    assert doc["errors_sent"][0]["code"] == "INVALID_SEQUENCE"
    assert doc["live_sessions"][0]["inflight"] == 0
    assert core.debug_stream("nope") is None


async def test_unknown_event_and_garbage_are_harmless(core: StsCore) -> None:
    await start(core)
    await core.handle("A", "what:ever", {"x": 1})
    await core.handle("A", "fragment:ack", "garbage")
    await core.handle(
        "A", "fragment:ack", {"fragment_id": str(uuid.uuid4()), "status": "applied", "timestamp": 1}
    )
    await core.handle("nobody", "stream:init", {})
    assert errors(core) == ["INVALID_FRAGMENT"]
    assert "fragment_id" not in tx(core).events("A", "error")[0]


class _StuckBackend(_BrokenBackend):
    """Never answers (a backend far behind its deadline)."""

    def __init__(self) -> None:
        super().__init__("stuck")
        self.release = asyncio.Event()

    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        await self.release.wait()
        return BackendResult(status="success")

    async def check_config(self, config: StreamConfig) -> str | None:
        if config.target_language == "xx":
            return "language pair en->xx is not supported; available: en->es"
        return None


async def test_a_fragment_past_its_deadline_is_failed_timeout_and_order_is_kept() -> None:
    backend = _StuckBackend()
    core = StsCore(
        StsSettings(deadline_margin_s=0.9), FakeTransport(), backend=backend, clock=FakeClock()
    )
    try:
        await start(core, timeout_ms=1000)  # budget 0.1 s
        for seq in range(2):
            await core.handle("A", "fragment:data", make_fragment("s1", seq))
        await until(lambda: len(tx(core).events("A", "fragment:processed")) == 2)
        done = tx(core).events("A", "fragment:processed")
        assert [p["sequence_number"] for p in done] == [0, 1]
        assert all(p["status"] == "failed" for p in done)
        assert all(p["error"]["code"] == "TIMEOUT" and p["error"]["retryable"] for p in done)
    finally:
        backend.release.set()
        await core.shutdown()


async def test_a_config_the_backend_refuses_is_invalid_config() -> None:
    core = StsCore(StsSettings(), FakeTransport(), backend=_StuckBackend(), clock=FakeClock())
    try:
        await core.connect("A", {}, None)
        await core.handle(
            "A",
            "stream:init",
            {"stream_id": "s1", "worker_id": "w", "config": {"target_language": "xx"}},
        )
        assert errors(core) == ["INVALID_CONFIG"]
        assert "en->es" in tx(core).events("A", "error")[0]["message"]
        assert tx(core).events("A", "stream:ready") == []
    finally:
        await core.shutdown()
