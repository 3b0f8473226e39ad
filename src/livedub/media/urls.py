"""URL → libav format/options: which muxer/demuxer options a URL scheme or file name needs.

One place for "rtsp means TCP", "rtmp means flv", "srt means mpegts", "x.ts means mpegts".
Pure functions; never opens anything.
"""

from __future__ import annotations

from pathlib import PurePath
from urllib.parse import urlparse

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "http", "https")

_EXT_FORMATS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".flv": "flv",
    ".ts": "mpegts",
    ".mkv": "matroska",
}


def scheme_of(url: str) -> str:
    parsed = urlparse(url)
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def is_live(url: str) -> bool:
    """True for network inputs (which reconnect), False for files."""
    return scheme_of(url) in LIVE_SCHEMES


def input_options_for(url: str) -> dict[str, str]:
    """Demuxer/protocol options an input URL needs (RTSP over TCP)."""
    if scheme_of(url) in ("rtsp", "rtsps"):
        return {"rtsp_transport": "tcp"}
    return {}


def output_format_for(url: str) -> tuple[str, dict[str, str]]:
    """(muxer name, muxer options) for an output URL or file name."""
    scheme = scheme_of(url)
    if scheme in ("rtmp", "rtmps"):
        return "flv", {}
    if scheme in ("rtsp", "rtsps"):
        return "rtsp", {"rtsp_transport": "tcp"}
    if scheme in ("srt", "udp", "tcp"):
        return "mpegts", {}
    path = PurePath(urlparse(url).path if scheme == "file" else url)
    fmt = _EXT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the output format of {url!r} (use .mp4, .flv, .ts or .mkv)")
    return fmt, {}


_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "rtsp": 554, "rtsps": 322}


def tcp_endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of a TCP-based streaming URL (rtmp/rtsp), else None."""
    scheme = scheme_of(url)
    if scheme not in _DEFAULT_PORTS:
        return None
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    return parsed.hostname, parsed.port or _DEFAULT_PORTS[scheme]


def strip_file_scheme(url: str) -> str:
    return urlparse(url).path if scheme_of(url) == "file" else url
