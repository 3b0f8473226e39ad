"""The one exception of the dub engines: a stage failed (answered `failed` with that stage)."""

from __future__ import annotations

from livedub.protocol.constants import Stage


class StageFailure(Exception):
    """An engine could not do its stage (`asr`, `translation`, `tts`) for this input."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message
