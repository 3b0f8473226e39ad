"""The mirror output (issue 18: a stream's first language publishes `live/<id>/out` and mirrors it
to `live/<id>/<lang>`), real PyAV: the mirror gets exactly the output's packets, and a mirror
that cannot be reached never touches the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.exitcodes import ExitCode
from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.output import MirrorState
from livedub.media.pipeline import run_passthrough
from livedub.sts.testing import free_port
from tests.integration.test_media_passthrough import Recorder, assert_clean_copy, settings


class MirrorRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.mirror: list[tuple[str, str | None]] = []

    def on_mirror_state(self, state: str, detail: str | None) -> None:
        self.mirror.append((state, detail))


@pytest.fixture(scope="module")
def fx12(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Analysis]:
    path = tmp_path_factory.mktemp("mirror") / "fx12.mp4"
    make_fixture(path, FixtureSpec(duration_s=12, width=320, height=240, segment_s=2.0))
    return path, analyze(path)


async def test_mirror_gets_exactly_the_outputs_packets(fx12: tuple[Path, Analysis], tmp_path: Path) -> None:
    src, ref = fx12
    out, mirror = tmp_path / "out.mp4", tmp_path / "mirror.mp4"
    rec = MirrorRecorder()
    code = await run_passthrough(settings(src, out, paced=False, mirror_output_url=str(mirror)), rec)
    assert code == ExitCode.OK
    assert_clean_copy(ref, analyze(out))
    assert_clean_copy(ref, analyze(mirror))
    assert [s for s, _ in rec.mirror] == [MirrorState.WRITING, MirrorState.FINISHED]


async def test_an_unreachable_mirror_never_touches_the_output(fx12: tuple[Path, Analysis], tmp_path: Path) -> None:
    src, ref = fx12
    out = tmp_path / "out.mp4"
    rec = MirrorRecorder()
    nobody = f"rtmp://127.0.0.1:{free_port()}/live/x/es"  # nothing listens there
    code = await run_passthrough(settings(src, out, paced=False, mirror_output_url=nobody), rec)
    assert code == ExitCode.OK
    assert_clean_copy(ref, analyze(out))
    states = [s for s, _ in rec.mirror]
    assert states[0] == MirrorState.FAILED and MirrorState.WRITING not in states, rec.mirror
    assert "cannot reach output" in (rec.mirror[0][1] or "")
