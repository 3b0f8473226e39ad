"""A harness that runs the worker's `DubbingSession` (with its real tracker, breaker, gate and
`StsLink`) against a scripted fake STS on virtual time, so any resilience rule is a unit test of a
few lines that runs in milliseconds.

    clock = VirtualClock()
    sts = FakeSts(clock, reply=fail(ErrorCode.MODEL_ERROR))
    out = await run_session(8, sts, clock)
    assert out.reasons[5:] == ["circuit_open"] * 3

`run_session` creates one segment every `every_s` seconds (deadline `delay_s` later), hands each to
`session.dub()`, and plays the output: at each deadline it takes the segment's audio, as the paced
output does, and reports it to the `OutcomeRecorder`. Time only moves when every task waits: the
clock then jumps to the next sleeper (`VirtualClock`). Encode/decode run inline (WAV, tiny segments).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livedub.exitcodes import ExitCode
from livedub.media.audio import encode_pcm
from livedub.media.segment import Segment, SegmentAudio
from livedub.protocol import (
    AudioPayload,
    Backpressure,
    ErrorCode,
    ErrorEvent,
    FragmentData,
    FragmentProcessed,
    ProcessingError,
    StreamReady,
)
from livedub.protocol.constants import EventName
from livedub.worker.config import WorkerSettings
from livedub.worker.outcomes import OutcomeRecorder, Resolution
from livedub.worker.session import DubbingSession
from livedub.worker.sts_client import ConnectFailure, StsConnectError, StsHandlers, deliver
from livedub.worker.tracker import TrackerStats

STREAM_ID = "harness"
RATE = 48_000
SAMPLES = 480  # 10 ms: encoding a segment is microseconds


class Stuck(AssertionError):
    """Nothing can run and no sleeper is left: the scenario can never finish."""


class VirtualClock:
    """A `Clock` whose time moves only when `jump()` is called: to the earliest sleeper's wake time.
    Unlike `FakeClock` (each `sleep` advances time at once), concurrent sleepers wake in time order."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._order), fut))
        await fut

    def next_wake(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def jump(self) -> None:
        """Move to the earliest wake time and wake everyone due then."""
        wake = self.next_wake()
        if wake is None:
            raise Stuck("no sleeper to wake")
        self._now = max(self._now, wake)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


async def settle() -> None:
    """Let every runnable task run until all of them wait (on a future, a queue or the clock)."""
    loop = asyncio.get_running_loop()
    for _ in range(100_000):
        await asyncio.sleep(0)
        if not getattr(loop, "_ready", ()):
            return
    raise Stuck("tasks never settle")


# -- the fake STS --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """How the fake STS answers one fragment."""

    latency_s: float = 0.5
    error: ErrorCode | None = None  # status failed with this code
    retryable: bool | None = None  # None: the code's own
    silent: bool = False  # never answers
    length: float = 1.0  # dubbed length / fragment length (outside 0.9–1.1: duration_mismatch)
    copies: int = 1  # the same answer sent this many times
    stream_id: str = ""  # answer as another stream ("": the fragment's)
    garbage: bool = False  # a schema-invalid fragment:processed naming the fragment
    as_error_event: bool = False  # an `error` event naming the fragment instead of a failed result


ECHO = Reply()
SILENT = Reply(silent=True)


def fail(code: ErrorCode = ErrorCode.MODEL_ERROR, retryable: bool | None = None, latency_s: float = 0.5) -> Reply:
    return Reply(latency_s=latency_s, error=code, retryable=retryable)


class FakeSts:
    """Stands in for `StsClient` (`StsLink`'s `client_factory=sts.bind`). `reply` is one `Reply` for
    every fragment or a function of the fragment's index (0-based, over the whole run)."""

    def __init__(
        self,
        clock: VirtualClock,
        reply: Reply | Callable[[int], Reply] = ECHO,
        *,
        grant: int = 10,
        up: bool = True,
        refuse: ConnectFailure | None = None,
    ) -> None:
        self.clock = clock
        self.reply = reply
        self.grant = grant
        self.up = up
        self.refuse = refuse
        self.handlers: StsHandlers | None = None
        self.connected = False
        self.session = 0
        self.connect_times: list[float] = []
        self.received: list[tuple[float, FragmentData]] = []
        self.acks: list[dict[str, Any]] = []
        self.outstanding = 0  # received and not answered (nor dropped)
        self.max_outstanding = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, handlers: StsHandlers) -> FakeSts:
        self.handlers = handlers
        return self

    @property
    def sent_times(self) -> list[float]:
        return [t for t, _ in self.received]

    async def connect(self, audio_rate_hz: int, audio_channels: int) -> StreamReady:
        self.connect_times.append(self.clock.monotonic())
        if self.refuse is not None:
            raise StsConnectError(self.refuse, "refused by the fake STS")
        if not self.up:
            raise StsConnectError(ConnectFailure.UNREACHABLE, "the fake STS is down")
        self.connected = True
        self.session += 1
        return StreamReady(stream_id=STREAM_ID, session_id=str(uuid.uuid4()), max_inflight=self.grant)

    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        if not self.connected:
            raise ConnectionError("STS not connected")
        if event == EventName.FRAGMENT_ACK:
            self.acks.append(payload)
        elif event == EventName.FRAGMENT_DATA:
            msg = FragmentData.parse(payload)
            reply = self.reply(len(self.received)) if callable(self.reply) else self.reply
            self.received.append((self.clock.monotonic(), msg))
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            if not reply.silent:
                task = asyncio.get_running_loop().create_task(self._answer(msg, reply, self.session))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: FragmentData, reply: Reply, session: int) -> None:
        await self.clock.sleep(reply.latency_s)
        if not self.connected or session != self.session or self.handlers is None:
            return
        self.outstanding -= 1
        if reply.garbage:
            return await self.push(EventName.FRAGMENT_PROCESSED, {"fragment_id": msg.fragment_id, "status": "success"})
        if reply.as_error_event:
            err = ErrorEvent.from_code(reply.error or ErrorCode.MODEL_ERROR, "scripted error",
                                       stream_id=STREAM_ID, fragment_id=msg.fragment_id)  # fmt: skip
            return await self.push(EventName.ERROR, err.to_wire())
        for _ in range(reply.copies):
            await self.push(EventName.FRAGMENT_PROCESSED, answer(msg, reply).to_wire())

    async def push(self, event: str, payload: Any) -> None:
        """Send the worker any event, validated on its side as the real client does (`deliver`)."""
        assert self.handlers is not None
        await deliver(self.handlers, event, payload)

    async def end_stream(self, reason: str = "end_of_input") -> None:
        return None

    async def close(self) -> None:
        self.connected = False

    # -- scripted events (run them with `run_session(..., events=[(t, sts.drop), ...])`) -------
    async def drop(self, reason: str = "transport close", *, stay_down: bool = False) -> None:
        """The server drops the connection (and refuses new ones if `stay_down`)."""
        assert self.handlers is not None
        self.connected = False
        self.outstanding = 0
        self.up = not stay_down
        await self.handlers.on_disconnect(reason)

    async def backpressure(self, action: str, delay_ms: int | None = None) -> None:
        assert self.handlers is not None
        bp = Backpressure(stream_id=STREAM_ID, severity="high", action=action, recommended_delay_ms=delay_ms)  # type: ignore[arg-type]
        await self.handlers.on_backpressure(bp)


