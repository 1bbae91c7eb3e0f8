"""Turning a probe's per-request answers into intervals, loss episodes and outages.

Owns: `Tracker`, which is fed each request once it is final (answered, or
past its reply timeout) in sequence order, with its scheduled send time, and
emits plain-dict records: one per interval (by scheduled send time, aligned to
multiples of the interval on the wall clock), one per outage (RFC 3357 loss
period long enough to count), and hourly latency summaries.

Invariants: memory is bounded by one interval's latencies plus one hour's
histogram, whatever the watch's length; records are dicts of JSON types only.
Nothing here touches sockets or files, so it is tested with made-up answers.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pktbench import histogram

Record = dict[str, Any]
Emit = Callable[[Record], None]

# Prometheus histogram bounds (seconds), from LAN to intercontinental paths.
LATENCY_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                     0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BUCKET_NS = np.array([b * 1e9 for b in LATENCY_BUCKETS_S], dtype=np.float64)


def _percentiles_us(lat_ns: npt.NDArray[np.float64]) -> dict[str, float] | None:
    if lat_ns.size == 0:
        return None
    p50, p90, p99, p999 = np.percentile(lat_ns, [50, 90, 99, 99.9])
    return {"min": round(float(lat_ns.min()) / 1e3, 1), "p50": round(float(p50) / 1e3, 1),
            "p90": round(float(p90) / 1e3, 1), "p99": round(float(p99) / 1e3, 1),
            "p999": round(float(p999) / 1e3, 1), "max": round(float(lat_ns.max()) / 1e3, 1),
            "mean": round(float(lat_ns.mean()) / 1e3, 1)}


@dataclass
class _Interval:
    start_s: float
    sent: int = 0
    received: int = 0
    late: int = 0
    episodes: int = 0
    max_run: int = 0
    first_seq: int | None = None
    end_seq: int = 0
    latencies: list[npt.NDArray[np.float64]] = field(default_factory=list)
    jitter_sum_ns: float = 0.0
    jitter_pairs: int = 0
    states: set[str] = field(default_factory=set)


@dataclass
class Totals:
    """What the whole watch has counted so far (the metrics endpoint reads these)."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    late: int = 0
    intervals: int = 0
    outages: int = 0
    outage_s: float = 0.0
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0


