"""Helpers for audio on the wire: base64 in and out, and sample arithmetic.

Pure functions only; never decodes or encodes media (that is `livedub.media`'s job).

Base64 is pybase64's (SIMD): 6 s of 48 kHz stereo wav is 1.5 MB of base64, which the standard
library's binascii decodes strictly in 3.4-9 ms and encodes in 2.4 ms on this machine, pybase64 in
0.1 ms each (`python -m bench.wire`; docs/performance.md). Both sides decode every fragment.
"""

from __future__ import annotations

import pybase64


def encode_base64(data: bytes) -> str:
    """Bytes -> the `data_base64` text (standard alphabet, padded)."""
    return pybase64.b64encode_as_string(data)


def decode_base64(text: str) -> bytes:
    """`data_base64` text -> bytes. Strict: raises `ValueError` on any non-alphabet character,
    bad padding or non-ASCII input."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"not valid base64: {exc}") from exc


def expected_samples(duration_ms: int, sample_rate_hz: int) -> int:
    """Samples per channel that a fragment of `duration_ms` covers (`duration_ms × rate / 1000`,
    rounded to the nearest sample)."""
    return (duration_ms * sample_rate_hz + 500) // 1000
