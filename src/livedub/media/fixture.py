"""Deterministic test media: H.264 + AAC MP4 with A/V sync markers and per-segment tones.

At known, irregular instants (on frame boundaries, never near a segment boundary) one video
frame is white and a 1 kHz beep starts on the same instant. Each segment of `segment_s` carries
a background tone with its own frequency, so an analysis can tell which segment's audio ended up
where. A 16-bit frame counter is drawn in the top-left corner (black/white blocks) so dropped or
repeated frames can be detected. `audio_drift_ppm` makes a "publisher whose audio clock drifts":
audio timestamps run `ppm` faster than the sample count (markers stay true by timestamps).

Generation is pure PyAV (libx264 ultrafast + native AAC); the same spec always gives the same
markers and tones. This module never downloads media and never shells out to ffmpeg.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

BEEP_HZ = 1000.0
BEEP_S = 0.1
BEEP_AMPLITUDE = 0.5
TONE_AMPLITUDE = 0.1
TONE_BASE_HZ = 200.0
TONE_STEP_HZ = 25.0
TONE_COUNT = 28  # 200 .. 875 Hz, then the sequence repeats
COUNTER_BITS = 16
COUNTER_BLOCK = 16  # pixels per counter bit (square)
LUMA_BG = 40
LUMA_BAR = 90
LUMA_WHITE = 235
LUMA_BLACK = 16


def segment_tone_hz(index: int) -> float:
    """Background tone frequency of segment `index` (distinct for 28 consecutive segments)."""
    return TONE_BASE_HZ + TONE_STEP_HZ * (index % TONE_COUNT)


def tone_segment_index(freq_hz: float, tolerance_hz: float = 6.0) -> int | None:
    """Inverse of `segment_tone_hz` modulo TONE_COUNT, or None if not a segment tone."""
    k = round((freq_hz - TONE_BASE_HZ) / TONE_STEP_HZ)
    if 0 <= k < TONE_COUNT and abs(segment_tone_hz(k) - freq_hz) <= tolerance_hz:
        return k
    return None


@dataclass(frozen=True)
class FixtureSpec:
    duration_s: float = 60.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    sample_rate: int = 48000
    channels: int = 2
    segment_s: float = 6.0
    gop_s: float = 2.0
    audio_drift_ppm: float = 0.0
    crf: int = 30
    audio_bitrate: int = 128_000

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    @property
    def n_samples(self) -> int:
        return round(self.duration_s * self.sample_rate)


@dataclass
class FixtureInfo:
    path: str
    spec: FixtureSpec
    marker_frames: list[int]
    marker_times_s: list[float]
    segment_tones_hz: list[float]
    generation_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = asdict(self)
        return json.dumps(doc, indent=2)


def marker_frames(spec: FixtureSpec) -> list[int]:
    """Frame indices of the sync markers: one per segment at an irregular offset.

    Offsets follow a golden-ratio sequence inside each segment, at least `margin` from both
    segment boundaries, and only where the whole beep fits before the end of the fixture.
    """
    seg_frames = spec.segment_s * spec.fps
    margin_s = min(0.5, spec.segment_s / 4)
    span_s = spec.segment_s - 2 * margin_s - BEEP_S
    out: list[int] = []
    n_segments = math.ceil(spec.duration_s / spec.segment_s)
    for k in range(n_segments):
        frac = (0.618034 * k + 0.3) % 1.0
        off_s = margin_s + frac * max(0.0, span_s)
        frame = round(k * seg_frames + off_s * spec.fps)
        t = frame / spec.fps
        seg_start = k * spec.segment_s
        if t - seg_start < margin_s * 0.5 or seg_start + spec.segment_s - t < margin_s * 0.5:
            continue
        if t + BEEP_S + 0.05 > spec.duration_s:
            continue
        out.append(frame)
    return out


def _audio_signal(spec: FixtureSpec, frames: list[int]) -> np.ndarray:
    """float32 mono signal on the *sample* axis (drift: sample n is at time n·(1+ppm)/rate)."""
    rate = spec.sample_rate
    scale = 1.0 + spec.audio_drift_ppm * 1e-6
    n = math.ceil(spec.duration_s * rate / scale)
    t = np.arange(n, dtype=np.float64) * (scale / rate)  # timestamp-true time of each sample
    seg_index = np.floor(t / spec.segment_s).astype(np.int64)
    freqs = TONE_BASE_HZ + TONE_STEP_HZ * (seg_index % TONE_COUNT)
    sig = TONE_AMPLITUDE * np.sin(2 * np.pi * freqs * t)
    for frame in frames:
        t_m = frame / spec.fps
        start = math.ceil(t_m * rate / scale - 1e-9)
        length = round(BEEP_S * rate / scale)
        tt = np.arange(length) / rate
        sig[start : start + length] += BEEP_AMPLITUDE * np.sin(2 * np.pi * BEEP_HZ * tt)
    return sig.astype(np.float32)


def _video_planes(spec: FixtureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Base yuv420p image (as one (h*3/2, w) array) and a white one."""
    h, w = spec.height, spec.width
    base = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
    base[:h] = LUMA_BG
    white = base.copy()
    white[:h] = LUMA_WHITE
    return base, white


