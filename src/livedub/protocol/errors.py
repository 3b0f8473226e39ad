"""Protocol error codes (with severity and retryable) and the one typed validation error.

The error-code table of the spec lives here and nowhere else: `ErrorCode.X.severity` and
`ErrorCode.X.retryable` read it. `ProtocolValidationError` is what every parse helper raises
for an invalid payload; it carries the protocol code the server must answer with. This module
never does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livedub.protocol.constants import Severity


class ErrorCode(StrEnum):
    """Protocol error codes. `.severity` and `.retryable` come from the spec's table."""

    AUTH_FAILED = "AUTH_FAILED"
    STREAM_NOT_FOUND = "STREAM_NOT_FOUND"
    STREAM_PAUSED = "STREAM_PAUSED"
    INVALID_CONFIG = "INVALID_CONFIG"
    INVALID_FRAGMENT = "INVALID_FRAGMENT"
    INVALID_SEQUENCE = "INVALID_SEQUENCE"
    DUPLICATE_FRAGMENT = "DUPLICATE_FRAGMENT"
    FRAGMENT_TOO_LARGE = "FRAGMENT_TOO_LARGE"
    TIMEOUT = "TIMEOUT"
    MODEL_ERROR = "MODEL_ERROR"
    GPU_OOM = "GPU_OOM"
    QUEUE_FULL = "QUEUE_FULL"
    RATE_LIMIT = "RATE_LIMIT"

    @property
    def severity(self) -> Severity:
        return _TABLE[self].severity

    @property
    def retryable(self) -> bool:
        """True when the failure counts toward the worker's circuit breaker."""
        return _TABLE[self].retryable


@dataclass(frozen=True)
class _CodeInfo:
    severity: Severity
    retryable: bool


# The spec's "Error codes" table, written once.
_TABLE: Mapping[ErrorCode, _CodeInfo] = {
    ErrorCode.AUTH_FAILED: _CodeInfo("fatal", False),
    ErrorCode.STREAM_NOT_FOUND: _CodeInfo("error", False),
    ErrorCode.STREAM_PAUSED: _CodeInfo("warning", False),
    ErrorCode.INVALID_CONFIG: _CodeInfo("error", False),
    ErrorCode.INVALID_FRAGMENT: _CodeInfo("error", False),
    ErrorCode.INVALID_SEQUENCE: _CodeInfo("error", False),
    ErrorCode.DUPLICATE_FRAGMENT: _CodeInfo("error", False),
    ErrorCode.FRAGMENT_TOO_LARGE: _CodeInfo("error", False),
    ErrorCode.TIMEOUT: _CodeInfo("error", True),
    ErrorCode.MODEL_ERROR: _CodeInfo("error", True),
    ErrorCode.GPU_OOM: _CodeInfo("error", True),
    ErrorCode.QUEUE_FULL: _CodeInfo("warning", True),
    ErrorCode.RATE_LIMIT: _CodeInfo("warning", True),
}


class ProtocolValidationError(ValueError):
    """An event payload that does not satisfy the protocol.

    `code` is the protocol error to answer with (INVALID_CONFIG for `stream:init`,
    INVALID_FRAGMENT / FRAGMENT_TOO_LARGE for `fragment:data`, ...). `stream_id` and
    `fragment_id` are taken from the raw payload when they are readable strings, so the reply
    can name them; `details` is `[{"loc": path, "msg": reason}]` for an invalid field (`loc`
    "" when the rule is about the whole object, e.g. a cross-field rule).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        event: str | None = None,
        stream_id: str | None = None,
        fragment_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event = event
        self.stream_id = stream_id
        self.fragment_id = fragment_id
        self.details = details or []

    def __repr__(self) -> str:
        return f"ProtocolValidationError({self.code.value}, {self.message!r})"
