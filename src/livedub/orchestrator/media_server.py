"""The embedded media server: MediaMTX's interface on 127.0.0.1 without Docker or MediaMTX.

For local runs, the demo and CI. It is made of two real servers, each a child process:
- RTMP (default port 1935): nginx with libnginx-mod-rtmp, one `application live/<id>` per stream
  id declared at start (`streams`), plus a catch-all `application live` whose stream names are
  `<id>/in` / `<id>/out` (any id, for clients that can set the RTMP app and play path).
- RTSP (default port 8554): `mediaserver/rtsp_relay.py`, a GStreamer RTSP server run under the
  system Python; publish with ANNOUNCE/RECORD over TCP, read with DESCRIBE/PLAY (several readers);
  any `live/<id>/in|out` path at run time.

A publish hook equivalent to MediaMTX `runOnReady` / `runOnNotReady` (only for `live/<id>/in`)
POSTs `{"path", "sourceType", "sourceId", "query"}` to `<hook_url>/v1/mediamtx/events/ready` and
`.../not-ready`, with `X-Hook-Secret` when a secret is set. The relay reports RTSP publishes on
its stdout, and RTMP ones too: nginx's `on_publish` / `on_publish_done` go to a small HTTP
endpoint inside the relay process (not this one: see `rtsp_relay.NotifyHandler`). Hooks are
delivered in order, one at a time, from one thread.

Use it as `with MediaServer(...) as ms:` / `async with MediaServer(...) as ms:` or via
`livedub media-server`. This module must never leave a child process behind (children are killed
by PID, and die with their parent), never reload nginx (a reload loses every running RTMP
stream), and never listen on anything but the configured host.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any, ClassVar

import psutil
from msgspec.structs import force_setattr

from livedub.clock import Clock, SystemClock
from livedub.credentials import with_credentials
from livedub.log import bind
from livedub.orchestrator.languages import LANGUAGE_CODE
from livedub.orchestrator.mediaserver import RTSP_RELAY_SCRIPT
from livedub.protocol.constants import ID_CHARS, JSON_CONTENT_TYPE, is_valid_id
from livedub.settings import EnvSettings
from livedub.subproc import pdeathsig_preexec
from livedub.typed import Meta, Secret, field_error

__all__ = [
    "EmbeddedMediaServer",
    "HookEvent",
    "MediaServer",
    "MediaServerError",
    "MediaServerSettings",
    "PathsApi",
    "PortInUseError",
    "render_nginx_conf",
]

_log = bind(logging.getLogger(__name__), component="media-server")

#: A media path served here: `live/<id>/in`, `live/<id>/out`, a language's `live/<id>/<lang>`
#: (issue 18; published by the workers, like `out`), or `live/<id>/orig` (the original programme
#: a worker with --keep-original publishes next to an RTMP output).
PATH_RE = re.compile(rf"live/({ID_CHARS})/(in|out|orig|{LANGUAGE_CODE})")

ENV_PREFIX = "MEDIA_"
RELAY_AUTH_ENV = "LIVEDUB_RELAY_AUTH"  # rtsp_relay.AUTH_ENV (the relay cannot import livedub)
HOOK_READY = "/v1/mediamtx/events/ready"
HOOK_NOT_READY = "/v1/mediamtx/events/not-ready"
#: MediaMTX's control API route listing the paths, and its default page size.
PATHS_LIST_ROUTE = "/v3/paths/list"
API_ITEMS_PER_PAGE = 100


class MediaServerError(RuntimeError):
    """The media server could not start, or one of its processes died."""


class PortInUseError(MediaServerError):
    """A port the media server must listen on is taken."""

    def __init__(self, protocol: str, host: str, port: int) -> None:
        super().__init__(
            f"{protocol} port {host}:{port} is already in use; stop what holds it or choose "
            f"another port (--{protocol.lower()}-port)"
        )
        self.protocol = protocol
        self.host = host
        self.port = port


#: The publisher's and the workers' password: unset, a random one per start.
_GeneratedPass = (
    Annotated[
        Secret,
        Meta(
            description="its password (env only; unset: a random one per start, written to "
            "<workdir>/credentials.env)"
        ),
    ]
    | None
)


# frozen: msgspec allows a frozen subclass of the (mutable) Record base; mypy's dataclass
# rule does not, hence the ignore
class MediaServerSettings(EnvSettings, frozen=True):  # type: ignore[misc]
    """Configuration of the embedded media server. Env var = `MEDIA_` + field name in upper case."""

    env_prefix: ClassVar[str] = ENV_PREFIX

    host: Annotated[str, Meta(description="address both servers listen on")] = "127.0.0.1"
    rtsp_port: Annotated[int, Meta(ge=1, le=65535, description="RTSP port")] = 8554
    rtmp_port: Annotated[int, Meta(ge=1, le=65535, description="RTMP port")] = 1935
    streams: Annotated[
        str,
        Meta(
            description="comma-separated stream ids served at rtmp://.../live/<id>/{in,out}; "
            "RTMP ids must be declared at start (RTSP serves any id)"
        ),
    ] = ""
    api_port: Annotated[
        int,
        Meta(
            ge=0,
            le=65535,
            description="port of the MediaMTX-style control API (GET /v3/paths/list) on `host`; "
            "0: off (MediaMTX's own default is 9997)",
        ),
    ] = 0
    hook_url: (
        Annotated[
            str,
            Meta(
                description="base URL of the publish hook (e.g. http://127.0.0.1:8000); "
                "unset: no hook"
            ),
        ]
        | None
    ) = None
    hook_secret: (
        Annotated[
            Secret,
            Meta(description="sent as X-Hook-Secret with every hook call (unset: no header)"),
        ]
        | None
    ) = None
    publish_user: Annotated[
        str, Meta(min_length=1, description="user that may publish live/<id>/in")
    ] = "publisher"
    publish_pass: _GeneratedPass = None
    worker_user: Annotated[
        str,
        Meta(
            min_length=1,
            description="the workers' service account: the only user that may publish "
            "live/<id>/out (and live/<id>/orig)",
        ),
    ] = "worker"
    worker_pass: _GeneratedPass = None
    read_user: Annotated[str, Meta(min_length=1, description="user that may read")] = "reader"
    read_pass: (
        Annotated[
            Secret,
            Meta(
                description="its password (env only); unset: anyone may read. The publish and "
                "worker accounts may always read"
            ),
        ]
        | None
    ) = None
    insecure_open_publish: Annotated[
        bool,
        Meta(
            description="anyone may publish any live/<id>/in|out path without credentials "
            "(local experiments only)"
        ),
    ] = False
    hook_timeout_s: Annotated[float, Meta(gt=0, le=60, description="timeout of one hook call")] = (
        5.0
    )
    hook_retries: Annotated[int, Meta(ge=0, le=10, description="retries of a failed hook call")] = 2
    hook_retry_delay_s: Annotated[
        float, Meta(ge=0, le=60, description="delay before a hook retry")
    ] = 0.5
    start_timeout_s: Annotated[
        float, Meta(gt=0, le=120, description="wait for both servers to listen")
    ] = 5.0
    stop_timeout_s: Annotated[
        float, Meta(gt=0, le=120, description="SIGTERM → SIGKILL delay at stop")
    ] = 5.0
    stop_hook_flush_s: Annotated[
        float,
        Meta(ge=0, le=60, description="at stop, time left to deliver pending hook calls"),
    ] = 2.0
    rtsp_reader_wait_s: Annotated[
        float,
        Meta(
            gt=0,
            le=60,
            description="an RTSP DESCRIBE waits this long for a new publisher's tracks",
        ),
    ] = 5.0
    rtsp_ts_shift_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=10000,
            description="RTSP reader timestamps are shifted this far into the "
            "past so the relay forwards at once (lower latency)",
        ),
    ] = 1000
    rtsp_gop_cache: Annotated[
        bool,
        Meta(
            description="an RTSP reader starts at the publisher's cached keyframe and first gets "
            "everything since it in one burst (off: it waits for the next keyframe)"
        ),
    ] = True
    rtsp_gop_cache_max_s: Annotated[
        float,
        Meta(
            gt=0,
            le=60,
            description="RTSP GOP cache bound, in publisher time since its oldest keyframe",
        ),
    ] = 10.0
    rtsp_gop_cache_max_mb: Annotated[
        float, Meta(gt=0, le=1000, description="RTSP GOP cache bound, in MB per publisher")
    ] = 16.0
    rtsp_gop_cache_start_s: Annotated[
        float,
        Meta(
            ge=0,
            le=60,
            description="the RTSP GOP cache keeps a publish from its first keyframe until a "
            "keyframe this long after it, so a reader started by the publish hook misses nothing "
            "(0: the last GOP only)",
        ),
    ] = 5.0
    workdir: (
        Annotated[
            Path,
            Meta(description="directory for nginx config, pid and logs (unset: a temporary one)"),
        ]
        | None
    ) = None
    nginx_bin: Annotated[str, Meta(description="nginx executable")] = "nginx"
    nginx_rtmp_module: Annotated[Path, Meta(description="libnginx-mod-rtmp module")] = Path(
        "/usr/lib/nginx/modules/ngx_rtmp_module.so"
    )
    gst_python: Annotated[
        str, Meta(description="Python that has GStreamer's PyGObject (python3-gi)")
    ] = "/usr/bin/python3"

    def missing_prerequisite(self) -> str | None:
        """What `MediaServer.start` needs and this machine lacks (with the package to install),
        or None. Tests use it to skip where `make setup` has not run."""
        needed = ((self.nginx_bin, "nginx (apt: nginx-light)"), (self.gst_python, "python3"))
        for exe, what in needed:
            if shutil.which(exe) is None:
                return f"{what} not found: {exe}; run `make setup`"
        if not self.nginx_rtmp_module.exists():
            return f"nginx RTMP module not found: {self.nginx_rtmp_module}; apt: libnginx-mod-rtmp"
        return None

    def check(self) -> None:
        """Normalises `streams` (ids checked, duplicates dropped) and `hook_url` (blank: unset);
        an empty password is no password (frozen: set once here, while the record is made)."""
        ids = [s.strip() for s in self.streams.split(",") if s.strip()]
        for sid in ids:
            if not is_valid_id(sid):
                raise field_error("streams", f"invalid stream id {sid!r}: must match {ID_CHARS}")
        force_setattr(self, "streams", ",".join(dict.fromkeys(ids)))
        hook_url = self.hook_url
        if hook_url is not None:
            hook_url = hook_url.strip().rstrip("/") or None
            if hook_url is not None and urllib.parse.urlsplit(hook_url).scheme not in (
                "http",
                "https",
            ):
                raise field_error(
                    "hook_url", "hook_url must be an http(s) URL, e.g. http://127.0.0.1:8000"
                )
            force_setattr(self, "hook_url", hook_url)
        for name in ("publish_pass", "worker_pass", "read_pass"):
            secret = getattr(self, name)
            if secret is not None and not secret.get_secret_value():
                force_setattr(self, name, None)

    @property
    def stream_ids(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams.split(",") if s)


class Role(enum.StrEnum):
    """Who uses a URL of the media server: which credentials it carries."""

    PUBLISHER = "publisher"  # publishes live/<id>/in
    WORKER = "worker"  # publishes live/<id>/out and live/<id>/orig (and reads live/<id>/in)
    READER = "reader"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: Secret


@dataclass(frozen=True)
class HookEvent:
    """One publish event in MediaMTX's hook shape (`kind` is "ready" or "not-ready")."""

    kind: str
    path: str
    source_type: str  # "rtspSession" | "rtmpConn"
    source_id: str
    query: str = ""

    def payload(self) -> dict[str, str]:
        return {
            "path": self.path,
            "sourceType": self.source_type,
            "sourceId": self.source_id,
            "query": self.query,
        }


