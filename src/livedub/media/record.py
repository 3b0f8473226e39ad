"""Record a live URL to a file from the moment it is published (demo, E2E suite, benchmarks).

Like MediaMTX, a media server refuses readers of a path nobody publishes yet, so `record` polls:
it retries the copy every `retry_s` until one run has recorded something. The copy is ffmpeg's
(`-c copy` to Matroska), run as a subprocess: this is a tool, never part of the worker's path.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from livedub.media.urls import scheme_of

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def record_argv(url: str, out: Path, rw_timeout_s: float = 20.0, *, all_streams: bool = False) -> list[str]:
    """ffmpeg's copy of `url` to Matroska `out`; `all_streams`: every stream (`-map 0`), not just
    ffmpeg's pick of one video and one audio (a --keep-original output has two audio tracks)."""
    timeout_us = str(int(rw_timeout_s * 1_000_000))
    if scheme_of(url) in ("rtsp", "rtsps"):
        # RTSP is a demuxer, not a protocol: `-rw_timeout` is refused ("Option rw_timeout not
        # found"); its socket timeout is `-timeout`, and it must use TCP like every other reader.
        source = ["-rtsp_transport", "tcp", "-timeout", timeout_us]
    else:
        source = ["-rw_timeout", timeout_us]
    return [
        FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", "-y", *source,
        "-i", url, *(["-map", "0"] if all_streams else []), "-c", "copy", "-f", "matroska", str(out),
    ]  # fmt: skip


def record(
    url: str, out: Path, *, wait_s: float = 120.0, retry_s: float = 0.1, log: Path | None = None
) -> int:
    """Block until the stream at `url` has been recorded to `out` (it ends when the publisher
    stops). Returns ffmpeg's exit code, or 1 if nothing was published within `wait_s`.

    ffmpeg's own messages go to stderr, or are appended to `log` when given (an RTMP reader ends
    with "Input/output error" when the publisher leaves: normal, but alarming on a console)."""
    deadline = time.monotonic() + wait_s
    code = 1
    while time.monotonic() < deadline:
        if log is None:
            code = subprocess.call(record_argv(url, out))
        else:
            with log.open("ab") as err:
                code = subprocess.call(record_argv(url, out), stderr=err)
        if out.exists() and out.stat().st_size > 0:
            return code
        time.sleep(retry_s)
    return code
