"""Structured logging for every livedub process.

Lines are `key=value` text (default) or one JSON object per line (`LIVEDUB_LOG_FORMAT=json`).
Context such as `stream_id` and `fragment_id` is passed with `extra={"ctx": {...}}` or bound once
with `bind(logger, stream_id=...)`, and appears on every line. Never prints; never raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        ctx: Mapping[str, Any] = getattr(record, "ctx", None) or {}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        if self.as_json:
            doc: dict[str, Any] = {
                "ts": ts,
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
                **ctx,
            }
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return json.dumps(doc, default=str)
        fields = " ".join(f"{k}={_text(v)}" for k, v in ctx.items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    s = str(value)
    return json.dumps(s) if (" " in s or not s) else s


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once per process (stderr)."""
    level = (level or os.environ.get("LIVEDUB_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("LIVEDUB_LOG_FORMAT") or "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=(fmt == "json")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("engineio", "socketio", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class BoundLogger(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """A logger that adds fixed context (e.g. stream_id) and per-call context to each line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.setdefault("extra", {})
        ctx = dict(self.extra or {})
        ctx.update(extra.get("ctx", {}))
        ctx.update(kwargs.pop("ctx", {}) or {})
        extra["ctx"] = ctx
        return msg, kwargs

    def bind(self, **ctx: Any) -> BoundLogger:
        merged = dict(self.extra or {})
        merged.update(ctx)
        return BoundLogger(self.logger, merged)


def bind(logger: logging.Logger | str, **ctx: Any) -> BoundLogger:
    """Return `logger` with `ctx` on every line: `log.info("sent", ctx={"fragment_id": fid})`."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return BoundLogger(logger, ctx)


REDACTED = "***"
#: `scheme://user:pass@` anywhere in a text (a URL alone, or quoted in an error message).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"]*@")
#: `?name=value` / `&name=value` whose name is a credential (matched case-insensitively anywhere
#: in the name): MediaMTX `user` / `pass`, SRT `passphrase`, tokens, keys, signatures.
_SECRET_PARAM = re.compile(
    r"(?P<lead>[?&;])(?P<name>[^=&?;#\s]*(?:pass|pwd|token|secret|key|auth|sig|cred|user)"
    r"[^=&?;#\s]*)=[^&;#\s'\"]*",
    re.IGNORECASE,
)


def redact_url(url: object) -> str:
    """`url` (or any text holding URLs, e.g. an error message) with credentials replaced by `***`:
    the user-info (`rtsp://user:pass@host` → `rtsp://***@host`) and the value of every query
    parameter that looks like a credential (`passphrase=`, `pass=`, `user=`, `token=` …).
    Everything else is kept, so a log still shows where a URL points. Use it for every URL that
    is logged, shown or put in an exception message."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", str(url))
    return _SECRET_PARAM.sub(lambda m: f"{m['lead']}{m['name']}={REDACTED}", text)
