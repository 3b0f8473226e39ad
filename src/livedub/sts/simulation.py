"""State of the echo service's test controls, keyed by target stream (or global).

Each setting is stored for a `stream_id` (and then outlives that stream's connections, so it
survives a worker's reconnect) or globally (key `None`). Lookups use the stream's own setting if
there is one, else the global one. Pure logic over an injected `Clock`: no I/O, no sessions, no
Socket.IO; `core` applies what this module decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from livedub.clock import Clock
from livedub.protocol import (
    BackpressureConfig,
    ErrorRule,
    ErrorSimulationConfig,
    LatencyConfig,
)
from livedub.protocol import constants as c

Target = str | None
"""A stream id, or None for every stream."""


@dataclass
class ErrorSimState:
    enabled: bool
    rules: list[ErrorRule]
    seen: dict[str, int] = field(default_factory=dict)
    """Fragments evaluated per stream since the rule set was installed (for nth_fragment)."""
    remaining: dict[tuple[int, str], int] = field(default_factory=dict)
    """Fragments still to fail per (rule index, stream) for `count` rules."""

    def match(self, stream_id: str, fragment_id: str, sequence_number: int) -> ErrorRule | None:
        if not self.enabled or not self.rules:
            return None
        n = self.seen.get(stream_id, 0) + 1
        self.seen[stream_id] = n
        for index, rule in enumerate(self.rules):
            if rule.trigger == "sequence_number":
                hit = rule.value == sequence_number
            elif rule.trigger == "fragment_id":
                hit = str(rule.value).lower() == fragment_id.lower()
            elif rule.trigger == "nth_fragment":
                assert isinstance(rule.value, int)
                hit = n % rule.value == 0
            else:  # count
                assert isinstance(rule.value, int)
                key = (index, stream_id)
                left = self.remaining.get(key, rule.value)
                hit = left > 0
                if hit:
                    self.remaining[key] = left - 1
            if hit:
                return rule
        return None


@dataclass
class LatencyState:
    delay_ms: int | None
    min_delay_ms: int
    max_delay_ms: int
    rng: random.Random

    def next_delay_ms(self) -> int:
        if self.delay_ms is not None:
            return self.delay_ms
        return self.rng.randint(self.min_delay_ms, self.max_delay_ms)


@dataclass(frozen=True)
class ThresholdState:
    low: float = c.BACKPRESSURE_LOW_DEFAULT
    medium: float = c.BACKPRESSURE_MEDIUM_DEFAULT
    high: float = c.BACKPRESSURE_HIGH_DEFAULT
    slow_down_delay_ms: int = c.BACKPRESSURE_SLOW_DOWN_DELAY_MS_DEFAULT
    enabled: bool = True

    def level(self, load: float) -> int:
        """0 = below low, 1 = low, 2 = medium, 3 = high."""
        if load >= self.high:
            return 3
        if load >= self.medium:
            return 2
        if load >= self.low:
            return 1
        return 0


class Simulations:
    """All active test-control settings."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._errors: dict[Target, ErrorSimState] = {}
        self._latency: dict[Target, LatencyState] = {}
        self._backpressure: dict[Target, ThresholdState] = {}
        self._refusals: dict[Target, float] = {}  # monotonic deadline (s)

    # --- setting -------------------------------------------------------------------------------
    def set_error_simulation(self, cfg: ErrorSimulationConfig) -> None:
        self._errors[cfg.stream_id] = ErrorSimState(enabled=cfg.enabled, rules=list(cfg.rules))

    def set_latency(self, cfg: LatencyConfig) -> None:
        self._latency[cfg.stream_id] = LatencyState(
            delay_ms=cfg.delay_ms,
            min_delay_ms=cfg.min_delay_ms or 0,
            max_delay_ms=cfg.max_delay_ms or 0,
            rng=random.Random(cfg.seed),
        )

    def set_backpressure(self, cfg: BackpressureConfig) -> bool:
        """Apply threshold mode settings; returns False if `cfg` leaves threshold mode alone."""
        mode = cfg.threshold_mode
        if mode is None:
            return False
        previous = self._backpressure.get(cfg.stream_id)
        t = cfg.thresholds
        if t is None and previous is not None:
            low, medium, high = previous.low, previous.medium, previous.high
        elif t is None:
            low, medium, high = (
                c.BACKPRESSURE_LOW_DEFAULT,
                c.BACKPRESSURE_MEDIUM_DEFAULT,
                c.BACKPRESSURE_HIGH_DEFAULT,
            )
        else:
            low, medium, high = t.low, t.medium, t.high
        self._backpressure[cfg.stream_id] = ThresholdState(
            low=low,
            medium=medium,
            high=high,
            slow_down_delay_ms=cfg.slow_down_delay_ms,
            enabled=mode,
        )
        return True

    def refuse(self, target: Target, duration_ms: int) -> None:
        self._refusals[target] = self._clock.monotonic() + duration_ms / 1000.0

    def reset(self, target: Target) -> None:
        """Clear everything for `target`; with None, clear every stream and the global settings."""
        if target is None:
            self._errors.clear()
            self._latency.clear()
            self._backpressure.clear()
            self._refusals.clear()
        else:
            self._errors.pop(target, None)
            self._latency.pop(target, None)
            self._backpressure.pop(target, None)
            self._refusals.pop(target, None)

    # --- lookups -------------------------------------------------------------------------------
    def error_for(self, stream_id: str, fragment_id: str, sequence_number: int) -> ErrorRule | None:
        state = self._errors.get(stream_id) or self._errors.get(None)
        if state is None:
            return None
        return state.match(stream_id, fragment_id, sequence_number)

    def delay_ms_for(self, stream_id: str) -> int:
        state = self._latency.get(stream_id) or self._latency.get(None)
        return state.next_delay_ms() if state else 0

    def thresholds_for(self, stream_id: str) -> ThresholdState | None:
        state = self._backpressure.get(stream_id) or self._backpressure.get(None)
        return state if state is not None and state.enabled else None

    def refused_ms(self, stream_id: str | None) -> int:
        """Milliseconds left in a refusal window covering `stream_id` (0 = not refused).
        A global refusal covers every stream; `None` (unknown stream) is covered only by it."""
        now = self._clock.monotonic()
        left = 0.0
        for key in {stream_id, None}:
            deadline = self._refusals.get(key)
            if deadline is not None:
                if deadline <= now:
                    del self._refusals[key]
                else:
                    left = max(left, deadline - now)
        return int(left * 1000 + 0.999)

    def active_counts(self) -> dict[str, int]:
        now = self._clock.monotonic()
        return {
            "error_simulation": sum(1 for s in self._errors.values() if s.enabled and s.rules),
            "latency": sum(
                1 for s in self._latency.values() if (s.delay_ms or 0) > 0 or s.max_delay_ms > 0
            ),
            "backpressure": sum(1 for s in self._backpressure.values() if s.enabled),
            "refuse_reconnect": sum(1 for d in self._refusals.values() if d > now),
        }
