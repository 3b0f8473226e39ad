"""The Echo STS service's protocol logic, independent of Socket.IO.

`StsCore` owns connections, sessions, ordering, statistics, test controls and the per-stream
history that E2E tests read back. It talks to the network only through a `Transport`
(`emit` / `close` / `drop`), so unit tests drive it with a fake transport and a `FakeClock`,
and `server.py` adapts it to python-socketio. It never raises out of an event handler: every
bad input becomes a protocol `error` (or a rejected control ack), every bug is logged.
Handlers return quickly; anything that waits (latency, stream:end, disconnect delay) runs in a
task of its own.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from livedub.clock import Clock, SystemClock
from livedub.log import BoundLogger, bind
from livedub.protocol import (
    CONTROL_MODELS,
    Backpressure,
    BackpressureConfig,
    Capabilities,
    ControlAck,
    DisconnectSimulation,
    ErrorCode,
    ErrorEvent,
    ErrorSimulationConfig,
    EventName,
    FragmentAck,
    FragmentData,
    FragmentProcessed,
    LatencyConfig,
    ProcessingError,
    ProtocolValidationError,
    ResetConfig,
    StreamComplete,
    StreamEnd,
    StreamInit,
    StreamPause,
    StreamReady,
    StreamResume,
    StreamStatistics,
    WireModel,
    WorkerFragmentAck,
    control_ack_event,
    parse_as,
)
from livedub.protocol import constants as c
from livedub.protocol.constants import BackpressureAction, BackpressureSeverity, FragmentAckStatus
from livedub.sts.backend import Backend, BackendResult, EchoBackend
from livedub.sts.metrics import StsMetrics
from livedub.sts.settings import StsSettings
from livedub.sts.simulation import Simulations, Target, ThresholdState

_log = logging.getLogger("livedub.sts")


class Transport(Protocol):
    """What the core needs from the network layer."""

    async def emit(self, sid: str, event: str, data: dict[str, Any]) -> None: ...

    async def close(self, sid: str) -> None:
        """Graceful server-side disconnect (the client will not reconnect by itself)."""
        ...

    async def drop(self, sid: str) -> None:
        """Abrupt drop, like a network failure (the client reconnects by itself)."""
        ...


class ConnectionRefused(Exception):
    """Raised by `StsCore.connect`; the adapter refuses the Socket.IO connection with `data()`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message

    def data(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "message": self.message,
            "severity": self.code.severity,
            "retryable": self.code.retryable,
        }


# --- per-stream history (for GET /debug/streams/<id>) ------------------------------------------


@dataclass
class StreamHistory:
    stream_id: str
    limit: int
    sessions: list[dict[str, Any]] = field(default_factory=list)
    fragment_data: list[dict[str, Any]] = field(default_factory=list)
    acks_sent: list[dict[str, Any]] = field(default_factory=list)
    processed_sent: list[dict[str, Any]] = field(default_factory=list)
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    worker_acks: list[dict[str, Any]] = field(default_factory=list)
    backpressure_sent: list[dict[str, Any]] = field(default_factory=list)
    completes_sent: list[dict[str, Any]] = field(default_factory=list)

    def add(self, items: list[dict[str, Any]], item: dict[str, Any]) -> None:
        if len(items) < self.limit:
            items.append(item)

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "sessions": self.sessions,
            "fragment_data": self.fragment_data,
            "acks_sent": self.acks_sent,
            "processed_sent": self.processed_sent,
            "errors_sent": self.errors_sent,
            "worker_acks": self.worker_acks,
            "backpressure_sent": self.backpressure_sent,
            "completes_sent": self.completes_sent,
        }


# --- connections and sessions ------------------------------------------------------------------


@dataclass
class _Job:
    fragment: FragmentData
    received_at: float
    task: asyncio.Task[BackendResult]


class Session:
    """One `stream:init` → `stream:ready` on one connection (replaced by a second init)."""

    def __init__(self, init: StreamInit, granted: int, received_at: float) -> None:
        self.stream_id = init.stream_id
        self.worker_id = init.worker_id
        self.session_id = str(uuid.uuid4())
        self.config = init.config
        self.timeout_ms = init.timeout_ms
        self.max_inflight = granted
        self.started_at = received_at
        self.paused = False
        self.ending = False
        self.completed = False
        self.next_seq = 0
        self.seen_ids: set[str] = set()
        self.unacked: set[str] = set()
        self.outstanding = 0  # accepted, fragment:processed not sent yet
        self.drained = asyncio.Event()
        self.drained.set()
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.success_count = 0
        self.partial_count = 0
        self.failed_count = 0
        self.total_duration_ms = 0
        self.processing_times_ms: list[int] = []
        self.bp_level = 0
        self.log: BoundLogger = bind(_log, stream_id=self.stream_id, session_id=self.session_id)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel(self) -> list[asyncio.Task[Any]]:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        return tasks

    def statistics(self) -> StreamStatistics:
        times = sorted(self.processing_times_ms)
        n = len(times)
        avg = sum(times) / n if n else 0.0
        p95 = float(times[max(0, math.ceil(0.95 * n) - 1)]) if n else 0.0
        return StreamStatistics(
            success_count=self.success_count,
            partial_count=self.partial_count,
            failed_count=self.failed_count,
            avg_processing_time_ms=round(avg, 3),
            p95_processing_time_ms=p95,
        )


