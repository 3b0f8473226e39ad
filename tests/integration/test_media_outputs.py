"""Output (and SRT input) by URL, live, through the real worker process (`livedub worker --passthrough`).

- RTSP: the worker reads the fixture file (in real time) and publishes it to the embedded media
  server's RTSP relay (`live/<id>/out`, free ports on 127.0.0.1); `livedub.media.record` (ffmpeg,
  `-c copy`) records it from the relay; the recording is analysed against the fixture.
- SRT (libsrt via ctypes, `livedub.media.srt`; PyAV's libav has no srt protocol): the worker
  publishes (caller) to an ffmpeg listener that records; the pipeline reads (caller) from an
  ffmpeg listener that serves the fixture in real time; a peer that accepts and sends nothing
  ends the read within the read timeout; without libsrt (`LIVEDUB_LIBSRT` pointing nowhere) an
  `srt://` output (input) fails at once with the output (input) exit code.

The RTMP and file outputs are covered by test_media_live.py and test_media_passthrough.py.
Run with `-s` to print the measured numbers quoted in docs/media.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livedub.exitcodes import ExitCode
from livedub.media import InputUnavailable, MediaSettings, run_passthrough
from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.input import MediaInput
from livedub.media.record import FFMPEG, record, record_argv
from livedub.media.srt import SrtError, SrtReader, SrtWriter, libsrt_error
from livedub.orchestrator.media_server import MediaServer
from livedub.sts.testing import free_port
from tests.integration.marks import needs_ffmpeg, needs_media_server

FRAME_S = 1 / 30
SEGMENT_S = 2.0
DELAY_S = 4.0

needs_libsrt = pytest.mark.skipif(libsrt_error() is not None, reason=f"{libsrt_error()}")
needs_ffmpeg_srt = pytest.mark.skipif(
    libsrt_error() is not None or shutil.which("ffmpeg") is None,
    reason="libsrt (libsrt1.5-gnutls) and ffmpeg (with srt) are needed (make setup)",
)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fx12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12, width=320, height=240, segment_s=SEGMENT_S))
    return path


def free_udp_port() -> int:
    """A UDP port for an SRT listener, from this test process's own block (not the ephemeral range,
    where another test's SRT caller, or a second bind(0), could be given the same port)."""
    return free_port(kind=socket.SOCK_DGRAM)


def wait_udp_bound(port: int, timeout_s: float = 10.0) -> None:
    """Wait until some process listens on UDP `port` (an SRT listener is a bound UDP socket)."""
    needle = f":{port:04X} "
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tables = [Path(f"/proc/net/{t}") for t in ("udp", "udp6")]
        if any(needle in t.read_text() for t in tables if t.exists()):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing bound UDP port {port} within {timeout_s} s")


def run_worker(
    src: str, out: str, stream_id: str, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    """`livedub worker --passthrough` as a process: (exit code, its log, seconds it ran)."""
    argv = [
        sys.executable, "-m", "livedub", "worker", "--passthrough",
        "--input", src, "--output", out, "--stream-id", stream_id,
        "--segment-s", str(SEGMENT_S), "--output-delay-s", str(DELAY_S), "--metrics-port", "0",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})})
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
@needs_ffmpeg
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


def check_sync(res: Analysis, expected: Analysis) -> None:
    """Everything of the input, in sync: codecs, duration ± 1 frame, all frames, no gaps."""
    assert res.codecs == ("h264", "aac")
    assert abs(res.duration_s - expected.duration_s) <= FRAME_S, summary(res, expected)
    assert res.video is not None and res.audio is not None
    assert expected.video is not None and expected.audio is not None
    assert res.video.frames == expected.video.frames, summary(res, expected)
    assert abs(res.audio.duration_s - expected.audio.duration_s) <= 0.002, summary(res, expected)
    assert res.first_frame_number == 0 and res.frame_counter_errors == 0
    assert res.video.gaps == [] and res.audio.gaps == [] and res.audio.overlaps == []
    assert len(res.markers) == len(expected.markers) == 6
    assert res.max_abs_offset_ms <= 33, [m.offset_ms for m in res.markers]
    assert res.tone_order == list(range(6))


@needs_ffmpeg_srt
def test_srt_output_to_an_ffmpeg_listener_keeps_duration_and_sync(fx12: Path, tmp_path: Path) -> None:
    expected = analyze(fx12)
    port = free_udp_port()
    rec = tmp_path / "srt.mkv"
    # The recorder listens; the worker calls it output_connect_lead_s (3 s) before its first
    # packet and hangs up after the last: the recording ends then.
    recorder = subprocess.Popen(record_argv(f"srt://127.0.0.1:{port}?mode=listener", rec))
    try:
        wait_udp_bound(port)
        code, log, took = run_worker(str(fx12), f"srt://127.0.0.1:{port}", "srtout", timeout_s=60)
        assert code == ExitCode.OK, log[-3000:]
        assert recorder.wait(timeout=20) == 0
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    assert 12 + DELAY_S - 1 < took < 12 + DELAY_S + 5, took  # paced: input in real time, then D
    res = analyze(rec)
    print(f"\nSRT out → ffmpeg listener: {summary(res, expected)}; worker ran {took:.2f} s")
    check_sync(res, expected)


