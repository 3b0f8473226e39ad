"""Analyse a file or a live URL: duration, codecs, per-track PTS ranges, gaps, the *true* A/V
offset at every sync marker (decoded white-flash time vs decoded 1 kHz beep onset), and the
order of the per-segment background tones — as a typed `Analysis`, JSON and a PNG plot.

Everything is decoded (that is the point: the offset is what a viewer sees, not what the
timestamps claim). Used by tests as a library (`analyze(path_or_url)`) and by `livedub analyze`.
It never writes anything except the optional JSON/PNG it is asked for.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
from pydantic import BaseModel, Field

from livedub.media.fixture import (
    BEEP_HZ,
    COUNTER_BITS,
    COUNTER_BLOCK,
    TONE_BASE_HZ,
    TONE_COUNT,
    TONE_STEP_HZ,
    read_counter,
    tone_segment_index,
)
from livedub.media.urls import input_options_for

_log = logging.getLogger(__name__)

FLASH_LUMA = 180.0
ENVELOPE_WINDOW_S = 0.010
PAIR_WINDOW_S = 0.5
JITTER_S = 0.0015  # audio timestamp jitter (FLV rounds to 1 ms) played as contiguous
TONE_WINDOW_S = 0.5
TONE_HOP_S = 0.25
SILENCE_DBFS = -60.0  # below this peak level, a 10 ms block (ENVELOPE_WINDOW_S) is silent
SILENCE_MIN_S = 0.5  # shortest stretch of silence reported (dead air)


class Gap(BaseModel):
    at_s: float
    length_ms: float


class TrackInfo(BaseModel):
    kind: str
    codec: str
    start_s: float | None = None
    end_s: float | None = None
    frames: int = 0
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    gaps: list[Gap] = Field(default_factory=list)
    overlaps: list[Gap] = Field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if self.start_s is None or self.end_s is None:
            return 0.0
        return self.end_s - self.start_s


class Marker(BaseModel):
    flash_s: float
    beep_s: float
    offset_ms: float  # beep minus flash: positive = audio late


class ToneRun(BaseModel):
    start_s: float
    end_s: float
    freq_hz: float
    segment_index: int | None


class Analysis(BaseModel):
    source: str
    format: str = ""
    duration_s: float = 0.0
    container_duration_s: float | None = None
    video: TrackInfo | None = None
    audio: TrackInfo | None = None
    markers: list[Marker] = Field(default_factory=list)
    unmatched_flashes_s: list[float] = Field(default_factory=list)
    unmatched_beeps_s: list[float] = Field(default_factory=list)
    tone_runs: list[ToneRun] = Field(default_factory=list)
    tone_order: list[int] = Field(default_factory=list)
    # stretches of digital silence ≥ SILENCE_MIN_S (dead air), to ENVELOPE_WINDOW_S precision
    silences: list[Gap] = Field(default_factory=list)
    frame_counter_errors: int = 0  # frames whose counter is not previous+1
    first_frame_number: int | None = None

    @property
    def max_abs_offset_ms(self) -> float:
        return max((abs(m.offset_ms) for m in self.markers), default=0.0)

    @property
    def codecs(self) -> tuple[str | None, str | None]:
        return (self.video.codec if self.video else None, self.audio.codec if self.audio else None)

    def summary(self) -> dict[str, Any]:
        doc = self.model_dump()
        doc["max_abs_offset_ms"] = round(self.max_abs_offset_ms, 2)
        return doc


def analyze(
    source: str | Path,
    *,
    max_duration_s: float | None = None,
    timeout_s: float = 20.0,
    options: dict[str, str] | None = None,
    audio_track: int = 0,
) -> Analysis:
    """Decode `source` (file path or URL) completely (or `max_duration_s` of it) and analyse it:
    its first video stream and its `audio_track`-th audio stream (0: the first; 1: the original
    sound a worker with `--keep-original` writes as the second track)."""
    src = str(source)
    opts = dict(input_options_for(src))
    opts.update(options or {})
    with av.open(src, "r", options=opts, timeout=timeout_s) as container:
        result = Analysis(source=src, format=container.format.name)
        if container.duration is not None:
            result.container_duration_s = container.duration / av.time_base
        vstream = container.streams.video[0] if container.streams.video else None
        audios = container.streams.audio
        astream = audios[audio_track] if len(audios) > audio_track else None
        streams: list[Any] = [s for s in (vstream, astream) if s is not None]
        _describe_tracks(result, vstream, astream)
        v_times: list[float] = []
        v_luma: list[float] = []
        v_counter: list[int] = []
        a_frames: list[tuple[float, np.ndarray, int]] = []
        a_rate = astream.codec_context.sample_rate if astream is not None else 0
        _decode(container, streams, max_duration_s, v_times, v_luma, v_counter, a_frames)
        if a_frames:
            a_rate = a_frames[0][2]
    _measure(result, v_times, v_luma, v_counter, a_frames, a_rate)
    return result


def _describe_tracks(result: Analysis, vstream: Any | None, astream: Any | None) -> None:
    """The tracks' codec parameters, as the container declares them."""
    if vstream is not None:
        vstream.thread_type = "AUTO"
        result.video = TrackInfo(
            kind="video",
            codec=vstream.codec_context.name,
            width=vstream.codec_context.width,
            height=vstream.codec_context.height,
            fps=float(vstream.average_rate) if vstream.average_rate else None,
        )
    if astream is not None:
        result.audio = TrackInfo(
            kind="audio",
            codec=astream.codec_context.name,
            sample_rate=astream.codec_context.sample_rate,
            channels=astream.codec_context.channels,
        )


