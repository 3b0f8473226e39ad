"""ReconnectPolicy rules: 2, 4, 8, 16, 32 s schedule, first success wins, exhaustion after 5."""

from __future__ import annotations

import random

import pytest

from livedub.clock import FakeClock
from livedub.worker.reconnect import ReconnectPolicy


class Connector:
    """Records the clock time of each attempt; succeeds on attempt `succeed_on` (1-based)."""

    def __init__(
        self, clock: FakeClock, succeed_on: int | None = None, raise_on: int | None = None
    ) -> None:
        self.clock = clock
        self.start = clock.monotonic()
        self.succeed_on = succeed_on
        self.raise_on = raise_on
        self.at: list[float] = []

    async def __call__(self) -> bool:
        self.at.append(round(self.clock.monotonic() - self.start, 6))
        n = len(self.at)
        if n == self.raise_on:
            raise ConnectionError("refused")
        return n == self.succeed_on


def test_default_schedule() -> None:
    assert ReconnectPolicy(FakeClock()).schedule_s() == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_schedule_is_configurable_and_capped() -> None:
    policy = ReconnectPolicy(
        FakeClock(), base_delay_s=1.0, factor=3.0, max_attempts=4, max_delay_s=10.0
    )
    assert policy.schedule_s() == [1.0, 3.0, 9.0, 10.0]


async def test_exhaustion_after_five_failed_attempts_at_the_schedule() -> None:
    clock = FakeClock()
    attempts: list[tuple[int, float]] = []
    policy = ReconnectPolicy(clock, on_attempt=lambda n, d: attempts.append((n, d)))
    connect = Connector(clock)
    result = await policy.run(connect)
    assert not result.success
    assert result.attempts == 5
    # attempts happen after waiting 2, 4, 8, 16, 32 s: at 2, 6, 14, 30, 62 s
    assert connect.at == [2.0, 6.0, 14.0, 30.0, 62.0]
    assert result.waited_s == pytest.approx(62.0)
    assert result.elapsed_s == pytest.approx(62.0)
    assert attempts == [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0)]


async def test_first_success_stops_the_schedule() -> None:
    clock = FakeClock()
    connect = Connector(clock, succeed_on=3)
    result = await ReconnectPolicy(clock).run(connect)
    assert result.success and result.attempts == 3
    assert connect.at == [2.0, 6.0, 14.0]


async def test_exception_counts_as_a_failed_attempt() -> None:
    clock = FakeClock()
    connect = Connector(clock, succeed_on=2, raise_on=1)
    result = await ReconnectPolicy(clock).run(connect)
    assert result.success and result.attempts == 2


async def test_max_attempts_is_configurable() -> None:
    clock = FakeClock()
    connect = Connector(clock)
    result = await ReconnectPolicy(clock, max_attempts=2).run(connect)
    assert not result.success and result.attempts == 2
    assert connect.at == [2.0, 6.0]


def test_no_jitter_by_default_and_bounded_jitter_when_set() -> None:
    policy = ReconnectPolicy(FakeClock())
    assert [policy.delay_s(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    jittery = ReconnectPolicy(FakeClock(), jitter_ratio=0.25, rng=random.Random(7))
    delays = [jittery.delay_s(1) for _ in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len(set(delays)) > 1
