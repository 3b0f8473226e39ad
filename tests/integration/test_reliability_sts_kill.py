"""Reliability: the STS process is killed with SIGKILL mid-stream and restarted 10 s later.

A real `livedub sts` subprocess; the worker in-process with a file input read in real time and a
paced file output (a live stream in every respect but the URLs). With the default reconnect
schedule (2, 4, 8 s) the worker is back 14 s after the kill. Checked: exit 0, output duration =
input duration with every marker in sync, every segment dubbed or original with its reason
counted (`disconnect` while the STS is away), nothing left in flight, and dubbing resumes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.sts.testing import free_port
from livedub.subproc import terminate
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h

pytestmark = pytest.mark.timeout(120)

DURATION_S = 26.0
SEGMENT_S = 2.0
RESTART_AFTER_S = 10.0


class StsProcess:
    """`livedub sts` on a fixed port, startable again after a kill."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "STS_CLOSE_DELAY_S": "0.2"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "livedub", "sts", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 5)


@pytest.fixture
def sts_process(tmp_path: Path) -> Iterator[StsProcess]:
    proc = StsProcess(free_port(), tmp_path / "sts.log")
    try:
        yield proc
    finally:
        proc.stop()


async def wait_until(cond: object, timeout_s: float, what: str) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sts_sigkill_then_restart_10s_later(sts_process: StsProcess, tmp_path: Path) -> None:
    src = tmp_path / "fx.mp4"
    make_fixture(src, FixtureSpec(duration_s=DURATION_S, width=320, height=240, segment_s=SEGMENT_S))
    ref = analyze(src)
    sts_process.start()
    await wait_until(sts_process.healthy, 15, "STS healthy")

    out = tmp_path / "out.mp4"
    runner = WorkerRunner(
        WorkerSettings(
            stream_id="sts-kill",
            input_url=str(src),
            output_url=str(out),
            sts_url=sts_process.url,
            metrics_port=0,
            paced=True,  # input read in real time, output written at W0 + pts + D
            segment_s=SEGMENT_S,
            fragment_timeout_s=1.5,
            output_delay_s=4.0,
            end_timeout_s=2.0,
        )
    )
    segments = h.record_segments(runner)
    task = asyncio.create_task(runner.run())
    try:
        processed = lambda: h.metric(runner, "worker_audio_fragments_total", status="processed")  # noqa: E731
        await wait_until(lambda: processed() >= 2, 20, "two fragments dubbed")
        sts_process.kill()
        killed_at = time.monotonic()
        await wait_until(lambda: runner.health()["sts"] == "reconnecting", 5, "worker sees the loss")
        await asyncio.sleep(RESTART_AFTER_S - (time.monotonic() - killed_at))  # the scenario: down 10 s
        sts_process.start()
        await wait_until(lambda: h.metric(runner, "worker_reconnection_total") >= 1, 20, "reconnected")
        back_after_s = time.monotonic() - killed_at
        code = await asyncio.wait_for(task, 60)
    finally:
        if not task.done():
            runner.pipeline.request_stop(drain=False)
            await asyncio.wait_for(task, 30)

    assert code == 0
    # 2 s + 4 s + 8 s: the third retry finds the restarted STS.
    assert 12.0 <= back_after_s <= 17.0, back_after_s
    n = h.check_accounting(runner)
    assert h.metric(runner, "worker_fallback_total", reason="disconnect") >= 4, "the outage"
    assert n["processed"] >= 2 + 2, "dubbed before the kill and again after the restart"
    # Every segment went out exactly once, in order; dubbing resumed after the restart.
    full = int(DURATION_S / SEGMENT_S)
    assert [b for b, _, _ in segments][:full] == list(range(full))
    sources = [src for _, src, _ in segments[:full]]
    assert sources[-1] == "dubbed" and sources[0] == "dubbed", segments
    outage = [r for _, src, r in segments if src == "original"]
    assert set(outage) <= {"disconnect", "short_tail"}, segments
    assert runner.health()["status"] == "ok"
    h.check_complete(out, ref)
