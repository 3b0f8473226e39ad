"""File → media pipeline → file: sync, continuity, exact fragments, dubbing hand-off, exit codes.

Real PyAV media on disk (no network except 127.0.0.1). Fixtures are short (8–20 s) to keep the
file fast; the 60 s live hop lives in test_media_live.py.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.exitcodes import ExitCode
from livedub.media import (
    InputState,
    MediaPipeline,
    MediaSettings,
    NullObserver,
    Segment,
    decode_fragment,
    encode_pcm,
    run_passthrough,
)
from livedub.media.analyze import Analysis, analyze
from livedub.media.audio import fragment_bytes, remux_coded
from livedub.media.fixture import FixtureSpec, make_fixture

FRAME_MS = 1000 / 30


@pytest.fixture(scope="module")
def fx20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "fx20.mp4"
    make_fixture(path, FixtureSpec(duration_s=20, width=640, height=360))
    return path


@pytest.fixture(scope="module")
def fx20_analysis(fx20: Path) -> Analysis:
    return analyze(fx20)


def assert_clean_copy(src: Analysis, out: Analysis, *, markers: int | None = None) -> None:
    """Output equals input: duration ±1 frame, codecs, no gaps, every marker ≤ 1 frame."""
    assert out.codecs == ("h264", "aac")
    assert abs(out.duration_s - src.duration_s) <= FRAME_MS / 1000 + 1e-6, (out.duration_s, src.duration_s)
    assert out.video is not None and out.audio is not None
    assert out.video.gaps == [] and out.audio.gaps == [] and out.audio.overlaps == []
    assert out.frame_counter_errors == 0
    assert out.video.frames == src.video.frames  # type: ignore[union-attr]
    assert len(out.markers) == (markers if markers is not None else len(src.markers))
    assert out.unmatched_flashes_s == []
    assert out.max_abs_offset_ms <= FRAME_MS, [m.offset_ms for m in out.markers]
    assert out.tone_order == src.tone_order


def settings(src: Path, dst: Path, **kw: object) -> MediaSettings:
    return MediaSettings(input_url=str(src), output_url=str(dst), stream_id="itest", **kw)  # type: ignore[arg-type]


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.created: list[Segment] = []
        self.output: list[tuple[int, str, str | None]] = []
        self.states: list[InputState] = []
        self.sync: list[float] = []
        self.write_errors: list[str] = []

    def on_segment_created(self, segment: Segment) -> None:
        self.created.append(segment)

    def on_segment_output(self, segment: Segment, source: str, reason: str | None) -> None:
        self.output.append((segment.batch, source, reason))

    def on_input_state(self, state: InputState, detail: str | None) -> None:
        self.states.append(state)

    def on_av_sync_delta(self, segment: Segment, delta_ms: float) -> None:
        self.sync.append(delta_ms)

    def on_write_error(self, kind: str, error: str) -> None:
        self.write_errors.append(kind)


async def test_file_passthrough_unpaced_is_an_exact_copy(fx20: Path, fx20_analysis: Analysis, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    rec = Recorder()
    code = await run_passthrough(settings(fx20, out, paced=False), rec)
    assert code == ExitCode.OK
    assert_clean_copy(fx20_analysis, analyze(out))
    # 20 s = 3 full 6 s fragments (288,000 samples) + a 2 s tail, all in order, all original.
    assert [s.n_samples for s in rec.created][:3] == [288_000] * 3
    assert rec.created[3].n_samples >= 96_000 and rec.created[3].is_tail
    assert [b for b, _, _ in rec.output] == [0, 1, 2, 3]
    assert {(src, reason) for _, src, reason in rec.output} == {("original", "passthrough")}
    assert rec.states[0] == InputState.CONNECTING and rec.states[-1] == InputState.ENDED
    assert len(rec.sync) == 4 and all(abs(d) < 5 for d in rec.sync)


async def test_file_passthrough_paced_to_flv(tmp_path: Path) -> None:
    src = tmp_path / "fx8.mp4"
    make_fixture(src, FixtureSpec(duration_s=8, width=320, height=240, segment_s=2))
    out = tmp_path / "out.flv"
    started = time.monotonic()
    code = await run_passthrough(settings(src, out, segment_s=2.0, output_delay_s=2.6))
    elapsed = time.monotonic() - started
    assert code == ExitCode.OK
    # Input read in real time (8 s) and the output trails it by D.
    assert 8 + 2.0 < elapsed < 8 + 2.6 + 4
    assert_clean_copy(analyze(src), analyze(out))


async def test_dubbed_audio_round_trip_through_transport_encoding(fx20: Path, fx20_analysis: Analysis, tmp_path: Path) -> None:
    """What the worker does: send m4a, get m4a back, decode to the exact count, set_dubbed."""
    out = tmp_path / "dubbed.mp4"
    seen: list[int] = []

    async def hook(seg: Segment) -> None:
        data = await asyncio.to_thread(encode_pcm, seg.pcm, seg.sample_rate, "m4a")
        pcm = await asyncio.to_thread(
            decode_fragment, data, expected_samples=seg.n_samples, sample_rate=seg.sample_rate, channels=seg.channels
        )
        seen.append(pcm.shape[0])
        assert seg.audio.set_dubbed(pcm)

    rec = Recorder()
    pipeline = MediaPipeline(settings(fx20, out, paced=False, unpaced_wait_s=10.0), rec, on_segment=hook)
    assert await pipeline.run() == ExitCode.OK
    assert sorted(seen) == sorted(s.n_samples for s in rec.created)
    assert {src for _, src, _ in rec.output} == {"dubbed"}
    # Double AAC generation, still sample-exact: markers and tones stay where they were.
    assert_clean_copy(fx20_analysis, analyze(out))


async def test_m4a_fragments_are_the_inputs_own_packets_and_decode_to_the_segment_exactly(
    fx20: Path, tmp_path: Path
) -> None:
    """m4a transport: a segment's fragment is the input's AAC packets remuxed (no encode); it
    decodes to exactly the segment's samples. The first segment has no frame before it: encoded."""
    rec = Recorder()
    pipeline = MediaPipeline(
        settings(fx20, tmp_path / "o.mp4", paced=False, transport_format="m4a", segment_s=2.0), rec, on_segment=None
    )
    assert await pipeline.run() == ExitCode.OK
    full = [s for s in rec.created if not s.is_tail]
    assert len(full) >= 5 and full[0].coded is None
    for seg in full[1:]:
        assert seg.coded is not None, seg.batch
        data = remux_coded(seg.coded)
        pcm = decode_fragment(data, expected_samples=seg.n_samples, sample_rate=seg.sample_rate, channels=seg.channels)
        assert np.array_equal(pcm, seg.pcm), (seg.batch, int(np.abs(pcm.astype(int) - seg.pcm).max()))
        assert fragment_bytes(seg.pcm, seg.sample_rate, "m4a", seg.coded) == data
        assert fragment_bytes(seg.pcm, seg.sample_rate, "flac", seg.coded) == encode_pcm(seg.pcm, seg.sample_rate, "flac")


