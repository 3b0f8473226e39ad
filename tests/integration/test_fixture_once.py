"""Generated fixtures are made once, atomically, and never reused when corrupt — also when several
processes (pytest-xdist workers, two runs) ask for the same file at the same instant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from livedub.media.fixture import FixtureSpec, ensure_fixture, verify_fixture

SPEC = FixtureSpec(duration_s=4.0, width=160, height=120, segment_s=2.0)
_CHILD = """
import sys
from pathlib import Path
from livedub.media.fixture import FixtureSpec, ensure_fixture
sys.stdin.readline()  # start line: both children are running before either generates
made = ensure_fixture(Path(sys.argv[1]), FixtureSpec(duration_s=4.0, width=160, height=120, segment_s=2.0))
print("generated" if made else "reused")
"""


def test_two_processes_asking_at_once_get_one_valid_file(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "fx.mp4"
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(target)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = []
    for child in children:  # release both, then collect
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["generated", "reused"], outputs
    verify_fixture(target, SPEC)
    assert sorted(p.name for p in target.parent.iterdir()) == ["fx.mp4", "fx.mp4.json", "fx.mp4.lock"]
    assert ensure_fixture(target, SPEC) is False, "a verified file is reused"


def test_a_truncated_or_foreign_file_is_regenerated_never_reused(tmp_path: Path) -> None:
    target = tmp_path / "fx.mp4"
    assert ensure_fixture(target, SPEC) is True
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2])  # a run killed mid-write, or two writers
    assert ensure_fixture(target, SPEC) is True
    assert target.read_bytes() == good, "deterministic: the same bytes again"
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # same size, one byte corrupt
    assert ensure_fixture(target, SPEC) is True
    other = FixtureSpec(duration_s=2.0, width=160, height=120, segment_s=2.0)
    assert ensure_fixture(target, other) is True, "another spec is another file"
    verify_fixture(target, other)
    (tmp_path / "fx.mp4.json").unlink()  # no stamp: not trusted
    assert ensure_fixture(target, other) is True


def test_verify_names_what_is_wrong(tmp_path: Path) -> None:
    target = tmp_path / "fx.mp4"
    ensure_fixture(target, SPEC)
    longer = FixtureSpec(duration_s=6.0, width=160, height=120, segment_s=2.0)
    try:
        verify_fixture(target, longer)
    except RuntimeError as exc:
        assert "video frames" in str(exc)
    else:  # pragma: no cover - the check must refuse
        raise AssertionError("a 4 s file passed as a 6 s fixture")
