"""A tiny fixture made with PyAV analyses as made: markers in sync, tones in order, no gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livedub.media.analyze import analyze, write_plot
from livedub.media.fixture import FixtureSpec, make_fixture


def test_small_fixture_round_trip(tmp_path: Path) -> None:
    spec = FixtureSpec(duration_s=4, width=320, height=240, segment_s=1, gop_s=1)
    info = make_fixture(tmp_path / "f.mp4", spec)
    assert len(info.marker_times_s) == 4
    res = analyze(tmp_path / "f.mp4")
    assert res.codecs == ("h264", "aac")
    assert res.video is not None and res.video.frames == 120 and res.video.gaps == []
    assert res.audio is not None and res.audio.sample_rate == 48_000 and res.audio.channels == 2
    assert [round(m.flash_s, 3) for m in res.markers] == [round(t, 3) for t in info.marker_times_s]
    assert res.max_abs_offset_ms < 2
    assert res.tone_order == [0, 1, 2, 3]
    assert res.frame_counter_errors == 0 and res.first_frame_number == 0
    write_plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_fixture_is_deterministic(tmp_path: Path) -> None:
    spec = FixtureSpec(duration_s=2, width=160, height=120, segment_s=1)
    a = make_fixture(tmp_path / "a.mp4", spec)
    b = make_fixture(tmp_path / "b.mp4", spec)
    assert a.marker_frames == b.marker_frames
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_drift_option_moves_audio_timestamps_not_sync(tmp_path: Path) -> None:
    spec = FixtureSpec(duration_s=6, width=160, height=120, segment_s=2, audio_drift_ppm=5000)
    make_fixture(tmp_path / "d.mp4", spec)
    res = analyze(tmp_path / "d.mp4")
    assert res.max_abs_offset_ms < 2 and len(res.markers) == 3  # in sync by timestamps


def test_silences_are_found_to_the_block_and_short_pauses_ignored() -> None:
    from livedub.media.analyze import _silences

    rate = 1000
    sig = np.full(5 * rate, 0.1, dtype=np.float32)
    sig[1200:1500] = 0.0  # 0.3 s: shorter than SILENCE_MIN_S, not dead air
    sig[2000:3200] = 0.0  # 1.2 s of dead air
    found = _silences(sig, rate, start_s=10.0)
    assert [(round(g.at_s, 3), round(g.length_ms)) for g in found] == [(12.0, 1200)]
    assert _silences(np.zeros(0, dtype=np.float32), rate, 0.0) == []