async def test_no_input_packets_for_other_transports_or_where_sync_changed_the_audio(tmp_path: Path) -> None:
    src = tmp_path / "drift.mp4"
    make_fixture(src, FixtureSpec(duration_s=20, width=320, height=240, audio_drift_ppm=3000))
    rec = Recorder()
    assert await MediaPipeline(settings(src, tmp_path / "a.mp4", paced=False), rec).run() == ExitCode.OK
    assert rec.created and all(s.coded is None for s in rec.created)  # flac: never collected
    rec = Recorder()
    pipeline = MediaPipeline(settings(src, tmp_path / "b.mp4", paced=False, transport_format="m4a"), rec)
    assert await pipeline.run() == ExitCode.OK
    assert pipeline.stats.samples_inserted > 0  # A/V sync slewed: those segments are not the input's
    for seg in rec.created:
        if seg.coded is not None:
            pcm = decode_fragment(
                remux_coded(seg.coded), expected_samples=seg.n_samples, sample_rate=seg.sample_rate, channels=seg.channels
            )
            assert np.array_equal(pcm, seg.pcm), seg.batch
    assert any(s.coded is None for s in rec.created[1:] if not s.is_tail)


async def test_late_dub_falls_back_to_original_with_reason(fx20: Path, tmp_path: Path) -> None:
    out = tmp_path / "late.mp4"
    late: list[bool] = []

    async def hook(seg: Segment) -> None:
        if seg.batch == 1:
            seg.audio.set_fallback("circuit_open")
            return
        # Answer only after the output gave up waiting (unpaced_wait_s) and took the segment.
        deadline = time.monotonic() + 10
        while not seg.audio.taken and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        late.append(seg.audio.set_dubbed(seg.pcm))

    rec = Recorder()
    pipeline = MediaPipeline(settings(fx20, out, paced=False, unpaced_wait_s=0.05), rec, on_segment=hook)
    assert await pipeline.run() == ExitCode.OK
    assert late and not any(late)
    reasons = dict((b, r) for b, _, r in rec.output)
    assert reasons[1] == "circuit_open" and reasons[0] == "deadline"
    assert pipeline.stats.reasons["deadline"] == len(rec.output) - 1


