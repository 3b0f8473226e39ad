"""Unit: the dub group of `make bench` — its report section and verdicts, the phase selection and
the port range (pure functions; no processes started)."""

from __future__ import annotations

import argparse

import pytest
from bench.phase import PortRange, free_port
from bench.report import dub_section, dub_verdicts, render
from bench.run import _phases, _port_range, dub_worker_args


def _results(p95: float, fallbacks: dict[str, int], keeps_up: bool) -> dict[str, object]:
    group = {
        "label": "dub", "kind": "worker", "n": 2, "segment_s": 6.0, "delay_s": 8.5,
        "cpu_ms_per_stream_s": 205.4, "sts_ms_per_stream_s": 122.6,
        "sts_processing_ms": {"n": 9, "p50": 936.0, "p95": p95, "max": p95 + 20},
        "turnaround_ms": {"n": 9, "p50": 1233.0, "p95": 1806.0, "max": 1871.0},
        "sts_status": {"success": 9, "partial": 0, "failed": 0},
        "sts_drain": {"processing_ms": {"n": 2, "max": 2011.0}, "status": {"success": 0, "partial": 0, "failed": 2}},
        "segments": {"dubbed": 7, "original": sum(fallbacks.values()), "fallback_reasons": fallbacks},
        "sync": {"markers": 6, "max_abs_offset_ms": 24.0},
        "keeps_up": keeps_up, "why_not": [] if keeps_up else ["fallbacks timeout=1"],
    }  # fmt: skip
    return {
        "partial": ["dub"],
        "config": {"dub_duration_s": 30.0, "dub_added_s": 2.5},
        "phases": [{"name": "dub", "groups_result": [group], "loadavg_start": [1.02, 0.5, 0.2], "loadavg_end": [2.55, 1.0, 0.4]}],
    }


def test_dub_section_and_verdicts() -> None:
    res = _results(1553.0, {}, True)
    table = "\n".join(dub_section(res))
    assert "### Dub group" in table
    assert "| 2 | 936 / 1553 / 1573 (9 fragments) | 1233 / 1806 | 0.205 / 0.123 | 0 / 2 | 2011 | 7 / 7 | 0 |" in table
    assert "1.02 → 2.55" in table
    met = dub_verdicts(res)
    assert len(met) == 2 and all("**met**" in v for v in met)
    missed = dub_verdicts(_results(2400.0, {"timeout": 1}, False))
    assert "**missed**" in missed[0] and "1 timeout fallbacks" in missed[0]
    assert "**missed**" in missed[1] and "fallbacks timeout=1" in missed[1]
    # a partial (dub only) run says nothing about the echo series targets
    doc = render(res)
    assert "concurrent 720p30 streams keep up" not in doc and "Dub, 2 streams" in doc
    assert dub_section({"phases": []}) == [] and dub_verdicts({"phases": []}) == []


def test_phase_and_port_range_flags() -> None:
    assert _phases("dub,series") == ["dub", "series"]
    with pytest.raises(argparse.ArgumentTypeError):
        _phases("dub,nope")
    assert _port_range("41000-41999") == (41000, 41999)
    for bad in ("41000", "2-1", "41999-41000"):
        with pytest.raises(argparse.ArgumentTypeError):
            _port_range(bad)
    assert dub_worker_args(2.5)[:2] == ("--fragment-timeout-s", "2.5")


def test_free_port_stays_in_the_range() -> None:
    saved = (PortRange.low, PortRange.high, PortRange._next)
    try:
        PortRange.set(41900, 41909)
        ports = [free_port() for _ in range(12)]
        assert all(41900 <= p <= 41909 for p in ports)
        assert len(set(ports[:5])) == 5  # round robin: not the same port twice in a row
    finally:
        PortRange.low, PortRange.high, PortRange._next = saved
