"""Test harness for anything that talks to an STS service: a recording Socket.IO client.

`StsTestClient` connects like a worker (WebSocket, `X-Stream-ID` / `X-Worker-ID` headers,
optional auth), records every event it receives in order, and waits for events by condition
(never by sleeping). `make_fragment` / `wav_bytes` build valid `fragment:data` payloads. Used by
the STS tests and usable by E2E tests and tools; it never starts or stops servers and never
sends traffic anywhere but the URL it is given.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import time
import uuid
import wave
from collections.abc import Callable
from typing import Any

import socketio

from livedub.protocol import (
    AudioPayload,
    ControlAck,
    FragmentData,
    StreamReady,
    control_ack_event,
    parse_as,
    wirejson,
)
from livedub.protocol import constants as c

Predicate = Callable[[Any], bool]


TEST_PORT_BASE = int(os.environ.get("LIVEDUB_TEST_PORT_BASE", "20000"))
"""Test ports come from 20000–31999 (`LIVEDUB_TEST_PORT_BASE` moves the start, e.g. for a second
checkout's tests running beside a first's; keep it and its 12 blocks below 32768): below the kernel's ephemeral range (32768–60999 by default,
/proc/sys/net/ipv4/ip_local_port_range), which every outgoing TCP connection draws its local port
from. A port picked there (bind to 0, close) can be taken by a test's own client connection before
the server meant for it binds it; then that server's bind fails, or worse, a readiness probe
reaches the other socket (seen: an nginx media server that never bound its RTMP port)."""
TEST_PORT_BLOCK = 1_000
"""Each pytest-xdist worker (`PYTEST_XDIST_WORKER=gwN`) hands out ports from its own block, so two
workers never pick the same one; blocks repeat after 12 workers."""
_TEST_PORT_BLOCKS = 12
_next_port: dict[int, int] = {}


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    return TEST_PORT_BASE + (index % _TEST_PORT_BLOCKS) * TEST_PORT_BLOCK


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port for a test server (TCP, or UDP with `kind=socket.SOCK_DGRAM`, e.g. an SRT
    listener): from this process's block outside the ephemeral range, in turn (a port is not
    handed out again until the block wraps, whatever its kind), bindable right now. A process of
    its own (a subprocess, no xdist worker) starts at a random place in block 0."""
    block = _port_block()
    offset = _next_port.setdefault(block, 0 if os.environ.get("PYTEST_XDIST_WORKER") else random.randrange(TEST_PORT_BLOCK))
    for step in range(TEST_PORT_BLOCK):
        port = block + (offset + step) % TEST_PORT_BLOCK
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _next_port[block] = offset + step + 1
        return port
    raise OSError(f"no free port in {block}–{block + TEST_PORT_BLOCK - 1}")


def free_port_range(n: int, host: str = "127.0.0.1") -> tuple[int, int]:
    """`n` consecutive ports (first, last) for a server that picks its own among them later (e.g.
    the orchestrator's worker metrics ports), from the same block as `free_port`, each bindable
    now. Never the ephemeral range: a port picked there by binding 0 can be a client's by the time
    the worker binds it."""
    for _ in range(TEST_PORT_BLOCK):
        first = free_port(host)
        if first % TEST_PORT_BLOCK + n > TEST_PORT_BLOCK:
            continue  # would leave the block
        rest = [free_port(host) for _ in range(n - 1)]
        if rest == list(range(first + 1, first + n)):
            return first, first + n - 1
    raise OSError(f"no {n} consecutive free ports")


def wav_bytes(duration_ms: int = 100, sample_rate_hz: int = 48_000, channels: int = 2) -> bytes:
    """A silent PCM s16le WAV file of exactly `duration_ms` (rounded to whole samples)."""
    frames = duration_ms * sample_rate_hz // 1000
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate_hz)
        w.writeframes(b"\x00\x00" * channels * frames)
    return buf.getvalue()


def make_fragment(
    stream_id: str,
    sequence_number: int,
    *,
    audio: bytes | None = None,
    fragment_id: str | None = None,
    duration_ms: int = 100,
    sample_rate_hz: int = 48_000,
    channels: int = 2,
    audio_format: c.AudioFormat = "wav",
) -> dict[str, Any]:
    """A valid `fragment:data` payload (wire dict)."""
    data = audio if audio is not None else wav_bytes(duration_ms, sample_rate_hz, channels)
    return FragmentData(
        fragment_id=fragment_id or str(uuid.uuid4()),
        stream_id=stream_id,
        sequence_number=sequence_number,
        timestamp=int(time.time() * 1000),
        audio=AudioPayload.from_bytes(
            data,
            format=audio_format,
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            duration_ms=duration_ms,
        ),
        metadata=None,
    ).to_wire()


