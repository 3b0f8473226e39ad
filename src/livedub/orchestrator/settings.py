"""Settings of `livedub serve` (the orchestrator): one typed object, from env `ORCH_*` and flags.

Every value has a documented default (docs/operations.md lists them all). Flags given on the
command line win over the environment, which wins over the defaults. This module only describes
and validates configuration and composes a worker's command line; it never starts anything, never
reads the network and never logs a secret.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, ClassVar

import msgspec
from msgspec.structs import force_setattr

from livedub.credentials import with_credentials
from livedub.exitcodes import ExitCode
from livedub.orchestrator.languages import parse_language_list
from livedub.protocol.constants import DEFAULT_SOURCE_LANGUAGE, is_valid_id
from livedub.settings import EnvSettings
from livedub.typed import Meta, Secret, field_error
from livedub.worker.memory import worker_python_argv

ENV_PREFIX = "ORCH_"
#: How the orchestrator gives a worker its URLs (WorkerSettings' env names; never argv).
WORKER_ENV_INPUT_URL = "WORKER_INPUT_URL"
WORKER_ENV_OUTPUT_URL = "WORKER_OUTPUT_URL"
WORKER_ENV_STS_URL = "WORKER_STS_URL"
WORKER_ENV_MIRROR_URL = "WORKER_MIRROR_OUTPUT_URL"
#: The media path name of the dubbed output every stream has (an alias of its first language).
OUT_NAME = "out"

_DEFAULT_NO_RESTART = f"{int(ExitCode.USAGE)},{int(ExitCode.STS_AUTH_FAILED)}"


def is_valid_stream_id(stream_id: str) -> bool:
    return is_valid_id(stream_id)


# frozen: msgspec allows a frozen subclass of the (mutable) Record base; mypy's dataclass
# rule does not, hence the ignore
class OrchestratorSettings(EnvSettings, frozen=True):  # type: ignore[misc]
    """Configuration of the orchestrator. Env var = `ORCH_` + field name in upper case."""

    env_prefix: ClassVar[str] = ENV_PREFIX

    # --- HTTP API -------------------------------------------------------------------------
    host: Annotated[str, Meta(description="address the HTTP API listens on")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="HTTP API port (0: any free port)")] = (
        8000
    )
    hook_secret: (
        Annotated[
            Secret,
            Meta(
                description="shared secret the media-server hook must send in X-Hook-Secret "
                "(unset or empty: every hook is refused, unless insecure_open_hooks)"
            ),
        ]
        | None
    ) = None
    insecure_open_hooks: Annotated[
        bool,
        Meta(
            description="with no hook_secret, accept hooks without authentication (tests and "
            "local experiments only; never on a shared network)"
        ),
    ] = False
    api_token: (
        Annotated[
            Secret,
            Meta(
                description="operator API token (env only): `Authorization: Bearer <token>` on "
                "the API, or the console's sign-in form; when set, the console, "
                "/v1/streams and every action need it. Unset or empty: actions "
                "(stop, restart, original only) are refused, unless "
                "insecure_open_api"
            ),
        ]
        | None
    ) = None
    insecure_open_api: Annotated[
        bool,
        Meta(
            description="with no api_token, allow the console's actions without "
            "authentication (local experiments only; never on a shared network)"
        ),
    ] = False
    console_refresh_s: Annotated[
        float,
        Meta(ge=0.2, le=60, description="how often the console's event stream sends the rows"),
    ] = 1.0
    console_play_base: Annotated[
        str,
        Meta(
            description="base URL of the output links the console shows, e.g. "
            "rtmp://media.example:1935 (empty: output_base, without "
            "credentials)"
        ),
    ] = ""
    console_hls_base: Annotated[
        str,
        Meta(
            description="base URL of the media server's HLS, e.g. http://mediamtx:8888 "
            "(MediaMTX): the console links <base>/live/<id>/out/ as a preview "
            "(empty: no HLS link)"
        ),
    ] = ""
    max_body_bytes: Annotated[
        int, Meta(ge=1024, le=16 * 1024 * 1024, description="largest hook request body accepted")
    ] = 65536

    stream_pattern: Annotated[
        str,
        Meta(
            description="only manage stream ids that fully match this regex (empty: all); lets "
            "several orchestrators share one media server, each taking its own streams"
        ),
    ] = ""

    # --- reconcile with the media server -------------------------------------------------
    media_api_url: Annotated[
        str,
        Meta(
            description="MediaMTX control API base URL (e.g. http://mediamtx:9997; `livedub "
            "media-server --api-port`): at start and every reconcile_interval_s "
            "a worker is started for each live live/<id>/in path that has none "
            "(empty: no reconcile, hooks only)"
        ),
    ] = ""
    media_api_credentials: (
        Annotated[
            Secret,
            Meta(
                description="`user:password` for the media API (HTTP basic auth; env only: a "
                "flag would show in `ps`); unset: no credentials"
            ),
        ]
        | None
    ) = None
    reconcile_interval_s: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="how often the live paths are listed (also at once when a slot frees for a "
            "stream refused for capacity)",
        ),
    ] = 10.0
    media_api_timeout_s: Annotated[
        float, Meta(gt=0, le=60, description="timeout of one media API request")
    ] = 5.0

    # --- what a worker is started with ----------------------------------------------------
    input_base: Annotated[str, Meta(description="worker input = <input_base>/live/<id>/in")] = (
        "rtsp://127.0.0.1:8554"
    )
    output_base: Annotated[str, Meta(description="worker output = <output_base>/live/<id>/out")] = (
        "rtmp://127.0.0.1:1935"
    )
    input_user: Annotated[
        str, Meta(min_length=1, description="user the workers read their input with")
    ] = "worker"
    input_pass: (
        Annotated[
            Secret,
            Meta(description="its password (env only; unset: inputs are read without credentials)"),
        ]
        | None
    ) = None
    output_user: Annotated[
        str,
        Meta(
            min_length=1,
            description="the workers' service account, the only one that may publish live/<id>/out",
        ),
    ] = "worker"
    output_pass: (
        Annotated[
            Secret,
            Meta(
                description="its password (env only; unset: outputs are published without "
                "credentials)"
            ),
        ]
        | None
    ) = None
    sts_url: Annotated[str, Meta(description="STS service URL given to workers")] = (
        "http://127.0.0.1:8080"
    )
    worker_command: Annotated[
        str,
        Meta(
            description="command that starts one worker, shell-quoted "
            "(empty: `<this python> -OO -X no_debug_ranges -m livedub worker`)"
        ),
    ] = ""
    worker_args: Annotated[
        str, Meta(description="extra arguments appended to every worker command, shell-quoted")
    ] = ""
    keep_original: Annotated[
        bool,
        Meta(
            description="workers keep the original sound (worker --keep-original): a second audio "
            "track on multi-track outputs, live/<id>/orig next to an RTMP live/<id>/out"
        ),
    ] = False
    worker_metrics_host: Annotated[
        str, Meta(description="host the orchestrator scrapes worker /metrics on")
    ] = "127.0.0.1"
    worker_metrics_port_min: Annotated[
        int, Meta(ge=0, le=65535, description="first worker metrics port (0: any free port)")
    ] = 9100
    worker_metrics_port_max: Annotated[
        int, Meta(ge=0, le=65535, description="last worker metrics port")
    ] = 9199
    scrape_timeout_s: Annotated[
        float, Meta(gt=0, le=60, description="timeout of one worker /metrics scrape")
    ] = 2.0

    # --- languages (issue 18) -------------------------------------------------------------
    languages: Annotated[
        str,
        Meta(
            description="default target languages of every stream, comma-separated (e.g. "
            "`es,ca`): one worker per language, publishing live/<id>/<lang>; "
            "the first also publishes live/<id>/out. Empty: one worker per "
            "stream with the worker's own --target-language, at live/<id>/out "
            "only"
        ),
    ] = ""
    language_overrides: Annotated[
        dict[str, str],
        Meta(
            description='per-stream languages, JSON {"<stream id regex>": "es,ca"}: the '
            "first pattern that fully matches the stream id replaces the "
            "default list"
        ),
    ] = msgspec.field(default_factory=dict)
    query_languages: Annotated[
        bool,
        Meta(
            description="a publisher may choose the languages with its publish query "
            "(`?lang=es,ca`); each is checked like the configured ones"
        ),
    ] = True
    max_languages: Annotated[
        int,
        Meta(
            ge=1,
            le=32,
            description="most languages (workers) per stream; more are refused (too_many)",
        ),
    ] = 4

    # --- lifecycle ------------------------------------------------------------------------
    grace_s: Annotated[
        float, Meta(ge=0, le=3600, description="wait after not-ready before a worker is stopped")
    ] = 30.0
    backoff_initial_s: Annotated[
        float, Meta(ge=0, le=3600, description="delay before the first restart of a crashed worker")
    ] = 1.0
    backoff_multiplier: Annotated[
        float, Meta(ge=1, le=10, description="backoff growth per crash")
    ] = 2.0
    backoff_max_s: Annotated[float, Meta(ge=0, le=3600, description="largest restart delay")] = 30.0
    stable_run_s: Annotated[
        float, Meta(ge=0, le=86400, description="a run at least this long resets the backoff")
    ] = 60.0
    stop_timeout_s: Annotated[
        float,
        Meta(
            ge=0,
            le=600,
            description="SIGTERM → SIGKILL delay when stopping a worker: a worker drains on "
            "SIGTERM (up to its WORKER_DRAIN_TIMEOUT_S, default D + fragment "
            "timeout = 22 s), keep this above it",
        ),
    ] = 30.0
    no_restart_exit_codes: Annotated[
        str,
        Meta(
            description="comma-separated worker exit codes that are final (not restarted); "
            "default: USAGE and STS_AUTH_FAILED"
        ),
    ] = _DEFAULT_NO_RESTART
    stale_event_window_s: Annotated[
        float,
        Meta(
            ge=0,
            le=3600,
            description="a ready whose sourceId had a not-ready less than this long ago is stale",
        ),
    ] = 10.0
    max_streams: Annotated[
        int, Meta(ge=1, le=10000, description="most streams with a live worker")
    ] = 32
    log_dir: (
        Annotated[
            Path,
            Meta(
                description="write each worker's output to <log_dir>/<id>.log "
                "(unset: into this process's stderr, prefixed with [<id>])"
            ),
        ]
        | None
    ) = None
    worker_pdeathsig: Annotated[
        bool,
        Meta(
            description="Linux: workers get SIGHUP if the orchestrator dies, and stop at once "
            "(no drain: a restarted orchestrator's new worker takes the output path over)"
        ),
    ] = True

    def check(self) -> None:
        """The field rules (a rule's error names its field), then the cross-field ones. Values
        are normalised here (URLs without a trailing `/`, language lists canonical, an empty
        secret unset): the record is frozen, so they are set once, while it is made."""
        for name in ("hook_secret", "api_token", "input_pass", "output_pass"):
            secret = getattr(self, name)
            # `ORCH_HOOK_SECRET=''` (compose's `${ORCH_HOOK_SECRET:-}`) is no secret, not an
            # empty one
            if secret is not None and not secret.get_secret_value().strip():
                force_setattr(self, name, None)
        if self.media_api_credentials is not None and not self.media_api_credentials:
            force_setattr(self, "media_api_credentials", None)
        with _field("languages"):
            force_setattr(self, "languages", ",".join(parse_language_list(self.languages)))
        with _field("language_overrides"):
            force_setattr(self, "language_overrides", _overrides(self.language_overrides))
        with _field("stream_pattern"):
            _regex(self.stream_pattern)
        for name in ("console_play_base", "console_hls_base"):
            with _field(name):
                force_setattr(self, name, _link_base(getattr(self, name)))
        with _field("media_api_url"):
            force_setattr(self, "media_api_url", _api_url(self.media_api_url))
        for name in ("input_base", "output_base", "sts_url"):
            with _field(name):
                force_setattr(self, name, _url(getattr(self, name)))
        for name in ("worker_command", "worker_args"):
            with _field(name):
                shlex.split(getattr(self, name))  # raises ValueError on unbalanced quotes
        with _field("no_restart_exit_codes"):
            _codes(self.no_restart_exit_codes)
        if (
            self.worker_metrics_port_min
            and self.worker_metrics_port_max < self.worker_metrics_port_min
        ):
            raise ValueError("worker_metrics_port_max < worker_metrics_port_min")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s < backoff_initial_s")

    # --- derived values -------------------------------------------------------------------
    def worker_base_argv(self) -> list[str]:
        if self.worker_command.strip():
            return shlex.split(self.worker_command)
        return [*worker_python_argv(), "worker"]

    def final_exit_codes(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.no_restart_exit_codes.split(",") if p.strip())

    def default_languages(self) -> list[str]:
        return parse_language_list(self.languages)

    def language_override_list(self) -> list[tuple[str, list[str]]]:
        return [(p, parse_language_list(v)) for p, v in self.language_overrides.items()]

    def worker_source_language(self) -> str:
        """The source language the workers send in `stream:init`, as a worker resolves it: the
        last `--source-language` of `worker_args`, else `WORKER_SOURCE_LANGUAGE` (which workers
        inherit), else the protocol default."""
        words = shlex.split(self.worker_args)
        found: str | None = None
        for i, word in enumerate(words):
            if word == "--source-language" and i + 1 < len(words):
                found = words[i + 1]
            elif word.startswith("--source-language="):
                found = word.split("=", 1)[1]
        return found or os.environ.get("WORKER_SOURCE_LANGUAGE") or DEFAULT_SOURCE_LANGUAGE

    def input_url(self, stream_id: str) -> str:
        """The worker's input, with the read credentials when set (the worker's environment
        only: never logged unredacted, never on argv)."""
        url = f"{self.input_base}/live/{stream_id}/in"
        if self.input_pass is None:
            return url
        return with_credentials(url, self.input_user, self.input_pass.get_secret_value())

    def output_url(self, stream_id: str, name: str = OUT_NAME) -> str:
        """The worker's output `live/<id>/<name>` (`out`, or a language), with the workers'
        publish credentials when set."""
        url = f"{self.output_base}/live/{stream_id}/{name}"
        if self.output_pass is None:
            return url
        return with_credentials(url, self.output_user, self.output_pass.get_secret_value())

    def worker_argv(
        self, stream_id: str, metrics_port: int, language: str | None = None, primary: bool = True
    ) -> list[str]:
        """The full command line of the worker for `stream_id` (validated here, defensively).
        It holds no URL: those may carry credentials, and any local user can read a process's
        argv (`ps`, /proc/<pid>/cmdline); they go by environment (`worker_env`).

        With a `language` the worker dubs into it (`--target-language`, after `worker_args` so
        it wins); a worker that is not its stream's first (`primary`) language writes no
        source-language captions (the first one does: one transcript file per stream) and keeps
        no original sound (the first one does, `live/<id>/orig` or its second track: the original
        is the same for every language)."""
        if not is_valid_stream_id(stream_id):
            raise ValueError(f"invalid stream id: {stream_id!r}")
        argv = [
            *self.worker_base_argv(),
            "--stream-id",
            stream_id,
            "--metrics-port",
            str(metrics_port),
            *(["--keep-original"] if self.keep_original and primary else []),
            *shlex.split(self.worker_args),
        ]
        if language is not None:
            _check_language(language)
            argv += ["--target-language", language]
            if not primary:
                argv.append("--no-captions-source")
        return argv

    def play_url(self, media_path: str) -> str:
        """A media path (`live/<id>/out`, `live/<id>/<lang>`) as the console links it: never with
        the workers' credentials."""
        return f"{self.console_play_base or self.output_base}/{media_path}"

    def hls_url(self, media_path: str) -> str | None:
        """The media server's HLS page of a media path (MediaMTX serves one per path), if configured."""
        return f"{self.console_hls_base}/{media_path}/" if self.console_hls_base else None

    def worker_env(
        self, stream_id: str, language: str | None = None, primary: bool = True
    ) -> dict[str, str]:
        """Environment variables (on top of the orchestrator's own) of the worker for `stream_id`:
        its input, output and STS URLs, which may carry credentials.

        Without a language (nothing configured): the output is `live/<id>/out`, as before
        issue 18. With one, the stream's first (`primary`) language publishes `live/<id>/out`
        and mirrors it to `live/<id>/<lang>` (WORKER_MIRROR_OUTPUT_URL); the others publish
        `live/<id>/<lang>` only."""
        if not is_valid_stream_id(stream_id):
            raise ValueError(f"invalid stream id: {stream_id!r}")
        env = {
            WORKER_ENV_INPUT_URL: self.input_url(stream_id),
            WORKER_ENV_OUTPUT_URL: self.output_url(stream_id),
            WORKER_ENV_STS_URL: self.sts_url,
        }
        if language is not None:
            _check_language(language)
            if primary:
                env[WORKER_ENV_MIRROR_URL] = self.output_url(stream_id, language)
            else:
                env[WORKER_ENV_OUTPUT_URL] = self.output_url(stream_id, language)
                env[WORKER_ENV_MIRROR_URL] = ""  # never one inherited from this process
        return env

    def output_paths(self, stream_id: str, language: str | None, primary: bool) -> list[str]:
        """The media paths the worker publishes (GET /v1/streams `outputs`)."""
        paths = [f"live/{stream_id}/{OUT_NAME}"] if primary or language is None else []
        if language is not None:
            paths.append(f"live/{stream_id}/{language}")
        return paths


