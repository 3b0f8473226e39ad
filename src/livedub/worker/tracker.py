"""Fragment tracker: which fragments are in flight to the STS service, and how each one ended.

Rules (issue 4, protocol.md):
- at most `max_inflight` fragments in flight; the effective limit is the smaller of the worker's
  own (default 3) and the one the server granted in `stream:ready`;
- a sender first `await acquire()`s a slot (cancellable; a cancelled wait holds nothing), then
  `add()`s the fragment when it is sent, or `release()`s the slot if it decides not to send;
- every added fragment ends exactly once: `resolve()` (processed, or fallback with a reason),
  a timeout (`expire_due()` / `run_timeouts()`, reason `timeout`, reported to `on_timeout`),
  or `fail_all(reason)` on a disconnect. So `sent == processed + fallback + inflight` at every
  moment, and `sent == processed + fallback` once nothing is in flight: no leaks;
- a result for an unknown or already-resolved fragment returns None: the caller logs and ignores it.

Time comes only from the injected `Clock`. This module never sends, decodes or decides which audio
is used; it never calls the circuit breaker or metrics itself (the caller wires the callbacks).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from livedub.clock import Clock
from livedub.log import bind

T = TypeVar("T")

DEFAULT_MAX_INFLIGHT = 3
DEFAULT_TIMEOUT_S = 8.0
TIMEOUT_REASON = "timeout"
# Due-time comparisons tolerate float rounding of `now + remaining`.
_EPSILON_S = 1e-6


class Outcome(StrEnum):
    PROCESSED = "processed"
    FALLBACK = "fallback"


@dataclass
class InFlight(Generic[T]):
    """A fragment that was sent and has no final outcome yet."""

    fragment_id: str
    info: T
    sent_at_s: float
    deadline_s: float
    ack_status: str | None = None
    queue_position: int | None = None
    acked_at_s: float | None = None


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """How a fragment ended. `elapsed_ms` is send → resolution on the tracker's clock (the RTT
    for a processed fragment)."""

    fragment_id: str
    info: T
    outcome: Outcome
    reason: str | None
    elapsed_ms: float
    ack_status: str | None
    queue_position: int | None


@dataclass(frozen=True)
class TrackerStats:
    sent: int
    processed: int
    fallback: int
    inflight: int
    fallback_by_reason: dict[str, int] = field(default_factory=dict)


class FragmentTracker(Generic[T]):
    """Bounded set of in-flight fragments with per-fragment timeouts.

    Args:
        clock: time source for send times and timeouts.
        max_inflight: the worker's own limit (default 3, ≥ 1).
        timeout_s: a fragment with no result after this long is timed out (default 8 s, > 0).
        on_timeout: called as `on_timeout(fragment_id, info)` for each fragment the tracker times
            out, after it was removed and its slot freed (count it as a TIMEOUT failure).
        on_inflight_change: called with the new in-flight count whenever it changes (a gauge).
        stream_id: context for log lines.
        history_size: how many resolved fragment ids to remember for `recently_resolved()`.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_timeout: Callable[[str, T], None] | None = None,
        on_inflight_change: Callable[[int], None] | None = None,
        stream_id: str = "",
        history_size: int = 1024,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._clock = clock
        self._own_max = max_inflight
        self._granted_max: int | None = None
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._on_inflight_change = on_inflight_change
        self._log = bind(__name__, stream_id=stream_id)
        self._inflight: OrderedDict[str, InFlight[T]] = OrderedDict()
        self._reserved = 0
        self._sent = 0
        self._processed = 0
        self._fallback = 0
        self._fallback_by_reason: dict[str, int] = {}
        self._history: OrderedDict[str, Resolved[T]] = OrderedDict()
        self._history_size = history_size
        self._changed = asyncio.Event()

    # ---- limits -------------------------------------------------------------------------------

    @property
    def max_inflight(self) -> int:
        """The effective limit: min(own, server-granted)."""
        if self._granted_max is None:
            return self._own_max
        return min(self._own_max, self._granted_max)

    def set_server_max_inflight(self, granted: int | None) -> None:
        """Apply `stream:ready.max_inflight` (None forgets it). Fragments already in flight stay;
        new sends wait until the count is below the new limit."""
        if granted is not None and granted < 1:
            raise ValueError(f"granted max_inflight must be >= 1, got {granted}")
        self._granted_max = granted
        self._log.info(
            "max_inflight set",
            ctx={"own": self._own_max, "granted": granted, "effective": self.max_inflight},
        )
        self._notify()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def reserved(self) -> int:
        """Slots acquired but not yet used by `add()` or given back by `release()`."""
        return self._reserved

    def has_capacity(self) -> bool:
        return len(self._inflight) + self._reserved < self.max_inflight

    async def acquire(self) -> None:
        """Wait for a free slot and reserve it. Cancellable: a cancelled wait reserves nothing."""
        while not self.has_capacity():
            changed = self._changed
            await changed.wait()
        self._reserved += 1

    def release(self) -> None:
        """Give back a slot reserved by `acquire()` that will not be used for a send."""
        if self._reserved <= 0:
            raise RuntimeError("release() without a reserved slot")
        self._reserved -= 1
        self._notify()

    # ---- life of a fragment -------------------------------------------------------------------

    def add(self, fragment_id: str, info: T) -> InFlight[T]:
        """Record a sent fragment (uses a reserved slot if one is held). Its timeout starts now.

        Raises ValueError if `fragment_id` is in flight or was already resolved (a programming error:
        fragment ids are unique)."""
        if fragment_id in self._inflight or fragment_id in self._history:
            raise ValueError(f"fragment {fragment_id} already tracked")
        if self._reserved > 0:
            self._reserved -= 1
        else:
            self._log.debug("add() without acquire()", ctx={"fragment_id": fragment_id})
        now = self._clock.monotonic()
        entry = InFlight(fragment_id, info, now, now + self.timeout_s)
        self._inflight[fragment_id] = entry
        self._sent += 1
        self._log.debug(
            "fragment in flight", ctx={"fragment_id": fragment_id, "inflight": self.inflight}
        )
        self._inflight_changed()
        return entry

    def record_ack(self, fragment_id: str, status: str, queue_position: int | None = None) -> bool:
        """Record a server `fragment:ack`. False if the fragment is not in flight."""
        entry = self._inflight.get(fragment_id)
        if entry is None:
            return False
        entry.ack_status = status
        entry.queue_position = queue_position
        entry.acked_at_s = self._clock.monotonic()
        return True

    def get(self, fragment_id: str) -> InFlight[T] | None:
        return self._inflight.get(fragment_id)

    def resolve(
        self, fragment_id: str, outcome: Outcome | str, reason: str | None = None
    ) -> Resolved[T] | None:
        """End an in-flight fragment: `Outcome.PROCESSED`, or `Outcome.FALLBACK` with a `reason`.

        Returns None (and changes nothing) if the fragment is unknown or already resolved; use
        `recently_resolved()` to tell a late result from an unknown one."""
        outcome = Outcome(outcome)
        if outcome is Outcome.FALLBACK and not reason:
            raise ValueError("a fallback needs a reason")
        entry = self._inflight.pop(fragment_id, None)
        if entry is None:
            return None
        done = self._finish(entry, outcome, reason if outcome is Outcome.FALLBACK else None)
        self._inflight_changed()
        return done

    def expire_due(self) -> list[Resolved[T]]:
        """Time out every fragment whose deadline has passed (fallback reason `timeout`), free its
        slot and call `on_timeout` for it. Returns the timed-out fragments, oldest first."""
        now = self._clock.monotonic()
        due = [e for e in self._inflight.values() if e.deadline_s - now <= _EPSILON_S]
        if not due:
            return []
        done: list[Resolved[T]] = []
        for entry in due:
            del self._inflight[entry.fragment_id]
            done.append(self._finish(entry, Outcome.FALLBACK, TIMEOUT_REASON))
            self._log.warning(
                "fragment timed out",
                ctx={"fragment_id": entry.fragment_id, "timeout_s": self.timeout_s},
            )
        self._inflight_changed()
        if self._on_timeout is not None:
            for item in done:
                try:
                    self._on_timeout(item.fragment_id, item.info)
                except Exception:
                    # A failing callback must not stop the other timeouts (or run_timeouts).
                    self._log.exception("on_timeout failed", ctx={"fragment_id": item.fragment_id})
        return done

    def fail_all(self, reason: str) -> list[Resolved[T]]:
        """Resolve every in-flight fragment as fallback with `reason` (e.g. `disconnect`). Returns
        them, oldest first. Reserved-but-unused slots stay with their holders."""
        if not reason:
            raise ValueError("fail_all needs a reason")
        entries = list(self._inflight.values())
        self._inflight.clear()
        done = [self._finish(e, Outcome.FALLBACK, reason) for e in entries]
        if done:
            self._log.warning(
                "all in-flight fragments failed", ctx={"reason": reason, "count": len(done)}
            )
            self._inflight_changed()
        return done

    def next_deadline_in_s(self) -> float | None:
        """Seconds until the earliest in-flight fragment times out (≥ 0), or None if none."""
        if not self._inflight:
            return None
        earliest = min(e.deadline_s for e in self._inflight.values())
        return max(0.0, earliest - self._clock.monotonic())

    async def run_timeouts(self) -> None:
        """Expire fragments at their deadlines until cancelled (run it as a task).

        Deadlines only grow (one fixed timeout), so sleeping until the earliest one is enough."""
        while True:
            self.expire_due()
            delay_s = self.next_deadline_in_s()
            if delay_s is None:
                changed = self._changed
                await changed.wait()
            else:
                await self._clock.sleep(delay_s)

    # ---- accounting ---------------------------------------------------------------------------

    def recently_resolved(self, fragment_id: str) -> Resolved[T] | None:
        """How a recently resolved fragment ended (None if unknown or too old)."""
        return self._history.get(fragment_id)

    def stats(self) -> TrackerStats:
        return TrackerStats(
            sent=self._sent,
            processed=self._processed,
            fallback=self._fallback,
            inflight=len(self._inflight),
            fallback_by_reason=dict(self._fallback_by_reason),
        )

    # ---- internals ----------------------------------------------------------------------------

    def _finish(self, entry: InFlight[T], outcome: Outcome, reason: str | None) -> Resolved[T]:
        elapsed_ms = (self._clock.monotonic() - entry.sent_at_s) * 1000.0
        done = Resolved(
            fragment_id=entry.fragment_id,
            info=entry.info,
            outcome=outcome,
            reason=reason,
            elapsed_ms=elapsed_ms,
            ack_status=entry.ack_status,
            queue_position=entry.queue_position,
        )
        if outcome is Outcome.PROCESSED:
            self._processed += 1
        else:
            assert reason is not None
            self._fallback += 1
            self._fallback_by_reason[reason] = self._fallback_by_reason.get(reason, 0) + 1
        self._history[entry.fragment_id] = done
        while len(self._history) > self._history_size:
            self._history.popitem(last=False)
        return done

    def _inflight_changed(self) -> None:
        if self._on_inflight_change is not None:
            try:
                self._on_inflight_change(len(self._inflight))
            except Exception:
                self._log.exception("on_inflight_change failed")
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter (acquire / run_timeouts); each re-checks its own condition.
        self._changed.set()
        self._changed = asyncio.Event()
