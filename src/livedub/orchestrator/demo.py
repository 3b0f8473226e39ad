"""`livedub demo`: the whole system end to end on one machine, in one command.

Starts the embedded media server, the STS (`--backend dub` by default: offline speech →
translation → speech; `--backend echo`: today's echo) and the orchestrator (real processes on
127.0.0.1), generates the fixture (with `dub`: an English spoken track of espeak-ng sentences over
the tones, sync markers kept), publishes it to `rtsp://127.0.0.1:8554/live/demo/in`; the media server's
publish hook makes the orchestrator start a worker, which publishes
`rtmp://127.0.0.1:1935/live/demo/out`. The demo records that output, shows live progress from the
metrics, then analyses the recording (duration, codecs, A/V offset at every sync marker, segment
order), prints per segment the transcript, translation and stage timings (from the STS) and the
worker's WebVTT caption files, writes the sync plot, stops everything it started (by PID) and
exits 0 only if every fragment was dubbed and every marker is within 33 ms.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from livedub.exitcodes import ExitCode
from livedub.log import redact_url
from livedub.sts.debug import processed_sent
from livedub.subproc import terminate

if TYPE_CHECKING:
    from livedub.orchestrator.media_server import MediaServer

_log = logging.getLogger(__name__)

LIVEDUB = [sys.executable, "-m", "livedub"]
SYNC_TOLERANCE_MS = 33.0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "demo",
        help="run a dubbed stream end to end (media server, dub or echo STS, orchestrator, worker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stream-id", default="demo", help="stream id (default demo)")
    p.add_argument("--workdir", default="var/demo", help="fixture, recording, logs, plot (default var/demo)")
    p.add_argument("--duration-s", type=float, default=60.0, help="fixture length (default 60)")
    p.add_argument("--rtsp-port", type=int, default=8554)
    p.add_argument("--rtmp-port", type=int, default=1935)
    p.add_argument("--sts-port", type=int, default=8080)
    p.add_argument("--orchestrator-port", type=int, default=8000)
    p.add_argument(
        "--sts-url", default=None, help="use this STS service instead of starting the echo STS"
    )
    p.add_argument(
        "--media-server",
        default=None,
        metavar="HOST",
        help="use an external MediaMTX-compatible media server on HOST (its hooks must call the "
        "orchestrator) instead of the embedded one",
    )
    p.add_argument(
        "--backend",
        choices=["dub", "echo"],
        default="dub",
        help="STS backend the demo starts: dub (offline ASR -> MT -> TTS, spoken fixture; "
        "default) or echo",
    )
    p.add_argument("--progress-interval-s", type=float, default=3.0, help="seconds between progress lines (default 3)")
    p.add_argument(
        "--worker-exit-timeout-s", type=float, default=30.0,
        help="after the output ends, longest wait for the worker's exit line with its final figures (default 30)",
    )
    p.set_defaults(func=run_demo)


class _Procs:
    """Processes the demo started; all stopped by PID at the end, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.items: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.items.append((name, proc, log))
        return proc

    def stop_all(self) -> None:
        for _name, proc, log in reversed(self.items):
            terminate(proc, 15)
            log.close()


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _metrics(url: str, stream_id: str) -> dict[str, float]:
    """The demo's view of the aggregated worker metrics of `stream_id`."""
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("stream_id") != stream_id:
                continue
            key = s.name
            for label in ("status", "reason", "source"):
                if label in s.labels:
                    key += f":{s.labels[label]}"
            out[key] = out.get(key, 0.0) + s.value
    return out


CONSOLE_TOKEN_FILE = "console-token"  # in the workdir: the console's operator token of this run


