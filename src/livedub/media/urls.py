"""URL → libav format/options: which muxer/demuxer options a URL scheme or file name needs.

One place for "rtsp means TCP", "rtmp means flv", "srt means mpegts", "x.ts means mpegts".
Pure functions that never open anything, except `libav_has_protocol`, which asks libav (without
any I/O) whether it can handle a URL scheme at all, and `missing_protocol`, which for `srt://`
loads libsrt: SRT goes through `livedub.media.srt` (libsrt via ctypes), never through libav,
whose PyAV wheels are built without libsrt (see docs/media.md, "Output by URL").
"""

from __future__ import annotations

import functools
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
    """Demuxer/protocol options an input URL needs (RTSP over TCP). `srt://` needs none: its
    options are in the URL and read by `livedub.media.srt` (the demuxer is MPEG-TS)."""
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


#: Muxers that carry several audio tracks: with `keep_original` the original sound is the output's
#: second audio track. FLV (RTMP) carries one: there it goes to its own path (`original_output_url`).
MULTI_AUDIO_FORMATS = frozenset({"mpegts", "matroska", "mp4", "mov", "rtsp"})

#: The last path segment of a worker's output (`live/<id>/out`) and of its original's (`live/<id>/orig`).
OUTPUT_PATH_NAME = "out"
ORIGINAL_PATH_NAME = "orig"


def carries_several_audio_tracks(fmt: str) -> bool:
    """Whether muxer `fmt` (from `output_format_for`) can carry a second audio track."""
    return fmt in MULTI_AUDIO_FORMATS


def original_output_url(url: str) -> str:
    """Where the original programme goes when the output carries one audio track (FLV/RTMP):
    `rtmp://h/live/<id>/out?user=…` → `rtmp://h/live/<id>/orig?user=…` (query and credentials
    kept); another last path segment `name` → `name-orig`; a file `x.flv` → `x.orig.flv`."""
    parsed = urlparse(url)
    scheme = scheme_of(url)
    if scheme in ("", "file"):
        path = PurePath(parsed.path if scheme == "file" else url)
        new = str(path.with_name(f"{path.stem}.{ORIGINAL_PATH_NAME}{path.suffix}"))
        return parsed._replace(path=new).geturl() if scheme == "file" else new
    head, _, last = parsed.path.rpartition("/")
    if not last:
        raise ValueError(f"cannot derive the original's path from {url!r}: no path")
    name = ORIGINAL_PATH_NAME if last == OUTPUT_PATH_NAME else f"{last}-{ORIGINAL_PATH_NAME}"
    return parsed._replace(path=f"{head}/{name}").geturl()


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


# Schemes served by a libav URL protocol of the same name (rtsp/rtsps are a (de)muxer instead).
_PROTOCOL_SCHEMES = ("srt", "udp", "tcp", "rtmp", "rtmps", "http", "https")


@functools.cache
def libav_has_protocol(name: str) -> bool:
    """Whether PyAV's libav has the URL protocol `name` ("srt" only when built with libsrt; the
    pipeline does not need it: see `missing_protocol`).

    Asked without any I/O: the URL is opened with a protocol whitelist that refuses every
    protocol, so libav either fails to find the protocol (missing) or finds it and refuses it
    before connecting (present)."""
    import av

    try:
        container = av.open(
            f"{name}://127.0.0.1:1", "r", options={"protocol_whitelist": "none"}, timeout=1.0
        )
    except av.error.ProtocolNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - refused by the whitelist (or any other error): it exists
        return True
    container.close()  # pragma: no cover - the whitelist refuses every protocol
    return True  # pragma: no cover


def missing_protocol(url: str) -> str | None:
    """The protocol `url` needs that is not available here, else None: "srt" when libsrt
    cannot be loaded (`livedub.media.srt`), another scheme when PyAV's libav lacks it."""
    scheme = scheme_of(url)
    if scheme == "srt":
        from livedub.media.srt import libsrt_error

        return "srt" if libsrt_error() is not None else None
    if scheme in _PROTOCOL_SCHEMES and not libav_has_protocol(scheme):
        return scheme
    return None

