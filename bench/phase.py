"""One benchmark phase: N live streams through workers (or the baseline relay), measured.

A phase starts a fresh embedded media server, one echo STS per worker group, one real-time ffmpeg
publisher per stream (looping the fixture), then the pipelines (workers or `ffmpeg -i IN -c:v copy
-c:a aac -f flv OUT`), a recorder per output and the latency probe on a subset of streams. Once
every output is live it measures CPU over a window of whole fixture periods (`window_s`; steady
state: start-up and imports excluded), then
scrapes the workers' final metrics, stops everything it started (by PID) and analyses the
recordings (A/V offset at every sync marker). It never touches processes or ports it did not
start or pick.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.probe import STREAMS_ENV as PROBE_STREAMS_ENV
from bench.procs import Proc, ProcSet, system_cpu_s
from livedub.media.record import record_argv
from livedub.orchestrator.media_server import MediaServer, Role
from livedub.orchestrator.settings import WORKER_ENV_INPUT_URL, WORKER_ENV_OUTPUT_URL
from livedub.sts.debug import processed_sent
from livedub.worker.memory import worker_python_argv

_log = logging.getLogger("bench")

PY = sys.executable
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
SYNC_TOLERANCE_MS = 33.0
DELAY_TOLERANCE_MS = 100.0
STS_UP_TIMEOUT_S = 90.0
NOT_FAILURES = {"short_tail"}  # a sub-second end tail is never dubbed, by design


@dataclass
class Group:
    """Streams of one kind inside a phase."""

    label: str  # stream ids are f"{label}-{i}"
    kind: str  # "worker" | "passthrough" | "baseline"
    n: int
    transport: str = "m4a"
    segment_s: float = 6.0
    delay_s: float = 7.0
    extra_args: tuple[str, ...] = ()  # more `livedub worker` flags for this group
    sts_args: tuple[str, ...] = ()  # more `livedub sts` flags for this group's STS (e.g. the dub backend)

    def ids(self) -> list[str]:
        return [f"{self.label}-{i}" for i in range(self.n)]


@dataclass
class Phase:
    name: str
    groups: list[Group]
    profile: bool = False


@dataclass
class Settings:
    """What every phase shares (from the command line)."""

    fixture: Path
    duration_s: float  # the fixture's length: the period of every stream's content (publishers loop it)
    workdir: Path
    window_segments: int = 4  # the window covers at least this many segments (see window_s)
    warmup_s: float = 1.0
    stagger_s: float = 0.25
    latency_streams: int = 2
    scrape_interval_s: float = 2.0
    analyze_max: int = 64
    baseline_up_s: float = 3.0
    up_timeout_s: float = 40.0
    input_protocol: str = "rtsp"  # how publishers publish and pipelines read live/<id>/in
    spread: bool = True  # stream starts spread over one segment period (see run_phase)
    relay_latency_ms: float = 250.0  # a relay keeps up while its end-to-end latency p95 stays within this (see _judge)


class PortRange:
    """Where `free_port` picks ports: 14000–19999 by default, or only inside [low, high]
    (`python -m bench.run --port-range`, on a machine where other jobs own other ranges). Never the
    kernel's ephemeral range (32768–60999): a port picked there by binding 0 can be taken by a
    client connection's local port before the server meant for it binds it. Below the tests'
    20000–31999 (livedub.sts.testing.TEST_PORT_BASE)."""

    low: int = 14_000
    high: int = 19_999
    _next: int = 14_000

    @classmethod
    def set(cls, low: int, high: int) -> None:
        cls.low, cls.high, cls._next = low, high, low


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    size = PortRange.high - PortRange.low + 1
    for _ in range(size):  # round robin: a port just handed out is not handed out again soon
        port = PortRange._next
        PortRange._next = PortRange.low + (port + 1 - PortRange.low) % size
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {PortRange.low}-{PortRange.high}")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 0.5),
        "p95": _pct(values, 0.95),
        "max": max(values) if values else None,
        "min": min(values) if values else None,
    }


def parse_metrics(text: str) -> dict[str, float]:
    """Worker metrics as {name[:label value]: value} (labels status/reason/source)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name
            for label in ("status", "reason", "source", "action"):
                if label in s.labels:
                    key += f":{s.labels[label]}"
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def scrape(port: int, timeout_s: float = 2.0) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return parse_metrics(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_ok(url: str) -> bool:
    """Does `url` answer 2xx within a second?"""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def wait_for(pred: Any, timeout_s: float, what: str) -> None:
    """Poll `pred` until it holds; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _sleep_until(t: float) -> None:
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


@dataclass
class _Stream:
    sid: str
    group: Group
    in_url: str
    out_url: str
    metrics_port: int | None = None
    pipeline: Proc | None = None
    started_s: float | None = None
    up_s: float | None = None
    recorder: Proc | None = None
    recorder_attempts: int = 0
    recording: Path | None = None
    delays_ms: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, output delay ms)
    at_window: dict[str, float] | None = None  # its /metrics when the measurement window opened
    final: dict[str, float] | None = None


class _Scraper(threading.Thread):
    """Scrapes every worker's /metrics periodically; notes when each output went live."""

    def __init__(self, streams: list[_Stream], procs: ProcSet, interval_s: float) -> None:
        super().__init__(daemon=True, name="bench-scraper")
        self.streams = [s for s in streams if s.metrics_port is not None]
        self.procs = procs
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def scrape_one(self, st: _Stream) -> dict[str, float] | None:
        assert st.metrics_port is not None
        m = scrape(st.metrics_port)
        if m is None:
            return None
        now = time.monotonic()
        with self.lock:
            segs = m.get("worker_segments_total:dubbed", 0.0) + m.get("worker_segments_total:original", 0.0)
            if segs >= 1 and st.up_s is None:
                st.up_s = now
            d = m.get("worker_output_delay_ms")
            configured = st.group.delay_s * 1000.0
            if d is not None and abs(d - configured) > 1e-6 and (not st.delays_ms or st.delays_ms[-1][1] != d):
                st.delays_ms.append((now, d))
        return m

    def run(self) -> None:
        while not self.stop.is_set():
            for st in self.streams:
                if self.stop.is_set():
                    break
                self.scrape_one(st)
            self.procs.sample_all()
            self.stop.wait(self.interval_s)


def _analyze_one(path: str) -> dict[str, Any]:
    from livedub.media.analyze import analyze

    try:
        a = analyze(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable recording is a result, not a crash
        return {"path": path, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "path": path,
        "duration_s": a.duration_s,
        "codecs": list(a.codecs),
        "offsets_ms": [m.offset_ms for m in a.markers],
        "max_abs_offset_ms": a.max_abs_offset_ms,
        "frame_counter_errors": a.frame_counter_errors,
    }


def _parse_ts(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def turnarounds_ms(log_path: Path) -> list[float]:
    """Per dubbed fragment: 'segment created' → 'fragment applied' (ms), from a JSON worker log."""
    created: dict[str, float] = {}
    out: list[float] = []
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        fid = doc.get("fragment_id")
        if not fid:
            continue
        msg = doc.get("msg")
        if msg == "segment created":
            created[fid] = _parse_ts(doc["ts"])
        elif msg == "fragment applied" and fid in created:
            out.append((_parse_ts(doc["ts"]) - created[fid]) * 1000.0)
    return out


def fixture_path(workdir: Path, duration_s: float) -> Path:
    """Where the benchmark keeps its `duration_s` 720p30 fixture (`livedub make-fixture`)."""
    return workdir / f"fixture-{duration_s:g}s.mp4"


def publisher_argv(fixture: Path, url: str) -> list[str]:
    """A real-time publisher of `fixture` to an rtsp:// (over TCP) or rtmp:// URL, looped (the
    window is whole periods: `window_s`)."""
    out_fmt = ["-f", "rtsp", "-rtsp_transport", "tcp"] if url.startswith("rtsp://") else ["-f", "flv"]
    return [FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", "-re", "-stream_loop", "-1",
            "-i", str(fixture), "-c", "copy", *out_fmt, url]  # fmt: skip


def relay_argv(in_url: str, out_url: str) -> list[str]:
    """The baseline relay: the ffmpeg CLI, which takes URLs only as arguments."""
    in_opts = ["-rtsp_transport", "tcp"] if in_url.startswith("rtsp://") else []
    return [FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", *in_opts, "-i", in_url,
            "-c:v", "copy", "-c:a", "aac", "-f", "flv", out_url]  # fmt: skip


def _pipeline_argv(st: _Stream, sts_url: str | None) -> list[str]:
    """The pipeline's command line. A worker gets its input and output URLs (they carry the media
    server's credentials) from the environment, as the orchestrator gives them: `_pipeline_env`.
    The baseline is the ffmpeg CLI, which takes URLs only as arguments."""
    g = st.group
    if g.kind == "baseline":
        return relay_argv(st.in_url, st.out_url)
    assert st.metrics_port is not None
    argv = [
        *worker_python_argv(), "--log-format", "json", "worker",
        "--stream-id", st.sid,
        "--sts-url", sts_url or "http://127.0.0.1:9", "--metrics-port", str(st.metrics_port),
        "--segment-s", f"{g.segment_s:g}", "--output-delay-s", f"{g.delay_s:g}",
        "--transport-format", g.transport,
    ]  # fmt: skip
    if g.kind == "passthrough":
        argv.append("--passthrough")
    return [*argv, *g.extra_args]


def _pipeline_env(st: _Stream) -> dict[str, str] | None:
    if st.group.kind == "baseline":
        return None
    return {**os.environ, WORKER_ENV_INPUT_URL: st.in_url, WORKER_ENV_OUTPUT_URL: st.out_url}


def _start_pipeline(st: _Stream, procs: ProcSet, sts_urls: dict[str, str]) -> None:
    st.pipeline = procs.spawn(
        st.group.kind if st.group.kind == "baseline" else "worker",
        st.group.label, f"{st.group.kind}-{st.sid}",
        _pipeline_argv(st, sts_urls.get(st.group.label)),
        env=_pipeline_env(st),
    )  # fmt: skip
    st.started_s = time.monotonic()


def _window_unit_s(groups: list[Group]) -> float:
    """The period of the groups' work: a whole number of every group's segment length (stream
    starts are spread over it; the window covers `window_segments` of it, see `window_s`)."""
    segs = [g.segment_s for g in groups if g.kind != "baseline"] or [6.0]
    if all(float(s).is_integer() for s in segs):
        return float(math.lcm(*(int(s) for s in segs)))
    return max(segs)


def window_s(groups: list[Group], cfg: Settings) -> float:
    """The measurement window: the fewest whole periods of the looped fixture that cover
    `cfg.window_segments` segments. Encoding cost follows the content (the fixture's AAC costs
    11-28 ms/s from one tone to the next), and a worker encodes what it read D seconds earlier
    while a relay encodes what it reads now: only over whole periods do both encode the same
    programme. The default fixture (24 s) is a whole number of 1, 2, 3, 4, 6, 8, 12 s segments."""
    want = cfg.window_segments * _window_unit_s(groups)
    return max(1, math.ceil(want / cfg.duration_s - 1e-9)) * cfg.duration_s


def run_phase(phase: Phase, cfg: Settings, profiler: Any | None = None) -> dict[str, Any]:
    """Run one phase; returns its measurements (see module docstring)."""
    t_phase = time.monotonic()
    pdir = cfg.workdir / phase.name
    if pdir.exists():
        shutil.rmtree(pdir)
    logdir = pdir / "logs"
    logdir.mkdir(parents=True)
    procs = ProcSet(logdir)
    rtsp, rtmp = free_port(), free_port()
    ms = MediaServer(
        rtsp_port=rtsp,
        rtmp_port=rtmp,
        streams=[sid for g in phase.groups for sid in g.ids()],
        workdir=pdir / "media-server",
    )
    streams: list[_Stream] = []
    for g in phase.groups:
        for sid in g.ids():
            # closed by default: the publisher's / workers' credentials (issue 17 #1)
            in_url = (
                ms.rtsp_url(f"live/{sid}/in", Role.PUBLISHER)
                if cfg.input_protocol == "rtsp"
                else ms.rtmp_url(f"live/{sid}/in", Role.PUBLISHER)
            )
            st = _Stream(
                sid=sid,
                group=g,
                in_url=in_url,
                out_url=ms.rtmp_url(f"live/{sid}/out", Role.WORKER),
            )
            if g.kind != "baseline":
                st.metrics_port = free_port()
            streams.append(st)
    result: dict[str, Any] = {
        "name": phase.name,
        "groups": [asdict(g) for g in phase.groups],
        "error": None,
        "loadavg_start": list(os.getloadavg()),
    }
    scraper = _Scraper(streams, procs, cfg.scrape_interval_s)
    me = psutil.Process()
    probe_out = pdir / "probe.json"
    try:
        ms.start()
        ms.wait_ready(15)
        for pid in ms.pids():
            procs.adopt("media-server", "infra", f"media-server-{pid}", pid)
        sts_urls: dict[str, str] = {}
        for g in phase.groups:
            if g.kind == "worker":
                port = free_port()
                procs.spawn(
                    "sts", g.label, f"sts-{g.label}",
                    [PY, "-m", "livedub", "--log-level", "WARNING", "sts", "--port", str(port), *g.sts_args],
                )  # fmt: skip
                sts_urls[g.label] = f"http://127.0.0.1:{port}"
        for url in sts_urls.values():  # the dub backend loads its engines before it serves
            wait_for(lambda u=url: http_ok(f"{u}/health"), STS_UP_TIMEOUT_S, f"STS {url}")
        # Latency probe on a few streams of each group (it reads the input and the output). It
        # starts first, so that its input readers attach as each stream is published, before the
        # pipeline: a reader joining a path later disturbs the readers already there (see
        # docs/performance.md, "RTSP relay").
        probe_streams: list[list[str]] = []
        for g in phase.groups:
            for st in [s for s in streams if s.group is g][: cfg.latency_streams]:
                probe_streams.append([st.sid, st.in_url, st.out_url])
        if probe_streams:  # the URLs carry credentials: in the environment, not in argv
            procs.spawn(
                "probe", "tools", "probe", [PY, "-m", "bench.probe", "--out", str(probe_out)],
                env={**os.environ, PROBE_STREAMS_ENV: json.dumps(probe_streams)},
            )  # fmt: skip
        # Independent streams: publisher i starts `slot` seconds after publisher i-1, and its
        # pipeline right after it is published. With `spread`, the starts cover one segment period,
        # so the streams' segment boundaries (and the CPU bursts at each) are spread out as for
        # real, unrelated broadcasts; without it every stream starts together (worst case: all
        # segments end, and are encoded, at the same moments).
        unit = _window_unit_s(phase.groups)
        slot = max(cfg.stagger_s, unit / len(streams)) if cfg.spread else 0.0
        t_pub0 = time.monotonic()
        for i, st in enumerate(streams):
            _sleep_until(t_pub0 + i * slot)
            procs.spawn(
                "publisher", st.group.label, f"pub-{st.sid}", publisher_argv(cfg.fixture, st.in_url)
            )
            if not cfg.spread:
                continue
            wait_for(lambda sid=st.sid: f"live/{sid}/in" in ms.ready_paths, 30, f"publisher of {st.sid}")
            _start_pipeline(st, procs, sts_urls)
        wait_for(lambda: all(f"live/{s.sid}/in" in ms.ready_paths for s in streams), 30, "every publisher")
        if not cfg.spread:
            for i, st in enumerate(streams):
                if i and cfg.stagger_s > 0:
                    time.sleep(cfg.stagger_s)
                _start_pipeline(st, procs, sts_urls)
        scraper.start()

        # Recorders, started once each output is live; wait until all are.
        up_deadline = time.monotonic() + max(g.delay_s for g in phase.groups) + cfg.up_timeout_s
        while True:
            now = time.monotonic()
            for st in streams:
                if st.group.kind == "baseline" and st.up_s is None and st.started_s is not None:
                    if now - st.started_s >= cfg.baseline_up_s:
                        st.up_s = st.started_s + cfg.baseline_up_s
                _tend_recorder(st, procs, pdir)
            if all(s.up_s is not None for s in streams) or now > up_deadline:
                break
            time.sleep(0.2)
        missing = [s.sid for s in streams if s.up_s is None]
        if missing:
            raise RuntimeError(f"outputs never went live: {', '.join(missing[:8])}")
        t_a = max(s.up_s for s in streams if s.up_s is not None) + cfg.warmup_s
        win_s = window_s(phase.groups, cfg)
        while time.monotonic() < t_a:
            for st in streams:
                _tend_recorder(st, procs, pdir)
            time.sleep(0.2)
        for st in streams:  # the counters at the window's start: what happened before is start-up
            if st.metrics_port is not None:
                st.at_window = scraper.scrape_one(st)
        t_a = time.monotonic()
        t_b = t_a + win_s
        snap_a = procs.snapshot()
        sys_a = system_cpu_s()
        me_a = sum(me.cpu_times()[:2])
        if profiler is not None:
            profiler.start([s.pipeline for s in streams if s.pipeline is not None and s.group.kind != "baseline"], win_s)
        while time.monotonic() < t_b:
            for st in streams:
                _tend_recorder(st, procs, pdir)
            time.sleep(0.2)
        snap_b = procs.snapshot()
        sys_b = system_cpu_s()
        me_b = sum(me.cpu_times()[:2])
        t_b_real = time.monotonic()
        # the STS's answers while the streams ran (the drain at stop cuts a partial last segment)
        live_done = {st.sid: sts_processed(sts_urls[st.group.label], st.sid) for st in streams if st.group.label in sts_urls}
        rss = {p.pid: p.rss() for p in procs.items}
        alive = {st.sid: bool(st.pipeline and st.pipeline.alive()) for st in streams}
        scraper.stop.set()
        scraper.join(timeout=10)
        for st in streams:
            if st.metrics_port is not None:
                st.final = scraper.scrape_one(st)
        if profiler is not None:
            profiler.finish()
        result["window"] = {
            "start_after_publish_s": round(t_a - t_pub0, 2),
            "length_s": round(win_s, 3),
            "periods": round(win_s / cfg.duration_s),
            "unit_s": unit,
            "measured_s": round(t_b_real - t_a, 3),
        }
        result["machine"] = {
            "busy_cores": (sys_b - sys_a) / win_s,
            "ours_cores": (sum(snap_b.values()) - sum(snap_a.get(p, 0.0) for p in snap_b) + (me_b - me_a)) / win_s,
        }
        result["machine"]["other_cores"] = result["machine"]["busy_cores"] - result["machine"]["ours_cores"]
        n_total = len(streams)
        tools: dict[str, float] = {}
        for role in ("publisher", "recorder", "probe", "media-server"):
            sel = procs.select(role=role)
            tools[role] = ProcSet.cpu_between(sel, snap_a, snap_b) / win_s / n_total * 1000.0
        tools["bench"] = (me_b - me_a) / win_s / n_total * 1000.0
        result["tools_ms_per_stream_s"] = tools
        result["media_server_rss_mb"] = sum(rss.get(p.pid, 0) for p in procs.select(role="media-server")) / 2**20
        # Stop in dependency order: probe (writes its result), pipelines, recorders, the rest.
        procs.stop(procs.select(role="probe"), timeout_s=10)
        procs.stop(procs.select(role="worker") + procs.select(role="baseline"), timeout_s=15)
        processed = {st.sid: sts_processed(sts_urls[st.group.label], st.sid) for st in streams if st.group.label in sts_urls}
        procs.stop(procs.select(role="recorder"), sig=signal.SIGINT, timeout_s=10)
        procs.stop(procs.select(role="publisher") + procs.select(role="sts"), timeout_s=10)
        groups_out = []
        probe = _read_json(probe_out)
        for g in phase.groups:
            gs = [s for s in streams if s.group is g]
            groups_out.append(
                _group_result(g, gs, procs, snap_a, snap_b, (t_a, t_b), rss, alive, probe, live_done, processed)
            )
        result["groups_result"] = groups_out
    except Exception as exc:  # noqa: BLE001 - a failed phase is reported, the run goes on
        _log.exception("phase %s failed", phase.name)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        scraper.stop.set()
        if profiler is not None:
            profiler.abort()
        procs.stop_all()
        ms.stop()
    # Analysis after everything stopped (it decodes video: it would disturb the measurement).
    if result.get("groups_result"):
        recs = [s.recording for s in streams if s.recording is not None and s.recording.exists()]
        analysed = _analyze_all([str(r) for r in recs[: cfg.analyze_max * len(phase.groups)]])
        for gr, g in zip(result["groups_result"], phase.groups, strict=True):
            gpaths = {str(s.recording) for s in streams if s.group is g and s.recording is not None}
            items = [a for a in analysed if a["path"] in gpaths]
            offsets = [o for a in items for o in a.get("offsets_ms", [])]
            gr["sync"] = {
                "recordings": len(gpaths),
                "analysed": len(items),
                "errors": [a["error"] for a in items if "error" in a][:3],
                "without_markers": sum(1 for a in items if "error" not in a and not a["offsets_ms"]),
                "markers": len(offsets),
                "max_abs_offset_ms": max((abs(o) for o in offsets), default=None),
                "recorded_s": sum(a.get("duration_s", 0.0) for a in items),
            }
            _judge(gr, g, cfg.relay_latency_ms if cfg.latency_streams > 0 else None)
    result["wall_s"] = round(time.monotonic() - t_phase, 1)
    result["loadavg_end"] = list(os.getloadavg())
    return result


def sts_processed(sts_url: str, sid: str) -> list[dict[str, Any]]:
    """The STS's debug history of `fragment:processed` sent for a stream; [] when not available."""
    return processed_sent(sts_url, sid, timeout_s=5) or []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return {}


def _tend_recorder(st: _Stream, procs: ProcSet, pdir: Path) -> None:
    """Start the stream's recorder once its output is live; retry while it is refused."""
    if st.up_s is None or st.recorder_attempts >= 60:
        return
    rec = st.recorder
    if rec is not None:
        if rec.alive():
            return
        if st.recording is not None and st.recording.exists() and st.recording.stat().st_size > 4096:
            return  # it recorded, then ended
        if time.monotonic() - rec.started_monotonic < 0.5:
            return
    st.recorder_attempts += 1
    st.recording = pdir / f"{st.sid}.mkv"
    argv = record_argv(st.out_url, st.recording)
    st.recorder = procs.spawn("recorder", st.group.label, f"rec-{st.sid}-{st.recorder_attempts}", argv)


def _analyze_all(paths: list[str]) -> list[dict[str, Any]]:
    if not paths:
        return []
    workers = max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_analyze_one, paths))


def _group_result(
    g: Group,
    gs: list[_Stream],
    procs: ProcSet,
    snap_a: dict[int, float],
    snap_b: dict[int, float],
    window: tuple[float, float],
    rss: dict[int, int],
    alive: dict[str, bool],
    probe: dict[str, Any],
    live_done: dict[str, list[dict[str, Any]]],
    processed: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    n = len(gs)
    window_s = window[1] - window[0]
    role = "baseline" if g.kind == "baseline" else "worker"
    pipes = procs.select(role=role, group=g.label)
    sts = procs.select(role="sts", group=g.label)
    pipe_cpu = ProcSet.cpu_between(pipes, snap_a, snap_b)
    sts_cpu = ProcSet.cpu_between(sts, snap_a, snap_b)
    stream_s = n * window_s
    out: dict[str, Any] = {
        "label": g.label,
        "kind": g.kind,
        "n": n,
        "transport": g.transport if g.kind == "worker" else None,
        "segment_s": g.segment_s,
        "delay_s": g.delay_s if g.kind != "baseline" else None,
        "cpu_ms_per_stream_s": (pipe_cpu + sts_cpu) / stream_s * 1000.0,
        "process_ms_per_stream_s": pipe_cpu / stream_s * 1000.0,
        "sts_ms_per_stream_s": sts_cpu / stream_s * 1000.0,
        "per_process_ms_per_s": sorted(
            round((snap_b.get(p.pid, 0.0) - snap_a.get(p.pid, 0.0)) / window_s * 1000.0, 1) for p in pipes
        ),
        "rss_mb_per_stream": (sum(rss.get(p.pid, 0) for p in pipes) / max(1, len(pipes))) / 2**20,
        # of which library (file) pages: what bench/cold_libs.py keeps from depending on the cache
        "rss_file_mb_per_stream": (sum(p.last_rss_file for p in pipes) / max(1, len(pipes))) / 2**20,
        "sts_rss_mb": sum(rss.get(p.pid, 0) for p in sts) / 2**20,
        "alive_at_end": sum(1 for s in gs if alive.get(s.sid)),
    }
    if g.kind != "baseline":
        finals = [s.final or {} for s in gs]
        starts = [s.at_window or {} for s in gs]

        def total(key: str, docs: list[dict[str, float]] = finals) -> int:
            return int(sum(d.get(key, 0.0) for d in docs))

        def reasons(docs: list[dict[str, float]]) -> dict[str, int]:
            out: dict[str, int] = {}
            for d in docs:
                for k, v in d.items():
                    if k.startswith("worker_fallback_total:") and v:
                        reason = k.split(":", 1)[1]
                        out[reason] = out.get(reason, 0) + int(v)
            return out

        # Judged over the window (the steady state whose CPU is measured); what fell back while
        # every process of the phase was still starting is reported beside it, not hidden.
        at_end, at_start = reasons(finals), reasons(starts)
        out["segments"] = {
            "dubbed": total("worker_segments_total:dubbed"),
            "original": total("worker_segments_total:original"),
            "fallback_reasons": {k: v - at_start.get(k, 0) for k, v in at_end.items() if v - at_start.get(k, 0)},
            "startup_fallback_reasons": at_start,
            "fragments_sent": total("worker_audio_fragments_total:sent"),
            "fragments_processed": total("worker_audio_fragments_total:processed"),
            "late_results": total("worker_late_results_total"),
            "scraped": sum(1 for s in gs if s.final),
            "scraped_at_window": sum(1 for s in gs if s.at_window),
        }
        t_a, t_b = window
        out["delay_ms"] = _dist([d for s in gs for t, d in s.delays_ms if t_a <= t <= t_b])
        out["startup_delay_ms"] = _dist([d for s in gs for t, d in s.delays_ms if t < t_a])
        ta: list[float] = []
        for p in pipes:
            ta += turnarounds_ms(procs.logdir / f"{p.name}.log")
        out["turnaround_ms"] = _dist(ta)
        # STS processing time of every fragment answered while the streams ran; the fragments
        # answered after the workers were told to stop (drain: a partial last segment) apart
        live = [d for s in gs for d in live_done.get(s.sid, [])]
        seen = {d.get("fragment_id") for d in live}
        drain = [d for s in gs for d in processed.get(s.sid, []) if d.get("fragment_id") not in seen]
        out["sts_processing_ms"] = _processing(live)
        out["sts_status"] = _statuses(live)
        out["sts_with_transcript"] = sum(1 for d in live if d.get("transcript"))
        out["sts_drain"] = {"processing_ms": _processing(drain), "status": _statuses(drain)}
    lat = [v for s in gs for v in (probe.get(s.sid, {}).get("latency_ms") or [])]
    out["e2e_latency_ms"] = _dist(lat)
    out["e2e_streams"] = sum(1 for s in gs if probe.get(s.sid, {}).get("latency_ms"))
    lags = [v for s in gs if (v := probe.get(s.sid, {}).get("in_open_lag_ms")) is not None]
    out["input_open_lag_ms"] = _dist(lags)
    return out


def _processing(done: list[dict[str, Any]]) -> dict[str, Any]:
    return _dist([float(d["processing_time_ms"]) for d in done if d.get("processing_time_ms") is not None])


def _statuses(done: list[dict[str, Any]]) -> dict[str, int]:
    return {st: sum(1 for d in done if d.get("status") == st) for st in ("success", "partial", "failed")}


def output_tick_ms(g: Group) -> float:
    """The output tick of `g`'s workers (ms), as they compute it: their settings from the group's
    flags (then the environment they inherit, then the defaults), `effective_output_tick_s`."""
    from livedub.settings_cli import add_settings_flags, settings_from_args
    from livedub.worker.config import WorkerSettings

    parser = argparse.ArgumentParser(add_help=False)
    add_settings_flags(parser, WorkerSettings)
    flags = ["--segment-s", f"{g.segment_s:g}", "--output-delay-s", f"{g.delay_s:g}", *g.extra_args]
    args, _ = parser.parse_known_args(flags)
    return 1000.0 * settings_from_args(WorkerSettings, args).media.effective_output_tick_s


def _judge(gr: dict[str, Any], g: Group, relay_latency_ms: float | None) -> None:
    """'Keeps up' (issue 7): every process alive to the end, A/V markers within 33 ms, and
    - a worker: every fragment of the measurement window dubbed (what fell back before it, while
      the phase's processes were all still starting, is reported as start-up, not judged), its
      output delay p95 over the window at most 100 ms after D and at most one output tick
      (`output_tick_ms`) + 100 ms before it;
    - a relay (baseline): its end-to-end latency p95 (the probe, input → output) within
      `relay_latency_ms`. A relay has no D: one that cannot keep up does not fall back, it falls
      behind, and its latency grows for as long as it runs. The default 250 ms is its unloaded p95
      (≈ 90 ms here) plus the 100 ms a worker may lag behind D, rounded up; None (no latency
      probe: `--latency-streams 0`) judges a relay by the first two alone."""
    why: list[str] = []
    if gr["alive_at_end"] < gr["n"]:
        why.append(f"{gr['n'] - gr['alive_at_end']} process(es) died")
    sync = gr.get("sync", {})
    if not sync.get("markers"):
        why.append("no sync marker analysed")
    elif (sync.get("max_abs_offset_ms") or 0.0) > SYNC_TOLERANCE_MS:
        why.append(f"marker offset {sync['max_abs_offset_ms']:.1f} ms > {SYNC_TOLERANCE_MS:.0f} ms")
    if sync.get("without_markers"):
        why.append(f"{sync['without_markers']} recording(s) without markers")
    if g.kind == "baseline":
        e2e = (gr.get("e2e_latency_ms") or {}).get("p95")
        if relay_latency_ms is not None and e2e is None:
            why.append("no end-to-end latency measured")
        elif relay_latency_ms is not None and e2e is not None and e2e > relay_latency_ms:
            why.append(f"end-to-end latency p95 {e2e:.0f} ms > {relay_latency_ms:.0f} ms")
    else:
        seg = gr["segments"]
        expected_reason = {"passthrough"} if g.kind == "passthrough" else set()
        bad = {k: v for k, v in seg["fallback_reasons"].items() if k not in NOT_FAILURES | expected_reason}
        if bad:
            why.append("fallbacks " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items())))
        if g.kind == "worker" and seg["dubbed"] == 0:
            why.append("nothing dubbed")
        if seg["scraped"] < gr["n"] or seg.get("scraped_at_window", gr["n"]) < gr["n"]:
            why.append(f"{gr['n'] - min(seg['scraped'], seg.get('scraped_at_window', gr['n']))} worker(s) did not answer /metrics")
        p95 = gr["delay_ms"]["p95"]
        d_ms = g.delay_s * 1000.0
        # Late by more than the tolerance: not keeping up. Early: a packet goes out up to one
        # output tick before it is due (by design), so the early side allows a tick more.
        if p95 is None:
            why.append("no output delay measured")
        elif p95 - d_ms > DELAY_TOLERANCE_MS or d_ms - p95 > DELAY_TOLERANCE_MS + output_tick_ms(g):
            why.append(f"output delay p95 {p95:.0f} ms vs D {d_ms:.0f} ms")
    gr["keeps_up"] = not why
    gr["why_not"] = why