class Tracker:
    """Final answers in, records out (see the module doc).

    `feed` takes a run of consecutive requests: the global sequence number of
    the first, their scheduled send times (wall clock, ns) and their latencies
    (ns, NaN for no reply in time). `advance(wall_s)` closes every interval
    that ends at or before `wall_s`; call it with "now minus the reply
    timeout" while no requests are being sent (disconnected, paused), so
    empty intervals are still written. `state` names what the probe is doing
    and goes into each interval it touches.
    """

    def __init__(self, emit: Emit, *, interval_s: float, outage_min_s: float) -> None:
        self._emit = emit
        self.interval_s = interval_s
        self.outage_min_s = outage_min_s
        self.totals = Totals()
        self.state = "probing"
        self.context: dict[str, Any] = {}  # session/step numbers, copied into records
        self._current: _Interval | None = None
        self._run_start_seq: int | None = None
        self._run_start_ns = 0  # the run's first request: when it was due
        self._run_start_sent_ns = 0  # ... and when it left
        self._run_length = 0
        self._last_answer_ns = 0  # scheduled time of the last answered request
        self._last_lat_ns: float | None = None
        self._hour: int | None = None
        self._hour_hist = np.zeros(histogram.BUCKETS, dtype=np.uint64)
        self._hour_counts = [0, 0]  # sent, received
        self.open_outage: Record | None = None  # announced, not yet ended
        self.on_outage_start: Emit | None = emit
        self.control_notes: list[str] = []  # what the control channel saw during the run
        self.recent_max_latency_s = 0.0  # of the last answers fed

    # -- intervals ------------------------------------------------------------
    def _slot_start(self, wall_s: float) -> float:
        return math.floor(wall_s / self.interval_s) * self.interval_s

    def _interval_for(self, wall_s: float) -> _Interval:
        start = self._slot_start(wall_s)
        if self._current is None:
            self._current = _Interval(start)
        while self._current.start_s + self.interval_s <= wall_s:
            self._close(self._current)
            self._current = _Interval(self._current.start_s + self.interval_s)
        self._current.states.add(self.state)
        return self._current

    def advance(self, wall_s: float) -> None:
        if self._current is None:
            self._current = _Interval(self._slot_start(wall_s))
        self._current.states.add(self.state)
        while self._current.start_s + self.interval_s <= wall_s:
            self._close(self._current)
            self._current = _Interval(self._current.start_s + self.interval_s)
            self._current.states.add(self.state)

    def flush(self) -> None:
        """Close the interval in progress (the watch is ending)."""
        if self._current is not None and self._current.sent:
            self._close(self._current, partial=True)
        self._current = None
        self._close_hour()

    def _close(self, iv: _Interval, partial: bool = False) -> None:
        lat = np.concatenate(iv.latencies) if iv.latencies else np.empty(0)
        lost = iv.sent - iv.received
        states = iv.states - {"probing"} if len(iv.states) > 1 else iv.states
        record: Record = {
            "type": "interval", "start_s": round(iv.start_s, 6),
            "end_s": round(iv.start_s + self.interval_s, 6),
            "sent_packets": iv.sent, "received_packets": iv.received, "lost_packets": lost,
            "late_packets": iv.late,
            "loss_ratio": round(lost / iv.sent, 6) if iv.sent else None,
            "latency_us": _percentiles_us(lat),
            "jitter_us": (round(iv.jitter_sum_ns / iv.jitter_pairs / 1e3, 2)
                          if iv.jitter_pairs else None),
            "loss_episodes": iv.episodes, "max_loss_run": iv.max_run,
            "seq": [iv.first_seq, iv.end_seq] if iv.first_seq is not None else None,
            "state": "+".join(sorted(states)) or "probing",
            **self.context,
        }
        if partial:
            record["partial"] = True
        t = self.totals
        t.sent += iv.sent
        t.received += iv.received
        t.lost += lost
        t.late += iv.late
        t.intervals += 1
        if lat.size:
            index = np.searchsorted(_BUCKET_NS, lat, side="left")
            for i, count in zip(*np.unique(index, return_counts=True)):
                t.bucket_counts[int(i)] += int(count)
            t.latency_sum_s += float(lat.sum()) / 1e9
        record["totals"] = {"sent_packets": t.sent, "received_packets": t.received,
                            "lost_packets": t.lost,
                            "late_packets": t.late, "outages": t.outages}
        self._hour_of(iv.start_s, lat, iv.sent, iv.received)
        self._emit(record)

    # -- hourly latency -------------------------------------------------------
    def _hour_of(self, start_s: float, lat: npt.NDArray[np.float64], sent: int,
                 received: int) -> None:
        hour = int(start_s // 3600)
        if self._hour is not None and hour != self._hour:
            self._close_hour()
        self._hour = hour
        if lat.size:
            from pktbench.engine import loops
            loops.hist_record(self._hour_hist, lat.astype(np.uint64))
        self._hour_counts[0] += sent
        self._hour_counts[1] += received

    def _close_hour(self) -> None:
        if self._hour is None:
            return
        sent, received = self._hour_counts
        self._emit({"type": "hour", "start_s": self._hour * 3600, "sent_packets": sent,
                    "received_packets": received,
                    "loss_ratio": round((sent - received) / sent, 6) if sent else None,
                    "latency_us": histogram.summary_us(self._hour_hist), **self.context})
        self._hour = None
        self._hour_hist[:] = 0
        self._hour_counts = [0, 0]

    # -- requests -------------------------------------------------------------
    def add_late(self, count: int, wall_s: float) -> None:
        """Replies that came after their timeout (the engine counts them as they arrive).

        They go to the interval being fed, never to a later one: that would
        close intervals whose last requests are not in yet (they would then
        land in the wrong interval, and off the server's bins)."""
        if count:
            iv = self._current if self._current is not None else self._interval_for(wall_s)
            iv.late += count

    @property
    def open_first_seq(self) -> int | None:
        """The first request of the interval still open (None: none fed into it yet)."""
        return self._current.first_seq if self._current is not None else None

    def feed(self, first_seq: int, due_ns: npt.NDArray[np.int64],
             lat_ns: npt.NDArray[np.float64],
             sent_ns: npt.NDArray[np.int64] | None = None,
             slots: npt.NDArray[np.int64] | None = None) -> None:
        """`sent_ns`: when each request actually left (wall clock, ns); the
        schedule when not given. Outages are timed by it, since a request a
        stalled sender sent late met the path when it left, not when due.
        `slots`: each request's interval (its start over interval_s), when
        the caller decides them (the watch does, by the same formula as the
        server's bins); by the scheduled time when not given."""
        if due_ns.size == 0:
            return
        if sent_ns is None:
            sent_ns = due_ns
        answered = ~np.isnan(lat_ns)
        if slots is None:
            slots = np.floor(due_ns / 1e9 / self.interval_s).astype(np.int64)
        # Split the run at interval boundaries; each piece is one interval's.
        cuts = np.flatnonzero(np.diff(slots)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, due_ns.size]):
            self._feed_piece(first_seq + int(lo), int(slots[lo]), due_ns[lo:hi], lat_ns[lo:hi],
                             answered[lo:hi], sent_ns[lo:hi])

    def _feed_piece(self, first_seq: int, slot: int, due_ns: npt.NDArray[np.int64],
                    lat_ns: npt.NDArray[np.float64], answered: npt.NDArray[np.bool_],
                    sent_ns: npt.NDArray[np.int64]) -> None:
        # The middle of the slot: its start times interval_s may round below it.
        iv = self._interval_for((slot + 0.5) * self.interval_s)
        n = int(due_ns.size)
        got = lat_ns[answered]
        iv.sent += n
        iv.received += int(got.size)
        if iv.first_seq is None:
            iv.first_seq = first_seq
        iv.end_seq = first_seq + n
        if got.size:
            iv.latencies.append(got)
            self.recent_max_latency_s = float(got.max()) / 1e9
            # Mean |D| between consecutive answered requests (RFC 3393 IPDV,
            # the magnitude RFC 3550's smoothed jitter estimates).
            seq_of = np.flatnonzero(answered)
            if self._last_lat_ns is not None and seq_of[0] == 0:
                iv.jitter_sum_ns += abs(float(got[0]) - self._last_lat_ns)
                iv.jitter_pairs += 1
            consecutive = np.diff(seq_of) == 1
            if consecutive.any():
                deltas = np.abs(np.diff(got))[consecutive]
                iv.jitter_sum_ns += float(deltas.sum())
                iv.jitter_pairs += int(deltas.size)
            self._last_lat_ns = float(got[-1]) if answered[-1] else None
        else:
            self._last_lat_ns = None
        # Loss runs: segments between the points where `answered` flips.
        flips = np.flatnonzero(np.diff(answered.astype(np.int8))) + 1
        bounds = [0, *(int(f) for f in flips), n]
        for start, end in zip(bounds[:-1], bounds[1:]):
            if answered[start]:
                if self._run_start_seq is not None:
                    self._end_run(first_seq + start, int(due_ns[start]), int(sent_ns[start]),
                                  iv)
                self._last_answer_ns = int(sent_ns[end - 1])
            else:
                if self._run_start_seq is None:
                    self._run_start_seq = first_seq + start
                    self._run_start_ns = int(due_ns[start])
                    self._run_start_sent_ns = int(sent_ns[start])
                    self._run_length = 0
                    self.control_notes = []
                self._run_length += end - start
                self._check_outage_start(int(due_ns[end - 1]))

    def _check_outage_start(self, last_lost_ns: int) -> None:
        if self.open_outage is not None or self._run_start_seq is None:
            return
        if (last_lost_ns - self._run_start_ns) / 1e9 >= self.outage_min_s:
            self.open_outage = {"type": "outage_start",
                                "start_s": round(self._run_start_sent_ns / 1e9, 6),
                                "first_lost_seq": self._run_start_seq,
                                "last_answered_s": (self._last_answer_ns / 1e9
                                                  if self._last_answer_ns else None),
                                **self.context}
            if self.on_outage_start is not None:
                self.on_outage_start(dict(self.open_outage))

    def _end_run(self, answered_seq: int, answered_ns: int, answered_sent_ns: int,
                 iv: _Interval) -> None:
        assert self._run_start_seq is not None
        length = answered_seq - self._run_start_seq
        duration_s = (answered_sent_ns - self._run_start_sent_ns) / 1e9
        if self.open_outage is not None or duration_s >= self.outage_min_s:
            t = self.totals
            t.outages += 1
            t.outage_s += duration_s
            record: Record = {
                "type": "outage", "start_s": round(self._run_start_sent_ns / 1e9, 6),
                "end_s": round(answered_sent_ns / 1e9, 6), "duration_s": round(duration_s, 6),
                "start_scheduled_s": round(self._run_start_ns / 1e9, 6),
                "end_scheduled_s": round(answered_ns / 1e9, 6),
                "lost_packets": length, "first_lost_seq": self._run_start_seq,
                "first_answered_seq": answered_seq,
                "control": list(self.control_notes) or ["control connection up throughout"],
                **self.context}
            self.open_outage = None
            self.control_notes = []
            self._emit(record)
        else:
            iv.episodes += 1
            iv.max_run = max(iv.max_run, length)
        self._run_start_seq = None
        self._run_length = 0

    @property
    def in_loss_run(self) -> bool:
        return self._run_start_seq is not None

    def note_control(self, text: str) -> None:
        """What the control channel did while a loss run is open (kept for its outage)."""
        self.control_notes.append(text)
