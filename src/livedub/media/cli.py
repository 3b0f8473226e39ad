"""Media tools of the `livedub` CLI: `make-fixture`, `analyze`, `publish`, `passthrough`.

Each subcommand parses flags, calls the library, writes its result as JSON on stdout and
returns an exit code. `livedub worker --passthrough` (worker concern) runs the same pipeline as
`livedub passthrough`. No media logic lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from livedub.exitcodes import ExitCode
from livedub.protocol.constants import ID_CHARS
from livedub.typed import ValidationError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_make_fixture(sub)
    _add_analyze(sub)
    _add_publish(sub)
    _add_passthrough(sub)


# -- make-fixture -------------------------------------------------------------------------------
def _add_make_fixture(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-fixture",
        help="generate the deterministic H.264+AAC test fixture with sync markers",
        description="Write an MP4 with white-flash + 1 kHz beep markers and one background "
        "tone per segment (see docs/media.md).",
    )
    p.add_argument("path", type=Path)
    p.add_argument("--duration-s", type=float, default=60.0, help="default 60")
    p.add_argument("--width", type=int, default=1280, help="default 1280")
    p.add_argument("--height", type=int, default=720, help="default 720")
    p.add_argument("--fps", type=int, default=30, help="default 30")
    p.add_argument("--sample-rate", type=int, default=48000, help="default 48000")
    p.add_argument("--channels", type=int, default=2, choices=(1, 2), help="default 2")
    p.add_argument("--segment-s", type=float, default=6.0, help="tone/marker segment length; default 6")
    p.add_argument("--gop-s", type=float, default=2.0, help="keyframe interval; default 2")
    p.add_argument(
        "--audio-drift-ppm",
        type=float,
        default=0.0,
        help="audio timestamps run this much faster than the samples (drifting publisher); default 0",
    )
    p.set_defaults(func=_make_fixture)


def _make_fixture(args: argparse.Namespace) -> int:
    from livedub.media.fixture import FixtureSpec, make_fixture

    spec = FixtureSpec(
        duration_s=args.duration_s,
        width=args.width,
        height=args.height,
        fps=args.fps,
        sample_rate=args.sample_rate,
        channels=args.channels,
        segment_s=args.segment_s,
        gop_s=args.gop_s,
        audio_drift_ppm=args.audio_drift_ppm,
    )
    try:
        info = make_fixture(args.path, spec)
    except ValueError as exc:
        sys.stderr.write(f"make-fixture: {exc}\n")
        return ExitCode.USAGE
    sys.stdout.write(info.to_json() + "\n")
    return ExitCode.OK


# -- analyze ------------------------------------------------------------------------------------
def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="decode a file/URL: duration, codecs, PTS ranges, true A/V offset per marker",
    )
    p.add_argument("source", help="file path or rtsp:// / rtmp:// / srt:// URL")
    p.add_argument("--json", dest="json_out", type=Path, help="write the full analysis here")
    p.add_argument("--plot", type=Path, help="write a PNG plot here")
    p.add_argument("--max-duration-s", type=float, default=None, help="stop after this much media")
    p.add_argument("--timeout-s", type=float, default=20.0, help="open/read timeout; default 20")
    p.set_defaults(func=_analyze)


def _analyze(args: argparse.Namespace) -> int:
    from livedub.media.analyze import analyze, write_plot

    try:
        result = analyze(args.source, max_duration_s=args.max_duration_s, timeout_s=args.timeout_s)
    except Exception as exc:  # noqa: BLE001 - report any open/decode failure as a usage error
        sys.stderr.write(f"analyze: cannot analyse {args.source}: {exc}\n")
        return ExitCode.INPUT_UNAVAILABLE
    doc = result.summary()
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2))
    if args.plot:
        write_plot(result, args.plot)
    brief = {
        "source": result.source,
        "duration_s": round(result.duration_s, 4),
        "codecs": result.codecs,
        "video": _range(result.video),
        "audio": _range(result.audio),
        "markers": len(result.markers),
        "max_abs_offset_ms": round(result.max_abs_offset_ms, 2),
        "offsets_ms": [m.offset_ms for m in result.markers],
        "unmatched_flashes": len(result.unmatched_flashes_s),
        "tone_order": result.tone_order,
        "frame_counter_errors": result.frame_counter_errors,
    }
    sys.stdout.write(json.dumps(brief) + "\n")
    return ExitCode.OK


def _range(track: Any) -> dict[str, Any] | None:
    if track is None:
        return None
    return {
        "codec": track.codec,
        "start_s": track.start_s,
        "end_s": track.end_s,
        "gaps": len(track.gaps),
    }


# -- publish ------------------------------------------------------------------------------------
def _add_publish(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish a file in real time (codec copy) to a URL")
    p.add_argument("file")
    p.add_argument("url", help="rtsp:// (TCP), rtmp:// (flv), srt:// (mpegts) or a file")
    p.add_argument("--loop", action="store_true", help="repeat forever with continuous timestamps")
    p.add_argument("--no-realtime", action="store_true", help="write as fast as possible")
    p.set_defaults(func=_publish)


def _publish(args: argparse.Namespace) -> int:
    from livedub.media.publish import publish

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    try:
        n = publish(args.file, args.url, loop=args.loop, realtime=not args.no_realtime, stop=stop)
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write(f"publish: {exc}\n")
        return ExitCode.OUTPUT_FAILED
    sys.stdout.write(json.dumps({"packets": n, "elapsed_s": round(time.monotonic() - started, 3)}) + "\n")
    return ExitCode.OK


# -- passthrough --------------------------------------------------------------------------------
def add_media_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for `MediaSettings` (shared with the worker CLI if it wants them)."""
    p.add_argument("--stream-id", default="stream", help=f"{ID_CHARS}; default 'stream'")
    p.add_argument("--segment-s", type=float, default=6.0, help="fragment length; default 6")
    p.add_argument(
        "--output-delay-s",
        type=float,
        default=None,
        help="D, output delay behind the input; default segment_s + sts_timeout_s + 0.5",
    )
    p.add_argument("--sts-timeout-s", type=float, default=8.0, help="default 8 (for the default D)")
    p.add_argument("--unpaced", action="store_true", help="write output as fast as possible (file→file)")
    p.add_argument("--input-realtime", action="store_true", default=None, help="pace file input")
    p.add_argument("--end-on-eof", action="store_true", default=None, help="live input: EOF ends")
    p.add_argument("--read-timeout-s", type=float, default=5.0, help="input watchdog; default 5")
    p.add_argument("--segment-dir", type=Path, default=None, help="write segment files here")
    p.add_argument("--segment-retention", type=int, default=50, help="batches kept; default 50")
    p.add_argument("--sample-rate", type=int, default=None, help="fragment PCM rate; default input's")
    p.add_argument("--channels", type=int, default=None, help="fragment channels; default input's")
    p.add_argument(
        "--input-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="libav input option, repeatable (e.g. rtsp_flags=listen)",
    )


