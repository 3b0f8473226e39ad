"""`WorkerRunner`: one stream's dubbing worker — the media pipeline joined to an STS session.

The media pipeline (input → segments → paced output) runs on its own and never waits for the STS:
each segment's audio is taken by the output at its deadline, dubbed if a result arrived, else
original. This module only decides *which* PCM a segment gets, by sending fragments to the STS under
the resilience rules — fragment tracker (max in-flight, timeout), circuit breaker, backpressure
gate, reconnection — and applying the results. It must never block the event loop (encode/decode run
in threads) and never let a hostile STS message raise.

Every segment ends in exactly one of: dubbed, or original audio with one fallback reason; every sent
fragment ends in exactly one of processed / fallback (`worker_audio_fragments_total`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from livedub import exitcodes
from livedub.clock import Clock, SystemClock
from livedub.exitcodes import ExitCode
from livedub.log import bind, redact_url
from livedub.media.audio import decode_fragment, encode_pcm
from livedub.media.errors import DubbedAudioRejected
from livedub.media.observer import InputState, WriteErrorKind
from livedub.media.output import OriginalSound
from livedub.media.pipeline import MediaPipeline
from livedub.media.segment import Segment
from livedub.media.settings import MediaSettings
from livedub.protocol import (
    AudioPayload,
    Backpressure,
    ErrorCode,
    ErrorEvent,
    FragmentAck,
    FragmentData,
    FragmentMetadata,
    FragmentProcessed,
    WorkerFragmentAck,
)
from livedub.worker.backpressure import BackpressureGate
from livedub.worker.breaker import BreakerState, CircuitBreaker
from livedub.worker.captions import CaptionWriter
from livedub.worker.config import WorkerSettings
from livedub.worker.metrics import HealthStatus, MetricsServer, WorkerMetrics
from livedub.worker.reconnect import ReconnectPolicy
from livedub.worker.sts_client import ConnectFailure, StsClient, StsConnectError, StsHandlers
from livedub.worker.tracker import FragmentTracker, Outcome, Resolved

_log = logging.getLogger(__name__)

INPUT_NOT_STARTED = "starting"  # /health `input` and its metric before the input's first state

_INPUT_STATE_METRIC = {
    InputState.CONNECTING: "connecting",
    InputState.READING: "receiving",
    InputState.RECONNECTING: "reconnecting",
    InputState.FAILED: "failed",
    InputState.ENDED: "ended",
}


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


def media_settings(s: WorkerSettings) -> MediaSettings:
    """The media knobs of a worker, from its settings."""
    return MediaSettings(
        input_url=s.input_url,
        output_url=s.output_url,
        stream_id=s.stream_id,
        segment_s=s.segment_s,
        paced=s.paced,
        sts_timeout_s=s.fragment_timeout_s,
        output_delay_s=s.delay_s,
        read_timeout_s=s.read_timeout_s,
        anchor_settle_s=s.anchor_settle_s,
        deadline_margin_s=s.deadline_margin_s,
        transport_format=s.transport_format,
        keep_original=s.keep_original,
        source_language=s.source_language,
        # Passthrough: the first track carries the original sound too.
        target_language=s.source_language if s.passthrough else s.target_language,
        segment_dir=Path(s.segment_dir) if s.segment_dir else None,
        segment_retention=s.segment_retention,
        # Unpaced (file → file): the output waits for each segment to be resolved. The worker resolves
        # every segment (dubbed, or a fallback at the latest when its fragment times out), so this
        # bound only guards against a bug: queue wait + send + timeout of one fragment.
        unpaced_wait_s=0.0 if s.passthrough else (s.max_inflight + 2) * (s.fragment_timeout_s + 1.0),
    )


class ConnState(enum.StrEnum):
    """The worker's STS link, as `/health` shows it (`sts`)."""

    IDLE = "idle"  # no segment yet: nothing to connect for
    CONNECTING = "connecting"  # the first connection
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # dropped or failed: retrying with backoff
    UNAVAILABLE = "unavailable"  # reconnection attempts exhausted (the worker exits)
    CONFIG_REFUSED = "config_refused"  # stream:init refused: every segment goes out original
    PASSTHROUGH = "passthrough"  # configured not to use an STS


