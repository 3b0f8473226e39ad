"""`WorkerSettings` nests the media path's settings: one `MediaSettings`, built and validated with
the worker's own (a bad combination is a usage error at start, not a crash later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.media.settings import MediaSettings
from livedub.typed import ValidationError, fields_of
from livedub.worker.config import MEDIA_FIELDS, WorkerSettings


def test_the_media_settings_are_the_workers_own() -> None:
    s = WorkerSettings(
        stream_id="s1", segment_s=2.0, fragment_timeout_s=3.0, segment_dir="/tmp/segs", paced=False
    )
    media = s.media
    assert isinstance(media, MediaSettings) and media is s.media, "built once"
    assert all(getattr(media, name) == getattr(s, name) for name in MEDIA_FIELDS)
    assert (media.sts_timeout_s, media.output_delay_s, media.segment_dir) == (
        3.0,
        5.0,
        Path("/tmp/segs"),
    )
    assert media.unpaced_wait_s == (s.max_inflight + 2) * (3.0 + 1.0)
    assert WorkerSettings(passthrough=True).media.unpaced_wait_s == 0.0


def test_shared_names_exist_on_both_models() -> None:
    assert set(MEDIA_FIELDS) <= {f.name for f in fields_of(WorkerSettings)} & {
        f.name for f in fields_of(MediaSettings)
    }


def test_a_bad_media_combination_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="output_delay_s must be larger than segment_s"):
        WorkerSettings(segment_s=10.0, output_delay_s=5.0)
