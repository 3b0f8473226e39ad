"""WorkerMetrics: every name exported (0 from the start), per-event methods, /metrics + /health."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from livedub.worker.metrics import (
    BACKPRESSURE_ACTIONS,
    FALLBACK_REASONS,
    FRAGMENT_STATUSES,
    METRIC_NAMES,
    WorkerMetrics,
    metrics_app,
)


def samples(metrics: WorkerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    key = (name, frozenset({"stream_id": metrics.stream_id, **labels}.items()))
    return samples(metrics)[key]


def test_every_metric_is_exported_from_the_start_with_zero_and_stream_id() -> None:
    m = WorkerMetrics("s1")
    got = samples(m)
    names = {name for name, _ in got}
    for name in METRIC_NAMES:
        if name == "worker_sts_rtt_ms":
            assert {"worker_sts_rtt_ms_bucket", "worker_sts_rtt_ms_count"} <= names
        else:
            assert name in names, name
    for (_name, labels), _v in got.items():
        assert ("stream_id", "s1") in labels
    for status in FRAGMENT_STATUSES:
        assert value(m, "worker_audio_fragments_total", status=status) == 0
    for reason in FALLBACK_REASONS:
        assert value(m, "worker_fallback_total", reason=reason) == 0
    for action in BACKPRESSURE_ACTIONS:
        assert value(m, "worker_backpressure_events_total", action=action) == 0
    assert value(m, "worker_reconnection_total") == 0
    assert value(m, "worker_late_results_total") == 0
    assert value(m, "worker_rejected_results_total", reason="unknown_fragment") == 0
    assert value(m, "worker_segments_total", source="dubbed") == 0
    assert value(m, "worker_segments_total", source="original") == 0
    assert value(m, "worker_inflight_fragments") == 0
    assert value(m, "worker_sts_breaker_state") == 0
    assert value(m, "worker_sts_connected") == 0
    assert value(m, "worker_sts_rtt_ms_count") == 0
    assert value(m, "worker_input_state", worker_input_state="starting") == 1


def test_help_strings_say_the_unit() -> None:
    m = WorkerMetrics("s1")
    helps = {f.name: f.documentation for f in text_string_to_metric_families(m.render().decode())}
    for name in ("worker_av_sync_delta_ms", "worker_sts_rtt_ms", "worker_output_delay_ms"):
        assert "milliseconds" in helps[name]
    assert "count" in helps["worker_audio_fragments"]
    assert "0 closed, 1 half-open, 2 open" in helps["worker_sts_breaker_state"]


def test_rtt_buckets_reach_30_seconds() -> None:
    m = WorkerMetrics("s1")
    m.fragment_processed(rtt_ms=29_000)
    assert value(m, "worker_sts_rtt_ms_bucket", le="20000.0") == 0
    assert value(m, "worker_sts_rtt_ms_bucket", le="30000.0") == 1
    assert value(m, "worker_sts_rtt_ms_sum") == 29_000


def test_event_methods_move_their_series() -> None:
    m = WorkerMetrics("s1")
    for _ in range(3):
        m.fragment_sent()
    m.fragment_processed(rtt_ms=1200)
    m.fragment_fallback()
    m.fallback("timeout")
    m.fallback("circuit_open")
    m.fallback("new_reason")
    m.set_inflight(2)
    m.set_av_sync_delta_ms(-3.5)
    m.set_breaker_state(2)
    m.backpressure_event("pause")
    m.reconnection()
    m.segment_output("dubbed")
    m.segment_output("original")
    m.set_output_delay_ms(14_000)
    m.set_input_state("receiving")
    m.set_input_state("bogus")  # ignored, never raises
    m.late_result()
    m.rejected_result("unknown_fragment")
    m.set_sts_connected(True)
    assert value(m, "worker_audio_fragments_total", status="sent") == 3
    assert value(m, "worker_audio_fragments_total", status="processed") == 1
    # Sent fragments that fell back, vs segments output with original audio: counted apart.
    assert value(m, "worker_audio_fragments_total", status="fallback") == 1
    assert value(m, "worker_fallback_total", reason="timeout") == 1
    assert value(m, "worker_fallback_total", reason="new_reason") == 1
    fallback_sum = sum(v for (name, _), v in samples(m).items() if name == "worker_fallback_total")
    assert fallback_sum == 3
    assert value(m, "worker_sts_rtt_ms_count") == 1
    assert value(m, "worker_inflight_fragments") == 2
    assert value(m, "worker_av_sync_delta_ms") == -3.5
    assert value(m, "worker_sts_breaker_state") == 2
    assert value(m, "worker_backpressure_events_total", action="pause") == 1
    assert value(m, "worker_reconnection_total") == 1
    assert value(m, "worker_segments_total", source="dubbed") == 1
    assert value(m, "worker_output_delay_ms") == 14_000
    assert value(m, "worker_input_state", worker_input_state="receiving") == 1
    assert value(m, "worker_input_state", worker_input_state="starting") == 0
    assert value(m, "worker_late_results_total") == 1
    assert value(m, "worker_rejected_results_total", reason="unknown_fragment") == 1
    assert value(m, "worker_sts_connected") == 1


def test_each_instance_has_its_own_registry() -> None:
    a, b = WorkerMetrics("a"), WorkerMetrics("b")
    a.fragment_sent()
    assert value(a, "worker_audio_fragments_total", status="sent") == 1
    assert value(b, "worker_audio_fragments_total", status="sent") == 0
    assert b'stream_id="a"' not in b.render()


async def call(app: web.Application, path: str) -> web.Response:
    request = make_mocked_request("GET", path, app=app)
    match = await app.router.resolve(request)
    assert match.http_exception is None, path
    response = await match.handler(request)
    assert isinstance(response, web.Response)
    return response


async def test_metrics_endpoint_serves_the_exposition() -> None:
    m = WorkerMetrics("s1")
    m.fragment_sent()
    response = await call(metrics_app(m, lambda: {}), "/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert isinstance(response.body, bytes)
    assert b'worker_audio_fragments_total{status="sent",stream_id="s1"} 1.0' in response.body


@pytest.mark.parametrize("is_async", [False, True])
async def test_health_endpoint_serves_json_from_sync_or_async_callable(is_async: bool) -> None:
    doc: dict[str, object] = {
        "input": "receiving",
        "sts": {"connected": True, "breaker": "closed"},
        "output": "ok",
    }

    async def async_health() -> dict[str, object]:
        return doc

    fn = async_health if is_async else (lambda: doc)
    response = await call(metrics_app(WorkerMetrics("s1"), fn), "/health")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert isinstance(response.text, str)
    assert json.loads(response.text) == doc


async def test_health_endpoint_reports_500_when_the_callable_fails() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("no state")

    response = await call(metrics_app(WorkerMetrics("s1"), broken), "/health")
    assert response.status == 500
    assert response.text is not None and json.loads(response.text)["status"] == "error"


@pytest.mark.parametrize(("status", "http"), [("ok", 200), ("failing", 503)])
async def test_health_endpoint_answers_503_while_failing(status: str, http: int) -> None:
    """Issue 17 #10: Kubernetes / compose health checks act on the HTTP status only."""
    doc = {"status": status, "stream_id": "s1"}
    response = await call(metrics_app(WorkerMetrics("s1"), lambda: doc), "/health")
    assert response.status == http
    assert response.text is not None and json.loads(response.text) == doc


async def test_a_worker_that_failed_serves_503_on_health() -> None:
    from livedub.exitcodes import ExitCode
    from livedub.worker.config import WorkerSettings
    from livedub.worker.runner import WorkerRunner

    runner = WorkerRunner(WorkerSettings(stream_id="s1", input_url="in.mp4", output_url="out.mp4"))
    app = metrics_app(runner.metrics, runner.health)
    assert (await call(app, "/health")).status == 200
    runner._fatal = ExitCode.STS_AUTH_FAILED  # what a fatal error sets
    response = await call(app, "/health")
    assert response.status == 503
    assert response.text is not None and json.loads(response.text)["status"] == "failing"
