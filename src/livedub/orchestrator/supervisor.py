"""Worker processes: one OS process per (stream, language), started, restarted and stopped by rules.

A stream has one worker per language (issue 18; `languages` of `on_ready`), or one worker without
a language (nothing configured: as before). Hooks stay per stream: a ready starts every language
of the stream, a not-ready stops them all; each worker is supervised, restarted and counted on
its own, so one language's crash never touches another's process or output.

Rules (docs/operations.md): a ready event starts the stream's worker (repeated ready events change
nothing); not-ready stops it after a grace period that a new ready cancels; a worker that exits
non-zero is restarted after a backoff (initial × multiplier^n, capped, reset after a stable run)
unless it was stopped or its code is final; exit 0 means the stream is done. `shutdown()` stops
every worker (SIGTERM to its process group, SIGKILL after a timeout) and leaves nothing running.

This module never parses HTTP, never decides whether a caller may start a stream (the service
does), never blocks the event loop, and signals only processes it started itself. All waiting goes
through the injected `Clock`, so unit tests drive every timer by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import secrets
import signal
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from livedub.clock import Clock, SystemClock
from livedub.exitcodes import ORPHAN_SIGNAL
from livedub.log import BoundLogger, bind
from livedub.orchestrator.settings import OrchestratorSettings, is_valid_stream_id
from livedub.subproc import pdeathsig_preexec

log = bind("livedub.orchestrator.supervisor")

_KEPT_FINISHED = 256  # finished streams kept for GET /v1/streams
_ENDED_SOURCES_KEPT = 1024  # (stream_id, source_id) pairs whose not-ready was seen
_OUTPUT_DRAIN_S = 1.0  # how long to keep reading a dead worker's pipe
_CHUNK_BYTES = 65536
PRIMARY = object()  # `Supervisor.get`: the stream's first language
_WITHHELD_ENV = frozenset({"ORCH_HOOK_SECRET", "ORCH_API_TOKEN"})  # never handed to a worker
#: How a worker gets its console controls (WorkerSettings' env names; worker/control.py).
WORKER_ENV_ORIGINAL_ONLY = "WORKER_ORIGINAL_ONLY"
WORKER_ENV_CONTROL_TOKEN = "WORKER_CONTROL_TOKEN"


class StreamState(enum.StrEnum):
    STARTING = "starting"  # process being spawned
    RUNNING = "running"  # process alive
    GRACE = "grace"  # process alive, not-ready received, stop scheduled
    BACKOFF = "backoff"  # crashed, restart scheduled
    STOPPING = "stopping"  # SIGTERM sent, waiting for exit
    STOPPED = "stopped"  # stopped on request (not-ready grace over, or shutdown)
    DONE = "done"  # worker exited 0: the stream ended
    FAILED = "failed"  # worker exited with a final code (see no_restart_exit_codes)


class CapacityError(Exception):
    """`max_streams` workers are already active."""


class ShuttingDown(Exception):
    """The supervisor is stopping; it starts nothing any more."""


class UnknownStream(KeyError):
    """No stream with that id is known."""


@dataclass(frozen=True)
class ControlTarget:
    """Where and how to reach a live worker's control route (worker/control.py)."""

    port: int
    token: str = field(repr=False)  # the worker's WORKER_CONTROL_TOKEN: never logged


# --- processes -------------------------------------------------------------------------------


class WorkerProcess(Protocol):
    """A started worker process."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int:
        """Wait for the exit; returns the exit code (negative: killed by that signal)."""
        ...

    def signal(self, sig: int) -> None:
        """Send `sig` to the process (and its process group) if it has not exited."""
        ...


@dataclass(frozen=True)
class LaunchSpec:
    stream_id: str
    argv: list[str]
    log_path: Path | None  # None: the output goes to `output_sink`, prefixed with the label
    env: Mapping[str, str] = field(default_factory=dict)  # added to the environment
    language: str | None = None

    @property
    def label(self) -> str:
        """`<id>`, or `<id>/<lang>` for a language's worker (log prefixes, task names)."""
        return worker_label(self.stream_id, self.language)


