"""Processes of one benchmark phase: start them, account their CPU and memory, stop them by PID.

Every process the benchmark starts is registered with a role (worker, sts, baseline, publisher,
recorder, probe, media-server) and a group, so that CPU-seconds can be summed per role and group
over an exact wall-clock window. CPU comes from /proc via psutil (user + system of each process;
the processes used here have no children of their own). This module never signals a process it
did not start, and never looks processes up by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

ROLES_PIPELINE = ("worker", "sts", "baseline")
ROLES_TOOLS = ("publisher", "recorder", "probe", "media-server")


@dataclass
class Proc:
    role: str
    group: str
    name: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    ps: psutil.Process | None = None
    last_cpu_s: float = 0.0
    last_rss: int = 0
    last_rss_file: int = 0  # of `last_rss`, pages mapped from files (libraries): RssFile + RssShmem
    started_monotonic: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.ps is not None and self.ps.is_running()

    def sample(self) -> float:
        """CPU-seconds so far (user + system); the last value once the process is gone."""
        if self.ps is None:
            return self.last_cpu_s
        try:
            t = self.ps.cpu_times()
            self.last_cpu_s = float(t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        return self.last_cpu_s

    def rss(self) -> int:
        if self.ps is None:
            return self.last_rss
        try:
            mem = self.ps.memory_info()
            self.last_rss, self.last_rss_file = int(mem.rss), int(getattr(mem, "shared", 0))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        return self.last_rss


class ProcSet:
    """The processes of one phase (see module docstring)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.items: list[Proc] = []

    def spawn(self, role: str, group: str, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Proc:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        proc = Proc(role=role, group=group, name=name, pid=popen.pid, popen=popen, log=log)
        with contextlib.suppress(psutil.Error):
            proc.ps = psutil.Process(popen.pid)
        self.items.append(proc)
        return proc

    def adopt(self, role: str, group: str, name: str, pid: int) -> Proc:
        """Account a process started by someone else on our behalf (the media server's children)."""
        proc = Proc(role=role, group=group, name=name, pid=pid)
        with contextlib.suppress(psutil.Error):
            proc.ps = psutil.Process(pid)
        self.items.append(proc)
        return proc

    def select(self, role: str | None = None, group: str | None = None) -> list[Proc]:
        return [p for p in self.items if (role is None or p.role == role) and (group is None or p.group == group)]

    def snapshot(self) -> dict[int, float]:
        """CPU-seconds of every registered process now, by PID."""
        return {p.pid: p.sample() for p in self.items}

    def sample_all(self) -> None:
        for p in self.items:
            p.sample()

    @staticmethod
    def cpu_between(procs: Iterable[Proc], a: dict[int, float], b: dict[int, float]) -> float:
        total = 0.0
        for p in procs:
            if p.pid in b:
                total += b[p.pid] - a.get(p.pid, 0.0)
        return total

    def stop(self, procs: Iterable[Proc], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Signal each process we started, wait, SIGKILL what is left (by PID)."""
        procs = [p for p in procs if p.popen is not None]
        for p in procs:
            if p.popen is not None and p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        for p in procs:
            assert p.popen is not None
            remaining = max(0.1, deadline - time.monotonic())
            try:
                p.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                p.popen.wait(timeout=5)

    def stop_all(self) -> None:
        self.stop(reversed(self.items), timeout_s=10.0)
        for p in self.items:
            if p.log is not None:
                p.log.close()
                p.log = None


def system_cpu_s() -> float:
    """Busy CPU-seconds of the whole machine (all cores) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    vals = [int(x) for x in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(vals[:8]) - idle) / ticks