class OutputState(enum.StrEnum):
    """The worker's output, as `/health` shows it (`output`)."""

    STARTING = "starting"
    WRITING = "writing"
    FINISHED = "finished"
    FAILED = "failed"


class WorkerRunner:
    """Runs one stream: `await WorkerRunner(settings).run()` returns the process exit code."""

    def __init__(self, settings: WorkerSettings, clock: Clock | None = None) -> None:
        s = settings
        self.settings = s
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=s.stream_id)
        self.metrics = WorkerMetrics(s.stream_id)
        self.tracker: FragmentTracker[Pending] = FragmentTracker(
            self.clock,
            max_inflight=s.max_inflight,
            timeout_s=s.fragment_timeout_s,
            on_timeout=self._on_timeout,
            on_inflight_change=self.metrics.set_inflight,
            stream_id=s.stream_id,
        )
        self.breaker = CircuitBreaker(
            self.clock,
            failure_threshold=s.breaker_failure_threshold,
            cooldown_s=s.breaker_cooldown_s,
            on_transition=lambda t: self.metrics.set_breaker_state(int(t.new)),
            stream_id=s.stream_id,
        )
        self.gate = BackpressureGate(
            self.clock, on_event=lambda a: self.metrics.backpressure_event(str(a)), stream_id=s.stream_id
        )
        self.policy = ReconnectPolicy(
            self.clock,
            base_delay_s=s.reconnect_base_s,
            factor=s.reconnect_factor,
            max_attempts=s.reconnect_max_attempts,
            jitter_ratio=s.reconnect_jitter,
            on_attempt=self._on_attempt,
            stream_id=s.stream_id,
        )
        self.client = StsClient(
            s,
            StsHandlers(
                on_ack=self._on_ack,
                on_processed=self._on_processed,
                on_backpressure=self._on_backpressure,
                on_error=self._on_error,
                on_disconnect=self._on_disconnect,
                on_invalid=self._on_invalid,
            ),
            self.clock,
        )
        self.pipeline = MediaPipeline(
            media_settings(s), observer=self, on_segment=self._on_segment, clock=self.clock
        )
        self._queue: asyncio.Queue[Segment] = asyncio.Queue()
        self._seq = 0
        self._audio_params: tuple[int, int] | None = None
        self._sts_state = ConnState.IDLE
        self._connected = asyncio.Event()
        self._first_attempt_done = asyncio.Event()  # the initial connect attempt ended (either way)
        self._connect_task: asyncio.Task[None] | None = None
        self._fatal: ExitCode | None = None
        self._config_refused: str | None = None
        self.captions = (
            CaptionWriter(s.captions, s.source_language, s.target_language) if s.captions else None
        )
        self._output_state = OutputState.STARTING
        self._input_state: InputState | None = None  # None: no input event yet (INPUT_NOT_STARTED)
        self._write_errors = 0  # segment files that could not be written (dubbing continues)
        self._original_failed = False  # the original's own output was given up (--keep-original)
        self._drain_deadline: float | None = None  # monotonic; set by the first stop signal
        self._drain_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        server: MetricsServer | None = None
        if s.metrics_port:
            server = MetricsServer(self.metrics, self.health, host=s.metrics_host, port=s.metrics_port)
            try:
                await server.start()
            except OSError as exc:  # port in use / not bindable: a settings problem, not a crash
                self.log.error(
                    "cannot serve metrics", ctx={"host": s.metrics_host, "port": s.metrics_port, "error": str(exc)}
                )
                return int(ExitCode.USAGE)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, exitcodes.ORPHAN_SIGNAL):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass
        self.log.info(
            "worker starting",
            ctx={
                "input": redact_url(s.input_url),
                "output": redact_url(s.output_url),
                "sts_url": redact_url(s.sts_url),
                "passthrough": s.passthrough,
                "segment_s": s.segment_s,
                "output_delay_s": s.delay_s,
                "keep_original": s.keep_original,
            },
        )
        sender = loop.create_task(self._send_loop(), name="sts-sender")
        timeouts = loop.create_task(self.tracker.run_timeouts(), name="fragment-timeouts")
        try:
            code = await self.pipeline.run()
            self._output_state = OutputState.FINISHED if code == 0 else OutputState.FAILED
            if code == ExitCode.OK and self._fatal is None and not s.passthrough:
                if self._drain_deadline is None:
                    await self._end_stream()
                else:  # draining: stream:end within what is left of the drain
                    left = max(0.0, self._drain_deadline - self.clock.monotonic())
                    try:
                        await asyncio.wait_for(self._end_stream(), left)
                    except TimeoutError:
                        self.log.warning("drain timed out before stream:complete")
        finally:
            for task in (sender, timeouts, self._connect_task, self._drain_task):
                if task is not None:
                    task.cancel()
            await self.client.close()
            if self.captions is not None:
                self.captions.close()
            if server is not None:
                await server.close()
        if self._fatal is not None:
            code = int(self._fatal)
        self.log.info("worker exiting", ctx={"exit_code": code, **self._summary()})
        return code

    def _on_signal(self, sig: int) -> None:
        """First SIGTERM/SIGINT: drain (stop reading, let the fragments in flight finish and the
        output write what it buffered, up to D), bounded by `drain_timeout_s`. A second signal,
        `exitcodes.ORPHAN_SIGNAL` (the orchestrator died) or no drain configured: stop now (the output is
        closed where it is)."""
        name = signal.Signals(sig).name
        if self._drain_deadline is None and self.settings.drain_s > 0 and sig != exitcodes.ORPHAN_SIGNAL:
            self._drain_deadline = self.clock.monotonic() + self.settings.drain_s
            self.log.info(
                "signal received: draining",
                ctx={"signal": name, "drain_timeout_s": self.settings.drain_s, "inflight": self.tracker.inflight},
            )
            self.pipeline.request_stop(drain=True)
            self._drain_task = asyncio.get_running_loop().create_task(self._cut_drain(), name="drain-deadline")
            return
        self.log.warning("signal received: stopping now", ctx={"signal": name})
        self.pipeline.request_stop(drain=False)

    async def _cut_drain(self) -> None:
        await self.clock.sleep(self.settings.drain_s)
        self.log.warning("drain timed out: output cut", ctx={"drain_timeout_s": self.settings.drain_s})
        self.pipeline.request_stop(drain=False)

    def _fail(self, code: ExitCode, message: str, **ctx: Any) -> None:
        if self._fatal is None:
            self._fatal = code
            self.log.error(message, ctx={"exit_code": int(code), **ctx})
        self.pipeline.request_stop(drain=False)

    async def _end_stream(self) -> None:
        """stream:end once every fragment is resolved; waits (bounded) for stream:complete."""
        deadline = self.clock.monotonic() + self.settings.fragment_timeout_s + 1.0
        while self.tracker.inflight and self.clock.monotonic() < deadline:
            await self.clock.sleep(0.05)
        if not self.client.connected:
            return
        try:
            done = await self.client.end_stream("end_of_input")
        except ConnectionError:
            return
        if done is not None:
            self.log.info(
                "stream complete",
                ctx={"total_fragments": done.total_fragments, **done.statistics.model_dump()},
            )

    def health(self) -> dict[str, Any]:
        return {
            "status": HealthStatus.OK if self._fatal is None else HealthStatus.FAILING,
            "stream_id": self.settings.stream_id,
            "input": str(self._input_state or INPUT_NOT_STARTED),
            "sts": str(ConnState.PASSTHROUGH if self.settings.passthrough else self._sts_state),
            "output": str(self._output_state),
            "breaker": self.breaker.state.name.lower(),
            "inflight": self.tracker.inflight,
            "backpressure": str(self.gate.action),
            "segment_files": "off" if not self.settings.segment_dir else (HealthStatus.FAILING if self._write_errors else HealthStatus.OK),
            "segment_file_errors": self._write_errors,
            "original": str(self._original_sound()),
        }

    def _original_sound(self) -> OriginalSound:
        """Where the original sound goes (`--keep-original`): off, track, own_output, failed."""
        if self._original_failed:
            return OriginalSound.FAILED
        output = self.pipeline.output
        if output is not None:
            return output.original_sound
        return OriginalSound.OFF

    def _summary(self) -> dict[str, Any]:
        st = self.tracker.stats()
        return {
            "sent": st.sent,
            "processed": st.processed,
            "fallback": st.fallback,
            "segments": self.pipeline.stats.segments_created,
            "output": dict(self.pipeline.stats.segments_output),
            "reasons": dict(self.pipeline.stats.reasons),
        }

    # -- STS connection ----------------------------------------------------------------------
    def _ensure_connecting(self, initial: bool) -> None:
        if self.settings.passthrough or self._fatal is not None:
            return
        if self._connect_task is None or self._connect_task.done():
            self._connect_task = asyncio.get_running_loop().create_task(self._connect(initial))

    async def _connect_once(self) -> bool:
        assert self._audio_params is not None
        rate, channels = self._audio_params
        try:
            ready = await self.client.connect(rate, channels)
        except StsConnectError as exc:
            if exc.kind is ConnectFailure.AUTH:
                self._fail(ExitCode.STS_AUTH_FAILED, "STS refused our token (AUTH_FAILED)")
                raise asyncio.CancelledError from exc
            if exc.kind is ConnectFailure.CONFIG:
                # e.g. a language pair the STS cannot dub: every segment goes out original,
                # counted as worker_fallback_total{reason="config_refused"}; said once here
                self._config_refused = exc.message
                self._sts_state = ConnState.CONFIG_REFUSED
                self.log.error(
                    "STS refused our stream config: every segment goes out original",
                    ctx={"error": exc.message[:300]},
                )
                for queued in self._drain_queue():
                    queued.audio.set_fallback("config_refused")
                raise asyncio.CancelledError from exc
            self.log.warning("STS connect failed", ctx={"kind": exc.kind, "error": exc.message[:200]})
            return False
        self._seq = 0
        self.gate.reset()
        self.tracker.set_server_max_inflight(ready.max_inflight)
        self._sts_state = ConnState.CONNECTED
        self._connected.set()
        self.metrics.set_sts_connected(True)
        return True

    async def _connect(self, initial: bool) -> None:
        self._sts_state = ConnState.CONNECTING
        if initial:
            try:
                ok = await self._connect_once()
            finally:
                self._first_attempt_done.set()
            if ok:
                return
            self.log.warning("STS disconnected", ctx={"reason": "initial connection failed"})
        self._sts_state = ConnState.RECONNECTING
        result = await self.policy.run(self._connect_once)
        if result.success:
            if not initial:
                self.metrics.reconnection()
            return
        self._sts_state = ConnState.UNAVAILABLE
        self._fail(
            ExitCode.STS_UNAVAILABLE,
            "STS reconnection attempts exhausted",
            attempts=result.attempts,
            waited_s=round(result.waited_s, 1),
        )

    def _on_attempt(self, attempt: int, delay_s: float) -> None:
        self.log.info("STS reconnect attempt", ctx={"attempt": attempt, "delay_s": round(delay_s, 3)})

    async def _on_disconnect(self, reason: str) -> None:
        self._sts_state = ConnState.RECONNECTING
        self._connected.clear()
        self.metrics.set_sts_connected(False)
        self.log.warning("STS disconnected", ctx={"reason": reason, "inflight": self.tracker.inflight})
        for r in self.tracker.fail_all("disconnect"):
            self._fragment_fell_back(r, "disconnect")
        self.breaker.release_probe()
        self.gate.reset()
        self._ensure_connecting(initial=False)

    # -- sending -----------------------------------------------------------------------------
    async def _on_segment(self, segment: Segment) -> None:
        """Pipeline hook: queue the segment for sending (in order); never blocks."""
        if self.settings.passthrough:
            segment.audio.set_fallback("passthrough")
            return
        if self._config_refused is not None:
            segment.audio.set_fallback("config_refused")
            return
        if self._audio_params is None:
            self._audio_params = (segment.sample_rate, segment.channels)
            self._ensure_connecting(initial=True)
        # Decided now, what it waits on if its deadline comes while it is queued: the STS asked
        # us to hold (pause / slow_down), or there is no STS link; else a late answer ("deadline").
        if self.gate.paused or self.gate.delay_ms:
            segment.audio.waiting_for("backpressure")
        elif not self.client.connected:
            segment.audio.waiting_for("disconnect")
        self._queue.put_nowait(segment)

    def _drain_queue(self) -> list[Segment]:
        drained: list[Segment] = []
        while not self._queue.empty():
            drained.append(self._queue.get_nowait())
        return drained

    async def _send_loop(self) -> None:
        while True:
            segment = await self._queue.get()
            try:
                await self._send_segment(segment)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one segment's failure must not stop the sender
                self.log.exception("sending a fragment failed", ctx={"fragment_id": segment.id})
                self._segment_fallback(segment, "send_error")

    def _remaining_s(self, segment: Segment) -> float:
        return segment.audio.deadline_wall - self.clock.wall()

    def _segment_fallback(self, segment: Segment, reason: str) -> None:
        if segment.audio.set_fallback(reason):
            self.log.info("segment fallback", ctx={"fragment_id": segment.id, "batch": segment.batch, "reason": reason})

    async def _send_segment(self, segment: Segment) -> None:
        fid = segment.id
        if segment.audio.taken:
            return  # already output (its deadline passed while queued): reason recorded there
        # Breaker first: while open nothing is sent and nothing waits.
        if self.breaker.state is BreakerState.OPEN:
            self._segment_fallback(segment, "circuit_open")
            return
        if not self.client.connected and self._sts_state is ConnState.CONNECTING:
            # The first connection is being made: wait for that attempt, up to the segment's
            # deadline (unpaced: no deadline, so never longer than the attempt itself).
            segment.audio.waiting_for("disconnect")
            try:
                await asyncio.wait_for(self._first_attempt_done.wait(), timeout=max(0.0, self._remaining_s(segment)))
            except TimeoutError:
                pass
        if not self.client.connected:
            self._segment_fallback(segment, "disconnect")
            return
        # Encode while (possibly) waiting for a slot: it is the same work either way.
        data = await asyncio.to_thread(encode_pcm, segment.pcm, segment.sample_rate, self.settings.transport_format)
        self.log.info("segment ready", ctx={"fragment_id": fid, "batch": segment.batch, "bytes": len(data)})
        ready_s = self.clock.monotonic()
        segment.audio.waiting_for("backpressure")  # a slot or the gate (pause / slow_down)
        try:
            await asyncio.wait_for(self._wait_to_send(), timeout=max(0.0, self._remaining_s(segment)))
        except TimeoutError:
            self._segment_fallback(segment, "backpressure")
            return
        if segment.audio.taken or not self.client.connected:
            self.tracker.release()
            self._segment_fallback(segment, "disconnect" if not self.client.connected else "backpressure")
            return
        probe = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.allow_send():
            self.tracker.release()
            self._segment_fallback(segment, "circuit_open")
            return
        seq = self._seq
        self._seq += 1
        msg = FragmentData(
            fragment_id=fid,
            stream_id=self.settings.stream_id,
            sequence_number=seq,
            timestamp=int(self.clock.wall() * 1000),
            audio=AudioPayload.from_bytes(
                data,
                format=self.settings.transport_format,
                sample_rate_hz=segment.sample_rate,
                channels=segment.channels,
                duration_ms=segment.duration_ms,
            ),
            metadata=FragmentMetadata(pts_ns=segment.t0_ns, source_pts_ns=segment.t0_ns),
        )
        # How long the slot/backpressure gate held this fragment (its `slow_down` delay), measured
        # on the monotonic clock: the "fragment sent" line below also carries the emit's own time.
        sent_s = self.clock.monotonic()
        held_ms = round((sent_s - ready_s) * 1000.0, 1)
        self.tracker.add(fid, Pending(segment, seq, probe, sent_s))
        segment.audio.waiting_for("deadline")  # in flight: only a late answer can miss it now
        try:
            await self.client.emit("fragment:data", msg.to_wire())
        except (ConnectionError, OSError) as exc:
            r = self.tracker.resolve(fid, Outcome.FALLBACK, "disconnect")
            if r is not None:
                self._fragment_fell_back(r, "disconnect")
            if probe:
                self.breaker.release_probe()
            self.log.warning("fragment send failed", ctx={"fragment_id": fid, "error": str(exc)})
            return
        self.metrics.fragment_sent()
        self.log.info(
            "fragment sent",
            ctx={
                "fragment_id": fid,
                "sequence_number": seq,
                "batch": segment.batch,
                "probe": str(probe).lower(),
                "held_ms": held_ms,
            },
        )

    async def _wait_to_send(self) -> None:
        await self.tracker.acquire()
        try:
            await self.gate.wait_ready()
        except BaseException:
            self.tracker.release()
            raise

    # -- results -----------------------------------------------------------------------------
    def _fragment_fell_back(self, r: Resolved[Pending], reason: str) -> None:
        """A sent fragment ended without dubbed audio: count it and resolve its segment."""
        self.metrics.fragment_fallback()
        self.log.info(
            "fragment fallback",
            ctx={"fragment_id": r.fragment_id, "sequence_number": r.info.sequence_number, "reason": reason},
        )
        r.info.segment.audio.set_fallback(reason)
        r.info.release()

    def _on_timeout(self, fragment_id: str, info: Pending) -> None:
        self.breaker.record_failure(True, ErrorCode.TIMEOUT.value)
        self.metrics.fragment_fallback()
        self.log.warning(
            "fragment fallback",
            ctx={"fragment_id": fragment_id, "sequence_number": info.sequence_number, "reason": "timeout"},
        )
        info.segment.audio.set_fallback("timeout")
        info.release()

    async def _on_ack(self, ack: FragmentAck) -> None:
        if not self.tracker.record_ack(ack.fragment_id, ack.status, ack.queue_position):
            self.log.debug("ack for a fragment not in flight", ctx={"fragment_id": ack.fragment_id})

    async def _ack(self, fragment_id: str, status: Literal["received", "applied"]) -> None:
        ack = WorkerFragmentAck(fragment_id=fragment_id, status=status, timestamp=int(self.clock.wall() * 1000))
        try:
            await self.client.emit("fragment:ack", ack.to_wire())
        except (ConnectionError, OSError):
            pass

    async def _on_processed(self, msg: FragmentProcessed) -> None:
        fid = msg.fragment_id
        if msg.stream_id != self.settings.stream_id:
            self.metrics.rejected_result("invalid_message")
            self.log.warning("result for another stream ignored", ctx={"fragment_id": fid, "other_stream": msg.stream_id})
            return
        entry = self.tracker.get(fid)
        if entry is None:
            late = self.tracker.recently_resolved(fid) is not None
            if late:
                self.metrics.late_result()
            else:
                self.metrics.rejected_result("unknown_fragment")
            self.log.warning(
                "late result ignored" if late else "result for an unknown fragment ignored",
                ctx={"fragment_id": fid, "status": msg.status},
            )
            await self._ack(fid, "received")
            return
        pending = entry.info
        segment = pending.segment
        if msg.status == "failed" or msg.dubbed_audio is None:
            err = msg.error
            code = err.code.value if err else "UNKNOWN"
            await self._resolve_failed(fid, code, bool(err and err.retryable), err.message if err else "")
            await self._ack(fid, "received")
            return
        audio = msg.dubbed_audio
        try:
            pcm = await asyncio.to_thread(
                decode_fragment,
                audio.to_bytes(),
                expected_samples=segment.n_samples,
                sample_rate=segment.sample_rate,
                channels=segment.channels,
            )
        except DubbedAudioRejected as exc:
            reason = "duration_mismatch" if exc.reason == "duration_mismatch" else "invalid_audio"
            r = self.tracker.resolve(fid, Outcome.FALLBACK, reason)
            self.metrics.rejected_result(reason)
            self.log.warning("dubbed audio rejected", ctx={"fragment_id": fid, "reason": exc.reason, "detail": exc.detail[:200]})
            if r is not None:
                self.breaker.record_failure(False, reason)
                self._fragment_fell_back(r, reason)
            await self._ack(fid, "received")
            return
        r = self.tracker.resolve(fid, Outcome.PROCESSED)
        if r is None:  # timed out while decoding
            self.metrics.late_result()
            self.log.warning("late result ignored", ctx={"fragment_id": fid})
            await self._ack(fid, "received")
            return
        r.info.release()
        self.breaker.record_success()
        if self.captions is not None:
            self.captions.remember(segment.id, msg.transcript, msg.translated_text, msg.segments)
        if segment.audio.set_dubbed(pcm):
            self.metrics.fragment_processed(r.elapsed_ms)
            self.log.info(
                "fragment applied",
                ctx={"fragment_id": fid, "sequence_number": msg.sequence_number, "rtt_ms": round(r.elapsed_ms or 0.0, 1)},
            )
            await self._ack(fid, "applied")
        else:
            # The output already took the original audio (result after the deadline).
            self.metrics.fragment_fallback()
            self.metrics.late_result()
            self.log.warning("fragment fallback", ctx={"fragment_id": fid, "reason": "deadline"})
            await self._ack(fid, "received")

    async def _resolve_failed(self, fid: str, code: str, retryable: bool, message: str) -> None:
        r = self.tracker.resolve(fid, Outcome.FALLBACK, "sts_error")
        if r is None:
            return
        self.log.warning(
            "STS failed fragment",
            ctx={"fragment_id": fid, "code": code, "retryable": str(retryable).lower(), "message": message[:200]},
        )
        self.breaker.record_failure(retryable, code)
        self._fragment_fell_back(r, "sts_error")

    async def _on_error(self, err: ErrorEvent) -> None:
        if err.fragment_id is not None and self.tracker.get(err.fragment_id) is not None:
            await self._resolve_failed(err.fragment_id, err.code.value, err.retryable, err.message)
            return
        self.log.warning(
            "STS error",
            ctx={"code": err.code.value, "message": err.message[:200], "fragment_id": err.fragment_id},
        )
        if err.code is ErrorCode.AUTH_FAILED:
            self._fail(ExitCode.STS_AUTH_FAILED, "STS refused our token (AUTH_FAILED)")

    async def _on_backpressure(self, bp: Backpressure) -> None:
        self.log.info(
            "backpressure",
            ctx={"action": bp.action, "severity": bp.severity, "recommended_delay_ms": bp.recommended_delay_ms},
        )
        self.gate.apply(bp.action, bp.recommended_delay_ms)

    async def _on_invalid(self, event: str, reason: str, raw: Any) -> None:
        self.metrics.rejected_result("invalid_message")
        fid = raw.get("fragment_id") if isinstance(raw, dict) else None
        self.log.warning("invalid STS message ignored", ctx={"event": event, "reason": reason, "fragment_id": fid})
        if event == "fragment:processed" and isinstance(fid, str) and self.tracker.get(fid) is not None:
            r = self.tracker.resolve(fid, Outcome.FALLBACK, "invalid_message")
            if r is not None:
                self.breaker.record_failure(False, "invalid_message")
                self._fragment_fell_back(r, "invalid_message")

    # -- MediaObserver -----------------------------------------------------------------------
    def on_segment_created(self, segment: Segment) -> None:
        pass

    def on_segment_output(self, segment: Segment, source: str, reason: str | None) -> None:
        self.metrics.segment_output("dubbed" if source == "dubbed" else "original")
        if self.captions is not None:
            self.captions.segment_output(
                segment.id, segment.t0_ns, segment.end_ns, source == "dubbed"
            )
        if source != "dubbed" and reason != "short_tail":  # a sub-second tail is never dubbed
            # the reason as decided (SegmentAudio.waiting_for / set_fallback), never re-read
            # from the breaker or gate now, up to D seconds later
            self.metrics.fallback(reason or "deadline")

    def on_av_sync_delta(self, segment: Segment, delta_ms: float) -> None:
        self.metrics.set_av_sync_delta_ms(delta_ms)

    def on_output_delay(self, delay_s: float) -> None:
        self.metrics.set_output_delay_ms(delay_s * 1000.0)
        self._output_state = OutputState.WRITING

    def on_input_state(self, state: InputState, detail: str | None) -> None:
        self._input_state = state
        self.metrics.set_input_state(_INPUT_STATE_METRIC.get(state, INPUT_NOT_STARTED))

    def on_write_error(self, kind: str, error: str) -> None:
        if kind == WriteErrorKind.ORIGINAL_OUTPUT:  # logged by the output; dubbing goes on
            self._original_failed = True
            self.metrics.original_output_failed()
            return
        self._write_errors += 1
        self.log.warning("write error (dubbing continues)", ctx={"kind": kind, "error": error[:200]})

    def on_drift_correction(self, deviation_ms: float, samples: int) -> None:
        pass  # logged by the media path

    def on_discontinuity(self, kind: str, jump_ms: float) -> None:
        pass  # logged by the media path

    def on_late_segment(self, segment: Segment) -> None:
        pass  # logged by the media path

