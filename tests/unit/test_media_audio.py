"""Fragments on the wire: m4a/wav/flac round trips to the exact sample count, trim/pad, rejects."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.media.audio import (
    decode_audio,
    decode_fragment,
    encode_pcm,
    fit_to_length,
    resample_pcm,
)
from livedub.media.errors import DubbedAudioRejected


def tone(n: int, rate: int, ch: int, hz: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A chirp (not periodic, so alignment is unambiguous)."""
    t = np.arange(n) / rate
    x = (amp * 32767 * np.sin(2 * np.pi * (hz + 200 * t) * t)).astype(np.int16)
    return np.repeat(x[:, None], ch, axis=1)


def aligned(a: np.ndarray, b: np.ndarray) -> int:
    """Lag (samples) of b against a, by cross-correlation of the first channel."""
    x = np.asarray(a)[:, 0].astype(np.float64)
    y = np.asarray(b)[:, 0].astype(np.float64)
    n = min(len(x), len(y), 8192)
    corr = np.correlate(y[2048 : 2048 + n // 2], x[2048 - 256 : 2048 + n // 2 + 256], mode="valid")
    return int(np.argmax(corr)) - 256


@pytest.mark.parametrize("fmt", ["m4a", "wav", "flac"])
def test_round_trip_is_trimmed_to_exact_count_without_shift(fmt: str) -> None:
    src = tone(288_000, 48_000, 2)
    data = encode_pcm(src, 48_000, fmt)  # type: ignore[arg-type]
    out = decode_fragment(data, expected_samples=288_000, sample_rate=48_000, channels=2)
    assert out.shape == (288_000, 2) and np.asarray(out).dtype == np.int16
    assert aligned(src, out) == 0  # priming removed, not just cut from the end
    if fmt != "m4a":
        assert np.array_equal(out, src)  # lossless


def test_m4a_raw_decode_has_no_priming_at_the_start() -> None:
    src = tone(48_000, 48_000, 1)
    pcm, rate, ch = decode_audio(encode_pcm(src, 48_000, "m4a"))
    assert (rate, ch) == (48_000, 1)
    assert pcm.shape[0] >= 48_000
    assert aligned(src, pcm) == 0


def test_rate_and_channel_mismatch_is_resampled_not_rejected() -> None:
    src = tone(44_100 * 2, 44_100, 1)
    data = encode_pcm(src, 44_100, "wav")
    out = decode_fragment(data, expected_samples=96_000, sample_rate=48_000, channels=2)
    assert out.shape == (96_000, 2)
    assert np.array_equal(np.asarray(out)[:, 0], np.asarray(out)[:, 1])


def test_stereo_to_mono() -> None:
    src = np.stack([np.full(100, 1000, np.int16), np.full(100, 3000, np.int16)], axis=1)
    out = resample_pcm(src, 8000, 8000, 1)
    assert out.shape == (100, 1) and int(np.asarray(out)[0, 0]) == 2000


@pytest.mark.parametrize("have", [259_200, 280_000, 288_000, 300_000, 316_800])
def test_within_ten_percent_is_trimmed_or_padded(have: int) -> None:
    out = fit_to_length(tone(have, 48_000, 2), 288_000)
    assert out.shape == (288_000, 2)
    if have < 288_000:
        assert not np.asarray(out[have:]).any()


@pytest.mark.parametrize("have", [259_199, 316_801, 1000])
def test_outside_ten_percent_is_rejected(have: int) -> None:
    with pytest.raises(DubbedAudioRejected) as info:
        fit_to_length(tone(have, 48_000, 2), 288_000)
    assert info.value.reason == "duration_mismatch"


def test_garbage_is_rejected_as_undecodable() -> None:
    with pytest.raises(DubbedAudioRejected) as info:
        decode_fragment(b"\x00not audio" * 100, expected_samples=10, sample_rate=48_000, channels=2)
    assert info.value.reason in ("undecodable", "empty")
    with pytest.raises(DubbedAudioRejected) as info:
        decode_fragment(b"", expected_samples=10, sample_rate=48_000, channels=2)
    assert info.value.reason == "empty"


def test_wrong_duration_dub_is_rejected_after_decode() -> None:
    data = encode_pcm(tone(48_000 * 3, 48_000, 2), 48_000, "flac")
    with pytest.raises(DubbedAudioRejected) as info:
        decode_fragment(data, expected_samples=288_000, sample_rate=48_000, channels=2)
    assert info.value.reason == "duration_mismatch"
