"""RTSP relay, plus the nginx-rtmp publish notify endpoint, of the embedded media server.

MediaMTX-style RTSP publish (ANNOUNCE/RECORD over TCP) and read (DESCRIBE/PLAY) on
`live/<id>/in`, `live/<id>/out` and `live/<id>/orig`, built on GStreamer's RTSP server.

This program runs under the system interpreter (`/usr/bin/python3`), because Debian's PyGObject
(`python3-gi`) is built for it and not for the project's venv. It therefore imports nothing from
`livedub` and nothing outside the standard library and `gi`. The embedded media server
(`livedub.orchestrator.media_server`) starts it as a child process and reads its stdout.

How it works:
- Every request passes the auth check first (`RelayAuth.do_check`). There the mount for a valid
  path is created on first sight (any id, at run time), and the request's method, path and client
  are stored per thread (the RTSP context is not reachable from Python otherwise).
- A publisher's ANNOUNCE builds a RECORD pipeline from its SDP: one depayloader + parser + appsink
  per track. Each sample is handed to every reader of the path.
- A reader's DESCRIBE builds a PLAY pipeline: one appsrc + payloader per publisher track. A reader
  starts at a video keyframe: with the GOP cache (on by default, `--no-gop-cache` to disable) at
  the cached one, so it first gets, in one burst, the publisher's buffers of every track since
  that keyframe, then the live ones (no gap, no duplicate); without a cached keyframe, at the
  publisher's next one. Audio not after the starting keyframe is never sent. Its timestamps
  are the publisher's, moved into the reader pipeline's running time and `--ts-shift-ms` (plus
  the cached span) into the past; its sinks do not sync to the clock, so everything is
  forwarded as soon as it is pushed.
- GOP cache, per publisher: the buffers of every track since the most recent video keyframe;
  while the publish is young (its keyframes up to `--gop-cache-start-s` after the first one)
  since its first keyframe, so a reader started by the publish hook gets the programme from its
  start. Bounded by `--gop-cache-max-s` of publisher time and `--gop-cache-max-mb`: past them,
  whole GOPs are dropped from the front (the whole cache if one GOP is too long, until the next
  keyframe).
- AAC frames without a timestamp (all but the first of an RTP packet) get the previous frame's
  time + one frame.
- When a publisher goes away its readers are disconnected, as MediaMTX does.
- A small HTTP endpoint on 127.0.0.1 (`--notify-port`) takes nginx-rtmp's `on_publish` /
  `on_publish_done` calls and reports them on stdout like RTSP publishes (see NotifyHandler for
  why it is here and not in the parent).

Protocol on stdout (one JSON object per line; nothing else is ever written to stdout):
  {"event": "listening", "host": ..., "port": ..., "notify_port": ...}
  {"event": "ready", "path": "live/x/in", "source_type": "rtspSession", "source_id": ..., "query": ...}
  {"event": "not-ready", "path": ..., "source_type": "rtspSession", "source_id": ..., "query": ...}
  (source_type "rtmpConn" for the RTMP publishes nginx reports to the notify endpoint)
  {"event": "log", "level": "info"|"warning"|"error", "msg": ..., ...context}
  {"event": "fatal", "reason": "port-in-use"|"start-failed", "msg": ...}  (then exit 3 / 1)
The relay exits on SIGTERM/SIGINT or when its stdin reaches EOF (the parent died).

It must never write anything but protocol lines to stdout, never block a GStreamer streaming
thread on a lock held across a push, and never serve a path outside `live/<id>/(in|out|orig)`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import faulthandler
import hmac
import json
import os
import re
import signal
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer, GstSdp  # noqa: E402


def path_re(id_pattern: str, language_pattern: str = "(?!)") -> re.Pattern[str]:
    """A served path, `live/<id>/in|out|orig|<lang>` (use with `fullmatch`); `id_pattern` is
    livedub's one definition of an id (`livedub.protocol.constants.ID_CHARS`) and
    `language_pattern` of a language (`livedub.orchestrator.languages.LANGUAGE_CODE`), both
    passed by the parent. `orig` and a language path are published by the workers, like `out`."""
    return re.compile(rf"/?(live/{id_pattern}/(?:in|out|orig|{language_pattern}))/?")


PATH_RE: re.Pattern[str] = re.compile(r"(?!)")
"""Set by `main` from `--id-pattern`; matches nothing until then."""

AUTH_ENV = "LIVEDUB_RELAY_AUTH"
"""Environment variable (never argv) holding the access rules, as JSON:
{"in": [user, pass] | null, "out": [user, pass] | null, "read": [user, pass] | null}.
`in`: who may publish live/<id>/in; `out`: who may publish live/<id>/out and live/<id>/orig (the
workers' account: the dubbed programme and, with --keep-original, the original one);
`read`: who may read (null: anyone). A null `in` / `out` means anyone (the parent sets that only
when configured open). Unset: everything open (the relay run by hand)."""


class Access:
    """Who may publish and read, MediaMTX-style: credentials as RTSP Basic auth (from
    `rtsp://user:pass@...`) or as `user=` / `pass=` query parameters (RTMP, RTSP)."""

    def __init__(self, rules: dict[str, Any]) -> None:
        def pair(key: str) -> tuple[str, str] | None:
            value = rules.get(key)
            return None if value is None else (str(value[0]), str(value[1]))

        self.publish = {"in": pair("in"), "out": pair("out")}
        self.read = pair("read")

    @classmethod
    def from_env(cls) -> Access:
        raw = os.environ.pop(AUTH_ENV, "")
        return cls(json.loads(raw) if raw else {})

    @staticmethod
    def _match(want: tuple[str, str], got: tuple[str, str] | None) -> bool:
        if got is None:
            return False
        user_ok = hmac.compare_digest(want[0].encode(), got[0].encode())
        pass_ok = hmac.compare_digest(want[1].encode(), got[1].encode())
        return user_ok and pass_ok

    def may_publish(self, path: str, creds: tuple[str, str] | None) -> bool:
        want = self.publish["in" if path.endswith("/in") else "out"]  # out, orig and <lang>: workers
        return want is None or self._match(want, creds)

    def may_read(self, creds: tuple[str, str] | None) -> bool:
        if self.read is None:
            return True
        return any(
            want is not None and self._match(want, creds)
            for want in (self.read, self.publish["in"], self.publish["out"])
        )

    @property
    def closed(self) -> bool:
        return any(v is not None for v in (*self.publish.values(), self.read))


ACCESS = Access({})
"""Set by `main` from the environment."""


def creds_from_query(query: str) -> tuple[str, str] | None:
    q = urllib.parse.parse_qs(query or "", keep_blank_values=True)
    if "user" in q and "pass" in q:
        return q["user"][0], q["pass"][0]
    return None


def creds_from_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return urllib.parse.unquote(user), urllib.parse.unquote(password)


MAX_NOTIFY_BODY_BYTES = 16 * 1024
"""nginx-rtmp's notify form is a few hundred bytes; a longer body is answered 413 unread."""

# SDP encoding name -> publisher-side depayloader + parser (its output is what readers get).
DEPAY: dict[str, tuple[str, str]] = {
    "H264": ("rtph264depay", "h264parse ! "),
    "H265": ("rtph265depay", "h265parse ! "),
    "MPEG4-GENERIC": ("rtpmp4gdepay", "aacparse ! "),
    "MP4A-LATM": ("rtpmp4adepay", "aacparse ! "),
    "OPUS": ("rtpopusdepay", ""),
}
# Caps name of the parsed track -> reader-side payloader. config-interval=0: parameter sets go
# where the publisher put them (SDP sprop, or in-band); inserting them as extra RTP packets made
# ffmpeg readers return an extra "keyframe" packet with the IDR's timestamps (duplicate DTS).
PAY: dict[str, str] = {
    "video/x-h264": "rtph264pay config-interval=0",
    "video/x-h265": "rtph265pay config-interval=0",
    "audio/mpeg": "rtpmp4gpay",
    "audio/x-opus": "rtpopuspay",
}

VIDEO_ENCODINGS = ("H264", "H265")
#: Bytes an appsrc of a reader may queue (it drops the oldest beyond), besides the GOP cache.
READER_QUEUE_BYTES = 20_000_000

_out_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields}, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(level: str, msg: str, **ctx: Any) -> None:
    emit("log", level=level, msg=msg, **ctx)


