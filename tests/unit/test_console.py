"""The console's rules without real workers: operator actions in the supervisor (hand-driven clock,
fake processes), the operator-token auth over the HTTP API (aiohttp test client on a test port),
the worker's control route and the row figures. The browser test is tests/integration/test_console.py."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from livedub.orchestrator.console import CONSOLE_HEADER, SESSION_COOKIE, worker_figures
from livedub.orchestrator.service import OrchestratorService
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import StreamState, Supervisor
from livedub.sts.testing import free_port
from livedub.typed import Secret
from livedub.worker.control import CONTROL_ROUTE, ORIGINAL_ONLY_REASON, WorkerControl
from livedub.worker.metrics import WorkerMetrics, metrics_app
from tests.unit.test_orchestrator_supervisor import (
    FakeLauncher,
    FakePorts,
    ManualClock,
    eventually,
    make,
    settle,
    state,
)

TOKEN = "operator-token-0123456789abcdef"

# --- operator actions in the supervisor -------------------------------------------------------------


async def test_restart_starts_a_new_process_at_once_and_is_not_a_crash() -> None:
    sup, _, launcher, _ = make()
    sup.on_ready("abc", source_id="s1")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    (first,) = launcher.procs
    assert sup.operator_restart("abc").action == "restarting"
    await eventually(lambda: len(launcher.procs) == 2)
    assert first.signals == [signal.SIGTERM]  # it drains, as on any stop
    second = launcher.procs[1]
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    info = sup.get("abc")
    assert info is not None and info.pid == second.pid and info.restarts == 0
    assert second.spec.env["WORKER_CONTROL_TOKEN"] != first.spec.env["WORKER_CONTROL_TOKEN"]
    await sup.shutdown()


async def test_stop_holds_the_stream_until_restart_or_a_new_ready() -> None:
    sup, _, launcher, _ = make()
    sup.on_ready("abc", source_id="s1")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert sup.operator_stop("abc").action == "stopping"
    await eventually(lambda: state(sup, "abc") == StreamState.STOPPED)
    assert sup.operator_stopped_languages("abc", "s1") == {None}  # reconcile leaves it alone
    assert sup.operator_stop("abc").action == "not_running"
    assert sup.operator_restart("abc").action == "started"
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    assert len(launcher.procs) == 2 and not sup.operator_stopped_languages("abc", "s1")
    await sup.shutdown()


async def test_original_only_is_kept_for_every_later_process() -> None:
    sup, clock, launcher, ports = make()
    sup.on_ready("abc")
    await eventually(lambda: state(sup, "abc") == StreamState.RUNNING)
    target = sup.set_original_only("abc", True)
    assert target is not None
    assert target.token == launcher.procs[0].spec.env["WORKER_CONTROL_TOKEN"]
    assert target.port in ports.used
    info = sup.get("abc")
    assert info is not None and info.original_only and info.as_json()["original_only"] is True
    launcher.procs[0].exit(1)  # a crash: the restarted worker starts in original-only mode
    await eventually(lambda: state(sup, "abc") == StreamState.BACKOFF)
    await clock.advance(1.0)
    await eventually(lambda: len(launcher.procs) == 2)
    assert launcher.procs[1].spec.env["WORKER_ORIGINAL_ONLY"] == "true"
    await sup.shutdown()


async def test_actions_on_an_unknown_stream_raise() -> None:
    sup, *_ = make()
    for call in (sup.operator_stop, sup.operator_restart):
        with pytest.raises(KeyError):
            call("nope")
    with pytest.raises(KeyError):
        sup.set_original_only("nope", True)


# --- auth over the HTTP API ------------------------------------------------------------------------


def _service(**overrides: Any) -> tuple[OrchestratorService, FakeLauncher]:
    settings = OrchestratorSettings(worker_command="fake-worker", **overrides)
    launcher = FakeLauncher()
    ports = FakePorts()
    ports.next = free_port() - 1  # the fake worker's "metrics port": a free one of this test's block
    sup = Supervisor(settings, clock=ManualClock(), launcher=launcher, ports=ports)  # type: ignore[arg-type]
    return OrchestratorService(settings, supervisor=sup), launcher


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    """Starts the orchestrator's app, and stream `abc` whose fake worker serves the real control
    route (WorkerControl) on its port with the token the supervisor gave it."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(**overrides: Any) -> tuple[TestClient[web.Request, web.Application], OrchestratorService]:
        service, launcher = _service(**overrides)
        client = TestClient(TestServer(service.make_app(), host="127.0.0.1", port=free_port()))
        await client.start_server()
        clients.append(client)
        service.supervisor.on_ready("abc")
        await eventually(lambda: len(launcher.procs) == 1)
        spec = launcher.procs[0].spec
        control = WorkerControl("abc", token=Secret(spec.env["WORKER_CONTROL_TOKEN"]))
        port = int(spec.argv[spec.argv.index("--metrics-port") + 1])
        app = metrics_app(WorkerMetrics("abc"), control.health, control.add_routes)
        worker = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await worker.start_server()
        clients.append(worker)
        service.worker_control = control  # type: ignore[attr-defined]  # for the assertions
        return client, service

    yield start
    for client in clients:
        await client.close()


