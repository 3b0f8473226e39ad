"""Supervisor rules with a hand-driven clock and fake processes: no real process, no real time."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import (
    CapacityError,
    LaunchSpec,
    ShuttingDown,
    StreamState,
    Supervisor,
)

# --- test doubles ---------------------------------------------------------------------------------


class ManualClock:
    """`sleep` waits until a test calls `advance` past its deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + max(0.0, seconds), fut)
        self._sleepers.append(entry)
        try:
            await fut
        finally:
            self._sleepers.remove(entry)

    def pending(self) -> list[float]:
        """Remaining time of every unfinished sleep."""
        return sorted(d - self.now for d, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        await settle()  # every task reaches its sleep first, then time moves
        self.now += seconds
        for deadline, fut in list(self._sleepers):
            if deadline <= self.now + 1e-9 and not fut.done():
                fut.set_result(None)
        await settle()


async def settle(rounds: int = 50) -> None:
    """Let every ready task run (no time passes on any clock)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def eventually(cond: Callable[[], bool], rounds: int = 500) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class FakeProc:
    def __init__(self, pid: int, spec: LaunchSpec, term_exits: bool) -> None:
        self._pid = pid
        self.spec = spec
        self.term_exits = term_exits
        self._rc: int | None = None
        self.signals: list[int] = []
        self._done = asyncio.Event()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._rc

    async def wait(self) -> int:
        await self._done.wait()
        assert self._rc is not None
        return self._rc

    def signal(self, sig: int) -> None:
        if self._rc is not None:
            return
        self.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and self.term_exits):
            self.exit(-sig)

    def exit(self, code: int) -> None:
        self._rc = code
        self._done.set()


class FakeLauncher:
    def __init__(self) -> None:
        self.procs: list[FakeProc] = []
        self.term_exits = True
        self.fail = False

    async def launch(self, spec: LaunchSpec) -> FakeProc:
        if self.fail:
            raise FileNotFoundError(spec.argv[0])
        proc = FakeProc(1000 + len(self.procs), spec, self.term_exits)
        self.procs.append(proc)
        return proc

    def of(self, stream_id: str) -> list[FakeProc]:
        return [p for p in self.procs if p.spec.stream_id == stream_id]


class FakePorts:
    def __init__(self) -> None:
        self.next = 20000
        self.used: set[int] = set()

    def acquire(self, prefer: int | None = None) -> int:
        if prefer is not None and prefer not in self.used:
            port = prefer
        else:
            self.next += 1
            port = self.next
        self.used.add(port)
        return port

    def release(self, port: int) -> None:
        self.used.discard(port)


def make(**overrides: Any) -> tuple[Supervisor, ManualClock, FakeLauncher, FakePorts]:
    values: dict[str, Any] = {
        "worker_command": "fake-worker --flag",
        "grace_s": 30.0,
        "backoff_initial_s": 1.0,
        "backoff_multiplier": 2.0,
        "backoff_max_s": 4.0,
        "stable_run_s": 10.0,
        "stop_timeout_s": 5.0,
    }
    values.update(overrides)
    settings = OrchestratorSettings(**values)
    clock, launcher, ports = ManualClock(), FakeLauncher(), FakePorts()
    sup = Supervisor(settings, clock=clock, launcher=launcher, ports=ports)  # type: ignore[arg-type]
    return sup, clock, launcher, ports


def state(sup: Supervisor, stream_id: str) -> StreamState:
    info = sup.get(stream_id)
    assert info is not None
    return info.state


# --- start, idempotence ----------------------------------------------------------------------------


async def test_ready_starts_one_worker_with_the_composed_command() -> None:
    sup, _, launcher, ports = make()
    result = sup.on_ready("abc", source_type="rtspSession", source_id="s1", query="lang=es")
    assert result.action == "started"
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    (proc,) = launcher.procs
    port = int(proc.spec.argv[proc.spec.argv.index("--metrics-port") + 1])
    assert proc.spec.argv == [
        "fake-worker", "--flag",
        "--stream-id", "abc",
        "--metrics-port", str(port),
    ]  # fmt: skip
    token = proc.spec.env["WORKER_CONTROL_TOKEN"]  # per process, for the console's switch
    assert len(token) >= 32
    assert proc.spec.env == {  # URLs and the control token by environment, never on argv
        "WORKER_INPUT_URL": "rtsp://127.0.0.1:8554/live/abc/in",
        "WORKER_OUTPUT_URL": "rtmp://127.0.0.1:1935/live/abc/out",
        "WORKER_STS_URL": "http://127.0.0.1:8080",
        "WORKER_ORIGINAL_ONLY": "false",
        "WORKER_CONTROL_TOKEN": token,
    }
    info = sup.get("abc")
    assert info is not None
    assert (info.pid, info.metrics_port, info.restarts) == (proc.pid, port, 0)
    assert info.source_type == "rtspSession" and info.source_id == "s1"
    assert sup.query_of("abc") == "lang=es"
    assert sup.metrics_targets() == [("abc", port)]
    assert port in ports.used


async def test_repeated_ready_is_idempotent() -> None:
    sup, _, launcher, _ = make()
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    for _ in range(3):
        assert sup.on_ready("abc").action == "already_active"
    await settle()
    assert len(launcher.procs) == 1
    assert launcher.procs[0].signals == []
    assert sup.workers_running() == 1


async def test_invalid_stream_id_is_refused_defensively() -> None:
    sup, _, launcher, _ = make()
    for bad in ("", "a/b", "../x", "x" * 65, "a b", "é"):
        with pytest.raises(ValueError):
            sup.on_ready(bad)
    assert launcher.procs == []


# --- not-ready grace ---------------------------------------------------------------------------------


async def test_not_ready_stops_after_grace() -> None:
    sup, clock, launcher, _ = make(grace_s=30.0)
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert sup.on_not_ready("abc").action == "grace_started"
    assert state(sup, "abc") == StreamState.GRACE
    assert sup.on_not_ready("abc").action == "grace_pending"  # the deadline does not move
    await clock.advance(29.9)
    assert state(sup, "abc") == StreamState.GRACE
    assert launcher.procs[0].signals == []
    await clock.advance(0.1)
    await eventually(lambda: state(sup, "abc") == StreamState.STOPPED)
    assert launcher.procs[0].signals == [signal.SIGTERM]
    assert len(launcher.procs) == 1
    assert clock.pending() == []
    assert sup.workers_running() == 0


async def test_ready_within_grace_cancels_the_stop() -> None:
    sup, clock, launcher, _ = make(grace_s=30.0)
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    sup.on_not_ready("abc")
    await clock.advance(20.0)
    assert sup.on_ready("abc").action == "grace_cancelled"
    assert state(sup, "abc") == StreamState.RUNNING
    await clock.advance(60.0)
    assert state(sup, "abc") == StreamState.RUNNING
    assert launcher.procs[0].signals == []
    assert len(launcher.procs) == 1


async def test_not_ready_for_unknown_stream_changes_nothing() -> None:
    sup, _, launcher, _ = make()
    assert sup.on_not_ready("nobody").action == "not_running"
    assert sup.streams() == [] and launcher.procs == []


async def test_ready_while_stopping_starts_again_after_exit() -> None:
    sup, clock, launcher, _ = make(grace_s=1.0, stop_timeout_s=5.0)
    launcher.term_exits = False  # the worker takes its time to stop
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    sup.on_not_ready("abc")
    await clock.advance(1.0)
    await eventually(lambda: state(sup, "abc") == StreamState.STOPPING)
    assert sup.on_ready("abc").action == "restart_after_stop"
    launcher.procs[0].exit(0)  # it finally stops
    await eventually(lambda: len(launcher.procs) == 2)
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert sup.get("abc").restarts == 0  # type: ignore[union-attr]


# --- crashes and backoff ---------------------------------------------------------------------------------


async def _crash_and_measure(
    sup: Supervisor, clock: ManualClock, launcher: FakeLauncher, code: int = 1
) -> float:
    """Crash the current worker; return the backoff the supervisor waits before restarting."""
    count = len(launcher.procs)
    launcher.procs[-1].exit(code)
    await eventually(lambda: state(sup, "abc") == StreamState.BACKOFF)
    await settle()
    (remaining,) = clock.pending()
    await clock.advance(remaining - 0.001)
    assert len(launcher.procs) == count  # not yet
    await clock.advance(0.001)
    await eventually(lambda: len(launcher.procs) == count + 1)
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    return remaining


async def test_crash_restarts_with_exponential_capped_backoff() -> None:
    sup, clock, launcher, _ = make(backoff_initial_s=1.0, backoff_multiplier=2.0, backoff_max_s=4.0)
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    delays = [await _crash_and_measure(sup, clock, launcher, code=c) for c in (1, 13, -9, 10, 1)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 4.0, 4.0])
    info = sup.get("abc")
    assert info is not None and info.restarts == 5 and info.last_exit_code == 1
    assert sup.restarts_total == 5
    assert sup.exits_by_code == {1: 2, 13: 1, -9: 1, 10: 1}


async def test_backoff_resets_after_a_stable_run() -> None:
    sup, clock, launcher, _ = make(stable_run_s=10.0)
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert await _crash_and_measure(sup, clock, launcher) == pytest.approx(1.0)
    assert await _crash_and_measure(sup, clock, launcher) == pytest.approx(2.0)
    await clock.advance(10.0)  # this run is stable
    assert await _crash_and_measure(sup, clock, launcher) == pytest.approx(1.0)


async def test_exit_zero_means_done_and_is_not_restarted() -> None:
    sup, clock, launcher, _ = make()
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    launcher.procs[0].exit(0)
    await eventually(lambda: state(sup, "abc") == StreamState.DONE)
    assert clock.pending() == []  # no restart timer exists
    await clock.advance(3600)
    assert len(launcher.procs) == 1
    info = sup.get("abc")
    assert info is not None and info.restarts == 0 and info.last_exit_code == 0 and info.pid is None
    # The publisher comes back later: a new worker.
    assert sup.on_ready("abc").action == "started"
    await eventually(lambda: len(launcher.procs) == 2)


async def test_final_exit_code_is_not_restarted() -> None:
    sup, clock, launcher, _ = make(no_restart_exit_codes="2,14")
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    launcher.procs[0].exit(14)
    await eventually(lambda: state(sup, "abc") == StreamState.FAILED)
    assert clock.pending() == []
    assert len(launcher.procs) == 1


async def test_not_ready_during_backoff_stops_restarting() -> None:
    sup, clock, launcher, _ = make(grace_s=0.5, backoff_initial_s=10.0, backoff_max_s=10.0)
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    launcher.procs[0].exit(1)
    await eventually(lambda: state(sup, "abc") == StreamState.BACKOFF)
    sup.on_not_ready("abc")
    await clock.advance(0.5)
    await eventually(lambda: state(sup, "abc") == StreamState.STOPPED)
    await clock.advance(60.0)
    assert len(launcher.procs) == 1


async def test_spawn_failure_is_retried_with_backoff() -> None:
    sup, clock, launcher, ports = make()
    launcher.fail = True
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.BACKOFF)
    assert ports.used == set()  # the port went back
    launcher.fail = False
    await clock.advance(1.0)
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert sup.get("abc").restarts == 1  # type: ignore[union-attr]


# --- stopping -----------------------------------------------------------------------------------------


async def test_sigterm_ignored_leads_to_sigkill_after_timeout() -> None:
    sup, clock, launcher, _ = make(grace_s=0.0, stop_timeout_s=5.0)
    launcher.term_exits = False
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    sup.on_not_ready("abc")
    await clock.advance(0.0)
    await eventually(lambda: launcher.procs[0].signals == [signal.SIGTERM])
    await clock.advance(4.9)
    assert launcher.procs[0].signals == [signal.SIGTERM]
    await clock.advance(0.1)
    await eventually(lambda: state(sup, "abc") == StreamState.STOPPED)
    assert launcher.procs[0].signals == [signal.SIGTERM, signal.SIGKILL]


async def test_shutdown_stops_every_worker_and_refuses_new_ones() -> None:
    sup, clock, launcher, ports = make()
    for sid in ("a", "b", "c"):
        sup.on_ready(sid)
    await eventually(lambda: sup.workers_running() == 3)
    launcher.procs[0].exit(1)  # one is in backoff at shutdown time
    await eventually(lambda: state(sup, "a") == StreamState.BACKOFF)
    await sup.shutdown()
    assert {state(sup, s) for s in ("a", "b", "c")} == {StreamState.STOPPED}
    assert [p.signals for p in launcher.procs] == [[], [signal.SIGTERM], [signal.SIGTERM]]
    assert all(p.returncode is not None for p in launcher.procs)
    assert sup.workers_running() == 0 and ports.used == set()
    with pytest.raises(ShuttingDown):
        sup.on_ready("d")
    await clock.advance(100.0)
    assert len(launcher.procs) == 3


async def test_kill_all_sends_sigkill() -> None:
    sup, _, launcher, _ = make()
    launcher.term_exits = False
    sup.on_ready("a")
    await eventually(lambda: sup.workers_running() == 1)
    stopping = asyncio.create_task(sup.shutdown())
    await eventually(lambda: launcher.procs[0].signals == [signal.SIGTERM])
    sup.kill_all()
    await stopping
    assert launcher.procs[0].signals == [signal.SIGTERM, signal.SIGKILL]


# --- capacity, stale events ------------------------------------------------------------------------------


async def test_capacity_limit() -> None:
    sup, _, launcher, _ = make(max_streams=2)
    sup.on_ready("a")
    sup.on_ready("b")
    with pytest.raises(CapacityError):
        sup.on_ready("c")
    assert sup.on_ready("a").action == "already_active"  # an active one is not "new"
    await eventually(lambda: sup.workers_running() == 2)
    launcher.of("a")[0].exit(0)
    await eventually(lambda: state(sup, "a") == StreamState.DONE)
    assert sup.on_ready("c").action == "started"


async def test_ready_arriving_after_its_own_not_ready_is_ignored() -> None:
    sup, clock, launcher, _ = make(stale_event_window_s=10.0)
    sup.on_not_ready("abc", source_id="s1")  # the hooks raced: not-ready first
    assert sup.on_ready("abc", source_id="s1").action == "stale_ignored"
    await settle()
    assert launcher.procs == []
    assert sup.on_ready("abc", source_id="s2").action == "started"  # a new publisher


async def test_a_reused_source_id_is_stale_only_within_the_window() -> None:
    sup, clock, launcher, _ = make(stale_event_window_s=10.0)
    sup.on_not_ready("abc", source_id="same")
    await clock.advance(10.0)
    assert sup.on_ready("abc", source_id="same").action == "started"
    await eventually(lambda: len(launcher.procs) == 1)


async def test_not_ready_of_a_previous_publisher_is_ignored() -> None:
    sup, clock, launcher, _ = make(grace_s=1.0)
    sup.on_ready("abc", source_id="s1")
    sup.on_ready("abc", source_id="s2")  # republished; s1's not-ready is late
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert sup.on_not_ready("abc", source_id="s1").action == "stale_ignored"
    await clock.advance(5.0)
    assert state(sup, "abc") == StreamState.RUNNING
    assert sup.on_not_ready("abc", source_id="s2").action == "grace_started"


async def test_count_by_state() -> None:
    sup, _, _, _ = make()
    sup.on_ready("a")
    sup.on_ready("b")
    await eventually(lambda: sup.workers_running() == 2)
    sup.on_not_ready("b")
    counts = sup.count_by_state()
    assert counts[StreamState.RUNNING] == 1 and counts[StreamState.GRACE] == 1
    await sup.shutdown()
