"""Steer the echo STS for one stream from a second connection (HTTP control API, same JSON as the
Socket.IO test-control events)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.e2e import config


def control(event: str, payload: dict[str, Any], sts_url: str = config.STS_URL) -> dict[str, Any]:
    """POST /control/<name>; asserts the service accepted it."""
    req = urllib.request.Request(
        f"{sts_url}/control/{event}", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read().decode())
    assert doc.get("status") == "accepted", doc
    return doc


def sio_control(event: str, payload: dict[str, Any], sts_url: str = config.STS_URL,
                timeout_s: float = 5.0) -> dict[str, Any]:
    """Send a test-control event over Socket.IO from a second connection; return its `<event>:ack`."""
    import asyncio

    import socketio

    async def go() -> dict[str, Any]:
        sio = socketio.AsyncClient(reconnection=False)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        @sio.on(f"{event}:ack")  # type: ignore[misc]
        async def _ack(data: Any = None) -> None:
            if not fut.done():
                fut.set_result(data)

        await sio.connect(sts_url, transports=["websocket"],
                          headers={"X-Stream-ID": "e2e-control", "X-Worker-ID": "e2e-tests"})
        try:
            await sio.emit(event, payload)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            await sio.disconnect()

    doc = asyncio.run(go())
    assert doc.get("status") == "accepted", doc
    return doc
