"""Unit: `make bench`'s capacity search (workers and relays), its report section and the relay's
keep-up judgement (pure functions; no processes started)."""

from __future__ import annotations

from typing import Any

from bench.phase import Group, _judge, output_tick_ms
from bench.report import capacity_section, render
from bench.run import Capacity, capacity_result


def _search(capacity_of_machine: int, series: list[int], max_n: int = 64, steps: int = 8) -> tuple[Capacity, list[int]]:
    """Run the series then the search against a machine that keeps up with exactly N streams."""
    cap, tried = Capacity(), []
    for n in series:
        cap.note(n, n <= capacity_of_machine)
        tried.append(n)
        if n > capacity_of_machine:
            break
    for _ in range(steps):
        n_next = cap.next_n(max_n)
        if n_next is None:
            break
        tried.append(n_next)
        cap.note(n_next, n_next <= capacity_of_machine)
    return cap, tried


def test_bisection_between_the_last_kept_and_the_first_failed() -> None:
    cap, tried = _search(26, [1, 2, 4, 8, 16, 32])
    assert tried[6:] == [24, 28, 26]
    assert (cap.last_ok, cap.first_fail) == (26, 28)  # gap 2 ≤ 26 // 8: narrow enough


def test_doubles_past_the_series_when_nothing_failed_then_bisects() -> None:
    cap, tried = _search(44, [1, 2, 4, 8, 16, 32])
    assert tried[6:] == [64, 48, 40, 44]
    assert (cap.last_ok, cap.first_fail) == (44, 48)  # gap 4 ≤ 44 // 8


def test_stops_at_max_n_and_when_nothing_kept_up() -> None:
    cap, tried = _search(500, [1, 2, 4, 8, 16, 32], max_n=48)
    assert tried[6:] == [48] and cap.next_n(48) is None and cap.first_fail is None
    none = Capacity()
    none.note(1, False)
    assert none.next_n(64) is None and none.last_ok is None


def test_disagreeing_runs_stop_the_search() -> None:
    cap = Capacity()
    cap.note(24, True)
    cap.note(20, False)  # noise: an N below one that kept up failed
    assert cap.next_n(64) is None


def test_result_and_report_state_both_kinds_and_their_ratio() -> None:
    workers, relays = Capacity(24, 28), Capacity(40, 48)
    res = capacity_result(workers, relays)
    assert res["ratio"] == 0.6 and res["workers"] == {"last_ok": 24, "first_fail": 28}
    text = "\n".join(capacity_section({"capacity": res, "config": {"transport": "flac"}}))
    assert "workers (flac transport + echo STS): 24 (fewest that did not: 28)" in text
    assert "relays (`ffmpeg -c:v copy -c:a aac`): 40 (fewest that did not: 48)" in text
    assert "workers ÷ relays: 0.60" in text
    assert capacity_result(Capacity(), relays)["ratio"] is None


def _gr(kind: str, e2e_p95: float | None) -> dict[str, Any]:
    return {
        "n": 2, "alive_at_end": 2, "kind": kind,
        "sync": {"markers": 8, "max_abs_offset_ms": 21.0, "without_markers": 0},
        "e2e_latency_ms": {"p50": 50.0, "p95": e2e_p95},
    }  # fmt: skip


def test_a_relay_that_falls_behind_does_not_keep_up() -> None:
    relay = Group("baseline", "baseline", 2)
    ok, late, unmeasured = _gr("baseline", 140.0), _gr("baseline", 900.0), _gr("baseline", None)
    for gr in (ok, late, unmeasured):
        _judge(gr, relay, 250.0)
    assert ok["keeps_up"] is True
    assert late["keeps_up"] is False and late["why_not"] == ["end-to-end latency p95 900 ms > 250 ms"]
    assert unmeasured["keeps_up"] is False and unmeasured["why_not"] == ["no end-to-end latency measured"]
    no_probe = _gr("baseline", None)
    _judge(no_probe, relay, None)  # --latency-streams 0: alive and in sync is all there is
    assert no_probe["keeps_up"] is True


