"""US6 — reconnection: a dropped STS connection falls back in-flight fragments at once, reconnects
on the 2/4/8/16/32 s schedule, re-initialises the stream (sequence restarts at 0), keeps the breaker
state, and exits non-zero when the STS stays away."""

from __future__ import annotations

import signal

import pytest

from livedub.sts.testing import free_port
from tests.e2e import config
from tests.e2e.helpers import logs, stream_analyzer
from tests.e2e.helpers.sts_control import control, sio_control

pytestmark = [pytest.mark.e2e, pytest.mark.p3]


def test_worker_reconnects_after_sts_disconnect(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-rc-reconnect"
    # 2 s segments answered after 5 s: fragments pile up in flight. The drop is armed on that
    # observed condition (the STS drops the connection the moment it holds two unanswered
    # fragments of this stream), never on a guessed delay.
    control("config:latency", {"stream_id": sid, "delay_ms": 5000})
    sio_control("simulate:disconnect", {"stream_id": sid, "min_inflight": 2})
    try:
        run = stream_factory(sid)
        run.start_recorder()
        run.publish()
        run.start_worker(["--segment-s", "2"])
        labels = {"stream_id": sid}
        run.metrics.wait_for("worker_fallback_total", {**labels, "reason": "disconnect"}, lambda v: v >= 2, 45)
        control("config:latency", {"stream_id": sid, "delay_ms": 0})  # the new session is answered at once
        run.metrics.wait_for("worker_reconnection_total", labels, lambda v: v == 1, 15)
        assert run.finish() == 0
        assert run.metrics_port  # metrics checked while running above
    finally:
        control("config:reset", {"stream_id": sid})
    lines = logs.parse(run.worker_log())
    lost = logs.find(lines, "STS disconnected")
    assert len(lost) == 1
    fallbacks = [ln for ln in logs.find(lines, "fragment fallback") if ln.fields.get("reason") == "disconnect"]
    inflight_at_drop = int(lost[0].fields["inflight"])
    assert inflight_at_drop >= 2
    assert len(fallbacks) == inflight_at_drop, "every in-flight fragment fell back"
    assert all(ln.ts - lost[0].ts < 0.5 for ln in fallbacks), "immediately"
    attempts = logs.find(lines, "STS reconnect attempt")
    assert attempts and attempts[0].fields.get("attempt") == "1"
    assert abs((attempts[0].ts - lost[0].ts) - 2.0) <= 0.2
    readies = logs.find(lines, "STS session ready")
    assert len(readies) == 2, "stream:init re-sent and answered"
    sends = logs.find(lines, "fragment sent")
    after = [ln for ln in sends if ln.ts > readies[1].ts]
    assert after and after[0].fields.get("sequence_number") == "0"
    echo = run.echo_debug()
    assert len(echo["sessions"]) == 2


def test_worker_exits_after_max_reconnection_attempts(stream_factory, docker_services, cleanup_resources) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-rc-exhaust"
    port = free_port()
    sts = docker_services.start_sts("echo-sts-rc", port)
    cleanup_resources.append(sts)
    run = stream_factory(sid)
    run.start_recorder()
    run.publish(loop=True)  # the programme goes on for longer than the reconnect budget
    run.start_worker(sts_url=f"http://{config.HOST}:{port}")
    labels = {"stream_id": sid}
    run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"}, lambda v: v >= 1, 20)
    sts.signal(signal.SIGKILL)  # the STS goes away and stays away
    code = run.wait_worker_exit(sum(config.RECONNECT_SCHEDULE_S) + 20)
    assert code == 13, "STS_UNAVAILABLE exit code"
    lines = logs.parse(run.worker_log())
    lost = logs.find(lines, "STS disconnected")
    attempts = logs.find(lines, "STS reconnect attempt")
    assert [a.fields.get("attempt") for a in attempts] == ["1", "2", "3", "4", "5"]
    t_prev = lost[0].ts
    for a, expected in zip(attempts, config.RECONNECT_SCHEDULE_S, strict=True):
        gap = a.ts - t_prev
        assert abs(gap - expected) <= 0.1 * expected + 0.3, (gap, expected)
        t_prev = a.ts
    assert logs.find(lines, "STS reconnection attempts exhausted")
    # The output kept playing the original audio until the exit.
    fallbacks = [ln for ln in logs.find(lines, "segment output") if ln.fields.get("source") == "original"]
    assert len(fallbacks) >= 5


def test_reconnection_preserves_pipeline_state(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-rc-state"
    sio_control("config:error_simulation", {"stream_id": sid, "enabled": True, "rules": [
        {"trigger": "count", "value": 5, "error_code": "MODEL_ERROR", "error_message": "simulated",
         "retryable": True}]})
    try:
        run = stream_factory(sid)
        run.start_recorder()
        run.publish()
        run.start_worker(["--segment-s", "2"])
        labels = {"stream_id": sid}
        run.metrics.wait_for("worker_sts_breaker_state", labels, lambda v: v == 2, 40)
        sio_control("simulate:disconnect", {"stream_id": sid, "delay_ms": 0})
        run.metrics.wait_for("worker_reconnection_total", labels, lambda v: v == 1, 15)
        assert run.metrics.value("worker_sts_breaker_state", labels) == 2, "breaker state survives reconnect"
        run.metrics.wait_for("worker_sts_breaker_state", labels, lambda v: v == 0, config.BREAKER_COOLDOWN_S + 10)
        processed = run.metrics.value("worker_audio_fragments_total", {**labels, "status": "processed"})
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"},
                             lambda v: v > processed, 10)
        assert run.finish() == 0
    finally:
        control("config:reset", {"stream_id": sid})
    echo = run.echo_debug()
    assert len(echo["sessions"]) == 2, "stream configuration re-initialised"
    probe = stream_analyzer.ffprobe(run.output_path)
    assert abs(probe.duration_s - config.FIXTURE_DURATION_S) <= 0.5, "no programme lost"
