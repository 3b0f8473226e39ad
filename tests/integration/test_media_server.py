"""Integration tests of the embedded media server (`livedub media-server`) on 127.0.0.1.

Real nginx-rtmp and GStreamer RTSP relay processes on free ports; media made with PyAV,
published and read with PyAV (and the ffmpeg CLI where PyAV cannot set an option).

`test_measure_latency_and_time_to_readable` also prints the numbers written in
docs/media-server.md; run it alone with `-s` (and `MEDIA_MEASURE_S=20` for longer runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
from aiohttp import web

from livedub.orchestrator.media_server import (
    HookEvent,
    MediaServer,
    MediaServerSettings,
    PortInUseError,
    Role,
    check_port_free,
)
from livedub.sts.testing import free_port
from tests.integration.marks import needs_media_server

_defaults = MediaServerSettings.load()
pytestmark = [pytest.mark.timeout(180), needs_media_server]

FPS = 30
SAMPLE_RATE = 48000


# -- helpers -----------------------------------------------------------------------------------
def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


async def await_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def make_clip(
    path: Path, seconds: float, gop_s: float, width: int = 320, height: int = 180
) -> Path:
    """H.264 (with B-frames) + AAC stereo; seeded noise makes every AAC packet unique, so a
    packet read back can be matched to the one published (latency per packet)."""
    rng = np.random.default_rng(1234)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        g = str(int(gop_s * FPS))
        v.options = {"g": g, "keyint_min": g, "sc_threshold": "0", "preset": "veryfast"}
        a = out.add_stream("aac", rate=SAMPLE_RATE)
        a.layout = "stereo"
        n_frames = int(seconds * FPS)
        n_samples = int(seconds * SAMPLE_RATE)
        t = 0  # audio samples encoded so far; audio is encoded in step with video so that the
        # file is interleaved (else a publisher reading it sends the first audio ~1 s late)
        for i in range(n_frames):
            img = np.full((height, width, 3), 32, np.uint8)
            x = (i * 5) % (width - 16)
            img[:, x : x + 16] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
            until = n_samples if i == n_frames - 1 else (i + 1) * SAMPLE_RATE // FPS
            while t < until:
                k = min(1024, n_samples - t)
                tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(t, t + k) / SAMPLE_RATE)
                pcm = (tone + 0.05 * rng.standard_normal(k)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(
                    np.stack([pcm, pcm]), format="fltp", layout="stereo"
                )
                af.sample_rate = SAMPLE_RATE
                af.pts = t
                for p in a.encode(af):
                    out.mux(p)
                t += k
        for p in v.encode():
            out.mux(p)
        for p in a.encode():
            out.mux(p)
    return path


def output_args(url: str) -> tuple[str, dict[str, str]]:
    if url.startswith("rtsp://"):
        return "rtsp", {"rtsp_transport": "tcp"}
    return "flv", {}


def input_options(url: str) -> dict[str, str]:
    return {"rtsp_transport": "tcp"} if url.startswith("rtsp://") else {}


class Publisher(threading.Thread):
    """Publishes a clip in real time with PyAV; remembers when each audio packet was sent."""

    def __init__(
        self, clip: Path, url: str, max_s: float | None = None, connect_retry_s: float = 0.0
    ) -> None:
        super().__init__(daemon=True, name=f"pub {url}")
        self.clip, self.url, self.max_s = clip, url, max_s
        self.connect_retry_s = connect_retry_s
        self.sent: dict[bytes, float] = {}
        self.sent_counts = {"video": 0, "audio": 0}
        self.started_at: float | None = None
        self.first_sent_at: float | None = None
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            fmt, opts = output_args(self.url)
            deadline = time.monotonic() + self.connect_retry_s
            src = av.open(str(self.clip))
            while True:
                dst = av.open(self.url, "w", format=fmt, options=opts, timeout=(5, 5))
                smap = {s.index: dst.add_stream_from_template(s) for s in src.streams}
                try:
                    dst.start_encoding()  # connects and writes the header
                    break
                except (av.error.FFmpegError, OSError):
                    dst.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)  # retry interval while the listener comes up
            with src, dst:
                t0: float | None = None
                first: float | None = None
                for pkt in src.demux():
                    if pkt.dts is None or self.stop_event.is_set():
                        continue
                    assert pkt.time_base is not None
                    ts = float(pkt.dts * pkt.time_base)
                    if t0 is None or first is None:
                        t0, first = time.monotonic(), ts
                    if self.max_s is not None and ts - first > self.max_s:
                        break
                    delay = t0 + (ts - first) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # pacing the publisher, not waiting for a condition
                    kind = pkt.stream.type
                    is_audio = kind == "audio"
                    payload = bytes(pkt) if is_audio else b""
                    pkt.stream = smap[pkt.stream.index]
                    dst.mux(pkt)
                    if self.first_sent_at is None:
                        self.first_sent_at = time.monotonic()
                    if kind in self.sent_counts:
                        self.sent_counts[kind] += 1
                    if is_audio:
                        self.sent[payload] = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.error = exc


@dataclass
class ReadResult:
    opened_at: float | None = None
    first_packet_at: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})
    latencies_s: list[float] = field(default_factory=list)
    open_attempts: int = 0
    error: BaseException | None = None


class Reader(threading.Thread):
    """Reads a URL with PyAV (retrying the open until `deadline_s`) until it has `want` packets
    of each type; matches audio packets against `publisher.sent` for latency."""

    def __init__(
        self,
        url: str,
        want: int = 20,
        deadline_s: float = 20.0,
        publisher: Publisher | None = None,
        options: dict[str, str] | None = None,
        want_latency_samples: int = 0,
    ) -> None:
        super().__init__(daemon=True, name=f"read {url}")
        self.url, self.want, self.deadline_s, self.publisher = url, want, deadline_s, publisher
        self.options = options if options is not None else input_options(url)
        self.want_latency_samples = want_latency_samples
        self.result = ReadResult()

    def done(self) -> bool:
        c = self.result.counts
        return (
            c["video"] >= self.want
            and c["audio"] >= self.want
            and len(self.result.latencies_s) >= self.want_latency_samples
        )

    def run(self) -> None:
        deadline = time.monotonic() + self.deadline_s
        r = self.result
        while time.monotonic() < deadline:
            r.open_attempts += 1
            try:
                container = av.open(self.url, options=self.options, timeout=(5, 5))
            except (av.error.FFmpegError, OSError) as exc:
                r.error = exc
                time.sleep(0.05)  # retry interval of a polling reader
                continue
            r.error = None
            r.opened_at = time.monotonic()
            try:
                with container:
                    for pkt in container.demux():
                        if pkt.size == 0:
                            continue
                        now = time.monotonic()
                        if r.first_packet_at is None:
                            r.first_packet_at = now
                        kind = pkt.stream.type
                        if kind in r.counts:
                            r.counts[kind] += 1
                        if kind == "audio" and self.publisher is not None:
                            sent = self.publisher.sent.get(bytes(pkt))
                            if sent is not None:
                                r.latencies_s.append(now - sent)
                        if self.done() or now > deadline:
                            return
            except (av.error.FFmpegError, OSError) as exc:
                r.error = exc
            if r.first_packet_at is not None:
                return


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=8.0, gop_s=1.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MediaServer]:
    ms = MediaServer(
        rtsp_port=free_port(),
        rtmp_port=free_port(),
        streams=["s1", "s2", "h2"],
        workdir=tmp_path / "ms",
    )
    with ms:
        yield ms


def ports_free(*ports: int) -> bool:
    """Every port can be bound on 127.0.0.1 the way the servers bind it."""
    for port in ports:
        try:
            check_port_free("TCP", "127.0.0.1", port)
        except PortInUseError:
            return False
    return True


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def join_all(threads: list[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running: {stuck}"


# -- lifecycle ---------------------------------------------------------------------------------
def test_api_starts_fast_and_stops_without_leftovers(tmp_path: Path) -> None:
    ms = MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), streams=["a"])
    t0 = time.monotonic()
    try:
        ms.start()
        ms.wait_ready(timeout_s=5)
        took = time.monotonic() - t0
        pids = ms.pids()
        assert len(pids) >= 3, pids  # nginx master + worker, relay
        assert took < 2.0, f"ready after {took:.2f} s"
        assert ms.ready and ms.failure() is None
        with socket.create_connection(("127.0.0.1", ms.rtsp_port), timeout=1):
            pass
    finally:
        ms.stop()
    assert alive(pids) == []
    assert ms.workdir is not None and not ms.workdir.exists()  # temporary workdir removed


def test_ready_log_line_holds_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    """The "media server ready" line shows where the server listens, never an account's password
    (it used to log the worker account's URL: `rtsp://worker:<password>@…`)."""
    caplog.set_level(logging.DEBUG)
    secrets_ = {"publish_pass": "pub-Secret-0123456789", "worker_pass": "wrk-Secret-0123456789"}
    settings = MediaServerSettings.parse(secrets_)
    with MediaServer(settings, rtsp_port=free_port(), rtmp_port=free_port(), streams=["a"]) as ms:
        assert ms.ready
    ready = [r for r in caplog.records if r.getMessage() == "media server ready"]
    assert ready, caplog.text
    logged = " ".join(str(vars(r)) for r in caplog.records)  # messages and their context fields
    assert "rtsp://127.0.0.1:" in str(vars(ready[0]))  # where it listens is shown
    for secret in secrets_.values():
        assert secret not in logged


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_ready_line_and_clean_stop(sig: signal.Signals, tmp_path: Path) -> None:
    rtsp, rtmp = free_port(), free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "livedub", "media-server", "--rtsp-port", str(rtsp),
         "--rtmp-port", str(rtmp), "--streams", "a,b", "--workdir", str(tmp_path / "w")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(10)
        took = time.monotonic() - t0
        assert lines and lines[0].startswith("media-server ready"), (lines, proc.poll())
        assert f"rtsp=rtsp://127.0.0.1:{rtsp}/" in lines[0] and "streams=a,b" in lines[0]
        # Includes the Python interpreter's start-up; the server's own start (< 2 s) is asserted
        # above on `start()`. Loose here so a loaded CI machine does not fail a correct server.
        assert took < 5.0, f"process start → ready line took {took:.2f} s"
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 3, children
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        wait_for(lambda: alive(children) == [], 5, "children to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no chance to clean up: nginx gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and the relay sees EOF on stdin; both exit and free their ports."""
    rtsp, rtmp = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "livedub", "media-server", "--rtsp-port", str(rtsp),
         "--rtmp-port", str(rtmp)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("media-server ready")
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 3
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: alive(children) == [], 10, "orphans to exit")
    # A process counts as gone once it is a zombie; the kernel may close its listening sockets a
    # moment later (seen as LISTEN with no owner): the claim is that the ports come free.
    wait_for(lambda: ports_free(rtsp, rtmp), 10, "the ports to come free")
    ms = MediaServer(rtsp_port=rtsp, rtmp_port=rtmp)
    with ms:
        assert ms.ready


@pytest.mark.parametrize("which", ["rtsp", "rtmp"])
def test_port_in_use_is_a_clear_error(which: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"rtsp": free_port(), "rtmp": free_port(), which: port}
        ms = MediaServer(rtsp_port=ports["rtsp"], rtmp_port=ports["rtmp"])
        with pytest.raises(PortInUseError) as info:
            ms.start()
        assert info.value.port == port and info.value.protocol == which.upper()
        assert ms.pids() == []
        proc = subprocess.run(
            [sys.executable, "-m", "livedub", "media-server", "--rtsp-port", str(ports["rtsp"]),
             "--rtmp-port", str(ports["rtmp"])],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert proc.returncode == 2
        assert f"127.0.0.1:{port} is already in use" in proc.stderr
        assert "ready" not in proc.stdout


def test_child_death_is_reported(tmp_path: Path) -> None:
    with MediaServer(rtsp_port=free_port(), rtmp_port=free_port()) as ms:
        assert ms._relay is not None
        ms._relay.kill()  # a child we started, by its handle
        wait_for(lambda: ms.failure() is not None, 5, "failure to be seen")
        assert "RTSP relay exited" in (ms.failure() or "")


# -- media -------------------------------------------------------------------------------------
def test_publish_and_read_both_protocols_several_ids(server: MediaServer, clip: Path) -> None:
    """RTSP with ids never declared (r1, r2), RTMP with declared ids (s1, s2); in and out paths;
    three readers on one RTSP path and two on one RTMP path, all at once."""
    paths = {
        server.rtsp_url("live/r1/in"): 3,
        server.rtsp_url("live/r2/out"): 1,
        server.rtmp_url("live/s1/in"): 2,
        server.rtmp_url("live/s2/out"): 1,
    }
    pubs = [Publisher(clip, url) for url in paths]
    for p in pubs:
        p.start()
    readers = [
        Reader(url, want=25, deadline_s=20, publisher=pub)
        for pub, (url, n) in zip(pubs, paths.items(), strict=True)
        for _ in range(n)
    ]
    for r in readers:
        r.start()
    join_all(list(readers), 30)
    for r in readers:
        res = r.result
        assert res.counts["video"] >= 25 and res.counts["audio"] >= 25, (r.url, res)
        assert res.latencies_s, f"{r.url}: no audio packet matched the published ones"
    for p in pubs:
        p.stop_event.set()
    join_all(list(pubs), 10)
    assert all(p.error is None for p in pubs), [p.error for p in pubs]


def test_second_rtsp_publisher_is_refused(server: MediaServer, clip: Path) -> None:
    """As MediaMTX with `overridePublisher: false` (issue 17 #1): a second publisher, even with
    the right credentials, cannot take a live path over; the first one and its readers go on."""
    events: list[HookEvent] = []
    server._on_event = events.append
    url = server.rtsp_url("live/takeover/in")
    first = Publisher(clip, url, max_s=4)
    first.start()
    wait_for(lambda: len(events) == 1, 10, "first ready")
    second = Publisher(clip, url, max_s=3)
    second.start()
    reader = Reader(url, want=20, deadline_s=15, publisher=first)
    reader.start()
    join_all([second], 20)
    assert second.error is not None, "a second publisher took the path over"
    join_all([first, reader], 20)
    assert first.error is None, first.error
    assert reader.result.latencies_s, "reader did not get the first publisher's packets"
    assert [e.kind for e in events][:1] == ["ready"] and "not-ready" not in [
        e.kind for e in events[:-1]
    ], events


def test_read_keeps_b_frame_timestamps(server: MediaServer, clip: Path) -> None:
    """Readers get DTS that never go back, PTS ≥ DTS with reordered frames (the clip has
    B-frames), and frame times on the 30 fps grid (no arrival jitter), on both protocols."""
    for url in (server.rtsp_url("live/ts/in"), server.rtmp_url("live/s1/out")):
        pub = Publisher(clip, url, max_s=4)
        pub.start()
        got: list[tuple[int, int]] = []
        container = None
        deadline = time.monotonic() + 10
        while container is None and time.monotonic() < deadline:
            try:
                container = av.open(url, options=input_options(url), timeout=(5, 5))
            except (av.error.FFmpegError, OSError):
                time.sleep(0.05)  # retry interval
        assert container is not None, url
        with container:
            tb = container.streams.video[0].time_base
            for pkt in container.demux(video=0):
                # RTSP carries no DTS: the first packets (SPS/PPS, keyframe) may have none
                if pkt.dts is not None and pkt.pts is not None:
                    got.append((pkt.pts, pkt.dts))
                if len(got) >= 40:
                    break
        pub.stop_event.set()
        pub.join(10)
        assert tb is not None
        dts = [d for _, d in got]
        assert all(b > a for a, b in zip(dts, dts[1:], strict=False)), (url, got)
        assert all(p >= d for p, d in got), url
        assert any(p != d for p, d in got), f"{url}: no reordered frame seen"
        frame_ticks = 1 / (float(tb) * FPS)
        pts = sorted(p for p, _ in got)
        steps = [(b - a) / frame_ticks for a, b in zip(pts, pts[1:], strict=False)]
        assert all(abs(x - round(x)) < 0.05 and round(x) >= 1 for x in steps), (url, steps)


def _column_profile(frame: av.VideoFrame) -> np.ndarray:
    """Mean brightness per column: in `make_clip` frames it says where the moving bar is."""
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.float32).mean(axis=0)


class FrameReader(threading.Thread):
    """Reads a URL from its first packet to the end of the stream (the open retried every 50 ms
    until `deadline_s`), counting packets, keeping the audio ones (`audio`) and decoding the
    video (`profiles`: one per frame)."""

    def __init__(self, url: str, deadline_s: float) -> None:
        super().__init__(daemon=True, name=f"frames {url}")
        self.url, self.deadline = url, time.monotonic() + deadline_s
        self.counts = {"video": 0, "audio": 0}
        self.profiles: list[np.ndarray] = []
        self.audio: list[bytes] = []

    def run(self) -> None:
        container = None
        while container is None and time.monotonic() < self.deadline:
            try:
                container = av.open(self.url, options=input_options(self.url), timeout=(5, 5))
            except (av.error.FFmpegError, OSError):
                time.sleep(0.05)  # retry interval of a polling reader
        if container is None:
            return
        with container:
            video = container.streams.video[0]
            try:
                for pkt in container.demux():
                    if time.monotonic() > self.deadline:
                        break
                    kind = pkt.stream.type
                    if pkt.size == 0 or kind not in self.counts:
                        continue
                    self.counts[kind] += 1
                    if pkt.stream is video:
                        self.profiles += [_column_profile(f) for f in video.decode(pkt)]
                    else:
                        self.audio.append(bytes(pkt))
            except (av.error.FFmpegError, OSError):
                pass  # the publisher ended: the server closed the connection
            with contextlib.suppress(av.error.FFmpegError):
                self.profiles += [_column_profile(f) for f in video.decode(None)]


def _frame_indexes(clip: Path, profiles: list[np.ndarray]) -> list[int]:
    """The index in `clip` of each decoded frame (the closest column profile)."""
    with av.open(str(clip)) as c:
        ref = np.stack([_column_profile(f) for f in c.decode(video=0)])
    return [int(np.abs(ref - p).sum(axis=1).argmin()) for p in profiles]


@pytest.mark.parametrize("gop_cache", [True, False], ids=["gop-cache", "no-gop-cache"])
def test_reader_joining_late_gets_the_whole_programme(gop_cache: bool, tmp_path: Path) -> None:
    """GOP cache: a reader that connects 1.2 s into a publish (like a worker started by the
    publish hook) and one that polls from before it both start at the publisher's first
    keyframe (frame 0) and get every frame after it, once, in order, and the audio from its
    first packet at or after time 0 on (not the AAC encoder's priming packet before it). Without
    the cache both join at the next keyframe (frame 60, GOP 2 s): the assertions of the cached
    case fail."""
    gop_frames = 2 * FPS
    clip = make_clip(tmp_path / "gop2.mp4", seconds=4.5, gop_s=2.0)
    settings = MediaServerSettings(
        rtsp_port=free_port(), rtmp_port=free_port(), rtsp_gop_cache=gop_cache
    )
    with MediaServer(settings, workdir=tmp_path / "ms") as ms:
        url = ms.rtsp_url("live/gop/in")
        early = FrameReader(url, deadline_s=20)
        early.start()
        pub = Publisher(clip, url, max_s=4.0)
        pub.start()
        wait_for(lambda: pub.first_sent_at is not None or pub.error is not None, 10, "publish")
        assert pub.first_sent_at is not None, pub.error
        # the scenario is a reader connecting 1.2 s into the first GOP (pacing, not a wait)
        time.sleep(max(0.0, pub.first_sent_at + 1.2 - time.monotonic()))
        late = FrameReader(url, deadline_s=20)
        late.start()
        join_all([pub, early, late], 25)
    assert pub.error is None, pub.error
    published = pub.sent_counts
    audio_order = {payload: i for i, payload in enumerate(pub.sent)}  # in publishing order
    with av.open(str(clip)) as c:
        priming = [bytes(p) for p in c.demux(audio=0) if p.pts is not None and p.pts < 0]
    assert priming and audio_order[priming[-1]] == len(priming) - 1  # published first
    for name, reader in (("early", early), ("late", late)):
        idx = _frame_indexes(clip, reader.profiles)
        assert idx, f"{name} reader decoded nothing: {reader.counts}"
        assert idx == list(range(idx[0], idx[0] + len(idx))), f"{name}: gap or duplicate {idx}"
        aidx = [audio_order.get(a, -1) for a in reader.audio]
        assert aidx and aidx == list(range(aidx[0], aidx[0] + len(aidx))), (name, aidx)
        if gop_cache:
            assert idx[0] == 0, f"{name} reader started at frame {idx[0]}, not the first keyframe"
            assert abs(reader.counts["video"] - published["video"]) <= 1, (name, reader.counts,
                                                                          published)  # fmt: skip
            assert aidx[0] == len(priming), f"{name} reader's audio starts at packet {aidx[0]}"
            # the last audio packets may be cut by the publisher's teardown (so without the cache)
            assert published["audio"] - len(priming) - len(aidx) <= 4, (name, reader.counts,
                                                                        published)  # fmt: skip
        else:  # joins at the next keyframe: the first GOP is lost
            assert idx[0] % gop_frames == 0 and idx[0] > 0, (name, idx[0])
        sys.stdout.write(
            f"\n{'' if gop_cache else 'no '}gop cache, {name} reader: frames {idx[0]}..{idx[-1]}"
            f" ({len(idx)}), packets {reader.counts}, published {published}"
        )


GOP_CACHE_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("relay", sys.argv[1])
relay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(relay)
Gst = relay.Gst
Gst.init(None)
MS = 1_000_000

def buf(name, ts_ms, delta=False):
    b = Gst.Buffer.new_wrapped(name.encode())
    if ts_ms is not None:
        b.pts = ts_ms * MS
    if delta:
        b.set_flags(Gst.BufferFlags.DELTA_UNIT)
    return b

def run(events, max_s=10, max_bytes=10**9, start_s=5):
    cache = relay.GopCache(int(max_s * 1000 * MS), max_bytes, int(start_s * 1000 * MS))
    for name, ts_ms in events:  # V* video keyframe, v* video delta, a* audio
        cache.add(0 if name[0] in "Vv" else 1, buf(name, ts_ms, name[0] == "v"), name[0] in "Vv")
    return [bytes(b.extract_dup(0, b.get_size())).decode() for _, b in cache.snapshot()]

def gops(n, gop_ms=2000):  # audio at and just after each keyframe's time arrives before it
    ev = []
    for g in range(n):
        t = g * gop_ms
        ev += [(f"a{t}", t), (f"a{t + 20}", t + 20), (f"V{t}", t), (f"v{t + 1000}", t + 1000),
               (f"a{t + 1000}", t + 1000)]
    return ev

out = {
    "audio_before_first_key": run([("a-50", 0), ("a0", 100), ("anone", None), ("V100", 100),
                                   ("a120", 120)]),
    "nothing_without_key": run([("a0", 0), ("v33", 33)]),
    "start_window": run(gops(3)),
    "after_start_window": run(gops(4)),
    "last_gop_only": run(gops(3), start_s=0),
    "max_s": run(gops(3), max_s=3),
    "gop_too_long": run([("V0", 0), ("v3000", 3000), ("a3000", 3000)], max_s=2),
    "max_bytes": run(gops(3), max_bytes=30),
}
sys.stdout.write(json.dumps(out))
"""


def test_gop_cache_keeps_a_bounded_run_from_a_keyframe() -> None:
    """The relay's GopCache (run under the Python that has GStreamer): what a new reader gets."""
    from livedub.orchestrator.mediaserver import RTSP_RELAY_SCRIPT

    proc = subprocess.run(
        [_defaults.gst_python, "-I", "-c", GOP_CACHE_SCRIPT, str(RTSP_RELAY_SCRIPT)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    # audio that arrived just before the keyframe but is later than it comes along (one without
    # a timestamp follows its track's previous one); audio at or before its time does not
    assert got["audio_before_first_key"] == ["V100", "anone", "a120"]
    assert got["nothing_without_key"] == []
    # keyframes within `start_s` of the first one: everything from the first keyframe
    assert got["start_window"] == ["V0", "a20", "v1000", "a1000", "a2000", "a2020", "V2000",
                                   "v3000", "a3000", "a4000", "a4020", "V4000", "v5000",
                                   "a5000"]  # fmt: skip
    assert got["after_start_window"] == ["V6000", "a6020", "v7000", "a7000"]
    assert got["last_gop_only"] == ["V4000", "a4020", "v5000", "a5000"]
    # bounds: whole GOPs go from the front (max 3 s, 30 bytes), their audio later than the new
    # first keyframe moving with it; a GOP alone longer than the bounds: nothing
    assert got["max_s"] == ["V2000", "a2020", "v3000", "a3000", "a4000", "a4020", "V4000",
                            "v5000", "a5000"]  # fmt: skip
    assert got["gop_too_long"] == []
    assert got["max_bytes"] == ["V4000", "a4020", "v5000", "a5000"]


def test_unknown_and_unpublished_paths(server: MediaServer, clip: Path) -> None:
    with pytest.raises(av.error.HTTPNotFoundError):  # not published yet
        av.open(server.rtsp_url("live/nobody/in"), options={"rtsp_transport": "tcp"}, timeout=5)
    with pytest.raises(av.error.HTTPNotFoundError):  # not a live/<id>/in|out path
        av.open(server.rtsp_url("other/x"), options={"rtsp_transport": "tcp"}, timeout=5)
    with pytest.raises((av.error.FFmpegError, OSError)):  # undeclared RTMP id
        pub = Publisher(clip, server.rtmp_url("live/undeclared/in"), max_s=1)
        pub.run()
        raise pub.error or AssertionError("publish to an undeclared RTMP id succeeded")
    with pytest.raises((av.error.FFmpegError, OSError)):  # refused by on_publish
        pub = Publisher(clip, server.rtmp_url("live/s1/bogus"), max_s=1)
        pub.run()
        raise pub.error or AssertionError("publish to live/s1/bogus succeeded")


def test_rtmp_catch_all_app_serves_any_id(server: MediaServer, clip: Path) -> None:
    """`application live` with stream name `<id>/in`: any id at run time, for clients that can
    set the RTMP app and play path (ffmpeg -rtmp_app / -rtmp_playpath)."""
    events: list[HookEvent] = []
    server._on_event = events.append
    base = f"rtmp://127.0.0.1:{server.rtmp_port}/live"
    publisher = server.credentials(Role.PUBLISHER)
    assert publisher is not None
    creds = f"user={publisher.user}&pass={publisher.password.get_secret_value()}"
    pub = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-t", "4", "-c", "copy",
         "-f", "flv", "-rtmp_app", "live", "-rtmp_playpath", f"anyid/in?{creds}", base],
    )  # fmt: skip
    try:
        reader = Reader(base, want=15, deadline_s=15,
                        options={"rtmp_app": "live", "rtmp_playpath": "anyid/in"})  # fmt: skip
        reader.start()
        join_all([reader], 20)
        assert reader.result.counts["video"] >= 15 and reader.result.counts["audio"] >= 15
        assert pub.wait(timeout=15) == 0
        wait_for(lambda: len(events) >= 2, 5, "ready and not-ready")
        assert [(e.kind, e.path, e.source_type) for e in events] == [
            ("ready", "live/anyid/in", "rtmpConn"),
            ("not-ready", "live/anyid/in", "rtmpConn"),
        ]
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()


# -- hooks -------------------------------------------------------------------------------------
async def test_publish_hooks_reach_the_orchestrator(tmp_path: Path, clip: Path) -> None:
    received: list[tuple[str, dict[str, Any], str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((request.path, await request.json(), request.headers.get("X-Hook-Secret")))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/mediamtx/events/ready", handler)
    app.router.add_post("/v1/mediamtx/events/not-ready", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        async with MediaServer(
            rtsp_port=free_port(), rtmp_port=free_port(), streams=["h2"],
            hook_url=f"http://127.0.0.1:{hook_port}", hook_secret="s3cret",
            workdir=tmp_path / "ms",
        ) as ms:  # fmt: skip
            pubs = [
                Publisher(clip, ms.rtsp_url("live/h1/in"), max_s=2),
                Publisher(clip, ms.rtmp_url("live/h2/in"), max_s=2),
                Publisher(clip, ms.rtmp_url("live/h2/out"), max_s=2),  # no hook for out
                Publisher(clip, ms.rtsp_url("live/h1/out"), max_s=2),  # no hook for out
            ]
            for p in pubs:
                p.start()
            await await_for(lambda: len(received) >= 4, 20, "4 hook calls")
            await await_for(lambda: not any(p.is_alive() for p in pubs), 20, "publishers")
            assert all(p.error is None for p in pubs), [p.error for p in pubs]
        # nothing more arrives after the publishers and the server are gone
    finally:
        await runner.cleanup()
    assert all(secret == "s3cret" for _, _, secret in received)
    by_path: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for route, body, _ in received:
        by_path.setdefault(body["path"], []).append((route.rsplit("/", 1)[-1], body))
    assert set(by_path) == {"live/h1/in", "live/h2/in"}, received
    for path, source_type in (("live/h1/in", "rtspSession"), ("live/h2/in", "rtmpConn")):
        calls = by_path[path]
        assert [c[0] for c in calls] == ["ready", "not-ready"], calls
        for _, body in calls:
            assert set(body) == {"path", "sourceType", "sourceId", "query"}
            assert body["sourceType"] == source_type and body["sourceId"] and body["query"] == ""
        assert calls[0][1]["sourceId"] == calls[1][1]["sourceId"]


def test_no_hook_url_means_no_calls_and_no_thread(server: MediaServer) -> None:
    assert server.settings.hook_url is None
    assert server._hooks._thread is None


def test_stop_sends_not_ready_for_live_publishers(tmp_path: Path, clip: Path) -> None:
    events: list[HookEvent] = []
    ms = MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), streams=["z"],
                     on_event=events.append)  # fmt: skip
    with ms:
        pubs = [
            Publisher(clip, ms.rtsp_url("live/z/in")),
            Publisher(clip, ms.rtmp_url("live/z/in")),
        ]
        for p in pubs:
            p.start()
        wait_for(lambda: len(events) >= 2, 10, "two ready events")
    kinds = sorted((e.kind, e.source_type) for e in events)
    assert ("not-ready", "rtspSession") in kinds or ("not-ready", "rtmpConn") in kinds, kinds
    assert not ms.ready_paths
    for p in pubs:
        p.stop_event.set()
    join_all(list(pubs), 10)


# -- measurements ---------------------------------------------------------------------------
# The measuring reader runs in its own process: PyAV keeps the GIL while it opens an output, so
# an in-process listening reader (the direct baseline) and a publisher would deadlock. Both
# processes use CLOCK_MONOTONIC, which is system-wide.
READER_SCRIPT = """
import hashlib, json, sys, time
import av
url, options, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
try:
  with av.open(url, options=options, timeout=(20, 5)) as c:
    sys.stdout.write(f"{time.monotonic()} open\\n")
    end = time.monotonic() + seconds
    for pkt in c.demux():
        if pkt.stream.type == "audio" and pkt.size:
            now = time.monotonic()
            sys.stdout.write(f"{now} {hashlib.sha1(bytes(pkt)).hexdigest()}\\n")
            if now > end:
                break
except (av.error.FFmpegError, OSError):
    pass  # the publisher ended: the server closed the connection or stopped sending
"""


SETTLE_S = 0.5


def _latency_run(clip: Path, pub_url: str, read_url: str, read_options: dict[str, str],
                 seconds: float, published: Callable[[], bool] | None = None) -> list[float]:  # fmt: skip
    """Through a server (`published` given): the reader starts once the server reports the path
    published (a reader that asks first is answered 404 and gives up). Direct (a listening
    reader): the reader starts first and the publisher retries its connect until it listens."""
    import hashlib
    import json

    listen = "listen" in str(read_options)
    pub = Publisher(clip, pub_url, max_s=seconds, connect_retry_s=5 if listen else 0)

    def start_reader() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", READER_SCRIPT, read_url, json.dumps(read_options), str(seconds + 5)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    reader = start_reader() if published is None else None
    try:
        pub.start()
        if reader is None:
            assert published is not None
            wait_for(published, 10, f"{pub_url} published")
            reader = start_reader()
        out, _ = reader.communicate(timeout=seconds + 20)
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        pub.stop_event.set()
        pub.join(10)
    assert pub.error is None, pub.error
    sent = {hashlib.sha1(k).hexdigest(): t for k, t in pub.sent.items()}
    lat = []
    opened = float("inf")
    for line in out.splitlines():
        t, digest = line.split()
        if digest == "open":
            opened = float(t)
        # steady state only: what the reader's open buffered while probing the stream arrives
        # in a burst right after the open returns (the client's doing, not the server's)
        elif digest in sent and float(t) > opened + SETTLE_S:
            lat.append(float(t) - sent[digest])
    return lat


def _time_to_readable(clip: Path, url: str, server: MediaServer) -> dict[str, float]:
    """Seconds from the publisher's start to: the ready hook, the reader's open returning, and
    the reader's first packet (the reader polls from before the publish, like an early worker)."""
    events: list[tuple[float, HookEvent]] = []
    server._on_event = lambda e: events.append((time.monotonic(), e))
    reader = Reader(url, want=1, deadline_s=15)
    reader.start()
    wait_for(lambda: reader.result.open_attempts >= 2, 5, "the reader to poll")
    pub = Publisher(clip, url, max_s=6)
    pub.start()
    reader.join(20)
    pub.stop_event.set()
    pub.join(10)
    r = reader.result
    assert r.first_packet_at is not None and r.opened_at is not None, r
    assert pub.started_at is not None
    ready = [t for t, e in events if e.kind == "ready"]
    return {
        "ready_hook_s": (ready[0] - pub.started_at) if ready else float("nan"),
        "open_s": r.opened_at - pub.started_at,
        "first_packet_s": r.first_packet_at - pub.started_at,
    }


def test_measure_latency_and_time_to_readable(tmp_path: Path) -> None:
    seconds = float(os.environ.get("MEDIA_MEASURE_S", "6"))
    gop_s = float(os.environ.get("MEDIA_MEASURE_GOP_S", "2"))
    mclip = make_clip(tmp_path / "m.mp4", seconds=seconds + 2, gop_s=gop_s)
    rows = []
    with MediaServer(rtsp_port=free_port(), rtmp_port=free_port(), streams=["m", "r", "t"]) as ms:
        direct_rtsp = free_port()
        direct_rtmp = free_port()
        cases = {
            "rtsp": (
                _latency_run(mclip, f"rtsp://127.0.0.1:{direct_rtsp}/live/m/in",
                             f"rtsp://127.0.0.1:{direct_rtsp}/live/m/in",
                             {"rtsp_flags": "listen", "listen_timeout": "20"}, seconds),
                _latency_run(mclip, ms.rtsp_url("live/m/in"), ms.rtsp_url("live/m/in"),
                             {"rtsp_transport": "tcp"}, seconds, lambda: "live/m/in" in ms.ready_paths),
                _time_to_readable(mclip, ms.rtsp_url("live/t/in"), ms),
            ),
            "rtmp": (
                _latency_run(mclip, f"rtmp://127.0.0.1:{direct_rtmp}/live/m/in",
                             f"rtmp://127.0.0.1:{direct_rtmp}/live/m/in",
                             {"listen": "1", "timeout": "20"}, seconds),
                _latency_run(mclip, ms.rtmp_url("live/r/in"), ms.rtmp_url("live/r/in"), {},
                             seconds, lambda: "live/r/in" in ms.ready_paths),
                _time_to_readable(mclip, ms.rtmp_url("live/t/in"), ms),
            ),
        }  # fmt: skip
    for proto, (direct, via, ttr) in cases.items():
        assert len(direct) > 20 and len(via) > 20, (proto, len(direct), len(via))

        def ms_(x: float) -> str:
            return f"{x * 1000:.1f} ms"

        d_med, v_med = statistics.median(direct), statistics.median(via)
        d_p90 = statistics.quantiles(direct, n=10)[-1]
        v_p90 = statistics.quantiles(via, n=10)[-1]
        rows.append(
            f"{proto}: latency publisher→reader direct median {ms_(d_med)} p90 {ms_(d_p90)} | "
            f"via server median {ms_(v_med)} p90 {ms_(v_p90)} | added median "
            f"{ms_(v_med - d_med)} p90 {ms_(v_p90 - d_p90)} | samples {len(direct)}/{len(via)}"
        )
        rows.append(
            f"{proto}: after publisher start (GOP {gop_s:g} s): ready hook "
            f"{ttr['ready_hook_s']:.2f} s, reader open returned {ttr['open_s']:.2f} s, "
            f"first packet {ttr['first_packet_s']:.2f} s"
        )
        assert v_med - d_med < 0.5, rows[-2]
        assert ttr["first_packet_s"] < gop_s + 3.0, rows[-1]
    sys.stdout.write("\n" + "\n".join(rows) + "\n")


def test_clip_has_b_frames(clip: Path) -> None:
    """Guard for the timestamp test: the clip must contain reordered frames."""
    with av.open(str(clip)) as c:
        pts_dts = [(p.pts, p.dts) for p in c.demux(video=0) if p.dts is not None][:30]
    assert any(p != d for p, d in pts_dts)
