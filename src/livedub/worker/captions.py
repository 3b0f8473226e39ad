"""Live WebVTT captions of what the STS returned, on the OUTPUT timeline.

`--captions PREFIX` writes `PREFIX.<source>.vtt` (the transcript) and `PREFIX.<target>.vtt` (the
translation). The output is the input timeline shifted by the constant delay D, so a segment
plays in the output at its own `t0_ns`. When the STS sent speech spans (`segments`, a livedub
extension of `fragment:processed`) there is one cue per span, at segment start + span times
(where that speech plays in the output: the dub backend fits the voice to the source span);
otherwise (echo, older STS) one cue spans the whole segment. Cues are appended (and flushed) as segments are output, in output order, so a player can follow
the files live. A segment that goes out with its original audio gets no translated cue (its
transcript cue is kept when the STS sent one). Texts are remembered per segment id between the
STS answer and the segment's output. Never raises into the caller: a write error is logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from livedub.protocol import SpeechSegment

_log = logging.getLogger(__name__)

WEBVTT_HEADER = "WEBVTT\n\n"
NS_PER_MS = 1_000_000


def vtt_time(ns: int) -> str:
    """`HH:MM:SS.mmm` of a position in nanoseconds."""
    ms = max(0, round(ns / NS_PER_MS))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cue_text(text: str) -> str:
    """One-line cue payload: no blank lines, no `-->`, no markup characters."""
    text = " ".join(text.split()).replace("-->", "->")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Cue:
    """One caption: output-timeline start/end (ns), transcript and translation."""

    start_ns: int
    end_ns: int
    transcript: str
    translation: str


@dataclass(frozen=True)
class _Texts:
    transcript: str
    translation: str
    spans: tuple[SpeechSegment, ...] = ()


def segment_cues(
    start_ns: int,
    end_ns: int,
    transcript: str,
    translation: str,
    spans: Sequence[SpeechSegment] = (),
) -> list[Cue]:
    """The cues of a segment output at `start_ns`..`end_ns`: one per speech span (span times
    relative to the segment start, clamped to the segment), or one for the whole segment when
    the STS sent no spans."""
    if not spans:
        return [Cue(start_ns, end_ns, transcript, translation)]
    cues = []
    for span in spans:
        begin = min(end_ns, start_ns + span.start_ms * NS_PER_MS)
        finish = min(end_ns, max(begin, start_ns + span.end_ms * NS_PER_MS))
        cues.append(Cue(begin, finish, span.text, span.translated_text))
    return cues


class _VttFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.file: TextIO = path.open("w", encoding="utf-8")
        self.file.write(WEBVTT_HEADER)
        self.file.flush()

    def cue(self, start_ns: int, end_ns: int, text: str) -> None:
        self.count += 1
        self.file.write(
            f"{self.count}\n{vtt_time(start_ns)} --> {vtt_time(end_ns)}\n{cue_text(text)}\n\n"
        )
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CaptionWriter:
    """Two WebVTT files (source and target language), appended cue by cue; with `source`
    False only the target one (a stream's other languages: its first one writes the transcript)."""

    def __init__(
        self, prefix: str, source_language: str, target_language: str, *, source: bool = True
    ) -> None:
        self.source_path = Path(f"{prefix}.{source_language}.vtt")
        self.target_path = Path(f"{prefix}.{target_language}.vtt")
        self.target_path.parent.mkdir(parents=True, exist_ok=True)
        self._source = _VttFile(self.source_path) if source else None
        self._target = _VttFile(self.target_path)
        self._texts: dict[str, _Texts] = {}
        self._lock = threading.Lock()  # the output thread writes, the event loop remembers
        self._failed = False

    def remember(
        self,
        segment_id: str,
        transcript: str | None,
        translation: str | None,
        spans: Sequence[SpeechSegment] | None = None,
    ) -> None:
        """The STS's texts (and speech spans, if sent) for a segment, kept until it is output."""
        if transcript or translation:
            with self._lock:
                self._texts[segment_id] = _Texts(
                    transcript or "", translation or "", tuple(spans or ())
                )

    def segment_output(self, segment_id: str, start_ns: int, end_ns: int, dubbed: bool) -> None:
        """A segment went out (dubbed or original): write its cues, if any."""
        with self._lock:
            texts = self._texts.pop(segment_id, None)
            if texts is None or self._failed:
                return
            try:
                for cue in segment_cues(
                    start_ns, end_ns, texts.transcript, texts.translation, texts.spans
                ):
                    if self._source is not None and cue.transcript.strip():
                        self._source.cue(cue.start_ns, cue.end_ns, cue.transcript)
                    if dubbed and cue.translation.strip():
                        self._target.cue(cue.start_ns, cue.end_ns, cue.translation)
            except OSError as exc:
                self._failed = True
                _log.warning("captions: write failed, no more cues", extra={"ctx": {"error": str(exc)}})

    def close(self) -> None:
        with self._lock:
            if self._source is not None:
                self._source.close()
            self._target.close()
