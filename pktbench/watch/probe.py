"""`Watch`: one target under a steady open-loop probe for as long as asked.

Owns: the probe's life on the client side: connecting and re-connecting,
running the probe as a chain of bounded server steps, feeding every request's
answer to the Tracker, the change-over records that carry the server's
one-way counts, the knee checks that pause the probe, and the records all of
this produces (handed to one `emit` callable: the JSONL file, the metrics
endpoint and the console all hang off it).

How a days-long probe stays inside the server's limits: every step is an
ordinary bounded step (duration `lease_s`, so the server's hard deadline is
lease + timeout + 10 s). The client changes over to a new step after
`step_s` once the path is answering (and soon after an outage ends, so that
step's server counters split the outage's loss into up and down), or at the
lease's end whatever the path does. A change-over costs one drain and two
control round trips (tens of ms, recorded in the step record, never counted
as loss); sequence numbers carry on across steps and sessions.

rr is timed to the packet: the engine keeps each request's answer
(PacedSender keep_replies) and the Tracker reads them once final. blast and
rr-tcp run back-to-back steps of one interval each and are timed to the
interval.

rr intervals split their loss one way, from the server's counters: a step
asks the server (feature step_bins) to count its requests per bin, where a
bin is exactly one interval of the watch (the request's interval is decided
by the same double expression at both ends, `StepParams.bin_of`). A closed
interval with loss is held until the server's count of its bins is in: a
ProgressRequest sent at one tick, its answer read at a later one, so the
sender never waits on it; the last bins come with the step result. Records
leave in order, so a held interval holds back the intervals after it.

Must not: raise on loss, timeouts or a vanished server; only bad
configuration (refused step, bad secret) ends a watch with an error.
"""
from __future__ import annotations

import errno
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pktbench import engine, histogram, wire
from pktbench._version import __version__
from pktbench.address import Target
from pktbench.errors import AuthError, ConfigError, PktbenchError, ServerRefusedError
from pktbench.protocol import FEATURE_STEP_BINS, MAX_PROGRESS_BINS, Error, Progress, StepParams
from pktbench.watch.tracker import Record, Tracker

WORKLOADS = ("rr", "blast", "rr-tcp")
TICK_S = 0.25  # how often final answers are read and the control socket looked at
SPIN_ABOVE_PPS = 20_000  # below, the sender sleeps to each due time instead of spinning
CATCH_UP = 2.0  # the step rate asked of the server, over the probe's (see _rr_step)
STALL_S = 0.05  # a request sent this much after its due time marks a stall of the watcher
_FINAL_MARGIN_S = 0.03  # the engine reads replies in 20 ms chunks: a margin past the timeout
_PROGRESS_WAIT_S = 5.0  # at a change-over, for the answer to a query still out
# Why an interval's loss has no direction (the record's one_way_unknown).
NO_FEATURE = "the server does not count requests per interval (no step_bins feature)"
NO_BINS = "an interval holds less than one request: no per-interval counts"
EVICTED = "the server no longer held the interval's counts"
SESSION_LOST = "the session ended before the server's counts were read"
WATCH_ENDED = "the watch ended before the server's counts were read"


@dataclass(frozen=True)
class WatchConfig:
    target: Target
    workload: str = "rr"
    rate_pps: float = 1000.0
    size_bytes: int = 64
    interval_s: float = 1.0
    duration_s: float | None = None  # None: until stopped
    timeout_s: float = 1.0  # a reply later than this is late, and the request lost
    outage_min_s: float = 0.05  # a loss run at least this long is an outage
    step_s: float = 60.0  # change over to a new step this often (path answering)
    lease_s: float = 600.0  # the longest step asked of the server
    secret: bytes | None = None
    knee_every_s: float | None = None
    knee_profile: str | None = None
    reconnect_s: float = 0.5  # first retry delay; doubles to reconnect_max_s
    reconnect_max_s: float = 5.0
    connect_timeout_s: float = 3.0

    def check(self) -> None:
        if self.workload not in WORKLOADS:
            raise ConfigError(f"--workload must be one of {', '.join(WORKLOADS)}")
        if not 0 < self.rate_pps <= 1_000_000:
            raise ConfigError("--rate must be > 0 and at most 1,000,000 pps")
        if not 0.05 <= self.interval_s <= 3600:
            raise ConfigError("--interval must be 0.05 s to 1 h")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError("--duration must be > 0 (or forever)")
        if not 0 < self.timeout_s <= 4.0:
            raise ConfigError("--timeout must be > 0 and at most 4 s")
        if self.rate_pps * self.timeout_s * 2 > 60_000_000:
            raise ConfigError("--rate x --timeout is too large to keep every answer")
        if self.knee_every_s is not None and self.knee_profile is None:
            raise ConfigError("--knee-every needs --knee-profile NAME")
        if self.knee_every_s is not None and self.knee_every_s < 1:
            raise ConfigError("--knee-every must be at least 1 s")


