"""Unit: `make bench`'s measurement window covers whole periods of the looped fixture, so that a
worker (which encodes what it read D seconds earlier) and a relay (which encodes what it reads
now) are measured on the same programme (pure function), and the floor worker of
`python -m bench.minimal` is made of the required parts only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench.phase import Group, Settings, window_s


def _cfg(duration_s: float, window_segments: int = 4) -> Settings:
    return Settings(fixture=Path("fx.mp4"), duration_s=duration_s, workdir=Path("w"), window_segments=window_segments)


@pytest.mark.parametrize(
    ("segment_s", "window_segments", "period_s", "expected_s"),
    [
        (6.0, 4, 24.0, 24.0),  # the default: one period
        (6.0, 8, 24.0, 48.0),
        (1.0, 24, 24.0, 24.0),  # make bench-lowlat
        (1.0, 4, 24.0, 24.0),  # never less than one period
        (6.0, 4, 36.0, 36.0),  # the dub phase's spoken programme
        (6.0, 7, 36.0, 72.0),
    ],
)
def test_window_is_the_fewest_whole_periods_covering_the_segments(
    segment_s: float, window_segments: int, period_s: float, expected_s: float
) -> None:
    groups = [Group("w", "worker", 2, segment_s=segment_s), Group("baseline", "baseline", 2)]
    assert window_s(groups, _cfg(period_s, window_segments)) == expected_s


def test_the_floor_worker_is_built_from_the_required_parts_only() -> None:
    """`bench.floor_worker` is a floor for the worker's memory: it must not load livedub (or
    pydantic, which livedub brings), nor numpy (a worker needs none) — only PyAV, python-socketio,
    aiohttp, prometheus_client."""
    code = (
        "import sys, bench.floor_worker\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('livedub', 'pydantic', 'pydantic_settings', 'numpy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