def write_secret_file(path: Path, secret: str) -> Path:
    """Write `secret` to `path`, readable by this user only (created 0600, never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path


WORKER_EXIT_MSG = "worker exiting"  # the worker's last log line, with its final figures (runner.py)


def _worker_final(log: Path, timeout_s: float) -> dict[str, Any] | None:
    """The worker's own final figures: the `worker exiting` line of its JSON log, waited for up
    to `timeout_s` (the output can end before the worker has said goodbye to the STS). Its
    metrics endpoint is gone by then, so a scrape cannot give the last segments."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in reversed(lines):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("msg") == WORKER_EXIT_MSG:
                return doc
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _progress_line(m: dict[str, float]) -> str:
    fallback = sum(v for k, v in m.items() if k.startswith("worker_fallback_total:"))
    breaker = {0: "closed", 1: "half-open", 2: "open"}.get(int(m.get("worker_sts_breaker_state", 0)), "?")
    return (
        f"  segments dubbed {int(m.get('worker_segments_total:dubbed', 0))}"
        f" original {int(m.get('worker_segments_total:original', 0))}"
        f" | fragments sent {int(m.get('worker_audio_fragments_total:sent', 0))}"
        f" processed {int(m.get('worker_audio_fragments_total:processed', 0))}"
        f" | fallbacks {int(fallback)} | breaker {breaker}"
        f" | sync delta {m.get('worker_av_sync_delta_ms', 0.0):.1f} ms"
        f" | output delay {m.get('worker_output_delay_ms', 0.0) / 1000:.1f} s"
    )


def spoken_track(spec: Any) -> Any:
    """English sentences (espeak-ng), one per segment, as float32 mono for the fixture. Each
    sentence sits in the longer part of its segment that does not touch the sync marker (the
    dubbed voice goes where the source spoke, so the markers stay clear under the dub), sped up
    if it would not fit."""
    import numpy as np

    from livedub.media.audio import resample_pcm
    from livedub.media.fixture import marker_frames
    from livedub.sts.dub.programme import ENGLISH_VOICE, SENTENCES
    from livedub.sts.dub.synthesizer import DEFAULT_WPM, EspeakSynthesizer

    synth = EspeakSynthesizer({"en": ENGLISH_VOICE})
    rate = spec.sample_rate
    track = np.zeros(round(spec.duration_s * rate), dtype=np.float32)
    markers = [f / spec.fps for f in marker_frames(spec)]
    for k in range(math.ceil(spec.duration_s / spec.segment_s)):
        seg0, seg1 = k * spec.segment_s, min(spec.duration_s, (k + 1) * spec.segment_s)
        m = next((t for t in markers if seg0 <= t < seg1), None)
        free = [(seg0 + 0.3, seg1 - 0.3)] if m is None else [(seg0 + 0.3, m - 0.4), (m + 0.45, seg1 - 0.3)]
        start_s, end_s = max(free, key=lambda iv: iv[1] - iv[0])
        if end_s - start_s < 1.0:
            continue
        text = SENTENCES[k % len(SENTENCES)]
        speech, srate = synth.synthesize(text, "en")
        if speech.size / srate > end_s - start_s:
            wpm = math.ceil(DEFAULT_WPM * speech.size / srate / (end_s - start_s) * 1.05)
            speech, srate = synth.synthesize(text, "en", wpm)
        pcm = np.asarray(resample_pcm(np.clip(speech * 32767, -32768, 32767).astype(np.int16)[:, None], srate, rate, 1))
        a = round(start_s * rate)
        b = min(round(end_s * rate), a + pcm.shape[0], track.size)
        track[a:b] = pcm[: b - a, 0].astype(np.float32) / 32768.0
    return track


def _segment_lines(sts_url: str, stream_id: str) -> list[str]:
    """Per segment: transcript, translation, stage timings, from the STS's debug history."""
    history = processed_sent(sts_url, stream_id, timeout_s=2)
    if history is None:
        return ["per segment           : (the STS debug history is not available)"]
    lines = []
    for item in history:
        t = item.get("stage_timings") or {}
        lines.append(
            f"segment {item.get('sequence_number'):>3} {item.get('status'):<8}: "
            f"asr {t.get('asr_ms')} ms, mt {t.get('translation_ms')} ms, tts {t.get('tts_ms')} ms"
            f" | {item.get('transcript') or ''!s} -> {item.get('translated_text') or ''!s}"
        )
    return lines


