"""Unit: bench/cold_libs.py finds the shared objects to evict and advises on each (no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.cold_libs import evict, linked_libraries, shared_objects


def test_it_finds_versioned_and_plain_shared_objects_only(tmp_path: Path) -> None:
    for name in ("a.so", "libx.so.1", "liby.so.1.2.3", "b.py", "c.so.txt", "sub/d.cpython-311-x86_64-linux-gnu.so"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0" * 4096)
    found = sorted(p.relative_to(tmp_path).as_posix() for p in shared_objects(tmp_path))
    assert found == ["a.so", "libx.so.1", "liby.so.1.2.3", "sub/d.cpython-311-x86_64-linux-gnu.so"]
    assert evict([*shared_objects(tmp_path), tmp_path / "missing.so"]) == (4, 4 * 4096)


def test_ffmpeg_libraries_are_found_through_ldd() -> None:
    libs = linked_libraries("ffmpeg")
    assert libs and libs[0].name == "ffmpeg"
    assert any(p.name.startswith("libavcodec") for p in libs)


def test_it_runs_without_site_packages(tmp_path: Path) -> None:
    (tmp_path / "m.so").write_bytes(b"\0" * 8192)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-S", "-m", "bench.cold_libs", str(tmp_path)], cwd=root,
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    assert out.startswith("cold libraries: page cache of ") and "shared objects" in out
