"""The original sound kept (issue 18): which output gets it how, its language tags, OutputCore
feeding a second encoder on the same timeline (fake encoders and sink), and the original's own
output failing without touching the dubbed one."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from livedub.log import bind
from livedub.media.languages import UNDETERMINED, iso639_2
from livedub.media.observer import WriteErrorKind
from livedub.media.output import (
    ORIGINAL_GIVEN_UP_WAIT_S,
    ORIGINAL_QUEUE_PACKETS,
    AudioTrack,
    EncodedAudio,
    OutputCore,
    _OriginalOutput,
    _TeeSink,
)
from livedub.media.segment import NS_PER_S, VideoPacket
from livedub.media.urls import carries_several_audio_tracks, original_output_url, output_format_for
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.worker.config import WorkerSettings
from tests.unit.test_media_output import (
    FRAME,
    RATE,
    FakeEncoder,
    FakeSink,
    N,
    run_until,
    segment,
    video,
)

_log = bind(logging.getLogger(__name__), stream_id="s")


# --- which output carries the original how -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "several"),
    [
        ("srt://127.0.0.1:9000", True),
        ("udp://127.0.0.1:9000", True),
        ("tcp://127.0.0.1:9000", True),
        ("rtsp://h:8554/live/x/out", True),
        ("/tmp/x.ts", True),
        ("/tmp/x.mkv", True),
        ("/tmp/x.mp4", True),
        ("/tmp/x.mov", True),
        ("rtmp://h:1935/live/x/out", False),
        ("/tmp/x.flv", False),
    ],
)
def test_several_audio_tracks_everywhere_but_flv(url: str, several: bool) -> None:
    fmt, _ = output_format_for(url)
    assert carries_several_audio_tracks(fmt) is several


@pytest.mark.parametrize(
    ("url", "orig"),
    [
        ("rtmp://127.0.0.1:1935/live/x/out", "rtmp://127.0.0.1:1935/live/x/orig"),
        (
            "rtmp://127.0.0.1:1935/live/x/out?user=worker&pass=a%2Fb",
            "rtmp://127.0.0.1:1935/live/x/orig?user=worker&pass=a%2Fb",
        ),
        ("rtmp://u:p@h/live/x/out", "rtmp://u:p@h/live/x/orig"),
        ("rtmp://h/app/name", "rtmp://h/app/name-orig"),
        ("/tmp/a/x.flv", "/tmp/a/x.orig.flv"),
        ("x.flv", "x.orig.flv"),
        ("file:///tmp/x.flv", "file:///tmp/x.orig.flv"),
    ],
)
def test_original_output_url_is_derived_from_the_output(url: str, orig: str) -> None:
    assert original_output_url(url) == orig


def test_original_output_url_needs_a_path() -> None:
    with pytest.raises(ValueError, match="no path"):
        original_output_url("rtmp://h:1935")


@pytest.mark.parametrize(
    ("code", "tag"),
    [
        ("es", "spa"), ("en", "eng"), ("de", "ger"), ("fr", "fre"), ("pt-BR", "por"), ("zh_TW", "chi"),
        ("ES", "spa"), ("spa", "spa"), ("deu", "deu"), (None, UNDETERMINED), ("", UNDETERMINED),
        ("xx", UNDETERMINED), ("e1", UNDETERMINED),
    ],
)  # fmt: skip
def test_languages_are_tagged_as_iso639_2(code: str | None, tag: str) -> None:
    assert iso639_2(code) == tag


def test_worker_passes_keep_original_and_the_languages_to_the_media_path() -> None:
    base = {"input_url": "in.mp4", "output_url": "out.ts", "source_language": "en", "target_language": "es"}
    m = WorkerSettings(**base, keep_original=True).media
    assert (m.keep_original, m.source_language, m.target_language) == (True, "en", "es")
    assert WorkerSettings(**base).media.keep_original is False  # off by default
    # passthrough: the first track carries the original sound, so it is tagged with its language
    m = WorkerSettings(**base, passthrough=True).media
    assert m.target_language == "en"


def test_orchestrator_passes_keep_original_to_each_streams_first_worker() -> None:
    assert "--keep-original" not in OrchestratorSettings().worker_argv("x", 9100)
    settings = OrchestratorSettings(keep_original=True, worker_args="--segment-s 2")
    assert settings.worker_argv("x", 9100)[-3:] == ["--keep-original", "--segment-s", "2"]
    assert "--keep-original" in settings.worker_argv("x", 9100, "es", primary=True)
    # the original is the same for every language: only the first keeps it (live/<id>/orig)
    assert "--keep-original" not in settings.worker_argv("x", 9101, "ca", primary=False)


# --- OutputCore feeding both tracks --------------------------------------------------------------


class RecordingEncoder(FakeEncoder):
    """FakeEncoder that remembers the PCM values fed and tags its packets with a track."""

    def __init__(self, track: AudioTrack) -> None:
        super().__init__()
        self.track = track
        self.values: list[int] = []  # the first sample's value of each feed

    def encode(self, pcm: np.ndarray, abs_sample: int) -> list[EncodedAudio]:
        self.values.append(int(np.asarray(pcm)[0, 0]))
        return [EncodedAudio(p.pts_ns, p.packet, self.track) for p in super().encode(pcm, abs_sample)]

    def flush(self) -> list[EncodedAudio]:
        return [EncodedAudio(p.pts_ns, p.packet, self.track) for p in super().flush()]


class TrackSink(FakeSink):
    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock)
        self.tracks: list[tuple[AudioTrack, int, float]] = []

    def write_audio(self, pkt: EncodedAudio) -> None:
        super().write_audio(pkt)
        self.tracks.append((pkt.track, pkt.pts_ns, self.clock[0]))


def make_two_track_core(
    paced: bool = True,
) -> tuple[OutputCore, RecordingEncoder, RecordingEncoder, TrackSink, list[float], list[tuple[int, str, str | None]]]:
    clock = [0.0]
    dub = RecordingEncoder(AudioTrack.DUBBED)
    orig = RecordingEncoder(AudioTrack.ORIGINAL)
    sink = TrackSink(clock)
    taken: list[tuple[int, str, str | None]] = []
    core = OutputCore(
        paced=paced, delay_s=3.0, sample_rate=RATE, channels=1, segment_samples=N, has_video=True,
        encoder=dub, sink=sink, margin_s=0.1, original_encoder=orig,
        on_taken=lambda seg, k, src, reason: taken.append((k, src, reason)),
    )  # fmt: skip
    return core, dub, orig, sink, clock, taken


def test_both_tracks_get_each_segment_at_the_same_samples_dub_or_fallback() -> None:
    core, dub, orig, sink, clock, taken = make_two_track_core()
    core.set_anchor(0.0)
    core.set_audio_start(0)
    segs = [segment(k, value=1) for k in range(3)]
    evs = [(i * 0.1, (lambda i=i: core.push_video(video(i * 0.1, key=i % 10 == 0)))) for i in range(30)]
    evs += [(k + 1.0, (lambda k=k: core.push_segment(segs[k], clock[0]))) for k in range(3)]
    evs.append((1.5, lambda: segs[1].audio.set_dubbed(np.full((N, 1), 7, np.int16))))
    evs.append((3.05, core.end))
    run_until(core, clock, 10.0, evs)
    assert core.done
    assert [src for _, src, _ in taken] == ["original", "dubbed", "original"]
    # The same positions on both encoders; the original track always gets the input's audio.
    assert dub.fed == orig.fed == [(0, N), (N, N), (2 * N, N)]
    assert dub.values == [1, 7, 1]
    assert orig.values == [1, 1, 1]
    # Every packet of both tracks written at W0 + pts + D, the two tracks at the same instants.
    by_track: dict[AudioTrack, list[tuple[int, float]]] = {AudioTrack.DUBBED: [], AudioTrack.ORIGINAL: []}
    for track, pts, wall in sink.tracks:
        assert abs(wall - (pts / NS_PER_S + 3.0)) < 1e-6
        by_track[track].append((pts, wall))
    assert by_track[AudioTrack.DUBBED] == by_track[AudioTrack.ORIGINAL]
    assert len(by_track[AudioTrack.ORIGINAL]) == 3 * N // FRAME
    assert core.audio_written == core.original_written == 3 * N // FRAME
    keys = [k for _, k, _ in sink.written]
    assert keys == sorted(keys)  # one interleaved timeline


def test_a_segment_missing_at_its_deadline_is_silence_on_both_tracks() -> None:
    core, dub, orig, sink, clock, taken = make_two_track_core()
    core.set_anchor(0.0)
    core.set_audio_start(0)
    core.push_video(video(0.0, key=True))
    core.push_segment(segment(0, value=5), 1.0)
    run_until(core, clock, 10.0, [(2.0, lambda: core.push_segment(segment(2, value=5), clock[0])), (5.0, core.end)])
    assert [(k, src) for k, src, _ in taken] == [(0, "original"), (1, "silence"), (2, "original")]
    assert dub.values == orig.values == [5, 0, 5]
    assert dub.fed == orig.fed


def test_the_original_track_starts_at_the_keyframe_too() -> None:
    core, dub, orig, sink, clock, taken = make_two_track_core(paced=False)
    core.set_audio_start(0)
    core.push_video(video(0.1))  # not a keyframe: dropped
    core.push_video(video(0.25, key=True))
    core.push_segment(segment(0), 0.0)
    core.push_segment(segment(1, n=500), 0.0)
    core.end()
    core.poll(0.0)
    assert core.done
    assert dub.fed == orig.fed == [(250, N - 250), (N, 500)]
    firsts = {track: min(p for t, p, _ in sink.tracks if t is track) for track in AudioTrack}
    assert firsts[AudioTrack.DUBBED] == firsts[AudioTrack.ORIGINAL] == 250 * NS_PER_S // RATE
    # flushed on both tracks at the end: every sample fed came out
    assert core.audio_written == core.original_written == sum(n for _, n in dub.fed) // FRAME


def test_without_an_original_encoder_nothing_changes() -> None:
    clock = [0.0]
    sink = TrackSink(clock)
    core = OutputCore(
        paced=False, delay_s=3.0, sample_rate=RATE, channels=1, segment_samples=N, has_video=False,
        encoder=RecordingEncoder(AudioTrack.DUBBED), sink=sink,
    )  # fmt: skip
    core.set_audio_start(0)
    core.push_segment(segment(0), 0.0)
    core.end()
    core.poll(0.0)
    assert core.done and core.original_written == 0
    assert {t for t, _, _ in sink.tracks} == {AudioTrack.DUBBED}


# --- the original's own output (FLV/RTMP) --------------------------------------------------------


class FakeContainer:
    def __init__(self) -> None:
        self.started = False
        self.closed = False

    def start_encoding(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


class ScriptedSink:
    """Stands for the original's `_MuxSink`: records, fails on request, or blocks until released."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.written: list[str] = []
        self.fail_on = fail_on
        self.release = threading.Event()
        self.release.set()

    def _write(self, kind: str) -> None:
        self.release.wait(10)
        if self.fail_on is not None and len(self.written) == self.fail_on:
            raise OSError("Broken pipe")
        self.written.append(kind)

    def write_video(self, pkt: VideoPacket) -> None:
        self._write("v")

    def write_audio(self, pkt: EncodedAudio) -> None:
        self._write(str(pkt.track))


