"""Integration: `livedub sts` as a real subprocess — it becomes healthy, a lifecycle from a client
that only knows the protocol, env configuration, `--help`, clean stop on SIGTERM. (How fast it
starts is a performance figure: `python -m bench.startup`, docs/performance.md.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from livedub.sts.testing import StsTestClient, free_port
from livedub.subproc import terminate

LIVEDUB = [sys.executable, "-m", "livedub"]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    import urllib.request

    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=0.5) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.02)  # polling interval while the server starts
    raise AssertionError("server did not become healthy in time")


@pytest.fixture
def sts_process(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    port = free_port()
    env = {**os.environ, "STS_CLOSE_DELAY_S": "0.2", "LIVEDUB_LOG_FORMAT": "json"}
    log = (tmp_path / "sts.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*LIVEDUB, "sts", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, timeout_s=10)
        yield url, proc, time.monotonic() - t0
    finally:
        terminate(proc, 5)
        log.close()


async def test_subprocess_becomes_healthy_serves_and_stops_cleanly(
    sts_process: tuple[str, subprocess.Popen[bytes], float], tmp_path: Path
) -> None:
    url, proc, _startup_s = sts_process  # healthy within the fixture's deadline
    worker = StsTestClient(url, stream_id="sub-1", worker_id="w")
    try:
        await worker.connect()
        await worker.init()
        fid = await worker.send_fragment(0)
        processed = await worker.wait_for("fragment:processed")
        assert processed["fragment_id"] == fid
        await worker.ack(fid)
        await worker.emit("stream:end", {})
        complete = await worker.wait_for("stream:complete")
        assert complete["total_fragments"] == 1
        await worker.wait_for("disconnect", timeout=3)  # STS_CLOSE_DELAY_S=0.2 from the env
    finally:
        await worker.close()
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert 'sts_fragments_total{status="success"} 1.0' in await resp.text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    logged = (tmp_path / "sts.log").read_text()
    assert f'"fragment_id": "{fid}"' in logged and '"stream_id": "sub-1"' in logged


def test_help_documents_every_option() -> None:
    out = subprocess.run(
        [*LIVEDUB, "sts", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in (
        "--host",
        "--port",
        "--auth-token",
        "--max-inflight",
        "--close-delay-s",
        "--ping-interval-s",
        "--ping-timeout-s",
        "--max-fragment-base64-bytes",
        "--max-message-bytes",
        "--debug-history-limit",
        "--shutdown-timeout-s",
    ):
        assert flag in out
    assert "STS_PORT" in out and "8080" in out


def test_invalid_settings_exit_2() -> None:
    proc = subprocess.run(
        [*LIVEDUB, "sts", "--max-inflight", "99"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "max_inflight" in proc.stderr
