"""Reliability: the worker against a hostile STS (`hostile_sts.py`), file in → file out, unpaced.

Every scenario: the worker does not crash (exit 0), the output has the input's full duration with
every segment's audio in order and in sync, every sent fragment is accounted for (processed or
fallback, nothing left in flight), every original-audio segment has its reason counted, and the
misbehaviour itself is counted in the worker's metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.integration import hostile_sts as h

SEGMENTS = 6  # 12 s fixture, 2 s segments (plus a few-ms tail that is never sent)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12.0, width=320, height=240, segment_s=2.0))
    return path


@pytest.fixture(scope="module")
def ref(src: Path) -> Analysis:
    return analyze(src)


def worker(url: str, src: Path, out: Path, **kw: Any) -> WorkerRunner:
    settings = WorkerSettings(
        stream_id="hostile",
        input_url=str(src),
        output_url=str(out),
        sts_url=url,
        metrics_port=0,
        paced=False,
        segment_s=2.0,
        fragment_timeout_s=1.0,
        end_timeout_s=1.0,
        **kw,
    )
    return WorkerRunner(settings)


async def run_against(
    behaviour: h.FragmentBehaviour, src: Path, tmp_path: Path, **kw: Any
) -> tuple[WorkerRunner, h.HostileSts, dict[str, float]]:
    init = kw.pop("on_init", None)
    async with h.run_hostile(behaviour, **({"on_init": init} if init else {})) as sts:
        runner = worker(sts.url, src, tmp_path / "out.mp4", **kw)
        code = await runner.run()
        assert sts.errors == []
    assert code == 0
    return runner, sts, h.check_accounting(runner)


def reason(runner: WorkerRunner, name: str) -> float:
    return h.metric(runner, "worker_fallback_total", reason=name)


def rejected(runner: WorkerRunner, name: str) -> float:
    return h.metric(runner, "worker_rejected_results_total", reason=name)


async def test_baseline_echo_dubs_everything(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, sts, n = await run_against(h.echo, src, tmp_path)
    assert n["dubbed"] == n["sent"] == SEGMENTS
    assert len(sts.received.acks) == SEGMENTS and len(sts.received.ends) == 1
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_never_answers_stream_init(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, sts, n = await run_against(
        h.echo, src, tmp_path, on_init=h.never_ready, ready_timeout_s=0.5, reconnect_base_s=0.2
    )
    assert len(sts.received.inits) >= 1 and sts.received.fragments == []
    assert n["sent"] == 0 and n["original"] == SEGMENTS + 1
    assert reason(runner, "disconnect") == SEGMENTS
    assert runner.health()["sts"] in ("reconnecting", "connecting")
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_answers_only_every_other_fragment(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, _, n = await run_against(h.answer_every(2), src, tmp_path)
    assert n["dubbed"] == SEGMENTS / 2
    assert reason(runner, "timeout") == SEGMENTS / 2
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_answers_out_of_order(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, _, n = await run_against(h.reverse_pairs, src, tmp_path)
    assert n["dubbed"] == SEGMENTS, "results are matched by fragment_id, not by arrival"
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_every_result_sent_twice(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, sts, n = await run_against(h.twice, src, tmp_path)
    assert n["dubbed"] == SEGMENTS
    assert h.metric(runner, "worker_late_results_total") == SEGMENTS, "each duplicate counted"
    applied = [a for a in sts.received.acks if a["status"] == "applied"]
    assert len(applied) == SEGMENTS, "a duplicate is never applied a second time"
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_results_for_unknown_fragment_ids(src: Path, ref: Analysis, tmp_path: Path) -> None:
    runner, _, n = await run_against(h.unknown_ids_then_echo, src, tmp_path)
    assert n["dubbed"] == SEGMENTS
    assert rejected(runner, "unknown_fragment") == SEGMENTS
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_results_for_the_wrong_stream_are_not_used(src: Path, ref: Analysis, tmp_path: Path) -> None:
    # The wrong-stream copy carries silence: had it been used, the segment tones would be gone.
    runner, _, n = await run_against(h.wrong_stream_then_echo, src, tmp_path)
    assert n["dubbed"] == SEGMENTS
    assert rejected(runner, "invalid_message") == SEGMENTS
    h.check_complete(tmp_path / "out.mp4", ref)


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (h.invalid_base64, "invalid_message"),  # not base64: the message fails validation
        (h.undecodable_audio, "invalid_audio"),  # base64 of bytes that are no audio
        (h.stretched(1.2), "duration_mismatch"),
        (h.stretched(0.8), "duration_mismatch"),
        (h.schema_invalid, "invalid_message"),
    ],
    ids=["invalid-base64", "undecodable", "20pct-long", "20pct-short", "schema-invalid"],
)
async def test_unusable_answers_fall_back_with_their_reason(
    behaviour: h.FragmentBehaviour, why: str, src: Path, ref: Analysis, tmp_path: Path
) -> None:
    runner, _, n = await run_against(behaviour, src, tmp_path)
    assert n["sent"] == n["fallback"] == SEGMENTS
    assert reason(runner, why) == SEGMENTS
    assert rejected(runner, why) >= SEGMENTS
    # Non-retryable answers never open the breaker: every fragment was still sent.
    assert h.metric(runner, "worker_sts_breaker_state") == 0
    h.check_complete(tmp_path / "out.mp4", ref)


@pytest.mark.parametrize(
    "behaviour",
    [h.resampled(24000, 1), h.resampled(44100, 1, "m4a"), h.resampled(16000, 2, "flac"), h.stretched(1.05)],
    ids=["24k-mono-wav", "44k1-mono-m4a", "16k-stereo-flac", "5pct-long"],
)
async def test_other_rate_channels_or_small_length_error_is_fitted_and_used(
    behaviour: h.FragmentBehaviour, src: Path, ref: Analysis, tmp_path: Path
) -> None:
    runner, _, n = await run_against(behaviour, src, tmp_path)
    assert n["dubbed"] == SEGMENTS, "resampled / trimmed to the exact sample count and used"
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_fifty_megabyte_answer_drops_the_connection_not_the_worker(
    src: Path, ref: Analysis, tmp_path: Path
) -> None:
    runner, sts, n = await run_against(h.huge(50), src, tmp_path, reconnect_base_s=0.1)
    # 50 MB > the 32 MiB message limit: the client closes the connection, the fragment in flight
    # falls back, the worker reconnects (and the next answer drops it again).
    assert reason(runner, "disconnect") >= 1
    assert n["fallback"] >= 1 and n["dubbed"] == 0
    assert sts.received.connects >= 2
    h.check_complete(tmp_path / "out.mp4", ref)


async def test_flac_bomb_is_rejected_without_decoding_it(src: Path, ref: Analysis, tmp_path: Path) -> None:
    bomb = h.flac_silence(60, 48000, 2)  # one hour of silence in ~0.6 MB
    assert len(bomb) < 2_000_000
    with h.RssSampler() as rss:
        runner, _, n = await run_against(h.flac_bomb(bomb, 48000, 2), src, tmp_path)
    assert reason(runner, "duration_mismatch") == SEGMENTS
    # Decoding one answer whole would be 691 MB of PCM.
    assert rss.growth_mb < 150, f"RSS grew {rss.growth_mb:.0f} MB"
    h.check_complete(tmp_path / "out.mp4", ref)


@pytest.mark.parametrize(
    ("behaviour", "garbage_per_fragment"),
    [(h.non_json, len(h.NON_JSON_PACKETS) + 5), (h.garbage_events_then_echo, 6)],
    ids=["non-json", "garbage-events"],
)
async def test_garbage_is_counted_and_the_real_answer_still_used(
    behaviour: h.FragmentBehaviour,
    garbage_per_fragment: int,
    src: Path,
    ref: Analysis,
    tmp_path: Path,
) -> None:
    runner, _, n = await run_against(behaviour, src, tmp_path)
    assert n["dubbed"] == SEGMENTS
    assert rejected(runner, "invalid_message") >= SEGMENTS * garbage_per_fragment
    h.check_complete(tmp_path / "out.mp4", ref)
