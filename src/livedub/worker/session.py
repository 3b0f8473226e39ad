"""`DubbingSession`: decides each segment's audio, once — dubbed, or original with one reason.

`dub(segment)` (or `submit(segment)`, which does not wait) queues a segment; one sender takes the
queue in order and applies the resilience rules:

- breaker OPEN → `circuit_open`, not sent (HALF_OPEN: one probe at a time);
- no STS link → `disconnect` (the first connection attempt is waited for, up to the deadline);
- no in-flight slot or a `pause` / `slow_down` from the STS before the segment's deadline →
  `backpressure`;
- sent: the answer decides — dubbed, `sts_error`, `invalid_audio`, `duration_mismatch`,
  `invalid_message`, `timeout` (no answer within `fragment_timeout_s`), `disconnect` (the link
  dropped: every fragment in flight falls back), or `deadline` (a late answer).

Each decision is made where it is taken, as a `FallbackReason`, and written to the segment's
`SegmentAudio` at once (`waiting_for` records what it waits on, so a deadline that comes first
uses that reason). The session owns the fragment tracker, the breaker and the backpressure gate;
its `StsLink` owns the connection. Everything it observes goes to the `OutcomeRecorder`.
It never blocks the event loop (encode/decode are offloaded) and `dub` never raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from livedub.clock import Clock, wait_within
from livedub.exitcodes import ExitCode
from livedub.log import bind
from livedub.media.audio import decode_fragment, fragment_bytes, remuxes
from livedub.media.errors import DubbedAudioRejected
from livedub.media.segment import Segment
from livedub.protocol import (
    AudioPayload,
    Backpressure,
    ErrorCode,
    ErrorEvent,
    FragmentAck,
    FragmentData,
    FragmentMetadata,
    FragmentProcessed,
    StreamReady,
    WorkerFragmentAck,
)
from livedub.protocol.constants import EventName
from livedub.reasons import FallbackReason, RejectedReason
from livedub.worker.backpressure import BackpressureGate
from livedub.worker.breaker import BreakerState, CircuitBreaker
from livedub.worker.config import WorkerSettings
from livedub.worker.link import AUTH_REFUSED, ClientFactory, OnFatal, StsLink
from livedub.worker.outcomes import DUBBED, OutcomeRecorder, Resolution
from livedub.worker.tracker import FragmentTracker, Outcome, Resolved

_log = logging.getLogger(__name__)

Offload = Callable[..., Awaitable[Any]]  # `asyncio.to_thread`-like: run a blocking call elsewhere
END_POLL_S = 0.05  # how often `end()` looks whether the fragments in flight are resolved

F = FallbackReason


@dataclass
class Pending:
    """What the tracker keeps about a fragment in flight. The segment (its PCM and video: megabytes)
    is released once the fragment is resolved: the tracker remembers resolved fragments (to tell a
    late result from an unknown one) and must not keep their media alive."""

    _segment: Segment | None
    sequence_number: int
    probe: bool
    sent_monotonic: float

    @property
    def segment(self) -> Segment:
        if self._segment is None:
            raise RuntimeError("segment of a resolved fragment used")
        return self._segment

    def release(self) -> None:
        self._segment = None


def resolution_of(segment: Segment) -> Resolution | None:
    """What the segment got, once decided (None while undecided)."""
    outcome = segment.audio.outcome
    if outcome is None:
        return None
    source, reason = outcome
    return DUBBED if source == "dubbed" else Resolution.fallback(FallbackReason(reason or F.DEADLINE))


class DubbingSession:
    """One stream's dubbing decisions. `run()` (a task) sends; `dub()` / `submit()` feed it.

    Args:
        settings: the worker's settings (limits, timeouts, breaker, reconnection, stream config).
        clock: every wait and timeout.
        recorder: metrics, logs and `/health` of what happens.
        on_fatal: called once with an exit code when the STS refuses our token or stays away.
        client_factory: builds the STS client from its handlers (default: the Socket.IO client).
        offload: runs encode/decode off the event loop (default `asyncio.to_thread`).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        clock: Clock,
        recorder: OutcomeRecorder,
        *,
        on_fatal: OnFatal,
        client_factory: ClientFactory | None = None,
        offload: Offload | None = None,
    ) -> None:
        s = settings
        self.settings = s
        self.clock = clock
        self.recorder = recorder
        self.log = bind(_log, stream_id=s.stream_id)
        self.tracker: FragmentTracker[Pending] = FragmentTracker(
            clock, max_inflight=s.max_inflight, timeout_s=s.fragment_timeout_s, on_timeout=self._on_timeout,
            on_inflight_change=recorder.inflight, stream_id=s.stream_id,
        )  # fmt: skip
        self.breaker = CircuitBreaker(
            clock, failure_threshold=s.breaker_failure_threshold, cooldown_s=s.breaker_cooldown_s,
            on_transition=recorder.breaker_transition, stream_id=s.stream_id,
        )  # fmt: skip
        self.gate = BackpressureGate(clock, on_event=recorder.backpressure_event, stream_id=s.stream_id)
        self.link = StsLink(s, clock, self, recorder, on_fatal, client_factory)
        self._offload: Offload = offload or asyncio.to_thread
        self._queue: asyncio.Queue[Segment] = asyncio.Queue()
        self._waiters: dict[str, asyncio.Future[Resolution]] = {}
        self._seq = 0
        self._config_refused = False
        self.original_only = settings.original_only  # the operator's switch (worker/control.py)

    # -- public ------------------------------------------------------------------------------
    async def dub(self, segment: Segment) -> Resolution:
        """Decide `segment`'s audio and return the decision (never raises)."""
        return await asyncio.shield(self.submit(segment))

    def submit(self, segment: Segment) -> asyncio.Future[Resolution]:
        """Queue `segment` (in order; never blocks). The future gets its `Resolution`."""
        fut: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._waiters[segment.id] = fut
        if self.settings.passthrough or self._config_refused:
            self._settle(segment, F.PASSTHROUGH if self.settings.passthrough else F.CONFIG_REFUSED, log=False)
            return fut
        if self.original_only:
            self._settle(segment, F.ORIGINAL_ONLY, log=False)
            return fut
        self.link.start(segment.sample_rate, segment.channels)
        # Decided now, what it waits on if its deadline comes while it is queued: the STS asked
        # us to hold (pause / slow_down), or there is no STS link; else a late answer ("deadline").
        if self.gate.paused or self.gate.delay_ms:
            segment.audio.waiting_for(F.BACKPRESSURE)
        elif not self.link.connected:
            segment.audio.waiting_for(F.DISCONNECT)
        self._queue.put_nowait(segment)
        return fut

    async def run(self) -> None:
        """Send queued segments in order and time fragments out, until cancelled."""
        timeouts = asyncio.get_running_loop().create_task(self.tracker.run_timeouts(), name="fragment-timeouts")
        try:
            while True:
                segment = await self._queue.get()
                try:
                    await self._send(segment)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one segment's failure must not stop the sender
                    self.log.exception("sending a fragment failed", ctx={"fragment_id": segment.id})
                    self._settle(segment, F.SEND_ERROR)
        finally:
            timeouts.cancel()

    async def end(self) -> None:
        """stream:end once every fragment is resolved (bounded); waits for stream:complete."""
        deadline = self.clock.monotonic() + self.settings.fragment_timeout_s + 1.0
        while self.tracker.inflight and self.clock.monotonic() < deadline:
            await self.clock.sleep(END_POLL_S)
        await self.link.end_stream()

    def set_original_only(self, enabled: bool) -> None:
        """The operator's switch: on, no segment is sent from now on, and the ones queued and not
        sent yet go out original too (`original_only`); the one being sent and those in flight
        finish as they would. Off: the next segments are sent again."""
        self.original_only = enabled
        if enabled:
            while not self._queue.empty():
                self._settle(self._queue.get_nowait(), F.ORIGINAL_ONLY, log=False)

    def status(self) -> dict[str, Any]:
        """The session's part of `/health`."""
        return {
            "sts": str(self.link.state),
            "breaker": self.breaker.state.name.lower(),
            "inflight": self.tracker.inflight,
            "backpressure": str(self.gate.action),
        }

    async def close(self) -> None:
        await self.link.close()

    # -- deciding ----------------------------------------------------------------------------
    def _settle(self, segment: Segment, reason: FallbackReason, *, log: bool = True) -> None:
        """The segment goes out original for `reason` (unless it was decided already)."""
        if segment.audio.set_fallback(reason) and log:
            self.recorder.segment_fallback(segment, reason)
        self._report(segment)

    def _report(self, segment: Segment) -> None:
        fut = self._waiters.get(segment.id)
        resolution = resolution_of(segment)
        if fut is None or resolution is None:
            return
        del self._waiters[segment.id]
        if not fut.done():
            fut.set_result(resolution)

    def _remaining_s(self, segment: Segment) -> float:
        return segment.audio.deadline_wall - self.clock.wall()

    async def _send(self, segment: Segment) -> None:
        if segment.audio.taken:
            return self._report(segment)  # already output (its deadline passed while queued)
        if self.breaker.state is BreakerState.OPEN:  # while open nothing is sent and nothing waits
            return self._settle(segment, F.CIRCUIT_OPEN)
        if not await self._link_up(segment):
            return self._settle(segment, F.CONFIG_REFUSED if self._config_refused else F.DISCONNECT)
        # The link is up: from here a deadline that passes before the fragment goes out (its
        # encode, then a slot) is backpressure, not the link (it waited for the first connection).
        segment.audio.waiting_for(F.BACKPRESSURE)
        # Encode while (possibly) waiting for a slot: it is the same work either way.
        fmt = self.settings.transport_format
        data: bytes = await self._offload(fragment_bytes, segment.pcm, segment.sample_rate, fmt, segment.coded)
        self.recorder.segment_ready(segment, len(data), remuxed=remuxes(fmt, segment.coded))
        ready_s = self.clock.monotonic()
        held = await self._hold(segment)
        if held is not None:
            return self._settle(segment, held)
        probe = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.allow_send():
            self.tracker.release()
            return self._settle(segment, F.CIRCUIT_OPEN)
        await self._emit(segment, data, probe, ready_s)

    async def _link_up(self, segment: Segment) -> bool:
        """Is the STS link up? The first connection is waited for, up to the segment's deadline
        (unpaced: no deadline, so never longer than the attempt itself)."""
        if self.link.connecting_first:
            segment.audio.waiting_for(F.DISCONNECT)
            await wait_within(self.clock, self.link.first_attempt_done(), self._remaining_s(segment))
        return self.link.connected

    async def _hold(self, segment: Segment) -> FallbackReason | None:
        """Wait for an in-flight slot and the gate (pause / slow_down) up to the deadline. None:
        a slot is held, send now; else why not (the slot is given back)."""
        if not await wait_within(self.clock, self._wait_to_send(), self._remaining_s(segment)):
            return F.BACKPRESSURE
        if segment.audio.taken or not self.link.connected:
            self.tracker.release()
            return F.BACKPRESSURE if self.link.connected else F.DISCONNECT
        return None

    async def _wait_to_send(self) -> None:
        await self.tracker.acquire()
        try:
            await self.gate.wait_ready()
        except BaseException:
            self.tracker.release()
            raise

    async def _emit(self, segment: Segment, data: bytes, probe: bool, ready_s: float) -> None:
        seq, self._seq = self._seq, self._seq + 1
        s = self.settings
        msg = FragmentData(
            fragment_id=segment.id, stream_id=s.stream_id, sequence_number=seq,
            timestamp=int(self.clock.wall() * 1000),
            audio=AudioPayload.from_bytes(
                data, format=s.transport_format, sample_rate_hz=segment.sample_rate, channels=segment.channels,
                duration_ms=segment.duration_ms,
            ),
            metadata=FragmentMetadata(pts_ns=segment.t0_ns, source_pts_ns=segment.t0_ns),
        )  # fmt: skip
        # How long the slot/backpressure gate held this fragment (its `slow_down` delay).
        sent_s = self.clock.monotonic()
        self.tracker.add(segment.id, Pending(segment, seq, probe, sent_s))
        segment.audio.waiting_for(F.DEADLINE)  # in flight: only a late answer can miss it now
        try:
            await self.link.emit(EventName.FRAGMENT_DATA, msg.to_wire())
        except (ConnectionError, OSError) as exc:
            self._end(segment.id, F.DISCONNECT)
            if probe:
                self.breaker.release_probe()
            self.recorder.fragment_send_failed(segment.id, str(exc))
            return
        self.recorder.fragment_sent(segment, seq, probe, round((sent_s - ready_s) * 1000.0, 1))

    # -- fragment outcomes -------------------------------------------------------------------
    def _fell_back(self, r: Resolved[Pending], reason: FallbackReason) -> None:
        """A sent fragment ended without dubbed audio: count it and decide its segment."""
        self.recorder.fragment_fallback(r.fragment_id, r.info.sequence_number, reason)
        self._settle(r.info.segment, reason, log=False)
        r.info.release()

    def _end(self, fid: str, reason: FallbackReason, *, retryable: bool | None = None, code: str = "") -> None:
        """End an in-flight fragment as a fallback; a failure (`retryable` given) goes to the breaker."""
        r = self.tracker.resolve(fid, Outcome.FALLBACK, reason)
        if r is None:
            return
        if retryable is not None:
            self.breaker.record_failure(retryable, code or str(reason))
        self._fell_back(r, reason)

    def _on_timeout(self, fragment_id: str, info: Pending) -> None:
        self.breaker.record_failure(True, ErrorCode.TIMEOUT.value)
        self.recorder.fragment_fallback(fragment_id, info.sequence_number, F.TIMEOUT)
        self._settle(info.segment, F.TIMEOUT, log=False)
        info.release()

    def _failed(self, fid: str, code: str, retryable: bool, message: str) -> None:
        if self.tracker.get(fid) is not None:
            self.recorder.sts_failed(fid, code, retryable, message)
            self._end(fid, F.STS_ERROR, retryable=retryable, code=code)

    async def _apply(self, segment: Segment, msg: FragmentProcessed) -> bool:
        """Decode and apply a dubbed result. True if the segment goes out dubbed."""
        fid = msg.fragment_id
        assert msg.dubbed_audio is not None
        try:
            pcm = await self._offload(
                decode_fragment, msg.dubbed_audio.to_bytes(), expected_samples=segment.n_samples,
                sample_rate=segment.sample_rate, channels=segment.channels,
            )  # fmt: skip
        except DubbedAudioRejected as exc:
            reason = F.DURATION_MISMATCH if exc.reason == "duration_mismatch" else F.INVALID_AUDIO
            ctx = {"fragment_id": fid, "reason": exc.reason, "detail": exc.detail[:200]}
            self.recorder.rejected(RejectedReason(reason.value), "dubbed audio rejected", **ctx)
            self._end(fid, reason, retryable=False)
            return False
        r = self.tracker.resolve(fid, Outcome.PROCESSED)
        if r is None:  # timed out while decoding
            self.recorder.late_result(fid)
            return False
        r.info.release()
        self.breaker.record_success()
        self.recorder.texts(segment, msg.transcript, msg.translated_text, msg.segments)
        applied = segment.audio.set_dubbed(pcm)
        self._report(segment)
        if applied:
            self.recorder.fragment_applied(fid, msg.sequence_number, r.elapsed_ms)
        else:  # the output already took the original audio (result after the deadline)
            self.recorder.applied_too_late(fid)
        return applied

    # -- STS events (LinkListener) -----------------------------------------------------------
    def on_ready(self, ready: StreamReady) -> None:
        self._seq = 0
        self.gate.reset()
        self.tracker.set_server_max_inflight(ready.max_inflight)

    def on_disconnected(self, reason: str) -> None:
        self.log.warning("STS disconnected", ctx={"reason": reason, "inflight": self.tracker.inflight})
        for r in self.tracker.fail_all(F.DISCONNECT):
            self._fell_back(r, F.DISCONNECT)
        self.breaker.release_probe()
        self.gate.reset()

    def on_config_refused(self, message: str) -> None:
        self._config_refused = True
        while not self._queue.empty():
            self._settle(self._queue.get_nowait(), F.CONFIG_REFUSED, log=False)

    async def on_processed(self, msg: FragmentProcessed) -> None:
        fid = msg.fragment_id
        if msg.stream_id != self.settings.stream_id:
            ctx = {"fragment_id": fid, "other_stream": msg.stream_id}
            return self.recorder.rejected(RejectedReason.INVALID_MESSAGE, "result for another stream ignored", **ctx)
        entry = self.tracker.get(fid)
        if entry is None:
            if self.tracker.recently_resolved(fid) is not None:
                self.recorder.late_result(fid, msg.status)
            else:
                ctx = {"fragment_id": fid, "status": msg.status}
                self.recorder.rejected(RejectedReason.UNKNOWN_FRAGMENT, "result for an unknown fragment ignored", **ctx)
        elif msg.status == "failed" or msg.dubbed_audio is None:
            err = msg.error
            code = err.code.value if err else "UNKNOWN"
            self._failed(fid, code, bool(err and err.retryable), err.message if err else "")
        elif await self._apply(entry.info.segment, msg):
            return await self._ack(fid, "applied")
        await self._ack(fid, "received")

    async def on_error(self, err: ErrorEvent) -> None:
        if err.fragment_id is not None and self.tracker.get(err.fragment_id) is not None:
            return self._failed(err.fragment_id, err.code.value, err.retryable, err.message)
        ctx = {"code": err.code.value, "message": err.message[:200], "fragment_id": err.fragment_id}
        self.log.warning("STS error", ctx=ctx)
        if err.code is ErrorCode.AUTH_FAILED:
            self.link.fail(ExitCode.STS_AUTH_FAILED, AUTH_REFUSED)

    async def on_invalid(self, event: str, reason: str, raw: Any) -> None:
        fid = raw.get("fragment_id") if isinstance(raw, dict) else None
        ctx = {"event": event, "reason": reason, "fragment_id": fid}
        self.recorder.rejected(RejectedReason.INVALID_MESSAGE, "invalid STS message ignored", **ctx)
        if event == EventName.FRAGMENT_PROCESSED and isinstance(fid, str):
            self._end(fid, F.INVALID_MESSAGE, retryable=False)

    async def on_ack(self, ack: FragmentAck) -> None:
        if not self.tracker.record_ack(ack.fragment_id, ack.status, ack.queue_position):
            self.log.debug("ack for a fragment not in flight", ctx={"fragment_id": ack.fragment_id})

    async def on_backpressure(self, bp: Backpressure) -> None:
        ctx = {"action": bp.action, "severity": bp.severity, "recommended_delay_ms": bp.recommended_delay_ms}
        self.log.info("backpressure", ctx=ctx)
        self.gate.apply(bp.action, bp.recommended_delay_ms)

    async def _ack(self, fragment_id: str, status: Literal["received", "applied"]) -> None:
        ack = WorkerFragmentAck(fragment_id=fragment_id, status=status, timestamp=int(self.clock.wall() * 1000))
        try:
            await self.link.emit(EventName.FRAGMENT_ACK, ack.to_wire())
        except (ConnectionError, OSError):
            pass
