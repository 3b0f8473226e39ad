"""Reading an STS service's debug history (`GET /debug/streams/<stream_id>`, served by
`livedub.sts.server`): what it answered per fragment, for the demo's summary and the benchmarks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEBUG_STREAMS_PATH = "/debug/streams"


def processed_sent(sts_url: str, stream_id: str, timeout_s: float) -> list[dict[str, Any]] | None:
    """The `fragment:processed` messages the STS sent for `stream_id` (processing_time_ms, status,
    texts, stage timings), oldest first; None when the history is not available (unreachable,
    unknown stream, not JSON)."""
    try:
        with urllib.request.urlopen(f"{sts_url}{DEBUG_STREAMS_PATH}/{stream_id}", timeout=timeout_s) as r:
            doc = json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    items = doc.get("processed_sent") if isinstance(doc, dict) else None
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else None
