"""Time as a dependency: every component that waits or times out takes a `Clock`.

`SystemClock` is the real one; `FakeClock` lets unit tests move time by hand, so a 30 s breaker
cooldown is tested in microseconds. Never call `time.monotonic()` / `asyncio.sleep()` directly in
a component that a unit test must control.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def wall(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to. `sleep` advances time and yields once."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)


async def wait_within(clock: Clock, aw: Awaitable[T], timeout_s: float) -> bool:
    """Await `aw` for at most `timeout_s` on `clock` (not the loop's own time): True if it finished
    in time (its exception, if any, propagates), else it is cancelled and the answer is False.
    `timeout_s` may be `math.inf` (no bound)."""
    task = asyncio.ensure_future(aw)
    if math.isinf(timeout_s):
        await task
        return True
    timer = asyncio.ensure_future(clock.sleep(max(0.0, timeout_s)))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and not (current is not None and current.cancelling()):
            return False  # we cancelled it at the timeout (not a cancellation of our caller)
        raise
    return True
