"""The Echo STS service on the network: python-socketio (WebSocket) + aiohttp HTTP endpoints.

Adapts `StsCore` to a Socket.IO `AsyncServer` and serves `GET /health`, `GET /metrics`,
`POST /control/<name>` and `GET /debug/streams[/<stream_id>]` on the same port.

In-process (tests):  `async with run_sts(StsSettings(port=0)) as sts: sts.url, sts.port`
Subprocess:          `livedub sts --port P`  (see `livedub.sts.cli`)

Never holds protocol logic (that is `core`), never logs the auth token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web

from livedub import __version__
from livedub.clock import Clock
from livedub.protocol import CLIENT_EVENTS, LANGUAGES_ROUTE, ControlAck, EventName, wirejson
from livedub.protocol import constants as c
from livedub.sts.backend import Backend, EchoBackend, ReportsLanguages
from livedub.sts.core import ConnectionRefused, StsCore
from livedub.sts.debug import DEBUG_STREAMS_PATH
from livedub.sts.metrics import StsMetrics
from livedub.sts.settings import BackendKind, StsSettings

_log = logging.getLogger("livedub.sts")

# HTTP names for the controls: the event name itself, or its short form.
CONTROL_ALIASES: dict[str, str] = {
    **{str(e): str(e) for e in c.CONTROL_EVENTS},
    "error_simulation": EventName.CONFIG_ERROR_SIMULATION,
    "latency": EventName.CONFIG_LATENCY,
    "backpressure": EventName.CONFIG_BACKPRESSURE,
    "disconnect": EventName.SIMULATE_DISCONNECT,
    "reset": EventName.CONFIG_RESET,
}


class _SocketIOTransport:
    """`Transport` over a python-socketio AsyncServer."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def emit(self, sid: str, event: str, data: dict[str, Any]) -> None:
        await self.sio.emit(event, data, to=sid)

    async def close(self, sid: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, c.NAMESPACE)
        await self.sio.disconnect(sid)
        if eio_sid is not None:
            await self.sio.eio.disconnect(eio_sid)

    async def drop(self, sid: str) -> None:
        """Abort the TCP connection: the client sees a transport error and reconnects."""
        transport = None
        try:
            environ = self.sio.get_environ(sid) or {}
            request = environ.get("aiohttp.request")
            transport = request.transport if request is not None else None
        except Exception:  # pragma: no cover - defensive
            transport = None
        if transport is not None:
            transport.abort()
        else:  # pragma: no cover - fall back to a graceful close
            await self.close(sid)


