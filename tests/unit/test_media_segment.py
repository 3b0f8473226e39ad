"""Segmenter and SegmentAudio: exact sample counts, tails, odd rates, video assignment, hand-off."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from livedub.media.segment import NS_PER_S, SegmentAudio, Segmenter, VideoPacket


def pcm(n: int, ch: int = 2, start: int = 0) -> np.ndarray:
    """Sample i carries value (start + i) % 30000, so order and continuity are checkable."""
    v = (np.arange(start, start + n) % 30000).astype(np.int16)
    return np.repeat(v[:, None], ch, axis=1)


def make(rate: int = 48000, ch: int = 2, seg_s: float = 6.0, has_video: bool = False, **kw) -> Segmenter:
    return Segmenter(
        stream_id="s1",
        sample_rate=rate,
        channels=ch,
        segment_samples=round(rate * seg_s),
        min_tail_samples=rate,
        has_video=has_video,
        **kw,
    )


def feed(seg: Segmenter, total: int, chunk: int, ch: int = 2, pts0: int = 0) -> None:
    pos = 0
    while pos < total:
        n = min(chunk, total - pos)
        seg.push_audio(pcm(n, ch, pos), pts0 if pos == 0 else None)
        pos += n


def test_six_seconds_at_48k_is_exactly_288000_samples() -> None:
    s = make()
    feed(s, 288_000 * 3, 1024)
    out = s.pop_ready()
    assert [x.n_samples for x in out] == [288_000] * 3
    assert [x.batch for x in out] == [0, 1, 2]
    assert [x.t0_ns for x in out] == [0, 6 * NS_PER_S, 12 * NS_PER_S]
    assert all(x.duration_ns == 6 * NS_PER_S for x in out)
    # Continuity: no sample lost or duplicated at boundaries.
    joined = np.concatenate([x.pcm for x in out])
    assert np.array_equal(joined, pcm(288_000 * 3))
    assert len({x.id for x in out}) == 3 and all(x.stream_id == "s1" for x in out)


def test_t0_is_anchored_to_first_audio_timestamp_without_rounding() -> None:
    s = make(rate=44_100, ch=1)
    feed(s, 264_600 * 2, 1000, ch=1, pts0=123_456_789)
    a, b = s.pop_ready()
    assert a.n_samples == b.n_samples == 264_600  # 6 s at 44.1 kHz
    assert a.t0_ns == 123_456_789
    assert b.t0_ns == 123_456_789 + 6 * NS_PER_S
    assert a.pcm.shape == (264_600, 1)


@pytest.mark.parametrize("seg_s", [1.0, 2.5, 6.0, 60.0])
def test_segment_lengths_1_to_60_s(seg_s: float) -> None:
    s = make(rate=16_000, ch=1, seg_s=seg_s)
    n = round(16_000 * seg_s)
    feed(s, n * 2 + 7, 4096, ch=1)
    out = s.pop_ready()
    assert [x.n_samples for x in out] == [n, n]
    tail = s.finish()
    assert [x.n_samples for x in tail] == [7]
    assert tail[0].is_tail and not tail[0].dub


def test_partial_tail_of_at_least_one_second_is_a_normal_fragment() -> None:
    s = make()
    feed(s, 288_000 + 48_000 + 5, 1024)
    assert len(s.pop_ready()) == 1
    (tail,) = s.finish()
    assert tail.n_samples == 48_005 and tail.is_tail and tail.dub
    assert not tail.audio.resolved


def test_short_tail_goes_out_with_original_audio() -> None:
    s = make()
    feed(s, 288_000 + 47_999, 1024)
    s.pop_ready()
    (tail,) = s.finish()
    assert tail.n_samples == 47_999 and not tail.dub
    pcm_out, source, reason = tail.audio.take("deadline")
    assert source == "original" and reason == "short_tail"
    assert np.array_equal(pcm_out, tail.pcm)


def test_nothing_dropped_at_end_of_stream() -> None:
    s = make(rate=8000, ch=1, seg_s=1.0)
    feed(s, 8000 * 3 + 123, 333, ch=1)
    out = s.pop_ready() + s.finish()
    assert sum(x.n_samples for x in out) == 8000 * 3 + 123
    assert np.array_equal(np.concatenate([x.pcm for x in out]), pcm(8000 * 3 + 123, 1))


def vp(t_s: float, key: bool = False) -> VideoPacket:
    t = round(t_s * NS_PER_S)
    return VideoPacket(b"x", t, t, NS_PER_S // 30, key)


def test_video_packets_belong_to_the_segment_holding_their_pts_and_wait_for_video() -> None:
    s = make(rate=1000, ch=1, seg_s=1.0, has_video=True)
    s.push_video(vp(0.0, True))  # before any audio: kept for segment 0
    feed(s, 1000, 100, ch=1)
    # Audio of segment 0 complete, but no video at/after t=1.0 yet: not released.
    assert s.pop_ready() == []
    s.push_video(vp(0.5))
    s.push_video(vp(1.0, True))
    (seg0,) = s.pop_ready()
    assert [p.pts_ns for p in seg0.video_packets] == [0, 500_000_000]
    s.push_audio(pcm(1000, 1))
    s.push_video(vp(2.0))
    (seg1,) = s.pop_ready()
    assert [p.pts_ns for p in seg1.video_packets] == [1_000_000_000]


def test_segment_released_when_video_lags_too_long() -> None:
    s = make(rate=1000, ch=1, seg_s=1.0, has_video=True, video_wait_ns=NS_PER_S // 2)
    feed(s, 1400, 100, ch=1)
    assert s.pop_ready() == []
    s.push_audio(pcm(100, 1))
    assert len(s.pop_ready()) == 1


def test_pad_open_segment_completes_it_with_silence() -> None:
    s = make(rate=1000, ch=1, seg_s=1.0, has_video=True)
    feed(s, 1250, 250, ch=1)
    assert s.pad_open_segment() == 750
    segs = s.pop_ready()
    assert [x.n_samples for x in segs] == [1000, 1000]
    assert not np.asarray(segs[1].pcm[250:]).any()
    assert s.pad_open_segment() == 0


def test_deadline_comes_from_callback() -> None:
    s = make(rate=1000, ch=1, seg_s=1.0, deadline_for=lambda t0: 100.0 + t0 / NS_PER_S)
    feed(s, 2000, 500, ch=1)
    assert [x.audio.deadline_wall for x in s.pop_ready()] == [100.0, 101.0]


# -- SegmentAudio ---------------------------------------------------------------------------
def test_dubbed_set_before_take_is_used() -> None:
    orig = pcm(10)
    a = SegmentAudio(orig)
    dub = pcm(10, start=100)
    assert a.set_dubbed(dub)
    out, source, reason = a.take("deadline")
    assert source == "dubbed" and reason is None and np.array_equal(out, dub)
    assert a.taken


def test_take_without_result_falls_back_with_default_reason_and_late_result_is_refused() -> None:
    orig = pcm(10)
    a = SegmentAudio(orig)
    out, source, reason = a.take("deadline")
    assert (source, reason) == ("original", "deadline") and np.array_equal(out, orig)
    assert not a.set_dubbed(pcm(10, start=5))
    assert not a.set_fallback("timeout")
    assert a.take("other")[1:] == ("original", "deadline")  # idempotent


def test_fallback_reason_is_kept_and_blocks_later_dub() -> None:
    a = SegmentAudio(pcm(10))
    assert a.set_fallback("circuit_open")
    assert not a.set_dubbed(pcm(10))
    assert a.take("deadline")[1:] == ("original", "circuit_open")


def test_first_resolution_wins() -> None:
    a = SegmentAudio(pcm(10))
    assert a.set_dubbed(pcm(10, start=1))
    assert not a.set_fallback("timeout")
    assert a.take("deadline")[1] == "dubbed"


def test_wrong_shape_is_refused() -> None:
    a = SegmentAudio(pcm(10))
    with pytest.raises(ValueError):
        a.set_dubbed(pcm(9))


def test_concurrent_set_and_take_have_one_winner() -> None:
    def offer(audio: SegmentAudio, results: list[bool]) -> None:
        results.append(audio.set_dubbed(pcm(4, start=9)))

    for _ in range(200):
        a = SegmentAudio(pcm(4))
        results: list[bool] = []
        t = threading.Thread(target=offer, args=(a, results))
        t.start()
        _, source, _ = a.take("deadline")
        t.join()
        assert (source == "dubbed") == results[0]


def test_a_dubbed_segment_lets_its_original_go_when_nothing_outputs_it() -> None:
    needed = [False]
    s = make(rate=1000, ch=1, seg_s=1.0, original_needed=lambda: needed[0])
    feed(s, 3000, 250, ch=1)
    a, b, c = s.pop_ready()
    assert a.audio.set_dubbed(np.full((1000, 1), 7, np.int16))
    with pytest.raises(RuntimeError, match="released"):
        a.pcm  # noqa: B018
    assert np.array_equal(a.audio.take("deadline")[0], np.full((1000, 1), 7, np.int16))
    assert b.audio.set_fallback("timeout")  # a fallback keeps it: it is what goes out
    assert b.audio.take("deadline")[1] == "original" and b.pcm.n == 1000
    needed[0] = True  # an original track or output: kept after the dub too
    assert c.audio.set_dubbed(np.zeros((1000, 1), np.int16))
    assert c.pcm.n == 1000 and c.audio.original is c.pcm


def test_without_an_answer_every_original_is_kept() -> None:
    a = SegmentAudio(np.ones((10, 2), np.int16))
    assert a.set_dubbed(np.zeros((10, 2), np.int16))
    assert np.array_equal(a.original, np.ones((10, 2), np.int16))