def _decode(
    container: Any,
    streams: list[Any],
    max_duration_s: float | None,
    v_times: list[float],
    v_luma: list[float],
    v_counter: list[int],
    a_frames: list[tuple[float, np.ndarray, int]],
) -> None:
    """Decode `streams` (up to `max_duration_s`), then the frames still inside the decoders, into
    the lists `_collect` fills."""
    try:
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue
            if not _collect(frames, max_duration_s, v_times, v_luma, v_counter, a_frames):
                break
    except (av.FFmpegError, OSError) as exc:
        # A live source that stops sending ends with a read timeout: that is its end.
        if not v_times and not a_frames:
            raise
        _log.info("analysis input ended: %s", exc)
    for stream in streams:  # frames still inside the decoders (frame threading delays)
        try:
            flushed = stream.decode(None)
        except av.FFmpegError:
            continue
        for frame in flushed:
            if frame.time_base is None:  # flushed frames lose their time base
                frame.time_base = stream.time_base
        _collect(flushed, max_duration_s, v_times, v_luma, v_counter, a_frames)


def _measure(
    result: Analysis,
    v_times: list[float],
    v_luma: list[float],
    v_counter: list[int],
    a_frames: list[tuple[float, np.ndarray, int]],
    a_rate: int,
) -> None:
    """Fill `result` from the decoded frames: track ranges, frame counter, duration, A/V offset at
    every marker, tone order and silences."""
    if result.video is not None and v_times:
        _fill_video(result.video, v_times)
        c = np.array(v_counter)
        if (c >= 0).all() and len(c) > 1:
            result.first_frame_number = int(c[0])
            result.frame_counter_errors = int(np.count_nonzero(np.diff(c) != 1))
    signal = np.zeros(0, dtype=np.float32)
    a_start = 0.0
    if result.audio is not None and a_frames:
        signal, a_start = _fill_audio(result.audio, a_frames, a_rate)
    starts = [t.start_s for t in (result.video, result.audio) if t and t.start_s is not None]
    ends = [t.end_s for t in (result.video, result.audio) if t and t.end_s is not None]
    if starts and ends:
        result.duration_s = max(ends) - min(starts)
    flashes = _flash_times(v_times, v_luma)
    beeps = _beep_onsets(signal, a_rate, a_start) if a_rate else []
    _pair(result, flashes, beeps)
    if a_rate:
        result.tone_runs = _tone_runs(signal, a_rate, a_start)
        result.tone_order = [r.segment_index for r in result.tone_runs if r.segment_index is not None]
        audio_end_s = result.audio.end_s if result.audio and result.audio.end_s is not None else a_start
        result.silences = _silences(signal[: round((audio_end_s - a_start) * a_rate)], a_rate, a_start)


