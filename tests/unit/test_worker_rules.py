"""Every resilience rule of the worker, as a few lines on the harness (fake STS, virtual time):
each runs in milliseconds. Wiring to PyAV and a real STS is proven by tests/integration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from livedub.exitcodes import ExitCode
from livedub.protocol import ErrorCode, ErrorEvent
from livedub.worker.breaker import BreakerState
from livedub.worker.link import ConnState
from livedub.worker.outcomes import FallbackReason, Resolution
from livedub.worker.session import DubbingSession
from livedub.worker.sts_client import ConnectFailure
from tests.unit.harness import (
    ECHO,
    SILENT,
    FakeSts,
    Outcomes,
    Reply,
    VirtualClock,
    fail,
    run_session,
)

F = FallbackReason


def books_balance(out: Outcomes) -> None:
    """Every sent fragment ended exactly once; every segment was output and decided once."""
    assert out.stats.sent == out.stats.processed + out.stats.fallback and out.stats.inflight == 0
    assert out.metric("worker_audio_fragments_total", status="sent") == out.stats.sent
    decided = [r.reason if r else "undecided" for r in out.resolutions]
    assert decided == out.reasons, "what dub() returned is what the output took"


async def test_all_dubbed_when_the_sts_answers() -> None:
    clock = VirtualClock()
    out = await run_session(4, FakeSts(clock), clock)
    assert out.sources == ["dubbed"] * 4 and out.resolutions == [Resolution()] * 4
    assert out.metric("worker_segments_total", source="dubbed") == 4
    books_balance(out)


async def test_breaker_opens_after_5_retryable_failures() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock, reply=fail(ErrorCode.MODEL_ERROR))
    out = await run_session(8, sts, clock)
    assert out.reasons == [F.STS_ERROR] * 5 + [F.CIRCUIT_OPEN] * 3
    assert len(sts.received) == 5, "nothing sent while open"
    assert out.session.breaker.state is BreakerState.OPEN
    assert out.metric("worker_sts_breaker_state") == 2
    books_balance(out)


async def test_non_retryable_failures_never_open_the_breaker() -> None:
    clock = VirtualClock()
    out = await run_session(8, FakeSts(clock, reply=fail(ErrorCode.INVALID_FRAGMENT)), clock)
    assert out.reasons == [F.STS_ERROR] * 8
    assert out.session.breaker.state is BreakerState.CLOSED


async def test_half_open_admits_one_probe_and_its_success_closes() -> None:
    clock = VirtualClock()
    # 5 failures open it at t=4.5; the cooldown (30 s) ends at 34.5; the probe (segment 35) takes 2.5 s.
    sts = FakeSts(clock, reply=lambda i: fail() if i < 5 else Reply(latency_s=2.5 if i == 5 else 0.5))
    out = await run_session(40, sts, clock, delay_s=3.0)
    assert out.reasons[5:35] == [F.CIRCUIT_OPEN] * 30
    assert out.reasons[35] is None, "the probe was sent and dubbed"
    assert out.reasons[36:38] == [F.CIRCUIT_OPEN] * 2, "one probe at a time"
    assert out.sources[38:] == ["dubbed"] * 2, "closed again after the probe"
    assert [m.sequence_number for _, m in sts.received][5:] == [5, 6, 7]
    books_balance(out)


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = VirtualClock()
    out = await run_session(40, FakeSts(clock, reply=fail()), clock)
    assert out.reasons[35] == F.STS_ERROR and out.reasons[36:] == [F.CIRCUIT_OPEN] * 4
    assert len(out.sts.received) == 6


async def test_timeout_falls_back_and_counts_for_the_breaker() -> None:
    clock = VirtualClock()
    out = await run_session(3, FakeSts(clock, reply=SILENT), clock, fragment_timeout_s=2.0, delay_s=5.0)
    assert out.reasons == [F.TIMEOUT] * 3
    assert out.session.breaker.consecutive_failures == 3
    assert out.metric("worker_fallback_total", reason="timeout") == 3
    books_balance(out)


async def test_an_answer_after_the_deadline_is_late_not_used() -> None:
    clock = VirtualClock()
    out = await run_session(2, FakeSts(clock, reply=Reply(latency_s=4.0)), clock, delay_s=3.0)
    assert out.reasons == [F.DEADLINE] * 2
    assert out.metric("worker_late_results_total") == 2
    assert out.stats.processed == 2, "the fragment was processed, only too late for its segment"
    books_balance(out)


async def test_fallback_reason_is_recorded_at_decision_time() -> None:
    """Sent while all was well, answered late; meanwhile the STS paused us: still `deadline`."""
    clock = VirtualClock()
    sts = FakeSts(clock, reply=Reply(latency_s=10.0))
    out = await run_session(1, sts, clock, delay_s=3.0, events=[(1.0, lambda: sts.backpressure("pause"))])
    assert out.session.gate.paused
    assert out.reasons == [F.DEADLINE]
    assert out.metric("worker_fallback_total", reason="backpressure") == 0


async def test_pause_holds_sends_until_none() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    events = [(0.5, lambda: sts.backpressure("pause")), (5.2, lambda: sts.backpressure("none"))]
    out = await run_session(6, sts, clock, delay_s=3.0, events=events)
    assert out.reasons == [None, F.BACKPRESSURE, F.BACKPRESSURE, None, None, None]
    assert min(sts.sent_times[1:]) - sts.sent_times[0] >= 5.2 - 1e-9, "nothing sent while paused"
    books_balance(out)


async def test_slow_down_waits_the_recommended_delay_before_each_send() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    out = await run_session(4, sts, clock, every_s=0.5, delay_s=10.0,
                            events=[(0.1, lambda: sts.backpressure("slow_down", 1500))])  # fmt: skip
    gaps = [b - a for a, b in zip(sts.sent_times, sts.sent_times[1:], strict=False)]
    assert all(g >= 1.5 - 1e-9 for g in gaps), gaps
    assert out.sources == ["dubbed"] * 4


async def test_inflight_limit_is_the_smaller_of_ours_and_the_grant() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock, reply=Reply(latency_s=2.5), grant=2)
    out = await run_session(8, sts, clock, every_s=0.5, delay_s=30.0, max_inflight=3)
    assert sts.max_outstanding == 2, "the server's grant"
    assert out.sources == ["dubbed"] * 8, "held, not lost: each went once a slot was free"
    clock = VirtualClock()
    sts = FakeSts(clock, reply=Reply(latency_s=2.5), grant=10)
    await run_session(8, sts, clock, every_s=0.5, delay_s=30.0, max_inflight=3)
    assert sts.max_outstanding == 3, "our own limit"


async def test_no_slot_before_the_deadline_is_backpressure() -> None:
    clock = VirtualClock()
    out = await run_session(3, FakeSts(clock, reply=Reply(latency_s=5.0)), clock, delay_s=2.0, max_inflight=1,
                            fragment_timeout_s=8.0)  # fmt: skip
    assert out.reasons == [F.DEADLINE, F.BACKPRESSURE, F.BACKPRESSURE]


async def test_an_encode_past_the_deadline_after_the_first_connection_is_backpressure() -> None:
    """The first segment waits for the first connection (reason so far: disconnect); once the link
    is up, a deadline passing during the fragment's encode is the worker's own backpressure."""
    clock = VirtualClock()
    encodes: list[int] = []

    async def slow_first_encode(fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
        encodes.append(1)
        if len(encodes) == 1:
            await clock.sleep(5.0)  # longer than the segment's 3 s to its deadline
        return fn(*args, **kw)

    out = await run_session(2, FakeSts(clock), clock, every_s=6.0, offload=slow_first_encode)
    assert out.reasons == [F.BACKPRESSURE, None]
    books_balance(out)


async def test_disconnect_fails_every_fragment_in_flight_then_reconnects() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock, reply=Reply(latency_s=3.5))
    out = await run_session(8, sts, clock, delay_s=5.0, events=[(2.5, sts.drop)])
    assert out.reasons[:3] == [F.DISCONNECT] * 3, "the three in flight"
    assert sts.connect_times[1] - sts.connect_times[0] == pytest.approx(2.5 + 2.0), "first retry after 2 s"
    assert out.sources[5:] == ["dubbed"] * 3, "dubbed again after the reconnect"
    assert out.metric("worker_reconnection_total") == 1
    books_balance(out)


async def test_reconnect_backs_off_2_to_32_s_then_exits_13() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    out = await run_session(2, sts, clock, events=[(2.5, lambda: sts.drop(stay_down=True))],
                            until=lambda o: bool(o.fatal))  # fmt: skip
    waits = [b - a for a, b in zip(sts.connect_times[1:], sts.connect_times[2:], strict=False)]
    assert sts.connect_times[1] - 2.5 - sts.connect_times[0] == pytest.approx(2.0)
    assert waits == pytest.approx([4.0, 8.0, 16.0, 32.0])
    assert out.fatal == [ExitCode.STS_UNAVAILABLE]
    assert out.session.link.state is ConnState.UNAVAILABLE


async def test_segments_while_disconnected_go_out_original() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock, up=False)
    out = await run_session(3, sts, clock, until=lambda o: all(r is not None for r in o.resolutions))
    assert out.reasons == [F.DISCONNECT] * 3 and sts.received == []


async def test_token_refused_exits_14_at_once() -> None:
    clock = VirtualClock()
    out = await run_session(1, FakeSts(clock, refuse=ConnectFailure.AUTH), clock)
    assert out.fatal == [ExitCode.STS_AUTH_FAILED]
    assert out.reasons == [F.DISCONNECT] and len(out.sts.connect_times) == 1


async def test_original_only_sends_nothing_until_switched_back() -> None:
    """The operator's switch (the console): segments cut while it is on go out original with
    `original_only` and are never sent; switched off, the next ones are dubbed again."""
    clock = VirtualClock()
    sts = FakeSts(clock)
    held: list[DubbingSession] = []

    async def switch(enabled: bool) -> None:
        held[0].set_original_only(enabled)

    out = await run_session(
        8, sts, clock, on_session=held.append,
        events=[(2.5, lambda: switch(True)), (5.5, lambda: switch(False))],
    )  # fmt: skip
    assert out.reasons == [None] * 3 + [F.ORIGINAL_ONLY] * 3 + [None] * 2
    assert len(sts.received) == 5 and out.metric("worker_fallback_total", reason="original_only") == 3


async def test_config_refused_sends_every_segment_out_original_without_exiting() -> None:
    clock = VirtualClock()
    out = await run_session(3, FakeSts(clock, refuse=ConnectFailure.CONFIG), clock)
    assert out.fatal == [] and out.reasons == [F.CONFIG_REFUSED] * 3
    assert out.session.link.state is ConnState.CONFIG_REFUSED


@pytest.mark.parametrize(("length", "reason"), [(1.05, None), (1.2, F.DURATION_MISMATCH), (0.8, F.DURATION_MISMATCH)])
async def test_dubbed_length_within_10_percent_is_fitted_else_rejected(length: float, reason: str | None) -> None:
    clock = VirtualClock()
    out = await run_session(1, FakeSts(clock, reply=Reply(length=length)), clock)
    assert out.reasons == [reason]
    if reason:
        assert out.metric("worker_rejected_results_total", reason=reason) == 1


async def test_passthrough_never_connects() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    out = await run_session(2, sts, clock, passthrough=True)
    assert out.reasons == [F.PASSTHROUGH] * 2 and sts.connect_times == []
    assert ECHO.silent is False


async def test_a_bug_while_sending_falls_back_and_dub_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_encoder(*_a: object, **_k: object) -> bytes:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr("livedub.worker.session.fragment_bytes", broken_encoder)
    clock = VirtualClock()
    out = await run_session(2, FakeSts(clock), clock)
    assert out.reasons == [F.SEND_ERROR] * 2
    assert out.resolutions == [Resolution.fallback(F.SEND_ERROR)] * 2


async def test_a_schema_invalid_answer_falls_back_at_once() -> None:
    clock = VirtualClock()
    out = await run_session(1, FakeSts(clock, reply=Reply(garbage=True)), clock, fragment_timeout_s=8.0)
    assert out.reasons == [F.INVALID_MESSAGE]
    assert out.metric("worker_rejected_results_total", reason="invalid_message") == 1
    assert out.metric("worker_fallback_total", reason="timeout") == 0, "not left to time out"


async def test_an_error_event_naming_the_fragment_is_an_sts_error() -> None:
    clock = VirtualClock()
    out = await run_session(1, FakeSts(clock, reply=Reply(as_error_event=True)), clock)
    assert out.reasons == [F.STS_ERROR]
    assert out.session.breaker.consecutive_failures == 1, "MODEL_ERROR is retryable"


async def test_a_result_for_another_stream_is_never_used() -> None:
    clock = VirtualClock()
    out = await run_session(1, FakeSts(clock, reply=Reply(stream_id="other")), clock, fragment_timeout_s=2.0)
    assert out.reasons == [F.TIMEOUT]
    assert out.metric("worker_rejected_results_total", reason="invalid_message") == 1


async def test_a_result_sent_twice_is_applied_once_and_counted_late() -> None:
    clock = VirtualClock()
    out = await run_session(2, FakeSts(clock, reply=Reply(copies=2)), clock)
    assert out.sources == ["dubbed"] * 2
    assert out.metric("worker_late_results_total") == 2
    assert out.stats.processed == 2
    assert [a["status"] for a in out.sts.acks] == ["applied", "received"] * 2


async def test_results_for_unknown_fragments_are_rejected() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    stray = {"fragment_id": "4b1f5c52-3d2e-4c8a-9f61-7d5c2b8e9a10", "stream_id": "harness", "sequence_number": 0,
             "status": "failed", "processing_time_ms": 1,
             "error": {"code": "MODEL_ERROR", "message": "x", "retryable": True}}  # fmt: skip
    out = await run_session(2, sts, clock, events=[(0.2, lambda: sts.push("fragment:processed", stray))])
    assert out.sources == ["dubbed"] * 2
    assert out.metric("worker_rejected_results_total", reason="unknown_fragment") == 1
    assert out.session.breaker.consecutive_failures == 0


async def test_sequence_numbers_restart_at_0_after_a_reconnect() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    await run_session(8, sts, clock, events=[(2.7, sts.drop)])
    seqs = [m.sequence_number for _, m in sts.received]
    assert seqs[:3] == [0, 1, 2] and seqs[3] == 0, seqs


async def test_an_auth_failed_error_event_exits_14() -> None:
    clock = VirtualClock()
    sts = FakeSts(clock)
    err = ErrorEvent.from_code(ErrorCode.AUTH_FAILED, "token revoked").to_wire()
    out = await run_session(2, sts, clock, events=[(0.2, lambda: sts.push("error", err))])
    assert out.fatal == [ExitCode.STS_AUTH_FAILED]
