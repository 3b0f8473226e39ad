"""Drop the page cache of the shared libraries the benchmark's processes map, before it starts.

Why: a process's RSS counts the library pages it maps, and on this kernel (6.18, ext4 with large
folios) how many it maps depends on how a library got into the page cache. A library pip has just
written sits in large folios, and a process that maps it faults in whole folios; one read back from
disk comes in smaller pieces. The same worker measured 110 MB right after `make setup` and 89 MB
once the cache had been dropped (`echo 3 > /proc/sys/vm/drop_caches`); the relay's ffmpeg (apt's
libraries, not just written) 54 MB either way. So the benchmark would judge how recently pip ran.
This evicts (`posix_fadvise(POSIX_FADV_DONTNEED)`: clean pages no process maps; nothing else is
touched, no root needed) every shared object under the venv and every library ffmpeg links, so
that workers and relays alike map libraries read back from disk.

Standard library only, run with `python -S` (the Makefile's bench targets do, before `bench.run`):
a process that imported PyAV or numpy would hold their pages and keep them from being evicted.

    python -S -m bench.cold_libs .venv
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
LDD_PATH = re.compile(r"=>\s+(/\S+)")


def shared_objects(root: Path) -> Iterator[Path]:
    """Every shared object (`*.so`, `*.so.N…`) under `root`, symlinks not followed."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if SHARED_OBJECT.search(name):
                yield Path(dirpath) / name


def linked_libraries(binary: str) -> list[Path]:
    """The libraries `binary` links (ldd), itself included; [] when ldd or the binary is missing."""
    path = shutil.which(binary)
    ldd = shutil.which("ldd")
    if path is None or ldd is None:
        return []
    try:
        out = subprocess.run([ldd, path], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(path), *(Path(m) for m in LDD_PATH.findall(out))]


def evict(paths: Iterable[Path]) -> tuple[int, int]:
    """Advise the kernel to drop each file's cached pages; returns (files, bytes) advised."""
    files = size = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            size += os.fstat(fd).st_size
            files += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return files, size


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path(sys.prefix)]
    os.sync()  # only clean pages can be dropped
    paths: list[Path] = [p for r in roots for p in shared_objects(r)]
    paths += linked_libraries("ffmpeg") + [Path(os.path.realpath(sys.executable))]
    files, size = evict(dict.fromkeys(paths))
    sys.stdout.write(f"cold libraries: page cache of {files} shared objects ({size / 2**20:.0f} MB) dropped\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
