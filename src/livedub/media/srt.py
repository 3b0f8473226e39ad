"""SRT by URL without libav's `srt` protocol: libsrt (the system's, via ctypes) as a file-like
transport that PyAV (de)muxes MPEG-TS through.

PyAV's wheels ship a libav built without libsrt, but the system has libsrt 1.5 (Debian
`libsrt1.5-gnutls`, a dependency of the `ffmpeg` package). `SrtReader` / `SrtWriter` are
file-like objects for `av.open(reader, "r", format="mpegts")` / `av.open(writer, "w",
format="mpegts", buffer_size=SRT_PAYLOAD)`. Live mode, 1316-byte payloads (7 TS packets).

URL: `srt://host:port?mode=caller|listener&latency=MS&streamid=S&passphrase=P&pbkeylen=N`
(caller by default; `latency` in milliseconds, as in libsrt's own URIs — ffmpeg's is in µs).
The query is split off by hand, so a `#!::r=…` stream id needs no escaping.

ctypes releases the GIL during every libsrt call: a blocked connect, accept or receive never
freezes the process. Every blocking call is bounded: connect/accept by `timeout_s`, a receive by
`read_timeout_s` (a silent peer ends the read with `SrtError`), a send by `timeout_s`.
`LIVEDUB_LIBSRT` (a path or soname) picks the library; otherwise it is found automatically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from livedub.log import redact_url

TS_PACKET = 188
SRT_PAYLOAD = 7 * TS_PACKET  # 1316: libsrt's default (and maximum usual) live payload
_RECV_BUF = 1500  # >= any live payload (max 1456)

_SONAMES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5", "libsrt.so.1")

# SRT_SOCKOPT values (srt.h, stable since 1.3).
_SNDSYN, _RCVSYN, _LINGER, _SNDTIMEO, _RCVTIMEO = 1, 2, 7, 13, 14
_log = logging.getLogger(__name__)
_TSBPDMODE, _LATENCY, _PASSPHRASE, _PBKEYLEN, _CONNTIMEO, _PEERLATENCY = 22, 23, 26, 27, 36, 44
_STREAMID, _TRANSTYPE = 46, 50
_SRTT_LIVE = 0
_EPOLL_IN, _EPOLL_ERR = 0x1, 0x8
# SRT_ERRNO values.
_ECONNLOST, _ENOCONN, _ETIMEOUT = 2001, 2002, 6003
_LINGER_S = 1  # srt_close waits up to this long for unsent/unacknowledged data
_PLAYOUT_MARGIN_S = 0.05  # SrtWriter.close: after the peer's latency, for the last packet's trip
_ACK_POLL_S = 0.01  # SrtWriter.close: how often it checks that the peer acknowledged everything
_LOG_ERR = 3  # libsrt logs (to stderr) errors only: its warnings are routine

MODES = ("caller", "listener")
_KEYS = ("mode", "latency", "streamid", "passphrase", "pbkeylen")


class SrtError(OSError):
    """A libsrt call failed (`code`: libsrt's SRT_ERRNO, 0 when not from libsrt)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SrtUrl:
    host: str
    port: int
    mode: str = "caller"
    latency_ms: int | None = None
    streamid: str | None = None
    passphrase: str | None = None
    pbkeylen: int | None = None


def parse_srt_url(url: str) -> SrtUrl:
    """Parse `srt://host:port?...`; raises ValueError for a bad URL or an unsupported option."""
    base, _, query = url.partition("?")
    parts = urlsplit(base)
    if parts.scheme.lower() != "srt":
        raise ValueError(f"not an srt:// URL: {redact_url(url)!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {redact_url(url)!r}") from exc
    if not port:
        raise ValueError(f"{redact_url(url)!r} has no port")
    opts: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in _KEYS:
            raise ValueError(f"unsupported SRT URL option {key!r} in {redact_url(url)!r} (supported: {', '.join(_KEYS)})")
        opts[key] = unquote(value)
    mode = opts.get("mode", "caller").lower()
    if mode not in MODES:
        raise ValueError(f"unsupported SRT mode {mode!r} in {redact_url(url)!r} (caller or listener)")
    host = parts.hostname or ""
    if not host and mode == "caller":
        raise ValueError(f"{redact_url(url)!r}: a caller needs a host")
    try:
        latency = int(opts["latency"]) if "latency" in opts else None
        pbkeylen = int(opts["pbkeylen"]) if "pbkeylen" in opts else None
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)!r}: latency and pbkeylen must be integers") from exc
    return SrtUrl(host, port, mode, latency, opts.get("streamid"), opts.get("passphrase"), pbkeylen)


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_int)]