def answer(msg: FragmentData, reply: Reply) -> FragmentProcessed:
    """The `fragment:processed` for `msg`: success (the audio echoed, or resized) or failed."""
    base = {"fragment_id": msg.fragment_id, "stream_id": reply.stream_id or msg.stream_id,
            "sequence_number": msg.sequence_number,
            "processing_time_ms": int(reply.latency_s * 1000)}  # fmt: skip
    if reply.error is not None:
        err = ProcessingError.from_code(reply.error, "scripted failure", retryable=reply.retryable)
        return FragmentProcessed(**base, status="failed", error=err)
    audio = msg.audio
    if reply.length != 1.0:
        pcm = np.zeros((round(SAMPLES * reply.length), audio.channels), dtype=np.int16)
        data = encode_pcm(pcm, audio.sample_rate_hz, "wav")
        audio = AudioPayload.from_bytes(data, format="wav", sample_rate_hz=audio.sample_rate_hz,
                                        channels=audio.channels, duration_ms=len(pcm) * 1000 // RATE)  # fmt: skip
    return FragmentProcessed(**base, status="success", dubbed_audio=audio)


# -- running a session -----------------------------------------------------------------------
@dataclass
class Outcomes:
    """What happened: per segment (in creation order) what the output took and what `dub()` said."""

    outputs: list[tuple[str, str | None]]  # (source, reason) as the output took each segment
    resolutions: list[Resolution | None]  # what dub() returned (None: not decided by the end)
    fatal: list[ExitCode]
    stats: TrackerStats
    recorder: OutcomeRecorder
    session: DubbingSession
    sts: FakeSts
    created_at: list[float] = field(default_factory=list)

    @property
    def reasons(self) -> list[str | None]:
        return [reason for _, reason in self.outputs]

    @property
    def sources(self) -> list[str]:
        return [source for source, _ in self.outputs]

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(self.recorder.metrics.render().decode()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0


async def inline(fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
    """The session's `offload`, without a thread (the virtual clock needs every step on the loop)."""
    return fn(*args, **kw)


def make_segment(batch: int, deadline_wall: float) -> Segment:
    pcm = np.full((SAMPLES, 1), batch + 1, dtype=np.int16)
    return Segment(id=str(uuid.uuid4()), stream_id=STREAM_ID, batch=batch, t0_ns=batch * 10_000_000,
                   n_samples=SAMPLES, sample_rate=RATE, channels=1,
                   audio=SegmentAudio(pcm, deadline_wall=deadline_wall))  # fmt: skip


Event = tuple[float, Callable[[], Awaitable[Any]]]


async def run_session(
    segments: int,
    sts: FakeSts,
    clock: VirtualClock,
    *,
    every_s: float = 1.0,
    delay_s: float = 3.0,
    events: Sequence[Event] = (),
    until: Callable[[Outcomes], bool] | None = None,
    max_s: float = 3600.0,
    on_session: Callable[[DubbingSession], None] | None = None,
    offload: Callable[..., Awaitable[Any]] = inline,
    **settings: Any,
) -> Outcomes:
    """Run `segments` segments (one every `every_s`, each due `delay_s` after it is created) through a
    `DubbingSession` talking to `sts`; `events` are `(time_s, coroutine function)` run at those times
    (from the start); `on_session` gets the session before anything runs. Returns when every segment
    was output and decided (or `until(outcomes)`)."""
    s = WorkerSettings(stream_id=STREAM_ID, transport_format="wav", metrics_port=0, **settings)
    recorder = OutcomeRecorder(STREAM_ID)
    fatal: list[ExitCode] = []
    session = DubbingSession(s, clock, recorder, on_fatal=lambda code, *_a, **_k: fatal.append(code),
                             client_factory=sts.bind, offload=offload)  # fmt: skip
    if on_session is not None:  # e.g. for `events` that act on the session itself
        on_session(session)
    out = Outcomes([("", None)] * segments, [None] * segments, fatal, session.tracker.stats(), recorder, session, sts)
    start = clock.monotonic()
    taken = [False] * segments

    async def one(k: int) -> None:
        await clock.sleep(start + k * every_s - clock.monotonic())
        seg = make_segment(k, clock.wall() + delay_s)
        out.created_at.append(clock.monotonic() - start)
        decided = asyncio.ensure_future(session.dub(seg))
        await clock.sleep(delay_s)
        _, source, reason = seg.audio.take("deadline")
        recorder.on_segment_output(seg, source, reason)
        out.outputs[k], taken[k] = (source, reason), True
        out.resolutions[k] = await decided

    async def at(t: float, fn: Callable[[], Awaitable[Any]]) -> None:
        await clock.sleep(start + t - clock.monotonic())
        await fn()

    tasks = [asyncio.ensure_future(c) for c in [session.run(), *(one(k) for k in range(segments)),
                                                *(at(t, fn) for t, fn in events)]]  # fmt: skip
    done = until or (lambda o: all(taken) and None not in o.resolutions)
    try:
        await _drive(clock, lambda: done(out), start + max_s)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    out.stats = session.tracker.stats()
    return out


async def _drive(clock: VirtualClock, done: Callable[[], bool], end: float) -> None:
    while True:
        await settle()
        if done():
            return
        wake = clock.next_wake()
        if wake is None or wake > end:
            raise Stuck(f"stuck at t={clock.monotonic():.3f} (next wake {wake})")
        clock.jump()
