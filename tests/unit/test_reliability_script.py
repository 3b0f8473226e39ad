"""`tests/reliability.py` reads a whole `make test` log (two pytest sessions) without losing a
failure: every FAILED/ERROR line of the `-ra` summaries and the summed counts."""

from __future__ import annotations

from tests.reliability import Run, parse_log

LOG = """\
installing nothing
============ short test summary info ============
FAILED tests/integration/test_worker.py::test_disconnect - assert 0.0 >= 1
ERROR tests/integration/test_worker.py::test_sixty - FileNotFoundError: [Errno 2]
========= 1 failed, 676 passed, 1 error in 274.12s (0:04:34) =========
.venv/bin/pytest -p no:cacheprovider -ra -n 4 tests/e2e
============ short test summary info ============
FAILED tests/e2e/test_av_sync.py::test_av_sync_within_threshold - TimeoutError: never
============ 1 failed, 16 passed, 2 skipped in 241.90s (0:04:01) ============
"""


def test_counts_are_summed_over_both_sessions_and_every_failure_is_listed() -> None:
    counts, failures = parse_log(LOG)
    assert counts == {"failed": 2, "passed": 692, "errors": 1, "skipped": 2}
    assert failures == [
        "FAILED tests/integration/test_worker.py::test_disconnect — assert 0.0 >= 1",
        "ERROR tests/integration/test_worker.py::test_sixty — FileNotFoundError: [Errno 2]",
        "FAILED tests/e2e/test_av_sync.py::test_av_sync_within_threshold — TimeoutError: never",
    ]


def test_a_run_passes_only_with_exit_0_no_failure_and_tests_that_ran() -> None:
    run = Run(1, False, "abc", "now", rc=0, counts={"passed": 3})
    assert run.passed
    assert not Run(1, False, "abc", "now", rc=0, counts={}).passed, "nothing ran"
    assert not Run(1, False, "abc", "now", rc=2, counts={"passed": 3}).passed
    assert not Run(1, False, "abc", "now", rc=0, counts={"passed": 3}, failures=["FAILED x"]).passed
