"""Soak: N concurrent streams through one echo STS for M minutes; nothing may be lost or leak.

`make soak` (`python -m bench.soak`, default 10 streams × 10 minutes). What it runs, all on
127.0.0.1 with ports it picks itself:

- one `livedub sts` process, told over HTTP to answer every stream with a random latency
  (uniform `--min-latency-ms`..`--max-latency-ms`, seeded) and to fail a random `--error-rate`
  (1 %) of each stream's fragments (random sequence numbers, random retryable error codes);
- `--streams` `livedub worker` processes, each reading the same M-minute sync fixture in real time
  (a file input paced like a live one) and writing a paced MP4 output.

What it checks (exit 1 if any check fails):
- every worker exits 0; for every stream, sent = processed + fallback (nothing in flight at the
  end), fallback = exactly the injected errors, dubbed segments = processed, and the STS saw the
  same (success/failed counts per stream);
- in-flight never exceeded `max_inflight` at any sample and the gauge ends at 0; the STS ends
  with no connection and no session;
- RSS is flat: per process, the median of the last quarter of the samples is within
  max(10 MB, 10 %) of the median of the second quarter (after warm-up);
- every output has the input's duration (± one frame) and every marker within 33 ms
  (`--no-analyze` skips this).

The report is printed and, with `--json PATH`, written as JSON. It never touches a process it did
not start (stopped by PID, also on Ctrl-C) and never sends traffic outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.sts.testing import free_port

LIVEDUB = [sys.executable, "-m", "livedub"]
ERROR_CODES = ("TIMEOUT", "MODEL_ERROR", "GPU_OOM", "QUEUE_FULL")
MAX_INFLIGHT = 3


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    ps: psutil.Process
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: float = 0.0

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.rss_mb.append(self.ps.memory_info().rss / 1e6)
            t = self.ps.cpu_times()
            self.cpu_s = float(t.user + t.system)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.log.close()


@dataclass
class Stream:
    stream_id: str
    metrics_port: int
    output: Path
    injected: list[int]
    worker: Child | None = None
    max_inflight_seen: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> Child:
    log = log_path.open("wb")
    popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Child(name, popen, log_path, log, psutil.Process(popen.pid))


def http_json(url: str, body: dict[str, Any] | None = None, timeout_s: float = 5.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def scrape(port: int) -> dict[str, float]:
    """Worker metrics of interest: fragments by status, in-flight, segments by source."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "worker_audio_fragments_total":
                out[s.labels["status"]] = s.value
            elif s.name == "worker_inflight_fragments":
                out["inflight"] = s.value
            elif s.name == "worker_segments_total":
                out["segments_" + s.labels["source"]] = s.value
    return out


def wait_healthy(url: str, child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode}; see {child.log_path}")
        with contextlib.suppress(OSError, ValueError):
            if http_json(f"{url}/health", timeout_s=0.5).get("status") == "ok":
                return
        time.sleep(0.1)  # polling a subprocess that starts
    raise RuntimeError(f"{child.name} not healthy after {timeout_s} s")


def final_summary(log_path: Path) -> dict[str, Any]:
    """The worker's last `worker exiting` line (JSON logs)."""
    found: dict[str, Any] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"worker exiting"' in line:
            with contextlib.suppress(ValueError):
                found = json.loads(line)
    return found


