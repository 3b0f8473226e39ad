"""Shared E2E fixtures: the services (started once per run), the fixture file, and per-test streams.

Services start in `pytest_configure` of the controlling process (once, also under pytest-xdist, whose
workers find them through E2E_WORKDIR) and stop in `pytest_unconfigure`, even after failures. Each
test gets a `StreamRun` with its own stream id: a recorder of the RTMP output, a worker, a publisher,
a metrics client; everything it starts is stopped by PID in teardown, and every log is attached to
the report of a failing test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from livedub.media import fixture as fixtures
from tests.e2e import config
from tests.e2e.helpers import stream_publisher
from tests.e2e.helpers.docker_manager import ManagedProcess, ServiceManager, http_json, wait_for
from tests.e2e.helpers.metrics_parser import MetricsClient

_MANAGER: ServiceManager | None = None


def _is_xdist_worker(cfg: pytest.Config) -> bool:
    return hasattr(cfg, "workerinput")


def ensure_fixture() -> Path:
    """T011: the deterministic 60 s fixture, generated once per checkout and reused only while its
    verified stamp matches (safe when xdist workers and the controller ask at the same time)."""
    fixtures.ensure_fixture(config.FIXTURE_PATH, fixtures.FixtureSpec(duration_s=config.FIXTURE_DURATION_S))
    return config.FIXTURE_PATH


def pytest_configure(config: pytest.Config) -> None:  # noqa: D103 - pytest hook
    global _MANAGER
    if _is_xdist_worker(config) or os.environ.get("E2E_EXTERNAL_SERVICES"):
        return
    ensure_fixture()
    workdir = Path(tempfile.mkdtemp(prefix="livedub-e2e-"))
    os.environ["E2E_WORKDIR"] = str(workdir)
    _MANAGER = ServiceManager(workdir)
    try:
        _MANAGER.start()
    except Exception:
        _MANAGER.stop()
        raise


def pytest_unconfigure(config: pytest.Config) -> None:  # noqa: D103 - pytest hook
    global _MANAGER
    if _MANAGER is not None:
        _MANAGER.stop()
        _MANAGER = None


def _workdir() -> Path:
    return Path(os.environ.get("E2E_WORKDIR") or tempfile.mkdtemp(prefix="livedub-e2e-"))


@pytest.fixture(scope="session")
def docker_services() -> ServiceManager:
    """The running services (started by the controlling process)."""
    manager = ServiceManager(_workdir())
    manager.health_check()
    return manager


@pytest.fixture(scope="session")
def fixture_path() -> Path:
    return ensure_fixture()


class StreamRun:
    """One test's stream: its worker, publisher, recorder and metrics, all stopped in teardown."""

    def __init__(self, manager: ServiceManager, stream_id: str, workdir: Path, fixture: Path) -> None:
        self.manager = manager
        self.stream_id = stream_id
        self.workdir = workdir
        self.fixture = fixture
        self.processes: list[ManagedProcess] = []
        self.metrics_port = config.WORKER_METRICS_PORT_BASE + config.STREAM_IDS.index(stream_id)
        self.metrics = MetricsClient(f"http://{config.HOST}:{self.metrics_port}/metrics")
        self.output_path = workdir / f"{stream_id}-out.mkv"
        self.worker: ManagedProcess | None = None
        self.publisher: ManagedProcess | None = None
        self.recorder: ManagedProcess | None = None
        self.t_publish: float | None = None

    def start_recorder(self) -> ManagedProcess:
        self.recorder = stream_publisher.record(
            config.rtmp_out(self.stream_id), self.output_path, self.workdir / f"{self.stream_id}-recorder.log"
        )
        self.processes.append(self.recorder)
        return self.recorder

    def start_worker(self, extra_args: Sequence[str] = (), sts_url: str = config.STS_URL) -> ManagedProcess:
        self.worker = self.manager.start_worker(self.stream_id, self.metrics_port, extra_args, sts_url)
        self.processes.append(self.worker)
        return self.worker

    def publish(self, fixture: Path | None = None, loop: bool = False) -> ManagedProcess:
        self.publisher = stream_publisher.publish(
            fixture or self.fixture, config.rtsp_in(self.stream_id),
            self.workdir / f"{self.stream_id}-publisher.log", loop=loop,
        )
        self.t_publish = time.monotonic()
        self.processes.append(self.publisher)
        return self.publisher

    def start(self, extra_args: Sequence[str] = (), sts_url: str = config.STS_URL) -> StreamRun:
        """Recorder, publisher, then the worker — the order of a real deployment, where the media
        server's publish hook starts the worker. (A reader joins a live stream at its next keyframe:
        a worker that polls for a stream not yet published would join up to a GOP late.)"""
        self.start_recorder()
        self.publish()
        self.start_worker(extra_args, sts_url)
        return self

    def wait_worker_exit(self, timeout_s: float) -> int:
        assert self.worker is not None
        return self.worker.wait(timeout_s)

    def wait_recorder(self, timeout_s: float = 30.0) -> None:
        """The recorder ends when the worker stops publishing; bounded."""
        if self.recorder is None:
            return
        try:
            self.recorder.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.recorder.stop()

    def finish(self, timeout_s: float = config.TEST_BUDGET_S) -> int:
        """Wait for the worker to end the stream on its own, then for the recorder."""
        code = self.wait_worker_exit(timeout_s)
        self.wait_recorder()
        return code

    def worker_log(self) -> str:
        return self.worker.log_text() if self.worker else ""

    def echo_debug(self, sts_url: str = config.STS_URL) -> dict:  # type: ignore[type-arg]
        doc = http_json(f"{sts_url}/debug/streams/{self.stream_id}")
        assert isinstance(doc, dict)
        return doc

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


