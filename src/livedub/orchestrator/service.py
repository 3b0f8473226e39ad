"""`livedub serve`: the media service's HTTP API in front of the worker `Supervisor`.

Endpoints (docs/operations.md):
- `POST /v1/mediamtx/events/ready`, `POST /v1/mediamtx/events/not-ready`: the media server's
  hook, body `{"path": "live/<id>/in", "sourceType", "sourceId", "query"}`.
- `GET /v1/streams`, `GET /v1/streams/{id}[/{language}]`: one row per (stream, language)
  worker: state, pid, restarts, start time, metrics port, language, outputs.
- `GET /health`: 200 while serving, 503 while shutting down.
- `GET /metrics`: the orchestrator's own metrics and every live worker's, each worker series
  labelled `stream_id` (and `language` for a language's worker), one HELP/TYPE per family.
- `GET /` (the live console), `/v1/console[/events]`, `POST /v1/streams/{id}/actions/{action}`
  and the operator-token auth over the API: `console.py`.

A ready hook's languages are planned here (`orchestrator.languages`: query, overrides, default
list, the STS service's pairs) before the supervisor starts one worker per language.

A hook request is checked in this order, and starts nothing unless it passes everything: shared
secret (`X-Hook-Secret`, constant-time compare), body size, strict JSON (no duplicate keys), the
pydantic model (path exactly `live/<id>/in`, id `[A-Za-z0-9_-]{1,64}`, no extra fields). This module
never logs a secret or a publisher's query string and never starts a process itself.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from livedub.clock import Clock, SystemClock
from livedub.exitcodes import ExitCode
from livedub.log import bind
from livedub.orchestrator.console import Console
from livedub.orchestrator.languages import (
    LanguagePlan,
    StsLanguages,
    needs_languages,
    plan_languages,
)
from livedub.orchestrator.reconcile import LivePath, ReconcileCollector, Reconciler
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import (
    CapacityError,
    ShuttingDown,
    StreamState,
    Supervisor,
)
from livedub.protocol.constants import ID_CHARS, JSON_CONTENT_TYPE

log = bind("livedub.orchestrator.service")

READY_ROUTE = "/v1/mediamtx/events/ready"
NOT_READY_ROUTE = "/v1/mediamtx/events/not-ready"
STREAMS_ROUTE = "/v1/streams"
SECRET_HEADER = "X-Hook-Secret"

LANGUAGE_LABEL = "language"
#: The only media path a hook may name: the input of stream <id>.
INPUT_PATH_RE = re.compile(rf"live/(?P<stream_id>{ID_CHARS})/in")

_TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REFUSALS_LOGGED = 1024  # (stream, publisher, language) refusals remembered so each is logged once


# --- the hook payload ----------------------------------------------------------------------------


class HookEvent(BaseModel):
    """MediaMTX `runOnReady` / `runOnNotReady` data, as the hook script posts it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    path: str = Field(max_length=128, description="media path, `live/<id>/in`")
    source_type: str | None = Field(None, alias="sourceType", max_length=64)
    source_id: str | None = Field(None, alias="sourceId", max_length=128)
    query: str | None = Field(None, max_length=4096)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if INPUT_PATH_RE.fullmatch(value) is None:
            raise ValueError(f"path must be live/<id>/in with <id> matching {ID_CHARS}")
        return value

    @field_validator("source_type", "source_id", "query")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def stream_id(self) -> str:
        match = INPUT_PATH_RE.fullmatch(self.path)
        assert match is not None  # checked by the validator
        return match.group("stream_id")


