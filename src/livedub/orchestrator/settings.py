"""Settings of `livedub serve` (the orchestrator): one typed object, from env `ORCH_*` and flags.

Every value has a documented default (docs/operations.md lists them all). Flags given on the
command line win over the environment, which wins over the defaults. This module only describes
and validates configuration and composes a worker's command line; it never starts anything, never
reads the network and never logs a secret.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedub.credentials import with_credentials
from livedub.exitcodes import ExitCode
from livedub.protocol.constants import is_valid_id

ENV_PREFIX = "ORCH_"
#: How the orchestrator gives a worker its URLs (WorkerSettings' env names; never argv).
WORKER_ENV_INPUT_URL = "WORKER_INPUT_URL"
WORKER_ENV_OUTPUT_URL = "WORKER_OUTPUT_URL"
WORKER_ENV_STS_URL = "WORKER_STS_URL"

_DEFAULT_NO_RESTART = f"{int(ExitCode.USAGE)},{int(ExitCode.STS_AUTH_FAILED)}"


def is_valid_stream_id(stream_id: str) -> bool:
    return is_valid_id(stream_id)


class OrchestratorSettings(BaseSettings):
    """Configuration of the orchestrator. Env var = `ORCH_` + field name in upper case."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, frozen=True
    )

    # --- HTTP API -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(8000, ge=0, le=65535, description="HTTP API port (0: any free port)")
    hook_secret: SecretStr | None = Field(
        None,
        description="shared secret the media-server hook must send in X-Hook-Secret "
        "(unset or empty: every hook is refused, unless insecure_open_hooks)",
    )
    insecure_open_hooks: bool = Field(
        False,
        description="with no hook_secret, accept hooks without authentication (tests and "
        "local experiments only; never on a shared network)",
    )
    max_body_bytes: int = Field(
        65536, ge=1024, le=16 * 1024 * 1024, description="largest hook request body accepted"
    )

    stream_pattern: str = Field(
        "",
        description="only manage stream ids that fully match this regex (empty: all); lets "
        "several orchestrators share one media server, each taking its own streams",
    )

    # --- reconcile with the media server -------------------------------------------------
    media_api_url: str = Field(
        "",
        description="MediaMTX control API base URL (e.g. http://mediamtx:9997; `livedub "
        "media-server --api-port`): at start and every reconcile_interval_s a worker is started "
        "for each live live/<id>/in path that has none (empty: no reconcile, hooks only)",
    )
    media_api_credentials: SecretStr | None = Field(
        None,
        description="`user:password` for the media API (HTTP basic auth; env only: a flag would "
        "show in `ps`); unset: no credentials",
    )
    reconcile_interval_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="how often the live paths are listed (also at once when a slot frees for a "
        "stream refused for capacity)",
    )
    media_api_timeout_s: float = Field(
        5.0, gt=0, le=60, description="timeout of one media API request"
    )

    # --- what a worker is started with ----------------------------------------------------
    input_base: str = Field(
        "rtsp://127.0.0.1:8554", description="worker input = <input_base>/live/<id>/in"
    )
    output_base: str = Field(
        "rtmp://127.0.0.1:1935", description="worker output = <output_base>/live/<id>/out"
    )
    input_user: str = Field(
        "worker", min_length=1, description="user the workers read their input with"
    )
    input_pass: SecretStr | None = Field(
        None, description="its password (env only; unset: inputs are read without credentials)"
    )
    output_user: str = Field(
        "worker",
        min_length=1,
        description="the workers' service account, the only one that may publish live/<id>/out",
    )
    output_pass: SecretStr | None = Field(
        None, description="its password (env only; unset: outputs are published without credentials)"
    )
    sts_url: str = Field("http://127.0.0.1:8080", description="STS service URL given to workers")
    worker_command: str = Field(
        "",
        description="command that starts one worker, shell-quoted "
        "(empty: `<this python> -m livedub worker`)",
    )
    worker_args: str = Field(
        "", description="extra arguments appended to every worker command, shell-quoted"
    )
    keep_original: bool = Field(
        False,
        description="workers keep the original sound (worker --keep-original): a second audio "
        "track on multi-track outputs, live/<id>/orig next to an RTMP live/<id>/out",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", description="host the orchestrator scrapes worker /metrics on"
    )
    worker_metrics_port_min: int = Field(
        9100, ge=0, le=65535, description="first worker metrics port (0: any free port)"
    )
    worker_metrics_port_max: int = Field(
        9199, ge=0, le=65535, description="last worker metrics port"
    )
    scrape_timeout_s: float = Field(
        2.0, gt=0, le=60, description="timeout of one worker /metrics scrape"
    )

    # --- lifecycle ------------------------------------------------------------------------
    grace_s: float = Field(
        30.0, ge=0, le=3600, description="wait after not-ready before a worker is stopped"
    )
    backoff_initial_s: float = Field(
        1.0, ge=0, le=3600, description="delay before the first restart of a crashed worker"
    )
    backoff_multiplier: float = Field(2.0, ge=1, le=10, description="backoff growth per crash")
    backoff_max_s: float = Field(30.0, ge=0, le=3600, description="largest restart delay")
    stable_run_s: float = Field(
        60.0, ge=0, le=86400, description="a run at least this long resets the backoff"
    )
    stop_timeout_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="SIGTERM → SIGKILL delay when stopping a worker: a worker drains on SIGTERM "
        "(up to its WORKER_DRAIN_TIMEOUT_S, default D + fragment timeout = 22 s), keep this above it",
    )
    no_restart_exit_codes: str = Field(
        _DEFAULT_NO_RESTART,
        description="comma-separated worker exit codes that are final (not restarted); "
        "default: USAGE and STS_AUTH_FAILED",
    )
    stale_event_window_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="a ready whose sourceId had a not-ready less than this long ago is stale",
    )
    max_streams: int = Field(32, ge=1, le=10000, description="most streams with a live worker")
    log_dir: Path | None = Field(
        None,
        description="write each worker's output to <log_dir>/<id>.log "
        "(unset: into this process's stderr, prefixed with [<id>])",
    )
    worker_pdeathsig: bool = Field(
        True,
        description="Linux: workers get SIGHUP if the orchestrator dies, and stop at once "
        "(no drain: a restarted orchestrator's new worker takes the output path over)",
    )

    @field_validator("hook_secret", "input_pass", "output_pass", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        """`ORCH_HOOK_SECRET=''` (compose's `${ORCH_HOOK_SECRET:-}`) is no secret, not an empty one."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        return value

    @field_validator("stream_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("media_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, e.g. http://mediamtx:9997")
        return value

    @field_validator("media_api_credentials", mode="before")
    @classmethod
    def _empty_credentials(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("input_base", "output_base", "sts_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if "://" not in value:
            raise ValueError("must be a URL with a scheme, e.g. rtsp://127.0.0.1:8554")
        return value

    @field_validator("worker_command", "worker_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        shlex.split(value)  # raises ValueError on unbalanced quotes
        return value

    @field_validator("no_restart_exit_codes")
    @classmethod
    def _codes(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                code = int(part)  # ValueError → validation error
                if not 0 < code < 256:
                    raise ValueError(f"exit code out of range: {code}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> OrchestratorSettings:
        if (
            self.worker_metrics_port_min
            and self.worker_metrics_port_max < self.worker_metrics_port_min
        ):
            raise ValueError("worker_metrics_port_max < worker_metrics_port_min")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s < backoff_initial_s")
        return self

    # --- derived values -------------------------------------------------------------------
    def worker_base_argv(self) -> list[str]:
        if self.worker_command.strip():
            return shlex.split(self.worker_command)
        return [sys.executable, "-m", "livedub", "worker"]

    def final_exit_codes(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.no_restart_exit_codes.split(",") if p.strip())

    def input_url(self, stream_id: str) -> str:
        """The worker's input, with the read credentials when set (the worker's environment
        only: never logged unredacted, never on argv)."""
        url = f"{self.input_base}/live/{stream_id}/in"
        if self.input_pass is None:
            return url
        return with_credentials(url, self.input_user, self.input_pass.get_secret_value())

    def output_url(self, stream_id: str) -> str:
        """The worker's output, with the workers' publish credentials when set."""
        url = f"{self.output_base}/live/{stream_id}/out"
        if self.output_pass is None:
            return url
        return with_credentials(url, self.output_user, self.output_pass.get_secret_value())

    def worker_argv(self, stream_id: str, metrics_port: int) -> list[str]:
        """The full command line of the worker for `stream_id` (validated here, defensively).
        It holds no URL: those may carry credentials, and any local user can read a process's
        argv (`ps`, /proc/<pid>/cmdline); they go by environment (`worker_env`)."""
        if not is_valid_stream_id(stream_id):
            raise ValueError(f"invalid stream id: {stream_id!r}")
        return [
            *self.worker_base_argv(),
            "--stream-id",
            stream_id,
            "--metrics-port",
            str(metrics_port),
            *(["--keep-original"] if self.keep_original else []),
            *shlex.split(self.worker_args),
        ]

    def worker_env(self, stream_id: str) -> dict[str, str]:
        """Environment variables (on top of the orchestrator's own) of the worker for `stream_id`:
        its input, output and STS URLs, which may carry credentials."""
        if not is_valid_stream_id(stream_id):
            raise ValueError(f"invalid stream id: {stream_id!r}")
        return {
            WORKER_ENV_INPUT_URL: self.input_url(stream_id),
            WORKER_ENV_OUTPUT_URL: self.output_url(stream_id),
            WORKER_ENV_STS_URL: self.sts_url,
        }


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return ENV_PREFIX + field.upper()
