"""A proof that cannot lie: run the README's whole `make test` N times, each in a fresh clone.

    python tests/reliability.py --runs 5 [--loaded-runs 3] [--background-load]
    make test-reliability RUNS=5 LOADED_RUNS=3

Each run clones the committed HEAD into a new temporary directory (nothing generated, nothing
cached: its own venv, its own fixture generation), puts `../shared` beside it as CI does, and runs
`make test` there. `--loaded-runs M` adds M runs after the quiet ones while one core is kept busy
by a background load this script starts itself (one busy-looping process, stopped by PID after the
run); `--background-load` loads every run. Per run it records the commit, whether it was loaded,
the wall time, the pass/fail/skip counts and every failure's first line (from pytest's `-ra`
summary), keeps the whole log under var/reliability/, and rewrites the report after every run,
so an interrupted series still leaves what it measured. Exit code 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
_SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
_RESULT_LINE = re.compile(r"^=+ .*\d+ (passed|failed|errors?)\b.* in [\d.]+s.*=+$")
BUSY_LOOP = "while True:\n    pass\n"


@dataclass
class Run:
    index: int
    loaded: bool
    commit: str
    started: str
    wall_s: float = 0.0
    rc: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.rc == 0 and not self.failures and self.counts.get("passed", 0) > 0


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def parse_log(text: str) -> tuple[dict[str, int], list[str]]:
    """Sum the pytest result lines (`== 3 failed, 676 passed in 274s ==`) of every pytest session
    in a `make test` log, and list each FAILED/ERROR line of the `-ra` summaries."""
    counts: dict[str, int] = {}
    failures: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        m = _SUMMARY.match(line)
        if m:
            failures.append(f"{m.group(1)} {m.group(2)}" + (f" — {m.group(3)[:200]}" if m.group(3) else ""))
        elif _RESULT_LINE.match(line):
            for n, kind in _COUNTS.findall(line):
                key = "errors" if kind.startswith("error") else kind
                counts[key] = counts.get(key, 0) + int(n)
    return counts, failures


def run_once(index: int, loaded: bool, commit: str, logs: Path) -> Run:
    run = Run(index, loaded, commit, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    workdir = Path(tempfile.mkdtemp(prefix="livedub-reliability-"))
    load: subprocess.Popen[bytes] | None = None
    log_path = logs / f"run-{index:02d}{'-loaded' if loaded else ''}.log"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir / "repo")], check=True)
        subprocess.run(["git", "checkout", "-q", commit], cwd=workdir / "repo", check=True)
        if SHARED.exists():
            (workdir / "shared").symlink_to(SHARED)
        if loaded:
            load = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST", "E2E_"))}
        env["CI"] = "true"
        t0 = time.monotonic()
        with log_path.open("w") as log:
            run.rc = subprocess.call(["make", "test"], cwd=workdir / "repo", stdout=log, stderr=subprocess.STDOUT, env=env)
        run.wall_s = time.monotonic() - t0
        run.counts, run.failures = parse_log(log_path.read_text(errors="replace"))
        if run.rc != 0 and not run.failures:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            run.failures.append(f"make test exit {run.rc}: {tail[0][:200]}")
    finally:
        if load is not None:
            load.kill()
            load.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def write_report(path: Path, args: argparse.Namespace, runs: list[Run], planned: int) -> None:
    ok = sum(r.passed for r in runs)
    quiet = [r for r in runs if not r.loaded]
    loaded = [r for r in runs if r.loaded]

    def series(rs: list[Run]) -> str:
        if not rs:
            return "none"
        walls = sorted(r.wall_s for r in rs)
        return (f"{sum(r.passed for r in rs)}/{len(rs)} passed, wall min {walls[0]:.0f} s, "
                f"median {walls[len(walls) // 2]:.0f} s, max {walls[-1]:.0f} s")

    cmd = f"python tests/reliability.py --runs {args.runs}"
    cmd += f" --loaded-runs {args.loaded_runs}" if args.loaded_runs else ""
    cmd += " --background-load" if args.background_load else ""
    lines = [
        "# `make test` reliability, fresh clones",
        "",
        f"Command: `{cmd}` (`make test-reliability`). Each run: a fresh `git clone` of the commit, "
        "`../shared` beside it, `CI=true make test` (set-up, fixture generation, unit + integration, "
        "E2E), exactly as CI runs it. Loaded runs keep one of the 2 cores busy with a busy-looping "
        "process the script starts and stops itself.",
        "",
        f"Runs completed: {len(runs)}/{planned}. **{ok}/{len(runs)} passed.** "
        f"Quiet: {series(quiet)}. Loaded: {series(loaded)}.",
        "",
        "| run | commit | started | load | wall | passed | failed | errors | skipped | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        c = r.counts
        lines.append(
            f"| {r.index} | `{r.commit[:10]}` | {r.started} | {'1 core busy' if r.loaded else 'quiet'} | "
            f"{r.wall_s:.0f} s | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('errors', 0)} | "
            f"{c.get('skipped', 0)} | {'pass' if r.passed else 'FAIL'} |"
        )
    lines += ["", "## Failures (first line of each)", ""]
    fails = [f"- run {r.index}: {f}" for r in runs for f in r.failures]
    lines += fails or ["None."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs (quiet unless --background-load)")
    p.add_argument("--loaded-runs", type=int, default=0, help="extra runs after those, one core kept busy")
    p.add_argument("--background-load", action="store_true", help="keep one core busy in every run")
    p.add_argument("--report", type=Path, default=ROOT / "tests" / "reliability-report.md")
    args = p.parse_args(argv)
    if _git("status", "--porcelain", "--untracked-files=no"):
        sys.stderr.write("warning: uncommitted changes are not part of the runs (they test the commit)\n")
    commit = _git("rev-parse", "HEAD")
    logs = ROOT / "var" / "reliability"
    logs.mkdir(parents=True, exist_ok=True)
    plan = [args.background_load] * args.runs + [True] * args.loaded_runs
    runs: list[Run] = []
    for i, loaded in enumerate(plan, start=1):
        run = run_once(i, loaded, commit, logs)
        runs.append(run)
        write_report(args.report, args, runs, len(plan))
        sys.stdout.write(
            f"run {i}/{len(plan)} ({'loaded' if loaded else 'quiet'}): {'pass' if run.passed else 'FAIL'} "
            f"in {run.wall_s:.0f} s {run.counts}\n"
        )
        sys.stdout.flush()
    sys.stdout.write(f"report: {args.report}\n")
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
