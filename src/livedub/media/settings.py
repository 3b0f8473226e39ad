"""The media path's knobs, in one typed model with the spec's defaults.

`MediaSettings` is a plain pydantic model: the worker's process settings (pydantic-settings)
embed or build it, and the media CLI builds it from flags. Every timing constant of the media
path lives here; no module hard-codes one. This module never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from livedub.protocol.constants import ID_CHARS, is_valid_id

TransportFormat = Literal["m4a", "wav", "flac"]


class MediaSettings(BaseModel):
    """Settings of one media pipeline (one stream). Defaults follow docs/media.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_url: str = Field("", description="rtsp:// (TCP), rtmp://, srt:// or a file path")
    output_url: str = Field("", description="rtmp:// (flv), rtsp://, srt:// (mpegts) or a file")
    mirror_output_url: str = Field(
        "", description="also publish the output's packets here (own thread; never blocks the output)"
    )
    stream_id: str = Field("stream", description=f"{ID_CHARS}; used in paths and logs")

    segment_s: float = Field(6.0, ge=1.0, le=60.0, description="fragment length in seconds")
    sample_rate_hz: int | None = Field(
        None, ge=8000, le=96000, description="PCM rate of fragments; None = the input's rate"
    )
    channels: int | None = Field(None, ge=1, le=2, description="None = the input's (max 2)")
    min_tail_s: float = Field(1.0, ge=0.0, description="a shorter end-of-stream tail is not dubbed")

    # Output timing (docs/media.md "Timing").
    paced: bool = Field(True, description="write the output paced to wall clock W0 + pts + D")
    sts_timeout_s: float = Field(8.0, gt=0, description="only used to derive the default delay")
    output_delay_s: float | None = Field(
        None, gt=0, description="D; None = segment_s + sts_timeout_s + output_headroom_s"
    )
    output_headroom_s: float = Field(
        0.5, ge=0, description="added to the default D to cover look-ahead, margin, read latency"
    )
    output_connect_lead_s: float = Field(
        3.0, ge=0, description="a paced network output connects this long before its first packet "
        "(not earlier: media servers drop publishers idle for ~10 s)"
    )
    anchor_settle_s: float = Field(
        2.0,
        ge=0,
        description="W0 follows the input's live edge for this long (at most D/2) after the first "
        "packet, so a media server's cached-GOP burst does not add to the latency; 0: first packet",
    )
    output_linger_s: float = Field(
        0.5, ge=0, description="a network output waits this long after its last packet before it "
        "hangs up, so that a relay forwards the last packets first"
    )
    input_audio_batch_s: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="the reader decodes, converts and hands over audio in batches of about this length "
        "(0: every packet alone); a batch ends early at a timestamp jump. A segment is cut at most this "
        "much later; per-frame hand-over costs ≈ 3 ms CPU per stream-second more (docs/performance.md)",
    )
    output_tick_s: float = Field(
        0.25,
        gt=0,
        le=0.5,
        description="a paced output writes in ticks of this length, at most deadline_margin_s "
        "(effective_output_tick_s), what falls due before the next one (a packet goes out at most "
        "a tick before it is due; each tick wakes the output thread: 0.1 s cost ≈ 1-2 ms CPU per "
        "stream-second more than 0.25 s, docs/performance.md)",
    )
    deadline_margin_s: float = Field(
        0.25, ge=0, description="a segment's audio is taken this long before its first sample is due"
    )
    unpaced_wait_s: float = Field(
        0.0, ge=0, description="unpaced mode: wait up to this long for a segment's audio to resolve"
    )
    fill_missing_audio: bool = Field(
        True, description="paced mode: a segment missing at its deadline is output as silence"
    )

    # Input.
    input_realtime: bool | None = Field(
        None, description="pace file reads to real time; None = when the output is paced"
    )
    end_on_eof: bool | None = Field(
        None, description="end at input EOF instead of reconnecting; None = files only"
    )
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0, description="watchdog: a read stalled this long fails")
    reconnect_delays_s: tuple[float, ...] = Field(
        (1.0, 2.0, 4.0), description="waits before each retry; then the input is unavailable"
    )
    read_ahead_items: int = Field(256, ge=8, description="bounded queue between reader and loop")
    discontinuity_threshold_s: float = Field(1.0, gt=0)
    input_options: dict[str, str] = Field(default_factory=dict, description="libav input options")

    # Output.
    output_audio_bitrate: int = Field(128_000, ge=16_000)
    output_options: dict[str, str] = Field(default_factory=dict, description="libav muxer options")
    output_format: str | None = Field(None, description="muxer name; None = from the URL")
    original_track: bool = Field(
        False,
        description="the original sound (the input audio on the same timeline) as the second audio "
        "track where the container carries several (MPEG-TS, Matroska, MP4, RTSP); nothing else "
        "(FLV/RTMP needs keep_original). The worker turns it on by default",
    )
    keep_original: bool = Field(
        False,
        description="also output the original sound (the input audio on the same timeline): the "
        "second audio track where the container carries several (MPEG-TS, Matroska, MP4, RTSP), "
        "else (FLV/RTMP) its own output at `urls.original_output_url`",
    )
    target_language: str | None = Field(
        None, description="language of the output (dubbed) audio track: ISO 639-1 or 639-2; tags it"
    )
    source_language: str | None = Field(
        None, description="language of the original audio track: ISO 639-1 or 639-2; tags it"
    )

    # Fragments on the wire and on disk.
    transport_format: TransportFormat = "flac"  # the worker's default (docs/protocol.md, "Transport format")
    transport_bitrate: int = Field(128_000, ge=16_000)
    dub_tolerance: float = Field(0.10, ge=0, le=0.5, description="±fraction trimmed/padded")
    segment_dir: Path | None = Field(None, description="write segment files here; None = off")
    segment_retention: int = Field(50, ge=1, description="batches kept per stream on disk")

    # A/V sync.
    drift_bound_ms: float = Field(20.0, gt=0, description="start slewing beyond this deviation")
    drift_target_ms: float = Field(5.0, ge=0, description="stop slewing once back within this")
    drift_max_slew: float = Field(0.005, gt=0, le=0.05, description="max samples changed/frame")
    drift_window_frames: int = Field(24, ge=1, description="frames averaged per measurement")
    gap_fill_threshold_ms: float = Field(
        100.0, gt=0, description="an audio timestamp gap larger than this is filled with silence"
    )

    @field_validator("stream_id")
    @classmethod
    def _check_stream_id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(f"stream_id must match {ID_CHARS}")
        return value

    @model_validator(mode="after")
    def _check_delay(self) -> MediaSettings:
        if self.paced and self.effective_output_delay_s <= self.segment_s:
            raise ValueError("output_delay_s must be larger than segment_s")
        if self.drift_target_ms >= self.drift_bound_ms:
            raise ValueError("drift_target_ms must be below drift_bound_ms")
        return self

    @property
    def effective_output_delay_s(self) -> float:
        """D: the constant delay of the output behind the input timeline."""
        if self.output_delay_s is not None:
            return self.output_delay_s
        return self.segment_s + self.sts_timeout_s + self.output_headroom_s

    @property
    def effective_output_tick_s(self) -> float:
        """The output's tick: `output_tick_s`, but at most the deadline margin (a segment's audio is
        taken that long before it is due, so the output thread must wake at least that often)."""
        if self.deadline_margin_s > 0:
            return min(self.output_tick_s, self.deadline_margin_s)
        return self.output_tick_s

    def segment_samples(self, sample_rate: int) -> int:
        """Samples per channel in one full segment at `sample_rate` (6 s @ 48 kHz = 288,000)."""
        return segment_samples(self.segment_s, sample_rate)


def segment_samples(segment_s: float, sample_rate: int) -> int:
    """Exact samples per segment; `segment_s * rate` must be (nearly) an integer."""
    exact = segment_s * sample_rate
    n = round(exact)
    if abs(exact - n) > 1e-6 * max(1.0, exact):
        raise ValueError(f"segment_s={segment_s} is not a whole number of samples at {sample_rate} Hz")
    return n


def validate_stream_id(stream_id: str) -> str:
    """Return `stream_id` or raise `InvalidStreamId`; keeps ids safe to use in paths."""
    from livedub.media.errors import InvalidStreamId

    if not is_valid_id(stream_id):
        raise InvalidStreamId(f"invalid stream id {stream_id!r}: must match {ID_CHARS}")
    return stream_id
