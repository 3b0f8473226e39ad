"""The original sound kept (issue 18), through real workers, the real echo STS and real PyAV:

- a multi-track output (MPEG-TS `.ts`, Matroska `.mkv`, MP4) gets two audio tracks: ffprobe shows
  the dubbed one first (language = the target's ISO 639-2 code, default disposition), the original
  second (the source's code; Matroska also flags it `original`); the fixture's markers are in sync
  with the video on both, and at the same instants on both;
- MPEG-TS over SRT, paced (worker process → an ffmpeg listener recording every stream): the same
  two tagged tracks arrive, in sync;
- an RTMP output with `--keep-original` (worker process, embedded media server) publishes the
  original programme to `live/<id>/orig`, readable and in sync like `live/<id>/out`;
- an original output that cannot be opened is given up and counted; the dubbed output is complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from livedub.exitcodes import ExitCode
from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.record import record, record_argv
from livedub.orchestrator.media_server import MediaServer
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import free_port
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.e2e.helpers.stream_analyzer import FFPROBE
from tests.integration.marks import needs_ffmpeg, needs_media_server
from tests.integration.test_media_outputs import (
    DELAY_S,
    SEGMENT_S,
    check_sync,
    free_udp_port,
    needs_ffmpeg_srt,
    summary,
    wait_udp_bound,
)
from tests.integration.test_worker import _metric

pytestmark = pytest.mark.timeout(120)

# The two tracks come from one timeline, one anchor, the same sample positions: with the echo STS
# their content is the same, so a marker's beep is at the same instant on both (AAC's own
# round trip through the m4a transport aside: measured ≤ 0.9 ms on the fixture).
SAME_INSTANT_MS = 2.0
AAC_FRAME_S = 1024 / 48000


@pytest.fixture(scope="module")
def fx12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12, width=320, height=240, segment_s=SEGMENT_S))
    return path


@pytest.fixture
async def sts() -> AsyncIterator[Any]:
    async with run_sts(StsSettings(port=free_port(), close_delay_s=0.2)) as server:
        yield server


def audio_streams(path: Path) -> list[dict[str, Any]]:
    """ffprobe's view of the audio streams of `path`, in stream order."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [s for s in json.loads(out)["streams"] if s.get("codec_type") == "audio"]


def check_same_instants(dubbed: Analysis, original: Analysis) -> None:
    """Each marker's beep at the same instant on both tracks (so both are in sync together)."""
    assert len(dubbed.markers) == len(original.markers)
    for d, o in zip(dubbed.markers, original.markers, strict=True):
        assert d.flash_s == o.flash_s
        assert abs(d.beep_s - o.beep_s) * 1000 <= SAME_INSTANT_MS, (d, o)


@needs_ffmpeg
@pytest.mark.parametrize("ext", ["ts", "mkv", "mp4"])
async def test_multi_track_output_carries_dub_first_and_original_second_in_sync(
    sts: Any, fx12: Path, tmp_path: Path, ext: str
) -> None:
    out = tmp_path / f"out.{ext}"
    sid = f"orig-{ext}"
    runner = WorkerRunner(WorkerSettings(
        stream_id=sid, input_url=str(fx12), output_url=str(out), sts_url=sts.url, metrics_port=0,
        paced=False, segment_s=SEGMENT_S, source_language="en", target_language="es",
    ))  # fmt: skip  (the original track is on by default where the container carries several)
    assert await runner.run() == ExitCode.OK
    assert _metric(runner, "worker_segments_total", source="dubbed") == 6  # the first track is the dub
    assert _metric(runner, "worker_original_output_failures_total") == 0
    assert runner.health()["original"] == "track"

    streams = audio_streams(out)
    assert [s["codec_name"] for s in streams] == ["aac", "aac"]
    assert [s.get("tags", {}).get("language") for s in streams] == ["spa", "eng"]
    if ext != "ts":  # MPEG-TS has no default flag (its ISO 639 descriptor carries the language)
        assert [s["disposition"]["default"] for s in streams] == [1, 0]
    if ext == "mkv":
        assert [s["disposition"]["original"] for s in streams] == [0, 1]

    expected = analyze(fx12)
    dubbed, original = analyze(out), analyze(out, audio_track=1)
    print(f"\n{ext} dubbed: {summary(dubbed, expected)}\n{ext} original: {summary(original, expected)}")
    assert expected.audio is not None
    for res in (dubbed, original):
        if ext == "mkv":
            # Not this feature's (one track or two, passthrough too): PyAV decodes a worker's
            # Matroska output from its second AAC frame (the packets start at 0), so the audio
            # seems to start 21.3 ms late; everything else is checked.
            assert res.audio is not None and res.audio.start_s is not None and res.audio.end_s is not None
            assert res.audio.start_s <= AAC_FRAME_S + 0.001, summary(res, expected)
            assert abs(res.audio.end_s - (expected.audio.end_s or 0.0)) <= 0.002, summary(res, expected)
            assert len(res.markers) == 6 and res.max_abs_offset_ms <= 33, summary(res, expected)
            assert res.tone_order == list(range(6))
        else:
            check_sync(res, expected)
    check_same_instants(dubbed, original)


