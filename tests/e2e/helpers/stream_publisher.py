"""Publish the fixture to the media server in real time with ffmpeg (`-re -c copy`), and record the
dubbed output with ffmpeg (`-c copy`), each as a subprocess stopped by PID."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.e2e.helpers.docker_manager import ManagedProcess

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def publish(fixture: Path, url: str, log_path: Path, loop: bool = False) -> ManagedProcess:
    """`ffmpeg -re -i fixture -c copy` to an rtsp:// (TCP) or rtmp:// URL."""
    argv = [FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", "-re"]
    if loop:
        argv += ["-stream_loop", "-1"]
    argv += ["-i", str(fixture), "-c", "copy"]
    if url.startswith("rtsp://"):
        argv += ["-f", "rtsp", "-rtsp_transport", "tcp", url]
    else:
        argv += ["-f", "flv", url]
    return ManagedProcess("publisher", argv, log_path).start()


def record(url: str, out_path: Path, log_path: Path) -> ManagedProcess:
    """Record a live URL to a file (copy, no re-encode), from the moment it is published: the
    recorder polls until the path exists (the media server refuses readers before that)."""
    argv = [sys.executable, "-m", "tests.e2e.helpers.recorder", url, str(out_path)]
    return ManagedProcess("recorder", argv, log_path).start()
