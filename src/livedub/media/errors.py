"""Typed errors of the media path, each carrying the process exit code it maps to.

The pipeline turns these into exit codes (`livedub.exitcodes.ExitCode`); nothing else in the
media package calls `sys.exit`. Never raise a bare `Exception` for an expected media failure.
"""

from __future__ import annotations

from typing import Literal

from livedub.exitcodes import ExitCode

NO_AUDIO_MESSAGE = "audio track required for dubbing"

RejectReason = Literal["duration_mismatch", "undecodable", "empty", "bad_shape", "unsupported_format"]


class MediaError(Exception):
    """Base class; `exit_code` says how a process using the media path should exit."""

    exit_code: ExitCode = ExitCode.ERROR


class InputUnavailable(MediaError):
    """The input could not be opened (or re-opened) within its retry budget."""

    exit_code = ExitCode.INPUT_UNAVAILABLE


class NoAudioTrack(MediaError):
    """The input has no audio stream: there is nothing to dub."""

    exit_code = ExitCode.NO_AUDIO_TRACK

    def __init__(self, url: str = "") -> None:
        super().__init__(f"{NO_AUDIO_MESSAGE}: {url}" if url else NO_AUDIO_MESSAGE)
        self.url = url


class OutputFailed(MediaError):
    """The output could not be opened or written."""

    exit_code = ExitCode.OUTPUT_FAILED


class InvalidStreamId(ValueError):
    """A stream id that does not match `[A-Za-z0-9_-]{1,64}` (it would be unsafe in a path)."""


class DubbedAudioRejected(MediaError):
    """Dubbed audio that cannot be used for a segment; the segment falls back to its original audio.

    `reason` is one of `duration_mismatch`, `undecodable`, `empty`, `bad_shape`,
    `unsupported_format` — a short label fit for a metric.
    """

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason
        self.detail = detail
