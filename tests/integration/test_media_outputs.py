"""Output by URL, live, through the real worker process (`livedub worker --passthrough`).

- RTSP: the worker reads the fixture file (in real time) and publishes it to the embedded media
  server's RTSP relay (`live/<id>/out`, free ports on 127.0.0.1); `livedub.media.record` (ffmpeg,
  `-c copy`) records it from the relay; the recording is analysed against the fixture.
- SRT: PyAV's bundled libav has no `srt` protocol (built without libsrt), so an `srt://` output
  (or input) must fail at once with a clear error and the output (input) exit code. If a PyAV
  with libsrt is installed these tests are skipped (see docs/media.md, "Output").

The RTMP and file outputs are covered by test_media_live.py and test_media_passthrough.py.
Run with `-s` to print the measured numbers quoted in docs/media.md.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livedub.exitcodes import ExitCode
from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.record import record
from livedub.media.urls import libav_has_protocol
from livedub.orchestrator.media_server import MediaServer, MediaServerSettings

FRAME_S = 1 / 30
SEGMENT_S = 2.0
DELAY_S = 4.0

_ms = MediaServerSettings()
needs_media_server = pytest.mark.skipif(
    shutil.which("nginx") is None
    or not _ms.nginx_rtmp_module.exists()
    or not Path(_ms.gst_python).exists()
    or shutil.which("ffmpeg") is None,
    reason="nginx + libnginx-mod-rtmp + python3-gi + ffmpeg not installed (make setup)",
)
no_srt = pytest.mark.skipif(libav_has_protocol("srt"), reason="this PyAV's libav has SRT")
pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fx12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12, width=320, height=240, segment_s=SEGMENT_S))
    return path


def run_worker(src: str, out: str, stream_id: str, timeout_s: float) -> tuple[int, str, float]:
    """`livedub worker --passthrough` as a process: (exit code, its log, seconds it ran)."""
    argv = [
        sys.executable, "-m", "livedub", "worker", "--passthrough",
        "--input", src, "--output", out, "--stream-id", stream_id,
        "--segment-s", str(SEGMENT_S), "--output-delay-s", str(DELAY_S), "--metrics-port", "0",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def summary(res: Analysis, expected: Analysis) -> str:
    assert res.video is not None and res.audio is not None
    return (
        f"duration {res.duration_s:.4f} s (input {expected.duration_s:.4f} s, "
        f"{(res.duration_s - expected.duration_s) * 1000:+.1f} ms), video {res.video.frames} frames "
        f"{res.video.start_s:.4f}-{res.video.end_s:.4f} s, audio {res.audio.start_s:.4f}-"
        f"{res.audio.end_s:.4f} s, markers {len(res.markers)} offsets "
        f"{[round(m.offset_ms, 2) for m in res.markers]} ms"
    )


@needs_media_server
def test_rtsp_output_through_the_relay_keeps_duration_and_sync(fx12: Path, tmp_path: Path) -> None:
    expected = analyze(fx12)
    with MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path / "ms") as ms:
        url = ms.rtsp_url("live/rtspout/out")
        rec = tmp_path / "rtsp.mkv"
        codes: list[int] = []
        # The recorder polls the path (the relay refuses readers before the publish) and ends
        # when the worker hangs up; the worker connects output_connect_lead_s (3 s) before its
        # first packet, so the recorder is attached when the first keyframe goes out.
        recorder = threading.Thread(target=lambda: codes.append(record(url, rec, wait_s=60)), daemon=True)
        recorder.start()
        code, log, took = run_worker(str(fx12), url, "rtspout", timeout_s=90)
        recorder.join(30)
    assert code == ExitCode.OK, log[-3000:]
    assert not recorder.is_alive() and codes == [0], codes
    assert 12 + DELAY_S - 1 < took < 12 + DELAY_S + 10, took  # paced: input in real time, then D
    res = analyze(rec)
    print(f"\nRTSP via relay: {summary(res, expected)}")
    assert res.codecs == ("h264", "aac")
    assert abs(res.duration_s - expected.duration_s) <= FRAME_S, summary(res, expected)
    assert res.video is not None and res.audio is not None
    assert expected.video is not None and expected.audio is not None
    # The relay starts a reader at the keyframe and never forwards audio at its instant (meant for
    # an encoder's priming frame; rtsp_relay.Reader._push): the worker's first AAC frame is not in
    # the recording, which starts at the second one (-21.3 ms). Nothing else is lost: the audio
    # ends with the input's last frame (or one frame of the silence the worker appends to carry
    # it out), where without that padding the last 1-3 frames were lost at TEARDOWN.
    aac_frame_s = 1024 / 48000
    assert res.audio.duration_s >= expected.audio.duration_s - aac_frame_s - 0.002, summary(res, expected)
    assert res.video.frames == expected.video.frames  # every frame, from the first keyframe
    assert res.first_frame_number == 0 and res.frame_counter_errors == 0
    assert res.video.gaps == [] and res.audio.gaps == [] and res.audio.overlaps == []
    assert len(res.markers) == len(expected.markers) == 6
    assert res.max_abs_offset_ms <= 33, [m.offset_ms for m in res.markers]
    assert res.tone_order == list(range(6))


@no_srt
def test_srt_output_without_libsrt_fails_at_once_with_the_output_code(fx12: Path) -> None:
    url = f"srt://127.0.0.1:{free_port()}?mode=caller"
    code, log, took = run_worker(str(fx12), url, "srtout", timeout_s=30)
    assert code == ExitCode.OUTPUT_FAILED, log[-3000:]
    assert "no 'srt' protocol (it was built without libsrt)" in log, log[-3000:]
    assert took < 10  # not after D seconds of buffering (the output connects lazily)


@no_srt
def test_srt_input_without_libsrt_fails_at_once_with_the_input_code(tmp_path: Path) -> None:
    url = f"srt://127.0.0.1:{free_port()}?mode=listener"
    out = tmp_path / "never.mp4"
    code, log, took = run_worker(url, str(out), "srtin", timeout_s=30)
    assert code == ExitCode.INPUT_UNAVAILABLE, log[-3000:]
    assert "no 'srt' protocol (it was built without libsrt)" in log, log[-3000:]
    assert took < 6  # no reconnect attempts (1 + 2 + 4 s): retrying cannot help
    assert not out.exists()