def worker_label(stream_id: str, language: str | None) -> str:
    return stream_id if language is None else f"{stream_id}/{language}"


class Launcher(Protocol):
    async def launch(self, spec: LaunchSpec) -> WorkerProcess: ...


class _SubprocessWorker:
    def __init__(self, proc: asyncio.subprocess.Process, pump: asyncio.Task[None] | None) -> None:
        self._proc = proc
        self._pump = pump

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        code = await self._proc.wait()
        if self._pump is not None and not self._pump.done():
            # A grandchild may still hold the pipe open: read what is there, then let go.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), _OUTPUT_DRAIN_S)
            self._pump.cancel()
        return code

    def signal(self, sig: int) -> None:
        if self._proc.returncode is not None:
            return  # reaped: its pid may belong to someone else now
        try:
            os.killpg(self._proc.pid, sig)  # the worker leads its own process group
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)


class SubprocessLauncher:
    """Starts workers as real processes, each in its own session/process group.

    Output goes to a per-stream log file (appended), or is read from a pipe and written to
    `output_sink` line by line as `[<stream_id>] <line>`.
    """

    def __init__(self, *, pdeathsig: bool = True, output_sink: IO[str] | None = None) -> None:
        self._preexec = pdeathsig_preexec(ORPHAN_SIGNAL) if pdeathsig else None
        self._sink = output_sink

    @staticmethod
    def _env(extra: Mapping[str, str]) -> dict[str, str]:
        """The orchestrator's environment minus its own secrets (workers get WORKER_* etc.),
        plus `extra` (the worker's URLs)."""
        return {**{k: v for k, v in os.environ.items() if k not in _WITHHELD_ENV}, **extra}

    async def launch(self, spec: LaunchSpec) -> WorkerProcess:
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(spec.log_path, "ab", buffering=0) as out:
                proc = await asyncio.create_subprocess_exec(
                    *spec.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                    env=self._env(spec.env),
                )
            return _SubprocessWorker(proc, None)
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._preexec,
            env=self._env(spec.env),
        )
        assert proc.stdout is not None
        pump = asyncio.create_task(
            _pump_lines(proc.stdout, spec.label, self._sink or sys.stderr),
            name=f"worker-output-{spec.label}",
        )
        return _SubprocessWorker(proc, pump)


async def _pump_lines(reader: asyncio.StreamReader, label: str, sink: IO[str]) -> None:
    prefix = f"[{label}] "
    pending = b""
    while True:
        chunk = await reader.read(_CHUNK_BYTES)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > _CHUNK_BYTES:  # an endless line: emit it in pieces
            lines.append(pending)
            pending = b""
        _emit(sink, prefix, lines)
    if pending:
        _emit(sink, prefix, [pending])


def _emit(sink: IO[str], prefix: str, lines: list[bytes]) -> None:
    if not lines:
        return
    text = "".join(prefix + ln.decode("utf-8", "replace").rstrip("\r") + "\n" for ln in lines)
    try:
        sink.write(text)
        sink.flush()
    except (OSError, ValueError):  # closed stderr: never let a worker block on its pipe
        pass


# --- metrics ports -----------------------------------------------------------------------------


class PortAllocator:
    """Hands out worker metrics ports: from [port_min, port_max], or any free port if min is 0."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        self._host = host
        self._min = port_min
        self._max = port_max
        self._used: set[int] = set()

    def acquire(self, prefer: int | None = None) -> int:
        if self._min == 0:
            for _ in range(32):
                port = self._probe(0)
                if port and port not in self._used:
                    self._used.add(port)
                    return port
            raise OSError("no free port for a worker's metrics")
        candidates = list(range(self._min, self._max + 1))
        if prefer is not None and self._min <= prefer <= self._max:
            candidates.insert(0, prefer)
        for port in candidates:
            if port not in self._used and self._probe(port):
                self._used.add(port)
                return port
        raise OSError(f"no free worker metrics port in {self._min}-{self._max}")

    def release(self, port: int) -> None:
        self._used.discard(port)

    def _probe(self, port: int) -> int:
        """Bind-test `port` (as an HTTP server would, with SO_REUSEADDR); 0 when taken."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self._host, port))
            except OSError:
                return 0
            bound: int = sock.getsockname()[1]
            return bound


