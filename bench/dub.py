"""`python -m bench.dub`: per-fragment processing time and CPU of the dub backend.

N concurrent streams (default 2), each sending one 6 s m4a fragment of spoken English every 6 s
(real time) to ONE DubBackend (pool of `--workers`, default = cores), like the STS service does.
Reports processing time p50/p95 (fragment submitted → result), timeouts (> the 8 s worker
timeout), and CPU seconds per stream-second (this process + its children: Apertium, espeak-ng,
sox), model load excluded. Results on stdout as JSON (and in `--out` if given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
import uuid
from pathlib import Path
from typing import Any

from livedub.media.audio import encode_pcm
from livedub.protocol import AudioPayload, FragmentData, StreamConfig
from livedub.sts.dub.backend import DubBackend
from livedub.sts.dub.programme import spoken_programme
from livedub.sts.settings import BackendKind, StsSettings

SEGMENT_S = 6.0
RATE = 48_000
TIMEOUT_S = 8.0


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _stream(backend: DubBackend, sid: str, frags: list[FragmentData], paced: bool, offset_s: float,
                  out: list[dict[str, Any]]) -> None:
    config = StreamConfig(source_language="en", target_language="es")
    start = time.monotonic() + offset_s
    tasks = []
    for k, frag in enumerate(frags):
        if paced:
            await asyncio.sleep(max(0.0, start + k * SEGMENT_S - time.monotonic()))

        async def one(frag: FragmentData = frag, k: int = k) -> None:
            t0 = time.monotonic()
            res = await backend.process(frag, config)
            out.append({
                "stream": sid, "k": k, "s": time.monotonic() - t0, "status": res.status,
                "transcript": res.transcript, "translated": res.translated_text,
                "timings": res.stage_timings.to_wire() if res.stage_timings else None,
            })

        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pcm, lines = spoken_programme(args.fragments, segment_s=SEGMENT_S, rate=RATE)
    seg_n = round(SEGMENT_S * RATE)
    frags = []
    for k in range(args.fragments):
        data = encode_pcm(pcm[k * seg_n : (k + 1) * seg_n], RATE, "m4a")
        frags.append(FragmentData(
            fragment_id=str(uuid.uuid4()), stream_id="bench", sequence_number=k, timestamp=0,
            audio=AudioPayload.from_bytes(data, format="m4a", sample_rate_hz=RATE, channels=2,
                                          duration_ms=round(SEGMENT_S * 1000)),
        ))
    workers = args.workers or (os.cpu_count() or 1)
    settings = StsSettings(backend=BackendKind.DUB, workers=workers)
    backend = DubBackend(settings)
    t = time.monotonic()
    backend.supported_pairs()  # loads the model (once per process)
    load_s = time.monotonic() - t
    results: list[dict[str, Any]] = []
    cpu0, wall0 = _cpu_s(), time.monotonic()
    # independent broadcasts: stream starts spread over one segment period
    await asyncio.gather(*(
        _stream(backend, f"s{i}", frags, not args.unpaced, i * SEGMENT_S / args.streams, results)
        for i in range(args.streams)
    ))
    cpu, wall = _cpu_s() - cpu0, time.monotonic() - wall0
    backend.close()
    times = [r["s"] for r in results]
    stream_s = args.streams * args.fragments * SEGMENT_S
    return {
        "command": f"python -m bench.dub --streams {args.streams} --fragments {args.fragments}"
                   + (f" --workers {args.workers}" if args.workers else "") + (" --unpaced" if args.unpaced else ""),
        "cores": os.cpu_count(), "workers": settings.workers, "streams": args.streams,
        "fragments_per_stream": args.fragments, "model_load_s": round(load_s, 2),
        "processing_p50_s": round(_pct(times, 0.5), 3), "processing_p95_s": round(_pct(times, 0.95), 3),
        "processing_max_s": round(max(times), 3),
        "over_timeout": sum(1 for x in times if x > TIMEOUT_S),
        "dubbed": sum(1 for r in results if r["translated"]),
        "cpu_s_per_stream_s": round(cpu / stream_s, 3), "wall_s": round(wall, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "sample": sorted(results, key=lambda r: (r["stream"], r["k"]))[: args.fragments],
        "reference": [ln.text for ln in lines],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--fragments", type=int, default=6, help="fragments per stream")
    p.add_argument("--workers", type=int, default=0, help="pool size (0: cores)")
    p.add_argument("--unpaced", action="store_true", help="send everything at once (a burst)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    doc = asyncio.run(main_async(args))
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
