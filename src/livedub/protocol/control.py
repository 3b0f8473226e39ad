"""Models of the echo service's test-control events and their `<event>:ack` reply.

These steer the echo STS service for a stream (or for every stream) from a second connection or
over HTTP `POST /control/<name>`. Unknown fields are rejected (a typo must not silently do
nothing). Nothing here keeps state or does I/O; the service's `simulation` module applies them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from livedub.protocol import constants as c
from livedub.protocol.constants import (
    BackpressureAction,
    BackpressureSeverity,
    ControlAckStatus,
    ErrorTrigger,
    EventName,
    Stage,
)
from livedub.protocol.errors import ErrorCode
from livedub.protocol.models import IdStr, NonNegInt, StrictBool, StrictInt, WireModel
from livedub.typed import Meta

DelayMs = Annotated[int, Meta(ge=0, le=c.SIMULATED_DELAY_MS_MAX)]
Ratio = Annotated[float, Meta(gt=0, le=10)]


class StrictControlModel(WireModel, forbid_unknown_fields=True):
    """Base of the test-control objects: strict about unknown fields."""

    invalid_code: ClassVar[ErrorCode] = ErrorCode.INVALID_CONFIG


class ControlModel(StrictControlModel):
    """Base of a test-control event payload: everything has an optional target stream."""

    stream_id: IdStr | None = None
    """Target stream (its present and future sessions); None = every session."""


class ErrorRule(StrictControlModel):
    """One rule of `config:error_simulation`.

    - `sequence_number`: value = the sequence number to fail (in every session of the target).
    - `fragment_id`: value = the fragment id to fail.
    - `nth_fragment`: value = N ≥ 1; every Nth fragment of the stream since the rule was set fails.
    - `count`: value = N ≥ 1; the next N fragments of the stream fail.
    """

    trigger: ErrorTrigger
    value: StrictInt | Annotated[str, Meta(min_length=1, max_length=128)]
    error_code: ErrorCode = ErrorCode.MODEL_ERROR
    error_message: Annotated[str, Meta(max_length=10_000)] = "simulated error"
    retryable: StrictBool | None = None
    """Default: the error code's value in the error table."""
    stage: Stage | None = None

    def check(self) -> None:
        if self.trigger == "fragment_id":
            if not isinstance(self.value, str):
                raise ValueError("value must be a fragment id string for trigger fragment_id")
        elif not isinstance(self.value, int):
            raise ValueError(f"value must be an integer for trigger {self.trigger}")
        elif self.trigger == "sequence_number" and self.value < 0:
            raise ValueError("value must be >= 0 for trigger sequence_number")
        elif self.trigger in ("nth_fragment", "count") and self.value < 1:
            raise ValueError(f"value must be >= 1 for trigger {self.trigger}")

    @property
    def effective_retryable(self) -> bool:
        return self.error_code.retryable if self.retryable is None else self.retryable


class ErrorSimulationConfig(ControlModel):
    """`config:error_simulation`: matching fragments are answered `failed` with the rule's error.
    The first matching rule wins. `enabled: false` switches simulation off for the target."""

    event: ClassVar[EventName | None] = EventName.CONFIG_ERROR_SIMULATION

    enabled: StrictBool = True
    rules: Annotated[list[ErrorRule], Meta(max_length=1000)] = msgspec.field(default_factory=list)


class LatencyConfig(ControlModel):
    """`config:latency`: a fixed `delay_ms`, or a uniform `min_delay_ms`..`max_delay_ms` drawn
    from a generator seeded with `seed`, before each `fragment:processed`. Order is kept."""

    event: ClassVar[EventName | None] = EventName.CONFIG_LATENCY

    delay_ms: DelayMs | None = None
    min_delay_ms: DelayMs | None = None
    max_delay_ms: DelayMs | None = None
    seed: StrictInt | None = None

    def check(self) -> None:
        ranged = self.min_delay_ms is not None or self.max_delay_ms is not None
        if self.delay_ms is not None and ranged:
            raise ValueError("give either delay_ms or min_delay_ms+max_delay_ms, not both")
        if self.delay_ms is None and not ranged:
            raise ValueError("give delay_ms or min_delay_ms+max_delay_ms")
        if ranged:
            if self.min_delay_ms is None or self.max_delay_ms is None:
                raise ValueError("min_delay_ms and max_delay_ms go together")
            if self.min_delay_ms > self.max_delay_ms:
                raise ValueError("min_delay_ms must be <= max_delay_ms")


class BackpressureThresholds(StrictControlModel):
    """Load (= in-flight / granted max_inflight) at which each level starts."""

    low: Ratio = c.BACKPRESSURE_LOW_DEFAULT
    medium: Ratio = c.BACKPRESSURE_MEDIUM_DEFAULT
    high: Ratio = c.BACKPRESSURE_HIGH_DEFAULT

    def check(self) -> None:
        if not self.low <= self.medium <= self.high:
            raise ValueError("thresholds must satisfy low <= medium <= high")


class BackpressureEmit(StrictControlModel):
    """A one-shot `backpressure` event to send now."""

    severity: BackpressureSeverity
    action: BackpressureAction
    recommended_delay_ms: NonNegInt | None = None


class BackpressureConfig(ControlModel):
    """`config:backpressure`: threshold mode (`enabled`, `thresholds`, `slow_down_delay_ms`)
    and/or a one-shot `emit`."""

    event: ClassVar[EventName | None] = EventName.CONFIG_BACKPRESSURE

    enabled: StrictBool | None = None
    thresholds: BackpressureThresholds | None = None
    slow_down_delay_ms: NonNegInt = c.BACKPRESSURE_SLOW_DOWN_DELAY_MS_DEFAULT
    emit: BackpressureEmit | None = None

    def check(self) -> None:
        if self.enabled is None and self.thresholds is None and self.emit is None:
            raise ValueError("give enabled/thresholds (threshold mode) or emit (one-shot)")

    @property
    def threshold_mode(self) -> bool | None:
        """True/False to switch threshold mode on/off; None to leave it as it is."""
        if self.enabled is not None:
            return self.enabled
        return True if self.thresholds is not None else None


class DisconnectSimulation(ControlModel):
    """`simulate:disconnect`: drop the stream's connection(s) after `delay_ms`; optionally refuse
    that stream's new connections for `refuse_reconnect_ms` after the drop. With `min_inflight`
    the drop is armed on an observed condition instead of at once: it fires (then waits
    `delay_ms`) when a session of the stream holds at least that many accepted, unanswered
    fragments — so a test can drop a connection with a known number of fragments in flight."""

    event: ClassVar[EventName | None] = EventName.SIMULATE_DISCONNECT

    delay_ms: DelayMs = 0
    min_inflight: Annotated[int, Meta(ge=1, le=c.MAX_INFLIGHT_MAX)] | None = None
    refuse_reconnect_ms: Annotated[int, Meta(ge=0, le=c.REFUSE_RECONNECT_MS_MAX)] | None = None


class ResetConfig(ControlModel):
    """`config:reset`: clear every simulation for the stream (or, without stream_id, all)."""

    event: ClassVar[EventName | None] = EventName.CONFIG_RESET


class ControlAck(WireModel):
    """S→caller `<event>:ack`."""

    status: ControlAckStatus
    message: str = ""

    @classmethod
    def accepted(cls, message: str = "") -> ControlAck:
        return cls(status="accepted", message=message)

    @classmethod
    def rejected(cls, message: str) -> ControlAck:
        return cls(status="rejected", message=message)