class BadPayload(ValueError):
    """The body is not one JSON object with unique keys."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadPayload(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_hook_body(body: bytes) -> HookEvent:
    """Decode and validate a hook body. Raises `BadPayload` or `pydantic.ValidationError`."""
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadPayload("body must be a JSON object")
    return HookEvent.model_validate(doc)


# --- metrics -------------------------------------------------------------------------------------


def _exposition_name(family: Metric) -> str:
    return family.name + "_total" if family.type == "counter" else family.name


def merge_metric_texts(
    sources: Iterable[tuple[str | None, str] | tuple[str | None, str | None, str]],
    *,
    label: str = "stream_id",
) -> tuple[list[Metric], list[str]]:
    """Merge Prometheus text expositions into one family list with one HELP/TYPE per family.

    Each source is (stream_id, text) or (stream_id, language, text); samples from a source with
    a stream id get `label=stream_id` (overriding what the worker set), and with a language also
    `language=<lang>`. A family whose type disagrees with the first one seen under the same name
    is dropped. Returns (families, problems).
    """
    merged: dict[str, Metric] = {}
    problems: list[str] = []
    for source in sources:
        stream_id, language, text = source if len(source) == 3 else (source[0], None, source[1])
        try:
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # a garbled worker page must not break the whole scrape
            problems.append(f"{stream_id}: unparsable metrics: {exc}")
            continue
        for family in families:
            key = _exposition_name(family)
            target = merged.get(key)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[key] = target
            elif target.type != family.type:
                problems.append(
                    f"{stream_id}: {key} is {family.type}, already {target.type}: dropped"
                )
                continue
            for sample in family.samples:
                labels = dict(sample.labels)
                if stream_id is not None:
                    labels[label] = stream_id
                    if language is not None:
                        labels[LANGUAGE_LABEL] = language
                target.samples.append(sample._replace(labels=labels))
    return list(merged.values()), problems


class _StaticCollector(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _SupervisorCollector(Collector):
    """Orchestrator gauges/counters read from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("orchestrator_workers_running", "Worker processes alive now.")
        running.add_metric([], self._sup.workers_running())
        yield running
        streams = GaugeMetricFamily(
            "orchestrator_streams", "Streams known to the orchestrator, by state.", labels=["state"]
        )
        for state, count in self._sup.count_by_state().items():
            streams.add_metric([state.value], count)
        yield streams
        restarts = CounterMetricFamily(
            "orchestrator_worker_restarts", "Worker restarts after a crash (all streams)."
        )
        restarts.add_metric([], self._sup.restarts_total)
        yield restarts
        exits = CounterMetricFamily(
            "orchestrator_worker_exits",
            "Worker process exits by exit code (negative: killed by that signal).",
            labels=["code"],
        )
        for code, count in sorted(self._sup.exits_by_code.items()):
            exits.add_metric([str(code)], count)
        yield exits


# --- the service ---------------------------------------------------------------------------------


