"""Backpressure gate: obey the STS service's `backpressure` events before each new send.

Rules (protocol.md, `backpressure` event):
- `pause`: send nothing new until an event with `none` arrives — `wait_ready()` blocks;
- `slow_down`: wait `recommended_delay_ms` before each new send — every `wait_ready()` waits that
  long (measured from the call), unless the action changes meanwhile (`none` ends the wait at
  once, `pause` turns it into a pause);
- `none`: normal — `wait_ready()` returns at once.

Every applied event is counted through `on_event(action)` (for
`worker_backpressure_events_total{action}`); changes of action are logged. `wait_ready()` is
cancellable: a worker that must put a segment out by its deadline cancels it and uses the
original audio (reason `backpressure`). Time comes only from the injected `Clock`. This module
never sends anything and never drops or reorders fragments itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

from livedub.clock import Clock
from livedub.log import bind

DEFAULT_SLOW_DOWN_DELAY_MS = 500
DEFAULT_MAX_DELAY_MS = 60_000
_EPSILON_S = 1e-6


class BackpressureAction(StrEnum):
    NONE = "none"
    SLOW_DOWN = "slow_down"
    PAUSE = "pause"


class BackpressureGate:
    """Holds the latest backpressure action and makes senders wait accordingly.

    Args:
        clock: time source for the slow-down delay.
        default_delay_ms: delay used for `slow_down` when the event gives none (default 500).
        max_delay_ms: upper bound applied to `recommended_delay_ms` (default 60000), so a hostile
            or buggy value cannot stop sending for longer.
        on_event: called with the action of every applied event.
        stream_id: context for log lines.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        default_delay_ms: int = DEFAULT_SLOW_DOWN_DELAY_MS,
        max_delay_ms: int = DEFAULT_MAX_DELAY_MS,
        on_event: Callable[[BackpressureAction], None] | None = None,
        stream_id: str = "",
    ) -> None:
        if default_delay_ms < 0 or max_delay_ms < 0:
            raise ValueError("delays must be >= 0")
        self._clock = clock
        self.default_delay_ms = default_delay_ms
        self.max_delay_ms = max_delay_ms
        self._on_event = on_event
        self._log = bind(__name__, stream_id=stream_id)
        self._action = BackpressureAction.NONE
        self._delay_ms = 0
        self._changed = asyncio.Event()

    @property
    def action(self) -> BackpressureAction:
        return self._action

    @property
    def paused(self) -> bool:
        return self._action is BackpressureAction.PAUSE

    @property
    def delay_ms(self) -> int:
        """The wait before each send while `slow_down` is in force (0 otherwise)."""
        return self._delay_ms if self._action is BackpressureAction.SLOW_DOWN else 0

    def apply(
        self, action: BackpressureAction | str, recommended_delay_ms: int | None = None
    ) -> None:
        """Apply one `backpressure` event. Raises ValueError for an unknown action (validate the
        message first)."""
        new = BackpressureAction(action)
        if new is BackpressureAction.SLOW_DOWN:
            delay_ms = (
                self.default_delay_ms if recommended_delay_ms is None else recommended_delay_ms
            )
            delay_ms = min(max(0, int(delay_ms)), self.max_delay_ms)
        else:
            delay_ms = 0
        old, old_delay_ms = self._action, self._delay_ms
        self._action, self._delay_ms = new, delay_ms
        if self._on_event is not None:
            try:
                self._on_event(new)
            except Exception:
                self._log.exception("on_event failed")
        if new is not old or delay_ms != old_delay_ms:
            self._log.info(
                f"backpressure {old.value} -> {new.value}",
                ctx={"action": new.value, "delay_ms": delay_ms},
            )
            self._notify()

    def reset(self) -> None:
        """Back to `none` without counting an event (e.g. a new session after a reconnect)."""
        if self._action is not BackpressureAction.NONE:
            self._log.info(f"backpressure {self._action.value} -> none (reset)")
        self._action, self._delay_ms = BackpressureAction.NONE, 0
        self._notify()

    async def wait_ready(self) -> None:
        """Return when a new fragment may be sent (call it right before each send). Cancellable.

        Under `slow_down` it returns `delay_ms` after the call (a new delay that arrives meanwhile
        is measured from the same call); time spent paused counts toward that delay."""
        start_s = self._clock.monotonic()
        while True:
            if self._action is BackpressureAction.PAUSE:
                changed = self._changed
                await changed.wait()
                continue
            if self._action is BackpressureAction.SLOW_DOWN:
                remaining_s = start_s + self._delay_ms / 1000.0 - self._clock.monotonic()
                if remaining_s > _EPSILON_S and await self._sleep_unless_changed(remaining_s):
                    continue  # the action changed during the delay: obey the new one
            return

    async def _sleep_unless_changed(self, seconds: float) -> bool:
        """Sleep on the clock; True if the action changed first (the sleep is then cut short)."""
        changed = self._changed
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            return not sleeper.done()
        finally:
            sleeper.cancel()
            waiter.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