@dataclass
class Connection:
    sid: str
    header_stream_id: str | None
    header_worker_id: str | None
    session: Session | None = None
    closed: bool = False
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def stream_id(self) -> str | None:
        return self.session.stream_id if self.session else self.header_stream_id


def _readable(payload: Any, key: str) -> Any:
    return payload.get(key) if isinstance(payload, Mapping) else None


def _readable_id(payload: Any, key: str) -> str | None:
    value = _readable(payload, key)
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


class StsCore:
    """Protocol state machine of the echo service. See the module docstring."""

    def __init__(
        self,
        settings: StsSettings,
        transport: Transport,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        metrics: StsMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.backend: Backend = backend or EchoBackend()
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics or StsMetrics()
        self.simulations = Simulations(self.clock)
        self.connections: dict[str, Connection] = {}
        self.histories: dict[str, StreamHistory] = {}
        self._disconnects: dict[Target, set[asyncio.Task[None]]] = {}
        self._armed_disconnects: dict[Target, DisconnectSimulation] = {}
        self._token = (
            settings.auth_token.get_secret_value().encode() if settings.auth_token else None
        )

    # --- connection lifecycle ------------------------------------------------------------------
    async def connect(self, sid: str, headers: Mapping[str, str], auth: Any) -> None:
        """Accept a connection or raise `ConnectionRefused`. `headers` keys are lower-case."""
        try:
            self._check_auth(auth)
            stream_hdr = headers.get(c.HEADER_STREAM_ID.lower())
            worker_hdr = headers.get(c.HEADER_WORKER_ID.lower())
            for name, value in ((c.HEADER_STREAM_ID, stream_hdr), (c.HEADER_WORKER_ID, worker_hdr)):
                if value is not None and not c.ID_RE.fullmatch(value):
                    raise ConnectionRefused(
                        ErrorCode.INVALID_CONFIG, f"{name} must match [A-Za-z0-9_-]{{1,64}}"
                    )
            left = self.simulations.refused_ms(stream_hdr) if stream_hdr else 0
            if left > 0:
                raise ConnectionRefused(
                    ErrorCode.RATE_LIMIT,
                    f"simulated: connections for stream {stream_hdr} refused for {left} ms more",
                )
        except ConnectionRefused as exc:
            self.metrics.connections_refused.labels(exc.code.value).inc()
            _log.warning(
                "connection refused",
                extra={"ctx": {"sid": sid, "code": exc.code.value, "reason": exc.message}},
            )
            raise
        self.connections[sid] = Connection(sid, stream_hdr, worker_hdr)
        self.metrics.connections.inc()
        _log.info(
            "connected",
            extra={"ctx": {"sid": sid, "stream_id": stream_hdr, "worker_id": worker_hdr}},
        )

    def _check_auth(self, auth: Any) -> None:
        if self._token is None:
            return
        given = auth.get(c.AUTH_TOKEN_KEY) if isinstance(auth, Mapping) else auth
        given_bytes = given.encode() if isinstance(given, str) else b""
        # compare_digest runs in time independent of where the inputs differ
        if not hmac.compare_digest(given_bytes, self._token):
            raise ConnectionRefused(ErrorCode.AUTH_FAILED, "authentication failed")

    def check_http_auth(self, authorization: str | None) -> bool:
        """`Authorization: Bearer <token>` check for the HTTP control/debug API."""
        if self._token is None:
            return True
        prefix = "Bearer "
        given = (
            authorization[len(prefix) :]
            if authorization and authorization.startswith(prefix)
            else ""
        )
        return hmac.compare_digest(given.encode(), self._token)

    async def disconnect(self, sid: str) -> None:
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        conn.closed = True
        self.metrics.connections.dec()
        current = asyncio.current_task()
        for task in list(conn.tasks):
            if task is not current:  # e.g. _finish closing this very connection
                task.cancel()
        self._end_session(conn, "disconnected")
        _log.info("disconnected", extra={"ctx": {"sid": sid, "stream_id": conn.stream_id}})

    def _end_session(self, conn: Connection, why: str) -> None:
        session, conn.session = conn.session, None
        if session is None:
            return
        session.cancel()
        self.metrics.sessions_active.dec()
        session.log.info("session ended", ctx={"reason": why, "pending": session.outstanding})

    async def shutdown(self) -> None:
        """Cancel every task (sessions, timers); leaves closing sockets to the adapter."""
        tasks: list[asyncio.Task[Any]] = []
        for conn in list(self.connections.values()):
            tasks.extend(conn.tasks)
            if conn.session:
                tasks.extend(conn.session.cancel())
        for group in self._disconnects.values():
            tasks.extend(group)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- event dispatch ------------------------------------------------------------------------
    async def handle(self, sid: str, event: str, payload: Any) -> dict[str, Any] | None:
        """Handle one received event. Returns the control ack dict for control events."""
        conn = self.connections.get(sid)
        if conn is None or conn.closed:
            return None
        try:
            if event in CONTROL_MODELS:
                ack = await self.control(event, payload)
                await self._emit(conn, control_ack_event(event), ack)
                return ack.to_wire()
            if event == EventName.STREAM_INIT:
                await self._on_init(conn, payload)
            elif event == EventName.FRAGMENT_DATA:
                await self._on_fragment(conn, payload)
            elif event == EventName.FRAGMENT_ACK:
                await self._on_worker_ack(conn, payload)
            elif event in (EventName.STREAM_PAUSE, EventName.STREAM_RESUME, EventName.STREAM_END):
                await self._on_stream_control(conn, event, payload)
            else:
                _log.info("unknown event ignored", extra={"ctx": {"sid": sid, "event": event[:64]}})
        except Exception:  # a bug must not take the connection down
            _log.exception("event handler failed", extra={"ctx": {"sid": sid, "event": event[:64]}})
        return None

    # --- sending -------------------------------------------------------------------------------
    async def _emit(self, conn: Connection, event: str, model: WireModel) -> bool:
        data = model.to_wire()
        async with conn.send_lock:
            if conn.closed:
                return False
            try:
                await self.transport.emit(conn.sid, event, data)
            except Exception:  # the client is gone; its disconnect event cleans up
                _log.warning("emit failed", extra={"ctx": {"sid": conn.sid, "event": event}})
                return False
        return True

    async def _send_error(
        self,
        conn: Connection,
        code: ErrorCode,
        message: str,
        *,
        stream_id: str | None = None,
        fragment_id: str | None = None,
    ) -> None:
        event = ErrorEvent.from_code(code, message, stream_id=stream_id, fragment_id=fragment_id)
        self.metrics.errors.labels(code.value).inc()
        session = conn.session
        if session is not None:
            self._history(session.stream_id).add(
                self._history(session.stream_id).errors_sent,
                {"fragment_id": fragment_id, "code": code.value, "session_id": session.session_id},
            )
        _log.warning(
            "error sent",
            extra={
                "ctx": {
                    "sid": conn.sid,
                    "stream_id": stream_id,
                    "fragment_id": fragment_id,
                    "code": code.value,
                    "reason": message[:300],
                }
            },
        )
        await self._emit(conn, EventName.ERROR, event)

    def _history(self, stream_id: str) -> StreamHistory:
        hist = self.histories.get(stream_id)
        if hist is None:
            hist = StreamHistory(stream_id, self.settings.debug_history_limit)
            self.histories[stream_id] = hist
        return hist

    # --- stream:init ---------------------------------------------------------------------------
    async def _on_init(self, conn: Connection, payload: Any) -> None:
        try:
            init = parse_as(StreamInit, payload)
        except ProtocolValidationError as exc:
            await self._send_error(conn, exc.code, exc.message, stream_id=exc.stream_id)
            return
        refusal = await self._init_refusal(conn, init)
        if refusal is not None:
            code, message = refusal
            await self._send_error(conn, code, message, stream_id=init.stream_id)
            if code is ErrorCode.RATE_LIMIT:  # a simulated refusal of the stream: drop it
                await self._drop(conn)
            return
        await self._start_session(conn, init)

    async def _init_refusal(self, conn: Connection, init: StreamInit) -> tuple[ErrorCode, str] | None:
        """Why this stream:init is refused: ids that do not match the connection's headers, a
        simulated refusal of the stream, or a config the backend cannot serve."""
        for name, header, value in (
            (c.HEADER_STREAM_ID, conn.header_stream_id, init.stream_id),
            (c.HEADER_WORKER_ID, conn.header_worker_id, init.worker_id),
        ):
            if header is not None and header != value:
                return ErrorCode.INVALID_CONFIG, f"stream:init {value!r} does not match the {name} header {header!r}"
        left = self.simulations.refused_ms(init.stream_id)
        if left > 0:
            return ErrorCode.RATE_LIMIT, f"simulated: stream {init.stream_id} refused for {left} ms more"
        # tolerant of test doubles written before `check_config` existed
        check = getattr(self.backend, "check_config", None)
        refusal = await check(init.config) if check is not None else None
        return None if refusal is None else (ErrorCode.INVALID_CONFIG, refusal)

    async def _start_session(self, conn: Connection, init: StreamInit) -> None:
        """A new session (a second init replaces the session and cancels a pending close after
        stream:end), then stream:ready."""
        for task in list(conn.tasks):
            task.cancel()
        self._end_session(conn, "replaced by a new stream:init")
        granted = min(init.max_inflight, self.settings.max_inflight)
        session = Session(init, granted, self.clock.monotonic())
        conn.session = session
        session.spawn(self._deliver(conn, session), f"sts-deliver-{session.session_id}")
        self.metrics.sessions.inc()
        self.metrics.sessions_active.inc()
        hist = self._history(session.stream_id)
        hist.add(
            hist.sessions,
            {
                "session_id": session.session_id,
                "worker_id": session.worker_id,
                "max_inflight": granted,
                "config": init.config.to_wire(),
            },
        )
        session.log.info("session ready", ctx={"worker_id": session.worker_id, "max_inflight": granted, "sid": conn.sid})
        ready = StreamReady(
            stream_id=session.stream_id,
            session_id=session.session_id,
            max_inflight=granted,
            capabilities=Capabilities(async_delivery=True, formats=list(c.AUDIO_FORMATS)),
        )
        await self._emit(conn, EventName.STREAM_READY, ready)

    # --- fragment:data -------------------------------------------------------------------------
    async def _on_fragment(self, conn: Connection, payload: Any) -> None:
        """Checks in docs/protocol.md order; the first failure answers with its error."""
        received_at = self.clock.monotonic()
        raw_fid = _readable_id(payload, "fragment_id")
        session = conn.session
        self.metrics.fragments.labels("received").inc()
        if session is None:
            self.metrics.fragments.labels("rejected").inc()
            await self._send_error(
                conn,
                ErrorCode.STREAM_NOT_FOUND,
                "no stream:init on this connection",
                stream_id=_readable_id(payload, "stream_id"),
                fragment_id=raw_fid,
            )
            return
        admitted = self._admit(session, payload, raw_fid)
        if isinstance(admitted, FragmentData):
            await self._accept(conn, session, admitted, received_at)
            return
        code, message = admitted
        self.metrics.fragments.labels("rejected").inc()
        hist = self._history(session.stream_id)
        hist.add(
            hist.fragment_data,
            {
                "fragment_id": raw_fid,
                "sequence_number": _readable(payload, "sequence_number"),
                "session_id": session.session_id,
                "outcome": code.value,
            },
        )
        await self._send_error(conn, code, message, stream_id=session.stream_id, fragment_id=raw_fid)

    def _admit(self, session: Session, payload: Any, raw_fid: str | None) -> FragmentData | tuple[ErrorCode, str]:
        """The fragment, accepted (its sequence number used up), or why not."""
        if session.ending:
            return ErrorCode.STREAM_NOT_FOUND, "stream has ended (stream:end received)"
        try:
            frag = parse_as(FragmentData, payload, max_audio_base64_bytes=self.settings.max_fragment_base64_bytes)
        except ProtocolValidationError as exc:
            self._consume_if_in_order(session, payload, raw_fid)
            return exc.code, exc.message
        refusal = self._out_of_order(session, frag)
        if refusal is not None:
            return refusal
        session.next_seq += 1
        session.seen_ids.add(frag.fragment_id.lower())
        if session.paused:
            return ErrorCode.STREAM_PAUSED, "stream is paused; send stream:resume first"
        if session.outstanding >= self.settings.max_pending_fragments:
            # A client that ignores its grant cannot pile up unbounded work (and audio) here.
            limit = self.settings.max_pending_fragments
            return ErrorCode.QUEUE_FULL, f"{session.outstanding} fragments pending; the limit is {limit}"
        return frag

    @staticmethod
    def _out_of_order(session: Session, frag: FragmentData) -> tuple[ErrorCode, str] | None:
        """Another stream's fragment, a fragment id used before, or a sequence gap / repeat."""
        if frag.stream_id != session.stream_id:
            return ErrorCode.STREAM_NOT_FOUND, (
                f"stream {frag.stream_id} has no session on this connection (session is for {session.stream_id})"
            )
        fid_key = frag.fragment_id.lower()
        if fid_key in session.seen_ids:
            return ErrorCode.DUPLICATE_FRAGMENT, f"fragment_id {frag.fragment_id} was already used"
        seq, expected = frag.sequence_number, session.next_seq
        if seq == expected:
            return None
        if seq > expected:  # a gap: resynchronise so one gap costs one error
            session.next_seq = seq + 1
            session.seen_ids.add(fid_key)
        kind = "gap" if seq > expected else "repeat"
        return ErrorCode.INVALID_SEQUENCE, f"sequence_number {seq} is a {kind}: expected {expected}"

    async def _accept(self, conn: Connection, session: Session, frag: FragmentData, received_at: float) -> None:
        """Queue an accepted fragment for processing and ack it (`fragment:ack` at once)."""
        queue_position = session.outstanding
        session.outstanding += 1
        session.drained.clear()
        session.unacked.add(frag.fragment_id.lower())
        seq = frag.sequence_number
        rule = self.simulations.error_for(session.stream_id, frag.fragment_id, seq)
        delay_ms = self.simulations.delay_ms_for(session.stream_id)
        hist = self._history(session.stream_id)
        record = {"fragment_id": frag.fragment_id, "session_id": session.session_id}
        hist.add(hist.fragment_data, {**record, "sequence_number": seq, "outcome": "accepted"})
        session.log.bind(fragment_id=frag.fragment_id).info(
            "fragment received",
            ctx={
                "sequence_number": seq,
                "duration_ms": frag.audio.duration_ms,
                "bytes_b64": len(frag.audio.data_base64),
                "simulated_error": rule.error_code.value if rule else None,
                "delay_ms": delay_ms,
            },
        )
        sim_error = None
        if rule is not None:
            sim_error = ProcessingError(
                code=rule.error_code, message=rule.error_message, stage=rule.stage, retryable=rule.effective_retryable
            )
        task = session.spawn(self._process(session, frag, sim_error, delay_ms), f"sts-job-{frag.fragment_id}")
        session.jobs.put_nowait(_Job(frag, received_at, task))
        status: FragmentAckStatus = "processing" if queue_position == 0 else "queued"
        ack = FragmentAck(fragment_id=frag.fragment_id, status=status, queue_position=queue_position)
        if await self._emit(conn, EventName.FRAGMENT_ACK, ack):
            hist.add(hist.acks_sent, record)
        await self._check_backpressure(conn, session)
        if self._armed_disconnects:
            self._fire_armed_disconnects()

    @staticmethod
    def _consume_if_in_order(session: Session, payload: Any, fid: str | None) -> None:
        """A rejected fragment whose sequence_number is the expected one still uses it up, so
        the worker's next fragment (seq + 1) is not a gap."""
        seq = _readable(payload, "sequence_number")
        if type(seq) is int and seq == session.next_seq:
            session.next_seq += 1
            if fid is not None:
                session.seen_ids.add(fid.lower())

    async def _process(
        self,
        session: Session,
        frag: FragmentData,
        sim_error: ProcessingError | None,
        delay_ms: int,
    ) -> BackendResult:
        if sim_error is not None:
            result = BackendResult.failed(sim_error)
        else:
            # answered TIMEOUT (retryable) rather than after the worker has given up on it
            budget = session.timeout_ms / 1000.0 - self.settings.deadline_margin_s
            try:
                # no extra task: the backend runs in this session task, so cancelling the session
                # cancels it too (nothing outlives the session)
                async with asyncio.timeout(max(0.05, budget)):
                    result = await self.backend.process(frag, session.config)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                session.log.warning(
                    "fragment missed its deadline", ctx={"fragment_id": frag.fragment_id}
                )
                result = BackendResult.failed(
                    ProcessingError.from_code(
                        ErrorCode.TIMEOUT,
                        f"not processed within {budget:.2f} s (timeout_ms {session.timeout_ms}"
                        f" minus a {self.settings.deadline_margin_s} s margin)",
                    )
                )
            except Exception as exc:
                session.log.exception("backend failed", ctx={"fragment_id": frag.fragment_id})
                result = BackendResult.failed(
                    ProcessingError.from_code(ErrorCode.MODEL_ERROR, f"backend error: {exc}"[:500])
                )
        if delay_ms > 0:
            await self.clock.sleep(delay_ms / 1000.0)
        return result

    async def _deliver(self, conn: Connection, session: Session) -> None:
        """Send `fragment:processed` strictly in arrival (= sequence) order."""
        while True:
            job = await session.jobs.get()
            try:
                await self._deliver_one(conn, session, job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stall the session's later fragments
                session.log.exception(
                    "delivering a fragment failed", ctx={"fragment_id": job.fragment.fragment_id}
                )
            finally:
                session.outstanding -= 1
                if session.outstanding == 0:
                    session.drained.set()
            await self._check_backpressure(conn, session)

    async def _deliver_one(self, conn: Connection, session: Session, job: _Job) -> None:
        result = await job.task
        frag = job.fragment
        processing_ms = max(0, round((self.clock.monotonic() - job.received_at) * 1000))
        processed = self._build_processed(session, frag, result, processing_ms)
        if processed.status == "success":
            session.success_count += 1
        elif processed.status == "partial":
            session.partial_count += 1
        else:
            session.failed_count += 1
            if processed.error is not None:
                self.metrics.errors.labels(processed.error.code.value).inc()
        session.processing_times_ms.append(processing_ms)
        session.total_duration_ms += frag.audio.duration_ms
        self.metrics.fragments.labels(processed.status).inc()
        self.metrics.processing.observe(processing_ms / 1000.0)
        if await self._emit(conn, EventName.FRAGMENT_PROCESSED, processed):
            hist = self._history(session.stream_id)
            hist.add(
                hist.processed_sent,
                {
                    "fragment_id": frag.fragment_id,
                    "sequence_number": frag.sequence_number,
                    "status": processed.status,
                    "session_id": session.session_id,
                    "processing_time_ms": processing_ms,
                    "transcript": processed.transcript,
                    "translated_text": processed.translated_text,
                    "stage_timings": (
                        processed.stage_timings.to_wire() if processed.stage_timings else None
                    ),
                },
            )
        session.log.info(
            "fragment processed",
            ctx={
                "fragment_id": frag.fragment_id,
                "sequence_number": frag.sequence_number,
                "status": processed.status,
                "processing_time_ms": processing_ms,
                "error_code": processed.error.code.value if processed.error else None,
            },
        )

    @staticmethod
    def _build_processed(
        session: Session, frag: FragmentData, result: BackendResult, processing_ms: int
    ) -> FragmentProcessed:
        try:
            return FragmentProcessed(
                fragment_id=frag.fragment_id,
                stream_id=session.stream_id,
                sequence_number=frag.sequence_number,
                status=result.status,
                processing_time_ms=processing_ms,
                dubbed_audio=result.dubbed_audio,
                transcript=result.transcript,
                translated_text=result.translated_text,
                stage_timings=result.stage_timings,
                error=result.error,
                segments=result.segments,
            )
        except ValueError as exc:  # a backend returned an inconsistent result
            return FragmentProcessed(
                fragment_id=frag.fragment_id,
                stream_id=session.stream_id,
                sequence_number=frag.sequence_number,
                status="failed",
                processing_time_ms=processing_ms,
                error=ProcessingError.from_code(
                    ErrorCode.MODEL_ERROR, f"backend returned an invalid result: {exc}"[:500]
                ),
            )

    # --- worker fragment:ack -------------------------------------------------------------------
    async def _on_worker_ack(self, conn: Connection, payload: Any) -> None:
        try:
            ack = parse_as(WorkerFragmentAck, payload)
        except ProtocolValidationError as exc:
            # never name the fragment here: that would resolve it as failed on the worker
            await self._send_error(conn, exc.code, exc.message, stream_id=conn.stream_id)
            return
        session = conn.session
        if session is None:
            _log.info(
                "worker ack without a session ignored",
                extra={"ctx": {"sid": conn.sid, "fragment_id": ack.fragment_id}},
            )
            return
        key = ack.fragment_id.lower()
        hist = self._history(session.stream_id)
        hist.add(hist.worker_acks, {"fragment_id": ack.fragment_id, "status": ack.status})
        if key in session.unacked:
            session.unacked.discard(key)
            session.log.debug(
                "worker ack", ctx={"fragment_id": ack.fragment_id, "status": ack.status}
            )
            await self._check_backpressure(conn, session)
        else:
            session.log.debug(
                "worker ack for a fragment not in flight",
                ctx={"fragment_id": ack.fragment_id, "status": ack.status},
            )

    # --- stream:pause / resume / end -----------------------------------------------------------
    async def _on_stream_control(self, conn: Connection, event: str, payload: Any) -> None:
        try:
            msg: StreamPause | StreamResume | StreamEnd
            if event == EventName.STREAM_PAUSE:
                msg = parse_as(StreamPause, payload)
            elif event == EventName.STREAM_RESUME:
                msg = parse_as(StreamResume, payload)
            else:
                msg = parse_as(StreamEnd, payload)
        except ProtocolValidationError as exc:
            await self._send_error(conn, exc.code, exc.message, stream_id=exc.stream_id)
            return
        session = conn.session
        if session is None or (msg.stream_id is not None and msg.stream_id != session.stream_id):
            await self._send_error(
                conn,
                ErrorCode.STREAM_NOT_FOUND,
                f"{event}: no session for stream {msg.stream_id or '(none)'} on this connection",
                stream_id=msg.stream_id,
            )
            return
        session.log.info(event, ctx={"reason": msg.reason})
        if isinstance(msg, StreamPause):
            session.paused = True
        elif isinstance(msg, StreamResume):
            session.paused = False
        elif not session.ending:
            session.ending = True
            task = asyncio.ensure_future(self._finish(conn, session))
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)

    async def _finish(self, conn: Connection, session: Session) -> None:
        await session.drained.wait()
        stats = session.statistics()
        complete = StreamComplete(
            stream_id=session.stream_id,
            total_fragments=session.success_count + session.partial_count + session.failed_count,
            total_duration_ms=session.total_duration_ms,
            statistics=stats,
        )
        session.completed = True
        hist = self._history(session.stream_id)
        hist.add(hist.completes_sent, {"session_id": session.session_id, **complete.to_wire()})
        session.log.info("stream complete", ctx={"total_fragments": complete.total_fragments})
        await self._emit(conn, EventName.STREAM_COMPLETE, complete)
        await self.clock.sleep(self.settings.close_delay_s)
        if conn.session is session and not conn.closed:
            session.log.info("closing connection after stream:complete")
            await self.transport.close(conn.sid)

    # --- backpressure --------------------------------------------------------------------------
    _LEVELS: dict[int, tuple[BackpressureSeverity, BackpressureAction]] = {
        0: ("low", "none"),
        1: ("low", "none"),
        2: ("medium", "slow_down"),
        3: ("high", "pause"),
    }

    async def _check_backpressure(self, conn: Connection, session: Session) -> None:
        thresholds = self.simulations.thresholds_for(session.stream_id)
        if thresholds is None:
            return
        load = len(session.unacked) / session.max_inflight
        level = thresholds.level(load)
        if level != session.bp_level:
            session.bp_level = level
            await self._send_backpressure(conn, session, level, thresholds)

    async def _send_backpressure(
        self,
        conn: Connection,
        session: Session,
        level: int,
        thresholds: ThresholdState | None,
    ) -> None:
        severity, action = self._LEVELS[level]
        delay = thresholds.slow_down_delay_ms if (thresholds and action == "slow_down") else None
        await self._emit_backpressure(conn, session, severity, action, delay)

    async def _emit_backpressure(
        self,
        conn: Connection,
        session: Session,
        severity: BackpressureSeverity,
        action: BackpressureAction,
        recommended_delay_ms: int | None,
    ) -> None:
        event = Backpressure(
            stream_id=session.stream_id,
            severity=severity,
            action=action,
            current_inflight=len(session.unacked),
            queue_depth=session.outstanding,
            recommended_delay_ms=recommended_delay_ms,
        )
        self.metrics.backpressure.labels(action).inc()
        hist = self._history(session.stream_id)
        hist.add(hist.backpressure_sent, {"session_id": session.session_id, **event.to_wire()})
        session.log.info(
            "backpressure",
            ctx={"severity": severity, "action": action, "inflight": len(session.unacked)},
        )
        await self._emit(conn, EventName.BACKPRESSURE, event)

    async def _reconcile_backpressure(self, target: Target) -> None:
        """After a control change: re-evaluate threshold mode; if it is now off for a session that
        was told to slow down or pause, tell it `none`."""
        for conn, session in self._sessions(target):
            if self.simulations.thresholds_for(session.stream_id) is None:
                if session.bp_level >= 2:
                    session.bp_level = 0
                    await self._send_backpressure(conn, session, 0, None)
                session.bp_level = 0
            else:
                await self._check_backpressure(conn, session)

    # --- test controls -------------------------------------------------------------------------
    def _sessions(self, target: Target) -> list[tuple[Connection, Session]]:
        return [
            (conn, conn.session)
            for conn in self.connections.values()
            if conn.session is not None
            and not conn.closed
            and (target is None or conn.session.stream_id == target)
        ]

    async def control(self, event: str, payload: Any) -> ControlAck:
        """Apply one test control (from Socket.IO or HTTP) and return its ack."""
        model = CONTROL_MODELS.get(event)
        if model is None:
            ack = ControlAck.rejected(f"unknown control {event[:64]!r}")
        else:
            try:
                cfg = parse_as(model, payload, event=event)
            except ProtocolValidationError as exc:
                ack = ControlAck.rejected(exc.message)
            else:
                ack = await self._apply_control(cfg)
        self.metrics.controls.labels(event if model else "unknown", ack.status).inc()
        _log.info(
            "control",
            extra={
                "ctx": {
                    "event": event[:64],
                    "stream_id": _readable_id(payload, "stream_id"),
                    "status": ack.status,
                    "reason": ack.message[:300],
                }
            },
        )
        return ack

    async def _apply_control(self, cfg: WireModel) -> ControlAck:
        target: Target = getattr(cfg, "stream_id", None)
        where = f"stream {target}" if target else "all streams"
        if isinstance(cfg, ErrorSimulationConfig):
            self.simulations.set_error_simulation(cfg)
            state = "enabled" if cfg.enabled else "disabled"
            return ControlAck.accepted(
                f"error simulation {state} with {len(cfg.rules)} rule(s) for {where}"
            )
        if isinstance(cfg, LatencyConfig):
            self.simulations.set_latency(cfg)
            if cfg.delay_ms is not None:
                return ControlAck.accepted(f"latency {cfg.delay_ms} ms for {where}")
            return ControlAck.accepted(
                f"latency uniform {cfg.min_delay_ms}-{cfg.max_delay_ms} ms (seed {cfg.seed}) for {where}"
            )
        if isinstance(cfg, BackpressureConfig):
            return await self._apply_backpressure(cfg, target, where)
        if isinstance(cfg, DisconnectSimulation):
            matched = sum(1 for conn in self.connections.values() if self._bound_to(conn, target))
            refuse = (
                f", then refusing reconnects for {cfg.refuse_reconnect_ms} ms"
                if cfg.refuse_reconnect_ms
                else ""
            )
            if cfg.min_inflight is not None:
                self._armed_disconnects[target] = cfg
                self._fire_armed_disconnects()
                return ControlAck.accepted(
                    f"dropping the connections of {where} {cfg.delay_ms} ms after a session holds"
                    f" {cfg.min_inflight} unanswered fragment(s) ({matched} connected now){refuse}"
                )
            self._schedule_disconnect(target, cfg)
            return ControlAck.accepted(
                f"dropping the connections of {where} in {cfg.delay_ms} ms"
                f" ({matched} connected now){refuse}"
            )
        if isinstance(cfg, ResetConfig):
            self.simulations.reset(target)
            if target is None:
                self._armed_disconnects.clear()
            else:
                self._armed_disconnects.pop(target, None)
            groups = list(self._disconnects) if target is None else [target]
            for key in groups:
                for pending in list(self._disconnects.get(key, ())):
                    pending.cancel()
            await self._reconcile_backpressure(target)
            return ControlAck.accepted(f"all simulations cleared for {where}")
        return ControlAck.rejected(f"unsupported control {type(cfg).__name__}")  # pragma: no cover

    async def _apply_backpressure(
        self, cfg: BackpressureConfig, target: Target, where: str
    ) -> ControlAck:
        sessions = self._sessions(target)
        if cfg.emit is not None and not sessions and cfg.threshold_mode is None:
            return ControlAck.rejected(f"no live session for {where} to emit backpressure to")
        parts = []
        if self.simulations.set_backpressure(cfg):
            await self._reconcile_backpressure(target)
            parts.append(f"threshold mode {'on' if cfg.threshold_mode else 'off'} for {where}")
        if cfg.emit is not None:
            for conn, session in sessions:
                await self._emit_backpressure(
                    conn, session, cfg.emit.severity, cfg.emit.action, cfg.emit.recommended_delay_ms
                )
            parts.append(f"emitted {cfg.emit.action} to {len(sessions)} session(s)")
        return ControlAck.accepted("; ".join(parts))

    def _schedule_disconnect(self, target: Target, cfg: DisconnectSimulation) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(
            self._disconnect_later(target, cfg.delay_ms, cfg.refuse_reconnect_ms)
        )
        group = self._disconnects.setdefault(target, set())
        group.add(task)
        task.add_done_callback(group.discard)

    def _fire_armed_disconnects(self) -> None:
        """Schedule each armed `simulate:disconnect` whose condition holds now: a live session of
        its target holds at least `min_inflight` accepted, unanswered fragments. One-shot."""
        for target, cfg in list(self._armed_disconnects.items()):
            held = max((s.outstanding for _, s in self._sessions(target)), default=0)
            if cfg.min_inflight is not None and held >= cfg.min_inflight:
                del self._armed_disconnects[target]
                _log.info(
                    "armed disconnect fired",
                    extra={"ctx": {"stream_id": target, "inflight": held}},
                )
                self._schedule_disconnect(target, cfg)

    @staticmethod
    def _bound_to(conn: Connection, target: Target) -> bool:
        stream = conn.stream_id
        return stream is not None and (target is None or stream == target)

    async def _disconnect_later(
        self, target: Target, delay_ms: int, refuse_reconnect_ms: int | None
    ) -> None:
        await self.clock.sleep(delay_ms / 1000.0)
        if refuse_reconnect_ms:
            self.simulations.refuse(target, refuse_reconnect_ms)
        victims = [conn for conn in self.connections.values() if self._bound_to(conn, target)]
        _log.info(
            "simulated disconnect",
            extra={"ctx": {"stream_id": target, "connections": len(victims)}},
        )
        for conn in victims:
            await self._drop(conn)

    async def _drop(self, conn: Connection) -> None:
        async with conn.send_lock:  # nothing more goes out on this connection
            conn.closed = True
        try:
            await self.transport.drop(conn.sid)
        except Exception:
            _log.warning("drop failed", extra={"ctx": {"sid": conn.sid}})

    # --- introspection -------------------------------------------------------------------------
    def debug_stream(self, stream_id: str) -> dict[str, Any] | None:
        hist = self.histories.get(stream_id)
        if hist is None:
            return None
        doc = hist.to_json()
        doc["live_sessions"] = [
            {
                "session_id": s.session_id,
                "sid": conn.sid,
                "paused": s.paused,
                "ending": s.ending,
                "next_sequence_number": s.next_seq,
                "inflight": len(s.unacked),
                "outstanding": s.outstanding,
                "max_inflight": s.max_inflight,
            }
            for conn, s in self._sessions(stream_id)
        ]
        return doc

    def summary(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "sessions": len(self._sessions(None)),
            "streams": sorted(self.histories),
            "simulations": self.simulations.active_counts(),
        }
