"""`wait_within`: bounded waits on the injected clock, never the loop's own time."""

from __future__ import annotations

import asyncio
import math

import pytest

from livedub.clock import wait_within
from tests.unit.harness import VirtualClock, settle


async def test_finishes_in_time_or_is_cancelled_at_the_timeout_on_the_clock() -> None:
    clock = VirtualClock()
    event = asyncio.Event()
    waiter = asyncio.ensure_future(wait_within(clock, event.wait(), 2.0))
    await settle()
    clock.jump()  # the clock reaches the timeout: no real time passes
    await settle()
    assert waiter.done() and waiter.result() is False
    assert clock.monotonic() == 1002.0
    event.set()
    assert await wait_within(clock, event.wait(), 2.0) is True


async def test_no_bound_and_errors_propagate() -> None:
    clock = VirtualClock()
    assert await wait_within(clock, asyncio.sleep(0), math.inf) is True

    async def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        await wait_within(clock, boom(), 1.0)


async def test_cancelling_the_caller_cancels_the_wait() -> None:
    clock = VirtualClock()
    inner = asyncio.ensure_future(asyncio.Event().wait())
    outer = asyncio.ensure_future(wait_within(clock, inner, 5.0))
    await settle()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.cancelled()