# Loaded by `run_demo` before it checks a port or starts anything (an import failure stops the
# demo first; the start-up time it prints does not include them); the steps import what they use.
_MEDIA_MODULES = (
    "livedub.media.analyze",
    "livedub.media.fixture",
    "livedub.media.publish",
    "livedub.media.record",
    "livedub.orchestrator.media_server",
)


def run_demo(args: argparse.Namespace) -> int:
    for module in _MEDIA_MODULES:
        importlib.import_module(module)
    workdir = Path(args.workdir).resolve()
    logdir = workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    busy = _busy_ports(args)
    if busy:
        _log.error("ports in use on 127.0.0.1: %s (stop what uses them or pass other ports)", ", ".join(busy))
        return int(ExitCode.USAGE)
    stack = DemoStack(args, workdir)
    try:
        return stack.run()
    except (TimeoutError, OSError) as exc:
        _log.error("demo failed: %s (logs in %s)", exc, logdir)
        return int(ExitCode.ERROR)
    finally:
        stack.stop()  # every process it started, on every path (Ctrl-C and other exceptions too)


def _busy_ports(args: argparse.Namespace) -> list[str]:
    """The ports the demo would listen on (none of an external media server or STS) already in
    use on 127.0.0.1, as `name port`."""
    ports = {"RTSP": args.rtsp_port, "RTMP": args.rtmp_port, "orchestrator": args.orchestrator_port}
    if args.sts_url is None:
        ports[f"{args.backend} STS"] = args.sts_port
    if args.media_server is not None:
        ports.pop("RTSP")
        ports.pop("RTMP")
    return [f"{name} {port}" for name, port in ports.items() if not _port_free(port)]


def _ensure_fixture(workdir: Path, args: argparse.Namespace) -> Path:
    """The test programme, generated once per length and backend (spoken with `dub`)."""
    from livedub.media.fixture import FixtureSpec, make_fixture

    dub = args.backend == "dub"
    fixture = workdir / f"fixture-{'speech-' if dub else ''}{int(args.duration_s)}s.mp4"
    if not fixture.exists():
        _out(f"generating the {args.duration_s:g} s fixture (H.264 + AAC, sync markers"
             f"{', English speech' if dub else ''}) ...")
        spec = FixtureSpec(duration_s=args.duration_s)
        tmp = fixture.with_suffix(".tmp.mp4")
        make_fixture(tmp, spec, voice=spoken_track(spec) if dub else None)
        tmp.rename(fixture)
    return fixture