class Publisher:
    """One publishing RTSP session on a path."""

    def __init__(self, path: str, encodings: list[str], client: Any, query: str) -> None:
        self.path = path
        self.encodings = encodings
        self.client = client
        self.query = query
        self.session_id = str(uuid.uuid4())
        self.caps: list[Gst.Caps | None] = [None] * len(encodings)
        self.ready_sent = False
        self.gone = False
        self.cache: GopCache | None = None
        # AAC: one frame's duration and the last frame's PTS, per track (see _fill_pts)
        self.frame_ns: list[int | None] = [None] * len(encodings)
        self.last_pts: list[int | None] = [None] * len(encodings)

    @property
    def has_video(self) -> bool:
        return any(e in VIDEO_ENCODINGS for e in self.encodings)

    def is_video(self, idx: int) -> bool:
        return self.encodings[idx] in VIDEO_ENCODINGS

    def all_caps(self) -> bool:
        return all(c is not None for c in self.caps)


def _aac_frame_ns(caps: Gst.Caps | None) -> int | None:
    """Duration of one AAC frame (1024 samples, 960 if the config says so), or None."""
    if caps is None or caps.get_size() == 0:
        return None
    st = caps.get_structure(0)
    if st.get_name() != "audio/mpeg":
        return None
    ok, rate = st.get_int("rate")
    if not ok or rate <= 0:
        return None
    samples = 1024
    codec_data = st.get_value("codec_data") if st.has_field("codec_data") else None
    if codec_data is not None:
        ok, info = codec_data.map(Gst.MapFlags.READ)
        if ok:
            data = bytes(info.data)
            codec_data.unmap(info)
            # AudioSpecificConfig: object type (5 bits) + frequency index (4) + channels (4),
            # then GASpecificConfig's frameLengthFlag (AAC-LC and friends)
            if len(data) >= 2 and (data[0] >> 3) in (1, 2, 3, 4) and (data[0] & 7) != 7:
                samples = 960 if data[1] & 0x04 else 1024
    return round(samples * 1_000_000_000 / rate)


