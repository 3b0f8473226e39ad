"""Issue 17 (security): what the services must refuse.

#6: the RTSP relay's nginx-rtmp notify endpoint refuses a body larger than its bound (413)
without reading it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from livedub.orchestrator.media_server import MediaServer
from livedub.sts.testing import free_port
from tests.integration.marks import needs_media_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[MediaServer]:
    ms = MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), workdir=tmp_path / "ms")
    with ms:
        yield ms


def _raw_http(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `request` (no more) and return the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline()


@needs_media_server
@pytest.mark.parametrize(
    ("length", "status"), [(str(10**12), b"413"), ("100000", b"413"), ("-5", b"400"), ("x", b"400")]
)
def test_notify_endpoint_bounds_content_length(
    media_server: MediaServer, length: str, status: bytes
) -> None:
    port = media_server.notify_port
    assert port is not None
    head = (
        f"POST /rtmp/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    # the body is never sent: before the bound the relay blocked reading it (socket timeout)
    line = _raw_http(port, head + b"app=live&name=x%2Fin")
    assert line.split(b" ")[1] == status, line
