"""`StsLink`: the worker's connection to the STS service — the Socket.IO client plus reconnection.

It connects when the first segment gives the audio parameters, reconnects after a drop on the
`ReconnectPolicy` schedule (2, 4, 8, 16, 32 s by default), and reports what matters to its
listener (the `DubbingSession`): a session became ready, the link dropped, the STS refused the
stream config. A final failure (token refused, reconnection attempts exhausted) is reported once
to `on_fatal` with its exit code. Received events go straight to the listener's handlers.

It never tracks fragments, never decides a segment's audio and never raises into its caller.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any, Protocol

from livedub.clock import Clock
from livedub.exitcodes import ExitCode
from livedub.log import bind
from livedub.protocol import (
    Backpressure,
    ErrorEvent,
    FragmentAck,
    FragmentProcessed,
    StreamComplete,
    StreamReady,
)
from livedub.worker.config import WorkerSettings
from livedub.worker.outcomes import OutcomeRecorder
from livedub.worker.reconnect import ReconnectPolicy
from livedub.worker.sts_client import ConnectFailure, StsClient, StsConnectError, StsHandlers

_log = logging.getLogger(__name__)

AUTH_REFUSED = "STS refused our token (AUTH_FAILED)"


class ConnState(enum.StrEnum):
    """The worker's STS link, as `/health` shows it (`sts`)."""

    IDLE = "idle"  # no segment yet: nothing to connect for
    CONNECTING = "connecting"  # the first connection
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # dropped or failed: retrying with backoff
    UNAVAILABLE = "unavailable"  # reconnection attempts exhausted (the worker exits)
    CONFIG_REFUSED = "config_refused"  # stream:init refused: every segment goes out original
    PASSTHROUGH = "passthrough"  # configured not to use an STS


class OnFatal(Protocol):
    def __call__(self, code: ExitCode, message: str, **ctx: Any) -> None: ...


class LinkListener(Protocol):
    """What the link reports to (the session). All run on the event loop and must not block."""

    def on_ready(self, ready: StreamReady) -> None: ...
    def on_disconnected(self, reason: str) -> None: ...
    def on_config_refused(self, message: str) -> None: ...
    async def on_ack(self, ack: FragmentAck) -> None: ...
    async def on_processed(self, msg: FragmentProcessed) -> None: ...
    async def on_backpressure(self, bp: Backpressure) -> None: ...
    async def on_error(self, err: ErrorEvent) -> None: ...
    async def on_invalid(self, event: str, reason: str, raw: Any) -> None: ...


class StsClientLike(Protocol):
    """What the link uses of `StsClient` (a test's fake STS implements the same)."""

    @property
    def connected(self) -> bool: ...
    async def connect(self, audio_rate_hz: int, audio_channels: int) -> StreamReady: ...
    async def emit(self, event: str, payload: dict[str, Any]) -> None: ...
    async def end_stream(self, reason: str = "end_of_input") -> StreamComplete | None: ...
    async def close(self) -> None: ...


ClientFactory = Callable[[StsHandlers], StsClientLike]


