"""OutputCore: pacing at W0 + ts + D with fake time, deadlines, fallback, gap fill, keyframe start."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from livedub.media.output import EncodedAudio, OutputCore
from livedub.media.segment import NS_PER_S, Segment, SegmentAudio, VideoPacket

RATE = 1000  # 1 kHz keeps numbers small: one "AAC frame" = 100 samples here
N = 1000  # 1 s segments
FRAME = 100


class FakeEncoder:
    """Frames of 100 samples; a packet comes out one frame late (like AAC's look-ahead)."""

    lookahead_samples = 2 * FRAME

    def __init__(self) -> None:
        self.fed: list[tuple[int, int]] = []  # (abs_sample, n)
        self._carry = 0
        self._next: int | None = None
        self._pending: list[int] = []

    def encode(self, pcm: np.ndarray, abs_sample: int) -> list[EncodedAudio]:
        if self._next is not None:
            assert abs_sample == self._next + self._carry, "non-contiguous feed"
        else:
            self._next = abs_sample
        self.fed.append((abs_sample, pcm.shape[0]))
        total = self._carry + pcm.shape[0]
        out = []
        while total >= FRAME:
            self._pending.append(self._next)
            self._next += FRAME
            total -= FRAME
            if len(self._pending) > 1:
                p = self._pending.pop(0)
                out.append(EncodedAudio(p * NS_PER_S // RATE, ("a", p)))
        self._carry = total
        return out

    def flush(self) -> list[EncodedAudio]:
        out = [EncodedAudio(p * NS_PER_S // RATE, ("a", p)) for p in self._pending]
        self._pending = []
        return out


class FakeSink:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.written: list[tuple[str, int, float]] = []  # (kind, key_ns, wall)

    def write_video(self, pkt: VideoPacket) -> None:
        self.written.append(("v", pkt.dts_ns, self.clock[0]))

    def write_audio(self, pkt: EncodedAudio) -> None:
        self.written.append(("a", pkt.pts_ns, self.clock[0]))


def segment(batch: int, n: int = N, value: int = 1, deadline: float = math.inf) -> Segment:
    pcm = np.full((n, 1), value, np.int16)
    return Segment(
        id=f"seg{batch}", stream_id="s", batch=batch, t0_ns=batch * NS_PER_S, n_samples=n,
        sample_rate=RATE, channels=1, audio=SegmentAudio(pcm, deadline),
    )


def video(t_s: float, key: bool = False) -> VideoPacket:
    t = round(t_s * NS_PER_S)
    return VideoPacket(b"v", t, t, NS_PER_S // 10, key)


def make_core(paced: bool = True, delay_s: float = 3.0, **kw) -> tuple[OutputCore, FakeEncoder, FakeSink, list[float], list]:
    clock = [0.0]
    enc = FakeEncoder()
    sink = FakeSink(clock)
    taken: list = []
    core = OutputCore(
        paced=paced, delay_s=delay_s, sample_rate=RATE, channels=1, segment_samples=N,
        has_video=True, encoder=enc, sink=sink, margin_s=0.1,
        on_taken=lambda seg, k, src, reason: taken.append((k, src, reason)), **kw,
    )
    return core, enc, sink, clock, taken


def run_until(core: OutputCore, clock: list[float], t_end: float, events: list[tuple[float, Callable[[], None]]]) -> None:
    """Advance fake time event by event, polling like the output thread does."""
    events = sorted(events, key=lambda e: e[0])
    i = 0
    wake = core.poll(clock[0])
    while clock[0] < t_end:
        nxt = min(wake, events[i][0] if i < len(events) else math.inf, t_end)
        clock[0] = nxt
        while i < len(events) and events[i][0] <= clock[0]:
            events[i][1]()
            i += 1
        wake = core.poll(clock[0])


def play_three_segments(core: OutputCore, clock: list[float], w0: float) -> None:
    """3 s of video at 10 fps and three 1 s segments arriving as they are cut, then the end."""
    clock[0] = w0
    core.set_anchor(w0)
    core.set_audio_start(0)
    evs = [(w0 + i * 0.1, (lambda i=i: core.push_video(video(i * 0.1, key=i % 10 == 0)))) for i in range(30)]
    for k in range(3):
        evs.append((w0 + k + 1.0, (lambda k=k: core.push_segment(segment(k), clock[0]))))
    evs.append((w0 + 3.05, core.end))
    run_until(core, clock, w0 + 10, evs)


def test_packets_are_written_at_w0_plus_pts_plus_delay_in_timestamp_order() -> None:
    core, enc, sink, clock, taken = make_core(delay_s=3.0)
    w0 = 100.0
    play_three_segments(core, clock, w0)
    assert core.done
    assert sink.written, "nothing written"
    for _kind, key_ns, wall in sink.written:
        due = w0 + key_ns / NS_PER_S + 3.0
        assert abs(wall - due) < 1e-9 or wall >= due  # never early
        assert wall - due < 1e-6  # and on time (fake time is exact)
    keys = [k for _, k, _ in sink.written]
    assert keys == sorted(keys)
    assert [k for k, *_ in taken] == [0, 1, 2]
    assert all(src == "original" and reason == "deadline" for _, src, reason in taken)
    assert enc.fed == [(0, N), (N, N), (2 * N, N)]  # exactly N samples per segment, contiguous


def _early_writes(ahead: float) -> list[float]:
    """How early (s) each packet was written with `write_ahead_s=ahead` (margin 0.1 s)."""
    core, _enc, sink, clock, _taken = make_core(delay_s=3.0, write_ahead_s=ahead)
    w0 = 100.0
    play_three_segments(core, clock, w0)
    assert core.done and sink.written
    keys = [k for _, k, _ in sink.written]
    assert keys == sorted(keys)
    return [w0 + key_ns / NS_PER_S + 3.0 - wall for _kind, key_ns, wall in sink.written]


def test_write_ahead_writes_up_to_that_early_never_more_and_at_most_the_margin() -> None:
    for ahead, expected in ((0.05, 0.05), (0.5, 0.1)):  # the margin (0.1 s) bounds it
        early = _early_writes(ahead)
        assert min(early) >= -1e-9  # never late
        assert abs(max(early) - expected) < 1e-9  # fake time: exactly that early, never more


def test_dubbed_before_deadline_is_used_and_after_deadline_refused() -> None:
    core, enc, sink, clock, taken = make_core(delay_s=3.0)
    w0 = 0.0
    core.set_anchor(w0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    s0, s1 = segment(0), segment(1)
    core.push_segment(s0, 1.0)
    core.push_segment(s1, 2.0)
    dl0 = core.deadline(0)
    dl1 = core.deadline(1)
    assert math.isclose(dl0, 3.0 - 0.2 - 0.1)  # D - look-ahead (200 samples) - margin
    assert math.isclose(dl1, dl0 + 1.0)
    late_result: list[bool] = []
    evs = [
        (dl0 - 0.5, lambda: s0.audio.set_dubbed(np.full((N, 1), 7, np.int16))),
        (dl1 + 0.01, lambda: late_result.append(s1.audio.set_dubbed(np.full((N, 1), 7, np.int16)))),
        (3.0, core.end),
    ]
    run_until(core, clock, 8.0, evs)
    assert taken[0] == (0, "dubbed", None)
    assert taken[1] == (1, "original", "deadline")
    assert late_result == [False]


def test_resolved_segment_is_taken_early_but_written_on_time() -> None:
    core, enc, sink, clock, taken = make_core(delay_s=3.0)
    core.set_anchor(0.0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    s0 = segment(0)
    s0.audio.set_fallback("passthrough")
    core.push_segment(s0, 1.0)
    clock[0] = 1.0
    core.poll(1.0)
    assert taken == [(0, "original", "passthrough")]
    assert all(w >= 3.0 for _, _, w in sink.written)


def test_missing_segment_becomes_silence_and_late_arrival_is_reported() -> None:
    core, enc, sink, clock, taken = make_core(delay_s=3.0)
    core.set_anchor(0.0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    core.push_segment(segment(0), 1.0)
    late = segment(1)
    evs = [(core.deadline(1) + 1.5, lambda: core.push_segment(late, clock[0])), (4.0, core.end)]
    run_until(core, clock, 10.0, evs)
    assert taken[0] == (0, "original", "deadline")
    assert taken[1] == (1, "silence", "input_late")
    assert core.filled_segments == [1] and core.late_segments == [1]
    assert late.audio.taken and not late.audio.set_dubbed(late.pcm)
    # The audio timeline has no hole: fed contiguously through the filled segment.
    assert enc.fed[:2] == [(0, N), (N, N)]


def test_output_starts_at_first_video_keyframe() -> None:
    core, enc, sink, clock, taken = make_core(paced=False)
    core.set_audio_start(0)
    core.push_video(video(0.0))  # not a keyframe: dropped
    core.push_video(video(0.1))
    core.push_video(video(0.25, key=True))
    core.push_video(video(0.35))
    core.push_video(video(1.0, key=True))
    core.push_segment(segment(0), 0.0)
    core.push_segment(segment(1, n=500), 0.0)
    core.end()
    core.poll(0.0)
    assert core.done
    assert core.video_dropped_before_keyframe == 2
    assert sink.written[0][0] in ("v", "a")
    first_audio = min(k for kind, k, _ in sink.written if kind == "a")
    assert first_audio == 250 * NS_PER_S // 1000  # audio starts with the keyframe
    assert enc.fed[0] == (250, N - 250)
    assert sum(n for _, n in enc.fed) == N + 500 - 250


def test_unpaced_waits_for_both_streams_then_flushes_everything() -> None:
    core, enc, sink, clock, taken = make_core(paced=False)
    core.set_audio_start(0)
    for i in range(20):
        core.push_video(video(i * 0.1, key=i == 0))
    core.poll(0.0)
    assert sink.written == []  # no audio yet: video must wait to be interleaved
    core.push_segment(segment(0), 0.0)
    core.poll(0.0)
    written = [k for _, k, _ in sink.written]
    assert written and max(written) < NS_PER_S  # only up to what audio covers
    core.push_segment(segment(1), 0.0)
    core.end()
    core.poll(0.0)
    assert core.done
    keys = [k for _, k, _ in sink.written]
    assert keys == sorted(keys)
    assert sum(1 for kind, *_ in sink.written if kind == "v") == 20
    assert sum(1 for kind, *_ in sink.written if kind == "a") == 2 * N // FRAME


def test_unpaced_wait_for_resolution() -> None:
    core, enc, sink, clock, taken = make_core(paced=False, unpaced_wait_s=2.0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    s0 = segment(0)
    core.push_segment(s0, 10.0)
    assert core.poll(10.0) == 12.0  # waits for the worker, up to unpaced_wait_s
    s0.audio.set_dubbed(np.full((N, 1), 3, np.int16))
    core.poll(10.5)
    assert taken == [(0, "dubbed", None)]


def test_output_delay_is_reported_per_segment() -> None:
    delays: list[float] = []
    core, enc, sink, clock, taken = make_core(delay_s=3.0, on_delay=delays.append)
    core.set_anchor(0.0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    evs = [(k + 1.0, (lambda k=k: core.push_segment(segment(k), clock[0]))) for k in range(3)]
    evs.append((3.1, core.end))
    run_until(core, clock, 10.0, evs)
    assert len(delays) >= 2
    assert all(abs(d - 3.0) < 1e-6 for d in delays)


def test_anchor_may_move_earlier_never_later() -> None:
    core, *_ = make_core(delay_s=3.0)
    core.set_anchor(100.0)
    core.set_anchor(101.0)  # later: ignored (nothing already due is delayed)
    assert core.w0 == 100.0
    core.set_anchor(98.5)  # earlier (the live edge of a cached-GOP burst): taken
    assert core.w0 == 98.5


def _aac_packets(end_pad_samples: int, n_samples: int) -> list[int]:
    """pts (in samples) of the packets a real AAC `StreamAudioEncoder` emits for `n_samples`."""
    import io

    import av

    from livedub.media.output import StreamAudioEncoder

    with av.open(io.BytesIO(), "w", format="adts") as c:
        stream = c.add_stream("aac", rate=48_000, layout="stereo")
        enc = StreamAudioEncoder(stream, 48_000, 2, end_pad_samples=end_pad_samples)
        packets = enc.encode(np.ones((n_samples, 2), np.int16), 0) + enc.flush()
    return [round(p.pts_ns * 48_000 / NS_PER_S) for p in packets]


def test_end_padding_appends_silent_frames_after_the_last_real_one() -> None:
    """RTSP outputs append 2 frames of silence (see MediaOutput._prepare): the real frames are
    the same, followed by 2 more packets that a relay may hold back instead of the last real one."""
    plain = _aac_packets(0, 3 * 1024)
    padded = _aac_packets(2 * 1024, 3 * 1024)
    assert plain == [-1024, 0, 1024, 2048]  # priming + 3 frames
    assert padded == plain + [3072, 4096]
    # A partial last frame is completed with the padding's first samples.
    assert _aac_packets(2048, 3 * 1024 + 512)[-3:] == [3072, 4096, 5120]


def test_the_encoder_gives_the_packets_pyavs_public_encode_gives() -> None:
    """`StreamAudioEncoder` sends its exact frames to the codec without PyAV's resampling graph
    where PyAV allows it: the packets (bytes, pts, time base) must be those of `stream.encode`."""
    import io
    from fractions import Fraction

    import av

    from livedub.media.output import StreamAudioEncoder

    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal((20 * 1024 + 300, 2)) * 3000).astype(np.int16)
    with av.open(io.BytesIO(), "w", format="adts") as c:
        ours = StreamAudioEncoder(c.add_stream("aac", rate=48_000, layout="stereo"), 48_000, 2)
        mine = ours.encode(pcm[:7000], 0) + ours.encode(pcm[7000:], 7000) + ours.flush()
    with av.open(io.BytesIO(), "w", format="adts") as c:
        stream = c.add_stream("aac", rate=48_000, layout="stereo")
        public = []
        for start in range(0, pcm.shape[0], 1024):
            planar = np.ascontiguousarray((pcm[start : start + 1024].astype(np.float32) / 32768).T)
            f = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
            f.sample_rate, f.pts, f.time_base = 48_000, start, Fraction(1, 48_000)
            public += stream.encode(f)
        public += stream.encode(None)
    if hasattr(stream.codec_context, "_send_frame_and_recv"):  # PyAV has the direct path (18.x does)
        assert ours._direct is not False
    assert [(bytes(e.packet), e.packet.pts, e.packet.time_base) for e in mine] == [
        (bytes(p), p.pts, p.time_base) for p in public
    ]


def test_the_encoder_takes_a_conversion_handed_back_in_several_frames_as_in_one() -> None:
    """libswresample normally converts a feed in one frame; split in two, the packets are the same."""
    import io

    import av

    from livedub.media.audio import AudioConverter, frame_to_pcm, pcm_frame
    from livedub.media.output import StreamAudioEncoder

    rng = np.random.default_rng(11)
    pcm = (rng.standard_normal((9 * 1024 + 500, 2)) * 3000).astype(np.int16)

    def packets(split: bool) -> list[bytes]:
        with av.open(io.BytesIO(), "w", format="adts") as c:
            enc = StreamAudioEncoder(c.add_stream("aac", rate=48_000, layout="stereo"), 48_000, 2)
            if split:
                conv = AudioConverter("fltp", "stereo", 48_000)

                def in_two(frame: av.AudioFrame) -> list[av.AudioFrame]:
                    whole = frame_to_pcm(frame)
                    half = whole.n // 2
                    return conv.resample(pcm_frame(whole[:half], 48_000)) + conv.resample(pcm_frame(whole[half:], 48_000))

                enc._to_fltp.resample = in_two  # type: ignore[method-assign]
            return [bytes(e.packet) for e in enc.encode(pcm, 0) + enc.flush()]

    assert packets(split=True) == packets(split=False)
