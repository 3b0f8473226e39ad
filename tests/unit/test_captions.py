"""Unit: the worker's WebVTT caption writer (times, escaping, live appends, original segments)."""

from __future__ import annotations

from pathlib import Path

from livedub.worker.captions import CaptionWriter, cue_text, vtt_time

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
