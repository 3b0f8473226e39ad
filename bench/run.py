"""`make bench`: how many live streams this machine dubs, at what CPU and latency, vs a baseline.

Phases (each with its own media server, echo STS, real-time ffmpeg publishers and recorders):
1. transports — a few streams each through workers with m4a, flac and wav transport and in
   passthrough (no STS), side by side, each group with its own echo STS;
2. series — N = 1, 2, 4, … concurrent streams through flac workers + echo STS, then the same N
   streams through the baseline relay `ffmpeg -i IN -c:v copy -c:a aac -f flv OUT`; stops after
   the first N at which the workers do not keep up (a relay keeps up while its end-to-end latency
   p95 stays within `--relay-latency-ms`);
3. low latency — short segments and D = segment + a few hundred ms;
4. profile — py-spy on one worker of each kind;
5. dub — N streams (default 2) of the spoken-English demo programme through workers and ONE
   real `livedub sts --backend dub` (faster-whisper → Apertium → espeak-ng → sox → mix), with
   D = segment + 2.5 s and the fragment timeout 2.5 s: per-fragment processing time (the STS's
   own `processing_time_ms` of every fragment), CPU per stream-second, fallbacks, A/V sync;
6. capacity — for workers and for relays, taking turns: past the series' last N that kept up by
   doubling until one does not (at most `--capacity-max-n`), then by bisection, down to an eighth
   of the most that kept up; the report states both and their ratio (issue 16).
Every figure is CPU-seconds per stream-second over a window of whole periods of the looped
fixture in steady state (start-up excluded; `bench.phase.window_s`). Results: var/bench/results.json; report: docs/performance.md (+ PNG plot).
A time budget (`--budget-s`) skips the optional phases that would not fit.
`make bench-quick` = `--only transports`: phase 1 alone (its relay group is the baseline), the
ratios and the issue-16 targets printed as a table; results in var/bench, docs/ untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import psutil

from bench.floors import measure as measure_floors
from bench.phase import FFMPEG, Group, Phase, PortRange, Settings, fixture_path, run_phase, window_s
from bench.procs import system_cpu_s
from bench.profile import Profiler
from bench.report import quick_table, write_report

_log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parent.parent


PHASES = ("transports", "series", "low-latency", "dub", "profile")
"""Phase families `--only` chooses from (series includes the capacity bisection)."""
DUB_PHASE = "dub"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _phases(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in PHASES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {', '.join(bad)}; choose from {', '.join(PHASES)}")
    return names


def _port_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in text.split("-", 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 41000-41999") from exc
    if not 1024 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError("expected 1024 <= LOW <= HIGH <= 65535")
    return low, high


def dub_worker_args(added_s: float) -> tuple[str, ...]:
    """Worker flags of the dub group: the fragment timeout = D − segment, the demo's pair."""
    return ("--fragment-timeout-s", f"{added_s:g}", "--source-language", "en", "--target-language", "es")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--series", type=_ints, default=[1, 2, 4, 8, 16, 32], help="N values (default 1,2,4,8,16,32)")
    p.add_argument("--no-stop", action="store_true", help="run the whole series even after an N that does not keep up")
    p.add_argument("--capacity-steps", type=int, default=4, help="capacity search steps after the series, each one N for workers and one for relays (default 4; 0: off)")
    p.add_argument("--capacity-max-n", type=int, default=64, help="most streams the capacity search tries (default 64)")
    p.add_argument("--relay-latency-ms", type=float, default=250.0, help="a relay keeps up while its end-to-end latency p95 stays within this (default 250: its unloaded ≈ 90 ms + the 100 ms a worker may lag behind D)")
    p.add_argument("--duration-s", type=float, default=24.0, help="fixture length: the period of every stream's content, which the publishers loop; the window is whole periods (default 24)")
    p.add_argument("--segment-s", type=float, default=6.0, help="worker segment length (default 6)")
    p.add_argument("--added-delay-s", type=float, default=1.0, help="D = segment + this (default 1.0)")
    p.add_argument("--transport", default="flac", choices=("m4a", "flac", "wav"), help="transport of the series (default flac, the worker's default)")
    p.add_argument("--window-segments", type=int, default=4, help="the measurement window covers at least this many segments, in whole fixture periods (default 4)")
    p.add_argument("--stagger-s", type=float, default=0.25, help="least delay between two stream starts (default 0.25)")
    p.add_argument("--aligned", action="store_true", help="start every publisher at once (segment boundaries of all streams coincide: worst case) instead of spreading the starts over one segment")
    p.add_argument("--latency-streams", type=int, default=2, help="streams per group read by the latency probe (default 2)")
    p.add_argument("--compare-n", type=int, default=2, help="streams per transport in the transports phase (default 2; 0: skip)")
    p.add_argument("--lowlat-n", type=int, default=2, help="streams in the low-latency phase (default 2; 0: skip)")
    p.add_argument("--lowlat-segment-s", type=float, default=1.0, help="segment of the low-latency phase (default 1)")
    p.add_argument("--lowlat-added-s", type=float, default=0.45, help="D − segment in the low-latency phase (default 0.45)")
    p.add_argument("--lowlat-margin-s", type=float, default=0.1, help="worker --deadline-margin-s in the low-latency phase (default 0.1)")
    p.add_argument("--lowlat-transport", choices=("flac", "m4a", "wav"), default="flac", help="transport of the low-latency phase's short-segment group (default flac, the worker's)")
    p.add_argument("--lowlat-short-only", action="store_true", help="the low-latency phase runs only its short-segment group (issue 16: `--only low-latency --lowlat-short-only --lowlat-n 4 --lowlat-added-s 0.5 --lowlat-transport flac --window-segments 24`)")
    p.add_argument("--input-protocol", choices=("rtsp", "rtmp"), default="rtsp", help="publish and read live/<id>/in over RTSP (default; the GStreamer relay) or RTMP (nginx)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile phase")
    p.add_argument("--dub-n", type=int, default=2, help="streams in the dub phase (default 2; 0: skip)")
    p.add_argument("--dub-duration-s", type=float, default=36.0, help="length of the spoken programme of the dub phase (default 36)")
    p.add_argument("--dub-added-s", type=float, default=2.5, help="dub phase: D = segment + this, and the worker's fragment timeout (default 2.5)")
    p.add_argument("--only", type=_phases, default=None, metavar="PHASE[,PHASE]", help=f"run only these phases ({', '.join(PHASES)}); the report then goes to WORKDIR/performance.md unless --doc is given (a partial run never rewrites docs/performance.md)")
    p.add_argument("--port-range", type=_port_range, default=None, metavar="LOW-HIGH", help="pick every port (media server, STS, worker metrics) in this range (default: 14000-19999, below the ephemeral range)")
    p.add_argument("--quiet-below", type=float, default=0.3, help="before a phase, wait until other programs use fewer cores than this (default 0.3)")
    p.add_argument("--quiet-wait-s", type=float, default=45.0, help="longest wait for that, per phase (default 45; 0: never wait)")
    p.add_argument("--quiet-total-s", type=float, default=180.0, help="longest total wait for that over the run (default 180)")
    p.add_argument("--retry-other-cores", type=float, default=0.4, help="run a failed series phase again once if other programs used more cores than this during it (default 0.4)")
    p.add_argument("--budget-s", type=float, default=1500.0, help="skip phases that would end after this many seconds (default 1500: `make bench` ≤ 26 min with set-up)")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench", help="default var/bench")
    p.add_argument("--doc", type=Path, default=None, help="report (default docs/performance.md; with --only WORKDIR/performance.md)")
    p.add_argument("--plot", type=Path, default=None, help="plot (default docs/performance.png; with --only WORKDIR/performance.png)")
    p.add_argument("--report-only", type=Path, default=None, metavar="RESULTS.json", help="only rewrite the report from saved results")
    return p


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["cores"] = sum(1 for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor"))
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["ram_gb"] = round(mem_kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["os"] = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        ).get("PRETTY_NAME", "").strip('"')
    except OSError:
        pass
    info["pyav"] = av.__version__
    info["pyav_ffmpeg"] = ".".join(str(x) for x in av.library_versions.get("libavcodec", ()))
    for name, argv in (("ffmpeg_cli", [FFMPEG, "-version"]), ("nginx", ["nginx", "-v"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            info[name] = ((r.stdout or r.stderr).splitlines() or [""])[0]
        except OSError:
            info[name] = None
    return info


def _estimate_s(phase: Phase, cfg: Settings) -> float:
    n = sum(g.n for g in phase.groups)
    has_worker = any(g.kind != "baseline" for g in phase.groups)
    delay = max((g.delay_s for g in phase.groups if g.kind != "baseline"), default=0.0)
    unit = max(g.segment_s for g in phase.groups)
    spread = max(n * cfg.stagger_s, unit if cfg.spread else 0.0)
    live = spread + (delay + 4.0 if has_worker else cfg.baseline_up_s) + cfg.warmup_s
    return 8.0 + live + window_s(phase.groups, cfg) + 6.0 + 0.5 * n


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.results: dict[str, Any] = {"phases": [], "skipped": []}
        self.pending_quiet: dict[str, float] | None = None
        self.waited_total_s = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def wait_quiet(self) -> tuple[float, float]:
        """Wait (bounded) until other programs use less than `--quiet-below` cores: this machine
        is shared, and a phase measured while something else saturates it says little.
        Returns (seconds waited, other load in cores at the last check)."""
        t0 = time.monotonic()
        me = psutil.Process()
        other = 0.0
        while True:
            s0, m0, w0 = system_cpu_s(), sum(me.cpu_times()[:2]), time.monotonic()
            time.sleep(2.0)
            dt = time.monotonic() - w0
            other = (system_cpu_s() - s0 - (sum(me.cpu_times()[:2]) - m0)) / dt
            waited = time.monotonic() - t0
            if (
                other < self.args.quiet_below
                or waited >= self.args.quiet_wait_s
                or self.waited_total_s + waited >= self.args.quiet_total_s
            ):
                break
            if waited < 3.0:
                _out(f"          waiting for other programs to quieten down ({other:.2f} cores busy) ...")
        self.waited_total_s += waited
        return waited, other

    def fits(self, phase: Phase, cfg: Settings) -> bool:
        if self.args.quiet_wait_s > 0:
            waited, other = self.wait_quiet()
            self.pending_quiet = {"waited_s": round(waited, 1), "other_cores_before": round(other, 2)}
        est = _estimate_s(phase, cfg)
        if self.elapsed() + est > self.args.budget_s:
            _log.warning("skipping phase %s: %.0f s elapsed + ~%.0f s > budget %.0f s", phase.name, self.elapsed(), est, self.args.budget_s)
            self.results["skipped"].append({"phase": phase.name, "estimate_s": round(est), "elapsed_s": round(self.elapsed())})
            return False
        return True

    def run(self, phase: Phase, cfg: Settings, profiler: Profiler | None = None) -> dict[str, Any]:
        n = sum(g.n for g in phase.groups)
        _out(f"[{self.elapsed():5.0f} s] phase {phase.name}: {n} stream(s) " + ", ".join(f"{g.label}×{g.n}" for g in phase.groups))
        res = run_phase(phase, cfg, profiler)
        res["quiet"] = self.pending_quiet
        self.pending_quiet = None
        if profiler is not None:
            res["profile"] = profiler.results
            res["profile_error"] = profiler.error
        self.results["phases"].append(res)
        self.save()
        for g in res.get("groups_result", []):
            _out(
                f"          {g['label']:<12} cpu {g['cpu_ms_per_stream_s']:6.1f} ms/s per stream"
                + (f" | segments dubbed {g['segments']['dubbed']} original {g['segments']['original']}" if "segments" in g else "")
                + (f" | delay p95 {g['delay_ms']['p95']:.0f} ms" if g.get("delay_ms", {}).get("p95") is not None else "")
                + (
                    " | start-up fallbacks " + ", ".join(f"{k}={v}" for k, v in sorted(su.items()))
                    if (su := (g.get("segments") or {}).get("startup_fallback_reasons"))
                    else ""
                )
                + (f" | e2e p95 {g['e2e_latency_ms']['p95']:.0f} ms" if g.get("e2e_latency_ms", {}).get("p95") is not None else "")
                + f" | sync max {g.get('sync', {}).get('max_abs_offset_ms') or 0:.1f} ms"
                + f" | {'keeps up' if g.get('keeps_up') else 'NOT keeping up: ' + '; '.join(g.get('why_not', []))}"
            )
        if res.get("error"):
            _out(f"          phase error: {res['error']}")
        m = res.get("machine")
        if m:
            _out(f"          machine busy {m['busy_cores']:.2f} of 2 cores (ours {m['ours_cores']:.2f}, other {m['other_cores']:.2f}); phase {res['wall_s']:.0f} s")
        return res

    def save(self) -> None:
        path = self.args.workdir / "results.json"
        path.write_text(json.dumps(self.results, indent=1, default=str))


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_dub(runner: Runner, cfg: Settings, args: argparse.Namespace) -> None:
    """The dub phase: N streams of the spoken programme through one dub STS (module docstring)."""
    from livedub.media.fixture import FixtureSpec, make_fixture
    from livedub.orchestrator.demo import spoken_track

    spec = FixtureSpec(duration_s=args.dub_duration_s, segment_s=args.segment_s)
    fixture = args.workdir / f"fixture-speech-{args.dub_duration_s:g}s.mp4"
    if not fixture.exists():
        _out(f"generating the {args.dub_duration_s:g} s spoken-English programme ...")
        make_fixture(fixture, spec, voice=spoken_track(spec))
    seg = args.segment_s
    group = Group(
        DUB_PHASE, "worker", args.dub_n, "m4a", seg, seg + args.dub_added_s,
        dub_worker_args(args.dub_added_s), ("--backend", "dub"),
    )  # fmt: skip
    # no latency probe: it would take CPU from the STS, and the worker's metrics say the delay
    dub_cfg = dataclasses.replace(cfg, fixture=fixture, duration_s=args.dub_duration_s, latency_streams=0)
    phase = Phase(DUB_PHASE, [group])
    if runner.fits(phase, dub_cfg):
        res = runner.run(phase, dub_cfg)
        for g in res.get("groups_result", []):
            pm = g.get("sts_processing_ms") or {}
            _out(
                f"          dub processing p50/p95/max {pm.get('p50') or 0:.0f}/{pm.get('p95') or 0:.0f}/{pm.get('max') or 0:.0f} ms"
                f" over {pm.get('n', 0)} fragments | load average {res.get('loadavg_start')} -> {res.get('loadavg_end')}"
            )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM as SIGINT: unwind, so that every phase's `finally` stops the processes it started
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    partial = args.only is not None
    if args.doc is None:
        args.doc = args.workdir / "performance.md" if partial else ROOT / "docs" / "performance.md"
    if args.plot is None:
        args.plot = args.workdir / "performance.png" if partial else ROOT / "docs" / "performance.png"
    if args.port_range is not None:
        PortRange.set(*args.port_range)
    if args.report_only is not None:
        results = json.loads(args.report_only.read_text())
        write_report(results, args.doc, args.plot)
        _out(f"report written: {args.doc}, {args.plot}")
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args)
    res = runner.results
    res["command"] = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    res["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["machine"] = machine_info()
    res["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    from livedub.media.fixture import FixtureSpec, make_fixture

    def wanted(family: str) -> bool:
        return not partial or family in args.only

    fixture = fixture_path(args.workdir, args.duration_s)
    if not fixture.exists() and any(wanted(f) for f in PHASES if f != DUB_PHASE):
        _out(f"generating the {args.duration_s:g} s 720p30 fixture ...")
        make_fixture(fixture, FixtureSpec(duration_s=args.duration_s))
    if not partial:
        _out("measuring codec floors ...")
        res["floors"] = measure_floors(fixture, segment_s=args.segment_s)
    runner.save()
    cfg = Settings(
        fixture=fixture,
        duration_s=args.duration_s,
        workdir=args.workdir,
        window_segments=args.window_segments,
        stagger_s=args.stagger_s,
        latency_streams=args.latency_streams,
        input_protocol=args.input_protocol,
        spread=not args.aligned,
        relay_latency_ms=args.relay_latency_ms,
    )
    seg = args.segment_s
    delay = seg + args.added_delay_s

    if args.compare_n > 0 and wanted("transports"):
        groups = [Group(t, "worker", args.compare_n, t, seg, delay) for t in ("m4a", "flac", "wav")]
        groups.append(Group("passthrough", "passthrough", args.compare_n, "m4a", seg, delay))
        groups.append(Group("baseline", "baseline", args.compare_n, segment_s=seg))
        phase = Phase("transports", groups)
        if runner.fits(phase, cfg):
            runner.run(phase, cfg)

    workers_cap, relays_cap = Capacity(), Capacity()
    caps = {"workers": workers_cap, "baseline": relays_cap}

    def run_kind(n: int, kind: str) -> bool | None:
        """Run N streams of one kind ("workers" or "baseline"); True/False = kept up or not; None =
        skipped for the budget. A failed phase during which other programs used the machine runs
        again once."""
        if kind == "workers":
            phase = Phase(f"series-{n}-workers", [Group(args.transport, "worker", n, args.transport, seg, delay)])
        else:
            phase = Phase(f"series-{n}-baseline", [Group("baseline", "baseline", n, segment_s=seg)])
        ok: bool | None = None
        for attempt in range(2):
            if not runner.fits(phase, cfg):
                return ok
            w = runner.run(phase, cfg)
            ok = bool(w.get("groups_result")) and all(g.get("keeps_up") for g in w["groups_result"])
            other = (w.get("machine") or {}).get("other_cores", 0.0)
            if ok or attempt or other <= args.retry_other_cores:
                break
            _out(f"          other programs used {other:.2f} cores during this phase: running it again")
            w["name"] += "-disturbed"
            runner.save()
        if ok is not None:
            caps[kind].note(n, ok)
        return ok

    for n in args.series if wanted("series") else []:
        ok = run_kind(n, "workers")
        if ok is None or run_kind(n, "baseline") is None:
            break
        if not ok and not args.no_stop:
            break
    if args.lowlat_n > 0 and wanted("low-latency"):
        ls = args.lowlat_segment_s
        added = args.lowlat_added_s
        # A low-latency deployment also takes each segment's audio closer to its due time.
        margin = ("--deadline-margin-s", f"{args.lowlat_margin_s:g}")
        lt = args.lowlat_transport
        groups = [Group(f"{lt}-{ls:g}s".replace(".", "_"), "worker", args.lowlat_n, lt, ls, ls + added, margin)]
        if not args.lowlat_short_only:
            groups += [
                Group(f"flac-{seg:g}s".replace(".", "_"), "worker", args.lowlat_n, "flac", seg, seg + added, margin),
                Group(f"m4a-{seg:g}s".replace(".", "_"), "worker", args.lowlat_n, "m4a", seg, seg + added, margin),
            ]
        phase = Phase("low-latency", groups)
        if runner.fits(phase, cfg):
            runner.run(phase, cfg)

    if args.dub_n > 0 and wanted(DUB_PHASE):
        run_dub(runner, cfg, args)

    if not args.no_profile and wanted("profile"):
        groups = [
            Group("m4a", "worker", 1, "m4a", seg, delay),
            Group("flac", "worker", 1, "flac", seg, delay),
            Group("passthrough", "passthrough", 1, "m4a", seg, delay),
        ]
        phase = Phase("profile", groups, profile=True)
        if runner.fits(phase, cfg):
            runner.run(phase, cfg, Profiler(args.workdir / "profile"))

    # Capacity: for workers and for relays, the most concurrent streams that keep up — past the
    # series' last N that kept up by doubling (at most --capacity-max-n), then by bisection; the two
    # kinds take turns, so that the budget cuts both alike.
    if wanted("series"):
        for _ in range(args.capacity_steps):
            progressed = False
            for kind, cap in caps.items():
                n = cap.next_n(args.capacity_max_n)
                if n is not None and run_kind(n, kind) is not None:
                    progressed = True
            if not progressed:
                break
        res["capacity"] = capacity_result(workers_cap, relays_cap)
    if (res.get("capacity") or {}).get("ratio") is not None:
        _out(
            f"capacity: workers {workers_cap.last_ok}, relays {relays_cap.last_ok} concurrent streams kept up "
            f"(ratio {res['capacity']['ratio']:.2f})"
        )

    res["partial"] = args.only
    res["total_wall_s"] = round(runner.elapsed(), 1)
    runner.save()
    write_report(res, args.doc, args.plot)
    if wanted("transports") and args.compare_n > 0:
        _out("\ntransports vs the relay (issue 16 targets; `make bench-quick`):")
        _out(quick_table(res))
    _out(f"done in {runner.elapsed():.0f} s: {args.doc}, {args.plot}, {args.workdir / 'results.json'}")
    return 0 if completed(res, args.only) else 1


@dataclasses.dataclass
class Capacity:
    """What the runs so far say of one pipeline kind: the most concurrent streams that kept up and
    the fewest that did not."""

    last_ok: int | None = None
    first_fail: int | None = None

    def note(self, n: int, ok: bool) -> None:
        if ok:
            self.last_ok = max(self.last_ok or 0, n)
        else:
            self.first_fail = n if self.first_fail is None else min(self.first_fail, n)

    def next_n(self, max_n: int) -> int | None:
        """The next N to try: twice the most that kept up while nothing failed (at most `max_n`),
        then the middle of the gap until it is at most an eighth of the most that kept up (at least
        1); None when there is nothing to narrow: nothing kept up, `max_n` kept up, the gap is
        narrow enough, or the runs disagree (an N failed below one that kept up: noise)."""
        if self.last_ok is None:
            return None
        if self.first_fail is None:
            return min(2 * self.last_ok, max_n) if self.last_ok < max_n else None
        if self.first_fail - self.last_ok <= max(1, self.last_ok // 8):
            return None
        return (self.last_ok + self.first_fail) // 2


def capacity_result(workers: Capacity, relays: Capacity) -> dict[str, Any]:
    """results.json's `capacity`: per kind the most that kept up and the first that did not, and
    workers ÷ relays."""
    ratio = workers.last_ok / relays.last_ok if workers.last_ok and relays.last_ok else None
    return {
        "workers": dataclasses.asdict(workers),
        "relays": dataclasses.asdict(relays),
        "ratio": ratio,
    }


def completed(results: dict[str, Any], only: list[str] | None) -> bool:
    """A full run always completed (the report says what failed); a partial run (`--only`, e.g.
    `make bench-quick`) completed when at least one phase it ran has group results. Missed targets
    are results, not failures."""
    if only is None:
        return True
    return any(ph.get("groups_result") for ph in results.get("phases", []))


if __name__ == "__main__":
    raise SystemExit(main())
