"""Reliability: awkward publisher streams through the worker (file in → echo STS → file out,
unpaced). The inputs are made here with PyAV from the sync fixture:

- timestamps that jump forwards (+10 s) and backwards (−12 s) mid-stream (MPEG-TS parts
  concatenated, as a publisher restarting its clock would send them);
- 44.1 kHz mono audio;
- H.264 with B-frames (pts ≠ dts, reordered);
- audio that starts 500 ms before the video.

Documented behaviour (docs/media.md "Timing"): discontinuities are rebased so the output timeline
stays continuous; any rate/channel layout is segmented in exact sample counts; video keeps its
pts/dts; the output starts at the first video keyframe (audio before it is not output). In every
case: exit 0, no audio gap, every marker within 33 ms, every fragment dubbed.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h

FRAME_S = 1 / 30
SPEC = FixtureSpec(duration_s=12.0, width=320, height=240, segment_s=2.0)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    make_fixture(d / "fx.mp4", SPEC)
    return d


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as server:
        yield server


async def dub(sts: RunningSts, src: Path, out: Path, stream_id: str) -> WorkerRunner:
    runner = WorkerRunner(
        WorkerSettings(
            stream_id=stream_id,
            input_url=str(src),
            output_url=str(out),
            sts_url=sts.url,
            metrics_port=0,
            paced=False,
            segment_s=2.0,
            end_timeout_s=2.0,
        )
    )
    assert await runner.run() == 0
    return runner


# --- input makers -----------------------------------------------------------------------------


def ts_part(src: Path, start_s: float, end_s: float, shift_s: float) -> bytes:
    """The packets of `src` with time in [start_s, end_s), shifted by `shift_s`, as MPEG-TS."""
    buf = io.BytesIO()
    with av.open(str(src)) as inp, av.open(buf, "w", format="mpegts") as out:
        streams: dict[int, Any] = {}
        for st in inp.streams:
            streams[st.index] = out.add_stream_from_template(st)
        for pkt in inp.demux():
            if pkt.dts is None or pkt.pts is None:
                continue
            t = float(pkt.pts * pkt.time_base)
            if not start_s <= t < end_s:
                continue
            shift = round(shift_s / pkt.time_base)
            pkt.pts += shift
            pkt.dts += shift
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)
    return buf.getvalue()


def with_timestamp_jumps(src: Path, dst: Path) -> Path:
    """0–4 s as is, 4–8 s shifted +10 s (forward jump), 8–12 s shifted −6 s (so 14–18 s → 2–6 s:
    a 12 s backward jump). Cut at keyframes (GOP 2 s)."""
    data = ts_part(src, 0, 4, 0) + ts_part(src, 4, 8, 10) + ts_part(src, 8, 1e9, -6)
    dst.write_bytes(data)
    return dst


def transcode_video(src: Path, dst: Path, *, bframes: int = 0, video_from_s: float = 0.0) -> Path:
    """Re-encode the video (libx264, `bframes` B-frames, GOP 2 s, first frame at `video_from_s`
    and a keyframe), then add `src`'s audio unchanged; every timestamp is kept."""
    video_only = dst.with_suffix(".video.mp4")
    with av.open(str(src)) as inp, av.open(str(video_only), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        v = out.add_stream(
            "libx264",
            rate=30,
            options={
                "preset": "veryfast",
                "crf": "28",
                "x264-params": f"keyint=60:min-keyint=60:scenecut=0:bframes={bframes}:b-pyramid=none",
            },
        )
        v.width, v.height, v.pix_fmt = vin.width, vin.height, "yuv420p"
        v.codec_context.time_base = Fraction(1, 30)
        for frame in inp.decode(vin):
            t = float(frame.pts * frame.time_base)
            if t < video_from_s - 1e-6:
                continue
            frame.pts = round(t * 30)
            frame.time_base = Fraction(1, 30)
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    with (
        av.open(str(video_only)) as vin_c,
        av.open(str(src)) as ain_c,
        av.open(str(dst), "w", format="mp4") as out,
    ):
        v = out.add_stream_from_template(vin_c.streams.video[0])
        a = out.add_stream_from_template(ain_c.streams.audio[0])
        packets: list[tuple[float, Any, Any]] = []
        for pkt in vin_c.demux(vin_c.streams.video[0]):
            if pkt.dts is not None:
                packets.append((float(pkt.dts * pkt.time_base), pkt, v))
        for pkt in ain_c.demux(ain_c.streams.audio[0]):
            if pkt.dts is not None:
                packets.append((float(pkt.dts * pkt.time_base), pkt, a))
        for _, pkt, stream in sorted(packets, key=lambda p: p[0]):
            pkt.stream = stream
            out.mux(pkt)
    video_only.unlink()
    return dst


def has_b_frames(path: Path) -> bool:
    with av.open(str(path)) as inp:
        return any(p.pts is not None and p.dts is not None and p.pts > p.dts for p in inp.demux(inp.streams.video[0]))


# --- the scenarios ----------------------------------------------------------------------------


async def test_timestamps_jumping_forwards_and_backwards(
    sts: RunningSts, fixture_dir: Path, tmp_path: Path
) -> None:
    src = with_timestamp_jumps(fixture_dir / "fx.mp4", tmp_path / "jumps.ts")
    out = tmp_path / "out.mp4"
    runner = await dub(sts, src, out, "jumps")
    assert runner.pipeline.stats.discontinuities >= 2, "one forward, one backward (per stream)"
    n = h.check_accounting(runner)
    assert n["dubbed"] == 6
    ref = analyze(fixture_dir / "fx.mp4")
    # Rebased onto one continuous timeline: the 12 s of content, nothing more, nothing lost.
    h.check_complete(out, ref)
    res = analyze(out)
    assert res.video is not None and res.video.gaps == []


async def test_44k1_mono_audio(sts: RunningSts, tmp_path: Path) -> None:
    src = tmp_path / "mono.mp4"
    make_fixture(src, FixtureSpec(duration_s=12.0, width=320, height=240, segment_s=2.0, sample_rate=44100, channels=1))
    out = tmp_path / "out.mp4"
    runner = await dub(sts, src, out, "mono44")
    n = h.check_accounting(runner)
    assert n["dubbed"] == 6
    debug = sts.core.debug_stream("mono44")
    assert debug is not None and debug["sessions"][0]["config"]["sample_rate_hz"] == 44100
    assert debug["sessions"][0]["config"]["channels"] == 1
    res = h.check_complete(out, analyze(src))
    assert res.audio is not None and res.audio.sample_rate == 44100 and res.audio.channels == 1


async def test_b_frames(sts: RunningSts, fixture_dir: Path, tmp_path: Path) -> None:
    src = transcode_video(fixture_dir / "fx.mp4", tmp_path / "bframes.mp4", bframes=2)
    assert has_b_frames(src)
    out = tmp_path / "out.mp4"
    runner = await dub(sts, src, out, "bframes")
    n = h.check_accounting(runner)
    assert n["dubbed"] == 6
    h.check_complete(out, analyze(src))
    assert has_b_frames(out), "video is copied: B-frames and their timestamps kept"
    assert analyze(out).frame_counter_errors == 0


async def test_audio_starting_500ms_before_video(sts: RunningSts, fixture_dir: Path, tmp_path: Path) -> None:
    src = transcode_video(fixture_dir / "fx.mp4", tmp_path / "late-video.mp4", video_from_s=0.5)
    ref = analyze(src)
    assert ref.audio is not None and ref.video is not None
    assert ref.video.start_s is not None and ref.audio.start_s is not None
    assert abs((ref.video.start_s - ref.audio.start_s) - 0.5) < 0.03
    out = tmp_path / "out.mp4"
    runner = await dub(sts, src, out, "early-audio")
    n = h.check_accounting(runner)
    assert n["dubbed"] == 6
    res = analyze(out)
    # Documented: the output starts at the first video keyframe (0.5 s); the 0.5 s of audio before
    # it is not output; everything after it is, in sync.
    assert res.video is not None and res.audio is not None
    assert abs(res.duration_s - (ref.duration_s - 0.5)) <= FRAME_S + 0.03, (res.duration_s, ref.duration_s)
    assert res.audio.gaps == []
    assert len(res.markers) == len(ref.markers) and res.max_abs_offset_ms <= 33.0
    assert res.tone_order == ref.tone_order
    assert res.first_frame_number == 15 and res.frame_counter_errors == 0
