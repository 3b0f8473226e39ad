"""The live console of `livedub serve`: `GET /`, its data, its actions, and the API's auth.

- `GET /`: one HTML page (plain HTML + a small script, `console_static/`, no build step) listing
  every stream with its state, uptime, segments dubbed/original and the fallback reasons, breaker,
  in-flight, output delay, A/V sync, last transcript and translation lines and output links,
  refreshed live from `GET /v1/console/events` (server-sent events, one `rows` document every
  `ORCH_CONSOLE_REFRESH_S`); `GET /v1/console` is the same document once.
- `POST /v1/streams/{id}/actions/{action}`, action `stop`, `restart`, `original_only`, `dubbed`.
- Auth (`ConsoleAuth`, an aiohttp middleware over the whole API): with `ORCH_API_TOKEN` set, the
  page, `/v1/streams*`, `/v1/console*` and every action need `Authorization: Bearer <token>` or the
  console's session cookie (set by the sign-in form at `/login`: HttpOnly, SameSite=Strict; its
  value is an HMAC of the token, never the token). Without a token the read endpoints stay open
  (as before) and actions are refused (403), unless `ORCH_INSECURE_OPEN_API`. `/health`,
  `/metrics` and the hooks (their own secret) are never behind it. Tokens are compared in constant
  time and never logged.

A row is the supervisor's `StreamInfo` JSON plus what the stream's worker says on its own port
(`/metrics`, `/health`: mode, last lines, target language), so fields another version adds to
`StreamInfo` (e.g. `language`) reach the page without a change here. The original-only switch
goes to the worker's loopback control route with the per-process token (worker/control.py); a
worker that reports another mode than the stream's switch (it was starting when the switch was
pressed) is told again on the next refresh.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from livedub.log import bind
from livedub.orchestrator.settings import OUT_NAME, OrchestratorSettings
from livedub.orchestrator.supervisor import (
    PRIMARY,
    CapacityError,
    ControlTarget,
    ShuttingDown,
    Supervisor,
    UnknownStream,
    worker_label,
)
from livedub.worker.control import CONTROL_ROUTE

log = bind("livedub.orchestrator.console")

CONSOLE_ROUTE = "/v1/console"
EVENTS_ROUTE = "/v1/console/events"
LOGIN_ROUTE = "/login"
LOGOUT_ROUTE = "/logout"
ACTION_ROUTE = "/v1/streams/{stream_id}/actions/{action}"
SESSION_COOKIE = "livedub_console"
#: A browser session (cookie) must send this header with an action: a cross-site page cannot
#: without a CORS preflight (defence in depth next to SameSite=Strict).
CONSOLE_HEADER = "X-Livedub-Console"
_STATIC = resources.files("livedub.orchestrator") / "console_static"
_STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
_SESSION_LABEL = b"livedub-console-session-v1"
#: Paths no operator token guards: probes, Prometheus, the hooks (own secret), the sign-in form
#: and the page's script and style (no data in them).
_PUBLIC_PATHS = frozenset(
    {"/health", "/metrics", LOGIN_ROUTE, LOGOUT_ROUTE, *(f"/console/{n}" for n in _STATIC_FILES)}
)
_PUBLIC_PREFIXES = ("/v1/mediamtx/",)
_BREAKER_NAMES = {0: "closed", 1: "half-open", 2: "open"}
_NO_STORE = {"Cache-Control": "no-store"}
#: The HTML pages: only this origin's script and style, never inside a frame (no clickjacking of
#: the action buttons), never cached.
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_TELL_FOR_S = 5.0  # an action retries this long: a worker just started binds its port within ~1 s
_HEAL_INTERVAL_S = 10.0  # a worker that reports the wrong mode is told again at most this often


class ConsoleAction(enum.StrEnum):
    STOP = "stop"
    RESTART = "restart"
    ORIGINAL_ONLY = "original_only"
    DUBBED = "dubbed"


class AuthMode(enum.StrEnum):
    """How the API is protected (shown by the console, logged at start)."""

    TOKEN = "token"  # ORCH_API_TOKEN: everything but the public paths needs it
    CLOSED = "closed"  # no token: reads open, actions refused
    OPEN = "open"  # no token, --insecure-open-api: everything open


def _static(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


class ConsoleAuth:
    """The operator token check, as an aiohttp middleware plus the sign-in handlers."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self._token = settings.api_token
        self.mode = (
            AuthMode.TOKEN
            if self._token is not None
            else AuthMode.OPEN
            if settings.insecure_open_api
            else AuthMode.CLOSED
        )

    def session_value(self) -> str:
        """The cookie value: an HMAC of the token (a cookie never carries the token itself)."""
        assert self._token is not None
        key = self._token.get_secret_value().encode("utf-8")
        return hmac.new(key, _SESSION_LABEL, hashlib.sha256).hexdigest()

    def _token_ok(self, given: str) -> bool:
        assert self._token is not None
        return hmac.compare_digest(given.encode("utf-8"), self._token.get_secret_value().encode("utf-8"))

    def _bearer_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and self._token_ok(header[len("Bearer ") :])

    def _cookie_ok(self, request: web.Request) -> bool:
        value = request.cookies.get(SESSION_COOKIE, "")
        return bool(value) and hmac.compare_digest(value.encode("utf-8"), self.session_value().encode("utf-8"))

    @staticmethod
    def _public(path: str) -> bool:
        return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._public(request.path):
            return await handler(request)
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        if self.mode is AuthMode.CLOSED:
            if write:
                return _refused(403, "forbidden", "no ORCH_API_TOKEN configured: actions are closed")
            return await handler(request)
        if self.mode is AuthMode.OPEN:
            return await handler(request)
        if self._bearer_ok(request):
            return await handler(request)
        if self._cookie_ok(request):
            if write and request.headers.get(CONSOLE_HEADER) != "1":
                return _refused(403, "forbidden", f"a console session must send {CONSOLE_HEADER}: 1")
            return await handler(request)
        log.warning(
            "API request refused: no valid token",
            ctx={"method": request.method, "path": request.path, "peer": request.remote},
        )
        if request.method == "GET" and request.path == "/":
            return _see_other(LOGIN_ROUTE)
        return _refused(401, "unauthorized", "missing or wrong operator token")

    # --- sign-in -----------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return _login_page("")

    async def login(self, request: web.Request) -> web.Response:
        if self.mode is not AuthMode.TOKEN:
            return _see_other("/")
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not self._token_ok(given.strip()):
            log.warning("console sign-in refused", ctx={"peer": request.remote})
            return _login_page("Wrong token.", status=401)
        log.info("console sign-in", ctx={"peer": request.remote})
        response = _see_other("/")
        response.set_cookie(
            SESSION_COOKIE,
            self.session_value(),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = _see_other(LOGIN_ROUTE if self.mode is AuthMode.TOKEN else "/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **_NO_STORE})


def _refused(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _login_page(message: str, status: int = 200) -> web.Response:
    # `message` is one of this module's fixed strings, never request data
    html = _static("login.html").replace("{{message}}", message)
    return web.Response(text=html, content_type="text/html", status=status, headers=_PAGE_HEADERS)



# --- rows ------------------------------------------------------------------------------------------


def worker_figures(text: str) -> dict[str, Any]:
    """The console's view of one worker's `/metrics` page."""
    out: dict[str, Any] = {"segments": {}, "fallback_reasons": {}, "fragments": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "worker_segments_total":
                out["segments"][labels.get("source", "?")] = int(value)
            elif name == "worker_fallback_total" and value:
                out["fallback_reasons"][labels.get("reason", "?")] = int(value)
            elif name == "worker_audio_fragments_total":
                out["fragments"][labels.get("status", "?")] = int(value)
            elif name == "worker_sts_breaker_state":
                out["breaker"] = _BREAKER_NAMES.get(int(value), str(value))
            elif name == "worker_inflight_fragments":
                out["inflight"] = int(value)
            elif name == "worker_output_delay_ms":
                out["output_delay_ms"] = value
            elif name == "worker_av_sync_delta_ms":
                out["av_sync_delta_ms"] = round(value, 3)
    return out


class Console:
    """The page, its data and its actions; `add_routes` wires them into the service's app."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        supervisor: Supervisor,
        http: Callable[[], aiohttp.ClientSession | None],
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.auth = ConsoleAuth(settings)
        self._http = http
        self._stop = asyncio.Event()
        self._healed_at: dict[str, float] = {}  # worker label → monotonic time of the last retry
        self._languages: dict[str, str] = {}  # worker label → target language its worker reported

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self.auth.middleware)
        app.router.add_get("/", self._page)
        for name in _STATIC_FILES:
            app.router.add_get(f"/console/{name}", self._asset)
        app.router.add_get(LOGIN_ROUTE, self.auth.login_form)
        app.router.add_post(LOGIN_ROUTE, self.auth.login)
        app.router.add_post(LOGOUT_ROUTE, self.auth.logout)
        app.router.add_get(CONSOLE_ROUTE, self._rows_once)
        app.router.add_get(EVENTS_ROUTE, self._events)
        app.router.add_post(ACTION_ROUTE, self._action)

    def log_auth_mode(self) -> None:
        if self.auth.mode is AuthMode.OPEN:
            log.warning("console actions are NOT authenticated (--insecure-open-api)")
        elif self.auth.mode is AuthMode.CLOSED:
            log.warning("ORCH_API_TOKEN unset: console actions are refused (403), reads are open")

    def close(self) -> None:
        """End every event stream (the service is stopping)."""
        self._stop.set()

    # --- page --------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_static("index.html"), content_type="text/html", headers=_PAGE_HEADERS
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        return web.Response(text=_static(name), content_type=_STATIC_FILES[name])

    # --- data --------------------------------------------------------------------------------

    async def _fetch(self, port: int, path: str) -> str | None:
        http = self._http()
        if http is None:
            return None
        url = f"http://{self.settings.worker_metrics_host}:{port}{path}"
        try:
            async with http.get(url) as resp:
                return await resp.text()  # /health answers 503 with its document when failing
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return None

    async def _row(self, info_json: dict[str, Any]) -> dict[str, Any]:
        sid = str(info_json["stream_id"])
        language = info_json.get("language")  # the worker's key: None for a stream's only worker
        label = worker_label(sid, language if isinstance(language, str) else None)
        paths = [str(p) for p in info_json.get("outputs") or ()] or [f"live/{sid}/{OUT_NAME}"]
        row: dict[str, Any] = {
            **info_json,
            "key_language": language,
            # one link per media path the worker publishes, named by its last part (out, es, ...)
            "links": {p.rsplit("/", 1)[-1]: self.settings.play_url(p) for p in paths},
            "worker": None,
            "figures": None,
        }
        if (hls := self.settings.hls_url(paths[-1])) is not None:
            row["links"]["hls"] = hls
        port = info_json.get("metrics_port")
        if isinstance(port, int) and port:
            metrics, health = await asyncio.gather(
                self._fetch(port, "/metrics"), self._fetch(port, "/health")
            )
            if metrics is not None:
                try:
                    row["figures"] = worker_figures(metrics)
                except ValueError:
                    row["figures"] = None
            if health is not None:
                try:
                    doc = json.loads(health)
                except ValueError:
                    doc = None
                if isinstance(doc, dict):
                    row["worker"] = doc
                    await self._heal_mode(sid, language, bool(info_json.get("original_only")), doc)
        reported = (row["worker"] or {}).get("target_language")
        if isinstance(reported, str):
            self._languages[label] = reported
        if not row.get("language"):  # a per-language worker's own field wins when StreamInfo has it
            row["language"] = self._languages.get(label)  # else the worker's (last) target language
        return row

    async def _heal_mode(
        self, stream_id: str, language: object, wanted: bool, health: dict[str, Any]
    ) -> None:
        """A worker that missed the switch (it was starting) is told again."""
        if "original_only" not in health or bool(health["original_only"]) == wanted:
            return
        now = time.monotonic()
        label = worker_label(stream_id, language if isinstance(language, str) else None)
        if now - self._healed_at.get(label, -_HEAL_INTERVAL_S) < _HEAL_INTERVAL_S:
            return  # several pages refreshing, or a worker without the route: not every second
        self._healed_at[label] = now
        target = self.supervisor.control_target(stream_id, language)
        if target is not None:
            log.info("worker reports another mode: told again", ctx={"stream_id": stream_id})
            await self._tell(stream_id, target, wanted)

    async def rows(self) -> dict[str, Any]:
        infos = [info.as_json() for info in self.supervisor.streams()]
        known = {worker_label(str(i["stream_id"]), i.get("language")) for i in infos}  # type: ignore[arg-type]
        for cache in (self._languages, self._healed_at):
            for sid in set(cache) - known:  # streams the supervisor no longer keeps
                del cache[sid]
        rows = await asyncio.gather(*(self._row(info) for info in infos))
        return {
            "streams": list(rows),
            "count": len(rows),
            "auth": str(self.auth.mode),
            "actions_allowed": self.auth.mode is not AuthMode.CLOSED,
            "generated_at": time.time(),
        }

    async def _rows_once(self, request: web.Request) -> web.Response:
        return web.json_response(await self.rows(), headers=_NO_STORE)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        try:
            while not self._stop.is_set():
                doc = json.dumps(await self.rows(), default=str)
                await response.write(f"event: rows\ndata: {doc}\n\n".encode())
                try:
                    await asyncio.wait_for(self._stop.wait(), self.settings.console_refresh_s)
                except TimeoutError:
                    pass
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError too: the page went away
            pass
        return response

    # --- actions -----------------------------------------------------------------------------

    async def _tell(self, stream_id: str, target: ControlTarget, enabled: bool) -> bool:
        """Switch the live worker; True if it answered with the new mode."""
        http = self._http()
        if http is None:
            return False
        url = f"http://{self.settings.worker_metrics_host}:{target.port}{CONTROL_ROUTE}"
        try:
            async with http.post(
                url,
                json={"enabled": enabled},
                headers={"Authorization": f"Bearer {target.token}"},
            ) as resp:
                doc = await resp.json() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.debug("worker control failed", ctx={"stream_id": stream_id, "error": str(exc)[:200]})
            return False
        return isinstance(doc, dict) and doc.get("original_only") is enabled

    async def _tell_live_worker(self, stream_id: str, language: object, enabled: bool) -> bool | None:
        """Switch the stream's live worker, retrying while it starts; None: no live worker (the
        next one starts in the stream's mode)."""
        deadline = time.monotonic() + _TELL_FOR_S
        while (target := self.supervisor.control_target(stream_id, language)) is not None:
            if await self._tell(stream_id, target, enabled):
                return True
            if time.monotonic() >= deadline:
                log.warning("worker did not take the switch", ctx={"stream_id": stream_id, "tried_s": _TELL_FOR_S})
                return False
            await asyncio.sleep(0.25)
        return None

    async def _action(self, request: web.Request) -> web.Response:
        sid = request.match_info["stream_id"]
        # ?language=xx: that language's worker; none: the stream's first (its only one, without
        # languages configured)
        language: object = request.query.get("language", PRIMARY)
        try:
            action = ConsoleAction(request.match_info["action"])
        except ValueError:
            return _refused(404, "not_found", f"actions: {', '.join(a.value for a in ConsoleAction)}")
        log.info(
            "console action",
            ctx={"stream_id": sid, "language": request.query.get("language"), "action": str(action), "peer": request.remote},
        )
        applied: bool | None = None
        try:
            if action is ConsoleAction.STOP:
                result = self.supervisor.operator_stop(sid, language)
            elif action is ConsoleAction.RESTART:
                result = self.supervisor.operator_restart(sid, language)
            else:
                enabled = action is ConsoleAction.ORIGINAL_ONLY
                self.supervisor.set_original_only(sid, enabled, language)
                applied = await self._tell_live_worker(sid, language, enabled)
                result = None
        except UnknownStream:
            return _refused(404, "not_found", "no such stream")
        except CapacityError as exc:
            return _refused(503, "capacity", str(exc))
        except ShuttingDown:
            return _refused(503, "unavailable", "shutting down")
        info = self.supervisor.get(sid, language)
        return web.json_response(
            {
                "stream_id": sid,
                "action": str(action),
                "result": (
                    result.action
                    if result is not None
                    else "recorded" if applied is None else "applied" if applied else "not_applied"
                ),
                "state": info.state.value if info else None,
                "original_only": info.original_only if info else None,
                "applied": applied,
            }
        )