def render_nginx_conf(
    workdir: Path,
    host: str,
    rtmp_port: int,
    stream_ids: Sequence[str],
    notify_url: str,
    rtmp_module: Path,
) -> str:
    """nginx.conf for an unprivileged nginx-rtmp rooted in `workdir` (no reloads, ever)."""
    d = workdir.resolve()
    notify = (
        f"on_publish {notify_url}/publish;\n            on_publish_done {notify_url}/publish_done;"
        f"\n            on_play {notify_url}/play;"
    )
    live = (
        "live on;\n"
        "            record off;\n"
        "            wait_key on;\n"
        "            idle_streams off;\n"
        "            drop_idle_publisher 10s;\n"
        f"            {notify}"
    )
    apps = "".join(
        f"        application live/{sid} {{\n            {live}\n        }}\n" for sid in stream_ids
    )
    return f"""# generated by livedub media-server; do not edit (it is rewritten at each start)
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
load_module {rtmp_module};
events {{
    worker_connections 1024;
}}
rtmp {{
    server {{
        listen {host}:{rtmp_port};
        chunk_size 4096;
{apps}        # any id: app "live", stream name "<id>/in", "<id>/out" or "<id>/orig"
        application live {{
            {live}
        }}
    }}
}}
"""


def listens_on(pid: int, host: str, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `host:port` (or on every address)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(
        c.status == psutil.CONN_LISTEN
        and c.laddr
        and c.laddr.port == port
        and c.laddr.ip in (host, "0.0.0.0", "::")
        for c in conns
    )


def check_port_free(protocol: str, host: str, port: int) -> None:
    """Raise PortInUseError if `host:port` cannot be bound (TCP) the way the servers bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUseError(protocol, host, port) from exc
            raise MediaServerError(f"cannot bind {protocol} {host}:{port}: {exc}") from exc


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class _HookSender:
    """Delivers hook events in order from one thread; never blocks a media server callback."""

    def __init__(self, settings: MediaServerSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._queue: queue.Queue[HookEvent | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # set at stop: give up on calls after it
        self.delivered: list[HookEvent] = []

    def start(self) -> None:
        if self._settings.hook_url is None:
            return
        self._thread = threading.Thread(target=self._run, name="media-hook", daemon=True)
        self._thread.start()

    def submit(self, event: HookEvent) -> None:
        if self._thread is None:
            return
        self._queue.put(event)

    def close(self, flush_s: float) -> None:
        if self._thread is None:
            return
        self._deadline = self._clock.monotonic() + flush_s
        self._queue.put(None)
        self._thread.join(timeout=flush_s + self._settings.hook_timeout_s + 1.0)
        self._thread = None

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._deliver(event)

    def _deliver(self, event: HookEvent) -> None:
        base = self._settings.hook_url
        assert base is not None
        url = base + (HOOK_READY if event.kind == "ready" else HOOK_NOT_READY)
        body = json.dumps(event.payload()).encode()
        headers = {"Content-Type": JSON_CONTENT_TYPE}
        if self._settings.hook_secret is not None:
            headers["X-Hook-Secret"] = self._settings.hook_secret.get_secret_value()
        ctx = {"path": event.path, "hook": event.kind, "source_type": event.source_type}
        for attempt in range(self._settings.hook_retries + 1):
            timeout_s = self._settings.hook_timeout_s
            if self._deadline is not None:
                timeout_s = min(timeout_s, self._deadline - self._clock.monotonic())
                if timeout_s <= 0:
                    _log.warning("hook dropped at shutdown", ctx=ctx)
                    return
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                    status = resp.status
                _log.info("hook delivered", ctx={**ctx, "status": status})
                self.delivered.append(event)
                return
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500:  # the receiver refused it: retrying will not help
                    _log.warning("hook refused", ctx={**ctx, "status": exc.code})
                    return
                error = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                error = repr(exc)
            _log.warning("hook call failed", ctx={**ctx, "attempt": attempt + 1, "error": error})
            if attempt < self._settings.hook_retries:
                time.sleep(self._settings.hook_retry_delay_s)
        _log.error("hook not delivered", ctx=ctx)


class MediaServer:
    """The embedded media server (nginx-rtmp + GStreamer RTSP relay) as child processes.

    `MediaServer(settings)` or `MediaServer(rtsp_port=..., rtmp_port=..., streams=[...],
    hook_url=..., workdir=...)` (keywords override `settings`, which defaults to env `MEDIA_*`).
    `start()` spawns both servers (≈0.1 s: it waits until the relay listens, because nginx needs
    the port of the notify endpoint the relay hosts), `wait_ready(timeout_s)` /
    `await wait_ready_async(timeout_s)` block until both listen, `stop()` stops them and returns
    only when no child is left. Context managers do all three: `with` / `async with`.
    """

    def __init__(
        self,
        settings: MediaServerSettings | None = None,
        *,
        host: str | None = None,
        rtsp_port: int | None = None,
        rtmp_port: int | None = None,
        streams: Sequence[str] | None = None,
        api_port: int | None = None,
        hook_url: str | None = None,
        hook_secret: str | None = None,
        workdir: Path | str | None = None,
        clock: Clock | None = None,
        on_event: Callable[[HookEvent], None] | None = None,
    ) -> None:
        base = settings if settings is not None else MediaServerSettings.load()
        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["host"] = host
        if rtsp_port is not None:
            overrides["rtsp_port"] = rtsp_port
        if rtmp_port is not None:
            overrides["rtmp_port"] = rtmp_port
        if streams is not None:
            overrides["streams"] = ",".join(streams)
        if api_port is not None:
            overrides["api_port"] = api_port
        if hook_url is not None:
            overrides["hook_url"] = hook_url
        if hook_secret is not None:
            overrides["hook_secret"] = Secret(hook_secret)
        if workdir is not None:
            overrides["workdir"] = Path(workdir)
        self.settings = base.replace(**overrides) if overrides else base
        self._clock = clock or SystemClock()
        self._on_event = on_event
        self._credentials = self._make_credentials()
        self._hooks = _HookSender(self.settings, self._clock)
        self._lock = threading.Lock()
        self._ready_paths: dict[str, HookEvent] = {}
        self._live: dict[str, tuple[HookEvent, str]] = {}  # every published path: (event, since)
        self._api: PathsApi | None = None
        self._notify_port: int | None = None
        self._nginx: subprocess.Popen[bytes] | None = None
        self._relay: subprocess.Popen[bytes] | None = None
        self._relay_thread: threading.Thread | None = None
        self._relay_listening = threading.Event()
        self._relay_fatal: str | None = None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._ready = False
        self._stopped = False
        self._started_at: float | None = None
        self.ready_after_s: float | None = None

    def _make_credentials(self) -> dict[Role, Credentials]:
        """Closed by default: a password not configured is generated (and written to
        `<workdir>/credentials.env` at start), unless `insecure_open_publish`."""
        s = self.settings
        creds: dict[Role, Credentials] = {}
        if not s.insecure_open_publish:
            for role, user, password in (
                (Role.PUBLISHER, s.publish_user, s.publish_pass),
                (Role.WORKER, s.worker_user, s.worker_pass),
            ):
                creds[role] = Credentials(user, password or Secret(secrets.token_urlsafe(18)))
        if s.read_pass is not None:
            creds[Role.READER] = Credentials(s.read_user, s.read_pass)
        return creds

    def _relay_access_env(self) -> str:
        """The relay's access rules (`rtsp_relay.AUTH_ENV`), JSON, given by environment."""

        def pair(role: Role) -> list[str] | None:
            c = self._credentials.get(role)
            return None if c is None else [c.user, c.password.get_secret_value()]

        return json.dumps(
            {"in": pair(Role.PUBLISHER), "out": pair(Role.WORKER), "read": pair(Role.READER)}
        )

    def write_credentials_file(self) -> None:
        generated = [
            (name, self._credentials[role])
            for name, role, configured in (
                ("PUBLISH", Role.PUBLISHER, self.settings.publish_pass),
                ("WORKER", Role.WORKER, self.settings.worker_pass),
            )
            if configured is None and role in self._credentials
        ]
        if not generated:
            return
        path = self._wd / "credentials.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            for name, c in generated:
                out.write(f"{ENV_PREFIX}{name}_USER={c.user}\n")
                out.write(f"{ENV_PREFIX}{name}_PASS={c.password.get_secret_value()}\n")
        _log.warning(
            "media server credentials generated (set MEDIA_PUBLISH_PASS / MEDIA_WORKER_PASS to "
            "choose them)",
            ctx={"file": str(path)},
        )

    # -- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def rtsp_port(self) -> int:
        return self.settings.rtsp_port

    @property
    def rtmp_port(self) -> int:
        return self.settings.rtmp_port

    @property
    def streams(self) -> tuple[str, ...]:
        return self.settings.stream_ids

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def notify_port(self) -> int | None:
        """Port on 127.0.0.1 of the relay's nginx-rtmp notify endpoint (None before `start`)."""
        return self._notify_port

    def credentials(self, role: Role) -> Credentials | None:
        """The credentials of `role` (None: that role needs none)."""
        return self._credentials.get(role)

    def _url(self, base: str, path: str, role: Role | None) -> str:
        path = path.lstrip("/")
        if role is None:  # the role a path is published by: its publisher's credentials
            role = (
                Role.PUBLISHER if path.endswith("/in") else Role.WORKER
            )  # out, orig, <lang>: workers
        url = f"{base}/{path}"
        creds = self._credentials.get(role)
        if creds is None:
            return url
        return with_credentials(url, creds.user, creds.password.get_secret_value())

    def rtsp_url(self, path: str, role: Role | None = None) -> str:
        """`rtsp://user:pass@host:port/<path>`, e.g. `ms.rtsp_url("live/demo/in")`: with the
        credentials of `role`, by default of the one that may publish `path` (which may also
        read it); `Role.ANONYMOUS` for none."""
        return self._url(f"rtsp://{self.host}:{self.rtsp_port}", path, role)

    def rtmp_url(self, path: str, role: Role | None = None) -> str:
        """`rtmp://host:port/<path>?user=…&pass=…` (credentials as in `rtsp_url`); for
        `live/<id>/...` the id must be in `streams`."""
        return self._url(f"rtmp://{self.host}:{self.rtmp_port}", path, role)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def ready_paths(self) -> dict[str, HookEvent]:
        """`live/<id>/in` paths being published now (as last reported), with their ready event."""
        with self._lock:
            return dict(self._ready_paths)

    def paths_list(self, page: int = 0, items_per_page: int = API_ITEMS_PER_PAGE) -> dict[str, Any]:
        """MediaMTX's `GET /v3/paths/list` answer (`PathList`): the paths being published now."""
        with self._lock:
            live = sorted(self._live.items())
        items = [_path_item(path, ev, since) for path, (ev, since) in live]
        per_page = max(1, items_per_page)
        return {
            "itemCount": len(items),
            "pageCount": (len(items) + per_page - 1) // per_page,
            "items": items[page * per_page : (page + 1) * per_page],
        }

    @property
    def api_url(self) -> str | None:
        """`http://host:api_port` of the control API, or None when it is off."""
        return f"http://{self.host}:{self.settings.api_port}" if self.settings.api_port else None

    def pids(self) -> list[int]:
        """PIDs of every child process (nginx master and workers, RTSP relay) that is alive."""
        out: list[int] = []
        for proc in (self._nginx, self._relay):
            if proc is not None and proc.poll() is None:
                out.append(proc.pid)
                out.extend(_children(proc.pid))
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn both servers. Raises PortInUseError / MediaServerError; cleans up on failure."""
        if self._started_at is not None:
            raise MediaServerError("media server already started")
        s = self.settings
        self._started_at = self._clock.monotonic()
        if s.rtsp_port == s.rtmp_port:
            raise MediaServerError("rtsp_port and rtmp_port must differ")
        check_port_free("RTSP", s.host, s.rtsp_port)
        check_port_free("RTMP", s.host, s.rtmp_port)
        if s.api_port:
            check_port_free("API", s.host, s.api_port)
        missing = s.missing_prerequisite()
        if missing is not None:
            raise MediaServerError(missing)
        try:
            self._prepare_workdir()
            self._hooks.start()
            self._start_relay()
            deadline = self._clock.monotonic() + s.start_timeout_s
            while not self._relay_listening.wait(0.02):
                failure = self.failure()
                if failure is not None:
                    raise _startup_error(failure, self)
                if self._clock.monotonic() > deadline:
                    raise MediaServerError(self._not_ready_message())
            self._start_nginx()
            if s.api_port:
                self._api = PathsApi(s.host, s.api_port, self.paths_list)
                self._api.start()
        except BaseException:
            self.stop()
            raise
        _log.info(
            "media server starting",
            ctx={"rtsp_port": s.rtsp_port, "rtmp_port": s.rtmp_port, "streams": s.streams},
        )

    def _check_ready(self) -> bool:
        """One readiness probe; raises MediaServerError when a child has failed."""
        failure = self.failure()
        if failure is not None:
            raise _startup_error(failure, self)
        if not self._relay_listening.is_set():
            return False
        # Our nginx must hold the listening socket: a connect alone can reach another process
        # that took the port between the free-port check and nginx's bind (nginx then retries
        # its bind for a few seconds and exits), and that is not our media server.
        return self._nginx is not None and listens_on(self._nginx.pid, self.host, self.rtmp_port)

    def _mark_ready(self) -> None:
        if not self._ready:
            self._ready = True
            assert self._started_at is not None
            self.ready_after_s = self._clock.monotonic() - self._started_at
            _log.info(
                "media server ready",
                ctx={
                    # never with credentials (a URL with a role's user and password is a secret)
                    "rtsp": self.rtsp_url("", Role.ANONYMOUS),
                    "rtmp": self.rtmp_url("", Role.ANONYMOUS),
                    "ready_after_ms": round(self.ready_after_s * 1000),
                },
            )

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until both servers accept connections; raise MediaServerError on timeout."""
        if self._started_at is None:
            raise MediaServerError("media server not started")
        deadline = self._clock.monotonic() + (timeout_s or self.settings.start_timeout_s)
        while not self._check_ready():
            if self._clock.monotonic() >= deadline:
                raise MediaServerError(self._not_ready_message())
            time.sleep(0.02)
        self._mark_ready()

    async def wait_ready_async(self, timeout_s: float | None = None) -> None:
        """`wait_ready` for asyncio code (polls with the clock's sleep)."""
        if self._started_at is None:
            raise MediaServerError("media server not started")
        deadline = self._clock.monotonic() + (timeout_s or self.settings.start_timeout_s)
        while not self._check_ready():
            if self._clock.monotonic() >= deadline:
                raise MediaServerError(self._not_ready_message())
            await self._clock.sleep(0.02)
        self._mark_ready()

    def _not_ready_message(self) -> str:
        parts = []
        if not self._relay_listening.is_set():
            parts.append("RTSP relay not listening")
        parts.append(f"nginx log: {_tail(self._wd / 'error.log', 3)}")
        return "media server not ready in time: " + "; ".join(parts)

    def failure(self) -> str | None:
        """Why the server is broken (a child exited), or None while it is healthy."""
        if self._relay_fatal is not None:
            return self._relay_fatal
        if self._nginx is not None and self._nginx.poll() is not None:
            return (
                f"nginx exited with code {self._nginx.returncode}: "
                f"{_tail(self._wd / 'error.log', 3)}"
            )
        if self._relay is not None and self._relay.poll() is not None:
            return (
                f"RTSP relay exited with code {self._relay.returncode}: "
                f"{_tail(self._wd / 'rtsp-relay.stderr.log', 3)}"
            )
        return None

    def stop(self) -> None:
        """Stop both servers and wait for them; kill by PID what does not stop in time.

        Hooks: a `not-ready` is sent for every path still published, then pending hook calls get
        `stop_hook_flush_s` to be delivered. Safe to call twice or after a failed start.
        """
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        s = self.settings
        if self._api is not None:
            self._api.stop()
            self._api = None
        procs: list[tuple[str, subprocess.Popen[bytes], int]] = []
        if self._nginx is not None:
            procs.append(("nginx", self._nginx, signal.SIGTERM))  # SIGQUIT waits for RTMP clients
        if self._relay is not None:
            procs.append(("rtsp-relay", self._relay, signal.SIGTERM))
        extra: list[int] = []
        for _name, proc, sig in procs:
            if proc.poll() is None:
                extra.extend(_children(proc.pid))
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        deadline = self._clock.monotonic() + s.stop_timeout_s
        for name, proc, _sig in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - self._clock.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("child did not stop in time: killing", ctx={"child": name})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for pid in extra:  # nginx workers: gone with their master, unless something went wrong
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._relay is not None and self._relay.stdin is not None:
            with contextlib.suppress(OSError):
                self._relay.stdin.close()
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=2.0)
        with self._lock:
            leftover = list(self._ready_paths.values())
            self._ready_paths.clear()
            self._live.clear()
        for ev in leftover:
            self._emit(HookEvent("not-ready", ev.path, ev.source_type, ev.source_id, ev.query))
        self._hooks.close(s.stop_hook_flush_s)
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        _log.info("media server stopped")

    async def stop_async(self) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    def __enter__(self) -> MediaServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> MediaServer:
        self.start()
        try:
            await self.wait_ready_async()
        except BaseException:
            await self.stop_async()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # -- children ----------------------------------------------------------------------------
    @property
    def _wd(self) -> Path:
        assert self._workdir is not None
        return self._workdir

    def _prepare_workdir(self) -> None:
        if self.settings.workdir is not None:
            self._workdir = self.settings.workdir.resolve()
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="livedub-media-"))
            self._own_workdir = True

    def _start_nginx(self) -> None:
        s = self.settings
        assert self._notify_port is not None
        notify_url = f"http://127.0.0.1:{self._notify_port}/rtmp"
        conf = self._wd / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                self._wd, s.host, s.rtmp_port, s.stream_ids, notify_url, s.nginx_rtmp_module
            )
        )
        (self._wd / "error.log").write_text("")
        argv = [
            s.nginx_bin, "-p", str(self._wd), "-c", str(conf),
            "-e", str(self._wd / "error.log"), "-g", "daemon off;",
        ]  # fmt: skip
        self._nginx = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),  # noqa: PLW1509 (only prctl, no locks)
        )

    def _start_relay(self) -> None:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env[RELAY_AUTH_ENV] = self._relay_access_env()  # secrets by environment, never argv
        argv = [
            s.gst_python, "-I", str(RTSP_RELAY_SCRIPT),
            "--host", s.host, "--port", str(s.rtsp_port), "--id-pattern", ID_CHARS, "--language-pattern", LANGUAGE_CODE,
            "--reader-wait-s", str(s.rtsp_reader_wait_s),
            "--ts-shift-ms", str(s.rtsp_ts_shift_ms),
            "--gop-cache" if s.rtsp_gop_cache else "--no-gop-cache",
            "--gop-cache-max-s", str(s.rtsp_gop_cache_max_s),
            "--gop-cache-max-mb", str(s.rtsp_gop_cache_max_mb),
            "--gop-cache-start-s", str(s.rtsp_gop_cache_start_s),
            "--exit-on-stdin-eof",
        ]  # fmt: skip
        stderr: IO[bytes] = open(self._wd / "rtsp-relay.stderr.log", "wb")  # noqa: SIM115
        try:
            self._relay = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(signal.SIGTERM),  # noqa: PLW1509
            )
        finally:
            stderr.close()
        self._relay_thread = threading.Thread(
            target=self._read_relay, name="media-relay-events", daemon=True
        )
        self._relay_thread.start()

    def _read_relay(self) -> None:
        proc = self._relay
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                _log.warning("rtsp relay: unparsable line", ctx={"line": raw[:200]})
                continue
            event = msg.pop("event", "")
            if event == "listening":
                self._notify_port = int(msg["notify_port"])
                self._relay_listening.set()
            elif event in ("ready", "not-ready"):
                self._on_publish_event(
                    HookEvent(
                        event, msg.get("path", ""), msg.get("source_type", "rtspSession"),
                        str(msg.get("source_id", "")), msg.get("query", "") or "",
                    )
                )  # fmt: skip
            elif event == "fatal":
                if msg.get("reason") == "port-in-use":
                    self._relay_fatal = str(PortInUseError("RTSP", self.host, self.rtsp_port))
                else:
                    self._relay_fatal = f"RTSP relay failed: {msg.get('msg')}"
                _log.error("rtsp relay failed", ctx=msg)
            elif event == "log":
                level = {"warning": logging.WARNING, "error": logging.ERROR}.get(
                    str(msg.pop("level", "")), logging.INFO
                )
                text = str(msg.pop("msg", ""))
                _log.log(level, "rtsp relay: " + text, ctx=msg)

    # -- publish events --------------------------------------------------------------------
    def _on_publish_event(self, ev: HookEvent) -> None:
        _log.info("publish " + ev.kind, ctx={"path": ev.path, "source_type": ev.source_type})
        m = PATH_RE.fullmatch(ev.path)
        if m is None:
            return
        with self._lock:
            if ev.kind == "ready":
                self._live[ev.path] = (ev, _utc_now())
            elif (live := self._live.get(ev.path)) is not None and (
                live[0].source_type,
                live[0].source_id,
            ) == (ev.source_type, ev.source_id):
                del self._live[ev.path]
        if m.group(2) != "in":
            return
        with self._lock:
            if ev.kind == "ready":
                self._ready_paths[ev.path] = ev
            else:
                cur = self._ready_paths.get(ev.path)
                if cur is None or (cur.source_type, cur.source_id) != (
                    ev.source_type,
                    ev.source_id,
                ):
                    return  # its ready was never announced, or another publisher owns the path
                del self._ready_paths[ev.path]
        self._emit(ev)

    def _emit(self, ev: HookEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(ev)
            except Exception:
                _log.exception("on_event callback failed")
        self._hooks.submit(ev)


#: The name used in the issue text.
EmbeddedMediaServer = MediaServer


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _path_item(path: str, ev: HookEvent, since: str) -> dict[str, Any]:
    """One `Path` of MediaMTX's API (v1.x shape: `ready` and its successors `available`/`online`)."""
    return {
        "name": path,
        "confName": path,
        "source": {"type": ev.source_type, "id": ev.source_id},
        "ready": True,
        "readyTime": since,
        "available": True,
        "availableTime": since,
        "online": True,
        "onlineTime": since,
        "tracks": [],
        "readers": [],
        "bytesReceived": 0,
        "bytesSent": 0,
    }


class PathsApi:
    """The MediaMTX control API subset livedub uses: `GET /v3/paths/list[?page=&itemsPerPage=]`,
    from a daemon thread. Anything else is 404; it never changes the media server."""

    def __init__(
        self, host: str, port: int, list_paths: Callable[[int, int], dict[str, Any]]
    ) -> None:
        import http.server

        list_fn = list_paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urllib.parse.urlsplit(self.path)
                if url.path != PATHS_LIST_ROUTE:
                    self._send(404, {"error": "not found"})
                    return
                query = urllib.parse.parse_qs(url.query)
                try:
                    page = int(query.get("page", ["0"])[0])
                    per_page = int(query.get("itemsPerPage", [str(API_ITEMS_PER_PAGE)])[0])
                except ValueError:
                    self._send(400, {"error": "invalid page or itemsPerPage"})
                    return
                if page < 0 or per_page < 1:
                    self._send(400, {"error": "invalid page or itemsPerPage"})
                    return
                self._send(200, list_fn(page, per_page))

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="media-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def _startup_error(failure: str, ms: MediaServer) -> MediaServerError:
    if "already in use" in failure or "Address already in use" in failure:
        if "nginx" in failure:
            return PortInUseError("RTMP", ms.host, ms.rtmp_port)
        return PortInUseError("RTSP", ms.host, ms.rtsp_port)
    return MediaServerError(failure)


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False
