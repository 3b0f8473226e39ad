"""Unit: the Socket.IO packets' JSON codec (protocol/wirejson.py) writes what the standard
library writes, refuses what engine.io's own codec refuses, and is the one both sides use."""

from __future__ import annotations

import json
from typing import Any

import pytest
import socketio

from livedub.protocol import encode_base64, wirejson

PAYLOAD: dict[str, Any] = {
    "fragment_id": "0b7c9a52-4a59-4c61-9a8b-0c5f0d6f6f5e",
    "sequence_number": 3,
    "audio": {"format": "wav", "sample_rate_hz": 48000, "data_base64": encode_base64(bytes(range(256)) * 64)},
    "metadata": {"pts_ns": 2**62, "ratio": 0.5, "note": "é \u2028 \"quoted\"", "flags": [True, False, None]},
}


def test_it_writes_what_the_standard_library_writes_compactly() -> None:
    text = wirejson.dumps(PAYLOAD, separators=(",", ":"))
    assert isinstance(text, str)
    assert json.loads(text) == PAYLOAD == wirejson.loads(text) == wirejson.loads(text.encode())
    assert text == json.dumps(PAYLOAD, separators=(",", ":"), ensure_ascii=False)
    assert wirejson.dumps({1: "a", "b": (2, 3)}) == json.dumps({1: "a", "b": (2, 3)}, separators=(",", ":"))


@pytest.mark.parametrize("bad", ['{"n": NaN}', '{"n": Infinity}', "[" + "9" * 5000 + "]", '{"a": 1', "[1,]"])
def test_it_refuses_what_is_not_json_or_a_huge_number(bad: str) -> None:
    with pytest.raises(ValueError):
        wirejson.loads(bad)


def test_an_integer_beyond_64_bits_is_a_float_that_a_strict_integer_field_refuses() -> None:
    from livedub.protocol import FragmentData, ProtocolValidationError, parse_as

    assert wirejson.loads('{"n": ' + "9" * 40 + "}") == {"n": 1e40}
    wire = wirejson.dumps({"fragment_id": PAYLOAD["fragment_id"], "stream_id": "s1", "sequence_number": 0,
                           "timestamp": 1, "audio": {**PAYLOAD["audio"], "channels": 1, "duration_ms": 100}})  # fmt: skip
    huge = wire.replace('"sequence_number":0', '"sequence_number":' + "9" * 40)
    parse_as(FragmentData, wirejson.loads(wire))
    with pytest.raises(ProtocolValidationError):
        parse_as(FragmentData, wirejson.loads(huge))


def test_the_sts_server_uses_it() -> None:
    from livedub.sts.server import StsServer
    from livedub.sts.settings import StsSettings

    assert StsServer(StsSettings(port=0)).sio.packet_class.json is wirejson
    assert socketio.packet.Packet.json is wirejson  # python-socketio sets it on the packet class


async def test_the_workers_client_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from livedub.worker import sts_client
    from livedub.worker.config import WorkerSettings

    seen: dict[str, Any] = {}

    class Built(Exception):
        pass

    class Recording(sts_client._GuardedAsyncClient):
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise Built

    monkeypatch.setattr(sts_client, "_GuardedAsyncClient", Recording)
    client = sts_client.StsClient(WorkerSettings(stream_id="s1", metrics_port=0), handlers=None)  # type: ignore[arg-type]
    with pytest.raises(Built):
        await client._open()
    assert seen["json"] is wirejson


def test_what_orjson_cannot_write_the_standard_library_writes() -> None:
    huge = {"sequence_number": 10**30, "note": "é"}
    assert wirejson.dumps(huge) == json.dumps(huge, separators=(",", ":"), ensure_ascii=False)
    assert wirejson.loads(wirejson.dumps(huge)) == {"sequence_number": 1e30, "note": "é"}
