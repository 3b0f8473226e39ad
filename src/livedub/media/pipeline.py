"""The media pipeline of one stream: input → timeline → A/V sync → segmenter → output.

`MediaPipeline.run()` connects the input, opens the output on the first connection, cuts exact
segments and hands each one to the output (which takes its audio at the deadline) and to the
async `on_segment` hook (the worker sends it to STS from there and later calls
`segment.audio.set_dubbed(...)` or `set_fallback(...)`). The hook runs as its own task: it can
never block or stall the media. `run_passthrough()` is the same pipeline with no STS: every
segment resolves to its original audio with reason "passthrough".

Threads: the input's reader thread runs the per-packet work (timeline, A/V sync, segmenter,
hand-over to the output thread) as the input's media sink, so the event loop is not woken per
packet; it is woken once per segment (observer, STS hook) and for the connection's events.
Whatever the loop does to that state (input lost, idle release, the end) it does under the
input's lock.

This module decides nothing about STS, circuit breakers or metrics: it reports through the
`MediaObserver` (always on the event-loop thread) and returns an exit code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livedub.clock import Clock, SystemClock
from livedub.exitcodes import ExitCode
from livedub.log import bind, redact_url
from livedub.media.errors import InputUnavailable, NoAudioTrack, OutputFailed
from livedub.media.input import InputInfo, InputLost, MediaInput, MediaItem, RawAudio, RawVideo
from livedub.media.observer import MediaObserver, NullObserver, WriteErrorKind
from livedub.media.output import ENCODER_LOOKAHEAD_SAMPLES, MediaOutput, deadline_wall
from livedub.media.segment import NS_PER_S, Segment, Segmenter, VideoPacket
from livedub.media.segment_files import SegmentFileWriter
from livedub.media.settings import MediaSettings
from livedub.media.srt import libsrt_error, parse_srt_url
from livedub.media.sync import DriftCorrector
from livedub.media.timeline import Timeline, TimestampRepairer
from livedub.media.urls import is_live, missing_protocol, scheme_of

_log = logging.getLogger(__name__)

SegmentHook = Callable[[Segment], Awaitable[None]]

IDLE_RELEASE_S = 0.3  # input quiet this long: stop waiting for video to complete a segment
IDLE_CHECK_S = IDLE_RELEASE_S / 2


_OPTIONAL_EVENTS = frozenset({"on_mirror_state"})  # observers may lack them (added later)


class _SafeObserver:
    """Forwards to an observer; an exception in it is logged, never propagated."""

    def __init__(self, inner: MediaObserver) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Callable[..., None]:
        target = getattr(self._inner, name, None) if name in _OPTIONAL_EVENTS else getattr(self._inner, name)
        if target is None:  # an observer written before this event existed
            return lambda *args: None

        def call(*args: Any) -> None:
            try:
                target(*args)
            except Exception:  # noqa: BLE001
                _log.exception("media observer %s failed", name)

        return call


@dataclass(frozen=True)
class InputLoss:
    """Where each track of the output timeline stood when a connection dropped: the silence of an
    outage starts at `audio_end_ns`, its frozen picture at `video_end_ns`. They differ by the
    input's audio/video interleaving at the cut (what had arrived of each), not by anything the
    worker does."""

    reason: str
    audio_end_ns: int | None
    video_end_ns: int | None


@dataclass
class PipelineStats:
    """What happened, for tests, logs and the worker's final report."""

    segments_created: int = 0
    segments_output: Counter[str] = field(default_factory=Counter)  # by source
    reasons: Counter[str] = field(default_factory=Counter)  # by fallback reason
    late_segments: int = 0
    hook_errors: int = 0
    video_packets: int = 0
    audio_frames: int = 0
    timestamps_repaired: int = 0
    discontinuities: int = 0
    reconnects: int = 0
    drift_corrections: int = 0
    samples_inserted: int = 0
    samples_dropped: int = 0
    gap_samples_filled: int = 0
    max_abs_drift_ms: float = 0.0
    last_output_delay_s: float | None = None
    # The video read, on the output timeline: first packet's pts, end (pts + duration) of the last.
    video_first_ns: int | None = None
    video_end_ns: int | None = None
    input_losses: list[InputLoss] = field(default_factory=list)

    @property
    def video_read_s(self) -> float:
        """Length of the video read (what a drained output holds), in seconds."""
        if self.video_first_ns is None or self.video_end_ns is None:
            return 0.0
        return (self.video_end_ns - self.video_first_ns) / NS_PER_S