class DemoStack:
    """One demo run: what it starts (media server, STS, orchestrator, recorder, publisher), in
    order (`run`), and `stop`, which stops every process it started, whatever happened."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.sid: str = args.stream_id
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.t_start = time.monotonic()
        self.host = args.media_server or "127.0.0.1"
        self.orch_url = f"http://127.0.0.1:{args.orchestrator_port}"
        self.sts_url = args.sts_url or f"http://127.0.0.1:{args.sts_port}"
        self.rtsp_in = f"rtsp://{self.host}:{args.rtsp_port}/live/{self.sid}/in"
        self.rtmp_out = f"rtmp://{self.host}:{args.rtmp_port}/live/{self.sid}/out"
        self.captions = workdir / "captions" / self.sid
        self.procs = _Procs(self.logdir)
        self.media_server: MediaServer | None = None
        # Hooks need a secret (issue 17 #2): a fresh one per run, by env only. With --media-server
        # (an external one) its hook must send ORCH_HOOK_SECRET from the demo's environment.
        self.hook_secret = os.environ.get("ORCH_HOOK_SECRET") or secrets.token_hex(16)
        # The console's operator token (issue 18): a fresh one per run, by env only, written to a
        # mode-600 file whose path (never the token) is printed.
        api_token = os.environ.get("ORCH_API_TOKEN") or secrets.token_urlsafe(24)
        self.token_file = write_secret_file(workdir / CONSOLE_TOKEN_FILE, api_token)
        # JSON logs: the summary reads the worker's final figures from its last line
        self.orch_env = {
            "ORCH_HOOK_SECRET": self.hook_secret,
            "ORCH_API_TOKEN": api_token,
            "LIVEDUB_LOG_FORMAT": "json",
        }

    def run(self) -> int:
        """Every step; the exit code (0 only if every fragment was dubbed in sync)."""
        fixture = _ensure_fixture(self.workdir, self.args)
        if self.args.media_server is None:
            self._start_media_server()
        if self.args.sts_url is None:
            self.procs.spawn(f"{self.args.backend}-sts", [
                *LIVEDUB, "sts", "--port", str(self.args.sts_port), "--backend", self.args.backend,
            ])  # fmt: skip
        self._start_orchestrator()
        self._wait_ready()
        recording, rec_done = self._publish(fixture)
        m = self._watch(rec_done)
        if m is None:
            _log.error("the output never ended: see %s", self.logdir)
            return int(ExitCode.ERROR)
        return self._summarize(recording, m)

    def stop(self) -> None:
        self.procs.stop_all()
        if self.media_server is not None:
            self.media_server.stop()

    def _start_media_server(self) -> None:
        from livedub.orchestrator.media_server import MediaServer, Role

        self.media_server = MediaServer(  # set before it starts: `stop` stops a half-started one too
            rtsp_port=self.args.rtsp_port, rtmp_port=self.args.rtmp_port, streams=[self.sid],
            hook_url=self.orch_url, hook_secret=self.hook_secret, workdir=self.logdir / "media-server",
        )  # fmt: skip
        self.media_server.start()
        # closed by default (issue 17 #1): publish with the publisher's credentials, and
        # give the workers' account to the orchestrator by environment
        self.rtsp_in = self.media_server.rtsp_url(f"live/{self.sid}/in", Role.PUBLISHER)
        worker = self.media_server.credentials(Role.WORKER)
        if worker is not None:
            self.orch_env["ORCH_OUTPUT_USER"] = worker.user
            self.orch_env["ORCH_OUTPUT_PASS"] = worker.password.get_secret_value()

    def _start_orchestrator(self) -> None:
        a = self.args
        # the orchestrator's workers inherit WORKER_* from its environment
        self.orch_env["WORKER_CAPTIONS"] = str(self.captions)  # spawn adds it to the environment
        self.procs.spawn("orchestrator", [
            *LIVEDUB, "serve", "--port", str(a.orchestrator_port), "--sts-url", self.sts_url,
            "--input-base", f"rtsp://{self.host}:{a.rtsp_port}",
            "--output-base", f"rtmp://{self.host}:{a.rtmp_port}", "--log-dir", str(self.logdir / "workers"),
        ], env=self.orch_env)  # fmt: skip

    def _wait_ready(self) -> None:
        if self.media_server is not None:
            self.media_server.wait_ready(10)
        _wait(lambda: _http_ok(f"{self.sts_url}/health"), 20, "the STS service")
        _wait(lambda: _http_ok(f"{self.orch_url}/health"), 20, "the orchestrator")
        host, a = self.host, self.args
        _out(f"services up in {time.monotonic() - self.t_start:.1f} s: media server rtsp://{host}:{a.rtsp_port} "
             f"rtmp://{host}:{a.rtmp_port}, STS {self.sts_url}, orchestrator {self.orch_url}")
        _out(f"live console          : {self.orch_url}/ (sign in with the token in {self.token_file}, mode 600; "
             f"up while the programme plays)")

    def _publish(self, fixture: Path) -> tuple[Path, threading.Event]:
        """Start recording the output, then publishing the fixture (both in daemon threads):
        the recording's path and the event set when the recorder has finished."""
        from livedub.media.publish import publish
        from livedub.media.record import record

        recording = self.workdir / f"{self.sid}-out.mkv"
        recording.unlink(missing_ok=True)
        rec_done = threading.Event()

        def _record() -> None:
            try:
                record(self.rtmp_out, recording, wait_s=self.args.duration_s + 60, log=self.logdir / "recorder.log")
            finally:
                rec_done.set()

        rec_thread = threading.Thread(target=_record, daemon=True)
        rec_thread.start()
        _out(f"publishing {fixture.name} to {redact_url(self.rtsp_in)} in real time; "
             f"dubbed output at {redact_url(self.rtmp_out)}")
        pub_thread = threading.Thread(target=publish, args=(str(fixture), self.rtsp_in), daemon=True)
        pub_thread.start()
        return recording, rec_done

    def _watch(self, rec_done: threading.Event) -> dict[str, float] | None:
        """Progress lines from the metrics until the recording ends: the last metrics, or None
        when the output never ended."""
        last = 0.0
        m: dict[str, float] = {}
        deadline = time.monotonic() + self.args.duration_s + 90
        while not rec_done.is_set() and time.monotonic() < deadline:
            if time.monotonic() - last >= self.args.progress_interval_s:
                last = time.monotonic()
                try:
                    m = _metrics(f"{self.orch_url}/metrics", self.sid) or m
                    _out(_progress_line(m))
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            rec_done.wait(0.2)
        return m if rec_done.is_set() else None

    def _final_figures(self, m: dict[str, float]) -> tuple[int, int, int]:
        """Segments dubbed, segments output, fallbacks: the worker's own count of what it output
        (its exit line), else the last scrape's."""
        final = _worker_final(self.logdir / "workers" / f"{self.sid}.log", self.args.worker_exit_timeout_s)
        if final is not None:  # the worker's own count of what it output, not a scrape made before the end
            out_by = final.get("output") or {}
            dubbed = int(out_by.get("dubbed", 0))
            total = dubbed + int(out_by.get("original", 0))
            fallbacks = int(final.get("fallback", 0))
        else:
            _log.warning("the worker did not log its exit: figures from the last scrape (see %s)", self.logdir)
            dubbed = int(m.get("worker_segments_total:dubbed", 0))
            total = dubbed + int(m.get("worker_segments_total:original", 0))
            fallbacks = int(sum(v for k, v in m.items() if k.startswith("worker_fallback_total:")))
        return dubbed, total, fallbacks

    def _summarize(self, recording: Path, m: dict[str, float]) -> int:
        """Analyse the recording, print the summary; 0 only if every fragment was dubbed in sync."""
        from livedub.media.analyze import analyze, write_plot

        analysis = analyze(str(recording))
        plot = self.workdir / f"{self.sid}-sync.png"
        write_plot(analysis, plot)
        summary = analysis.summary()
        (self.workdir / f"{self.sid}-analysis.json").write_text(json.dumps(summary, indent=2, default=str))
        dubbed, total, fallbacks = self._final_figures(m)
        expected = int(self.args.duration_s // 6)
        ok = (
            dubbed >= expected
            and analysis.markers
            and analysis.max_abs_offset_ms <= SYNC_TOLERANCE_MS
            and analysis.codecs == ("h264", "aac")
        )
        _out("")
        _out("=== livedub demo summary ===")
        _out(f"fragments dubbed      : {dubbed}/{max(total, expected)}")
        _out(f"fallbacks             : {fallbacks}")
        _out(f"output                : {recording} ({analysis.codecs[0]} + {analysis.codecs[1]}, "
             f"{analysis.duration_s:.3f} s)")
        _out(f"A/V sync at markers   : max {analysis.max_abs_offset_ms:.1f} ms over {len(analysis.markers)} markers "
             f"(tolerance {SYNC_TOLERANCE_MS:.0f} ms)")
        _out(f"segment tone order    : {analysis.tone_order}")
        for line in _segment_lines(self.sts_url, self.sid):
            _out(line)
        for vtt in sorted(self.captions.parent.glob(f"{self.captions.name}.*.vtt")):
            _out(f"captions              : {vtt} ({vtt.read_text().count(' --> ')} cues)")
        _out(f"sync plot             : {plot}")
        _out(f"logs                  : {self.logdir}")
        _out(f"result                : {'OK' if ok else 'FAILED'} in {time.monotonic() - self.t_start:.0f} s")
        return 0 if ok else int(ExitCode.ERROR)