def _fill_pts(pub: Publisher, idx: int, buf: Gst.Buffer) -> Gst.Buffer:
    """The depayloader stamps only the first AAC frame of an RTP packet; give the others their
    time (the previous frame's + one frame), so readers and the GOP cache see every frame's
    time. Called only from the track's own streaming thread."""
    frame_ns = pub.frame_ns[idx]
    if frame_ns is None:
        return buf
    if buf.pts != Gst.CLOCK_TIME_NONE:
        pub.last_pts[idx] = int(buf.pts)
        return buf
    last = pub.last_pts[idx]
    if last is None:
        return buf
    out = buf.copy()
    out.pts = last + frame_ns
    out.duration = frame_ns
    pub.last_pts[idx] = int(out.pts)
    return out


def _ts(buf: Gst.Buffer) -> int | None:
    """A buffer's decoding time (its PTS when it has no DTS), or None."""
    for v in (buf.dts, buf.pts):
        if v != Gst.CLOCK_TIME_NONE:
            return int(v)
    return None


class GopCache:
    """A publisher's buffers (every track, in arrival order) from a video keyframe on.

    Tracks reach the relay in their own streaming threads, so audio of the keyframe's time may
    arrive just before it (a large keyframe takes longer to depayload than small audio frames):
    a cache starting at a keyframe also takes the recent other-track buffers later than it.
    Only touched under the path's lock, by the publisher's streaming threads
    (`add`) and by a reader's registration (`snapshot`). Buffers are kept by reference (they
    are never written)."""

    #: other-track buffers remembered for a cache that starts at the next keyframe
    RECENT_OTHER = 128

    def __init__(self, max_ns: int, max_bytes: int, start_ns: int) -> None:
        self.max_ns = max_ns
        self.max_bytes = max_bytes
        self.start_ns = start_ns
        # Each GOP: [keyframe time, bytes, [(track, buffer, is_video), ...]], the keyframe first.
        self.gops: list[list[Any]] = []
        self.nbytes = 0
        self.first_key_ns: int | None = None
        self.newest_ns: int | None = None
        self.recent_other: collections.deque[tuple[int, Gst.Buffer, bool]] = collections.deque(
            maxlen=self.RECENT_OTHER
        )

    def add(self, idx: int, buf: Gst.Buffer, is_video: bool) -> None:
        ts = _ts(buf)
        entry = (idx, buf, is_video)
        if is_video and not buf.has_flags(Gst.BufferFlags.DELTA_UNIT) and ts is not None:
            if self.first_key_ns is None:
                self.first_key_ns = ts
            if ts - self.first_key_ns >= self.start_ns:  # past the publish's start: last GOP only
                self.clear()
            if self.gops:  # what arrived before this keyframe is in the previous GOP
                self._append_gop(ts, [entry])
            else:
                self._append_gop(ts, [entry, *_after(self.recent_other, ts)])
        elif self.gops:
            gop = self.gops[-1]
            size = buf.get_size()
            gop[1] += size
            gop[2].append(entry)
            self.nbytes += size
        if not is_video:
            self.recent_other.append(entry)
        if ts is not None and self.gops and (self.newest_ns is None or ts > self.newest_ns):
            self.newest_ns = ts
        while self.gops and (
            self.nbytes > self.max_bytes
            or (self.newest_ns is not None and self.newest_ns - self.gops[0][0] > self.max_ns)
        ):
            if len(self.gops) == 1:
                self.clear()  # one GOP longer than the bounds: no cache until the next keyframe
                break
            dropped = self.gops.pop(0)
            self.nbytes -= dropped[1]
            nxt = self.gops[0]
            carried = _after(dropped[2], nxt[0])
            nxt[2][1:1] = carried  # right after its keyframe
            size = sum(e[1].get_size() for e in carried)
            nxt[1] += size
            self.nbytes += size

    def _append_gop(self, key_ns: int, entries: list[tuple[int, Gst.Buffer, bool]]) -> None:
        size = sum(e[1].get_size() for e in entries)
        self.gops.append([key_ns, size, entries])
        self.nbytes += size

    def clear(self) -> None:
        self.gops = []
        self.nbytes = 0
        self.newest_ns = None

    def snapshot(self) -> list[tuple[int, Gst.Buffer]]:
        """(track, buffer) from the oldest cached keyframe on, keyframe first; [] if none."""
        return [(idx, buf) for gop in self.gops for idx, buf, _v in gop[2]]


def _after(
    entries: Iterable[tuple[int, Gst.Buffer, bool]], key_ns: int
) -> list[tuple[int, Gst.Buffer, bool]]:
    """The other-track entries later than `key_ns` (a keyframe's time; see Reader._push). A
    buffer without a timestamp (the 2nd..nth AAC frame of an RTP packet) follows its track's
    previous one, so it is later than that one's time."""
    out = []
    last: dict[int, int] = {}
    for entry in entries:
        idx, buf, is_video = entry
        ts = _ts(buf)
        if ts is not None:
            last[idx] = ts
            later = ts > key_ns
        else:
            later = idx in last and last[idx] >= key_ns
        if not is_video and later:
            out.append(entry)
    return out