def flat(samples: list[float]) -> tuple[bool, float, float]:
    """(ok, median of the 2nd quarter, median of the last quarter)."""
    if len(samples) < 8:
        return True, samples[0] if samples else 0.0, samples[-1] if samples else 0.0
    q = len(samples) // 4
    early = statistics.median(samples[q : 2 * q])
    late = statistics.median(samples[-q:])
    return late - early <= max(10.0, 0.10 * early), early, late


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one linear script
    rng = random.Random(args.seed)
    own_dir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="livedub-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    duration_s = args.minutes * 60.0
    seg_s = args.segment_s
    n_fragments = math.floor(duration_s / seg_s)
    children: list[Child] = []
    failures: list[str] = []
    report: dict[str, Any] = {
        "streams": args.streams, "minutes": args.minutes, "segment_s": seg_s,
        "latency_ms": [args.min_latency_ms, args.max_latency_ms], "error_rate": args.error_rate,
        "seed": args.seed,
    }  # fmt: skip
    try:
        src = workdir / "input.mp4"
        t0 = time.monotonic()
        make_fixture(src, FixtureSpec(duration_s=duration_s, width=320, height=240, segment_s=seg_s))
        print(f"fixture: {duration_s:.0f} s in {time.monotonic() - t0:.1f} s", flush=True)
        env = {**os.environ, "LIVEDUB_LOG_FORMAT": "json"}
        sts_port = free_port()
        sts_url = f"http://127.0.0.1:{sts_port}"
        sts = spawn(
            "sts",
            [*LIVEDUB, "--log-level", "WARNING", "sts", "--host", "127.0.0.1", "--port", str(sts_port)],
            workdir / "sts.log",
            {**env, "STS_CLOSE_DELAY_S": "1"},
        )
        children.append(sts)
        wait_healthy(sts_url, sts, 20)

        streams: list[Stream] = []
        for k in range(args.streams):
            sid = f"soak-{k}"
            injected = sorted(i for i in range(n_fragments) if rng.random() < args.error_rate)
            streams.append(Stream(sid, free_port(), workdir / f"{sid}.mp4", injected))
            http_json(f"{sts_url}/control/latency", {
                "stream_id": sid, "min_delay_ms": args.min_latency_ms, "max_delay_ms": args.max_latency_ms,
                "seed": rng.randrange(1 << 30),
            })  # fmt: skip
            if injected:
                rules = [
                    {"trigger": "sequence_number", "value": seq, "error_code": rng.choice(ERROR_CODES)}
                    for seq in injected
                ]
                http_json(f"{sts_url}/control/error_simulation", {"stream_id": sid, "enabled": True, "rules": rules})
        report["injected_errors"] = sum(len(s.injected) for s in streams)

        for s in streams:
            s.worker = spawn(
                s.stream_id,
                [
                    *LIVEDUB, "worker", "--input", str(src), "--output", str(s.output),
                    "--stream-id", s.stream_id, "--sts-url", sts_url, "--metrics-port", str(s.metrics_port),
                    "--segment-s", str(seg_s), "--max-inflight", str(MAX_INFLIGHT),
                ],
                workdir / f"{s.stream_id}.log",
                env,
            )  # fmt: skip
            children.append(s.worker)
        started = time.monotonic()
        print(f"{args.streams} workers started; running {args.minutes:g} min", flush=True)

        deadline = started + duration_s + 120
        next_print = started + 60
        while any(s.worker and s.worker.popen.poll() is None for s in streams):
            if time.monotonic() > deadline:
                failures.append("workers did not finish in time")
                break
            for child in children:
                child.sample()
            for s in streams:
                if s.worker and s.worker.popen.poll() is None:
                    with contextlib.suppress(OSError, ValueError):
                        s.last_metrics = scrape(s.metrics_port)
                        s.max_inflight_seen = max(s.max_inflight_seen, s.last_metrics.get("inflight", 0.0))
            if time.monotonic() >= next_print:
                next_print += 60
                tot = {k: sum(s.last_metrics.get(k, 0.0) for s in streams) for k in ("sent", "processed", "fallback", "inflight")}
                rss = sum(c.rss_mb[-1] for c in children if c.rss_mb)
                print(f"  t={time.monotonic() - started:5.0f} s {tot} rss_total={rss:.0f} MB", flush=True)
            time.sleep(args.sample_s)  # sampling period of a long-running monitor
        report["wall_s"] = round(time.monotonic() - started, 1)

        # -- accounting ------------------------------------------------------------------------
        totals = {"sent": 0, "processed": 0, "fallback": 0, "dubbed": 0, "original": 0}
        per_stream = []
        for s in streams:
            assert s.worker is not None
            code = s.worker.popen.returncode
            summ = final_summary(s.worker.log_path)
            s.summary = summ
            sent, processed, fallback = (int(summ.get(k, -1)) for k in ("sent", "processed", "fallback"))
            output = summ.get("output", {}) or {}
            reasons = summ.get("reasons", {}) or {}
            injected_sent = len([i for i in s.injected if i < sent])
            row = {
                "stream_id": s.stream_id, "exit_code": code, "sent": sent, "processed": processed,
                "fallback": fallback, "injected": injected_sent, "reasons": reasons, "output": output,
                "max_inflight_seen": s.max_inflight_seen,
            }  # fmt: skip
            per_stream.append(row)
            if code != 0:
                failures.append(f"{s.stream_id}: exit code {code}")
            if sent < 0 or sent != processed + fallback:
                failures.append(f"{s.stream_id}: sent {sent} != processed {processed} + fallback {fallback}")
            if fallback != injected_sent:
                failures.append(f"{s.stream_id}: {fallback} fallbacks for {injected_sent} injected errors ({reasons})")
            if int(output.get("dubbed", 0)) != processed:
                failures.append(f"{s.stream_id}: {output.get('dubbed')} dubbed segments for {processed} processed")
            if s.max_inflight_seen > MAX_INFLIGHT:
                failures.append(f"{s.stream_id}: {s.max_inflight_seen} in flight (max {MAX_INFLIGHT})")
            with contextlib.suppress(OSError, ValueError):
                dbg = http_json(f"{sts_url}/debug/streams/{s.stream_id}")
                ok = sum(1 for p in dbg["processed_sent"] if p["status"] == "success")
                bad = sum(1 for p in dbg["processed_sent"] if p["status"] == "failed")
                row["sts_success"], row["sts_failed"] = ok, bad
                if (ok, bad) != (processed, fallback) or dbg["live_sessions"]:
                    failures.append(f"{s.stream_id}: STS saw {ok} success / {bad} failed, live {dbg['live_sessions']}")
            totals["sent"] += sent
            totals["processed"] += processed
            totals["fallback"] += fallback
            totals["dubbed"] += int(output.get("dubbed", 0))
            totals["original"] += int(output.get("original", 0))
        report["totals"] = totals
        report["per_stream"] = per_stream
        try:
            health = http_json(f"{sts_url}/health")
            report["sts_after"] = {"connections": health["connections"], "sessions": health["sessions"]}
            if health["connections"] or health["sessions"]:
                failures.append(f"STS still has {health['connections']} connections / {health['sessions']} sessions")
        except (OSError, ValueError) as exc:
            failures.append(f"STS health: {exc}")

        # -- memory ----------------------------------------------------------------------------
        memory = {}
        for child in children:
            ok, early, late = flat(child.rss_mb)
            memory[child.name] = {"early_mb": round(early, 1), "late_mb": round(late, 1),
                                  "peak_mb": round(max(child.rss_mb, default=0.0), 1),
                                  "cpu_s": round(child.cpu_s, 1), "flat": ok,
                                  "rss_mb_series": [round(x, 1) for x in child.rss_mb]}  # fmt: skip
            if not ok:
                failures.append(f"{child.name}: RSS grew {early:.0f} → {late:.0f} MB")
        report["memory"] = memory

        # -- outputs ---------------------------------------------------------------------------
        if args.analyze:
            ref = analyze(src)
            outputs = []
            for s in streams:
                res = analyze(s.output)
                outputs.append({"stream_id": s.stream_id, "duration_s": round(res.duration_s, 3),
                                "markers": len(res.markers), "max_abs_offset_ms": round(res.max_abs_offset_ms, 1)})  # fmt: skip
                if abs(res.duration_s - ref.duration_s) > 1 / 30 + 0.001:
                    failures.append(f"{s.stream_id}: output {res.duration_s:.3f} s, input {ref.duration_s:.3f} s")
                if len(res.markers) != len(ref.markers) or res.max_abs_offset_ms > 33:
                    failures.append(f"{s.stream_id}: {len(res.markers)} markers, max offset {res.max_abs_offset_ms:.1f} ms")
            report["input_duration_s"] = round(ref.duration_s, 3)
            report["outputs"] = outputs
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        for child in reversed(children):
            child.stop()
        if own_dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            report["workdir"] = str(workdir)

    report["failures"] = failures
    report["result"] = "pass" if not failures else "fail"
    shown = {k: v for k, v in report.items() if k not in ("per_stream", "memory")}
    shown["memory"] = {k: {m: x for m, x in v.items() if m != "rss_mb_series"} for k, v in report.get("memory", {}).items()}
    print(json.dumps(shown, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of every stream (default 10)")
    p.add_argument("--streams", type=int, default=10, help="concurrent streams (default 10)")
    p.add_argument("--segment-s", type=float, default=2.0, help="fragment length (default 2: more fragments)")
    p.add_argument("--min-latency-ms", type=int, default=50, help="STS latency lower bound (default 50)")
    p.add_argument("--max-latency-ms", type=int, default=3000, help="STS latency upper bound (default 3000)")
    p.add_argument("--error-rate", type=float, default=0.01, help="fraction of fragments failed (default 0.01)")
    p.add_argument("--seed", type=int, default=1, help="random seed (latencies, injected errors)")
    p.add_argument("--sample-s", type=float, default=5.0, help="metrics/RSS sampling period (default 5)")
    p.add_argument("--workdir", help="keep inputs, outputs and logs here (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--no-analyze", dest="analyze", action="store_false", help="skip decoding the outputs")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
