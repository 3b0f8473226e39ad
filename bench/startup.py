"""`python -m bench.startup`: how long each livedub service takes from spawn to a healthy `/health`.

Starts `livedub sts --backend echo`, `livedub sts --backend dub` (model load and Apertium warm-up
included) and `livedub serve` (the orchestrator, no media server) as real subprocesses on free
loopback ports, `--runs` times each, one at a time, and reports min / median / max seconds from
`Popen` to the first `200` on `/health`, with the 1-minute load average before and after (start-up
is mostly Python imports: on a busy 2-core machine it grows with the load). Results on stdout as
JSON (and in `--out` if given). A start-up figure is a benchmark, not a test assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from livedub.sts.testing import free_port
from livedub.subproc import terminate

LIVEDUB = [sys.executable, "-m", "livedub"]
POLL_S = 0.02  # /health polling interval
DEADLINE_S = 60.0  # longest wait for one start

SERVICES: dict[str, list[str]] = {
    "sts-echo": ["sts", "--backend", "echo"],
    "sts-dub": ["sts", "--backend", "dub"],
    "orchestrator": ["serve", "--sts-url", "http://127.0.0.1:9"],
}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_once(args: list[str]) -> float:
    port = free_port()
    env = {**os.environ, "LIVEDUB_LOG_LEVEL": "WARNING", "ORCH_HOOK_SECRET": "bench-startup"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*LIVEDUB, *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                raise RuntimeError(f"{args}: exited with {proc.returncode} before it was healthy")
            if time.monotonic() - t0 > DEADLINE_S:
                raise RuntimeError(f"{args}: not healthy after {DEADLINE_S} s")
            time.sleep(POLL_S)
        return time.monotonic() - t0
    finally:
        terminate(proc, 15)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="starts per service (default 5)")
    p.add_argument("--only", choices=sorted(SERVICES), action="append", help="only this service (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()
    result: dict[str, Any] = {"load_avg_before": os.getloadavg()[0], "runs": args.runs, "services": {}}
    for name in args.only or list(SERVICES):
        times = [start_once(SERVICES[name]) for _ in range(args.runs)]
        result["services"][name] = {
            "min_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
        }
    result["load_avg_after"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
