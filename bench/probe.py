"""Latency probe: input→output latency of live streams, measured from outside the worker.

`python -m bench.probe --out RESULT.json --stream ID IN_URL OUT_URL [--stream ...]` (or the streams
as a JSON list of [ID, IN_URL, OUT_URL] in the env var `BENCH_PROBE_STREAMS`, which keeps the
URLs' credentials out of argv: the benchmark uses that) reads, for each
stream, the input (what the worker reads) and the output (what a viewer reads) at the same time and
stamps the arrival of every video packet with CLOCK_MONOTONIC. Video is codec-copied by both the
worker and the baseline relay, so a frame is recognised on both sides by a hash of its slice NAL
units (Annex B on RTSP, length-prefixed in FLV: the NAL bytes are the same). Latency of a frame =
output arrival − input arrival. On SIGTERM/SIGINT the probe writes RESULT.json and exits.

It never writes to a media server and never decodes video (only demuxes): its own cost is small and
is measured by the benchmark like every other process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av

SLICE_TYPES = (1, 5)  # coded slice, IDR slice
RETRY_S = 0.3
# Packets a reader returns right after opening were buffered while libav probed the stream: their
# arrival stamps are late. Only frames that reached both readers this long after they started count.
SETTLE_S = 3.0


def _nal_units(data: bytes) -> list[bytes]:
    """Split an H.264 access unit, Annex B (start codes) or AVCC (4-byte lengths)."""
    if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
        units = []
        for part in data.split(b"\x00\x00\x01"):
            part = part.rstrip(b"\x00")
            if part:
                units.append(part)
        return units
    units = []
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if size <= 0 or pos + size > n:
            break
        units.append(data[pos : pos + size].rstrip(b"\x00"))
        pos += size
    return units


def frame_key(data: bytes) -> bytes | None:
    """A key that is equal for the same coded picture in any framing (None: no slice found)."""
    h = hashlib.blake2b(digest_size=12)
    found = False
    for nal in _nal_units(data):
        if nal and (nal[0] & 0x1F) in SLICE_TYPES:
            h.update(nal)
            found = True
    return h.digest() if found else None


class _Side(threading.Thread):
    """Reads one URL and records {frame key: first arrival (monotonic s)}."""

    def __init__(self, url: str, stop: threading.Event, options: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = stop
        self.options = options
        self.arrivals: dict[bytes, float] = {}
        self.order: list[bytes] = []
        self.packets = 0
        self.error: str | None = None
        self.first_s: float | None = None
        self.first_offset_s: float | None = None  # arrival − pts of the first packet returned
        self.min_offset_s: float | None = None  # smallest arrival − pts seen

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                container = av.open(self.url, "r", options=self.options, timeout=(5.0, 5.0))
            except (av.FFmpegError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.stop.wait(RETRY_S)
                continue
            try:
                if not container.streams.video:
                    self.error = "no video stream"
                    return
                vstream = container.streams.video[0]
                for packet in container.demux(vstream):
                    now = time.monotonic()
                    if self.stop.is_set():
                        return
                    if packet.size == 0:
                        continue
                    key = frame_key(bytes(packet))
                    self.packets += 1
                    if self.first_s is None:
                        self.first_s = now
                    if packet.pts is not None and packet.time_base is not None:
                        off = now - float(packet.pts * packet.time_base)
                        if self.first_offset_s is None:
                            self.first_offset_s = off
                        self.min_offset_s = off if self.min_offset_s is None else min(self.min_offset_s, off)
                    if key is not None and key not in self.arrivals:
                        self.arrivals[key] = now
                        self.order.append(key)
                return  # the stream ended
            except (av.FFmpegError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                if self.packets:
                    return
                self.stop.wait(RETRY_S)
            finally:
                try:
                    container.close()
                except (av.FFmpegError, OSError):
                    pass


def _options(url: str) -> dict[str, str]:
    return {"rtsp_transport": "tcp"} if url.startswith("rtsp://") else {}


def _lag_ms(side: _Side) -> float | None:
    if side.first_offset_s is None or side.min_offset_s is None:
        return None
    return round((side.first_offset_s - side.min_offset_s) * 1000.0, 1)


def _result(streams: dict[str, tuple[_Side, _Side]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sid, (inp, outp) in streams.items():
        lat = []
        in_arr = dict(inp.arrivals)
        in_from = (inp.first_s or 0.0) + SETTLE_S
        out_from = (outp.first_s or 0.0) + SETTLE_S
        for key in list(outp.order):
            t_in = in_arr.get(key)
            t_out = outp.arrivals[key]
            if t_in is not None and t_in >= in_from and t_out >= out_from:
                lat.append(round((t_out - t_in) * 1000.0, 2))
        out[sid] = {
            "latency_ms": lat,
            "in_packets": inp.packets,
            "out_packets": outp.packets,
            "in_first_s": inp.first_s,
            "out_first_s": outp.first_s,
            # How late the first packets were handed out (buffered while libav probed the stream):
            # a reader that anchors its clock on its first packet is late by this much.
            "in_open_lag_ms": _lag_ms(inp),
            "out_open_lag_ms": _lag_ms(outp),
            "in_error": inp.error,
            "out_error": outp.error,
        }
    return out


STREAMS_ENV = "BENCH_PROBE_STREAMS"
"""Env var: the streams to probe, a JSON list of [id, in_url, out_url] (URLs with credentials)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--stream", nargs=3, action="append", metavar=("ID", "IN_URL", "OUT_URL"), default=[])
    p.add_argument("--max-s", type=float, default=600.0, help="stop by itself after this long")
    args = p.parse_args(argv)
    stop = threading.Event()
    done = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    streams: dict[str, tuple[_Side, _Side]] = {}
    from_env = json.loads(os.environ.get(STREAMS_ENV) or "[]")
    for sid, in_url, out_url in [*args.stream, *from_env]:
        pair = (_Side(in_url, stop, _options(in_url)), _Side(out_url, stop, _options(out_url)))
        streams[sid] = pair
        for side in pair:
            side.start()
    done.wait(args.max_s)
    stop.set()
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(_result(streams)))
    tmp.replace(args.out)
    sys.stdout.flush()
    os._exit(0)  # readers may sit in a blocking libav read: do not wait for them


if __name__ == "__main__":
    raise SystemExit(main())
