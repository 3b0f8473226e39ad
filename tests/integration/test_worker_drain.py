"""Drain on SIGTERM (issue 17 item 8): a real `livedub worker` process, a file input read in real
time, the echo STS, a paced file output. SIGTERM mid-stream → the worker stops reading, lets the
fragments in flight finish, writes out the D seconds it buffered, closes the output and exits 0:
the output ends at the last frame it read, with no gap and every marker in sync.

Every wait is on something observed (a log line of the worker's JSON log) with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.timeout(120)

SEGMENT_S = 2.0
DELAY_S = 4.0
FRAME_S = 1 / 30


@pytest.fixture
async def sts() -> AsyncIterator[Any]:
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as server:
        yield server


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def count(path: Path, msg: str) -> int:
    return sum(1 for d in log_lines(path) if d.get("msg") == msg)


async def until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigterm_mid_stream_drains_to_the_last_frame_read(sts: Any, tmp_path: Path) -> None:
    src = tmp_path / "fx30.mp4"
    make_fixture(src, FixtureSpec(duration_s=30.0, width=320, height=240, segment_s=SEGMENT_S))
    out, log = tmp_path / "out.mp4", tmp_path / "worker.log"
    env = {**os.environ, "LIVEDUB_LOG_FORMAT": "json", "LIVEDUB_LOG_LEVEL": "INFO"}
    argv = [
        sys.executable, "-m", "livedub", "worker", "--stream-id", "drain",
        "--input", str(src), "--output", str(out), "--sts-url", sts.url, "--metrics-port", "0",
        "--segment-s", str(SEGMENT_S), "--output-delay-s", str(DELAY_S), "--fragment-timeout-s", "2",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        # Mid-stream: some fragments dubbed and written, more read and buffered (D = 4 s).
        await until(lambda: count(log, "fragment applied") >= 3 and count(log, "segment created") >= 4,
                    60, "dubbing under way")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = log_lines(log)
    text = log.read_text()
    assert code == 0, text[-3000:]
    (finished,) = [d for d in lines if d["msg"] == "media pipeline finished"]
    read_s = float(finished["video_read_s"])
    assert 6.0 <= read_s <= 26.0, read_s  # stopped in the middle of the 30 s input
    a = analyze(out)
    assert a.video is not None and a.audio is not None
    # The output ends at the last frame read: the D seconds buffered at SIGTERM were written.
    assert abs(a.video.duration_s - read_s) <= FRAME_S + 1e-3, (a.video.duration_s, read_s)
    # No gap: audio runs as long as video (within one video frame), both continuous.
    assert abs(a.audio.duration_s - a.video.duration_s) <= FRAME_S + 1e-3, (a.audio.duration_s, a.video.duration_s)
    assert a.video.gaps == [] and a.audio.gaps == [] and a.audio.overlaps == []
    assert a.frame_counter_errors == 0
    assert len(a.markers) >= int(read_s // SEGMENT_S) - 1, a.markers
    assert a.unmatched_flashes_s == []
    assert a.max_abs_offset_ms <= FRAME_S * 1000, [m.offset_ms for m in a.markers]
    # Fragments in flight at SIGTERM were finished: every sent fragment resolved.
    (exiting,) = [d for d in lines if d["msg"] == "worker exiting"]
    assert exiting["sent"] == exiting["processed"] + exiting["fallback"], exiting
    assert exiting["processed"] >= 3
    assert any(d["msg"] == "signal received: draining" for d in lines), text[-3000:]
    assert not any(d["msg"].startswith("drain timed out") for d in lines)
