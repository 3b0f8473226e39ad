"""US2 — A/V sync: PTS deltas per segment, true offsets at the decoded sync markers, no drift under
variable STS latency, and slew (never a jump) when the publisher's audio clock drifts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import config
from tests.e2e.helpers import logs, stream_analyzer
from tests.e2e.helpers.sts_control import control

pytestmark = [pytest.mark.e2e, pytest.mark.p1]

MARKER_TOLERANCE_MS = 33.0


def _check_output(run) -> None:  # type: ignore[no-untyped-def]
    probe = stream_analyzer.ffprobe(run.output_path)
    assert abs(probe.duration_s - config.FIXTURE_DURATION_S) <= 0.5, probe.duration_s
    deltas = stream_analyzer.segment_av_deltas_ms(probe, config.SEGMENT_S)
    assert len(deltas) >= config.SEGMENTS
    within = sum(1 for d in deltas if d < 120.0) / len(deltas)
    assert within >= 0.95, deltas
    analysis = stream_analyzer.markers(run.output_path)
    offsets = [m.offset_ms for m in analysis.markers]  # type: ignore[attr-defined]
    assert offsets, "no sync marker found in the output"
    assert all(o is not None and abs(o) <= MARKER_TOLERANCE_MS for o in offsets), offsets
    return None


def test_av_sync_within_threshold(stream_factory) -> None:  # type: ignore[no-untyped-def]
    run = stream_factory("e2e-sync").start()
    sid = {"stream_id": run.stream_id}
    run.metrics.wait_for("worker_audio_fragments_total", {**sid, "status": "processed"},
                         lambda v: v >= config.SEGMENTS, 85)
    delta = run.metrics.value("worker_av_sync_delta_ms", sid)
    assert abs(delta) <= MARKER_TOLERANCE_MS, delta
    assert run.finish() == 0
    _check_output(run)
    analysis = stream_analyzer.markers(run.output_path)
    # Every segment's dubbed audio landed in its own slot: the segment tones are in order.
    assert analysis.tone_order == list(range(config.SEGMENTS)), analysis.tone_order  # type: ignore[attr-defined]


def test_av_sync_with_variable_sts_latency(stream_factory) -> None:  # type: ignore[no-untyped-def]
    sid = "e2e-sync-latency"
    control("config:latency", {"stream_id": sid, "min_delay_ms": 0, "max_delay_ms": 500, "seed": 7})
    try:
        run = stream_factory(sid).start()
        labels = {"stream_id": sid}
        run.metrics.wait_for("worker_audio_fragments_total", {**labels, "status": "processed"},
                             lambda v: v >= config.SEGMENTS, 85)
        assert run.metrics.value("worker_fallback_total", labels) == 0
        assert run.finish() == 0
        _check_output(run)
    finally:
        control("config:reset", {"stream_id": sid})


def test_av_sync_correction_gradual_slew(stream_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A publisher whose audio clock runs 1000 ppm fast: 60 ms over the minute, beyond the 20 ms bound.
    drifting = tmp_path / "drift.mp4"
    subprocess.run([sys.executable, "-m", "livedub", "make-fixture", str(drifting), "--duration-s", "60",
                    "--audio-drift-ppm", "1000"], check=True)
    run = stream_factory("e2e-sync-drift")
    run.start_recorder()
    run.publish(fixture=drifting)
    run.start_worker()
    assert run.finish() == 0
    lines = logs.parse(run.worker_log())
    started = logs.find(lines, "a/v drift correction started")
    assert started, "drift beyond the 20 ms bound must be corrected by slew"
    assert all(abs(float(ln.fields["deviation_ms"])) <= 25.0 for ln in started), "corrected at the bound"
    # Gradual: at most 0.5 % of a 1024-sample AAC frame per frame (5 samples), never a jump.
    steps = [int(ln.fields["samples_per_frame"]) for ln in started]
    assert all(1 <= abs(s) <= 5 for s in steps), steps
    probe = stream_analyzer.ffprobe(run.output_path)
    apts = probe.audio_pts_s
    gaps = [b - a for a, b in zip(apts, apts[1:], strict=False)]
    frame = 1024 / 48000
    assert all(abs(g - frame) < 0.002 for g in gaps), "audio PTS must advance one frame at a time"
