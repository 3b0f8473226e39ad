"""Drift correction: nothing inside the bound, bounded slew beyond it, gap fill, never a jump."""

from __future__ import annotations

import numpy as np

from livedub.media.sync import DriftCorrector, slew_frame

RATE = 48_000
FRAME = 1024
NS = 1_000_000_000


def frames(n_frames: int, ppm: float) -> list[tuple[np.ndarray, int]]:
    """Frames of 1024 samples whose timestamps run `ppm` fast (a drifting publisher)."""
    out = []
    for i in range(n_frames):
        pcm = np.full((FRAME, 2), i % 100, dtype=np.int16)
        out.append((pcm, round(i * FRAME * NS / RATE * (1 + ppm * 1e-6))))
    return out


def run(dc: DriftCorrector, items: list[tuple[np.ndarray, int]]) -> list[int]:
    return [dc.process(p, t).shape[0] for p, t in items]


def test_no_drift_no_change() -> None:
    dc = DriftCorrector(RATE)
    sizes = run(dc, frames(3000, 0))
    assert set(sizes) == {FRAME}
    assert dc.corrections == 0 and abs(dc.deviation_ms) < 0.01


def test_small_drift_inside_bound_is_left_alone() -> None:
    dc = DriftCorrector(RATE, bound_ms=20)
    sizes = run(dc, frames(2800, 200))  # ~60 s, 200 ppm → 12 ms
    assert set(sizes) == {FRAME} and dc.corrections == 0


def test_drift_beyond_bound_is_slewed_within_limits_and_logged() -> None:
    corrections: list[tuple[float, int]] = []
    dc = DriftCorrector(RATE, bound_ms=20, target_ms=5, max_slew=0.005,
                        on_correction=lambda d, s: corrections.append((d, s)))
    items = frames(2813 * 3, 1000)  # 180 s at 1000 ppm: timestamps gain 180 ms
    sizes = run(dc, items)
    max_step = int(FRAME * 0.005)
    assert all(abs(s - FRAME) <= max_step for s in sizes)  # never a jump
    assert any(s > FRAME for s in sizes)  # samples inserted (timestamps run ahead)
    assert dc.corrections >= 1 and corrections[0][1] > 0
    # Deviation never ran away: it stays near the bound instead of reaching 180 ms.
    assert dc.max_abs_deviation_ms < 25
    end_clock = dc.clock_ns()
    last_ts = items[-1][1] + round(FRAME * NS / RATE * 1.001)
    assert abs(end_clock - last_ts) / 1e6 < 25


def test_fast_audio_drops_samples() -> None:
    dc = DriftCorrector(RATE)
    sizes = run(dc, frames(2813 * 2, -1000))
    assert any(s < FRAME for s in sizes) and all(s >= FRAME - 5 for s in sizes)
    assert dc.samples_dropped > 0 and dc.max_abs_deviation_ms < 25


def test_big_timestamp_gap_is_filled_with_silence_once() -> None:
    gaps: list[int] = []
    dc = DriftCorrector(RATE, on_gap=gaps.append)
    pcm = np.ones((FRAME, 2), np.int16)
    dc.process(pcm, 0)
    out = dc.process(pcm, NS)  # 1 s later than the sample clock expects
    assert out.shape[0] == FRAME + RATE - FRAME
    assert not np.asarray(out[: RATE - FRAME]).any()
    assert gaps == [RATE - FRAME]
    assert dc.corrections == 0


def test_resync_aligns_small_gap_exactly() -> None:
    dc = DriftCorrector(RATE)
    pcm = np.ones((FRAME, 1), np.int16)
    dc.process(pcm, 0)
    dc.resync()
    out = dc.process(pcm, (FRAME + 480) * NS // RATE)  # 10 ms gap: below the gap threshold
    assert out.shape[0] == FRAME + 480


def test_slew_frame_is_smooth() -> None:
    x = np.linspace(-1000, 1000, 1024).astype(np.int16)[:, None]
    y = np.asarray(slew_frame(x, 1019))
    assert y.shape == (1019, 1)
    assert y[0, 0] == x[0, 0] and y[-1, 0] == x[-1, 0]
    assert np.abs(np.diff(y[:, 0].astype(int))).max() <= 3


def _batches(items: list[tuple[np.ndarray, int]], k: int) -> list[tuple[np.ndarray, int]]:
    """The reader's batches: `k` consecutive frames, with the first one's timestamp."""
    return [(np.concatenate([p for p, _ in items[i : i + k]]), items[i][1]) for i in range(0, len(items), k)]


def test_a_batch_is_corrected_frame_by_frame() -> None:
    steady = frames(500, 0)
    one, batched = DriftCorrector(RATE), DriftCorrector(RATE)
    expected = np.concatenate([one.process(p, t) for p, t in steady])
    got = np.concatenate([batched.process_batch(p, t, FRAME) for p, t in _batches(steady, 5)])
    np.testing.assert_array_equal(got, expected)
    # drifting timestamps: exactly its frames, each at the batch's timestamp + its offset, one
    # at a time (slewed by at most 0.5 % = 5 samples per frame, not per batch)
    items = frames(2815 * 3, 1000)
    batches = _batches(items, 5)
    dc, ref = (DriftCorrector(RATE, bound_ms=20, target_ms=5, max_slew=0.005) for _ in range(2))
    got = np.concatenate([dc.process_batch(p, t, FRAME) for p, t in batches])
    frame_by_frame = [
        ref.process(p[at : at + FRAME], t + at * NS // RATE).shape[0] for p, t in batches for at in range(0, p.shape[0], FRAME)
    ]
    assert got.shape[0] == sum(frame_by_frame) and dc.samples_inserted == ref.samples_inserted > 0
    assert all(abs(s - FRAME) <= 5 for s in frame_by_frame) and dc.max_abs_deviation_ms < 25
    assert DriftCorrector(RATE).process_batch(steady[0][0], None, FRAME).shape[0] == FRAME  # no timestamp: as is
