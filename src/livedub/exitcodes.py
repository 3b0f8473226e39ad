"""Process exit codes of every livedub command, listed once (docs/operations.md mirrors this).

The orchestrator restarts a worker that exits non-zero, with backoff; codes tell an operator why.
"""

from __future__ import annotations

import signal
from enum import IntEnum

#: The parent-death signal the orchestrator gives its workers (Linux `PR_SET_PDEATHSIG`): a worker
#: whose orchestrator died stops at once, without draining, so that the worker a restarted
#: orchestrator starts for the same stream can publish its output path (SIGTERM drains instead).
ORPHAN_SIGNAL = signal.SIGHUP


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
