"""Integration: the worker's captions (WebVTT on the output timeline, appended cue by cue) and its
behaviour when the STS refuses the language pair (every segment original, the worker keeps
running). File input/output, unpaced, in-process STS."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.sts.dub.backend import DubBackend
from livedub.sts.server import run_sts
from livedub.sts.settings import BackendKind, StsSettings
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner

CUE = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)\n")


@pytest.fixture(scope="module")
def fixture_12s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fx") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12.0))
    return path


def _metric(runner: WorkerRunner, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(runner.metrics.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


async def test_captions_follow_the_output_timeline(fixture_12s: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "cap" / "show"
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as sts:  # echo: mock texts
        settings = WorkerSettings(
            stream_id="cap-1", input_url=str(fixture_12s), output_url=str(tmp_path / "out.mp4"),
            sts_url=sts.url, metrics_port=0, paced=False, captions=str(prefix),
            source_language="en", target_language="es",
        )
        runner = WorkerRunner(settings)
        assert await runner.run() == 0
    assert _metric(runner, "worker_segments_total", source="dubbed") == 2
    for lang, marker in (("en", "[echo transcript en]"), ("es", "[echo translation es]")):
        text = (tmp_path / "cap" / f"show.{lang}.vtt").read_text()
        assert text.startswith("WEBVTT\n\n")
        cues = CUE.findall(text)
        assert [int(c[0]) for c in cues] == [1, 2]
        starts = [_seconds(c[1]) for c in cues]
        ends = [_seconds(c[2]) for c in cues]
        assert starts == [0.0, 6.0] and ends == [6.0, 12.0]  # each segment where it plays
        assert all(marker in c[3] for c in cues)


@pytest.mark.skipif(not shutil.which("lt-proc"), reason="apertium not installed (make setup)")
async def test_an_unsupported_pair_outputs_original_and_keeps_running(
    fixture_12s: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "refused"
    backend = DubBackend(StsSettings(backend=BackendKind.DUB, workers=1))
    try:
        async with run_sts(StsSettings(port=0, close_delay_s=0.2), backend=backend) as sts:
            settings = WorkerSettings(
                stream_id="cap-2", input_url=str(fixture_12s),
                output_url=str(tmp_path / "out.mp4"), sts_url=sts.url, metrics_port=0,
                paced=False, captions=str(prefix), source_language="en", target_language="fr",
            )
            runner = WorkerRunner(settings)
            assert await runner.run() == 0  # not an exit: the programme goes out original
    finally:
        backend.close()
    assert _metric(runner, "worker_segments_total", source="dubbed") == 0
    assert _metric(runner, "worker_segments_total", source="original") >= 2
    assert _metric(runner, "worker_fallback_total", reason="config_refused") >= 1
    assert _metric(runner, "worker_audio_fragments_total", status="sent") == 0
    assert CUE.findall((tmp_path / "refused.fr.vtt").read_text()) == []
