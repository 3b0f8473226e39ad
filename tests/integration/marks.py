"""Skip marks for integration tests that need what `make setup` installs; each reason names the
missing piece. (CI runs `make setup` first, so nothing is skipped there.)"""

from __future__ import annotations

import shutil

import pytest

from livedub.orchestrator.media_server import MediaServerSettings

_media_server_missing = MediaServerSettings.load().missing_prerequisite()
needs_media_server = pytest.mark.skipif(
    _media_server_missing is not None, reason=f"{_media_server_missing}"
)
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg not installed (make setup)"
)
