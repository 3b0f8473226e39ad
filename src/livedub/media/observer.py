"""How the media path reports what it does: a `MediaObserver` protocol with a no-op default.

The worker implements it to update metrics (`worker_av_sync_delta_ms`, fallback counters, ...).
The pipeline calls every method on the asyncio event-loop thread (events from the output thread
are marshalled there), so an implementation may touch asyncio objects; it must return quickly
and must never raise (exceptions are logged and swallowed).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from livedub.media.segment import Segment


class InputState(StrEnum):
    CONNECTING = "connecting"
    READING = "reading"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    ENDED = "ended"


class WriteErrorKind(StrEnum):
    """What a non-fatal write failure (`on_write_error`) was about."""

    SEGMENT_FILE = "segment_file"  # a segment file (segment_dir)
    ORIGINAL_OUTPUT = "original_output"  # the original programme's own output (keep_original, FLV/RTMP)


class MediaObserver(Protocol):
    def on_segment_created(self, segment: Segment) -> None:
        """A complete segment exists (before the `on_segment` hook runs)."""

    def on_segment_output(self, segment: Segment, source: str, reason: str | None) -> None:
        """The output took the segment's audio: source "dubbed" | "original" | "silence".

        `reason` says why it is not dubbed: the fallback reason set by the worker
        ("circuit_open", "timeout", ...), "deadline" (nothing arrived in time), "passthrough",
        "short_tail", or "input_late" (the segment itself arrived after its deadline).
        """

    def on_av_sync_delta(self, segment: Segment, delta_ms: float) -> None:
        """Per segment: output audio timeline minus the input's audio timestamps (ms)."""

    def on_output_delay(self, delay_s: float) -> None:
        """Measured delay of the output behind the input timeline (paced mode, per segment)."""

    def on_input_state(self, state: InputState, detail: str | None) -> None:
        """Input connection state changes."""

    def on_write_error(self, kind: str, error: str) -> None:
        """A non-fatal write failure (`WriteErrorKind`: a segment file, or the original's own
        output, which is then given up); dubbing and the dubbed output continue."""

    def on_drift_correction(self, deviation_ms: float, samples: int) -> None:
        """A slew correction episode started (samples != 0, signed: +insert/-drop per frame)
        or ended (samples == 0)."""

    def on_discontinuity(self, kind: str, jump_ms: float) -> None:
        """An input timestamp discontinuity (kind "audio"/"video") was rebased."""

    def on_late_segment(self, segment: Segment) -> None:
        """A segment reached the output after its deadline (input too slow for the delay)."""

    def on_mirror_state(self, state: str, detail: str | None) -> None:
        """The mirror output (`mirror_output_url`) changed state (`output.MirrorState`):
        waiting, writing, failed (with why; retried at a later keyframe), finished."""


class NullObserver:
    """Observer that ignores everything (the default)."""

    def on_segment_created(self, segment: Segment) -> None:
        pass

    def on_segment_output(self, segment: Segment, source: str, reason: str | None) -> None:
        pass

    def on_av_sync_delta(self, segment: Segment, delta_ms: float) -> None:
        pass

    def on_output_delay(self, delay_s: float) -> None:
        pass

    def on_input_state(self, state: InputState, detail: str | None) -> None:
        pass

    def on_write_error(self, kind: str, error: str) -> None:
        pass

    def on_drift_correction(self, deviation_ms: float, samples: int) -> None:
        pass

    def on_discontinuity(self, kind: str, jump_ms: float) -> None:
        pass

    def on_late_segment(self, segment: Segment) -> None:
        pass

    def on_mirror_state(self, state: str, detail: str | None) -> None:
        pass