def original_output(sink: ScriptedSink, errors: list[tuple[WriteErrorKind, str]]) -> _OriginalOutput:
    out = _OriginalOutput(
        "/tmp/never-written.orig.flv", paced=True, open_timeout_s=5.0,
        on_error=lambda kind, err: errors.append((kind, err)), log=_log,
    )  # fmt: skip
    out.container = FakeContainer()
    out.sink = sink  # type: ignore[assignment]
    return out


def test_tee_sends_video_to_both_and_each_track_to_its_output() -> None:
    main = TrackSink([0.0])
    errors: list[tuple[WriteErrorKind, str]] = []
    side_sink = ScriptedSink()
    side = original_output(side_sink, errors)
    side.connect()
    tee = _TeeSink(main, side)  # type: ignore[arg-type]
    tee.write_video(video(0.0, key=True))
    tee.write_audio(EncodedAudio(0, "d", AudioTrack.DUBBED))
    tee.write_audio(EncodedAudio(0, "o", AudioTrack.ORIGINAL))
    side.close()
    assert [k for k, _, _ in main.written] == ["v", "a"] and [t for t, _, _ in main.tracks] == [AudioTrack.DUBBED]
    assert side_sink.written == ["v", "original"]
    assert errors == [] and side.failed is None


def test_a_failing_original_output_is_given_up_once_and_the_dubbed_one_goes_on() -> None:
    main = TrackSink([0.0])
    errors: list[tuple[WriteErrorKind, str]] = []
    side_sink = ScriptedSink(fail_on=1)
    side = original_output(side_sink, errors)
    side.connect()
    tee = _TeeSink(main, side)  # type: ignore[arg-type]
    for i in range(20):  # the side fails at its second packet; the main sink never notices
        tee.write_video(video(i * 0.1, key=i == 0))
        tee.write_audio(EncodedAudio(i, "o", AudioTrack.ORIGINAL))
    side.close()
    assert len(main.written) == 20
    assert side_sink.written == ["v"]
    assert errors == [(WriteErrorKind.ORIGINAL_OUTPUT, "write failed: Broken pipe")]
    assert side.failed == "write failed: Broken pipe"