async def test_with_a_token_everything_but_probes_needs_it(client_for: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    client, service = await client_for(api_token=Secret(TOKEN))
    for path in ("/health", "/metrics", "/login", "/console/console.js", "/console/console.css"):
        assert (await client.get(path)).status == 200, path
    page = await client.get("/", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    for path in ("/v1/streams", "/v1/streams/abc", "/v1/console"):
        assert (await client.get(path)).status == 401, path
        bearer = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status == 200, path
    wrong = await client.get("/v1/streams", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    action = "/v1/streams/abc/actions/original_only"
    assert (await client.post(action)).status == 401
    ok = await client.post(action, headers={"Authorization": f"Bearer {TOKEN}"})
    doc = await ok.json()
    assert ok.status == 200 and doc["original_only"] is True and doc["result"] == "applied"
    assert service.worker_control.original_only  # the worker took it
    rows = await (await client.get("/v1/console", headers={"Authorization": f"Bearer {TOKEN}"})).json()
    (row,) = rows["streams"]
    assert row["worker"]["original_only"] is True and row["original_only"] is True
    assert row["links"] == {"out": "rtmp://127.0.0.1:1935/live/abc/out"}
    assert TOKEN not in caplog.text  # never logged
    await service.supervisor.shutdown()


async def test_sign_in_sets_a_strict_httponly_cookie_that_is_not_the_token(client_for: Any) -> None:
    client, service = await client_for(api_token=Secret(TOKEN))
    refused = await client.post("/login", data={"token": "wrong"}, allow_redirects=False)
    assert refused.status == 401 and SESSION_COOKIE not in refused.cookies
    signed = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert signed.status == 303 and signed.headers["Location"] == "/"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = await client.get("/")  # the client keeps the cookie
    assert page.status == 200 and "livedub" in await page.text()
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]  # no clickjacking
    assert page.headers["X-Frame-Options"] == "DENY"
    assert (await client.get("/v1/console")).status == 200
    action = "/v1/streams/abc/actions/stop"
    assert (await client.post(action)).status == 403  # a browser session must send the header
    ok = await client.post(action, headers={CONSOLE_HEADER: "1"})
    assert ok.status == 200 and (await ok.json())["result"] == "stopping"
    out = await client.post("/logout", allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/v1/console")).status == 401
    await service.supervisor.shutdown()


async def test_without_a_token_reads_are_open_and_actions_closed(client_for: Any) -> None:
    client, service = await client_for()
    assert (await client.get("/")).status == 200
    doc = await (await client.get("/v1/console")).json()
    assert doc["auth"] == "closed" and doc["actions_allowed"] is False
    assert [r["stream_id"] for r in doc["streams"]] == ["abc"]
    for action in ("stop", "restart", "original_only", "dubbed"):
        assert (await client.post(f"/v1/streams/abc/actions/{action}")).status == 403
    await service.supervisor.shutdown()


async def test_the_explicit_opt_out_opens_actions(client_for: Any) -> None:
    client, service = await client_for(insecure_open_api=True)
    assert (await client.post("/v1/streams/abc/actions/original_only")).status == 200
    assert (await client.post("/v1/streams/nope/actions/stop")).status == 404
    assert (await client.post("/v1/streams/abc/actions/explode")).status == 404
    await settle()
    await service.supervisor.shutdown()


def test_workers_never_inherit_the_operator_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from livedub.orchestrator.supervisor import SubprocessLauncher

    monkeypatch.setenv("ORCH_API_TOKEN", TOKEN)
    monkeypatch.setenv("ORCH_HOOK_SECRET", "hook")
    env = SubprocessLauncher._env({"WORKER_CONTROL_TOKEN": "per-process"})
    assert "ORCH_API_TOKEN" not in env and "ORCH_HOOK_SECRET" not in env
    assert env["WORKER_CONTROL_TOKEN"] == "per-process"


def test_api_token_is_env_only_and_empty_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from livedub.orchestrator.serve_cli import ENV_ONLY_FIELDS

    assert "api_token" in ENV_ONLY_FIELDS
    monkeypatch.setenv("ORCH_API_TOKEN", "  ")
    assert OrchestratorSettings.load().api_token is None
    assert OrchestratorSettings(api_token=Secret("  ")).api_token is None  # built in code too
    monkeypatch.setenv("ORCH_API_TOKEN", TOKEN)
    assert OrchestratorSettings.load().api_token == Secret(TOKEN)
    with pytest.raises(ValueError):
        OrchestratorSettings(console_hls_base="http://user:pw@mediamtx:8888")


# --- the worker's control route --------------------------------------------------------------------


async def test_worker_control_route_needs_its_token_and_tells_the_session() -> None:
    switched: list[bool] = []
    control = WorkerControl("abc", token=Secret(TOKEN), on_switch=switched.append)
    app = metrics_app(WorkerMetrics("abc"), lambda: control.health(), control.add_routes)
    async with TestClient(TestServer(app, host="127.0.0.1", port=free_port())) as client:
        assert (await client.post(CONTROL_ROUTE, json={"enabled": True})).status == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await client.post(CONTROL_ROUTE, json={"enabled": True}, headers=bad)).status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.post(CONTROL_ROUTE, json={"enabled": "yes"}, headers=auth)).status == 400
        on = await client.post(CONTROL_ROUTE, json={"enabled": True}, headers=auth)
        assert on.status == 200 and (await on.json()) == {"original_only": True}
        assert switched == [True]  # the session is told (it sends the queued segments out original)
        health = await (await client.get("/health")).json()
        assert health["original_only"] is True
        off = await client.post(CONTROL_ROUTE, json={"enabled": False}, headers=auth)
        assert (await off.json()) == {"original_only": False}


async def test_worker_without_a_control_token_has_no_control_route() -> None:
    control = WorkerControl("abc", token=None)
    app = metrics_app(WorkerMetrics("abc"), control.health, control.add_routes)
    async with TestClient(TestServer(app, host="127.0.0.1", port=free_port())) as client:
        assert (await client.post(CONTROL_ROUTE, json={"enabled": True})).status in (404, 405)


def test_last_lines_are_kept_trimmed_and_blank_ones_ignored() -> None:
    control = WorkerControl("abc", token=None)
    control.note_lines(" Hello there. ", "Hola.")
    control.note_lines("", "  ")
    control.note_lines("x" * 2000, None)
    assert control.last_translation == "Hola."
    assert control.last_transcript == "x" * 500


def test_row_figures_from_a_worker_metrics_page() -> None:
    metrics = WorkerMetrics("abc")
    metrics.segment_output("dubbed")
    metrics.segment_output("original")
    metrics.fallback(ORIGINAL_ONLY_REASON)
    metrics.set_breaker_state(2)
    metrics.set_inflight(2)
    metrics.set_output_delay_ms(14500.0)
    metrics.set_av_sync_delta_ms(-1.25)
    figures = worker_figures(metrics.render().decode())
    assert figures["segments"] == {"dubbed": 1, "original": 1}
    assert figures["fallback_reasons"] == {ORIGINAL_ONLY_REASON: 1}  # zero reasons left out
    assert (figures["breaker"], figures["inflight"]) == ("open", 2)
    assert (figures["output_delay_ms"], figures["av_sync_delta_ms"]) == (14500.0, -1.25)


async def test_reconcile_leaves_a_stream_the_operator_stopped_until_a_new_publish() -> None:
    from livedub.orchestrator.reconcile import LivePath
    from livedub.orchestrator.service import INPUT_PATH_RE
    from tests.unit.test_orchestrator_reconcile import FakeApi

    sup, clock, launcher, _ = make(media_api_url="http://mtx:9997")
    rec = FakeApi(sup._s, sup, clock=clock, input_path_re=INPUT_PATH_RE, manages=lambda s: True)
    rec.live = [LivePath("a", "rtspSession", "1")]
    assert await rec.reconcile_once(http=object()) == 1  # type: ignore[arg-type]
    await eventually(lambda: state(sup, "a") == StreamState.RUNNING)
    sup.operator_stop("a")
    await eventually(lambda: state(sup, "a") == StreamState.STOPPED)
    assert await rec.reconcile_once(http=object()) == 0  # type: ignore[arg-type]
    rec.live = [LivePath("a", "rtspSession", "2")]  # a new publish
    assert await rec.reconcile_once(http=object()) == 1  # type: ignore[arg-type]
    await eventually(lambda: len(launcher.procs) == 2)
    await sup.shutdown()


def test_a_control_target_never_shows_its_token() -> None:
    from livedub.orchestrator.supervisor import ControlTarget

    assert TOKEN not in repr(ControlTarget(9100, TOKEN))


def lang_state(sup: Supervisor, stream_id: str, language: str) -> StreamState:
    info = sup.get(stream_id, language)
    assert info is not None
    return info.state


async def test_operator_actions_address_one_language_and_reconcile_keeps_it_stopped() -> None:
    """Per (stream, language): stopping `ca` leaves `es` (the stream's first, its `out`) running;
    reconcile starts neither again (es runs, ca was stopped for this publish); restarting `ca`
    starts only `ca`; the original-only switch is `ca`'s alone."""
    from livedub.orchestrator.reconcile import LivePath
    from livedub.orchestrator.service import INPUT_PATH_RE
    from tests.unit.test_orchestrator_reconcile import FakeApi

    sup, clock, launcher, _ = make(media_api_url="http://mtx:9997")
    sup.on_ready("a", source_id="1", languages=["es", "ca"])
    await eventually(lambda: all(lang_state(sup, "a", lang) == StreamState.RUNNING for lang in ("es", "ca")))
    es_pid = sup.get("a", "es").pid  # type: ignore[union-attr]
    assert sup.operator_stop("a", "ca").action == "stopping"
    await eventually(lambda: lang_state(sup, "a", "ca") == StreamState.STOPPED)
    assert lang_state(sup, "a", "es") == StreamState.RUNNING and sup.get("a", "es").pid == es_pid  # type: ignore[union-attr]
    assert sup.operator_stopped_languages("a", "1") == {"ca"}
    rec = FakeApi(sup._s, sup, clock=clock, input_path_re=INPUT_PATH_RE, manages=lambda s: True)
    rec.live = [LivePath("a", "rtspSession", "1", ("es", "ca"))]
    await rec.reconcile_once(http=object())  # type: ignore[arg-type]
    await settle()
    assert lang_state(sup, "a", "ca") == StreamState.STOPPED and len(launcher.procs) == 2
    assert sup.operator_restart("a", "ca").action == "started"
    await eventually(lambda: lang_state(sup, "a", "ca") == StreamState.RUNNING)
    assert len(launcher.procs) == 3 and sup.get("a", "es").pid == es_pid  # type: ignore[union-attr]
    assert launcher.procs[-1].spec.language == "ca"
    sup.set_original_only("a", True, "ca")
    assert sup.get("a", "ca").original_only and not sup.get("a", "es").original_only  # type: ignore[union-attr]
    assert not sup.get("a").original_only  # type: ignore[union-attr]  # no language: the first (es)
    await sup.shutdown()
