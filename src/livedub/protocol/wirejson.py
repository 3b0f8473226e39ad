"""The JSON codec of every Socket.IO packet, on both sides (python-socketio's `json=`).

A `fragment:data` or `fragment:processed` carries its audio as one long base64 string (1.5 MB for
6 s of 48 kHz stereo wav). The standard library's encoder escapes such a string character by
character; orjson copies it. Measured here on such a packet: `json.dumps` 5.6–6.8 ms, orjson
0.5 ms; `json.loads` 1.1–2.0 ms, orjson 0.5–0.9 ms — on each side of every fragment's round trip
(the whole round trip per format: `python -m bench.wire`, docs/performance.md).

Same JSON as the standard library's compact output (non-ASCII written as UTF-8, not escaped),
with two differences about what no peer should send: an integer beyond 64 bits is read as a float
(in linear time: engine.io's own codec refuses integers of over 100 digits because parsing huge
ones is a denial of service; here a strict integer field then refuses the float, and one beyond a
double's range is refused like invalid JSON), and NaN / Infinity, which are not JSON, are not read
(and written as null). Writing, what orjson cannot write (an integer beyond 64 bits, which no
model of ours holds: only a test's hostile peer sends one) is written by the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any, **_ignored: Any) -> str:
    """`json.dumps` for python-socketio (which passes `separators`; orjson's output is compact)."""
    try:
        # int keys as strings, as json does
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(data: str | bytes, **_ignored: Any) -> Any:
    """`json.loads` for python-socketio; raises `ValueError` (orjson.JSONDecodeError) as it does."""
    return orjson.loads(data)
