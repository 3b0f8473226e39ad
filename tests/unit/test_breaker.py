"""CircuitBreaker rules: threshold, retryable only, success resets, cooldown, single probe, re-open."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from livedub.clock import FakeClock
from livedub.worker.breaker import BreakerState, BreakerTransition, CircuitBreaker


def make(clock: FakeClock, **kw: Any) -> tuple[CircuitBreaker, list[BreakerTransition]]:
    seen: list[BreakerTransition] = []
    breaker = CircuitBreaker(clock, on_transition=seen.append, **kw)
    return breaker, seen


def fail(breaker: CircuitBreaker, n: int, code: str = "MODEL_ERROR") -> None:
    for _ in range(n):
        breaker.record_failure(retryable=True, code=code)


def test_state_numbers_match_the_metric() -> None:
    assert (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN) == (0, 1, 2)


def test_opens_after_five_consecutive_retryable_failures() -> None:
    clock = FakeClock()
    breaker, seen = make(clock)
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED and breaker.allow_send()
    assert breaker.consecutive_failures == 4
    breaker.record_failure(retryable=True, code="TIMEOUT")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow_send()
    assert [(t.old, t.new) for t in seen] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert "TIMEOUT" in seen[0].reason


def test_threshold_is_configurable() -> None:
    breaker, _ = make(FakeClock(), failure_threshold=2)
    fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN


def test_success_resets_the_consecutive_count() -> None:
    breaker, _ = make(FakeClock())
    fail(breaker, 4)
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_non_retryable_failures_do_not_count_and_do_not_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker, _ = make(FakeClock())
    caplog.set_level(logging.INFO, logger="livedub.worker.breaker")
    for _ in range(10):
        breaker.record_failure(retryable=False, code="INVALID_FRAGMENT")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert any("non-retryable" in r.getMessage() for r in caplog.records)
    fail(breaker, 4)
    breaker.record_failure(retryable=False, code="STREAM_PAUSED")
    assert breaker.consecutive_failures == 4  # not reset either
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_open_blocks_for_the_cooldown_then_half_open() -> None:
    clock = FakeClock()
    breaker, seen = make(clock)
    fail(breaker, 5)
    assert breaker.time_until_half_open() == pytest.approx(30.0)
    clock.advance(29.9)
    assert not breaker.allow_send()
    assert breaker.state is BreakerState.OPEN
    assert breaker.time_until_half_open() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.time_until_half_open() == 0.0
    assert [(t.old, t.new) for t in seen][-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_cooldown_is_configurable() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, cooldown_s=5.0)
    fail(breaker, 5)
    clock.advance(5.0)
    assert breaker.allow_send()


def test_results_arriving_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    fail(breaker, 5)
    clock.advance(20)
    breaker.record_success()  # a late success from before opening does not close it
    fail(breaker, 3)  # nor do late failures extend the cooldown
    assert breaker.state is BreakerState.OPEN
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_allows_exactly_one_probe_and_success_closes() -> None:
    clock = FakeClock()
    breaker, seen = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow_send() is True
    assert breaker.probe_in_flight
    assert [breaker.allow_send() for _ in range(5)] == [False] * 5
    clock.advance(100)  # time alone does not free the probe slot
    assert not breaker.allow_send()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow_send() and breaker.allow_send()
    assert [(t.old.name, t.new.name) for t in seen] == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]
    # after closing, a fresh run of five is needed to open again
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_probe_failure_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker, seen = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow_send()
    clock.advance(3)
    breaker.record_failure(retryable=True, code="TIMEOUT")
    assert breaker.state is BreakerState.OPEN
    assert breaker.time_until_half_open() == pytest.approx(30.0)  # counted from the re-open
    clock.advance(29)
    assert not breaker.allow_send()
    clock.advance(1)
    assert breaker.allow_send()
    assert [t.new for t in seen] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
    ]


def test_stale_results_in_half_open_without_a_probe_are_ignored() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    fail(breaker, 1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow_send()


def test_non_retryable_probe_result_or_release_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow_send()
    breaker.record_failure(retryable=False, code="INVALID_FRAGMENT")
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow_send()  # a new probe may go
    assert not breaker.allow_send()
    breaker.release_probe()  # e.g. the probe was lost to a disconnect
    assert breaker.allow_send()


def test_transitions_are_logged_with_wall_time_and_old_new(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start=50.0, wall_start=1_700_000_000.0)
    breaker, seen = make(clock, stream_id="s1")
    caplog.set_level(logging.INFO, logger="livedub.worker.breaker")
    fail(breaker, 5)
    assert seen[0].wall_time_s == 1_700_000_000.0
    lines = [r for r in caplog.records if "closed -> open" in r.getMessage()]
    assert len(lines) == 1
    ctx = lines[0].ctx  # type: ignore[attr-defined]
    assert ctx["old_state"] == "closed" and ctx["new_state"] == "open"
    assert ctx["wall_time"] == "2023-11-14T22:13:20.000+00:00"
    assert ctx["stream_id"] == "s1"


async def test_wait_until_allowed_waits_out_the_cooldown_on_the_clock() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    fail(breaker, 5)
    start = clock.monotonic()
    await asyncio.wait_for(breaker.wait_until_allowed(), 1.0)
    assert clock.monotonic() - start == pytest.approx(30.0)
    assert breaker.probe_in_flight  # the probe was taken by the waiter


async def test_wait_until_allowed_in_half_open_waits_for_the_probe() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow_send()
    waiter = asyncio.create_task(breaker.wait_until_allowed())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    breaker.record_success()
    await asyncio.wait_for(waiter, 1.0)
    assert breaker.state is BreakerState.CLOSED
