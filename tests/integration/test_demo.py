"""`livedub demo` (what `make demo` runs), end to end on free ports: real media server, echo STS,
orchestrator and worker processes; a short programme so it fits the integration budget."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from livedub.exitcodes import ExitCode
from livedub.sts.testing import free_port, free_port_range
from tests.integration.marks import needs_ffmpeg, needs_media_server

pytestmark = pytest.mark.timeout(180)

DEMO = [sys.executable, "-m", "livedub", "demo"]


def _metrics_ports() -> dict[str, str]:
    """The worker's metrics port from this test's own range (tests run in parallel)."""
    low, high = free_port_range(4)
    return {"ORCH_WORKER_METRICS_PORT_MIN": str(low), "ORCH_WORKER_METRICS_PORT_MAX": str(high)}


def _demo_argv(workdir: Path, ports: list[int]) -> list[str]:
    rtsp, rtmp, sts, orch = ports
    return [
        *DEMO, "--stream-id", "demo-it", "--workdir", str(workdir), "--duration-s", "12",
        "--rtsp-port", str(rtsp), "--rtmp-port", str(rtmp), "--sts-port", str(sts),
        "--orchestrator-port", str(orch), "--progress-interval-s", "2", "--backend", "echo",
    ]  # fmt: skip


@needs_media_server
@needs_ffmpeg
def test_demo_dubs_every_fragment_in_sync_with_a_clean_console(tmp_path: Path) -> None:
    env = {**os.environ, **_metrics_ports()}
    ports = [free_port() for _ in range(4)]
    done = subprocess.run(
        _demo_argv(tmp_path, ports), env=env, capture_output=True, text=True, timeout=150
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert "fragments dubbed      : 2/2" in console, console
    assert "did not log its exit" not in console, console  # the figures are the worker's own final ones
    assert "fallbacks             : 0" in console, console
    assert "result                : OK" in console, console
    # Nothing alarming on the console of a good run: ffmpeg's recorder messages (an RTMP reader
    # ends with "Input/output error" when the publisher leaves) go to logs/recorder.log.
    alarming = [line for line in console.splitlines() if "error" in line.lower()]
    assert alarming == [], console
    assert (tmp_path / "logs" / "recorder.log").exists()
    assert (tmp_path / "demo-it-sync.png").stat().st_size > 0
    # the live console: its URL printed, its token in a mode-600 file, never in the output or a log
    assert f"live console          : http://127.0.0.1:{ports[3]}/ (sign in with the token in {tmp_path}/console-token" in console
    token_file = tmp_path / "console-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token not in console
    for log in (tmp_path / "logs").rglob("*.log"):
        assert token not in log.read_text(errors="replace"), log


def test_demo_refuses_busy_ports_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = [free_port(), free_port(), free_port(), busy.getsockname()[1]]
        done = subprocess.run(
            _demo_argv(tmp_path, ports), capture_output=True, text=True, timeout=30
        )
    assert done.returncode == int(ExitCode.USAGE), done.stdout + done.stderr
    assert f"orchestrator {ports[3]}" in done.stderr + done.stdout


@needs_media_server
@needs_ffmpeg
@pytest.mark.skipif(
    not all(shutil.which(b) for b in ("espeak-ng", "lt-proc", "sox")),
    reason="espeak-ng / apertium / sox not installed (make setup)",
)
def test_demo_dubs_speech_with_the_dub_backend(tmp_path: Path) -> None:
    env = {**os.environ, **_metrics_ports()}
    argv = _demo_argv(tmp_path, [free_port() for _ in range(4)])[:-2]  # no --backend: dub
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert "fragments dubbed      : 2/2" in console, console
    assert "did not log its exit" not in console, console  # the figures are the worker's own final ones
    segments = [line for line in console.splitlines() if re.match(r"segment +\d+ ", line)]
    assert len(segments) == 2 and all(" -> " in line and "success" in line for line in segments), console
    for line in segments:  # "... | <transcript> -> <translation>": both non-empty and different
        transcript, translation = line.split(" | ", 1)[1].split(" -> ")
        assert len(transcript.split()) >= 4 and len(translation.split()) >= 4, line
        assert transcript != translation, line
    for lang in ("en", "es"):
        # one cue per speech span: at least one per segment
        assert (tmp_path / "captions" / f"demo-it.{lang}.vtt").read_text().count(" --> ") >= 2
