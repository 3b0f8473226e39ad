"""PCM fragments on the wire: encode to m4a/wav/flac bytes, decode back to an exact sample count.

PCM everywhere in livedub.media is numpy int16 of shape `(n_samples, channels)` (interleaved,
like s16le). `encode_pcm` produces transport bytes; `decode_fragment` turns bytes from an STS
back into exactly `expected_samples` (priming removed via the container's timestamps, rate and
channel mismatches resampled, ±tolerance trimmed/padded) or raises `DubbedAudioRejected`.

Pure functions over bytes and arrays (PyAV in memory): no files, no network, no global state.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from livedub.media.errors import DubbedAudioRejected
from livedub.media.settings import TransportFormat

_CONTAINER = {"m4a": ("mp4", "aac"), "flac": ("flac", "flac")}
_MIME = {"m4a": "audio/mp4", "wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True)
class CodedAudio:
    """The input's own compressed audio packets that decode to a segment's samples exactly: each
    `(position, packet)` with its first sample relative to the segment start (the first packet
    starts at least one frame before it: AAC decodes a frame from its predecessor too). Muxed
    as-is by `remux_coded` instead of encoding the segment's PCM again (docs/protocol.md,
    "Transport format")."""

    template: Any  # an AudioTemplate: the input stream's codec parameters
    packets: tuple[tuple[int, bytes], ...]
    frame_samples: int
    sample_rate: int


def remux_coded(coded: CodedAudio) -> bytes:
    """m4a bytes holding `coded`'s packets, timed so that a decoder's output starts at the
    segment's first sample (the packets before it fall in the MP4 edit list's skipped part)."""
    buf = io.BytesIO()
    tb = Fraction(1, coded.sample_rate)
    with av.open(buf, "w", format=_CONTAINER["m4a"][0]) as out:
        stream = out.add_stream_from_template(coded.template.stream)
        for pos, data in coded.packets:
            pkt = av.Packet(data)
            pkt.stream = stream
            pkt.time_base = tb
            pkt.pts = pkt.dts = pos
            pkt.duration = coded.frame_samples
            out.mux(pkt)
    return buf.getvalue()


def remuxes(fmt: TransportFormat, coded: CodedAudio | None) -> bool:
    """Whether `fragment_bytes` remuxes the input's packets (m4a, and they cover the segment)."""
    return fmt == "m4a" and coded is not None


def fragment_bytes(
    pcm: np.ndarray, sample_rate: int, fmt: TransportFormat, coded: CodedAudio | None = None
) -> bytes:
    """A segment's audio as transport bytes: for m4a its input packets remuxed when they cover it
    (`coded`), else `encode_pcm`."""
    if remuxes(fmt, coded):
        assert coded is not None
        return remux_coded(coded)
    return encode_pcm(pcm, sample_rate, fmt)


