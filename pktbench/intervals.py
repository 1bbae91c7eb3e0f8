"""Interval reports: what each measured window did every S seconds, while it ran.

Owns `IntervalReporter`, a thread that reads the meters of the measured
windows running in this process (engine.LIVE_METERS, filled by every
sender's `run_phases`) every `interval_s`, hands each interval to a callback
as it ends (live lines, --json-stream) and keeps them, so the caller can put
a step's intervals into its result (`take`). The last interval of a window
ends where the window closed (after its drain), so it may be shorter.

Interval keys name their units: start_s and end_s (seconds from the
window's t0), sent_packets and received_packets (in the interval), sent_pps,
received_pps, latency_p50_us, latency_p99_us (of the replies in the
interval; null without any). A one-way (blast) sender counts no replies
itself: its received figures are null, the receiver's count is the step's.
A bulk TCP step's intervals are this end's pump: start_s, end_s, direction
("forward": this end writes, "reverse": it reads), bytes and payload_bps.

Multi-process senders (--workers > 1, bulk --workers > 1) keep their meters
in other processes: their steps have no intervals.

Must not: change what a step measures. Reading a meter is a copy of a few
kilobytes every interval, from another thread, without a lock on the loop.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from pktbench import engine, histogram

IntervalCallback = Callable[[dict[str, Any]], None]

# How often the thread looks for windows that opened or closed.
POLL_S = 0.02
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


@dataclass
class _Tracked:
    window: engine.LiveWindow
    interval_ns: int
    last_ns: int
    last_counters: npt.NDArray[np.uint64]
    last_hist: npt.NDArray[np.uint64]
    next_ns: int
    intervals: list[dict[str, Any]] = field(default_factory=list)


def _interval(window: engine.LiveWindow, start_ns: int, end_ns: int,
              before: npt.NDArray[np.uint64], after: npt.NDArray[np.uint64],
              hist_before: npt.NDArray[np.uint64], hist_after: npt.NDArray[np.uint64]
              ) -> dict[str, Any]:
    names = window.counter_names
    span_s = max((end_ns - start_ns) / 1e9, 1e-9)
    if window.unit == "bytes":
        moved = max(int(after[0]) - int(before[0]), 0)
        return {
            "start_s": round((start_ns - window.start_ns) / 1e9, 6),
            "end_s": round((end_ns - window.start_ns) / 1e9, 6),
            "direction": window.label,
            "bytes": moved,
            "payload_bps": moved * 8 / span_s,
        }
    # a counter lower than before would mean a torn read or a new phase: count it as 0
    sent = max(int(after[names.index("sent")]) - int(before[names.index("sent")]), 0)
    received = max(int(after[names.index("received")]) - int(before[names.index("received")]), 0)
    hist = np.where(hist_after >= hist_before, hist_after - hist_before, 0).astype(np.uint64)
    p50 = histogram.percentile_ns(hist, 50.0) if window.replies else None
    p99 = histogram.percentile_ns(hist, 99.0) if window.replies else None
    return {
        "start_s": round((start_ns - window.start_ns) / 1e9, 6),
        "end_s": round((end_ns - window.start_ns) / 1e9, 6),
        "sent_packets": sent,
        "received_packets": received if window.replies else None,
        "sent_pps": sent / span_s,
        "received_pps": received / span_s if window.replies else None,
        "latency_p50_us": p50 / 1000.0 if p50 is not None else None,
        "latency_p99_us": p99 / 1000.0 if p99 is not None else None,
    }


class IntervalReporter:
    """Reports every measured window of this process every `interval_s`, while it runs.

    Use as a context manager around the library call. `on_interval` is
    called from the reporter's thread with each interval dict as it ends;
    `take()` returns the intervals of the windows that closed since the last
    call (one step's, when called from a step callback).
    """

    def __init__(self, interval_s: float, on_interval: IntervalCallback | None = None) -> None:
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"interval must be {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} s")
        self.interval_ns = int(interval_s * 1e9)
        self.on_interval = on_interval
        self._tracked: dict[int, _Tracked] = {}
        self._done: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> IntervalReporter:
        engine.LIVE_METERS.collect()  # windows closed before we listened are not ours
        engine.LIVE_METERS.listeners += 1
        self._thread = threading.Thread(target=self._run, name="intervals", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        engine.LIVE_METERS.listeners -= 1
        self._poll()  # whatever closed at the very end

    def take(self) -> list[dict[str, Any]]:
        """The intervals of the windows that closed since the last call, in order."""
        self._poll()
        with self._lock:
            done, self._done = self._done, []
        return done

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll()

    def _emit(self, tracked: _Tracked, item: dict[str, Any]) -> None:
        tracked.intervals.append(item)
        if self.on_interval is not None:
            self.on_interval(item)

    def _poll(self) -> None:
        with self._lock:
            for window in engine.LIVE_METERS.windows():
                tracked = self._tracked.get(id(window))
                if tracked is None:
                    zeros = np.zeros(len(window.counter_names), dtype=np.uint64)
                    tracked = _Tracked(window, self.interval_ns, window.start_ns, zeros,
                                       np.zeros(histogram.BUCKETS, dtype=np.uint64),
                                       window.start_ns + self.interval_ns)
                    self._tracked[id(window)] = tracked
                if engine.monotonic_ns() >= tracked.next_ns:
                    now, counters, hist = window.meter.snapshot()
                    self._emit(tracked, _interval(window, tracked.last_ns, now,
                                                  tracked.last_counters, counters,
                                                  tracked.last_hist, hist))
                    tracked.last_ns, tracked.last_counters, tracked.last_hist = now, counters, hist
                    while tracked.next_ns <= now:
                        tracked.next_ns += self.interval_ns
            for window in engine.LIVE_METERS.collect():
                tracked = self._tracked.pop(id(window), None)
                if tracked is None:  # opened and closed between two polls
                    zeros = np.zeros(len(window.counter_names), dtype=np.uint64)
                    tracked = _Tracked(window, self.interval_ns, window.start_ns, zeros,
                                       np.zeros(histogram.BUCKETS, dtype=np.uint64),
                                       window.start_ns + self.interval_ns)
                if window.final is not None:
                    end, counters, hist = window.final
                    if end > tracked.last_ns + 1_000_000 or not tracked.intervals:
                        self._emit(tracked, _interval(window, tracked.last_ns, end,
                                                      tracked.last_counters, counters,
                                                      tracked.last_hist, hist))
                self._done.extend(tracked.intervals)
