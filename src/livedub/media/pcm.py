"""`Pcm`: the worker's audio samples, without numpy (issue 16: RSS per worker).

Interleaved signed 16-bit samples in the machine's byte order (libav's `s16`, little-endian on
every platform livedub runs on), `n` samples of `channels` each: the bytes a PyAV `s16` frame's
plane holds and a WAV file's data chunk carries. Immutable by convention: slicing shares the
bytes (a memoryview), nothing writes into a `Pcm` once it is made.

A worker never imports numpy: importing it costs a worker ~10 MB of its RSS (its extension
modules and the ~150 Python modules it loads), and the media path only cuts, joins and converts
samples, which bytes and libswresample (`livedub.media.audio.AudioConverter`) do. Code that computes on samples
(the STS's dub backend, analysis, tests) gets a read-only `(n, channels)` int16 array with
`numpy.asarray(pcm)` and makes a `Pcm` of any such array with `Pcm.of(array)` — numpy arrays,
like every 2-D int16 buffer, are accepted wherever a `Pcm` is taken.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Iterable
from typing import Any

SAMPLE_BYTES = 2  # s16
if sys.byteorder != "little":  # pragma: no cover - no such platform here
    raise ImportError("livedub.media.pcm assumes a little-endian machine (s16 = s16le)")


class Pcm:
    """`n` interleaved s16 samples of `channels` each (see the module docstring)."""

    __slots__ = ("_data", "channels")

    def __init__(self, data: bytes | bytearray | memoryview | mmap.mmap, channels: int) -> None:
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if len(view) % (SAMPLE_BYTES * channels):
            raise ValueError(f"{len(view)} bytes are not whole samples of {channels} channel(s)")
        self._data = view
        self.channels = channels

    # -- making one -----------------------------------------------------------------------
    @classmethod
    def of(cls, pcm: Any) -> Pcm:
        """`pcm` itself, or a `Pcm` of any 2-D int16 buffer `(n, channels)` (a numpy array:
        shared when C-contiguous, else copied). ValueError for anything else."""
        if isinstance(pcm, Pcm):
            return pcm
        try:
            view = memoryview(pcm)
        except TypeError as exc:
            raise ValueError(f"pcm must be int16 of shape (n, channels), got {type(pcm).__name__}") from exc
        shape = view.shape or ()
        if len(shape) != 2 or view.itemsize != SAMPLE_BYTES or view.format.lstrip("<=@") != "h":
            raise ValueError(f"pcm must be int16 of shape (n, channels), got {view.format!r} {shape}")
        channels = shape[1]
        if shape[0] == 0:
            return cls.zeros(0, channels)
        return cls(view.cast("B") if view.c_contiguous else view.tobytes(), channels)

    @classmethod
    def zeros(cls, n: int, channels: int) -> Pcm:
        """`n` samples of silence."""
        return cls(bytes(max(0, n) * channels * SAMPLE_BYTES), channels)

    @classmethod
    def concat(cls, parts: Iterable[Pcm], channels: int) -> Pcm:
        """The parts one after the other (one copy; a single part is returned as is)."""
        items = [p for p in parts if len(p)]
        if len(items) == 1 and items[0].channels == channels:
            return items[0]
        for p in items:
            if p.channels != channels:
                raise ValueError(f"cannot join {p.channels}-channel PCM to {channels}-channel PCM")
        return cls(b"".join(p._data for p in items), channels)

    # -- what it is -----------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Samples (per channel)."""
        return len(self._data) // (SAMPLE_BYTES * self.channels)

    @property
    def shape(self) -> tuple[int, int]:
        """`(n, channels)`, as the array it stands for."""
        return (self.n, self.channels)

    @property
    def nbytes(self) -> int:
        return len(self._data)

    @property
    def data(self) -> memoryview:
        """The bytes (read them, never write them)."""
        return self._data

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: slice) -> Pcm:
        """Samples `index` (a slice with step 1) as a `Pcm` sharing these bytes."""
        if not isinstance(index, slice):
            raise TypeError("Pcm takes a slice of samples; numpy.asarray(pcm) for anything else")
        start, stop, step = index.indices(self.n)
        if step != 1:
            raise ValueError("Pcm slices have step 1")
        frame = SAMPLE_BYTES * self.channels
        stop = max(start, stop)
        return Pcm(self._data[start * frame : stop * frame], self.channels)

    def tobytes(self) -> bytes:
        return self._data.tobytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pcm):
            return NotImplemented
        return self.channels == other.channels and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Pcm(n={self.n}, channels={self.channels})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        """A read-only int16 `(n, channels)` numpy view (numpy is imported here, never by a worker)."""
        import numpy as np

        arr = np.frombuffer(self._data, dtype=np.int16).reshape(self.n, self.channels)
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr
