"""The orchestrator with real processes on 127.0.0.1: HTTP hooks → fake worker processes.

The worker is a small fake (written to a temp dir by the fixture): it takes the real worker's
flags, serves /metrics on the port it is given, records each start in a state dir, and exits
when the test tells it to (control files) or on SIGTERM. Every process a test starts is stopped
by PID in a `finally`, even on failure. Nothing sleeps: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.orchestrator.service import (
    NOT_READY_ROUTE,
    READY_ROUTE,
    SECRET_HEADER,
    OrchestratorService,
)
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import PortAllocator
from livedub.sts.testing import free_port, free_port_range

REPO = Path(__file__).resolve().parents[2]
HOOK_SCRIPT = REPO / "deploy" / "mediamtx-hook.sh"

FAKE_WORKER = r'''
"""Fake `livedub worker` for orchestrator tests."""
import argparse, json, os, signal, sys, threading, time
from pathlib import Path
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

p = argparse.ArgumentParser()
for flag in ("--stream-id", "--state-dir"):
    p.add_argument(flag, required=True)
p.add_argument("--metrics-port", type=int, required=True)
p.add_argument("--ignore-sigterm", action="store_true")
a = p.parse_args()
state = Path(a.state_dir)
me = f"{a.stream_id}.{os.getpid()}"
stop = threading.Event()

def on_term(signum, frame):
    (state / f"{me}.term").write_text("")
    if not a.ignore_sigterm:
        stop.set()

signal.signal(signal.SIGTERM, on_term)
reg = CollectorRegistry()
Counter("worker_audio_fragments_total", "Fragments.", ["stream_id", "status"], registry=reg).labels(
    a.stream_id, "processed").inc(3)
Histogram("worker_sts_rtt_ms", "RTT.", ["stream_id"], buckets=(10.0, 100.0), registry=reg).labels(
    a.stream_id).observe(42)
Gauge("worker_sts_breaker_state", "Breaker.", ["stream_id"], registry=reg).labels(a.stream_id).set(0)
start_http_server(a.metrics_port, addr="127.0.0.1", registry=reg)

record = {"pid": os.getpid(), "argv": sys.argv[1:], "t": time.monotonic(),
          "env_secret": "ORCH_HOOK_SECRET" in os.environ,
          "env": {k: os.environ.get(k) for k in ("WORKER_INPUT_URL", "WORKER_OUTPUT_URL", "WORKER_STS_URL")}}
tmp = state / f".{me}.tmp"
tmp.write_text(json.dumps(record))
os.replace(tmp, state / f"{me}.start")
print(f"fake worker up pid={os.getpid()}", flush=True)
print("to stderr", file=sys.stderr, flush=True)

plan = state / f"{a.stream_id}.plan"  # exit codes for successive starts: [1, 1, 0]
if plan.exists():
    codes = json.loads(plan.read_text())
    if codes:
        plan.write_text(json.dumps(codes[1:]))
        sys.exit(codes[0])
ctl = state / f"{a.stream_id}.exit"  # "exit now with this code"
while not stop.is_set():
    if ctl.exists():
        code = int(ctl.read_text().strip() or 0)
        ctl.unlink()
        sys.exit(code)
    stop.wait(0.02)
sys.exit(0)
'''


async def until(
    cond: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout_s: float = 10.0, what: str = ""
) -> Any:
    """Poll `cond` (sync or async) until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with these labels in a Prometheus text page."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Fake:
    script: Path
    state: Path

    def starts(self, stream_id: str) -> list[dict[str, Any]]:
        records = [json.loads(p.read_text()) for p in self.state.glob(f"{stream_id}.*.start")]
        return sorted(records, key=lambda r: r["t"])

    def all_pids(self) -> set[int]:
        return {json.loads(p.read_text())["pid"] for p in self.state.glob("*.start")}

    def got_sigterm(self, stream_id: str, pid: int) -> bool:
        return (self.state / f"{stream_id}.{pid}.term").exists()

    def plan(self, stream_id: str, codes: list[int]) -> None:
        (self.state / f"{stream_id}.plan").write_text(json.dumps(codes))

    def tell_exit(self, stream_id: str, code: int) -> None:
        tmp = self.state / f".{stream_id}.exit.tmp"
        tmp.write_text(str(code))
        os.replace(tmp, self.state / f"{stream_id}.exit")

    def kill_leftovers(self) -> None:
        for pid in self.all_pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fake(tmp_path: Path) -> Any:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    state = tmp_path / "state"
    state.mkdir()
    f = Fake(script, state)
    try:
        yield f
    finally:
        f.kill_leftovers()