def _headers_from_environ(environ: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers[key[5:].replace("_", "-").lower()] = value
    return headers


def make_backend(settings: StsSettings, metrics: StsMetrics) -> Backend:
    """The backend `settings.backend` names (the dub engines are imported only when used)."""
    if settings.backend is BackendKind.DUB:
        from livedub.sts.dub.backend import DubBackend

        backend = DubBackend(settings, metrics=metrics)
        backend.warm()  # before the port opens: /health answers once the engines are ready
        return backend
    return EchoBackend()


class StsServer:
    """The echo service: Socket.IO + HTTP on one aiohttp application."""

    def __init__(
        self,
        settings: StsSettings,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = StsMetrics()
        self._owns_backend = backend is None  # a backend passed in is the caller's to close
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            json=wirejson,  # the audio's long base64 strings: see protocol/wirejson.py
            transports=list(c.TRANSPORTS),
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_timeout_s,
            max_http_buffer_size=settings.max_message_bytes,
            # one connection's events are handled in arrival order (handlers never block)
            async_handlers=False,
            logger=False,
            engineio_logger=False,
        )
        self.core = StsCore(
            settings,
            _SocketIOTransport(self.sio),
            backend=backend or make_backend(settings, self.metrics),  # closed by stop()
            clock=clock,
            metrics=self.metrics,
        )
        self.ready = False
        self.app = web.Application(client_max_size=1024 * 1024)
        self.sio.attach(self.app, socketio_path=c.SOCKETIO_PATH.strip("/"))
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get(LANGUAGES_ROUTE, self._languages)
        self.app.router.add_post("/control/{name}", self._control)
        self.app.router.add_get(DEBUG_STREAMS_PATH, self._debug_streams)
        self.app.router.add_get(DEBUG_STREAMS_PATH + "/{stream_id}", self._debug_stream)
        self._register_handlers()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # --- Socket.IO -----------------------------------------------------------------------------
    def _register_handlers(self) -> None:
        core = self.core

        async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            try:
                await core.connect(sid, _headers_from_environ(environ), auth)
            except ConnectionRefused as exc:
                raise socketio.exceptions.ConnectionRefusedError(str(exc), exc.data()) from None
            return True

        async def on_disconnect(sid: str, reason: Any = None) -> None:
            await core.disconnect(sid)

        self.sio.on("connect", on_connect)
        self.sio.on("disconnect", on_disconnect)

        def make_handler(event: str) -> Any:
            async def handler(sid: str, data: Any = None, *_: Any) -> Any:
                return await core.handle(sid, event, data)

            return handler

        for event in CLIENT_EVENTS:
            self.sio.on(event, make_handler(event))

        async def on_any(event: str, sid: str, data: Any = None, *_: Any) -> None:
            await core.handle(sid, event, data)

        self.sio.on("*", on_any)

    # --- HTTP ----------------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "backend": self.core.backend.name,
                **self.core.summary(),
            }
        )

    async def _languages(self, request: web.Request) -> web.Response:
        """The language pairs the backend dubs (no auth: capabilities, like /health's backend).
        A backend that cannot tell answers 404 (callers then take every language as possible)."""
        backend = self.core.backend
        if not self.ready:
            return web.json_response({"status": "starting"}, status=503)
        if not isinstance(backend, ReportsLanguages) or not callable(backend.languages):
            return web.json_response({"error": "not_reported", "backend": backend.name}, status=404)
        info = await asyncio.to_thread(backend.languages)  # the dub backend lists mode files
        return web.json_response(info.to_wire())

    async def _metrics(self, request: web.Request) -> web.Response:
        for kind, count in self.core.simulations.active_counts().items():
            self.metrics.simulations_active.labels(kind).set(count)
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type}
        )

    def _authorized(self, request: web.Request) -> bool:
        return self.core.check_http_auth(request.headers.get("Authorization"))

    async def _control(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(
                ControlAck.rejected("authentication failed").to_wire(), status=401
            )
        event = CONTROL_ALIASES.get(request.match_info["name"])
        if event is None:
            return web.json_response(
                ControlAck.rejected(
                    f"unknown control {request.match_info['name'][:64]!r}"
                ).to_wire(),
                status=404,
            )
        if request.content_type != c.JSON_CONTENT_TYPE:
            return web.json_response(
                ControlAck.rejected(f"Content-Type must be {c.JSON_CONTENT_TYPE}").to_wire(),
                status=415,
            )
        body = await request.read()
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return web.json_response(
                ControlAck.rejected(f"invalid JSON: {exc}").to_wire(), status=400
            )
        ack = await self.core.control(event, payload)
        return web.json_response(ack.to_wire(), status=200 if ack.status == "accepted" else 400)

    async def _debug_streams(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "authentication failed"}, status=401)
        return web.json_response(self.core.summary())

    async def _debug_stream(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "authentication failed"}, status=401)
        doc = self.core.debug_stream(request.match_info["stream_id"])
        if doc is None:
            return web.json_response({"error": "unknown stream"}, status=404)
        return web.json_response(doc)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=self.settings.shutdown_timeout_s
        )
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        self._runner = runner
        port = 0
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                port = int(addr[1])
                break
        self.port = port
        self.ready = True
        _log.info(
            "sts ready",
            extra={
                "ctx": {
                    "host": self.settings.host,
                    "port": port,
                    "auth": self.settings.auth_token is not None,
                    "backend": self.core.backend.name,
                }
            },
        )
        return port

    async def stop(self) -> None:
        self.ready = False
        await self.core.shutdown()
        close = getattr(self.core.backend, "close", None)
        if self._owns_backend and close is not None:
            close()
        for sock in list(self.sio.eio.sockets.values()):
            try:  # wait=False: a half-closed socket must not block the shutdown
                await asyncio.wait_for(
                    sock.close(wait=False), timeout=self.settings.shutdown_timeout_s
                )
            except Exception:  # pragma: no cover - best effort
                _log.warning("closing a client connection failed or timed out")
        self.sio.eio.sockets.clear()
        try:
            await self.sio.shutdown()
        except Exception:  # pragma: no cover
            pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        _log.info("sts stopped")


@dataclass
class RunningSts:
    """Handle of an in-process echo service."""

    server: StsServer
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def core(self) -> StsCore:
        return self.server.core


@asynccontextmanager
async def run_sts(
    settings: StsSettings | None = None,
    *,
    backend: Backend | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[RunningSts]:
    """Run the echo service in this event loop: `async with run_sts(StsSettings(port=0)) as sts`.
    The server is stopped on exit, even on error."""
    settings = settings or StsSettings()
    server = StsServer(settings, backend=backend, clock=clock)
    port = await server.start()
    try:
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        yield RunningSts(server, host, port)
    finally:
        await server.stop()


async def serve(settings: StsSettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    async with run_sts(settings):
        await stop.wait()
