"""US1 — full pipeline: RTSP in → media server hook → orchestrator → worker → echo STS → RTMP out."""

from __future__ import annotations

import time

import pytest

from tests.e2e import config
from tests.e2e.conftest import new_log_lines
from tests.e2e.helpers import stream_analyzer
from tests.e2e.helpers.docker_manager import http_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.p1]

SID = "e2e-pipeline"


def _worker_state(stream_id: str) -> dict | None:  # type: ignore[type-arg]
    doc = http_json(f"{config.ORCHESTRATOR_URL}/v1/streams")
    streams = doc.get("streams", doc) if isinstance(doc, dict) else doc
    for s in streams or []:
        if isinstance(s, dict) and s.get("stream_id") == stream_id:
            return s
    return None


def test_full_pipeline_rtsp_to_rtmp(stream_factory, docker_services, metrics_client, log_capture) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    run = stream_factory(SID)
    run.start_recorder()
    run.publish()  # the media server's publish hook makes the orchestrator start the worker

    wait_for(lambda: _worker_state(SID) is not None, 15, "orchestrator to start a worker for the stream")
    labels = {"stream_id": SID, "status": "processed"}
    # Wait for the 10 segments to be processed (metrics aggregated by the media service).
    metrics_client.wait_for("worker_audio_fragments_total", labels, lambda v: v >= config.SEGMENTS, 85)
    assert metrics_client.value("worker_audio_fragments_total", labels) == config.SEGMENTS
    assert metrics_client.value("worker_fallback_total", {"stream_id": SID}) == 0
    assert metrics_client.value("worker_audio_fragments_total", {"stream_id": SID, "status": "sent"}) == config.SEGMENTS

    run.wait_recorder(timeout_s=max(5.0, config.TEST_BUDGET_S - (time.monotonic() - t0)))
    probe = stream_analyzer.ffprobe(run.output_path)
    assert probe.video_codec == "h264" and probe.audio_codec == "aac"
    assert abs(probe.duration_s - config.FIXTURE_DURATION_S) <= 0.5, probe.duration_s
    assert abs(probe.duration_s - config.FIXTURE_DURATION_S) <= 0.034, f"aim ±33 ms: {probe.duration_s}"

    # The stream ended cleanly: the worker exited 0 and was not restarted.
    wait_for(lambda: (_worker_state(SID) or {}).get("state") in ("done", "exited", "stopped", "completed"), 20,
             "worker to finish")
    state = _worker_state(SID) or {}
    assert state.get("restarts", 0) == 0, state

    # No error lines in any service log during this test (lines of this stream or of no stream).
    lines = new_log_lines(docker_services, log_capture)
    errors = [f"{name}: {ln}" for name, ls in lines.items() for ln in ls
              if (" ERROR " in ln or " CRITICAL " in ln or "Traceback" in ln)
              and ("stream_id=" not in ln or f"stream_id={SID}" in ln)]
    worker_log = (docker_services.workdir / "workers").glob(f"*{SID}*")
    for path in worker_log:
        errors += [f"{path.name}: {ln}" for ln in path.read_text(errors="replace").splitlines()
                   if " ERROR " in ln or "Traceback" in ln]
    assert not errors, "\n".join(errors[:20])
    assert time.monotonic() - t0 <= config.TEST_BUDGET_S