@contextmanager
def _field(name: str) -> Iterator[None]:
    """A `ValueError` raised inside is about field `name` (its `ValidationError` names it)."""
    try:
        yield
    except ValueError as exc:
        raise field_error(name, str(exc)) from None


def _regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from exc


def _overrides(value: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pattern, languages in value.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        out[pattern] = ",".join(parse_language_list(languages))
    return out


def _link_base(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and "://" not in value:
        raise ValueError("must be a URL with a scheme, e.g. http://mediamtx:8888")
    if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
        raise ValueError("must not carry credentials: the console shows it to every operator")
    return value


def _api_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL, e.g. http://mediamtx:9997")
    return value


def _url(value: str) -> str:
    value = value.strip().rstrip("/")
    if "://" not in value:
        raise ValueError("must be a URL with a scheme, e.g. rtsp://127.0.0.1:8554")
    return value


def _codes(value: str) -> None:
    for part in value.split(","):
        if part.strip():
            code = int(part)  # ValueError → validation error
            if not 0 < code < 256:
                raise ValueError(f"exit code out of range: {code}")


def _check_language(language: str) -> None:
    parse_language_list(language)  # ValueError unless a language code
    if "," in language:
        raise ValueError(f"one language expected: {language!r}")


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return OrchestratorSettings.env_name(field)