def media_settings_from_args(args: argparse.Namespace, input_url: str, output_url: str) -> Any:
    from livedub.media.settings import MediaSettings

    fields: dict[str, Any] = {
        "input_url": input_url,
        "output_url": output_url,
        "stream_id": args.stream_id,
        "segment_s": args.segment_s,
        "output_delay_s": args.output_delay_s,
        "sts_timeout_s": args.sts_timeout_s,
        "paced": not args.unpaced,
        "input_realtime": args.input_realtime,
        "end_on_eof": args.end_on_eof,
        "read_timeout_s": args.read_timeout_s,
        "segment_dir": args.segment_dir,
        "segment_retention": args.segment_retention,
        "sample_rate_hz": args.sample_rate,
        "channels": args.channels,
        "input_options": dict(kv.split("=", 1) for kv in args.input_option),
    }
    return MediaSettings.parse(fields)


def _add_passthrough(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "passthrough",
        help="run the worker's media path with no STS (original audio) from INPUT to OUTPUT",
    )
    p.add_argument("input", help="rtsp:// / rtmp:// / srt:// URL or a file")
    p.add_argument("output", help="rtmp:// / rtsp:// / srt:// URL or a .mp4/.flv/.ts file")
    add_media_arguments(p)
    p.set_defaults(func=_passthrough)


def _passthrough(args: argparse.Namespace) -> int:
    from livedub.media.pipeline import MediaPipeline, run_passthrough

    try:
        settings = media_settings_from_args(args, args.input, args.output)
    except (ValidationError, ValueError) as exc:
        sys.stderr.write(f"passthrough: {exc}\n")
        return ExitCode.USAGE
    holder: list[MediaPipeline] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()

        def ready(p: MediaPipeline) -> None:
            holder.append(p)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, p.request_stop)

        return await run_passthrough(settings, pipeline_ready=ready)

    started = time.monotonic()
    code = asyncio.run(main())
    if holder:
        st = holder[0].stats
        sys.stdout.write(
            json.dumps(
                {
                    "exit_code": code,
                    "elapsed_s": round(time.monotonic() - started, 3),
                    "segments": st.segments_created,
                    "output": dict(st.segments_output),
                    "reasons": dict(st.reasons),
                    "late_segments": st.late_segments,
                    "discontinuities": st.discontinuities,
                    "timestamps_repaired": st.timestamps_repaired,
                    "drift_corrections": st.drift_corrections,
                }
            )
            + "\n"
        )
    return code
