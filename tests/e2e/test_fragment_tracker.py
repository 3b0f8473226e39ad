"""US5 — fragment tracker: max_inflight never exceeded, in-flight rises on send and falls on
processed, an 8 s timeout falls back and frees the slot, fragment_id correlates every event."""

from __future__ import annotations

import pytest

from tests.e2e import config
from tests.e2e.helpers import logs
from tests.e2e.helpers.metrics_parser import MetricSampler
from tests.e2e.helpers.sts_control import control

pytestmark = [pytest.mark.e2e, pytest.mark.p2]


def test_fragment_tracker_respects_max_inflight(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-ft-max"
    # 1 s segments answered after 2.5 s: more than 3 would be in flight if the limit were not enforced.
    control("config:latency", {"stream_id": sid, "delay_ms": 2500})
    try:
        run = stream_factory(sid)
        run.start_recorder()
        run.publish()
        run.start_worker(["--segment-s", "1", "--max-inflight", "3"])
        labels = {"stream_id": sid}
        with MetricSampler(run.metrics, "worker_inflight_fragments", labels, interval_s=0.1) as inflight:
            run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"},
                                 lambda v: v >= 20, 60)
            sent = run.metrics.value("worker_audio_fragments_total", {**labels, "status": "sent"})
            processed = run.metrics.value("worker_audio_fragments_total", {**labels, "status": "processed"})
            fallback = run.metrics.value("worker_audio_fragments_total", {**labels, "status": "fallback"})
            now_inflight = run.metrics.value("worker_inflight_fragments", labels)
            # Every sent fragment is in flight, processed or fell back: nothing leaks.
            assert sent == processed + fallback + now_inflight
            assert run.finish() == 0
        values = [v for _, v in inflight.samples]
        assert len(values) > 100
        assert max(values) == 3, "the limit is reached and never exceeded"
        rises = sum(1 for a, b in zip(values, values[1:], strict=False) if b > a)
        falls = sum(1 for a, b in zip(values, values[1:], strict=False) if b < a)
        assert rises >= 10 and falls >= 10
        lines = logs.parse(run.worker_log())
        sent_ids = {ln.fields["fragment_id"] for ln in logs.find(lines, "fragment sent")}
        done_ids = {ln.fields["fragment_id"] for ln in lines
                    if ln.msg in ("fragment applied", "fragment fallback") and "fragment_id" in ln.fields}
        assert sent_ids and sent_ids <= done_ids, "every sent fragment was resolved"
    finally:
        control("config:reset", {"stream_id": sid})


def test_fragment_tracker_timeout_triggers_fallback(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-ft-timeout"
    control("config:latency", {"stream_id": sid, "delay_ms": 12000})
    try:
        run = stream_factory(sid)
        run.start_recorder()
        run.publish()
        # D = 20 s: the tracker's 8 s timeout, not the output deadline, must be what ends fragment 0.
        run.start_worker(["--max-inflight", "1", "--output-delay-s", "20"])
        labels = {"stream_id": sid}
        run.metrics.wait_for("worker_inflight_fragments", labels, lambda v: v == 1, 20)
        # The first fragment got the 12 s delay; later ones get none (but are delivered in order,
        # after the first: 12 s after it was received, well within their own 8 s timeout).
        control("config:latency", {"stream_id": sid, "delay_ms": 0})
        # The first fragment is never answered in time: after 8 s it falls back and frees its slot.
        run.metrics.wait_for("worker_fallback_total", {**labels, "reason": "timeout"}, lambda v: v == 1,
                             config.FRAGMENT_TIMEOUT_S + 8)
        # The next fragment (waiting for the slot) is sent and processed.
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"}, lambda v: v >= 1, 15)
        assert run.finish() == 0
        lines = logs.parse(run.worker_log())
        timed_out = [ln for ln in logs.find(lines, "fragment fallback") if ln.fields.get("reason") == "timeout"]
        assert len(timed_out) == 1
        sends = logs.find(lines, "fragment sent")
        assert abs((timed_out[0].ts - sends[0].ts) - config.FRAGMENT_TIMEOUT_S) <= 0.5
        assert sends[1].ts >= timed_out[0].ts, "the second fragment waited for the freed slot"
        assert sends[1].fields.get("sequence_number") == "1"
    finally:
        control("config:reset", {"stream_id": sid})


def test_fragment_tracker_correlation_across_events(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-ft-corr"
    run = stream_factory(sid).start()
    run.metrics.wait_for("worker_audio_fragments_total", {"stream_id": sid, "status": "processed"},
                         lambda v: v >= config.SEGMENTS, 85)
    echo = run.echo_debug()
    data_ids = [f["fragment_id"] for f in echo["fragment_data"]]
    ack_ids = [f["fragment_id"] for f in echo["acks_sent"]]
    processed_ids = [f["fragment_id"] for f in echo["processed_sent"]]
    worker_acks = [f["fragment_id"] for f in echo["worker_acks"] if f["status"] == "applied"]
    assert len(data_ids) == config.SEGMENTS
    assert data_ids == ack_ids == processed_ids, "fragment_id correlates data → ack → processed, in order"
    assert set(worker_acks) == set(data_ids), "the worker acked every processed fragment"
    assert run.finish() == 0
    lines = logs.parse(run.worker_log())
    assert [ln.fields["fragment_id"] for ln in logs.find(lines, "fragment sent")] == data_ids
    assert [ln.fields["fragment_id"] for ln in logs.find(lines, "fragment applied")] == data_ids
