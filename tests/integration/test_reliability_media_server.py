"""Reliability: the media server is restarted mid-stream (the worker's input drops for ~3 s, then the
publisher is back on a new server process on the same port).

Embedded media server (nginx-rtmp), a real-time publisher, the worker (RTMP in → echo STS → paced
file out). Documented behaviour (docs/media.md "Input loss and reconnection"): the input is
retried after 1, 2, 4 s; the open segment is completed with silence; the new connection continues
the timeline after the old one, so the outage shows as a frozen picture with silent audio — never
a gap in the audio track nor a time warp — and sync is kept on both sides of it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from livedub.media.analyze import TONE_WINDOW_S, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.publish import publish
from livedub.orchestrator.media_server import MediaServer, MediaServerSettings
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import free_port
from livedub.typed import Secret
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h
from tests.integration.marks import needs_media_server

pytestmark = [pytest.mark.timeout(120), needs_media_server]

OUTAGE_S = 3.0
# measured silence/freeze starts vs the worker's record of the cut: a 10 ms analysis block, AAC
# frame smear (1024 samples ≈ 21 ms) and a frame (33 ms)
SKEW_TOLERANCE_S = 0.07


class Publisher:
    """`publish()` in a thread, real time; remembers a failure instead of raising."""

    def __init__(self, src: Path, url: str) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(src, url), daemon=True)
        self.thread.start()

    def _run(self, src: Path, url: str) -> None:
        try:
            publish(str(src), url, stop=self.stop)
        except BaseException as exc:  # noqa: BLE001 - the server going away is the scenario
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


async def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_media_server_restart_mid_stream(tmp_path: Path) -> None:
    src = tmp_path / "fx8.mp4"
    make_fixture(src, FixtureSpec(duration_s=8.0, width=320, height=240, segment_s=2.0))
    ports = {"rtsp_port": free_port(), "rtmp_port": free_port(), "streams": ["msr"]}
    servers: list[MediaServer] = []
    publishers: list[Publisher] = []

    # the restarted server must take the credentials the publisher and worker already have
    creds = MediaServerSettings(publish_pass=Secret("pub-msr"), worker_pass=Secret("wrk-msr"))

    def start_server() -> MediaServer:
        ms = MediaServer(creds, **ports, workdir=tmp_path / f"ms{len(servers)}")  # type: ignore[arg-type]
        servers.append(ms)
        ms.start()
        ms.wait_ready(10)
        return ms

    ms = await asyncio.to_thread(start_server)
    in_url, out = ms.rtmp_url("live/msr/in"), tmp_path / "out.mp4"
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as sts:
        runner = WorkerRunner(
            WorkerSettings(
                stream_id="msr",
                input_url=in_url,
                output_url=str(out),
                sts_url=sts.url,
                metrics_port=0,
                segment_s=2.0,
                fragment_timeout_s=3.0,
                output_delay_s=7.0,
                read_timeout_s=1.0,
                end_timeout_s=2.0,
            )
        )
        segments = h.record_segments(runner)
        published = lambda: "live/msr/in" in servers[-1].ready_paths  # noqa: E731
        # As in production, the publisher comes first (the media server's hook starts the worker;
        # nginx-rtmp drops a player of an unpublished stream at once: `idle_streams off`).
        publishers.append(Publisher(src, in_url))
        await wait_until(published, 10, "first publish")
        task = asyncio.create_task(runner.run())
        try:
            await wait_until(lambda: runner.pipeline.stats.segments_created >= 2, 20, "4 s of input")
            await asyncio.to_thread(ms.stop)  # the media server goes away mid-stream
            down_at = time.monotonic()
            await wait_until(lambda: publishers[0].done, 10, "first publisher failed")
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # 3 s outage
            await asyncio.to_thread(start_server)
            publishers.append(Publisher(src, in_url))  # the publisher reconnects (clock restarts)
            await wait_until(lambda: runner.pipeline.stats.reconnects >= 1, 15, "worker reconnected")
            back_after_s = time.monotonic() - down_at
            await wait_until(lambda: publishers[1].done, 30, "second publisher")
            assert publishers[1].error is None
            # nginx sends no EOF: the worker's read watchdog (1 s) sees the end of the second run;
            # then stop the way SIGTERM does.
            await wait_until(lambda: runner.health()["input"] == "reconnecting", 15, "second run read")
            runner.pipeline.request_stop(drain=True)
            code = await asyncio.wait_for(task, 30)
        finally:
            for pub in publishers:
                pub.close()
            if not task.done():
                runner.pipeline.request_stop(drain=False)
                await asyncio.wait_for(task, 30)
            for server in servers:
                await asyncio.to_thread(server.stop)

    assert code == 0
    # Retries 1, 2, 4 s after the loss; the server is back after 3 s: the worker is back by the
    # third retry at the latest (+ loss detection, an RTMP handshake and a keyframe wait, ≤ 2 s GOP).
    assert back_after_s <= 1 + 2 + 4 + 4, back_after_s
    n = h.check_accounting(runner)
    assert n["dubbed"] >= n["original"], segments  # the outage cut at most a segment or two
    assert runner.health()["sts"] == "connected", "the STS session was never affected"
    res = analyze(out)
    assert res.audio is not None and res.video is not None
    assert res.audio.gaps == [] and res.audio.overlaps == [], "audio continuous across the outage"
    assert len(res.video.gaps) == 1, (res.video.gaps, segments)  # the outage: one frozen picture
    assert res.max_abs_offset_ms <= 33, [m.offset_ms for m in res.markers]
    assert len(res.markers) >= 3, res.markers
    # The outage is one stretch of silence under one frozen picture. Each starts where what the
    # worker had received of that track ended when the connection dropped (`input_losses`): the
    # picture may freeze a little after the sound stops or before it, by the input's audio/video
    # interleaving at the cut (under load that reached 0.5 s), never by anything else.
    gap = res.video.gaps[0]
    outage = [g for g in res.silences if g.length_ms >= 2000 and g.at_s + g.length_ms / 1000 < res.audio.end_s - 0.1]
    assert len(outage) == 1, (res.silences, gap)  # (the input's end is padded with silence too: not the outage)
    loss = runner.pipeline.stats.input_losses[0]
    assert loss.audio_end_ns is not None and loss.video_end_ns is not None
    skew_s = (loss.video_end_ns - loss.audio_end_ns) / 1e9
    assert abs((gap.at_s - outage[0].at_s) - skew_s) <= SKEW_TOLERANCE_S, (gap, outage, loss)
    silence_end = outage[0].at_s + outage[0].length_ms / 1000
    # before it, consecutive segment tones of the first publish, after it the second publish's in
    # order up to its last segment. A tone run is found in windows of TONE_WINDOW_S on a grid of
    # TONE_HOP_S: a window that holds only the first (or last) few ms of a tone can already (still)
    # name it, so a run starts up to a window before the tone does and ends up to a window after
    # it — by where the tone falls on the grid, which the outage shifts at random. (The bound was
    # 0.3 s: it failed once in a fresh-clone CI trial.)
    slack = TONE_WINDOW_S
    before = [r.segment_index for r in res.tone_runs if r.segment_index is not None and r.end_s <= outage[0].at_s + slack]
    after = [r.segment_index for r in res.tone_runs if r.segment_index is not None and r.start_s >= silence_end - slack]
    # compact, so that pytest does not truncate it: every tone run and silence, and the outage
    runs = [(round(r.start_s, 2), round(r.end_s, 2), r.segment_index) for r in res.tone_runs]
    quiet = [(round(g.at_s, 2), g.length_ms) for g in res.silences]
    assert before and after and before + after == res.tone_order, (runs, quiet, round(silence_end, 2))
    assert all(b == a + 1 for part in (before, after) for a, b in zip(part, part[1:], strict=False))
    assert after[-1] == 3, res.tone_order
