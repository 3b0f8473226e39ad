"""The reader's audio batcher: decoded frames → contiguous int16 batches, converted as libswresample does."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from livedub.clock import SystemClock
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


def _batcher(batch_s: float = 0.1, *, rate: int = RATE, channels: int = 2) -> AudioBatcher:
    return AudioBatcher(1, rate, channels, batch_s, SystemClock(), remux=True)


class _Packet:
    """What the batcher reads of a demuxed packet (a real one needs a demuxer's stream to decode):
    it decodes into `frames` frames (default one), the first at the packet's timestamp."""

    def __init__(self, i: int, data: bytes, *, pts: int | None = None, frames: int = 1, no_pts: bool = False) -> None:
        self.frames = [_frame(i + k, pts=None if pts is None else pts + k * FRAME) for k in range(frames)]
        if no_pts:
            for f in self.frames:
                f.pts = None
        self.pts = self.frames[0].pts
        self.time_base = Fraction(1, RATE)
        self.duration = FRAME * frames
        self.data = data
        self.decoded = False

    def decode(self) -> list[av.AudioFrame]:
        self.decoded = True
        return self.frames

    def __bytes__(self) -> bytes:
        return self.data


def _s16(f: av.AudioFrame) -> np.ndarray:
    """float planar → int16 `(n, ch)` as libswresample converts: x 32768, half to even, saturated."""
    return np.clip(np.rint(f.to_ndarray().T * np.float32(32768.0)), -32768, 32767).astype(np.int16)


def test_a_batch_is_its_frames_converted_to_s16_half_to_even_and_saturated() -> None:
    b = _batcher(0.1)
    out = []
    for i in range(5):
        out += b.add_packet(_Packet(i, b"p"))
    out += b.flush()
    assert len(out) == 1 and out[0].pcm.shape == (5 * FRAME, 2)
    expected = np.concatenate([_s16(_frame(i)) for i in range(5)])
    np.testing.assert_array_equal(np.asarray(out[0].pcm), expected)
    assert list(np.asarray(out[0].pcm)[:4, 0]) == [0, 2, 0, -2]  # the ties of `_frame`


def test_packets_are_delivered_in_batches_of_about_batch_s_with_their_bytes() -> None:
    b = _batcher(0.1)  # 4800 samples: a batch every 5 packets of 1024
    out = []
    for i in range(12):
        out += b.add_packet(_Packet(i, f"p{i}".encode()))
    out += b.flush()
    assert [a.pcm.shape[0] for a in out] == [5 * FRAME, 5 * FRAME, 2 * FRAME]
    assert [a.pts_ns for a in out] == [0, 5 * FRAME * 10**9 // RATE, 10 * FRAME * 10**9 // RATE]
    assert all(a.frame_samples == FRAME for a in out)
    assert out[0].coded == tuple(f"p{i}".encode() for i in range(5))
    np.testing.assert_array_equal(out[1].pcm[:FRAME], _s16(_frame(5)))


def test_a_timestamp_jump_or_a_missing_timestamp_ends_the_batch() -> None:
    b = _batcher(0.1)
    packets = [_Packet(0, b"a"), _Packet(1, b"b", pts=FRAME + 12)]  # 0.25 ms of jitter: same batch
    packets.append(_Packet(2, b"c", pts=10 * FRAME))  # a jump: the batch so far goes out alone
    out = [a for p in packets for a in b.add_packet(p)]  # the jump spans ≥ 0.1 s: all decoded
    assert [(a.pts_ns, a.pcm.shape[0], a.coded) for a in out] == [
        (0, 2 * FRAME, (b"a", b"b")),
        (10 * FRAME * 10**9 // RATE, FRAME, (b"c",)),
    ]
    held = b.add_packet(_Packet(12, b"e", pts=12 * FRAME))
    out = b.add_packet(_Packet(13, b"d", no_pts=True))  # no timestamp: decoded at once, alone
    assert held == [] and [(a.pts_ns, a.pcm.shape[0], a.coded) for a in out] == [
        (12 * FRAME * 10**9 // RATE, FRAME, (b"e",)),
        (None, FRAME, (b"d",)),
    ]


def test_a_packet_of_several_frames_drops_the_batchs_bytes_and_zero_batches_each_packet() -> None:
    b = _batcher(0.1)
    out = b.add_packet(_Packet(0, b"a")) + b.add_packet(_Packet(1, b"b", frames=2)) + b.flush()
    assert len(out) == 1 and out[0].pcm.shape[0] == 3 * FRAME and out[0].coded is None
    b = _batcher(0)
    assert [a.pcm.shape[0] for i in range(3) for a in b.add_packet(_Packet(2 * i, b"x", frames=2))] == [2 * FRAME] * 3


def test_frames_to_resample_go_through_the_resampler_and_its_tail_comes_at_the_end() -> None:
    b = _batcher(0.1, rate=16_000, channels=1)
    out = []
    for i in range(20):
        out += b.add_packet(_Packet(i, b"x"))
    live = sum(a.pcm.shape[0] for a in out)
    out += b.end()  # EOF: what is held, then what the resampler still holds
    total = sum(a.pcm.shape[0] for a in out)
    assert all(np.asarray(a.pcm).dtype == np.int16 and a.pcm.shape[1] == 1 for a in out)
    assert total > live and abs(total - 20 * FRAME // 3) <= 2  # 48 kHz → 16 kHz, all of it
    assert out[-1].pts_ns is None  # the tail
    assert all(a.coded is None for a in out)  # a different length: the packets do not stand for it


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
