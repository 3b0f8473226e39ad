"""Duration fitting: the `Fitter` protocol and the sox engine.

A fitter time-stretches mono float32 audio to EXACTLY `n_samples` (pitch kept): sox's WSOLA
`tempo` effect (40–60 ms per 6 s), then a final trim/zero-pad of the few samples the effect
misses. The dub backend first re-synthesizes at a speaking rate that lands near the target
(see `DubBackend`), so the stretch left to do is small.
"""

from __future__ import annotations

import subprocess
from typing import Protocol

import numpy as np

from livedub.sts.dub.errors import StageFailure

SOX = "sox"
NO_STRETCH_BELOW = 0.005
"""A relative length error smaller than this is fixed by trim/pad alone (inaudible)."""


class Fitter(Protocol):
    def fit(self, audio: np.ndarray, rate: int, n_samples: int) -> np.ndarray:
        """`audio` (mono float32) stretched/compressed to exactly `n_samples`."""
        ...


def pad_or_trim(audio: np.ndarray, n_samples: int) -> np.ndarray:
    if audio.shape[0] >= n_samples:
        return audio[:n_samples]
    return np.concatenate([audio, np.zeros(n_samples - audio.shape[0], dtype=audio.dtype)])


class SoxFitter:
    """`sox -t f32 - -t f32 - tempo -s FACTOR`, then trim/pad to the exact count."""

    def __init__(self, *, binary: str = SOX, timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    def fit(self, audio: np.ndarray, rate: int, n_samples: int) -> np.ndarray:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if n_samples <= 0:
            return np.zeros(0, dtype=np.float32)
        if audio.size == 0:
            return np.zeros(n_samples, dtype=np.float32)
        factor = audio.shape[0] / n_samples  # > 1: speed up
        if abs(factor - 1.0) >= NO_STRETCH_BELOW:
            fmt = ["-t", "f32", "-r", str(rate), "-c", "1"]
            try:
                proc = subprocess.run(
                    [self.binary, "-q", *fmt, "-", *fmt, "-", "tempo", "-s", f"{factor:.6f}"],
                    input=audio.tobytes(),
                    capture_output=True,
                    timeout=self.timeout_s,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StageFailure("tts", f"sox failed: {exc}") from exc
            if proc.returncode != 0:
                raise StageFailure("tts", f"sox exited {proc.returncode}: {proc.stderr[:200]!r}")
            audio = np.frombuffer(proc.stdout, dtype=np.float32).copy()
        return pad_or_trim(audio, n_samples)
