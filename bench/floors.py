"""Codec floors: what the unavoidable audio work costs here, per second of 48 kHz stereo audio.

Measured in-process with the worker's own functions (`encode_pcm`, `decode_fragment`, the output's
one AAC encoder) and with the ffmpeg CLI the baseline uses, on the fixture's audio. These are the
lower bounds the worker's CPU per stream-second is compared with. Pure measurement: no network.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from livedub.media.audio import decode_fragment, encode_pcm, layout_for

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def _fixture_pcm(fixture: Path, seconds: float) -> tuple[np.ndarray, int]:
    chunks: list[np.ndarray] = []
    rate = 48000
    with av.open(str(fixture)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=rate)
        got = 0
        for frame in c.decode(stream):
            for f in resampler.resample(frame):
                arr = f.to_ndarray().reshape(-1, 2)
                chunks.append(arr)
                got += arr.shape[0]
            if got >= seconds * rate:
                break
    pcm = np.concatenate(chunks)[: int(seconds * rate)].astype(np.int16)
    return pcm, rate


def _cpu() -> float:
    return time.process_time()


def measure(fixture: Path, segment_s: float = 6.0, repeats: int = 3) -> dict[str, Any]:
    """ms of CPU per second of audio for each codec step (best of `repeats`)."""
    pcm, rate = _fixture_pcm(fixture, segment_s)
    n = pcm.shape[0]
    seconds = n / rate
    out: dict[str, Any] = {"segment_s": seconds, "sample_rate": rate}

    def best(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            c = _cpu()
            fn()
            times.append(_cpu() - c)
        return min(times) / seconds * 1000.0

    for fmt in ("m4a", "flac", "wav"):
        data = encode_pcm(pcm, rate, fmt)
        out[f"{fmt}_bytes"] = len(data)
        out[f"{fmt}_encode_ms_per_s"] = best(lambda f=fmt: encode_pcm(pcm, rate, f))
        out[f"{fmt}_decode_ms_per_s"] = best(
            lambda d=data: decode_fragment(d, expected_samples=n, sample_rate=rate, channels=2)
        )

    def output_encoder(coder: str = "twoloop") -> None:
        cc: Any = av.CodecContext.create("aac", "w")
        cc.options = {"aac_coder": coder}
        cc.sample_rate = rate
        cc.layout = layout_for(2)
        cc.format = "fltp"
        cc.bit_rate = 128000
        cc.open()
        for k in range(0, n - 1023, 1024):
            planar = np.ascontiguousarray((pcm[k : k + 1024].astype(np.float32) * (1.0 / 32768.0)).T)
            f = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
            f.sample_rate = rate
            f.pts = k
            cc.encode(f)

    out["pyav_aac_encode_ms_per_s"] = best(output_encoder)
    out["pyav_aac_encode_fast_ms_per_s"] = best(lambda: output_encoder("fast"))
    out["base64_roundtrip_wav_ms_per_s"] = best(lambda: _b64(encode_pcm(pcm, rate, "wav")))
    # The baseline's codec work with the ffmpeg CLI: AAC decode + AAC encode of the fixture's audio.
    try:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [FFMPEG, "-v", "error", "-nostdin", "-i", str(fixture), "-vn", "-c:a", "aac", "-f", "null", "-"],
            check=True,
            timeout=120,
        )
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with av.open(str(fixture)) as c:
            dur = float(c.duration or 0) / 1_000_000
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        out["ffmpeg_cli_transcode_ms_per_s"] = cpu / dur * 1000.0 if dur else None
    except (OSError, subprocess.SubprocessError) as exc:
        out["ffmpeg_cli_transcode_ms_per_s"] = None
        out["ffmpeg_error"] = str(exc)
    return out


def _b64(data: bytes) -> None:
    import base64

    base64.b64decode(base64.b64encode(data))
