"""The worker's media path (PyAV only): live input, exact audio segments, one continuous AAC
encoder, and a live output paced at a constant delay behind the input (docs/media.md).

Public API for the worker:
- `MediaSettings` — every knob, with the spec's defaults.
- `MediaPipeline(settings, observer, on_segment=hook).run() -> exit code`; `run_passthrough`.
- `Segment` (id, stream_id, batch, t0_ns, n_samples, pcm, video_packets, audio) and
  `SegmentAudio` (`set_dubbed`, `set_fallback`, `take`, `taken`, `deadline_wall`).
- `encode_pcm` / `decode_fragment` / `fit_to_length` for fragments on the wire,
  `DubbedAudioRejected` for unusable dubbed audio.
- `MediaObserver` (protocol), `NullObserver`, `InputState`.

Tools: `fixture.make_fixture`, `analyze.analyze`, `publish.publish`.
"""

from livedub.media.audio import (
    decode_audio,
    decode_fragment,
    encode_pcm,
    fit_to_length,
    resample_pcm,
)
from livedub.media.errors import (
    DubbedAudioRejected,
    InputUnavailable,
    InvalidStreamId,
    MediaError,
    NoAudioTrack,
    OutputFailed,
)
from livedub.media.observer import InputState, MediaObserver, NullObserver, WriteErrorKind
from livedub.media.pipeline import MediaPipeline, PipelineStats, SegmentHook, run_passthrough
from livedub.media.segment import Segment, SegmentAudio, VideoPacket
from livedub.media.settings import (
    MediaSettings,
    TransportFormat,
    segment_samples,
    validate_stream_id,
)

__all__ = [
    "DubbedAudioRejected",
    "InputState",
    "InputUnavailable",
    "InvalidStreamId",
    "MediaError",
    "MediaObserver",
    "MediaPipeline",
    "MediaSettings",
    "NoAudioTrack",
    "NullObserver",
    "OutputFailed",
    "PipelineStats",
    "Segment",
    "SegmentAudio",
    "SegmentHook",
    "TransportFormat",
    "VideoPacket",
    "WriteErrorKind",
    "decode_audio",
    "decode_fragment",
    "encode_pcm",
    "fit_to_length",
    "resample_pcm",
    "run_passthrough",
    "segment_samples",
    "validate_stream_id",
]