def layout_for(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise ValueError(f"unsupported channel count {channels}")


def pcm_to_planar_float(pcm: np.ndarray) -> np.ndarray:
    """int16 `(n, ch)` → float32 `(ch, n)` in [-1, 1) (what the AAC encoder wants)."""
    return np.ascontiguousarray((pcm.astype(np.float32) * (1.0 / 32768.0)).T)


def planar_float_to_pcm(planar: np.ndarray) -> np.ndarray:
    """float32 `(ch, n)` → int16 `(n, ch)`, as libswresample converts float to s16: scaled by
    32768, rounded half to even, saturated."""
    scaled = planar.T * np.float32(32768.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(np.int16, order="C")


def frame_to_pcm(frame: av.AudioFrame) -> np.ndarray:
    """A decoded/resampled frame in packed s16 → int16 `(n, ch)`."""
    arr = frame.to_ndarray()
    ch = frame.layout.nb_channels
    if frame.format.is_planar:
        return np.ascontiguousarray(arr.T.astype(np.int16, copy=False))
    return arr.reshape(-1, ch).astype(np.int16, copy=False)


def encode_pcm(
    pcm: np.ndarray, sample_rate: int, fmt: TransportFormat = "m4a", *, bitrate: int = 128_000
) -> bytes:
    """Encode int16 `(n, ch)` PCM as transport bytes (m4a = AAC-LC in MP4, wav = s16le, flac)."""
    if pcm.ndim != 2 or pcm.dtype != np.int16:
        raise ValueError("pcm must be int16 of shape (n, channels)")
    channels = pcm.shape[1]
    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(np.ascontiguousarray(pcm).astype("<i2", copy=False).tobytes())
        return buf.getvalue()
    if fmt not in _CONTAINER:
        raise ValueError(f"unsupported transport format {fmt!r}")
    container_fmt, codec = _CONTAINER[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_fmt) as out:
        stream: Any = out.add_stream(codec, rate=sample_rate, layout=layout_for(channels))
        if codec == "aac":
            stream.bit_rate = bitrate
            sample_fmt = "fltp"
            data: np.ndarray = pcm_to_planar_float(pcm)
        else:
            sample_fmt = "s16"
            data = np.ascontiguousarray(pcm).reshape(1, -1)
        stream.format = sample_fmt
        frame_size = 1024 if codec == "aac" else 4608
        step = data.shape[1] if sample_fmt == "fltp" else data.shape[1] // channels
        for start in range(0, step, frame_size):
            if sample_fmt == "fltp":
                chunk = data[:, start : start + frame_size]
            else:
                chunk = data[:, start * channels : (start + frame_size) * channels]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format=sample_fmt, layout=layout_for(channels)
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def mime_type(fmt: TransportFormat) -> str:
    return _MIME[fmt]


def decode_audio(data: bytes, *, max_duration_s: float | None = None) -> tuple[np.ndarray, int, int]:
    """Decode any audio container/codec PyAV knows to `(pcm int16 (n, ch), rate, channels)`.

    Samples that the container marks as before time 0 (encoder priming) are removed.
    Raises `DubbedAudioRejected("undecodable")` on any decoding failure, and
    `DubbedAudioRejected("duration_mismatch")` as soon as more than `max_duration_s` of audio
    has been decoded (a few kB of FLAC silence can hold hours: never decode that whole).
    """
    if not data:
        raise DubbedAudioRejected("empty", "no audio bytes")
    fast = _decode_pcm_wav(data, max_duration_s)
    if fast is not None:
        return fast
    chunks: list[np.ndarray] = []
    rate = channels = 0
    decoded = 0
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise DubbedAudioRejected("undecodable", "no audio stream")
            stream = container.streams.audio[0]
            resampler: av.AudioResampler | None = None
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    channels = min(2, frame.layout.nb_channels)
                    resampler = av.AudioResampler(format="s16", layout=layout_for(channels), rate=rate)
                pcm_parts = [frame_to_pcm(f) for f in resampler.resample(frame)]
                if not pcm_parts:
                    continue
                pcm = np.concatenate(pcm_parts)
                # Priming: a frame whose timestamp is negative (mp4 edit list not applied).
                if frame.pts is not None and frame.time_base is not None and frame.pts < 0:
                    skip = round(-frame.pts * frame.time_base * rate)
                    pcm = pcm[skip:]
                chunks.append(pcm)
                decoded += pcm.shape[0]
                if max_duration_s is not None and decoded > max_duration_s * rate:
                    raise DubbedAudioRejected(
                        "duration_mismatch", f"more than {max_duration_s:.3f} s of audio (decoding stopped)"
                    )
            if resampler is not None:
                tail = [frame_to_pcm(f) for f in resampler.resample(None)]
                chunks.extend(tail)
    except DubbedAudioRejected:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise DubbedAudioRejected("undecodable", str(exc)) from exc
    if not chunks or rate == 0:
        raise DubbedAudioRejected("empty", "no decodable audio frames")
    return np.concatenate(chunks), rate, channels


def _decode_pcm_wav(data: bytes, max_duration_s: float | None) -> tuple[np.ndarray, int, int] | None:
    """16-bit PCM WAV (mono/stereo) read directly, without libav: the wav transport's dubbed audio
    costs ~0.1 ms instead of ~20 ms per 6 s fragment. None: not such a file (libav decodes it)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, channels = w.getframerate(), w.getnchannels()
            if w.getsampwidth() != 2 or w.getcomptype() != "NONE" or channels not in (1, 2) or rate <= 0:
                return None
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError, struct.error):
        return None
    n = len(raw) // (2 * channels)
    if n == 0:
        return None
    if max_duration_s is not None and n > max_duration_s * rate:
        raise DubbedAudioRejected("duration_mismatch", f"more than {max_duration_s:.3f} s of audio")
    pcm = np.frombuffer(raw, dtype="<i2", count=n * channels).astype(np.int16).reshape(n, channels)
    return pcm, rate, channels


def resample_pcm(pcm: np.ndarray, from_rate: int, to_rate: int, to_channels: int) -> np.ndarray:
    """Convert int16 `(n, ch)` PCM to another rate and/or channel count (libswresample)."""
    from_channels = pcm.shape[1]
    if from_rate == to_rate and from_channels == to_channels:
        return pcm
    if from_rate == to_rate:
        if to_channels == 1:
            return np.clip(np.rint(pcm.astype(np.float32).mean(axis=1, keepdims=True)), -32768, 32767).astype(np.int16)
        return np.repeat(pcm[:, :1], to_channels, axis=1) if from_channels == 1 else pcm[:, :to_channels]
    resampler = av.AudioResampler(format="s16", layout=layout_for(to_channels), rate=to_rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=layout_for(from_channels)
    )
    frame.sample_rate = from_rate
    frame.pts = 0
    frame.time_base = Fraction(1, from_rate)
    parts = [frame_to_pcm(f) for f in resampler.resample(frame)]
    parts += [frame_to_pcm(f) for f in resampler.resample(None)]
    if not parts:
        return np.zeros((0, to_channels), dtype=np.int16)
    return np.concatenate(parts)


def fit_to_length(pcm: np.ndarray, n_samples: int, tolerance: float = 0.10) -> np.ndarray:
    """Trim or zero-pad `pcm` to exactly `n_samples` if within ±tolerance, else reject."""
    have = pcm.shape[0]
    if n_samples <= 0:
        raise ValueError("n_samples must be positive")
    if abs(have - n_samples) > tolerance * n_samples:
        raise DubbedAudioRejected(
            "duration_mismatch",
            f"{have} samples for a {n_samples}-sample fragment ({(have - n_samples) / n_samples:+.1%})",
        )
    if have == n_samples:
        return pcm
    if have > n_samples:
        return pcm[:n_samples]
    pad = np.zeros((n_samples - have, pcm.shape[1]), dtype=pcm.dtype)
    return np.concatenate([pcm, pad])


def decode_fragment(
    data: bytes,
    *,
    expected_samples: int,
    sample_rate: int,
    channels: int,
    tolerance: float = 0.10,
) -> np.ndarray:
    """Decode dubbed audio bytes to exactly `(expected_samples, channels)` int16 at `sample_rate`.

    Raises `DubbedAudioRejected` with reason "empty", "undecodable" or "duration_mismatch".
    """
    # Stop decoding once the audio is clearly too long (+ 0.1 s for resampler/priming slack).
    pcm, rate, ch = decode_audio(data, max_duration_s=expected_samples * (1 + tolerance) / sample_rate + 0.1)
    try:
        pcm = resample_pcm(pcm, rate, sample_rate, channels)
    except (av.FFmpegError, ValueError) as exc:
        raise DubbedAudioRejected("undecodable", f"resampling failed: {exc}") from exc
    return fit_to_length(pcm, expected_samples, tolerance)


def describe(data: bytes) -> dict[str, Any]:
    """Small summary of encoded audio (rate, channels, samples) for logs and tools."""
    pcm, rate, ch = decode_audio(data)
    return {"sample_rate": rate, "channels": ch, "samples": int(pcm.shape[0])}