class StsLink:
    """One stream's STS connection. `start(rate, channels)` begins connecting (once)."""

    def __init__(
        self,
        settings: WorkerSettings,
        clock: Clock,
        listener: LinkListener,
        recorder: OutcomeRecorder,
        on_fatal: OnFatal,
        client_factory: ClientFactory | None = None,
    ) -> None:
        s = settings
        self.settings = s
        self.clock = clock
        self.listener = listener
        self.recorder = recorder
        self._on_fatal = on_fatal
        self.log = bind(_log, stream_id=s.stream_id)
        handlers = StsHandlers(
            on_ack=listener.on_ack,
            on_processed=listener.on_processed,
            on_backpressure=listener.on_backpressure,
            on_error=listener.on_error,
            on_disconnect=self._on_disconnect,
            on_invalid=listener.on_invalid,
        )
        self.client = client_factory(handlers) if client_factory else StsClient(s, handlers, clock)
        self.policy = ReconnectPolicy(
            clock,
            base_delay_s=s.reconnect_base_s,
            factor=s.reconnect_factor,
            max_attempts=s.reconnect_max_attempts,
            jitter_ratio=s.reconnect_jitter,
            on_attempt=lambda n, d: self.log.info("STS reconnect attempt", ctx={"attempt": n, "delay_s": round(d, 3)}),
            stream_id=s.stream_id,
        )
        self.state = ConnState.PASSTHROUGH if s.passthrough else ConnState.IDLE
        self._audio: tuple[int, int] | None = None
        self._first_attempt_done = asyncio.Event()  # the initial connect attempt ended (either way)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False  # a final failure was reported: no more attempts

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def connecting_first(self) -> bool:
        """The first connection attempt is under way."""
        return self.state is ConnState.CONNECTING and not self.client.connected

    async def first_attempt_done(self) -> None:
        await self._first_attempt_done.wait()

    def start(self, rate: int, channels: int) -> None:
        """Connect with these audio parameters (for `stream:init`); later calls do nothing."""
        if self._audio is None:
            self._audio = (rate, channels)
            self._ensure_connecting(initial=True)

    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        await self.client.emit(event, payload)

    def fail(self, code: ExitCode, message: str, **ctx: Any) -> None:
        """A final failure: no more attempts; reported once to `on_fatal`."""
        self._stopped = True
        self._on_fatal(code, message, **ctx)

    async def end_stream(self) -> None:
        """stream:end (if connected); waits (bounded) for stream:complete and logs it."""
        if not self.client.connected:
            return
        try:
            done = await self.client.end_stream("end_of_input")
        except ConnectionError:
            return
        if done is not None:
            self.log.info("stream complete", ctx={"total_fragments": done.total_fragments, **done.statistics.to_builtins()})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.close()

    # -- connecting --------------------------------------------------------------------------
    def _ensure_connecting(self, initial: bool) -> None:
        if self.settings.passthrough or self._stopped or self._audio is None:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._connect(initial), name="sts-connect")

    async def _connect(self, initial: bool) -> None:
        self.state = ConnState.CONNECTING
        if initial:
            try:
                ok = await self._connect_once()
            finally:
                self._first_attempt_done.set()
            if ok:
                return
            self.log.warning("STS disconnected", ctx={"reason": "initial connection failed"})
        self.state = ConnState.RECONNECTING
        result = await self.policy.run(self._connect_once)
        if result.success:
            if not initial:
                self.recorder.reconnection()
            return
        self.state = ConnState.UNAVAILABLE
        self.fail(
            ExitCode.STS_UNAVAILABLE,
            "STS reconnection attempts exhausted",
            attempts=result.attempts,
            waited_s=round(result.waited_s, 1),
        )

    async def _connect_once(self) -> bool:
        assert self._audio is not None
        try:
            ready = await self.client.connect(*self._audio)
        except StsConnectError as exc:
            return self._connect_failed(exc)
        self.listener.on_ready(ready)
        self.state = ConnState.CONNECTED
        self.recorder.sts_connected(True)
        return True

    def _connect_failed(self, exc: StsConnectError) -> bool:
        """False: retry. A final refusal stops the reconnect loop (CancelledError)."""
        if exc.kind is ConnectFailure.AUTH:
            self.fail(ExitCode.STS_AUTH_FAILED, AUTH_REFUSED)
            raise asyncio.CancelledError from exc
        if exc.kind is ConnectFailure.CONFIG:
            # e.g. a language pair the STS cannot dub: every segment goes out original,
            # counted as worker_fallback_total{reason="config_refused"}; said once here
            self._stopped = True
            self.state = ConnState.CONFIG_REFUSED
            self.log.error(
                "STS refused our stream config: every segment goes out original", ctx={"error": exc.message[:300]}
            )
            self.listener.on_config_refused(exc.message)
            raise asyncio.CancelledError from exc
        self.log.warning("STS connect failed", ctx={"kind": exc.kind, "error": exc.message[:200]})
        return False

    async def _on_disconnect(self, reason: str) -> None:
        self.state = ConnState.RECONNECTING
        self.recorder.sts_connected(False)
        self.listener.on_disconnected(reason)
        self._ensure_connecting(initial=False)