class Reader:
    """One reading RTSP session: an appsrc per publisher track."""

    def __init__(
        self, path: str, publisher: Publisher, srcs: list[Any], client: Any, ts_shift_ns: int
    ) -> None:
        self.path = path
        self.publisher = publisher
        self.srcs = srcs
        self.client = client
        self.ts_shift_ns = ts_shift_ns
        self.started = False
        self.offset_ns: int | None = None
        self.start_ns: int | None = None  # publisher time of the keyframe the reader starts at
        # Cached buffers not pushed yet, per track: each track's are pushed by that track's own
        # streaming thread before its next live buffer, so every appsrc gets them in order.
        self.backlog: list[list[Gst.Buffer]] = [[] for _ in srcs]
        self.lock = threading.Lock()
        self.pipeline: Any = None

    def _running_time_ns(self) -> int:
        pipe = self.pipeline
        if pipe is None:
            return 0
        clock = pipe.get_clock()
        if clock is None:
            return 0
        return max(0, int(clock.get_time()) - int(pipe.get_base_time()))

    def _start(self, first_ns: int, span_ns: int) -> None:
        """Map publisher time `first_ns` (the starting keyframe) to a running time far enough in
        the past that the buffers up to `first_ns + span_ns` (the cached ones) are, too."""
        now = self._running_time_ns()
        self.started = True
        self.start_ns = first_ns
        self.offset_ns = max(0, now - self.ts_shift_ns - span_ns) - first_ns

    def start_from_cache(self, entries: list[tuple[int, Gst.Buffer]]) -> bool:
        """Start at the first of `entries` (a GopCache snapshot, keyframe first); called under
        the path's lock as the reader is registered, so that live buffers continue it exactly."""
        times = [t for t in (_ts(b) for _, b in entries) if t is not None]
        first = _ts(entries[0][1]) if entries else None
        if first is None:
            return False
        with self.lock:
            self._start(first, max(times) - first)
            for idx, buf in entries:
                self.backlog[idx].append(buf)
        return True

    def feed(self, idx: int, buf: Gst.Buffer, is_video: bool) -> None:
        with self.lock:
            backlog = self.backlog[idx]
            if backlog:
                self.backlog[idx] = []
            if not self.started:
                if self.publisher.has_video and (
                    not is_video or buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
                ):
                    return  # no cached keyframe: wait for the next one, as every reader must
                first = _ts(buf)
                if first is None:
                    return
                self._start(first, 0)
            offset = self.offset_ns
            start = self.start_ns
        assert offset is not None and start is not None
        for cached in backlog:
            self._push(idx, cached, is_video, offset, start)
        self._push(idx, buf, is_video, offset, start)

    def _push(self, idx: int, buf: Gst.Buffer, is_video: bool, offset: int, start: int) -> None:
        if not is_video and buf.pts != Gst.CLOCK_TIME_NONE and int(buf.pts) <= start:
            # Audio not after the keyframe the reader starts at. Not even at its time: every
            # track starts at 0 here, so at a publish's first keyframe the first audio frame has
            # its time whatever its own was, and that is typically an AAC encoder's priming
            # frame (just before the picture, discarded by players), which readers must not
            # count as programme audio.
            return
        out = buf.copy()
        for attr in ("pts", "dts"):
            v = getattr(buf, attr)
            if v != Gst.CLOCK_TIME_NONE:
                nv = int(v) + offset
                if nv < 0:
                    return
                setattr(out, attr, nv)
        self.srcs[idx].emit("push-buffer", out)


class PathState:
    def __init__(self, path: str) -> None:
        self.path = path
        self.cond = threading.Condition()
        self.publisher: Publisher | None = None
        self.readers: set[Reader] = set()


