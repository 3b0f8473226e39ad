"""PCM fragments on the wire: encode to m4a/wav/flac bytes, decode back to an exact sample count.

PCM everywhere in livedub.media is a `Pcm` (`livedub.media.pcm`): interleaved s16 samples,
`(n_samples, channels)`; numpy arrays of that shape are accepted wherever PCM is taken.
`encode_pcm` produces transport bytes; `decode_fragment` turns bytes from an STS back into
exactly `expected_samples` (priming removed via the container's timestamps, rate and channel
mismatches resampled, ±tolerance trimmed/padded) or raises `DubbedAudioRejected`. Sample formats
are converted by libswresample (`AudioConverter`): float to s16 rounds half to even and
saturates, s16 to float scales by 1/32768.

Pure functions over bytes and PCM (PyAV in memory): no files, no network, no global state.
"""

from __future__ import annotations

import errno
import io
import struct
import wave
from array import array
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from livedub.media.errors import DubbedAudioRejected
from livedub.media.pcm import Pcm
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


def fragment_bytes(pcm: Pcm, sample_rate: int, fmt: TransportFormat, coded: CodedAudio | None = None) -> bytes:
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


class AudioConverter:
    """`av.AudioResampler`'s `resample` (sample format, layout and rate by libswresample, frames
    in, frames out, None flushes) in a filter graph without threads: PyAV's own graph starts
    libavfilter's slice threads (two per graph on two cores), which an audio conversion never
    uses, once per converter — for every dubbed fragment decoded, and for good in the input's
    and the output's converters."""

    def __init__(self, format: str, layout: str, rate: int) -> None:
        self.format, self.layout, self.rate = format, layout, rate
        self._graph: Any = None
        self._template: tuple[str, str, int] | None = None
        self._passthrough = False  # the first frame was already the target: frames go through as they are

    def _setup(self, frame: av.AudioFrame) -> None:
        graph = av.filter.Graph()
        graph.threads = 1  # before the first filter: libavfilter starts its threads then
        args = {"time_base": str(frame.time_base)} if frame.time_base is not None else {}
        src = graph.add(
            "abuffer", sample_rate=str(frame.sample_rate), sample_fmt=frame.format.name,
            channel_layout=frame.layout.name, **args,
        )  # fmt: skip
        fmt = graph.add("aformat", sample_rates=str(self.rate), sample_fmts=self.format, channel_layouts=self.layout)
        sink = graph.add("abuffersink")
        src.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        self._graph = graph

    def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """The converted frames `frame` completes (None: flush what the converter holds).
        ValueError for a frame unlike the first one (another format, layout or rate)."""
        if frame is None:
            if self._graph is None:
                return []
        else:
            got = (frame.format.name, frame.layout.name, frame.sample_rate)
            if self._template is None:
                self._template = got
                self._passthrough = got == (self.format, self.layout, self.rate)
                if not self._passthrough:
                    self._setup(frame)
            elif got != self._template:
                raise ValueError("Frame does not match AudioConverter setup.")
            if self._passthrough:
                return [frame]
        self._graph.push(frame)
        out: list[av.AudioFrame] = []
        while True:
            try:
                out.append(self._graph.pull())
            except (EOFError, BlockingIOError):
                return out
            except av.FFmpegError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                return out


def pcm_frame(pcm: Pcm, sample_rate: int, pts: int | None = None) -> av.AudioFrame:
    """`pcm` as one packed s16 frame (its bytes copied in), timed in 1/`sample_rate`."""
    frame = av.AudioFrame(format="s16", layout=layout_for(pcm.channels), samples=pcm.n)
    if pcm.n:
        frame.planes[0].update(pcm.data)  # type: ignore[arg-type]  # any buffer (the stub says bytes)
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    return frame


def frame_to_pcm(frame: av.AudioFrame) -> Pcm:
    """A packed s16 frame (a decoder's or `AudioConverter(format="s16")`'s) → `Pcm`, sharing
    the frame's buffer (without its alignment padding)."""
    if frame.format.name != "s16":
        raise ValueError(f"expected a packed s16 frame, got {frame.format.name}")
    channels = frame.layout.nb_channels
    return Pcm(memoryview(frame.planes[0])[: frame.samples * channels * 2], channels)


def encode_pcm(pcm: Pcm | Any, sample_rate: int, fmt: TransportFormat = "m4a", *, bitrate: int = 128_000) -> bytes:
    """Encode `(n, ch)` s16 PCM as transport bytes (m4a = AAC-LC in MP4, wav = s16le, flac)."""
    pcm = Pcm.of(pcm)
    channels = pcm.channels
    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.data)
        return buf.getvalue()
    if fmt not in _CONTAINER:
        raise ValueError(f"unsupported transport format {fmt!r}")
    container_fmt, codec = _CONTAINER[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_fmt) as out:
        stream: Any = out.add_stream(codec, rate=sample_rate, layout=layout_for(channels))
        if codec == "aac":
            stream.bit_rate = bitrate
            stream.format = "fltp"  # PyAV converts each s16 frame (libswresample)
        else:
            stream.format = "s16"
        frame_size = 1024 if codec == "aac" else 4608
        for start in range(0, pcm.n, frame_size):
            out.mux(stream.encode(pcm_frame(pcm[start : start + frame_size], sample_rate, start)))
        out.mux(stream.encode(None))
    return buf.getvalue()


