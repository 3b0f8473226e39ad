"""BackpressureGate rules: pause blocks until none, slow_down delays each send, none is free."""

from __future__ import annotations

import asyncio

import pytest

from livedub.clock import FakeClock
from livedub.worker.backpressure import BackpressureAction, BackpressureGate


async def settle(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_none_is_normal_no_wait() -> None:
    clock = FakeClock()
    gate = BackpressureGate(clock)
    start = clock.monotonic()
    await asyncio.wait_for(gate.wait_ready(), 1.0)
    assert clock.monotonic() == start
    assert not gate.paused and gate.action is BackpressureAction.NONE


async def test_pause_blocks_until_none() -> None:
    gate = BackpressureGate(FakeClock())
    gate.apply("pause")
    assert gate.paused
    waiter = asyncio.create_task(gate.wait_ready())
    await settle()
    assert not waiter.done()
    gate.apply("pause")  # repeated pause keeps it blocked
    await settle()
    assert not waiter.done()
    gate.apply("none")
    await asyncio.wait_for(waiter, 1.0)
    assert not gate.paused


async def test_slow_down_after_pause_counts_the_paused_time_toward_the_delay() -> None:
    clock = FakeClock()
    gate = BackpressureGate(clock)
    gate.apply("pause")
    start = clock.monotonic()
    waiter = asyncio.create_task(gate.wait_ready())
    await settle()
    assert not waiter.done()
    clock.advance(0.2)
    gate.apply("slow_down", 500)  # paused 0.2 s already counts toward the 0.5 s delay
    await asyncio.wait_for(waiter, 1.0)
    assert clock.monotonic() - start == pytest.approx(0.5)
    assert not gate.paused


async def test_slow_down_waits_recommended_delay_before_each_send() -> None:
    clock = FakeClock()
    gate = BackpressureGate(clock)
    gate.apply(BackpressureAction.SLOW_DOWN, recommended_delay_ms=750)
    assert gate.delay_ms == 750
    for _ in range(3):
        start = clock.monotonic()
        await asyncio.wait_for(gate.wait_ready(), 1.0)
        assert clock.monotonic() - start == pytest.approx(0.75)
    gate.apply("none")
    assert gate.delay_ms == 0
    start = clock.monotonic()
    await gate.wait_ready()
    assert clock.monotonic() == start


async def test_slow_down_without_a_delay_uses_the_default_and_is_capped() -> None:
    clock = FakeClock()
    gate = BackpressureGate(clock, default_delay_ms=300, max_delay_ms=2000)
    gate.apply("slow_down")
    assert gate.delay_ms == 300
    gate.apply("slow_down", 999_999)
    assert gate.delay_ms == 2000
    start = clock.monotonic()
    await gate.wait_ready()
    assert clock.monotonic() - start == pytest.approx(2.0)


async def test_none_during_a_slow_down_delay_ends_the_wait() -> None:
    class HeldClock(FakeClock):
        """Its sleeps never end by themselves, so only a state change can end the wait."""

        async def sleep(self, seconds: float) -> None:
            await asyncio.Event().wait()

    gate = BackpressureGate(HeldClock())
    gate.apply("slow_down", 10_000)
    waiter = asyncio.create_task(gate.wait_ready())
    await settle()
    assert not waiter.done()
    gate.apply("none")
    await asyncio.wait_for(waiter, 1.0)


async def test_pause_during_a_slow_down_delay_turns_into_a_pause() -> None:
    class HeldClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await asyncio.Event().wait()

    gate = BackpressureGate(HeldClock())
    gate.apply("slow_down", 10_000)
    waiter = asyncio.create_task(gate.wait_ready())
    await settle()
    gate.apply("pause")
    await settle()
    assert not waiter.done()
    gate.apply("none")
    await asyncio.wait_for(waiter, 1.0)


async def test_wait_ready_is_cancellable() -> None:
    gate = BackpressureGate(FakeClock())
    gate.apply("pause")
    waiter = asyncio.create_task(gate.wait_ready())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.paused


async def test_every_event_is_counted_by_action_and_reset_is_not() -> None:
    seen: list[str] = []
    gate = BackpressureGate(FakeClock(), on_event=lambda a: seen.append(a.value))
    for action in ("slow_down", "slow_down", "pause", "none"):
        gate.apply(action, 500)
    gate.apply("pause")
    gate.reset()
    assert seen == ["slow_down", "slow_down", "pause", "none", "pause"]
    assert not gate.paused


async def test_unknown_action_is_rejected_and_state_kept() -> None:
    gate = BackpressureGate(FakeClock())
    gate.apply("pause")
    with pytest.raises(ValueError):
        gate.apply("explode")
    assert gate.paused