def test_series_table_shows_relay_only_rows() -> None:
    relay = _gr("baseline", 120.0) | {"cpu_ms_per_stream_s": 20.0, "rss_mb_per_stream": 54.0, "keeps_up": False, "why_not": ["x"]}
    results = {
        "phases": [{"name": "series-48-baseline", "groups_result": [relay], "machine": {"busy_cores": 1.9, "other_cores": 0.0}}],
        "capacity": capacity_result(Capacity(24, 32), Capacity(40, 48)),
    }
    text = render(results)
    row = next(line for line in text.splitlines() if line.startswith("| 48 |"))
    assert "| – / 54 |" in row and row.endswith("| – | **no**: x |")
    assert "### Capacity" in text


def test_a_failed_workers_phase_is_shown_with_its_relays() -> None:
    relay = _gr("baseline", 662.0) | {"cpu_ms_per_stream_s": 22.0, "rss_mb_per_stream": 54.0, "keeps_up": False, "why_not": ["late"]}
    results = {
        "phases": [
            {"name": "series-32-workers", "groups_result": [], "error": "RuntimeError: outputs never went live: flac-27"},
            {"name": "series-32-baseline", "groups_result": [relay]},
        ]
    }
    row = next(line for line in render(results).splitlines() if line.startswith("| 32 |"))
    assert "workers' phase failed: RuntimeError: outputs never went live" in row and row.endswith("| **no**: late |")
    assert row.count("|") == 15  # 14 columns


def test_no_capacity_section_without_a_series() -> None:
    assert capacity_section({"capacity": capacity_result(Capacity(), Capacity())}) == []
    assert capacity_section({}) == []


def _worker_gr(delay_p95: float, window: dict[str, int], startup: dict[str, int]) -> dict[str, Any]:
    return _gr("worker", None) | {
        "segments": {
            "dubbed": 14, "original": sum(window.values()) + sum(startup.values()),
            "fallback_reasons": window, "startup_fallback_reasons": startup,
            "scraped": 2, "scraped_at_window": 2,
        },
        "delay_ms": {"p50": delay_p95, "p95": delay_p95},
    }  # fmt: skip


def test_a_worker_is_judged_over_the_window_and_its_start_up_is_only_reported(monkeypatch: Any) -> None:
    monkeypatch.delenv("WORKER_OUTPUT_TICK_S", raising=False)
    monkeypatch.delenv("WORKER_DEADLINE_MARGIN_S", raising=False)
    flac = Group("flac", "worker", 2, transport="flac", delay_s=7.0)
    started_slowly = _worker_gr(7000.0, {}, {"disconnect": 2})
    fell_back = _worker_gr(7000.0, {"deadline": 1}, {})
    for gr in (started_slowly, fell_back):
        _judge(gr, flac, 250.0)
    assert started_slowly["keeps_up"] is True
    assert fell_back["keeps_up"] is False and fell_back["why_not"] == ["fallbacks deadline=1"]


def test_a_worker_may_be_one_output_tick_early_but_not_late(monkeypatch: Any) -> None:
    monkeypatch.delenv("WORKER_OUTPUT_TICK_S", raising=False)
    monkeypatch.delenv("WORKER_DEADLINE_MARGIN_S", raising=False)
    flac = Group("flac", "worker", 2, transport="flac", delay_s=7.0)
    lowlat = Group("ll", "worker", 2, transport="flac", segment_s=1.0, delay_s=1.5,
                   extra_args=("--deadline-margin-s", "0.1"))
    assert output_tick_ms(flac) == 250.0 and output_tick_ms(lowlat) == 100.0
    verdicts = {}
    for name, g, p95 in (("early", flac, 6700.0), ("too_early", flac, 6600.0), ("late", flac, 7150.0),
                         ("ll_early", lowlat, 1320.0), ("ll_too_early", lowlat, 1250.0)):  # fmt: skip
        gr = _worker_gr(p95, {}, {})
        _judge(gr, g, 250.0)
        verdicts[name] = gr["keeps_up"]
    assert verdicts == {"early": True, "too_early": False, "late": False, "ll_early": True, "ll_too_early": False}
