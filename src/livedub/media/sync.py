"""A/V sync: keep the audio sample clock on the input's audio timestamps, by slewing only.

The output's audio PTS come from the sample clock and its video PTS from the input timeline, so
the only way the worker can lose sync is an input whose audio timestamps drift from its sample
count (a publisher whose audio clock runs fast or slow). `DriftCorrector` measures that
deviation on every decoded frame (averaged over a window), does nothing while it is within
`bound_ms`, and beyond it inserts or drops at most `max_slew` of each frame's samples (linear
interpolation, no click) until the deviation is back within `target_ms`. A timestamp gap far
beyond the bound (an outage after a reconnect) is filled with silence instead.

Pure logic on `Pcm`: no I/O, no clock. It never jumps the sample clock by more than
`max_slew` per frame except to fill/trim a gap larger than `gap_fill_ms`. Slewing interpolates
with numpy, imported on the first correction only: a worker whose input keeps its clock never
loads it (livedub.media.pcm).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from livedub.log import BoundLogger, bind
from livedub.media.pcm import Pcm
from livedub.media.timeline import NS_PER_S

CorrectionFn = Callable[[float, int], None]
GapFn = Callable[[int], None]


def slew_frame(pcm: Pcm | Any, new_len: int) -> Pcm:
    """Stretch/squeeze `pcm` (s16 `(n, ch)`) to `new_len` samples by linear interpolation."""
    pcm = Pcm.of(pcm)
    n = pcm.n
    if new_len == n or n == 0:
        return pcm
    if new_len <= 0:
        return pcm[:0]
    import numpy as np  # only once the input's clock drifts (see the module docstring)

    arr = np.asarray(pcm)
    src = np.linspace(0.0, n - 1, new_len)
    x = np.arange(n, dtype=np.float64)
    out = np.empty((new_len, pcm.channels), dtype=np.int16)
    for c in range(pcm.channels):
        out[:, c] = np.clip(np.rint(np.interp(src, x, arr[:, c].astype(np.float64))), -32768, 32767)
    return Pcm.of(out)


class DriftCorrector:
    """Slew decoded audio so its sample count follows its timestamps (see module docstring)."""

    def __init__(
        self,
        sample_rate: int,
        *,
        bound_ms: float = 20.0,
        target_ms: float = 5.0,
        max_slew: float = 0.005,
        window_frames: int = 24,
        gap_fill_ms: float = 100.0,
        on_correction: CorrectionFn | None = None,
        on_gap: GapFn | None = None,
        log: BoundLogger | None = None,
    ) -> None:
        self.rate = sample_rate
        self.bound_ns = int(bound_ms * 1e6)
        self.target_ns = int(target_ms * 1e6)
        self.max_slew = max_slew
        self.gap_ns = int(gap_fill_ms * 1e6)
        self.on_correction = on_correction
        self.on_gap = on_gap
        self.log = log or bind(logging.getLogger(__name__))
        self._window: deque[int] = deque(maxlen=window_frames)
        self.t0_ns: int | None = None
        self.samples_out = 0
        self._correcting = 0  # +1 dropping, -1 inserting, 0 idle
        self.corrections = 0
        self.samples_inserted = 0
        self.samples_dropped = 0
        self.gap_samples_filled = 0
        self.max_abs_deviation_ms = 0.0
        self._resync = False

    @property
    def deviation_ms(self) -> float:
        """Mean deviation over the window: sample clock minus timestamps (positive = audio late)."""
        if not self._window:
            return 0.0
        return sum(self._window) / len(self._window) / 1e6

    @property
    def correcting(self) -> bool:
        return self._correcting != 0

    def clock_ns(self) -> int:
        """Input-timeline time of the next output sample."""
        assert self.t0_ns is not None
        return self.t0_ns + self.samples_out * NS_PER_S // self.rate

    def advance(self, samples: int) -> None:
        """Samples added outside `process` (silence padding on input loss)."""
        self.samples_out += samples

    def resync(self) -> None:
        """A new connection: align the next timestamped frame exactly (fill or trim the gap)."""
        self._resync = True
        self._window.clear()
        if self._correcting:
            self._correcting = 0
            if self.on_correction is not None:
                self.on_correction(0.0, 0)

    def process_batch(self, pcm: Pcm | Any, pts_ns: int | None, frame_samples: int) -> Pcm:
        """`process` for a batch of consecutive decoded frames of `frame_samples` each (the
        reader's `RawAudio`): frame by frame, as decoded, so that the observations and the slew
        of at most `max_slew` per frame do not depend on the batch size."""
        pcm = Pcm.of(pcm)
        total = pcm.n
        if pts_ns is None or frame_samples <= 0 or frame_samples >= total:
            return self.process(pcm, pts_ns)
        parts = [
            self.process(pcm[at : at + frame_samples], pts_ns + at * NS_PER_S // self.rate)
            for at in range(0, total, frame_samples)
        ]
        return Pcm.concat(parts, pcm.channels)

    def process(self, pcm: Pcm | Any, pts_ns: int | None) -> Pcm:
        """Return the (possibly slewed or gap-filled) PCM for one decoded frame."""
        pcm = Pcm.of(pcm)
        if self.t0_ns is None:
            self.t0_ns = pts_ns if pts_ns is not None else 0
        n = pcm.shape[0]
        if pts_ns is not None and n > 0:
            raw = self.clock_ns() - pts_ns
            resync, self._resync = self._resync, False
            one_sample_ns = NS_PER_S // self.rate
            if (resync and raw < -one_sample_ns) or raw < -self.gap_ns:
                return self._fill_gap(pcm, raw)
            if (resync and raw > one_sample_ns) or raw > self.gap_ns:
                return self._drop_overlap(pcm, n, raw)
            self._window.append(raw)
            dev = self.deviation_ms * 1e6
            self.max_abs_deviation_ms = max(self.max_abs_deviation_ms, abs(dev) / 1e6)
            if self._correcting == 0 and abs(dev) > self.bound_ns:
                self._correcting = 1 if dev > 0 else -1
                self.corrections += 1
                per_frame = max(1, math.floor(n * self.max_slew)) * -self._correcting
                self.log.info(
                    "a/v drift correction started",
                    ctx={"deviation_ms": round(dev / 1e6, 2), "samples_per_frame": per_frame},
                )
                if self.on_correction is not None:
                    self.on_correction(dev / 1e6, per_frame)
            elif self._correcting != 0 and (abs(dev) <= self.target_ns or (dev > 0) != (self._correcting > 0)):
                self.log.info(
                    "a/v drift correction ended",
                    ctx={
                        "deviation_ms": round(dev / 1e6, 2),
                        "inserted": self.samples_inserted,
                        "dropped": self.samples_dropped,
                    },
                )
                self._correcting = 0
                if self.on_correction is not None:
                    self.on_correction(dev / 1e6, 0)
            if self._correcting != 0:
                k = max(1, math.floor(n * self.max_slew))
                k = min(k, max(1, round(abs(dev) * self.rate / NS_PER_S)))
                if self._correcting > 0:
                    pcm = slew_frame(pcm, n - k)
                    self.samples_dropped += k
                else:
                    pcm = slew_frame(pcm, n + k)
                    self.samples_inserted += k
        self.samples_out += pcm.shape[0]
        return pcm

    def _fill_gap(self, pcm: Pcm, raw: int) -> Pcm:
        """The frame starts `-raw` ns after the sample clock: silence first, then the frame."""
        fill = round(-raw * self.rate / NS_PER_S)
        self.log.warning(
            "audio timestamp gap filled with silence",
            ctx={"gap_ms": round(-raw / 1e6, 1), "samples": fill},
        )
        self.gap_samples_filled += fill
        self._window.clear()
        if self.on_gap is not None:
            self.on_gap(fill)
        pcm = Pcm.concat([Pcm.zeros(fill, pcm.channels), pcm], pcm.channels)
        self.samples_out += pcm.shape[0]
        return pcm

    def _drop_overlap(self, pcm: Pcm, n: int, raw: int) -> Pcm:
        """The frame starts `raw` ns before the sample clock: its first samples are dropped."""
        drop = min(n, round(raw * self.rate / NS_PER_S))
        self.log.warning(
            "audio overlaps its timestamps: samples dropped",
            ctx={"overlap_ms": round(raw / 1e6, 1), "samples": drop},
        )
        self.samples_dropped += drop
        self._window.clear()
        pcm = pcm[drop:]
        self.samples_out += pcm.shape[0]
        return pcm
