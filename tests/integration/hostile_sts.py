"""A hostile STS service for reliability tests: a small python-socketio `AsyncServer` that speaks
just enough of the Audio Fragment Protocol to be connected to, and misbehaves on demand.

Each test picks how it answers `stream:init` (`on_init`) and `fragment:data` (`on_fragment`,
one of the behaviours below or any `async (reply, fragment) -> None`). `Reply` offers the
building blocks: a correct echo, a `fragment:processed` with any fields changed, any event with
any payload, and raw Socket.IO text that is not JSON. The server records what the worker sent
(inits, fragments, acks, ends) so a test can check its side too.

The module also holds the checks every reliability test shares (`check_accounting`,
`check_complete`, `metric`, `RssSampler`).

It binds 127.0.0.1 on a free port, is started and stopped by the test (`async with
run_hostile(...) as sts`), and must never be used outside tests: it validates nothing it does
not need to and is deliberately wrong.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import socketio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.analyze import Analysis, analyze
from livedub.media.audio import decode_audio, encode_pcm, resample_pcm
from livedub.media.pcm import Pcm
from livedub.worker.runner import WorkerRunner

FragmentBehaviour = Callable[["Reply", dict[str, Any]], Awaitable[None]]
InitBehaviour = Callable[["Reply", dict[str, Any]], Awaitable[None]]


@dataclass
class Received:
    """What the worker sent, in arrival order per kind."""

    connects: int = 0
    disconnects: int = 0
    inits: list[dict[str, Any]] = field(default_factory=list)
    fragments: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)


class Reply:
    """Answering tools for one connection (`sid`), handed to every behaviour."""

    def __init__(self, server: HostileSts, sid: str) -> None:
        self.server = server
        self.sid = sid

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space shared by every call of a behaviour (e.g. held-back fragments)."""
        return self.server.state

    async def emit(self, event: str, data: Any) -> None:
        await self.server.sio.emit(event, data, to=self.sid)

    async def raw(self, text: str) -> None:
        """Send `text` as one Engine.IO message: a Socket.IO packet that may not be JSON at all."""
        eio_sid = self.server.sio.manager.eio_sid_from_sid(self.sid, "/")
        if eio_sid is not None:
            await self.server.sio.eio.send(eio_sid, text)

    async def ready(self, init: dict[str, Any], max_inflight: int | None = None) -> None:
        await self.emit(
            "stream:ready",
            {
                "stream_id": init.get("stream_id", "x"),
                "session_id": str(uuid.uuid4()),
                "max_inflight": max_inflight or int(init.get("max_inflight", 3)),
                "capabilities": {"async_delivery": True, "formats": ["m4a", "wav", "flac"]},
            },
        )

    @staticmethod
    def processed(frag: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """A correct echo `fragment:processed` for `frag`, with `changes` applied on top."""
        doc: dict[str, Any] = {
            "fragment_id": frag["fragment_id"],
            "stream_id": frag["stream_id"],
            "sequence_number": frag["sequence_number"],
            "status": "success",
            "processing_time_ms": 1,
            "dubbed_audio": dict(frag["audio"]),
        }
        doc.update(changes)
        return doc

    async def echo(self, frag: dict[str, Any], **changes: Any) -> None:
        await self.emit("fragment:processed", self.processed(frag, **changes))

    async def ack(self, frag: dict[str, Any]) -> None:
        await self.emit("fragment:ack", {"fragment_id": frag["fragment_id"], "status": "processing"})


class HostileSts:
    """The server. `on_init` / `on_fragment` decide every answer (defaults: a correct echo)."""

    def __init__(
        self,
        on_fragment: FragmentBehaviour | None = None,
        *,
        on_init: InitBehaviour | None = None,
        complete_on_end: bool = True,
        max_http_buffer_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.on_fragment = on_fragment or echo
        self.on_init = on_init or ready
        self.complete_on_end = complete_on_end
        self.received = Received()
        self.state: dict[str, Any] = {}
        self.errors: list[BaseException] = []
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            transports=["websocket"],
            max_http_buffer_size=max_http_buffer_size,
            logger=False,
            engineio_logger=False,
        )
        self.app = web.Application()
        self.sio.attach(self.app)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._register()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - surfaced to the test via .errors
                self.errors.append(exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _register(self) -> None:
        sio = self.sio

        @sio.on("connect")
        async def _connect(sid: str, environ: Any, auth: Any = None) -> bool:
            self.received.connects += 1
            return True

        @sio.on("disconnect")
        async def _disconnect(sid: str, reason: Any = None) -> None:
            self.received.disconnects += 1

        @sio.on("stream:init")
        async def _init(sid: str, data: Any = None) -> None:
            self.received.inits.append(data)
            self._spawn(self.on_init(Reply(self, sid), data))

        @sio.on("fragment:data")
        async def _fragment(sid: str, data: Any = None) -> None:
            self.received.fragments.append(data)
            self._spawn(self.on_fragment(Reply(self, sid), data))

        @sio.on("fragment:ack")
        async def _ack(sid: str, data: Any = None) -> None:
            self.received.acks.append(data)

        @sio.on("stream:end")
        async def _end(sid: str, data: Any = None) -> None:
            self.received.ends.append(data)
            if self.complete_on_end:
                n = len(self.received.fragments)
                await sio.emit(
                    "stream:complete",
                    {
                        "stream_id": (data or {}).get("stream_id", "x"),
                        "total_fragments": n,
                        "total_duration_ms": 0,
                        "statistics": {
                            "success_count": n,
                            "partial_count": 0,
                            "failed_count": 0,
                            "avg_processing_time_ms": 0.0,
                            "p95_processing_time_ms": 0.0,
                        },
                    },
                    to=sid,
                )

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in list(self.sio.eio.sockets.values()):
            try:
                await asyncio.wait_for(sock.close(wait=False), 2.0)
            except Exception:  # noqa: BLE001 - best effort on a test server
                pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def run_hostile(
    on_fragment: FragmentBehaviour | None = None, **kwargs: Any
) -> AsyncIterator[HostileSts]:
    """`async with run_hostile(behaviour) as sts: ... sts.url ...`; stopped even on failure."""
    server = HostileSts(on_fragment, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --- stream:init behaviours -------------------------------------------------------------------


async def ready(reply: Reply, init: dict[str, Any]) -> None:
    """Answer stream:init correctly."""
    await reply.ready(init)


async def never_ready(reply: Reply, init: dict[str, Any]) -> None:
    """Accept the connection, never answer stream:init."""


# --- fragment:data behaviours -----------------------------------------------------------------


def _pcm_of(frag: dict[str, Any]) -> tuple[Pcm, int, int]:
    return decode_audio(base64.b64decode(frag["audio"]["data_base64"]))


def _audio(pcm: Pcm | np.ndarray, rate: int, duration_ms: int, fmt: str = "wav") -> dict[str, Any]:
    data = encode_pcm(pcm, rate, fmt)  # type: ignore[arg-type]
    return {
        "format": fmt,
        "sample_rate_hz": rate,
        "channels": int(pcm.shape[1]),
        "duration_ms": duration_ms,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }


async def echo(reply: Reply, frag: dict[str, Any]) -> None:
    """The correct answer: ack, then the audio back unchanged."""
    await reply.ack(frag)
    await reply.echo(frag)


async def silent(reply: Reply, frag: dict[str, Any]) -> None:
    """Ack and never answer."""
    await reply.ack(frag)


def answer_every(n: int) -> FragmentBehaviour:
    """Answer only fragments whose sequence number is a multiple of `n`; never the others."""

    async def behaviour(reply: Reply, frag: dict[str, Any]) -> None:
        if frag["sequence_number"] % n == 0:
            await reply.echo(frag)

    return behaviour


async def reverse_pairs(reply: Reply, frag: dict[str, Any]) -> None:
    """Hold every even fragment back and answer it after the odd one that follows it (1, 0, 3,
    2, ...). A held fragment with no successor (the stream's last) is answered after 0.3 s."""
    held: dict[str, Any] | None = reply.state.get("held")
    if held is None:
        reply.state["held"] = frag

        async def flush_alone() -> None:
            await asyncio.sleep(0.3)
            if reply.state.get("held") is frag:
                reply.state["held"] = None
                await reply.echo(frag)

        reply.state["flush"] = asyncio.get_running_loop().create_task(flush_alone())
        return
    reply.state["held"] = None
    await reply.echo(frag)
    await reply.echo(held)


async def twice(reply: Reply, frag: dict[str, Any]) -> None:
    """Send every fragment:processed twice."""
    await reply.echo(frag)
    await reply.echo(frag)


async def unknown_ids_then_echo(reply: Reply, frag: dict[str, Any]) -> None:
    """First a result for a fragment id the worker never sent, then the correct answer."""
    await reply.echo(frag, fragment_id=str(uuid.uuid4()))
    await reply.echo(frag)


async def wrong_stream_then_echo(reply: Reply, frag: dict[str, Any]) -> None:
    """First the fragment's result labelled with another stream (silence as audio: it must not
    be used), then the correct answer."""
    pcm, rate, _ = _pcm_of(frag)
    other = _audio(np.zeros_like(pcm), rate, frag["audio"]["duration_ms"])
    await reply.echo(frag, stream_id="someone-else", dubbed_audio=other)
    await reply.echo(frag)


async def invalid_base64(reply: Reply, frag: dict[str, Any]) -> None:
    """`data_base64` that is not base64."""
    audio = dict(frag["audio"], data_base64="not base64 at all!*")
    await reply.echo(frag, dubbed_audio=audio)


async def undecodable_audio(reply: Reply, frag: dict[str, Any]) -> None:
    """Valid base64 of bytes that are no audio file."""
    junk = base64.b64encode(b"\x00garbage" * 512).decode("ascii")
    await reply.echo(frag, dubbed_audio=dict(frag["audio"], data_base64=junk))


def resampled(rate: int, channels: int, fmt: str = "wav") -> FragmentBehaviour:
    """The fragment's audio converted to another sample rate / channel count (declared truly)."""

    async def behaviour(reply: Reply, frag: dict[str, Any]) -> None:
        pcm, src_rate, _ = await asyncio.to_thread(_pcm_of, frag)
        n_src = round(frag["audio"]["duration_ms"] * src_rate / 1000)
        out = await asyncio.to_thread(resample_pcm, pcm[:n_src], src_rate, rate, channels)
        audio = await asyncio.to_thread(_audio, out, rate, frag["audio"]["duration_ms"], fmt)
        await reply.echo(frag, dubbed_audio=audio)

    return behaviour


def stretched(factor: float) -> FragmentBehaviour:
    """Audio `factor` times as long as the fragment (the original, looped or cut)."""

    async def behaviour(reply: Reply, frag: dict[str, Any]) -> None:
        pcm, rate, _ = await asyncio.to_thread(_pcm_of, frag)
        n = round(frag["audio"]["duration_ms"] * rate / 1000 * factor)
        out = np.resize(pcm, (n, pcm.shape[1])).astype(np.int16)
        audio = await asyncio.to_thread(_audio, out, rate, round(frag["audio"]["duration_ms"] * factor))
        await reply.echo(frag, dubbed_audio=audio)

    return behaviour


def huge(megabytes: float) -> FragmentBehaviour:
    """A `fragment:processed` whose base64 payload is `megabytes` MB (bigger than any sane
    message limit)."""
    size = int(megabytes * 1_000_000 * 3 / 4)

    async def behaviour(reply: Reply, frag: dict[str, Any]) -> None:
        blob = reply.state.get("blob")
        if blob is None:
            blob = base64.b64encode(b"\x00" * size).decode("ascii")
            reply.state["blob"] = blob
        await reply.echo(frag, dubbed_audio=dict(frag["audio"], data_base64=blob))

    return behaviour


NON_JSON_PACKETS = (
    '2["fragment:processed",{"fragment_id": ',  # truncated JSON
    "2[fragment:processed]",  # not JSON
    "2\x00\xff\xfe",  # control bytes
    "9garbage",  # unknown Socket.IO packet type
    "",  # empty packet
)


async def non_json(reply: Reply, frag: dict[str, Any]) -> None:
    """Raw Socket.IO packets that are not JSON, non-object payloads, then the correct answer."""
    for text in NON_JSON_PACKETS:
        await reply.raw(text)
    for payload in ("garbage", 42, None, [1, 2, 3], b"\x00\x01binary"):
        await reply.emit("fragment:processed", payload)
    await reply.echo(frag)


def schema_invalid_variants(frag: dict[str, Any]) -> list[Any]:
    """`fragment:processed` objects that fail validation in different ways (all for `frag`)."""
    good = Reply.processed(frag)
    no_audio = {k: v for k, v in good.items() if k != "dubbed_audio"}
    return [
        {"fragment_id": frag["fragment_id"]},
        dict(good, status="excellent"),
        dict(good, sequence_number="0"),
        dict(good, processing_time_ms=-1),
        dict(good, dubbed_audio={"format": "mp3", "data_base64": "AAAA"}),
        dict(good, dubbed_audio=dict(good["dubbed_audio"], sample_rate_hz=1)),
        dict(good, dubbed_audio=dict(good["dubbed_audio"], channels=6)),
        no_audio,  # success without audio
        dict(good, status="failed"),  # failed without an error object
        dict(good, fragment_id="not-a-uuid"),
        dict(good, stream_id="bad id with spaces"),
    ]


async def schema_invalid(reply: Reply, frag: dict[str, Any]) -> None:
    """Only schema-invalid answers (the first one names the fragment, so it resolves it)."""
    for doc in schema_invalid_variants(frag):
        await reply.emit("fragment:processed", doc)


def other_events_garbage() -> list[tuple[str, Any]]:
    """Server→worker events other than results, invalid: they must be ignored."""
    return [
        ("fragment:ack", {"fragment_id": "nope", "status": "queued"}),
        ("backpressure", {"action": "explode"}),
        ("backpressure", "pause"),
        ("error", {"code": "NOT_A_CODE", "message": 1}),
        ("stream:complete", {"total_fragments": -1}),
        ("stream:ready", {"stream_id": "x"}),
        ("no:such:event", {"x": 1}),
    ]


async def garbage_events_then_echo(reply: Reply, frag: dict[str, Any]) -> None:
    for event, payload in other_events_garbage():
        await reply.emit(event, payload)
    await reply.echo(frag)


def flac_silence(minutes: float, rate: int, channels: int) -> bytes:
    """`minutes` of digital silence as FLAC, encoded frame by frame (small memory): ~10 kB a
    minute, so a few hundred kB hold an hour."""
    import av

    from livedub.media.audio import layout_for

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream: Any = out.add_stream("flac", rate=rate, layout=layout_for(channels))
        stream.format = "s16"
        block = 4608
        zeros = np.zeros((1, block * channels), dtype=np.int16)
        for start in range(0, int(minutes * 60 * rate), block):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout=layout_for(channels))
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def flac_bomb(data: bytes, rate: int, channels: int) -> FragmentBehaviour:
    """Answer every fragment with `data` (e.g. `flac_silence(60, ...)`): decoding it whole would
    cost hundreds of MB of PCM for a few-second fragment."""
    audio = {
        "format": "flac",
        "sample_rate_hz": rate,
        "channels": channels,
        "duration_ms": 2000,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }

    async def behaviour(reply: Reply, frag: dict[str, Any]) -> None:
        await reply.echo(frag, dubbed_audio=dict(audio, duration_ms=frag["audio"]["duration_ms"]))

    return behaviour


# --- checks shared by the reliability tests ----------------------------------------------------


def metric(runner: WorkerRunner, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from the worker's registry."""
    total = 0.0
    for fam in text_string_to_metric_families(runner.metrics.render().decode()):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def check_accounting(runner: WorkerRunner, *, output_ran: bool = True) -> dict[str, float]:
    """Nothing lost in the books: every sent fragment ended processed or fallback, nothing is left
    in flight, every original segment (but a sub-second tail) has a counted reason, and — unless
    the output itself failed (`output_ran=False`) — every created segment was output dubbed or
    original. Returns the counters for further checks."""
    sent = metric(runner, "worker_audio_fragments_total", status="sent")
    processed = metric(runner, "worker_audio_fragments_total", status="processed")
    fallback = metric(runner, "worker_audio_fragments_total", status="fallback")
    assert sent == processed + fallback, (sent, processed, fallback)
    assert metric(runner, "worker_inflight_fragments") == 0
    assert runner.session.tracker.inflight == 0
    stats = runner.pipeline.stats
    dubbed = metric(runner, "worker_segments_total", source="dubbed")
    original = metric(runner, "worker_segments_total", source="original")
    if output_ran:
        assert dubbed + original == stats.segments_created, (dubbed, original, stats.segments_created)
        assert dubbed == processed, "a processed fragment is a dubbed segment"
    else:
        assert dubbed + original <= stats.segments_created and dubbed <= processed
    tails = stats.reasons.get("short_tail", 0)
    assert metric(runner, "worker_fallback_total") == original - tails, dict(stats.reasons)
    return {"sent": sent, "processed": processed, "fallback": fallback, "dubbed": dubbed, "original": original}


def check_complete(out: Path, ref: Analysis, *, frame_s: float = 1 / 30) -> Analysis:
    """The output has the input's duration (± one frame), both tracks without audio gaps, every
    segment's tone in order, and every sync marker of the input within 33 ms."""
    res = analyze(out)
    assert res.codecs == ("h264", "aac"), res.codecs
    assert abs(res.duration_s - ref.duration_s) <= frame_s + 0.001, (res.duration_s, ref.duration_s)
    assert res.audio is not None and res.audio.gaps == [], res.audio
    assert res.tone_order == ref.tone_order, (res.tone_order, ref.tone_order)
    assert len(res.markers) == len(ref.markers), (res.markers, ref.markers)
    assert res.max_abs_offset_ms <= 33.0, [m.offset_ms for m in res.markers]
    return res


class RssSampler:
    """Samples this process's RSS every 5 ms in a thread; `growth_mb` = peak − start."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 1e6
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 1e6)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


def record_segments(runner: WorkerRunner) -> list[tuple[int, str, str | None]]:
    """Record `(batch, source, reason)` of every segment the worker's output takes, in order."""
    seen: list[tuple[int, str, str | None]] = []
    inner = runner.recorder.on_segment_output

    def on_segment_output(segment: Any, source: str, reason: str | None) -> None:
        seen.append((segment.batch, source, reason))
        inner(segment, source, reason)

    runner.recorder.on_segment_output = on_segment_output  # type: ignore[method-assign]
    return seen