@pytest.fixture
def stream_factory(docker_services: ServiceManager, fixture_path: Path, request: pytest.FixtureRequest) -> Iterator:  # type: ignore[type-arg]
    """`stream_factory(stream_id)` → a StreamRun; all its processes are stopped after the test."""
    runs: list[StreamRun] = []
    request.node.e2e_runs = runs  # type: ignore[attr-defined]
    workdir = Path(tempfile.mkdtemp(prefix="stream-", dir=_workdir()))

    def make(stream_id: str) -> StreamRun:
        run = StreamRun(docker_services, stream_id, workdir, fixture_path)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()


@pytest.fixture
def metrics_client() -> MetricsClient:
    """The media service's aggregated metrics endpoint."""
    return MetricsClient(f"{config.ORCHESTRATOR_URL}/metrics")


@pytest.fixture
def log_capture(docker_services: ServiceManager) -> dict[str, int]:
    """Byte offsets of every service log at test start, for `new_log_lines`."""
    return {name: len(text) for name, text in docker_services.logs().items()}


def new_log_lines(manager: ServiceManager, offsets: dict[str, int]) -> dict[str, list[str]]:
    return {name: text[offsets.get(name, 0):].splitlines() for name, text in manager.logs().items()}


@pytest.fixture
def cleanup_resources() -> Iterator[list[ManagedProcess]]:
    """Extra processes a test starts itself; stopped by PID afterwards."""
    extra: list[ManagedProcess] = []
    yield extra
    for p in extra:
        p.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:  # type: ignore[type-arg]
    report = yield
    if report.failed and call.when in ("call", "teardown"):
        logs = {p.name: p.log_text() for run in getattr(item, "e2e_runs", []) for p in run.processes}
        for name in ("media-server", "echo-sts", "media-service"):
            path = _workdir() / f"{name}.log"
            if path.exists():
                logs[name] = path.read_text(errors="replace")
        for name, text in logs.items():
            report.sections.append((f"log: {name}", text[-20000:]))
    return report


def wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    wait_for(predicate, timeout_s, what)