def _silences(signal: np.ndarray, rate: int, start_s: float) -> list[Gap]:
    """Stretches where every ENVELOPE_WINDOW_S block peaks below SILENCE_DBFS, ≥ SILENCE_MIN_S long."""
    block = max(1, int(ENVELOPE_WINDOW_S * rate))
    n = len(signal) // block
    if n == 0:
        return []
    peaks = np.abs(signal[: n * block]).reshape(n, block).max(axis=1)
    silent = np.concatenate(([False], peaks < 10 ** (SILENCE_DBFS / 20), [False]))
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    out = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if (b - a) * block >= SILENCE_MIN_S * rate:
            out.append(Gap(at_s=start_s + a * block / rate, length_ms=(b - a) * block * 1000 / rate))
    return out


def _collect(
    frames: list[Any],
    max_duration_s: float | None,
    v_times: list[float],
    v_luma: list[float],
    v_counter: list[int],
    a_frames: list[tuple[float, np.ndarray, int]],
) -> bool:
    """Record decoded frames; False once `max_duration_s` of media has been seen."""
    for frame in frames:
        if frame.pts is None or frame.time_base is None:
            continue
        t = float(frame.pts * frame.time_base)
        first = min(v_times[0] if v_times else t, a_frames[0][0] if a_frames else t)
        if max_duration_s is not None and t - first > max_duration_s:
            return False
        if isinstance(frame, av.VideoFrame):
            luma = _luma(frame)
            v_times.append(t)
            v_luma.append(float(luma[::8, ::8].mean()))
            wide_enough = luma.shape[1] >= (COUNTER_BITS + 2) * COUNTER_BLOCK
            v_counter.append(read_counter(luma) if wide_enough else -1)
        elif isinstance(frame, av.AudioFrame):
            arr = frame.to_ndarray()
            if frame.format.is_planar:
                mono = arr.astype(np.float32).mean(axis=0)
            else:
                mono = arr.reshape(-1, frame.layout.nb_channels).astype(np.float32).mean(axis=1)
            if frame.format.name.startswith("s16"):
                mono /= 32768.0
            a_frames.append((t, mono, frame.sample_rate))
    return True


def _luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12"):
        return frame.to_ndarray(format="gray")
    return buf.reshape(-1, plane.line_size)[: frame.height, : frame.width]


def _fill_video(track: TrackInfo, times: list[float]) -> None:
    ts = np.array(sorted(times))
    track.frames = len(ts)
    if len(ts) > 1:
        step = float(np.median(np.diff(ts)))
    else:
        step = 1.0 / (track.fps or 30.0)
    track.start_s = float(ts[0])
    track.end_s = float(ts[-1] + step)
    if track.fps is None and step > 0:
        track.fps = 1.0 / step
    d = np.diff(ts)
    for i in np.nonzero(d > 1.5 * step)[0]:
        track.gaps.append(Gap(at_s=float(ts[i] + step), length_ms=float((d[i] - step) * 1000)))


