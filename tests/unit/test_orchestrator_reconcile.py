"""Reconciler: parsing MediaMTX's PathList, what a pass starts, capacity waits retried when a slot
frees (fake processes and a manual clock from the supervisor's unit tests; no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livedub.orchestrator.reconcile import LivePath, MediaApiError, Reconciler, live_inputs
from livedub.orchestrator.service import INPUT_PATH_RE
from livedub.orchestrator.supervisor import StreamState, Supervisor
from tests.unit.test_orchestrator_supervisor import ManualClock, make, settle, state


def item(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "source": {"type": "rtspSession", "id": f"id-{name}"}, "ready": True, **kw}


def test_live_inputs_takes_only_live_input_paths() -> None:
    doc = {
        "itemCount": 7,
        "pageCount": 1,
        "items": [
            item("live/a/in"),
            item("live/b/in", ready=False),  # published, not ready yet
            {"name": "live/c/in", "ready": False, "available": True, "source": None},  # MediaMTX ≥ 1.15
            item("live/a/out"),
            item("other/x/in"),
            item("live/../in"),
            {"ready": True},
        ],
    }
    assert live_inputs(doc, INPUT_PATH_RE) == [
        LivePath("a", "rtspSession", "id-live/a/in"),
        LivePath("c", None, None),
    ]
    with pytest.raises(MediaApiError):
        live_inputs({"error": "x"}, INPUT_PATH_RE)


def reconciler(sup: Supervisor, clock: ManualClock, pattern: str = "") -> Reconciler:
    return Reconciler(
        sup._s, sup, clock=clock, input_path_re=INPUT_PATH_RE,  # fmt: skip
        manages=lambda sid: not pattern or sid.startswith(pattern),
    )


class FakeApi(Reconciler):
    """A Reconciler whose media API answers from a list."""

    live: list[LivePath]

    async def list_live(self, http: Any) -> list[LivePath]:
        return list(self.live)


async def test_a_pass_starts_live_streams_without_a_worker_once() -> None:
    sup, clock, launcher, _ = make(media_api_url="http://mtx:9997")
    rec = FakeApi(sup._s, sup, clock=clock, input_path_re=INPUT_PATH_RE, manages=lambda s: s != "theirs")
    rec.live = [LivePath("a", "rtspSession", "1"), LivePath("b", "rtmpConn", "2"), LivePath("theirs")]
    assert await rec.reconcile_once(http=object()) == 2  # type: ignore[arg-type]
    await settle()
    assert {p.spec.stream_id for p in launcher.procs} == {"a", "b"}
    assert await rec.reconcile_once(http=object()) == 0  # type: ignore[arg-type]
    await settle()
    assert len(launcher.procs) == 2 and rec.runs["ok"] == 2
    # A stream whose current publish ran to its end (exit 0) is not started again for it.
    launcher.of("a")[0].exit(0)
    await settle()
    assert state(sup, "a") is StreamState.DONE
    assert await rec.reconcile_once(http=object()) == 0  # type: ignore[arg-type]
    rec.live[0] = LivePath("a", "rtspSession", "new-publisher")
    assert await rec.reconcile_once(http=object()) == 1  # type: ignore[arg-type]
    await sup.shutdown()


async def test_capacity_refusals_start_when_a_slot_frees() -> None:
    sup, clock, launcher, _ = make(max_streams=1)
    rec = reconciler(sup, clock)
    sup.on_slot_freed = rec.slot_freed
    task = asyncio.create_task(rec.run())
    try:
        sup.on_ready("a")
        await settle()
        rec.note_refused(LivePath("b", "rtmpConn", "9"))  # the service does this on a 503
        rec.note_refused(LivePath("c"))
        rec.forget("c")  # its not-ready came
        assert rec.waiting == ["b"]
        launcher.of("a")[0].exit(1)  # crash: backoff keeps the slot
        await settle()
        assert launcher.of("b") == []
        sup.on_not_ready("a")
        await clock.advance(30.0)  # grace over: a stops, the slot frees, b starts at once
        await settle(200)
        assert [p.spec.stream_id for p in launcher.procs][-1] == "b" and rec.waiting == []
        assert state(sup, "b") is StreamState.RUNNING
        assert rec.runs["off"] >= 2  # no media API: passes only retry the waiting streams
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sup.shutdown()


async def test_embedded_media_server_api_pages_and_reconcile_reads_it() -> None:
    """The embedded server's /v3/paths/list (no child processes needed: publish events are fed
    as the relay reports them), read back by the Reconciler over HTTP, several pages."""
    import json
    import urllib.error
    import urllib.request

    import aiohttp

    from livedub.orchestrator.media_server import HookEvent, MediaServer, PathsApi

    ms = MediaServer(rtsp_port=48001, rtmp_port=48002)  # never started: nothing listens there
    for i in range(5):
        ms._on_publish_event(HookEvent("ready", f"live/s{i}/in", "rtspSession", f"src{i}"))
    ms._on_publish_event(HookEvent("ready", "live/s0/out", "rtmpConn", "w0"))
    ms._on_publish_event(HookEvent("not-ready", "live/s4/in", "rtspSession", "other"))  # not its owner
    ms._on_publish_event(HookEvent("not-ready", "live/s3/in", "rtspSession", "src3"))
    api = PathsApi("127.0.0.1", 0, ms.paths_list)
    api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        def get(path: str) -> tuple[int, dict[str, Any]]:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, doc = await asyncio.to_thread(get, "/v3/paths/list?itemsPerPage=2&page=1")
        assert status == 200 and doc["itemCount"] == 5 and doc["pageCount"] == 3
        assert [i["name"] for i in doc["items"]] == ["live/s1/in", "live/s2/in"]
        assert (await asyncio.to_thread(get, "/v3/paths/list?page=-1"))[0] == 400
        assert (await asyncio.to_thread(get, "/v3/config/global/get"))[0] == 404
        sup, clock, _, _ = make(media_api_url=base)
        rec = reconciler(sup, clock)
        async with aiohttp.ClientSession() as http:
            live = await rec.list_live(http)
        assert sorted(live, key=lambda p: p.stream_id) == [
            LivePath(f"s{i}", "rtspSession", f"src{i}") for i in (0, 1, 2, 4)
        ]
    finally:
        api.stop()
