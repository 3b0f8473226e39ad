"""Property tests of the echo service's logic: random event sequences with random payloads never
make a handler fail, every reply validates against the protocol models, and the session still
works afterwards."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from livedub.clock import FakeClock
from livedub.protocol import CLIENT_EVENTS, ProtocolValidationError, parse_server_event
from livedub.sts.core import StsCore
from livedub.sts.settings import StsSettings
from livedub.sts.testing import make_fragment


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.invalid: list[tuple[str, Any, str]] = []
        self.core: StsCore | None = None
        self.dropped: list[str] = []

    async def emit(self, sid: str, event: str, data: dict[str, Any]) -> None:
        try:
            parse_server_event(event, data)
        except ProtocolValidationError as exc:
            self.invalid.append((event, data, exc.message))
        self.sent.append((sid, event, data))

    async def close(self, sid: str) -> None:
        await self.drop(sid)

    async def drop(self, sid: str) -> None:  # like the real server: the disconnect event follows
        self.dropped.append(sid)
        assert self.core is not None
        await self.core.disconnect(sid)


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
keys = st.sampled_from(
    [
        "stream_id",
        "worker_id",
        "config",
        "fragment_id",
        "sequence_number",
        "timestamp",
        "audio",
        "status",
        "rules",
        "delay_ms",
        "min_delay_ms",
        "max_delay_ms",
        "enabled",
        "emit",
        "refuse_reconnect_ms",
        "thresholds",
        "trigger",
        "value",
        "severity",
        "action",
    ]
)
payloads = st.recursive(
    scalars,
    lambda ch: st.dictionaries(keys, ch, max_size=6) | st.lists(ch, max_size=3),
    max_leaves=15,
)


def _mutated_fragment(seq: int, key: str, value: Any) -> dict[str, Any]:
    frag = make_fragment("s1", seq)
    if key.startswith("audio."):
        frag["audio"][key[6:]] = value
    else:
        frag[key] = value
    return frag


fragment_like = st.builds(
    _mutated_fragment,
    st.integers(min_value=0, max_value=4),
    st.sampled_from(
        [
            "fragment_id",
            "stream_id",
            "sequence_number",
            "timestamp",
            "metadata",
            "audio.format",
            "audio.duration_ms",
            "audio.data_base64",
            "audio.channels",
        ]
    ),
    scalars,
)
good_fragment = st.integers(min_value=0, max_value=4).map(lambda i: make_fragment("s1", i))
NEXT = "<the next in-order fragment>"
good_init = st.just({"stream_id": "s1", "worker_id": "w", "config": {}})

steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(sorted(CLIENT_EVENTS)), payloads),
        st.tuples(st.just("fragment:data"), fragment_like | good_fragment),
        st.tuples(st.just("stream:init"), good_init),
        st.just(("fragment:data", NEXT)),
        st.just(("fragment:data", NEXT)),
        st.tuples(st.text(max_size=10), payloads),
    ),
    max_size=25,
)


async def _run(seq: list[tuple[str, Any]]) -> tuple[_Recorder, _Failures]:
    rec = _Recorder()
    failures = _Failures()
    log = logging.getLogger("livedub.sts")
    log.addHandler(failures)
    core = StsCore(StsSettings(close_delay_s=0), rec, clock=FakeClock())
    rec.core = core
    try:
        await core.connect("A", {}, None)
        next_seq = 0
        for name, payload in seq:
            if payload is NEXT:
                payload = make_fragment("s1", next_seq)
                next_seq += 1
            elif name == "stream:init":
                next_seq = 0
            await core.handle("A", name, payload)
        for _ in range(5):
            await asyncio.sleep(0)
        # afterwards a fresh session still works (on the same connection unless it was dropped)
        sid = "A"
        if "A" in rec.dropped:
            sid = "B"
            await core.connect(sid, {}, None)
        await core.control("config:reset", {})
        await core.handle(sid, "stream:init", {"stream_id": "s9", "worker_id": "w", "config": {}})
        await core.handle(sid, "stream:resume", {})
        mark = len(rec.sent)
        frag = make_fragment("s9", 0)
        await core.handle(sid, "fragment:data", frag)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while not any(
            e == "fragment:processed" and d["fragment_id"] == frag["fragment_id"]
            for _, e, d in rec.sent[mark:]
        ):
            assert loop.time() < deadline, "session unusable after random input"
            await asyncio.sleep(0.001)
    finally:
        await core.shutdown()
        log.removeHandler(failures)
    return rec, failures


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=steps)
def test_random_events_never_break_the_server(seq: list[tuple[str, Any]]) -> None:
    rec, failures = asyncio.run(_run(seq))
    event(f"dropped={bool(rec.dropped)}")
    event(f"processed={sum(1 for _, e, _ in rec.sent if e == 'fragment:processed') > 1}")
    event(f"errors={len({d['code'] for _, e, d in rec.sent if e == 'error'})}")
    assert rec.invalid == []
    assert failures.records == []
    for _, name, data in rec.sent:
        if name == "error":
            assert uuid.UUID(data["error_id"]).version == 4
