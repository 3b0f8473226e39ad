"""US3 — circuit breaker: 5 retryable failures open it, fallback while open, half-open after the 30 s
cooldown with exactly one probe, closed on success; non-retryable errors never count."""

from __future__ import annotations

import pytest

from tests.e2e import config
from tests.e2e.helpers import logs
from tests.e2e.helpers.metrics_parser import MetricSampler
from tests.e2e.helpers.sts_control import control, sio_control

pytestmark = [pytest.mark.e2e, pytest.mark.p2]

# 2 s segments so that 5 failures, the 30 s cooldown and the probe fit in the 60 s programme.
WORKER_ARGS = ["--segment-s", "2"]
TIMEOUT_RULES = {"enabled": True, "rules": [{"trigger": "count", "value": 5, "error_code": "TIMEOUT",
                                            "error_message": "simulated timeout", "retryable": True}]}


def _run_breaker_cycle(stream_factory, sid: str):  # type: ignore[no-untyped-def]
    sio_control("config:error_simulation", {"stream_id": sid, **TIMEOUT_RULES})
    run = stream_factory(sid)
    run.start_recorder()
    run.publish()
    run.start_worker(WORKER_ARGS)
    labels = {"stream_id": sid}
    with MetricSampler(run.metrics, "worker_sts_breaker_state", labels) as states:
        run.metrics.wait_for("worker_sts_breaker_state", labels, lambda v: v == 2, 40)
        run.metrics.wait_for("worker_fallback_total", {**labels, "reason": "circuit_open"}, lambda v: v >= 1, 15)
        # 30 s cooldown, then one probe which the echo (rules exhausted) answers: closed again.
        run.metrics.wait_for("worker_sts_breaker_state", labels, lambda v: v == 0,
                             config.BREAKER_COOLDOWN_S + 10)
        processed_at_close = run.metrics.value("worker_audio_fragments_total", {**labels, "status": "processed"})
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"},
                             lambda v: v > processed_at_close, 10)
        assert run.finish() == 0
    return run, [v for _, v in states.samples]


def test_circuit_breaker_opens_on_sts_failures(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-cb-open"
    try:
        run, states = _run_breaker_cycle(stream_factory, sid)
    finally:
        control("config:reset", {"stream_id": sid})
    lines = logs.parse(run.worker_log())
    opened = logs.find(lines, "breaker closed -> open", old_state="closed", new_state="open")
    assert len(opened) == 1, [ln.fields for ln in lines if "breaker" in ln.msg]
    half = logs.find(lines, "breaker open -> half_open", old_state="open", new_state="half_open")
    closed = logs.find(lines, "breaker half_open -> closed", old_state="half_open", new_state="closed")
    assert len(half) == 1 and len(closed) == 1
    # The cooldown is the spec's 30 s (±10 %).
    assert abs((half[0].ts - opened[0].ts) - config.BREAKER_COOLDOWN_S) <= 3.0
    # Exactly one probe was sent while half-open.
    probes = [ln for ln in logs.find(lines, "fragment sent") if ln.fields.get("probe") == "true"]
    assert len(probes) == 1
    assert half[0].ts <= probes[0].ts <= closed[0].ts
    # Exactly the 5 simulated failures counted as STS errors; the open period fell back.
    assert 2 in states and states[-1] == 0


def test_circuit_breaker_ignores_non_retryable_errors(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-cb-nonretry"
    sio_control("config:error_simulation", {
        "stream_id": sid, "enabled": True,
        "rules": [{"trigger": "count", "value": 7, "error_code": "INVALID_CONFIG",
                   "error_message": "simulated bad config", "retryable": False}]})
    try:
        run = stream_factory(sid)
        run.start_recorder()
        run.publish()
        run.start_worker(WORKER_ARGS)
        labels = {"stream_id": sid}
        with MetricSampler(run.metrics, "worker_sts_breaker_state", labels) as states:
            run.metrics.wait_for("worker_fallback_total", {**labels, "reason": "sts_error"}, lambda v: v >= 7, 40)
            run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"},
                                 lambda v: v >= 3, 20)
            assert run.finish() == 0
        assert states.samples and all(v == 0 for _, v in states.samples), "breaker must stay closed"
        lines = logs.parse(run.worker_log())
        assert not [ln for ln in lines if ln.msg.startswith("breaker ") and "new_state" in ln.fields]
    finally:
        control("config:reset", {"stream_id": sid})


def test_circuit_breaker_state_transitions_logged(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-cb-log"
    try:
        run, states = _run_breaker_cycle(stream_factory, sid)
    finally:
        control("config:reset", {"stream_id": sid})
    lines = logs.parse(run.worker_log())
    transitions = [(ln.fields.get("old_state"), ln.fields.get("new_state"), ln.ts)
                   for ln in lines if ln.msg.startswith("breaker ") and "new_state" in ln.fields]
    assert [(o, n) for o, n, _ in transitions] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    times = [t for _, _, t in transitions]
    assert times == sorted(times)
    for ln in lines:
        if ln.msg.startswith("breaker ") and "new_state" in ln.fields:
            assert ln.fields.get("wall_time"), "each transition carries its wall-clock timestamp"
    # Metrics went 0 → 2 → (1) → 0, never skipping back to 0 from 2 without the probe.
    collapsed = [v for i, v in enumerate(states) if i == 0 or v != states[i - 1]]
    assert collapsed[0] == 0 and 2 in collapsed and collapsed[-1] == 0
    i_open = collapsed.index(2)
    assert all(v in (1.0, 0.0) for v in collapsed[i_open + 1:])
