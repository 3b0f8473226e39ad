"""`DubBackend`: offline speech → translation → speech behind the STS `Backend` interface.

Per fragment (one job in a thread pool of `StsSettings.workers`, shared by all sessions; never
on the event loop): decode (trimmed/padded to the declared sample count) → Silero VAD (no
speech → the original audio unchanged, `success`, empty transcript) → faster-whisper in the
stream's source language (utterances with times, each placed on the VAD span where it was
spoken: `place_utterances`) → Apertium per utterance → espeak-ng (the target language's voice)
→ fit (speaking rate first, then time-stretch to exactly the span where the source spoke that
utterance) → mix over the ducked original → encode in the fragment's transport format; the
utterances and their times go back as `segments` (captions per speech span). An engine
failure is answered `failed` with its stage and MODEL_ERROR (retryable), logged once per kind
and counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np

from livedub.media.audio import decode_audio, encode_pcm, resample_pcm
from livedub.media.errors import DubbedAudioRejected
from livedub.protocol import (
    AudioPayload,
    ErrorCode,
    FragmentData,
    LanguagesInfo,
    ProcessingError,
    SpeechSegment,
    StageTimings,
    StreamConfig,
)
from livedub.sts.backend import BackendResult, pairs_info
from livedub.sts.dub.errors import StageFailure
from livedub.sts.dub.fitter import Fitter, SoxFitter, pad_or_trim
from livedub.sts.dub.mixer import DuckingMixer, Mixer
from livedub.sts.dub.recognizer import (
    ASR_RATE,
    Recognizer,
    SpeechSpan,
    Utterance,
    WhisperRecognizer,
    default_model_dir,
    detect_speech,
)
from livedub.sts.dub.synthesizer import DEFAULT_WPM, EspeakSynthesizer, Synthesizer
from livedub.sts.dub.translator import ApertiumTranslator, Translator
from livedub.sts.metrics import StsMetrics
from livedub.sts.settings import StsSettings

_log = logging.getLogger("livedub.sts.dub")
T = TypeVar("T")

MIN_FRAGMENT_S = 0.5
"""Shorter fragments are returned original (too short to recognise anything)."""
RATE_TOLERANCE = 0.02
"""A speaking rate within this of espeak's default is not re-synthesized."""


_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")


def clean_transcript(text: str) -> str:
    """Whisper's non-speech annotations ("[Music]", "(applause)", "♪") removed: they are not
    speech to dub (a music-only fragment then comes back original)."""
    return " ".join(_ANNOTATION.sub(" ", text).split())


def has_words(text: str) -> bool:
    """Whether `text` has anything to say (a letter or a digit), not only punctuation or space."""
    return any(ch.isalnum() for ch in text)


def place_utterances(utterances: list[Utterance], vad: list[SpeechSpan]) -> list[Utterance]:
    """Each utterance on the span where its source speech is (samples of the same audio).

    The VAD is more precise at the edges than whisper's timestamps: an utterance spans the VAD
    spans it overlaps (first start → last end); where one VAD span carries two utterances, they
    are cut at whisper's boundary. Spans never overlap and keep their order; an utterance that
    is left no room joins the previous one's text. Utterances without words are dropped.
    """
    kept = [u for u in utterances if has_words(u.text)]
    placed: list[Utterance] = []
    for i, u in enumerate(kept):
        hits = [v for v in vad if v.start < u.end and v.end > u.start]
        if not hits:
            start, end = u.start, u.end
        else:
            start, end = hits[0].start, hits[-1].end
            if i > 0 and kept[i - 1].end > hits[0].start:  # shared with the previous one
                start = max(start, u.start)
            if i + 1 < len(kept) and kept[i + 1].start < hits[-1].end:  # shared with the next
                end = min(end, u.end)
        if placed:
            start = max(start, placed[-1].end)
        end = max(end, start)
        if placed and end <= start:
            last = placed[-1]
            placed[-1] = Utterance(last.start, last.end, f"{last.text} {u.text}")
            continue
        placed.append(Utterance(start, end, u.text))
    return placed


class Outcome:
    """Label values of `sts_dub_fragments` (fragments by outcome)."""

    DUBBED = "dubbed"
    NO_SPEECH = "original_no_speech"
    NO_WORDS = "original_no_words"
    TOO_SHORT = "original_too_short"
    FAILED = "failed"


@dataclass
class _Timer:
    metrics: StsMetrics | None
    stages: dict[str, float] = field(default_factory=dict)

    def run(self, stage: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            elapsed = time.perf_counter() - start
            self.stages[stage] = self.stages.get(stage, 0.0) + elapsed
            if self.metrics is not None:
                self.metrics.dub_stage_seconds.labels(stage).observe(elapsed)

    def ms(self, *stages: str) -> int:
        return round(1000 * sum(self.stages.get(s, 0.0) for s in stages))

    def timings(self) -> StageTimings:
        return StageTimings(
            asr_ms=self.ms("decode", "vad", "asr"),
            translation_ms=self.ms("translation"),
            tts_ms=self.ms("tts", "fit", "mix", "encode"),
        )


def _to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) * (1.0 / 32768.0)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


