"""US4 — backpressure: pause stops new sends until `none`, slow_down inserts the recommended delay
before each send, and every event is counted by action."""

from __future__ import annotations

import statistics
import time

import pytest

from tests.e2e.helpers import logs
from tests.e2e.helpers.sts_control import control, sio_control

pytestmark = [pytest.mark.e2e, pytest.mark.p2]

WORKER_ARGS = ["--segment-s", "2"]


def _emit(sid: str, action: str, severity: str = "medium", delay_ms: int = 0) -> None:
    sio_control("config:backpressure", {"stream_id": sid, "emit": {
        "severity": severity, "action": action, "recommended_delay_ms": delay_ms}})


def _sent(run) -> float:  # type: ignore[no-untyped-def]
    return run.metrics.value("worker_audio_fragments_total", {"stream_id": run.stream_id, "status": "sent"})


def test_worker_respects_backpressure_pause(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-bp-pause"
    run = stream_factory(sid).start(WORKER_ARGS)
    labels = {"stream_id": sid}
    try:
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"}, lambda v: v >= 2, 30)
        _emit(sid, "pause", "high")
        run.metrics.wait_for("worker_backpressure_events_total", {**labels, "action": "pause"}, lambda v: v == 1, 5)
        paused_at = _sent(run)
        # 3 segments (6 s) become ready during the pause: none of them is sent.
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:
            assert _sent(run) == paused_at, "a fragment was sent while paused"
            time.sleep(0.2)
        # Segments that passed their deadline while paused went out with the original audio.
        run.metrics.wait_for("worker_fallback_total", {**labels, "reason": "backpressure"}, lambda v: v >= 1, 15)
        _emit(sid, "none", "low")
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "sent"},
                             lambda v: v > paused_at, 5)
        assert run.metrics.value("worker_backpressure_events_total", {**labels, "action": "none"}) == 1
        assert run.finish() == 0
    finally:
        control("config:reset", {"stream_id": sid})


def test_worker_respects_backpressure_slow_down(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-bp-slow"
    run = stream_factory(sid).start(WORKER_ARGS)
    labels = {"stream_id": sid}
    try:
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"}, lambda v: v >= 2, 30)
        _emit(sid, "slow_down", "medium", 500)
        run.metrics.wait_for("worker_backpressure_events_total", {**labels, "action": "slow_down"},
                             lambda v: v == 1, 5)
        t_slow = time.time()
        sent_at = _sent(run)
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "sent"},
                             lambda v: v >= sent_at + 4, 20)
        _emit(sid, "none", "low")
        assert run.finish() == 0
    finally:
        control("config:reset", {"stream_id": sid})
    lines = logs.parse(run.worker_log())
    ready = {ln.fields["fragment_id"]: ln.ts for ln in logs.find(lines, "segment ready") if "fragment_id" in ln.fields}
    sent = [ln for ln in logs.find(lines, "fragment sent")
            if ln.ts > t_slow + 0.05 and ln.fields.get("fragment_id") in ready]
    assert len(sent) >= 4, sent
    # 500 ms ± 100 ms before each send in slow_down mode. Measured twice: by the worker itself
    # (`held_ms`: segment ready → gate release, monotonic clock) and from outside (log timestamps:
    # ready → after the emit). Every send is held at least 400 ms (the delay is never skipped), the
    # typical (median) send within ±100 ms; a single send may come later on this 2-core machine
    # running eight stories at once (seen: +150 ms, 2 runs in 12, while encoding a 2 s fragment
    # took 435 ms of wall time: CPU starvation, not the gate; docs/e2e-quickstart.md).
    held = [float(ln.fields["held_ms"]) / 1000.0 for ln in sent[:4]]
    waits = [ln.ts - ready[ln.fields["fragment_id"]] for ln in sent[:4]]
    for what, xs in (("worker-measured", held), ("wall clock", waits)):
        assert all(0.4 <= w <= 1.0 for w in xs), f"slowed sends ({what}): {xs}"
        assert 0.4 <= statistics.median(xs) <= 0.6, f"500 ms ± 100 ms before each send ({what}): {xs}"
    # The delay applies to every send made in slow_down mode, from the event to the `none`; the
    # sends before the worker received it (its own `backpressure` line: ≥ 2, the event was emitted
    # once 2 fragments were processed — at start-up they may come in a burst just before it, so a
    # margin on the test's clock, as before, could leave none) were not held.
    slow_at = min(ln.ts for ln in logs.find(lines, "backpressure", action="slow_down"))
    before = [ln.ts - ready[ln.fields["fragment_id"]] for ln in logs.find(lines, "fragment sent")
              if ln.ts < slow_at and ln.fields.get("fragment_id") in ready]
    assert len(before) >= 2 and max(before) < 0.3, f"no delay before slow_down: {before}"


def test_backpressure_metrics_updated(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-bp-metrics"
    run = stream_factory(sid).start(WORKER_ARGS)
    labels = {"stream_id": sid}
    try:
        for action in ("pause", "slow_down", "none", "slow_down", "none"):
            assert run.metrics.value("worker_backpressure_events_total", {**labels, "action": action}) >= 0
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"}, lambda v: v >= 1, 30)
        expected = {"pause": 0, "slow_down": 0, "none": 0}
        for action in ("pause", "slow_down", "none", "slow_down", "none"):
            _emit(sid, action, "medium", 100 if action == "slow_down" else 0)
            expected[action] += 1
            run.metrics.wait_for("worker_backpressure_events_total", {**labels, "action": action},
                                 lambda v, n=expected[action]: v == n, 5)
        for action, n in expected.items():
            assert run.metrics.value("worker_backpressure_events_total", {**labels, "action": action}) == n
        assert run.finish() == 0
    finally:
        control("config:reset", {"stream_id": sid})
