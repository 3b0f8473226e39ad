"""W0 follows the input's live edge while it settles: a cached-GOP burst adds no latency."""

from __future__ import annotations

from typing import Any

from livedub.media.pipeline import MediaPipeline
from livedub.media.settings import MediaSettings

NS = 1_000_000_000


class AnchorSink:
    def __init__(self) -> None:
        self.anchors: list[float] = []

    def set_anchor(self, w0: float) -> None:
        self.anchors.append(w0)


def pipeline(**kw: Any) -> tuple[MediaPipeline, AnchorSink]:
    settings = MediaSettings(
        input_url="rtsp://127.0.0.1:1/live/x/in",
        output_url="rtmp://127.0.0.1:1/live/x/out",
        stream_id="x",
        segment_s=6.0,
        output_delay_s=7.0,
        **kw,
    )
    p = MediaPipeline(settings)
    sink = AnchorSink()
    p.output = sink  # type: ignore[assignment]
    return p, sink


def test_cached_gop_burst_does_not_move_w0_late() -> None:
    p, sink = pipeline()
    # Connect at wall 100.0; the server sends a cached GOP (pts 0..1.5 s) at once, then live
    # packets arrive in real time: pts 1.6 s at 100.1, 2.0 s at 100.5, ...
    p._anchor(0, 100.0)
    assert p.w0 == 100.0  # first packet: as before
    for pts_s in (0.5, 1.0, 1.5):
        p._anchor(int(pts_s * NS), 100.0)
    assert abs(p.w0 - 98.5) < 1e-9  # the newest cached packet is at the live edge
    for pts_s, wall in ((1.6, 100.1), (2.0, 100.5), (2.5, 101.0)):
        p._anchor(int(pts_s * NS), wall)
    assert abs(p.w0 - 98.5) < 1e-9  # the live edge: pts 0 would have been read at 98.5
    assert sink.anchors[0] == 100.0 and abs(sink.anchors[-1] - 98.5) < 1e-9
    assert sink.anchors == sorted(sink.anchors, reverse=True)  # only ever earlier


def test_w0_is_fixed_after_the_settle_time() -> None:
    p, sink = pipeline(anchor_settle_s=1.0)
    p._anchor(0, 100.0)
    p._anchor(int(1.0 * NS), 100.9)  # 0.1 s earlier than the first: within 1 s, taken
    assert abs(p.w0 - 99.9) < 1e-9
    p._anchor(int(3.0 * NS), 101.5)  # would be 98.5, but 1.5 s after the first packet: ignored
    assert abs(p.w0 - 99.9) < 1e-9
    assert len(sink.anchors) == 2


def test_settle_is_bounded_by_half_the_delay_and_zero_disables_it() -> None:
    p, _ = pipeline(anchor_settle_s=60.0)
    p._anchor(0, 100.0)
    p._anchor(int(4.0 * NS), 103.4)  # 3.4 s after the first packet, within D/2 = 3.5 s: taken
    assert abs(p.w0 - 99.4) < 1e-9
    p._anchor(int(5.0 * NS), 103.6)  # 3.6 s after the first packet > D/2: ignored
    assert abs(p.w0 - 99.4) < 1e-9
    q, _ = pipeline(anchor_settle_s=0.0)
    q._anchor(0, 100.0)
    q._anchor(int(1.0 * NS), 100.5)
    assert q.w0 == 100.0


def test_a_later_w0_is_never_taken() -> None:
    p, sink = pipeline()
    p._anchor(0, 100.0)
    p._anchor(int(0.5 * NS), 100.8)  # arrived late (jitter): W0 stays
    assert p.w0 == 100.0 and sink.anchors == [100.0]
