"""WorkerRunner against the real echo STS (in-process) with file input and output (unpaced, so each
test takes seconds): the full run, and one test per resilience rule driven by the echo's controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, ensure_fixture, make_fixture
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.worker.config import WorkerSettings
from livedub.worker.runner import WorkerRunner
from tests.e2e.config import FIXTURE_PATH as E2E_FIXTURE


@pytest.fixture(scope="session")
def fixture_60s() -> Path:
    """The E2E suite's 60 s fixture, generated once however many xdist workers ask (see
    `ensure_fixture`: file lock, verified stamp, atomic rename)."""
    ensure_fixture(E2E_FIXTURE, FixtureSpec(duration_s=60.0))
    return E2E_FIXTURE


@pytest.fixture(scope="session")
def fixture_12s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fx") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12.0))
    return path


@pytest.fixture
async def sts() -> AsyncIterator:  # type: ignore[type-arg]
    async with run_sts(StsSettings(port=0, close_delay_s=0.2)) as server:
        yield server


def _worker(sts, src: Path, out: Path, stream_id: str, **kw: object) -> WorkerRunner:  # type: ignore[no-untyped-def]
    settings = WorkerSettings(
        stream_id=stream_id, input_url=str(src), output_url=str(out), sts_url=sts.url,
        metrics_port=0, paced=False, **kw,  # type: ignore[arg-type]
    )
    return WorkerRunner(settings)


def _metric(runner: WorkerRunner, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(runner.metrics.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_sixty_second_fixture_is_dubbed_completely_and_in_sync(sts, fixture_60s: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.mp4"
    runner = _worker(sts, fixture_60s, out, "it-full")
    assert await runner.run() == 0
    assert _metric(runner, "worker_audio_fragments_total", status="processed") == 10
    assert _metric(runner, "worker_audio_fragments_total", status="sent") == 10
    assert _metric(runner, "worker_fallback_total") == 0
    assert _metric(runner, "worker_segments_total", source="dubbed") == 10
    echo = sts.core.debug_stream("it-full") if hasattr(sts.core, "debug_stream") else None
    if echo is not None:
        assert len(echo["processed_sent"]) == 10
    a = analyze(str(out))
    assert a.codecs == ("h264", "aac")
    assert abs(a.duration_s - 60.0) <= 0.034, a.duration_s
    assert len(a.markers) >= 5
    assert a.max_abs_offset_ms <= 33.0
    assert a.tone_order == list(range(10))


async def test_breaker_opens_after_five_retryable_failures(sts, fixture_60s: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await sts.core.control("config:error_simulation", {"stream_id": "it-cb", "enabled": True, "rules": [
        {"trigger": "count", "value": 5, "error_code": "MODEL_ERROR", "error_message": "x", "retryable": True}]})
    runner = _worker(sts, fixture_60s, tmp_path / "out.mp4", "it-cb", max_inflight=1)
    assert await runner.run() == 0
    assert _metric(runner, "worker_fallback_total", reason="sts_error") == 5
    assert _metric(runner, "worker_fallback_total", reason="circuit_open") == 5
    assert _metric(runner, "worker_audio_fragments_total", status="sent") == 5
    assert _metric(runner, "worker_sts_breaker_state") == 2


async def test_non_retryable_errors_never_open_the_breaker(sts, fixture_60s: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await sts.core.control("config:error_simulation", {"stream_id": "it-nr", "enabled": True, "rules": [
        {"trigger": "count", "value": 7, "error_code": "INVALID_CONFIG", "error_message": "x", "retryable": False}]})
    runner = _worker(sts, fixture_60s, tmp_path / "out.mp4", "it-nr", max_inflight=1)
    assert await runner.run() == 0
    assert _metric(runner, "worker_fallback_total", reason="sts_error") == 7
    assert _metric(runner, "worker_audio_fragments_total", status="processed") == 3
    assert _metric(runner, "worker_sts_breaker_state") == 0


async def test_fragment_timeout_falls_back_and_frees_the_slot(sts, fixture_12s: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await sts.core.control("config:latency", {"stream_id": "it-to", "delay_ms": 3000})
    runner = _worker(sts, fixture_12s, tmp_path / "out.mp4", "it-to", max_inflight=1, fragment_timeout_s=1.0)
    assert await runner.run() == 0
    assert _metric(runner, "worker_fallback_total", reason="timeout") == 2
    assert _metric(runner, "worker_audio_fragments_total", status="sent") == 2, "slot freed for the second"
    assert _metric(runner, "worker_inflight_fragments") == 0


async def test_disconnect_falls_back_in_flight_and_reconnects(sts, fixture_60s: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await sts.core.control("config:latency", {"stream_id": "it-dc", "delay_ms": 1500})
    # Armed on an observed condition: the drop fires when the STS holds two unanswered fragments
    # of this stream (whatever the machine's load), so at least two are in flight at the drop.
    await sts.core.control("simulate:disconnect", {"stream_id": "it-dc", "min_inflight": 2})
    runner = _worker(sts, fixture_60s, tmp_path / "out.mp4", "it-dc", reconnect_base_s=0.2)
    assert await runner.run() == 0
    assert _metric(runner, "worker_reconnection_total") == 1
    assert _metric(runner, "worker_fallback_total", reason="disconnect") >= 2
    sent = _metric(runner, "worker_audio_fragments_total", status="sent")
    done = _metric(runner, "worker_audio_fragments_total", status="processed") + _metric(
        runner, "worker_audio_fragments_total", status="fallback")
    assert sent == done, "every sent fragment resolved exactly once"
    a = analyze(str(tmp_path / "out.mp4"))
    assert abs(a.duration_s - 60.0) <= 0.034


async def test_sts_unreachable_exits_with_its_code(fixture_12s: Path, tmp_path: Path) -> None:
    settings = WorkerSettings(
        stream_id="it-down", input_url=str(fixture_12s), output_url=str(tmp_path / "o.mp4"),
        sts_url="http://127.0.0.1:9", metrics_port=0, paced=False,
        reconnect_base_s=0.05, reconnect_max_attempts=2, fragment_timeout_s=1.0,
    )
    runner = WorkerRunner(settings)
    code = await runner.run()
    # Either the input finished first (0, all original audio) or the STS budget ran out (13).
    assert code in (0, 13)
    assert _metric(runner, "worker_audio_fragments_total", status="sent") == 0
    assert _metric(runner, "worker_segments_total", source="original") >= 1 or code == 13


async def test_metrics_port_in_use_is_a_clear_usage_error(fixture_12s: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = WorkerSettings(
            stream_id="it-port", input_url=str(fixture_12s), output_url=str(tmp_path / "o.mp4"),
            sts_url="http://127.0.0.1:9", metrics_port=taken.getsockname()[1], paced=False,
        )  # fmt: skip
        code = await WorkerRunner(settings).run()
    assert code == 2  # ExitCode.USAGE, logged as "cannot serve metrics", not a traceback
    assert not (tmp_path / "o.mp4").exists()  # nothing was started