def mime_type(fmt: TransportFormat) -> str:
    return _MIME[fmt]


def decode_audio(data: bytes, *, max_duration_s: float | None = None) -> tuple[Pcm, int, int]:
    """Decode any audio container/codec PyAV knows to `(pcm (n, ch), rate, channels)`.

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
    chunks: list[Pcm] = []
    rate = channels = 0
    decoded = 0
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise DubbedAudioRejected("undecodable", "no audio stream")
            stream = container.streams.audio[0]
            resampler: AudioConverter | None = None
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    channels = min(2, frame.layout.nb_channels)
                    resampler = AudioConverter(format="s16", layout=layout_for(channels), rate=rate)
                pcm = Pcm.concat([frame_to_pcm(f) for f in resampler.resample(frame)], channels)
                if not pcm.n:
                    continue
                # Priming: a frame whose timestamp is negative (mp4 edit list not applied).
                if frame.pts is not None and frame.time_base is not None and frame.pts < 0:
                    skip = round(-frame.pts * frame.time_base * rate)
                    pcm = pcm[skip:]
                chunks.append(pcm)
                decoded += pcm.n
                if max_duration_s is not None and decoded > max_duration_s * rate:
                    raise DubbedAudioRejected(
                        "duration_mismatch", f"more than {max_duration_s:.3f} s of audio (decoding stopped)"
                    )
            if resampler is not None:
                chunks.extend(frame_to_pcm(f) for f in resampler.resample(None))
    except DubbedAudioRejected:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise DubbedAudioRejected("undecodable", str(exc)) from exc
    if not chunks or rate == 0:
        raise DubbedAudioRejected("empty", "no decodable audio frames")
    return Pcm.concat(chunks, channels), rate, channels


def _decode_pcm_wav(data: bytes, max_duration_s: float | None) -> tuple[Pcm, int, int] | None:
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
    return Pcm(memoryview(raw)[: n * channels * 2], channels), rate, channels


def _remix(pcm: Pcm, to_channels: int) -> Pcm:
    """The same samples with `to_channels` channels: to mono the channels' mean (rounded half to
    even), from mono the one channel copied, else the first `to_channels`. Pure Python where it
    averages (≈ 60 ms per 6 s of stereo: only an STS answering a mono stream in stereo needs it)."""
    src = array("h")
    src.frombytes(pcm.data)
    ch = pcm.channels
    if to_channels == 1:
        out = array("h", (round(sum(v) / ch) for v in zip(*(src[c::ch] for c in range(ch)), strict=True)))
    else:
        out = array("h", bytes(2 * pcm.n * to_channels))
        for c in range(to_channels):
            out[c::to_channels] = src[0::ch] if ch == 1 else src[c::ch]
    return Pcm(memoryview(out).cast("B"), to_channels)


def resample_pcm(pcm: Pcm | Any, from_rate: int, to_rate: int, to_channels: int) -> Pcm:
    """Convert `(n, ch)` s16 PCM to another rate and/or channel count (libswresample)."""
    pcm = Pcm.of(pcm)
    from_channels = pcm.channels
    if from_rate == to_rate and from_channels == to_channels:
        return pcm
    if from_rate == to_rate:
        return _remix(pcm, to_channels)
    resampler = AudioConverter(format="s16", layout=layout_for(to_channels), rate=to_rate)
    parts = [frame_to_pcm(f) for f in resampler.resample(pcm_frame(pcm, from_rate, 0))]
    parts += [frame_to_pcm(f) for f in resampler.resample(None)]
    return Pcm.concat(parts, to_channels)


def fit_to_length(pcm: Pcm | Any, n_samples: int, tolerance: float = 0.10) -> Pcm:
    """Trim or zero-pad `pcm` to exactly `n_samples` if within ±tolerance, else reject."""
    pcm = Pcm.of(pcm)
    have = pcm.n
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
    return Pcm.concat([pcm, Pcm.zeros(n_samples - have, pcm.channels)], pcm.channels)


def decode_fragment(
    data: bytes,
    *,
    expected_samples: int,
    sample_rate: int,
    channels: int,
    tolerance: float = 0.10,
) -> Pcm:
    """Decode dubbed audio bytes to exactly `(expected_samples, channels)` s16 at `sample_rate`.

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
    return {"sample_rate": rate, "channels": ch, "samples": pcm.n}
