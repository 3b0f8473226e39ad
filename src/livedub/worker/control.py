"""The worker's operator controls: the "original only" switch (bypass dubbing) and the last lines.

The orchestrator's console switches a stream to *original only*: the worker stops sending
fragments to the STS and every segment it cuts from then on goes out with its original audio, on
the same timeline (the fallback path every segment already has), counted as
`worker_fallback_total{reason="original_only"}`. Switching back sends the next segments again.
Fragments already in flight finish as they would (dubbed if their answer comes in time).

Control channel: `POST /control/original-only` with `{"enabled": true|false}` on the worker's
own metrics port (127.0.0.1 by default), authenticated by `Authorization: Bearer <token>` where
the token is `WORKER_CONTROL_TOKEN` — generated per worker process by the orchestrator and handed
over by environment only (never argv, never logged; compared in constant time). Without a token the
route does not exist (404). `WORKER_ORIGINAL_ONLY` starts the worker in that mode (the
orchestrator sets it when it restarts a stream that is in original-only mode).

The last transcript and translation lines the STS sent (`fragment:processed`) are kept here for
`/health`, which the console shows. This module holds no media and never blocks.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from livedub.log import bind
from livedub.reasons import FallbackReason
from livedub.typed import Secret

ORIGINAL_ONLY_REASON = (
    FallbackReason.ORIGINAL_ONLY
)  # worker_fallback_total{reason} of a bypassed segment
CONTROL_ROUTE = "/control/original-only"
_MAX_LINE_CHARS = 500  # a hostile STS must not grow /health without bound


class WorkerControl:
    """The switch and the last lines of one worker.

    Args:
        stream_id: for the log lines.
        token: the control token (None: no control route).
        original_only: the mode at start.
        on_switch: told each change of the switch (the `DubbingSession`, which stops sending and
            sends the segments queued and not sent yet out original too).
    """

    def __init__(
        self,
        stream_id: str,
        *,
        token: Secret | None,
        original_only: bool = False,
        on_switch: Callable[[bool], None] | None = None,
    ) -> None:
        self._log = bind(__name__, stream_id=stream_id)
        self._token = token
        self.original_only = original_only
        self.on_switch = on_switch
        self.last_transcript: str | None = None
        self.last_translation: str | None = None

    def set_original_only(self, enabled: bool) -> None:
        if enabled == self.original_only:
            return
        self.original_only = enabled
        self._log.info("original-only switched", ctx={"original_only": str(enabled).lower()})
        if self.on_switch is not None:
            self.on_switch(enabled)

    def note_lines(self, transcript: str | None, translation: str | None) -> None:
        """What the STS heard and said for the last fragment it processed (blank lines kept out)."""
        if transcript and transcript.strip():
            self.last_transcript = transcript.strip()[:_MAX_LINE_CHARS]
        if translation and translation.strip():
            self.last_translation = translation.strip()[:_MAX_LINE_CHARS]

    def health(self) -> dict[str, Any]:
        return {
            "original_only": self.original_only,
            "last_transcript": self.last_transcript,
            "last_translation": self.last_translation,
        }

    # --- the HTTP route ------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        if self._token is not None:
            app.router.add_post(CONTROL_ROUTE, self._handle)

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        given = request.headers.get("Authorization", "")
        expected = "Bearer " + self._token.get_secret_value()
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self._log.warning("control request refused", ctx={"peer": request.remote})
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            doc = json.loads(await request.read())
            enabled = doc["enabled"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad_request"}, status=400)
        if not isinstance(enabled, bool):
            return web.json_response({"error": "bad_request"}, status=400)
        self.set_original_only(enabled)
        return web.json_response({"original_only": self.original_only})