_STALL_BUCKET = int(histogram.bucket_index([int(STALL_S * 1e9)])[0])
_LAG_MAX = engine.loops.SENDER_COUNTERS.index("lag_max_ns")


class _StepLost(Exception):
    """The step (and its session) is gone; the watch reconnects."""


@dataclass
class _Step:
    number: int
    seq_base: int
    start_s: float
    outages: list[Record] = field(default_factory=list)


@dataclass
class _Bins:
    """One rr step's intervals as the server counts them: the request with
    step seq s is in bin params.bin_of(s), the watch's interval slot0 + that."""

    step_id: int  # the server's, which Progress names
    seq_base: int  # global seq of the step's seq 0
    slot0: int
    phase: float
    per_bin: float
    end_seq: int | None = None  # global seq past the step's last request, once it is over
    counts: dict[int, int] = field(default_factory=dict)  # bin -> received (-1: gone)
    closed: str | None = None  # why no more counts come (None: they may yet)

    def bin_of(self, seq: int) -> int:
        """The bin of global seq `seq` (protocol.StepParams.bin_of's expression)."""
        return math.floor((float(seq - self.seq_base) + self.phase) / self.per_bin)

    def take(self, start: int, counts: list[int] | tuple[int, ...]) -> None:
        for offset, count in enumerate(counts):
            self.counts[start + offset] = int(count)


@dataclass
class _Held:
    """An interval record waiting for its bins' counts: (bins, first bin,
    last bin, requests) for each step it has requests of."""

    record: Record
    parts: list[tuple[_Bins, int, int, int]]
    reason: str | None = None  # already known to be without a direction


