"""Prometheus metrics of one stream worker, and the `/metrics` + `/health` HTTP endpoints.

Every metric carries a `stream_id` label and lives in this object's own `CollectorRegistry`
(never the global one), so several workers or tests in one process do not collide. Label children
for the known statuses, reasons and actions are created up front, so every counter is exported
with value 0 from the first scrape. The metric names below are the worker's metric contract;
they are listed once, here.

Two views, each counted once:
- `worker_audio_fragments_total{status}` counts fragments *sent to the STS*: every sent fragment
  ends in exactly one of processed / fallback, so sent == processed + fallback + in-flight.
- `worker_fallback_total{reason}` counts *segments output with their original audio*, whether
  they were sent or not (a segment never sent while the breaker is open counts here only).

This module only records what it is told; it never decides anything, never raises into the
worker on a bad label value (it logs and ignores), and never serves on the global registry.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from livedub.log import bind
from livedub.reasons import COUNTED_UPFRONT, RejectedReason

# `generate_latest` writes the classic text format 0.0.4 (what every Prometheus scrapes).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FRAGMENT_STATUSES = ("sent", "processed", "fallback")
# Why a segment used its original audio (`FallbackReason`); any other reason is counted too.
FALLBACK_REASONS = tuple(r.value for r in COUNTED_UPFRONT)
# Why a received result was not used (besides being late).
REJECTED_REASONS = tuple(r.value for r in RejectedReason)
BACKPRESSURE_ACTIONS = ("none", "slow_down", "pause")
SEGMENT_SOURCES = ("dubbed", "original")
INPUT_STATES = ("starting", "connecting", "receiving", "stalled", "reconnecting", "ended", "failed")
# Round-trip send → fragment:processed, in ms; up to 30 s (the largest allowed timeout_ms).
RTT_BUCKETS_MS = (
    50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0,
    8000.0, 10000.0, 15000.0, 20000.0, 30000.0,
)  # fmt: skip


# (attribute, type, name, help, extra label): the worker's metric contract, one row per metric.
_METRICS: tuple[tuple[str, Any, str, str, str | None], ...] = (
    ("_fragments", Counter, "worker_audio_fragments_total",
     "Audio fragments (count) by status: sent to STS, processed by STS, or fallback (original audio used).",
     "status"),
    ("_fallback", Counter, "worker_fallback_total",
     "Segments (count) that used the original audio, by reason.", "reason"),
    ("_inflight", Gauge, "worker_inflight_fragments", "Fragments (count) sent to STS and not yet resolved.", None),
    ("_av_sync", Gauge, "worker_av_sync_delta_ms",
     "Audio timestamp deviation from the sample clock, in milliseconds.", None),
    ("_breaker", Gauge, "worker_sts_breaker_state", "STS circuit breaker state (0 closed, 1 half-open, 2 open).", None),
    ("_backpressure", Counter, "worker_backpressure_events_total",
     "Backpressure events (count) received from STS, by action.", "action"),
    ("_reconnections", Counter, "worker_reconnection_total",
     "Successful reconnections (count) to the STS service after a lost connection.", None),
    ("_rtt", Histogram, "worker_sts_rtt_ms",
     "Round-trip time from fragment:data to fragment:processed, in milliseconds.", None),
    ("_segments", Counter, "worker_segments_total", "Output segments (count) by audio source (dubbed or original).",
     "source"),
    ("_output_delay", Gauge, "worker_output_delay_ms",
     "Configured/measured output delay D behind the input, in milliseconds.", None),
    ("_input_state", Enum, "worker_input_state", "Input state (state set: 1 for the current state).", None),
    ("_late", Counter, "worker_late_results_total",
     "Dubbed results (count) that arrived after their segment's deadline and were dropped.", None),
    ("_rejected", Counter, "worker_rejected_results_total", "Results from STS (count) that were not used, by reason.",
     "reason"),
    ("_connected", Gauge, "worker_sts_connected", "Whether the STS connection is up and ready (1) or not (0).", None),
    ("_mirror_failures", Counter, "worker_mirror_output_failures_total",
     "Failures (count) of the mirror output (live/<id>/<lang> of a stream's first language); the main output goes on.",
     None),
    ("_original_failures", Counter, "worker_original_output_failures_total",
     "Failures (count) of the original programme's own output (--keep-original on FLV/RTMP: live/<id>/orig), "
     "each of which gave it up; the dubbed output continues.", None),
)  # fmt: skip
METRIC_NAMES = tuple(row[2] for row in _METRICS)

HealthFn = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


class WorkerMetrics:
    """All metrics of one worker (one `stream_id`), with one method per event.

    Args:
        stream_id: value of the `stream_id` label on every metric.
        registry: where to register (default: a new private `CollectorRegistry`).
        fallback_reasons / rejected_reasons / input_states: label values created up front
            (`input_states` is the closed set `set_input_state` accepts).
        rtt_buckets_ms: histogram buckets for `worker_sts_rtt_ms`.
    """

    # Set from `_METRICS` in `__init__`.
    _fragments: Counter
    _fallback: Counter
    _inflight: Gauge
    _av_sync: Gauge
    _breaker: Gauge
    _backpressure: Counter
    _reconnections: Counter
    _rtt: Histogram
    _segments: Counter
    _output_delay: Gauge
    _input_state: Enum
    _late: Counter
    _rejected: Counter
    _connected: Gauge
    _mirror_failures: Counter
    _original_failures: Counter

    def __init__(
        self,
        stream_id: str,
        *,
        registry: CollectorRegistry | None = None,
        fallback_reasons: Iterable[str] = FALLBACK_REASONS,
        rejected_reasons: Iterable[str] = REJECTED_REASONS,
        input_states: Iterable[str] = INPUT_STATES,
        rtt_buckets_ms: Iterable[float] = RTT_BUCKETS_MS,
    ) -> None:
        self.stream_id = stream_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self._log = bind(__name__, stream_id=stream_id)
        r = self.registry
        self._input_states = tuple(input_states)
        for attr, kind, name, doc, label in _METRICS:
            labels = ["stream_id", label] if label else ["stream_id"]
            extra: dict[str, Any] = {}
            if kind is Histogram:
                extra["buckets"] = tuple(rtt_buckets_ms)
            elif kind is Enum:
                extra["states"] = list(self._input_states)
            setattr(self, attr, kind(name, doc, labels, registry=r, **extra))
        # Create every known child now, so each series is exported as 0 from the start.
        upfront: dict[str, Iterable[str]] = {
            "_fragments": FRAGMENT_STATUSES,
            "_fallback": fallback_reasons,
            "_backpressure": BACKPRESSURE_ACTIONS,
            "_segments": SEGMENT_SOURCES,
            "_rejected": rejected_reasons,
        }
        for attr, *_, label in _METRICS:
            metric = getattr(self, attr)
            if label is None:
                metric.labels(stream_id)
            for value in upfront.get(attr, ()):
                metric.labels(stream_id, value)
        self._input_state.labels(stream_id).state(self._input_states[0])

    # ---- fragments ----------------------------------------------------------------------------

    def fragment_sent(self) -> None:
        self._fragments.labels(self.stream_id, "sent").inc()

    def fragment_processed(self, rtt_ms: float | None = None) -> None:
        """A fragment's dubbed audio was accepted; `rtt_ms` (if given) is also observed."""
        self._fragments.labels(self.stream_id, "processed").inc()
        if rtt_ms is not None:
            self.observe_rtt_ms(rtt_ms)

    def fragment_fallback(self) -> None:
        """A sent fragment ended without its dubbed audio being used."""
        self._fragments.labels(self.stream_id, "fallback").inc()

    def fallback(self, reason: str) -> None:
        """A segment was output with its original audio, for `reason`."""
        self._fallback.labels(self.stream_id, reason).inc()

    def observe_rtt_ms(self, rtt_ms: float) -> None:
        self._rtt.labels(self.stream_id).observe(max(0.0, rtt_ms))

    def set_inflight(self, count: int) -> None:
        self._inflight.labels(self.stream_id).set(count)

    def original_output_failed(self) -> None:
        """The original's own output failed (and was given up)."""
        self._original_failures.labels(self.stream_id).inc()

    def late_result(self) -> None:
        self._late.labels(self.stream_id).inc()

    def rejected_result(self, reason: str) -> None:
        self._rejected.labels(self.stream_id, reason).inc()

    # ---- STS connection -----------------------------------------------------------------------

    def set_breaker_state(self, state: int) -> None:
        """0 closed, 1 half-open, 2 open (`BreakerState` values)."""
        self._breaker.labels(self.stream_id).set(int(state))

    def backpressure_event(self, action: str) -> None:
        self._backpressure.labels(self.stream_id, str(action)).inc()

    def reconnection(self) -> None:
        """One successful reconnection to the STS."""
        self._reconnections.labels(self.stream_id).inc()

    def set_sts_connected(self, connected: bool) -> None:
        self._connected.labels(self.stream_id).set(1 if connected else 0)

    # ---- media --------------------------------------------------------------------------------

    def segment_output(self, source: str) -> None:
        """One segment written, with `source` "dubbed" or "original"."""
        self._segments.labels(self.stream_id, source).inc()

    def mirror_failure(self) -> None:
        self._mirror_failures.labels(self.stream_id).inc()

    def set_av_sync_delta_ms(self, delta_ms: float) -> None:
        self._av_sync.labels(self.stream_id).set(delta_ms)

    def set_output_delay_ms(self, delay_ms: float) -> None:
        self._output_delay.labels(self.stream_id).set(delay_ms)

    def set_input_state(self, state: str) -> None:
        """One of `input_states`; an unknown state is logged and ignored."""
        if state not in self._input_states:
            self._log.warning("unknown input state ignored", ctx={"state": state})
            return
        self._input_state.labels(self.stream_id).state(state)

    # ---- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of this worker's registry."""
        return generate_latest(self.registry)


