"""`tune_malloc` (issue 16: worker RSS): glibc parameters set once, a glibc env var that is set wins."""

from __future__ import annotations

import ctypes
import platform

import pytest

from livedub.worker.config import WorkerSettings
from livedub.worker.memory import TUNING, tune_malloc

GLIBC = platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallopt")


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_sets_every_parameter_when_no_env_var_is_set() -> None:
    assert tune_malloc(env={}) == [name for _, _, name in TUNING]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_env_var_set_wins() -> None:
    names = tune_malloc(env={"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert names == ["MALLOC_TRIM_THRESHOLD_"]


def test_setting_defaults_on_and_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().malloc_tuning is True
    monkeypatch.setenv("WORKER_MALLOC_TUNING", "false")
    assert WorkerSettings.load().malloc_tuning is False


def test_the_worker_command_runs_with_its_interpreter_flags() -> None:
    """`-OO` strips docstrings: nothing a worker runs may need one (its help text included)."""
    import subprocess

    from livedub.worker.memory import PYTHON_FLAGS, worker_python_argv

    assert worker_python_argv()[1 : 1 + len(PYTHON_FLAGS)] == list(PYTHON_FLAGS)
    out = subprocess.run([*worker_python_argv(), "worker", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--stream-id" in out.stdout and "--sts-url" in out.stdout
