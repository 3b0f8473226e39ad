"""Integration: every test control, sent from a second connection (and over HTTP), targeted by
stream_id, surviving the worker's reconnects."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import StsTestClient

ClientFactory = Callable[..., StsTestClient]


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    async with run_sts(StsSettings(host="127.0.0.1", port=0, close_delay_s=0.2)) as server:
        yield server


@pytest.fixture
async def clients(sts: RunningSts) -> AsyncIterator[ClientFactory]:
    made: list[StsTestClient] = []

    def make(**kwargs: Any) -> StsTestClient:
        client = StsTestClient(sts.url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def post(url: str, payload: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=payload) as resp:
        return resp.status, await resp.json()


async def started(make: ClientFactory, stream_id: str, **kwargs: Any) -> StsTestClient:
    worker = make(stream_id=stream_id, worker_id="w", **kwargs)
    await worker.connect()
    await worker.init()
    return worker


async def test_error_simulation_targets_one_stream(clients: ClientFactory) -> None:
    a = await started(clients, "ctl-a")
    b = await started(clients, "ctl-b")
    control = clients()
    await control.connect()
    ack = await control.control(
        "config:error_simulation",
        {
            "stream_id": "ctl-a",
            "enabled": True,
            "rules": [{"trigger": "sequence_number", "value": 1, "error_code": "GPU_OOM"}],
        },
    )
    assert ack.status == "accepted" and "ctl-a" in ack.message
    for worker in (a, b):
        for seq in range(3):
            await worker.send_fragment(seq)
    got_a = await a.wait_count("fragment:processed", 3)
    got_b = await b.wait_count("fragment:processed", 3)
    assert [p["status"] for p in got_a] == ["success", "failed", "success"]
    assert got_a[1]["error"]["code"] == "GPU_OOM"
    assert [p["status"] for p in got_b] == ["success"] * 3
    ack = await control.control("config:error_simulation", {"stream_id": "ctl-a", "enabled": False})
    assert ack.status == "accepted"
    await a.send_fragment(3)
    assert (await a.wait_count("fragment:processed", 4))[3]["status"] == "success"


async def test_latency_fixed_from_second_connection(clients: ClientFactory) -> None:
    worker = await started(clients, "ctl-lat")
    control = clients()
    await control.connect()
    assert (
        await control.control("config:latency", {"stream_id": "ctl-lat", "delay_ms": 300})
    ).status == "accepted"
    t0 = time.monotonic()
    await worker.send_fragment(0)
    processed = await worker.wait_for("fragment:processed")
    assert time.monotonic() - t0 >= 0.29
    assert processed["processing_time_ms"] >= 300
    # socket.io acknowledgement callbacks carry the same ack
    reply = await control.sio.call(
        "config:latency", {"stream_id": "ctl-lat", "delay_ms": 0}, timeout=5
    )
    assert reply["status"] == "accepted"


async def test_backpressure_one_shot_and_threshold(clients: ClientFactory) -> None:
    worker = await started(clients, "ctl-bp")
    control = clients()
    await control.connect()
    ack = await control.control(
        "config:backpressure",
        {
            "stream_id": "ctl-bp",
            "emit": {"severity": "medium", "action": "slow_down", "recommended_delay_ms": 250},
        },
    )
    assert ack.status == "accepted"
    bp = await worker.wait_for("backpressure")
    assert (bp["stream_id"], bp["action"], bp["recommended_delay_ms"]) == (
        "ctl-bp",
        "slow_down",
        250,
    )
    ack = await control.control(
        "config:backpressure",
        {"stream_id": "nobody", "emit": {"severity": "low", "action": "none"}},
    )
    assert ack.status == "rejected"
    ack = await control.control(
        "config:backpressure",
        {"stream_id": "ctl-bp", "thresholds": {"low": 0.1, "medium": 0.3, "high": 0.5}},
    )
    assert ack.status == "accepted"
    mark = len(worker.events)
    await worker.send_fragment(0)  # 1 of 3 in flight: 0.33 -> medium
    bp = await worker.wait_for("backpressure", after=mark)
    assert (bp["severity"], bp["action"], bp["recommended_delay_ms"]) == (
        "medium",
        "slow_down",
        500,
    )


async def test_disconnect_with_refusal_and_settings_survive_reconnect(
    clients: ClientFactory,
) -> None:
    worker = await started(clients, "ctl-dc", reconnection=True)
    control = clients()
    await control.connect()
    assert (
        await control.control("config:latency", {"stream_id": "ctl-dc", "delay_ms": 120})
    ).status == "accepted"
    ack = await control.control(
        "simulate:disconnect", {"stream_id": "ctl-dc", "delay_ms": 50, "refuse_reconnect_ms": 600}
    )
    assert ack.status == "accepted"
    t0 = time.monotonic()
    assert await worker.wait_for("disconnect", timeout=3) == "transport error"
    refusal = await worker.wait_for("connect_error", timeout=3)
    assert refusal["data"]["code"] == "RATE_LIMIT" and refusal["data"]["retryable"] is True
    await worker.wait_for("connect", after=2, timeout=5)  # after the first connect
    assert time.monotonic() - t0 >= 0.55  # not before the refusal window ended
    await worker.init()
    await worker.send_fragment(0)
    processed = await worker.wait_for("fragment:processed")
    assert processed["processing_time_ms"] >= 120  # latency for the stream survived the reconnect
    assert control.sio.connected  # the control connection was not touched


async def test_reset_clears_everything_for_a_stream(clients: ClientFactory) -> None:
    worker = await started(clients, "ctl-rs")
    control = clients()
    await control.connect()
    await control.control("config:latency", {"stream_id": "ctl-rs", "delay_ms": 5000})
    await control.control(
        "config:error_simulation",
        {"stream_id": "ctl-rs", "rules": [{"trigger": "nth_fragment", "value": 1}]},
    )
    await control.control("config:backpressure", {"stream_id": "ctl-rs", "enabled": True})
    await control.control("simulate:disconnect", {"stream_id": "ctl-rs", "delay_ms": 60000})
    ack = await control.control("config:reset", {"stream_id": "ctl-rs"})
    assert ack.status == "accepted"
    await worker.send_fragment(0)
    processed = await worker.wait_for("fragment:processed", timeout=2)
    assert processed["status"] == "success" and processed["processing_time_ms"] < 1000
    assert worker.of("backpressure") == []


async def test_malformed_controls_rejected_without_effect(clients: ClientFactory) -> None:
    worker = await started(clients, "ctl-bad")
    control = clients()
    await control.connect()
    for event, payload in [
        ("config:latency", {"stream_id": "ctl-bad", "delay_ms": 100000}),
        ("config:latency", {"stream_id": "ctl-bad", "delay": 100}),
        ("config:error_simulation", {"stream_id": "ctl-bad", "rules": [{"trigger": "oops"}]}),
        ("config:backpressure", {"stream_id": "ctl-bad"}),
        ("simulate:disconnect", {"stream_id": "ctl-bad", "delay_ms": "soon"}),
        ("config:reset", ["everything"]),
    ]:
        ack = await control.control(event, payload)
        assert ack.status == "rejected" and ack.message, event
    await worker.send_fragment(0)
    processed = await worker.wait_for("fragment:processed")
    assert processed["status"] == "success" and processed["processing_time_ms"] < 1000
    assert worker.sio.connected


async def test_http_controls(sts: RunningSts, clients: ClientFactory) -> None:
    worker = await started(clients, "ctl-http", reconnection=True)
    base = f"{sts.url}/control"
    status, ack = await post(f"{base}/config:latency", {"stream_id": "ctl-http", "delay_ms": 150})
    assert (status, ack["status"]) == (200, "accepted")
    status, ack = await post(
        f"{base}/error_simulation",
        {
            "stream_id": "ctl-http",
            "rules": [{"trigger": "count", "value": 1, "error_code": "TIMEOUT"}],
        },
    )
    assert status == 200
    await worker.send_fragment(0)
    processed = await worker.wait_for("fragment:processed")
    assert processed["status"] == "failed" and processed["processing_time_ms"] >= 150
    status, ack = await post(
        f"{base}/backpressure",
        {"stream_id": "ctl-http", "emit": {"severity": "high", "action": "pause"}},
    )
    assert status == 200
    assert (await worker.wait_for("backpressure"))["action"] == "pause"
    status, ack = await post(f"{base}/reset", {"stream_id": "ctl-http"})
    assert status == 200
    status, ack = await post(f"{base}/latency", {"delay_ms": -1})
    assert (status, ack["status"]) == (400, "rejected")
    status, ack = await post(f"{base}/nonsense", {})
    assert status == 404
    json_type = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/latency", data=b"{nope", headers=json_type
    ) as resp:
        assert resp.status == 400
    status, ack = await post(
        f"{base}/simulate:disconnect", {"stream_id": "ctl-http", "delay_ms": 0}
    )
    assert status == 200
    await worker.wait_for("disconnect", timeout=3)
    await worker.wait_for("connect", after=2, timeout=5)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_http_controls_require_a_json_content_type(
    sts: RunningSts, content_type: str | None
) -> None:
    """Issue 17 #3: what a web page can POST cross-site without a preflight is refused (415),
    with or without a body, and changes nothing."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        for body in (b'{"delay_ms": 5000}', b""):
            async with http.post(f"{sts.url}/control/latency", data=body, headers=headers) as resp:
                assert resp.status == 415, await resp.text()
                assert (await resp.json())["status"] == "rejected"
        async with http.get(f"{sts.url}/debug/streams") as resp:
            doc = await resp.json()
    assert "5000" not in str(doc)