class OrchestratorService:
    """The HTTP API plus the supervisor. `start()` binds, `stop()` stops all workers."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        supervisor: Supervisor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.supervisor = supervisor or Supervisor(settings, clock=self.clock)
        self.registry = CollectorRegistry(auto_describe=True)
        self.hook_events = Counter(
            "orchestrator_hook_events",
            "Media-server hook requests by event and result.",
            ["event", "result"],
            registry=self.registry,
        )
        self.languages_refused = Counter(
            "orchestrator_languages_refused",
            "Requested languages that got no worker, by reason (invalid, same_as_source, "
            "too_many, unsupported).",
            ["reason"],
            registry=self.registry,
        )
        self.sts_languages = StsLanguages(settings.sts_url)
        self._refusals_logged: OrderedDict[tuple[str, str | None, str], None] = OrderedDict()
        self.registry.register(_SupervisorCollector(self.supervisor))
        self.reconciler = Reconciler(
            settings,
            self.supervisor,
            clock=self.clock,
            input_path_re=INPUT_PATH_RE,
            manages=self._manages,
            plan=self.plan_languages,
        )
        self.supervisor.on_slot_freed = self.reconciler.slot_freed
        self.registry.register(ReconcileCollector(self.reconciler))
        self._reconcile_task: asyncio.Task[None] | None = None
        ProcessCollector(registry=self.registry)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._http: aiohttp.ClientSession | None = None
        self.console = Console(settings, self.supervisor, lambda: self._http)
        self._started_mono = self.clock.monotonic()
        self._stopping = False
        self.port: int | None = None

    # --- app --------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(READY_ROUTE, self._ready)
        app.router.add_post(NOT_READY_ROUTE, self._not_ready)
        app.router.add_get(STREAMS_ROUTE, self._streams)
        app.router.add_get(STREAMS_ROUTE + "/{stream_id}", self._stream)
        app.router.add_get(STREAMS_ROUTE + "/{stream_id}/{language}", self._stream_language)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self.console.add_routes(app)  # GET /, its data and actions; the operator-token middleware
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.scrape_timeout_s)
        )

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def start(self) -> None:
        """Bind the HTTP API (raises OSError if the address is taken)."""
        if self.settings.hook_secret is None:
            if self.settings.insecure_open_hooks:
                log.warning(
                    "hook endpoints are NOT authenticated (--insecure-open-hooks)",
                    ctx={"host": self.settings.host},
                )
            else:
                log.warning(
                    "ORCH_HOOK_SECRET unset: every hook is refused (403)",
                    ctx={"host": self.settings.host},
                )
        self.console.log_auth_mode()
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await self._site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.settings.port
        self._reconcile_task = asyncio.create_task(self.reconciler.run(), name="reconcile")
        log.info(
            "orchestrator listening",
            ctx={
                "host": self.settings.host,
                "port": self.port,
                "max_streams": self.settings.max_streams,
            },
        )

    async def stop(self) -> None:
        """Refuse new hooks, stop every worker, then close the HTTP API."""
        self._stopping = True
        self.console.close()
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            await asyncio.gather(self._reconcile_task, return_exceptions=True)
        await self.supervisor.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        secret = self.settings.hook_secret
        if secret is None:
            return self.settings.insecure_open_hooks
        given = request.headers.get(SECRET_HEADER, "")
        return hmac.compare_digest(given.encode("utf-8"), secret.get_secret_value().encode("utf-8"))

    async def _read_event(self, request: web.Request, event: str) -> HookEvent | web.Response:
        def reject(status: int, result: str, message: str, **extra: Any) -> web.Response:
            self.hook_events.labels(event, result).inc()
            log.warning(
                "hook rejected",
                ctx={"event": event, "result": result, "status": status, "peer": request.remote},
            )
            return web.json_response({"error": result, "message": message, **extra}, status=status)

        if self._stopping or self.supervisor.closing:
            return reject(503, "unavailable", "shutting down")
        if self.settings.hook_secret is None and not self.settings.insecure_open_hooks:
            return reject(403, "forbidden", "no hook secret configured: hooks are closed")
        if not self._authorized(request):
            return reject(401, "unauthorized", f"missing or wrong {SECRET_HEADER}")
        if request.content_type != JSON_CONTENT_TYPE:
            return reject(415, "unsupported_media_type", f"Content-Type must be {JSON_CONTENT_TYPE}")
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return reject(
                413, "too_large", f"body larger than {self.settings.max_body_bytes} bytes"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return reject(
                413, "too_large", f"body larger than {self.settings.max_body_bytes} bytes"
            )
        try:
            return parse_hook_body(body)
        except BadPayload as exc:
            return reject(400, "bad_request", str(exc))
        except ValidationError as exc:
            errors = [
                {"loc": [str(p) for p in err["loc"]], "msg": err["msg"]} for err in exc.errors()
            ]
            return reject(422, "invalid", "payload failed validation", errors=errors)

    def _manages(self, stream_id: str) -> bool:
        """This orchestrator manages the stream (`stream_pattern`)."""
        pattern = self.settings.stream_pattern
        return not pattern or re.fullmatch(pattern, stream_id) is not None

    def _not_ours(self, event: str, stream_id: str) -> web.Response | None:
        """A stream another orchestrator manages (`stream_pattern`): acknowledged, not started."""
        pattern = self.settings.stream_pattern
        if self._manages(stream_id):
            return None
        self.hook_events.labels(event, "ignored").inc()
        log.info("hook ignored: stream not managed here", ctx={"stream_id": stream_id, "pattern": pattern})
        return web.json_response({"stream_id": stream_id, "action": "ignored", "state": None})

    async def plan_languages(
        self, stream_id: str, query: str | None, source_id: str | None = None
    ) -> LanguagePlan:
        """The stream's languages (see `orchestrator.languages`); each refused language is
        logged once per publisher (with its reason) and counted."""
        s = self.settings
        defaults, overrides = s.default_languages(), s.language_override_list()
        support = None
        if needs_languages(query, use_query=s.query_languages, defaults=defaults, overrides=overrides):
            support = await self.sts_languages.get()
        plan = plan_languages(
            stream_id,
            query,
            defaults=defaults,
            overrides=overrides,
            use_query=s.query_languages,
            source=s.worker_source_language(),
            max_languages=s.max_languages,
            support=support,
        )
        for refusal in plan.refused:
            key = (stream_id, source_id, refusal.language)
            if key in self._refusals_logged:
                continue
            self._refusals_logged[key] = None
            while len(self._refusals_logged) > _REFUSALS_LOGGED:
                self._refusals_logged.popitem(last=False)
            self.languages_refused.labels(refusal.reason.value).inc()
            log.error(
                "language refused",
                ctx={"stream_id": stream_id, **refusal.as_json(), "started": plan.languages},
            )
        return plan

    async def _ready(self, request: web.Request) -> web.Response:
        parsed = await self._read_event(request, "ready")
        if isinstance(parsed, web.Response):
            return parsed
        if (ignored := self._not_ours("ready", parsed.stream_id)) is not None:
            return ignored
        plan = await self.plan_languages(parsed.stream_id, parsed.query, parsed.source_id)
        try:
            result = self.supervisor.on_ready(
                parsed.stream_id,
                source_type=parsed.source_type,
                source_id=parsed.source_id,
                query=parsed.query,
                languages=plan.workers,
            )
        except CapacityError as exc:
            self.reconciler.note_refused(
                LivePath(parsed.stream_id, parsed.source_type, parsed.source_id, tuple(plan.workers))
            )
            self.hook_events.labels("ready", "capacity").inc()
            log.error("ready refused: capacity", ctx={"stream_id": parsed.stream_id})
            return web.json_response(
                {"error": "capacity", "message": str(exc)},
                status=503,
                headers={"Retry-After": "30"},
            )
        except ShuttingDown:
            self.hook_events.labels("ready", "unavailable").inc()
            return web.json_response(
                {"error": "unavailable", "message": "shutting down"}, status=503
            )
        self.hook_events.labels("ready", "accepted").inc()
        doc: dict[str, Any] = {
            "stream_id": result.stream_id,
            "action": result.action,
            "state": result.state.value if result.state else None,
        }
        if plan.languages or plan.refused:
            doc["languages"] = [lang for lang in result.languages if lang is not None]
            doc["refused"] = [r.as_json() for r in plan.refused]
        return web.json_response(doc)

    async def _not_ready(self, request: web.Request) -> web.Response:
        parsed = await self._read_event(request, "not_ready")
        if isinstance(parsed, web.Response):
            return parsed
        if (ignored := self._not_ours("not_ready", parsed.stream_id)) is not None:
            return ignored
        self.reconciler.forget(parsed.stream_id)
        result = self.supervisor.on_not_ready(parsed.stream_id, source_id=parsed.source_id)
        self.hook_events.labels("not_ready", "accepted").inc()
        return web.json_response(
            {
                "stream_id": result.stream_id,
                "action": result.action,
                "state": result.state.value if result.state else None,
            }
        )

    async def _streams(self, request: web.Request) -> web.Response:
        streams = [info.as_json() for info in self.supervisor.streams()]
        return web.json_response({"streams": streams, "count": len(streams)})

    async def _stream(self, request: web.Request) -> web.Response:
        info = self.supervisor.get(request.match_info["stream_id"])
        if info is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(info.as_json())

    async def _stream_language(self, request: web.Request) -> web.Response:
        info = self.supervisor.get(request.match_info["stream_id"], request.match_info["language"])
        if info is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(info.as_json())

    async def _health(self, request: web.Request) -> web.Response:
        stopping = self._stopping or self.supervisor.closing
        counts = self.supervisor.count_by_state()
        doc = {
            "status": "stopping" if stopping else "ok",
            "uptime_s": round(self.clock.monotonic() - self._started_mono, 3),
            "workers_running": self.supervisor.workers_running(),
            "streams": {state.value: n for state, n in counts.items() if n},
        }
        return web.json_response(doc, status=503 if stopping else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.render_metrics()
        return web.Response(body=body, headers={"Content-Type": _TEXT_CONTENT_TYPE})

    # --- metrics aggregation ----------------------------------------------------------------

    async def _scrape(self, port: int) -> str | None:
        url = f"http://{self.settings.worker_metrics_host}:{port}/metrics"
        assert self._http is not None
        try:
            async with self._http.get(url, headers={"Accept": "text/plain"}) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return None

    async def render_metrics(self) -> bytes:
        """The orchestrator's metrics plus every live worker's, as one Prometheus text page."""
        targets = self.supervisor.worker_targets()
        texts = await asyncio.gather(*(self._scrape(port) for _sid, _lang, port in targets))
        up = GaugeMetricFamily(
            "orchestrator_worker_scrape_up",
            "1 if the worker's /metrics answered this scrape, else 0.",
            labels=["stream_id", LANGUAGE_LABEL],
        )
        sources: list[tuple[str | None, str | None, str]] = [(None, None, generate_latest(self.registry).decode("utf-8"))]
        for (stream_id, language, _port), text in zip(targets, texts, strict=True):
            up.add_metric([stream_id, language or ""], 0 if text is None else 1)
            if text is not None:
                sources.append((stream_id, language, text))
        families, problems = merge_metric_texts(sources)
        for problem in problems:
            log.warning("metrics merge problem", ctx={"problem": problem})
        families.append(up)
        return generate_latest(_StaticCollector(families))


# --- process entry point ---------------------------------------------------------------------------


async def serve(settings: OrchestratorSettings) -> int:
    """Run the orchestrator until SIGTERM/SIGINT; stop every worker; return the exit code."""
    loop = asyncio.get_running_loop()
    service = OrchestratorService(settings)
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("signal received: stopping workers", ctx={"signal": signame})
            stop.set()
        else:
            log.warning("second signal: killing workers now", ctx={"signal": signame})
            service.supervisor.kill_all()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        try:
            await service.start()
        except OSError as exc:
            log.error(
                "cannot listen",
                ctx={"host": settings.host, "port": settings.port, "error": str(exc)},
            )
            return int(ExitCode.ERROR)
        try:
            await stop.wait()
        finally:
            started = time.monotonic()
            await service.stop()
            log.info(
                "orchestrator stopped", ctx={"shutdown_s": round(time.monotonic() - started, 3)}
            )
        return int(ExitCode.OK)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_serve(settings: OrchestratorSettings) -> int:
    return asyncio.run(serve(settings))


__all__ = [
    "HookEvent",
    "INPUT_PATH_RE",
    "NOT_READY_ROUTE",
    "OrchestratorService",
    "READY_ROUTE",
    "SECRET_HEADER",
    "STREAMS_ROUTE",
    "StreamState",
    "merge_metric_texts",
    "parse_hook_body",
    "run_serve",
    "serve",
]
