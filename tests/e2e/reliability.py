"""T043: run the E2E suite N times and report the pass rate per test.

`python tests/e2e/reliability.py --runs 20` → `tests/e2e/reliability-report.md` (committed).
Each run is a separate pytest process (fresh services), with JUnit XML parsed for per-test
results; the first line of every failure is kept, so flaky tests can be traced. The report is
rewritten after every run, so an interrupted series still leaves its results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _parse(xml: Path) -> dict[str, str | None] | None:
    """test name → None (passed) or the first line of its failure; None if no report."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return None
    out: dict[str, str | None] = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        if bad:
            msg = (bad[0].get("message") or bad[0].text or bad[0].tag).strip().splitlines()
            out[name] = f"{bad[0].tag}: {msg[0][:200] if msg else ''}"
        else:
            out[name] = None
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--workers", default="8", help="pytest-xdist -n")
    p.add_argument("--report", type=Path, default=ROOT / "tests" / "e2e" / "reliability-report.md")
    args = p.parse_args()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = _commit()
    results: dict[str, list[bool]] = defaultdict(list)
    failures: list[tuple[int, str, str]] = []
    durations: list[float] = []
    run_ok: list[bool] = []
    for i in range(args.runs):
        xml = Path(f"/tmp/livedub-e2e-run-{i}.xml")
        xml.unlink(missing_ok=True)
        t0 = time.monotonic()
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-n", args.workers, "-p", "no:cacheprovider",
             f"--junitxml={xml}", "tests/e2e"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        durations.append(time.monotonic() - t0)
        parsed = _parse(xml)
        if parsed is None:
            failures.append((i + 1, "(whole run)", f"pytest exit {rc}, no JUnit report"))
            run_ok.append(False)
        else:
            for name, fail in parsed.items():
                results[name].append(fail is None)
                if fail is not None:
                    failures.append((i + 1, name, fail))
            run_ok.append(rc == 0 and all(f is None for f in parsed.values()))
        sys.stdout.write(f"run {i + 1}/{args.runs}: {'pass' if run_ok[-1] else 'FAIL'} in {durations[-1]:.0f} s\n")
        sys.stdout.flush()
        _write(args, started, commit, results, failures, durations, run_ok)
    sys.stdout.write(f"report: {args.report}\n")
    return 0 if all(run_ok) and len(run_ok) == args.runs else 1


def _write(
    args: argparse.Namespace,
    started: str,
    commit: str,
    results: dict[str, list[bool]],
    failures: list[tuple[int, str, str]],
    durations: list[float],
    run_ok: list[bool],
) -> None:
    done = len(run_ok)
    lines = [
        "# E2E suite reliability",
        "",
        f"Command: `python tests/e2e/reliability.py --runs {args.runs} --workers {args.workers}` "
        f"(`make e2e-reliability RUNS={args.runs}`; each run: `pytest -n {args.workers} tests/e2e`, fresh services), "
        f"commit `{commit}`, started {started}, on this project's 2-core CI-class machine.",
        "",
        f"Runs completed: {done}/{args.runs}. Whole-suite pass rate: **{sum(run_ok)}/{done}**; wall time per run: "
        f"min {min(durations):.0f} s, median {sorted(durations)[done // 2]:.0f} s, max {max(durations):.0f} s.",
        "",
        "| test | passed | rate |",
        "|---|---|---|",
    ]
    for name in sorted(results):
        r = results[name]
        lines.append(f"| `{name}` | {sum(r)}/{len(r)} | {100 * sum(r) / len(r):.0f} % |")
    lines += ["", "## Failures", ""]
    if failures:
        lines += [f"- run {run}: `{name}` — {msg}" for run, name, msg in failures]
    else:
        lines.append("None.")
    args.report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
