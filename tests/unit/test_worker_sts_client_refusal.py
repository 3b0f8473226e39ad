"""The worker reads why the STS refused its connection from the refusal's error code, not its text."""

from __future__ import annotations

from livedub.protocol import ErrorCode
from livedub.worker.sts_client import refusal_code


def test_refusal_code_from_the_sts_payload() -> None:
    payload = {"message": "AUTH_FAILED: authentication failed", "data": {"code": "AUTH_FAILED", "retryable": False}}
    assert refusal_code(payload) == ErrorCode.AUTH_FAILED.value
    assert refusal_code({"code": "INVALID_CONFIG"}) == "INVALID_CONFIG"


def test_no_code_no_guess() -> None:
    assert refusal_code({"message": "AUTH_FAILED somewhere in a text"}) is None
    assert refusal_code("AUTH_FAILED") is None
    assert refusal_code(None) is None


async def test_an_invalid_event_reaches_on_invalid_with_a_short_reason_naming_the_field() -> None:
    from typing import Any

    from livedub.worker.sts_client import StsHandlers, deliver

    seen: list[tuple[str, str]] = []
    handled: list[Any] = []

    async def invalid(event: str, reason: str, _data: Any) -> None:
        seen.append((event, reason))

    async def handle(msg: Any) -> None:
        handled.append(msg)

    async def ignore(_reason: str) -> None:
        return None

    handlers = StsHandlers(on_ack=handle, on_processed=handle, on_backpressure=handle, on_error=handle,
                           on_disconnect=ignore, on_invalid=invalid)  # fmt: skip
    await deliver(handlers, "backpressure", {"stream_id": "s", "severity": "x" * 100_000, "action": "none"})
    await deliver(handlers, "fragment:ack", {"fragment_id": "not-a-uuid", "status": "queued"})
    await deliver(handlers, "backpressure", {"stream_id": "s", "severity": "low", "action": "none"})
    assert [event for event, _ in seen] == ["backpressure", "fragment:ack"]
    assert seen[0][1].startswith("schema_invalid: severity: Invalid enum value") and len(seen[0][1]) < 200
    assert "fragment_id" in seen[1][1]
    assert len(handled) == 1 and handled[0].severity == "low"
