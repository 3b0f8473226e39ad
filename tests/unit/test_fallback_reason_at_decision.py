"""A segment's fallback reason is the one decided when the worker decided, never re-read from the
breaker or the backpressure gate when the output takes it (up to D seconds later)."""

from __future__ import annotations

import numpy as np

from livedub.media.segment import Segment, SegmentAudio
from livedub.worker.breaker import BreakerState
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.unit.test_worker_metrics import value


def _segment(batch: int = 0) -> Segment:
    pcm = np.zeros((480, 2), dtype=np.int16)
    return Segment(id=f"s-{batch}", stream_id="s1", batch=batch, t0_ns=0, n_samples=480, sample_rate=48_000,
                   channels=2, audio=SegmentAudio(pcm))  # fmt: skip


def test_unresolved_audio_goes_out_with_what_it_was_waiting_for() -> None:
    audio = SegmentAudio(np.zeros((4, 2), dtype=np.int16))
    audio.waiting_for("backpressure")
    assert audio.take("deadline")[1:] == ("original", "backpressure")
    fresh = SegmentAudio(np.zeros((4, 2), dtype=np.int16))
    assert fresh.take("deadline")[1:] == ("original", "deadline")
    set_first = SegmentAudio(np.zeros((4, 2), dtype=np.int16))
    set_first.waiting_for("backpressure")
    assert set_first.set_fallback("circuit_open")
    assert set_first.take("deadline")[1:] == ("original", "circuit_open")


def test_a_late_answer_is_counted_as_deadline_even_if_the_breaker_opened_since() -> None:
    runner = WorkerRunner(WorkerSettings(stream_id="s1", input_url="in.mp4", output_url="out.mp4"))
    session = runner.session
    for _ in range(runner.settings.breaker_failure_threshold):
        session.breaker.record_failure(True, "TIMEOUT")
    session.gate.apply("pause")
    assert session.breaker.state is BreakerState.OPEN and session.gate.paused
    # sent while all was well, answered too late: the output took it unresolved ("deadline")
    runner.recorder.on_segment_output(_segment(), "original", "deadline")
    assert value(runner.metrics, "worker_fallback_total", reason="deadline") == 1
    assert value(runner.metrics, "worker_fallback_total", reason="circuit_open") == 0
    assert value(runner.metrics, "worker_fallback_total", reason="backpressure") == 0
