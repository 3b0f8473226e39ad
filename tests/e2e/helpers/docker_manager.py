"""Service lifecycle for the E2E suite: Docker Compose when an engine runs, local processes otherwise.

Local mode (what CI runs) starts the real services as subprocesses on 127.0.0.1: the embedded media
server (`livedub media-server`), the echo STS (`livedub sts`) and the orchestrator (`livedub serve`);
tests start their own workers (`livedub worker`). Every process is started here, logged to its own
file, health-checked before use and stopped by PID (SIGTERM, then SIGKILL) even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livedub.subproc import terminate
from tests.e2e import config

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
LIVEDUB = [sys.executable, "-m", "livedub"]


def docker_available() -> bool:
    """True when a Docker engine answers (not just the client binary)."""
    if shutil.which("docker") is None:
        return False
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll `predicate` until true or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(url: str, timeout_s: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read().decode())


def port_open(port: int, host: str = config.HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """A subprocess we started, with its log file. Stopped by PID only."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env or {})
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; also reaps the process group we created."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout_s)
        # Children (nginx, relay) live in the session we started: end any straggler of ours.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        log = self._log
        if log is not None:
            log.close()  # type: ignore[attr-defined]
            self._log = None
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class ServiceManager:
    """Starts/stops the E2E services. `mode` is "docker" or "local"."""

    def __init__(self, workdir: Path, mode: str | None = None) -> None:
        self.workdir = workdir
        self.mode = mode or os.environ.get("E2E_MODE") or ("docker" if docker_available() else "local")
        self.processes: dict[str, ManagedProcess] = {}
        # The orchestrator refuses hooks without a secret (issue 17 #2): one per run, given to
        # the media server (which sends it) and the orchestrator (which checks it) by env only.
        self.hook_secret = secrets.token_hex(16)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, with_orchestrator: bool = True) -> None:
        if self.mode == "docker":
            subprocess.run(
                ["docker", "compose", "-f", str(COMPOSE_FILE), "up", "-d", "--wait"], check=True
            )
        else:
            self._start_local(with_orchestrator)
        self.health_check()

    def _start_local(self, with_orchestrator: bool) -> None:
        for port in (config.RTSP_PORT, config.RTMP_PORT, config.STS_PORT, config.ORCHESTRATOR_PORT):
            if port_open(port):
                raise RuntimeError(f"port {port} on {config.HOST} is already in use")
        hook = [] if not with_orchestrator else ["--hook-url", config.ORCHESTRATOR_URL]
        self._spawn(
            "media-server",
            [
                "media-server",
                "--rtsp-port", str(config.RTSP_PORT),
                "--rtmp-port", str(config.RTMP_PORT),
                "--streams", ",".join(config.STREAM_IDS),
                "--workdir", str(self.workdir / "media-server"),
                *hook,
            ],
            env={
                "MEDIA_HOOK_SECRET": self.hook_secret,
                "MEDIA_PUBLISH_USER": config.PUBLISH_USER,
                "MEDIA_PUBLISH_PASS": config.PUBLISH_PASS,
                "MEDIA_WORKER_USER": config.WORKER_USER,
                "MEDIA_WORKER_PASS": config.WORKER_PASS,
            },
        )
        self._spawn("echo-sts", ["sts", "--port", str(config.STS_PORT)])
        if with_orchestrator:
            self._spawn(
                "media-service",
                [
                    "serve",
                    "--port", str(config.ORCHESTRATOR_PORT),
                    "--sts-url", config.STS_URL,
                    "--input-base", config.RTSP_BASE,
                    "--output-base", config.RTMP_BASE,
                    "--log-dir", str(self.workdir / "workers"),
                    # Only the full-pipeline test goes through the hook; the other tests start their
                    # own workers with their own settings for the same media server.
                    "--stream-pattern", config.ORCHESTRATED_STREAM_PATTERN,
                ],
                env={
                    "ORCH_HOOK_SECRET": self.hook_secret,
                    "ORCH_OUTPUT_USER": config.WORKER_USER,
                    "ORCH_OUTPUT_PASS": config.WORKER_PASS,
                },
            )

    def _spawn(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        p = ManagedProcess(name, [*LIVEDUB, *args], self.workdir / f"{name}.log", env=env).start()
        self.processes[name] = p
        return p

    def health_check(self, timeout_s: float = config.SERVICE_START_TIMEOUT_S) -> None:
        wait_for(lambda: http_ok(f"{config.STS_URL}/health"), timeout_s, "echo STS /health")
        wait_for(lambda: port_open(config.RTSP_PORT) and port_open(config.RTMP_PORT), timeout_s,
                 "media server RTSP and RTMP ports")
        if "media-service" in self.processes or self.mode == "docker":
            wait_for(lambda: http_ok(f"{config.ORCHESTRATOR_URL}/health"), timeout_s,
                     "media service /health")
        for p in self.processes.values():
            if not p.alive():
                raise RuntimeError(f"{p.name} exited at start:\n{p.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.mode == "docker":
            subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "down", "-v"], check=False)
            return
        for p in reversed(list(self.processes.values())):
            p.stop()

    def logs(self) -> dict[str, str]:
        return {name: p.log_text() for name, p in self.processes.items()}

    # -- per-test processes ----------------------------------------------------------------------
    def start_worker(
        self,
        stream_id: str,
        metrics_port: int,
        extra_args: Sequence[str] = (),
        sts_url: str = config.STS_URL,
        env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        """Start `livedub worker` for `stream_id` (RTSP in → RTMP out) and wait for its /health."""
        # the URLs carry credentials: by environment, never argv (issue 17 #4)
        env = {
            "WORKER_INPUT_URL": config.rtsp_in(stream_id),
            "WORKER_OUTPUT_URL": config.rtmp_out(stream_id),
            **(env or {}),
        }
        argv = [
            *LIVEDUB, "worker",
            "--stream-id", stream_id,
            "--sts-url", sts_url,
            "--metrics-port", str(metrics_port),
            *extra_args,
        ]
        p = ManagedProcess(f"worker-{stream_id}", argv, self.workdir / f"worker-{stream_id}.log", env=env)
        p.start()
        wait_for(lambda: http_ok(f"http://{config.HOST}:{metrics_port}/health") or not p.alive(),
                 config.SERVICE_START_TIMEOUT_S, f"worker {stream_id} /health")
        return p

    def start_sts(self, name: str, port: int) -> ManagedProcess:
        """A dedicated echo STS (for tests that must kill or restart it)."""
        p = ManagedProcess(name, [*LIVEDUB, "sts", "--port", str(port)], self.workdir / f"{name}.log")
        p.start()
        wait_for(lambda: http_ok(f"http://{config.HOST}:{port}/health"), config.SERVICE_START_TIMEOUT_S,
                 f"{name} /health")
        return p
