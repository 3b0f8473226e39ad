"""Unit: the dub engine wrappers (real sox/espeak-ng/Apertium where they are instant), the fitter's
exact sample counts, the mixer's ducking, and DubBackend's outcomes with fake engines."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from livedub.media.audio import encode_pcm
from livedub.protocol import AudioPayload, FragmentData, StreamConfig
from livedub.sts.dub.backend import DubBackend, Outcome, place_utterances
from livedub.sts.dub.errors import StageFailure
from livedub.sts.dub.fitter import SoxFitter
from livedub.sts.dub.mixer import DuckingMixer, MixMode, voice_envelope
from livedub.sts.dub.recognizer import SpeechSpan, Utterance
from livedub.sts.dub.synthesizer import EspeakSynthesizer
from livedub.sts.dub.translator import ApertiumTranslator
from livedub.sts.metrics import StsMetrics
from livedub.sts.settings import BackendKind, StsSettings

needs = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("sox", "espeak-ng", "lt-proc")),
    reason="sox / espeak-ng / apertium not installed (make setup)",
)
RATE = 48_000


@needs
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.003, 1.5, 2.0])
def test_fitter_lands_on_the_exact_sample_count(factor: float) -> None:
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    target = round(tone.size / factor)
    out = SoxFitter().fit(tone, RATE, target)
    assert out.shape == (target,) and out.dtype == np.float32
    # stretched, not padded with silence: energy all along (except the last 5 %)
    assert np.abs(out[int(0.9 * target) : int(0.95 * target)]).max() > 0.1


def test_mixer_ducks_only_where_the_voice_speaks() -> None:
    n = 3 * RATE
    original = np.full((n, 2), 0.5, dtype=np.float32)
    voice = np.zeros(n, dtype=np.float32)
    voice[RATE : 2 * RATE] = 0.01 * np.sign(np.sin(np.arange(RATE)))  # 1..2 s
    mixed = DuckingMixer(MixMode.DUCK, -12.0).mix(original, voice, RATE)
    assert mixed.shape == original.shape
    assert np.allclose(mixed[: int(0.9 * RATE)], 0.5)  # before: untouched
    assert np.allclose(mixed[int(2.1 * RATE) :], 0.5)  # after: untouched
    bed = mixed[int(1.2 * RATE) : int(1.8 * RATE), 0] - voice[int(1.2 * RATE) : int(1.8 * RATE)]
    assert np.allclose(bed, 0.5 * 10 ** (-12 / 20), atol=1e-3)  # −12 dB under the voice
    replaced = DuckingMixer(MixMode.REPLACE).mix(original, voice, RATE)
    assert np.allclose(replaced[int(1.2 * RATE) : int(1.8 * RATE), 0], voice[int(1.2 * RATE) : int(1.8 * RATE)])


def test_voice_envelope_bridges_short_gaps_only() -> None:
    voice = np.zeros(RATE, dtype=np.float32)
    voice[1000:2000] = 0.5
    voice[2500:3000] = 0.5  # 500-sample gap: bridged
    env = voice_envelope(voice, RATE)
    assert env[2200] == 1.0 and env[30_000] == 0.0


@needs
def test_apertium_pipeline_translates_escapes_and_restarts() -> None:
    tr = ApertiumTranslator()
    try:
        assert ("en", "es") in tr.pairs()
        assert tr.translate("Good morning.", "en", "es") == "Buenos días."
        assert "[" in tr.translate("a [b] c/d $5", "en", "es")  # markup characters survive
        pipe = tr._pipelines["eng-spa"]
        pipe.procs[3].kill()  # a module dies: the next call fails, the one after restarts it
        pipe.procs[3].wait()
        try:
            tr.translate("Hello.", "en", "es")
        except StageFailure as exc:
            assert exc.stage == "translation"
        assert tr.translate("Good morning.", "en", "es") == "Buenos días."
    finally:
        tr.close()


def test_apertium_without_the_mode_is_a_translation_failure(tmp_path: Path) -> None:
    tr = ApertiumTranslator(modes_dir=tmp_path)
    assert tr.pairs() == []
    with pytest.raises(StageFailure) as err:
        tr.translate("Hello.", "en", "es")
    assert err.value.stage == "translation"


@needs
def test_espeak_synthesizes_and_a_missing_binary_is_a_tts_failure() -> None:
    audio, rate = EspeakSynthesizer({"es": "es"}).synthesize("Hola a todos.", "es")
    assert rate == 22_050 and 0.5 < audio.size / rate < 3 and np.abs(audio).max() > 0.1
    with pytest.raises(StageFailure) as err:
        EspeakSynthesizer({"es": "es"}, binary="/nonexistent/espeak-ng").synthesize("Hola", "es")
    assert err.value.stage == "tts"
    with pytest.raises(StageFailure):
        EspeakSynthesizer({}).synthesize("Hola", "es")  # no voice for the language


# --- placing utterances on the speech spans ---------------------------------------------------
def test_utterances_take_the_vad_edges_and_never_overlap() -> None:
    vad = [SpeechSpan(1_000, 20_000), SpeechSpan(40_000, 60_000)]
    # whisper's own edges are loose; each utterance takes the VAD span(s) it overlaps
    got = place_utterances(
        [Utterance(0, 24_000, "One."), Utterance(32_000, 64_000, "Two.")], vad
    )
    assert got == [Utterance(1_000, 20_000, "One."), Utterance(40_000, 60_000, "Two.")]
    # one VAD span carrying two utterances: cut at whisper's boundary
    got = place_utterances([Utterance(0, 30_000, "A."), Utterance(30_000, 70_000, "B.")], [SpeechSpan(5_000, 60_000)])
    assert got == [Utterance(5_000, 30_000, "A."), Utterance(30_000, 60_000, "B.")]
    # no words dropped; no VAD overlap: whisper's times; no room left: joins the previous text
    got = place_utterances(
        [Utterance(0, 100, " ... "), Utterance(1_000, 20_000, "X."), Utterance(10_000, 15_000, "Y.")],
        [SpeechSpan(1_000, 20_000)],
    )
    assert got == [Utterance(1_000, 20_000, "X. Y.")]
    assert place_utterances([Utterance(100, 200, "Z.")], []) == [Utterance(100, 200, "Z.")]
    assert place_utterances([], vad) == []


# --- DubBackend with fake engines -------------------------------------------------------------
class _FakeRecognizer:
    def __init__(self, text: str = "hello world") -> None:
        self.text = text
        self.calls = 0

    def languages(self) -> set[str] | None:
        return {"en"}

    def transcribe(self, audio: np.ndarray, language: str) -> list[Utterance]:
        self.calls += 1
        return [Utterance(0, audio.size, self.text)]


class _FakeTranslator:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def pairs(self) -> list[tuple[str, str]]:
        return [("en", "es"), ("es", "en")]

    def translate(self, text: str, source: str, target: str) -> str:
        if self.fail:
            raise StageFailure("translation", "apertium failed: boom")
        return "hola mundo"

    def close(self) -> None:
        pass


def _fragment(pcm: np.ndarray, fmt: str = "wav") -> FragmentData:
    return FragmentData(
        fragment_id=str(uuid.uuid4()),
        stream_id="s1",
        sequence_number=0,
        timestamp=0,
        audio=AudioPayload.from_bytes(
            encode_pcm(pcm, RATE, fmt),  # type: ignore[arg-type]
            format=fmt,  # type: ignore[arg-type]
            sample_rate_hz=RATE,
            channels=pcm.shape[1],
            duration_ms=round(1000 * pcm.shape[0] / RATE),
        ),
    )


def _backend(**engines: object) -> tuple[DubBackend, StsMetrics]:
    metrics = StsMetrics()
    backend = DubBackend(
        StsSettings(backend=BackendKind.DUB, workers=1),
        metrics=metrics,
        recognizer=engines.get("recognizer", _FakeRecognizer()),  # type: ignore[arg-type]
        translator=engines.get("translator", _FakeTranslator()),  # type: ignore[arg-type]
        synthesizer=EspeakSynthesizer({"es": "es"}),
    )
    return backend, metrics


def _count(metrics: StsMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("sts_dub_fragments_total", {"outcome": outcome})
    return value or 0.0


async def test_silence_and_a_short_fragment_come_back_original() -> None:
    rec = _FakeRecognizer()
    backend, metrics = _backend(recognizer=rec)
    try:
        for pcm, outcome in (
            (np.zeros((2 * RATE, 2), np.int16), Outcome.NO_SPEECH),
            (np.zeros((RATE // 5, 2), np.int16), Outcome.TOO_SHORT),  # 0.2 s
        ):
            frag = _fragment(pcm)
            result = await backend.process(frag, StreamConfig())
            assert result.status == "success" and result.transcript == ""
            assert result.dubbed_audio is frag.audio  # unchanged, byte-for-byte
            assert _count(metrics, outcome) == 1
        assert rec.calls == 0  # the VAD kept silence away from the recognizer
    finally:
        backend.close()


async def test_check_config_names_the_available_pairs() -> None:
    backend, _ = _backend()
    try:
        assert await backend.check_config(StreamConfig()) is None
        why = await backend.check_config(StreamConfig(source_language="en", target_language="fr"))
        assert why is not None and "en->es" in why and "en->fr" in why
        # es->en: the recognizer (fake tiny.en) has no Spanish
        assert await backend.check_config(StreamConfig(source_language="es", target_language="en"))
    finally:
        backend.close()


@needs
async def test_a_translation_failure_is_failed_with_its_stage() -> None:
    from livedub.sts.dub.synthesizer import EspeakSynthesizer as Syn

    speech, rate = Syn({"en": "en-us"}).synthesize("hello there my friends", "en")
    from livedub.media.audio import resample_pcm

    voice = resample_pcm((speech * 32767).astype(np.int16)[:, None], rate, RATE, 2)
    pcm = np.zeros((3 * RATE, 2), np.int16)
    pcm[RATE // 2 : RATE // 2 + voice.shape[0]] = voice[: 2 * RATE]
    backend, metrics = _backend(translator=_FakeTranslator(fail=True))
    try:
        result = await backend.process(_fragment(pcm), StreamConfig())
        assert result.status == "failed" and result.error is not None
        assert result.error.stage == "translation" and result.error.code.value == "MODEL_ERROR"
        assert result.error.retryable
        assert _count(metrics, Outcome.FAILED) == 1
    finally:
        backend.close()


def test_whisper_annotations_are_not_speech() -> None:
    from livedub.sts.dub.backend import clean_transcript

    assert clean_transcript("[Music] ♪ (applause)") == ""
    assert clean_transcript(" Hello (laughs) world. ") == "Hello world."


async def test_music_and_noise_come_back_original() -> None:
    rec = _FakeRecognizer()
    backend, metrics = _backend(recognizer=rec)
    t = np.arange(3 * RATE) / RATE
    chords = sum(
        0.1 * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t + i))
        for i, f in enumerate((261.6, 329.6, 392.0, 523.3))
    )
    noise = np.random.default_rng(1).standard_normal(3 * RATE) * 0.1
    try:
        for signal in (chords, noise):
            pcm = np.repeat((np.asarray(signal) * 32767).astype(np.int16)[:, None], 2, axis=1)
            frag = _fragment(pcm, "flac")
            result = await backend.process(frag, StreamConfig())
            assert result.status == "success" and result.dubbed_audio is frag.audio
        assert rec.calls == 0 and _count(metrics, Outcome.NO_SPEECH) == 2
    finally:
        backend.close()
