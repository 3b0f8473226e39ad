"""Reconcile (issue 17 item 7), real processes: the embedded media server with its MediaMTX-style
API, a live publisher, the echo STS, `livedub serve` and real `livedub worker` processes.

The orchestrator is killed (SIGKILL) while the stream is dubbed and started again: the media
server sends no new ready hook (the publisher never left), so only reconcile can bring the stream
back. Checked: it is dubbed again within one reconcile interval of the new orchestrator being up,
the old worker went away with its parent (parent-death signal), and nothing is started twice
(one worker process, no restart, across several reconcile passes). Every wait is on an observed
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.publish import publish
from livedub.orchestrator.media_server import MediaServer, Role
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import free_port
from livedub.subproc import terminate
from tests.integration.marks import needs_media_server
from tests.integration.test_orchestrator import (
    metric_sum,
    until,  # one polling helper for the orchestrator tests
)

pytestmark = [pytest.mark.timeout(180), needs_media_server]

SECRET = "reconcile-secret-1"
INTERVAL_S = 2.0
STREAM = "rc"


@pytest.fixture
async def sts() -> AsyncIterator[Any]:
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as server:
        yield server




def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def worker_pids(stream_id: str) -> list[int]:
    """Every live `livedub worker --stream-id <id>` process on this machine."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "worker" not in cmd or "--stream-id" not in cmd:
            continue
        if cmd[cmd.index("--stream-id") + 1] == stream_id and "livedub" in cmd:
            found.append(proc.info["pid"])
    return found


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a `livedub serve` log (its workers' lines are prefixed `[<id>] `)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(f"[{STREAM}] "):
            line = line.removeprefix(f"[{STREAM}] ")
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


class Serve:
    """One `livedub serve` process on a fixed port."""

    def __init__(
        self, port: int, argv: list[str], log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "WORKER_"))}
        env.update(ORCH_HOOK_SECRET=SECRET, LIVEDUB_LOG_FORMAT="json", **(extra_env or {}))
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)

    async def get(self, http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        try:
            async with http.get(self.base + path) as resp:
                return resp.status, await resp.text()
        except aiohttp.ClientError:
            return 0, ""

    async def healthy(self, http: aiohttp.ClientSession) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return (await self.get(http, "/health"))[0] == 200

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        status, text = await self.get(http, "/metrics")
        return metric_sum(text, name, **labels) if status == 200 else 0.0

    async def stream(self, http: aiohttp.ClientSession) -> dict[str, Any] | None:
        async with http.get(f"{self.base}/v1/streams/{STREAM}") as resp:
            return await resp.json() if resp.status == 200 else None

    def stop(self) -> None:
        terminate(self.proc, 40)


async def test_killed_orchestrator_is_restarted_and_reconcile_dubs_the_live_stream_once(
    sts: Any, tmp_path: Path
) -> None:
    src = tmp_path / "fx.mp4"
    make_fixture(src, FixtureSpec(duration_s=10.0, width=320, height=240, segment_s=2.0))
    orch_port, api_port = free_port(), free_port()
    ms = MediaServer(
        rtsp_port=free_port(), rtmp_port=free_port(), streams=[STREAM], api_port=api_port,
        hook_url=f"http://127.0.0.1:{orch_port}", hook_secret=SECRET, workdir=tmp_path / "ms",
    )  # fmt: skip
    argv = [
        sys.executable, "-m", "livedub", "serve", "--port", str(orch_port),
        "--input-base", f"rtsp://127.0.0.1:{ms.rtsp_port}",
        "--output-base", f"rtmp://127.0.0.1:{ms.rtmp_port}",
        "--sts-url", sts.url, "--media-api-url", f"http://127.0.0.1:{api_port}",
        "--reconcile-interval-s", str(INTERVAL_S), "--worker-metrics-port-min", "0",
        "--stop-timeout-s", "20", "--backoff-initial-s", "0.5",
        "--worker-args", "--segment-s 2 --output-delay-s 4 --fragment-timeout-s 2",
    ]  # fmt: skip
    # the media server is closed: the workers publish with its service account (by env)
    worker = ms.credentials(Role.WORKER)
    assert worker is not None
    worker_account = {
        "ORCH_OUTPUT_USER": worker.user,
        "ORCH_OUTPUT_PASS": worker.password.get_secret_value(),
    }
    stop_publishing = threading.Event()
    publisher = threading.Thread(
        target=publish, args=(str(src), ms.rtsp_url(f"live/{STREAM}/in")),
        kwargs={"loop": True, "stop": stop_publishing}, daemon=True,
    )  # fmt: skip
    serves: list[Serve] = []
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    try:
        await asyncio.to_thread(ms.start)
        await ms.wait_ready_async(10)
        first = Serve(orch_port, argv, tmp_path / "serve1.log", worker_account)
        serves.append(first)
        await until(lambda: first.healthy(http), 30, "first orchestrator healthy")
        publisher.start()  # the hook starts the worker
        await until(lambda: first.metric(http, "worker_audio_fragments_total", status="processed", stream_id=STREAM),
                    60, "the stream dubbed by the first orchestrator")  # fmt: skip
        # The embedded media server's API answers as MediaMTX's does (PathList of Path items).
        async with http.get(f"{ms.api_url}/v3/paths/list") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            listed = await resp.json()
        assert set(listed) == {"itemCount", "pageCount", "items"}
        by_name = {i["name"]: i for i in listed["items"]}
        live_in = by_name[f"live/{STREAM}/in"]
        assert live_in["ready"] is True and live_in["source"]["type"] == "rtspSession"
        assert {"confName", "readyTime", "available", "online", "tracks", "readers"} <= set(live_in)
        old_pid = (await first.stream(http))["pid"]  # type: ignore[index]
        assert old_pid and alive(old_pid)

        first.proc.kill()  # SIGKILL: no shutdown, no hook; the worker gets its parent-death signal
        first.proc.wait(10)
        await until(lambda: not alive(old_pid), 15, "the old worker gone with its parent")
        assert f"live/{STREAM}/in" in ms.ready_paths, "still published: no new ready hook will come"

        second = Serve(orch_port, argv, tmp_path / "serve2.log", worker_account)
        serves.append(second)
        await until(lambda: second.healthy(http), 30, "second orchestrator healthy")
        up_at = time.monotonic()

        async def running() -> dict[str, Any] | None:
            info = await second.stream(http)
            return info if info is not None and info["state"] == "running" else None

        info = await until(running, INTERVAL_S + 5, "a worker for the live stream")
        assert time.monotonic() - up_at <= INTERVAL_S, "started within one reconcile interval"
        await until(lambda: second.metric(http, "worker_audio_fragments_total", status="processed", stream_id=STREAM),
                    60, "the stream dubbed again")  # fmt: skip
        assert await second.metric(http, "orchestrator_reconcile_started_total") == 1
        # Nothing is started twice: after more reconcile passes, still the one worker, no restart.
        passes = await second.metric(http, "orchestrator_reconcile_runs_total", result="ok")
        await until(
            lambda: second.metric(http, "orchestrator_reconcile_runs_total", result="ok"),
            5 * INTERVAL_S, "first pass counted",
        )  # fmt: skip

        async def two_more_passes() -> bool:
            return await second.metric(http, "orchestrator_reconcile_runs_total", result="ok") >= passes + 2

        await until(two_more_passes, 5 * INTERVAL_S, "two more reconcile passes")
        now = await second.stream(http)
        assert now is not None and now["pid"] == info["pid"] and now["restarts"] == 0, now
        assert now["source_type"] == "rtspSession" and now["source_id"], now
        assert worker_pids(STREAM) == [info["pid"]]
        assert await second.metric(http, "orchestrator_reconcile_started_total") == 1
        # Stop: the orchestrator forwards SIGTERM, the worker drains and exits 0, then it exits 0.
        second.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.proc.wait, 40) == 0
        lines = json_lines(second.log)
        assert any(d.get("msg") == "signal received: draining" for d in lines)
        (exiting,) = [d for d in lines if d.get("msg") == "worker exiting"]
        assert exiting["exit_code"] == 0 and not alive(info["pid"])
    finally:
        stop_publishing.set()
        for serve in serves:
            await asyncio.to_thread(serve.stop)
        await http.close()
        publisher.join(10) if publisher.is_alive() else None
        await asyncio.to_thread(ms.stop)
