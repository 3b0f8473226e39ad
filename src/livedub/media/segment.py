"""Segments: exact-sample-count audio fragments with the video packets of the same time span.

`Segmenter` is pure logic (no I/O, no threads, no clock): it is fed contiguous PCM (already on the
sample clock) and rebased video packets, and cuts segment `k` at samples `[k·N, (k+1)·N)`, so
`t0_k = audio_t0 + k·N / rate` exactly. `SegmentAudio` is the thread-safe hand-off through which
the worker offers dubbed audio and the output takes whatever is there at the segment's deadline.

This module never drops samples, never rounds a segment boundary, and never blocks.
"""

from __future__ import annotations

import math
import mmap
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from livedub.media.audio import CodedAudio
from livedub.media.pcm import SAMPLE_BYTES, Pcm
from livedub.media.timeline import NS_PER_S
from livedub.reasons import FallbackReason

AudioSource = Literal["dubbed", "original", "silence"]



@dataclass(frozen=True, slots=True)
class VideoPacket:
    """One compressed video packet on the (rebased) input timeline. Never decoded."""

    data: bytes
    pts_ns: int
    dts_ns: int
    duration_ns: int
    keyframe: bool


class SegmentAudio:
    """Thread-safe hand-off of one segment's audio between the worker and the output.

    The worker calls `set_dubbed(pcm)` (or `set_fallback(reason)`) at most once with effect;
    the output calls `take()` at the segment's deadline and gets the dubbed PCM if it was set,
    else the original PCM with a reason. After `take()` nothing can change the answer.
    """

    def __init__(
        self, original: Pcm | Any, deadline_wall: float = math.inf, *, original_needed: Callable[[], bool] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._original: Pcm | None = Pcm.of(original)
        self._shape = self._original.shape
        # asked when dubbed audio is set: False lets the original go (nothing outputs it then);
        # None keeps it
        self._original_needed = original_needed
        self._dubbed: Pcm | None = None
        self._fallback_reason: str | None = None
        self._pending_reason: str | None = None
        self._taken = False
        self._resolved = threading.Event()
        self.deadline_wall = deadline_wall
        # Called (outside the lock) when dubbed audio or a fallback is set: lets an output that
        # waits for this segment react at once instead of on its next tick.
        self.on_resolved: Callable[[], None] | None = None

    @property
    def taken(self) -> bool:
        return self._taken

    @property
    def resolved(self) -> bool:
        """True once dubbed audio or a fallback was set (or the audio was taken)."""
        return self._resolved.is_set()

    @property
    def original(self) -> Pcm:
        """The input's audio; RuntimeError once it was let go (dubbed, and nothing outputs it)."""
        if self._original is None:
            raise RuntimeError("the original audio was released when the segment was dubbed")
        return self._original

    def set_dubbed(self, pcm: Pcm | Any) -> bool:
        """Offer dubbed PCM (the original's shape, s16 `(n, channels)`; a numpy int16 array too).

        Returns False (and changes nothing) if the audio was already taken (the result is late)
        or already resolved. Raises ValueError if the shape does not match: fit it first with
        `livedub.media.audio.fit_to_length` / `decode_fragment`.
        """
        pcm = Pcm.of(pcm)
        if pcm.shape != self._shape:
            raise ValueError(f"dubbed shape {pcm.shape} != original {self._shape}")
        with self._lock:
            if self._taken or self._resolved.is_set():
                return False
            self._dubbed = pcm
            if self._original_needed is not None and not self._original_needed():
                self._original = None  # 1.1 MB per 6 s segment, held until its deadline otherwise
            self._resolved.set()
        self._notify()
        return True

    def _notify(self) -> None:
        callback = self.on_resolved
        if callback is not None:
            callback()

    def set_fallback(self, reason: str) -> bool:
        """Resolve to the original audio now, with `reason`. False if already taken/resolved."""
        with self._lock:
            if self._taken or self._resolved.is_set():
                return False
            self._fallback_reason = reason
            self._resolved.set()
        self._notify()
        return True

    def waiting_for(self, reason: str) -> None:
        """Say what this unresolved segment waits on now (e.g. `backpressure` while held for a
        slot): if its deadline comes first, that is the reason it goes out original. Recorded
        when the worker decides to wait, so the reason never depends on the state at output time."""
        with self._lock:
            self._pending_reason = reason

    def take(self, default_reason: str) -> tuple[Pcm, AudioSource, str | None]:
        """Return `(pcm, "dubbed"|"original", reason)`; afterwards `set_*` return False.

        Unresolved: the reason given to `waiting_for` last, else `default_reason`. Taking twice
        returns the same answer (idempotent).
        """
        with self._lock:
            if not self._taken:
                self._taken = True
                if not self._resolved.is_set():
                    self._fallback_reason = self._pending_reason or default_reason
                self._resolved.set()
            if self._dubbed is not None:
                return self._dubbed, "dubbed", None
            return self.original, "original", self._fallback_reason

    @property
    def outcome(self) -> tuple[AudioSource, str | None] | None:
        """`("dubbed", None)` or `("original", reason)` once resolved (or taken); None before."""
        with self._lock:
            if not self._resolved.is_set():
                return None
            if self._dubbed is not None:
                return "dubbed", None
            return "original", self._fallback_reason

    def wait_resolved(self, timeout_s: float | None) -> bool:
        """Block up to `timeout_s` until resolved (used by the unpaced output only)."""
        return self._resolved.wait(timeout_s)


@dataclass(eq=False)
class Segment:
    """One fragment: `n_samples` of audio starting at `t0_ns`, plus its video packets."""

    id: str
    stream_id: str
    batch: int
    t0_ns: int
    n_samples: int
    sample_rate: int
    channels: int
    audio: SegmentAudio  # its `original` is the segment's audio (`pcm`)
    video_packets: list[VideoPacket] = field(default_factory=list)
    is_tail: bool = False  # the last, shorter-than-N segment of a stream
    dub: bool = True  # False for a tail shorter than min_tail_s: never sent, always original
    av_sync_delta_ms: float = 0.0  # sample clock minus input audio timestamps, at creation
    coded: CodedAudio | None = None  # the input's packets that decode to `pcm` exactly, if any

    @property
    def pcm(self) -> Pcm:
        """The original audio, `(n_samples, channels)` (until released: `SegmentAudio.original`)."""
        return self.audio.original

    @property
    def duration_ns(self) -> int:
        return self.n_samples * NS_PER_S // self.sample_rate

    @property
    def duration_ms(self) -> int:
        return self.n_samples * 1000 // self.sample_rate

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def end_ns(self) -> int:
        return self.t0_ns + self.duration_ns


DeadlineFn = Callable[[int], float]


def _segment_buffer(size: int) -> mmap.mmap:
    """A segment's samples: an anonymous mapping, whose pages become resident as the segment
    fills (a `bytearray` of 1.1 MB is zeroed, all of it resident, the moment it is made); handed
    over whole to the segment's `Pcm`, and unmapped with it."""
    return mmap.mmap(-1, max(size, 1))


def _no_deadline(_t0_ns: int) -> float:
    return math.inf


class Segmenter:
    """Cut contiguous PCM into segments of exactly `segment_samples` and attach video packets.

    A segment is emitted when its audio is complete and no more video can belong to it: a video
    packet with `dts >= t0_next` has been seen (every later packet then has `pts >= dts >= t0_next`),
    the stream has no video, or the audio has run `video_wait_ns` past the segment's end.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        sample_rate: int,
        channels: int,
        segment_samples: int,
        min_tail_samples: int,
        has_video: bool = True,
        video_wait_ns: int = NS_PER_S,
        deadline_for: DeadlineFn = _no_deadline,
        original_needed: Callable[[], bool] | None = None,
    ) -> None:
        if segment_samples <= 0:
            raise ValueError("segment_samples must be positive")
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.channels = channels
        self.n = segment_samples
        self.min_tail_samples = min_tail_samples
        self.has_video = has_video
        self.video_wait_ns = video_wait_ns
        self.deadline_for = deadline_for
        self.original_needed = original_needed  # see SegmentAudio (None: every original is kept)
        self.audio_t0_ns: int | None = None
        self._frame_bytes = SAMPLE_BYTES * channels
        self._buf = _segment_buffer(self.n * self._frame_bytes)  # the open segment's samples
        self._fill = 0
        self._samples_total = 0
        self._next_batch = 0
        self._waiting: list[Segment] = []  # audio complete, waiting for video
        self._pre_video: list[VideoPacket] = []  # video seen before the first audio sample
        self._open_video: list[VideoPacket] = []  # video of the segment still being filled
        self._max_video_dts: int | None = None
        self._ready: list[Segment] = []
        self._finished = False
        # The input's packets of the audio pushed lately, while contiguous and unchanged:
        # (first sample, samples, packet). Set `coded_template` to collect them (see CodedAudio).
        self.coded_template: object | None = None
        self._coded: list[tuple[int, int, bytes]] = []

    # -- timeline -------------------------------------------------------------------------
    def t0_of(self, batch: int) -> int:
        """Exact start of segment `batch` on the input timeline (ns)."""
        if self.audio_t0_ns is None:
            raise RuntimeError("no audio yet")
        return self.audio_t0_ns + batch * self.n * NS_PER_S // self.sample_rate

    @property
    def samples_total(self) -> int:
        return self._samples_total

    @property
    def audio_end_ns(self) -> int | None:
        if self.audio_t0_ns is None:
            return None
        return self.audio_t0_ns + self._samples_total * NS_PER_S // self.sample_rate

    # -- input ----------------------------------------------------------------------------
    def push_audio(self, pcm: Pcm | Any, pts_ns: int | None = None, coded: Sequence[bytes] | None = None) -> None:
        """Append contiguous PCM (s16 `(n, channels)`). The first call's `pts_ns` is audio_t0.
        `coded`: the input packets this PCM was decoded from, unchanged, each into an equal share
        (else None)."""
        if self._finished:
            raise RuntimeError("segmenter finished")
        pcm = Pcm.of(pcm)
        if pcm.channels != self.channels:
            raise ValueError(f"expected (n, {self.channels}) PCM, got {pcm.shape}")
        self._note_coded(pcm.n, coded)
        if self.audio_t0_ns is None:
            self.audio_t0_ns = int(pts_ns) if pts_ns is not None else 0
            pre, self._pre_video = self._pre_video, []
            for pkt in pre:
                self._place_video(pkt)
        pos = 0
        total = pcm.n
        data, fb = pcm.data, self._frame_bytes
        while pos < total:
            take = min(self.n - self._fill, total - pos)
            self._buf[self._fill * fb : (self._fill + take) * fb] = data[pos * fb : (pos + take) * fb]
            self._fill += take
            pos += take
            self._samples_total += take
            if self._fill == self.n:
                self._waiting.append(self._make_segment(self._buf, self.n, is_tail=False))
                self._buf = _segment_buffer(self.n * fb)
                self._fill = 0
        self._release()

    def _note_coded(self, samples: int, coded: Sequence[bytes] | None) -> None:
        run = self._coded
        if not coded or self.coded_template is None or samples % len(coded):
            run.clear()
            return
        start = self._samples_total
        if run and run[-1][0] + run[-1][1] != start:
            run.clear()
        each = samples // len(coded)
        run.extend((start + i * each, each, data) for i, data in enumerate(coded))

    def break_coded(self) -> None:
        """The packets before this point cannot precede the next ones (a new connection)."""
        self._coded.clear()

    def _coded_for(self, start: int, n: int) -> CodedAudio | None:
        """The collected packets covering samples [start, start + n) plus the frame before."""
        run = self._coded
        if not run or self.coded_template is None:
            return None
        frame = run[0][1]
        picked = [(pos - start, data) for pos, size, data in run if pos + size > start - size and pos < start + n]
        last_pos, last_size, _ = run[-1]
        if not picked or picked[0][0] > -frame or last_pos + last_size < start + n:
            return None
        # keep what the next segment needs (its first frame and the one before)
        end = start + n
        self._coded = [e for e in run if e[0] + e[1] > end - e[1]]
        return CodedAudio(self.coded_template, tuple(picked), frame, self.sample_rate)

    def push_video(self, pkt: VideoPacket) -> None:
        if self._max_video_dts is None or pkt.dts_ns > self._max_video_dts:
            self._max_video_dts = pkt.dts_ns
        if self.audio_t0_ns is None:
            self._pre_video.append(pkt)
            return
        self._place_video(pkt)
        self._release()

    def _place_video(self, pkt: VideoPacket) -> None:
        assert self.audio_t0_ns is not None
        rel = pkt.pts_ns - self.audio_t0_ns
        batch = max(0, rel * self.sample_rate // (self.n * NS_PER_S)) if rel > 0 else 0
        for seg in self._waiting:
            if seg.batch >= batch:
                seg.video_packets.append(pkt)
                return
        # Belongs to the open segment (or to one already emitted: attach to the open one).
        self._open_video.append(pkt)

    def _make_segment(self, buf: mmap.mmap, n: int, *, is_tail: bool) -> Segment:
        """A segment of the first `n` samples of `buf` (handed over whole when full: never
        written again)."""
        batch = self._next_batch
        self._next_batch += 1
        t0 = self.t0_of(batch)
        size = n * self._frame_bytes
        pcm = Pcm(buf if size == len(buf) else bytes(buf[:size]), self.channels)
        dub = n >= self.min_tail_samples or not is_tail
        seg = Segment(
            id=str(uuid.uuid4()),
            stream_id=self.stream_id,
            batch=batch,
            t0_ns=t0,
            n_samples=n,
            sample_rate=self.sample_rate,
            channels=self.channels,
            audio=SegmentAudio(pcm, self.deadline_for(t0), original_needed=self.original_needed),
            is_tail=is_tail,
            dub=dub,
        )
        if not dub:
            seg.audio.set_fallback(FallbackReason.SHORT_TAIL)
        elif not is_tail:
            seg.coded = self._coded_for(batch * self.n, n)
        # Video already collected for this segment's span while it was open.
        end = seg.end_ns
        keep: list[VideoPacket] = []
        for pkt in self._open_video:
            (seg.video_packets if pkt.pts_ns < end else keep).append(pkt)
        self._open_video = keep
        return seg

    def _release(self) -> None:
        while self._waiting:
            seg = self._waiting[0]
            end = seg.end_ns
            video_done = (
                not self.has_video
                or (self._max_video_dts is not None and self._max_video_dts >= end)
                or (self.audio_end_ns is not None and self.audio_end_ns - end >= self.video_wait_ns)
            )
            if not video_done:
                break
            self._ready.append(self._waiting.pop(0))

    @property
    def waiting(self) -> int:
        """Segments whose audio is complete but that still wait for video."""
        return len(self._waiting)

    def release_waiting(self) -> None:
        """Stop waiting for video (the input went quiet: the last frame of a segment may be
        the last frame of the stream, and no later packet will come to prove it)."""
        self._ready.extend(self._waiting)
        self._waiting = []

    @property
    def open_samples(self) -> int:
        """Samples in the segment currently being filled (0 = at a boundary)."""
        return self._fill

    def pad_open_segment(self) -> int:
        """Complete the open segment with silence (input lost); returns the samples added.

        The segment keeps its exact length and its real audio goes out on time; a reconnect
        continues the sample clock after it.
        """
        if self._fill == 0 or self.audio_t0_ns is None:
            return 0
        missing = self.n - self._fill
        self.push_audio(Pcm.zeros(missing, self.channels))
        # No more video can arrive for it from this connection.
        for seg in self._waiting:
            self._ready.append(seg)
        self._waiting = []
        return missing

    def pop_ready(self) -> list[Segment]:
        """Segments completed since the last call, in batch order."""
        out, self._ready = self._ready, []
        return out

    def finish(self) -> list[Segment]:
        """End of stream: emit everything, including a partial tail (nothing is dropped)."""
        if self._finished:
            return self.pop_ready()
        self._finished = True
        self._ready.extend(self._waiting)
        self._waiting = []
        if self._fill > 0:
            self._ready.append(self._make_segment(self._buf, self._fill, is_tail=True))
            self._fill = 0
        if self._open_video or self._pre_video:
            leftover = self._pre_video + self._open_video
            self._pre_video, self._open_video = [], []
            if self._ready:
                self._ready[-1].video_packets.extend(leftover)
        return self.pop_ready()
