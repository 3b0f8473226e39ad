"""Outcomes: how each segment and fragment ended, as typed values, and the one place that turns
them into metrics, log lines and `/health`.

`Resolution` is what `DubbingSession.dub(segment)` decided for a segment (dubbed, or original with
one `FallbackReason`), decided once, when the session decides it. `OutcomeRecorder` records what
the session and the media path report: one method per event, each updating the metrics and writing
its log line (the event names are the worker's log contract: docs/operations.md). It is the media
path's `MediaObserver` (the sink's report of each segment output arrives here, on the event loop)
and it assembles `/health`. It decides nothing and never raises into its callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livedub.log import bind
from livedub.media.observer import InputState, WriteErrorKind
from livedub.media.output import MirrorState
from livedub.media.segment import Segment
from livedub.reasons import FallbackReason, RejectedReason
from livedub.worker.breaker import BreakerTransition
from livedub.worker.captions import CaptionWriter
from livedub.worker.metrics import HealthStatus, WorkerMetrics

__all__ = ["FallbackReason", "OutcomeRecorder", "OutputState", "Resolution", "RejectedReason"]

_log = logging.getLogger(__name__)

INPUT_NOT_STARTED = "starting"  # /health `input` and its metric before the input's first state

_INPUT_STATE_METRIC = {
    InputState.CONNECTING: "connecting",
    InputState.READING: "receiving",
    InputState.RECONNECTING: "reconnecting",
    InputState.FAILED: "failed",
    InputState.ENDED: "ended",
}


class OutputState(StrEnum):
    """The worker's output, as `/health` shows it (`output`)."""

    STARTING = "starting"
    WRITING = "writing"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Resolution:
    """A segment's audio as decided: dubbed (`reason` None), or original with its reason."""

    reason: FallbackReason | None = None

    @property
    def dubbed(self) -> bool:
        return self.reason is None

    @classmethod
    def fallback(cls, reason: FallbackReason) -> Resolution:
        return cls(FallbackReason(reason))


DUBBED = Resolution()