def _fill_audio(
    track: TrackInfo, frames: list[tuple[float, np.ndarray, int]], rate: int
) -> tuple[np.ndarray, float]:
    frames.sort(key=lambda f: f[0])
    start = frames[0][0]
    end = max(t + len(x) / rate for t, x, _ in frames)
    track.start_s, track.end_s, track.frames = start, end, len(frames)
    tol = max(0.002, 1.5 / rate)
    prev_end: float | None = None
    for t, x, _ in frames:
        if prev_end is not None:
            if t > prev_end + tol:
                track.gaps.append(Gap(at_s=prev_end, length_ms=(t - prev_end) * 1000))
            elif t < prev_end - tol:
                track.overlaps.append(Gap(at_s=t, length_ms=(prev_end - t) * 1000))
        prev_end = t + len(x) / rate
    signal = np.zeros(int(math.ceil((end - start) * rate)) + rate, dtype=np.float32)
    next_i: int | None = None
    for t, x, _ in frames:
        i = int(round((t - start) * rate))
        # Timestamp jitter within the gap tolerance (e.g. FLV's millisecond rounding) is played
        # contiguously, as a player does; only real gaps/overlaps move the frame.
        if next_i is not None and abs(i - next_i) <= JITTER_S * rate:
            i = next_i
        elif next_i is not None and 0 < i - next_i <= tol * rate and next_i > 0:
            # A small hole (drifting timestamps): bridge it instead of leaving zeros.
            signal[next_i:i] = np.linspace(signal[next_i - 1], x[0], i - next_i, endpoint=False)
        n = min(len(x), len(signal) - i)
        if n > 0:
            signal[i : i + n] = x[:n]
        next_i = i + len(x)
    return signal, start


def _flash_times(times: list[float], luma: list[float]) -> list[float]:
    order = np.argsort(times)
    out: list[float] = []
    prev = False
    for i in order:
        bright = luma[i] > FLASH_LUMA
        if bright and not prev:
            out.append(float(times[i]))
        prev = bright
    return out


def _beep_onsets(signal: np.ndarray, rate: int, start_s: float) -> list[float]:
    """Onsets of 1 kHz bursts: complex demodulation, 10 ms boxcar, 50 % crossing, interpolated."""
    if len(signal) < rate // 10:
        return []
    n = np.arange(len(signal))
    osc = np.exp(-2j * np.pi * BEEP_HZ * n / rate)
    base = signal * osc
    win = max(1, int(round(ENVELOPE_WINDOW_S * rate)))
    cs = np.concatenate([[0], np.cumsum(base)])
    env = np.abs(cs[win:] - cs[:-win]) / win  # env[i] covers samples [i, i+win)
    peak = float(env.max()) if len(env) else 0.0
    if peak < 0.02:
        return []
    thr = 0.5 * peak
    above = env > thr
    rising = np.nonzero(above[1:] & ~above[:-1])[0] + 1
    onsets: list[float] = []
    last = -math.inf
    for i in rising:
        # env[i] averages samples [i, i+win): a step at sample s crosses 50 % when the window
        # is half-filled, i.e. at i = s - win/2. Interpolate the crossing between i-1 and i.
        y0, y1 = env[i - 1], env[i]
        frac = (thr - y0) / (y1 - y0) if y1 != y0 else 0.0
        t = start_s + (i - 1 + frac + win / 2) / rate
        if t - last > 0.3:
            onsets.append(t)
            last = t
    return onsets


def _pair(result: Analysis, flashes: list[float], beeps: list[float]) -> None:
    used: set[int] = set()
    for f in flashes:
        best, best_d = None, PAIR_WINDOW_S
        for j, b in enumerate(beeps):
            if j in used:
                continue
            d = abs(b - f)
            if d <= best_d:
                best, best_d = j, d
        if best is None:
            result.unmatched_flashes_s.append(round(f, 4))
            continue
        used.add(best)
        result.markers.append(
            Marker(flash_s=round(f, 4), beep_s=round(beeps[best], 4), offset_ms=round((beeps[best] - f) * 1000, 2))
        )
    result.unmatched_beeps_s = [round(b, 4) for j, b in enumerate(beeps) if j not in used]