class DubBackend:
    """The offline dubbing chain. Engines are injectable (tests, other deployments)."""

    name = "dub"

    def __init__(
        self,
        settings: StsSettings,
        *,
        metrics: StsMetrics | None = None,
        recognizer: Recognizer | None = None,
        translator: Translator | None = None,
        synthesizer: Synthesizer | None = None,
        fitter: Fitter | None = None,
        mixer: Mixer | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recognizer: Recognizer = recognizer or WhisperRecognizer(
            settings.asr_model_dir or default_model_dir(),
            num_workers=settings.workers,
            beam_size=settings.asr_beam_size,
        )
        self.translator: Translator = translator or ApertiumTranslator()
        self.synthesizer: Synthesizer = synthesizer or EspeakSynthesizer(settings.voices)
        self.fitter: Fitter = fitter or SoxFitter()
        self.mixer: Mixer = mixer or DuckingMixer(settings.mix_mode, settings.duck_db)
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="dub")
        self._queued = 0
        self._count_lock = threading.Lock()
        self._logged: set[str] = set()

    # --- configuration -----------------------------------------------------------------------
    def supported_pairs(self) -> list[tuple[str, str]]:
        """(source, target) pairs every engine of the chain supports."""
        asr = self.recognizer.languages()
        return [
            (src, tgt)
            for src, tgt in self.translator.pairs()
            if (asr is None or src in asr) and self.synthesizer.voice_for(tgt) is not None
        ]

    def languages(self) -> LanguagesInfo:
        """`GET /v1/languages`: exactly the pairs `check_config` accepts."""
        return pairs_info(self.name, self.supported_pairs())

    async def check_config(self, config: StreamConfig) -> str | None:
        loop = asyncio.get_running_loop()
        pairs = await loop.run_in_executor(self.pool, self.supported_pairs)
        pair = (config.source_language, config.target_language)
        if pair in pairs:
            return None
        names = ", ".join(f"{s}->{t}" for s, t in pairs) or "none"
        return (
            f"language pair {pair[0]}->{pair[1]} is not supported by the dub backend; "
            f"available: {names}"
        )

    def warm(self) -> None:
        """Load the model, start the translation pipelines and run each engine once, so the first
        fragment of the first stream pays none of it (≈ 1–2 s at start-up)."""
        pairs = self.supported_pairs()
        silence = np.zeros(ASR_RATE, dtype=np.float32)
        detect_speech(silence)
        for src, tgt in pairs:
            self.recognizer.transcribe(silence, src)
            self.translator.translate("Hello.", src, tgt)
            self.synthesizer.synthesize("Hola.", tgt)
        _log.info("dub backend ready", extra={"ctx": {"pairs": [f"{s}->{t}" for s, t in pairs]}})

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.translator.close()

    # --- processing --------------------------------------------------------------------------
    async def process(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        loop = asyncio.get_running_loop()
        self._queue_change(+1)
        try:
            return await loop.run_in_executor(self.pool, self._process_sync, fragment, config)
        finally:
            self._queue_change(-1)

    def _queue_change(self, delta: int) -> None:
        with self._count_lock:
            self._queued += delta
            if self.metrics is not None:
                self.metrics.dub_queue_depth.set(self._queued)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.dub_fragments.labels(outcome).inc()

    def _log_once(self, key: str, message: str, **ctx: object) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        _log.warning(message, extra={"ctx": {"kind": key, **ctx}})

    def _process_sync(self, fragment: FragmentData, config: StreamConfig) -> BackendResult:
        timer = _Timer(self.metrics)
        ctx = {"stream_id": fragment.stream_id, "fragment_id": fragment.fragment_id}
        try:
            result = self._dub(fragment, config, timer)
        except StageFailure as exc:
            self._count(Outcome.FAILED)
            self._log_once(
                f"{exc.stage}:{type(exc.__cause__).__name__}",
                "dub stage failed",
                stage=exc.stage,
                reason=exc.message[:300],
                **ctx,
            )
            return BackendResult.failed(
                ProcessingError.from_code(ErrorCode.MODEL_ERROR, exc.message[:500], stage=exc.stage)
            )
        except DubbedAudioRejected as exc:
            self._count(Outcome.FAILED)
            self._log_once("decode", "fragment audio undecodable", reason=str(exc)[:300], **ctx)
            return BackendResult.failed(
                ProcessingError.from_code(
                    ErrorCode.INVALID_FRAGMENT, f"audio undecodable: {exc}"[:500], stage="asr"
                )
            )
        return result

    def _original(
        self, fragment: FragmentData, outcome: str, timer: _Timer, transcript: str = ""
    ) -> BackendResult:
        self._count(outcome)
        return BackendResult(
            status="success",
            dubbed_audio=fragment.audio,  # unchanged, byte-for-byte
            transcript=transcript,
            translated_text="",
            stage_timings=timer.timings(),
        )

    def _dub(self, fragment: FragmentData, config: StreamConfig, timer: _Timer) -> BackendResult:
        audio = fragment.audio
        rate = audio.sample_rate_hz
        n = round(audio.duration_ms * rate / 1000)
        pcm = timer.run("decode", lambda: _decode_exact(audio, n))
        if n < MIN_FRAGMENT_S * rate:
            return self._original(fragment, Outcome.TOO_SHORT, timer)
        mono16 = timer.run("decode", lambda: _to_float(np.asarray(resample_pcm(pcm, rate, ASR_RATE, 1)))[:, 0])
        spans = timer.run("vad", lambda: detect_speech(mono16))
        if not spans:
            return self._original(fragment, Outcome.NO_SPEECH, timer)
        utterances = timer.run(
            "asr",
            lambda: [
                Utterance(u.start, u.end, clean_transcript(u.text))
                for u in self.recognizer.transcribe(mono16, config.source_language)
            ],
        )
        placed = place_utterances(utterances, spans)
        transcript = " ".join(u.text for u in placed)
        if not placed:
            return self._original(fragment, Outcome.NO_WORDS, timer, transcript)
        translations = [
            timer.run(
                "translation",
                partial(self.translator.translate, u.text, config.source_language, config.target_language),
            )
            for u in placed
        ]
        translated = " ".join(t for t in translations if t.strip())
        if not has_words(translated):
            return self._original(fragment, Outcome.NO_WORDS, timer, transcript)
        track, segments = self._voice_track(placed, translations, n, rate, config.target_language, timer)
        mixed = timer.run("mix", lambda: self.mixer.mix(_to_float(pcm), track, rate))
        data = timer.run("encode", lambda: encode_pcm(_to_int16(mixed), rate, audio.format))
        self._count(Outcome.DUBBED)
        return BackendResult(
            status="success",
            dubbed_audio=AudioPayload.from_bytes(
                data, format=audio.format, sample_rate_hz=rate, channels=audio.channels, duration_ms=audio.duration_ms
            ),
            transcript=transcript,
            translated_text=translated,
            stage_timings=timer.timings(),
            segments=segments,
        )

    def _voice_track(
        self, placed: list[Utterance], translations: list[str], n: int, rate: int, language: str, timer: _Timer
    ) -> tuple[np.ndarray, list[SpeechSegment]]:
        """The dubbed voice over `n` samples (each utterance's translation fitted to where it was
        spoken) and the speech spans it covers."""
        track = np.zeros(n, dtype=np.float32)
        segments: list[SpeechSegment] = []
        for u, text in zip(placed, translations, strict=True):
            start, end = self._to_fragment(u, n, rate)
            if has_words(text):
                track[start:end] = self._voice(text, language, end - start, rate, timer)
            segments.append(
                SpeechSegment(
                    start_ms=round(1000 * start / rate), end_ms=round(1000 * end / rate), text=u.text,
                    translated_text=text,
                )
            )  # fmt: skip
        return track, segments

    @staticmethod
    def _to_fragment(span: Utterance, n: int, rate: int) -> tuple[int, int]:
        """A span found at ASR_RATE in fragment samples (clamped to the fragment)."""
        start = min(n, round(span.start * rate / ASR_RATE))
        end = min(n, round(span.end * rate / ASR_RATE))
        return start, max(end, start)

    def _voice(self, text: str, language: str, n_out: int, rate: int, timer: _Timer) -> np.ndarray:
        """The translation spoken in exactly `n_out` samples at `rate` (mono float32)."""
        if n_out <= 0:
            return np.zeros(0, dtype=np.float32)
        speech, tts_rate = timer.run("tts", lambda: self.synthesizer.synthesize(text, language))
        target_s = n_out / rate
        natural_s = speech.shape[0] / tts_rate if tts_rate else 0.0
        if natural_s > 0 and abs(natural_s / target_s - 1.0) > RATE_TOLERANCE:
            wpm = round(DEFAULT_WPM * natural_s / target_s)
            speech, tts_rate = timer.run(
                "tts", lambda: self.synthesizer.synthesize(text, language, wpm)
            )

        def fit() -> np.ndarray:
            pcm = np.asarray(resample_pcm(_to_int16(speech)[:, None], tts_rate, rate, 1))
            return pad_or_trim(self.fitter.fit(_to_float(pcm)[:, 0], rate, n_out), n_out)

        return timer.run("fit", fit)


def _decode_exact(audio: AudioPayload, n: int) -> np.ndarray:
    """The fragment's PCM at its own rate and channels, exactly `n` samples."""
    decoded, got_rate, _ = decode_audio(audio.to_bytes(), max_duration_s=audio.duration_ms / 1000 * 2 + 1)
    pcm = np.asarray(resample_pcm(decoded, got_rate, audio.sample_rate_hz, audio.channels))
    # AAC decodes to more samples than declared (encoder padding): the declared count wins
    if pcm.shape[0] >= n:
        return pcm[:n]
    return np.concatenate([pcm, np.zeros((n - pcm.shape[0], audio.channels), np.int16)])
