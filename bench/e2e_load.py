"""How much CPU the E2E suite needs at a given concurrency: sizes `make test`'s E2E_N.

    python -m bench.e2e_load --workers 4 [--workers 8 ...] [--background-load]

Runs `pytest -n N tests/e2e` inside its own cgroup (cgroup v1 `cpuacct` or v2 `cpu.stat`; needs
root), so every process the suite starts (services, workers, ffmpeg publishers and recorders,
analysis) is counted and nothing else on the machine is. Samples the cgroup's CPU time every
second and prints, per N: wall time, CPU seconds, mean cores, the 95th percentile and maximum of
cores used over 5 s windows, and the pass/fail line. A concurrency is safe for a 2-core machine
when the p95 stays well under the cores left free (2 quiet; 1 with one core kept busy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup")
WINDOW_S = 5


def _make_cgroup(name: str) -> tuple[Path, Callable[[], float]]:
    if (V1 / "cpuacct.usage").exists():
        group = V1 / name
        group.mkdir(exist_ok=True)
        v1 = group
        return v1, lambda: int((v1 / "cpuacct.usage").read_text()) / 1e9
    group = V2 / name
    group.mkdir(exist_ok=True)

    def usage() -> float:
        for line in (group / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
        return 0.0

    return group, usage


def measure(workers: int, background_load: bool) -> dict[str, object]:
    group, usage = _make_cgroup(f"livedub-e2e-load-{os.getpid()}")
    load = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"]) if background_load else None
    # The child joins the cgroup before it execs pytest: everything it starts is counted.
    cmd = (f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -m pytest -q -p no:cacheprovider "
           f"-n {workers} tests/e2e")
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        samples.append((time.monotonic() - t0, usage()))
        time.sleep(1.0)
    out = proc.stdout.read() if proc.stdout else ""
    wall = time.monotonic() - t0
    samples.append((wall, usage()))
    if load is not None:
        load.kill()
        load.wait()
    try:
        group.rmdir()
    except OSError:
        pass
    windows = [
        (samples[i + WINDOW_S][1] - samples[i][1]) / (samples[i + WINDOW_S][0] - samples[i][0])
        for i in range(0, len(samples) - WINDOW_S)
    ]
    windows.sort()
    result_line = next((ln for ln in reversed(out.splitlines()) if " in " in ln and ("passed" in ln or "failed" in ln)), "")
    return {
        "workers": workers,
        "background_load": background_load,
        "wall_s": round(wall, 1),
        "cpu_s": round(samples[-1][1], 1),
        "mean_cores": round(samples[-1][1] / wall, 2),
        "p95_cores_5s": round(windows[int(0.95 * (len(windows) - 1))], 2) if windows else None,
        "max_cores_5s": round(windows[-1], 2) if windows else None,
        "result": result_line.strip("= "),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, action="append", required=True)
    p.add_argument("--background-load", action="store_true", help="keep one core busy meanwhile")
    args = p.parse_args()
    for n in args.workers:
        sys.stdout.write(json.dumps(measure(n, args.background_load)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
