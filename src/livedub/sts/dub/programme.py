"""A spoken English test programme: espeak-ng sentences, one per segment, over a quiet bed.

Used by the benchmark (`python -m bench.dub`) and tests; generated at run time from text (no
media downloaded). Each sentence starts `lead_s` into its segment and is cut to fit it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livedub.media.audio import resample_pcm
from livedub.sts.dub.synthesizer import EspeakSynthesizer

SENTENCES: tuple[str, ...] = (
    "The government announced a new plan to build more houses.",
    "Good evening and welcome to the news at six.",
    "The weather will be sunny in the north and rainy in the south.",
    "The city council met today to discuss the new budget.",
    "Scientists say the river is cleaner than it was ten years ago.",
    "The team won the match in the last minute of the game.",
    "Prices in the shops rose again this month.",
    "The museum will open a new exhibition next week.",
    "Thousands of people visited the market on Sunday.",
    "The president will travel to the capital tomorrow morning.",
)
ENGLISH_VOICE = "en-us"


@dataclass(frozen=True)
class SpokenLine:
    text: str
    start_s: float
    end_s: float


def spoken_programme(
    n_segments: int,
    *,
    segment_s: float = 6.0,
    rate: int = 48_000,
    channels: int = 2,
    lead_s: float = 0.8,
    bed_gain: float = 0.02,
) -> tuple[np.ndarray, list[SpokenLine]]:
    """int16 `(n, channels)` PCM of `n_segments` segments, one sentence each, and the lines."""
    synth = EspeakSynthesizer({"en": ENGLISH_VOICE})
    seg_n = round(segment_s * rate)
    n = n_segments * seg_n
    t = np.arange(n) / rate
    mono = (bed_gain * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)))
    lines: list[SpokenLine] = []
    for k in range(n_segments):
        text = SENTENCES[k % len(SENTENCES)]
        speech, srate = synth.synthesize(text, "en")
        pcm = np.asarray(resample_pcm(np.clip(speech * 32767, -32768, 32767).astype(np.int16)[:, None], srate, rate, 1))
        voice = pcm[:, 0].astype(np.float64) / 32768.0
        start = k * seg_n + round(lead_s * rate)
        length = min(voice.size, (k + 1) * seg_n - start - rate // 5)
        mono[start : start + length] += voice[:length]
        lines.append(SpokenLine(text, start / rate, (start + length) / rate))
    pcm16 = np.clip(np.rint(mono * 32767), -32768, 32767).astype(np.int16)
    return np.repeat(pcm16[:, None], channels, axis=1), lines
