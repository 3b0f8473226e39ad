"""Integration: `python -m bench.wire` runs the worker's side of the wire against a real echo STS
subprocess (loopback) and reports CPU per fragment for each format; the echo's answer must be the
sent audio byte for byte (the bench raises otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_wire_measures_each_format(tmp_path: Path) -> None:
    out = tmp_path / "wire.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.wire", "--fragments", "3", "--formats", "wav,flac", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["format"] for r in rows] == ["wav", "flac"]
    assert rows[0]["fragment_bytes"] > rows[1]["fragment_bytes"] > 0
    assert all(r["fragments"] == 3 and r["round_trip_ms"] > 0 for r in rows)
    assert "worker side ms" in proc.stdout
