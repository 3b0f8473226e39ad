"""The speech-to-speech backend interface, and the echo backend.

A `Backend` turns one fragment into a result (`async process(fragment, config)`). The server
owns ordering, latency simulation, errors and statistics; a backend only transforms audio, so a
real ASR→MT→TTS backend can be dropped in without touching the server. A backend must never
emit events or touch sessions; raising an exception is answered as a MODEL_ERROR failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from livedub.protocol import (
    AudioPayload,
    FragmentData,
    LanguagePair,
    LanguagesInfo,
    ProcessingError,
    SpeechSegment,
    StageTimings,
    StreamConfig,
)
from livedub.protocol.constants import ProcessedStatus


@dataclass(frozen=True)
class BackendResult:
    """What a backend produced for one fragment (the server adds ids and timing)."""

    status: ProcessedStatus
    dubbed_audio: AudioPayload | None = None
    transcript: str | None = None
    translated_text: str | None = None
    stage_timings: StageTimings | None = None
    error: ProcessingError | None = None
    segments: list[SpeechSegment] | None = None
    """Speech spans (times relative to the fragment start); None: not known."""

    @classmethod
    def failed(cls, error: ProcessingError) -> BackendResult:
        return cls(status="failed", error=error)


class Backend(Protocol):
    """A speech-to-speech engine: one fragment in, one result out."""

    name: str

    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult: ...

    async def check_config(self, config: StreamConfig) -> str | None:
        """Why this stream config cannot be served (answered INVALID_CONFIG), or None."""
        ...

    def close(self) -> None:
        """Release engines (processes, pools) when the server stops."""
        ...


@runtime_checkable
class ReportsLanguages(Protocol):
    """A backend that can say which language pairs it dubs (`GET /v1/languages`)."""

    name: str

    def languages(self) -> LanguagesInfo: ...


def pairs_info(name: str, pairs: list[tuple[str, str]]) -> LanguagesInfo:
    return LanguagesInfo(
        backend=name, pairs=[LanguagePair(source=s, target=t) for s, t in pairs]
    )


class EchoBackend:
    """Returns the received audio byte-for-byte as the dubbed audio, with mock texts."""

    name = "echo"

    def languages(self) -> LanguagesInfo:
        return LanguagesInfo(backend=self.name, any_pair=True)  # echoes any language pair

    async def check_config(self, config: StreamConfig) -> str | None:
        return None  # echoes any language pair

    def close(self) -> None:
        pass

    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        start = time.perf_counter()
        transcript = (
            f"[echo transcript {config.source_language}] fragment {fragment.sequence_number}"
            f" ({fragment.audio.duration_ms} ms)"
        )
        translated = (
            f"[echo translation {config.target_language}] fragment {fragment.sequence_number}"
        )
        elapsed_ms = int((time.perf_counter() - start) * 1000)
        return BackendResult(
            status="success",
            dubbed_audio=fragment.audio,  # same object: the same base64 text, byte-for-byte
            transcript=transcript,
            translated_text=translated,
            stage_timings=StageTimings(asr_ms=elapsed_ms, translation_ms=0, tts_ms=0),
        )