class Relay:
    def __init__(
        self,
        host: str,
        port: int,
        reader_wait_s: float,
        ts_shift_ms: int,
        latency_ms: int,
        exit_on_stdin_eof: bool,
        notify_port: int,
        gop_cache: bool = True,
        gop_cache_max_s: float = 10.0,
        gop_cache_max_mb: float = 16.0,
        gop_cache_start_s: float = 5.0,
    ) -> None:
        self.gop_cache = gop_cache
        self.gop_cache_max_ns = int(gop_cache_max_s * 1e9)
        self.gop_cache_max_bytes = int(gop_cache_max_mb * 1_000_000)
        self.gop_cache_start_ns = int(gop_cache_start_s * 1e9)
        self.exit_on_stdin_eof = exit_on_stdin_eof
        self.notify_port = notify_port
        self.host = host
        self.port = port
        self.reader_wait_s = reader_wait_s
        self.ts_shift_ns = ts_shift_ms * 1_000_000
        self.latency_ms = latency_ms
        self.paths: dict[str, PathState] = {}
        self.paths_lock = threading.Lock()
        # Request context per thread: the auth check sees it, create_element needs it.
        self.requests: dict[int, tuple[str, str, Any, str]] = {}
        self._announce_sdp: dict[int, str] = {}
        # Media elements built but not configured yet, by element name.
        self._pending_pub: dict[str, Publisher] = {}
        self._pending_reader: dict[str, Reader] = {}
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(host)
        self.server.set_service(str(port))
        self.server.get_thread_pool().set_max_threads(-1)
        self.server.set_auth(RelayAuth(self))
        self.server.connect("client-connected", self._on_client_connected)
        self.mounts = self.server.get_mount_points()

    # -- paths and mounts ------------------------------------------------------------------
    def state(self, path: str) -> PathState:
        with self.paths_lock:
            st = self.paths.get(path)
            if st is None:
                st = self.paths[path] = PathState(path)
                factory = PathFactory(self, path)
                self.mounts.add_factory("/" + path, factory)
            return st

    def _on_client_connected(self, _server: Any, client: Any) -> None:
        client.connect("pre-describe-request", self._pre_describe)

    def _pre_describe(self, _client: Any, ctx: Any) -> Any:
        path = _path_of(ctx.uri)
        if path is None:
            return GstRtsp.RTSPStatusCode.NOT_FOUND
        st = self.state(path)
        with st.cond:
            if st.publisher is None or st.publisher.gone:
                self.requests.pop(threading.get_ident(), None)
                return GstRtsp.RTSPStatusCode.NOT_FOUND
        return GstRtsp.RTSPStatusCode.OK

    # -- publisher side ----------------------------------------------------------------
    def publisher_element(self, path: str, req: tuple[str, str, Any, str]) -> Any:
        _method, _path, client, query = req
        body = self._announce_sdp.pop(threading.get_ident(), None)
        if body is None:
            return None
        res, sdp = GstSdp.SDPMessage.new_from_text(body)
        if res != GstSdp.SDPResult.OK:
            log("warning", "announce with unparsable SDP", path=path)
            return None
        encodings: list[str] = []
        parts: list[str] = []
        for i in range(sdp.medias_len()):
            media = sdp.get_media(i)
            rtpmap = media.get_attribute_val("rtpmap") or ""
            m = re.match(r"^\s*\d+\s+([^/\s]+)", rtpmap)
            enc = m.group(1).upper() if m else ""
            if enc not in DEPAY:
                log("warning", "unsupported track in announce", path=path, encoding=enc or rtpmap)
                return None
            encodings.append(enc)
            depay, parse = DEPAY[enc]
            parts.append(
                f"{depay} name=depay{i} ! {parse}"
                f"appsink name=sink{i} sync=false async=false emit-signals=true max-buffers=0"
            )
        desc = "( " + "  ".join(parts) + " )"
        try:
            bin_ = Gst.parse_launch(desc)
        except GLib.Error as exc:
            log("error", "cannot build record pipeline", path=path, error=str(exc))
            return None
        pub = Publisher(path, encodings, client, query)
        if self.gop_cache and pub.has_video:
            pub.cache = GopCache(
                self.gop_cache_max_ns, self.gop_cache_max_bytes, self.gop_cache_start_ns
            )
        st = self.state(path)
        with st.cond:
            old = st.publisher
            st.publisher = pub
            old_readers = list(st.readers) if old is not None else []
            if old is not None:
                st.readers.clear()
        if old is not None:  # a new publisher takes the path over (MediaMTX overridePublisher)
            log("info", "publisher replaced", path=path)
            self._publisher_gone(st, old, close_client=True, readers=old_readers)
        for i in range(len(encodings)):
            sink = bin_.get_by_name(f"sink{i}")
            sink.connect("new-sample", self._on_sample, st, pub, i)
        bin_.set_name(f"record-{pub.session_id}")
        self._pending_pub[bin_.get_name()] = pub
        return bin_

    def _on_sample(self, sink: Any, st: PathState, pub: Publisher, idx: int) -> Any:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        is_video = pub.is_video(idx)
        if pub.caps[idx] is None and not is_video:
            pub.frame_ns[idx] = _aac_frame_ns(sample.get_caps())
        buf = _fill_pts(pub, idx, buf)
        ready = False
        with st.cond:
            if pub.caps[idx] is None:
                pub.caps[idx] = sample.get_caps()
                if pub.all_caps() and not pub.ready_sent and st.publisher is pub:
                    pub.ready_sent = ready = True
                st.cond.notify_all()
            readers = list(st.readers) if st.publisher is pub else []
            if pub.cache is not None and not pub.gone:
                pub.cache.add(idx, buf, is_video)  # with the readers' list: no gap, no duplicate
        if ready:
            emit(
                "ready",
                path=st.path,
                source_type="rtspSession",
                source_id=pub.session_id,
                query=pub.query,
            )
            log("info", "publish ready", path=st.path, tracks=",".join(pub.encodings))
        for r in readers:
            try:
                r.feed(idx, buf, is_video)
            except Exception as exc:  # a broken reader must not stop the publisher
                log("warning", "reader feed failed", path=st.path, error=repr(exc))
        return Gst.FlowReturn.OK

    def _publisher_gone(
        self, st: PathState, pub: Publisher, close_client: bool, readers: list[Reader] | None = None
    ) -> None:
        with st.cond:
            if pub.gone:
                return
            pub.gone = True
            if pub.cache is not None:
                pub.cache.clear()
            if st.publisher is pub:
                st.publisher = None
                readers = list(st.readers)
                st.readers.clear()
            st.cond.notify_all()
            was_ready = pub.ready_sent
        if was_ready:
            emit(
                "not-ready",
                path=st.path,
                source_type="rtspSession",
                source_id=pub.session_id,
                query=pub.query,
            )
            log("info", "publish ended", path=st.path)
        for r in readers or []:
            _close_client(r.client)
        if close_client:
            _close_client(pub.client)

    # -- reader side ---------------------------------------------------------------------
    def reader_element(self, path: str, req: tuple[str, str, Any, str]) -> Any:
        st = self.state(path)
        deadline = GLib.get_monotonic_time() + int(self.reader_wait_s * 1e6)
        with st.cond:
            while True:
                pub = st.publisher
                if pub is not None and not pub.gone and pub.all_caps():
                    break
                remaining = (deadline - GLib.get_monotonic_time()) / 1e6
                if remaining <= 0:
                    return None
                st.cond.wait(remaining)
            caps = list(pub.caps)
        parts = []
        # room for a burst of the whole GOP cache on top of the usual queue
        queue_bytes = READER_QUEUE_BYTES + (self.gop_cache_max_bytes if self.gop_cache else 0)
        for i, c in enumerate(caps):
            assert c is not None
            name = c.get_structure(0).get_name()
            pay = PAY.get(name)
            if pay is None:
                log("warning", "no payloader for track", path=path, caps=c.to_string())
                return None
            parts.append(
                f"appsrc name=src{i} is-live=true format=time do-timestamp=false "
                f"max-bytes={queue_bytes} leaky-type=downstream ! {pay} name=pay{i} pt={96 + i}"
            )
        bin_ = Gst.parse_launch("( " + "  ".join(parts) + " )")
        srcs = []
        for i, c in enumerate(caps):
            src = bin_.get_by_name(f"src{i}")
            src.set_property("caps", c)
            srcs.append(src)
        reader = Reader(path, pub, srcs, req[2], self.ts_shift_ns)
        bin_.set_name(f"play-{uuid.uuid4()}")
        self._pending_reader[bin_.get_name()] = reader
        return bin_

    def media_configured(self, factory: PathFactory, media: Any) -> None:
        element = media.get_element()
        pub = self._pending_pub.pop(element.get_name(), None)
        if pub is not None:
            media.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
            media.set_latency(self.latency_ms)
            pipeline = element.get_parent()
            if pipeline is not None:
                pipeline.connect("element-added", _on_record_element_added)
            st = self.state(factory.path)
            media.connect("unprepared", lambda _m: self._publisher_gone(st, pub, False))
            return
        reader = self._pending_reader.pop(element.get_name(), None)
        if reader is not None:
            media.set_transport_mode(GstRtspServer.RTSPTransportMode.PLAY)
            st = self.state(factory.path)
            reader.pipeline = element.get_parent()
            if self.gop_cache and reader.pipeline is not None:
                # The cached burst is due now, but while the reader's pipeline is younger than
                # the cached span it maps to a running time ahead: let its sinks (which sync to
                # the clock; rtsp-stream resets `sync`) render that much early.
                early_ns = self.gop_cache_max_ns + self.ts_shift_ns
                reader.pipeline.connect(
                    "deep-element-added",
                    lambda _b, _s, el: _render_early(el, early_ns),
                )
            cached = 0
            with st.cond:
                pub = reader.publisher
                if st.publisher is pub and not pub.gone:
                    if pub.cache is not None:
                        entries = pub.cache.snapshot()
                        if reader.start_from_cache(entries):
                            cached = len(entries)
                    st.readers.add(reader)
            if cached:
                log("info", "reader starts at a cached keyframe", path=st.path, buffers=cached)

            def _gone(_m: Any) -> None:
                with st.cond:
                    st.readers.discard(reader)

            media.connect("unprepared", _gone)

    def run(self) -> int:
        if self.server.attach(None) == 0:
            emit(
                "fatal",
                reason="port-in-use",
                msg=f"RTSP port {self.host}:{self.port} is already in use or not bindable",
            )
            return 3
        loop = GLib.MainLoop()

        def _quit(*_a: Any) -> bool:
            loop.quit()
            return False

        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, _quit)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, _quit)
        if self.exit_on_stdin_eof:

            def _stdin(_ch: Any, _cond: Any) -> bool:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    log("warning", "stdin closed: parent gone, exiting")
                    loop.quit()
                    return False
                return True

            stdin = GLib.IOChannel.unix_new(sys.stdin.fileno())
            GLib.io_add_watch(
                stdin, GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP, _stdin
            )
        notify = NotifyServer(("127.0.0.1", self.notify_port), NotifyHandler)
        threading.Thread(target=notify.serve_forever, name="notify", daemon=True).start()
        emit("listening", host=self.host, port=self.port, notify_port=notify.server_address[1])
        loop.run()
        with self.paths_lock:
            states = list(self.paths.values())
        for st in states:
            pub = st.publisher
            if pub is not None:
                self._publisher_gone(st, pub, close_client=False)
        return 0


