"""Reliability: the output side and the disk.

- Output unavailable at start (an unwritable path, a refused RTMP URL): exit 12 (`OUTPUT_FAILED`)
  with one clear `output failed` log line naming the URL and the OS error, within seconds.
- The RTMP server goes away mid-stream: the worker notices on its next write and exits 12 the
  same way (documented: the orchestrator restarts it with backoff); what was dubbed so far was
  resolved and accounted.
- The segment directory is unwritable or full: dubbing and the output continue untouched; the
  condition is logged and shown on `/health` (`segment_files: failing`, `segment_file_errors`).

Live parts use the embedded media server (nginx-rtmp) on free ports, stopped even on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livedub.media import segment_files
from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.orchestrator.media_server import MediaServer
from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import free_port
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h
from tests.integration.marks import needs_media_server

pytestmark = pytest.mark.timeout(120)



@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("output") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12.0, width=320, height=240, segment_s=2.0))
    return path


@pytest.fixture(scope="module")
def ref(src: Path) -> Analysis:
    return analyze(src)


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as server:
        yield server


def worker(sts: RunningSts, src: Path, output_url: str, stream_id: str, **kw: Any) -> WorkerRunner:
    base: dict[str, Any] = {
        "stream_id": stream_id,
        "input_url": str(src),
        "output_url": output_url,
        "sts_url": sts.url,
        "metrics_port": 0,
        "paced": False,
        "segment_s": 2.0,
        "end_timeout_s": 1.0,
    }
    base.update(kw)
    return WorkerRunner(WorkerSettings(**base))


def output_failed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.getMessage()} {getattr(r, 'ctx', '')}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and "output" in r.getMessage() and "failed" in r.getMessage()
    ]


async def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


# --- output unavailable at start ------------------------------------------------------------


async def test_unwritable_output_path_exits_12_at_once(
    sts: RunningSts, src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("x")  # a path *below a regular file* fails even for root
    url = str(tmp_path / "a-file" / "out.mp4")
    runner = worker(sts, src, url, "out-unwritable")
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert await runner.run() == 12
    assert time.monotonic() - started < 5
    lines = output_failed_lines(caplog)
    assert lines and url in lines[0] and "Not a directory" in lines[0], lines
    assert h.metric(runner, "worker_audio_fragments_total", status="sent") == 0, "nothing dubbed for nobody"


@pytest.mark.parametrize("paced", [False, True], ids=["unpaced", "paced"])
async def test_refused_output_url_exits_12(
    sts: RunningSts, src: Path, paced: bool, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/refused/out"
    runner = worker(sts, src, url, "out-refused", paced=paced, output_delay_s=3.0)
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        code = await runner.run()
    elapsed = time.monotonic() - started
    assert code == 12
    # Unpaced: at open. Paced: the output connects a lead time before its first packet is due (D).
    assert elapsed < (10 if paced else 5), elapsed
    lines = output_failed_lines(caplog)
    assert lines and url in lines[0] and "refused" in lines[0].lower(), lines
    h.check_accounting(runner, output_ran=False)


# --- the RTMP server goes away mid-stream ---------------------------------------------------


@contextlib.contextmanager
def media_server(tmp_path: Path, stream_id: str) -> Iterator[MediaServer]:
    ms = MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), streams=[stream_id], workdir=tmp_path / "ms")
    ms.start()
    try:
        ms.wait_ready(10)
        yield ms
    finally:
        ms.stop()


@needs_media_server
async def test_rtmp_server_gone_mid_stream_exits_12(
    sts: RunningSts, src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with media_server(tmp_path, "gone") as ms:
        url = ms.rtmp_url("live/gone/out")
        runner = worker(sts, src, url, "gone", paced=True, output_delay_s=3.0, fragment_timeout_s=1.0)
        task = asyncio.create_task(runner.run())
        try:
            await wait_until(lambda: h.metric(runner, "worker_segments_total") >= 2, 20, "two segments out")
            await asyncio.to_thread(ms.stop)
            gone_at = time.monotonic()
            with caplog.at_level(logging.INFO):
                code = await asyncio.wait_for(task, 30)
            noticed_s = time.monotonic() - gone_at
        finally:
            if not task.done():
                runner.pipeline.request_stop(drain=False)
                await asyncio.wait_for(task, 30)
    assert code == 12
    assert noticed_s < 5, noticed_s
    assert output_failed_lines(caplog), "a clear log line"
    assert runner.health()["output"] == "failed"
    n = h.check_accounting(runner, output_ran=False)
    assert n["dubbed"] >= 1, "it was dubbing before the server went away"


# --- segment directory unwritable / full -----------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kb: int) -> Iterator[bool]:
    """Mount a `size_kb` tmpfs on `path` (root only); yields False when mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        yield False
        return
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def enospc_after(monkeypatch: pytest.MonkeyPatch, ok_writes: int) -> None:
    """Simulate a disk that fills up: after `ok_writes` segment-file writes, ENOSPC."""
    count = {"n": 0}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            count["n"] += 1
            if count["n"] > ok_writes:
                raise OSError(errno.ENOSPC, "No space left on device")
            return fn(*args, **kwargs)

        return inner

    monkeypatch.setattr(segment_files, "write_video_mp4", wrap(segment_files.write_video_mp4))
    monkeypatch.setattr(segment_files, "encode_pcm", wrap(segment_files.encode_pcm))


async def check_dubbing_continues(runner: WorkerRunner, out: Path, ref: Analysis) -> dict[str, Any]:
    assert await runner.run() == 0
    n = h.check_accounting(runner)
    assert n["dubbed"] == 6, "disk trouble never costs a dubbed segment"
    h.check_complete(out, ref)
    health = runner.health()
    assert health["status"] == "ok"
    assert health["segment_files"] == "failing" and health["segment_file_errors"] >= 1, health
    return health


async def test_unwritable_segment_dir(
    sts: RunningSts, src: Path, ref: Analysis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "segments"
    blocker.write_text("a file where the segment directory should be")
    out = tmp_path / "out.mp4"
    runner = worker(sts, src, str(out), "seg-unwritable", segment_dir=str(blocker))
    with caplog.at_level(logging.WARNING):
        health = await check_dubbing_continues(runner, out, ref)
    assert health["segment_file_errors"] >= 6  # every segment's files, plus the dubbed ones
    assert any("segment file write failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["tmpfs", "simulated"])
async def test_full_segment_disk(
    sts: RunningSts,
    src: Path,
    ref: Analysis,
    tmp_path: Path,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seg_dir = tmp_path / "segments"
    out = tmp_path / "out.mp4"
    with small_tmpfs(seg_dir, 160) if how == "tmpfs" else contextlib.nullcontext(True) as ready:
        if not ready:
            pytest.skip("cannot mount a tmpfs here (needs root); the simulated variant covers it")
        if how == "simulated":
            enospc_after(monkeypatch, ok_writes=4)
        runner = worker(sts, src, str(out), "seg-full", segment_dir=str(seg_dir))
        with caplog.at_level(logging.WARNING):
            await check_dubbing_continues(runner, out, ref)
        written = list((seg_dir / "seg-full").glob("*"))
        assert written, "the first segment files fitted"
    assert any("No space left" in str(getattr(r, "ctx", "")) for r in caplog.records)