class StsTestClient:
    """A python-socketio client that records what it receives.

    Pseudo-events `connect`, `disconnect` (data = reason) and `connect_error` (data = the
    server's refusal payload) are recorded too.
    """

    def __init__(
        self,
        url: str,
        *,
        stream_id: str | None = None,
        worker_id: str | None = None,
        auth: Any = None,
        reconnection: bool = False,
        max_msg_size: int = c.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url
        self.stream_id = stream_id
        self.worker_id = worker_id
        self.auth = auth
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            json=wirejson,
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
            randomization_factor=0,
            websocket_extra_options={"max_msg_size": max_msg_size},
        )
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()
        self.sio.on("*", self._on_any)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)

    # --- recording -----------------------------------------------------------------------------
    async def _record(self, event: str, data: Any) -> None:
        async with self._changed:
            self.events.append((event, data))
            self._changed.notify_all()

    async def _on_any(self, event: str, data: Any = None, *_: Any) -> None:
        await self._record(event, data)

    async def _on_connect(self) -> None:
        await self._record("connect", None)

    async def _on_disconnect(self, reason: Any = None) -> None:
        await self._record("disconnect", reason)

    async def _on_connect_error(self, data: Any = None) -> None:
        await self._record("connect_error", data)

    def of(self, event: str) -> list[Any]:
        """Data of every received `event`, in order."""
        return [d for e, d in self.events if e == event]

    async def wait_for(
        self,
        event: str,
        predicate: Predicate | None = None,
        *,
        timeout: float = 5.0,
        after: int = 0,
    ) -> Any:
        """Data of the first `event` at index >= `after` matching `predicate`."""

        def find() -> Any:
            for e, d in self.events[after:]:
                if e == event and (predicate is None or predicate(d)):
                    return (d,)
            return None

        async with self._changed:
            found = await asyncio.wait_for(self._changed.wait_for(find), timeout)
        return found[0]

    async def wait_count(
        self, event: str, count: int, *, timeout: float = 5.0, predicate: Predicate | None = None
    ) -> list[Any]:
        """Wait until `count` `event`s (matching `predicate`) were received; return them."""

        def matching() -> list[Any]:
            return [d for d in self.of(event) if predicate is None or predicate(d)]

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(matching()) >= count), timeout
            )
        return matching()

    # --- sending -------------------------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        headers = {}
        if self.stream_id is not None:
            headers[c.HEADER_STREAM_ID] = self.stream_id
        if self.worker_id is not None:
            headers[c.HEADER_WORKER_ID] = self.worker_id
        return headers

    async def connect(self, *, wait_timeout: float = 5.0) -> None:
        await self.sio.connect(
            self.url,
            headers=self.headers,
            auth=self.auth,
            transports=list(c.TRANSPORTS),
            socketio_path=c.SOCKETIO_PATH,
            wait_timeout=wait_timeout,
        )

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data)

    async def init(
        self,
        stream_id: str | None = None,
        worker_id: str | None = None,
        *,
        timeout: float = 5.0,
        **fields: Any,
    ) -> StreamReady:
        """Send `stream:init` and return the (validated) `stream:ready`."""
        stream_id = stream_id or self.stream_id or "stream-1"
        worker_id = worker_id or self.worker_id or "worker-1"
        mark = len(self.events)
        payload: dict[str, Any] = {"stream_id": stream_id, "worker_id": worker_id, "config": {}}
        payload.update(fields)
        await self.emit(c.EventName.STREAM_INIT, payload)
        data = await self.wait_for(c.EventName.STREAM_READY, timeout=timeout, after=mark)
        return parse_as(StreamReady, data)

    async def send_fragment(self, sequence_number: int, **kwargs: Any) -> str:
        """Send a valid `fragment:data`; returns its fragment_id."""
        stream_id = kwargs.pop("stream_id", None) or self.stream_id or "stream-1"
        payload = make_fragment(stream_id, sequence_number, **kwargs)
        await self.emit(c.EventName.FRAGMENT_DATA, payload)
        return str(payload["fragment_id"])

    async def ack(self, fragment_id: str, status: str = "applied") -> None:
        """The worker's `fragment:ack` for a processed fragment."""
        await self.emit(
            c.EventName.FRAGMENT_ACK,
            {"fragment_id": fragment_id, "status": status, "timestamp": int(time.time() * 1000)},
        )

    async def control(self, event: str, payload: Any, *, timeout: float = 5.0) -> ControlAck:
        """Send a test control and return its `<event>:ack`."""
        mark = len(self.events)
        await self.emit(event, payload)
        data = await self.wait_for(control_ack_event(event), timeout=timeout, after=mark)
        return parse_as(ControlAck, data)

    async def close(self) -> None:
        try:
            await self.sio.shutdown()
        except Exception:  # pragma: no cover - already gone
            pass