class Watch:
    """A steady probe of one target; `run()` until the duration or `stop`.

    `emit` receives every record (dicts of JSON types) in order: "start",
    "session", "interval", "outage_start", "outage", "step", "pause",
    "knee", "resume", "hour", "end". It is called from the thread that
    runs `run()`. `outage` records are meant to be made durable at once.
    """

    def __init__(self, config: WatchConfig, emit: Callable[[Record], None], *,
                 stop: threading.Event | None = None) -> None:
        config.check()
        self.config = config
        self._emit_to = emit
        self.stop = stop or threading.Event()
        self.tracker = Tracker(self._emit, interval_s=config.interval_s,
                               outage_min_s=config.outage_min_s)
        self.sessions = 0
        self.steps = 0
        self.knees: list[Record] = []
        self.target_label = str(config.target)
        self._client: Any = None
        self._seq = 0  # global sequence number of the next request
        self._start_s = 0.0
        self._end_s = math.inf
        self._next_knee_s = math.inf
        self._held: list[Record] = []  # outages waiting for their step's one-way counts
        self._step: _Step | None = None
        self._lease_s = config.lease_s
        self._last_due_ns: int | None = None  # the last request of the step before
        self._bins: list[_Bins] = []  # steps whose requests held intervals may still have
        self._live_bins: _Bins | None = None  # the running step's, if the server counts
        self._intervals: deque[_Held] = deque()  # closed, in order, waiting for counts
        self.lost_up = 0  # totals of the intervals emitted, for their "totals"
        self.lost_down = 0
        self._arm_s = 0.02  # how long the last step took to arm (plans the next one's start)

    # -- records ------------------------------------------------------------
    def _emit(self, record: Record) -> None:
        record.setdefault("target", self.target_label)
        if record["type"] == "outage" and self._step is not None \
                and self.config.workload == "rr":
            self._held.append(record)  # until the step's server counts say which way
            return
        if record["type"] == "interval" and self.config.workload == "rr":
            self._hold_interval(record)
            return
        self._emit_to(record)

    # -- one-way loss per interval --------------------------------------------
    def _hold_interval(self, record: Record) -> None:
        held = _Held(record, [])
        seq = record.get("seq")
        if record["lost_packets"] > 0 and seq is not None:
            first, end = int(seq[0]), int(seq[1])
            covered = 0
            for bins in self._bins:
                lo = max(first, bins.seq_base)
                hi = min(end, bins.end_seq if bins.end_seq is not None else end)
                if lo >= hi:
                    continue
                k_lo, k_hi = bins.bin_of(lo), bins.bin_of(hi - 1)
                # Whole bins only: a bin shared with another interval cannot be split.
                if (lo > bins.seq_base and bins.bin_of(lo - 1) == k_lo) or (
                        (bins.end_seq is None or hi < bins.end_seq) and bins.bin_of(hi) == k_hi):
                    held.reason = "the interval does not line up with the server's bins"
                if bins.closed is not None and not bins.counts:
                    held.reason = held.reason or bins.closed
                held.parts.append((bins, k_lo, k_hi, hi - lo))
                covered += hi - lo
            if covered != end - first:
                held.reason = held.reason or SESSION_LOST
        self._intervals.append(held)
        self._release()

    def _release(self) -> None:
        """Emit the held intervals, oldest first, as far as their counts are in."""
        while self._intervals:
            held = self._intervals[0]
            record = held.record
            lost = int(record["lost_packets"])
            reason = held.reason
            received = 0
            waiting = False
            if lost > 0:
                for bins, k_lo, k_hi, _ in held.parts:
                    for k in range(k_lo, k_hi + 1):
                        count = bins.counts.get(k)
                        if count is None and bins.closed is None:
                            waiting = True
                        elif count is None or count < 0:
                            reason = reason or (bins.closed if count is None else EVICTED)
                        else:
                            received += count
                if waiting and reason is None:
                    return
            self._intervals.popleft()
            if lost == 0:
                up: int | None = 0
                down: int | None = 0
            elif reason is None:
                up = min(max(int(record["sent_packets"]) - received, 0), lost)
                down = lost - up
            else:
                up = down = None
            record["lost_up_packets"] = up
            record["lost_down_packets"] = down
            if reason is not None:
                record["one_way_unknown"] = reason
            self.lost_up += up or 0
            self.lost_down += down or 0
            if isinstance(record.get("totals"), dict):
                record["totals"]["lost_up_packets"] = self.lost_up
                record["totals"]["lost_down_packets"] = self.lost_down
            self._emit_to(record)
        self._prune_bins()

    def _prune_bins(self) -> None:
        """Forget the steps no interval still to come can have requests of."""
        keep_from = self.tracker.open_first_seq
        if keep_from is None:
            keep_from = self._seq
        if self._intervals and self._intervals[0].record.get("seq"):
            keep_from = min(keep_from, int(self._intervals[0].record["seq"][0]))
        self._bins = [b for b in self._bins if b.end_seq is None or b.end_seq > keep_from]

    def _close_bins(self, reason: str) -> None:
        """No more counts will come for any step's bins (session or watch over)."""
        for bins in self._bins:
            if bins.end_seq is None:
                bins.end_seq = self._seq
            if bins.closed is None:
                bins.closed = reason
        self._live_bins = None
        self._release()

    def _ask_progress(self) -> None:
        """Send a query for the running step's bins that held intervals wait
        for; its answer is read at a later tick (`_poll_control`)."""
        bins = self._live_bins
        # Not while requests are being lost: the control path is likely down
        # too, and a query stuck in TCP retransmits would hold the change-over.
        if bins is None or self._client.progress_pending or self.tracker.in_loss_run:
            return
        wanted = [k for held in self._intervals if held.reason is None
                  for b, k_lo, k_hi, _ in held.parts if b is bins
                  for k in range(k_lo, k_hi + 1) if k not in bins.counts]
        if not wanted:
            return
        lo = min(wanted)
        try:
            self._client.request_progress(lo, min(max(wanted) + 1, lo + MAX_PROGRESS_BINS))
        except (PktbenchError, OSError) as exc:
            raise _StepLost(f"progress query not sent: {exc}") from None

    def _on_progress(self, answer: Progress) -> None:
        bins = self._live_bins
        if bins is not None and answer.step_id == bins.step_id:
            bins.take(answer.bin_start, answer.counts)
            self._release()

    # -- the watch ----------------------------------------------------------
    def run(self) -> Record:
        cfg = self.config
        self._start_s = time.time()
        if cfg.duration_s is not None:
            self._end_s = self._start_s + cfg.duration_s
        if cfg.knee_every_s is not None:
            self._next_knee_s = self._start_s + cfg.knee_every_s
        self._emit({"type": "start", "start_s": round(self._start_s, 6),
                    "version": __version__, "engine": engine.ENGINE_NAME,
                    "workload": cfg.workload, "rate_pps": cfg.rate_pps,
                    "size_bytes": cfg.size_bytes, "interval_s": cfg.interval_s,
                    "duration_s": cfg.duration_s, "timeout_s": cfg.timeout_s,
                    "outage_min_s": cfg.outage_min_s, "step_s": cfg.step_s,
                    "lease_s": cfg.lease_s, "knee_every_s": cfg.knee_every_s,
                    "knee_profile": cfg.knee_profile})
        reason = "duration reached"
        try:
            while not self._done():
                if self._client is None and not self._connect():
                    continue
                if time.time() >= self._next_knee_s:
                    self._knee_check()
                    continue
                try:
                    if cfg.workload == "rr":
                        self._rr_step()
                    else:
                        self._interval_steps()
                except _StepLost as lost:
                    self._lose_session(str(lost))
            if self.stop.is_set():
                reason = "stopped"
        finally:
            self._close_client()
            for bins in self._bins:  # the interval in progress ends with the watch
                if bins.end_seq is None:
                    bins.end_seq = self._seq
            self.tracker.flush()
            self._close_bins(WATCH_ENDED)
            for record in self._held:
                record["direction"] = "unknown: the watch ended before its step did"
                self._emit_to(record)
            self._held.clear()
            end = {"type": "end", "end_s": round(time.time(), 6), "reason": reason,
                   "sessions": self.sessions, "steps": self.steps,
                   "intervals": self.tracker.totals.intervals,
                   "sent_packets": self.tracker.totals.sent,
                   "received_packets": self.tracker.totals.received,
                   "lost_packets": self.tracker.totals.lost,
                   "outages": self.tracker.totals.outages,
                   "lost_up_packets": self.lost_up, "lost_down_packets": self.lost_down,
                   "target": self.target_label}
            if self.tracker.open_outage is not None:
                end["open_outage"] = self.tracker.open_outage
            self._emit_to(end)
        return end

    def _done(self) -> bool:
        return self.stop.is_set() or time.time() >= self._end_s

    def _idle_until(self, until_s: float) -> None:
        """No probe running (disconnected, paused): intervals still close."""
        while not self.stop.is_set():
            now = time.time()
            self.tracker.advance(now - self.config.timeout_s)
            if now >= until_s:
                return
            self.stop.wait(min(TICK_S, until_s - now))

    # -- sessions -----------------------------------------------------------
    def _connect(self) -> bool:
        from pktbench.session import Client
        delay = self.config.reconnect_s
        self.tracker.state = "disconnected"
        failures = 0
        while not self._done():
            client = Client(self.config.target, secret=self.config.secret,
                            connect_timeout_s=self.config.connect_timeout_s)
            try:
                client.connect()
            except AuthError:
                raise
            except (PktbenchError, OSError) as exc:
                client.close()
                if failures == 0:  # the first of a streak: the file need not grow while down
                    self._emit({"type": "connect_failed", "start_s": round(time.time(), 6),
                                "reason": str(exc)})
                    self.tracker.note_control(f"{_now()}: connect failed: {exc}")
                failures += 1
                self._idle_until(time.time() + delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            self._client = client
            self.sessions += 1
            reason = "start" if self.sessions == 1 else "reconnected after the session was lost"
            if self.sessions > 1:
                self.tracker.note_control(f"{_now()}: new session {self.sessions} "
                                          f"({client.server_name})")
            self.tracker.state = "probing"
            self.tracker.context = {"session": self.sessions}
            self._emit({"type": "session", "session": self.sessions,
                        "start_s": round(time.time(), 6), "server": client.server_name,
                        "reason": reason, "failed_connects": failures})
            return True
        return False

    def _lose_session(self, why: str) -> None:
        self.tracker.note_control(f"{_now()}: {why}")
        self._emit({"type": "session_lost", "session": self.sessions,
                    "start_s": round(time.time(), 6), "reason": why})
        self._step = None
        self._last_due_ns = None
        for record in self._held:
            record["direction"] = "unknown: the session ended with the step"
            self._emit_to(record)
        self._held.clear()
        self._close_bins(SESSION_LOST)
        self._close_client()

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (PktbenchError, OSError):
                pass

    def _poll_control(self) -> str | None:
        """Why the control connection is unusable mid-step, or None while it is fine.

        Mid-step the server sends only answers to progress queries (taken
        here, without waiting); anything else, or end of file, means the
        step is over on the server's side."""
        client = self._client
        if client._control is None:  # noqa: SLF001
            return "control connection closed"
        pending = client.progress_pending
        try:
            event = client.poll()
        except (PktbenchError, OSError) as exc:
            return str(exc)
        if event is None:
            return None
        if isinstance(event, Progress):
            self._on_progress(event)
            return None
        if isinstance(event, Error) and event.code == "refused" and pending:
            self._refused(event.message or event.code)
            return None
        if isinstance(event, Error):
            return f"the server ended the step: {event.message or event.code}"
        return f"the server ended the step (it sent {type(event).__name__} mid-step)"

    def _refused(self, why: str) -> None:
        if self._live_bins is not None:
            self._live_bins.closed = f"the server refused the progress query: {why}"
            self._live_bins = None
            self._release()

    def _begin(self, params: StepParams) -> Any:
        try:
            return self._client.begin_step(params)
        except ConfigError as exc:
            if self._lease_s > 4 * self.config.interval_s and "limit" in str(exc):
                self._lease_s = max(self._lease_s / 4, 2 * self.config.interval_s)
                raise _StepLost(f"step refused ({exc}); asking for {self._lease_s:g} s "
                                "steps") from None
            raise
        except (PktbenchError, OSError) as exc:
            raise _StepLost(f"step not armed: {exc}") from None

    # -- rr: timed to the packet --------------------------------------------
    def _rr_step(self) -> None:
        cfg = self.config
        rate = cfg.rate_pps
        lease = self._lease_s
        # The step declares CATCH_UP times the probe's rate: the server answers
        # at most the declared rate (with a quarter second's burst), and a
        # watcher that the host stalls catches up at once when it wakes; at
        # the bare rate that catch-up would be dropped as over-rate and read
        # as an outage of the path. The server's own --max-rate still holds.
        period = 1e9 / rate
        # The intervals' bins are fixed before the step is armed (they go in
        # its request): seq 0 is planned for a little after the arm's round
        # trip, and sent then or, if arming took longer, at once. The bins
        # follow the plan, so a late start shifts them from the wall clock by
        # that lateness (ms), never splits one.
        wall_offset = time.time_ns() - engine.monotonic_ns()
        planned = engine.monotonic_ns() + int(min(max(2 * self._arm_s, 0.002) + 0.001, 0.5) * 1e9)
        interval_ns = max(round(cfg.interval_s * 1e9), 1)
        slot0, offset_ns = divmod(planned + wall_offset, interval_ns)
        per_bin = interval_ns / period
        phase = min(offset_ns / period, math.nextafter(per_bin, 0.0))
        counts_bins = (FEATURE_STEP_BINS in self._client.server_capabilities
                       and per_bin >= 1.0)
        params = StepParams(workload="rr", command="ping", rate_pps=rate * CATCH_UP,
                            duration_s=lease, drain_s=0.0, size_bytes=cfg.size_bytes,
                            timeout_s=cfg.timeout_s,
                            bin_phase=phase if counts_bins else None,
                            bin_packets=per_bin if counts_bins else None)
        arm_started = time.monotonic()
        armed = self._begin(params)
        self._arm_s = time.monotonic() - arm_started
        self.steps += 1
        step = _Step(self.steps, self._seq, time.time())
        self._step = step
        bins = _Bins(armed.step_id, self._seq, slot0, phase, per_bin)
        if not counts_bins:
            bins.closed = NO_BINS if per_bin < 1.0 else NO_FEATURE
        self._bins.append(bins)
        self._live_bins = bins if counts_bins else None
        self.tracker.context = {"session": self.sessions, "step": self.steps}
        template = wire.build_request(wire.COMMANDS["ping"], cfg.size_bytes, token=armed.token,
                                      seq=0, send_ns=0)
        sock = self._client.data_socket
        sender = engine.loops.PacedSender(sock.fileno(), template, rate_pps=rate,
                                          expect_replies=True, timeout_s=cfg.timeout_s,
                                          keep_replies=True, spin=cfg.rate_pps > SPIN_ABOVE_PPS,
                                          kernel_timestamps=True)
        count = int(lease * rate)
        t0 = max(planned, engine.monotonic_ns() + 200_000)
        sender.begin(t0, count, False)
        # from the previous step's last request to this step's first (None after a reconnect)
        gap_ms = ((t0 - self._last_due_ns) / 1e6 if self._last_due_ns is not None else None)
        chunk_ns = int(engine.CHUNK_S * 1e9)
        late_index = engine.loops.SENDER_COUNTERS.index("late")
        state = _RrState(sender, t0, period, wall_offset, self._seq, bins)
        step_end_ns = t0 + int(min(cfg.step_s, lease) * 1e9)
        lease_end_ns = t0 + int(count * period)
        next_tick = engine.monotonic_ns()
        healthy_since: int | None = None
        why = "step length reached"
        while True:
            now = engine.monotonic_ns()
            rc = sender.run(min(now + chunk_ns, lease_end_ns), True)
            if rc == -errno.ECONNREFUSED:
                self._feed(state, sender.sent, late_index)
                raise _StepLost("the server's data port refused the probe (ICMP port "
                                "unreachable): the server has gone")
            engine.check_rc(rc, "probing")
            now = engine.monotonic_ns()
            if now < next_tick and now < lease_end_ns:
                continue
            next_tick = now + int(TICK_S * 1e9)
            final = int((now - t0 - (cfg.timeout_s + _FINAL_MARGIN_S) * 1e9) / period) + 1
            self._feed(state, min(max(final, 0), sender.sent), late_index)
            gone = self._poll_control()
            if gone is not None:
                self._feed(state, sender.sent, late_index)
                raise _StepLost(gone)
            self._ask_progress()
            wall = time.time()
            if self.tracker.in_loss_run:
                healthy_since = None
            elif healthy_since is None:
                healthy_since = now
            settled = healthy_since is not None and now - healthy_since >= 0.5e9
            if self._done():
                why = "watch ending"
                break
            if now >= lease_end_ns:
                why = "lease ended"
                break
            if settled and healthy_since is not None and (
                    now >= step_end_ns or (self._held and now >= healthy_since + 1e9)
                            or wall >= self._next_knee_s):
                why = "outage over" if self._held else (
                    "knee check due" if wall >= self._next_knee_s else "step length reached")
                break
        self._change_over(state, late_index, params, gap_ms, why)

    def _feed(self, state: _RrState, final: int, late_index: int) -> None:
        sender = state.sender
        lag = sender.send_lag_hist
        if state.lag_seen is None:
            state.lag_seen = np.zeros_like(lag)
        state.stalled += int((lag[_STALL_BUCKET:] - state.lag_seen[_STALL_BUCKET:]).sum())
        now = time.time()
        if state.stalled and now >= state.stall_said_s + 1.0:
            # The host did not run the watcher on time: its requests left late
            # (their latency still counts from the schedule); said, not hidden.
            self._emit({"type": "sender_stall", "start_s": round(now, 6),
                        "late_sends": state.stalled,
                        "lag_max_s": round(int(sender.counters[_LAG_MAX]) / 1e9, 6)})
            state.stalled = 0
            state.stall_said_s = now
        state.lag_seen = lag.copy()
        late = int(sender.counters[late_index])
        if late > state.late:
            self.tracker.add_late(late - state.late, time.time())
            state.late = late
        if final <= state.cursor:
            return
        lo = state.cursor
        window = int(sender.window_size)
        # Past one window the answers are overwritten; read in window-sized pieces.
        while lo < final:
            hi = min(final, lo + window // 2)
            raw = sender.replies(lo, hi)
            lat = raw.astype(np.float64) - 1.0
            lat[raw == 0] = np.nan
            seqs = np.arange(lo, hi, dtype=np.float64)
            due = (state.t0 + state.wall_offset + seqs * state.period).astype(np.int64)
            sent = due + sender.send_lags(lo, hi).astype(np.int64)
            # Each request's interval by the bins' expression (numpy's float64
            # add and divide round as the server's C doubles do).
            bins = state.bins
            slots = bins.slot0 + np.floor((seqs + bins.phase) / bins.per_bin).astype(np.int64)
            self.tracker.feed(state.seq_base + lo, due, lat, sent, slots)
            lo = hi
        state.cursor = final
        self._seq = state.seq_base + final

    def _change_over(self, state: _RrState, late_index: int, params: StepParams,
                     gap_ms: float | None, why: str) -> None:
        cfg = self.config
        sender = state.sender
        sent = int(sender.sent)
        stopped_ns = engine.monotonic_ns()
        self._last_due_ns = state.t0 + int((sent - 1) * state.period) if sent else None
        # Replies still owed: wait a few recent round trips, never the full
        # timeout unless the path is that slow, so a change-over costs ms.
        wait_ns = int(min(cfg.timeout_s, max(0.02, 4.0 * state.recent_max_s(self.tracker))) * 1e9)
        if sent:
            engine.check_rc(sender.run(stopped_ns + wait_ns, False), "draining")
        self._feed(state, sent, late_index)
        sender.finish()
        counters = dict(zip(engine.loops.SENDER_COUNTERS, (int(v) for v in sender.counters)))
        assert self._step is not None
        step = self._step
        bins = state.bins
        bins.end_seq = state.seq_base + sent
        if self._client.progress_pending:  # the table wants its answer before StepStop
            try:
                self._on_progress(self._client.wait_progress(_PROGRESS_WAIT_S))
            except ServerRefusedError as exc:
                self._refused(str(exc))
            except (PktbenchError, OSError) as exc:
                raise _StepLost(f"progress answer not received: {exc}") from None
        try:
            receiver = self._client.end_step({"sent": sent}, params.result_timeout_s)
        except (PktbenchError, OSError) as exc:
            raise _StepLost(f"step result not received: {exc}") from None
        final = receiver.get("bins")
        if self._live_bins is bins and isinstance(final, dict):
            start, counts = final.get("start"), final.get("counts")
            if isinstance(start, int) and isinstance(counts, list) \
                    and all(isinstance(c, int) for c in counts):
                bins.take(start, counts)
        if bins.closed is None:
            bins.closed = EVICTED
        self._live_bins = None
        server_received = int(receiver.get("received", 0))
        replied = int(receiver.get("replied", server_received))
        client_received = counters["received"]
        lost_up = max(sent - server_received, 0)
        # Down: the server got the request and no reply came in time, whether
        # the path lost it or the server's host refused to send it (a local
        # firewall's output drop fails the send, so `replied` never counts it).
        lost_down = max(server_received - client_received - counters["late"], 0)
        record: Record = {
            "type": "step", "session": self.sessions, "step": step.number,
            "start_s": round(step.start_s, 6), "end_s": round(time.time(), 6),
            "seq": [step.seq_base, step.seq_base + sent], "sent_packets": sent,
            "received_packets": client_received, "late_packets": counters["late"],
            "server_received_packets": server_received, "server_replied_packets": replied,
            "lost_up_packets": lost_up, "lost_down_packets": lost_down,
            "gap_before_s": round(gap_ms / 1e3, 6) if gap_ms is not None else None, "ended": why,
        }
        self._step = None
        for outage in self._held:
            outage["direction"] = _direction(outage, step, sent, lost_up, lost_down)
            self._emit_to(outage)
        self._held.clear()
        self._emit(record)
        self._release()

    # -- blast, rr-tcp: one step per interval -------------------------------
    def _interval_steps(self) -> None:
        cfg = self.config
        tcp = cfg.workload == "rr-tcp"
        params = StepParams(workload=cfg.workload, command="ping" if tcp else "none",
                            rate_pps=cfg.rate_pps, duration_s=cfg.interval_s, drain_s=0.2,
                            size_bytes=cfg.size_bytes, timeout_s=cfg.timeout_s)
        for _ in range(max(1, int(cfg.step_s / cfg.interval_s))):
            if self._done() or time.time() >= self._next_knee_s:
                return
            start = time.time()
            self.steps += 1
            try:
                result = self._client.run_step(params, index=self.steps)
            except (PktbenchError, OSError) as exc:
                raise _StepLost(f"step failed: {exc}") from None
            self._interval_from_step(result, start, time.time())

    def _interval_from_step(self, result: Any, start: float, end: float) -> None:
        sent = int(result.get("sent_packets", 0))
        received = int(result.get("received_packets", 0))
        lat = result.get("latency_us")
        lost = max(sent - received, 0)
        t = self.tracker.totals
        t.sent += sent
        t.received += received
        t.lost += lost
        t.late += int(result.get("late_packets", 0))
        t.intervals += 1
        if sent and received == 0:
            t.outages += 1
            t.outage_s += end - start
            self._emit({"type": "outage", "start_s": round(start, 6), "end_s": round(end, 6),
                        "duration_s": round(end - start, 6), "lost_packets": lost,
                        "resolution": "interval", "control": ["control connection up"],
                        "session": self.sessions, "step": self.steps})
        self._emit({"type": "interval", "start_s": round(start, 6), "end_s": round(end, 6),
                    "sent_packets": sent, "received_packets": received, "lost_packets": lost,
                    "late_packets": int(result.get("late_packets", 0)),
                    "loss_ratio": round(lost / sent, 6) if sent else None,
                    "latency_us": ({k: round(float(v), 1) for k, v in lat.items()}
                                   if isinstance(lat, dict) else None),
                    "jitter_us": result.get("jitter_us"),
                    "state": "probing", "session": self.sessions, "step": self.steps,
                    "totals": {"sent_packets": t.sent, "received_packets": t.received,
                               "lost_packets": t.lost,
                               "late_packets": t.late, "outages": t.outages}})

    # -- knee checks ---------------------------------------------------------
    def _knee_check(self) -> None:
        from pktbench import api, config
        cfg = self.config
        assert cfg.knee_every_s is not None and cfg.knee_profile is not None
        self._close_client()  # the server runs one session at a time
        self.tracker.state = "paused"
        started = time.time()
        self._emit({"type": "pause", "start_s": round(started, 6), "reason": "knee check",
                    "profile": cfg.knee_profile})
        record: Record = {"type": "knee", "start_s": round(started, 6),
                          "profile": cfg.knee_profile}
        try:
            profile = config.load_profile(cfg.knee_profile)
            result = api.sweep(cfg.target, profile, secret=cfg.secret, stop=self.stop)
            record["knee_pps"] = result.knee_pps
            record["last_good_pps"] = result.last_good_pps
            record["steps"] = len(result.steps)
        except (PktbenchError, OSError) as exc:
            record["knee_pps"] = None
            record["error"] = str(exc)
        record["end_s"] = round(time.time(), 6)
        self.knees.append(record)
        self._emit(record)
        self._emit({"type": "resume", "start_s": round(time.time(), 6),
                    "paused_s": round(time.time() - started, 3)})
        self._next_knee_s = time.time() + cfg.knee_every_s
        self.tracker.advance(time.time() - cfg.timeout_s)
        self.tracker.state = "probing"


@dataclass
class _RrState:
    sender: Any
    t0: int
    period: float
    wall_offset: int
    seq_base: int
    bins: _Bins
    cursor: int = 0
    late: int = 0
    lag_seen: Any = None
    stalled: int = 0  # requests sent STALL_S or more late, not yet recorded
    stall_said_s: float = 0.0

    def recent_max_s(self, tracker: Tracker) -> float:
        return tracker.recent_max_latency_s


def _direction(outage: Record, step: _Step, sent: int, lost_up: int, lost_down: int) -> str:
    """Which way an outage's requests were lost, from its step's server counts."""
    first = int(outage.get("first_lost_seq", -1))
    if not step.seq_base <= first < step.seq_base + sent:
        return "unknown: the outage began in an earlier step"
    lost = int(outage.get("lost_packets", 0))
    if lost <= 0:
        return "unknown"
    if lost_up >= 0.9 * lost and lost_down <= 0.1 * lost:
        return "up"
    if lost_down >= 0.9 * lost and lost_up <= 0.1 * lost:
        return "down"
    return "both"


def _now() -> str:
    return time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
