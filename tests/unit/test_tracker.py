"""FragmentTracker rules: in-flight limit, server grant, timeout, fail_all, exactly-once, no leaks."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from livedub.clock import FakeClock
from livedub.worker.tracker import FragmentTracker, Outcome


async def settle(n: int = 5) -> None:
    """Let other tasks run a few loop iterations (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


def make(clock: FakeClock, **kw: Any) -> FragmentTracker[dict[str, int]]:
    return FragmentTracker(clock, **kw)


async def fill(tracker: FragmentTracker[dict[str, int]], n: int) -> list[str]:
    ids = []
    for i in range(n):
        await tracker.acquire()
        fid = f"f{i}"
        tracker.add(fid, {"seq": i})
        ids.append(fid)
    return ids


async def test_default_limit_is_three_and_fourth_acquire_waits_for_a_free_slot() -> None:
    tracker = make(FakeClock())
    assert tracker.max_inflight == 3
    ids = await fill(tracker, 3)
    waiter = asyncio.create_task(tracker.acquire())
    await settle()
    assert not waiter.done()
    assert tracker.resolve(ids[0], Outcome.PROCESSED) is not None
    await asyncio.wait_for(waiter, 1.0)
    tracker.add("f3", {"seq": 3})
    assert tracker.inflight == 3


async def test_effective_limit_is_min_of_own_and_granted() -> None:
    tracker = make(FakeClock(), max_inflight=3)
    tracker.set_server_max_inflight(2)
    assert tracker.max_inflight == 2
    await fill(tracker, 2)
    assert not tracker.has_capacity()
    tracker.set_server_max_inflight(10)  # a larger grant never exceeds our own limit
    assert tracker.max_inflight == 3
    assert tracker.has_capacity()
    tracker.set_server_max_inflight(None)
    assert tracker.max_inflight == 3


async def test_lower_grant_blocks_until_inflight_drops_and_higher_grant_wakes_waiter() -> None:
    tracker = make(FakeClock(), max_inflight=3)
    ids = await fill(tracker, 2)
    tracker.set_server_max_inflight(1)
    waiter = asyncio.create_task(tracker.acquire())
    await settle()
    assert not waiter.done()
    tracker.resolve(ids[0], Outcome.PROCESSED)  # 1 in flight, limit 1: still full
    await settle()
    assert not waiter.done()
    tracker.set_server_max_inflight(3)
    await asyncio.wait_for(waiter, 1.0)
    assert tracker.reserved == 1


async def test_reservation_counts_against_the_limit_and_release_frees_it() -> None:
    tracker = make(FakeClock(), max_inflight=1)
    await tracker.acquire()
    waiter = asyncio.create_task(tracker.acquire())
    await settle()
    assert not waiter.done()  # the reserved-but-unsent slot is taken
    tracker.release()
    await asyncio.wait_for(waiter, 1.0)
    assert tracker.reserved == 1
    tracker.release()
    assert tracker.reserved == 0
    with pytest.raises(RuntimeError):
        tracker.release()


async def test_cancelled_acquire_reserves_nothing() -> None:
    tracker = make(FakeClock(), max_inflight=1)
    ids = await fill(tracker, 1)
    waiter = asyncio.create_task(tracker.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    tracker.resolve(ids[0], Outcome.PROCESSED)
    await settle()
    assert tracker.reserved == 0
    assert tracker.has_capacity()


async def test_resolve_exactly_once_and_unknown_ids_return_none() -> None:
    clock = FakeClock()
    tracker = make(clock)
    await tracker.acquire()
    tracker.add("a", {"seq": 0})
    clock.advance(1.25)
    done = tracker.resolve("a", Outcome.PROCESSED)
    assert done is not None
    assert done.outcome is Outcome.PROCESSED and done.reason is None
    assert done.info == {"seq": 0}
    assert done.elapsed_ms == pytest.approx(1250.0)
    assert tracker.resolve("a", Outcome.PROCESSED) is None
    assert tracker.resolve("a", "fallback", "sts_error") is None
    assert tracker.resolve("nope", Outcome.PROCESSED) is None
    assert tracker.recently_resolved("a") == done
    assert tracker.recently_resolved("nope") is None
    s = tracker.stats()
    assert (s.sent, s.processed, s.fallback, s.inflight) == (1, 1, 0, 0)


async def test_fallback_needs_a_reason_and_is_counted_by_reason() -> None:
    tracker = make(FakeClock())
    await fill(tracker, 2)
    with pytest.raises(ValueError):
        tracker.resolve("f0", Outcome.FALLBACK)
    assert tracker.inflight == 2  # the bad call changed nothing
    done = tracker.resolve("f0", "fallback", "duration_mismatch")
    assert done is not None and done.reason == "duration_mismatch"
    assert tracker.stats().fallback_by_reason == {"duration_mismatch": 1}


async def test_duplicate_add_is_refused() -> None:
    tracker = make(FakeClock())
    await fill(tracker, 1)
    with pytest.raises(ValueError):
        tracker.add("f0", {"seq": 9})
    tracker.resolve("f0", Outcome.PROCESSED)
    with pytest.raises(ValueError):
        tracker.add("f0", {"seq": 9})
    assert tracker.stats().sent == 1


async def test_fragment_times_out_after_8s_frees_slot_and_calls_on_timeout() -> None:
    clock = FakeClock()
    timed_out: list[tuple[str, dict[str, int]]] = []
    tracker = make(
        clock, max_inflight=1, on_timeout=lambda fid, info: timed_out.append((fid, info))
    )
    assert tracker.timeout_s == 8.0
    await fill(tracker, 1)
    clock.advance(7.9)
    assert tracker.expire_due() == []
    assert tracker.inflight == 1
    assert tracker.next_deadline_in_s() == pytest.approx(0.1)
    clock.advance(0.1)
    expired = tracker.expire_due()
    assert [e.fragment_id for e in expired] == ["f0"]
    assert expired[0].outcome is Outcome.FALLBACK and expired[0].reason == "timeout"
    assert timed_out == [("f0", {"seq": 0})]
    assert tracker.inflight == 0 and tracker.has_capacity()
    # the late result for it is refused, and it stays counted once
    assert tracker.resolve("f0", Outcome.PROCESSED) is None
    s = tracker.stats()
    assert (s.sent, s.processed, s.fallback) == (1, 0, 1)
    assert s.fallback_by_reason == {"timeout": 1}


async def test_timeout_is_configurable_and_per_fragment() -> None:
    clock = FakeClock()
    tracker = make(clock, timeout_s=2.0)
    await tracker.acquire()
    tracker.add("a", {"seq": 0})
    clock.advance(1.0)
    await tracker.acquire()
    tracker.add("b", {"seq": 1})
    clock.advance(1.0)
    assert [e.fragment_id for e in tracker.expire_due()] == ["a"]
    clock.advance(1.0)
    assert [e.fragment_id for e in tracker.expire_due()] == ["b"]


async def test_run_timeouts_expires_in_background_and_waits_when_idle() -> None:
    clock = FakeClock()
    timed_out: list[str] = []
    tracker = make(clock, on_timeout=lambda fid, _info: timed_out.append(fid))
    start = clock.monotonic()
    task = asyncio.create_task(tracker.run_timeouts())
    try:
        await settle()
        assert clock.monotonic() == start  # idle: it waits for a fragment, not on the clock
        await tracker.acquire()
        tracker.add("a", {"seq": 0})
        for _ in range(50):
            if timed_out:
                break
            await asyncio.sleep(0)
        assert timed_out == ["a"]
        assert clock.monotonic() - start == pytest.approx(8.0)
        assert tracker.inflight == 0
    finally:
        task.cancel()


async def test_a_failing_on_timeout_callback_does_not_stop_other_timeouts() -> None:
    clock = FakeClock()
    seen: list[str] = []

    def boom(fid: str, _info: dict[str, int]) -> None:
        seen.append(fid)
        raise RuntimeError("callback bug")

    tracker = make(clock, on_timeout=boom)
    await fill(tracker, 2)
    clock.advance(8.0)
    assert len(tracker.expire_due()) == 2
    assert seen == ["f0", "f1"]


async def test_fail_all_resolves_every_inflight_fragment_with_reason() -> None:
    clock = FakeClock()
    tracker = make(clock)
    await fill(tracker, 3)
    tracker.resolve("f1", Outcome.PROCESSED)
    failed = tracker.fail_all("disconnect")
    assert [f.fragment_id for f in failed] == ["f0", "f2"]
    assert all(f.outcome is Outcome.FALLBACK and f.reason == "disconnect" for f in failed)
    assert tracker.inflight == 0
    assert tracker.fail_all("disconnect") == []
    # nothing is left to time out, and late results are refused
    clock.advance(60)
    assert tracker.expire_due() == []
    assert tracker.resolve("f0", Outcome.PROCESSED) is None
    s = tracker.stats()
    assert (s.sent, s.processed, s.fallback) == (3, 1, 2)
    assert s.fallback_by_reason == {"disconnect": 2}


async def test_ack_status_and_queue_position_are_recorded() -> None:
    tracker = make(FakeClock())
    await fill(tracker, 1)
    assert tracker.record_ack("f0", "queued", 2)
    entry = tracker.get("f0")
    assert entry is not None and (entry.ack_status, entry.queue_position) == ("queued", 2)
    assert not tracker.record_ack("unknown", "queued", 0)
    done = tracker.resolve("f0", Outcome.PROCESSED)
    assert done is not None and (done.ack_status, done.queue_position) == ("queued", 2)
    assert not tracker.record_ack("f0", "processing", 0)  # already resolved


async def test_inflight_gauge_callback_follows_every_change() -> None:
    clock = FakeClock()
    values: list[int] = []
    tracker = make(clock, on_inflight_change=values.append)
    await fill(tracker, 3)
    tracker.resolve("f0", Outcome.PROCESSED)
    tracker.resolve("f0", Outcome.PROCESSED)  # ignored: no change reported
    clock.advance(8.0)
    tracker.expire_due()
    assert values == [1, 2, 3, 2, 0]


async def test_no_leaks_under_random_operations() -> None:
    rng = random.Random(1234)
    clock = FakeClock()
    tracker = make(clock, max_inflight=3, timeout_s=8.0)
    live: list[str] = []
    next_id = 0
    for _ in range(2000):
        op = rng.random()
        if op < 0.4 and tracker.has_capacity():
            await tracker.acquire()
            fid = f"f{next_id}"
            next_id += 1
            tracker.add(fid, {"seq": next_id})
            live.append(fid)
        elif op < 0.6 and live:
            tracker.resolve(rng.choice(live), Outcome.PROCESSED)
        elif op < 0.7 and live:
            tracker.resolve(rng.choice(live), Outcome.FALLBACK, "sts_error")
        elif op < 0.75:
            tracker.fail_all("disconnect")
        elif op < 0.8:
            tracker.resolve(f"f{rng.randrange(next_id + 1)}", Outcome.PROCESSED)  # late/unknown
        else:
            clock.advance(rng.uniform(0.0, 3.0))
            tracker.expire_due()
        live = [f for f in live if tracker.get(f) is not None]
        s = tracker.stats()
        assert s.sent == s.processed + s.fallback + s.inflight
        assert s.inflight <= 3
        assert sum(s.fallback_by_reason.values()) == s.fallback
    tracker.fail_all("end")
    s = tracker.stats()
    assert s.sent == next_id > 100
    assert s.sent == s.processed + s.fallback
    assert s.processed > 0 and s.fallback_by_reason.get("timeout", 0) > 0