class OutcomeRecorder:
    """Metrics + log lines + `/health` of one worker.

    Args:
        stream_id: the stream (metric label and log context).
        metrics: where to count (default: a new `WorkerMetrics` on a private registry).
        captions: live WebVTT writer, fed with each applied result's texts and each segment output.
        segment_files: whether segment files are written (`/health` `segment_files`).
    """

    def __init__(
        self,
        stream_id: str,
        *,
        metrics: WorkerMetrics | None = None,
        captions: CaptionWriter | None = None,
        segment_files: bool = False,
        mirror: bool = False,
        on_texts: Callable[[str | None, str | None], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.metrics = metrics or WorkerMetrics(stream_id)
        self.captions = captions
        self.log = bind(_log, stream_id=stream_id)
        self.segment_files = segment_files
        self.output_state = OutputState.STARTING
        self.input_state: InputState | None = None  # None: no input event yet (INPUT_NOT_STARTED)
        self.write_errors = 0  # segment files that could not be written (dubbing continues)
        self.mirror_state = MirrorState.WAITING if mirror else MirrorState.OFF
        self.original_failed = False  # the original's own output was given up (--keep-original)
        self.on_texts = on_texts  # the last lines of /health (worker/control.py)

    # -- fragments (the session) -------------------------------------------------------------
    def segment_ready(self, segment: Segment, nbytes: int, *, remuxed: bool = False) -> None:
        """`remuxed`: the fragment is the input's own AAC packets, not a new encode."""
        self.log.info(
            "segment ready",
            ctx={"fragment_id": segment.id, "batch": segment.batch, "bytes": nbytes, "remuxed": remuxed},
        )

    def fragment_sent(self, segment: Segment, seq: int, probe: bool, held_ms: float) -> None:
        self.metrics.fragment_sent()
        self.log.info(
            "fragment sent",
            ctx={"fragment_id": segment.id, "sequence_number": seq, "batch": segment.batch,
                 "probe": str(probe).lower(), "held_ms": held_ms},
        )  # fmt: skip

    def fragment_send_failed(self, fid: str, error: str) -> None:
        self.log.warning("fragment send failed", ctx={"fragment_id": fid, "error": error})

    def fragment_fallback(self, fid: str, seq: int | None, reason: FallbackReason) -> None:
        """A sent fragment ended without dubbed audio (a timeout is a warning, the rest info)."""
        self.metrics.fragment_fallback()
        level = logging.WARNING if reason is FallbackReason.TIMEOUT else logging.INFO
        seq_ctx = {} if seq is None else {"sequence_number": seq}
        self.log.log(level, "fragment fallback", ctx={"fragment_id": fid, **seq_ctx, "reason": str(reason)})

    def fragment_applied(self, fid: str, seq: int, rtt_ms: float) -> None:
        self.metrics.fragment_processed(rtt_ms)
        self.log.info("fragment applied", ctx={"fragment_id": fid, "sequence_number": seq, "rtt_ms": round(rtt_ms, 1)})

    def applied_too_late(self, fid: str) -> None:
        """Decoded and resolved, but the output had already taken the original audio."""
        self.metrics.fragment_fallback()
        self.metrics.late_result()
        self.log.warning("fragment fallback", ctx={"fragment_id": fid, "reason": str(FallbackReason.DEADLINE)})

    def late_result(self, fid: str, status: str | None = None) -> None:
        self.metrics.late_result()
        self.log.warning("late result ignored", ctx={"fragment_id": fid, **({"status": status} if status else {})})

    def rejected(self, why: RejectedReason, message: str, /, **ctx: Any) -> None:
        self.metrics.rejected_result(str(why))
        self.log.warning(message, ctx=ctx)

    def sts_failed(self, fid: str, code: str, retryable: bool, message: str) -> None:
        self.log.warning(
            "STS failed fragment",
            ctx={"fragment_id": fid, "code": code, "retryable": str(retryable).lower(), "message": message[:200]},
        )

    def segment_fallback(self, segment: Segment, reason: FallbackReason) -> None:
        """A segment resolved to its original audio before it was sent (or instead of sending)."""
        self.log.info("segment fallback", ctx={"fragment_id": segment.id, "batch": segment.batch, "reason": str(reason)})

    def texts(self, segment: Segment, transcript: str | None, translated: str | None, spans: Any) -> None:
        if self.on_texts is not None:
            self.on_texts(transcript, translated)
        if self.captions is not None:
            self.captions.remember(segment.id, transcript, translated, spans)

    # -- STS link, breaker, gate, tracker ----------------------------------------------------
    def breaker_transition(self, t: BreakerTransition) -> None:
        self.metrics.set_breaker_state(int(t.new))

    def backpressure_event(self, action: str) -> None:
        self.metrics.backpressure_event(str(action))

    def inflight(self, count: int) -> None:
        self.metrics.set_inflight(count)

    def sts_connected(self, connected: bool) -> None:
        self.metrics.set_sts_connected(connected)

    def reconnection(self) -> None:
        self.metrics.reconnection()

    # -- MediaObserver (the sink's report of each segment, on the event loop) ----------------
    def on_segment_created(self, segment: Segment) -> None:
        pass

    def on_segment_output(self, segment: Segment, source: str, reason: str | None) -> None:
        self.metrics.segment_output("dubbed" if source == "dubbed" else "original")
        if self.captions is not None:
            self.captions.segment_output(segment.id, segment.t0_ns, segment.end_ns, source == "dubbed")
        if source != "dubbed" and reason != FallbackReason.SHORT_TAIL:  # a sub-second tail is never dubbed
            # the reason as decided (SegmentAudio.waiting_for / set_fallback), never re-read
            # from the breaker or gate now, up to D seconds later
            self.metrics.fallback(reason or FallbackReason.DEADLINE)

    def on_av_sync_delta(self, segment: Segment, delta_ms: float) -> None:
        self.metrics.set_av_sync_delta_ms(delta_ms)

    def on_output_delay(self, delay_s: float) -> None:
        self.metrics.set_output_delay_ms(delay_s * 1000.0)
        self.output_state = OutputState.WRITING

    def on_input_state(self, state: InputState, detail: str | None) -> None:
        self.input_state = state
        self.metrics.set_input_state(_INPUT_STATE_METRIC.get(state, INPUT_NOT_STARTED))

    def on_write_error(self, kind: str, error: str) -> None:
        if kind == WriteErrorKind.ORIGINAL_OUTPUT:  # logged by the output; dubbing goes on
            self.original_failed = True
            self.metrics.original_output_failed()
            return
        self.write_errors += 1
        self.log.warning("write error (dubbing continues)", ctx={"kind": kind, "error": error[:200]})

    def on_mirror_state(self, state: str, detail: str | None) -> None:
        self.mirror_state = MirrorState(state)
        if self.mirror_state == MirrorState.FAILED:
            self.metrics.mirror_failure()

    def on_drift_correction(self, deviation_ms: float, samples: int) -> None:
        pass  # logged by the media path

    def on_discontinuity(self, kind: str, jump_ms: float) -> None:
        pass  # logged by the media path

    def on_late_segment(self, segment: Segment) -> None:
        pass  # logged by the media path

    def close(self) -> None:
        if self.captions is not None:
            self.captions.close()

    # -- /health -----------------------------------------------------------------------------
    def health(self, session: Mapping[str, Any], *, failing: bool) -> dict[str, Any]:
        """The `/health` document: this recorder's view plus the session's (`sts`, `breaker`,
        `inflight`, `backpressure`)."""
        files: str = "off"
        if self.segment_files:
            files = HealthStatus.FAILING if self.write_errors else HealthStatus.OK
        return {
            "status": HealthStatus.FAILING if failing else HealthStatus.OK,
            "stream_id": self.stream_id,
            "input": str(self.input_state or INPUT_NOT_STARTED),
            "sts": session["sts"],
            "output": str(self.output_state),
            "breaker": session["breaker"],
            "inflight": session["inflight"],
            "backpressure": session["backpressure"],
            "segment_files": str(files),
            "segment_file_errors": self.write_errors,
            "mirror": str(self.mirror_state),
        }
