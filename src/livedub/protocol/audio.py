"""Helpers for audio on the wire: base64 in and out, and sample arithmetic.

Pure functions only; never decodes or encodes media (that is `livedub.media`'s job).
"""

from __future__ import annotations

import base64
import binascii


def encode_base64(data: bytes) -> str:
    """Bytes -> the `data_base64` text (standard alphabet, padded)."""
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str) -> bytes:
    """`data_base64` text -> bytes. Strict: raises `ValueError` on any non-alphabet character,
    bad padding or non-ASCII input."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc


def expected_samples(duration_ms: int, sample_rate_hz: int) -> int:
    """Samples per channel that a fragment of `duration_ms` covers (`duration_ms × rate / 1000`,
    rounded to the nearest sample)."""
    return (duration_ms * sample_rate_hz + 500) // 1000
