"""Which languages a stream is dubbed into (issue 18): configuration, publish query, STS support.

A stream's languages come from, in this order:
1. the publish query, `?lang=es,ca` (or `lang=es&lang=ca`), when `ORCH_QUERY_LANGUAGES` is on;
2. the first `ORCH_LANGUAGE_OVERRIDES` pattern that fully matches the stream id;
3. the default list `ORCH_LANGUAGES`.
Each language is checked: a code (`[a-z]{2,3}`, not `in`/`out`, which are media paths), not the
source language, at most `ORCH_MAX_LANGUAGES` per stream, and — when the STS service says what
it dubs (`GET /v1/languages`) — a pair it supports. A refused language gets a `Refusal` (logged
once by the service, counted in `orchestrator_languages_refused_total{reason}`); the others still
start. A query that leaves nothing falls back to the configured list. When nothing is configured
and the query names no language, a stream runs as before issue 18: ONE worker with the worker's
own `--target-language`, publishing `live/<id>/out` (`LanguagePlan.languages == []`).

Nothing here starts a process or logs; `StsLanguages` is the only part doing I/O (one cached
HTTP GET, never with credentials).
"""

from __future__ import annotations

import enum
import re
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from livedub.log import bind, redact_url
from livedub.protocol import LANGUAGES_ROUTE, LanguagesInfo
from livedub.protocol.parse import short_reason
from livedub.typed import ValidationError, explain

log = bind("livedub.orchestrator.languages")

LANGUAGE_CODE = r"[a-z]{2,3}"
"""A language in a media path and in `stream:init`: ISO 639-1 (or 639-3) lower-case letters."""
LANGUAGE_RE = re.compile(LANGUAGE_CODE)
RESERVED_NAMES = frozenset({"in", "out"})
"""`live/<id>/in` and `live/<id>/out` are the input and the alias: never a language."""
QUERY_KEY = "lang"
MAX_QUERY_TOKENS = 32
"""More `lang` tokens than this in one query are not even looked at (refused `too_many`)."""

STS_LANGUAGES_TIMEOUT_S = 2.0
"""One `GET /v1/languages` (a ready hook waits for it: the media server's hook timeout is 5 s)."""
STS_LANGUAGES_TTL_S = 30.0
"""How long an answer is reused."""
STS_LANGUAGES_RETRY_S = 5.0
"""After a failed request, how long the answer stays "unknown" before asking again."""


class RefusalReason(enum.StrEnum):
    """Why a requested language does not get a worker (`orchestrator_languages_refused_total`)."""

    INVALID = "invalid"  # not [a-z]{2,3}, or `in` / `out`
    SAME_AS_SOURCE = "same_as_source"  # nothing to dub
    TOO_MANY = "too_many"  # beyond ORCH_MAX_LANGUAGES
    UNSUPPORTED = "unsupported"  # the STS service does not dub this pair


class LanguageOrigin(enum.StrEnum):
    """Where a stream's languages came from."""

    QUERY = "query"
    OVERRIDE = "override"
    DEFAULT = "default"
    NONE = "none"  # nothing configured: one worker, the worker's own target language


@dataclass(frozen=True)
class Refusal:
    language: str
    reason: RefusalReason
    origin: LanguageOrigin
    message: str

    def as_json(self) -> dict[str, str]:
        return {
            "language": self.language,
            "reason": self.reason.value,
            "origin": self.origin.value,
            "message": self.message,
        }


@dataclass(frozen=True)
class LanguagePlan:
    """The languages a stream gets, in order (the first one also publishes `live/<id>/out`)."""

    languages: list[str]
    origin: LanguageOrigin
    refused: list[Refusal] = field(default_factory=list)
    sts_checked: bool = False  # the STS service's supported pairs were known and applied

    @property
    def workers(self) -> list[str | None]:
        """One entry per worker: the languages, or `[None]` (one worker as before issue 18)."""
        return list(self.languages) or [None]


def is_language(code: str) -> bool:
    return LANGUAGE_RE.fullmatch(code) is not None and code not in RESERVED_NAMES


def parse_language_list(text: str) -> list[str]:
    """`"es, ca"` → `["es", "ca"]` (settings). Raises ValueError on a code that is not one."""
    out: list[str] = []
    for raw in text.split(","):
        code = raw.strip()
        if not code:
            continue
        if not is_language(code):
            raise ValueError(
                f"not a language code: {code[:16]!r} (expected {LANGUAGE_CODE}, not in/out)"
            )
        if code not in out:
            out.append(code)
    return out


def query_languages(query: str | None) -> list[str] | None:
    """The raw `lang` tokens of a publish query, in order (`lang=es,ca` and `lang=es&lang=ca`);
    None when the query has no `lang` parameter. Tokens are lower-cased and stripped, not checked."""
    if not query:
        return None
    values = urllib.parse.parse_qs(query.lstrip("?"), keep_blank_values=True).get(QUERY_KEY)
    if values is None:
        return None
    tokens = [t.strip().lower() for v in values for t in v.split(",")]
    return [t for t in tokens if t][: MAX_QUERY_TOKENS + 1]


