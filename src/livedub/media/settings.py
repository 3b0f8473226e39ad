"""The media path's knobs, in one typed model with the spec's defaults.

`MediaSettings` is a plain `Record` (livedub/typed.py): the worker's process settings build it,
and the media CLI builds it from flags. Every timing constant of the media
path lives here; no module hard-codes one. This module never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from livedub.protocol.constants import ID_CHARS, is_valid_id
from livedub.typed import Meta, Record

TransportFormat = Literal["m4a", "wav", "flac"]


class MediaSettings(Record, frozen=True, forbid_unknown_fields=True):  # type: ignore[misc]
    # (mypy: "frozen cannot inherit from non-frozen"; msgspec allows it: Record has no fields)
    """Settings of one media pipeline (one stream). Defaults follow docs/media.md."""

    input_url: Annotated[str, Meta(description="rtsp:// (TCP), rtmp://, srt:// or a file path")] = (
        ""
    )
    output_url: Annotated[
        str, Meta(description="rtmp:// (flv), rtsp://, srt:// (mpegts) or a file")
    ] = ""
    mirror_output_url: Annotated[
        str,
        Meta(
            description="also publish the output's packets here (own thread; never blocks the output)"
        ),
    ] = ""
    stream_id: Annotated[str, Meta(description=f"{ID_CHARS}; used in paths and logs")] = "stream"

    segment_s: Annotated[float, Meta(ge=1.0, le=60.0, description="fragment length in seconds")] = (
        6.0
    )
    sample_rate_hz: (
        Annotated[
            int,
            Meta(ge=8000, le=96000, description="PCM rate of fragments; None = the input's rate"),
        ]
        | None
    ) = None
    channels: Annotated[int, Meta(ge=1, le=2, description="None = the input's (max 2)")] | None = (
        None
    )
    min_tail_s: Annotated[
        float, Meta(ge=0.0, description="a shorter end-of-stream tail is not dubbed")
    ] = 1.0

    # Output timing (docs/media.md "Timing").
    paced: Annotated[
        bool, Meta(description="write the output paced to wall clock W0 + pts + D")
    ] = True
    sts_timeout_s: Annotated[
        float, Meta(gt=0, description="only used to derive the default delay")
    ] = 8.0
    output_delay_s: (
        Annotated[
            float, Meta(gt=0, description="D; None = segment_s + sts_timeout_s + output_headroom_s")
        ]
        | None
    ) = None
    output_headroom_s: Annotated[
        float,
        Meta(ge=0, description="added to the default D to cover look-ahead, margin, read latency"),
    ] = 0.5
    output_connect_lead_s: Annotated[
        float,
        Meta(
            ge=0,
            description="a paced network output connects this long before its first packet "
            "(not earlier: media servers drop publishers idle for ~10 s)",
        ),
    ] = 3.0
    anchor_settle_s: Annotated[
        float,
        Meta(
            ge=0,
            description="W0 follows the input's live edge for this long (at most D/2) after the first "
            "packet, so a media server's cached-GOP burst does not add to the latency; 0: first packet",
        ),
    ] = 2.0
    output_linger_s: Annotated[
        float,
        Meta(
            ge=0,
            description="a network output waits this long after its last packet before it "
            "hangs up, so that a relay forwards the last packets first",
        ),
    ] = 0.5
    input_audio_batch_s: Annotated[
        float,
        Meta(
            ge=0,
            le=0.5,
            description="the reader decodes, converts and hands over audio in batches of about this length "
            "(0: every packet alone); a batch ends early at a timestamp jump. A segment is cut at most this "
            "much later; per-frame hand-over costs ≈ 3 ms CPU per stream-second more (docs/performance.md)",
        ),
    ] = 0.1
    output_tick_s: Annotated[
        float,
        Meta(
            gt=0,
            le=0.5,
            description="a paced output writes in ticks of this length, at most deadline_margin_s "
            "(effective_output_tick_s), what falls due before the next one (a packet goes out at most "
            "a tick before it is due; each tick wakes the output thread: 0.1 s cost ≈ 1-2 ms CPU per "
            "stream-second more than 0.25 s, docs/performance.md)",
        ),
    ] = 0.25
    deadline_margin_s: Annotated[
        float,
        Meta(
            ge=0, description="a segment's audio is taken this long before its first sample is due"
        ),
    ] = 0.25
    unpaced_wait_s: Annotated[
        float,
        Meta(
            ge=0, description="unpaced mode: wait up to this long for a segment's audio to resolve"
        ),
    ] = 0.0
    fill_missing_audio: Annotated[
        bool, Meta(description="paced mode: a segment missing at its deadline is output as silence")
    ] = True

    # Input.
    input_realtime: (
        Annotated[
            bool, Meta(description="pace file reads to real time; None = when the output is paced")
        ]
        | None
    ) = None
    end_on_eof: (
        Annotated[
            bool, Meta(description="end at input EOF instead of reconnecting; None = files only")
        ]
        | None
    ) = None
    open_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    read_timeout_s: Annotated[
        float, Meta(gt=0, description="watchdog: a read stalled this long fails")
    ] = 5.0
    reconnect_delays_s: Annotated[
        tuple[float, ...],
        Meta(description="waits before each retry; then the input is unavailable"),
    ] = (1.0, 2.0, 4.0)
    read_ahead_items: Annotated[
        int, Meta(ge=8, description="bounded queue between reader and loop")
    ] = 256
    discontinuity_threshold_s: Annotated[float, Meta(gt=0)] = 1.0
    input_options: Annotated[dict[str, str], Meta(description="libav input options")] = (
        msgspec.field(default_factory=dict)
    )

    # Output.
    output_audio_bitrate: Annotated[int, Meta(ge=16_000)] = 128_000
    output_options: Annotated[dict[str, str], Meta(description="libav muxer options")] = (
        msgspec.field(default_factory=dict)
    )
    output_format: Annotated[str, Meta(description="muxer name; None = from the URL")] | None = None
    original_track: Annotated[
        bool,
        Meta(
            description="the original sound (the input audio on the same timeline) as the second audio "
            "track where the container carries several (MPEG-TS, Matroska, MP4, RTSP); nothing else "
            "(FLV/RTMP needs keep_original). The worker turns it on by default"
        ),
    ] = False
    keep_original: Annotated[
        bool,
        Meta(
            description="also output the original sound (the input audio on the same timeline): the "
            "second audio track where the container carries several (MPEG-TS, Matroska, MP4, RTSP), "
            "else (FLV/RTMP) its own output at `urls.original_output_url`"
        ),
    ] = False
    target_language: (
        Annotated[
            str,
            Meta(
                description="language of the output (dubbed) audio track: ISO 639-1 or 639-2; tags it"
            ),
        ]
        | None
    ) = None
    source_language: (
        Annotated[
            str,
            Meta(description="language of the original audio track: ISO 639-1 or 639-2; tags it"),
        ]
        | None
    ) = None

    # Fragments on the wire and on disk.
    transport_format: TransportFormat = (
        "flac"  # the worker's default (docs/protocol.md, "Transport format")
    )
    transport_bitrate: Annotated[int, Meta(ge=16_000)] = 128_000
    dub_tolerance: Annotated[float, Meta(ge=0, le=0.5, description="±fraction trimmed/padded")] = (
        0.10
    )
    segment_dir: (
        Annotated[Path, Meta(description="write segment files here; None = off")] | None
    ) = None
    segment_retention: Annotated[int, Meta(ge=1, description="batches kept per stream on disk")] = (
        50
    )

    # A/V sync.
    drift_bound_ms: Annotated[
        float, Meta(gt=0, description="start slewing beyond this deviation")
    ] = 20.0
    drift_target_ms: Annotated[
        float, Meta(ge=0, description="stop slewing once back within this")
    ] = 5.0
    drift_max_slew: Annotated[
        float, Meta(gt=0, le=0.05, description="max samples changed/frame")
    ] = 0.005
    drift_window_frames: Annotated[
        int, Meta(ge=1, description="frames averaged per measurement")
    ] = 24
    gap_fill_threshold_ms: Annotated[
        float,
        Meta(gt=0, description="an audio timestamp gap larger than this is filled with silence"),
    ] = 100.0

    def check(self) -> None:
        if not is_valid_id(self.stream_id):
            raise ValueError(f"stream_id must match {ID_CHARS}")
        if self.paced and self.effective_output_delay_s <= self.segment_s:
            raise ValueError("output_delay_s must be larger than segment_s")
        if self.drift_target_ms >= self.drift_bound_ms:
            raise ValueError("drift_target_ms must be below drift_bound_ms")

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
        raise ValueError(
            f"segment_s={segment_s} is not a whole number of samples at {sample_rate} Hz"
        )
    return n


def validate_stream_id(stream_id: str) -> str:
    """Return `stream_id` or raise `InvalidStreamId`; keeps ids safe to use in paths."""
    from livedub.media.errors import InvalidStreamId

    if not is_valid_id(stream_id):
        raise InvalidStreamId(f"invalid stream id {stream_id!r}: must match {ID_CHARS}")
    return stream_id
