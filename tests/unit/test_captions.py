"""Unit: the worker's WebVTT caption writer (times, escaping, live appends, original segments)."""

from __future__ import annotations

from pathlib import Path

from livedub.protocol import SpeechSegment
from livedub.worker.captions import CaptionWriter, Cue, cue_text, segment_cues, vtt_time

S = 1_000_000_000


def test_vtt_time_and_cue_text() -> None:
    assert vtt_time(0) == "00:00:00.000"
    assert vtt_time(3_723 * S + 456_000_000) == "01:02:03.456"
    assert cue_text("a  <b>\n\n c --> d & e") == "a &lt;b&gt; c -&gt; d &amp; e"


def test_cues_are_appended_live_and_original_segments_get_no_translation(tmp_path: Path) -> None:
    writer = CaptionWriter(str(tmp_path / "sub" / "show"), "en", "es")
    en, es = tmp_path / "sub" / "show.en.vtt", tmp_path / "sub" / "show.es.vtt"
    assert en.read_text() == es.read_text() == "WEBVTT\n\n"
    writer.remember("seg-0", "Hello there.", "Hola.")
    writer.remember("seg-1", "Late one.", "Tarde.")
    writer.remember("seg-2", "", "")  # no speech: nothing remembered
    writer.segment_output("seg-0", 0, 6 * S, dubbed=True)
    assert en.read_text().endswith("1\n00:00:00.000 --> 00:00:06.000\nHello there.\n\n")  # flushed
    assert es.read_text().endswith("1\n00:00:00.000 --> 00:00:06.000\nHola.\n\n")
    writer.segment_output("seg-1", 6 * S, 12 * S, dubbed=False)  # went out original
    writer.segment_output("seg-2", 12 * S, 18 * S, dubbed=True)
    writer.segment_output("never-remembered", 18 * S, 24 * S, dubbed=True)
    writer.close()
    assert en.read_text().count(" --> ") == 2
    assert "00:00:06.000 --> 00:00:12.000\nLate one." in en.read_text()
    assert es.read_text().count(" --> ") == 1


def test_one_cue_per_speech_span_at_its_output_time(tmp_path: Path) -> None:
    writer = CaptionWriter(str(tmp_path / "show"), "en", "es")
    spans = [
        SpeechSegment(start_ms=1_000, end_ms=2_500, text="One.", translated_text="Uno."),
        SpeechSegment(start_ms=3_000, end_ms=9_000, text="Two.", translated_text="Dos."),
    ]
    writer.remember("seg-1", "One. Two.", "Uno. Dos.", spans)
    writer.remember("seg-2", "Echo.", "Eco.", None)  # no spans (echo, older STS)
    writer.segment_output("seg-1", 6 * S, 12 * S, dubbed=True)
    writer.segment_output("seg-2", 12 * S, 18 * S, dubbed=True)
    writer.close()
    en = (tmp_path / "show.en.vtt").read_text()
    es = (tmp_path / "show.es.vtt").read_text()
    assert "1\n00:00:07.000 --> 00:00:08.500\nOne.\n\n" in en
    assert "2\n00:00:09.000 --> 00:00:12.000\nTwo.\n\n" in en  # clamped to the segment end
    assert "3\n00:00:12.000 --> 00:00:18.000\nEcho.\n\n" in en  # per-segment fallback
    assert "1\n00:00:07.000 --> 00:00:08.500\nUno.\n\n" in es
    assert es.count(" --> ") == 3


def test_segment_cues_without_and_with_spans() -> None:
    assert segment_cues(0, 6 * S, "a", "b") == [Cue(0, 6 * S, "a", "b")]
    span = SpeechSegment(start_ms=7_000, end_ms=8_000, text="late", translated_text="tarde")
    assert segment_cues(0, 6 * S, "a", "b", [span]) == [Cue(6 * S, 6 * S, "late", "tarde")]
