"""The segmenter collects the input's packets for each segment (m4a fragments without an encode)."""

from __future__ import annotations

import numpy as np

from livedub.media.segment import Segmenter

FRAME = 1024
N = 10 * FRAME + 300  # not a whole number of frames: packets straddle the boundaries


def _segmenter(template: object | None = "tpl") -> Segmenter:
    s = Segmenter(stream_id="s", sample_rate=48_000, channels=2, segment_samples=N, min_tail_samples=0, has_video=False)
    s.coded_template = template
    return s


def _push(s: Segmenter, i: int, coded: bool = True) -> None:
    s.push_audio(np.full((FRAME, 2), i, np.int16), 0, (f"p{i}".encode(),) if coded else None)


def test_every_segment_but_the_first_gets_its_packets_and_the_one_before() -> None:
    s = _segmenter()
    for i in range(40):
        _push(s, i)
    segs = s.pop_ready()
    assert len(segs) == 3 and segs[0].coded is None  # no frame before the first sample
    for seg in segs[1:]:
        assert seg.coded is not None
        start = seg.batch * N
        rel = [pos for pos, _ in seg.coded.packets]
        assert rel[0] <= -FRAME < rel[0] + FRAME  # the frame before the one holding `start`
        assert rel[-1] < N <= rel[-1] + FRAME  # the last one covers the end
        assert rel == list(range(rel[0], rel[-1] + 1, FRAME))  # contiguous
        assert [d for _, d in seg.coded.packets][0] == f"p{(start + rel[0]) // FRAME}".encode()
        assert seg.coded.template == "tpl" and seg.coded.frame_samples == FRAME


def test_a_changed_frame_breaks_the_run_for_the_segments_it_touches() -> None:
    s = _segmenter()
    for i in range(40):
        _push(s, i, coded=i != 15)  # frame 15 (samples 15360..16383) changed by A/V sync: segment 1
    segs = s.pop_ready()
    assert segs[1].coded is None  # holds frame 15
    assert segs[2].coded is not None  # starts at 21080: frames 19.. are contiguous again


def test_break_padding_and_no_template_give_no_packets() -> None:
    s = _segmenter()
    for i in range(25):
        _push(s, i)
    s.break_coded()  # a reconnect: the next packets come from a new decoder
    for i in range(25, 40):
        _push(s, i)
    assert s.pop_ready()[2].coded is None  # spans the break at 25600 (starts at 21080)
    s = _segmenter()
    for i in range(15):
        _push(s, i)
    s.pad_open_segment()
    assert [seg.coded is None for seg in s.pop_ready()] == [True, True]
    s = _segmenter(template=None)
    for i in range(40):
        _push(s, i)
    assert all(seg.coded is None for seg in s.pop_ready())


def test_batches_of_packets_give_the_same_runs_as_single_packets() -> None:
    single, batched = _segmenter(), _segmenter()
    for i in range(40):
        _push(single, i)
    for i in range(0, 40, 5):
        pcm = np.concatenate([np.full((FRAME, 2), j, np.int16) for j in range(i, i + 5)])
        batched.push_audio(pcm, 0, tuple(f"p{j}".encode() for j in range(i, i + 5)))
    a, b = single.pop_ready(), batched.pop_ready()
    assert [s.coded.packets if s.coded else None for s in a] == [s.coded.packets if s.coded else None for s in b]
    assert b[1].coded is not None
