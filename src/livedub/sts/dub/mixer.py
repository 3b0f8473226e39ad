"""Mixing the synthetic voice over the original: the `Mixer` protocol and the gain-envelope mixer.

`DuckingMixer` lowers the original by `duck_db` (default −12 dB) only where the synthetic voice
speaks (with short ramps so the bed does not click), and adds the voice; `replace` mode silences
the original there instead. Music, effects and crowd stay audible elsewhere. Pure numpy.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import numpy as np

RAMP_S = 0.05
"""Gain ramp length at the edges of each ducked region."""
ACTIVE_THRESHOLD = 1e-3
"""Voice samples above this (absolute, float) count as speech for the envelope."""
HOLD_S = 0.15
"""Gaps in the voice shorter than this keep the original ducked."""


class MixMode(StrEnum):
    DUCK = "duck"
    REPLACE = "replace"


class Mixer(Protocol):
    def mix(self, original: np.ndarray, voice: np.ndarray, rate: int) -> np.ndarray:
        """`original` (float32 `(n, ch)`) with `voice` (float32 `(n,)`) over it."""
        ...


def voice_envelope(voice: np.ndarray, rate: int) -> np.ndarray:
    """1.0 where the voice speaks (gaps < HOLD_S bridged), 0.0 elsewhere, ramped edges."""
    active = np.abs(voice) > ACTIVE_THRESHOLD
    if not active.any():
        return np.zeros(voice.shape[0], dtype=np.float32)
    hold = max(1, int(HOLD_S * rate))
    # bridge short gaps: a sample is active if an active sample lies within `hold` on both sides
    idx = np.flatnonzero(active)
    env = np.zeros(voice.shape[0], dtype=np.float32)
    gaps = np.flatnonzero(np.diff(idx) > hold)
    starts = np.concatenate([[idx[0]], idx[gaps + 1]])
    ends = np.concatenate([idx[gaps], [idx[-1]]]) + 1
    for s, e in zip(starts, ends, strict=True):
        env[s:e] = 1.0
    ramp = max(1, int(RAMP_S * rate))
    kernel = np.ones(ramp, dtype=np.float32) / ramp
    smoothed = np.convolve(env, kernel, mode="same")
    return np.maximum(env, smoothed).astype(np.float32)


class DuckingMixer:
    def __init__(self, mode: MixMode = MixMode.DUCK, duck_db: float = -12.0) -> None:
        self.mode = mode
        self.duck_db = duck_db

    def mix(self, original: np.ndarray, voice: np.ndarray, rate: int) -> np.ndarray:
        env = voice_envelope(voice, rate)
        floor = 0.0 if self.mode is MixMode.REPLACE else float(10 ** (self.duck_db / 20.0))
        gain = 1.0 - env * (1.0 - floor)
        out = original * gain[:, None] + voice[:, None]
        return np.clip(out, -1.0, 1.0).astype(np.float32)
