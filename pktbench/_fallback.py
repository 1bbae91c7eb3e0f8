"""The engine in plain Python: the same names and behaviour as the compiled one.

Owns: a pure-Python twin of every class and function the compiled engine
exports (the paced UDP sender, the UDP responder, the RESP client, server
and parsers, the bulk pump, the histogram), so pktbench runs where the
extension could not be built. pktbench/engine.py chooses between the two.

Invariants:
- Same constructor arguments, counters, histogram geometry, return codes
  (0 or -errno) and deadlines as the compiled loops; only the speed differs.
- Python has no sendmmsg/recvmmsg, so a batch is a loop of send/recvmsg_into
  calls: one syscall per datagram, and every one counted as a call.
- The caller's file descriptors are never closed: each socket object here
  wraps the caller's fd and is detached from it, never closed, when dropped.
- Every loop holds the GIL except inside its syscalls; threads of one
  process share one core's worth of Python, which is the price of no compiler.
"""
from __future__ import annotations

import ctypes
import math
import errno as _errno
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pktbench import wire
# The counter names and their order are the compiled engine's: both take them
# from the one table in wire.py.
from pktbench.wire import CLIENT_COUNTERS as CLIENT_COUNTERS
from pktbench.wire import RESPONDER_COUNTERS as RESPONDER_COUNTERS
from pktbench.wire import SENDER_COUNTERS as SENDER_COUNTERS
from pktbench.wire import SERVER_COUNTERS as SERVER_COUNTERS

_U64 = npt.NDArray[np.uint64]

# --------------------------------------------------------------------------
# Clock, sleep policy and histogram (the compiled _timing.pxi)
# --------------------------------------------------------------------------

HISTOGRAM_SUB_BITS = 7
_HIST_MAX_SHIFT = 30
HISTOGRAM_BUCKETS = (_HIST_MAX_SHIFT + 2) << HISTOGRAM_SUB_BITS
_HIST_MAX_VALUE = (1 << (_HIST_MAX_SHIFT + HISTOGRAM_SUB_BITS + 1)) - 1
SPIN_MARGIN_NS = 120_000
NONBLOCKING_NS = 1_000_000
BIN_RING = 256  # per-interval bins a responder holds (the compiled engine's BIN_RING)
FLAG_WARMUP = wire.FLAG_WARMUP
_FD_SETSIZE = 1024

monotonic_ns = time.monotonic_ns  # CLOCK_MONOTONIC on Linux, as the engine's clock_gettime
# No UDP GSO send or GRO receive here: one datagram per syscall is all Python
# has, so the GSO arguments are taken and the per-datagram path always runs.
UDP_OFFLOAD = False


def _hist_index(value: int) -> int:
    if value > _HIST_MAX_VALUE:
        value = _HIST_MAX_VALUE
    shift = (value | 1).bit_length() - 1 - HISTOGRAM_SUB_BITS
    if shift < 0:
        shift = 0
    return (shift << HISTOGRAM_SUB_BITS) + (value >> shift)


def hist_record(hist: _U64, values: _U64) -> None:
    """Add `values` (ns) to `hist`, exactly as the packet loops do."""
    if hist.shape[0] != HISTOGRAM_BUCKETS:
        raise ValueError(f"histogram must have {HISTOGRAM_BUCKETS} buckets")
    for value in values.tolist():
        hist[_hist_index(int(value))] += 1


def _set_timer_slack() -> None:
    """1 ns timer slack, as the compiled loops ask: sleeps end closer to their deadline."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def _sleep_until(fd: int, watch_fd: bool, deadline_ns: int) -> None:
    """Sleep until `deadline_ns` or until `fd` is readable (if watched)."""
    wait_ns = deadline_ns - time.monotonic_ns()
    if wait_ns <= 0:
        return
    if not watch_fd:
        time.sleep(wait_ns / 1e9)
    elif fd < _FD_SETSIZE:
        select.select([fd], [], [], wait_ns / 1e9)  # microsecond resolution, unlike poll
    else:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(max(1, wait_ns // 1_000_000))


def _wrap(fd: int) -> socket.socket:
    """A socket object on the caller's `fd` itself, released with `_release`, never closed.

    Not a dup: a dup would keep the socket open after the caller closes it,
    so a peer would never see the EOF or reset the caller meant to send.
    """
    return socket.socket(fileno=fd)


def _release(sock: socket.socket) -> None:
    """Let go of a `_wrap` socket without closing the caller's fd."""
    if sock.fileno() >= 0:
        sock.detach()


def _errno_of(exc: OSError) -> int:
    return exc.errno if exc.errno else _errno.EIO


_HEADER = struct.Struct("!HBBBBHQQQ")  # wire.FIELDS, in order
_OFF_KIND = 3
_OFF_FLAGS = 5
_OFF_SEQ = 16
_SEQ_SEND = struct.Struct("!QQ")  # seq, send_ns: adjacent at _OFF_SEQ
_CMSG_SPACE = socket.CMSG_SPACE(4)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)


def _rxq_overflow(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder)
    return 0


