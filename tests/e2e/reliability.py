"""T043: run the E2E suite N times and report the pass rate per test.

`python tests/e2e/reliability.py --runs 20` → `tests/e2e/reliability-report.md` (committed).
Each run is a separate pytest process (fresh services), with JUnit XML parsed for per-test results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--workers", default="8", help="pytest-xdist -n")
    p.add_argument("--report", type=Path, default=ROOT / "tests" / "e2e" / "reliability-report.md")
    args = p.parse_args()
    results: dict[str, list[bool]] = defaultdict(list)
    durations: list[float] = []
    for i in range(args.runs):
        xml = Path(f"/tmp/livedub-e2e-run-{i}.xml")
        t0 = time.monotonic()
        subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-n", args.workers, "-p", "no:cacheprovider",
             f"--junitxml={xml}", "tests/e2e"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        durations.append(time.monotonic() - t0)
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            failed = any(child.tag in ("failure", "error", "skipped") for child in case)
            results[name].append(not failed)
        ok_run = all(r[-1] for r in results.values())
        sys.stdout.write(f"run {i + 1}/{args.runs}: {'pass' if ok_run else 'FAIL'} in {durations[-1]:.0f} s\n")
        sys.stdout.flush()
    runs_ok = sum(1 for i in range(args.runs) if all(r[i] for r in results.values() if len(r) > i))
    lines = [
        "# E2E suite reliability",
        "",
        f"Command: `python tests/e2e/reliability.py --runs {args.runs} --workers {args.workers}` "
        f"(each run: `pytest -n {args.workers} tests/e2e`, fresh services).",
        "",
        f"Whole-suite pass rate: **{runs_ok}/{args.runs}**; wall time per run: "
        f"min {min(durations):.0f} s, max {max(durations):.0f} s.",
        "",
        "| test | passed | rate |",
        "|---|---|---|",
    ]
    for name in sorted(results):
        r = results[name]
        lines.append(f"| `{name}` | {sum(r)}/{len(r)} | {100 * sum(r) / len(r):.0f} % |")
    args.report.write_text("\n".join(lines) + "\n")
    sys.stdout.write(f"report: {args.report}\n")
    return 0 if runs_ok == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
