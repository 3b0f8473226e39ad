"""`MediaServerSettings.missing_prerequisite`: what `MediaServer.start` refuses to start without
(and what the integration tests skip on), each with the package to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.orchestrator.media_server import MediaServer, MediaServerError, MediaServerSettings
from livedub.sts.testing import free_port


def _settings(tmp_path: Path, **kw: object) -> MediaServerSettings:
    base = {"nginx_bin": "/bin/true", "gst_python": "/bin/true", "nginx_rtmp_module": tmp_path / "m.so"}
    (tmp_path / "m.so").touch()
    return MediaServerSettings.parse({**base, **kw})


def test_nothing_missing(tmp_path: Path) -> None:
    assert _settings(tmp_path).missing_prerequisite() is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nginx_bin", "/nonexistent/nginx", "nginx (apt: nginx-light) not found: /nonexistent/nginx"),
        ("gst_python", "/nonexistent/python3", "python3 not found: /nonexistent/python3"),
        ("nginx_rtmp_module", "/nonexistent/m.so", "nginx RTMP module not found: /nonexistent/m.so"),
    ],
)
def test_each_missing_piece_is_named(tmp_path: Path, field: str, value: str, message: str) -> None:
    settings = _settings(tmp_path, **{field: value})
    missing = settings.missing_prerequisite()
    assert missing is not None and message in missing
    server = MediaServer(settings, rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path / "w")
    with pytest.raises(MediaServerError) as refused:
        server.start()
    assert str(refused.value) == missing
