"""Hook payload validation and metrics merging (pure functions; HTTP is in tests/integration)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from livedub.orchestrator.service import (
    BadPayload,
    OrchestratorService,
    merge_metric_texts,
    parse_hook_body,
)
from livedub.orchestrator.settings import OrchestratorSettings


def body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


# --- hook payload -------------------------------------------------------------------------------------


def test_valid_payload() -> None:
    ev = parse_hook_body(
        body(path="live/Cam_1-x/in", sourceType="rtspSession", sourceId="9f1c", query='a=b&c="d"')
    )
    assert ev.stream_id == "Cam_1-x"
    assert (ev.source_type, ev.source_id, ev.query) == ("rtspSession", "9f1c", 'a=b&c="d"')


def test_optional_fields_may_be_empty_or_absent() -> None:
    ev = parse_hook_body(body(path="live/a/in", sourceType="", sourceId="", query=""))
    assert (ev.source_type, ev.source_id, ev.query) == (None, None, None)
    assert parse_hook_body(body(path="live/" + "x" * 64 + "/in")).stream_id == "x" * 64


@pytest.mark.parametrize(
    "path",
    [
        "live/../in",
        "live/../../etc/in",
        "../live/a/in",
        "/live/a/in",
        "live/a/../b/in",
        "live/a%2F..%2Fb/in",
        "live/./in",
        "live/a/b/in",
        "live/a/out",  # a known path, but not an input
        "other/a/in",
        "live//in",
        "live/a/in/",
        "live/a/in\n",
        "live/a b/in",
        "live/é/in",
        "live/" + "x" * 65 + "/in",
        "",
    ],
)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValidationError):
        parse_hook_body(body(path=path))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'"live/a/in"',
        b"\xff\xfe",
        b'{"path": "live/a/in", "path": "live/b/in"}',  # duplicate key: an injection attempt
        b'{"path":"live/a/in","query":"x","query":"y"}',
    ],
)
def test_malformed_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_hook_body(raw)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"path": 5},
        {"path": "live/a/in", "extra": 1},
        {"path": "live/a/in", "query": "q" * 4097},
        {"path": "live/a/in", "sourceId": ["x"]},
    ],
)
def test_schema_violations_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_hook_body(json.dumps(doc).encode())


# --- metrics merge --------------------------------------------------------------------------------------


def worker_page(stream_id: str, frags: float, *, with_label: bool = True) -> str:
    reg = CollectorRegistry()
    labels = ["stream_id", "status"] if with_label else ["status"]
    c = Counter("worker_audio_fragments_total", "Audio fragments.", labels, registry=reg)
    c.labels(*([stream_id] if with_label else []), "processed").inc(frags)
    h = Histogram("worker_sts_rtt_ms", "RTT.", ["stream_id"], buckets=(10.0, 100.0), registry=reg)
    h.labels(stream_id).observe(42)
    g = Gauge("worker_sts_breaker_state", "Breaker.", ["stream_id"], registry=reg)
    g.labels(stream_id).set(0)
    return generate_latest(reg).decode()


def render(families: list) -> str:  # type: ignore[type-arg]
    from livedub.orchestrator.service import _StaticCollector

    return generate_latest(_StaticCollector(families)).decode()


def test_merge_dedupes_help_and_type_and_labels_every_sample() -> None:
    families, problems = merge_metric_texts(
        [("a", worker_page("a", 3)), ("b", worker_page("WRONG", 5, with_label=False))]
    )
    assert problems == []
    text = render(families)
    for line in (
        "# TYPE worker_audio_fragments_total counter",
        "# TYPE worker_sts_rtt_ms histogram",
    ):
        assert text.count(line + "\n") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}  # parses again
    frags = parsed["worker_audio_fragments"]
    assert {(s.labels["stream_id"], s.value) for s in frags.samples} == {("a", 3.0), ("b", 5.0)}
    rtt = parsed["worker_sts_rtt_ms"]
    assert {s.labels["stream_id"] for s in rtt.samples} == {"a", "b"}  # the supervisor's id wins
    assert all("stream_id" in s.labels for f in parsed.values() for s in f.samples)


def test_merge_drops_a_family_with_a_conflicting_type_and_garbage() -> None:
    gauge = "# HELP worker_sts_rtt_ms x\n# TYPE worker_sts_rtt_ms gauge\nworker_sts_rtt_ms 1\n"
    families, problems = merge_metric_texts(
        [("a", worker_page("a", 1)), ("b", gauge), ("c", "garbage{{{ 1\n")]
    )
    assert len(problems) == 2
    text = render(families)
    assert {f.name: f.type for f in text_string_to_metric_families(text)}["worker_sts_rtt_ms"] == (
        "histogram"
    )


async def test_orchestrator_metrics_without_workers_parse() -> None:
    service = OrchestratorService(OrchestratorSettings())
    service.hook_events.labels("ready", "accepted").inc()
    text = (await service.render_metrics()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["orchestrator_workers_running"].samples[0].value == 0
    assert families["orchestrator_worker_restarts"].type == "counter"
    hooks = families["orchestrator_hook_events"]
    assert any(
        s.labels == {"event": "ready", "result": "accepted"} and s.value == 1 for s in hooks.samples
    )
    assert "orchestrator_streams" in families and "orchestrator_worker_exits" in families
