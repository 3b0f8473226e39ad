"""Reconcile the orchestrator's streams with what the media server says is live.

Hooks alone lose streams: an orchestrator that restarts (or misses a hook) never hears the ready
of a stream that is already published. So at start and every `reconcile_interval_s` the
`Reconciler` lists the media server's paths (MediaMTX `GET /v3/paths/list`, paged; `livedub
media-server --api-port` serves the same) and starts a worker, through the supervisor's
idempotent `on_ready`, for each live `live/<id>/in` path that has none. A stream refused for
capacity (by a hook or by a pass) is kept and retried first when a slot frees (the supervisor's
`on_slot_freed` wakes the loop at once), until its not-ready or until the media server stops
listing it.

Nothing here starts a process itself, signals anything, or logs the API credentials.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from livedub.clock import Clock
from livedub.log import bind
from livedub.orchestrator.languages import LanguagePlan
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import CapacityError, ShuttingDown, StreamState, Supervisor

log = bind("livedub.orchestrator.reconcile")

PATHS_LIST_ROUTE = "/v3/paths/list"
ITEMS_PER_PAGE = 100
MAX_PAGES = 100  # 10,000 paths: far beyond one orchestrator's max_streams
#: Streams whose current publish already ran to its end here: a pass does not start them again.
_ENDED_STATES = frozenset({StreamState.DONE, StreamState.FAILED})


class MediaApiError(Exception):
    """The media server's API could not be read (down, refused, or an unexpected answer)."""


