"""Integration: the real echo service on a free loopback port, driven by real Socket.IO clients.
Lifecycle, ordering under latency, pause/resume, in-flight accounting, parallel sessions,
echo overhead, health and metrics."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from livedub.protocol import (
    FragmentAck,
    FragmentProcessed,
    StreamComplete,
    decode_base64,
    parse_as,
    parse_server_event,
)
from livedub.sts.server import RunningSts, run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import StsTestClient, wav_bytes

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


def assert_all_replies_valid(client: StsTestClient) -> None:
    for event, data in client.events:
        if event not in ("connect", "disconnect", "connect_error"):
            parse_server_event(event, data)


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_full_lifecycle(sts: RunningSts, clients: ClientFactory) -> None:
    worker = clients(stream_id="life-1", worker_id="w-1")
    await worker.connect()
    ready = await worker.init(max_inflight=4)
    assert ready.stream_id == "life-1" and ready.max_inflight == 4
    assert ready.capabilities.async_delivery and "m4a" in ready.capabilities.formats

    sent: dict[str, bytes] = {}
    for seq in range(5):
        audio = wav_bytes(200 + seq, 16000, 1)
        fid = await worker.send_fragment(
            seq, audio=audio, duration_ms=200 + seq, sample_rate_hz=16000, channels=1
        )
        sent[fid] = audio
    processed = [
        parse_as(FragmentProcessed, p) for p in await worker.wait_count("fragment:processed", 5)
    ]
    for p in processed:
        await worker.ack(p.fragment_id)
    assert [p.fragment_id for p in processed] == list(sent)
    assert [p.sequence_number for p in processed] == list(range(5))
    for p in processed:
        assert p.status == "success" and p.dubbed_audio is not None
        assert p.dubbed_audio.to_bytes() == sent[p.fragment_id]  # byte-for-byte echo
        assert p.stage_timings is not None and p.transcript and p.translated_text
    acks = [parse_as(FragmentAck, a) for a in worker.of("fragment:ack")]
    assert [a.fragment_id for a in acks] == list(sent)

    mark = len(worker.events)
    await worker.emit("stream:end", {"stream_id": "life-1", "reason": "test"})
    complete = parse_as(StreamComplete, await worker.wait_for("stream:complete", after=mark))
    assert complete.total_fragments == 5
    assert complete.total_duration_ms == sum(200 + i for i in range(5))
    assert complete.statistics.success_count == 5
    assert complete.statistics.failed_count == 0
    times = [p.processing_time_ms for p in processed]
    assert complete.statistics.avg_processing_time_ms == pytest.approx(sum(times) / 5, abs=0.01)
    await worker.wait_for("disconnect", timeout=3)  # closed by the server after close_delay_s
    assert_all_replies_valid(worker)

    status, doc = await get_json(f"{sts.url}/debug/streams/life-1")
    assert status == 200
    assert [x["fragment_id"] for x in doc["fragment_data"]] == list(sent)
    assert [x["fragment_id"] for x in doc["acks_sent"]] == list(sent)
    assert [x["fragment_id"] for x in doc["processed_sent"]] == list(sent)
    assert [x["fragment_id"] for x in doc["worker_acks"]] == list(sent)
    assert doc["sessions"][0]["session_id"] == ready.session_id
    assert doc["completes_sent"][0]["total_fragments"] == 5


async def test_connection_closes_5s_after_complete_by_default(clients: ClientFactory) -> None:
    async with run_sts(StsSettings(host="127.0.0.1", port=0)) as server:
        worker = StsTestClient(server.url, stream_id="slow-close")
        try:
            await worker.connect()
            await worker.init()
            await worker.emit("stream:end", {})
            await worker.wait_for("stream:complete")
            t0 = time.monotonic()
            await worker.wait_for("disconnect", timeout=8)
            assert 4.8 <= time.monotonic() - t0 <= 6.5
        finally:
            await worker.close()


async def test_order_kept_under_random_latency(clients: ClientFactory) -> None:
    worker = clients(stream_id="lat-1")
    control = clients()
    await worker.connect()
    await control.connect()
    ack = await control.control(
        "config:latency", {"stream_id": "lat-1", "min_delay_ms": 0, "max_delay_ms": 150, "seed": 11}
    )
    assert ack.status == "accepted"
    await worker.init(max_inflight=10)
    ids = [await worker.send_fragment(seq) for seq in range(15)]
    processed = await worker.wait_count("fragment:processed", 15, timeout=10)
    assert [p["fragment_id"] for p in processed] == ids
    times = [p["processing_time_ms"] for p in processed]
    assert max(times) >= 50  # the latency was really applied
    assert_all_replies_valid(worker)


async def test_pause_and_resume(clients: ClientFactory) -> None:
    worker = clients(stream_id="pause-1")
    await worker.connect()
    await worker.init()
    await worker.emit("stream:pause", {"stream_id": "pause-1", "reason": "test"})
    fid = await worker.send_fragment(0)
    err = await worker.wait_for("error")
    assert (err["code"], err["fragment_id"], err["severity"]) == ("STREAM_PAUSED", fid, "warning")
    await worker.emit("stream:resume", {"stream_id": "pause-1"})
    fid = await worker.send_fragment(1)  # seq 0 was used by the refused fragment
    processed = await worker.wait_for("fragment:processed")
    assert processed["fragment_id"] == fid and processed["status"] == "success"


async def test_inflight_drops_on_worker_ack_threshold_backpressure(
    clients: ClientFactory,
) -> None:
    worker = clients(stream_id="bp-1")
    control = clients()
    await worker.connect()
    await control.connect()
    assert (
        await control.control("config:backpressure", {"stream_id": "bp-1", "enabled": True})
    ).status == "accepted"
    await worker.init(max_inflight=2)
    a = await worker.send_fragment(0)
    b = await worker.send_fragment(1)
    await worker.wait_count("fragment:processed", 2)
    pause = await worker.wait_for("backpressure", lambda d: d["action"] == "pause")
    assert (pause["severity"], pause["current_inflight"]) == ("high", 2)
    mark = len(worker.events)
    await worker.ack(a)
    await worker.ack(b, status="received")
    relief = await worker.wait_for("backpressure", lambda d: d["current_inflight"] == 0, after=mark)
    assert relief["action"] == "none"


async def test_ten_parallel_sessions(clients: ClientFactory) -> None:
    workers = [clients(stream_id=f"par-{i}", worker_id=f"w-{i}") for i in range(10)]
    await asyncio.gather(*(w.connect() for w in workers))
    readies = await asyncio.gather(*(w.init() for w in workers))
    assert len({r.session_id for r in readies}) == 10

    async def run(worker: StsTestClient) -> tuple[list[str], list[str]]:
        ids = [await worker.send_fragment(seq) for seq in range(6)]
        processed = await worker.wait_count("fragment:processed", 6, timeout=10)
        return ids, [p["fragment_id"] for p in processed]

    results = await asyncio.gather(*(run(w) for w in workers))
    for (ids, got), worker in zip(results, workers, strict=True):
        assert got == ids
        assert all(p["stream_id"] == worker.stream_id for p in worker.of("fragment:processed"))
        assert worker.of("error") == []


async def test_echo_overhead_under_50ms(clients: ClientFactory) -> None:
    worker = clients(stream_id="perf-1")
    await worker.connect()
    await worker.init()
    audio = wav_bytes(6000, 48000, 2)  # 6 s of 48 kHz stereo s16: 1.15 MB, 1.5 MB as base64
    round_trips_ms = []
    server_ms = []
    for seq in range(8):
        mark = len(worker.events)
        t0 = time.perf_counter()
        fid = await worker.send_fragment(seq, audio=audio, duration_ms=6000)
        p = await worker.wait_for(
            "fragment:processed", lambda d, f=fid: d["fragment_id"] == f, after=mark
        )
        round_trips_ms.append((time.perf_counter() - t0) * 1000)
        server_ms.append(p["processing_time_ms"])
        assert decode_base64(p["dubbed_audio"]["data_base64"]) == audio
        await worker.ack(fid)
    median = statistics.median(round_trips_ms)
    print(
        f"echo round trip of a 6 s WAV fragment: median {median:.1f} ms, max {max(round_trips_ms):.1f} ms; server-side max {max(server_ms)} ms"
    )
    # The echo's own overhead (measured by the server) is the < 50 ms requirement; the client's
    # round trip also carries 1.5 MB of base64 each way and the scheduling noise of a shared 2-core
    # machine, so it only guards against regressions here (figures: docs/protocol.md).
    assert max(server_ms) < 50
    assert median < 250


async def test_health_metrics_and_startup(sts: RunningSts, clients: ClientFactory) -> None:
    t0 = time.monotonic()
    async with run_sts(StsSettings(host="127.0.0.1", port=0)) as other:
        status, body = await get_json(f"{other.url}/health")
        assert time.monotonic() - t0 < 2.0
    assert status == 200 and body["status"] == "ok"

    worker = clients(stream_id="met-1")
    await worker.connect()
    await worker.init()
    await worker.send_fragment(0)
    await worker.wait_for("fragment:processed")
    await worker.send_fragment(5)
    await worker.wait_for("error")
    async with aiohttp.ClientSession() as http, http.get(f"{sts.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for needle in (
        "sts_sessions_active 1.0",
        'sts_fragments_total{status="success"} 1.0',
        'sts_fragments_total{status="rejected"} 1.0',
        "sts_fragment_processing_seconds_bucket",
        'sts_errors_total{code="INVALID_SEQUENCE"} 1.0',
        'sts_simulations_active{kind="latency"} 0.0',
        "sts_connections 1.0",
    ):
        assert needle in text, needle
    status, body = await get_json(f"{sts.url}/health")
    assert body["sessions"] == 1 and "met-1" in body["streams"]
