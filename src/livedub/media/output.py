"""Live output: codec-copied video + ONE continuous AAC encoder, paced to `W0 + pts + D`.

`OutputCore` is the scheduling logic, free of threads and I/O so that it is unit-tested with
fake times, a fake encoder and a fake sink:
- it takes each segment's audio (`SegmentAudio.take`) at the segment's deadline — the wall time
  its first sample is due minus the encoder look-ahead and a margin — or earlier once resolved;
- it feeds the encoder exactly the segment's samples, so audio PTS follow the sample clock;
- it writes video and audio packets interleaved by timestamp at `W0 + ts + D` (paced), or as
  fast as both streams allow (unpaced, for file → file);
- it starts the output at the first video keyframe, and in paced mode fills a segment that has
  not arrived by its deadline with silence, so the output never stalls and never has a gap;
- with an `original_encoder` (`keep_original`) it feeds a second encoder each segment's original
  PCM at the same sample positions, so the original track lines up with the dubbed one exactly.

`MediaOutput` runs an `OutputCore` in its own thread against a real libav muxer. A failure to
open or write raises/records `OutputFailed`. Nothing here ever waits for the worker or STS.

`MirrorOutput` (`MediaSettings.mirror_output_url`) publishes the very same packets (codec-copied
video, the one encoder's AAC) to a second URL from its own thread and bounded queue: it never
blocks, slows or fails the main output. A mirror that cannot connect, fails or stalls is closed
and opened again at a later video keyframe (retries 2, 4 … 30 s apart). Issue 18: a stream's
first language publishes `live/<id>/out` and mirrors it to `live/<id>/<lang>`.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

import av

from livedub.clock import Clock, SystemClock
from livedub.log import bind, redact_url
from livedub.media.audio import AudioConverter, layout_for, pcm_frame
from livedub.media.errors import OutputFailed
from livedub.media.input import VideoTemplate
from livedub.media.languages import iso639_2
from livedub.media.observer import WriteErrorKind
from livedub.media.pcm import Pcm
from livedub.media.segment import NS_PER_S, Segment, VideoPacket
from livedub.media.settings import MediaSettings
from livedub.media.srt import SRT_PAYLOAD, SrtWriter
from livedub.media.urls import (
    carries_several_audio_tracks,
    is_live,
    original_output_url,
    output_format_for,
    scheme_of,
    strip_file_scheme,
    tcp_endpoint,
)

_log = logging.getLogger(__name__)

AAC_FRAME = 1024
# The encoder emits a packet for samples [p, p+1024) only after about two more frames went in.
ENCODER_LOOKAHEAD_SAMPLES = 3 * AAC_FRAME
# A mirror's queue: ≈ 25 s of 30 fps video + 48 kHz AAC. A mirror this far behind is stalled: it
# is dropped and reopened at a later keyframe, never waited for.
MIRROR_QUEUE_ITEMS = 2048
MIRROR_RETRY_FIRST_S = 2.0
MIRROR_RETRY_MAX_S = 30.0


def deadline_wall(
    w0: float, t0_ns: int, delay_s: float, lookahead_s: float, margin_s: float
) -> float:
    """Wall time at which a segment starting at `t0_ns` must be taken (paced mode)."""
    return w0 + t0_ns / NS_PER_S + delay_s - lookahead_s - margin_s


class AudioTrack(enum.StrEnum):
    """Which audio track an encoded packet belongs to."""

    DUBBED = "dubbed"  # the output's audio: dubbed, or original per segment when it falls back
    ORIGINAL = "original"  # keep_original: always the input's audio


class OriginalSound(enum.StrEnum):
    """Where an output's original sound goes (`MediaSettings.keep_original`)."""

    OFF = "off"
    TRACK = "track"  # the second audio track of the output
    OWN_OUTPUT = "own_output"  # its own output (FLV/RTMP: live/<id>/orig)
    FAILED = "failed"  # its own output could not be prepared (logged, counted)


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    pts_ns: int
    packet: Any  # av.Packet in production; anything in tests
    track: AudioTrack = AudioTrack.DUBBED


class AudioEncoder(Protocol):
    lookahead_samples: int

    def encode(self, pcm: Pcm, abs_sample: int) -> list[EncodedAudio]:
        """Encode contiguous PCM whose first sample sits at `abs_sample` (1/rate units)."""
        ...

    def flush(self) -> list[EncodedAudio]: ...


class PacketSink(Protocol):
    def write_video(self, pkt: VideoPacket) -> None: ...

    def write_audio(self, pkt: EncodedAudio) -> None: ...


TakenFn = Callable[[Segment | None, int, str, str | None], None]
DelayFn = Callable[[float], None]
WriteErrorFn = Callable[[WriteErrorKind, str], None]