@needs_ffmpeg
async def test_without_the_original_track_one_audio_track_tagged_with_the_target(
    sts: Any, fx12: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mkv"
    runner = WorkerRunner(WorkerSettings(
        stream_id="orig-off", input_url=str(fx12), output_url=str(out), sts_url=sts.url, metrics_port=0,
        paced=False, segment_s=SEGMENT_S, source_language="en", target_language="es", original_track=False,
    ))  # fmt: skip
    assert await runner.run() == ExitCode.OK
    assert runner.health()["original"] == "off"
    streams = audio_streams(out)
    assert len(streams) == 1 and streams[0]["tags"]["language"] == "spa"
    assert not (tmp_path / "out.orig.mkv").exists()


@needs_ffmpeg
async def test_an_original_output_that_cannot_open_is_counted_and_the_dub_goes_on(
    sts: Any, fx12: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.flv"
    (tmp_path / "out.orig.flv").mkdir()  # where the original would go: not a writable file
    runner = WorkerRunner(WorkerSettings(
        stream_id="orig-fail", input_url=str(fx12), output_url=str(out), sts_url=sts.url, metrics_port=0,
        paced=False, segment_s=SEGMENT_S, keep_original=True,
    ))  # fmt: skip
    assert await runner.run() == ExitCode.OK
    assert _metric(runner, "worker_original_output_failures_total") == 1
    assert runner.health()["segment_files"] == "off"  # not counted as a segment file error
    assert runner.health()["original"] == "failed"
    expected = analyze(fx12)
    check_sync(analyze(out), expected)


def worker_argv(sid: str, sts_url: str) -> list[str]:
    """A paced `livedub worker --keep-original` (en → es); its URLs go by environment."""
    return [
        sys.executable, "-m", "livedub", "worker", "--stream-id", sid, "--sts-url", sts_url,
        "--segment-s", str(SEGMENT_S), "--output-delay-s", str(DELAY_S), "--metrics-port", "0",
        "--keep-original", "--source-language", "en", "--target-language", "es",
    ]  # fmt: skip


async def run_worker_process(sid: str, sts_url: str, src: Path, out_url: str) -> tuple[int, str, float]:
    """(exit code, log, seconds it ran) of a paced worker; URLs (with credentials) by environment,
    as the orchestrator gives them (never argv)."""
    env = {**os.environ, "WORKER_INPUT_URL": str(src), "WORKER_OUTPUT_URL": out_url}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(sid, sts_url), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    logs, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, logs.decode(errors="replace"), time.monotonic() - started


@needs_ffmpeg_srt
async def test_srt_mpegts_output_carries_both_tagged_tracks_in_sync(sts: Any, fx12: Path, tmp_path: Path) -> None:
    port = free_udp_port()
    rec = tmp_path / "srt.mkv"
    recorder = subprocess.Popen(record_argv(f"srt://127.0.0.1:{port}?mode=listener", rec, all_streams=True))
    try:
        await asyncio.to_thread(wait_udp_bound, port)
        code, log, took = await run_worker_process("origsrt", sts.url, fx12, f"srt://127.0.0.1:{port}")
        assert code == ExitCode.OK, log[-3000:]
        assert await asyncio.to_thread(recorder.wait, 20) == 0
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    assert 12 + DELAY_S - 1 < took < 12 + DELAY_S + 10, took  # paced: input in real time, then D
    streams = audio_streams(rec)
    assert [s.get("tags", {}).get("language") for s in streams] == ["spa", "eng"]  # from the TS descriptors
    expected = analyze(fx12)
    dubbed, original = analyze(rec), analyze(rec, audio_track=1)
    print(f"\nSRT dubbed: {summary(dubbed, expected)}\nSRT original: {summary(original, expected)}")
    check_sync(dubbed, expected)
    check_sync(original, expected)
    check_same_instants(dubbed, original)


@needs_media_server
@needs_ffmpeg
async def test_rtmp_output_with_keep_original_publishes_live_id_orig_in_sync(
    sts: Any, fx12: Path, tmp_path: Path
) -> None:
    sid = "origrtmp"
    expected = analyze(fx12)
    recordings = {name: tmp_path / f"{name}.mkv" for name in ("out", "orig")}
    codes: dict[str, int] = {}
    with MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), streams=[sid], workdir=tmp_path / "ms") as ms:
        out_url = ms.rtmp_url(f"live/{sid}/out")
        # Readers poll the paths (nothing is served before the publish) and end when the worker
        # hangs up; the worker connects output_connect_lead_s (3 s) before its first packet, so
        # both are attached when the first keyframe goes out.
        recorders = [
            threading.Thread(
                target=lambda n=name, r=rec: codes.__setitem__(
                    n, record(ms.rtmp_url(f"live/{sid}/{n}"), r, wait_s=60, log=tmp_path / f"{n}.ffmpeg.log")
                ),
                daemon=True,
            )
            for name, rec in recordings.items()
        ]
        for t in recorders:
            t.start()
        code, log, took = await run_worker_process(sid, sts.url, fx12, out_url)
        for t in recorders:
            await asyncio.to_thread(t.join, 30)
    assert code == ExitCode.OK, log[-3000:]
    assert "original output opened" in log and "original output failed" not in log, log[-3000:]
    assert 12 + DELAY_S - 1 < took < 12 + DELAY_S + 10, took  # paced: input in real time, then D
    assert all(not t.is_alive() for t in recorders) and set(codes) == {"out", "orig"}, codes
    res = {name: analyze(rec) for name, rec in recordings.items()}
    print(f"\nRTMP out: {summary(res['out'], expected)}\nRTMP orig: {summary(res['orig'], expected)}")
    for name, r in res.items():
        assert len(audio_streams(recordings[name])) == 1
        check_sync(r, expected)
    check_same_instants(res["out"], res["orig"])  # one timeline: the same instants on both paths
