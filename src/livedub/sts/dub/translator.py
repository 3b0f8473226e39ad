"""Machine translation: the `Translator` protocol and the Apertium engine.

`ApertiumTranslator` keeps ONE long-running pipeline per language pair: the commands of
`<modes_dir>/<pair>.mode` (e.g. `eng-spa`) started once, each with `-z` (null-flush), chained by
pipes. A sentence is written as `text\\n\\0` and the answer read up to the next `\\0` (≈ 3 ms,
instead of ≈ 330 ms for a new `apertium` call). If the pipeline dies it is restarted on the next
call. Unknown-word marks are switched off (`-n`, like `apertium -u`); stray marks are stripped.
Thread-safe: one lock per pipeline (calls are short).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from pathlib import Path
from typing import IO, Protocol

from livedub.sts.dub.errors import StageFailure

APERTIUM_MODES_DIR = Path("/usr/share/apertium/modes")

# ISO 639-1 (what stream:init carries) -> Apertium's ISO 639-3 codes.
ISO3: dict[str, str] = {
    "en": "eng",
    "es": "spa",
    "ca": "cat",
    "gl": "glg",
    "eo": "epo",
    "fr": "fra",
    "de": "deu",
    "it": "ita",
    "pt": "por",
}

# Characters that are markup in Apertium's stream format (escaped with a backslash).
_SPECIAL = re.compile(r"([\[\]\\^$/@*<>{}#|])")
_MARKS = re.compile(r"[*#@~]")


class Translator(Protocol):
    """Text in the source language -> text in the target language."""

    def pairs(self) -> list[tuple[str, str]]:
        """The (source, target) ISO 639-1 pairs this engine can translate."""
        ...

    def translate(self, text: str, source: str, target: str) -> str: ...

    def close(self) -> None: ...


def mode_name(source: str, target: str) -> str:
    return f"{ISO3.get(source, source)}-{ISO3.get(target, target)}"


class _Pipeline:
    """The processes of one Apertium mode, chained with pipes, in null-flush mode."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def start(self) -> None:
        self.stop()
        prev: IO[bytes] | None = None
        for i, cmd in enumerate(self.commands):
            last = i == len(self.commands) - 1
            proc = subprocess.Popen(
                cmd,
                stdin=prev if prev is not None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            if prev is not None:
                prev.close()  # the child holds it now
            prev = proc.stdout if not last else None
            self.procs.append(proc)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()
        self.procs = []

    def call(self, text: str) -> str:
        if not self.alive():
            self.start()
        first, last = self.procs[0], self.procs[-1]
        assert first.stdin is not None and last.stdout is not None
        first.stdin.write(text.encode() + b"\n\0")
        first.stdin.flush()
        out = bytearray()
        while True:
            chunk = os.read(last.stdout.fileno(), 65536)
            if not chunk:
                raise OSError("apertium pipeline closed its output")
            out += chunk
            if out.endswith(b"\0"):
                break
        return out[:-1].decode(errors="replace")


class ApertiumTranslator:
    """Apertium, one long-running null-flush pipeline per language pair (started lazily)."""

    def __init__(self, modes_dir: Path = APERTIUM_MODES_DIR) -> None:
        self.modes_dir = modes_dir
        self._pipelines: dict[str, _Pipeline] = {}
        self._lock = threading.Lock()

    def pairs(self) -> list[tuple[str, str]]:
        back = {v: k for k, v in ISO3.items()}
        found: list[tuple[str, str]] = []
        if not self.modes_dir.is_dir():
            return found
        for path in sorted(self.modes_dir.glob("*.mode")):
            parts = path.stem.split("-")
            if len(parts) == 2 and parts[0] in back and parts[1] in back:
                found.append((back[parts[0]], back[parts[1]]))
        return found

    def commands(self, source: str, target: str) -> list[list[str]]:
        """The pipeline of a mode file, each module with `-z`, unknown-word marks off."""
        path = self.modes_dir / f"{mode_name(source, target)}.mode"
        text = path.read_text().replace("$1", "-n").replace("$2", "")
        return [[*shlex.split(stage)[:1], "-z", *shlex.split(stage)[1:]] for stage in text.split("|")]

    def _pipeline(self, source: str, target: str) -> _Pipeline:
        key = mode_name(source, target)
        with self._lock:
            pipe = self._pipelines.get(key)
            if pipe is None:
                try:
                    pipe = _Pipeline(self.commands(source, target))
                except OSError as exc:
                    raise StageFailure("translation", f"no Apertium mode {key}: {exc}") from exc
                self._pipelines[key] = pipe
            return pipe

    def translate(self, text: str, source: str, target: str) -> str:
        text = " ".join(text.split())
        if not text:
            return ""
        pipe = self._pipeline(source, target)
        escaped = _SPECIAL.sub(r"\\\1", text)
        with pipe.lock:
            try:
                raw = pipe.call(escaped)
            except (OSError, ValueError) as exc:
                pipe.stop()  # restarted on the next call
                raise StageFailure("translation", f"apertium failed: {exc}") from exc
        return " ".join(_MARKS.sub("", raw.replace("\\", "")).split())

    def close(self) -> None:
        with self._lock:
            for pipe in self._pipelines.values():
                pipe.stop()
            self._pipelines.clear()
