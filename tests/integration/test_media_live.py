"""Live loopback: fixture → publish (real time) → nginx-rtmp → passthrough pipeline → file.

Each test starts its own nginx-rtmp (temp config, free port on 127.0.0.1) and stops it by PID,
even on failure. Also: a server that stalls mid-stream cannot hang the pipeline, and a publisher
that goes away and comes back is rebased onto one continuous output timeline.
"""

from __future__ import annotations

import asyncio
import http.server
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from livedub.exitcodes import ExitCode
from livedub.media import InputState, MediaPipeline, MediaSettings, NullObserver
from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.publish import publish
from livedub.sts.testing import free_port

FRAME_S = 1 / 30
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

needs_nginx = pytest.mark.skipif(
    not (Path(NGINX).exists() and RTMP_MODULE.exists()),
    reason="nginx with libnginx-mod-rtmp not installed (make apt)",
)


async def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def rtmp_server(tmp_path: Path) -> Iterator[str]:
    """nginx-rtmp on a free port; yields rtmp://127.0.0.1:PORT/live."""
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    (d / "nginx.conf").write_text(
        f"""load_module {RTMP_MODULE};
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    chunk_size 4096;
    application live {{ live on; record off; }}
  }}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(d / 'error.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"rtmp://127.0.0.1:{port}/live"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Publisher:
    """`livedub publish` in a thread (real time), stoppable."""

    def __init__(self, src: Path, url: str) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(src, url), daemon=True)

    def _run(self, src: Path, url: str) -> None:
        try:
            publish(str(src), url, stop=self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def start(self) -> Publisher:
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def nginx_holds_player(tmp_path: Path, name: str, count: int) -> bool:
    """nginx-rtmp has received `count` play commands for stream `name` (its info log says so):
    a player it holds until the stream is published, so a publish now is read from frame 0."""
    log = tmp_path / "nginx" / "error.log"
    try:
        return log.read_text(errors="replace").count(f"play: name='{name}'") >= count
    except OSError:
        return False


async def run_until(
    pipeline: MediaPipeline, done: Callable[[], Awaitable[None]], timeout_s: float
) -> int:
    task = asyncio.create_task(pipeline.run())
    try:
        await done()
        pipeline.request_stop()
        return await asyncio.wait_for(task, timeout_s)
    finally:
        if not task.done():
            pipeline.request_stop(drain=False)
            await asyncio.wait_for(task, 30)


def audio_end_s(pipeline: MediaPipeline) -> float:
    seg = pipeline.segmenter
    end = seg.audio_end_ns if seg is not None else None
    return (end or 0) / 1e9


@needs_nginx
async def test_live_rtmp_hop_60s_keeps_duration_and_sync(rtmp_server: str, tmp_path: Path) -> None:
    src = tmp_path / "fx60.mp4"
    make_fixture(src, FixtureSpec(duration_s=60))
    expected = analyze(src)
    url = f"{rtmp_server}/hop"
    out = tmp_path / "hop.mp4"
    # D = segment + 2 s: the stream ends without EOF (nginx), so the last segment is released
    # 0.3 s after the input goes quiet, and the publisher's last packets come ~0.5 s late (its
    # muxer flushes them at close); W0 is the live edge (see MediaPipeline._anchor), so that
    # much must fit between the last packet's live time and the last deadline.
    settings = MediaSettings(input_url=url, output_url=str(out), stream_id="hop", output_delay_s=8.0)
    pipeline = MediaPipeline(settings, NullObserver(), resolve_as="passthrough")
    publisher = Publisher(src, url)

    async def done() -> None:
        # The worker connects first (nginx holds a player until the stream is published), so
        # it gets the stream from its first frame: publish once nginx has that player.
        await wait_for(lambda: nginx_holds_player(tmp_path, "hop", 1), 20, "nginx to hold the player")
        publisher.start()
        await wait_for(lambda: publisher.done, 90, "publisher")
        assert publisher.error is None
        await wait_for(lambda: audio_end_s(pipeline) >= expected.duration_s - 0.005, 10, "all audio read")
        # No EOF comes from nginx: the last full segment is released because the input went
        # quiet (no video packet past its end will ever arrive), in time for its deadline.
        await wait_for(lambda: pipeline.stats.segments_created >= 10, 5, "last full segment")

    try:
        code = await run_until(pipeline, done, timeout_s=30)
    finally:
        publisher.close()
    assert code == ExitCode.OK
    res = analyze(out)
    assert res.codecs == ("h264", "aac")
    assert abs(res.duration_s - expected.duration_s) <= FRAME_S, (res.duration_s, expected.duration_s)
    assert res.video is not None and res.audio is not None
    assert abs(res.video.duration_s - 60.0) <= FRAME_S
    assert res.video.gaps == [] and res.audio.gaps == []
    assert res.first_frame_number == 0 and res.frame_counter_errors == 0
    assert len(res.markers) == len(expected.markers) == 10
    assert res.max_abs_offset_ms <= 33, [m.offset_ms for m in res.markers]
    assert res.tone_order == list(range(10))
    assert pipeline.stats.segments_output["original"] == pipeline.stats.segments_created
    assert pipeline.stats.late_segments == 0
    # Paced: the output ran D behind the input (a packet goes out up to one output tick early).
    assert pipeline.stats.last_output_delay_s is not None
    earliest = settings.effective_output_delay_s - settings.effective_output_tick_s
    assert earliest - 1e-3 <= pipeline.stats.last_output_delay_s <= 8.5


@needs_nginx
async def test_publisher_restart_is_rebased_onto_one_timeline(rtmp_server: str, tmp_path: Path) -> None:
    src = tmp_path / "fx8.mp4"
    make_fixture(src, FixtureSpec(duration_s=8, width=320, height=240, segment_s=2))
    url = f"{rtmp_server}/restart"
    out = tmp_path / "restart.mp4"
    states: list[InputState] = []

    class Obs(NullObserver):
        def on_input_state(self, state: InputState, detail: str | None) -> None:
            states.append(state)

    settings = MediaSettings(
        input_url=url,
        output_url=str(out),
        segment_s=2.0,
        output_delay_s=7.0,
        read_timeout_s=1.0,
        reconnect_delays_s=(0.2, 0.5, 1.0),
    )
    pipeline = MediaPipeline(settings, Obs(), resolve_as="passthrough")
    first = Publisher(src, url)
    second = Publisher(src, url)

    async def done() -> None:
        await wait_for(lambda: nginx_holds_player(tmp_path, "restart", 1), 20, "nginx to hold the player")
        first.start()
        await wait_for(lambda: first.done, 30, "first publisher")
        # Stall detected, then the reconnect attempt is under way (nginx holds the new player
        # until the next publish, so it sees the second run from its first frame).
        await wait_for(lambda: states.count(InputState.RECONNECTING) >= 2, 10, "reconnect attempt")
        await wait_for(lambda: nginx_holds_player(tmp_path, "restart", 2), 20, "nginx to hold the new player")
        second.start()  # timestamps start again at 0
        await wait_for(lambda: second.done, 30, "second publisher")
        await wait_for(lambda: audio_end_s(pipeline) >= 17.0, 15, "second run read")

    try:
        code = await run_until(pipeline, done, timeout_s=30)
    finally:
        first.close()
        second.close()
    assert code == ExitCode.OK
    assert pipeline.stats.reconnects >= 1
    res = analyze(out)
    assert res.audio is not None and res.video is not None
    assert res.audio.gaps == [] and res.audio.overlaps == []  # audio continuous across the outage
    assert len(res.video.gaps) == 1  # the outage itself (frozen picture)
    assert len(res.markers) == 8, res.markers  # 4 per run
    assert res.frame_counter_errors == 1  # the counter restarts with the second run
    assert res.max_abs_offset_ms <= 33, [m.offset_ms for m in res.markers]
    assert res.tone_order == [0, 1, 2, 3, 0, 1, 2, 3]
    assert pipeline.stats.late_segments == 0


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """First request: half a stream, then silence with the connection held open. Later: 404."""

    payload = b""
    release = threading.Event()
    served = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.served.is_set():
            self.send_error(404)
            return
        self.served.set()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        self.wfile.write(self.payload)
        self.wfile.flush()
        self.release.wait(30)  # then hold the connection open, sending nothing

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_stalled_server_cannot_hang_the_pipeline(tmp_path: Path) -> None:
    src = tmp_path / "fx.mp4"
    make_fixture(src, FixtureSpec(duration_s=8, width=320, height=240, segment_s=2))
    ts = tmp_path / "fx.ts"
    publish(str(src), str(ts), realtime=False, linger_s=0)
    data = ts.read_bytes()

    class Handler(_StallingHandler):
        payload = data[: len(data) // 2]
        release = threading.Event()
        served = threading.Event()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.ts"
        out = tmp_path / "stall.mp4"
        settings = MediaSettings(
            input_url=url,
            output_url=str(out),
            segment_s=2.0,
            paced=False,
            read_timeout_s=1.0,
            open_timeout_s=2.0,
            reconnect_delays_s=(0.1, 0.1),
        )
        pipeline = MediaPipeline(settings, NullObserver(), resolve_as="passthrough")
        started = time.monotonic()
        code = await asyncio.wait_for(pipeline.run(), 30)
        elapsed = time.monotonic() - started
    finally:
        Handler.release.set()
        server.shutdown()
        server.server_close()
    assert code == ExitCode.INPUT_UNAVAILABLE
    assert elapsed < 20
    assert pipeline.input.reconnects == 2  # lost once (watchdog or libav timeout), 404 twice
    # What was received before the stall is in the output, properly closed.
    res = analyze(out)
    assert res.video is not None and res.video.duration_s > 2.0
    assert res.audio is not None and res.audio.gaps == []


async def test_rtsp_tcp_input_repairs_the_untimed_first_keyframe(tmp_path: Path) -> None:
    """RTSP over TCP (libav listen mode, publisher in its own process): the first video packet
    arrives without timestamps; it is repaired, not dropped, and sync is kept."""
    import sys

    src = tmp_path / "fx8.mp4"
    make_fixture(src, FixtureSpec(duration_s=8, width=320, height=240, segment_s=2))
    url = f"rtsp://127.0.0.1:{free_port()}/live/in"
    out = tmp_path / "rtsp.mp4"
    settings = MediaSettings(
        input_url=url,
        output_url=str(out),
        segment_s=2.0,
        output_delay_s=4.0,
        end_on_eof=True,
        input_options={"rtsp_flags": "listen", "listen_timeout": "20"},
    )
    pipeline = MediaPipeline(settings, NullObserver(), resolve_as="passthrough")
    task = asyncio.create_task(pipeline.run())
    # A separate process: libav keeps the GIL while an RTSP muxer handshakes.
    pub = subprocess.Popen(
        [sys.executable, "-m", "livedub", "--log-level", "WARNING", "publish", str(src), url],
        stdout=subprocess.DEVNULL,
    )
    try:
        code = await asyncio.wait_for(task, 45)
        assert pub.wait(timeout=10) == 0
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()
        if not task.done():
            pipeline.request_stop(drain=False)
            await asyncio.wait_for(task, 30)
    assert code == ExitCode.OK
    assert pipeline.stats.timestamps_repaired >= 1
    res = analyze(out)
    assert res.codecs == ("h264", "aac")
    assert res.first_frame_number == 0 and res.frame_counter_errors == 0  # keyframe kept
    assert res.video is not None and abs(res.video.duration_s - 8.0) <= FRAME_S
    assert len(res.markers) == 4 and res.max_abs_offset_ms <= 33
    assert res.audio is not None and res.audio.gaps == []