@needs_ffmpeg_srt
async def test_srt_input_from_an_ffmpeg_listener_keeps_duration_and_sync(fx12: Path, tmp_path: Path) -> None:
    expected = analyze(fx12)
    port = free_udp_port()
    out = tmp_path / "from_srt.mp4"
    # ffmpeg opens its output (waits for our caller) before it reads the input with -re, so the
    # stream starts at its first packet; it hangs up after the last: EOF ends the pipeline.
    # `linger=1`: without it ffmpeg closes with its last packets unsent (measured: the last
    # 128 ms of audio, its final PES, never left it); no receiver can get those back.
    argv = [
        FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", "-re", "-i", str(fx12),
        "-c", "copy", "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=listener&linger=1",
    ]  # fmt: skip
    sender = subprocess.Popen(argv)
    try:
        await asyncio.to_thread(wait_udp_bound, port)
        settings = MediaSettings(
            input_url=f"srt://127.0.0.1:{port}?latency=120", output_url=str(out), stream_id="srtin",
            segment_s=SEGMENT_S, output_delay_s=DELAY_S, end_on_eof=True,
        )  # fmt: skip
        started = time.monotonic()
        code = await asyncio.wait_for(run_passthrough(settings), 60)
        took = time.monotonic() - started
        assert code == ExitCode.OK
        assert await asyncio.to_thread(sender.wait, 20) == 0
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    res = analyze(out)
    print(f"\nSRT in ← ffmpeg listener: {summary(res, expected)}; pipeline ran {took:.2f} s")
    check_sync(res, expected)


@needs_libsrt
def test_srt_listener_writer_to_caller_reader_with_passphrase_and_eof() -> None:
    port = free_udp_port()
    opts = "passphrase=correct-horse-battery&pbkeylen=16&latency=80"
    writer = SrtWriter(f"srt://127.0.0.1:{port}?mode=listener&{opts}", timeout_s=10)
    accepted = threading.Thread(target=writer.connect, daemon=True)
    accepted.start()
    wait_udp_bound(port)
    reader = SrtReader(f"srt://127.0.0.1:{port}?streamid=read:live/x&{opts}", timeout_s=5, read_timeout_s=5)
    try:
        reader.connect()
        accepted.join(5)
        assert writer.connected
        payload = bytes(range(188)) * 10 + b"tail"  # 10 TS packets: 1316 + 564 bytes, then 4
        got = bytearray()
        eof = threading.Event()

        def collect() -> None:  # reading while the writer writes, as a relay does (libsrt may not
            while chunk := reader.read(500):  # keep undelivered data once the peer has hung up)
                got.extend(chunk)  # smaller than a message: the rest is kept
            eof.set()

        threading.Thread(target=collect, daemon=True).start()
        writer.write(payload)
        writer.close()  # sends the partial tail, waits the peer's latency, hangs up
        assert eof.wait(10), "the reader saw no end of stream"
        assert bytes(got) == payload
    finally:
        writer.close()
        reader.close()


@needs_libsrt
def test_srt_reader_raises_when_the_peer_goes_silent() -> None:
    port = free_udp_port()
    reader = SrtReader(f"srt://127.0.0.1:{port}?mode=listener", timeout_s=10, read_timeout_s=1.0)
    accepted = threading.Thread(target=reader.connect, daemon=True)
    accepted.start()
    wait_udp_bound(port)
    writer = SrtWriter(f"srt://127.0.0.1:{port}", timeout_s=5)
    try:
        writer.write(bytes(188 * 14))  # two messages, then silence (still connected)
        assert reader.read(32768) == bytes(1316) and reader.read(32768) == bytes(1316)
        started = time.monotonic()
        with pytest.raises(SrtError, match="no data for 1 s"):
            reader.read(32768)
        took = time.monotonic() - started
    finally:
        writer.close()
        reader.close()
    print(f"\nsilent SRT peer: read failed after {took:.3f} s (read timeout 1 s)")
    assert 0.9 < took < 1.5, took


@needs_libsrt
async def test_a_silent_srt_peer_ends_the_input_within_the_read_timeout(tmp_path: Path) -> None:
    port = free_udp_port()
    silent = SrtReader(f"srt://127.0.0.1:{port}?mode=listener", timeout_s=10, read_timeout_s=60)
    accepted = threading.Thread(target=silent.connect, daemon=True)  # accepts, never sends
    accepted.start()
    try:
        await asyncio.to_thread(wait_udp_bound, port)
        settings = MediaSettings(
            input_url=f"srt://127.0.0.1:{port}", output_url=str(tmp_path / "never.mp4"),
            read_timeout_s=1.5, open_timeout_s=3.0, reconnect_delays_s=(),
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(InputUnavailable, match="no data for 1.5 s"):
            async for _ in MediaInput(settings).events():
                pass
        took = time.monotonic() - started
        assert silent.connected  # it did accept: the read, not the connect, timed out
    finally:
        silent.close()
    print(f"\nsilent SRT peer: input unavailable after {took:.3f} s (read timeout 1.5 s)")
    assert took < 1.5 + 1.0, took
    deadline = time.monotonic() + 2.0
    while any(t.name.startswith("media-input-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the reader thread is still blocked"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("direction", ["output", "input"])
def test_srt_without_libsrt_fails_at_once_with_its_exit_code(fx12: Path, tmp_path: Path, direction: str) -> None:
    url = f"srt://127.0.0.1:{free_udp_port()}"
    out = tmp_path / "never.mp4"
    src, dst = (str(fx12), url) if direction == "output" else (url, str(out))
    env = {"LIVEDUB_LIBSRT": str(tmp_path / "no-libsrt.so")}
    code, log, took = run_worker(src, dst, f"srt{direction}", timeout_s=30, env=env)
    expected = ExitCode.OUTPUT_FAILED if direction == "output" else ExitCode.INPUT_UNAVAILABLE
    assert code == expected, log[-3000:]
    assert "SRT is not available: libsrt not found" in log, log[-3000:]
    assert took < 6  # no retries, no D seconds of buffering before the lazy connect
    assert not out.exists()