class _Linger(ctypes.Structure):
    _fields_ = [("l_onoff", ctypes.c_int), ("l_linger", ctypes.c_int)]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "srt_startup": (ctypes.c_int, []),
    "srt_create_socket": (ctypes.c_int, []),
    "srt_setloglevel": (None, [ctypes.c_int]),
    "srt_setsockflag": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]),
    "srt_getsockflag": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]),
    "srt_connect": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_bind": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_listen": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "srt_accept": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "srt_recvmsg": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_sendmsg2": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]),
    "srt_close": (ctypes.c_int, [ctypes.c_int]),
    "srt_getsndbuffer": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]),
    "srt_getlasterror": (ctypes.c_int, [ctypes.c_void_p]),
    "srt_getlasterror_str": (ctypes.c_char_p, []),
    "srt_epoll_create": (ctypes.c_int, []),
    "srt_epoll_add_usock": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
    "srt_epoll_uwait": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(_EpollEvent), ctypes.c_int, ctypes.c_int64]),
    "srt_epoll_release": (ctypes.c_int, [ctypes.c_int]),
}


@functools.cache
def _load() -> Any:
    """The started libsrt (cached); raises SrtError when it cannot be loaded."""
    names = [os.environ["LIVEDUB_LIBSRT"]] if os.environ.get("LIVEDUB_LIBSRT") else [
        *filter(None, (ctypes.util.find_library(n) for n in ("srt-gnutls", "srt-openssl", "srt"))),
        *_SONAMES,
    ]
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            for fn, (restype, argtypes) in _SIGNATURES.items():
                getattr(lib, fn).restype = restype
                getattr(lib, fn).argtypes = argtypes
        except (OSError, AttributeError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        lib.srt_setloglevel(_LOG_ERR)
        if lib.srt_startup() < 0:
            raise SrtError(f"srt_startup failed: {_last_error(lib)[1]}")
        return lib
    raise SrtError("libsrt not found (install libsrt1.5-gnutls): " + "; ".join(errors or ["no candidates"]))


def libsrt_error() -> str | None:
    """Why libsrt cannot be used, or None when it loads."""
    try:
        _load()
    except SrtError as exc:
        return str(exc)
    return None


def _last_error(lib: Any) -> tuple[int, str]:
    msg = lib.srt_getlasterror_str()
    return int(lib.srt_getlasterror(None)), msg.decode(errors="replace") if msg else "unknown error"


def _sockaddr(host: str, port: int, passive: bool) -> bytes:
    """A struct sockaddr_in/in6 (Linux layout) for host:port."""
    family = 0 if host else socket.AF_INET
    flags = socket.AI_PASSIVE if passive else 0
    try:
        info = socket.getaddrinfo(host or None, port, family, socket.SOCK_DGRAM, 0, flags)
    except socket.gaierror as exc:
        raise SrtError(f"cannot resolve {host!r}: {exc}") from exc
    fam, sa = info[0][0], info[0][4]
    ip = socket.inet_pton(fam, str(sa[0]))
    if fam == socket.AF_INET:
        return struct.pack("=H", fam) + struct.pack("!H", port) + ip + bytes(8)
    scope = int(sa[3]) if len(sa) > 3 else 0
    return struct.pack("=H", fam) + struct.pack("!HI", port, 0) + ip + struct.pack("=I", scope)


class _SrtSocket:
    """One SRT connection (caller or listener side), connected on first use."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, read_timeout_s: float | None = None) -> None:
        self.url = url
        self.spec = parse_srt_url(url)
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self._lib = _load()
        self._sock: int | None = None
        self._closed = False
        self._lock = threading.Lock()  # connect/close

    def _check(self, ret: int, what: str) -> int:
        if ret < 0:
            code, msg = _last_error(self._lib)
            raise SrtError(f"{redact_url(self.url)}: {what}: {msg}", code)
        return ret

    def _set(self, sock: int, opt: int, name: str, value: int | str | ctypes.Structure) -> None:
        if isinstance(value, str):
            raw = value.encode()
            ret = self._lib.srt_setsockflag(sock, opt, raw, len(raw))
        else:
            v = ctypes.c_int(value) if isinstance(value, int) else value
            ret = self._lib.srt_setsockflag(sock, opt, ctypes.byref(v), ctypes.sizeof(v))
        self._check(ret, f"option {name}")

    def _configure(self, sock: int) -> None:
        s = self.spec
        timeout_ms = max(1, int(self.timeout_s * 1000))
        rcv_ms = max(1, int(self.read_timeout_s * 1000)) if self.read_timeout_s else -1
        options: list[tuple[int, str, int | str | ctypes.Structure | None]] = [
            (_TRANSTYPE, "transtype", _SRTT_LIVE),
            (_CONNTIMEO, "conntimeo", timeout_ms),
            (_SNDSYN, "sndsyn", 1),
            (_SNDTIMEO, "sndtimeo", timeout_ms),
            (_RCVSYN, "rcvsyn", 1),
            (_RCVTIMEO, "rcvtimeo", rcv_ms),
            (_LINGER, "linger", _Linger(1, _LINGER_S)),
            (_LATENCY, "latency", s.latency_ms),
            (_STREAMID, "streamid", s.streamid),
            (_PASSPHRASE, "passphrase (10-79 characters)", s.passphrase),
            (_PBKEYLEN, "pbkeylen (16, 24 or 32)", s.pbkeylen),
        ]
        for opt, name, value in options:
            if value is not None:
                self._set(sock, opt, name, value)

    def connect(self) -> None:
        """Connect (caller) or wait up to `timeout_s` for one peer (listener). Idempotent."""
        with self._lock:
            if self._closed:
                raise SrtError(f"{redact_url(self.url)}: closed")
            if self._sock is not None:
                return
            lib, s = self._lib, self.spec
            sock = self._check(lib.srt_create_socket(), "create socket")
            try:
                self._configure(sock)
                if s.mode == "caller":
                    addr = _sockaddr(s.host, s.port, passive=False)
                    self._check(lib.srt_connect(sock, addr, len(addr)), "connect")
                    self._sock = sock
                else:
                    self._sock = self._accept(sock)
            except BaseException:
                lib.srt_close(sock)
                raise

    def _accept(self, listener: int) -> int:
        lib, s = self._lib, self.spec
        try:
            addr = _sockaddr(s.host, s.port, passive=True)
            self._check(lib.srt_bind(listener, addr, len(addr)), "bind")
            self._check(lib.srt_listen(listener, 1), "listen")
            eid = self._check(lib.srt_epoll_create(), "epoll")
            try:
                events = ctypes.c_int(_EPOLL_IN | _EPOLL_ERR)
                self._check(lib.srt_epoll_add_usock(eid, listener, ctypes.byref(events)), "epoll add")
                ready = (_EpollEvent * 1)()
                if lib.srt_epoll_uwait(eid, ready, 1, int(self.timeout_s * 1000)) <= 0:
                    raise SrtError(f"{redact_url(self.url)}: no caller within {self.timeout_s:g} s", _ETIMEOUT)
            finally:
                lib.srt_epoll_release(eid)
            peer, peer_len = ctypes.create_string_buffer(128), ctypes.c_int(128)
            return self._check(lib.srt_accept(listener, peer, ctypes.byref(peer_len)), "accept")
        finally:
            lib.srt_close(listener)  # one connection per URL open: stop listening

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            sock, self._sock = self._sock, None
        if sock is not None:
            self._lib.srt_close(sock)  # waits up to _LINGER_S for unsent data (GIL released)


class SrtReader(_SrtSocket):
    """Readable file-like over one SRT connection: `read(n)` returns the next message(s).

    Packets are delivered as they arrive (TSBPD off): the pipeline does its own timing, and with
    TSBPD on, the packets still held for their delivery time (the last `latency` ms) were lost
    when the sender closed (measured: a 100 % loss of a 21-packet burst closed at once)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> None:
        super().__init__(url, timeout_s=timeout_s, read_timeout_s=read_timeout_s)
        self._buf = ctypes.create_string_buffer(_RECV_BUF)
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _configure(self, sock: int) -> None:
        super()._configure(sock)
        self._set(sock, _TSBPDMODE, "tsbpdmode", 0)

    def read(self, size: int = -1) -> bytes:
        if not self._pending and not self._eof:
            try:
                self._pending = self._recv()
            except SrtError:
                # libav may read again after an error: that read ends at once (PyAV raises the
                # first error, which it holds, at its next check; raising again only drops it).
                self._eof = True
                raise
        if size is None or size < 0:
            size = len(self._pending)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _recv(self) -> bytes:
        self.connect()
        sock = self._sock
        if sock is None:  # closed meanwhile
            self._eof = True
            return b""
        deadline = time.monotonic() + (self.read_timeout_s or 0.0)
        while True:
            n = self._lib.srt_recvmsg(sock, self._buf, _RECV_BUF)
            if n > 0:
                return self._buf.raw[:n]
            if n == 0 and time.monotonic() < deadline:
                continue  # libsrt: "nothing to read" after signalling data (seen without TSBPD)
            code, msg = _last_error(self._lib) if n < 0 else (_ETIMEOUT, "")
            if code in (_ECONNLOST, _ENOCONN):
                self._eof = True  # the peer closed (or broke off): end of stream
                return b""
            if code == _ETIMEOUT:
                raise SrtError(f"{redact_url(self.url)}: no data for {self.read_timeout_s:g} s", code)
            raise SrtError(f"{redact_url(self.url)}: receive: {msg}", code)

    def close(self) -> None:
        self._release()


class SrtWriter(_SrtSocket):
    """Writable file-like over one SRT connection: sends whole TS packets in messages of up to
    1316 bytes. Connects on `connect()` or on the first write."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        super().__init__(url, timeout_s=timeout_s)
        self._out = bytearray()
        self.bytes_sent = 0
        self._last_send = 0.0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self._out += data
        self._send(len(self._out) - len(self._out) % TS_PACKET)  # a partial TS packet waits
        return len(data)

    def _send(self, n: int) -> None:
        if n <= 0:
            return
        self.connect()
        sock = self._sock
        if sock is None:
            raise SrtError(f"{redact_url(self.url)}: closed")
        chunk = bytes(self._out[:n])
        del self._out[:n]
        for i in range(0, n, SRT_PAYLOAD):
            part = chunk[i : i + SRT_PAYLOAD]
            self._check(self._lib.srt_sendmsg2(sock, part, len(part), None), "send")
            self.bytes_sent += len(part)
        self._last_send = time.monotonic()

    def _wait_acknowledged(self) -> None:
        """Until the peer has acknowledged every packet sent (the send buffer is empty), at most
        `timeout_s`: on a loaded machine the acknowledgements can take longer than srt_close's
        linger, and what is still unacknowledged at the hang-up is lost."""
        sock = self._sock
        if sock is None:
            return
        blocks, nbytes = ctypes.c_size_t(0), ctypes.c_size_t(0)
        deadline = time.monotonic() + self.timeout_s
        while self._lib.srt_getsndbuffer(sock, ctypes.byref(blocks), ctypes.byref(nbytes)) >= 0 and nbytes.value:
            if time.monotonic() >= deadline:
                _log.warning("srt: peer did not acknowledge everything before close", extra={"ctx": {"bytes": nbytes.value}})
                return
            time.sleep(_ACK_POLL_S)

    def _peer_latency_s(self) -> float:
        value, size = ctypes.c_int(0), ctypes.c_int(ctypes.sizeof(ctypes.c_int))
        sock = self._sock
        if sock is None or self._lib.srt_getsockflag(sock, _PEERLATENCY, ctypes.byref(value), ctypes.byref(size)) < 0:
            return 0.0
        return value.value / 1000

    def close(self) -> None:
        """Send what is left, then hang up once the peer has played it out: a receiver with
        TSBPD (ffmpeg, MediaMTX) drops the packets it still holds (the last `latency` ms) when
        the connection closes. `srt_close` then lingers until everything is acknowledged."""
        try:
            if self.connected and self._out:
                self._send(len(self._out))
            if self.connected and self.bytes_sent:
                self._wait_acknowledged()
                wait = self._last_send + self._peer_latency_s() + _PLAYOUT_MARGIN_S - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        finally:
            self._release()
