"""Unit: `make bench-quick`'s table — each transports group against the relay of the same phase,
with the issue-16 targets (pure functions; no processes started)."""

from __future__ import annotations

from typing import Any

from bench.report import quick_rows, quick_table
from bench.run import completed


def _g(label: str, kind: str, cpu: float, rss: float, keeps_up: bool = True) -> dict[str, Any]:
    return {"label": label, "kind": kind, "n": 2, "cpu_ms_per_stream_s": cpu, "rss_mb_per_stream": rss, "keeps_up": keeps_up}


def _results(groups: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    return {"partial": ["transports"], "phases": [{"name": "transports", "groups_result": groups, "error": error}]}


RESULTS = _results([
    _g("m4a", "worker", 44.0, 100.0),  # 2.20× CPU: missed (≤ 2.0×); RSS 2.0×: missed
    _g("flac", "worker", 26.0, 75.0),  # 1.30× exactly: met; RSS 1.5× exactly: met
    _g("wav", "worker", 30.0, 60.0, keeps_up=False),  # 1.50×: missed
    _g("passthrough", "passthrough", 24.0, 70.0),  # 1.20×: met
    _g("baseline", "baseline", 20.0, 50.0),
])  # fmt: skip


def test_rows_ratios_targets_and_verdicts() -> None:
    rows = {r["label"]: r for r in quick_rows(RESULTS)}
    assert list(rows) == ["m4a", "flac", "wav", "passthrough", "relay"]
    m4a, flac, wav, pt, relay = (rows[k] for k in ("m4a", "flac", "wav", "passthrough", "relay"))
    assert m4a["cpu_ratio"] == 2.2 and m4a["cpu_target"] == 2.0 and m4a["cpu_met"] is False
    assert m4a["rss_ratio"] == 2.0 and m4a["rss_target"] == 1.5 and m4a["rss_met"] is False
    assert flac["cpu_ratio"] == 1.3 and flac["cpu_met"] is True and flac["rss_met"] is True
    assert wav["cpu_target"] == 1.3 and wav["cpu_met"] is False and wav["keeps_up"] is False
    assert pt["cpu_target"] == 1.2 and pt["cpu_met"] is True
    assert relay["cpu_ratio"] == 1.0 and relay["cpu_target"] is None and relay["cpu_met"] is None
    assert relay["rss_met"] is None


def test_table_prints_ratios_targets_and_misses() -> None:
    text = quick_table(RESULTS)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["group", "CPU", "ms/s"]
    m4a = next(line for line in lines if line.startswith("m4a"))
    assert "44.0" in m4a and "2.20" in m4a and "≤ 2×" in m4a and "MISSED" in m4a
    relay = next(line for line in lines if line.startswith("relay"))
    assert "1.00" in relay and "MISSED" not in relay and "met" not in relay
    wav = next(line for line in lines if line.startswith("wav"))
    assert wav.rstrip().endswith("NO")
    assert lines[-1] == "targets missed: 4 (not keeping up: wav)"  # m4a CPU, m4a RSS, wav CPU, wav behind


def test_a_group_behind_is_a_miss_even_with_every_ratio_met() -> None:
    groups = [
        _g("m4a", "worker", 22.0, 60.0, keeps_up=False),
        _g("flac", "worker", 22.0, 60.0),
        _g("baseline", "baseline", 20.0, 50.0),
    ]
    assert quick_table(_results(groups)).splitlines()[-1] == "targets missed: 1 (not keeping up: m4a)"
    groups[0]["keeps_up"] = True
    assert quick_table(_results(groups)).splitlines()[-1] == "all targets met"


def test_no_relay_no_verdict_and_failed_phase() -> None:
    rows = quick_rows(_results([_g("flac", "worker", 26.0, 75.0)]))
    assert rows[0]["cpu_ratio"] is None and rows[0]["cpu_met"] is None
    failed = _results([], error="TimeoutError: timed out waiting for every publisher")
    assert quick_rows(failed) == []
    assert "TimeoutError" in quick_table(failed)
    assert quick_table({"phases": []}) == "transports phase: no results (not run)"


def test_completed_exit_status() -> None:
    assert completed(RESULTS, ["transports"])
    assert not completed(_results([], error="boom"), ["transports"])
    assert not completed({"phases": []}, ["transports"])  # skipped for the budget
    assert completed({"phases": []}, None)  # a full run always reports
