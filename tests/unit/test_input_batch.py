"""The reader's audio batcher: decoded frames → contiguous int16 batches, converted as libswresample does."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from livedub.clock import SystemClock
from livedub.media.audio import frame_to_pcm, planar_float_to_pcm
from livedub.media.input import AudioBatcher

RATE = 48_000
FRAME = 1024


def _frame(i: int, *, pts: int | None = None, rate: int = RATE, seed: int = 0) -> av.AudioFrame:
    rng = np.random.default_rng(seed + i)
    data = rng.uniform(-1.2, 1.2, (2, FRAME)).astype(np.float32)  # beyond ±1: saturation
    data[0, :4] = [0.5 / 32768, 1.5 / 32768, -0.5 / 32768, -2.5 / 32768]  # ties: half to even
    f = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
    f.sample_rate = rate
    f.time_base = Fraction(1, rate)
    f.pts = i * FRAME if pts is None else pts
    return f


def _batcher(batch_s: float = 0.1) -> AudioBatcher:
    return AudioBatcher(1, RATE, 2, batch_s, SystemClock())


def test_conversion_is_libswresample_s16_exactly() -> None:
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
    for i in range(5):
        f = _frame(i)
        ours = planar_float_to_pcm(f.to_ndarray())
        theirs = np.concatenate([frame_to_pcm(g) for g in resampler.resample(f)])
        assert ours.dtype == np.int16 and ours.flags.c_contiguous
        np.testing.assert_array_equal(ours, theirs)


def test_frames_are_delivered_in_batches_of_about_batch_s_with_their_packets() -> None:
    b = _batcher(0.1)  # 4800 samples: a batch every 5 frames
    out = []
    for i in range(12):
        out += b.add(_frame(i), f"p{i}".encode())
    out += b.flush()
    assert [a.pcm.shape[0] for a in out] == [5 * FRAME, 5 * FRAME, 2 * FRAME]
    assert [a.pts_ns for a in out] == [0, 5 * FRAME * 10**9 // RATE, 10 * FRAME * 10**9 // RATE]
    assert out[0].coded == tuple(f"p{i}".encode() for i in range(5))
    np.testing.assert_array_equal(out[1].pcm[:FRAME], planar_float_to_pcm(_frame(5).to_ndarray()))


def test_a_timestamp_jump_or_a_missing_timestamp_ends_the_batch() -> None:
    b = _batcher(0.1)
    out = b.add(_frame(0), b"a") + b.add(_frame(1, pts=FRAME + 12), b"b")  # 0.25 ms of jitter: same batch
    assert out == []
    out = b.add(_frame(2, pts=10 * FRAME), b"c")  # a jump: the batch so far goes out alone
    assert len(out) == 1 and out[0].pcm.shape[0] == 2 * FRAME and out[0].coded == (b"a", b"b")
    f = _frame(11)
    f.pts = None
    out = b.add(f, None)  # no timestamp: ends the batch before it, and goes out alone
    assert [(a.pts_ns, a.pcm.shape[0], a.coded) for a in out] == [
        (10 * FRAME * 10**9 // RATE, FRAME, (b"c",)),
        (None, FRAME, None),
    ]


def test_a_frame_without_its_packet_drops_the_batchs_packets_and_zero_batches_each_frame() -> None:
    b = _batcher(0.1)
    out = b.add(_frame(0), b"a") + b.add(_frame(1), None)
    out += b.flush()
    assert len(out) == 1 and out[0].coded is None
    b = _batcher(0)
    assert [a.pcm.shape[0] for i in range(3) for a in b.add(_frame(i), None)] == [FRAME] * 3


def test_frames_to_resample_go_through_the_resampler() -> None:
    b = AudioBatcher(1, 16_000, 1, 0.1, SystemClock())
    out = []
    for i in range(20):
        out += b.add(_frame(i), b"x")
    out += b.flush()
    total = sum(a.pcm.shape[0] for a in out)
    assert all(a.pcm.dtype == np.int16 and a.pcm.shape[1] == 1 for a in out)
    assert abs(total - 20 * FRAME // 3) <= 64  # 48 kHz → 16 kHz (the resampler's delay aside)
    assert all(a.coded is None for a in out)  # a different length: the packets do not stand for it


class _Packet:
    """What the batcher reads of a demuxed packet (a real one needs a demuxer's stream to decode)."""

    def __init__(self, i: int, data: bytes, *, pts: int | None = None) -> None:
        self.frame = _frame(i, pts=pts)
        self.pts = self.frame.pts
        self.time_base = Fraction(1, RATE)
        self.duration = FRAME
        self.data = data
        self.decoded = False

    def decode(self) -> list[av.AudioFrame]:
        self.decoded = True
        return [self.frame]

    def __bytes__(self) -> bytes:
        return self.data


def test_packets_are_held_until_they_span_batch_s_then_decoded_together() -> None:
    from livedub.clock import FakeClock

    clock = FakeClock()
    b = AudioBatcher(1, RATE, 2, 0.1, clock, remux=True)
    packets = [_Packet(i, f"p{i}".encode()) for i in range(7)]
    out = []
    for p in packets[:4]:
        out += b.add_packet(p)
        clock.advance(FRAME / RATE)
    assert out == [] and not any(p.decoded for p in packets)  # 4 frames = 85 ms: held, undecoded
    out = b.add_packet(packets[4])  # 5 frames = 107 ms ≥ 0.1 s: decoded and delivered
    assert [(a.pts_ns, a.pcm.shape[0], a.coded) for a in out] == [(0, 5 * FRAME, tuple(f"p{i}".encode() for i in range(5)))]
    assert out[0].read_wall == 1_700_000_000.0  # the first packet's read time
    assert b.add_packet(packets[5]) == [] and b.age_s() == 0.0
    clock.advance(0.3)
    assert abs(b.age_s() - 0.3) < 1e-6  # held for the idle flush to see
    out = b.add_packet(_Packet(9, b"x", pts=30 * FRAME))  # a jump: decoded at once, two batches
    assert [(a.pts_ns, a.pcm.shape[0], a.coded) for a in out] == [
        (5 * FRAME * 10**9 // RATE, FRAME, (b"p5",)),
        (30 * FRAME * 10**9 // RATE, FRAME, (b"x",)),
    ]
    assert abs(out[1].read_wall - out[0].read_wall - 0.3) < 1e-6  # each batch carries its first packet's read time
    b.add_packet(packets[6])
    b.close()  # the container closes: nothing held is decoded after
    assert b.flush() == [] and not packets[6].decoded and b.add_packet(_Packet(8, b"y")) == []


def test_the_handoff_flushes_a_held_batch_only_once_it_is_old_enough_and_keeps_order() -> None:
    import asyncio

    from livedub.clock import FakeClock
    from livedub.media.input import _Handoff

    clock = FakeClock()
    got: list[object] = []
    loop = asyncio.new_event_loop()
    try:
        h = _Handoff(loop, 8, sink=got.append, clock=clock)
        h.batcher = AudioBatcher(1, RATE, 2, 0.1, clock, remux=True)
        assert h.deliver_audio(_Packet(0, b"a")) and h.deliver_audio(_Packet(1, b"b"))
        assert got == []  # held: 2 of 5 packets
        clock.advance(0.1)
        assert h.flush_audio(0.2) and got == []  # not old enough: a packet may still complete it
        clock.advance(0.1)
        assert h.flush_audio(0.2)
        assert [(a.pts_ns, a.pcm.shape[0], a.coded) for a in got] == [(0, 2 * FRAME, (b"a", b"b"))]  # type: ignore[attr-defined]
        assert h.flush_audio(0.2) and len(got) == 1  # nothing held: nothing more
        assert h.deliver_audio(_Packet(2, b"c")) and h.flush_audio(0.0) and len(got) == 2
        h.stop.set()  # an abandoned reader delivers nothing
        assert h.deliver_audio(_Packet(3, b"d"))  # held, not delivered
        assert not h.flush_audio(0.0) and len(got) == 2
        h.close_audio()
        assert h.batcher.flush() == []
    finally:
        loop.close()