def _draw_counter(img: np.ndarray, frame_no: int) -> None:
    b = COUNTER_BLOCK
    for bit in range(COUNTER_BITS):
        val = LUMA_WHITE if (frame_no >> bit) & 1 else LUMA_BLACK
        img[b : 2 * b, (bit + 1) * b : (bit + 2) * b] = val


def read_counter(luma: np.ndarray) -> int:
    """Frame number drawn by `_draw_counter`, from a decoded luma plane (h, w)."""
    b = COUNTER_BLOCK
    value = 0
    for bit in range(COUNTER_BITS):
        y0, x0 = b + b // 4, (bit + 1) * b + b // 4
        block = luma[y0 : y0 + b // 2, x0 : x0 + b // 2]
        if float(block.mean()) > 128:
            value |= 1 << bit
    return value


def make_fixture(
    path: str | Path, spec: FixtureSpec | None = None, *, voice: np.ndarray | None = None
) -> FixtureInfo:
    """Write the fixture MP4 to `path` and return what is in it.

    `voice` (float32 mono at `spec.sample_rate`, e.g. a spoken track) is added over the tones
    and markers (cut or zero-padded to the fixture's length)."""
    spec = spec or FixtureSpec()
    if spec.width % 2 or spec.height % 2:
        raise ValueError("width and height must be even")
    if spec.channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    started = time.monotonic()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = marker_frames(spec)
    flash = set(frames)
    audio = _audio_signal(spec, frames)
    if voice is not None:
        n = min(audio.shape[0], voice.shape[0])
        audio[:n] = np.clip(audio[:n] + voice[:n].astype(np.float32), -1.0, 1.0)
    gop = max(1, round(spec.gop_s * spec.fps))
    layout = "mono" if spec.channels == 1 else "stereo"
    scale = 1.0 + spec.audio_drift_ppm * 1e-6
    with av.open(str(path), "w", format="mp4") as out:
        v, a = _add_streams(out, spec, gop, layout)
        _write_media(out, v, a, spec, audio, flash, layout, scale)
    elapsed = time.monotonic() - started
    return FixtureInfo(
        path=str(path),
        spec=spec,
        marker_frames=frames,
        marker_times_s=[f / spec.fps for f in frames],
        segment_tones_hz=[segment_tone_hz(k) for k in range(math.ceil(spec.duration_s / spec.segment_s))],
        generation_s=round(elapsed, 3),
    )


def _add_streams(
    out: av.container.OutputContainer, spec: FixtureSpec, gop: int, layout: str
) -> tuple[Any, Any]:
    """The H.264 video (fixed GOP, no B-frames) and AAC audio streams of the fixture."""
    v = out.add_stream(
        "libx264",
        rate=spec.fps,
        options={
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": str(spec.crf),
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
        },
    )
    v.width, v.height, v.pix_fmt = spec.width, spec.height, "yuv420p"
    v.codec_context.time_base = Fraction(1, spec.fps)
    v.codec_context.gop_size = gop
    a = out.add_stream("aac", rate=spec.sample_rate, layout=layout)
    a.bit_rate = spec.audio_bitrate
    return v, a


def _write_media(
    out: av.container.OutputContainer,
    v: Any,
    a: Any,
    spec: FixtureSpec,
    audio: np.ndarray,
    flash: set[int],
    layout: str,
    scale: float,
) -> None:
    """Encode every video frame (white at the markers, a moving bar and the frame counter
    otherwise) interleaved with the audio up to its end, then flush both encoders."""
    base, white = _video_planes(spec)
    bar_w = max(8, spec.width // 32)
    n_audio = audio.shape[0]
    a_pos = 0
    frame_s = 1024
    for i in range(spec.n_frames):
        img = (white if i in flash else base).copy()
        if i not in flash:
            x = (i * 8) % max(1, spec.width - bar_w)
            img[spec.height // 2 : spec.height // 2 + spec.height // 8, x : x + bar_w] = LUMA_BAR
        _draw_counter(img, i)
        vf = av.VideoFrame.from_ndarray(img, format="yuv420p")
        vf.pts = i
        vf.time_base = Fraction(1, spec.fps)
        out.mux(v.encode(vf))
        # Audio up to the end of this video frame (interleaving; timestamps by sample axis).
        a_until = min(n_audio, math.ceil((i + 1) / spec.fps * spec.sample_rate / scale))
        while a_pos < a_until:
            chunk = audio[a_pos : a_pos + frame_s]
            planar = np.ascontiguousarray(np.tile(chunk, (spec.channels, 1)))
            af = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            af.sample_rate = spec.sample_rate
            af.pts = a_pos
            af.time_base = Fraction(1, spec.sample_rate)
            for pkt in a.encode(af):
                _mux_audio(out, pkt, scale)
            a_pos += chunk.shape[0]
    out.mux(v.encode(None))
    for pkt in a.encode(None):
        _mux_audio(out, pkt, scale)


def _mux_audio(out: av.container.OutputContainer, pkt: av.Packet, scale: float) -> None:
    if scale != 1.0 and pkt.pts is not None:
        pkt.pts = round(pkt.pts * scale)
        pkt.dts = pkt.pts
        if pkt.duration:
            pkt.duration = round(pkt.duration * scale)
    out.mux(pkt)


class FixtureError(RuntimeError):
    """A fixture file is not what its spec says (truncated, corrupt, or another spec)."""


def verify_fixture(path: str | Path, spec: FixtureSpec) -> None:
    """Demux the whole file and check it holds what `spec` describes: H.264 + AAC, every video
    frame, the full audio duration. Raises `FixtureError` naming what is wrong."""
    try:
        with av.open(str(path)) as inp:
            video = next((st for st in inp.streams if st.type == "video"), None)
            audio = next((st for st in inp.streams if st.type == "audio"), None)
            if video is None or audio is None:
                raise FixtureError(f"{path}: needs one video and one audio stream")
            if (video.codec_context.name, audio.codec_context.name) != ("h264", "aac"):
                raise FixtureError(f"{path}: codecs are not h264 + aac")
            frames, audio_end = 0, 0.0
            for pkt in inp.demux(video, audio):
                if pkt.size == 0 or pkt.pts is None or pkt.time_base is None:
                    continue
                if pkt.stream.index == video.index:
                    frames += 1
                else:
                    audio_end = max(audio_end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
    except av.FFmpegError as exc:
        raise FixtureError(f"{path}: unreadable: {exc}") from exc
    if frames != spec.n_frames:
        raise FixtureError(f"{path}: {frames} video frames, want {spec.n_frames}")
    want_s = spec.duration_s * (1.0 + spec.audio_drift_ppm * 1e-6)
    if abs(audio_end - want_s) > 0.05:
        raise FixtureError(f"{path}: audio ends at {audio_end:.3f} s, want {want_s:.3f} s")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _is_current(path: Path, spec: FixtureSpec) -> bool:
    """True if `path` is the verified output of `spec`: its stamp (written only after a verified
    generation) names this spec and the file's exact size and sha256."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        if stamp.get("spec") != asdict(spec) or stamp.get("bytes") != path.stat().st_size:
            return False
        return bool(stamp.get("sha256") == _sha256(path))
    except (OSError, ValueError):
        return False


def ensure_fixture(path: str | Path, spec: FixtureSpec | None = None) -> bool:
    """Make sure `path` holds the fixture of `spec`, generating it at most once however many
    processes ask at the same time (pytest-xdist workers, concurrent runs): an exclusive lock on
    `<path>.lock` serialises them; a file is reused only if its stamp (`<path>.json`: spec, size,
    sha256, written after the generated file was verified) matches, so a truncated or corrupt
    file is regenerated, never reused; a new file is written under a per-process temporary name,
    verified, and renamed into place atomically. Returns True if this call generated the file."""
    spec = spec or FixtureSpec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (also if we crash)
        if path.exists() and _is_current(path, spec):
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
        try:
            make_fixture(tmp, spec)
            verify_fixture(tmp, spec)
            stamp = {"spec": asdict(spec), "bytes": tmp.stat().st_size, "sha256": _sha256(tmp)}
            _stamp_path(path).unlink(missing_ok=True)  # no stamp while the file changes
            os.replace(tmp, path)
            stamp_tmp = tmp.with_suffix(".json")
            stamp_tmp.write_text(json.dumps(stamp, indent=2))
            os.replace(stamp_tmp, _stamp_path(path))
        finally:
            tmp.unlink(missing_ok=True)
        return True