async def test_drifting_publisher_is_slewed_back_into_sync(tmp_path: Path) -> None:
    src = tmp_path / "drift.mp4"
    make_fixture(src, FixtureSpec(duration_s=20, width=320, height=240, audio_drift_ppm=3000))
    raw = analyze(src)
    assert raw.max_abs_offset_ms < 2  # the input is in sync by its timestamps...
    out = tmp_path / "drift_out.mp4"
    pipeline = MediaPipeline(settings(src, out, paced=False), NullObserver(), on_segment=None)
    assert await pipeline.run() == ExitCode.OK
    res = analyze(out)
    # ...a sample clock alone would be 60 ms off by 20 s; slewing keeps it near the 20 ms bound.
    assert pipeline.stats.drift_corrections >= 1
    assert pipeline.stats.samples_inserted > 0
    assert res.max_abs_offset_ms <= 25, [m.offset_ms for m in res.markers]
    assert res.audio is not None and res.audio.gaps == []


async def test_44k1_mono_and_mpegts_output(tmp_path: Path) -> None:
    src = tmp_path / "mono.mp4"
    make_fixture(src, FixtureSpec(duration_s=8, width=320, height=240, sample_rate=44_100, channels=1, segment_s=2))
    out = tmp_path / "mono.ts"
    rec = Recorder()
    code = await run_passthrough(settings(src, out, paced=False, segment_s=2.0), rec)
    assert code == ExitCode.OK
    assert [s.n_samples for s in rec.created[:4]] == [88_200] * 4
    res = analyze(out)
    assert res.audio is not None and res.audio.sample_rate == 44_100 and res.audio.channels == 1
    assert res.max_abs_offset_ms <= FRAME_MS and len(res.markers) == 4


async def test_segment_files_with_retention(fx20: Path, tmp_path: Path) -> None:
    seg_dir = tmp_path / "segments"
    out = tmp_path / "out.mp4"

    async def hook(seg: Segment) -> None:
        seg.audio.set_dubbed(seg.pcm)

    pipeline = MediaPipeline(
        settings(fx20, out, paced=False, unpaced_wait_s=5.0, segment_dir=seg_dir, segment_retention=2),
        on_segment=hook,
    )
    assert await pipeline.run() == ExitCode.OK
    files = sorted(p.name for p in (seg_dir / "itest").iterdir())
    assert files == [
        "000002_audio.m4a", "000002_dubbed.m4a", "000002_video.mp4",
        "000003_audio.m4a", "000003_dubbed.m4a", "000003_video.mp4",
    ]
    with av.open(str(seg_dir / "itest" / "000002_video.mp4")) as c:
        assert c.streams.video[0].frames == 180 or c.duration is not None
    with av.open(str(seg_dir / "itest" / "000002_audio.m4a")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"


async def test_unwritable_segment_dir_is_reported_and_dubbing_continues(fx20: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    rec = Recorder()
    out = tmp_path / "out.mp4"
    code = await run_passthrough(settings(fx20, out, paced=False, segment_dir=blocker), rec)
    assert code == ExitCode.OK
    assert rec.write_errors and set(rec.write_errors) == {"segment_file"}
    assert len(rec.output) == 4


async def test_no_audio_track_exits_at_once_with_its_code(tmp_path: Path) -> None:
    src = tmp_path / "video_only.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            f = av.VideoFrame.from_ndarray(np.zeros((96, 64), np.uint8), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 10)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    started = time.monotonic()
    code = await run_passthrough(settings(src, tmp_path / "o.mp4", paced=False))
    assert code == ExitCode.NO_AUDIO_TRACK
    assert time.monotonic() - started < 3
    assert not (tmp_path / "o.mp4").exists()


async def test_missing_file_is_input_unavailable(tmp_path: Path) -> None:
    code = await run_passthrough(settings(tmp_path / "nope.mp4", tmp_path / "o.mp4", paced=False))
    assert code == ExitCode.INPUT_UNAVAILABLE


async def test_unreachable_live_input_retries_then_gives_up(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    started = time.monotonic()
    code = await run_passthrough(
        MediaSettings(
            input_url=f"rtmp://127.0.0.1:{port}/live/x",
            output_url=str(tmp_path / "o.flv"),
            reconnect_delays_s=(0.2, 0.4, 0.8),
            open_timeout_s=2.0,
        ),
        rec,
    )
    assert code == ExitCode.INPUT_UNAVAILABLE
    assert rec.states.count(InputState.RECONNECTING) == 6  # announced + attempted, 3 retries
    assert rec.states[-1] == InputState.FAILED
    assert 1.4 <= time.monotonic() - started < 15


async def test_unwritable_output_exits_with_output_code(fx20: Path, tmp_path: Path) -> None:
    code = await run_passthrough(settings(fx20, tmp_path / "no" / "such" / "dir" / "o.mp4", paced=False))
    assert code == ExitCode.OUTPUT_FAILED
