"""Subprocess entry point of the E2E recorder: `python -m tests.e2e.helpers.recorder URL OUT`.
See `livedub.media.record`."""

from __future__ import annotations

import sys
from pathlib import Path

from livedub.media.record import record

if __name__ == "__main__":
    code = record(sys.argv[1], Path(sys.argv[2]))
    if code:
        sys.stderr.write(f"recorder: {sys.argv[1]} ended with code {code}\n")
    sys.exit(code)
