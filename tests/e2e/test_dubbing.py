"""Issue 14 — one story through the real media server, a worker and a `dub` STS: a spoken English
programme comes out dubbed in Spanish over the ducked original, captions written in order, A/V
markers within 33 ms."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.orchestrator.demo import spoken_track
from livedub.sts.testing import free_port
from tests.e2e import config
from tests.e2e.helpers import stream_analyzer
from tests.e2e.helpers.docker_manager import LIVEDUB, ManagedProcess, http_ok, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.p1,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("espeak-ng", "lt-proc", "sox")),
        reason="espeak-ng / apertium / sox not installed (make setup)",
    ),
]

SID = "e2e-dub"
DURATION_S = 18.0
SEGMENTS = 3
MARKER_TOLERANCE_MS = 33.0
CUE_START = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d{3}) --> ", re.M)


def test_spoken_programme_is_dubbed_with_captions(stream_factory, docker_services, cleanup_resources, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = FixtureSpec(duration_s=DURATION_S)
    fixture = tmp_path / "speech.mp4"
    make_fixture(fixture, spec, voice=spoken_track(spec))
    port = free_port()
    sts = ManagedProcess("dub-sts", [*LIVEDUB, "sts", "--port", str(port), "--backend", "dub"],
                         docker_services.workdir / "dub-sts.log")
    sts.start()
    cleanup_resources.append(sts)
    sts_url = f"http://{config.HOST}:{port}"
    wait_for(lambda: http_ok(f"{sts_url}/health"), config.SERVICE_START_TIMEOUT_S, "dub STS /health")

    prefix = tmp_path / "captions" / SID
    run = stream_factory(SID)
    run.start_recorder()
    run.publish(fixture=fixture)
    run.start_worker(["--captions", str(prefix), "--source-language", "en", "--target-language", "es"],
                     sts_url=sts_url)
    assert run.finish(config.TEST_BUDGET_S) == 0

    # every speech segment dubbed: success with a transcript and a translation, in order
    done = run.echo_debug(sts_url)["processed_sent"]
    assert [d["sequence_number"] for d in done] == list(range(SEGMENTS)), done
    assert all(d["status"] == "success" and d["transcript"] and d["translated_text"] for d in done), done
    # captions: one cue per speech span (at least one per segment) in each language, in output
    # order, where the speech plays: inside its segment, after the segment start (the sentence
    # of the programme starts ≥ 0.3 s into its segment)
    for lang in ("en", "es"):
        text = Path(f"{prefix}.{lang}.vtt").read_text()
        starts = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in CUE_START.findall(text)]
        assert starts == sorted(starts) and len(starts) >= SEGMENTS, text
        assert {int(t // spec.segment_s) for t in starts} == set(range(SEGMENTS)), text
        assert all(t % spec.segment_s >= 0.1 for t in starts), text
    # the dubbed output keeps A/V sync at the markers
    probe = stream_analyzer.ffprobe(run.output_path)
    assert probe.video_codec == "h264" and probe.audio_codec == "aac"
    analysis = stream_analyzer.markers(run.output_path)
    offsets = [m.offset_ms for m in analysis.markers]  # type: ignore[attr-defined]
    assert len(offsets) == SEGMENTS, offsets
    assert all(o is not None and abs(o) <= MARKER_TOLERANCE_MS for o in offsets), offsets
