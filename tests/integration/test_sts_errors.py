"""Integration: every protocol error code from the real echo service, the 11 MiB size limit,
authentication on and off, and header checks at connect."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import socketio

from livedub.protocol import ErrorCode, ErrorEvent, parse_as, parse_server_event
from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import StsTestClient, make_fragment
from livedub.typed import Secret

ClientFactory = Callable[..., StsTestClient]


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    async with run_sts(StsSettings(host="127.0.0.1", port=0, close_delay_s=0.2)) as server:
        yield server


@pytest.fixture
async def clients(sts: RunningSts) -> AsyncIterator[ClientFactory]:
    made: list[StsTestClient] = []

    def make(url: str | None = None, **kwargs: Any) -> StsTestClient:
        client = StsTestClient(url or sts.url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def next_error(client: StsTestClient, mark: int) -> ErrorEvent:
    return parse_as(ErrorEvent, await client.wait_for("error", after=mark))


async def test_stream_not_found_before_init(clients: ClientFactory) -> None:
    worker = clients(stream_id="e-1")
    await worker.connect()
    frag = make_fragment("e-1", 0)
    await worker.emit("fragment:data", frag)
    err = await next_error(worker, 0)
    assert err.code is ErrorCode.STREAM_NOT_FOUND
    assert err.fragment_id == frag["fragment_id"]
    assert (err.severity, err.retryable) == ("error", False)
    mark = len(worker.events)
    await worker.emit("stream:end", {"stream_id": "e-1"})
    assert (await next_error(worker, mark)).code is ErrorCode.STREAM_NOT_FOUND


@pytest.mark.parametrize(
    "payload",
    [
        {"stream_id": "e-2", "worker_id": "w"},  # no config
        {"stream_id": "e-2", "worker_id": "w", "config": {"chunk_duration_ms": 50}},
        {"stream_id": "e-2", "worker_id": "w", "config": {}, "max_inflight": 11},
        {"stream_id": "e-2", "worker_id": "w", "config": {}, "timeout_ms": 500},
        {"stream_id": "bad id", "worker_id": "w", "config": {}},
        "not an object",
    ],
)
async def test_invalid_config(clients: ClientFactory, payload: Any) -> None:
    worker = clients()
    await worker.connect()
    await worker.emit("stream:init", payload)
    err = await next_error(worker, 0)
    assert err.code is ErrorCode.INVALID_CONFIG
    assert worker.of("stream:ready") == []
    await worker.init("e-2")  # the connection is still usable


async def test_fragment_level_error_codes(clients: ClientFactory) -> None:
    worker = clients(stream_id="e-3")
    await worker.connect()
    await worker.init()

    async def send(payload: Any) -> ErrorEvent:
        mark = len(worker.events)
        await worker.emit("fragment:data", payload)
        return await next_error(worker, mark)

    first = make_fragment("e-3", 0)
    await worker.emit("fragment:data", first)
    await worker.wait_for("fragment:processed")
    err = await send(first)
    assert (err.code, err.fragment_id) == (ErrorCode.DUPLICATE_FRAGMENT, first["fragment_id"])
    assert (await send(make_fragment("e-3", 0))).code is ErrorCode.INVALID_SEQUENCE  # repeat
    assert (await send(make_fragment("e-3", 2))).code is ErrorCode.INVALID_SEQUENCE  # gap
    bad = make_fragment("e-3", 3)
    bad["audio"]["data_base64"] = "%%%not base64%%%"
    err = await send(bad)
    assert (err.code, err.fragment_id) == (ErrorCode.INVALID_FRAGMENT, bad["fragment_id"])
    assert (await send({"fragment_id": "x"})).code is ErrorCode.INVALID_FRAGMENT
    assert (await send(make_fragment("other", 4))).code is ErrorCode.STREAM_NOT_FOUND
    await worker.emit("stream:pause", {})
    assert (await send(make_fragment("e-3", 4))).code is ErrorCode.STREAM_PAUSED
    for event, data in worker.events:
        if event not in ("connect", "disconnect"):
            parse_server_event(event, data)


async def test_11_mib_fragment_gets_fragment_too_large_and_connection_survives(
    clients: ClientFactory,
) -> None:
    worker = clients(stream_id="big-1")
    await worker.connect()
    await worker.init()
    huge = make_fragment("big-1", 0, audio=b"\x01")
    huge["audio"]["data_base64"] = base64.b64encode(b"\x00" * (11 * 1024 * 1024)).decode()
    await worker.emit("fragment:data", huge)
    err = await next_error(worker, 0)
    assert (err.code, err.fragment_id) == (ErrorCode.FRAGMENT_TOO_LARGE, huge["fragment_id"])
    assert worker.sio.connected
    fid = await worker.send_fragment(1)  # the refused fragment used up seq 0
    processed = await worker.wait_for("fragment:processed")
    assert processed["fragment_id"] == fid and processed["status"] == "success"
    assert "disconnect" not in [e for e, _ in worker.events]


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.TIMEOUT,
        ErrorCode.MODEL_ERROR,
        ErrorCode.GPU_OOM,
        ErrorCode.QUEUE_FULL,
        ErrorCode.RATE_LIMIT,
    ],
)
async def test_processing_error_codes_via_simulation(
    clients: ClientFactory, code: ErrorCode
) -> None:
    worker = clients(stream_id="sim-1")
    control = clients()
    await worker.connect()
    await control.connect()
    ack = await control.control(
        "config:error_simulation",
        {
            "stream_id": "sim-1",
            "rules": [{"trigger": "count", "value": 1, "error_code": code.value, "stage": "tts"}],
        },
    )
    assert ack.status == "accepted"
    await worker.init()
    await worker.send_fragment(0)
    await worker.send_fragment(1)
    processed = await worker.wait_count("fragment:processed", 2)
    assert processed[0]["status"] == "failed"
    assert processed[0]["error"] == {
        "code": code.value,
        "message": "simulated error",
        "stage": "tts",
        "retryable": code.retryable,
    }
    assert processed[1]["status"] == "success"


async def test_auth_on() -> None:
    settings = StsSettings(host="127.0.0.1", port=0, auth_token=Secret("t0ken"), close_delay_s=0.2)
    async with run_sts(settings) as sts:
        for auth in (None, {"token": "wrong"}, {"token": ""}):
            client = StsTestClient(sts.url, stream_id="a-1", auth=auth)
            try:
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client.connect()
                refusal = client.of("connect_error")[0]
                assert refusal["data"]["code"] == "AUTH_FAILED"
                assert refusal["data"]["severity"] == "fatal"
                assert refusal["data"]["retryable"] is False
            finally:
                await client.close()
        good = StsTestClient(sts.url, stream_id="a-1", auth={"token": "t0ken"})
        try:
            await good.connect()
            await good.init()
        finally:
            await good.close()
        async with aiohttp.ClientSession() as http:
            url = f"{sts.url}/control/latency"
            async with http.post(url, json={"delay_ms": 1}) as resp:
                assert resp.status == 401
            headers = {"Authorization": "Bearer t0ken"}
            async with http.post(url, json={"delay_ms": 1}, headers=headers) as resp:
                assert resp.status == 200
            async with http.get(f"{sts.url}/health") as resp:
                assert resp.status == 200  # health stays open


async def test_auth_off_accepts_any_or_no_token(clients: ClientFactory) -> None:
    for auth in (None, {"token": "anything"}):
        client = clients(stream_id="open-1", auth=auth)
        await client.connect()
        await client.init()


@pytest.mark.parametrize(
    "headers", [{"stream_id": "has space"}, {"stream_id": "x" * 65}, {"worker_id": "a/b"}]
)
async def test_bad_headers_refused_at_connect(
    clients: ClientFactory, headers: dict[str, str]
) -> None:
    client = clients(**headers)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.of("connect_error")[0]["data"]["code"] == "INVALID_CONFIG"


async def test_unknown_events_are_ignored(clients: ClientFactory) -> None:
    worker = clients(stream_id="unk-1")
    await worker.connect()
    await worker.emit("no:such:event", {"x": 1})
    await worker.emit("fragment:data")  # no payload at all
    err = await next_error(worker, 0)
    assert err.code is ErrorCode.STREAM_NOT_FOUND
    await worker.init()
    fid = await worker.send_fragment(0)
    assert (await worker.wait_for("fragment:processed"))["fragment_id"] == fid
    assert len(worker.of("error")) == 1
