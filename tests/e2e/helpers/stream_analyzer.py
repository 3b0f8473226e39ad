"""Analyse a recorded output: ffprobe packet PTS per track, per-segment A/V delta, and the true
A/V offset at the fixture's sync markers (decoded, via `livedub.media.analyze`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FFPROBE = shutil.which("ffprobe") or "ffprobe"


@dataclass
class ProbeResult:
    duration_s: float
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    sample_rate: int | None
    channels: int | None
    video_pts_s: list[float]
    audio_pts_s: list[float]


def ffprobe(path_or_url: str | Path, packets: bool = True, timeout_s: float = 60) -> ProbeResult:
    argv = [FFPROBE, "-v", "error", "-print_format", "json", "-show_streams", "-show_format"]
    if packets:
        argv += ["-show_entries", "packet=stream_index,pts_time,codec_type", "-show_packets"]
    argv.append(str(path_or_url))
    out = subprocess.run(argv, capture_output=True, check=True, timeout=timeout_s).stdout
    doc = json.loads(out)
    streams = doc.get("streams", [])
    v = next((s for s in streams if s.get("codec_type") == "video"), {})
    a = next((s for s in streams if s.get("codec_type") == "audio"), {})
    vpts: list[float] = []
    apts: list[float] = []
    for p in doc.get("packets", []):
        if p.get("pts_time") in (None, "N/A"):
            continue
        t = float(p["pts_time"])
        if p.get("codec_type") == "video" or p.get("stream_index") == v.get("index"):
            vpts.append(t)
        elif p.get("codec_type") == "audio" or p.get("stream_index") == a.get("index"):
            apts.append(t)
    fps = None
    if v.get("avg_frame_rate") and v["avg_frame_rate"] != "0/0":
        num, den = v["avg_frame_rate"].split("/")
        fps = float(num) / float(den) if float(den) else None
    vpts.sort()
    apts.sort()
    if vpts and apts:
        # Track duration from packet PTS (start to last packet end), not container metadata.
        vdur = (vpts[-1] - vpts[0]) + (1.0 / fps if fps else 0.0)
        adur = (apts[-1] - apts[0]) + 1024 / float(a.get("sample_rate") or 48000)
        duration = max(vdur, adur)
    else:
        duration = float(doc.get("format", {}).get("duration") or 0.0)
    return ProbeResult(
        duration_s=duration,
        video_codec=v.get("codec_name"),
        audio_codec=a.get("codec_name"),
        width=v.get("width"),
        height=v.get("height"),
        fps=fps,
        sample_rate=int(a["sample_rate"]) if a.get("sample_rate") else None,
        channels=a.get("channels"),
        video_pts_s=vpts,
        audio_pts_s=apts,
    )


def segment_av_deltas_ms(probe: ProbeResult, segment_s: float) -> list[float]:
    """|first video PTS − first audio PTS| in each segment window of the output timeline (ms)."""
    if not probe.video_pts_s or not probe.audio_pts_s:
        return []
    start = min(probe.video_pts_s[0], probe.audio_pts_s[0])
    end = max(probe.video_pts_s[-1], probe.audio_pts_s[-1])
    deltas: list[float] = []
    k = 0
    while start + k * segment_s < end:
        lo, hi = start + k * segment_s, start + (k + 1) * segment_s
        v = next((t for t in probe.video_pts_s if lo <= t < hi), None)
        a = next((t for t in probe.audio_pts_s if lo <= t < hi), None)
        if v is not None and a is not None:
            deltas.append(abs(v - a) * 1000.0)
        k += 1
    return deltas


def markers(path: str | Path) -> object:
    """Decoded sync-marker analysis of a file (true A/V offsets, segment tone order)."""
    from livedub.media.analyze import analyze

    return analyze(str(path))