def test_a_stalled_original_output_is_given_up_without_blocking_the_writer() -> None:
    errors: list[tuple[WriteErrorKind, str]] = []
    side_sink = ScriptedSink()
    side_sink.release.clear()  # the server stops reading: the muxing thread blocks in a write
    side = original_output(side_sink, errors)
    side.connect()
    for i in range(ORIGINAL_QUEUE_PACKETS + 2):  # never blocks: a full queue is a failure
        side.write_video(video(i * 0.01))
    assert side.failed is not None and side.failed.startswith("stalled")
    assert [k for k, _ in errors] == [WriteErrorKind.ORIGINAL_OUTPUT]
    side_sink.release.set()
    side.close()
    assert len(errors) == 1  # logged and counted once


def test_an_original_output_that_cannot_connect_fails_alone() -> None:
    errors: list[tuple[WriteErrorKind, str]] = []

    class Refusing(FakeContainer):
        def start_encoding(self) -> None:
            raise OSError("Connection refused")

    side = original_output(ScriptedSink(), errors)
    side.container = Refusing()
    side.connect()
    side.write_video(video(0.0, key=True))  # ignored
    side.close()
    assert not side.connected
    assert errors == [(WriteErrorKind.ORIGINAL_OUTPUT, "cannot connect: Connection refused")]


def test_closing_a_stalled_original_output_does_not_wait_for_it() -> None:
    errors: list[tuple[WriteErrorKind, str]] = []
    side_sink = ScriptedSink()
    side_sink.release.clear()  # stuck in a write for good
    side = original_output(side_sink, errors)
    side.connect()
    for i in range(ORIGINAL_QUEUE_PACKETS + 2):
        side.write_video(video(i * 0.01))
    started = time.monotonic()
    side.close()  # the dubbed output's close: bounded by ORIGINAL_GIVEN_UP_WAIT_S, not open_timeout_s
    took = time.monotonic() - started
    side_sink.release.set()  # let the abandoned thread end
    assert took < 2 * ORIGINAL_GIVEN_UP_WAIT_S + 0.5 < side.open_timeout_s, took
    assert [k for k, _ in errors] == [WriteErrorKind.ORIGINAL_OUTPUT]  # the stall, once
