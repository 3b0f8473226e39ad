"""The worker's Socket.IO client for one STS session: connect, stream:init → stream:ready, send
fragments, receive results, end the stream.

It owns the socket and nothing else: it does not retry (the runner's reconnect loop does), does not
track fragments (the FragmentTracker does) and never blocks the media path. Incoming events are
validated against `livedub.protocol` models; an invalid message is handed to `on_invalid` with its
reason and never raises. Sends are serialised (python-socketio's emit is not safe concurrently).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import socketio

from livedub.clock import Clock, SystemClock, wait_within
from livedub.log import bind
from livedub.protocol import (
    Backpressure,
    ErrorCode,
    ErrorEvent,
    FragmentAck,
    FragmentProcessed,
    StreamComplete,
    StreamConfig,
    StreamEnd,
    StreamInit,
    StreamReady,
    WireModel,
    constants,
    wirejson,
)
from livedub.protocol.constants import EventName
from livedub.protocol.parse import short_reason
from livedub.typed import ValidationError, explain
from livedub.worker.config import WorkerSettings

_log = logging.getLogger(__name__)


class ConnectFailure(enum.StrEnum):
    """Why connecting or initialising the STS session failed."""

    UNREACHABLE = "unreachable"  # no connection, or it dropped before stream:ready (retried)
    AUTH = "auth"  # AUTH_FAILED: our token was refused (final)
    CONFIG = "config"  # stream:init refused, e.g. INVALID_CONFIG for a language pair (final)
    READY_TIMEOUT = "ready_timeout"  # no stream:ready in time (retried)


class StsConnectError(Exception):
    """Connecting or initialising the session failed, and why (`kind`)."""

    def __init__(self, kind: ConnectFailure, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


def refusal_code(data: Any) -> str | None:
    """The error code of a refused Socket.IO connection: the STS refuses with
    `{"message": "...", "data": {"code": ..., ...}}` (python-socketio's ConnectionRefusedError with
    our error payload); None when the refusal carries no code."""
    if not isinstance(data, dict):
        return None
    inner = data.get("data")
    code = inner.get("code") if isinstance(inner, dict) else data.get("code")
    return code if isinstance(code, str) else None


@dataclass
class StsHandlers:
    """Callbacks into the runner. All are awaited on the event loop; none may block."""

    on_ack: Callable[[FragmentAck], Awaitable[None]]
    on_processed: Callable[[FragmentProcessed], Awaitable[None]]
    on_backpressure: Callable[[Backpressure], Awaitable[None]]
    on_error: Callable[[ErrorEvent], Awaitable[None]]
    on_disconnect: Callable[[str], Awaitable[None]]
    on_invalid: Callable[[str, str, Any], Awaitable[None]]  # (event, reason, raw payload)


class _GuardedAsyncClient(socketio.AsyncClient):
    """python-socketio handles each received message in a task of its own, and a packet it cannot
    decode (not JSON, unknown packet type) escapes that task as an unretrieved exception. Here it is
    reported through `on_garbage` and dropped; the connection stays up."""

    on_garbage: Callable[[str], Awaitable[None]] | None = None

    async def _handle_eio_message(self, data: Any) -> None:
        try:
            await super()._handle_eio_message(data)
        except Exception as exc:  # noqa: BLE001 - a hostile packet must never kill the client
            if self.on_garbage is not None:
                await self.on_garbage(f"undecodable packet: {type(exc).__name__}: {exc}"[:300])


class StsClient:
    def __init__(self, settings: WorkerSettings, handlers: StsHandlers, clock: Clock | None = None) -> None:
        self.settings = settings
        self.handlers = handlers
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=settings.stream_id)
        self.sio: socketio.AsyncClient | None = None
        self.ready: StreamReady | None = None
        self._send_lock = asyncio.Lock()
        self._ready_fut: asyncio.Future[StreamReady] | None = None
        self._complete_fut: asyncio.Future[StreamComplete] | None = None
        self._connect_error: Any = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self.sio is not None and self.sio.connected and self.ready is not None

    # -- connection ------------------------------------------------------------------------------
    async def connect(self, audio_rate_hz: int, audio_channels: int) -> StreamReady:
        """Connect, send stream:init with the true audio parameters, wait for stream:ready."""
        sio = await self._open()
        await self.emit(EventName.STREAM_INIT, self._init(audio_rate_hz, audio_channels).to_wire())
        assert self._ready_fut is not None
        try:
            if not await wait_within(self.clock, self._ready_fut, self.settings.ready_timeout_s):
                raise StsConnectError(
                    ConnectFailure.READY_TIMEOUT, f"no stream:ready within {self.settings.ready_timeout_s:g} s"
                )
        except StsConnectError:
            await self._drop(sio)
            raise
        ready = self._ready_fut.result()
        self.ready = ready
        self.log.info(
            "STS session ready",
            ctx={"session_id": ready.session_id, "granted_max_inflight": ready.max_inflight},
        )
        return ready

    async def _open(self) -> socketio.AsyncClient:
        """A new Socket.IO connection with our headers and token (the old one closed first)."""
        await self.close()
        self._closing = False
        self.ready = None
        self._connect_error = None
        # The websocket message limit must hold a whole dubbed fragment (aiohttp's default is 4 MiB).
        sio = _GuardedAsyncClient(
            reconnection=False,
            json=wirejson,
            logger=False,
            engineio_logger=False,
            websocket_extra_options={"max_msg_size": constants.DEFAULT_MAX_MESSAGE_BYTES},
        )
        sio.on_garbage = lambda reason: self.handlers.on_invalid("packet", reason, None)
        self.sio = sio
        self._register(sio)
        self._ready_fut = asyncio.get_running_loop().create_future()
        headers = {"X-Stream-ID": self.settings.stream_id, "X-Worker-ID": self.settings.worker_id}
        token = self.settings.sts_auth_token
        auth = {"token": token.get_secret_value()} if token else None
        try:
            await sio.connect(
                self.settings.sts_url,
                headers=headers,
                auth=auth,
                transports=["websocket"],
                wait_timeout=int(max(1, self.settings.connect_timeout_s)),
            )
        except (socketio.exceptions.ConnectionError, OSError, TimeoutError, ValueError) as exc:
            await self._drop(sio)
            detail = self._connect_error or str(exc)
            if refusal_code(self._connect_error) == ErrorCode.AUTH_FAILED.value:
                raise StsConnectError(ConnectFailure.AUTH, str(detail)) from exc
            raise StsConnectError(ConnectFailure.UNREACHABLE, str(detail)) from exc
        return sio

    def _init(self, audio_rate_hz: int, audio_channels: int) -> StreamInit:
        s = self.settings
        return StreamInit(
            stream_id=s.stream_id,
            worker_id=s.worker_id,
            config=StreamConfig(
                source_language=s.source_language,
                target_language=s.target_language,
                voice_profile=s.voice_profile,
                chunk_duration_ms=int(round(s.segment_s * 1000)),
                sample_rate_hz=audio_rate_hz,
                channels=audio_channels,
                format=s.transport_format,
            ),
            max_inflight=s.max_inflight,
            timeout_ms=int(round(s.fragment_timeout_s * 1000)),
        )

    async def close(self) -> None:
        """Close deliberately (no on_disconnect callback)."""
        self._closing = True
        if self.sio is not None:
            await self._drop(self.sio)
        self.sio = None
        self.ready = None

    async def _drop(self, sio: socketio.AsyncClient) -> None:
        self._closing = True
        try:
            await sio.disconnect()
        except Exception:  # noqa: BLE001 - best effort on a socket that may be gone
            pass

    # -- sending ---------------------------------------------------------------------------------
    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        sio = self.sio
        if sio is None or not sio.connected:
            raise ConnectionError("STS not connected")
        async with self._send_lock:
            await sio.emit(event, payload)

    async def end_stream(self, reason: str = "end_of_input") -> StreamComplete | None:
        """stream:end, then wait (bounded) for stream:complete. None if it never came."""
        if self.sio is None or not self.sio.connected:
            return None
        self._complete_fut = asyncio.get_running_loop().create_future()
        await self.emit(EventName.STREAM_END, StreamEnd(stream_id=self.settings.stream_id, reason=reason).to_wire())
        if await wait_within(self.clock, self._complete_fut, self.settings.end_timeout_s):
            return self._complete_fut.result()
        self.log.warning("no stream:complete within end timeout", ctx={"timeout_s": self.settings.end_timeout_s})
        return None

    # -- receiving -------------------------------------------------------------------------------
    def _register(self, sio: socketio.AsyncClient) -> None:
        @sio.on("connect_error")
        async def _connect_error(data: Any = None) -> None:
            self._connect_error = data

        @sio.on("disconnect")
        async def _disconnect(reason: Any = None) -> None:
            if sio is not self.sio or self._closing:
                return
            self.ready = None
            if self._ready_fut and not self._ready_fut.done():
                self._ready_fut.set_exception(StsConnectError(ConnectFailure.UNREACHABLE, "disconnected before ready"))
            await self.handlers.on_disconnect(str(reason or "transport closed"))

        @sio.on("stream:ready")
        async def _ready(data: Any = None) -> None:
            ready = await parse_event(self.handlers, EventName.STREAM_READY, StreamReady, data)
            if ready is not None and self._ready_fut and not self._ready_fut.done():
                self._ready_fut.set_result(ready)

        @sio.on("stream:complete")
        async def _complete(data: Any = None) -> None:
            done = await parse_event(self.handlers, EventName.STREAM_COMPLETE, StreamComplete, data)
            if done is not None and self._complete_fut and not self._complete_fut.done():
                self._complete_fut.set_result(done)

        for event in (EventName.FRAGMENT_ACK, EventName.FRAGMENT_PROCESSED, EventName.BACKPRESSURE):
            sio.on(str(event))(self._route(event))

        @sio.on("error")
        async def _error(data: Any = None) -> None:
            err = await parse_event(self.handlers, EventName.ERROR, ErrorEvent, data)
            if err is None:
                return
            if self._ready_fut and not self._ready_fut.done() and err.fragment_id is None:
                kind = ConnectFailure.AUTH if err.code is ErrorCode.AUTH_FAILED else ConnectFailure.CONFIG
                self._ready_fut.set_exception(StsConnectError(kind, f"{err.code.value}: {err.message}"))
                return
            await self.handlers.on_error(err)

    def _route(self, event: EventName) -> Callable[[Any], Awaitable[None]]:
        async def handler(data: Any = None) -> None:
            await deliver(self.handlers, event, data)

        return handler


M = TypeVar("M", bound=WireModel)

# Received events handed to a handler once valid: event → (model, the handler in StsHandlers).
ROUTES: dict[str, tuple[type[WireModel], Callable[[StsHandlers], Callable[[Any], Awaitable[None]]]]] = {
    EventName.FRAGMENT_ACK: (FragmentAck, lambda h: h.on_ack),
    EventName.FRAGMENT_PROCESSED: (FragmentProcessed, lambda h: h.on_processed),
    EventName.BACKPRESSURE: (Backpressure, lambda h: h.on_backpressure),
    EventName.ERROR: (ErrorEvent, lambda h: h.on_error),
}


async def parse_event(handlers: StsHandlers, event: str, model: type[M], data: Any) -> M | None:
    """`data` as `model`; None (and `on_invalid` told why) when it is not one. Never raises."""
    try:
        return model.parse(data)
    except ValidationError as exc:
        await handlers.on_invalid(event, _reason(exc), data)
    except Exception as exc:  # noqa: BLE001 - a hostile payload must never kill the client
        await handlers.on_invalid(event, f"unparseable: {exc}", data)
    return None


async def deliver(handlers: StsHandlers, event: str, data: Any) -> None:
    """Validate one received event of `ROUTES` and hand it to its handler (or to `on_invalid`)."""
    model, handler = ROUTES[event]
    msg = await parse_event(handlers, event, model, data)
    if msg is not None:
        await handler(handlers)(msg)


def _reason(exc: ValidationError) -> str:
    return f"schema_invalid: {short_reason(explain(exc))}"