def configured_languages(
    stream_id: str, defaults: Sequence[str], overrides: Sequence[tuple[str, Sequence[str]]]
) -> tuple[list[str], LanguageOrigin]:
    """The stream's configured languages: the first override whose pattern fully matches the
    stream id, else the default list."""
    for pattern, languages in overrides:
        if re.fullmatch(pattern, stream_id):
            return list(languages), LanguageOrigin.OVERRIDE
    if defaults:
        return list(defaults), LanguageOrigin.DEFAULT
    return [], LanguageOrigin.NONE


def _check(
    tokens: Iterable[str],
    origin: LanguageOrigin,
    *,
    source: str,
    max_languages: int,
    support: LanguagesInfo | None,
) -> tuple[list[str], list[Refusal]]:
    accepted: list[str] = []
    refused: list[Refusal] = []
    for code in tokens:
        if code in accepted:
            continue
        if not is_language(code):
            reason, msg = RefusalReason.INVALID, f"{code[:16]!r} is not a language code ({LANGUAGE_CODE}, not in/out)"
            code = code[:16]
        elif code == source:
            reason, msg = RefusalReason.SAME_AS_SOURCE, f"{code} is the source language: nothing to dub"
        elif len(accepted) >= max_languages:
            reason, msg = RefusalReason.TOO_MANY, f"at most {max_languages} languages per stream"
        elif support is not None and not support.supports(source, code):
            known = ", ".join(f"{source}->{t}" for t in support.targets_of(source)) or "none"
            reason = RefusalReason.UNSUPPORTED
            msg = f"the STS service ({support.backend}) does not dub {source}->{code}; available: {known}"
        else:
            accepted.append(code)
            continue
        if all(r.language != code for r in refused):
            refused.append(Refusal(code, reason, origin, msg))
    return accepted, refused


def plan_languages(
    stream_id: str,
    query: str | None,
    *,
    defaults: Sequence[str],
    overrides: Sequence[tuple[str, Sequence[str]]],
    use_query: bool,
    source: str,
    max_languages: int,
    support: LanguagesInfo | None,
) -> LanguagePlan:
    """The stream's languages (see the module docstring). `support` None: the STS service's
    pairs are unknown, so no language is refused as unsupported (its worker is then refused at
    `stream:init` and sends its segments out original, `config_refused`)."""
    refused: list[Refusal] = []
    requested = query_languages(query) if use_query else None
    if requested is not None:
        accepted, refused = _check(
            requested, LanguageOrigin.QUERY, source=source, max_languages=max_languages, support=support
        )
        if accepted:
            return LanguagePlan(accepted, LanguageOrigin.QUERY, refused, support is not None)
    configured, origin = configured_languages(stream_id, defaults, overrides)
    accepted, more = _check(configured, origin, source=source, max_languages=max_languages, support=support)
    return LanguagePlan(accepted, origin if accepted else LanguageOrigin.NONE, refused + more, support is not None)


def needs_languages(
    query: str | None, *, use_query: bool, defaults: Sequence[str], overrides: Sequence[object]
) -> bool:
    """Whether planning a stream may need the STS service's pairs (else no request is made)."""
    return bool(defaults or overrides or (use_query and query_languages(query) is not None))


class StsLanguages:
    """`GET <sts_url>/v1/languages`, cached (`STS_LANGUAGES_TTL_S`). `get()` returns None when
    the service cannot say (down, an older service without the route, a malformed answer); a
    failure is logged once until an answer comes again."""

    def __init__(self, sts_url: str, *, timeout_s: float = STS_LANGUAGES_TIMEOUT_S) -> None:
        self.url = sts_url.rstrip("/") + LANGUAGES_ROUTE
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._cached: LanguagesInfo | None = None
        self._until = 0.0
        self._failing = False

    async def get(self) -> LanguagesInfo | None:
        now = time.monotonic()
        if now < self._until:
            return self._cached
        info, error = await self._fetch()
        if info is not None:
            self._cached, self._until = info, now + STS_LANGUAGES_TTL_S
            if self._failing:
                log.info("STS languages readable again", ctx={"url": redact_url(self.url)})
            self._failing = False
            return info
        self._cached, self._until = None, now + STS_LANGUAGES_RETRY_S
        if not self._failing:
            log.warning(
                "STS languages unknown: languages are not checked against the STS",
                ctx={"url": redact_url(self.url), "error": error},
            )
        self._failing = True
        return None

    async def _fetch(self) -> tuple[LanguagesInfo | None, str]:
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as http:
                async with http.get(self.url, headers={"Accept": "application/json"}) as resp:
                    if resp.status != 200:
                        return None, f"HTTP {resp.status}"
                    doc = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:200]
        try:
            return LanguagesInfo.parse(doc), ""
        except ValidationError as exc:
            return None, f"invalid answer: {short_reason(explain(exc))}"
