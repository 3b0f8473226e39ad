"""`WorkerRunner`: one stream's dubbing worker — wiring, signals and the exit code, nothing else.

Data flows one way: the media pipeline (input → segments) hands each segment to the
`DubbingSession` (which decides, once, dubbed or original with a `FallbackReason`); the paced output
takes each segment's audio at its deadline and reports it to the `OutcomeRecorder` (metrics, logs,
`/health`). The `StsLink` inside the session owns the STS connection. A final failure (output,
input, STS token or reconnection budget) stops the pipeline and sets the exit code.

Every segment ends in exactly one of: dubbed, or original audio with one fallback reason; every sent
fragment ends in exactly one of processed / fallback (`worker_audio_fragments_total`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from livedub import exitcodes
from livedub.clock import Clock, SystemClock, wait_within
from livedub.exitcodes import ExitCode
from livedub.log import bind, redact_url
from livedub.media.output import OriginalSound
from livedub.media.pipeline import MediaPipeline
from livedub.media.segment import Segment
from livedub.worker.captions import CaptionWriter
from livedub.worker.config import WorkerSettings
from livedub.worker.control import WorkerControl
from livedub.worker.link import ConnState
from livedub.worker.metrics import MetricsServer
from livedub.worker.outcomes import OutcomeRecorder, OutputState
from livedub.worker.session import DubbingSession, Pending

__all__ = ["ConnState", "OutputState", "Pending", "WorkerRunner"]

_log = logging.getLogger(__name__)


class WorkerRunner:
    """Runs one stream: `await WorkerRunner(settings).run()` returns the process exit code."""

    def __init__(self, settings: WorkerSettings, clock: Clock | None = None) -> None:
        s = settings
        self.settings = s
        self.clock = clock or SystemClock()
        self.log = bind(_log, stream_id=s.stream_id)
        captions = (
            CaptionWriter(s.captions, s.source_language, s.target_language, source=s.captions_source)
            if s.captions
            else None
        )
        self.control = WorkerControl(s.stream_id, token=s.control_token, original_only=s.original_only)
        self.recorder = OutcomeRecorder(
            s.stream_id, captions=captions, segment_files=bool(s.segment_dir),
            mirror=bool(s.mirror_output_url), on_texts=self.control.note_lines,
        )  # fmt: skip
        self.metrics = self.recorder.metrics
        self.session = DubbingSession(s, self.clock, self.recorder, on_fatal=self._fail)
        self.control.on_switch = self.session.set_original_only  # the console's switch
        self.pipeline = MediaPipeline(s.media, observer=self.recorder, on_segment=self._submit, clock=self.clock)
        self._fatal: ExitCode | None = None
        self._drain_deadline: float | None = None  # monotonic; set by the first stop signal
        self._drain_task: asyncio.Task[None] | None = None

    async def _submit(self, segment: Segment) -> None:
        """Pipeline hook: queue the segment for the session (in order); never blocks."""
        self.session.submit(segment)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        server = MetricsServer(
            self.metrics, self.health, host=s.metrics_host, port=s.metrics_port, add_routes=self.control.add_routes
        )
        if s.metrics_port:
            try:
                await server.start()
            except OSError as exc:  # port in use / not bindable: a settings problem, not a crash
                ctx = {"host": s.metrics_host, "port": s.metrics_port, "error": str(exc)}
                self.log.error("cannot serve metrics", ctx=ctx)
                return int(ExitCode.USAGE)
        self._add_signal_handlers()
        self.log.info(
            "worker starting",
            ctx={
                "input": redact_url(s.input_url), "output": redact_url(s.output_url),
                "mirror": redact_url(s.mirror_output_url) or None, "target_language": s.target_language,
                "sts_url": redact_url(s.sts_url), "passthrough": s.passthrough, "segment_s": s.segment_s,
                "output_delay_s": s.delay_s, "keep_original": s.keep_original,
            },
        )  # fmt: skip
        sender = asyncio.get_running_loop().create_task(self.session.run(), name="sts-sender")
        try:
            code = await self.pipeline.run()
            self.recorder.output_state = OutputState.FINISHED if code == 0 else OutputState.FAILED
            if code == ExitCode.OK and self._fatal is None and not s.passthrough:
                await self._end_stream()
        finally:
            for task in (sender, self._drain_task):
                if task is not None:
                    task.cancel()
            await self.session.close()
            self.recorder.close()
            await server.close()
        if self._fatal is not None:
            code = int(self._fatal)
        self.log.info("worker exiting", ctx={"exit_code": code, **self._summary()})
        return code

    async def _end_stream(self) -> None:
        """stream:end; while draining, within what is left of the drain."""
        if self._drain_deadline is None:
            await self.session.end()
            return
        left_s = max(0.0, self._drain_deadline - self.clock.monotonic())
        if not await wait_within(self.clock, self.session.end(), left_s):
            self.log.warning("drain timed out before stream:complete")

    def _add_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, exitcodes.ORPHAN_SIGNAL):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass

    def _on_signal(self, sig: int) -> None:
        """First SIGTERM/SIGINT: drain (stop reading, let the fragments in flight finish and the
        output write what it buffered, up to D), bounded by `drain_timeout_s`. A second signal,
        `exitcodes.ORPHAN_SIGNAL` (the orchestrator died) or no drain configured: stop now (the output is
        closed where it is)."""
        name = signal.Signals(sig).name
        drain_s = self.settings.drain_s
        if self._drain_deadline is None and drain_s > 0 and sig != exitcodes.ORPHAN_SIGNAL:
            self._drain_deadline = self.clock.monotonic() + drain_s
            ctx = {"signal": name, "drain_timeout_s": drain_s, "inflight": self.session.tracker.inflight}
            self.log.info("signal received: draining", ctx=ctx)
            self.pipeline.request_stop(drain=True)
            self._drain_task = asyncio.get_running_loop().create_task(self._cut_drain(), name="drain-deadline")
            return
        self.log.warning("signal received: stopping now", ctx={"signal": name})
        self.pipeline.request_stop(drain=False)

    async def _cut_drain(self) -> None:
        await self.clock.sleep(self.settings.drain_s)
        self.log.warning("drain timed out: output cut", ctx={"drain_timeout_s": self.settings.drain_s})
        self.pipeline.request_stop(drain=False)

    def _fail(self, code: ExitCode, message: str, **ctx: Any) -> None:
        if self._fatal is None:
            self._fatal = code
            self.log.error(message, ctx={"exit_code": int(code), **ctx})
        self.pipeline.request_stop(drain=False)

    # -- reporting ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            **self.recorder.health(self.session.status(), failing=self._fatal is not None),
            "target_language": self.settings.target_language,
            "original": str(self._original_sound()),
            **self.control.health(),
        }

    def _original_sound(self) -> OriginalSound:
        """Where the original sound goes (`--keep-original`): off, track, own_output, failed."""
        if self.recorder.original_failed:
            return OriginalSound.FAILED
        output = self.pipeline.output
        return output.original_sound if output is not None else OriginalSound.OFF

    def _summary(self) -> dict[str, Any]:
        st = self.session.tracker.stats()
        stats = self.pipeline.stats
        return {
            "sent": st.sent,
            "processed": st.processed,
            "fallback": st.fallback,
            "segments": stats.segments_created,
            "output": dict(stats.segments_output),
            "reasons": dict(stats.reasons),
        }
