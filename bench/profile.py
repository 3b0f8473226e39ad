"""Where a worker's CPU goes: py-spy samples + per-thread CPU, over the measurement window.

`Profiler.start(procs, window_s)` attaches `py-spy record --nonblocking --threads` (the worker is
never paused) to each given process and notes every thread's CPU time; `finish()` waits for the
samples and turns them into per-thread CPU (ms per stream-second), the top functions, and a
breakdown by category (codec work, input, hand-off, STS messaging, ...), each scaled to the
process's measured CPU. It only attaches to processes the benchmark started.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import Proc

IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "Event.wait", "Queue.get", "select.select")

# (category, substrings of function names; the first category found anywhere in a stack wins)
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("fragment encode (transport codec)", ("encode_pcm",)),
    ("dubbed audio decode", ("decode_fragment", "decode_audio")),
    ("output AAC encode", ("StreamAudioEncoder.encode", "StreamAudioEncoder.flush")),
    ("output mux (libav write)", ("_MuxSink.",)),
    ("input → loop hand-off (wake-ups)", ("_Handoff.put", "_Handoff._notify", "call_soon_threadsafe")),
    ("input audio decode + resample", ("frame_to_pcm", "resample", "_Reader._read.<locals>")),
    ("input demux (libav read)", ("_Reader._read", "_Reader.run")),
    ("STS messaging (JSON, base64, websocket, models)", ("socketio", "engineio", "aiohttp", "json", "b64", "base64", "Record.", "AudioPayload.", "parse_event", "to_wire", "StsClient")),
    ("logging", ("logging", "Formatter", "StreamHandler")),
    ("metrics", ("prometheus", "MetricsServer", "WorkerMetrics")),
    ("media loop (Python: timeline, segmenter, output scheduling)", ("MediaPipeline", "Segmenter", "Timeline", "DriftCorrector", "OutputCore", "MediaOutput", "TimestampRepairer", "MediaInput", "_Handoff.get")),
    ("event loop / thread wake-ups", IDLE_LEAVES + ("_run_once", "_read_from_self", "Handle._run")),
]


def _thread_times(p: psutil.Process) -> dict[int, float]:
    try:
        return {t.id: t.user_time + t.system_time for t in p.threads()}
    except psutil.Error:
        return {}


class Profiler:
    def __init__(self, outdir: Path, rate_hz: int = 100) -> None:
        self.outdir = outdir
        self.rate_hz = rate_hz
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.runs: list[dict[str, Any]] = []
        self._popen: list[subprocess.Popen[bytes]] = []
        self.results: list[dict[str, Any]] = []
        self.error: str | None = None

    @property
    def available(self) -> bool:
        return Path(self.spy).exists()

    def start(self, procs: list[Proc], window_s: float) -> None:
        self.outdir.mkdir(parents=True, exist_ok=True)
        if not self.available:
            self.error = "py-spy not installed (pip install -e '.[dev]')"
            return
        for proc in procs:
            if proc.ps is None:
                continue
            raw = self.outdir / f"{proc.name}.raw"
            argv = [
                self.spy, "record", "--pid", str(proc.pid), "--duration", str(max(1, round(window_s))),
                "--rate", str(self.rate_hz), "--format", "raw", "--threads", "--nonblocking", "-o", str(raw),
            ]  # fmt: skip
            log = open(self.outdir / f"{proc.name}.py-spy.log", "wb")  # noqa: SIM115 - closed in finish
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            self._popen.append(popen)
            self.runs.append(
                {"proc": proc, "raw": raw, "t0": time.monotonic(), "threads0": _thread_times(proc.ps), "cpu0": proc.sample()}
            )

    def finish(self) -> None:
        for popen in self._popen:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=5)
        for run in self.runs:
            proc: Proc = run["proc"]
            assert proc.ps is not None
            threads1 = _thread_times(proc.ps)
            elapsed = time.monotonic() - run["t0"]
            cpu_ms_s = (proc.sample() - run["cpu0"]) / elapsed * 1000.0
            per_thread = {tid: (threads1[tid] - run["threads0"].get(tid, 0.0)) / elapsed * 1000.0 for tid in threads1}
            self.results.append(aggregate(run["raw"], proc.name, cpu_ms_s, per_thread))
        self._popen.clear()

    def abort(self) -> None:
        for popen in self._popen:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(timeout=5)
        self._popen.clear()


def aggregate(raw: Path, name: str, cpu_ms_s: float, per_thread_ms_s: dict[int, float]) -> dict[str, Any]:
    """py-spy raw (collapsed) samples → per-thread, per-function and per-category figures."""
    thread_names: dict[int, str] = {}
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    cat_c: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        lines = raw.read_text().splitlines()
    except OSError as exc:
        return {"name": name, "error": str(exc)}
    for line in lines:
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        head = frames[0]
        if head.startswith("thread (") and "): " in head:
            tid_s, tname = head[len("thread (") :].split("): ", 1)
            with contextlib.suppress(ValueError):
                thread_names[int(tid_s, 0)] = tname
            frames = frames[1:]
        funcs = [f.split(" (")[0] for f in frames]
        total += n
        if funcs:
            self_c[funcs[-1]] += n
        for f in set(funcs):
            incl_c[f] += n
        joined = ";".join(funcs)
        for cat, pats in CATEGORIES:
            if any(p in joined for p in pats):
                cat_c[cat] += n
                break
        else:
            cat_c["other Python"] += n
    scale = cpu_ms_s / total if total else 0.0
    threads = sorted(
        ({"tid": tid, "name": thread_names.get(tid, "?"), "ms_per_s": round(v, 2)} for tid, v in per_thread_ms_s.items() if v > 0.05),
        key=lambda t: -float(t["ms_per_s"]),  # type: ignore[arg-type]
    )
    return {
        "name": name,
        "cpu_ms_per_s": round(cpu_ms_s, 2),
        "samples": total,
        "threads": threads,
        "categories": [(c, round(v * scale, 2), round(v / total * 100, 1)) for c, v in cat_c.most_common()] if total else [],
        "top_self": [(f, round(v * scale, 2), round(v / total * 100, 1)) for f, v in self_c.most_common(15)] if total else [],
        "top_inclusive": [(f, round(v * scale, 2), round(v / total * 100, 1)) for f, v in incl_c.most_common(40)] if total else [],
    }
