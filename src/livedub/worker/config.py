"""The worker's one settings object: env `WORKER_*` and CLI flags, spec defaults by default.

Every timing constant of the worker lives here with its default; docs/operations.md mirrors this
table. Nothing in this module performs I/O.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedub.media.settings import MediaSettings
from livedub.protocol.constants import ID_CHARS, is_valid_id


def _default_worker_id() -> str:
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:64]


# The worker settings that are the media path's own, passed to `MediaSettings` under the same name
# (the others it gets are derived below: `sts_timeout_s`, `output_delay_s`, `unpaced_wait_s`).
MEDIA_FIELDS = (
    "input_url", "output_url", "mirror_output_url", "stream_id", "segment_s", "paced", "read_timeout_s", "anchor_settle_s",
    "deadline_margin_s", "output_tick_s", "input_audio_batch_s", "transport_format", "segment_retention", "original_track",
)  # fmt: skip


class WorkerSettings(BaseSettings):
    """Settings of one stream worker. Field docs are the documentation (see `livedub worker -h`).
    The media path's part is `media` (a `MediaSettings`), validated with the rest."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")
    _media: MediaSettings | None = PrivateAttr(None)

    # Identity and endpoints
    stream_id: str = Field("default", description=f"stream id, {ID_CHARS}")
    worker_id: str = Field(default_factory=_default_worker_id, description="worker id sent as X-Worker-ID")
    input_url: str = Field("", description="input URL: rtsp://, rtmp://, srt:// (needs libsrt) or a file path")
    output_url: str = Field("", description="output URL: rtmp://, rtsp://, srt:// (needs libsrt) or a file (mp4/flv/ts/mkv)")
    mirror_output_url: str = Field(
        "",
        description="also publish the output to this URL (same packets, own thread: its failures never "
        "touch the output; retried at a later keyframe). The orchestrator sets it for a stream's first "
        "language: live/<id>/out mirrored to live/<id>/<lang>",
    )
    sts_url: str = Field("http://127.0.0.1:8080", description="STS Socket.IO server URL")
    sts_auth_token: str | None = Field(None, description="token for the STS `auth` payload (never logged)")
    passthrough: bool = Field(False, description="no STS: output the original audio (media path test)")
    original_only: bool = Field(
        False,
        description="start in original-only mode: nothing is sent to the STS, every segment goes out "
        "with its original audio (switched live by the orchestrator's console)",
    )
    control_token: SecretStr | None = Field(
        None,
        description="env only: bearer token of POST /control/original-only on the metrics port "
        "(the orchestrator generates one per worker); unset: no control route",
    )

    # Metrics / health
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics and /health")
    metrics_port: int = Field(8000, ge=0, le=65535, description="port of /metrics and /health (0: off)")

    # Stream config sent in stream:init
    source_language: str = Field("en", description="stream:init config.source_language")
    target_language: str = Field("es", description="stream:init config.target_language")
    voice_profile: str = Field("default", description="stream:init config.voice_profile")
    transport_format: Literal["m4a", "wav", "flac"] = Field(
        "flac",
        description="fragment audio format on the wire: flac (default: lossless, ≈ 1 ms CPU per "
        "stream-second to encode), m4a (AAC, ≈ 13 ms) or wav (no encode, 13× the bytes); docs/protocol.md",
    )

    original_track: bool = Field(
        True,
        description="the original sound, tagged with source_language, as the second audio track "
        "where the output carries several (MPEG-TS: srt/udp/tcp/.ts, Matroska, MP4, RTSP); the dub "
        "stays the first, default track. FLV/RTMP carries one track: see keep_original",
    )
    keep_original: bool = Field(
        False,
        description="also output the original sound, tagged with source_language: the second audio "
        "track of an MPEG-TS (srt/udp/tcp/.ts), Matroska, MP4 or RTSP output; an FLV output (rtmp, .flv) "
        "carries one track, so there the original programme goes to its own path live/<id>/orig",
    )
    captions: str | None = Field(
        None,
        description="write WebVTT captions live to PREFIX.<source_language>.vtt and "
        "PREFIX.<target_language>.vtt (output timeline)",
    )
    captions_source: bool = Field(
        True,
        description="with --captions, also write the transcript PREFIX.<source_language>.vtt (off: only "
        "the translation; the orchestrator turns it off for a stream's other languages, one transcript per stream)",
    )

    # Timing (spec defaults)
    segment_s: float = Field(6.0, ge=1.0, le=60.0, description="fragment length in seconds")
    output_delay_s: float | None = Field(
        None, gt=0, description="constant output delay D; default segment_s + fragment_timeout_s"
    )
    fragment_timeout_s: float = Field(8.0, ge=1.0, le=30.0, description="STS answer timeout per fragment")
    max_inflight: int = Field(3, ge=1, le=10, description="fragments in flight (min with server grant)")
    ready_timeout_s: float = Field(10.0, gt=0, description="wait for stream:ready after stream:init")
    connect_timeout_s: float = Field(10.0, gt=0, description="Socket.IO connect timeout")
    end_timeout_s: float = Field(15.0, gt=0, description="wait for stream:complete after stream:end")
    read_timeout_s: float = Field(5.0, gt=0, description="input read watchdog")
    deadline_margin_s: float = Field(
        0.25, ge=0, le=5.0, description="a segment's audio is taken this long before it is due (low latency: 0.1)"
    )
    output_tick_s: float = Field(
        0.25, gt=0, le=0.5, description="the output writes in ticks of this length (at most the deadline margin) what falls due before the next one (a packet goes out at most this early)"
    )
    input_audio_batch_s: float = Field(
        0.1, ge=0, le=0.5, description="the reader decodes and hands over audio in batches of about this length (0: per packet)"
    )
    anchor_settle_s: float = Field(
        2.0, ge=0, description="W0 follows the input's live edge this long (≤ D/2): a cached-GOP burst adds no latency"
    )
    paced: bool = Field(True, description="pace the output to real time (off: file→file as fast as possible)")
    malloc_tuning: bool = Field(
        True,
        description="tune glibc malloc for a small resident set at start-up: one arena, trim and mmap thresholds "
        "128 KiB (`livedub/worker/memory.py`; a MALLOC_* env var that is set wins)",
    )
    drain_timeout_s: float | None = Field(
        None,
        ge=0,
        description="on SIGTERM/SIGINT: longest drain (fragments in flight finished, buffered output written, "
        "stream:end) before the output is cut; default output_delay_s + fragment_timeout_s; 0: no drain",
    )

    # Circuit breaker
    breaker_failure_threshold: int = Field(5, ge=1, description="consecutive retryable failures to open")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="open → half-open after this long")

    # Reconnection
    reconnect_base_s: float = Field(2.0, gt=0, description="first reconnect delay")
    reconnect_factor: float = Field(2.0, ge=1.0, description="delay multiplier per attempt")
    reconnect_max_attempts: int = Field(5, ge=1, description="attempts before exiting (code 13)")
    reconnect_jitter: float = Field(0.0, ge=0.0, le=1.0, description="random ± fraction per delay")

    # Segment files
    segment_dir: str | None = Field(None, description="write segment files under this directory")
    segment_retention: int = Field(100, ge=1, description="segment batches kept on disk per stream")

    @field_validator("stream_id", "worker_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not is_valid_id(v):
            raise ValueError(f"must match {ID_CHARS}")
        return v

    @model_validator(mode="after")
    def _derive(self) -> WorkerSettings:
        if self.output_delay_s is None:
            self.output_delay_s = self.segment_s + self.fragment_timeout_s
        if self.drain_timeout_s is None:
            self.drain_timeout_s = self.output_delay_s + self.fragment_timeout_s
        self._media = self._media_settings()
        return self

    @property
    def delay_s(self) -> float:
        assert self.output_delay_s is not None
        return self.output_delay_s

    @property
    def drain_s(self) -> float:
        """How long a stop signal may drain before the output is cut (see `drain_timeout_s`)."""
        assert self.drain_timeout_s is not None
        return self.drain_timeout_s

    @property
    def media(self) -> MediaSettings:
        """The media path's settings, nested: built and validated once, with the worker's settings."""
        assert self._media is not None
        return self._media

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
            unpaced_wait_s=0.0 if self.passthrough else (self.max_inflight + 2) * (self.fragment_timeout_s + 1.0),
        )
