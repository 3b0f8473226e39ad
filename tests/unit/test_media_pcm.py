"""`Pcm`: the worker's samples without numpy — slicing, joining, numpy on both sides of it, and a
worker that never imports numpy (issue 16: RSS per worker)."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from livedub.media.audio import frame_to_pcm, pcm_frame
from livedub.media.pcm import Pcm


def _arr(n: int, ch: int = 2, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n * ch, dtype=np.int64) % 65536 - 32768).astype(np.int16).reshape(n, ch)


def test_a_numpy_array_becomes_a_pcm_and_back_unchanged() -> None:
    a = _arr(1000)
    p = Pcm.of(a)
    assert p.shape == (1000, 2) and len(p) == p.n == 1000 and p.nbytes == 4000
    back = np.asarray(p)
    assert back.dtype == np.int16 and back.shape == (1000, 2)
    np.testing.assert_array_equal(back, a)
    assert Pcm.of(p) is p


def test_a_non_contiguous_array_is_copied_in_sample_order() -> None:
    a = _arr(100, 4)[:, ::2]  # every other channel: not C-contiguous
    np.testing.assert_array_equal(np.asarray(Pcm.of(a)), a)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 2), np.float32), np.zeros(10, np.int16), np.zeros((2, 3, 2), np.int16), [1, 2], "pcm"],
)
def test_anything_but_2d_int16_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="int16 of shape"):
        Pcm.of(bad)


def test_bytes_must_be_whole_samples() -> None:
    with pytest.raises(ValueError, match="whole samples"):
        Pcm(b"\x00" * 6, 2)
    with pytest.raises(ValueError, match="channels"):
        Pcm(b"", 0)


def test_slices_are_samples_and_share_the_bytes() -> None:
    a = _arr(50)
    p = Pcm.of(a)
    np.testing.assert_array_equal(np.asarray(p[10:20]), a[10:20])
    np.testing.assert_array_equal(np.asarray(p[-5:]), a[-5:])
    assert p[30:10].n == 0 and p[:0].shape == (0, 2)
    assert p[10:20].data.obj is p.data.obj  # a view, not a copy
    with pytest.raises(TypeError):
        p[0, 0]  # type: ignore[index]
    with pytest.raises(ValueError):
        p[::2]


def test_concat_zeros_and_equality() -> None:
    a, b = _arr(30), _arr(20, start=999)
    joined = Pcm.concat([Pcm.of(a), Pcm.zeros(0, 2), Pcm.of(b)], 2)
    np.testing.assert_array_equal(np.asarray(joined), np.concatenate([a, b]))
    assert Pcm.concat([], 2) == Pcm.zeros(0, 2)
    assert not np.asarray(Pcm.zeros(7, 1)).any() and Pcm.zeros(7, 1).shape == (7, 1)
    assert Pcm.of(a) == Pcm.of(a.copy()) and Pcm.of(a) != Pcm.of(b[:30] if len(b) >= 30 else _arr(30, start=1))
    with pytest.raises(ValueError, match="join"):
        Pcm.concat([Pcm.zeros(3, 1), Pcm.zeros(3, 2)], 2)


def test_a_frame_round_trip_keeps_every_sample() -> None:
    a = _arr(1000)
    frame = pcm_frame(Pcm.of(a), 48_000, pts=5)
    assert (frame.format.name, frame.samples, frame.pts) == ("s16", 1000, 5)
    np.testing.assert_array_equal(np.asarray(frame_to_pcm(frame)), a)
    # a resampler's frame has padding after its samples: only the samples are taken
    fltp = av.AudioResampler(format="fltp", layout="stereo", rate=48_000).resample(frame)[0]
    back = av.AudioResampler(format="s16", layout="stereo", rate=48_000).resample(fltp)
    np.testing.assert_array_equal(np.asarray(Pcm.concat([frame_to_pcm(f) for f in back], 2)), a)
    with pytest.raises(ValueError, match="s16"):
        frame_to_pcm(fltp)


def test_a_worker_imports_no_numpy() -> None:
    """Everything `livedub worker` imports, in a fresh interpreter: numpy is not among it."""
    code = (
        "import sys\n"
        "import livedub.cli, livedub.worker.cli, livedub.worker.runner, livedub.worker.memory\n"
        "from livedub.cli import build_parser\n"
        "build_parser('worker')\n"
        "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('numpy.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(("fmt", "layout", "rate"), [("fltp", "stereo", 48_000), ("s16", "mono", 16_000)])
def test_the_converter_gives_what_pyavs_resampler_gives_without_starting_threads(fmt: str, layout: str, rate: int) -> None:
    from livedub.media.audio import AudioConverter

    a = _arr(4800)
    frames = [pcm_frame(Pcm.of(a[k : k + 960]), 48_000, pts=k) for k in range(0, 4800, 960)]
    ours = AudioConverter(fmt, layout, rate)
    mine = [f for fr in frames for f in ours.resample(fr)] + ours.resample(None)
    assert ours._graph.threads == 1  # libavfilter starts no slice threads for it
    theirs_r = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    theirs = [f for fr in frames for f in theirs_r.resample(fr)] + theirs_r.resample(None)

    def planes(fs: list[av.AudioFrame]) -> list[bytes]:
        return [b"".join(bytes(p)[: f.samples * (4 if fmt == "fltp" else 2 * f.layout.nb_channels)] for p in f.planes) for f in fs]

    assert b"".join(planes(mine)) == b"".join(planes(theirs)) and sum(f.samples for f in mine) > 0
    assert {(f.format.name, f.layout.name, f.sample_rate) for f in mine} == {(fmt, layout, rate)}


def test_the_converter_passes_target_frames_through_and_refuses_another_setup() -> None:
    from livedub.media.audio import AudioConverter

    frame = pcm_frame(Pcm.of(_arr(100)), 48_000)
    same = AudioConverter("s16", "stereo", 48_000)
    assert same.resample(frame) == [frame] and same.resample(None) == []
    conv = AudioConverter("fltp", "stereo", 48_000)
    conv.resample(frame)
    with pytest.raises(ValueError, match="setup"):
        conv.resample(pcm_frame(Pcm.of(_arr(100, 1)), 48_000))
