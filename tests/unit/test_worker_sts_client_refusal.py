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
