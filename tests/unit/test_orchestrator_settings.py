"""Orchestrator settings: defaults, env, flags, and the worker command line it composes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from livedub.cli import build_parser
from livedub.exitcodes import ExitCode
from livedub.orchestrator.serve_cli import ENV_ONLY_FIELDS
from livedub.orchestrator.settings import OrchestratorSettings, env_name
from livedub.typed import ValidationError, fields_of
from livedub.worker.memory import PYTHON_FLAGS

# What the orchestrator passes to `livedub worker` (checked against the real parser when the
# worker's subcommand is registered; this list is what the worker must accept otherwise).
WORKER_FLAGS = ("--stream-id", "--metrics-port")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ORCH_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_documented_ones() -> None:
    s = OrchestratorSettings()
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.hook_secret is None
    assert s.max_body_bytes == 65536
    assert s.input_base == "rtsp://127.0.0.1:8554"
    assert s.output_base == "rtmp://127.0.0.1:1935"
    assert s.sts_url == "http://127.0.0.1:8080"
    assert s.grace_s == 30.0
    assert (s.backoff_initial_s, s.backoff_multiplier, s.backoff_max_s) == (1.0, 2.0, 30.0)
    assert s.stable_run_s == 60.0 and s.stop_timeout_s == 30.0
    assert s.final_exit_codes() == {ExitCode.USAGE, ExitCode.STS_AUTH_FAILED}
    assert s.worker_base_argv() == [sys.executable, *PYTHON_FLAGS, "-m", "livedub", "worker"]
    assert s.log_dir is None


def test_env_vars_set_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PORT", "8100")
    monkeypatch.setenv("ORCH_GRACE_S", "2.5")
    monkeypatch.setenv("ORCH_HOOK_SECRET", "s3cret")
    monkeypatch.setenv("ORCH_WORKER_ARGS", "--segment-s 2 --target-language 'pt BR'")
    monkeypatch.setenv("ORCH_LOG_DIR", "/tmp/x")
    s = OrchestratorSettings.load()
    assert s.port == 8100 and s.grace_s == 2.5
    assert s.hook_secret is not None and s.hook_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.log_dir == Path("/tmp/x")
    argv = s.worker_argv("abc", 9100)
    assert argv[-4:] == ["--segment-s", "2", "--target-language", "pt BR"]
    assert env_name("grace_s") == "ORCH_GRACE_S"


def test_flags_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from livedub.orchestrator.serve_cli import settings_from_args

    monkeypatch.setenv("ORCH_GRACE_S", "2.5")
    monkeypatch.setenv("ORCH_PORT", "8100")
    args = build_parser("serve").parse_args(["serve", "--grace-s", "7", "--no-worker-pdeathsig"])
    s = settings_from_args(OrchestratorSettings, args)
    assert s.grace_s == 7.0 and s.port == 8100 and s.worker_pdeathsig is False


def test_every_setting_has_a_flag_except_the_secret() -> None:
    parser = build_parser("serve")
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {opt for action in serve._actions for opt in action.option_strings}
    for field in (f.name for f in fields_of(OrchestratorSettings)):
        flag = "--" + field.replace("_", "-")
        assert (flag in flags) == (field not in ENV_ONLY_FIELDS), field


def test_worker_argv_is_composed_exactly() -> None:
    s = OrchestratorSettings(
        input_base="rtsp://mediamtx:8554/",
        output_base="rtmp://mediamtx:1935",
        sts_url="http://echo-sts:8080",
        worker_command="/usr/bin/env fake --a 'b c'",
    )
    assert s.worker_argv("Cam_1-x", 9123) == [
        "/usr/bin/env", "fake", "--a", "b c",
        "--stream-id", "Cam_1-x",
        "--metrics-port", "9123",
    ]  # fmt: skip
    assert s.worker_env("Cam_1-x") == {
        "WORKER_INPUT_URL": "rtsp://mediamtx:8554/live/Cam_1-x/in",
        "WORKER_OUTPUT_URL": "rtmp://mediamtx:1935/live/Cam_1-x/out",
        "WORKER_STS_URL": "http://echo-sts:8080",
    }


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, "a b", "a\n", "ü"])
def test_worker_argv_refuses_bad_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        OrchestratorSettings().worker_argv(bad, 9100)
    with pytest.raises(ValueError):
        OrchestratorSettings().worker_env(bad)


def test_composed_worker_command_is_accepted_by_the_worker_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = OrchestratorSettings(worker_args="--segment-s 2")
    argv = s.worker_argv("abc", 9123)
    assert argv[: len(PYTHON_FLAGS) + 4] == [sys.executable, *PYTHON_FLAGS, "-m", "livedub", "worker"]
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if "worker" in sub:
        from livedub.settings_cli import settings_from_args
        from livedub.worker.config import WorkerSettings

        for key, value in s.worker_env("abc").items():
            monkeypatch.setenv(key, value)
        args = parser.parse_args(argv[len(PYTHON_FLAGS) + 3 :])
        w = settings_from_args(WorkerSettings, args)
        assert w.stream_id == "abc"
        assert w.input_url == "rtsp://127.0.0.1:8554/live/abc/in"
        assert w.output_url == "rtmp://127.0.0.1:1935/live/abc/out"
        assert w.sts_url == "http://127.0.0.1:8080"
        assert w.metrics_port == 9123
    else:  # the worker's CLI is not registered yet: this is the contract it must meet
        flags = [a for a in argv[len(PYTHON_FLAGS) + 4 :] if a.startswith("--")]
        assert set(flags) - {"--segment-s"} == set(WORKER_FLAGS)


@pytest.mark.parametrize(
    "field,value",
    [
        ("port", 70000),
        ("input_base", "no-scheme"),
        ("worker_args", "--a 'unbalanced"),
        ("no_restart_exit_codes", "2,x"),
        ("no_restart_exit_codes", "300"),
        ("max_body_bytes", 10),
        ("grace_s", -1),
        ("backoff_max_s", 0.5),
        ("worker_metrics_port_max", 9000),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        OrchestratorSettings(**{field: value})
    with pytest.raises(ValidationError):  # and from the environment
        OrchestratorSettings.load(environ={env_name(field): str(value)})


def test_serve_with_a_bad_flag_value_exits_with_usage() -> None:
    parser = build_parser("serve")
    args = parser.parse_args(["serve", "--input-base", "nonsense"])
    assert args.func(args) == ExitCode.USAGE


def test_default_stop_timeout_outlasts_the_default_worker_drain() -> None:
    """SIGTERM → SIGKILL must leave a worker its whole default drain (D + fragment timeout)."""
    from livedub.worker.config import WorkerSettings

    assert OrchestratorSettings().stop_timeout_s > WorkerSettings().drain_s
