"""Credentials in media URLs, the way MediaMTX takes them (stdlib only: imported by light
processes such as `livedub media-server`, which must not pay for PyAV)."""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit, urlunsplit


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` carrying `user` / `password` the way MediaMTX (and livedub's embedded media server)
    takes them: in the user-info for RTSP (`rtsp://user:pass@host/...`, sent as Basic auth), as
    `user=` / `pass=` query parameters for RTMP (whose handshake has no credentials). Other
    schemes are returned unchanged (SRT carries its own `passphrase`)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    if scheme in ("rtmp", "rtmps"):
        extra = urlencode({"user": user, "pass": password})
        query = f"{parts.query}&{extra}" if parts.query else extra
        return urlunsplit(parts._replace(query=query))
    return url