def settings_for(fake: Fake, **overrides: Any) -> OrchestratorSettings:
    low, high = free_port_range(10)  # worker metrics ports of this test's own
    values: dict[str, Any] = {
        "worker_metrics_port_min": low,
        "worker_metrics_port_max": high,
        "host": "127.0.0.1",
        "port": 0,
        "worker_command": f"{sys.executable} {fake.script}",
        "worker_args": f"--state-dir {fake.state}",
        "grace_s": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_multiplier": 2.0,
        "backoff_max_s": 0.2,
        "stable_run_s": 30.0,
        "stop_timeout_s": 3.0,
    }
    if "hook_secret" not in overrides:
        values["insecure_open_hooks"] = True  # these tests are about workers, not hook auth
    values.update(overrides)
    return OrchestratorSettings.parse(values)  # as data: a secret given as text is one


class Orch:
    def __init__(self, service: OrchestratorService, http: aiohttp.ClientSession) -> None:
        self.service = service
        self.http = http
        self.base = f"http://127.0.0.1:{service.port}"

    async def hook(
        self, route: str, doc: Any = None, *, raw: bytes | None = None, secret: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        data = raw if raw is not None else json.dumps(doc).encode()
        async with self.http.post(self.base + route, data=data, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ready(self, stream_id: str, **kw: Any) -> tuple[int, Any]:
        return await self.hook(READY_ROUTE, {"path": f"live/{stream_id}/in"}, **kw)

    async def not_ready(self, stream_id: str, **kw: Any) -> tuple[int, Any]:
        return await self.hook(NOT_READY_ROUTE, {"path": f"live/{stream_id}/in"}, **kw)

    async def streams(self) -> dict[str, dict[str, Any]]:
        async with self.http.get(self.base + "/v1/streams") as resp:
            assert resp.status == 200
            doc = await resp.json()
        return {s["stream_id"]: s for s in doc["streams"]}

    async def stream(self, stream_id: str) -> dict[str, Any] | None:
        return (await self.streams()).get(stream_id)

    async def state_is(self, stream_id: str, state: str) -> dict[str, Any] | None:
        info = await self.stream(stream_id)
        return info if info is not None and info["state"] == state else None


async def worker_up(orch: Orch, fake: Fake, stream_id: str, restarts: int = 0) -> dict[str, Any]:
    """Wait until the stream runs a worker that has finished starting (its start record exists)."""

    async def check() -> dict[str, Any] | None:
        info = await orch.stream(stream_id)
        if not info or info["state"] != "running" or info["restarts"] != restarts:
            return None
        return info if any(r["pid"] == info["pid"] for r in fake.starts(stream_id)) else None

    result: dict[str, Any] = await until(check, timeout_s=15, what=f"{stream_id} worker up")
    return result


@pytest.fixture
async def orch_factory(fake: Fake) -> AsyncIterator[Callable[..., Awaitable[Orch]]]:
    started: list[Orch] = []
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def start(**overrides: Any) -> Orch:
        service = OrchestratorService(settings_for(fake, **overrides))
        await service.start()
        orch = Orch(service, http)
        started.append(orch)
        return orch

    try:
        yield start
    finally:
        for orch in started:
            await orch.service.stop()
        await http.close()


# --- hook validation ------------------------------------------------------------------------------------


async def test_invalid_hooks_are_refused_and_start_nothing(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory(hook_secret="right-secret", max_body_bytes=65536)
    good = {"path": "live/ok/in"}
    cases: list[tuple[int, dict[str, Any]]] = [
        (401, {"doc": good}),  # no secret
        (401, {"doc": good, "secret": "wrong-secret"}),
        (401, {"doc": good, "secret": "right-secre"}),
        (401, {"doc": good, "secret": ""}),
        (422, {"doc": {"path": "live/../etc/in"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "../live/ok/in"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "live/a%2F..%2Fb/in"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "live/ok/out"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "other/ok/in"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "live/" + "x" * 65 + "/in"}, "secret": "right-secret"}),
        (422, {"doc": {"path": "live/ok/in", "cmd": "rm"}, "secret": "right-secret"}),
        (400, {"raw": b"{not json", "secret": "right-secret"}),
        (400, {"raw": b'{"path":"live/x/in","path":"live/ok/in"}', "secret": "right-secret"}),
        (413, {"raw": b'{"path":"live/ok/in","query":"' + b"q" * 70000 + b'"}', "secret": "right-secret"}),
    ]  # fmt: skip
    for route in (READY_ROUTE, NOT_READY_ROUTE):
        for expected, kw in cases:
            status, doc = await orch.hook(route, **kw)
            assert status == expected, (route, kw.get("doc"), doc)
    assert await orch.streams() == {}
    assert fake.all_pids() == set()
    metrics = await (await orch.http.get(orch.base + "/metrics")).text()
    rejected = {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "orchestrator_hook_events"
        for s in f.samples
        if s.name.endswith("_total") and s.labels["event"] == "ready"
    }
    assert rejected == {"unauthorized": 4, "invalid": 7, "bad_request": 2, "too_large": 1}
    # The same request with the right secret does start a worker (the refusals were real).
    status, doc = await orch.hook(READY_ROUTE, good, secret="right-secret")
    assert (status, doc["action"]) == (200, "started")
    await worker_up(orch, fake, "ok")


@pytest.mark.parametrize("secret", [None, "", "   "])
async def test_hooks_fail_closed_without_a_secret(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake, secret: str | None
) -> None:
    """Issue 17 #2: no secret (or an empty one, as `${ORCH_HOOK_SECRET:-}` gives) refuses every
    hook, with or without a header, unless `insecure_open_hooks` says otherwise."""
    orch = await orch_factory(hook_secret=secret)
    assert orch.service.settings.hook_secret is None
    for route in (READY_ROUTE, NOT_READY_ROUTE):
        for kw in ({}, {"secret": ""}, {"secret": "anything"}):
            status, doc = await orch.hook(route, {"path": "live/closed/in"}, **kw)
            assert (status, doc["error"]) == (403, "forbidden"), (route, kw)
    assert await orch.streams() == {} and fake.all_pids() == set()
    opened = await orch_factory(hook_secret=secret, insecure_open_hooks=True)
    status, doc = await opened.ready("opened")
    assert (status, doc["action"]) == (200, "started")
    await worker_up(opened, fake, "opened")


def test_empty_hook_secret_env_is_unset_and_the_opt_out_reads_its_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_HOOK_SECRET", "")
    assert OrchestratorSettings.load().hook_secret is None
    assert OrchestratorSettings.load().insecure_open_hooks is False
    monkeypatch.setenv("ORCH_INSECURE_OPEN_HOOKS", "true")
    assert OrchestratorSettings.load().insecure_open_hooks is True


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_hooks_require_a_json_content_type(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake, content_type: str | None
) -> None:
    """Issue 17 #3: a web page can send these Content-Types cross-site without a preflight."""
    orch = await orch_factory(hook_secret="s3cret")
    headers = {SECRET_HEADER: "s3cret"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    for route in (READY_ROUTE, NOT_READY_ROUTE):
        async with orch.http.post(
            orch.base + route, data=b'{"path": "live/csrf/in"}', headers=headers
        ) as resp:
            assert resp.status == 415, await resp.text()
    assert await orch.streams() == {} and fake.all_pids() == set()


async def test_not_ready_must_name_the_source_that_started_the_worker(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    """Issue 17 #2: a not-ready without the starting publisher's sourceId never stops it."""
    orch = await orch_factory(hook_secret="s3cret")
    doc = {"path": "live/src/in", "sourceType": "rtspSession", "sourceId": "pub-1"}
    status, _ = await orch.hook(READY_ROUTE, doc, secret="s3cret")
    assert status == 200
    await worker_up(orch, fake, "src")
    for forged in ({"path": "live/src/in"}, {**doc, "sourceId": "pub-2"}, {**doc, "sourceId": ""}):
        status, body = await orch.hook(NOT_READY_ROUTE, forged, secret="s3cret")
        assert (status, body["action"]) == (200, "stale_ignored"), forged
        assert (await orch.stream("src"))["state"] == "running"  # type: ignore[index]
    status, body = await orch.hook(NOT_READY_ROUTE, doc, secret="s3cret")
    assert (status, body["action"]) == (200, "grace_started")


# --- start, idempotence, grace ----------------------------------------------------------------------------


async def test_ready_starts_one_worker_process_and_is_idempotent(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory()
    status, doc = await orch.ready("cam1")
    assert (status, doc["action"]) == (200, "started")
    info = await worker_up(orch, fake, "cam1")
    (start,) = fake.starts("cam1")
    assert start["pid"] == info["pid"] and alive(info["pid"])
    argv = start["argv"]
    assert start["env"] == {  # URLs by environment, never on argv (issue 17 #4)
        "WORKER_INPUT_URL": "rtsp://127.0.0.1:8554/live/cam1/in",
        "WORKER_OUTPUT_URL": "rtmp://127.0.0.1:1935/live/cam1/out",
        "WORKER_STS_URL": "http://127.0.0.1:8080",
    }
    assert not {"--input", "--output", "--sts-url"} & set(argv)
    assert int(argv[argv.index("--metrics-port") + 1]) == info["metrics_port"]
    assert info["restarts"] == 0 and isinstance(info["started_at"], float)
    for _ in range(3):
        status, doc = await orch.ready("cam1")
        assert (status, doc["action"]) == (200, "already_active")
    assert len(fake.starts("cam1")) == 1
    assert (await orch.stream("cam1"))["pid"] == info["pid"]  # type: ignore[index]


async def test_stream_pattern_leaves_other_streams_alone(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory(stream_pattern="cam-[0-9]+")
    status, doc = await orch.ready("other")
    assert (status, doc["action"]) == (200, "ignored")
    status, doc = await orch.ready("cam-1")
    assert (status, doc["action"]) == (200, "started")
    await worker_up(orch, fake, "cam-1")
    assert fake.starts("other") == [] and set(await orch.streams()) == {"cam-1"}


async def test_not_ready_grace_then_stop_and_ready_cancels(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory(grace_s=0.6)
    await orch.ready("g")
    info = await worker_up(orch, fake, "g")
    pid = info["pid"]
    # not-ready, then ready within the grace: nothing is stopped.
    assert (await orch.not_ready("g"))[1]["action"] == "grace_started"
    assert (await orch.stream("g"))["state"] == "grace"  # type: ignore[index]
    assert (await orch.ready("g"))[1]["action"] == "grace_cancelled"
    assert (await orch.stream("g"))["state"] == "running"  # type: ignore[index]
    # not-ready for good: stopped (SIGTERM) once the grace is over, not before.
    t0 = time.monotonic()
    await orch.not_ready("g")
    await until(lambda: orch.state_is("g", "stopped"), what="stopped")
    assert time.monotonic() - t0 >= 0.6
    assert fake.got_sigterm("g", pid) and not alive(pid)
    assert len(fake.starts("g")) == 1


# --- crash, restart, exit 0 ------------------------------------------------------------------------------------


async def test_worker_crash_restarts_with_backoff(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    fake.plan("crashy", [1, 13, 1])  # three crashes, then it stays up
    orch = await orch_factory(backoff_initial_s=0.1, backoff_multiplier=2.0, backoff_max_s=0.3)
    await orch.ready("crashy")
    info = await worker_up(orch, fake, "crashy", restarts=3)
    starts = fake.starts("crashy")
    assert len(starts) == 4 and starts[-1]["pid"] == info["pid"]
    gaps = [b["t"] - a["t"] for a, b in zip(starts, starts[1:], strict=False)]
    for gap, backoff in zip(gaps, (0.1, 0.2, 0.3), strict=True):  # 0.1, 0.2, then capped
        assert gap >= backoff, (gaps, backoff)
    assert info["last_exit_code"] == 1


async def test_exit_zero_is_done_and_not_restarted(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory()
    await orch.ready("fin")
    info = await worker_up(orch, fake, "fin")
    fake.tell_exit("fin", 0)
    done = await until(lambda: orch.state_is("fin", "done"), what="done")
    # "done" is only reached once the supervisor decided not to restart: no timer is left.
    assert done["restarts"] == 0 and done["last_exit_code"] == 0 and done["pid"] is None
    assert len(fake.starts("fin")) == 1 and not alive(info["pid"])


async def test_worker_ignoring_sigterm_is_killed_after_timeout(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory(
        worker_args=f"--state-dir {fake.state} --ignore-sigterm", grace_s=0.0, stop_timeout_s=0.5
    )
    await orch.ready("stub")
    info = await worker_up(orch, fake, "stub")
    await orch.not_ready("stub")
    stopped = await until(lambda: orch.state_is("stub", "stopped"), what="stopped")
    assert fake.got_sigterm("stub", info["pid"])  # asked first, killed after 0.5 s
    assert stopped["last_exit_code"] == -signal.SIGKILL
    assert not alive(info["pid"])


async def test_worker_output_goes_to_per_stream_log_file(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    orch = await orch_factory(log_dir=log_dir)
    await orch.ready("logged")
    info = await worker_up(orch, fake, "logged")
    log_file = log_dir / "logged.log"
    await until(lambda: log_file.exists() and "to stderr" in log_file.read_text(), what="log")
    assert f"fake worker up pid={info['pid']}" in log_file.read_text()


# --- metrics ----------------------------------------------------------------------------------------------------


async def test_metrics_aggregate_every_worker_with_stream_id(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake
) -> None:
    orch = await orch_factory()
    for sid in ("m1", "m2"):
        await orch.ready(sid)
    for sid in ("m1", "m2"):
        await worker_up(orch, fake, sid)

    async def page_with_both() -> str | None:
        async with orch.http.get(orch.base + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        return (
            text
            if 'worker_sts_rtt_ms_count{stream_id="m2"}' in text
            and ('worker_sts_rtt_ms_count{stream_id="m1"}' in text)
            else None
        )

    text = await until(page_with_both, what="both workers' metrics")
    for family in ("worker_audio_fragments_total", "worker_sts_rtt_ms", "worker_sts_breaker_state"):
        assert text.count(f"# TYPE {family} ") == 1
        assert text.count(f"# HELP {family} ") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    frags = families["worker_audio_fragments"]
    assert {s.labels["stream_id"] for s in frags.samples if s.name.endswith("_total")} == {
        "m1",
        "m2",
    }
    for name, family in families.items():
        if name.startswith("worker_"):
            assert all(s.labels.get("stream_id") in ("m1", "m2") for s in family.samples), name
    assert families["orchestrator_workers_running"].samples[0].value == 2
    up = {s.labels["stream_id"]: s.value for s in families["orchestrator_worker_scrape_up"].samples}
    assert up == {"m1": 1.0, "m2": 1.0}


# --- the MediaMTX hook script -------------------------------------------------------------------------------------


def _argv_logging_path(tmp_path: Path, client: str) -> tuple[str, Path]:
    """A PATH with only what the hook script needs, and `client` (curl or wget) wrapped so that
    every argv it is started with is appended to the returned log file."""
    import shutil

    bindir = tmp_path / f"bin-{client}"
    bindir.mkdir()
    argv_log = tmp_path / f"argv-{client}.log"
    for tool in ("tr", "sed", "mktemp", "grep", "rm", "cat", "wc", "head", "mkfifo"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bindir / tool).symlink_to(found)
    if client == "busybox":  # the MediaMTX -ffmpeg image: BusyBox wget and nc, no curl
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("busybox not installed")
        for tool in ("wget", "nc"):
            shim = bindir / tool
            shim.write_text(
                f'#!/bin/sh\nprintf "%s\\n" "$@" >> {argv_log}\nexec {busybox} {tool} "$@"\n'
            )
            shim.chmod(0o755)
        return str(bindir), argv_log
    real = shutil.which(client)
    assert real is not None
    shim = bindir / client
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {argv_log}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    return str(bindir), argv_log


@pytest.mark.parametrize("client", ["curl", "wget", "busybox"])
async def test_mediamtx_hook_script_posts_safe_json(
    orch_factory: Callable[..., Awaitable[Orch]], fake: Fake, tmp_path: Path, client: str
) -> None:
    """deploy/mediamtx-hook.sh, run as MediaMTX runs it, against the real API (with curl, and
    with GNU wget when there is no curl). The secret is never on the client's argv (#4)."""
    orch = await orch_factory(hook_secret="hook-secret-1")
    path, argv_log = _argv_logging_path(tmp_path, client)
    nasty = 'a=1&b="x",\\"path\\":\\"live/other/in\\"&c=$(touch /tmp/pwn)`id`;\'q\''
    env = {
        "PATH": path,
        "ORCH_URL": orch.base,
        "ORCH_HOOK_SECRET": "hook-secret-1",
        "MTX_PATH": "live/hooked/in",
        "MTX_SOURCE_TYPE": "rtspSession",
        "MTX_SOURCE_ID": "3b2a7c",
        "MTX_QUERY": nasty + "\nline2\ttab",
    }

    def run_hook(event: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(HOOK_SCRIPT), event],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=20,
        )

    done = await asyncio.to_thread(run_hook, "ready")
    assert done.returncode == 0, done.stderr
    info = await worker_up(orch, fake, "hooked")
    assert (info["source_type"], info["source_id"]) == ("rtspSession", "3b2a7c")
    assert orch.service.supervisor.query_of("hooked") == nasty + "line2tab"  # control chars dropped
    assert "other" not in await orch.streams()
    assert not Path("/tmp/pwn").exists()
    # Wrong secret: wget fails, nothing changes.
    bad = await asyncio.to_thread(run_hook, "not-ready", ORCH_HOOK_SECRET="nope")
    assert bad.returncode != 0
    assert (await orch.stream("hooked"))["state"] == "running"  # type: ignore[index]
    done = await asyncio.to_thread(run_hook, "not-ready")
    assert done.returncode == 0, done.stderr
    assert (await orch.stream("hooked"))["state"] == "grace"  # type: ignore[index]
    usage = await asyncio.to_thread(run_hook, "bogus")
    assert usage.returncode == 2
    argv = argv_log.read_text()
    assert "127.0.0.1" in argv  # the client was really used (curl, wget or nc) …
    assert "hook-secret-1" not in argv and "nope" not in argv  # … and never given the secret


# --- metrics ports ------------------------------------------------------------------------------------------------


def test_port_allocator_range_and_reuse() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(OSError):
            PortAllocator("127.0.0.1", taken, taken).acquire()  # the only port is in use
        ports = PortAllocator("127.0.0.1", max(1024, taken - 50), min(65535, taken + 50))
        got = [ports.acquire() for _ in range(3)]
        assert taken not in got and len(set(got)) == 3
        ports.release(got[0])
        assert ports.acquire(prefer=got[0]) == got[0]
    anywhere = PortAllocator("127.0.0.1", 0, 0)
    a, b = anywhere.acquire(), anywhere.acquire()
    assert a > 0 and b > 0 and a != b


# --- the real `livedub serve` process ---------------------------------------------------------------------------------


SERVE_SECRET = "serve-secret-123"


def start_serve(fake: Fake, port: int, *extra: str, ignore_sighup: bool = False) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_HOOK_SECRET"] = SERVE_SECRET
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livedub",
            "serve",
            "--port",
            str(port),
            "--worker-command",
            f"{sys.executable} {fake.script}",
            "--worker-args",
            f"--state-dir {fake.state}",
            "--worker-metrics-port-min",
            "0",
            "--stop-timeout-s",
            "5",
            *extra,
        ],  # fmt: skip
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # as under `nohup`: SIGHUP ignored in serve, inherited by what it starts unless reset
        preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore_sighup else None,  # noqa: PLW1509
    )


async def _serve_with_workers(
    fake: Fake, stream_ids: list[str], *, ignore_sighup: bool = False
) -> tuple[subprocess.Popen[bytes], Orch, aiohttp.ClientSession, list[int]]:
    port = free_port()
    proc = start_serve(fake, port, ignore_sighup=ignore_sighup)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    orch = Orch.__new__(Orch)
    orch.http, orch.base = http, f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            async with http.get(orch.base + "/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await until(healthy, timeout_s=20, what="livedub serve healthy")
    for sid in stream_ids:
        status, _ = await orch.ready(sid, secret=SERVE_SECRET)
        assert status == 200
    pids = []
    for sid in stream_ids:
        pids.append((await worker_up(orch, fake, sid))["pid"])
    return proc, orch, http, pids


async def test_sigterm_to_serve_stops_every_worker(fake: Fake) -> None:
    proc: subprocess.Popen[bytes] | None = None
    http: aiohttp.ClientSession | None = None
    try:
        proc, orch, http, pids = await _serve_with_workers(fake, ["s1", "s2", "s3"])
        assert all(alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code == 0, output
        assert not any(alive(p) for p in pids)
        assert all(
            fake.got_sigterm(sid, pid) for sid, pid in zip(["s1", "s2", "s3"], pids, strict=True)
        )
        assert f"[s1] fake worker up pid={pids[0]}" in output  # worker output, prefixed
        assert not any(r["env_secret"] for sid in ("s1", "s2", "s3") for r in fake.starts(sid))
        assert SERVE_SECRET not in output
        assert "[s2] to stderr" in output
    finally:
        if http is not None:
            await http.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("ignore_sighup", [False, True], ids=["plain", "under-nohup"])
async def test_killed_serve_leaves_no_orphan_workers(fake: Fake, ignore_sighup: bool) -> None:
    """SIGKILL cannot be handled: the workers' parent-death signal must take them down — also
    when serve runs with SIGHUP ignored (nohup), which its workers would otherwise inherit."""
    proc: subprocess.Popen[bytes] | None = None
    http: aiohttp.ClientSession | None = None
    try:
        proc, orch, http, pids = await _serve_with_workers(fake, ["k1", "k2"], ignore_sighup=ignore_sighup)
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        await until(lambda: not any(alive(p) for p in pids), timeout_s=10, what="orphans gone")
    finally:
        if http is not None:
            await http.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
