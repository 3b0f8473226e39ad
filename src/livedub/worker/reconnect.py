"""Reconnection policy: when and how often the worker tries to reach the STS service again.

Rules (issue 4): after an unexpected disconnect, attempts follow exponential backoff — by default
wait 2, 4, 8, 16, 32 s before attempts 1..5 (base 2 s, factor 2, 5 attempts, no jitter; all
configurable). `run(connect_once)` waits each delay on the injected `Clock`, calls
`connect_once()` (True = connected and `stream:ready` received), and returns at the first success
or after the last failed attempt. An exception from `connect_once` counts as a failed attempt
(cancellation is never swallowed).

This module never touches the socket, the fragment tracker or the breaker, and never exits the
process: what to do after exhaustion (a distinct exit code) is the caller's decision.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livedub.clock import Clock
from livedub.log import bind

DEFAULT_BASE_DELAY_S = 2.0
DEFAULT_FACTOR = 2.0
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class ReconnectResult:
    success: bool
    attempts: int
    waited_s: float  # total backoff waited (not counting time inside connect_once)
    elapsed_s: float  # clock time from run() start to its return


class ReconnectPolicy:
    """Exponential backoff schedule plus an async retry loop.

    Args:
        clock: time source for the waits.
        base_delay_s: delay before the first attempt (default 2 s).
        factor: each further delay is the previous × factor (default 2).
        max_attempts: attempts before giving up (default 5).
        max_delay_s: cap on any single delay (default none).
        jitter_ratio: each delay is multiplied by a uniform factor in
            [1 - jitter_ratio, 1 + jitter_ratio] (default 0: exact schedule).
        rng: random source for the jitter (injectable for tests).
        on_attempt: called as `on_attempt(attempt, delay_s)` just before each attempt (1-based).
        stream_id: context for log lines.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        base_delay_s: float = DEFAULT_BASE_DELAY_S,
        factor: float = DEFAULT_FACTOR,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_delay_s: float | None = None,
        jitter_ratio: float = 0.0,
        rng: random.Random | None = None,
        on_attempt: Callable[[int, float], None] | None = None,
        stream_id: str = "",
    ) -> None:
        if base_delay_s < 0 or factor < 1 or max_attempts < 1:
            raise ValueError("need base_delay_s >= 0, factor >= 1, max_attempts >= 1")
        if not 0.0 <= jitter_ratio <= 1.0:
            raise ValueError(f"jitter_ratio must be in [0, 1], got {jitter_ratio}")
        if max_delay_s is not None and max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, got {max_delay_s}")
        self._clock = clock
        self.base_delay_s = base_delay_s
        self.factor = factor
        self.max_attempts = max_attempts
        self.max_delay_s = max_delay_s
        self.jitter_ratio = jitter_ratio
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt
        self._log = bind(__name__, stream_id=stream_id)

    def nominal_delay_s(self, attempt: int) -> float:
        """Delay before attempt `attempt` (1-based) without jitter."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        delay_s = self.base_delay_s * self.factor ** (attempt - 1)
        if self.max_delay_s is not None:
            delay_s = min(delay_s, self.max_delay_s)
        return delay_s

    def schedule_s(self) -> list[float]:
        """The nominal delays before each attempt: [2, 4, 8, 16, 32] by default."""
        return [self.nominal_delay_s(n) for n in range(1, self.max_attempts + 1)]

    def delay_s(self, attempt: int) -> float:
        """Delay before attempt `attempt`, with jitter applied."""
        delay_s = self.nominal_delay_s(attempt)
        if self.jitter_ratio:
            delay_s *= self._rng.uniform(1.0 - self.jitter_ratio, 1.0 + self.jitter_ratio)
        return delay_s

    async def run(self, connect_once: Callable[[], Awaitable[bool]]) -> ReconnectResult:
        """Wait, attempt, repeat; return at the first success or after `max_attempts` failures."""
        start_s = self._clock.monotonic()
        waited_s = 0.0
        for attempt in range(1, self.max_attempts + 1):
            delay_s = self.delay_s(attempt)
            self._log.info(
                "reconnect attempt scheduled",
                ctx={
                    "attempt": attempt,
                    "max_attempts": self.max_attempts,
                    "delay_s": round(delay_s, 3),
                },
            )
            await self._clock.sleep(delay_s)
            waited_s += delay_s
            if self._on_attempt is not None:
                try:
                    self._on_attempt(attempt, delay_s)
                except Exception:
                    self._log.exception("on_attempt failed")
            try:
                ok = await connect_once()
            except Exception as exc:
                ok = False
                self._log.warning(
                    "reconnect attempt raised", ctx={"attempt": attempt, "error": repr(exc)}
                )
            if ok:
                self._log.info("reconnected", ctx={"attempt": attempt})
                return ReconnectResult(True, attempt, waited_s, self._clock.monotonic() - start_s)
            self._log.warning("reconnect attempt failed", ctx={"attempt": attempt})
        self._log.error("reconnect attempts exhausted", ctx={"attempts": self.max_attempts})
        return ReconnectResult(
            False, self.max_attempts, waited_s, self._clock.monotonic() - start_s
        )
