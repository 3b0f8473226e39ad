"""The worker's one settings object: env `WORKER_*` and CLI flags, spec defaults by default.

Every timing constant of the worker lives here with its default; docs/operations.md mirrors this
table. Nothing in this module performs I/O.
"""

from __future__ import annotations

import os
import re
import socket
from functools import cached_property
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import msgspec

from livedub.media.settings import MediaSettings
from livedub.protocol.constants import ID_CHARS, is_valid_id
from livedub.settings import EnvSettings
from livedub.typed import Meta, Secret


def _default_worker_id() -> str:
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:64]


# The worker settings that are the media path's own, passed to `MediaSettings` under the same name
# (the others it gets are derived below: `sts_timeout_s`, `output_delay_s`, `unpaced_wait_s`).
MEDIA_FIELDS = (
    "input_url", "output_url", "mirror_output_url", "stream_id", "segment_s", "paced", "read_timeout_s", "anchor_settle_s",
    "deadline_margin_s", "output_tick_s", "input_audio_batch_s", "transport_format", "segment_retention", "original_track",
)  # fmt: skip


class WorkerSettings(EnvSettings, dict=True):  # dict: `media` is cached on the instance
    """Settings of one stream worker. Field docs are the documentation (see `livedub worker -h`).
    The media path's part is `media` (a `MediaSettings`), validated with the rest."""

    env_prefix: ClassVar[str] = "WORKER_"

    # Identity and endpoints
    stream_id: Annotated[str, Meta(description=f"stream id, {ID_CHARS}")] = "default"
    worker_id: Annotated[str, Meta(description="worker id sent as X-Worker-ID")] = msgspec.field(
        default_factory=_default_worker_id
    )
    input_url: Annotated[
        str, Meta(description="input URL: rtsp://, rtmp://, srt:// (needs libsrt) or a file path")
    ] = ""
    output_url: Annotated[
        str,
        Meta(
            description="output URL: rtmp://, rtsp://, srt:// (needs libsrt) or a file (mp4/flv/ts/mkv)"
        ),
    ] = ""
    mirror_output_url: Annotated[
        str,
        Meta(
            description="also publish the output to this URL (same packets, own thread: its failures never "
            "touch the output; retried at a later keyframe). The orchestrator sets it for a stream's first "
            "language: live/<id>/out mirrored to live/<id>/<lang>"
        ),
    ] = ""
    sts_url: Annotated[str, Meta(description="STS Socket.IO server URL")] = "http://127.0.0.1:8080"
    sts_auth_token: (
        Annotated[Secret, Meta(description="token for the STS `auth` payload (never logged)")] | None
    ) = None
    passthrough: Annotated[
        bool, Meta(description="no STS: output the original audio (media path test)")
    ] = False
    original_only: Annotated[
        bool,
        Meta(
            description="start in original-only mode: nothing is sent to the STS, every segment goes out "
            "with its original audio (switched live by the orchestrator's console)"
        ),
    ] = False
    control_token: (
        Annotated[
            Secret,
            Meta(
                description="env only: bearer token of POST /control/original-only on the metrics port "
                "(the orchestrator generates one per worker); unset: no control route"
            ),
        ]
        | None
    ) = None

    # Metrics / health
    metrics_host: Annotated[str, Meta(description="bind address of /metrics and /health")] = (
        "127.0.0.1"
    )
    metrics_port: Annotated[
        int, Meta(ge=0, le=65535, description="port of /metrics and /health (0: off)")
    ] = 8000

    # Stream config sent in stream:init
    source_language: Annotated[str, Meta(description="stream:init config.source_language")] = "en"
    target_language: Annotated[str, Meta(description="stream:init config.target_language")] = "es"
    voice_profile: Annotated[str, Meta(description="stream:init config.voice_profile")] = "default"
    transport_format: Annotated[
        Literal["m4a", "wav", "flac"],
        Meta(
            description="fragment audio format on the wire: flac (default: lossless, ≈ 1 ms CPU per "
            "stream-second to encode), m4a (AAC, ≈ 13 ms) or wav (no encode, 13× the bytes); docs/protocol.md"
        ),
    ] = "flac"

    original_track: Annotated[
        bool,
        Meta(
            description="the original sound, tagged with source_language, as the second audio track "
            "where the output carries several (MPEG-TS: srt/udp/tcp/.ts, Matroska, MP4, RTSP); the dub "
            "stays the first, default track. FLV/RTMP carries one track: see keep_original"
        ),
    ] = True
    keep_original: Annotated[
        bool,
        Meta(
            description="also output the original sound, tagged with source_language: the second audio "
            "track of an MPEG-TS (srt/udp/tcp/.ts), Matroska, MP4 or RTSP output; an FLV output (rtmp, .flv) "
            "carries one track, so there the original programme goes to its own path live/<id>/orig"
        ),
    ] = False
    captions: (
        Annotated[
            str,
            Meta(
                description="write WebVTT captions live to PREFIX.<source_language>.vtt and "
                "PREFIX.<target_language>.vtt (output timeline)"
            ),
        ]
        | None
    ) = None
    captions_source: Annotated[
        bool,
        Meta(
            description="with --captions, also write the transcript PREFIX.<source_language>.vtt (off: only "
            "the translation; the orchestrator turns it off for a stream's other languages, one transcript per stream)"
        ),
    ] = True

    # Timing (spec defaults)
    segment_s: Annotated[float, Meta(ge=1.0, le=60.0, description="fragment length in seconds")] = (
        6.0
    )
    output_delay_s: (
        Annotated[
            float,
            Meta(
                gt=0, description="constant output delay D; default segment_s + fragment_timeout_s"
            ),
        ]
        | None
    ) = None
    fragment_timeout_s: Annotated[
        float, Meta(ge=1.0, le=30.0, description="STS answer timeout per fragment")
    ] = 8.0
    max_inflight: Annotated[
        int, Meta(ge=1, le=10, description="fragments in flight (min with server grant)")
    ] = 3
    ready_timeout_s: Annotated[
        float, Meta(gt=0, description="wait for stream:ready after stream:init")
    ] = 10.0
    connect_timeout_s: Annotated[float, Meta(gt=0, description="Socket.IO connect timeout")] = 10.0
    end_timeout_s: Annotated[
        float, Meta(gt=0, description="wait for stream:complete after stream:end")
    ] = 15.0
    read_timeout_s: Annotated[float, Meta(gt=0, description="input read watchdog")] = 5.0
    deadline_margin_s: Annotated[
        float,
        Meta(
            ge=0,
            le=5.0,
            description="a segment's audio is taken this long before it is due (low latency: 0.1)",
        ),
    ] = 0.25
    output_tick_s: Annotated[
        float,
        Meta(
            gt=0,
            le=0.5,
            description="the output writes in ticks of this length (at most the deadline margin) what falls due before the next one (a packet goes out at most this early)",
        ),
    ] = 0.25
    input_audio_batch_s: Annotated[
        float,
        Meta(
            ge=0,
            le=0.5,
            description="the reader decodes and hands over audio in batches of about this length (0: per packet)",
        ),
    ] = 0.1
    anchor_settle_s: Annotated[
        float,
        Meta(
            ge=0,
            description="W0 follows the input's live edge this long (≤ D/2): a cached-GOP burst adds no latency",
        ),
    ] = 2.0
    paced: Annotated[
        bool, Meta(description="pace the output to real time (off: file→file as fast as possible)")
    ] = True
    malloc_tuning: Annotated[
        bool,
        Meta(
            description="tune glibc malloc for a small resident set at start-up: one arena, trim and mmap thresholds "
            "128 KiB (`livedub/worker/memory.py`; a MALLOC_* env var that is set wins)"
        ),
    ] = True
    drain_timeout_s: (
        Annotated[
            float,
            Meta(
                ge=0,
                description="on SIGTERM/SIGINT: longest drain (fragments in flight finished, buffered output written, "
                "stream:end) before the output is cut; default output_delay_s + fragment_timeout_s; 0: no drain",
            ),
        ]
        | None
    ) = None

    # Circuit breaker
    breaker_failure_threshold: Annotated[
        int, Meta(ge=1, description="consecutive retryable failures to open")
    ] = 5
    breaker_cooldown_s: Annotated[
        float, Meta(gt=0, description="open → half-open after this long")
    ] = 30.0

    # Reconnection
    reconnect_base_s: Annotated[float, Meta(gt=0, description="first reconnect delay")] = 2.0
    reconnect_factor: Annotated[float, Meta(ge=1.0, description="delay multiplier per attempt")] = (
        2.0
    )
    reconnect_max_attempts: Annotated[
        int, Meta(ge=1, description="attempts before exiting (code 13)")
    ] = 5
    reconnect_jitter: Annotated[
        float, Meta(ge=0.0, le=1.0, description="random ± fraction per delay")
    ] = 0.0

    # Segment files
    segment_dir: (
        Annotated[str, Meta(description="write segment files under this directory")] | None
    ) = None
    segment_retention: Annotated[
        int, Meta(ge=1, description="segment batches kept on disk per stream")
    ] = 100

    def check(self) -> None:
        for name in ("stream_id", "worker_id"):
            if not is_valid_id(getattr(self, name)):
                raise ValueError(f"{name} must match {ID_CHARS}")
        if self.output_delay_s is None:
            self.output_delay_s = self.segment_s + self.fragment_timeout_s
        if self.drain_timeout_s is None:
            self.drain_timeout_s = self.output_delay_s + self.fragment_timeout_s
        _ = self.media  # the media path's own rules, checked with the rest (and built once)

    @property
    def delay_s(self) -> float:
        assert self.output_delay_s is not None
        return self.output_delay_s

    @property
    def drain_s(self) -> float:
        """How long a stop signal may drain before the output is cut (see `drain_timeout_s`)."""
        assert self.drain_timeout_s is not None
        return self.drain_timeout_s

    @cached_property
    def media(self) -> MediaSettings:
        """The media path's settings, nested: built and checked once, with the worker's settings."""
        return self._media_settings()

    def _media_settings(self) -> MediaSettings:
        shared = {name: getattr(self, name) for name in MEDIA_FIELDS}
        return MediaSettings(
            **shared,
            sts_timeout_s=self.fragment_timeout_s,
            output_delay_s=self.delay_s,
            keep_original=self.keep_original,
            source_language=self.source_language,
            # Passthrough: the first track carries the original sound too.
            target_language=self.source_language if self.passthrough else self.target_language,
            segment_dir=Path(self.segment_dir) if self.segment_dir else None,
            # Unpaced (file → file): the output waits for each segment to be resolved. The worker
            # resolves every segment (dubbed, or a fallback at the latest when its fragment times
            # out), so this bound only guards against a bug: queue wait + send + timeout of one fragment.
            unpaced_wait_s=0.0
            if self.passthrough
            else (self.max_inflight + 2) * (self.fragment_timeout_s + 1.0),
        )
