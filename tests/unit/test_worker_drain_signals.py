"""The worker's stop signals (issue 17 item 8): the first SIGTERM/SIGINT drains, bounded by
`drain_timeout_s`; a second signal, the orphan signal (SIGHUP) or `drain_timeout_s=0` stop now."""

from __future__ import annotations

import asyncio
import signal

from livedub.exitcodes import ORPHAN_SIGNAL
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner


class StubPipeline:
    def __init__(self) -> None:
        self.stops: list[bool] = []

    def request_stop(self, *, drain: bool = True) -> None:
        self.stops.append(drain)


def runner(**kw: object) -> tuple[WorkerRunner, StubPipeline]:
    r = WorkerRunner(WorkerSettings(input_url="in.mp4", output_url="out.mp4", metrics_port=0, **kw))  # type: ignore[arg-type]
    stub = StubPipeline()
    r.pipeline = stub  # type: ignore[assignment]
    return r, stub


def test_default_drain_is_d_plus_the_fragment_timeout() -> None:
    s = WorkerSettings(segment_s=6.0, fragment_timeout_s=8.0)
    assert s.drain_s == s.delay_s + s.fragment_timeout_s == 22.0
    assert WorkerSettings(drain_timeout_s=3.0).drain_s == 3.0


async def test_first_signal_drains_second_stops_now() -> None:
    r, stub = runner()
    r._on_signal(signal.SIGTERM)
    assert stub.stops == [True]
    r._on_signal(signal.SIGINT)
    assert stub.stops == [True, False]
    assert r._drain_task is not None
    r._drain_task.cancel()


async def test_orphan_signal_and_no_drain_stop_now() -> None:
    r, stub = runner()
    r._on_signal(ORPHAN_SIGNAL)
    assert stub.stops == [False]
    r, stub = runner(drain_timeout_s=0)
    r._on_signal(signal.SIGTERM)
    assert stub.stops == [False]


async def test_drain_is_cut_at_its_timeout() -> None:
    r, stub = runner(drain_timeout_s=0.05)
    r._on_signal(signal.SIGTERM)
    assert r._drain_task is not None
    await asyncio.wait_for(r._drain_task, 5.0)
    assert stub.stops == [True, False]
