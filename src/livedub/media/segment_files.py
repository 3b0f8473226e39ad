"""Segment files on disk: `{segment_dir}/{stream_id}/{batch:06d}_video.mp4`, `_audio.m4a`,
`_dubbed.m4a`, for inspection and debugging, with a retention limit per stream.

Writes run on one background thread so the pipeline never waits for a disk. A write failure
(disk full, unwritable directory, ...) is logged once per kind, counted through a callback, and
never stops dubbing. Stream ids are validated so no path can escape `segment_dir`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av

from livedub.log import bind
from livedub.media.audio import encode_pcm
from livedub.media.input import VideoTemplate
from livedub.media.observer import WriteErrorKind
from livedub.media.pcm import Pcm
from livedub.media.segment import NS_PER_S, Segment, VideoPacket
from livedub.media.settings import validate_stream_id

_log = logging.getLogger(__name__)

ErrorFn = Callable[[str, str], None]
KINDS = ("video", "audio", "dubbed")


def segment_paths(segment_dir: Path, stream_id: str, batch: int) -> dict[str, Path]:
    """The three file paths of one batch (stream id validated)."""
    base = Path(segment_dir) / validate_stream_id(stream_id)
    return {
        "video": base / f"{batch:06d}_video.mp4",
        "audio": base / f"{batch:06d}_audio.m4a",
        "dubbed": base / f"{batch:06d}_dubbed.m4a",
    }


def write_video_mp4(path: Path, template: VideoTemplate, packets: list[VideoPacket]) -> None:
    """Remux a segment's video packets into an MP4 whose timeline starts at 0."""
    if not packets:
        return
    origin = min(p.dts_ns for p in packets)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream_from_template(template.stream)
        out.start_encoding()
        tb = stream.time_base
        den, num = tb.denominator, tb.numerator * NS_PER_S
        last = None
        for pkt in packets:
            p = av.Packet(pkt.data)
            p.stream = stream
            p.time_base = tb
            dts = ((pkt.dts_ns - origin) * den + num // 2) // num
            if last is not None and dts <= last:
                dts = last + 1
            last = dts
            p.dts = dts
            p.pts = max(dts, ((pkt.pts_ns - origin) * den + num // 2) // num)
            p.duration = (pkt.duration_ns * den + num // 2) // num
            p.is_keyframe = pkt.keyframe
            out.mux(p)


class SegmentFileWriter:
    """Write segment files in the background; keep the last `retention` batches per stream."""

    def __init__(
        self,
        segment_dir: Path,
        stream_id: str,
        *,
        retention: int = 50,
        bitrate: int = 128_000,
        on_error: ErrorFn | None = None,
    ) -> None:
        self.segment_dir = Path(segment_dir)
        self.stream_id = validate_stream_id(stream_id)
        self.retention = max(1, retention)
        self.bitrate = bitrate
        self.on_error = on_error
        self.video_template: VideoTemplate | None = None
        self.log = bind(_log, stream_id=self.stream_id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-files")
        self._batches: deque[int] = deque()
        self._logged: set[str] = set()
        self.errors = 0
        self.written = 0
        self._pending: list[Future[Any]] = []

    @property
    def directory(self) -> Path:
        return self.segment_dir / self.stream_id

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        try:
            self._pending.append(self._executor.submit(self._guard, fn, *args))
        except RuntimeError:  # executor shut down
            pass

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - any write failure is reported, never raised
            self.errors += 1
            kind = type(exc).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                self.log.warning(
                    "segment file write failed (dubbing continues; further failures counted only)",
                    ctx={"dir": str(self.directory), "error": f"{kind}: {exc}"},
                )
            if self.on_error is not None:
                try:
                    self.on_error(WriteErrorKind.SEGMENT_FILE, f"{kind}: {exc}")
                except Exception:  # noqa: BLE001
                    pass

    def write_segment(self, segment: Segment) -> None:
        """Queue `_video.mp4` and `_audio.m4a` of a new segment (returns at once; its audio is
        taken now: a dubbed segment may let its original go before the write runs)."""
        self._submit(self._write_segment, segment, segment.pcm)

    def write_dubbed(self, segment: Segment, pcm: Pcm) -> None:
        """Queue `_dubbed.m4a` for a segment whose dubbed audio was used."""
        self._submit(self._write_audio, segment.batch, "dubbed", pcm, segment.sample_rate)

    def _write_segment(self, segment: Segment, pcm: Pcm) -> None:
        paths = segment_paths(self.segment_dir, self.stream_id, segment.batch)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._batches.append(segment.batch)
        self._prune()
        if self.video_template is not None and segment.video_packets:
            write_video_mp4(paths["video"], self.video_template, segment.video_packets)
        self._write_audio(segment.batch, "audio", pcm, segment.sample_rate)
        self.written += 1

    def _write_audio(self, batch: int, kind: str, pcm: Pcm, rate: int) -> None:
        if kind == "dubbed" and batch not in self._batches:
            return  # already past retention (or never written): keep the directory bounded
        path = segment_paths(self.segment_dir, self.stream_id, batch)[kind]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_pcm(pcm, rate, "m4a", bitrate=self.bitrate)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def _prune(self) -> None:
        while len(self._batches) > self.retention:
            old = self._batches.popleft()
            for path in segment_paths(self.segment_dir, self.stream_id, old).values():
                path.unlink(missing_ok=True)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for queued writes (tests, shutdown)."""
        for f in list(self._pending):
            try:
                f.result(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - already reported by _guard
                pass

    def close(self) -> None:
        self._executor.shutdown(wait=True)
