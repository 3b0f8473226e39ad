"""Read the worker's structured log lines (text format: `TS LEVEL logger: msg key=value ...`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_LINE = re.compile(r"^(\S+Z) (\w+)\s+(\S+): (.*)$")
_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass
class LogLine:
    ts: float
    level: str
    logger: str
    msg: str
    fields: dict[str, str]


def parse(text: str) -> list[LogLine]:
    out: list[LogLine] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        ts = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        body = m.group(4)
        fields = {k: v.strip('"') for k, v in _KV.findall(body)}
        first_kv = _KV.search(body)
        msg = body[: first_kv.start()].strip() if first_kv else body
        out.append(LogLine(ts, m.group(2), m.group(3), msg, fields))
    return out


def find(lines: list[LogLine], msg: str, **fields: str) -> list[LogLine]:
    return [ln for ln in lines if ln.msg == msg and all(ln.fields.get(k) == v for k, v in fields.items())]
