"""Integration: the dub backend with its real engines (faster-whisper tiny.en, Apertium, espeak-ng,
sox), in process and over the real Socket.IO server. The whisper model is loaded once per
test process (module fixture)."""

from __future__ import annotations

import itertools
import re
import shutil
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from livedub.media.audio import decode_audio, encode_pcm, resample_pcm
from livedub.protocol import (
    AudioPayload,
    ErrorCode,
    ErrorEvent,
    FragmentData,
    FragmentProcessed,
    StreamConfig,
    parse_as,
)
from livedub.sts.dub.backend import DubBackend
from livedub.sts.dub.synthesizer import EspeakSynthesizer
from livedub.sts.dub.translator import ApertiumTranslator
from livedub.sts.server import run_sts
from livedub.sts.settings import BackendKind, StsSettings
from livedub.sts.testing import StsTestClient, make_fragment

pytestmark = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("sox", "espeak-ng", "lt-proc")),
    reason="sox / espeak-ng / apertium not installed (make setup)",
)

RATE = 48_000
REFERENCE = "The government announced a new plan to build more houses."
SPEECH_AT_S = 1.0
FRAGMENT_S = 5.0
BED_GAIN = 0.01  # a quiet tone under the speech (−40 dBFS)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


@pytest.fixture(scope="module")
def backend() -> Iterator[DubBackend]:
    dub = DubBackend(StsSettings(backend=BackendKind.DUB, workers=1))
    yield dub
    dub.close()


def spoken_fragment() -> tuple[FragmentData, np.ndarray, int]:
    """REFERENCE spoken by espeak-ng at SPEECH_AT_S over a quiet tone; wav, 48 kHz stereo."""
    speech, rate = EspeakSynthesizer({"en": "en-us"}).synthesize(REFERENCE, "en")
    voice = resample_pcm((speech * 32767).astype(np.int16)[:, None], rate, RATE, 2)
    n = round(FRAGMENT_S * RATE)
    t = np.arange(n) / RATE
    bed = (BED_GAIN * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    pcm = np.repeat(bed[:, None], 2, axis=1)
    at = round(SPEECH_AT_S * RATE)
    end = min(n, at + voice.shape[0])
    pcm[at:end] += voice[: end - at]
    frag = FragmentData(
        fragment_id=str(uuid.uuid4()),
        stream_id="dub-1",
        sequence_number=0,
        timestamp=0,
        audio=AudioPayload.from_bytes(
            encode_pcm(pcm, RATE, "wav"),
            format="wav",
            sample_rate_hz=RATE,
            channels=2,
            duration_ms=round(FRAGMENT_S * 1000),
        ),
    )
    return frag, pcm, end


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


async def test_a_spoken_sentence_is_dubbed_in_place(backend: DubBackend) -> None:
    frag, original, speech_end = spoken_fragment()
    result = await backend.process(frag, StreamConfig(source_language="en", target_language="es"))
    assert result.status == "success", result.error
    assert result.transcript is not None and wer(REFERENCE, result.transcript) <= 0.20
    translator = ApertiumTranslator()
    try:
        assert result.translated_text == translator.translate(REFERENCE, "en", "es")
    finally:
        translator.close()
    # the speech spans: where the source spoke (and the dubbed voice plays), the texts per span
    assert result.segments, "the dub backend returns its speech spans"
    speech_end_ms = 1000 * speech_end / RATE
    assert abs(result.segments[0].start_ms - 1000 * SPEECH_AT_S) <= 250
    assert abs(result.segments[-1].end_ms - speech_end_ms) <= 400
    assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(result.segments))
    assert " ".join(s.text for s in result.segments) == result.transcript
    assert " ".join(s.translated_text for s in result.segments) == result.translated_text
    timings = result.stage_timings
    assert timings is not None and timings.asr_ms and timings.tts_ms is not None
    assert result.dubbed_audio is not None and result.dubbed_audio.format == "wav"
    decoded, rate, channels = decode_audio(result.dubbed_audio.to_bytes())
    out = np.asarray(decoded)
    assert (rate, channels) == (RATE, 2)
    assert out.shape[0] == original.shape[0]  # exactly the fragment's sample count
    at = round(SPEECH_AT_S * RATE)
    bed = rms(original[: at // 2])
    # before the source spoke: the original bed, untouched
    assert abs(rms(out[: at // 2]) - bed) < 0.1 * bed + 2
    # where the source spoke: the synthetic voice (well above the bed)
    middle = out[at + (speech_end - at) // 4 : at + 3 * (speech_end - at) // 4]
    assert rms(middle) > 10 * bed
    assert not np.array_equal(middle, original[at + (speech_end - at) // 4 : at + 3 * (speech_end - at) // 4])
    # after the source stopped (VAD padding aside): the bed again, no stretched speech
    tail = out[speech_end + RATE // 2 :]
    assert tail.size and abs(rms(tail) - bed) < 0.2 * bed + 2


async def test_unsupported_pair_is_invalid_config_over_socketio(backend: DubBackend) -> None:
    settings = StsSettings(host="127.0.0.1", port=0, backend=BackendKind.DUB, close_delay_s=0.2)
    async with run_sts(settings, backend=backend) as sts:
        client = StsTestClient(sts.url, stream_id="dub-2", worker_id="w-1")
        try:
            await client.connect()
            await client.emit(
                "stream:init",
                {
                    "stream_id": "dub-2",
                    "worker_id": "w-1",
                    "config": {"source_language": "en", "target_language": "fr"},
                },
            )
            err = parse_as(ErrorEvent, await client.wait_for("error", timeout=30))
            assert err.code is ErrorCode.INVALID_CONFIG and not err.retryable
            assert "en->fr" in err.message and "en->es" in err.message
            assert not client.of("stream:ready")
            # the supported pair on the same connection: served; silence comes back original
            await client.init(config={"source_language": "en", "target_language": "es"}, timeout=30)
            payload = make_fragment("dub-2", 0, duration_ms=1000)
            await client.emit("fragment:data", payload)
            done = parse_as(
                FragmentProcessed, await client.wait_for("fragment:processed", timeout=30)
            )
            assert done.status == "success" and done.transcript == ""
            assert done.dubbed_audio is not None
            assert done.dubbed_audio.data_base64 == payload["audio"]["data_base64"]
            assert done.stage_timings is not None
        finally:
            await client.close()
