"""glibc malloc tuned for a small resident set in a worker process (issue 16: RSS per worker).

By default glibc gives each thread that allocates (the input reader, the output writer, asyncio's
executor, libav's own threads) an arena of its own, keeps up to a dynamic threshold (growing to
32 MB) of freed memory at the top of each heap, and serves blocks up to that threshold from the
heap, where a freed block's pages stay resident. A worker allocates the same few sizes over and over
(packets, PCM buffers, encoder frames), so one arena, a 128 KiB trim threshold and big blocks from
their own mmap give the pages back at no measurable CPU cost. Measured (passthrough worker, 720p30,
RSS after 25 s): 96 → 90 MB.

`WORKER_MALLOC_TUNING=false` (`--no-malloc-tuning`) leaves malloc alone; a glibc env var that is
set (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`) wins over its value here.

`PYTHON_FLAGS`: the interpreter flags a worker is started with (the orchestrator's worker command,
the benchmark's workers). `-OO` leaves out docstrings (and `assert`s: here they only narrow types)
of the ~600 modules a worker imports: their code objects are a third of its Python memory.
Measured (720p30, 6 s segments, D = 7 s, RSS after 35 s, the same run): passthrough 89 → 85 MB,
flac 93 → 90, m4a 96 → 91. `-X no_debug_ranges` leaves out the column positions of every
instruction (tracebacks lose their `^^^` markers, nothing else): ≈ 0.5 MB more. A worker started
by hand without them works the same.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: interpreter flags of a worker process (see the module docstring)
PYTHON_FLAGS: tuple[str, ...] = ("-OO", "-X", "no_debug_ranges")


def worker_python_argv(module: str = "livedub") -> list[str]:
    """`python <PYTHON_FLAGS> -m livedub`: the command a worker's `worker …` arguments follow
    (`module`: another program run as a worker is, e.g. the benchmark's floor worker)."""
    return [sys.executable, *PYTHON_FLAGS, "-m", module]

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: (mallopt parameter, value, the glibc env var that, when set, wins)
TUNING: tuple[tuple[int, int, str], ...] = (
    (M_ARENA_MAX, 1, "MALLOC_ARENA_MAX"),
    (M_TRIM_THRESHOLD, 128 * 1024, "MALLOC_TRIM_THRESHOLD_"),
    (M_MMAP_THRESHOLD, 128 * 1024, "MALLOC_MMAP_THRESHOLD_"),
)


def tune_malloc(env: dict[str, str] | None = None) -> list[str]:
    """Apply `TUNING` with mallopt; returns the env var names of the parameters set (empty where the
    C library has no mallopt, e.g. musl or macOS). Call once, early, before the worker's threads."""
    env = dict(os.environ) if env is None else env
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return [name for param, value, name in TUNING if name not in env and mallopt(param, value) == 1]