class PathFactory(GstRtspServer.RTSPMediaFactory):
    """The mount of one path: a RECORD media for ANNOUNCE, a PLAY media for a reader."""

    def __init__(self, relay: Relay, path: str) -> None:
        super().__init__()
        self.relay = relay
        self.path = path
        self.set_shared(False)
        self.set_transport_mode(
            GstRtspServer.RTSPTransportMode.PLAY | GstRtspServer.RTSPTransportMode.RECORD
        )
        self.set_stop_on_disconnect(True)

    def do_create_element(self, _url: Any) -> Any:
        req = self.relay.requests.pop(threading.get_ident(), None)  # holds a client ref
        if req is None or req[1] != self.path:
            return None
        if req[0] == "ANNOUNCE":
            return self.relay.publisher_element(self.path, req)
        return self.relay.reader_element(self.path, req)

    def do_configure(self, media: Any) -> None:
        GstRtspServer.RTSPMediaFactory.do_configure(self, media)
        self.relay.media_configured(self, media)


class RelayAuth(GstRtspServer.RTSPAuth):
    """Access rules (`ACCESS`) and one publisher per path; sees every request first, so it also
    creates mounts on demand."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay

    def do_check(self, ctx: Any, check: str) -> bool:
        if check != GstRtspServer.RTSP_AUTH_CHECK_URL:
            return True
        req = ctx.request
        method = GstRtsp.rtsp_method_as_text(ctx.method) if ctx.method else ""
        path = _path_of(ctx.uri)
        tid = threading.get_ident()
        if path is None:
            self.relay.requests.pop(tid, None)
            return True  # no mount matches: the server answers 404
        if method not in ("ANNOUNCE", "DESCRIBE", "SETUP"):  # only these construct a media
            self.relay.requests.pop(tid, None)
            return True
        query = (ctx.uri.query or "") if ctx.uri is not None else ""
        if not self._allowed(ctx, req, method, path, query):
            self.relay.requests.pop(tid, None)
            return False  # the answer is sent
        self.relay.requests[tid] = (method, path, ctx.client, query)
        if method == "ANNOUNCE":
            _res, body = req.get_body()
            self.relay._announce_sdp[tid] = bytes(body or b"").decode("utf-8", "replace")
        self.relay.state(path)  # mount on first sight
        return True


    def _allowed(self, ctx: Any, req: Any, method: str, path: str, query: str) -> bool:
        _res, header = req.get_header(GstRtsp.RTSPHeaderField.AUTHORIZATION, 0)
        creds = creds_from_basic(header) or creds_from_query(query)
        if method == "ANNOUNCE":
            if not ACCESS.may_publish(path, creds):
                # An RTSP client (ffmpeg's too) sends its first ANNOUNCE without credentials and
                # answers the 401 with them: only wrong credentials are worth a warning.
                if creds is None:
                    log("info", "rtsp publish: credentials requested (401)", path=path)
                else:
                    log("warning", "rtsp publish refused: credentials", path=path, given=True)
                self._refuse(ctx, req, GstRtsp.RTSPStatusCode.UNAUTHORIZED)
                return False
            st = self.relay.state(path)
            with st.cond:
                busy = st.publisher is not None and not st.publisher.gone
            if busy:  # never taken over (MediaMTX overridePublisher: false)
                log("warning", "rtsp publish refused: path already has a publisher", path=path)
                self._refuse(ctx, req, GstRtsp.RTSPStatusCode.FORBIDDEN)
                return False
            return True
        if not ACCESS.may_read(creds) and not (method == "SETUP" and ACCESS.may_publish(path, creds)):
            log("warning", "rtsp read refused: credentials", path=path, given=creds is not None)
            self._refuse(ctx, req, GstRtsp.RTSPStatusCode.UNAUTHORIZED)
            return False
        return True

    @staticmethod
    def _refuse(ctx: Any, req: Any, code: Any) -> None:
        _res, resp = GstRtsp.rtsp_message_new_response(code, None, req)
        if code == GstRtsp.RTSPStatusCode.UNAUTHORIZED:
            resp.add_header(GstRtsp.RTSPHeaderField.WWW_AUTHENTICATE, 'Basic realm="livedub"')
        ctx.client.send_message(ctx.session, resp)


NGINX_NOTIFY_FIELDS = frozenset(
    {"app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call", "name", "type", "args"}
)
"""The fields nginx-rtmp's notify adds itself; every other field is the publish URL's query."""


def publish_query(form: dict[str, list[str]]) -> str:
    """The publisher's query string (`?lang=es,ca`) from an nginx-rtmp notify form: nginx-rtmp
    sends each query parameter as a form field of its own, next to its own fields. The
    credentials (`user`, `pass`: this server's to check) are not passed on to the hook."""
    return urllib.parse.urlencode(
        [
            (k, v)
            for k, values in form.items()
            if k not in NGINX_NOTIFY_FIELDS and k not in ("user", "pass")
            for v in values
        ]
    )


class NotifyHandler(BaseHTTPRequestHandler):
    """nginx-rtmp `on_publish` / `on_publish_done` (form POST) → ready / not-ready events.

    It lives in this process, not in the parent, because the parent may share its process with
    a PyAV publisher, and PyAV holds the GIL while it opens an RTMP output: nginx waits for this
    answer before it answers the publisher, so an in-process endpoint deadlocks for nginx's
    notify timeout (measured: 10 s)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_NOTIFY_BODY_BYTES:
            log("warning", "notify refused: bad or too large Content-Length", length=length)
            self.close_connection = True
            self.send_response(413 if length > MAX_NOTIFY_BODY_BYTES else 400)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        fields = {k: v[0] for k, v in form.items() if v}
        op = self.path.rstrip("/").rsplit("/", 1)[-1]
        raw_name = fields.get("name", "")
        name = raw_name.split("?", 1)[0].strip("/")
        path = f"{fields.get('app', '').strip('/')}/{name}"
        m = PATH_RE.fullmatch(path)
        # nginx-rtmp passes the stream's query as form fields (and the raw one in `args`)
        creds = (
            (fields["user"], fields["pass"]) if "user" in fields and "pass" in fields else None
        ) or creds_from_query(fields.get("args", "")) or creds_from_query(raw_name.partition("?")[2])
        if m is None or op not in ("publish", "publish_done", "play"):
            log("warning", "rtmp publish refused: not a live/<id>/in|out|orig path", path=path)
            code = 403
        elif op == "play":
            code = 200 if ACCESS.may_read(creds) else 403
            if code != 200:
                log("warning", "rtmp read refused: credentials", path=path)
        elif op == "publish" and not ACCESS.may_publish(m.group(1), creds):
            log("warning", "rtmp publish refused: credentials", path=path, given=creds is not None)
            code = 403
        else:
            emit(
                "ready" if op == "publish" else "not-ready",
                path=m.group(1),
                source_type="rtmpConn",
                source_id=fields.get("clientid", ""),
                query=fields.get("args", "") or publish_query(form),
            )
            code = 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server API)
        return


class NotifyServer(ThreadingHTTPServer):
    daemon_threads = True


def _on_record_element_added(_bin: Any, element: Any) -> None:
    """Publisher timestamps from RTP time only: the default jitterbuffer mode (slave) smooths
    arrival times into the PTS, which gives readers a few ms of frame-interval jitter."""
    factory = element.get_factory()
    if factory is not None and factory.get_name() == "rtpbin":
        element.set_property("buffer-mode", 0)  # RTP_JITTER_BUFFER_MODE_NONE


def _render_early(element: Any, early_ns: int) -> None:
    """Make a reader's network sink send buffers up to `early_ns` before their running time."""
    factory = element.get_factory()
    if factory is not None and factory.get_name() in ("appsink", "multiudpsink", "udpsink"):
        element.set_property("ts-offset", -early_ns)


def _path_of(uri: Any) -> str | None:
    if uri is None or not uri.abspath:
        return None
    m = PATH_RE.fullmatch(uri.abspath)
    return m.group(1) if m else None


def _close_client(client: Any) -> None:
    if client is None:
        return

    def _do() -> bool:
        t0 = GLib.get_monotonic_time()
        try:
            client.close()
        except Exception:  # already closed
            pass
        took_ms = (GLib.get_monotonic_time() - t0) / 1000
        if took_ms > 100:
            log("warning", "closing a client blocked the main loop", took_ms=round(took_ms))
        return False

    GLib.idle_add(_do)


def _parser() -> argparse.ArgumentParser:
    """The relay's command line (`MediaServer._start_relay` in media_server.py passes it)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--id-pattern", required=True, help="regex of a stream id (unanchored)")
    p.add_argument(
        "--language-pattern", default="(?!)", help="regex of a language path name (unanchored)"
    )
    p.add_argument(
        "--reader-wait-s",
        type=float,
        default=5.0,
        help="how long a DESCRIBE waits for the publisher's track formats",
    )
    p.add_argument(
        "--ts-shift-ms",
        type=int,
        default=1000,
        help="reader timestamps are moved this far into the past (sent at once)",
    )
    p.add_argument(
        "--latency-ms", type=int, default=0, help="jitterbuffer latency of the publish side"
    )
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin reaches EOF (set by a parent that holds the pipe)",
    )
    p.add_argument(
        "--notify-port",
        type=int,
        default=0,
        help="port on 127.0.0.1 of the nginx-rtmp notify endpoint (0: any free one)",
    )
    p.add_argument(
        "--gop-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a new reader first gets the publisher's buffers since the cached keyframe",
    )
    p.add_argument(
        "--gop-cache-max-s",
        type=float,
        default=10.0,
        help="GOP cache bound, in publisher time from its oldest keyframe",
    )
    p.add_argument("--gop-cache-max-mb", type=float, default=16.0, help="GOP cache bound, in MB")
    p.add_argument(
        "--gop-cache-start-s",
        type=float,
        default=5.0,
        help="the cache keeps everything since a publish's first keyframe until a keyframe "
        "this long after it (0: only ever the last GOP)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    global PATH_RE, ACCESS
    PATH_RE = path_re(args.id_pattern, args.language_pattern)
    ACCESS = Access.from_env()
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    Gst.init(None)
    relay = Relay(
        args.host,
        args.port,
        args.reader_wait_s,
        args.ts_shift_ms,
        args.latency_ms,
        args.exit_on_stdin_eof,
        args.notify_port,
        args.gop_cache,
        args.gop_cache_max_s,
        args.gop_cache_max_mb,
        args.gop_cache_start_s,
    )
    try:
        return relay.run()
    except Exception as exc:
        emit("fatal", reason="start-failed", msg=repr(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
