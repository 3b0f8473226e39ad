"""The input timeline: repair missing timestamps and rebase everything to start near 0.

Pure logic (no I/O, no clock). `TimestampRepairer` gives a packet without pts/dts the timestamp
it must have (the first RTSP keyframe often has none) — it never drops one. `Timeline` maps raw
input timestamps (ns) onto one continuous, monotonic input timeline: the first packet ever sits at
0; a jump backwards, or forwards by more than a threshold, is a discontinuity that is rebased
(and reported); after a reconnection the new connection continues where the old one ended (or at
`resume_at_ns`, the wall-clock position, whichever is later). It never reorders or drops packets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Stamped(Generic[T]):
    item: T
    pts_ns: int
    dts_ns: int
    duration_ns: int
    repaired: bool


class TimestampRepairer(Generic[T]):
    """Fill in missing pts/dts of one stream's packets, in decode order.

    A packet with neither timestamp before any timestamped packet is held back until the next
    timestamped packet arrives, then back-filled one frame duration per packet before it.
    """

    def __init__(self, default_duration_ns: int, max_held: int = 64) -> None:
        if default_duration_ns <= 0:
            raise ValueError("default_duration_ns must be positive")
        self.default_duration_ns = default_duration_ns
        self.max_held = max_held
        self._held: list[tuple[T, int]] = []
        self._last_dts: int | None = None
        self._last_dur: int = default_duration_ns
        self.repaired_count = 0

    def push(
        self, item: T, pts_ns: int | None, dts_ns: int | None, duration_ns: int | None
    ) -> list[Stamped[T]]:
        dur = duration_ns if duration_ns and duration_ns > 0 else self._last_dur
        out: list[Stamped[T]] = []
        if pts_ns is None and dts_ns is None:
            if self._last_dts is None:
                self._held.append((item, dur))
                if len(self._held) > self.max_held:
                    return self._release_held(0)
                return []
            dts = self._last_dts + self._last_dur
            pts = dts
            repaired = True
        elif dts_ns is None:
            assert pts_ns is not None
            if self._last_dts is None:
                dts = pts_ns
            else:
                dts = max(self._last_dts + 1, min(pts_ns, self._last_dts + self._last_dur))
            pts = pts_ns
            repaired = True
        elif pts_ns is None:
            pts = dts = dts_ns
            repaired = True
        else:
            pts, dts, repaired = pts_ns, dts_ns, False
        if self._held:
            out.extend(self._release_held(dts))
        if repaired:
            self.repaired_count += 1
        out.append(Stamped(item, pts, dts, dur, repaired))
        self._last_dts = dts
        self._last_dur = dur
        return out

    def _release_held(self, next_dts: int) -> list[Stamped[T]]:
        held, self._held = self._held, []
        if next_dts == 0 and self._last_dts is None and len(held) > self.max_held:
            # Nothing ever had a timestamp: start at 0 and count forwards.
            t = 0
            out = []
            for item, dur in held:
                out.append(Stamped(item, t, t, dur, True))
                t += dur
            self._last_dts = t - held[-1][1]
            self._last_dur = held[-1][1]
            self.repaired_count += len(out)
            return out
        total = sum(d for _, d in held)
        t = next_dts - total
        out = []
        for item, dur in held:
            out.append(Stamped(item, t, t, dur, True))
            t += dur
        self.repaired_count += len(out)
        return out

    def flush(self) -> list[Stamped[T]]:
        """End of stream: release held packets (counting on from the last known timestamp)."""
        if not self._held:
            return []
        start = (self._last_dts + self._last_dur) if self._last_dts is not None else 0
        held, self._held = self._held, []
        out = []
        t = start
        for item, dur in held:
            out.append(Stamped(item, t, t, dur, True))
            t += dur
        self.repaired_count += len(out)
        return out


@dataclass
class _StreamState:
    offset: int = 0
    connection: int = -1
    last_key: int | None = None
    last_end: int | None = None


DiscontinuityFn = Callable[[str, int], None]


class Timeline:
    """Map raw timestamps (ns) of several streams onto one rebased, continuous input timeline.

    Call `shift(kind, key_ns, duration_ns)` for every packet in arrival order, where `key_ns` is
    the decode timestamp (video) or presentation timestamp (audio); add the returned shift to
    the packet's pts and dts. Streams share one offset per connection (so A/V sync is kept);
    a discontinuity within a connection rebases only the stream it happened on.
    """

    def __init__(
        self,
        discontinuity_threshold_ns: int = NS_PER_S,
        on_discontinuity: DiscontinuityFn | None = None,
    ) -> None:
        self.threshold_ns = discontinuity_threshold_ns
        self.on_discontinuity = on_discontinuity
        self._streams: dict[str, _StreamState] = {}
        self._connection = 0
        self._conn_offset: int | None = None
        self._resume_at_ns: int | None = None
        self._started = False
        self.discontinuities = 0

    def new_connection(self, resume_at_ns: int | None = None) -> None:
        """The next packets come from a new connection; continue the timeline after the old one.

        `resume_at_ns`: where on the timeline "now" is (wall clock since W0) — the new
        connection starts no earlier, so an outage shows as a gap in time, not as a time warp.
        """
        self._connection += 1
        self._conn_offset = None
        self._resume_at_ns = resume_at_ns

    @property
    def end_ns(self) -> int | None:
        ends = [s.last_end for s in self._streams.values() if s.last_end is not None]
        return max(ends) if ends else None

    def shift(self, kind: str, key_ns: int, duration_ns: int = 0) -> int:
        st = self._streams.setdefault(kind, _StreamState())
        first_in_connection = st.connection != self._connection
        if first_in_connection:
            if self._conn_offset is None:
                if not self._started:
                    target = 0
                    self._started = True
                else:
                    target = self.end_ns or 0
                    if self._resume_at_ns is not None:
                        target = max(target, self._resume_at_ns)
                self._conn_offset = target - key_ns
            st.offset = self._conn_offset
            st.connection = self._connection
        mapped = key_ns + st.offset
        if st.last_key is not None and st.last_end is not None:
            backwards = mapped < st.last_key
            forwards = not first_in_connection and mapped > st.last_end + self.threshold_ns
            if backwards or forwards:
                jump = mapped - st.last_end
                st.offset = st.last_end - key_ns
                mapped = st.last_end
                self.discontinuities += 1
                if self.on_discontinuity is not None:
                    self.on_discontinuity(kind, jump)
        st.last_key = mapped
        end = mapped + max(0, duration_ns)
        st.last_end = end if st.last_end is None else max(st.last_end, end)
        return st.offset