class OutputCore:
    """Decide when to take segment audio, encode it, and write packets. See module docstring.

    Call the `push_*`/`set_*`/`end` methods as things happen and `poll(now)` whenever woken;
    `poll` does everything due at `now` and returns the wall time it next needs to run
    (`math.inf` = only when new input arrives).
    """

    def __init__(
        self,
        *,
        paced: bool,
        delay_s: float,
        sample_rate: int,
        channels: int,
        segment_samples: int,
        has_video: bool,
        encoder: AudioEncoder,
        sink: PacketSink,
        margin_s: float = 0.25,
        unpaced_wait_s: float = 0.0,
        fill_missing: bool = True,
        on_taken: TakenFn | None = None,
        on_delay: DelayFn | None = None,
        original_encoder: AudioEncoder | None = None,
        write_ahead_s: float = 0.0,
    ) -> None:
        self.paced = paced
        # Paced: a packet may be written this long before it is due (the output thread wakes in
        # ticks; writing up to a tick early instead of up to a tick late adds no latency). At most
        # the deadline margin: a segment's audio is encoded that long before it is due.
        self.write_ahead_s = min(write_ahead_s, margin_s)
        self.delay_s = delay_s
        self.rate = sample_rate
        self.channels = channels
        self.n = segment_samples
        self.has_video = has_video
        self.encoder = encoder
        self.original_encoder = original_encoder
        self.sink = sink
        self.lookahead_s = encoder.lookahead_samples / sample_rate
        self.margin_s = margin_s
        self.unpaced_wait_s = unpaced_wait_s
        self.fill_missing = fill_missing
        self.on_taken = on_taken
        self.on_delay = on_delay
        self.w0: float | None = None
        self.t0_ns: int | None = None
        self.kf_ns: int | None = None
        self._skip_until: int | None = None  # global sample index where output audio starts
        self._segments: dict[int, tuple[Segment, float]] = {}
        self._next_k = 0
        self._video: deque[VideoPacket] = deque()
        self._audio: deque[EncodedAudio] = deque()
        self._original: deque[EncodedAudio] = deque()  # the original track's packets
        self._video_horizon_ns = -math.inf
        self._audio_horizon_ns = -math.inf
        self._original_horizon_ns = -math.inf if original_encoder is not None else math.inf
        self._ended = False
        self._audio_done = False
        self._feeding_started = False
        self._next_delay_report_ns: int | None = None
        self.done = False
        # Counters (read by tests and the pipeline).
        self.video_written = 0
        self.audio_written = 0
        self.original_written = 0
        self.video_dropped_before_keyframe = 0
        self.filled_segments: list[int] = []
        self.late_segments: list[int] = []
        self.samples_fed = 0

    # -- inputs -----------------------------------------------------------------------------
    def set_anchor(self, w0: float) -> None:
        """Set W0, or move it earlier (the pipeline refines it to the input's live edge during
        its first moments; a later W0 is never accepted, so nothing already due is delayed)."""
        if self.w0 is None or w0 < self.w0:
            self.w0 = w0

    def set_audio_start(self, t0_ns: int) -> None:
        if self.t0_ns is None:
            self.t0_ns = t0_ns
            self._update_skip()

    def push_video(self, pkt: VideoPacket) -> None:
        if self.kf_ns is None:
            if not pkt.keyframe:
                self.video_dropped_before_keyframe += 1
                return
            self.kf_ns = pkt.pts_ns
            self._update_skip()
        self._video.append(pkt)
        self._video_horizon_ns = max(self._video_horizon_ns, pkt.dts_ns)

    def push_segment(self, seg: Segment, arrived_wall: float) -> None:
        if self.t0_ns is None:
            self.set_audio_start(seg.t0_ns - seg.batch * self.n * NS_PER_S // self.rate)
        if seg.batch < self._next_k:
            # Its time has passed (it was filled with silence): too late to be heard.
            seg.audio.take("input_late")
            self.late_segments.append(seg.batch)
            if self.on_taken is not None:
                self.on_taken(seg, seg.batch, "silence", "input_late")
            return
        self._segments[seg.batch] = (seg, arrived_wall)

    def end(self) -> None:
        """No more input will come; drain everything, then `done`."""
        self._ended = True

    # -- scheduling -------------------------------------------------------------------------
    def deadline(self, batch: int) -> float:
        assert self.w0 is not None and self.t0_ns is not None
        t0 = self.t0_ns + batch * self.n * NS_PER_S // self.rate
        return deadline_wall(self.w0, t0, self.delay_s, self.lookahead_s, self.margin_s)

    def _update_skip(self) -> None:
        if self._skip_until is not None or self.t0_ns is None:
            return
        if not self.has_video:
            self._skip_until = 0
        elif self.kf_ns is not None:
            lead_ns = self.kf_ns - self.t0_ns
            self._skip_until = max(0, math.ceil(lead_ns * self.rate / NS_PER_S))

    def poll(self, now: float) -> float:
        wake = math.inf
        wake = min(wake, self._feed_due(now))
        wake = min(wake, self._write_due(now))
        if (
            self._ended
            and self._audio_done
            and not self._video
            and not self._audio
            and not self._original
            and not self.done
        ):
            self.done = True
        return wake

    def _feed_due(self, now: float) -> float:
        wake = math.inf
        while not self._audio_done:
            if self.t0_ns is None:
                if self._ended:
                    self._finish_audio()
                break
            k = self._next_k
            entry = self._segments.get(k)
            paced_ready = self.paced and self.w0 is not None
            if self._skip_until is None:
                # Output starts at a video keyframe: wait for it (bounded by the deadline).
                if self._ended:
                    self._skip_until = 0
                elif paced_ready and now >= self.deadline(k):
                    _log.warning("no video keyframe by the first audio deadline; audio starts alone")
                    self._skip_until = 0
                else:
                    if paced_ready:
                        wake = min(wake, self.deadline(k))
                    break
            if entry is None:
                if self._ended:
                    if self._segments:
                        self._next_k = min(self._segments)
                        continue
                    self._finish_audio()
                    break
                if paced_ready and self.fill_missing:
                    dl = self.deadline(k)
                    if now >= dl:
                        self._feed(None, k, Pcm.zeros(self.n, self.channels), "silence", "input_late")
                        continue
                    wake = min(wake, dl)
                break
            seg, arrived = entry
            if self.paced:
                if self.w0 is None:
                    break
                dl = self.deadline(k)
                if not seg.audio.resolved and now < dl:
                    wake = min(wake, dl)
                    break
            elif not seg.audio.resolved and now < arrived + self.unpaced_wait_s:
                wake = min(wake, arrived + self.unpaced_wait_s)
                break
            del self._segments[k]
            pcm, source, reason = seg.audio.take("deadline")
            self._feed(seg, k, pcm, source, reason)
        return wake

    def _feed(self, seg: Segment | None, k: int, pcm: Pcm, source: str, reason: str | None) -> None:
        start = k * self.n  # segments are contiguous on the sample clock
        if seg is None:
            self.filled_segments.append(k)
            _log.warning("segment missing at its deadline: output silence", extra={"ctx": {"batch": k}})
        n = pcm.shape[0]
        skip = 0
        assert self._skip_until is not None
        if start < self._skip_until:
            skip = min(n, self._skip_until - start)
        if skip < n:
            assert self.t0_ns is not None
            origin = round(self.t0_ns * self.rate / NS_PER_S)
            packets = self.encoder.encode(pcm[skip:], origin + start + skip)
            self._feeding_started = True
            self.samples_fed += n - skip
            self._queue_audio(packets)
            if self.original_encoder is not None:
                # The input's own audio at the same sample positions (what a fallback outputs);
                # a segment missing at its deadline is silence on both tracks.
                original = seg.audio.original if seg is not None else pcm
                self._queue_original(self.original_encoder.encode(original[skip:], origin + start + skip))
        self._next_k = k + 1
        if self.on_taken is not None:
            self.on_taken(seg, k, source, reason)

    def _queue_audio(self, packets: list[EncodedAudio]) -> None:
        for p in packets:
            self._audio.append(p)
            self._audio_horizon_ns = max(self._audio_horizon_ns, p.pts_ns)

    def _queue_original(self, packets: list[EncodedAudio]) -> None:
        for p in packets:
            self._original.append(p)
            self._original_horizon_ns = max(self._original_horizon_ns, p.pts_ns)

    def _finish_audio(self) -> None:
        if self._feeding_started:
            self._queue_audio(self.encoder.flush())
            if self.original_encoder is not None:
                self._queue_original(self.original_encoder.flush())
        self._audio_done = True
        self._audio_horizon_ns = math.inf
        self._original_horizon_ns = math.inf

    def _write_due(self, now: float) -> float:
        if self.paced and self.w0 is None:
            return math.inf
        if not self.paced:
            horizon = min(
                math.inf if (not self.has_video or self._ended) else self._video_horizon_ns,
                self._audio_horizon_ns,
                self._original_horizon_ns,
            )
        while self._video or self._audio or self._original:
            # The earliest head of the three queues; on a tie video first, then dubbed, original.
            heads = (
                (self._video[0].dts_ns, 0) if self._video else None,
                (self._audio[0].pts_ns, 1) if self._audio else None,
                (self._original[0].pts_ns, 2) if self._original else None,
            )
            key, which = min(h for h in heads if h is not None)
            if self.paced:
                assert self.w0 is not None
                due = self.w0 + key / NS_PER_S + self.delay_s - self.write_ahead_s
                if now < due:
                    return due
            elif key > horizon:
                return math.inf
            if which == 0:
                self.sink.write_video(self._video.popleft())
                self.video_written += 1
            elif which == 1:
                self.sink.write_audio(self._audio.popleft())
                self.audio_written += 1
                self._report_delay(key, now)
            else:
                self.sink.write_audio(self._original.popleft())
                self.original_written += 1
        return math.inf

    def _report_delay(self, key_ns: int, now: float) -> None:
        if not self.paced or self.on_delay is None or self.w0 is None or self.t0_ns is None:
            return
        if self._next_delay_report_ns is None:
            self._next_delay_report_ns = key_ns
        if key_ns >= self._next_delay_report_ns:
            self._next_delay_report_ns = key_ns + self.n * NS_PER_S // self.rate
            self.on_delay(now - (self.w0 + key_ns / NS_PER_S))


class StreamAudioEncoder:
    """The one continuous AAC encoder of an output, fed int16 PCM in exact 1024-sample frames."""

    lookahead_samples = ENCODER_LOOKAHEAD_SAMPLES

    def __init__(
        self,
        stream: Any,
        sample_rate: int,
        channels: int,
        *,
        end_pad_samples: int = 0,
        track: AudioTrack = AudioTrack.DUBBED,
    ) -> None:
        self.stream = stream
        self.track = track
        self.rate = sample_rate
        self.channels = channels
        self.end_pad_samples = end_pad_samples  # silence after the end (MediaOutput._prepare)
        self.layout = layout_for(channels)
        self._format = av.AudioFormat("fltp")
        self._layout = av.AudioLayout(self.layout)
        self.time_base = Fraction(1, sample_rate)
        self._carry = Pcm.zeros(0, channels)
        self._to_fltp = AudioConverter(format="fltp", layout=self.layout, rate=sample_rate)
        self._next: int | None = None
        # the codec's own send/receive (PyAV's, without its resampling graph), or False: `encode`
        self._direct: Callable[[av.AudioFrame | None], Iterable[Any]] | Literal[False] | None = None
        self.on_first_sample: Callable[[int], None] | None = None

    def _planes(self, pcm: Pcm) -> list[memoryview]:
        """`pcm` as float planar samples, one buffer per channel, in one libswresample call
        (s16 / 32768; the same rate: as many samples out as in, normally in one frame)."""
        frames = self._to_fltp.resample(pcm_frame(pcm, self.rate))
        if sum(f.samples for f in frames) != pcm.n:
            raise RuntimeError(f"s16 → fltp gave {[f.samples for f in frames]} samples for {pcm.n}")
        if len(frames) == 1:
            return [memoryview(p) for p in frames[0].planes]
        return [
            memoryview(b"".join(memoryview(f.planes[c])[: f.samples * 4] for f in frames))
            for c in range(self.channels)
        ]

    def _frames(self, pcm: Pcm, pts: int) -> Iterator[av.AudioFrame]:
        """`pcm` as float planar frames of `AAC_FRAME` samples (the last may be shorter): one
        conversion for all, then each frame's planes copied out of it."""
        planes = self._planes(pcm)
        for pos in range(0, pcm.n, AAC_FRAME):
            size = min(AAC_FRAME, pcm.n - pos)
            frame = av.AudioFrame(format=self._format, layout=self._layout, samples=size)
            for dst, src in zip(frame.planes, planes, strict=True):
                dst.update(src[pos * 4 : (pos + size) * 4])  # type: ignore[arg-type]  # float32; any buffer
            frame.sample_rate = self.rate
            frame.pts = pts + pos
            frame.time_base = self.time_base
            yield frame

    def _encode(self, frame: av.AudioFrame | None) -> list[Any]:
        """Encode one exact frame (None: drain). Our frames already are what the encoder takes
        (float planar, its rate and layout, 1024 samples, pts in its time base), so they go to
        the codec directly where PyAV lets us: its public `encode` first passes every frame
        through a filter graph that cuts frames to the codec's size (≈ 0.6 ms per stream-second
        here, docs/performance.md; the packets are the same, tests/unit/test_media_output.py)."""
        if self._direct is None:
            ctx = self.stream.codec_context
            ctx.open(strict=False)
            send = getattr(ctx, "_send_frame_and_recv", None)
            self._direct = send if send is not None and ctx.time_base == self.time_base else False
        if self._direct is False:
            return list(self.stream.encode(frame))
        packets = list(self._direct(frame))
        for p in packets:
            p.time_base = self.time_base  # what PyAV's encode sets on each packet
        return packets

    def _wrap(self, packets: list[Any]) -> list[EncodedAudio]:
        out = []
        for p in packets:
            if p.pts is None:
                continue
            out.append(EncodedAudio(pts_ns=p.pts * NS_PER_S // self.rate, packet=p, track=self.track))
        return out

    def encode(self, pcm: Pcm | Any, abs_sample: int) -> list[EncodedAudio]:
        pcm = Pcm.of(pcm)
        if self._next is None:
            self._next = abs_sample
            if self.on_first_sample is not None:
                self.on_first_sample(abs_sample * NS_PER_S // self.rate)
        expected = self._next + self._carry.n
        if abs_sample != expected:
            raise ValueError(f"non-contiguous audio: got sample {abs_sample}, expected {expected}")
        data = Pcm.concat([self._carry, pcm], self.channels)
        out: list[EncodedAudio] = []
        whole = data.n - data.n % AAC_FRAME
        if whole:
            for frame in self._frames(data[:whole], self._next):  # one conversion for every whole frame
                out.extend(self._wrap(self._encode(frame)))
            self._next += whole
        self._carry = Pcm(data[whole:].tobytes(), self.channels)  # not a view of `pcm`'s bytes
        return out

    def flush(self) -> list[EncodedAudio]:
        out: list[EncodedAudio] = []
        if self.end_pad_samples and self._next is not None:
            pad = Pcm.zeros(self.end_pad_samples, self.channels)
            out.extend(self.encode(pad, self._next + self._carry.n))
        if self._carry.n and self._next is not None:
            for frame in self._frames(self._carry, self._next):
                out.extend(self._wrap(self._encode(frame)))
            self._next += self._carry.n
            self._carry = self._carry[:0]
        out.extend(self._wrap(self._encode(None)))
        return out


class _MuxSink:
    """Writes packets to a libav container; keeps each stream's dts strictly increasing.

    `astreams` maps each audio track this container carries to its stream (the dubbed track,
    and with `keep_original` the original one, or only the original on its own FLV output)."""

    def __init__(
        self, container: Any, vstream: Any | None, astreams: dict[AudioTrack, Any], *, keep_priming: bool
    ) -> None:
        self.container = container
        self.vstream = vstream
        self.astreams = astreams
        # MP4/MOV carry an edit list that hides the encoder's priming packet; FLV/MPEG-TS/RTP
        # do not, so there it is dropped (else the audio track starts ~21 ms early).
        self.keep_priming = keep_priming
        self.first_audio_ns: int | None = None
        self._last_vdts: int | None = None
        self._last_adts: dict[AudioTrack, int] = {}

    def set_first_audio(self, pts_ns: int) -> None:
        self.first_audio_ns = pts_ns

    def write_video(self, pkt: VideoPacket) -> None:
        assert self.vstream is not None
        tb: Fraction = self.vstream.time_base
        den, num = tb.denominator, tb.numerator * NS_PER_S
        dts = (pkt.dts_ns * den + num // 2) // num
        pts = (pkt.pts_ns * den + num // 2) // num
        if self._last_vdts is not None and dts <= self._last_vdts:
            dts = self._last_vdts + 1
        pts = max(pts, dts)
        self._last_vdts = dts
        p = av.Packet(pkt.data)
        p.stream = self.vstream
        p.time_base = tb
        p.pts = pts
        p.dts = dts
        p.duration = max(0, (pkt.duration_ns * den + num // 2) // num)
        p.is_keyframe = pkt.keyframe
        self.container.mux(p)

    def write_audio(self, pkt: EncodedAudio) -> None:
        if not self.keep_priming and self.first_audio_ns is not None and pkt.pts_ns < self.first_audio_ns:
            return
        p = pkt.packet
        p.stream = self.astreams[pkt.track]
        last = self._last_adts.get(pkt.track)
        if last is not None and p.dts is not None and p.dts <= last:
            p.dts = last + 1
            p.pts = max(p.pts, p.dts)
        if p.dts is not None:
            self._last_adts[pkt.track] = p.dts
        self.container.mux(p)


@dataclass
class _Opened:
    """A created (not yet connected) output container and its streams."""

    container: Any
    fmt: str
    srt: SrtWriter | None
    vstream: Any | None
    astream: Any


def _create_output(
    url: str, s: MediaSettings, video_template: VideoTemplate | None, sample_rate: int, channels: int
) -> _Opened:
    """Create the container and its streams (no I/O yet: libav connects in the header)."""
    srt: SrtWriter | None = None
    try:
        fmt, opts = (s.output_format, {}) if s.output_format else output_format_for(url)
        if is_live(url):
            # OutputCore already writes the packets interleaved by timestamp, each at its
            # time; libav's own interleaving queue would only hold packets back until the
            # other stream has a later one (the last audio frames: until the output closes).
            opts = {"max_interleave_delta": "1", **opts}
        opts = {**opts, **s.output_options}
        if scheme_of(url) == "srt":
            # libsrt via ctypes (PyAV's libav has no srt protocol): libav muxes MPEG-TS into
            # the writer in writes of at most one SRT payload, flushed after every packet.
            srt = SrtWriter(url, timeout_s=s.open_timeout_s)
            container = av.open(
                srt, "w", format=fmt, options={"flush_packets": "1", **opts},
                buffer_size=SRT_PAYLOAD,
            )  # fmt: skip
        else:
            container = av.open(strip_file_scheme(url), "w", format=fmt, options=opts)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise OutputFailed(f"cannot open output {redact_url(url)}: {redact_url(exc)}") from exc
    try:
        vstream = None
        if video_template is not None:
            vstream = container.add_stream_from_template(video_template.stream)
        astream = container.add_stream("aac", rate=sample_rate, layout=layout_for(channels))
        astream.bit_rate = s.output_audio_bitrate
    except (av.FFmpegError, OSError, ValueError) as exc:
        container.close()
        raise OutputFailed(f"cannot create output streams for {redact_url(url)}: {redact_url(exc)}") from exc
    return _Opened(container, fmt, srt, vstream, astream)


def _connect_output(url: str, opened: _Opened, timeout_s: float) -> None:
    """Write the header: this opens the file or connects to the server."""
    endpoint = tcp_endpoint(url)
    if endpoint is not None:
        # libav holds the GIL while it connects and writes the header: check reachability
        # first, with a timeout, so a black-holed server cannot freeze the whole process.
        try:
            socket.create_connection(endpoint, timeout=timeout_s).close()
        except OSError as exc:
            raise OutputFailed(f"cannot reach output {redact_url(url)}: {redact_url(exc)}") from exc
    if opened.srt is not None:
        try:
            opened.srt.connect()  # now, not at the first packet: the header may write nothing
        except (OSError, ValueError) as exc:
            raise OutputFailed(f"cannot reach output {redact_url(url)}: {redact_url(exc)}") from exc
    try:
        opened.container.start_encoding()
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise OutputFailed(f"cannot start output {redact_url(url)}: {redact_url(exc)}") from exc


class MirrorState(enum.StrEnum):
    """A mirror output's state (worker `/health` `mirror`)."""

    OFF = "off"  # no mirror configured
    WAITING = "waiting"  # not connected: waiting for a keyframe (or a retry time)
    WRITING = "writing"
    FAILED = "failed"  # the last attempt failed; retried at a later keyframe
    FINISHED = "finished"


MirrorStateFn = Callable[[MirrorState, str | None], None]


@dataclass(frozen=True, slots=True)
class _AudioCopy:
    """An encoded audio packet copied before the main output's muxer consumes it."""

    pts_ns: int
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    first_audio_ns: int | None


_END = object()


class MirrorOutput:
    """The same packets as an output, published to a second URL (see the module docstring).

    `video()` / `audio()` are called from the output thread and never block; `end()` lets the
    mirror write what it has queued and close; `join()` waits (bounded) for that."""

    def __init__(
        self,
        url: str,
        settings: MediaSettings,
        *,
        video_template: VideoTemplate | None,
        sample_rate: int,
        channels: int,
        on_state: MirrorStateFn | None = None,
        clock: Clock | None = None,
        max_items: int = MIRROR_QUEUE_ITEMS,
    ) -> None:
        self.url = url
        self.settings = settings
        self.video_template = video_template
        self.sample_rate = sample_rate
        self.channels = channels
        self.on_state = on_state
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=settings.stream_id, mirror=redact_url(url))
        self._queue: queue.Queue[object] = queue.Queue(max_items)
        self._stalled = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened: _Opened | None = None
        self._sink: _MuxSink | None = None
        self._retry_at = 0.0
        self._retry_s = MIRROR_RETRY_FIRST_S
        self.state = MirrorState.WAITING
        self.failures = 0
        self.video_written = 0
        self.audio_written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="media-mirror", daemon=True)
        self._thread.start()

    # -- from the output thread (never blocking) ----------------------------------------------
    def video(self, pkt: VideoPacket) -> None:
        self._put(pkt)

    def audio(self, pkt: EncodedAudio, first_audio_ns: int | None) -> None:
        p = pkt.packet
        self._put(
            _AudioCopy(pkt.pts_ns, bytes(p), p.pts, p.dts, int(p.duration or 0), p.time_base, first_audio_ns)
        )

    def _put(self, item: object) -> None:
        if self._stalled.is_set():
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._stalled.set()  # the thread drops the queue and reopens at a later keyframe

    def end(self) -> None:
        while True:
            try:
                self._queue.put(_END, timeout=0.1)
                return
            except queue.Full:
                self._discard()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- thread --------------------------------------------------------------------------------
    def _set_state(self, state: MirrorState, detail: str | None = None) -> None:
        if state == self.state and detail is None:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:  # noqa: BLE001
                self.log.exception("mirror state callback failed")

    def _discard(self) -> None:
        with self._queue.mutex:
            self._queue.queue.clear()
            self._queue.not_full.notify_all()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if self._stalled.is_set():
                    self._discard()
                    self._stalled.clear()
                    self._fail("stalled: more than its queue behind the output")
                    if item is not _END:
                        continue
                if item is _END:
                    break
                if self._opened is None and not self._open_at(item):
                    continue
                try:
                    self._write(item)
                except (av.FFmpegError, OSError, ValueError) as exc:
                    self._fail(f"write failed: {redact_url(exc)}")
        except Exception as exc:  # noqa: BLE001 - a bug must not reach the main output
            self.log.exception("mirror thread crashed")
            self._set_state(MirrorState.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            self._close()
            if self.state != MirrorState.FAILED:
                self._set_state(MirrorState.FINISHED)

    def _open_at(self, item: object) -> bool:
        """Connect when `item` can start an output: a video keyframe (or any audio when there
        is no video), once the retry time has come. Returns whether the mirror is open."""
        has_video = self.video_template is not None
        if has_video and not (isinstance(item, VideoPacket) and item.keyframe):
            return False
        if self.clock.monotonic() < self._retry_at:
            return False
        try:
            opened = _create_output(self.url, self.settings, self.video_template, self.sample_rate, self.channels)
        except OutputFailed as exc:
            self._fail(str(exc))
            return False
        try:
            _connect_output(self.url, opened, self.settings.open_timeout_s)
        except OutputFailed as exc:
            self._opened = opened
            self._fail(str(exc))
            return False
        self._opened = opened
        self._sink = _MuxSink(opened.container, opened.vstream, {AudioTrack.DUBBED: opened.astream}, keep_priming=opened.fmt in ("mp4", "mov"))
        self._retry_s = MIRROR_RETRY_FIRST_S
        self.log.info("mirror output opened", ctx={"format": opened.fmt})
        self._set_state(MirrorState.WRITING)
        return True

    def _write(self, item: object) -> None:
        sink = self._sink
        assert sink is not None
        if isinstance(item, VideoPacket):
            sink.write_video(item)
            self.video_written += 1
            return
        assert isinstance(item, _AudioCopy)
        if item.first_audio_ns is not None and sink.first_audio_ns is None:
            sink.set_first_audio(item.first_audio_ns)
        p = av.Packet(item.data)
        p.pts, p.dts, p.duration, p.time_base = item.pts, item.dts, item.duration, item.time_base
        sink.write_audio(EncodedAudio(item.pts_ns, p))
        self.audio_written += 1

    def _fail(self, why: str) -> None:
        self.failures += 1
        self._close()
        self._retry_at = self.clock.monotonic() + self._retry_s
        self.log.warning(
            "mirror output failed: the main output goes on; retrying at a later keyframe",
            ctx={"error": why[:300], "retry_in_s": self._retry_s, "failures": self.failures},
        )
        self._retry_s = min(self._retry_s * 2, MIRROR_RETRY_MAX_S)
        self._set_state(MirrorState.FAILED, why[:300])

    def _close(self) -> None:
        opened, self._opened, self._sink = self._opened, None, None
        if opened is None:
            return
        closers = [opened.container.close] + ([opened.srt.close] if opened.srt is not None else [])
        for close in closers:
            try:
                close()
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.log.warning("mirror output close failed", ctx={"error": redact_url(exc)})


class _LazyTarget:
    """Encoder + sink over a container that exists at once but is connected (header written)
    only on its first write (see `MediaOutput.open`): taking and encoding audio early does not
    connect a network output seconds before anything is sent on it."""

    lookahead_samples = ENCODER_LOOKAHEAD_SAMPLES

    def __init__(
        self,
        encoder: StreamAudioEncoder,
        sink: PacketSink,
        connect: Callable[[], None],
        mirror: MirrorOutput | None = None,
        first_audio_ns: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._encoder = encoder
        self._sink = sink
        self._connect = connect
        self.mirror = mirror
        self._first_audio_ns = first_audio_ns
        self.connected = False

    def ensure_connected(self) -> None:
        if not self.connected:
            self._connect()
            self.connected = True

    def encode(self, pcm: Pcm, abs_sample: int) -> list[EncodedAudio]:
        return self._encoder.encode(pcm, abs_sample)

    def flush(self) -> list[EncodedAudio]:
        return self._encoder.flush()

    def write_video(self, pkt: VideoPacket) -> None:
        self.ensure_connected()
        self._sink.write_video(pkt)
        if self.mirror is not None:
            self.mirror.video(pkt)

    def write_audio(self, pkt: EncodedAudio) -> None:
        self.ensure_connected()
        if self.mirror is not None and pkt.track is AudioTrack.DUBBED:  # copied first: muxing consumes it
            self.mirror.audio(pkt, self._first_audio_ns())
        self._sink.write_audio(pkt)


#: Packets the original's own output may have queued (≈ 13 s of 30 fps video + 48 kHz AAC): a
#: paced output that far behind is stalled and is given up.
ORIGINAL_QUEUE_PACKETS = 1000
#: At close, how long an original output that was given up gets to end its thread.
ORIGINAL_GIVEN_UP_WAIT_S = 0.5


class _OriginalOutput:
    """The original programme on its own output (`keep_original` where the container carries one
    audio track: FLV/RTMP → `live/<id>/orig`): the same video packets and the original track's,
    muxed by its own thread from a bounded queue, so a slow or dead server never holds up the
    dubbed output. Any failure (open, connect, write, a stall that fills the queue, close) is
    logged once with the reason, reported as `WriteErrorKind.ORIGINAL_OUTPUT`, and ends only this
    output (it is not reopened until the worker restarts)."""

    def __init__(
        self,
        url: str,
        *,
        paced: bool,
        open_timeout_s: float,
        on_error: WriteErrorFn | None,
        log: Any,
    ) -> None:
        self.url = url
        self.paced = paced
        self.open_timeout_s = open_timeout_s
        self.on_error = on_error
        self.log = log
        self.container: Any = None
        self.sink: _MuxSink | None = None
        self.failed: str | None = None
        self.connected = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(ORIGINAL_QUEUE_PACKETS)
        self._thread: threading.Thread | None = None

    def prepare(
        self, video_template: VideoTemplate | None, sample_rate: int, channels: int, bitrate: int, language: str
    ) -> StreamAudioEncoder | None:
        """Create the container and its streams (no I/O yet); the original track's encoder, or
        None if that failed (then this output is given up, the dubbed one goes on)."""
        try:
            fmt, opts = output_format_for(self.url)
            if is_live(self.url):
                opts = {"max_interleave_delta": "1", **opts}
            self.container = av.open(strip_file_scheme(self.url), "w", format=fmt, options=opts)
            vstream = None
            if video_template is not None:
                vstream = self.container.add_stream_from_template(video_template.stream)
            astream = self.container.add_stream("aac", rate=sample_rate, layout=layout_for(channels))
            astream.bit_rate = bitrate
            tag_audio_stream(astream, language, AudioTrack.ORIGINAL)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.fail(f"cannot open: {exc}")
            return None
        self.sink = _MuxSink(self.container, vstream, {AudioTrack.ORIGINAL: astream}, keep_priming=fmt in ("mp4", "mov"))
        encoder = StreamAudioEncoder(astream, sample_rate, channels, track=AudioTrack.ORIGINAL)
        encoder.on_first_sample = self.sink.set_first_audio
        return encoder

    def connect(self) -> None:
        """Write the header (connect), on the output thread like the dubbed output's; then start
        the muxing thread. Never raises."""
        if self.failed is not None or self.connected or self.container is None:
            return
        try:
            endpoint = tcp_endpoint(self.url)
            if endpoint is not None:  # see MediaOutput._connect: libav holds the GIL meanwhile
                socket.create_connection(endpoint, timeout=self.open_timeout_s).close()
            self.container.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.fail(f"cannot connect: {exc}")
            return
        self.connected = True
        self._thread = threading.Thread(target=self._run, name="media-output-original", daemon=True)
        self._thread.start()
        self.log.info("original output opened", ctx={"url": redact_url(self.url)})

    def write_video(self, pkt: VideoPacket) -> None:
        self._submit(("video", pkt))

    def write_audio(self, pkt: EncodedAudio) -> None:
        self._submit(("audio", pkt))

    def _submit(self, item: tuple[str, Any]) -> None:
        if self.failed is not None or not self.connected:
            return
        try:
            # Paced: never wait (a full queue is a stalled output). Unpaced (file → file): the
            # dubbed output may wait for it, bounded.
            self._queue.put(item, block=not self.paced, timeout=None if self.paced else self.open_timeout_s)
        except queue.Full:
            self.fail(f"stalled: {ORIGINAL_QUEUE_PACKETS} packets waiting")

    def _run(self) -> None:
        sink = self.sink
        assert sink is not None
        while True:
            item = self._queue.get()
            if item is None or self.failed is not None:  # the end, or given up: nothing to write
                return
            op, pkt = item
            try:
                if op == "video":
                    sink.write_video(pkt)
                else:
                    sink.write_audio(pkt)
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.fail(f"write failed: {exc}")

    def fail(self, reason: str) -> None:
        """Give this output up (once): log the reason, report it. Thread-safe."""
        with self._lock:
            if self.failed is not None:
                return
            self.failed = reason = redact_url(reason)
        self.log.warning(
            "original output failed: it is given up, the dubbed output continues",
            ctx={"url": redact_url(self.url), "error": reason},
        )
        if self.on_error is not None:
            try:
                self.on_error(WriteErrorKind.ORIGINAL_OUTPUT, reason)
            except Exception:  # noqa: BLE001 - a reporting bug must not touch the dubbed output
                self.log.exception("original output error report failed")

    def close(self) -> None:
        """Write what is queued and the trailer, then close (bounded by `open_timeout_s`; a
        muxing thread stuck in a write is abandoned)."""
        thread = self._thread
        if thread is not None:
            # Given up already: only let the thread see the end (it may be stuck in a write).
            wait_s = ORIGINAL_GIVEN_UP_WAIT_S if self.failed is not None else self.open_timeout_s
            try:
                self._queue.put(None, timeout=wait_s)
            except queue.Full:
                self.fail(f"stalled: {ORIGINAL_QUEUE_PACKETS} packets waiting")
            thread.join(wait_s)
            if thread.is_alive():
                self.fail("stalled at close: abandoned")
                return
        if self.container is None:
            return
        try:
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            self.fail(f"close failed: {exc}")
        self.container = None


class _TeeSink:
    """The dubbed output's sink plus the original's own output: video to both, each audio
    track to the output that carries it."""

    def __init__(self, main: _MuxSink, original: _OriginalOutput) -> None:
        self.main = main
        self.original = original

    def write_video(self, pkt: VideoPacket) -> None:
        self.main.write_video(pkt)
        self.original.write_video(pkt)

    def write_audio(self, pkt: EncodedAudio) -> None:
        if pkt.track is AudioTrack.ORIGINAL:
            self.original.write_audio(pkt)
        else:
            self.main.write_audio(pkt)


def tag_audio_stream(stream: Any, language: str, track: AudioTrack) -> None:
    """Language (ISO 639-2, `languages.iso639_2`) and disposition of an output audio stream: the
    dubbed track is the default one (and `dub` when the original goes along), the original
    track is marked `original`."""
    stream.metadata["language"] = language
    if track is AudioTrack.ORIGINAL:
        stream.disposition = av.stream.Disposition.original
    else:
        stream.disposition = av.stream.Disposition.default


class MediaOutput:
    """A threaded libav output driven by an `OutputCore` (see module docstring).

    Thread-safe API for the pipeline: `push_video`, `push_segment`, `set_anchor`,
    `set_audio_start`, `end`; `wait()` blocks until drained; `error` holds an `OutputFailed`.
    """

    def __init__(
        self,
        settings: MediaSettings,
        *,
        video_template: VideoTemplate | None,
        sample_rate: int,
        channels: int,
        on_taken: TakenFn | None = None,
        on_delay: DelayFn | None = None,
        on_done: Callable[[], None] | None = None,
        on_mirror: MirrorStateFn | None = None,
        on_write_error: WriteErrorFn | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.on_mirror = on_mirror
        self.url = settings.output_url
        self.video_template = video_template
        self.sample_rate = sample_rate
        self.channels = channels
        self.on_taken = on_taken
        self.on_delay = on_delay
        self.on_done = on_done
        self.on_write_error = on_write_error
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=settings.stream_id)
        self.container: Any = None
        self.core: OutputCore | None = None
        self._target: _LazyTarget | None = None
        self.mirror: MirrorOutput | None = None
        self._opened: _Opened | None = None
        self._srt: SrtWriter | None = None
        self._original: _OriginalOutput | None = None  # keep_original on a one-audio-track output
        self._mux: _MuxSink | None = None  # the main container's sink (the mirror copies its audio)
        self.original_sound = OriginalSound.OFF
        # whether a segment's original audio is output even when it is dubbed (an original track
        # or output): unknown, so True, until `open`; segments let it go once dubbed otherwise
        self.original_needed = True
        self._format = ""
        self.error: OutputFailed | None = None
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._abort = False
        self._paced = settings.paced
        self._kicked = False
        self._tick_s = settings.effective_output_tick_s

    def open(self) -> None:
        """Prepare the output. Files and unpaced outputs are opened here (header written).

        A paced network output (rtmp/rtsp/srt) is connected `output_connect_lead_s` before its
        first packet is due (a reader waiting for the stream then sees the first keyframe),
        D seconds after the input starts: media servers drop a publisher that sends nothing for
        ~10 s (nginx-rtmp `drop_idle_publisher`, MediaMTX `readTimeout`), and D is 14 s by default.
        A failure to connect then ends the output with `OutputFailed` (exit code 12) as well.
        """
        s = self.settings
        lazy = s.paced and is_live(self.url)
        encoder, original_encoder, sink = self._prepare()
        self.original_needed = original_encoder is not None
        if s.mirror_output_url:
            self.mirror = MirrorOutput(
                s.mirror_output_url, s, video_template=self.video_template, sample_rate=self.sample_rate,
                channels=self.channels, on_state=self.on_mirror, clock=self.clock,
            )  # fmt: skip
        assert self._mux is not None
        target = _LazyTarget(encoder, sink, self._connect, self.mirror, lambda: self._mux.first_audio_ns if self._mux else None)
        if not lazy:
            try:
                target.ensure_connected()
            except OutputFailed:
                self._close()
                raise
        self._target = target
        self.core = OutputCore(
            paced=s.paced,
            delay_s=s.effective_output_delay_s,
            sample_rate=self.sample_rate,
            channels=self.channels,
            segment_samples=s.segment_samples(self.sample_rate),
            has_video=self.video_template is not None,
            encoder=target,
            sink=target,
            margin_s=s.deadline_margin_s,
            unpaced_wait_s=s.unpaced_wait_s,
            fill_missing=s.fill_missing_audio,
            on_taken=self.on_taken,
            on_delay=self.on_delay,
            original_encoder=original_encoder,
            write_ahead_s=s.effective_output_tick_s,
        )

    def _prepare(self) -> tuple[StreamAudioEncoder, StreamAudioEncoder | None, PacketSink]:
        """Create the container and its streams (no I/O yet: libav connects in the header)."""
        s = self.settings
        opened = _create_output(self.url, s, self.video_template, self.sample_rate, self.channels)
        self.container, self._srt, self._format = opened.container, opened.srt, opened.fmt
        fmt = opened.fmt
        astreams = {AudioTrack.DUBBED: opened.astream}
        try:
            tag_audio_stream(opened.astream, iso639_2(s.target_language), AudioTrack.DUBBED)
            if (s.keep_original or s.original_track) and carries_several_audio_tracks(fmt):
                self.original_sound = OriginalSound.TRACK
                ostream = opened.container.add_stream("aac", rate=self.sample_rate, layout=layout_for(self.channels))
                ostream.bit_rate = s.output_audio_bitrate
                tag_audio_stream(ostream, iso639_2(s.source_language), AudioTrack.ORIGINAL)
                astreams[AudioTrack.ORIGINAL] = ostream
        except (av.FFmpegError, OSError, ValueError) as exc:
            opened.container.close()
            raise OutputFailed(f"cannot create output streams for {redact_url(self.url)}: {redact_url(exc)}") from exc
        self._opened = opened
        # RTSP: libav's RTP AAC packetiser sends a frame only when the next one arrives and drops
        # the one it holds when the output closes, and a relay that depayloads and parses (the
        # embedded one: GStreamer) holds one more until the stream ends, then may lose it as the
        # publisher goes. Two frames of silence after the end carry the last real one out (the
        # reader may get up to one frame, 21 ms, of that silence).
        pad = 2 * AAC_FRAME if fmt == "rtsp" else 0
        encoder = StreamAudioEncoder(opened.astream, self.sample_rate, self.channels, end_pad_samples=pad)
        sink = _MuxSink(opened.container, opened.vstream, astreams, keep_priming=fmt in ("mp4", "mov"))
        encoder.on_first_sample = sink.set_first_audio
        self._mux = sink
        original_encoder: StreamAudioEncoder | None = None
        if AudioTrack.ORIGINAL in astreams:
            # Same stream start, same sample positions: the two tracks line up exactly.
            original_encoder = StreamAudioEncoder(
                astreams[AudioTrack.ORIGINAL], self.sample_rate, self.channels,
                end_pad_samples=pad, track=AudioTrack.ORIGINAL,
            )  # fmt: skip
        elif s.keep_original:
            original_encoder = self._prepare_original()
            if original_encoder is not None:
                assert self._original is not None
                return encoder, original_encoder, _TeeSink(sink, self._original)
        return encoder, original_encoder, sink

    def _prepare_original(self) -> StreamAudioEncoder | None:
        """`keep_original` on a one-audio-track output (FLV/RTMP): the original programme goes
        to its own output, `urls.original_output_url` (`live/<id>/out` → `live/<id>/orig`)."""
        s = self.settings
        self.original_sound = OriginalSound.FAILED
        try:
            url = original_output_url(self.url)
        except ValueError as exc:
            _OriginalOutput(
                "", paced=s.paced, open_timeout_s=s.open_timeout_s, on_error=self.on_write_error, log=self.log
            ).fail(str(exc))
            return None
        original = _OriginalOutput(
            url, paced=s.paced, open_timeout_s=s.open_timeout_s, on_error=self.on_write_error, log=self.log
        )
        encoder = original.prepare(
            self.video_template, self.sample_rate, self.channels, s.output_audio_bitrate,
            iso639_2(s.source_language),
        )  # fmt: skip
        if encoder is None:
            return None
        self._original = original
        self.original_sound = OriginalSound.OWN_OUTPUT
        return encoder

    def _connect(self) -> None:
        """Write the header: this opens the file or connects to the server."""
        s = self.settings
        assert self._opened is not None
        _connect_output(self.url, self._opened, s.open_timeout_s)
        self.log.info(
            "output opened",
            ctx={"url": redact_url(self.url), "format": self._format, "paced": s.paced, "delay_s": s.effective_output_delay_s,
                 "original": str(self.original_sound)},
        )
        if self.mirror is not None:
            self.mirror.start()
        if self._original is not None:
            self._original.connect()  # never raises: its failure is its own

    def start(self) -> None:
        if self.core is None:
            raise RuntimeError("open() first")
        self._thread = threading.Thread(target=self._run, name="media-output", daemon=True)
        self._thread.start()

    # -- thread-safe inputs -----------------------------------------------------------------
    def _post(self, op: str, arg: Any = None) -> None:
        with self._cond:
            self._inbox.append((op, arg))
            # Paced: media is due D seconds after it arrives, so the thread picks it up on its
            # next tick; waking it per packet would only burn CPU. Unpaced: react at once.
            if not self._paced or op in ("end", "segment"):
                self._cond.notify()

    def set_anchor(self, w0: float) -> None:
        self._post("anchor", w0)

    def set_audio_start(self, t0_ns: int) -> None:
        self._post("audio_start", t0_ns)

    def push_video(self, pkt: VideoPacket) -> None:
        self._post("video", pkt)

    def push_segment(self, seg: Segment) -> None:
        if not self._paced:
            seg.audio.on_resolved = self._kick  # unpaced: take it as soon as it is resolved
        self._post("segment", (seg, self.clock.wall()))

    def _kick(self) -> None:
        with self._cond:
            self._kicked = True
            self._cond.notify()

    def end(self) -> None:
        self._post("end")

    def abort(self) -> None:
        """Stop without draining (used on fatal errors elsewhere)."""
        with self._cond:
            self._abort = True
            self._cond.notify()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._finished.wait(timeout_s)

    # -- thread -----------------------------------------------------------------------------
    def _apply(self, op: str, arg: Any) -> None:
        core = self.core
        assert core is not None
        if op == "video":
            core.push_video(arg)
        elif op == "segment":
            core.push_segment(*arg)
        elif op == "anchor":
            core.set_anchor(arg)
        elif op == "audio_start":
            core.set_audio_start(arg)
        elif op == "end":
            core.end()

    def _run(self) -> None:
        core = self.core
        assert core is not None
        try:
            while True:
                with self._cond:
                    inbox, self._inbox = self._inbox, []
                    aborted = self._abort
                    self._kicked = False
                if aborted:
                    break
                for op, arg in inbox:
                    self._apply(op, arg)
                now = self.clock.wall()
                wake = min(self._connect_early(now), core.poll(now))
                if core.done:
                    self._linger()
                    break
                with self._cond:
                    if not self._inbox and not self._abort and not self._kicked:
                        timeout = 1.0 if math.isinf(wake) else max(0.0, min(1.0, wake - self.clock.wall()))
                        if self._paced:
                            # Write in ticks (the core writes up to a tick early): far fewer wake-ups.
                            timeout = max(timeout, self._tick_s)
                        if timeout > 0:
                            self._cond.wait(timeout)
        except OutputFailed as exc:
            self.error = exc
            self.log.error("output failed", ctx={"url": redact_url(self.url), "error": redact_url(exc)})
        except (av.FFmpegError, OSError) as exc:
            self.error = OutputFailed(f"output {redact_url(self.url)} write failed: {redact_url(exc)}")
            self.log.error("output write failed", ctx={"url": redact_url(self.url), "error": redact_url(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug: still end the output with a clear error
            self.error = OutputFailed(f"output {redact_url(self.url)} failed: {type(exc).__name__}: {redact_url(exc)}")
            self.log.exception("output thread crashed", ctx={"url": redact_url(self.url)})
        finally:
            self._close()
            self._finished.set()
            if self.on_done is not None:
                try:
                    self.on_done()
                except Exception:  # noqa: BLE001
                    self.log.exception("on_done failed")

    def _connect_early(self, now: float) -> float:
        """Connect a lazily opened output `output_connect_lead_s` before its first packet is due,
        so that readers waiting for the stream (recorders, media-server relays) are attached when
        the first keyframe goes out. Returns when to check again."""
        core, target = self.core, self._target
        if core is None or target is None or target.connected or core.w0 is None or core.kf_ns is None:
            return math.inf
        connect_at = core.w0 + core.kf_ns / NS_PER_S + core.delay_s - self.settings.output_connect_lead_s
        if now < connect_at:
            return connect_at
        target.ensure_connected()
        return math.inf

    def _linger(self) -> None:
        """A network output waits `output_linger_s` after its last packet before it hangs up: a
        relay still forwarding the last packets when the publisher goes can lose them (the
        embedded RTSP relay did, about 1 run in 2, without this and `max_interleave_delta`)."""
        target = self._target
        if target is None or not target.connected or not is_live(self.url):
            return
        with self._cond:
            self._cond.wait_for(lambda: self._abort, timeout=self.settings.output_linger_s)

    def _close(self) -> None:
        if self.mirror is not None:
            self.mirror.end()  # after the main output's last packet (and linger)
            self.mirror.join(self.settings.output_linger_s + self.settings.open_timeout_s)
        if self._original is not None:
            self._original.close()
            self._original = None
        if self.container is None:
            return
        closers = [self.container.close] + ([self._srt.close] if self._srt is not None else [])
        for close in closers:  # the SRT connection after the trailer went out (or failed to)
            try:
                close()
            except (av.FFmpegError, OSError) as exc:
                if self.error is None:
                    self.error = OutputFailed(f"output {redact_url(self.url)} close failed: {redact_url(exc)}")
                self.log.error("output close failed", ctx={"url": redact_url(self.url), "error": redact_url(exc)})
        self.container = None