@dataclass(frozen=True)
class LivePath:
    """A live input path: the stream id and its publisher, as a ready hook would carry them."""

    stream_id: str
    source_type: str | None = None
    source_id: str | None = None
    languages: tuple[str | None, ...] | None = None  # planned by a hook refused for capacity


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def live_inputs(doc: Any, input_path_re: re.Pattern[str]) -> list[LivePath]:
    """The live `live/<id>/in` paths of one `PathList` page. A path is live when `ready` (MediaMTX
    < 1.15 and still sent) or its successors `available` / `online` are true."""
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise MediaApiError("not a MediaMTX PathList (no items list)")
    out: list[LivePath] = []
    for item in doc["items"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        match = input_path_re.fullmatch(item["name"])
        if match is None or not any(item.get(k) is True for k in ("ready", "available", "online")):
            continue
        source = item.get("source")
        if not isinstance(source, dict):
            source = {}
        out.append(
            LivePath(match.group("stream_id"), _text(source.get("type"), 64), _text(source.get("id"), 128))
        )
    return out


def _page_count(doc: Any) -> int:
    count = doc.get("pageCount") if isinstance(doc, dict) else None
    return count if isinstance(count, int) and count >= 0 else 1


class Reconciler:
    """See the module docstring. `run()` is the loop; `reconcile_once()` one pass."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        supervisor: Supervisor,
        *,
        clock: Clock,
        input_path_re: re.Pattern[str],
        manages: Callable[[str], bool],
        plan: Callable[[str, str | None, str | None], Awaitable[LanguagePlan]] | None = None,
    ) -> None:
        self._s = settings
        self._sup = supervisor
        self._clock = clock
        self._path_re = input_path_re
        self._manages = manages
        self._plan = plan  # (stream id, query, source id) -> its languages; None: one worker
        self._waiting: OrderedDict[str, LivePath] = OrderedDict()  # refused for capacity
        self._wake = asyncio.Event()
        self.runs: dict[str, int] = {"ok": 0, "error": 0, "off": 0}
        self.started_total = 0

    @property
    def enabled(self) -> bool:
        return bool(self._s.media_api_url)

    # --- events from the service and the supervisor -------------------------------------------

    def note_refused(self, path: LivePath) -> None:
        """A ready refused for capacity: start it when a slot frees."""
        self._waiting[path.stream_id] = path

    def forget(self, stream_id: str) -> None:
        """Its not-ready came: no longer waiting for a slot."""
        self._waiting.pop(stream_id, None)

    def slot_freed(self) -> None:
        if self._waiting:
            self._wake.set()

    @property
    def waiting(self) -> list[str]:
        return list(self._waiting)

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        auth = None
        creds = self._s.media_api_credentials
        if creds is not None:
            user, _, password = creds.get_secret_value().partition(":")
            auth = aiohttp.BasicAuth(user, password)
        timeout = aiohttp.ClientTimeout(total=self._s.media_api_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, auth=auth) as http:
            while not self._sup.closing:
                self._wake.clear()
                try:
                    await self.reconcile_once(http)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not end reconciling for good
                    log.exception("reconcile pass failed")
                wake = asyncio.ensure_future(self._wake.wait())
                timer = asyncio.ensure_future(self._clock.sleep(self._s.reconcile_interval_s))
                try:
                    await asyncio.wait({wake, timer}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                    timer.cancel()

    async def list_live(self, http: aiohttp.ClientSession) -> list[LivePath]:
        """Every live input path, all pages."""
        url = self._s.media_api_url + PATHS_LIST_ROUTE
        found: list[LivePath] = []
        page, pages = 0, 1
        while page < min(pages, MAX_PAGES):
            params = {"page": str(page), "itemsPerPage": str(ITEMS_PER_PAGE)}
            try:
                async with http.get(url, params=params, headers={"Accept": "application/json"}) as resp:
                    if resp.status != 200:
                        raise MediaApiError(f"HTTP {resp.status}")
                    doc = await resp.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise MediaApiError(f"{type(exc).__name__}: {exc}") from None
            found.extend(live_inputs(doc, self._path_re))
            pages = _page_count(doc)
            page += 1
        return found

    async def reconcile_once(self, http: aiohttp.ClientSession | None) -> int:
        """One pass: returns how many workers it started."""
        live: list[LivePath] | None = None
        if self.enabled and http is not None:
            try:
                live = await self.list_live(http)
                self.runs["ok"] += 1
            except MediaApiError as exc:
                self.runs["error"] += 1
                log.warning("media API not readable: reconcile skipped", ctx={"error": str(exc)[:200]})
        else:
            self.runs["off"] += 1
        if live is not None:
            names = {p.stream_id for p in live}
            for sid in [s for s in self._waiting if s not in names]:
                del self._waiting[sid]  # no longer published
        candidates = list(self._waiting.values())
        candidates += [p for p in live or [] if p.stream_id not in self._waiting]
        started = 0
        for path in candidates:
            sid = path.stream_id
            if not self._manages(sid) or self._sup.is_active(sid):
                self._waiting.pop(sid, None)
                continue
            info = self._sup.get(sid)
            if info is not None and info.state in _ENDED_STATES and path.source_id and info.source_id == path.source_id:
                continue  # this publish already ran to its end here
            languages = path.languages
            if languages is None and self._plan is not None:
                # the media API gives no query: the configured languages (a hook refused for
                # capacity kept the ones it planned, query included)
                languages = tuple((await self._plan(sid, None, path.source_id)).workers)
            stopped = self._sup.operator_stopped_languages(sid, path.source_id)
            if stopped:  # the operator stopped these workers of this publish (the console)
                kept = tuple(lang for lang in (languages or (None,)) if lang not in stopped)
                if not kept:
                    continue
                languages = kept
            try:
                result = self._sup.on_ready(
                    sid, source_type=path.source_type, source_id=path.source_id, languages=languages
                )
            except CapacityError:
                if sid not in self._waiting:
                    log.warning("reconcile: no free slot, stream waits", ctx={"stream_id": sid})
                self._waiting[sid] = path
                continue
            except ShuttingDown:
                break
            except ValueError:
                continue
            self._waiting.pop(sid, None)
            if result.action == "started":
                started += 1
                self.started_total += 1
                log.info("reconcile: worker started for a live stream", ctx={"stream_id": sid})
        return started


class ReconcileCollector(Collector):
    """`orchestrator_reconcile_*` metrics, read at scrape time."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "orchestrator_reconcile_runs",
            "Reconcile passes by result (ok: media API listed; error: not readable; off: no API set).",
            labels=["result"],
        )
        for result, n in sorted(self._r.runs.items()):
            runs.add_metric([result], n)
        yield runs
        started = CounterMetricFamily(
            "orchestrator_reconcile_started", "Workers started by reconcile (live streams no hook started)."
        )
        started.add_metric([], self._r.started_total)
        yield started
        waiting = GaugeMetricFamily(
            "orchestrator_streams_waiting_capacity", "Live streams refused for capacity, waiting for a slot."
        )
        waiting.add_metric([], len(self._r.waiting))
        yield waiting
