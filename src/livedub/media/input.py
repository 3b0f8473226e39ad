"""Live input: open RTSP (TCP) / RTMP / SRT / a file by URL and deliver timestamped media.

SRT is read through `livedub.media.srt` (libsrt via ctypes; PyAV's libav has no srt protocol)
and demuxed as MPEG-TS; everything else is opened by libav itself.

A reader thread does the blocking libav work (demux; audio decode + conversion to int16 PCM, in
batches of `input_audio_batch_s`; video stays compressed). With a `media_sink` (the pipeline's)
the reader delivers each media item to it synchronously, in its own thread: no queue, no
event-loop wake-up per packet; only the connection's control items (`InputInfo`, its end) reach
asyncio. Without one, every item goes to asyncio through a bounded queue, so read-ahead is
bounded and a slow consumer back-pressures the reader. A watchdog ends a read that stalls longer
than `read_timeout_s` (libav's own timeouts do not bound every wait); the stalled thread is
abandoned and a new connection is made. Connections are retried at `reconnect_delays_s`
(1 s, 2 s, 4 s) before `InputUnavailable`; an input without audio raises `NoAudioTrack` at once.
Streams are picked by type, never by index. Files can be read as fast as possible or paced to
real time.

This module never repairs or rebases timestamps (see timeline.py) and never touches the output.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from livedub.clock import Clock, SystemClock
from livedub.log import bind, redact_url
from livedub.media.audio import AudioConverter, frame_to_pcm, layout_for
from livedub.media.errors import InputUnavailable, NoAudioTrack
from livedub.media.observer import InputState, MediaObserver, NullObserver
from livedub.media.pcm import Pcm
from livedub.media.settings import MediaSettings
from livedub.media.srt import SrtReader
from livedub.media.timeline import NS_PER_S
from livedub.media.urls import input_options_for, is_live, scheme_of, strip_file_scheme

_log = logging.getLogger(__name__)


PACE_TICK_S = 0.05  # real-time file reading releases packets in bursts of this length
# While items keep coming (a live input delivers ~80 a second) the loop collects them in ticks of
# HANDOFF_TICK_S instead of being woken by the reader thread for each one (a self-pipe write, a
# loop wake-up and a GIL hand-over per packet: ~3 ms of CPU per stream-second, docs/performance.md).
# After HANDOFF_IDLE_S without an item it waits to be woken again (no polling of a quiet input).
HANDOFF_TICK_S = 0.02
HANDOFF_IDLE_S = 0.5
# With a media sink the loop is not woken by media at all; the watchdog then checks the reader's
# last delivery this often (at most a quarter of the read timeout).
WATCHDOG_CHECK_S = 1.0


def to_ns(ts: int | None, time_base: Fraction | None) -> int | None:
    if ts is None or time_base is None:
        return None
    return (ts * time_base.numerator * NS_PER_S) // time_base.denominator


class VideoTemplate:
    """A private copy of a video stream's codec parameters (SPS/PPS etc.).

    Output streams are created from it with `add_stream_from_template`, which is safe after the
    input container that it was copied from has been closed (a reconnect closes it).
    """

    def __init__(self, stream: Any) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="matroska")
        self.stream = self._holder.add_stream_from_template(stream)
        self.codec_name: str = stream.codec_context.name
        self.width: int = stream.codec_context.width
        self.height: int = stream.codec_context.height
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
        self.frame_rate: Fraction | None = Fraction(rate) if rate else None


class AudioTemplate:
    """A private copy of an audio stream's codec parameters (for `remux_coded`): like
    `VideoTemplate`, safe to use after the input container is closed."""

    def __init__(self, stream: Any) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        self.stream = self._holder.add_stream_from_template(stream)


@dataclass(frozen=True)
class InputInfo:
    """Sent once per connection, before its media."""

    generation: int
    url: str
    has_video: bool
    video_codec: str | None
    video_template: VideoTemplate | None
    video_frame_ns: int
    audio_codec: str
    input_sample_rate: int
    input_channels: int
    sample_rate: int  # of the delivered PCM
    channels: int
    read_wall: float
    # Set when the input's audio packets can be remuxed as m4a fragments (AAC at the delivered
    # rate and channels, and the m4a transport): RawAudio then carries each packet (`coded`).
    audio_template: AudioTemplate | None = None


@dataclass(frozen=True, slots=True)
class RawVideo:
    generation: int
    data: bytes
    pts_ns: int | None
    dts_ns: int | None
    duration_ns: int | None
    keyframe: bool
    read_wall: float


@dataclass(frozen=True, slots=True)
class RawAudio:
    generation: int
    pcm: Pcm  # (n, channels) at InputInfo.sample_rate
    pts_ns: int | None
    read_wall: float
    # the packets this PCM was decoded from, each alone into an equal share (InputInfo.audio_template)
    coded: tuple[bytes, ...] | None = None
    frame_samples: int = 0  # samples of the decoder's frames in it (A/V sync observes each; 0: one)


@dataclass(frozen=True)
class ReaderEnd:
    generation: int
    kind: str  # "eof" | "error" | "open_failed" | "no_audio" | "stall"
    detail: str = ""


@dataclass(frozen=True)
class InputLost:
    """The current connection ended (stall, error, or EOF of a live input); a reconnect follows."""

    generation: int
    reason: str
    detail: str = ""


InputEvent = InputInfo | RawVideo | RawAudio | InputLost
MediaItem = RawVideo | RawAudio
MediaSink = Callable[[MediaItem], None]
"""Called in the reader thread for each media item, in order, under `MediaInput.lock`."""

_TIMEOUT = object()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Handoff:
    """Bounded thread → asyncio queue. `put` blocks the reader while full (read-ahead bound).

    The event loop is only woken when the consumer is actually waiting, and waiting costs one
    future and one timer (no task per item): the reader may deliver ~100 items a second. While
    items of a real-time input keep coming the consumer takes them in ticks of `tick_s` and is not
    woken at all.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        maxsize: int,
        tick_s: float = 0.0,
        *,
        sink: MediaSink | None = None,
        lock: threading.Lock | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize)
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._tick_s = tick_s  # 0: woken per item (inputs read as fast as possible)
        self._last_item_s = -float("inf")  # loop time of the last item taken
        self.stop = threading.Event()
        # Sink mode: media go to `sink` in the reader thread; the reader waits for `info_taken`
        # (set once the consumer has handled the connection's InputInfo) before the first one.
        self.sink = sink
        self.lock = lock or threading.Lock()
        self.clock = clock or SystemClock()
        self.info_taken = threading.Event()
        self.delivered_at = self.clock.monotonic()  # last media delivery (the watchdog's input)
        self.delivered = 0  # media items given to the sink
        self.sink_error: BaseException | None = None
        self.batcher: AudioBatcher | None = None  # the connection's audio batcher (set by the reader)

    def deliver(self, item: MediaItem) -> bool:
        """A media item: to the sink (sink mode) or the queue. False: stop reading."""
        if self.sink is None:
            return self.put(item)
        with self.lock:
            return self._to_sink((item,))

    def deliver_audio(self, packet: Any) -> bool:
        """An audio packet: into the connection's batcher; the batches it completes to the sink
        (under the lock, so that `flush_audio` from the consumer's side keeps their order) or
        the queue. False: stop reading."""
        assert self.batcher is not None
        return self._from_batcher(lambda b: b.add_packet(packet))

    def close_audio(self) -> None:
        """The reader's container closes: its batcher drops what it holds (under the lock, so
        that no `flush_audio` decodes with a closed decoder)."""
        with self.lock:
            if self.batcher is not None:
                self.batcher.close()

    def flush_audio(self, older_than_s: float = 0.0) -> bool:
        """Deliver what the batcher holds if its first packet came `older_than_s` ago or more (the
        input went quiet: no packet will complete the batch). False: stop reading."""
        return self._from_batcher(lambda b: b.flush() if b.age_s() >= older_than_s else [])

    def end_audio(self) -> bool:
        """EOF: deliver everything the batcher holds, the resampler's tail included. False: stop
        reading."""
        return self._from_batcher(AudioBatcher.end)

    def _from_batcher(self, take: Callable[[AudioBatcher], list[RawAudio]]) -> bool:
        """Deliver what `take` gets from the batcher, under the lock in sink mode (so that the
        reader's and the consumer's deliveries keep their order)."""
        batcher = self.batcher
        if batcher is None:
            return True
        if self.sink is None:
            return all(self.put(item) for item in take(batcher))
        with self.lock:
            return self._to_sink(take(batcher))

    def _to_sink(self, items: Iterable[MediaItem]) -> bool:
        """Give items to the sink (the lock held)."""
        assert self.sink is not None
        for item in items:
            if self.stop.is_set():  # an abandoned (stalled) reader must not deliver late media
                return False
            self.delivered_at = self.clock.monotonic()
            self.delivered += 1
            try:
                self.sink(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                self.sink_error = exc
                self.stop.set()
                self._notify()
                return False
        return True

    def wait_info_taken(self) -> bool:
        """Sink mode: block until the consumer has handled the InputInfo (False: stopped)."""
        if self.sink is None:
            return True
        while not self.info_taken.wait(0.2):
            if self.stop.is_set():
                return False
        return not self.stop.is_set()

    def _notify(self) -> bool:
        waiter = self._waiter
        if waiter is None:
            return True
        try:
            self._loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # loop closed
            return False
        return True

    def put(self, item: object) -> bool:
        while True:
            if self.stop.is_set():
                return False
            try:
                self._q.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        return self._notify()  # no waiter: the consumer finds the item on its own

    def wake(self) -> None:
        """Make a pending `get` return now (used by close)."""
        self._notify()

    async def get(self, timeout_s: float) -> object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                pass
            else:
                self._last_item_s = loop.time()
                return item
            now = loop.time()
            if self._tick_s > 0 and now - self._last_item_s < HANDOFF_IDLE_S and now < deadline and not self.stop.is_set():
                await asyncio.sleep(min(self._tick_s, deadline - now))  # flowing: take them in ticks
                continue
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = fut
            try:
                # Re-check after publishing the waiter: a put in between is not missed.
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    pass
                else:
                    self._last_item_s = loop.time()
                    return item
                remaining = deadline - loop.time()
                if remaining <= 0 or self.stop.is_set():
                    return _TIMEOUT
                timer = loop.call_later(remaining, _wake, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
            finally:
                self._waiter = None
            if self.stop.is_set() or (self._q.empty() and loop.time() >= deadline):
                return _TIMEOUT


class AudioBatcher:
    """Audio packets → `RawAudio` items of about `batch_s` each: the packets are held until they
    span `batch_s` (that alone decides a batch's size), then decoded together, and their frames
    converted to int16 PCM once and delivered once per batch (a live input's packets arrive one
    by one, and per-packet work on cold caches costs several times what the same work costs in a
    batch: docs/performance.md). Every call that decodes hands out all it decoded: between calls
    only undecoded packets are held.

    A batch is contiguous: a frame whose timestamp is not where the batch's samples end (by more
    than `JITTER_NS`) or that has none ends the batch before it, so A/V sync sees every jump.
    Frames already in the target format (float planar, the rate and channels of `InputInfo`:
    what AAC, Opus and MP3 decoders give) are read out of a fifo as one frame per batch and
    converted to s16 in one libswresample call (round half to even, saturate); others go through
    the resampler frame by frame.
    A batch carries its packets (`RawAudio.coded`) only if every frame in it came alone from
    one packet, unchanged in length. The reader hands packets over with `_Handoff.deliver_audio`;
    what no packet completes (the input went quiet, or stalled) is decoded and delivered by
    `flush_audio` from the consumer's side (the pipeline's idle check: libav's decoder and demuxer
    are separate contexts), or by `end` at EOF with the resampler's tail; `close` drops it when
    the connection's container closes."""

    #: a frame this far from where the batch ends starts a new batch (FLV's 1 ms timestamps
    #: round a 1024-sample frame at 48 kHz by up to 0.5 ms)
    JITTER_NS = 2_000_000

    #: packets held at most before they are decoded, whatever their timestamps say
    MAX_HELD_PACKETS = 64

    def __init__(
        self, generation: int, rate: int, channels: int, batch_s: float, clock: Clock, *, remux: bool = False
    ) -> None:
        self.generation = generation
        self.rate = rate
        self.channels = channels
        self.batch_ns = round(batch_s * NS_PER_S)
        self.clock = clock
        self.remux = remux  # keep each packet's bytes with its frame (InputInfo.audio_template)
        self._held: list[tuple[Any, float]] = []  # (packet, read wall) not decoded yet (decoded together)
        self._held_first_ns: int | None = None
        self._held_started = 0.0
        self._closed = False
        self._resampler = AudioConverter(format="s16", layout=layout_for(channels), rate=rate)
        self._fifo = av.AudioFifo()  # the float frames of the batch (one copy out per batch)
        self._to_s16 = AudioConverter(format="s16", layout=layout_for(channels), rate=rate)  # the fifo's batches
        self._parts: list[Pcm] = []  # the s16 PCM of resampled frames
        self._frames = 0  # frames in the batch
        self._frame_samples = 0  # samples of its first frame
        self._planar = False  # the batch is float frames in the fifo, not int16 parts
        self._packets: list[bytes] | None = []
        self._pts_ns: int | None = None
        self._samples = 0
        self._wall = 0.0

    def add_packet(self, packet: Any) -> list[RawAudio]:
        """Take one audio packet; once the held ones span `batch_s` (or one has no timestamp),
        decode them and return their batches (flushed: nothing decoded stays held)."""
        if self._closed:
            return []
        tb = packet.time_base
        pts_ns = to_ns(packet.pts, tb)
        if not self._held:
            self._held_first_ns = pts_ns
            self._held_started = self.clock.monotonic()
        self._held.append((packet, self.clock.wall()))
        end_ns = None if pts_ns is None else pts_ns + (to_ns(packet.duration, tb) or 0)
        if (
            end_ns is None
            or self._held_first_ns is None
            or abs(end_ns - self._held_first_ns) >= self.batch_ns
            or len(self._held) >= self.MAX_HELD_PACKETS
        ):
            return self.flush()
        return []

    def _decode_held(self) -> list[RawAudio]:
        held, self._held = self._held, []
        out: list[RawAudio] = []
        for packet, wall in held:
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                _log.warning("audio packet undecodable: %s", exc)
                continue
            # A packet decoded alone into one frame of the same length can stand for that frame.
            coded = bytes(packet) if self.remux and len(frames) == 1 else None
            for frame in frames:
                out.extend(self._add_frame(frame, coded, wall))
        return out

    def close(self) -> None:
        """The connection's container is closing: drop what is held (nothing decodes after)."""
        self._closed = True
        self._held.clear()

    def _add_frame(self, frame: av.AudioFrame, coded: bytes | None, wall: float) -> list[RawAudio]:
        """Take one decoded frame (its packet read at `wall`) into the batch; returns the batches
        it ends (zero, one or two): a frame that does not continue the batch (a timestamp jump,
        another format) ends the batch before it, one without a timestamp also itself."""
        out: list[RawAudio] = []
        pts_ns = to_ns(frame.pts, frame.time_base)
        planar = (
            frame.format.name == "fltp" and frame.sample_rate == self.rate and frame.layout.nb_channels == self.channels
        )
        if self._frames and (planar != self._planar or not self._continues(pts_ns)):
            out.extend(self._flush_frames())
        samples = frame.samples
        if planar:
            frame.pts = None  # the batch keeps its own timing (the fifo would check continuity)
            try:
                self._fifo.write(frame)
            except ValueError:  # another layout than the fifo's first frame (a new decoder setup)
                out.extend(self._flush_frames())
                self._fifo = av.AudioFifo()
                self._fifo.write(frame)
        else:
            pieces = [frame_to_pcm(f) for f in self._resampler.resample(frame)]
            if not pieces:
                return out
            part = Pcm.concat(pieces, self.channels)
            self._parts.append(part)
            samples = part.n
        if not self._frames:
            self._pts_ns, self._planar, self._frame_samples = pts_ns, planar, samples
            self._wall = wall
            self._packets = []
        self._frames += 1
        self._samples += samples
        if self._packets is not None:
            if coded is not None and samples == frame.samples:
                self._packets.append(coded)
            else:
                self._packets = None
        if pts_ns is None:
            out.extend(self._flush_frames())
        return out

    def age_s(self) -> float:
        """How long ago the first held packet came (0 if nothing is held)."""
        return self.clock.monotonic() - self._held_started if self._held else 0.0

    def _continues(self, pts_ns: int | None) -> bool:
        if pts_ns is None or self._pts_ns is None:
            return False
        expected = self._pts_ns + self._samples * NS_PER_S // self.rate
        return abs(pts_ns - expected) <= self.JITTER_NS

    def flush(self) -> list[RawAudio]:
        """Everything held, decoded, as `RawAudio` batches (none if nothing is held)."""
        out = self._decode_held() if self._held else []
        return out + self._flush_frames()

    def end(self) -> list[RawAudio]:
        """At EOF: everything held, then what the resampler still holds (its delay line)."""
        out = self.flush()
        tail = [frame_to_pcm(f) for f in self._resampler.resample(None)]
        if tail:
            out.append(RawAudio(self.generation, Pcm.concat(tail, self.channels), None, self.clock.wall()))
        return out

    def _fifo_to_s16(self, got: av.AudioFrame) -> Pcm:
        """A batch read from the fifo (float planar) as s16, in one libswresample call."""
        got.sample_rate = self.rate
        try:
            frames = self._to_s16.resample(got)
        except ValueError:  # not the layout of the fifo's earlier batches (a new decoder setup)
            self._to_s16 = AudioConverter(format="s16", layout=layout_for(self.channels), rate=self.rate)
            frames = self._to_s16.resample(got)
        return Pcm.concat([frame_to_pcm(f) for f in frames], self.channels)

    def _flush_frames(self) -> list[RawAudio]:
        """The frames of the batch so far as one `RawAudio` (none if empty)."""
        if not self._frames:
            return []
        if self._planar:
            got = self._fifo.read()  # None: only empty frames
            if got is None:
                pcm = Pcm.zeros(0, self.channels)
            else:
                pcm = self._fifo_to_s16(got)
        else:
            parts, self._parts = self._parts, []
            pcm = Pcm.concat(parts, self.channels)
        packets = tuple(self._packets) if self._packets else None
        item = RawAudio(self.generation, pcm, self._pts_ns, self._wall, packets, self._frame_samples)
        self._frames = self._samples = 0
        return [item]


class _Reader(threading.Thread):
    """One connection: open, announce `InputInfo`, then demux/decode until EOF, error or stop."""

    def __init__(
        self,
        *,
        generation: int,
        url: str,
        options: dict[str, str],
        settings: MediaSettings,
        handoff: _Handoff,
        pcm_format: tuple[int, int] | None,
        realtime: bool,
        clock: Clock,
    ) -> None:
        super().__init__(name=f"media-input-{generation}", daemon=True)
        self.generation = generation
        self.url = url
        self.options = options
        self.settings = settings
        self.handoff = handoff
        self.pcm_format = pcm_format
        self.realtime = realtime
        self.clock = clock

    def run(self) -> None:
        put = self.handoff.put
        gen = self.generation
        s = self.settings
        srt: SrtReader | None = None
        try:
            if scheme_of(self.url) == "srt":
                # libsrt via ctypes (PyAV's libav has no srt protocol); MPEG-TS over it. A silent
                # peer ends a read after read_timeout_s (SRTO_RCVTIMEO), like the watchdog.
                srt = SrtReader(self.url, timeout_s=s.open_timeout_s, read_timeout_s=s.read_timeout_s)
                srt.connect()
                container = av.open(srt, "r", format="mpegts", options=self.options)
            else:
                container = av.open(
                    strip_file_scheme(self.url),
                    "r",
                    options=self.options,
                    timeout=(s.open_timeout_s, s.read_timeout_s),
                )
        except Exception as exc:  # noqa: BLE001 - every open failure is retried the same way
            if srt is not None:
                srt.close()
            put(ReaderEnd(gen, "open_failed", f"{type(exc).__name__}: {redact_url(exc)}"))
            return
        try:
            self._read(container)
        except Exception as exc:  # noqa: BLE001 - libav raises many types; all end the connection
            put(ReaderEnd(gen, "error", f"{type(exc).__name__}: {redact_url(exc)}"))
        finally:
            self.handoff.close_audio()
            try:
                container.close()
            except Exception:  # noqa: BLE001
                _log.debug("input close failed", exc_info=True)
            if srt is not None:
                srt.close()

    def _describe(self, astream: Any, vstream: Any | None) -> InputInfo:
        """This connection's `InputInfo`: its streams and the PCM format that will be delivered."""
        in_rate = astream.codec_context.sample_rate
        in_channels = astream.codec_context.channels or 2
        if self.pcm_format is not None:
            rate, channels = self.pcm_format
        else:
            rate = self.settings.sample_rate_hz or in_rate
            channels = self.settings.channels or min(2, in_channels)
        template = VideoTemplate(vstream) if vstream is not None else None
        remux = (
            self.settings.transport_format == "m4a"
            and astream.codec_context.name == "aac"
            and (in_rate, in_channels) == (rate, channels)
        )
        frame_ns = NS_PER_S // 30
        if template is not None and template.frame_rate:
            frame_ns = int(NS_PER_S / template.frame_rate)
        return InputInfo(
            generation=self.generation,
            url=self.url,
            has_video=vstream is not None,
            video_codec=template.codec_name if template else None,
            video_template=template,
            video_frame_ns=frame_ns,
            audio_codec=astream.codec_context.name,
            input_sample_rate=in_rate,
            input_channels=in_channels,
            sample_rate=rate,
            channels=channels,
            read_wall=self.clock.wall(),
            audio_template=AudioTemplate(astream) if remux else None,
        )

    def _announce(self, container: Any) -> list[Any] | None:
        """Pick the streams by type, hand over the `InputInfo` and set up the audio batcher: the
        streams to read, or None when the reader ends here (no audio, or stopped)."""
        put = self.handoff.put
        if not container.streams.audio:
            put(ReaderEnd(self.generation, "no_audio", "no audio stream"))
            return None
        astream = container.streams.audio[0]
        vstream = container.streams.video[0] if container.streams.video else None
        info = self._describe(astream, vstream)
        if not put(info) or not self.handoff.wait_info_taken():
            return None
        # Batches need a consumer that flushes them when the input goes quiet (the pipeline does).
        batch_s = self.settings.input_audio_batch_s if self.handoff.sink is not None else 0.0
        batcher = AudioBatcher(
            self.generation, info.sample_rate, info.channels, batch_s, self.clock, remux=info.audio_template is not None
        )
        self.handoff.batcher = batcher
        return [s for s in (vstream, astream) if s is not None]

    def _read(self, container: Any) -> None:
        """Hand over this connection's media until EOF, an error or stop (the per-packet loop)."""
        streams = self._announce(container)
        if streams is None:
            return
        deliver = self.handoff.deliver
        deliver_audio = self.handoff.deliver_audio
        gen = self.generation
        stop = self.handoff.stop
        pace_base: tuple[float, float] | None = None  # (media seconds, monotonic)
        for packet in container.demux(*streams):
            if stop.is_set():
                return
            tb = packet.time_base
            if self.realtime:
                key = packet.dts if packet.dts is not None else packet.pts
                if key is not None and tb is not None:
                    media_s = float(key * tb)
                    now = self.clock.monotonic()
                    if pace_base is None or abs(media_s - pace_base[0] - (now - pace_base[1])) > 2.0:
                        pace_base = (media_s, now)
                    wait = pace_base[1] + (media_s - pace_base[0]) - now
                    # Read in small bursts (up to PACE_TICK_S early): far fewer wake-ups.
                    if wait > PACE_TICK_S and stop.wait(wait):
                        return
            if packet.stream.type == "video":
                if packet.size == 0:
                    continue
                item: MediaItem = RawVideo(
                    generation=gen,
                    data=bytes(packet),
                    pts_ns=to_ns(packet.pts, tb),
                    dts_ns=to_ns(packet.dts, tb),
                    duration_ns=to_ns(packet.duration, tb) if packet.duration else None,
                    keyframe=packet.is_keyframe,
                    read_wall=self.clock.wall(),
                )
                if not deliver(item):
                    return
                continue
            if not deliver_audio(packet):  # decoded in batches (AudioBatcher)
                return
        if self.handoff.end_audio():
            self.handoff.put(ReaderEnd(gen, "eof"))


class MediaInput:
    """Connect (and re-connect) to an input URL and yield its media as `InputEvent`s.

    `events()` yields an `InputInfo` at the start of every connection, then `RawVideo` /
    `RawAudio` items (with a `media_sink`: given to it in the reader thread instead), and
    `InputLost` when a connection that delivered media ends and a reconnect follows. It returns
    at EOF when `end_on_eof`, raises `NoAudioTrack` at once for an input without audio, and
    raises `InputUnavailable` when the retry budget is spent.
    """

    def __init__(
        self,
        settings: MediaSettings,
        *,
        clock: Clock | None = None,
        observer: MediaObserver | None = None,
        realtime: bool | None = None,
        media_sink: MediaSink | None = None,
    ) -> None:
        self.settings = settings
        self.media_sink = media_sink
        # Held while the sink handles an item; the consumer takes it to touch what the sink does.
        self.lock = threading.Lock()
        self.url = settings.input_url
        self.clock = clock or SystemClock()
        self.observer = observer or NullObserver()
        live = is_live(self.url)
        self.realtime = (not live and settings.paced) if realtime is None else realtime
        if settings.input_realtime is not None and realtime is None:
            self.realtime = settings.input_realtime and not live
        self.end_on_eof = (not live) if settings.end_on_eof is None else settings.end_on_eof
        self.retry_delays_s: tuple[float, ...] = settings.reconnect_delays_s if live else ()
        self.options = {**input_options_for(self.url), **settings.input_options}
        self.generation = 0
        self.pcm_format: tuple[int, int] | None = None
        self.log = bind(_log, stream_id=settings.stream_id)
        self._handoff: _Handoff | None = None
        self.stalls = 0
        self.reconnects = 0
        self._closed = False

    def _state(self, state: InputState, detail: str | None = None) -> None:
        try:
            self.observer.on_input_state(state, detail)
        except Exception:  # noqa: BLE001 - observers must not break the input
            self.log.exception("observer failed")

    def flush_audio(self, older_than_s: float) -> None:
        """Deliver the reader's held audio batch if it began `older_than_s` ago or more (call it
        periodically: a live input that goes quiet leaves its last batch incomplete)."""
        if self._handoff is not None:
            self._handoff.flush_audio(older_than_s)

    def close(self) -> None:
        """Stop reading: `events()` returns promptly (no reconnect, no InputLost). Thread-safe."""
        self._closed = True
        if self._handoff is not None:
            self._handoff.stop.set()
            self._handoff.wake()

    async def events(self) -> AsyncIterator[InputEvent]:
        failures = 0
        first = True
        # A live input that ended cleanly (EOF after media: the publisher stopped) and does not
        # come back within the retry budget is the end of the programme, not a failure.
        ended_cleanly = False
        while True:
            self.generation += 1
            gen = self.generation
            self._state(InputState.CONNECTING if first else InputState.RECONNECTING, self.url)
            first = False
            end: ReaderEnd | None = None
            got_media = False
            async for item in self._run_reader(gen):
                if self._closed:
                    return
                if isinstance(item, ReaderEnd):
                    end = item
                    break
                if isinstance(item, InputInfo):
                    self._connected(item, gen)
                else:
                    got_media = True
                yield item  # type: ignore[misc]
            if self._closed:
                self._state(InputState.ENDED, "closed")
                return
            if self._handoff is not None and self._handoff.delivered:
                got_media = True  # given to the media sink
            assert end is not None
            if self._ended(end):
                return
            if got_media:
                failures = 0
                ended_cleanly = end.kind == "eof"
            if failures >= len(self.retry_delays_s):
                self._give_up(end, failures, ended_cleanly)
                return
            delay = self.retry_delays_s[failures]
            failures += 1
            if got_media:
                yield InputLost(gen, end.kind, end.detail)
            self.reconnects += 1
            self._reconnecting(end, delay, failures)
            await self._sleep_unless_closed(delay)
            if self._closed:
                self._state(InputState.ENDED, "closed")
                return

    def _connected(self, info: InputInfo, gen: int) -> None:
        if self.pcm_format is None:
            self.pcm_format = (info.sample_rate, info.channels)
        self.log.info(
            "input connected",
            ctx={
                "url": redact_url(self.url),
                "generation": gen,
                "video": info.video_codec,
                "audio": info.audio_codec,
                "rate": info.input_sample_rate,
                "channels": info.input_channels,
            },
        )
        self._state(InputState.READING, self.url)

    def _ended(self, end: ReaderEnd) -> bool:
        """True when this connection's end is the input's end (EOF with `end_on_eof`); raises
        `NoAudioTrack` for an input without audio; False when a reconnect may follow."""
        if end.kind == "no_audio":
            self.log.error("audio track required for dubbing", ctx={"url": redact_url(self.url)})
            self._state(InputState.FAILED, "no audio track")
            raise NoAudioTrack(redact_url(self.url))
        if end.kind == "eof" and self.end_on_eof:
            self.log.info("input ended", ctx={"url": redact_url(self.url)})
            self._state(InputState.ENDED, "eof")
            return True
        return False

    def _give_up(self, end: ReaderEnd, failures: int, ended_cleanly: bool) -> None:
        """The retry budget is spent: the programme's end when the publisher stopped cleanly,
        else `InputUnavailable`."""
        if ended_cleanly:
            self.log.info(
                "input ended: the publisher stopped and did not come back",
                ctx={"url": redact_url(self.url), "retries": failures},
            )
            self._state(InputState.ENDED, "eof")
            return
        self.log.error(
            "input unavailable: retries exhausted",
            ctx={"url": redact_url(self.url), "last_error": end.kind, "detail": redact_url(end.detail)},
        )
        self._state(InputState.FAILED, end.detail or end.kind)
        raise InputUnavailable(f"input {redact_url(self.url)} unavailable: {end.kind} {redact_url(end.detail)}".strip())

    def _reconnecting(self, end: ReaderEnd, delay: float, attempt: int) -> None:
        self.log.warning(
            "input lost, reconnecting",
            ctx={"url": redact_url(self.url), "reason": end.kind, "detail": redact_url(end.detail), "retry_in_s": delay, "attempt": attempt},
        )
        self._state(InputState.RECONNECTING, f"{end.kind}: retry {attempt} in {delay:g}s")

    async def _sleep_unless_closed(self, delay_s: float) -> None:
        until = self.clock.monotonic() + delay_s
        while not self._closed:
            remaining = until - self.clock.monotonic()
            if remaining <= 0:
                return
            await self.clock.sleep(min(0.1, remaining))

    async def _run_reader(self, gen: int) -> AsyncIterator[object]:
        loop = asyncio.get_running_loop()
        # Real-time inputs (live, or paced files) deliver items spread out in time: take them in
        # ticks. A sink takes the media in the reader thread: the queue holds control items only.
        sink = self.media_sink
        tick_s = HANDOFF_TICK_S if (sink is None and (self.realtime or is_live(self.url))) else 0.0
        handoff = _Handoff(loop, self.settings.read_ahead_items, tick_s, sink=sink, lock=self.lock, clock=self.clock)
        self._handoff = handoff
        reader = _Reader(
            generation=gen,
            url=self.url,
            options=self.options,
            settings=self.settings,
            handoff=handoff,
            pcm_format=self.pcm_format,
            realtime=self.realtime,
            clock=self.clock,
        )
        reader.start()
        opened = False
        try:
            while not self._closed:
                timeout = self.settings.read_timeout_s if opened else self.settings.open_timeout_s + 2.0
                if sink is not None and opened:
                    item = await self._sink_wait(handoff, timeout)
                else:
                    item = await handoff.get(timeout)
                if handoff.sink_error is not None:
                    raise handoff.sink_error
                if item is _TIMEOUT and self._closed:
                    return
                if item is _TIMEOUT:
                    handoff.flush_audio()  # what the stalled reader holds is not lost
                    self.stalls += 1
                    phase = "read" if opened else "open"
                    self.log.warning(
                        "input stalled: watchdog fired",
                        ctx={"url": redact_url(self.url), "phase": phase, "timeout_s": timeout},
                    )
                    yield ReaderEnd(gen, "stall", f"no data for {timeout:g}s ({phase})")
                    return
                if isinstance(item, InputInfo):
                    opened = True
                    handoff.delivered_at = self.clock.monotonic()
                yield item
                if isinstance(item, InputInfo):
                    handoff.info_taken.set()  # handled: the reader may deliver its media now
                if isinstance(item, ReaderEnd):
                    return
        finally:
            handoff.stop.set()

    async def _sink_wait(self, handoff: _Handoff, timeout_s: float) -> object:
        """Sink mode: the next control item, or `_TIMEOUT` once the reader has delivered nothing
        for `timeout_s` (or on close / a sink error). Wakes at most every WATCHDOG_CHECK_S."""
        check_s = min(WATCHDOG_CHECK_S, timeout_s / 4)
        while True:
            item = await handoff.get(check_s)
            if item is not _TIMEOUT or self._closed or handoff.sink_error is not None:
                return item
            if self.clock.monotonic() - handoff.delivered_at >= timeout_s:
                return _TIMEOUT
