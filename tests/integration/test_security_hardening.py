"""Issue 17 (security): what the services must refuse.

#6: the RTSP relay's nginx-rtmp notify endpoint refuses a body larger than its bound (413)
without reading it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from livedub.orchestrator.media_server import MediaServer
from livedub.sts.testing import free_port, free_port_range
from livedub.typed import Secret
from tests.integration.marks import needs_media_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[MediaServer]:
    ms = MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path / "ms")
    with ms:
        yield ms


def _raw_http(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `request` (no more) and return the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline()


@needs_media_server
@pytest.mark.parametrize(
    ("length", "status"), [(str(10**12), b"413"), ("100000", b"413"), ("-5", b"400"), ("x", b"400")]
)
def test_notify_endpoint_bounds_content_length(
    media_server: MediaServer, length: str, status: bytes
) -> None:
    port = media_server.notify_port
    assert port is not None
    head = (
        f"POST /rtmp/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    # the body is never sent: before the bound the relay blocked reading it (socket timeout)
    line = _raw_http(port, head + b"app=live&name=x%2Fin")
    assert line.split(b" ")[1] == status, line


# -- #4: credentials never in argv or logs ---------------------------------------------------------
async def test_worker_started_by_the_orchestrator_keeps_credentials_out_of_argv_and_logs(
    tmp_path: Path,
) -> None:
    """A real `livedub worker` started through the hook, with credentials in its input and output
    URLs: its /proc/<pid>/cmdline holds none, and nothing it logs does (while it retries the
    unreachable input, logging the URL each time)."""
    import asyncio
    import time

    import aiohttp

    from livedub.orchestrator.service import SECRET_HEADER, OrchestratorService
    from livedub.orchestrator.settings import OrchestratorSettings

    secrets = ("in-pass-4711", "out-pass-4712", "phrase-4713")
    settings = OrchestratorSettings(
        host="127.0.0.1",
        port=0,
        hook_secret=Secret("hook-4714"),
        input_base=f"rtsp://publisher:{secrets[0]}@127.0.0.1:{free_port()}",
        output_base=f"rtmp://worker:{secrets[1]}@127.0.0.1:{free_port()}",
        sts_url=f"http://127.0.0.1:{free_port()}/?token={secrets[2]}",
        worker_metrics_port_min=(metrics_ports := free_port_range(4))[0],
        worker_metrics_port_max=metrics_ports[1],
        log_dir=tmp_path / "workers",
        stop_timeout_s=5.0,
    )
    service = OrchestratorService(settings)
    await service.start()
    log_path = tmp_path / "workers" / "creds.log"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{service.port}/v1/mediamtx/events/ready",
                json={"path": "live/creds/in", "sourceId": "p1"},
                headers={SECRET_HEADER: "hook-4714"},
            ) as resp:
                assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 30
        pid: int | None = None
        text = ""
        while time.monotonic() < deadline:
            info = service.supervisor.get("creds")
            pid = info.pid if info is not None else pid
            text = log_path.read_text() if log_path.exists() else ""
            if pid and "worker starting" in text and "127.0.0.1" in text.split("worker starting")[1]:
                break
            await asyncio.sleep(0.05)
        assert pid is not None, "worker never started"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert "worker" in cmdline
        assert "worker starting" in text, text[-2000:]
        for secret in (*secrets, "hook-4714"):
            assert secret not in cmdline, secret
            assert secret not in text, secret
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert secrets[0] in environ  # the URLs did reach the worker, by environment
        assert "hook-4714" not in environ  # the orchestrator's own secret never does
        assert "***@127.0.0.1" in text
    finally:
        await service.stop()


# -- #1: the embedded media server is closed ------------------------------------------------------
def _publish(url: str) -> int:
    """Publish 1 s of generated H.264 + AAC to `url` with the ffmpeg CLI; its exit code."""
    import subprocess

    fmt = ["-f", "rtsp", "-rtsp_transport", "tcp"] if url.startswith("rtsp") else ["-f", "flv"]
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a", "aac",
         *fmt, url],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode


@needs_media_server
@pytest.mark.parametrize("protocol", ["rtsp", "rtmp"])
def test_embedded_media_server_enforces_who_may_publish(
    tmp_path: Path, protocol: str
) -> None:
    from livedub.orchestrator.media_server import Role

    ms = MediaServer(
        rtsp_port=free_port(), rtmp_port=free_port(), streams=["sec"], workdir=tmp_path / "ms"
    )
    with ms:
        url = ms.rtsp_url if protocol == "rtsp" else ms.rtmp_url
        refused = [
            ("live/sec/in", Role.ANONYMOUS),
            ("live/sec/in", Role.WORKER),  # the workers' account publishes outputs only
            ("live/sec/out", Role.ANONYMOUS),
            ("live/sec/out", Role.PUBLISHER),  # a broadcaster cannot replace the dubbed output
            ("live/sec/orig", Role.ANONYMOUS),
            ("live/sec/orig", Role.PUBLISHER),  # nor the original kept next to it (--keep-original)
        ]
        for path, role in refused:
            assert _publish(url(path, role)) != 0, (path, role)
        assert ms.ready_paths == {}
        assert _publish(url("live/sec/in", Role.PUBLISHER)) == 0
        assert _publish(url("live/sec/out", Role.WORKER)) == 0
        assert _publish(url("live/sec/orig", Role.WORKER)) == 0
        assert _publish(url("live/sec/orig")) == 0  # the default role of an orig path: the workers'
        creds = ms.credentials(Role.PUBLISHER)
        assert creds is not None
        wrong = url("live/sec/in", Role.PUBLISHER).replace(
            creds.password.get_secret_value(), "wrong-password"
        )
        assert _publish(wrong) != 0


@needs_media_server
def test_embedded_media_server_runs_open_only_when_told(tmp_path: Path) -> None:
    from livedub.orchestrator.media_server import MediaServerSettings, Role

    open_settings = MediaServerSettings(insecure_open_publish=True)
    ms = MediaServer(open_settings, rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path)
    assert ms.credentials(Role.PUBLISHER) is None and ms.credentials(Role.WORKER) is None
    with ms:
        assert _publish(ms.rtsp_url("live/open/in", Role.ANONYMOUS)) == 0


def test_orchestrator_gives_workers_the_service_account_and_only_by_env() -> None:
    from livedub.orchestrator.settings import OrchestratorSettings

    s = OrchestratorSettings(output_pass=Secret("wk-pass"), input_pass=Secret("rd-pass"))
    env = s.worker_env("cam")
    assert env["WORKER_OUTPUT_URL"] == "rtmp://127.0.0.1:1935/live/cam/out?user=worker&pass=wk-pass"
    assert env["WORKER_INPUT_URL"] == "rtsp://worker:rd-pass@127.0.0.1:8554/live/cam/in"
    assert not any("pass" in arg for arg in s.worker_argv("cam", 9000))
    assert "wk-pass" not in repr(s)


@needs_media_server
def test_embedded_media_server_closes_reading_when_a_read_password_is_set(tmp_path: Path) -> None:
    """Readers are configurable (#1): with MEDIA_READ_PASS an anonymous RTSP reader is refused,
    the reader account (and the publisher's) may read."""
    import subprocess
    import time

    from livedub.orchestrator.media_server import MediaServerSettings, Role

    settings = MediaServerSettings(read_pass=Secret("read-4715"))
    ms = MediaServer(settings, rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path)
    with ms:
        pub = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re",
             "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", "20", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a", "aac",
             "-f", "rtsp", "-rtsp_transport", "tcp", ms.rtsp_url("live/rd/in", Role.PUBLISHER)],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while "live/rd/in" not in ms.ready_paths:
                assert time.monotonic() < deadline and pub.poll() is None, "publish never ready"
                time.sleep(0.02)

            def probe(role: Role) -> int:
                return subprocess.run(
                    ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams",
                     ms.rtsp_url("live/rd/in", role)],
                    capture_output=True, timeout=30, check=False,
                ).returncode  # fmt: skip

            assert probe(Role.ANONYMOUS) != 0
            assert probe(Role.READER) == 0
        finally:
            pub.kill()
            pub.wait()
