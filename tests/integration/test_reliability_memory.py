"""Reliability: a long stream does not accumulate memory in the worker.

Every resolved fragment is remembered by the fragment tracker (to tell a late result from an
unknown one); that memory must not keep the fragment's media alive: a 6 s segment is ~1 MB of
PCM (twice, with its dubbed audio) plus its video, so 1024 remembered fragments would pin
gigabytes. The soak (`make soak`) measures RSS over minutes; this test checks the cause
directly and fast: after a 60-segment run, no resolved segment is still referenced.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.segment import Segment
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h


def live_segments() -> list[Segment]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, Segment)]


def settled_live_segments(limit: int, deadline_s: float = 10.0) -> int:
    """How many segments are alive once at most `limit` are, or at the deadline. Right after
    `run()` returns, the default executor may still be finishing a job handed a segment's audio
    (an encode or a late result's decode): those references go with the job; a pinned segment
    never goes."""
    end = time.monotonic() + deadline_s
    while True:
        n = len(live_segments())
        if n <= limit or time.monotonic() > end:
            return n
        time.sleep(0.05)


async def test_resolved_fragments_do_not_pin_their_media(tmp_path: Path) -> None:
    src = tmp_path / "fx60.mp4"
    make_fixture(src, FixtureSpec(duration_s=60.0, width=160, height=120, segment_s=1.0))
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as sts:
        await sts.core.control("config:error_simulation", {"stream_id": "mem", "enabled": True, "rules": [
            {"trigger": "nth_fragment", "value": 4, "error_code": "INVALID_FRAGMENT", "retryable": False}]})
        runner = WorkerRunner(
            WorkerSettings(
                stream_id="mem", input_url=str(src), output_url=str(tmp_path / "out.mp4"), sts_url=sts.url,
                metrics_port=0, paced=False, segment_s=1.0, end_timeout_s=1.0,
            )
        )
        assert await runner.run() == 0
    n = h.check_accounting(runner)
    assert n["sent"] == 60 and n["processed"] > 0 and n["fallback"] > 0
    assert len(runner.session.tracker._history) == 60, "resolved fragments are still remembered (ids, outcome)"
    pinned = settled_live_segments(limit=2)
    assert pinned <= 2, f"{pinned} segments still referenced after the run"
