"""Process exit codes of every livedub command, listed once (docs/operations.md mirrors this).

The orchestrator restarts a worker that exits non-zero, with backoff; codes tell an operator why.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected error (a bug): see the traceback in the log
    USAGE = 2  # bad flags / settings
    INPUT_UNAVAILABLE = 10  # input could not be opened / re-opened within its retry budget
    NO_AUDIO_TRACK = 11  # "audio track required for dubbing"
    OUTPUT_FAILED = 12  # output could not be opened or written
    STS_UNAVAILABLE = 13  # STS reconnection attempts exhausted
    STS_AUTH_FAILED = 14  # STS refused our token (AUTH_FAILED): restarting will not help
    STS_PROTOCOL = 15  # STS never sent stream:ready (an INVALID_CONFIG refusal: output original)
