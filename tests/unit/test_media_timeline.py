"""Timestamp repair (never drop) and the rebased, continuous input timeline."""

from __future__ import annotations

from livedub.media.timeline import Timeline, TimestampRepairer

F = 33_333_333  # one frame at 30 fps (ns)
MS = 1_000_000


def test_first_keyframe_without_timestamps_gets_the_one_it_must_have() -> None:
    r: TimestampRepairer[str] = TimestampRepairer(F)
    assert r.push("key", None, None, None) == []  # held, not dropped
    out = r.push("p1", 10 * F, 10 * F, F)
    assert [(s.item, s.pts_ns, s.dts_ns, s.repaired) for s in out] == [
        ("key", 9 * F, 9 * F, True),
        ("p1", 10 * F, 10 * F, False),
    ]
    assert r.repaired_count == 1


def test_several_untimed_packets_are_back_filled_in_order() -> None:
    r: TimestampRepairer[int] = TimestampRepairer(F)
    for i in range(3):
        assert r.push(i, None, None, F) == []
    out = r.push(3, 100 * F, 100 * F, F)
    assert [s.dts_ns for s in out] == [97 * F, 98 * F, 99 * F, 100 * F]


def test_missing_timestamp_mid_stream_continues_from_the_last_one() -> None:
    r: TimestampRepairer[int] = TimestampRepairer(F)
    r.push(0, 0, 0, F)
    (s,) = r.push(1, None, None, None)
    assert (s.pts_ns, s.dts_ns, s.repaired) == (F, F, True)
    (s,) = r.push(2, 5 * F, None, F)  # pts only
    assert s.pts_ns == 5 * F and F < s.dts_ns <= 5 * F
    (s,) = r.push(3, None, 6 * F, F)  # dts only
    assert s.pts_ns == s.dts_ns == 6 * F


def test_flush_releases_held_packets() -> None:
    r: TimestampRepairer[int] = TimestampRepairer(F)
    r.push(0, None, None, None)
    out = r.flush()
    assert [(s.item, s.dts_ns) for s in out] == [(0, 0)]


def test_never_timestamped_stream_counts_from_zero_after_max_held() -> None:
    r: TimestampRepairer[int] = TimestampRepairer(F, max_held=2)
    assert r.push(0, None, None, None) == []
    assert r.push(1, None, None, None) == []
    out = r.push(2, None, None, None)
    assert [s.dts_ns for s in out] == [0, F, 2 * F]
    (s,) = r.push(3, None, None, None)
    assert s.dts_ns == 3 * F


def test_timeline_starts_near_zero_and_keeps_av_offset() -> None:
    t = Timeline()
    raw0 = 5_000 * MS
    assert t.shift("video", raw0, F) == -raw0
    # Audio 20 ms later on the input keeps its 20 ms offset.
    assert raw0 + 20 * MS + t.shift("audio", raw0 + 20 * MS, 21 * MS) == 20 * MS


def test_backwards_jump_is_rebased_to_continue() -> None:
    events: list[tuple[str, int]] = []
    t = Timeline(on_discontinuity=lambda k, j: events.append((k, j)))
    for i in range(3):
        t.shift("video", i * F, F)
    s = t.shift("video", 0, F)  # publisher restarted at 0
    assert 0 + s == 3 * F
    assert events and events[0][0] == "video"
    assert 1 * F + t.shift("video", F, F) == 4 * F  # stays continuous afterwards


def test_forward_jump_beyond_threshold_is_rebased_small_one_is_not() -> None:
    t = Timeline(discontinuity_threshold_ns=1000 * MS)
    t.shift("audio", 0, 21 * MS)
    assert t.shift("audio", 500 * MS, 21 * MS) == 0  # 0.5 s gap: genuine, kept
    s = t.shift("audio", 10_000 * MS, 21 * MS)
    assert 10_000 * MS + s == 521 * MS
    assert t.discontinuities == 1


def test_new_connection_continues_after_old_one_or_at_wall_position() -> None:
    t = Timeline()
    t.shift("video", 0, F)
    t.shift("video", F, F)  # end = 2F
    t.new_connection()
    assert 77 * F + t.shift("video", 77 * F, F) == 2 * F
    t.new_connection(resume_at_ns=10 * F)
    # A fresh connection starting at 0 lands at the wall position, and audio keeps its offset.
    assert 0 + t.shift("video", 0, F) == 10 * F
    assert 5 * MS + t.shift("audio", 5 * MS, 21 * MS) == 10 * F + 5 * MS
    assert t.discontinuities == 0
