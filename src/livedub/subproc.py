"""Stopping a child process we started: SIGTERM, a bounded wait, then SIGKILL (by PID, never a group)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

KILL_WAIT_S = 5.0  # after SIGKILL, longest wait for the exit to be reaped


def terminate(proc: subprocess.Popen[Any], timeout_s: float) -> int | None:
    """SIGTERM `proc` if it still runs, wait up to `timeout_s` for it, SIGKILL it if it has not
    exited by then. Returns its exit code (negative: the signal that ended it), None if even
    SIGKILL was not reaped in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                return proc.wait(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                return None
    return proc.returncode