class MediaPipeline:
    """One stream's media path. See module docstring.

    Args:
        settings: the media knobs (input/output URLs, segment length, delay, ...).
        observer: receives events (segment created/output, sync delta, input state, ...).
        on_segment: async hook called (as a task) for each new segment that should be dubbed.
        clock: time source (SystemClock by default).
        resolve_as: resolve every segment to its original audio with this reason as soon as it
            is created (e.g. "passthrough"); the hook is then not called.
    """

    def __init__(
        self,
        settings: MediaSettings,
        observer: MediaObserver | None = None,
        *,
        on_segment: SegmentHook | None = None,
        clock: Clock | None = None,
        resolve_as: str | None = None,
    ) -> None:
        self.settings = settings
        self.resolve_as = resolve_as
        self.observer: Any = _SafeObserver(observer or NullObserver())
        self.on_segment = on_segment
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=settings.stream_id)
        self.stats = PipelineStats()
        self.input = MediaInput(settings, clock=self.clock, observer=self.observer, media_sink=self._deliver)
        self.output: MediaOutput | None = None
        self.segmenter: Segmenter | None = None
        self.drift: DriftCorrector | None = None
        self.timeline = Timeline(
            int(settings.discontinuity_threshold_s * NS_PER_S), self._on_discontinuity
        )
        self.writer: SegmentFileWriter | None = None
        if settings.segment_dir is not None:
            self.writer = SegmentFileWriter(
                settings.segment_dir,
                settings.stream_id,
                retention=settings.segment_retention,
                bitrate=settings.transport_bitrate,
                on_error=self.observer.on_write_error,
            )
        self._repairer: TimestampRepairer[RawVideo] | None = None
        self._info: InputInfo | None = None
        self._w0: float | None = None
        self._anchor_until = 0.0  # wall time until which W0 may still move earlier (see _anchor)
        self._w0_first = 0.0
        self._anchor_settled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = False
        self._drain_on_stop = True
        self._output_done = asyncio.Event()
        self._delay_s = settings.effective_output_delay_s
        self._sample_rate = 0
        self._resume_floor_ns: int | None = None
        self._last_item_at = 0.0

    # -- public -----------------------------------------------------------------------------
    @property
    def output_delay_s(self) -> float:
        return self._delay_s

    @property
    def w0(self) -> float | None:
        """Wall time at which input-timeline 0 was read (None before the first packet)."""
        return self._w0

    def request_stop(self, *, drain: bool = True) -> None:
        """Stop reading; with `drain`, the output still writes what it has (up to D seconds)."""
        self.log.info("stop requested", ctx={"drain": drain, "video_read_s": round(self.stats.video_read_s, 3)})
        self._stop = True
        self._drain_on_stop = drain
        self.input.close()
        if not drain and self.output is not None:
            self.output.abort()

    async def run(self) -> int:
        """Run until the input ends (0), is unavailable (10), has no audio (11), or the output
        fails (12). The output is always drained and closed before returning."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._output_done = asyncio.Event()
        code: ExitCode | int = ExitCode.OK
        try:
            self._check_protocols()
            code = await self._read_loop()
        except NoAudioTrack as exc:
            self.log.error(str(exc), ctx={"url": redact_url(self.settings.input_url)})
            code = exc.exit_code
        except InputUnavailable as exc:
            self.log.error("input unavailable", ctx={"error": redact_url(exc)})
            code = exc.exit_code
        except OutputFailed as exc:
            self.log.error("output failed", ctx={"error": str(exc)})
            code = exc.exit_code
        finally:
            self.input.close()
        code = await self._finish(code)
        self.log.info(
            "media pipeline finished",
            ctx={
                "exit_code": int(code),
                "segments": self.stats.segments_created,
                "output": dict(self.stats.segments_output),
                "reasons": dict(self.stats.reasons),
                "video_read_s": round(self.stats.video_read_s, 3),
            },
        )
        return int(code)

    def _check_protocols(self) -> None:
        """A URL whose protocol is not available (`srt://` without libsrt, or a libav protocol
        PyAV lacks) or a bad `srt://` URL fails at once with its exit code: retrying the input,
        or buffering D seconds before the output connects, cannot help."""
        s = self.settings
        for url, error in ((s.input_url, InputUnavailable), (s.output_url, OutputFailed)):
            proto = missing_protocol(url)
            if proto == "srt":
                raise error(f"{url}: SRT is not available: {libsrt_error()}")
            if proto is not None:
                raise error(f"{url}: the libav of this PyAV build has no '{proto}' protocol")
            if scheme_of(url) == "srt":
                try:
                    parse_srt_url(url)
                except ValueError as exc:
                    raise error(str(exc)) from exc

    # -- reading ----------------------------------------------------------------------------
    async def _read_loop(self) -> ExitCode:
        idle = asyncio.get_running_loop().create_task(self._release_when_idle())
        try:
            return await self._consume()
        finally:
            idle.cancel()

    async def _release_when_idle(self) -> None:
        """A segment whose audio is complete waits for a video packet past its end; when the
        input goes quiet (e.g. the publisher stopped) that packet never comes: release it. The
        reader's last audio batch, which no packet will complete then, is flushed first."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            # the reader's audio batch that no packet will complete (a batch takes batch_s to fill)
            self.input.flush_audio(2 * self.settings.input_audio_batch_s)
            seg = self.segmenter
            if seg is None or not seg.waiting or self.output is None:
                continue
            if self.clock.monotonic() - self._last_item_at >= IDLE_RELEASE_S:
                with self.input.lock:
                    seg.release_waiting()
                    self._drain_segments()

    async def _consume(self) -> ExitCode:
        async for ev in self.input.events():  # media go to `_deliver` (the input's sink)
            self._last_item_at = self.clock.monotonic()
            if isinstance(ev, InputInfo):
                await self._on_info(ev)
            elif isinstance(ev, InputLost):
                with self.input.lock:
                    self._on_lost(ev)
            if self._stop:
                break
        # A failed output closes the input (`_deliver`, `_done_from_thread`): the loop ends here.
        if self.output is not None and self.output.error is not None:
            raise self.output.error
        return ExitCode.OK

    def _deliver(self, ev: MediaItem) -> None:
        """The input's media sink: one packet's work, in the reader thread (under its lock)."""
        self._last_item_at = self.clock.monotonic()
        if isinstance(ev, RawAudio):
            self._on_audio(ev)
        else:
            self._on_video(ev)
        if self.output is not None and self.output.error is not None:
            self.input.close()  # the loop raises it (`_consume`)

    async def _on_info(self, info: InputInfo) -> None:
        with self.input.lock:
            self._new_connection(info)
        if self._info is None:
            self._info = info
            await self._open(info)

    def _new_connection(self, info: InputInfo) -> None:
        if self._repairer is not None:
            for st in self._repairer.flush():
                self._emit_video(st.item, st.pts_ns, st.dts_ns, st.duration_ns)
        self._repairer = TimestampRepairer(max(1, info.video_frame_ns))
        if self.segmenter is not None:  # a new decoder: its packets cannot follow the old ones
            self.segmenter.break_coded()
            self.segmenter.coded_template = info.audio_template
        if self._info is None:
            return  # the first connection: `_on_info` opens the output
        self.stats.reconnects += 1
        resume_at = self._resume_floor_ns
        if self._w0 is not None and (is_live(self.settings.input_url) or self.settings.paced):
            wall_pos = int((info.read_wall - self._w0) * NS_PER_S)
            resume_at = wall_pos if resume_at is None else max(resume_at, wall_pos)
        self.timeline.new_connection(resume_at)
        if self.drift is not None:
            self.drift.resync()
        first = self._info
        if (info.video_codec, info.has_video) != (first.video_codec, first.has_video):
            self.log.warning(
                "input streams changed after reconnect; output keeps the first layout",
                ctx={"video": info.video_codec, "was": first.video_codec},
            )

    def _on_lost(self, ev: InputLost) -> None:
        """The connection dropped: complete the open segment with silence so its real audio
        goes out (and gets dubbed) on time; the next connection continues after it."""
        if self._repairer is not None:
            for st in self._repairer.flush():
                self._emit_video(st.item, st.pts_ns, st.dts_ns, st.duration_ns)
        if self.segmenter is None or self.drift is None:
            return
        loss = InputLoss(ev.reason, self.segmenter.audio_end_ns, self.stats.video_end_ns)
        self.stats.input_losses.append(loss)
        padded = self.segmenter.pad_open_segment()
        if padded:
            self.drift.advance(padded)
            self.log.info(
                "input lost: open segment completed with silence",
                ctx={"reason": ev.reason, "samples": padded, "audio_end_ns": loss.audio_end_ns,
                     "video_end_ns": loss.video_end_ns},
            )
        self._resume_floor_ns = self.segmenter.audio_end_ns
        self._drain_segments()

    async def _open(self, info: InputInfo) -> None:
        s = self.settings
        self._sample_rate = info.sample_rate
        n = s.segment_samples(info.sample_rate)
        lookahead_s = ENCODER_LOOKAHEAD_SAMPLES / info.sample_rate
        paced = s.paced

        def deadline_for(t0_ns: int) -> float:
            if not paced or self._w0 is None:
                return float("inf")
            return deadline_wall(self._w0, t0_ns, self._delay_s, lookahead_s, s.deadline_margin_s)

        self.segmenter = Segmenter(
            stream_id=s.stream_id,
            sample_rate=info.sample_rate,
            channels=info.channels,
            segment_samples=n,
            min_tail_samples=round(s.min_tail_s * info.sample_rate),
            has_video=info.has_video,
            deadline_for=deadline_for,
            original_needed=lambda: self.output is None or self.output.original_needed,
        )
        self.segmenter.coded_template = info.audio_template
        self.drift = DriftCorrector(
            info.sample_rate,
            bound_ms=s.drift_bound_ms,
            target_ms=s.drift_target_ms,
            max_slew=s.drift_max_slew,
            window_frames=s.drift_window_frames,
            gap_fill_ms=s.gap_fill_threshold_ms,
            on_correction=self._on_correction,
            log=self.log,
        )
        if self.writer is not None:
            self.writer.video_template = info.video_template
        output = MediaOutput(
            s,
            video_template=info.video_template,
            sample_rate=info.sample_rate,
            channels=info.channels,
            on_taken=self._taken_from_thread,
            on_delay=self._delay_from_thread,
            on_done=self._done_from_thread,
            on_mirror=self._mirror_from_thread,
            on_write_error=self._write_error_from_thread,
            clock=self.clock,
        )
        await asyncio.to_thread(output.open)
        output.start()
        self.output = output
        self.observer.on_output_delay(self._delay_s)

    def _anchor(self, key_ns: int, read_wall: float) -> None:
        """W0 = the wall time at which input-timeline 0 was (or would have been) read live.

        The first packets of a connection are often old: a media server sends its cached GOP
        in one burst, so `read_wall - pts` of the first packet overstates W0 by the cache depth
        (up to a GOP), which would add to the latency. For `anchor_settle_s` after the first
        packet (at most half of D, so nothing is due yet) W0 follows the smallest
        `read_wall - pts` seen, i.e. the live edge; then it is fixed.
        """
        w = read_wall - key_ns / NS_PER_S
        if self._w0 is None:
            self._w0 = self._w0_first = w
            self._anchor_until = read_wall + min(self.settings.anchor_settle_s, self._delay_s / 2)
        elif read_wall > self._anchor_until:
            if not self._anchor_settled:
                self._anchor_settled = True
                self.log.info(
                    "output anchor settled",
                    ctx={"moved_earlier_ms": round((self._w0_first - self._w0) * 1000, 1)},
                )
            return
        elif w < self._w0 and self.settings.paced:
            self._w0 = w
        else:
            return
        assert self.output is not None
        self.output.set_anchor(self._w0)

    def _on_video(self, ev: RawVideo) -> None:
        assert self._repairer is not None
        self.stats.video_packets += 1
        for st in self._repairer.push(ev, ev.pts_ns, ev.dts_ns, ev.duration_ns):
            self._emit_video(st.item, st.pts_ns, st.dts_ns, st.duration_ns)
        self.stats.timestamps_repaired = self._repairer.repaired_count
        self._drain_segments()

    def _emit_video(self, ev: RawVideo, pts_ns: int, dts_ns: int, duration_ns: int) -> None:
        assert self.segmenter is not None and self.output is not None
        shift = self.timeline.shift("video", dts_ns, duration_ns)
        pkt = VideoPacket(ev.data, pts_ns + shift, dts_ns + shift, duration_ns, ev.keyframe)
        self._anchor(pkt.dts_ns, ev.read_wall)
        self.segmenter.push_video(pkt)
        self.output.push_video(pkt)
        st = self.stats
        if st.video_first_ns is None:
            st.video_first_ns = pkt.pts_ns
        st.video_end_ns = max(st.video_end_ns or 0, pkt.pts_ns + duration_ns)

    def _on_audio(self, ev: RawAudio) -> None:
        assert self.segmenter is not None and self.drift is not None and self.output is not None
        self.stats.audio_frames += 1
        rate = self._sample_rate
        pts: int | None = None
        if ev.pts_ns is not None:
            duration_ns = ev.pcm.shape[0] * NS_PER_S // rate
            pts = ev.pts_ns + self.timeline.shift("audio", ev.pts_ns, duration_ns)
            self._anchor(pts, ev.read_wall)
        d = self.drift
        changes = (d.samples_inserted, d.samples_dropped, d.gap_samples_filled)
        pcm = d.process_batch(ev.pcm, pts, ev.frame_samples)
        if self.segmenter.audio_t0_ns is None:
            t0 = self.drift.t0_ns if self.drift.t0_ns is not None else 0
            self.output.set_audio_start(t0)
            self._anchor(t0, ev.read_wall)
        # The input packet stands for this PCM only if A/V sync left it untouched.
        unchanged = pcm.shape[0] == ev.pcm.shape[0] and changes == (d.samples_inserted, d.samples_dropped, d.gap_samples_filled)
        self.segmenter.push_audio(pcm, self.drift.t0_ns, ev.coded if unchanged else None)
        self.stats.drift_corrections = d.corrections
        self.stats.samples_inserted = d.samples_inserted
        self.stats.samples_dropped = d.samples_dropped
        self.stats.gap_samples_filled = d.gap_samples_filled
        self.stats.max_abs_drift_ms = d.max_abs_deviation_ms
        self._drain_segments()

    def _drain_segments(self, segments: list[Segment] | None = None) -> None:
        assert self.segmenter is not None and self.output is not None
        ready = self.segmenter.pop_ready() if segments is None else segments
        for seg in ready:
            seg.av_sync_delta_ms = round(self.drift.deviation_ms, 3) if self.drift else 0.0
            self.stats.segments_created += 1
            self.log.info(
                "segment created",
                ctx={
                    "fragment_id": seg.id,
                    "batch": seg.batch,
                    "t0_ms": seg.t0_ns // 1_000_000,
                    "samples": seg.n_samples,
                    "video_packets": len(seg.video_packets),
                    "tail": seg.is_tail,
                },
            )
            late = self.settings.paced and self.clock.wall() > seg.audio.deadline_wall
            if late:
                self.stats.late_segments += 1
                self.log.warning(
                    "segment reached the output after its deadline (delay too small?)",
                    ctx={"fragment_id": seg.id, "batch": seg.batch},
                )
            if self.writer is not None:
                self.writer.write_segment(seg)
            if self.resolve_as is not None:
                seg.audio.set_fallback(self.resolve_as)
            # Queued on the loop before the output can report it taken (same FIFO).
            self._in_loop(self._segment_created, seg, late)
            self.output.push_segment(seg)

    def _segment_created(self, seg: Segment, late: bool) -> None:
        """On the loop: the observer learns of the segment; its STS hook starts as a task."""
        self.observer.on_segment_created(seg)
        if late:
            self.observer.on_late_segment(seg)
        if seg.dub and self.on_segment is not None and self.resolve_as is None:
            task = asyncio.get_running_loop().create_task(self._run_hook(seg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_hook(self, seg: Segment) -> None:
        assert self.on_segment is not None
        try:
            await self.on_segment(seg)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the worker's bug must not stop the media
            self.stats.hook_errors += 1
            self.log.exception("on_segment hook failed", ctx={"fragment_id": seg.id})
            seg.audio.set_fallback("hook_error")

    # -- callbacks from other threads -------------------------------------------------------
    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn` on the event loop: now when called there, else as soon as the loop can."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._call_in_loop(fn, *args)

    def _call_in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    def _taken_from_thread(self, seg: Segment | None, batch: int, source: str, reason: str | None) -> None:
        self._call_in_loop(self._on_taken, seg, batch, source, reason)

    def _delay_from_thread(self, delay_s: float) -> None:
        self._call_in_loop(self._on_delay, delay_s)

    def _write_error_from_thread(self, kind: WriteErrorKind, error: str) -> None:
        self._call_in_loop(self.observer.on_write_error, kind, error)

    def _done_from_thread(self) -> None:
        if self.output is not None and self.output.error is not None:
            self.input.close()  # a quiet input must not keep the loop from seeing the failure
        self._call_in_loop(self._output_done.set)

    def _mirror_from_thread(self, state: str, detail: str | None) -> None:
        self._call_in_loop(self.observer.on_mirror_state, str(state), detail)

    def _on_taken(self, seg: Segment | None, batch: int, source: str, reason: str | None) -> None:
        if seg is None:
            self.log.warning("segment missing at its deadline: silence", ctx={"batch": batch})
            return
        self.stats.segments_output[source] += 1
        if reason:
            self.stats.reasons[reason] += 1
        self.log.info(
            "segment output",
            ctx={"fragment_id": seg.id, "batch": batch, "source": source, "reason": reason},
        )
        self.observer.on_segment_output(seg, source, reason)
        self.observer.on_av_sync_delta(seg, seg.av_sync_delta_ms)
        if source == "dubbed" and self.writer is not None:
            pcm, _, _ = seg.audio.take("deadline")
            self.writer.write_dubbed(seg, pcm)

    def _on_delay(self, delay_s: float) -> None:
        self.stats.last_output_delay_s = delay_s
        self.observer.on_output_delay(delay_s)

    def _on_discontinuity(self, kind: str, jump_ns: int) -> None:
        self.stats.discontinuities += 1
        self.log.warning(
            "input timestamp discontinuity rebased", ctx={"stream": kind, "jump_ms": round(jump_ns / 1e6, 1)}
        )
        self._in_loop(self.observer.on_discontinuity, kind, jump_ns / 1e6)

    def _on_correction(self, deviation_ms: float, samples: int) -> None:
        self._in_loop(self.observer.on_drift_correction, deviation_ms, samples)

    # -- shutdown ---------------------------------------------------------------------------
    def _flush_media(self) -> None:
        """The end: what the repairer and the segmenter still hold goes out."""
        if self.segmenter is None:
            return
        if self._repairer is not None:
            for st in self._repairer.flush():
                self._emit_video(st.item, st.pts_ns, st.dts_ns, st.duration_ns)
        self._drain_segments(self.segmenter.finish())

    async def _finish(self, code: ExitCode | int) -> ExitCode | int:
        output = self.output
        if output is None:
            return code
        try:
            with self.input.lock:
                self._flush_media()
            output.end()
            if not self._drain_on_stop:
                output.abort()
            while not output.finished:
                try:
                    await asyncio.wait_for(self._output_done.wait(), 1.0)
                except TimeoutError:
                    continue
        finally:
            if self._tasks:
                _, pending = await asyncio.wait(self._tasks, timeout=1.0)
                for task in pending:
                    task.cancel()
            if self.writer is not None:
                await asyncio.to_thread(self.writer.close)
        if output.error is not None:
            self.log.error("output failed", ctx={"error": str(output.error)})
            return ExitCode.OUTPUT_FAILED
        return code


async def run_passthrough(
    settings: MediaSettings,
    observer: MediaObserver | None = None,
    *,
    clock: Clock | None = None,
    pipeline_ready: Callable[[MediaPipeline], None] | None = None,
) -> int:
    """Run the media path with no STS: every segment goes out with its original audio
    (reason "passthrough"). Returns the exit code. `pipeline_ready` receives the pipeline
    before it runs (e.g. to wire a signal handler to `request_stop`)."""

    pipeline = MediaPipeline(settings, observer, clock=clock, resolve_as="passthrough")
    if pipeline_ready is not None:
        pipeline_ready(pipeline)
    return await pipeline.run()
