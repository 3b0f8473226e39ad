"""The wire's own cost: CPU per fragment of the Socket.IO round trip, each side, per format.

A real `livedub sts` (echo) on 127.0.0.1 and, in this process, the worker's side of the wire as the
worker does it: `AudioPayload.from_bytes` + `to_wire` + emit, then the answer's decode
(`parse_server_event` + `to_bytes`). Fragments go one at a time (send, wait for
`fragment:processed`, ack), so nothing else runs; CPU is each process's user + system time over the
run divided by the fragments. The audio is 6 s of 48 kHz stereo (a real segment's size per format:
noise for wav, a tone mix for flac and m4a, encoded by the worker's own `fragment_bytes`).

    python -m bench.wire [--fragments 40] [--formats wav,flac,m4a] [--json out.json]

Compare an older commit's livedub with this tree's, alternately (its worktree as bench/ab.sh makes
it; this tree's bench.wire, the STS subprocess inherits PYTHONPATH):
    PYTHONPATH=var/ab/<old>/src:. .venv/bin/python -m bench.wire
    .venv/bin/python -m bench.wire
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.phase import http_ok, wait_for
from livedub.media.audio import fragment_bytes
from livedub.protocol import AudioPayload, FragmentData, FragmentProcessed, parse_server_event
from livedub.protocol.constants import EventName
from livedub.sts.testing import StsTestClient, free_port

RATE, CHANNELS, SEGMENT_S = 48_000, 2, 6.0


def segment_pcm(kind: str) -> np.ndarray:
    """6 s of s16 stereo: white noise (wav's size does not depend on it) or a tone mix (what flac
    and AAC make of programme audio more than of noise)."""
    n = int(RATE * SEGMENT_S)
    if kind == "noise":
        return (np.random.default_rng(0).standard_normal((n, CHANNELS)) * 3000).astype(np.int16)
    t = np.arange(n) / RATE
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t) * np.sin(2 * np.pi * 0.5 * t)
    mono += 0.02 * np.random.default_rng(1).standard_normal(n)
    return (np.stack([mono, mono * 0.8], axis=1) * 20000).astype(np.int16)


async def run_format(url: str, fmt: str, fragments: int, sts: psutil.Process) -> dict[str, Any]:
    data = fragment_bytes(segment_pcm("noise" if fmt == "wav" else "tones"), RATE, fmt)
    client = StsTestClient(url, stream_id=f"wire-{fmt}", worker_id="bench")
    await client.connect()
    await client.init(config={"format": fmt, "sample_rate_hz": RATE, "channels": CHANNELS,
                              "chunk_duration_ms": int(SEGMENT_S * 1000)})  # fmt: skip
    me = psutil.Process()

    def cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    me0, sts0, wall0 = cpu(me), cpu(sts), time.monotonic()
    for seq in range(fragments):
        mark = len(client.events)
        msg = FragmentData(
            fragment_id=f"00000000-0000-4000-8000-{seq:012d}", stream_id=f"wire-{fmt}", sequence_number=seq,
            timestamp=int(time.time() * 1000),
            audio=AudioPayload.from_bytes(data, format=fmt, sample_rate_hz=RATE, channels=CHANNELS,
                                          duration_ms=int(SEGMENT_S * 1000)),
        )  # fmt: skip
        await client.emit(EventName.FRAGMENT_DATA, msg.to_wire())
        raw = await client.wait_for(EventName.FRAGMENT_PROCESSED, timeout=30, after=mark)
        answer = parse_server_event(EventName.FRAGMENT_PROCESSED, raw)
        assert isinstance(answer, FragmentProcessed) and answer.dubbed_audio is not None
        if answer.dubbed_audio.to_bytes() != data:
            raise RuntimeError("the echo changed the audio")
        await client.ack(msg.fragment_id)
    me1, sts1, wall1 = cpu(me), cpu(sts), time.monotonic()
    await client.close()
    return {
        "format": fmt,
        "fragment_bytes": len(data),
        "fragments": fragments,
        "worker_side_ms_per_fragment": round((me1 - me0) / fragments * 1000, 2),
        "sts_ms_per_fragment": round((sts1 - sts0) / fragments * 1000, 2),
        "round_trip_ms": round((wall1 - wall0) / fragments * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fragments", type=int, default=40, help="fragments per format (default 40)")
    p.add_argument("--formats", default="wav,flac,m4a", help="comma-separated (default wav,flac,m4a)")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "livedub", "--log-level", "WARNING", "sts", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rows: list[dict[str, Any]] = []
    try:
        wait_for(lambda: http_ok(f"{url}/health"), 60, "the echo STS")
        sts = psutil.Process(proc.pid)
        for fmt in a.formats.split(","):
            rows.append(asyncio.run(run_format(url, fmt, a.fragments, sts)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    sys.stdout.write(f"{'format':<6} {'bytes':>9} {'worker side ms':>15} {'STS ms':>8} {'round trip ms':>14}\n")
    for r in rows:
        sys.stdout.write(
            f"{r['format']:<6} {r['fragment_bytes']:>9} {r['worker_side_ms_per_fragment']:>15.2f} "
            f"{r['sts_ms_per_fragment']:>8.2f} {r['round_trip_ms']:>14.2f}\n"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