def _tone_runs(signal: np.ndarray, rate: int, start_s: float) -> list[ToneRun]:
    win = int(TONE_WINDOW_S * rate)
    hop = int(TONE_HOP_S * rate)
    if len(signal) < win:
        return []
    freqs = np.fft.rfftfreq(win, 1.0 / rate)
    band = (freqs >= TONE_BASE_HZ - TONE_STEP_HZ) & (
        freqs <= TONE_BASE_HZ + TONE_STEP_HZ * (TONE_COUNT - 1) + TONE_STEP_HZ
    )
    window = np.hanning(win).astype(np.float32)
    idx_band = np.nonzero(band)[0]
    labels: list[tuple[float, float, int | None]] = []
    for s in range(0, len(signal) - win + 1, hop):
        spec = np.abs(np.fft.rfft(signal[s : s + win] * window))
        sub = spec[idx_band]
        k = int(np.argmax(sub))
        if sub[k] < 1e-3 * win:
            labels.append((start_s + s / rate, 0.0, None))
            continue
        i = idx_band[k]
        # Parabolic interpolation of the peak.
        if 0 < i < len(spec) - 1:
            a, b, c = spec[i - 1], spec[i], spec[i + 1]
            p = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        else:
            p = 0.0
        f = float((i + p) * rate / win)
        labels.append((start_s + s / rate, f, tone_segment_index(f)))
    runs: list[ToneRun] = []
    for t, f, seg in labels:
        if runs and runs[-1].segment_index == seg:
            runs[-1].end_s = t + TONE_WINDOW_S
            continue
        runs.append(ToneRun(start_s=t, end_s=t + TONE_WINDOW_S, freq_hz=round(f, 1), segment_index=seg))
    # Drop transition blips (shorter than 3 hops) between real runs, then merge neighbours.
    kept = [r for r in runs if r.end_s - r.start_s >= TONE_WINDOW_S + 2 * TONE_HOP_S - 1e-9]
    merged: list[ToneRun] = []
    for r in kept:
        if merged and merged[-1].segment_index == r.segment_index:
            merged[-1].end_s = r.end_s
        else:
            merged.append(r)
    return merged


def write_plot(analysis: Analysis, path: str | Path) -> None:
    """PNG: marker offsets over time, tone runs, and track coverage with gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax = axes[0]
    xs = [m.flash_s for m in analysis.markers]
    ys = [m.offset_ms for m in analysis.markers]
    ax.axhspan(-33.3, 33.3, color="tab:green", alpha=0.12, label="±1 frame (33 ms)")
    ax.plot(xs, ys, "o-", color="tab:blue", label="beep − flash (ms)")
    for f in analysis.unmatched_flashes_s:
        ax.axvline(f, color="tab:red", ls=":", lw=1)
    ax.set_ylabel("A/V offset (ms)")
    ax.set_title(f"{analysis.source}  (max |offset| {analysis.max_abs_offset_ms:.1f} ms)")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    for r in analysis.tone_runs:
        ax.plot([r.start_s, r.end_s], [r.freq_hz, r.freq_hz], lw=6, solid_capstyle="butt")
        if r.segment_index is not None:
            ax.text(r.start_s, r.freq_hz + 8, str(r.segment_index), fontsize=8)
    ax.set_ylabel("segment tone (Hz)")
    ax = axes[2]
    for row, track in enumerate((analysis.video, analysis.audio)):
        if track is None or track.start_s is None or track.end_s is None:
            continue
        ax.plot([track.start_s, track.end_s], [row, row], lw=10, solid_capstyle="butt", label=track.kind)
        for g in track.gaps:
            ax.plot([g.at_s, g.at_s + g.length_ms / 1000], [row, row], lw=10, color="tab:red")
    ax.set_yticks([0, 1], ["video", "audio"])
    ax.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=90)
    plt.close(fig)