# --- streams -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamInfo:
    """A snapshot of one stream, as GET /v1/streams shows it."""

    stream_id: str
    state: StreamState
    pid: int | None
    restarts: int
    started_at: float | None  # unix time of the current process's start
    uptime_s: float | None
    metrics_port: int | None
    last_exit_code: int | None
    grace_remaining_s: float | None
    source_type: str | None
    source_id: str | None
    language: str | None = None  # None: the worker's own target language (nothing configured)
    outputs: tuple[str, ...] = ()  # media paths it publishes
    original_only: bool = False  # the operator's original-only switch (kept across restarts)

    def as_json(self) -> dict[str, object]:
        return {
            "stream_id": self.stream_id,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "uptime_s": None if self.uptime_s is None else round(self.uptime_s, 3),
            "metrics_port": self.metrics_port,
            "last_exit_code": self.last_exit_code,
            "grace_remaining_s": (
                None if self.grace_remaining_s is None else round(self.grace_remaining_s, 3)
            ),
            "source_type": self.source_type,
            "source_id": self.source_id,
            "language": self.language,
            "outputs": list(self.outputs),
            "original_only": self.original_only,
        }


class _Stream:
    """One worker's record: a (stream, language) pair."""

    def __init__(self, stream_id: str, language: str | None = None) -> None:
        self.stream_id = stream_id
        self.language = language
        self.primary = True  # publishes live/<id>/out (the stream's first language)
        self.state = StreamState.STARTING
        self.wanted = False
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.grace_task: asyncio.Task[None] | None = None
        self.grace_deadline: float | None = None
        self.proc: WorkerProcess | None = None
        self.started_mono: float | None = None
        self.started_wall: float | None = None
        self.metrics_port: int | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.source_type: str | None = None
        self.source_id: str | None = None
        self.query: str | None = None
        self.original_only = False  # the operator's switch: applied to every process of the stream
        self.control_token: str | None = None  # of the current process
        self.restart_requested = False  # the operator asked for a new process
        self.operator_stopped = False  # stopped by the operator; cleared by the next start

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.stream_id, self.language)

    @property
    def label(self) -> str:
        return worker_label(self.stream_id, self.language)


@dataclass(frozen=True)
class EventResult:
    stream_id: str
    action: str  # started | already_active | grace_cancelled | grace_started | ...
    state: StreamState | None
    languages: tuple[str | None, ...] = ()  # the stream's workers after the event


