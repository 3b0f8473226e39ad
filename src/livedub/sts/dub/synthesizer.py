"""Speech synthesis: the `Synthesizer` protocol and the espeak-ng engine.

`EspeakSynthesizer` runs `espeak-ng -v VOICE -s WPM --stdout` (≈ 20 ms per sentence) and returns
mono float32 at espeak's rate (22.05 kHz). The voice per target language comes from settings.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from typing import Protocol

import numpy as np

from livedub.sts.dub.errors import StageFailure

ESPEAK = "espeak-ng"
DEFAULT_WPM = 175
"""espeak-ng's default speaking rate (words per minute)."""
MIN_WPM, MAX_WPM = 80, 450


class Synthesizer(Protocol):
    """Text -> mono float32 speech."""

    def voice_for(self, language: str) -> str | None:
        """The voice used for `language` (None: the language is not supported)."""
        ...

    def synthesize(self, text: str, language: str, wpm: int = DEFAULT_WPM) -> tuple[np.ndarray, int]:
        """(mono float32 samples, sample rate)."""
        ...


def _wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng's stdout WAV (its size fields may be bogus): read fmt, then data to the end."""
    if len(data) < 44 or data[:4] != b"RIFF":
        raise StageFailure("tts", "espeak-ng produced no WAV")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"fmt ":
            rate = struct.unpack("<I", data[pos + 12 : pos + 16])[0]
        if tag == b"data":
            raw = data[pos + 8 :]
            raw = raw[: len(raw) // 2 * 2]
            pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
            return pcm, rate
        pos += 8 + size
    raise StageFailure("tts", "espeak-ng WAV has no data chunk")


class EspeakSynthesizer:
    """espeak-ng, one process per call (it starts in a few ms)."""

    def __init__(self, voices: dict[str, str], *, binary: str = ESPEAK, timeout_s: float = 10.0):
        self.voices = voices
        self.binary = binary
        self.timeout_s = timeout_s

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def voice_for(self, language: str) -> str | None:
        return self.voices.get(language)

    def synthesize(self, text: str, language: str, wpm: int = DEFAULT_WPM) -> tuple[np.ndarray, int]:
        voice = self.voice_for(language)
        if voice is None:
            raise StageFailure("tts", f"no espeak-ng voice configured for {language!r}")
        wpm = max(MIN_WPM, min(MAX_WPM, int(wpm)))
        try:
            proc = subprocess.run(
                [self.binary, "-v", voice, "-s", str(wpm), "--stdout", "--", text],
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StageFailure("tts", f"espeak-ng failed: {exc}") from exc
        if proc.returncode != 0:
            raise StageFailure(
                "tts", f"espeak-ng exited {proc.returncode}: {proc.stderr.decode()[:200]}"
            )
        return _wav_samples(proc.stdout)
