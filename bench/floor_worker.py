"""The least a worker can be: a floor for the worker's CPU and memory (issue 16).

Only the parts the project requires of a worker, and none of livedub: PyAV (RTSP in, AAC decode,
one AAC encoder, video codec copy, FLV out), the audio as s16 PCM bytes (as the worker
cuts fragments from), python-socketio's asyncio client (with aiohttp, which it brings) and
prometheus_client served by aiohttp.web (/metrics). It holds the stream for D seconds, as a
worker must, and does nothing else: no segments, no STS, no A/V sync, no settings, no logs. One
reader thread (demux, decode, resample), one writer thread (encode, mux), the event loop for
/metrics. Run by `python -m bench.minimal` side by side with a relay and a passthrough worker.

    WORKER_INPUT_URL=rtsp://… WORKER_OUTPUT_URL=rtmp://… python -m bench.floor_worker --delay-s 7

URLs come from the environment (they carry credentials), as a worker's do. This module imports
nothing from livedub (that is the point) and nothing from bench (bench/__init__ is a docstring).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import threading
import time
from concurrent.futures import Future
from fractions import Fraction
from typing import Any

import aiohttp.web
import av
import prometheus_client
import socketio

RATE = 48000
TICK_S = 0.25  # the writer's tick, as the worker's output (WORKER_OUTPUT_TICK_S, its default)
PACKETS = prometheus_client.Counter("floor_packets", "packets read")
DROPPED = prometheus_client.Counter("floor_dropped", "video packets dropped (timestamps not increasing)")


class Held:
    """What the reader has read and the writer has not yet written: (due, kind, payload)."""

    def __init__(self) -> None:
        self.items: collections.deque[tuple[float, str, Any]] = collections.deque()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def put(self, due: float, kind: str, payload: Any) -> None:
        with self.lock:
            self.items.append((due, kind, payload))

    def take_due(self, now: float) -> list[tuple[float, str, Any]]:
        with self.lock:
            out = []
            while self.items and self.items[0][0] <= now:
                out.append(self.items.popleft())
            return out


def read(in_url: str, held: Held, delay_s: float, opened: Future[Any], out_url: str | None) -> None:
    """Demux, decode, hold. `opened` gets the input's video stream (the writer's template) or the
    reason the input could not be opened. With `out_url` (--one-thread) this thread also writes
    what is due, after a packet, at most every TICK_S: no writer thread (the input paces it)."""
    options = {"rtsp_transport": "tcp"} if in_url.startswith("rtsp") else {}
    try:
        container = av.open(in_url, options=options, timeout=(15, 5))
        video, audio = container.streams.video[0], container.streams.audio[0]
    except Exception as exc:  # noqa: BLE001 - handed to main, which raises it
        opened.set_exception(exc)
        return
    opened.set_result(video)
    inline = Writer(out_url, video) if out_url is not None else None
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
    base: int | None = None
    last_dts: int | None = None
    try:
        for pkt in container.demux(video, audio):
            if held.stop.is_set():
                return
            if pkt.dts is None:
                continue
            PACKETS.inc()
            due = time.monotonic() + delay_s
            if pkt.stream is video:
                if base is None:
                    if not pkt.is_keyframe:
                        continue
                    base = pkt.dts
                if last_dts is not None and pkt.dts <= last_dts:
                    DROPPED.inc()
                    continue
                last_dts = pkt.dts
                held.put(due, "v", (pkt.pts - base, pkt.dts - base, bytes(pkt), pkt.is_keyframe, pkt.time_base))
            elif base is not None:
                pcm = b"".join(bytes(f.planes[0])[: f.samples * 4] for fr in pkt.decode() for f in resampler.resample(fr))
                if pcm:
                    held.put(due, "a", pcm)
            if inline is not None and due - delay_s - inline.last >= TICK_S:
                inline.step(held, due - delay_s)
    finally:
        held.stop.set()
        if inline is not None:
            inline.out.close()


class Writer:
    """Encode and mux what is due: one AAC encoder, video codec copy, FLV."""

    def __init__(self, url: str, template: Any) -> None:
        self.out = av.open(url, "w", format="flv")
        self.vs = self.out.add_stream_from_template(template)
        self.aout = self.out.add_stream("aac", rate=RATE, layout="stereo")
        self.samples = 0
        self.last = 0.0

    def step(self, held: Held, now: float) -> None:
        self.last = now
        for _, kind, payload in held.take_due(now):
            if kind == "v":
                pts, dts, data, key, tb = payload
                p = av.Packet(data)
                p.pts, p.dts, p.time_base, p.is_keyframe, p.stream = pts, dts, tb, key, self.vs
                self.out.mux(p)
            else:
                frame = av.AudioFrame(format="s16", layout="stereo", samples=len(payload) // 4)  # s16 stereo
                frame.planes[0].update(payload)
                frame.sample_rate, frame.pts, frame.time_base = RATE, self.samples, Fraction(1, RATE)
                self.samples += frame.samples
                for p in self.aout.encode(frame):
                    self.out.mux(p)


def write(url: str, template: Any, held: Held) -> None:
    writer = Writer(url, template)
    try:
        while not held.stop.is_set():
            writer.step(held, time.monotonic())
            time.sleep(TICK_S)
    finally:
        held.stop.set()
        writer.out.close()


async def serve(metrics_port: int, held: Held) -> None:
    app = aiohttp.web.Application()

    async def metrics(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=prometheus_client.generate_latest(), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", metrics_port).start()
    client = socketio.AsyncClient()  # a worker's STS link; the floor never connects it
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, held.stop.set)
    while not held.stop.is_set():
        await asyncio.sleep(0.5)
    del client
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor_worker", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--delay-s", type=float, default=7.0, help="hold the stream this long (a worker's D; default 7)")
    p.add_argument("--metrics-port", type=int, default=0, help="port of /metrics (default 0: any free one)")
    p.add_argument("--one-thread", action="store_true", help="the reader also writes (no writer thread)")
    args = p.parse_args()
    in_url, out_url = os.environ["WORKER_INPUT_URL"], os.environ["WORKER_OUTPUT_URL"]
    held, opened = Held(), Future[Any]()
    inline_url = out_url if args.one_thread else None
    reader = threading.Thread(target=read, args=(in_url, held, args.delay_s, opened, inline_url), name="reader", daemon=True)
    reader.start()
    template = opened.result()  # raises what the reader's open raised
    if not args.one_thread:
        threading.Thread(target=write, args=(out_url, template, held), name="writer", daemon=True).start()
    asyncio.run(serve(args.metrics_port, held))
    reader.join(timeout=5)


if __name__ == "__main__":
    main()
