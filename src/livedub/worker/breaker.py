"""Circuit breaker in front of the STS service: stop sending while the service keeps failing.

Rules (issue 4, protocol.md "Error codes"):
- CLOSED (0): sends allowed. Each retryable failure (TIMEOUT, MODEL_ERROR, GPU_OOM, QUEUE_FULL,
  RATE_LIMIT; a fragment timeout counts as TIMEOUT) adds one to a run of consecutive failures; a
  success resets the run; a non-retryable failure is logged and changes nothing. After
  `failure_threshold` (5) consecutive retryable failures → OPEN.
- OPEN (2): `allow_send()` is False for `cooldown_s` (30 s); results that still arrive for
  fragments sent earlier are ignored. When the cooldown has passed → HALF_OPEN.
- HALF_OPEN (1): exactly one probe: the first `allow_send()` returns True, every later one False
  until the probe's outcome is recorded. Probe success → CLOSED; retryable failure → OPEN for
  another cooldown. A non-retryable failure (or `release_probe()`, e.g. the probe was never sent
  or was lost to a disconnect) frees the probe slot so another probe may go; the state stays
  HALF_OPEN. Outcomes recorded in HALF_OPEN while no probe is out are stale and ignored.

Time comes only from the injected `Clock`; the OPEN → HALF_OPEN change is made lazily by whichever
call first observes that the cooldown has passed (`state`, `allow_send()`, ...). Every transition
is logged with its wall time and old → new state and passed to `on_transition`. This module never
sends anything and never decides which audio is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from livedub.clock import Clock
from livedub.log import bind

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_COOLDOWN_S = 30.0
_EPSILON_S = 1e-6


class BreakerState(IntEnum):
    """Numbers as exported by `worker_sts_breaker_state`."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerTransition:
    old: BreakerState
    new: BreakerState
    wall_time_s: float
    monotonic_s: float
    reason: str


class CircuitBreaker:
    """Closed / open / half-open breaker driven purely by the injected clock.

    Args:
        clock: time source for the cooldown and transition timestamps.
        failure_threshold: consecutive retryable failures that open the breaker (default 5, ≥ 1).
        cooldown_s: how long OPEN lasts before one probe is allowed (default 30 s, ≥ 0).
        on_transition: called with every `BreakerTransition` (e.g. to set the state gauge).
        stream_id: context for log lines.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        on_transition: Callable[[BreakerTransition], None] | None = None,
        stream_id: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._on_transition = on_transition
        self._log = bind(__name__, stream_id=stream_id)
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at_s = 0.0
        self._probe_out = False
        self._changed = asyncio.Event()

    # ---- queries ------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (moves OPEN → HALF_OPEN if the cooldown has passed)."""
        self._refresh()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def probe_in_flight(self) -> bool:
        return self._probe_out

    def time_until_half_open(self) -> float:
        """Seconds until an OPEN breaker becomes HALF_OPEN; 0 when it is not OPEN."""
        self._refresh()
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at_s + self.cooldown_s - self._clock.monotonic())

    # ---- decisions ----------------------------------------------------------------------------

    def allow_send(self) -> bool:
        """May a fragment be sent now? In HALF_OPEN a True answer *is* the single probe: the
        caller must then send it and record its outcome (or `release_probe()`)."""
        self._refresh()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            self._log.info("breaker probe allowed")
            return True
        return False

    async def wait_until_allowed(self) -> None:
        """Wait until `allow_send()` is True (it is then called, so a HALF_OPEN probe is taken).
        Cancellable."""
        while not self.allow_send():
            if self._state is BreakerState.OPEN:
                await self._clock.sleep(self.time_until_half_open())
            else:
                changed = self._changed
                await changed.wait()

    # ---- outcomes -----------------------------------------------------------------------------

    def record_success(self) -> None:
        """A fragment was processed by the service."""
        self._refresh()
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
        elif self._state is BreakerState.HALF_OPEN:
            if self._probe_out:
                self._probe_out = False
                self._consecutive_failures = 0
                self._transition(BreakerState.CLOSED, "probe succeeded")
            else:
                self._log.debug("stale success ignored in half-open")
        else:
            self._log.debug("stale success ignored while open")

    def record_failure(self, retryable: bool, code: str) -> None:
        """A fragment failed with error `code` (use "TIMEOUT" for a fragment timeout).

        Only retryable failures count; a non-retryable one is logged and otherwise ignored (in
        HALF_OPEN it frees the probe slot, since the probe proved nothing)."""
        self._refresh()
        if not retryable:
            self._log.info(
                "non-retryable failure not counted by breaker",
                ctx={"code": code, "state": self._state.name.lower()},
            )
            if self._state is BreakerState.HALF_OPEN and self._probe_out:
                self.release_probe()
            return
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._log.info(
                "retryable failure counted",
                ctx={
                    "code": code,
                    "consecutive_failures": self._consecutive_failures,
                    "threshold": self.failure_threshold,
                },
            )
            if self._consecutive_failures >= self.failure_threshold:
                self._open(
                    f"{self._consecutive_failures} consecutive retryable failures, last {code}"
                )
        elif self._state is BreakerState.HALF_OPEN:
            if self._probe_out:
                self._probe_out = False
                self._open(f"probe failed with {code}")
            else:
                self._log.debug("stale failure ignored in half-open", ctx={"code": code})
        else:
            self._log.debug("stale failure ignored while open", ctx={"code": code})

    def release_probe(self) -> None:
        """The HALF_OPEN probe will have no outcome (not sent, or lost to a disconnect): allow
        another probe. No-op when no probe is out."""
        if self._probe_out:
            self._probe_out = False
            self._log.info("breaker probe released")
            self._notify()

    # ---- internals ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN:
            elapsed_s = self._clock.monotonic() - self._opened_at_s
            if elapsed_s >= self.cooldown_s - _EPSILON_S:
                self._probe_out = False
                self._transition(
                    BreakerState.HALF_OPEN, f"cooldown of {self.cooldown_s:g} s passed"
                )

    def _open(self, reason: str) -> None:
        self._opened_at_s = self._clock.monotonic()
        self._consecutive_failures = 0
        self._transition(BreakerState.OPEN, reason)

    def _transition(self, new: BreakerState, reason: str) -> None:
        old = self._state
        self._state = new
        event = BreakerTransition(
            old=old,
            new=new,
            wall_time_s=self._clock.wall(),
            monotonic_s=self._clock.monotonic(),
            reason=reason,
        )
        wall_iso = datetime.fromtimestamp(event.wall_time_s, UTC).isoformat(timespec="milliseconds")
        self._log.warning(
            f"breaker {old.name.lower()} -> {new.name.lower()}",
            ctx={
                "old_state": old.name.lower(),
                "new_state": new.name.lower(),
                "wall_time": wall_iso,
                "reason": reason,
            },
        )
        if self._on_transition is not None:
            try:
                self._on_transition(event)
            except Exception:
                self._log.exception("on_transition failed")
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
