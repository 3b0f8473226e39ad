"""`livedub.log.redact_url`: credentials never reach a log line (issue 17 #4)."""

from __future__ import annotations

import pytest

from livedub.log import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://pub:s3cr3t@127.0.0.1:8554/live/x/in", "rtsp://***@127.0.0.1:8554/live/x/in"),
        ("rtsp://u:p@ss@h:1/live/x/in?a=b", "rtsp://***@h:1/live/x/in?a=b"),
        ("rtmp://h:1935/live/x/in?user=pub&pass=s3cr3t", "rtmp://h:1935/live/x/in?user=***&pass=***"),
        (
            "srt://h:9000?mode=caller&passphrase=abcdefghij&latency=200",
            "srt://h:9000?mode=caller&passphrase=***&latency=200",
        ),
        ("http://h/?token=abc#frag", "http://h/?token=***#frag"),
        ("http://h/x?access_key=1&sig=2&x=3", "http://h/x?access_key=***&sig=***&x=3"),
        ("error opening 'rtsp://a:b@h/x': refused", "error opening 'rtsp://***@h/x': refused"),
        ("see rtsp://a:b@h/x and rtmp://c:d@h/y", "see rtsp://***@h/x and rtmp://***@h/y"),
        ("/tmp/file.mp4", "/tmp/file.mp4"),
        ("rtsp://host:8554/live/x/in", "rtsp://host:8554/live/x/in"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_accepts_an_exception() -> None:
    assert redact_url(OSError("rtsp://a:b@h/x: refused")) == "rtsp://***@h/x: refused"
