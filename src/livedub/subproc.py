"""Child processes we start: tied to our life (`pdeathsig_preexec`) and stopped by PID
(`terminate`: SIGTERM, a bounded wait, then SIGKILL; never a process group)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Callable
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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def pdeathsig_preexec(sig: int) -> Callable[[], None] | None:
    """Linux: a `preexec_fn` that makes the child receive `sig` when its parent dies (no orphans
    after a kill -9 of ours). It also resets `sig` to its default action first: an "ignore"
    inherited from our own parent (nohup ignores SIGHUP) would survive the exec and make the
    parent-death signal a no-op. None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl, set_handler = libc.prctl, libc.signal
    except (OSError, AttributeError):
        return None
    sig_dfl = 0

    def preexec() -> None:  # runs in the child between fork and exec: only these two calls
        set_handler(int(sig), sig_dfl)
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec
