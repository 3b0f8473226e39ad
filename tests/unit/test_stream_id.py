"""One stream-id rule (`livedub.protocol.constants.ID_CHARS`), always matched whole (issue 17 #5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livedub.media.errors import InvalidStreamId
from livedub.media.settings import MediaSettings, validate_stream_id
from livedub.orchestrator.settings import is_valid_stream_id
from livedub.protocol import constants as c
from livedub.typed import ValidationError
from livedub.worker.config import WorkerSettings

SRC = Path(__file__).resolve().parents[2] / "src" / "livedub"
BAD_IDS = ["abc\n", "abc\r\n", "\nabc", "", "x" * 65, "a/b", "a b"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_every_stream_id_check_refuses_a_bad_id(bad: str) -> None:
    assert not c.is_valid_id(bad)
    assert not is_valid_stream_id(bad)
    with pytest.raises(InvalidStreamId):
        validate_stream_id(bad)
    with pytest.raises(ValidationError):
        MediaSettings(stream_id=bad)
    with pytest.raises(ValidationError):
        WorkerSettings(stream_id=bad)
    with pytest.raises(ValidationError):
        WorkerSettings(worker_id=bad)


def test_a_good_id_is_accepted_everywhere() -> None:
    good = "abc_DEF-123"
    assert c.is_valid_id(good) and is_valid_stream_id(good)
    assert validate_stream_id(good) == good
    assert MediaSettings(stream_id=good).stream_id == good
    assert WorkerSettings(stream_id=good, worker_id=good).stream_id == good


def test_the_id_pattern_is_defined_once() -> None:
    """Only livedub.protocol.constants spells the id's character class; the RTSP relay (which
    cannot import livedub) gets it from its parent on the command line."""
    spelled = re.compile(re.escape("[A-Za-z0-9_-]{1,64}"))
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "constants.py" and any(spelled.search(line) for line in _code_lines(p))
    ]
    assert offenders == []


def _code_lines(path: Path) -> list[str]:
    """Lines that are not documentation (comments and docstrings may quote the rule)."""
    return [
        line
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith(("#", '"""', "`")) and "`" not in line
    ]
