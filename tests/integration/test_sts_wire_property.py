"""Integration property test: random events with random payloads sent over a real Socket.IO
connection never crash the echo service; every reply validates against the protocol models; the
connection stays usable."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from livedub.protocol import CLIENT_EVENTS, parse_server_event
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import StsTestClient, make_fragment


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ServerThread:
    """The echo service on its own event loop in a thread (so a sync hypothesis test can use it
    across examples)."""

    def __init__(self) -> None:
        self.url = ""
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with run_sts(StsSettings(host="127.0.0.1", port=0, close_delay_s=0.05)) as sts:
            self.url = sts.url
            self._started.set()
            await self._stop.wait()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(10), "server thread did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    failures = _Failures()
    logging.getLogger("livedub.sts").addHandler(failures)
    try:
        with ServerThread() as srv:
            yield srv
    finally:
        logging.getLogger("livedub.sts").removeHandler(failures)
    assert failures.records == [], [r.getMessage() for r in failures.records]


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16)
)
payloads = st.recursive(
    scalars,
    lambda ch: (
        st.dictionaries(
            st.sampled_from(
                [
                    "stream_id",
                    "fragment_id",
                    "sequence_number",
                    "audio",
                    "config",
                    "status",
                    "delay_ms",
                    "rules",
                ]
            )
            | st.text(max_size=8),
            ch,
            max_size=5,
        )
        | st.lists(ch, max_size=3)
    ),
    max_leaves=10,
)
steps = st.lists(
    st.tuples(st.sampled_from(sorted(set(CLIENT_EVENTS) - {"simulate:disconnect"})), payloads)
    | st.tuples(
        st.just("stream:init"), st.just({"stream_id": "prop", "worker_id": "w", "config": {}})
    ),
    min_size=1,
    max_size=8,
)


async def _exchange(url: str, seq: list[tuple[str, Any]]) -> StsTestClient:
    client = StsTestClient(url, stream_id="prop", worker_id="w")
    try:
        await client.connect()
        for event, payload in seq:
            await client.emit(event, payload)
        await client.emit("config:reset", {})
        await client.wait_for("config:reset:ack", timeout=5)
        ready = await client.init(timeout=5)
        mark = len(client.events)
        await client.emit("stream:resume", {})
        await client.emit("fragment:data", make_fragment("prop", 0))
        processed = await client.wait_for("fragment:processed", after=mark, timeout=5)
        assert processed["stream_id"] == ready.stream_id
        return client
    finally:
        await client.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seq=steps)
# integers beyond 64 bits (a float to orjson) and beyond a double (undecodable: the packet is dropped)
@example(seq=[("fragment:data", {"sequence_number": 10**30}), ("fragment:data", {"x": 10**400})])
def test_random_payloads_over_the_wire(server: ServerThread, seq: list[tuple[str, Any]]) -> None:
    client = asyncio.run(_exchange(server.url, seq))
    for event, data in client.events:
        if event not in ("connect", "disconnect", "connect_error"):
            parse_server_event(event, data)