class Supervisor:
    """Owns every worker process; all methods are called from the event loop's thread."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        clock: Clock | None = None,
        launcher: Launcher | None = None,
        ports: PortAllocator | None = None,
        on_slot_freed: Callable[[], None] | None = None,
    ) -> None:
        self._s = settings
        self.on_slot_freed = on_slot_freed  # a stream stopped being active (a slot is free)
        self._clock = clock or SystemClock()
        self._launcher = launcher or SubprocessLauncher(pdeathsig=settings.worker_pdeathsig)
        self._ports = ports or PortAllocator(
            settings.worker_metrics_host,
            settings.worker_metrics_port_min,
            settings.worker_metrics_port_max,
        )
        self._final_codes = settings.final_exit_codes()
        self._streams: dict[tuple[str, str | None], _Stream] = {}  # (stream id, language)
        self._ended_sources: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._closing = False
        self.restarts_total = 0
        self.exits_by_code: dict[int, int] = {}

    # --- events ---------------------------------------------------------------------------

    def on_ready(
        self,
        stream_id: str,
        *,
        source_type: str | None = None,
        source_id: str | None = None,
        query: str | None = None,
        languages: Sequence[str | None] | None = None,
    ) -> EventResult:
        """The stream's input is published: make sure a worker runs for each of its `languages`
        (None: one worker without a language, as before issue 18). The first language publishes
        `live/<id>/out`. For a stream that already has workers, the languages it lacks are added
        (never primary while another worker is) and the running ones are kept."""
        self._check_id(stream_id)
        if self._closing:
            raise ShuttingDown()
        wanted: list[str | None] = list(dict.fromkeys(languages)) if languages else [None]
        slog = log.bind(stream_id=stream_id)
        ended_at = self._ended_sources.get((stream_id, source_id)) if source_id else None
        if (
            ended_at is not None
            and self._clock.monotonic() - ended_at < self._s.stale_event_window_s
        ):
            # A ready that arrives after its own not-ready (the hooks run concurrently).
            slog.warning("stale ready event ignored", ctx={"source_id": source_id})
            rec = self._primary(stream_id)
            return EventResult(stream_id, "stale_ignored", rec.state if rec else None)
        active = [r for r in self._records(stream_id) if r.active]
        keys = {r.key for r in active}
        missing = [lang for lang in wanted if (stream_id, lang) not in keys]
        if any(r.primary for r in active):  # live/<id>/out has its publisher already
            missing = [lang for lang in missing if lang is not None]
        if self._active_count() + len(missing) > self._s.max_streams:
            raise CapacityError(f"{self._s.max_streams} workers already active")
        if active:
            actions = [self._reactivate(r, source_type, source_id, query) for r in active]
            has_primary = any(r.primary for r in active)
            for lang in missing:
                rec = self._start(stream_id, lang, source_type, source_id, query)
                rec.primary = not has_primary and lang == wanted[0]
                has_primary = has_primary or rec.primary
            first = self._primary(stream_id)
            action = actions[0]
            slog.info("ready", ctx={"action": action, "added": [m for m in missing if m]})
            return EventResult(
                stream_id, action, self._public_state(first) if first else None, self._languages_of(stream_id)
            )
        for key in [
            k for k, r in self._streams.items()
            if k[0] == stream_id and k[1] not in wanted and not r.operator_stopped
        ]:
            del self._streams[key]  # finished records of languages this publish does not have
        for i, lang in enumerate(wanted):
            rec = self._start(stream_id, lang, source_type, source_id, query)
            rec.primary = i == 0
        slog.info("ready: starting worker", ctx={"source_type": source_type, "languages": [w for w in wanted if w]})
        return EventResult(stream_id, "started", StreamState.STARTING, tuple(wanted))

    def _reactivate(
        self, rec: _Stream, source_type: str | None, source_id: str | None, query: str | None
    ) -> str:
        """A ready for a worker that is active: cancel its grace, or start it again once it has
        stopped; returns the action."""
        was_grace = rec.grace_task is not None
        self._cancel_grace(rec)
        self._note_source(rec, source_type, source_id, query)
        if rec.wanted:
            return "grace_cancelled" if was_grace else "already_active"
        # stopping: the lifecycle loop starts it again once the old process is gone
        rec.wanted = True
        rec.stop_event.clear()
        return "restart_after_stop"

    def _start(
        self,
        stream_id: str,
        language: str | None,
        source_type: str | None,
        source_id: str | None,
        query: str | None,
    ) -> _Stream:
        rec = self._streams.pop((stream_id, language), None)
        if rec is None:
            rec = _Stream(stream_id, language)
            self._streams[rec.key] = rec
            self._prune()
        else:
            self._streams[rec.key] = rec  # re-inserted: most recent last
            rec.restarts = 0
        self._note_source(rec, source_type, source_id, query)
        rec.wanted = True
        rec.stop_event.clear()
        rec.state = StreamState.STARTING
        rec.task = asyncio.create_task(self._lifecycle(rec), name=f"stream-{rec.label}")
        return rec

    def on_not_ready(self, stream_id: str, *, source_id: str | None = None) -> EventResult:
        """The stream's input went away: stop its workers (every language) after the grace period."""
        self._check_id(stream_id)
        slog = log.bind(stream_id=stream_id)
        if source_id:
            self._ended_sources[(stream_id, source_id)] = self._clock.monotonic()
            while len(self._ended_sources) > _ENDED_SOURCES_KEPT:
                self._ended_sources.popitem(last=False)
        recs = [r for r in self._records(stream_id) if r.active and r.wanted]
        if not recs:
            rec = self._primary(stream_id)
            return EventResult(stream_id, "not_running", rec.state if rec else None)
        actions: list[str] = []
        for rec in recs:
            if rec.source_id and source_id != rec.source_id:
                # The not-ready of an earlier publisher, arriving after the new one's ready, or
                # one that does not name the publisher that started the worker: never stops it.
                slog.warning("stale not-ready event ignored", ctx={"source_id": source_id})
                actions.append("stale_ignored")
            elif rec.grace_task is not None:
                actions.append("grace_pending")
            else:
                rec.grace_deadline = self._clock.monotonic() + self._s.grace_s
                rec.grace_task = asyncio.create_task(self._grace(rec), name=f"grace-{rec.label}")
                actions.append("grace_started")
        if "grace_started" in actions:
            slog.info("not-ready: stopping after grace", ctx={"grace_s": self._s.grace_s})
        first = self._primary(stream_id)
        assert first is not None
        return EventResult(
            stream_id, actions[0], self._public_state(first), self._languages_of(stream_id)
        )

    # --- operator actions (the console) ---------------------------------------------------
    # Each addresses one worker: (stream, language); without a language, the stream's first one
    # (the worker that publishes `live/<id>/out`), as `get` does.

    def _known(self, stream_id: str, language: str | None | object = PRIMARY) -> _Stream:
        if language is PRIMARY:
            rec = self._primary(stream_id)
        else:
            rec = self._streams.get((stream_id, language))  # type: ignore[arg-type]
        if rec is None:
            raise UnknownStream(stream_id)
        return rec

    def operator_stop(self, stream_id: str, language: str | None | object = PRIMARY) -> EventResult:
        """Stop the worker now (SIGTERM: it drains). A later ready starts it again; the reconcile
        pass leaves a stopped worker alone while the same publisher is live."""
        rec = self._known(stream_id, language)
        if not rec.active or not rec.wanted:
            return EventResult(stream_id, "not_running", self._public_state(rec))
        self._cancel_grace(rec)
        rec.wanted = False
        rec.operator_stopped = True
        rec.stop_event.set()
        log.info("operator: stopping worker", ctx=self._ctx(rec))
        return EventResult(stream_id, "stopping", self._public_state(rec))

    def operator_restart(self, stream_id: str, language: str | None | object = PRIMARY) -> EventResult:
        """A new worker process: the running one is stopped (it drains) and a new one started at
        once, not counted as a crash; a worker in backoff restarts now; a stopped, done or failed
        one starts again (like a ready, in its own language and role)."""
        rec = self._known(stream_id, language)
        if self._closing:
            raise ShuttingDown()
        if rec.active and rec.wanted:
            rec.restart_requested = True
            rec.stop_event.set()
            log.info("operator: restarting worker", ctx=self._ctx(rec))
            return EventResult(stream_id, "restarting", self._public_state(rec))
        if rec.active:  # stopping: the lifecycle loop starts it again once the old process is gone
            action = self._reactivate(rec, rec.source_type, rec.source_id, rec.query)
            return EventResult(stream_id, action, self._public_state(rec))
        if self._active_count() + 1 > self._s.max_streams:
            raise CapacityError(f"{self._s.max_streams} workers already active")
        self._start(rec.stream_id, rec.language, rec.source_type, rec.source_id, rec.query)
        log.info("operator: starting worker", ctx=self._ctx(rec))
        return EventResult(stream_id, "started", StreamState.STARTING)

    def set_original_only(
        self, stream_id: str, enabled: bool, language: str | None | object = PRIMARY
    ) -> ControlTarget | None:
        """Record the worker's original-only switch (every later process starts with it); returns
        where to tell the live worker now, or None if no worker process is alive."""
        rec = self._known(stream_id, language)
        if rec.original_only != enabled:
            rec.original_only = enabled
            log.info(
                "operator: original-only switched",
                ctx={**self._ctx(rec), "original_only": str(enabled).lower()},
            )
        return self._control_target(rec)

    def operator_stopped_languages(self, stream_id: str, source_id: str | None) -> set[str | None]:
        """The languages of `stream_id` whose worker the operator stopped while this publisher
        (`source_id`) was live and nothing started since (reconcile leaves them)."""
        return {
            r.language
            for r in self._records(stream_id)
            if r.operator_stopped and not r.active and r.source_id == source_id
        }

    def control_target(
        self, stream_id: str, language: str | None | object = PRIMARY
    ) -> ControlTarget | None:
        try:
            return self._control_target(self._known(stream_id, language))
        except UnknownStream:
            return None

    @staticmethod
    def _control_target(rec: _Stream) -> ControlTarget | None:
        if (
            rec.proc is None
            or rec.proc.returncode is not None
            or not rec.metrics_port
            or rec.control_token is None
        ):
            return None
        return ControlTarget(rec.metrics_port, rec.control_token)

    # --- queries --------------------------------------------------------------------------

    def streams(self) -> list[StreamInfo]:
        """One row per worker: (stream, language)."""
        return [self._info(rec) for rec in self._streams.values()]

    def get(self, stream_id: str, language: str | None | object = PRIMARY) -> StreamInfo | None:
        """The worker of (stream, language); without a language, the stream's first one (the
        worker that publishes `live/<id>/out`)."""
        if language is PRIMARY:
            rec = self._primary(stream_id)
        else:
            rec = self._streams.get((stream_id, language))  # type: ignore[arg-type]
        return None if rec is None else self._info(rec)

    def is_active(self, stream_id: str) -> bool:
        """The stream has a worker (running, starting, in backoff or stopping)."""
        return any(rec.active for rec in self._records(stream_id))

    def query_of(self, stream_id: str) -> str | None:
        """The publisher's query string of the stream (not shown by the API: it may hold tokens)."""
        rec = self._primary(stream_id)
        return None if rec is None else rec.query

    def metrics_targets(self) -> list[tuple[str, int]]:
        """(stream_id, metrics port) of every worker process that is alive now."""
        return [(sid, port) for sid, _lang, port in self.worker_targets()]

    def worker_targets(self) -> list[tuple[str, str | None, int]]:
        """(stream_id, language, metrics port) of every worker process that is alive now."""
        return [
            (rec.stream_id, rec.language, rec.metrics_port)
            for rec in self._streams.values()
            if rec.proc is not None and rec.proc.returncode is None and rec.metrics_port
        ]

    def workers_running(self) -> int:
        return sum(
            1
            for rec in self._streams.values()
            if rec.proc is not None and rec.proc.returncode is None
        )

    def count_by_state(self) -> dict[StreamState, int]:
        counts = dict.fromkeys(StreamState, 0)
        for rec in self._streams.values():
            counts[self._public_state(rec)] += 1
        return counts

    @property
    def closing(self) -> bool:
        return self._closing

    # --- shutdown -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every worker (SIGTERM, SIGKILL after stop_timeout_s) and wait for all of them."""
        self._closing = True
        tasks = []
        for rec in self._streams.values():
            self._cancel_grace(rec)
            rec.wanted = False
            rec.stop_event.set()
            if rec.task is not None:
                tasks.append(rec.task)
        if tasks:
            log.info("stopping all workers", ctx={"streams": len(tasks)})
            await asyncio.gather(*tasks, return_exceptions=True)

    def kill_all(self) -> None:
        """SIGKILL every live worker now (a second SIGTERM/SIGINT during shutdown)."""
        for rec in self._streams.values():
            if rec.proc is not None:
                rec.proc.signal(signal.SIGKILL)

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_id(stream_id: str) -> None:
        if not is_valid_stream_id(stream_id):
            raise ValueError(f"invalid stream id: {stream_id!r}")

    @staticmethod
    def _note_source(
        rec: _Stream, source_type: str | None, source_id: str | None, query: str | None
    ) -> None:
        if source_id:
            rec.source_type = source_type
            rec.source_id = source_id
            rec.query = query
        elif rec.source_id is None:
            rec.source_type = source_type
            rec.query = query

    def _records(self, stream_id: str) -> list[_Stream]:
        """The stream's workers, in the order they were started."""
        return [rec for rec in self._streams.values() if rec.stream_id == stream_id]

    def _primary(self, stream_id: str) -> _Stream | None:
        """The stream's first language (its `live/<id>/out`), else its first worker record."""
        recs = self._records(stream_id)
        return next((r for r in recs if r.primary), recs[0] if recs else None)

    def _languages_of(self, stream_id: str) -> tuple[str | None, ...]:
        return tuple(r.language for r in self._records(stream_id) if r.active)

    def _active_count(self) -> int:
        """Active workers (a stream with two languages counts two: `max_streams` bounds workers)."""
        return sum(1 for rec in self._streams.values() if rec.active)

    def _prune(self) -> None:
        finished = [key for key, rec in self._streams.items() if not rec.active]
        excess = len(finished) - _KEPT_FINISHED
        for key in finished[: max(0, excess)]:
            del self._streams[key]

    def _cancel_grace(self, rec: _Stream) -> None:
        if rec.grace_task is not None:
            rec.grace_task.cancel()
            rec.grace_task = None
        rec.grace_deadline = None

    async def _grace(self, rec: _Stream) -> None:
        await self._clock.sleep(self._s.grace_s)
        rec.grace_task = None
        rec.grace_deadline = None
        rec.wanted = False
        rec.stop_event.set()
        log.info("grace period over: stopping worker", ctx=self._ctx(rec))

    def _public_state(self, rec: _Stream) -> StreamState:
        if rec.grace_task is not None and rec.state == StreamState.RUNNING:
            return StreamState.GRACE
        return rec.state

    def _info(self, rec: _Stream) -> StreamInfo:
        alive = rec.proc is not None and rec.proc.returncode is None
        now = self._clock.monotonic()
        return StreamInfo(
            stream_id=rec.stream_id,
            state=self._public_state(rec),
            pid=rec.proc.pid if alive and rec.proc is not None else None,
            restarts=rec.restarts,
            started_at=rec.started_wall if alive else None,
            uptime_s=(now - rec.started_mono) if alive and rec.started_mono is not None else None,
            metrics_port=rec.metrics_port if alive else None,
            last_exit_code=rec.last_exit_code,
            grace_remaining_s=(
                max(0.0, rec.grace_deadline - now) if rec.grace_deadline is not None else None
            ),
            source_type=rec.source_type,
            source_id=rec.source_id,
            language=rec.language,
            outputs=tuple(self._s.output_paths(rec.stream_id, rec.language, rec.primary)),
            original_only=rec.original_only,
        )

    @staticmethod
    def _ctx(rec: _Stream) -> dict[str, str]:
        """Log context of a worker: its stream id, and its language when it has one."""
        ctx = {"stream_id": rec.stream_id}
        if rec.language is not None:
            ctx["language"] = rec.language
        return ctx

    def _stopping(self, rec: _Stream) -> bool:
        return self._closing or not rec.wanted

    async def _lifecycle(self, rec: _Stream) -> None:
        slog = log.bind(**self._ctx(rec))
        backoff_s = self._s.backoff_initial_s
        try:
            while not self._stopping(rec):
                rec.state = StreamState.STARTING
                code, run_s, stopped = await self._run_once(rec, slog)
                if stopped:
                    continue  # stopped on request; runs again only if a ready came meanwhile
                if self._stopping(rec):
                    break
                if code == 0:
                    rec.wanted = False
                    rec.state = StreamState.DONE
                    slog.info("worker finished (exit 0): stream done")
                    return
                if code is not None and code in self._final_codes:
                    rec.wanted = False
                    rec.state = StreamState.FAILED
                    slog.error("worker exited with a final code: not restarted", ctx={"code": code})
                    return
                if run_s >= self._s.stable_run_s:
                    backoff_s = self._s.backoff_initial_s
                rec.restarts += 1
                self.restarts_total += 1
                rec.state = StreamState.BACKOFF
                slog.warning(
                    "worker crashed: restarting after backoff",
                    ctx={"code": code, "run_s": round(run_s, 3), "backoff_s": backoff_s},
                )
                await self._sleep_unless_stopped(rec, backoff_s)
                backoff_s = min(backoff_s * self._s.backoff_multiplier, self._s.backoff_max_s)
            rec.state = StreamState.STOPPED
            slog.info("worker stopped")
        except asyncio.CancelledError:
            rec.state = StreamState.STOPPED
            raise
        except Exception:  # a bug here must not leave a process behind
            slog.exception("stream supervision failed")
            rec.wanted = False
            rec.state = StreamState.FAILED
        finally:
            if rec.proc is not None and rec.proc.returncode is None:
                rec.proc.signal(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.shield(rec.proc.wait())
            rec.proc = None
            if self.on_slot_freed is not None and not self._closing:
                asyncio.get_running_loop().call_soon(self.on_slot_freed)  # after this task is done

    async def _run_once(self, rec: _Stream, slog: BoundLogger) -> tuple[int | None, float, bool]:
        """Start the worker once and wait for its end. Returns (exit code, run time, stopped)."""
        try:
            port = self._ports.acquire(prefer=rec.metrics_port)
        except OSError as exc:
            slog.error("no metrics port for the worker", ctx={"error": str(exc)})
            return None, 0.0, False
        try:
            rec.metrics_port = port
            argv = self._s.worker_argv(rec.stream_id, port, rec.language, rec.primary)
            name = rec.stream_id if rec.language is None else f"{rec.stream_id}.{rec.language}"
            log_path = self._s.log_dir / f"{name}.log" if self._s.log_dir else None
            rec.restart_requested = rec.operator_stopped = False
            rec.control_token = secrets.token_urlsafe(32)  # a new one per process
            env = {
                **self._s.worker_env(rec.stream_id, rec.language, rec.primary),
                WORKER_ENV_ORIGINAL_ONLY: "true" if rec.original_only else "false",
                WORKER_ENV_CONTROL_TOKEN: rec.control_token,
            }
            try:
                spec = LaunchSpec(rec.stream_id, argv, log_path, env, rec.language)
                proc = await self._launcher.launch(spec)
            except (OSError, ValueError) as exc:
                slog.error("worker could not be started", ctx={"error": str(exc), "argv0": argv[0]})
                return None, 0.0, False
            rec.proc = proc
            rec.started_mono = self._clock.monotonic()
            rec.started_wall = self._clock.wall()
            rec.state = StreamState.RUNNING
            slog.info("worker started", ctx={"pid": proc.pid, "metrics_port": port})
            code, stopped = await self._wait_exit_or_stop(rec, proc, slog)
            run_s = self._clock.monotonic() - rec.started_mono
            rec.last_exit_code = code
            self.exits_by_code[code] = self.exits_by_code.get(code, 0) + 1
            rec.proc = None
            slog.info(
                "worker exited", ctx={"pid": proc.pid, "code": code, "run_s": round(run_s, 3)}
            )
            return code, run_s, stopped
        finally:
            self._ports.release(port)

    async def _wait_exit_or_stop(
        self, rec: _Stream, proc: WorkerProcess, slog: BoundLogger
    ) -> tuple[int, bool]:
        exit_task = asyncio.ensure_future(proc.wait())
        try:
            while True:
                stop_task = asyncio.ensure_future(rec.stop_event.wait())
                await asyncio.wait({exit_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                stop_task.cancel()
                if exit_task.done():
                    return exit_task.result(), False
                if self._stopping(rec) or rec.restart_requested:
                    break
                rec.stop_event.clear()  # set, then undone by a ready: keep running
            rec.state = StreamState.STOPPING
            proc.signal(signal.SIGTERM)
            if not await self._wait_for(exit_task, self._s.stop_timeout_s):
                slog.warning(
                    "worker ignored SIGTERM: killing", ctx={"timeout_s": self._s.stop_timeout_s}
                )
                proc.signal(signal.SIGKILL)
            return await exit_task, True
        finally:
            if not exit_task.done():
                exit_task.cancel()

    async def _wait_for(self, fut: Awaitable[object], timeout_s: float) -> bool:
        """Wait for `fut` at most `timeout_s` on the clock; True if it finished."""
        task = asyncio.ensure_future(fut)
        timer = asyncio.ensure_future(self._clock.sleep(timeout_s))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return task.done()

    async def _sleep_unless_stopped(self, rec: _Stream, seconds: float) -> None:
        stop_task = asyncio.ensure_future(rec.stop_event.wait())
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({stop_task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            timer.cancel()
