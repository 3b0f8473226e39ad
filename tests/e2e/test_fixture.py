"""T011/T012 — the deterministic 60 s fixture exists and has the properties every test relies on."""

from __future__ import annotations

import pytest

from tests.e2e import config
from tests.e2e.helpers import stream_analyzer

pytestmark = [pytest.mark.e2e, pytest.mark.p1]


def test_fixture_properties(fixture_path) -> None:  # type: ignore[no-untyped-def]
    probe = stream_analyzer.ffprobe(fixture_path)
    assert probe.video_codec == "h264"
    assert probe.audio_codec == "aac"
    assert (probe.width, probe.height) == (1280, 720)
    assert probe.fps is not None and abs(probe.fps - 30.0) < 0.01
    assert probe.sample_rate == 48000 and probe.channels == 2
    assert abs(probe.duration_s - config.FIXTURE_DURATION_S) <= 0.034
    markers = stream_analyzer.markers(fixture_path)
    assert len(markers.markers) >= 5  # type: ignore[attr-defined]
    assert markers.tone_order == list(range(config.SEGMENTS))  # type: ignore[attr-defined]