class HealthStatus(StrEnum):
    """`status` of the worker's `/health` document."""

    OK = "ok"
    FAILING = "failing"


HEALTH_HTTP_STATUS: dict[str, int] = {HealthStatus.OK: 200, HealthStatus.FAILING: 503}
"""HTTP status of `/health` per document `status` (anything else: 200)."""


def metrics_app(
    metrics: WorkerMetrics,
    health_fn: HealthFn,
    add_routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """An aiohttp app serving `GET /metrics` (exposition text) and `GET /health` (the JSON object
    `health_fn()` returns; it may be sync or async). `/health` answers 200, 503 when the
    document's `status` is `failing` (so Kubernetes / compose health checks act on it), or 500
    with {"status": "error"} if `health_fn` raises. `add_routes` may add more (the worker's
    control route)."""
    log = bind(__name__, stream_id=metrics.stream_id)

    async def get_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def get_health(_request: web.Request) -> web.Response:
        try:
            result = health_fn()
            doc = await result if inspect.isawaitable(result) else result
            body = json.dumps(dict(doc), default=str)
            status = HEALTH_HTTP_STATUS.get(str(doc.get("status")), 200)
        except Exception as exc:
            log.exception("health_fn failed")
            return web.json_response({"status": "error", "error": repr(exc)}, status=500)
        return web.Response(text=body, content_type="application/json", status=status)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/health", get_health)
    if add_routes is not None:
        add_routes(app)
    return app


class MetricsServer:
    """Runs `metrics_app` on host:port (port 0 = any free port; see `.port` after `start()`)."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        health_fn: HealthFn,
        *,
        host: str = "0.0.0.0",
        port: int = 8000,
        add_routes: Callable[[web.Application], None] | None = None,
    ) -> None:
        self._app = metrics_app(metrics, health_fn, add_routes)
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._requested_port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
