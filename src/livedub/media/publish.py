"""Publish a media file to a URL in real time, codec copy (like `ffmpeg -re -i FILE -c copy`).

RTSP is published over TCP, RTMP as FLV, SRT as MPEG-TS, or a file by extension. Packets are
written when their decode time is due relative to the start (real-time pacing); `loop=True`
repeats the file with continuous timestamps. A test/tool helper: it never decodes anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import av

from livedub.log import bind, redact_url
from livedub.media.urls import is_live, output_format_for, strip_file_scheme

_log = logging.getLogger(__name__)


class _Publication:
    """One publication's state across its passes through the source: the output streams, the
    real-time pacing base (the first packet's wall and media time) and the packets written."""

    def __init__(self, out: Any, stop: threading.Event, realtime: bool) -> None:
        self.out = out
        self.stop = stop
        self.realtime = realtime
        self.out_streams: dict[int, Any] = {}
        self.start_wall: float | None = None
        self.first_key_s: float | None = None
        self.written = 0

    def start(self, selected: list[Any]) -> None:
        for s in selected:
            self.out_streams[s.index] = self.out.add_stream_from_template(s)
        self.out.start_encoding()

    def copy(self, inp: Any, selected: list[Any], offset_s: float) -> float:
        """One pass: `inp`'s packets, shifted by `offset_s` and paced; returns where it ended (s)."""
        stop, out, out_streams, realtime = self.stop, self.out, self.out_streams, self.realtime
        end_s = offset_s
        for pkt in inp.demux(*selected):
            if stop.is_set():
                break
            if pkt.size == 0 or (pkt.dts is None and pkt.pts is None):
                continue
            if pkt.is_discard:
                # Encoder priming the source container says to discard (MP4 edit list):
                # FLV/RTSP have no edit lists, so forwarding it would add ~21 ms of
                # audio before the first video frame.
                continue
            tb = pkt.time_base
            key = pkt.dts if pkt.dts is not None else pkt.pts
            assert key is not None and tb is not None
            key_s = float(key * tb) + offset_s
            if realtime:
                now = time.monotonic()
                if self.start_wall is None or self.first_key_s is None:
                    self.start_wall, self.first_key_s = now, key_s
                wait = self.start_wall + (key_s - self.first_key_s) - now
                if wait > 0 and stop.wait(wait):
                    break
            shift = round(offset_s / tb)
            if pkt.pts is not None:
                pkt.pts += shift
            if pkt.dts is not None:
                pkt.dts += shift
            dur_s = float((pkt.duration or 0) * tb)
            end_s = max(end_s, key_s + dur_s)
            pkt.stream = out_streams[pkt.stream.index]
            out.mux(pkt)
            self.written += 1
        return end_s


def publish(
    source: str,
    url: str,
    *,
    loop: bool = False,
    realtime: bool = True,
    stop: threading.Event | None = None,
    on_started: Callable[[], None] | None = None,
    max_loops: int | None = None,
    linger_s: float = 0.5,
) -> int:
    """Copy `source` to `url`, paced to real time. Returns the number of packets written.

    Raises av.FFmpegError / OSError if the destination cannot be opened or written.
    """
    log = bind(_log, url=redact_url(url))
    stop = stop or threading.Event()
    fmt, opts = output_format_for(url)
    with av.open(strip_file_scheme(source), "r") as probe:
        streams_meta = [(s.type, s.index) for s in probe.streams if s.type in ("video", "audio")]
    if not streams_meta:
        raise ValueError(f"{source} has no audio or video")
    out = av.open(strip_file_scheme(url), "w", format=fmt, options=opts)
    pub = _Publication(out, stop, realtime)
    try:
        offset_s = 0.0  # added to every timestamp on each loop iteration
        iteration = 0
        while not stop.is_set():
            with av.open(strip_file_scheme(source), "r") as inp:
                selected = [s for s in inp.streams if s.type in ("video", "audio")]
                if not pub.out_streams:
                    pub.start(selected)
                    log.info("publishing", ctx={"source": source, "format": fmt})
                    if on_started is not None:
                        on_started()
                end_s = pub.copy(inp, selected, offset_s)
            iteration += 1
            if not loop or (max_loops is not None and iteration >= max_loops):
                break
            offset_s = end_s
    finally:
        if linger_s > 0 and is_live(url) and not stop.is_set():
            stop.wait(linger_s)  # let a relay forward the last packets before we hang up
        out.close()
        log.info("publish finished", ctx={"packets": pub.written})
    return pub.written
