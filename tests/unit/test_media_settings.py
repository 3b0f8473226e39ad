"""Media settings, URL → format rules, stream-id safety, fixture markers, and the CLI parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.cli import build_parser
from livedub.media.errors import InvalidStreamId
from livedub.media.fixture import FixtureSpec, marker_frames, segment_tone_hz, tone_segment_index
from livedub.media.record import record, record_argv
from livedub.media.segment_files import segment_paths
from livedub.media.settings import MediaSettings, segment_samples
from livedub.media.srt import libsrt_error
from livedub.media.urls import (
    input_options_for,
    is_live,
    libav_has_protocol,
    missing_protocol,
    output_format_for,
    tcp_endpoint,
)
from livedub.typed import ValidationError, fields_of


def test_defaults_follow_the_spec() -> None:
    s = MediaSettings()
    assert s.segment_s == 6.0 and s.segment_samples(48_000) == 288_000
    assert s.segment_samples(44_100) == 264_600
    assert s.read_timeout_s == 5.0 and s.reconnect_delays_s == (1.0, 2.0, 4.0)
    # D = segment + STS timeout (+ headroom for look-ahead, margin and read latency).
    assert s.effective_output_delay_s == pytest.approx(6 + 8 + 0.5)
    assert s.transport_format == "flac" and s.segment_dir is None
    assert s.drift_bound_ms == 20.0 and s.drift_max_slew == 0.005


@pytest.mark.parametrize(
    "kw",
    [
        {"segment_s": 0.5},
        {"segment_s": 61},
        {"stream_id": "../etc"},
        {"stream_id": "a" * 65},
        {"output_delay_s": 5.0},  # must exceed segment_s when paced
        {"transport_format": "mp3"},
        {"drift_target_ms": 30.0},
    ],
)
def test_invalid_settings_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MediaSettings(**kw)  # type: ignore[arg-type]


def test_unpaced_allows_any_delay() -> None:
    assert MediaSettings(paced=False, output_delay_s=1.0).effective_output_delay_s == 1.0


@pytest.mark.parametrize(
    ("tick", "margin", "effective"),
    [(0.25, 0.25, 0.25), (0.25, 0.1, 0.1), (0.1, 0.25, 0.1), (0.25, 0.0, 0.25)],
)
def test_the_output_ticks_at_most_every_deadline_margin(
    tick: float, margin: float, effective: float
) -> None:
    """A segment's audio is taken `deadline_margin_s` before it is due: the output thread wakes at
    least that often (the low-latency margin, 0.1 s, keeps 0.1 s ticks)."""
    s = MediaSettings(output_tick_s=tick, deadline_margin_s=margin)
    assert s.effective_output_tick_s == effective


def test_segment_length_must_be_whole_samples() -> None:
    assert segment_samples(1.5, 44_100) == 66_150
    with pytest.raises(ValueError):
        segment_samples(1.00001, 48_000)


@pytest.mark.parametrize(
    ("url", "fmt", "opts"),
    [
        ("rtmp://h/live/x", "flv", {}),
        ("rtsp://h:8554/live/x", "rtsp", {"rtsp_transport": "tcp"}),
        ("srt://h:9000", "mpegts", {}),
        ("/tmp/a.mp4", "mp4", {}),
        ("out.FLV", "flv", {}),
        ("x.ts", "mpegts", {}),
        ("file:///tmp/y.mkv", "matroska", {}),
    ],
)
def test_output_format_by_url(url: str, fmt: str, opts: dict[str, str]) -> None:
    assert output_format_for(url) == (fmt, opts)


def test_url_helpers() -> None:
    assert input_options_for("rtsp://h/x") == {"rtsp_transport": "tcp"}
    assert input_options_for("rtmp://h/x") == {}
    assert is_live("rtmp://h/x") and is_live("srt://h:1") and not is_live("/tmp/a.mp4")
    assert not is_live("C:/media/a.mp4")
    assert tcp_endpoint("rtmp://h/live") == ("h", 1935)
    assert tcp_endpoint("rtsp://h:8554/x") == ("h", 8554)
    assert tcp_endpoint("/tmp/a.mp4") is None
    with pytest.raises(ValueError):
        output_format_for("/tmp/a.unknown")


def test_missing_protocols_are_found_without_io() -> None:
    # Every libav has these; "srt" is libsrt's, loaded by livedub.media.srt (PyAV's libav has
    # no srt protocol): present when libsrt loads (test_media_srt.py).
    assert libav_has_protocol("tcp") and libav_has_protocol("rtmp") and libav_has_protocol("udp")
    assert not libav_has_protocol("nosuchprotocol")
    assert missing_protocol("rtmp://127.0.0.1:1/live/x") is None
    assert missing_protocol("rtsp://127.0.0.1:1/live/x") is None  # a (de)muxer, always there
    assert missing_protocol("/tmp/a.mp4") is None and missing_protocol("file:///tmp/a.ts") is None
    srt = "srt://127.0.0.1:1?mode=caller"
    assert missing_protocol(srt) == (None if libsrt_error() is None else "srt")


def test_recorder_timeout_option_per_protocol(tmp_path: Path) -> None:
    rtsp = record_argv("rtsp://h:8554/live/x/out", tmp_path / "o.mkv", rw_timeout_s=2)
    i = rtsp.index("-i")
    assert rtsp[i - 4 : i] == ["-rtsp_transport", "tcp", "-timeout", "2000000"]
    assert (
        "-rw_timeout" not in rtsp
    )  # ffmpeg's RTSP demuxer refuses it: "Option rw_timeout not found"
    rtmp = record_argv("rtmp://h/live/x/out", tmp_path / "o.mkv", rw_timeout_s=2)
    assert rtmp[rtmp.index("-rw_timeout") + 1] == "2000000" and "-rtsp_transport" not in rtmp


def test_recorder_messages_go_to_the_log_when_given(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "never-published.ts"
    log = tmp_path / "recorder.log"
    code = record(str(missing), tmp_path / "o.mkv", wait_s=0.3, retry_s=0.05, log=log)
    assert code != 0 and not (tmp_path / "o.mkv").exists()
    assert (
        "No such file or directory" in log.read_text()
    )  # every retry appended, none on the console
    assert "No such file" not in capfd.readouterr().err


def test_segment_paths_cannot_escape(tmp_path: Path) -> None:
    p = segment_paths(tmp_path, "cam_1-a", 7)
    assert p["video"] == tmp_path / "cam_1-a" / "000007_video.mp4"
    assert p["audio"].name == "000007_audio.m4a" and p["dubbed"].name == "000007_dubbed.m4a"
    for bad in ("..", "a/b", "", "x" * 65, "a b"):
        with pytest.raises(InvalidStreamId):
            segment_paths(tmp_path, bad, 0)


@pytest.mark.parametrize("duration_s,segment_s", [(60, 6), (20, 6), (12, 2), (30, 1)])
def test_markers_are_irregular_and_never_near_segment_boundaries(
    duration_s: float, segment_s: float
) -> None:
    spec = FixtureSpec(duration_s=duration_s, segment_s=segment_s)
    frames = marker_frames(spec)
    assert frames == marker_frames(spec)  # deterministic
    times = [f / spec.fps for f in frames]
    margin = min(0.5, segment_s / 4) * 0.5
    for t in times:
        into = t % segment_s
        assert margin <= into <= segment_s - margin
        assert t + 0.1 < duration_s
    gaps = {round(b - a, 3) for a, b in zip(times, times[1:], strict=False)}
    assert len(gaps) > 1  # irregular


def test_segment_tones_are_distinct_and_invertible() -> None:
    tones = [segment_tone_hz(k) for k in range(28)]
    assert len(set(tones)) == 28 and 1000.0 not in tones
    assert [tone_segment_index(f) for f in tones] == list(range(28))
    assert tone_segment_index(1000.0) is None


def test_cli_parses_media_commands() -> None:
    parser = build_parser()
    a = parser.parse_args(
        ["make-fixture", "x.mp4", "--duration-s", "12", "--audio-drift-ppm", "500"]
    )
    assert a.duration_s == 12 and a.audio_drift_ppm == 500 and callable(a.func)
    a = parser.parse_args(["analyze", "rtmp://h/x", "--json", "o.json", "--plot", "o.png"])
    assert a.source == "rtmp://h/x" and a.plot == Path("o.png")
    a = parser.parse_args(["publish", "f.mp4", "rtsp://h/x", "--loop"])
    assert a.loop
    a = parser.parse_args(
        ["passthrough", "in.mp4", "out.flv", "--unpaced", "--input-option", "k=v"]
    )
    assert a.unpaced and a.input_option == ["k=v"]


@pytest.mark.parametrize(
    "name",
    [
        "segment_s",
        "output_delay_s",
        "read_timeout_s",
        "deadline_margin_s",
        "anchor_settle_s",
        "paced",
        "transport_format",
    ],
)
def test_worker_defaults_for_media_timing_are_the_media_path_defaults(name: str) -> None:
    """WorkerSettings repeats these MediaSettings fields (one settings object per process); their
    defaults must not drift apart."""
    from livedub.worker.config import WorkerSettings

    defaults = [
        {f.name: f.default for f in fields_of(m)}[name] for m in (WorkerSettings, MediaSettings)
    ]
    assert defaults[0] == defaults[1]
