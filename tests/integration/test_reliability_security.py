"""Reliability/security of the network surfaces: what they must refuse and what must not exhaust
them.

Already covered elsewhere (not repeated here):
- STS auth on/off, wrong/missing/empty token → `connect_error` AUTH_FAILED, HTTP controls 401:
  `tests/integration/test_sts_errors.py::test_auth_on`, `tests/unit/test_sts_core.py::
  test_connect_checks_auth_headers`; invalid headers → INVALID_CONFIG: `test_bad_headers_refused_at_connect`;
  an 11 MiB fragment → FRAGMENT_TOO_LARGE on a surviving connection.
- Orchestrator hook traversal (`..`, `%2F`), `out` paths, oversized bodies (413), duplicate keys,
  extra fields, wrong/missing secret → 4xx and no worker started:
  `tests/integration/test_orchestrator.py::test_invalid_hooks_are_refused_and_start_nothing`.

Here: a wrong token processes nothing and a worker exits 14; 200 rapid connect/disconnect cycles
and 10 idle or frozen connections leave the STS serving and clean; per-connection limits (pending
fragments, message size); unknown orchestrator paths; every service binds 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.orchestrator.media_server import MediaServerSettings
from livedub.orchestrator.service import OrchestratorService
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.protocol import ErrorCode, parse_server_event
from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import StsTestClient, free_port, make_fragment
from livedub.typed import Secret
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    settings = StsSettings(host="127.0.0.1", port=0, close_delay_s=0.2, ping_interval_s=1.0, ping_timeout_s=1.0)
    async with run_sts(settings) as server:
        yield server


async def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def still_serves(sts: RunningSts, stream_id: str) -> None:
    """A fresh worker-like client gets a session and an echo."""
    client = StsTestClient(sts.url, stream_id=stream_id, worker_id="w")
    try:
        await client.connect()
        await client.init()
        fid = await client.send_fragment(0)
        processed = await client.wait_for("fragment:processed")
        assert processed["fragment_id"] == fid and processed["status"] == "success"
    finally:
        await client.close()


def sts_metric(sts: RunningSts, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(sts.server.metrics.render().decode()):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# --- auth -------------------------------------------------------------------------------------


async def test_wrong_token_processes_nothing_and_the_worker_exits_14(tmp_path: Path) -> None:
    src = tmp_path / "fx.mp4"
    make_fixture(src, FixtureSpec(duration_s=4.0, width=160, height=120, segment_s=2.0))
    settings = StsSettings(
        host="127.0.0.1", port=0, auth_token=Secret("right-token"), close_delay_s=0.2
    )
    async with run_sts(settings) as sts:
        for token in ("wrong-token", None):
            runner = WorkerRunner(
                WorkerSettings(
                    stream_id="auth", input_url=str(src), output_url=str(tmp_path / "o.mp4"),
                    sts_url=sts.url, sts_auth_token=Secret(token) if token else None, metrics_port=0, paced=False, segment_s=2.0,
                )
            )
            assert await runner.run() == 14  # STS_AUTH_FAILED: final, the orchestrator does not restart
            assert h.metric(runner, "worker_audio_fragments_total", status="sent") == 0
        assert sts.core.debug_stream("auth") is None, "no session, no fragment ever reached the STS"
        assert sts_metric(sts, "sts_fragments_total") == 0
        assert sts_metric(sts, "sts_sessions_total") == 0
        assert sts_metric(sts, "sts_connections_refused_total", code="AUTH_FAILED") == 2


# --- connection churn and idle connections ----------------------------------------------------


async def test_200_rapid_connect_disconnect_cycles(sts: RunningSts) -> None:
    me = psutil.Process()
    fds_before = me.num_fds()
    for i in range(200):
        client = StsTestClient(sts.url, stream_id=f"churn-{i % 7}", worker_id="w")
        await client.connect()
        if i % 3 == 0:  # some open a session and leave mid-fragment
            await client.init()
            await client.send_fragment(0)
        await client.close()
    await wait_until(lambda: not sts.core.connections, 10, "every connection gone")
    assert sts.core.summary()["sessions"] == 0
    assert sts_metric(sts, "sts_connections") == 0 and sts_metric(sts, "sts_sessions_active") == 0
    assert sts_metric(sts, "sts_sessions_total") == 67  # the churn really happened
    await still_serves(sts, "after-churn")
    await wait_until(lambda: me.num_fds() <= fds_before + 5, 10, "sockets released")


async def test_idle_and_frozen_connections_do_not_exhaust_it(sts: RunningSts) -> None:
    # 10 raw TCP connections that never send a byte, and 10 Engine.IO/Socket.IO sessions that
    # connect and then never answer a ping (a peer that froze or vanished without a FIN).
    idle = [socket.create_connection(("127.0.0.1", sts.port), timeout=2) for _ in range(10)]
    http = aiohttp.ClientSession()
    frozen: list[aiohttp.ClientWebSocketResponse] = []
    try:
        for _ in range(10):
            ws = await http.ws_connect(f"{sts.url}/socket.io/?EIO=4&transport=websocket", autoping=False)
            open_msg = await ws.receive(timeout=5)
            assert open_msg.data.startswith("0")  # Engine.IO open
            await ws.send_str("40")  # Socket.IO connect to "/" (auth off)
            frozen.append(ws)
        await wait_until(lambda: len(sts.core.connections) >= 10, 5, "frozen sessions connected")
        await still_serves(sts, "beside-idle")
        # Ping interval 1 s + timeout 1 s: the frozen sessions are dropped by the server.
        await wait_until(lambda: not sts.core.connections, 10, "frozen sessions dropped")
        await still_serves(sts, "after-idle")
    finally:
        for ws in frozen:
            await ws.close()
        await http.close()
        for s in idle:
            s.close()


# --- per-connection limits ----------------------------------------------------------------------


async def test_pending_fragments_per_session_are_bounded(sts: RunningSts) -> None:
    limit = sts.server.settings.max_pending_fragments
    flood = StsTestClient(sts.url, stream_id="flood", worker_id="w")
    try:
        await flood.connect()
        await flood.init()
        ack = await flood.control("config:latency", {"stream_id": "flood", "delay_ms": 3000})
        assert ack.status == "accepted"
        n = limit + 20
        for seq in range(n):  # a client that ignores its grant and never waits
            await flood.send_fragment(seq)
        errors = await flood.wait_count("error", 20, timeout=10)
        assert {e["code"] for e in errors} == {ErrorCode.QUEUE_FULL.value}
        debug = sts.core.debug_stream("flood")
        assert debug is not None and debug["live_sessions"][0]["outstanding"] == limit
        await still_serves(sts, "beside-flood")  # other sessions are not affected
        processed = await flood.wait_count("fragment:processed", limit, timeout=15)
        assert len(processed) == limit
        for event, data in flood.events:
            if event not in ("connect", "disconnect"):
                parse_server_event(event, data)
    finally:
        await flood.close()


async def test_oversized_message_drops_only_that_connection(sts: RunningSts) -> None:
    other = StsTestClient(sts.url, stream_id="bystander", worker_id="w")
    big = StsTestClient(sts.url, stream_id="oversize", worker_id="w", max_msg_size=0)
    try:
        await other.connect()
        await other.init()
        await big.connect()
        await big.init()
        payload = make_fragment("oversize", 0)
        limit = sts.server.settings.max_message_bytes
        payload["audio"]["data_base64"] = base64.b64encode(b"\x00" * (limit * 3 // 4 + 1024)).decode()
        await big.emit("fragment:data", payload)
        await big.wait_for("disconnect", timeout=10)
        assert other.sio.connected
        fid = await other.send_fragment(0)
        assert (await other.wait_for("fragment:processed"))["fragment_id"] == fid
        await wait_until(lambda: len(sts.core.connections) == 1, 5, "oversize connection cleaned up")
    finally:
        await big.close()
        await other.close()


# --- orchestrator: unknown paths -------------------------------------------------------------


async def test_orchestrator_unknown_paths_and_methods_start_nothing() -> None:
    service = OrchestratorService(OrchestratorSettings(port=0, worker_command="/bin/false"))
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.port}"
        async with aiohttp.ClientSession() as http:
            for method, path in [
                ("POST", "/v1/mediamtx/events/ready/../../../etc/passwd"),
                ("POST", "/v1/mediamtx/events/started"),
                ("POST", "/admin"),
                ("GET", "/v1/mediamtx/events/ready"),
                ("DELETE", "/v1/streams/x"),
                ("PUT", "/v1/streams"),
                ("POST", "/%2e%2e/%2e%2e/etc/passwd"),
            ]:
                async with http.request(method, base + path, json={"path": "live/x/in"}) as resp:
                    assert 400 <= resp.status < 500, (method, path, resp.status)
            async with http.get(base + "/v1/streams") as resp:
                assert (await resp.json())["count"] == 0
    finally:
        await service.stop()


# --- bind addresses -------------------------------------------------------------------------------


def listening_ips(port: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


def test_every_service_defaults_to_loopback() -> None:
    assert StsSettings().host == "127.0.0.1"
    assert OrchestratorSettings().host == "127.0.0.1"
    assert MediaServerSettings().host == "127.0.0.1"
    assert WorkerSettings().metrics_host == "127.0.0.1"


async def test_services_really_listen_on_loopback_only(tmp_path: Path) -> None:
    """Started with default hosts, the STS, the orchestrator and a worker's /metrics listen on
    127.0.0.1 only (not 0.0.0.0 / ::)."""
    async with run_sts(StsSettings(port=0)) as sts:
        assert listening_ips(sts.port) == {"127.0.0.1"}
    service = OrchestratorService(OrchestratorSettings(port=0))
    await service.start()
    try:
        assert service.port is not None and listening_ips(service.port) == {"127.0.0.1"}
    finally:
        await service.stop()
    src = tmp_path / "fx.mp4"
    make_fixture(src, FixtureSpec(duration_s=30.0, width=160, height=120, segment_s=2.0))
    port = free_port()
    runner = WorkerRunner(
        WorkerSettings(stream_id="bind", input_url=str(src), output_url=str(tmp_path / "o.mp4"),
                       passthrough=True, metrics_port=port, segment_s=2.0)
    )
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(lambda: bool(listening_ips(port)), 10, "worker metrics listening")
        assert listening_ips(port) == {"127.0.0.1"}
    finally:
        runner.pipeline.request_stop(drain=False)
        await asyncio.wait_for(task, 30)