class _SeqWindow:
    """Which of the last `size` sequence numbers were seen (one bit each)."""

    def __init__(self, size_bits: int) -> None:
        size = 1
        while size < size_bits:
            size <<= 1
        self.mask = size - 1
        self.bits = bytearray(size // 8 + 1)
        self.final_end = 0
        self.run_length = 0

    def size(self) -> int:
        return self.mask + 1

    def reset(self) -> None:
        self.bits[:] = bytes(len(self.bits))
        self.final_end = 0
        self.run_length = 0

    def test(self, seq: int) -> bool:
        slot = seq & self.mask
        return bool((self.bits[slot >> 3] >> (slot & 7)) & 1)

    def set(self, seq: int) -> None:
        slot = seq & self.mask
        self.bits[slot >> 3] |= 1 << (slot & 7)

    def finalize_to(self, end: int, c: list[int], lost: int, episodes: int, max_run: int) -> None:
        """Count losses in [final_end, end) and clear those slots for reuse.

        Work is bounded by the window: past one window's worth nothing can
        have been recorded, so the rest is one run of misses, counted at once."""
        bits, mask = self.bits, self.mask
        seq = self.final_end
        run = self.run_length
        stop = min(end, seq + mask + 1)
        while seq < stop:
            slot = seq & mask
            byte, bit = slot >> 3, 1 << (slot & 7)
            if bits[byte] & bit:
                run = 0
                bits[byte] &= ~bit & 0xFF
            else:
                c[lost] += 1
                if run == 0:
                    c[episodes] += 1
                run += 1
                if run > c[max_run]:
                    c[max_run] = run
            seq += 1
        if seq < end:
            c[lost] += end - seq
            if run == 0:
                c[episodes] += 1
            run += end - seq
            if run > c[max_run]:
                c[max_run] = run
        self.final_end = max(self.final_end, end)
        self.run_length = run


class _Hists:
    """Histograms kept as Python lists in the loops, copied to numpy when read."""

    def __init__(self, count: int) -> None:
        self.lists = [[0] * HISTOGRAM_BUCKETS for _ in range(count)]
        self.arrays = [np.zeros(HISTOGRAM_BUCKETS, dtype=np.uint64) for _ in range(count)]

    def clear(self) -> None:
        for values, array in zip(self.lists, self.arrays):
            values[:] = [0] * HISTOGRAM_BUCKETS
            array[:] = 0

    def array(self, k: int) -> _U64:
        self.arrays[k][:] = self.lists[k]
        return self.arrays[k]


# --------------------------------------------------------------------------
# UDP: paced sender and responder
# --------------------------------------------------------------------------

(S_SENT, S_SENT_BYTES, S_SEND_CALLS, S_EAGAIN, S_ENOBUFS, S_RECEIVED, S_RECEIVED_BYTES, S_LATE,
 S_DUPLICATE, S_BOGUS, S_WARMUP_REPLIES, S_LOST, S_LOSS_EPISODES, S_LOSS_MAX_RUN,
 S_RCVBUF_DROPS, S_LAT_MIN_NS, S_LAT_MAX_NS, S_ACTUAL_MIN_NS, S_ACTUAL_MAX_NS,
 S_LAG_MAX_NS) = range(len(SENDER_COUNTERS))

(R_RECEIVED, R_RECEIVED_BYTES, R_REPLIED, R_REPLY_BYTES, R_REPLY_EAGAIN, R_REPLY_ERRORS,
 R_WARMUP, R_DUPLICATE, R_REORDERED, R_STALE, R_SEQ_END, R_RCVBUF_DROPS, R_LOST,
 R_LOSS_EPISODES, R_LOSS_MAX_RUN, R_OVER_RATE) = range(len(RESPONDER_COUNTERS))

_U64_MAX = (1 << 64) - 1
(D_TOO_SHORT, D_BAD_MAGIC, D_BAD_VERSION, D_BAD_KIND, D_BAD_TOKEN, D_BAD_SOURCE, D_BAD_PAYLOAD,
 D_OVERSIZED, D_BAD_SEQ) = (wire.DROP_REASONS.index(name) for name in (
     "too_short", "bad_magic", "bad_version", "bad_kind", "bad_token", "bad_source",
     "bad_payload", "oversized", "bad_seq"))


class _Metered:
    """The meter's views shared by PacedSender and RespClient (_meter.pxi's twin):
    counters `c`, and the scheduled, actual and send-lag histograms."""

    c: list[int]
    _counters: _U64
    _hists: _Hists

    @property
    def counters(self) -> _U64:
        self._counters[:] = self.c
        return self._counters

    @property
    def latency_hist(self) -> _U64:
        return self._hists.array(0)

    @property
    def actual_latency_hist(self) -> _U64:
        return self._hists.array(1)

    @property
    def send_lag_hist(self) -> _U64:
        return self._hists.array(2)

    def snapshot(self) -> tuple[int, _U64, _U64]:
        """The meter now: (monotonic ns, counters, reply-latency histogram), copies.

        Safe from another thread while `run` goes on (the compiled twin's
        _meter.pxi says how a reader uses it).
        """
        now = time.monotonic_ns()
        return now, np.array(self.c, dtype=np.uint64), self._hists.array(0).copy()


class PacedSender(_Metered):
    """Open-loop paced UDP sender on a connected socket (see the compiled twin).

    Packet i of a phase is due at t0 + i * period; whatever is due goes out
    at once, one send per datagram, so a late wake-up is caught up and the
    average rate stays exact.
    """

    def __init__(self, fd: int, template: bytes, *, rate_pps: float, expect_replies: bool,
                 busy_poll: bool = False, timeout_s: float = 1.0, batch: int = 64,
                 max_outstanding: int = 0, gso_segments: int = 0, burst: int = 1,
                 gro: bool = False, keep_replies: bool = False, spin: bool = True,
                 kernel_timestamps: bool = False) -> None:
        if len(template) < wire.HEADER_SIZE:
            raise ValueError("template shorter than the header")
        if keep_replies and timeout_s > 4.0:
            raise ValueError("keep_replies holds latencies up to 4 s: timeout_s must be <= 4")
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be 1..1024")
        if not 0 <= gso_segments <= 64:
            raise ValueError("gso_segments must be 0..64")
        if burst < 1 or burst > 4096:
            raise ValueError("burst must be 1..4096")
        self.burst = min(burst, batch)
        self.gso_segments = 0
        self.gso_buffers = 0
        self.gso_datagrams = 0
        self.gso_errno = 0
        self.gro = False
        self.gro_reads = 0
        # Replies are stamped when read here: the kernel's stamps are the
        # compiled engine's way to fewer wake-ups.
        self.kernel_timestamps = False
        self._sock = _wrap(fd)
        self.fd = self._sock.fileno()
        self.batch = batch
        self.size = len(template)
        self.period_ns = 1e9 / rate_pps if rate_pps > 0 else 0.0
        self.expect_replies = expect_replies
        self.busy_poll = busy_poll
        self.max_outstanding = max_outstanding if expect_replies else 0
        self.timeout_ns = int(timeout_s * 1e9)
        self.token = struct.unpack_from("!Q", template, 8)[0]
        self.tx = bytearray(template)
        self.rx_slot = self.size + 1  # one spare byte shows truncation
        self.rx = bytearray(self.rx_slot)
        self.rx_view = memoryview(self.rx)
        in_flight = min(2.0 * timeout_s * (rate_pps if rate_pps > 0 else 2e6), 67108864.0)
        self.window = _SeqWindow(int(in_flight) if in_flight > 65536.0 else 65536)
        # per seq slot: 0 unanswered, else scheduled latency ns + 1
        self.reply_ring = (np.zeros(self.window.size(), dtype=np.uint32) if keep_replies
                           else None)
        self.spin_ns = SPIN_MARGIN_NS if spin else 0  # see the compiled twin
        # per seq slot: actual send time minus scheduled, ns
        self.lag_ring = (np.zeros(self.window.size(), dtype=np.uint32) if keep_replies
                         else None)
        self.t0_ns = 0
        self.next_seq = 0
        self.limit = 0
        self.warmup = False
        self.last_send_ns = 0
        self.c = [0] * len(SENDER_COUNTERS)
        self._counters = np.zeros(len(SENDER_COUNTERS), dtype=np.uint64)
        self._hists = _Hists(3)

    def begin(self, t0_ns: int, limit: int, warmup: bool) -> None:
        """Start a phase: seq restarts at 0, due at t0_ns; counters cleared."""
        self.t0_ns = t0_ns
        self.next_seq = 0
        self.limit = limit
        self.warmup = bool(warmup)
        self.window.reset()
        self.c = [0] * len(SENDER_COUNTERS)
        self.c[S_LAT_MIN_NS] = _U64_MAX
        self.c[S_ACTUAL_MIN_NS] = _U64_MAX
        self._hists.clear()
        self.tx[_OFF_FLAGS] = FLAG_WARMUP if warmup else 0

    @property
    def next_due_ns(self) -> int:
        return self._due_ns(self.next_seq)

    @property
    def sent(self) -> int:
        return self.next_seq

    @property
    def window_size(self) -> int:
        return self.window.size()

    def replies(self, lo: int, hi: int) -> npt.NDArray[np.uint32]:
        """Per request lo..hi-1 of this phase: 0 or its scheduled latency ns + 1."""
        return self._ring_slice(self.reply_ring, lo, hi)

    def send_lags(self, lo: int, hi: int) -> npt.NDArray[np.uint32]:
        """Per request lo..hi-1 of this phase: how late it left, ns (capped at 2^32 - 1)."""
        return self._ring_slice(self.lag_ring, lo, hi)

    def _ring_slice(self, ring: npt.NDArray[np.uint32] | None, lo: int, hi: int
                    ) -> npt.NDArray[np.uint32]:
        if ring is None:
            raise ValueError("this sender was made without keep_replies")
        if hi < lo or hi > self.next_seq or self.next_seq - lo > self.window.mask + 1:
            raise ValueError(f"requests {lo}..{hi} are not all within the last window "
                             f"({self.next_seq} sent, window {self.window.mask + 1})")
        slots = np.arange(lo, hi, dtype=np.uint64) & np.uint64(self.window.mask)
        out: npt.NDArray[np.uint32] = ring[slots].copy()
        return out

    def _due_ns(self, seq: int) -> int:
        return self.t0_ns + int(seq * self.period_ns)

    def run(self, until_ns: int, send: bool = True) -> int:
        """Send what is due and read replies until `until_ns` or the limit; 0 or -errno."""
        _set_timer_slack()
        c = self.c
        waits_for_replies = self.max_outstanding > 0 and not self.busy_poll
        while True:
            now = time.monotonic_ns()
            if now >= until_ns:
                return 0
            window_full = False
            if send and self.next_seq < self.limit:
                if self.period_ns > 0:
                    n_due = int((now - self.t0_ns) / self.period_ns) + 1 if now >= self.t0_ns else 0
                    n_due = n_due - self.next_seq if n_due > self.next_seq else 0
                else:
                    n_due = self.batch
                left = self.limit - self.next_seq
                n_due = min(n_due, left)
                if n_due < self.burst and n_due < left and self.period_ns > 0:
                    n_due = 0  # a burst goes out whole: wait for its last datagram
                if self.max_outstanding > 0 and n_due > 0:
                    n_due = self._window_room(now, n_due)
                    window_full = n_due == 0
                if n_due > 0:
                    sent = self._send(min(n_due, self.batch), now)
                    if sent < 0:
                        return sent
                    if self.expect_replies and not waits_for_replies:
                        rc = self._receive(socket.MSG_DONTWAIT)
                        if rc < 0:
                            return rc
                    continue
            elif not self.expect_replies:
                return 0
            elif not send and c[S_RECEIVED] >= self.next_seq:
                return 0
            if self.expect_replies and not (window_full and waits_for_replies):
                rc = self._receive(socket.MSG_DONTWAIT)
                if rc < 0:
                    return rc
                if rc > 0:
                    continue
            if self.busy_poll:
                continue
            if window_full:
                wake = min(self.last_send_ns + self.timeout_ns, until_ns)
                rc = self._receive(0)  # blocks until a reply or SO_RCVTIMEO
                if rc < 0:
                    return rc
                if rc == 0 and time.monotonic_ns() < now + NONBLOCKING_NS:
                    _sleep_until(self.fd, True, wake)  # the socket does not block
                continue
            ahead = min(self.burst - 1, self.limit - self.next_seq - 1)
            due = (self._due_ns(self.next_seq + ahead) if send and self.next_seq < self.limit
                   else until_ns)
            due = min(due, until_ns)
            now = time.monotonic_ns()
            if due > now + self.spin_ns:
                _sleep_until(self.fd, self.expect_replies, due - self.spin_ns)

    def _window_room(self, now: int, n_due: int) -> int:
        """Closed-loop cap: at most max_outstanding requests unanswered."""
        answered = self.c[S_RECEIVED] + self.c[S_LATE]
        in_flight = self.next_seq - answered if self.next_seq > answered else 0
        if in_flight >= self.max_outstanding:
            return 0 if now - self.last_send_ns < self.timeout_ns else 1
        return min(n_due, self.max_outstanding - in_flight)

    def _send(self, n: int, now: int) -> int:
        c = self.c
        tx, sock, pack_into = self.tx, self._sock, _SEQ_SEND.pack_into
        sent = 0
        for i in range(n):
            pack_into(tx, _OFF_SEQ, self.next_seq + i, now)
            c[S_SEND_CALLS] += 1
            try:
                sock.send(tx, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if sent == 0:
                    c[S_EAGAIN] += 1
                break
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    if sent == 0:
                        c[S_ENOBUFS] += 1
                    break
                if sent == 0:
                    return -_errno_of(exc)
                break
            sent += 1
        lag_hist = self._hists.lists[2]
        ring = self.reply_ring
        for i in range(sent):
            seq = self.next_seq + i
            if ring is not None:
                ring[seq & self.window.mask] = 0
            if self.expect_replies and seq > self.window.mask:
                self.window.finalize_to(seq - self.window.mask, c, S_LOST, S_LOSS_EPISODES,
                                        S_LOSS_MAX_RUN)
            if self.period_ns > 0:
                due = self._due_ns(seq)
                lag = now - due if now > due else 0
                lag_hist[_hist_index(lag)] += 1
                if self.lag_ring is not None:
                    self.lag_ring[seq & self.window.mask] = min(lag, 0xFFFFFFFF)
                if lag > c[S_LAG_MAX_NS]:
                    c[S_LAG_MAX_NS] = lag
        if sent:
            self.next_seq += sent
            self.last_send_ns = now
            c[S_SENT] += sent
            c[S_SENT_BYTES] += sent * self.size
        return sent

    def _receive(self, flags: int) -> int:
        """Read up to one batch of replies; returns how many, or -errno.

        Only the first read may block (flags 0: until a reply or the socket's
        SO_RCVTIMEO), the rest are MSG_DONTWAIT: recvmmsg's MSG_WAITFORONE.
        """
        c = self.c
        sock, view, slot = self._sock, self.rx_view, self.rx_slot
        sched_hist, actual_hist = self._hists.lists[0], self._hists.lists[1]
        got = 0
        ancdata: list[tuple[int, int, bytes]] = []
        window = self.window
        while got < self.batch:
            try:
                length, ancdata, msg_flags, _ = sock.recvmsg_into([view], _CMSG_SPACE, flags)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if got == 0:
                    return -_errno_of(exc)  # a refused port (ICMP) surfaces here
                break
            flags = socket.MSG_DONTWAIT
            got += 1
            rx = time.monotonic_ns()
            if length < wire.HEADER_SIZE or length >= slot or msg_flags & socket.MSG_TRUNC:
                c[S_BOGUS] += 1
                continue
            magic, version, kind, _cmd, pkt_flags, _stream, token, seq, sent_at = \
                _HEADER.unpack_from(view)
            if magic != wire.MAGIC or version != wire.VERSION or kind != wire.KIND_RESPONSE \
                    or token != self.token:
                c[S_BOGUS] += 1
                continue
            if bool(pkt_flags & FLAG_WARMUP) != self.warmup:
                c[S_WARMUP_REPLIES] += 1
                continue
            if seq >= self.next_seq:
                c[S_BOGUS] += 1
                continue
            if seq < window.final_end:
                c[S_LATE] += 1
                continue
            if window.test(seq):
                c[S_DUPLICATE] += 1
                continue
            actual_lat = rx - sent_at if rx > sent_at else 0
            if self.period_ns > 0:
                due = self._due_ns(seq)
                sched_lat = rx - due if rx > due else 0
            else:
                sched_lat = actual_lat  # "as fast as possible" has no schedule
            if sched_lat > self.timeout_ns:
                c[S_LATE] += 1
                continue
            window.set(seq)
            if self.reply_ring is not None:
                self.reply_ring[seq & window.mask] = min(sched_lat + 1, 0xFFFFFFFF)
            c[S_RECEIVED] += 1
            c[S_RECEIVED_BYTES] += length
            sched_hist[_hist_index(sched_lat)] += 1
            actual_hist[_hist_index(actual_lat)] += 1
            if sched_lat < c[S_LAT_MIN_NS]:
                c[S_LAT_MIN_NS] = sched_lat
            if sched_lat > c[S_LAT_MAX_NS]:
                c[S_LAT_MAX_NS] = sched_lat
            if actual_lat < c[S_ACTUAL_MIN_NS]:
                c[S_ACTUAL_MIN_NS] = actual_lat
            if actual_lat > c[S_ACTUAL_MAX_NS]:
                c[S_ACTUAL_MAX_NS] = actual_lat
        if got:
            dropped = _rxq_overflow(ancdata)
            if dropped > c[S_RCVBUF_DROPS]:
                c[S_RCVBUF_DROPS] = dropped
        return got

    def finish(self) -> None:
        """Count every request still unanswered as lost (call after draining)."""
        if self.expect_replies:
            self.window.finalize_to(self.next_seq, self.c, S_LOST, S_LOSS_EPISODES,
                                    S_LOSS_MAX_RUN)

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            _release(sock)


def _unpack_peer(peer: bytes) -> tuple[int, str, int]:
    """(family, host, port) of a packed sockaddr_in/in6, as recvmsg names a source."""
    family = struct.unpack_from("=H", peer)[0]
    port = struct.unpack_from("!H", peer, 2)[0]
    if family == socket.AF_INET:
        return family, socket.inet_ntop(socket.AF_INET, peer[4:8]), port
    if family == socket.AF_INET6 and len(peer) >= 24:
        return family, socket.inet_ntop(socket.AF_INET6, peer[8:24]), port
    raise ValueError("peer must be a packed sockaddr_in or sockaddr_in6")


class Responder:
    """Answers (reply mode) or counts (sink mode) one session's datagrams.

    Only datagrams with the live token from the session's peer address are
    valid; everything else is dropped and counted by reason. A reply is the
    request's header with kind RESPONSE plus a fixed RESP reply.
    """

    def __init__(self, fd: int, *, peer: bytes, token: int, command: int, sink: bool,
                 max_size: int, prefix: bytes = b"", reply: bytes = b"",
                 busy_poll: bool = False, batch: int = 64, window_bits: int = 1 << 20,
                 seq_limit: int = _U64_MAX, max_rate_pps: float = 0.0,
                 burst: float = 0.0, gro: bool = False, gso_segments: int = 0,
                 bin_phase: float = 0.0, bin_packets: float = 0.0) -> None:
        if not 0 <= gso_segments <= 64:
            raise ValueError("gso_segments must be 0..64")
        if bin_packets != 0.0 and (sink or not 1.0 <= bin_packets <= 1e12
                                   or not 0.0 <= bin_phase < bin_packets
                                   or seq_limit > (1 << 53)):
            raise ValueError("bins are for rr: bin_packets 1..1e12, 0 <= bin_phase < "
                             "bin_packets, seq_limit at most 2**53")
        # Bins as in the compiled Responder: seq s counts in bin
        # floor((s + bin_phase) / bin_packets); a slot's tag is its bin + 1.
        self.bin_phase = float(bin_phase)
        self.bin_packets = float(bin_packets)
        self._bin_tags = [0] * BIN_RING if bin_packets else []
        self._bin_count = [0] * BIN_RING if bin_packets else []
        self.bin_end = 0
        self.gso_segments = 0
        self.gso_buffers = 0
        self.gso_errno = 0
        self.gro = False
        self.gro_reads = 0
        if len(peer) > 28 or len(peer) < 8:
            raise ValueError("peer must be a packed sockaddr_in or sockaddr_in6")
        if max_rate_pps < 0 or burst < 0 or (max_rate_pps > 0 and burst < 1):
            raise ValueError("max_rate_pps and burst must be >= 0, burst >= 1 with a rate")
        if not sink and wire.HEADER_SIZE + len(reply) > max_size:
            raise ValueError("reply would be longer than the requests it answers")
        _, self.peer_host, self.peer_port = _unpack_peer(peer)
        self._sock = _wrap(fd)
        self.fd = self._sock.fileno()
        self.batch = batch
        self.sink = bool(sink)
        self.seq_limit = seq_limit
        # Token bucket over valid datagrams (see the compiled Responder).
        self.rate_per_ns = max_rate_pps / 1e9
        self.burst = float(burst)
        self.tokens = float(burst)
        self.refill_ns = 0
        self.busy_poll = busy_poll
        self.token = token
        self.command = command
        self.max_size = max_size
        self.prefix = bytes(prefix)
        self.min_size = wire.HEADER_SIZE + max(len(prefix), 0 if sink else len(reply))
        self.rx_slot = max_size + 1
        self.rx = bytearray(self.rx_slot)
        self.rx_view = memoryview(self.rx)
        self.tx = bytearray(wire.HEADER_SIZE + len(reply))
        self.tx[wire.HEADER_SIZE:] = reply
        self.window = _SeqWindow(window_bits)
        self.highest_seq_plus1 = 0
        self.last_transit_ns = 0
        self.have_transit = False
        self._jitter_ns = 0.0
        self.c = [0] * len(RESPONDER_COUNTERS)
        self.d = [0] * len(wire.DROP_REASONS)
        self._counters = np.zeros(len(RESPONDER_COUNTERS), dtype=np.uint64)
        self._drops = np.zeros(len(wire.DROP_REASONS), dtype=np.uint64)

    @property
    def counters(self) -> _U64:
        self._counters[:] = self.c
        return self._counters

    @property
    def drops(self) -> _U64:
        self._drops[:] = self.d
        return self._drops

    @property
    def jitter_ns(self) -> float:
        """RFC 3550 interarrival jitter of the measured blast packets."""
        return self._jitter_ns

    def run(self, until_ns: int) -> int:
        """Serve until `until_ns`; returns 0 or -errno."""
        c = self.c
        sock, view = self._sock, self.rx_view
        first_flags = socket.MSG_DONTWAIT if self.busy_poll else 0
        while True:
            rx = time.monotonic_ns()
            if rx >= until_ns:
                return 0
            got = 0
            flags = first_flags
            ancdata: list[tuple[int, int, bytes]] = []
            while got < self.batch:
                try:
                    length, ancdata, msg_flags, address = sock.recvmsg_into(
                        [view], _CMSG_SPACE, flags)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if got == 0:
                        return -_errno_of(exc)
                    break
                flags = socket.MSG_DONTWAIT
                got += 1
                rx_ns = time.monotonic_ns()
                if self.rate_per_ns > 0:
                    self._refill(rx_ns)
                if self._accept(length, msg_flags, address, rx_ns):
                    if not self.sink:
                        self._reply(address)
            if got == 0:
                # Blocking mode waits inside recvmsg; SO_RCVTIMEO bounds the wait.
                if not self.busy_poll and time.monotonic_ns() < rx + NONBLOCKING_NS:
                    _sleep_until(self.fd, True, until_ns)  # the socket does not block
                continue
            dropped = _rxq_overflow(ancdata)
            if dropped > c[R_RCVBUF_DROPS]:
                c[R_RCVBUF_DROPS] = dropped

    def _refill(self, rx: int) -> None:
        if self.refill_ns and rx > self.refill_ns:
            self.tokens = min(self.burst, self.tokens + (rx - self.refill_ns) * self.rate_per_ns)
        self.refill_ns = rx

    def _accept(self, length: int, msg_flags: int, address: Any, rx: int) -> bool:
        """Validate the datagram in the buffer; count it by outcome. True when valid."""
        d, c, view = self.d, self.c, self.rx_view
        expected_kind = wire.KIND_BLAST if self.sink else wire.KIND_REQUEST
        if msg_flags & socket.MSG_TRUNC or length > self.max_size:
            d[D_OVERSIZED] += 1
            return False
        if length < wire.HEADER_SIZE:
            d[D_TOO_SHORT] += 1
            return False
        magic, version, kind, command, flags, _stream, token, seq, send_ns = \
            _HEADER.unpack_from(view)
        if magic != wire.MAGIC:
            d[D_BAD_MAGIC] += 1
            return False
        if version != wire.VERSION:
            d[D_BAD_VERSION] += 1
            return False
        if kind != expected_kind:
            d[D_BAD_KIND] += 1
            return False
        if token != self.token:
            d[D_BAD_TOKEN] += 1
            return False
        if address[0] != self.peer_host or address[1] != self.peer_port:
            d[D_BAD_SOURCE] += 1
            return False
        if length < self.min_size or command != self.command or (
                self.prefix and view[wire.HEADER_SIZE:wire.HEADER_SIZE + len(self.prefix)]
                != self.prefix):
            d[D_BAD_PAYLOAD] += 1
            return False
        if self.sink and seq >= self.seq_limit:
            d[D_BAD_SEQ] += 1  # beyond what the step can send: not trusted
            return False
        if self.rate_per_ns > 0:
            if self.tokens < 1.0:
                c[R_OVER_RATE] += 1  # past the step's rate: the limit is on the traffic
                return False
            self.tokens -= 1.0
        if flags & FLAG_WARMUP:
            c[R_WARMUP] += 1
            return not self.sink
        c[R_RECEIVED] += 1
        c[R_RECEIVED_BYTES] += length
        if self.sink:
            self._account(seq, send_ns, rx)
        elif self._bin_count:
            self._bin(seq)
        return True

    def _bin(self, seq: int) -> None:
        """Count one valid request in its bin; a seq the step cannot reach is not binned."""
        if seq >= self.seq_limit:
            return
        b = math.floor((float(seq) + self.bin_phase) / self.bin_packets)
        slot = b & (BIN_RING - 1)
        tags = self._bin_tags
        if tags[slot] != b + 1:
            if b + 1 < tags[slot]:
                return  # a straggler of a bin whose slot a later bin took
            self.bin_end = max(self.bin_end, b + 1)
            tags[slot] = b + 1
            self._bin_count[slot] = 0
        self._bin_count[slot] += 1

    def bin_counts(self, lo: int, hi: int) -> list[int]:
        """Requests received in bins lo..hi-1; -1 for a bin no longer held."""
        if not self._bin_count:
            raise ValueError("this responder counts no bins")
        if hi < lo or hi - lo > BIN_RING:
            raise ValueError(f"at most {BIN_RING} bins at a time")
        out: list[int] = []
        for b in range(lo, hi):
            slot = b & (BIN_RING - 1)
            tag = self._bin_tags[slot]
            if b + BIN_RING < self.bin_end or tag > b + 1:
                out.append(-1)
            else:
                out.append(self._bin_count[slot] if tag == b + 1 else 0)
        return out

    def _account(self, seq: int, send_ns: int, rx: int) -> None:
        """Sequence and jitter accounting for one valid blast packet."""
        c, window = self.c, self.window
        if seq < window.final_end:
            c[R_STALE] += 1
            return
        if seq >= self.highest_seq_plus1:
            if seq >= window.final_end + window.size():
                window.finalize_to(seq - window.size() + 1, c, R_LOST, R_LOSS_EPISODES,
                                   R_LOSS_MAX_RUN)
            self.highest_seq_plus1 = seq + 1
            c[R_SEQ_END] = self.highest_seq_plus1
        elif window.test(seq):
            c[R_DUPLICATE] += 1
            c[R_RECEIVED] -= 1
            return
        else:
            c[R_REORDERED] += 1
        window.set(seq)
        # RFC 3550 section 6.4.1 / A.8: J += (|D| - J) / 16 over transit deltas.
        transit = rx - send_ns
        if self.have_transit:
            self._jitter_ns += (abs(transit - self.last_transit_ns) - self._jitter_ns) / 16.0
        self.last_transit_ns = transit
        self.have_transit = True

    def _reply(self, address: Any) -> None:
        c, tx = self.c, self.tx
        tx[:wire.HEADER_SIZE] = self.rx_view[:wire.HEADER_SIZE]
        tx[_OFF_KIND] = wire.KIND_RESPONSE
        try:
            self._sock.sendto(tx, socket.MSG_DONTWAIT, address)
        except BlockingIOError:
            c[R_REPLY_EAGAIN] += 1
            return
        except OSError as exc:
            c[R_REPLY_EAGAIN if exc.errno == _errno.ENOBUFS else R_REPLY_ERRORS] += 1
            return
        c[R_REPLIED] += 1
        c[R_REPLY_BYTES] += len(tx)

    def finish(self, sent_packets: int) -> None:
        """Close the sink's accounting: everything below `sent_packets` is final."""
        if self.sink:
            if sent_packets > self.highest_seq_plus1:
                self.highest_seq_plus1 = sent_packets
            self.window.finalize_to(self.highest_seq_plus1, self.c, R_LOST, R_LOSS_EPISODES,
                                    R_LOSS_MAX_RUN)

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            _release(sock)


# --------------------------------------------------------------------------
# RESP framing (RESP2)
# --------------------------------------------------------------------------

_RESP_MAX_BULK_BYTES = 512 * 1024 * 1024
_RESP_MAX_LINE_BYTES = 65536
_RESP_MAX_PENDING = 1 << 24
_RESP_MAX_ARGS = 1 << 20
_DIGITS = frozenset(b"0123456789")


def _line_end(p: bytes | bytearray, pos: int, n: int) -> int:
    """Index just past the CRLF ending the line at `pos`; 0 incomplete, -1 malformed."""
    if pos >= n:
        return 0
    at = p.find(b"\r", pos, n)
    if at < 0:
        return -1 if n - pos > _RESP_MAX_LINE_BYTES else 0
    if at - pos > _RESP_MAX_LINE_BYTES:
        return -1
    if at + 1 >= n:
        return 0
    if p[at + 1] != 10:
        return -1
    return at + 2


def _parse_int(p: bytes | bytearray, start: int, stop: int) -> int | None:
    """Decimal integer in p[start:stop], optional '-'; at most 18 digits."""
    negative = start < stop and p[start] == 45
    if negative:
        start += 1
    if start >= stop or stop - start > 18:
        return None
    digits = p[start:stop]
    if not all(ch in _DIGITS for ch in digits):
        return None
    value = int(digits)
    return -value if negative else value


def _value_end(p: bytes | bytearray, start: int, n: int) -> int:
    """Length of the complete RESP2 value at p[start:n]; 0 more needed, -1 not RESP."""
    pos = start
    pending = 1
    if n <= start:
        return 0
    while pending > 0:
        if pos >= n:
            return 0
        t = p[pos]
        end = _line_end(p, pos + 1, n)
        if end <= 0:
            return end
        pending -= 1
        if t == 43 or t == 45:  # '+', '-'
            pass
        elif t == 58:  # ':'
            if _parse_int(p, pos + 1, end - 2) is None:
                return -1
        elif t == 36:  # '$'
            value = _parse_int(p, pos + 1, end - 2)
            if value is None:
                return -1
            if value >= 0:
                if value > _RESP_MAX_BULK_BYTES:
                    return -1
                if end + value + 2 > n:
                    return 0
                if p[end + value] != 13 or p[end + value + 1] != 10:
                    return -1
                end += value + 2
            elif value != -1:
                return -1
        elif t == 42:  # '*'
            value = _parse_int(p, pos + 1, end - 2)
            if value is None or value < -1:
                return -1
            if value > 0:
                pending += value
                if pending > _RESP_MAX_PENDING:
                    return -1
        else:
            return -1
        pos = end
    return pos - start


def _command_id(name: bytes | bytearray, argc: int) -> int:
    upper = bytes(name).upper()
    if upper == b"PING" and argc <= 2:
        return wire.COMMAND_PING
    if upper == b"GET" and argc == 2:
        return wire.COMMAND_GET
    if upper == b"SET" and argc >= 3:
        return wire.COMMAND_SET
    return wire.COMMAND_NONE


def _command_end(p: bytes | bytearray, start: int, n: int) -> tuple[int, int]:
    """(length, WIRE command) of the complete command at p[start:n]; length 0/-1 as above."""
    if n <= start:
        return 0, 0
    if p[start] != 42:
        return -1, 0
    end = _line_end(p, start + 1, n)
    if end <= 0:
        return end, 0
    argc = _parse_int(p, start + 1, end - 2)
    if argc is None or argc < 1 or argc > _RESP_MAX_ARGS:
        return -1, 0
    pos = end
    name_at = name_len = 0
    for i in range(argc):
        if pos >= n:
            return 0, 0
        if p[pos] != 36:
            return -1, 0
        end = _line_end(p, pos + 1, n)
        if end <= 0:
            return end, 0
        length = _parse_int(p, pos + 1, end - 2)
        if length is None or length < 0 or length > _RESP_MAX_BULK_BYTES:
            return -1, 0
        if end + length + 2 > n:
            return 0, 0
        if p[end + length] != 13 or p[end + length + 1] != 10:
            return -1, 0
        if i == 0:
            name_at, name_len = end, length
        pos = end + length + 2
    return pos - start, _command_id(p[name_at:name_at + name_len], argc)


_STATUS = {0: "incomplete", -1: "malformed"}


def parse_replies(data: bytes) -> tuple[list[tuple[int, str]], str]:
    """Split `data` into complete RESP values: ([(length, kind), ...], status)."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    values: list[tuple[int, str]] = []
    pos, n = 0, len(data)
    while pos < n:
        used = _value_end(data, pos, n)
        if used <= 0:
            return values, _STATUS[used]
        values.append((used, chr(data[pos])))
        pos += used
    return values, "complete"


def parse_commands(data: bytes) -> tuple[list[tuple[int, int]], str]:
    """Split `data` into complete RESP commands: ([(length, command), ...], status)."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    commands: list[tuple[int, int]] = []
    pos, n = 0, len(data)
    while pos < n:
        used, command = _command_end(data, pos, n)
        if used <= 0:
            return commands, _STATUS[used]
        commands.append((used, command))
        pos += used
    return commands, "complete"


# --------------------------------------------------------------------------
# RESP client
# --------------------------------------------------------------------------

(C_WRITTEN, C_RESP_ERRORS, C_WINDOW_WAITS, C_RECV_CALLS) = range(len(SENDER_COUNTERS),
                                                                 len(CLIENT_COUNTERS))
EPOLL_SPIN_NS = 20_000
MAX_CONNECTIONS = 4096
MAX_PIPELINE = 4096


class _ClientConn:
    __slots__ = ("sock", "fd", "want_out", "written", "replied", "phase_base", "issued", "waited",
                 "loss_run", "tx_pending", "tx_off", "rx", "rx_len", "due", "sent_at", "freed_at")

    def __init__(self, fd: int, pipeline: int, rx_bytes: int) -> None:
        self.sock = _wrap(fd)
        self.fd = fd
        self.want_out = False
        self.written = self.replied = self.phase_base = self.issued = self.waited = 0
        self.loss_run = 0
        self.tx_pending = self.tx_off = 0
        self.rx = bytearray(rx_bytes)
        self.rx_len = 0
        self.due = [0] * pipeline
        self.sent_at = [0] * pipeline
        self.freed_at = [0] * pipeline


class RespClient(_Metered):
    """Open-loop RESP requests over N connected, non-blocking TCP sockets.

    Request i of a phase is due at t0 + i * period on connection i % N, with
    at most `pipeline` outstanding per connection; latency counts from the
    due time. With rate_pps 0 each connection sends its whole pipeline and
    waits for every reply before the next batch.
    """

    def __init__(self, fds: Sequence[int], request: bytes, *, rate_pps: float, pipeline: int,
                 timeout_s: float = 1.0, busy_poll: bool = False, rx_bytes: int = 65536) -> None:
        n = len(fds)
        if n < 1 or n > MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1..{MAX_CONNECTIONS} (got {n})")
        if pipeline < 1 or pipeline > MAX_PIPELINE:
            raise ValueError(f"pipeline must be 1..{MAX_PIPELINE} (got {pipeline})")
        if len(request) < 1:
            raise ValueError("request must not be empty")
        if rx_bytes < 64:
            raise ValueError("rx_bytes must be at least 64")
        self.n_conns = n
        self.pipeline = pipeline
        self.busy_poll = busy_poll
        self.req_len = len(request)
        self.rx_cap = rx_bytes
        self.period_ns = 1e9 / rate_pps if rate_pps > 0 else 0.0
        self.timeout_ns = int(timeout_s * 1e9)
        # P copies back to back: what is pending on a connection is one run of it.
        self.tx_ring = memoryview(bytes(request) * pipeline)
        self.epoll = select.epoll()
        self.conns = [_ClientConn(fd, pipeline, rx_bytes) for fd in fds]
        for i, conn in enumerate(self.conns):
            self.epoll.register(conn.sock.fileno(), select.EPOLLIN)
        self.by_fd = {conn.sock.fileno(): i for i, conn in enumerate(self.conns)}
        self.t0_ns = 0
        self.limit = 0
        self.n_scheduled = 0
        self.issued_total = 0
        self.warmup = False
        self.c = [0] * len(CLIENT_COUNTERS)
        self._counters = np.zeros(len(CLIENT_COUNTERS), dtype=np.uint64)
        self._hists = _Hists(3)

    def begin(self, t0_ns: int, limit: int, warmup: bool) -> None:
        """Start a phase of `limit` requests due from t0_ns; counters cleared."""
        self.t0_ns = t0_ns
        self.limit = limit
        self.n_scheduled = 0
        self.issued_total = 0
        self.warmup = bool(warmup)
        for conn in self.conns:
            conn.phase_base = conn.written
            conn.issued = conn.waited = conn.loss_run = 0
        self.c = [0] * len(CLIENT_COUNTERS)
        self.c[S_LAT_MIN_NS] = _U64_MAX
        self.c[S_ACTUAL_MIN_NS] = _U64_MAX
        self._hists.clear()

    def stop_issuing(self) -> None:
        """At rate 0, queue no more requests."""
        if self.period_ns <= 0:
            self.limit = self.n_scheduled

    @property
    def scheduled(self) -> int:
        return self.n_scheduled

    @property
    def done(self) -> bool:
        for i, conn in enumerate(self.conns):
            if self.period_ns > 0 and conn.issued < self._share(self.limit, i):
                return False
            if conn.replied < conn.written:
                return False
        return self.period_ns > 0 or self.issued_total >= self.limit

    def _share(self, total: int, i: int) -> int:
        return 0 if total <= i else (total - i - 1) // self.n_conns + 1

    def run(self, until_ns: int) -> int:
        """Send what is due and read replies until `until_ns`; 0 or -errno."""
        _set_timer_slack()
        wait_in_epoll = self.period_ns <= 0 and not self.busy_poll
        spin_until = 0
        while True:
            now = time.monotonic_ns()
            if now >= until_ns:
                return 0
            queued = self._issue_all(now)
            if queued < 0:
                return queued
            if queued > 0:
                spin_until = now + EPOLL_SPIN_NS
            timeout = 0.0
            if wait_in_epoll and now >= spin_until and until_ns - now >= 1_000_000:
                timeout = ((until_ns - now) // 1_000_000) / 1000.0
            try:
                events = self.epoll.poll(timeout, self.n_conns)
            except InterruptedError:
                continue
            except OSError as exc:
                return -_errno_of(exc)
            if events:
                rc = self._handle(events)
                if rc < 0:
                    return rc
                spin_until = time.monotonic_ns() + EPOLL_SPIN_NS
                continue
            if queued > 0 or self.busy_poll or (wait_in_epoll and now < spin_until):
                continue
            if self.period_ns > 0 and self.n_scheduled < self.limit:
                wake = min(self.t0_ns + int(self.n_scheduled * self.period_ns), until_ns)
            else:
                wake = until_ns
            now = time.monotonic_ns()
            if wake > now + SPIN_MARGIN_NS:
                _sleep_until(self.epoll.fileno(), True, wake - SPIN_MARGIN_NS)

    def _issue_all(self, now: int) -> int:
        c = self.c
        total = 0
        if self.period_ns > 0 and now >= self.t0_ns:
            due_count = min(int((now - self.t0_ns) / self.period_ns) + 1, self.limit)
            if due_count > self.n_scheduled:
                self.n_scheduled = due_count
                c[S_SENT] = due_count
        for i, conn in enumerate(self.conns):
            room = self.pipeline - (conn.written - conn.replied)
            if self.period_ns > 0:
                backlog = self._share(self.n_scheduled, i) - conn.issued
                m = backlog
                if backlog > room:
                    m = room
                    first_waiting = conn.issued + room
                    if conn.waited < first_waiting:
                        conn.waited = first_waiting
                    if conn.issued + backlog > conn.waited:
                        c[C_WINDOW_WAITS] += conn.issued + backlog - conn.waited
                        conn.waited = conn.issued + backlog
            else:
                m = room if conn.written == conn.replied else 0
                m = min(m, self.limit - self.issued_total)
            if m > 0:
                self._queue(conn, i, m, time.monotonic_ns())
                total += m
            if conn.tx_pending > 0 and not conn.want_out:
                rc = self._flush(conn)
                if rc < 0:
                    return rc
        return total

    def _queue(self, conn: _ClientConn, i: int, m: int, now: int) -> None:
        c, lag_hist = self.c, self._hists.lists[2]
        for j in range(m):
            slot = (conn.written + j) % self.pipeline
            if self.period_ns > 0:
                seq = (conn.issued + j) * self.n_conns + i
                due = self.t0_ns + int(seq * self.period_ns)
                ready = max(due, conn.freed_at[slot])
                lag = now - ready if now > ready else 0
                lag_hist[_hist_index(lag)] += 1
                if lag > c[S_LAG_MAX_NS]:
                    c[S_LAG_MAX_NS] = lag
                conn.due[slot] = due
            else:
                conn.due[slot] = now
            conn.sent_at[slot] = now
        conn.written += m
        conn.issued += m
        conn.tx_pending += m * self.req_len
        self.issued_total += m
        c[C_WRITTEN] += m
        c[S_SENT_BYTES] += m * self.req_len
        if self.period_ns <= 0:
            self.n_scheduled = self.issued_total
            c[S_SENT] = self.issued_total

    def _watch(self, conn: _ClientConn, out: bool) -> int:
        conn.want_out = out
        try:
            self.epoll.modify(conn.sock.fileno(),
                              select.EPOLLIN | select.EPOLLOUT if out else select.EPOLLIN)
        except OSError as exc:
            return -_errno_of(exc)
        return 0

    def _flush(self, conn: _ClientConn) -> int:
        self.c[S_SEND_CALLS] += 1
        try:
            sent = conn.sock.send(self.tx_ring[conn.tx_off:conn.tx_off + conn.tx_pending],
                                  socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            self.c[S_EAGAIN] += 1
            return self._watch(conn, True)
        except OSError as exc:
            return -_errno_of(exc)
        conn.tx_pending -= sent
        conn.tx_off = (conn.tx_off + sent) % self.req_len
        if conn.tx_pending > 0:
            return self._watch(conn, True)
        return 0

    def _handle(self, events: list[tuple[int, int]]) -> int:
        for fd, mask in events:
            conn = self.conns[self.by_fd[fd]]
            if mask & select.EPOLLOUT:
                rc = self._watch(conn, False)
                if rc == 0 and conn.tx_pending > 0:
                    rc = self._flush(conn)
                if rc < 0:
                    return rc
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                rc = self._read(conn)
                if rc < 0:
                    return rc
        return 0

    def _read(self, conn: _ClientConn) -> int:
        self.c[C_RECV_CALLS] += 1
        try:
            got = conn.sock.recv_into(memoryview(conn.rx)[conn.rx_len:],
                                      self.rx_cap - conn.rx_len, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            return -_errno_of(exc)
        if got == 0:
            return -_errno.ECONNRESET
        rx = time.monotonic_ns()
        conn.rx_len += got
        pos = 0
        buf = conn.rx
        while pos < conn.rx_len:
            used = _value_end(buf, pos, conn.rx_len)
            if used == 0:
                break
            if used < 0:
                return -_errno.EPROTO
            self._reply(conn, buf[pos], used, rx)
            pos += used
        if pos > 0:
            buf[:conn.rx_len - pos] = buf[pos:conn.rx_len]
            conn.rx_len -= pos
        if conn.rx_len == self.rx_cap:
            return -_errno.EMSGSIZE
        return 0

    def _lose(self, conn: _ClientConn, count: int) -> None:
        if count == 0:
            return
        if conn.loss_run == 0:
            self.c[S_LOSS_EPISODES] += 1
        conn.loss_run += count
        if conn.loss_run > self.c[S_LOSS_MAX_RUN]:
            self.c[S_LOSS_MAX_RUN] = conn.loss_run

    def _reply(self, conn: _ClientConn, kind: int, length: int, rx: int) -> None:
        c = self.c
        if conn.replied >= conn.written:
            c[S_BOGUS] += 1
            return
        t = conn.replied
        slot = t % self.pipeline
        conn.replied += 1
        conn.freed_at[slot] = rx
        if t < conn.phase_base:
            c[S_WARMUP_REPLIES] += 1
            return
        due, sent_at = conn.due[slot], conn.sent_at[slot]
        sched_lat = rx - due if rx > due else 0
        actual_lat = rx - sent_at if rx > sent_at else 0
        if kind == 45:  # '-': the server refused the command
            c[C_RESP_ERRORS] += 1
            self._lose(conn, 1)
            return
        if sched_lat > self.timeout_ns:
            c[S_LATE] += 1
            self._lose(conn, 1)
            return
        conn.loss_run = 0
        c[S_RECEIVED] += 1
        c[S_RECEIVED_BYTES] += length
        self._hists.lists[0][_hist_index(sched_lat)] += 1
        self._hists.lists[1][_hist_index(actual_lat)] += 1
        if sched_lat < c[S_LAT_MIN_NS]:
            c[S_LAT_MIN_NS] = sched_lat
        if sched_lat > c[S_LAT_MAX_NS]:
            c[S_LAT_MAX_NS] = sched_lat
        if actual_lat < c[S_ACTUAL_MIN_NS]:
            c[S_ACTUAL_MIN_NS] = actual_lat
        if actual_lat > c[S_ACTUAL_MAX_NS]:
            c[S_ACTUAL_MAX_NS] = actual_lat

    def finish(self) -> None:
        """Close the phase's books: unanswered and never-slotted requests are lost."""
        for i, conn in enumerate(self.conns):
            expected = self._share(self.n_scheduled, i) if self.period_ns > 0 else conn.issued
            owed = min(conn.written - conn.replied, conn.issued)
            self._lose(conn, owed + (expected - conn.issued))
        self.c[S_SENT] = self.n_scheduled
        self.c[S_LOST] = self.n_scheduled - self.c[S_RECEIVED]

    def __del__(self) -> None:
        try:
            self.epoll.close()
            for conn in self.conns:
                _release(conn.sock)
        except AttributeError:
            pass


# --------------------------------------------------------------------------
# RESP server
# --------------------------------------------------------------------------

(V_CONNECTIONS, V_COMMANDS, V_RECEIVED_BYTES, V_REPLIES, V_REPLY_BYTES, V_UNKNOWN_COMMANDS,
 V_PROTOCOL_ERRORS, V_PEER_CLOSED, V_SEND_ERRORS, V_EAGAIN, V_THROTTLED) = range(
    len(SERVER_COUNTERS))

_PONG = b"+PONG\r\n"
_OK = b"+OK\r\n"
_UNKNOWN = b"-ERR unknown command or wrong number of arguments\r\n"
_BAD_PROTOCOL = b"-ERR Protocol error: expected an array of bulk strings\r\n"


class _ServerConn:
    __slots__ = ("sock", "open", "want_out", "throttled", "rx", "tx", "tx_off")

    def __init__(self, fd: int) -> None:
        self.sock = _wrap(fd)
        self.open = True
        self.want_out = False
        self.throttled = False
        self.rx = bytearray()
        self.tx = bytearray()
        self.tx_off = 0


class RespServer:
    """Answers RESP PING, GET and SET on up to `capacity` connections, as Redis does."""

    def __init__(self, capacity: int, get_reply: bytes, *, rx_bytes: int = 65536,
                 busy_poll: bool = False, max_rate_pps: float = 0.0, burst: float = 0.0) -> None:
        if capacity < 1 or capacity > MAX_CONNECTIONS:
            raise ValueError(f"capacity must be 1..{MAX_CONNECTIONS} (got {capacity})")
        if rx_bytes < 64:
            raise ValueError("rx_bytes must be at least 64")
        if max_rate_pps < 0 or (max_rate_pps > 0 and burst < 1):
            raise ValueError("max_rate_pps must be >= 0, and burst >= 1 with a rate")
        # the compiled twin's token bucket: a connection past the rate is left unread
        self.rate_per_ns = max_rate_pps / 1e9
        self.burst = burst
        self.tokens = burst
        self.refill_ns = 0
        self.throttled: list[_ServerConn] = []
        self.capacity = capacity
        self.busy_poll = busy_poll
        self.get_reply = bytes(get_reply)
        self.reply_room = max(len(get_reply), 128)
        self.rx_cap = rx_bytes
        self.tx_cap = max(4 * self.reply_room, 65536)
        self.conns: dict[int, _ServerConn] = {}
        self.epoll = select.epoll()
        self.c = [0] * len(SERVER_COUNTERS)
        self._counters = np.zeros(len(SERVER_COUNTERS), dtype=np.uint64)

    @property
    def counters(self) -> _U64:
        self._counters[:] = self.c
        return self._counters

    def add(self, fd: int) -> bool:
        """Serve a connected non-blocking socket; False when full."""
        if len(self.conns) >= self.capacity:
            return False
        conn = _ServerConn(fd)
        try:
            self.epoll.register(conn.sock.fileno(), select.EPOLLIN)
        except OSError:
            _release(conn.sock)
            raise
        self.conns[conn.sock.fileno()] = conn
        self.c[V_CONNECTIONS] += 1
        return True

    def run(self, until_ns: int) -> int:
        """Serve until `until_ns`; returns 0 or -errno of epoll."""
        while True:
            now = time.monotonic_ns()
            if now >= until_ns:
                return 0
            timeout = 0.0 if self.busy_poll else min((until_ns - now + 999_999) // 1_000_000,
                                                     20) / 1000.0
            if self.throttled and timeout > 0.001:
                timeout = (min(0.02, 0.001 + (1.0 - self.tokens) / self.rate_per_ns / 1e9)
                           if self.tokens < 1.0 else 0.0)
            try:
                events = self.epoll.poll(timeout, self.capacity)
            except InterruptedError:
                continue
            except OSError as exc:
                return -_errno_of(exc)
            for fd, mask in events:
                conn = self.conns.get(fd)
                if conn is None or not conn.open:
                    continue
                if mask & select.EPOLLOUT:
                    self._flush(conn)
                    if conn.open and not conn.want_out:
                        self._serve(conn)
                if conn.open and not conn.want_out and not conn.throttled and \
                        mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self._read(conn)
            if self.throttled:
                self._release()

    def _refill(self) -> None:
        now = time.monotonic_ns()
        if self.refill_ns and now > self.refill_ns:
            self.tokens = min(self.burst, self.tokens + (now - self.refill_ns) * self.rate_per_ns)
        self.refill_ns = now

    def _watch(self, conn: _ServerConn) -> None:
        events = select.EPOLLOUT if conn.want_out else (0 if conn.throttled else select.EPOLLIN)
        self.epoll.modify(conn.sock.fileno(), events)

    def _release(self) -> None:
        self._refill()
        while self.throttled and self.tokens >= 1.0:
            conn = self.throttled.pop(0)
            conn.throttled = False
            if conn.open:
                self._watch(conn)
                self._serve(conn)

    def _close(self, conn: _ServerConn) -> None:
        try:
            self.epoll.unregister(conn.sock.fileno())
        except OSError:
            pass
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.open = False
        if conn.throttled:
            conn.throttled = False
            self.throttled.remove(conn)

    def _append(self, conn: _ServerConn, data: bytes) -> None:
        conn.tx += data
        self.c[V_REPLIES] += 1
        self.c[V_REPLY_BYTES] += len(data)

    def _protocol_error(self, conn: _ServerConn) -> None:
        self.c[V_PROTOCOL_ERRORS] += 1
        if self.tx_cap - len(conn.tx) >= len(_BAD_PROTOCOL):
            self._append(conn, _BAD_PROTOCOL)
        self._flush(conn)
        if conn.open:
            self._close(conn)

    def _read(self, conn: _ServerConn) -> None:
        if len(conn.rx) >= self.rx_cap:
            self._protocol_error(conn)
            return
        try:
            data = conn.sock.recv(self.rx_cap - len(conn.rx), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.c[V_PEER_CLOSED] += 1
            self._close(conn)
            return
        if not data:
            self.c[V_PEER_CLOSED] += 1
            self._close(conn)
            return
        conn.rx += data
        self.c[V_RECEIVED_BYTES] += len(data)
        self._serve(conn)
        if conn.open and not conn.throttled and len(conn.rx) >= self.rx_cap:
            self._protocol_error(conn)  # one command larger than the whole buffer

    def _serve(self, conn: _ServerConn) -> None:
        """Answer every complete command buffered, as far as the send buffer allows."""
        while conn.open:
            before = len(conn.rx)
            pos, rx, n = 0, conn.rx, len(conn.rx)
            while pos < n and self.tx_cap - len(conn.tx) >= self.reply_room:
                used, command = _command_end(rx, pos, n)
                if used == 0:
                    break
                if used < 0:
                    self._protocol_error(conn)
                    return
                if self.rate_per_ns > 0:
                    if self.tokens < 1.0:
                        self._refill()
                    if self.tokens < 1.0:
                        conn.throttled = True
                        self.throttled.append(conn)
                        self.c[V_THROTTLED] += 1
                        self._watch(conn)
                        break
                    self.tokens -= 1.0
                self.c[V_COMMANDS] += 1
                if command == wire.COMMAND_PING:
                    self._append(conn, _PONG)
                elif command == wire.COMMAND_SET:
                    self._append(conn, _OK)
                elif command == wire.COMMAND_GET:
                    self._append(conn, self.get_reply)
                else:
                    self.c[V_UNKNOWN_COMMANDS] += 1
                    self._append(conn, _UNKNOWN)
                pos += used
            if pos > 0:
                del rx[:pos]
            self._flush(conn)
            if not conn.open or conn.want_out or conn.throttled or not conn.rx \
                    or len(conn.rx) == before:
                return

    def _flush(self, conn: _ServerConn) -> None:
        """Send what is buffered; on a full socket wait for EPOLLOUT, reading nothing."""
        fd = conn.sock.fileno()
        while conn.tx_off < len(conn.tx):
            try:
                sent = conn.sock.send(memoryview(conn.tx)[conn.tx_off:],
                                      socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                self.c[V_EAGAIN] += 1
                if not conn.want_out:
                    conn.want_out = True
                    self.epoll.modify(fd, select.EPOLLOUT)
                return
            except OSError:
                self.c[V_SEND_ERRORS] += 1
                self._close(conn)
                return
            conn.tx_off += sent
        conn.tx.clear()
        conn.tx_off = 0
        if conn.want_out:
            conn.want_out = False
            self._watch(conn)

    def __del__(self) -> None:
        try:
            self.epoll.close()
            for conn in self.conns.values():
                _release(conn.sock)
        except AttributeError:
            pass


# --------------------------------------------------------------------------
# Bulk pump
# --------------------------------------------------------------------------

MAX_STREAMS = 1024
PUMP_OPEN = 0
PUMP_EOF = 1
_PUMP_WRITE_BURST = 16
_PUMP_READ_BURST = 1
_PUMP_DRAIN_CALLS = 64
_PUMP_MAX_WAIT_MS = 20
_LOWAT_HOLD_NS = 1_000_000
_LOWAT_TICK_NS = 10_000_000
_LOWAT_MIN = 16384
_LOWAT_MAX = 262144


class BulkPump:
    """Moves bulk bytes on up to `capacity` TCP streams from the calling thread.

    Sending writes `buffer_bytes` of zeros at a time as fast as each socket
    takes them; receiving reads and discards. One level-triggered epoll set;
    a receiving stream's SO_RCVLOWAT follows its rate, as in the compiled pump.
    """

    def __init__(self, capacity: int, sending: bool, buffer_bytes: int) -> None:
        if capacity < 1 or capacity > MAX_STREAMS:
            raise ValueError(f"capacity must be 1..{MAX_STREAMS} (got {capacity})")
        if buffer_bytes < 1024:
            raise ValueError("buffer_bytes must be at least 1024")
        self.capacity = capacity
        self.sending = bool(sending)
        self.buf_len = buffer_bytes
        self.buf = bytearray(buffer_bytes)
        self.out = bytes(buffer_bytes)
        self.socks: list[socket.socket] = []
        self.lowat: list[int] = []
        self.marked: list[int] = []
        self.by_fd: dict[int, int] = {}
        self.epoll = select.epoll()
        self.count = 0
        self.n_done = 0
        self.tick_ns = 0
        self.first_ns = 0
        self.total_bytes = 0  # moved on every stream together
        self.limit = _U64_MAX
        self.byte_counts = np.zeros(capacity, dtype=np.uint64)
        self.status = np.zeros(capacity, dtype=np.int64)

    @property
    def streams(self) -> int:
        return self.count

    @property
    def open_streams(self) -> int:
        return self.count - self.n_done

    def add(self, fd: int) -> int:
        """Pump a connected socket; returns its index, or -1 when full."""
        if self.count >= self.capacity:
            return -1
        i = self.count
        sock = _wrap(fd)
        self.socks.append(sock)
        self.lowat.append(1)
        self.marked.append(0)
        self.by_fd[sock.fileno()] = i
        try:
            self.epoll.register(sock.fileno(), select.EPOLLOUT if self.sending else select.EPOLLIN)
        except OSError as exc:
            raise OSError(exc.errno, "cannot watch the stream") from exc
        self.count += 1
        return i

    def run(self, until_ns: int, byte_limit: int = _U64_MAX) -> int:
        """Pump until `until_ns` or until the streams together have moved
        `byte_limit` bytes (0), until no stream is open (1), or -errno of epoll."""
        self.limit = byte_limit
        max_wait_ms = _PUMP_MAX_WAIT_MS if self.sending else _LOWAT_TICK_NS // 1_000_000
        if self.tick_ns == 0:
            self.tick_ns = time.monotonic_ns()
        burst = _PUMP_WRITE_BURST if self.sending else _PUMP_READ_BURST
        while True:
            if self.count > 0 and self.n_done >= self.count:
                return 1
            now = time.monotonic_ns()
            if not self.sending and now >= self.tick_ns + _LOWAT_TICK_NS:
                self._retune(now)
            if now >= until_ns:
                if not self.sending:
                    self._collect_held()
                return 0
            if self.total_bytes >= self.limit:
                return 0
            timeout_ms = min((until_ns - now + 999_999) // 1_000_000, max_wait_ms)
            try:
                events = self.epoll.poll(timeout_ms / 1000.0, self.capacity)
            except InterruptedError:
                continue
            except OSError as exc:
                return -_errno_of(exc)
            for fd, _mask in events:
                index = self.by_fd.get(fd)
                if index is not None:
                    self._move(index, burst)

    def _retune(self, now: int) -> None:
        """Set each receiving stream's wake-up mark from its rate since the last tick."""
        elapsed = now - self.tick_ns
        for i in range(self.count):
            if self.status[i] != PUMP_OPEN:
                continue
            total = int(self.byte_counts[i])
            moved = total - self.marked[i]
            self.marked[i] = total
            target = moved * _LOWAT_HOLD_NS // elapsed if elapsed > 0 else 0
            if target < _LOWAT_MIN:
                mark = 1
            elif target >= _LOWAT_MAX:
                mark = _LOWAT_MAX
            else:
                mark = 1 << (target.bit_length() - 1)
            if mark != self.lowat[i]:
                try:
                    self.socks[i].setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
                    self.lowat[i] = mark
                except OSError:
                    pass
        self.tick_ns = now

    def _collect_held(self) -> None:
        for i in range(self.count):
            if self.lowat[i] > 1:
                self._move(i, _PUMP_DRAIN_CALLS)

    def _move(self, i: int, max_calls: int) -> None:
        """Write (or read) on stream i until its socket would block, or max_calls are made."""
        if self.status[i] != PUMP_OPEN:
            return
        sock = self.socks[i]
        for _ in range(max_calls):
            if self.total_bytes >= self.limit:
                return
            want = min(self.buf_len, self.limit - self.total_bytes)
            try:
                if self.sending:
                    moved = sock.send(memoryview(self.out)[:want],
                                      socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                else:
                    moved = sock.recv_into(self.buf, want, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._done(i, -_errno_of(exc))
                return
            if moved > 0:
                if self.first_ns == 0:
                    self.first_ns = time.monotonic_ns()
                self.byte_counts[i] += moved
                self.total_bytes += moved
                if moved < want:
                    return  # the socket buffer is full (or drained): epoll says when to go on
                continue
            self._done(i, PUMP_EOF)
            return

    def _done(self, i: int, status: int) -> None:
        self.status[i] = status
        try:
            self.epoll.unregister(self.socks[i].fileno())
        except OSError:
            pass
        self.n_done += 1

    def __del__(self) -> None:
        try:
            self.epoll.close()
            for sock in self.socks:
                _release(sock)
        except AttributeError:
            pass
