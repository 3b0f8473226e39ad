"""`python -m bench.minimal`: the worker against its floor, side by side with the ffmpeg relay.

Each pipeline gets its own stream: one looped fixture published in real time to the embedded
media server per pipeline, as in `make bench`; N ffmpeg relays (`ffmpeg -i IN -c:v copy -c:a aac
-f flv OUT`), N passthrough workers, N floor workers (`bench.floor_worker`: only the parts the
project requires of a worker, holding the stream for D) and N floor workers with one media thread
(`--one-thread`: the reader also writes what is due) read their streams at the same time, each
publishing its own output. CPU (user + system from /proc) over a
window of whole fixture periods once every output is live, RSS at the end of the window; printed
as a table of ratios to the relay and written to WORKDIR/minimal.json. About 2 minutes.

What it answers (issue 16): how far the worker is from the least a Python worker built from
those parts costs here, and whether a target is below that floor (RSS ≤ 1.5× the relay).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.phase import fixture_path, free_port, publisher_argv, relay_argv, wait_for
from bench.procs import Proc, ProcSet
from livedub.orchestrator.media_server import MediaServer, Role
from livedub.orchestrator.settings import WORKER_ENV_INPUT_URL, WORKER_ENV_OUTPUT_URL
from livedub.worker.memory import worker_python_argv

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("relay", "passthrough", "floor", "floor-1t")  # floor-1t: the floor with one media thread


def _argv(kind: str, sid: str, delay_s: float, in_url: str, out_url: str) -> list[str]:
    if kind == "relay":
        return relay_argv(in_url, out_url)
    if kind == "passthrough":
        return [*worker_python_argv(), "--log-format", "json", "worker", "--stream-id", sid, "--passthrough",
                "--sts-url", "http://127.0.0.1:9", "--metrics-port", str(free_port()),
                "--segment-s", "6", "--output-delay-s", f"{delay_s:g}"]  # fmt: skip
    one = ["--one-thread"] if kind == "floor-1t" else []
    return [*worker_python_argv("bench.floor_worker"), "--delay-s", f"{delay_s:g}", "--metrics-port", str(free_port()), *one]


def run(n: int, periods: int, delay_s: float, fixture: Path, period_s: float, workdir: Path) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "logs").mkdir(parents=True)
    ids = {kind: [f"{kind}-{i}" for i in range(n)] for kind in KINDS}
    ms = MediaServer(
        rtsp_port=free_port(), rtmp_port=free_port(), streams=[s for v in ids.values() for s in v],
        workdir=workdir / "media-server",
    )  # fmt: skip
    procs = ProcSet(workdir / "logs")
    try:
        ms.start()
        ms.wait_ready(15)
        pipes: dict[str, list[Proc]] = {kind: [] for kind in KINDS}
        for i in range(n):  # interleaved, so that no kind always starts last
            for kind in KINDS:
                sid = ids[kind][i]
                in_url = ms.rtsp_url(f"live/{sid}/in", Role.PUBLISHER)
                procs.spawn("publisher", "tools", f"pub-{sid}", publisher_argv(fixture, in_url))
                wait_for(lambda sid=sid: f"live/{sid}/in" in ms.ready_paths, 30, f"the publisher of {sid}")
                out_url = ms.rtmp_url(f"live/{sid}/out", Role.WORKER)
                env = None if kind == "relay" else {**os.environ, WORKER_ENV_INPUT_URL: in_url, WORKER_ENV_OUTPUT_URL: out_url}
                pipes[kind].append(procs.spawn(kind, kind, sid, _argv(kind, sid, delay_s, in_url, out_url), env=env))
                time.sleep(0.5)
        time.sleep(delay_s + 10.0)  # outputs live, and writing what was read after every pipeline started
        dead = [p.name for ps in pipes.values() for p in ps if not p.alive()]
        if dead:
            raise RuntimeError(f"ended before the window: {', '.join(dead)} (logs in {workdir / 'logs'})")
        window_s = periods * period_s
        a = procs.snapshot()
        time.sleep(window_s)
        b = procs.snapshot()
        rows = {}
        for kind, ps in pipes.items():
            alive = sum(1 for p in ps if p.alive())
            rows[kind] = {
                "cpu_ms_per_s": ProcSet.cpu_between(ps, a, b) / window_s / n * 1000.0,
                "rss_mb": sum(p.rss() for p in ps) / n / 2**20,
                "rss_file_mb": sum(p.last_rss_file for p in ps) / n / 2**20,
                "alive": alive,
            }
    finally:
        procs.stop_all()
        ms.stop()
    relay = rows["relay"]
    for r in rows.values():
        r["cpu_ratio"] = r["cpu_ms_per_s"] / relay["cpu_ms_per_s"]
        r["rss_ratio"] = r["rss_mb"] / relay["rss_mb"]
    return {"n": n, "window_s": window_s, "delay_s": delay_s, "fixture": str(fixture), "kinds": rows}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.minimal", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2, help="pipelines of each kind (default 2)")
    p.add_argument("--periods", type=int, default=2, help="window in fixture periods (default 2)")
    p.add_argument("--delay-s", type=float, default=7.0, help="D of the workers and the floor (default 7)")
    p.add_argument("--period-s", type=float, default=24.0, help="fixture length, looped (default 24, as make bench)")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "minimal")
    args = p.parse_args()
    from livedub.media.fixture import FixtureSpec, make_fixture

    fixture = fixture_path(args.workdir.parent, args.period_s)
    if not fixture.exists():
        fixture.parent.mkdir(parents=True, exist_ok=True)
        make_fixture(fixture, FixtureSpec(duration_s=args.period_s))
    res = run(args.n, args.periods, args.delay_s, fixture, args.period_s, args.workdir)
    (args.workdir / "minimal.json").write_text(json.dumps(res, indent=2))
    print(f"{'kind':<12} {'CPU ms/s':>9} {'× relay':>8} {'RSS MB':>7} {'× relay':>8} alive")
    for kind, r in res["kinds"].items():
        print(f"{kind:<12} {r['cpu_ms_per_s']:9.1f} {r['cpu_ratio']:8.2f} {r['rss_mb']:7.1f} {r['rss_ratio']:8.2f} {r['alive']}/{res['n']}")
    print(f"window {res['window_s']:g} s; {args.workdir / 'minimal.json'}")


if __name__ == "__main__":
    main()
