"""Bulk throughput: N parallel TCP streams (or large UDP datagrams) and the ceiling.

Owns: the bulk data connections at both ends (the server's TcpStepHandler for
workload "bulk", the client's streams), the measured window each end counts
bytes in, TCP_INFO parsing, probing which path a source port lands on (flow
planning, see flows.py), the per-step dicts, sweeps over stream counts or
offered Gbit/s. The result document (kind "bulk", with its ceiling) is
pktbench.results.SweepResult; pktbench.report.bulk renders it.

Protocol: after Client.begin_step(StepParams(workload="bulk", streams=N)),
each stream is its own TCP connection to the server's control port (so its
own source port) that opens with wire.pack_data_preamble(stream_id, token).
Forward, the client writes and the server reads; with `reverse` the server
writes. The receiving end's byte count is the goodput; both ends report.
UDP bulk is a blast step at rate None (or an offered rate) with large
datagrams: the engine's PacedSender and the blast sink do the work.

Measured window: each end anchors it at its first data (the sender when it
starts writing, the receiver at its first byte), skips `warmup_s` (slow
start) and counts `duration_s`. Each end pumps all its streams from one
thread with pktbench._engine.BulkPump (non-blocking sockets, one epoll set, no
GIL held while bytes move), in chunks of at most CHUNK_S that end at the
window's edges; between chunks every stream samples its byte counter, the
pump thread's CPU time and TCP_INFO, so rates are bytes in the window over
the time between the samples. The sender keeps
writing `drain_s` past its window so the receiver's window, which starts a
path delay later, is full too.

Reading the figures: goodput is payload bits; frame_bps is what
Linux interface counters and tc shapers (tbf, htb) count, Ethernet header
included and FCS, preamble and gap left out; wire_bps is the
line occupancy. So a path shaped to R by tbf carries R of frames and about
1.6% more on the wire with 1538-byte frames, and "% link" against the
shaper's rate reads just over 100%. Per-path interface counters count a
GSO/GRO super-packet's headers once, so on unshaped veths they read near
goodput; behind tbf (which splits GSO packets) they read the frame rate.

Flow planning (plan_flows) probes instead of computing the hash: see
flows.py for why. Its ports can be reused later with BulkConfig.ports.

Invariants: no pump thread outlives its step's deadline; sockets are
closed by the end that opened or accepted them; a stream that fails early
reports what it counted and its error, never raises across a thread. A
stream's cpu_s is its share (1/N) of the CPU time of the thread pumping it.

Must not: touch the UDP data socket outside StepClient.run_step, import
pktbench.session, or run `ip`
(interface counters come from sysfs or a callable the caller passes).
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pktbench import engine, protocol, wire
from pktbench.errors import ConfigError, ConnectError, EngineError, PktbenchError
from pktbench.flows import (
    TCP_TIMESTAMPS_OPTION_BYTES,
    FlowPlan,
    FlowPlanner,
    Overhead,
    probe_path,
    tcp_overhead,
    udp_overhead,
)
from pktbench.protocol import StepParams
from pktbench.results import LINK_MODELS, SweepResult
from pktbench.step import StepResult
from pktbench.workloads.base import (
    ArmedStep, ServerArm, StepClient, TcpStepHandler, Transport, drive_step)

__all__ = [
    "BulkConfig",
    "BulkStepHandler",
    "PathCounters",
    "TcpInfo",
    "plan_flows",
    "read_tcp_info",
    "run_session",
    "run_tcp_step",
    "run_udp_step",
    "sysfs_counters",
]

RECV_BUFFER_BYTES = 256 * 1024
# Bytes per send() of a TCP stream. The ceiling is about the path, not the
# syscall rate: with 1 MiB writes one loopback stream here moves ~2.5x what
# 128 KiB writes (iperf3's default) do. --write-size sets it; compare tools at
# the same size (iperf3 -l).
DEFAULT_WRITE_BYTES = 1024 * 1024
POLL_S = 0.05  # how long a finishing server waits for its pump thread at least
CHUNK_S = 0.02  # one nogil pump call: stop requests and the clock are looked at this often
PROBE_BYTES = 256 * 1024
TCP_INFO_BYTES = 232  # struct tcp_info up to tcpi_snd_wnd (Linux 5.4+); shorter kernels return less

# {path name: (tx_bytes, rx_bytes)} of the interfaces a bond/ECMP group spreads over
PathCounters = Callable[[], Mapping[str, tuple[int, int]]]


# -- TCP_INFO ---------------------------------------------------------------------

# (name, offset, struct code) in struct tcp_info, include/uapi/linux/tcp.h.
_TCP_INFO_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("state", 0, "B"), ("ca_state", 1, "B"), ("retransmits", 2, "B"), ("options", 5, "B"),
    ("rto_us", 8, "I"), ("snd_mss", 16, "I"), ("rcv_mss", 20, "I"), ("unacked", 24, "I"),
    ("lost", 32, "I"), ("retrans", 36, "I"), ("pmtu", 60, "I"), ("rtt_us", 68, "I"),
    ("rttvar_us", 72, "I"), ("snd_ssthresh", 76, "I"), ("snd_cwnd", 80, "I"),
    ("advmss", 84, "I"), ("reordering", 88, "I"), ("rcv_rtt_us", 92, "I"),
    ("total_retrans", 100, "I"), ("bytes_acked", 120, "Q"), ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"), ("segs_in", 140, "I"), ("min_rtt_us", 148, "I"),
    ("data_segs_out", 156, "I"), ("delivery_rate_Bps", 160, "Q"), ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"), ("snd_wnd", 228, "I"),
)
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4
TCPI_OPT_ECN = 8


@dataclass(frozen=True)
class TcpInfo:
    """The fields of struct tcp_info that bulk reports; None where the kernel's is shorter."""

    values: Mapping[str, int | None]

    def __getitem__(self, name: str) -> int | None:
        return self.values.get(name)

    @property
    def timestamps(self) -> bool:
        return bool((self.values.get("options") or 0) & TCPI_OPT_TIMESTAMPS)

    @property
    def options_bytes(self) -> int:
        """TCP option bytes in every data segment: only timestamps recur in each."""
        return TCP_TIMESTAMPS_OPTION_BYTES if self.timestamps else 0

    def option_names(self) -> list[str]:
        flags = self.values.get("options") or 0
        names = ((TCPI_OPT_TIMESTAMPS, "timestamps"), (TCPI_OPT_SACK, "sack"),
                 (TCPI_OPT_WSCALE, "wscale"), (TCPI_OPT_ECN, "ecn"))
        return [name for bit, name in names if flags & bit]


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """Decode getsockopt(TCP_INFO) bytes (native byte order, as the kernel wrote them)."""
    values: dict[str, int | None] = {}
    for name, offset, code in _TCP_INFO_FIELDS:
        size = struct.calcsize(code)
        values[name] = (struct.unpack_from("=" + code, raw, offset)[0]
                        if offset + size <= len(raw) else None)
    return TcpInfo(values)


def read_tcp_info(sock: socket.socket) -> TcpInfo | None:
    try:
        return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                              TCP_INFO_BYTES))
    except OSError:
        return None


def _maxseg(sock: socket.socket) -> int | None:
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
    except OSError:
        return None


def _thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


# -- the measured window and the stream pumps -------------------------------------

class _Window:
    """The measured window one end shares over its streams: [start_ns, end_ns)."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        self.warmup_ns = int(warmup_s * 1e9)
        self.duration_ns = int(duration_s * 1e9)
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self._lock = threading.Lock()

    def anchor(self, first_data_ns: int) -> None:
        with self._lock:
            if self.start_ns is None:
                self.end_ns = first_data_ns + self.warmup_ns + self.duration_ns
                self.start_ns = first_data_ns + self.warmup_ns


@dataclass
class _Sample:
    t_ns: int
    bytes: int
    cpu_s: float
    tcp: TcpInfo | None


@dataclass
class _Stream:
    stream_id: int
    sock: socket.socket
    bytes_total: int = 0
    start: _Sample | None = None
    end: _Sample | None = None
    last: _Sample | None = None
    mss_bytes: int | None = None
    error: str | None = None
    ports: tuple[int, int] = (0, 0)  # (local, remote)
    cpu_shared_by: int = 1  # streams the pumping thread moved: cpu_s is this one's share

    def sample(self) -> _Sample:
        return _Sample(time.monotonic_ns(), self.bytes_total, _thread_cpu_s(),
                       read_tcp_info(self.sock))

    def report(self, sending: bool) -> dict[str, Any]:
        """This end's view of the stream over its measured window."""
        start, end = self.start, self.end or self.last
        window_s = (end.t_ns - start.t_ns) / 1e9 if start and end else 0.0
        in_window = end.bytes - start.bytes if start and end else 0
        tcp_end = end.tcp if end else None
        tcp_start = start.tcp if start else None
        out: dict[str, Any] = {
            "stream_id": self.stream_id,
            "local_port": self.ports[0],
            "remote_port": self.ports[1],
            "role": "sender" if sending else "receiver",
            "bytes": in_window,
            "total_bytes": self.bytes_total,
            "window_s": window_s,
            "payload_bps": in_window * 8 / window_s if window_s > 0 else 0.0,
            "cpu_s": ((end.cpu_s - start.cpu_s) / self.cpu_shared_by) if start and end else 0.0,
            "mss_bytes": self.mss_bytes,
            "error": self.error,
        }
        if tcp_end is not None:
            retrans_end = tcp_end["total_retrans"] or 0
            retrans_start = (tcp_start["total_retrans"] or 0) if tcp_start else 0
            out["tcp"] = {
                "retransmits": retrans_end - retrans_start,
                "total_retransmits": retrans_end,
                "cwnd_segments": tcp_end["snd_cwnd"],
                "rtt_us": tcp_end["rtt_us"],
                "rttvar_us": tcp_end["rttvar_us"],
                "min_rtt_us": tcp_end["min_rtt_us"],
                "snd_mss_bytes": tcp_end["snd_mss"],
                "rcv_mss_bytes": tcp_end["rcv_mss"],
                "pmtu_bytes": tcp_end["pmtu"],
                "options": tcp_end.option_names(),
                "options_bytes": tcp_end.options_bytes,
                "data_segs_out": tcp_end["data_segs_out"],
                "bytes_retrans": tcp_end["bytes_retrans"],
            }
        return out


class _PumpMeter:
    """A pump's payload bytes since its measured window began, as LIVE_METERS reads them.

    byte_counts is the pump's own array, written by its loop without the GIL;
    each word is read whole, so a reading is at worst a chunk behind.
    """

    def __init__(self, pump: Any) -> None:
        self.pump = pump
        self.base = self._total()
        self._no_hist = np.zeros(0, dtype=np.uint64)

    def _total(self) -> int:
        return int(np.asarray(self.pump.byte_counts).sum())

    def snapshot(self) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        now = time.monotonic_ns()
        moved = max(self._total() - self.base, 0)
        return now, np.array([moved], dtype=np.uint64), self._no_hist


class _Pumped:
    """The streams one thread pumps with a BulkPump, and their window samples.

    Only the pumping thread calls `step` and `finish` (the CPU samples are
    its own); `add` may come from another thread, under the caller's lock.
    A sender with `tail_ns` stops that long after its window ends; a receiver
    with `tail_ns` (the client in reverse) stops at its window's end; without
    it the pump runs until every stream is finished, the deadline or `stop`.
    `live`: show the measured window to engine.LIVE_METERS (the client's end,
    for interval reports).
    """

    def __init__(self, capacity: int, window: _Window, *, sending: bool, buffer_bytes: int,
                 tail_ns: int | None, deadline_ns: int,
                 byte_cap: tuple[float, float] | None = None, live: bool = False) -> None:
        self.pump = engine.loops.BulkPump(capacity, sending, buffer_bytes)
        self.window = window
        self.sending = sending
        self.tail_ns = tail_ns
        self.deadline_ns = deadline_ns
        # (bytes/s, burst bytes) over every stream together, from now on
        self.byte_cap = byte_cap
        self.capped_from_ns = time.monotonic_ns()
        self.streams: list[_Stream] = []
        self.live = live
        self._live: engine.LiveWindow | None = None
        self._live_done = False

    def add(self, stream: _Stream) -> None:
        stream.sock.setblocking(False)
        if self.pump.add(stream.sock.fileno()) != len(self.streams):
            raise EngineError(f"bulk pump is full ({len(self.streams)} streams)")
        self.streams.append(stream)

    def _next_edge(self, now: int) -> int:
        """The soonest of the deadline, the next window edge and the tail's end."""
        edges = [self.deadline_ns, now + int(CHUNK_S * 1e9)]
        start_ns, end_ns = self.window.start_ns, self.window.end_ns
        if start_ns is not None and end_ns is not None:
            edges += [e for e in (start_ns, end_ns) if e > now]
            if self.tail_ns is not None:
                edges.append(end_ns + self.tail_ns)
        return min(edges)

    def past_tail(self, now: int) -> bool:
        end_ns = self.window.end_ns
        return self.tail_ns is not None and end_ns is not None and now >= end_ns + self.tail_ns

    def _byte_limit(self, until_ns: int) -> int | None:
        if self.byte_cap is None:
            return None
        rate, burst = self.byte_cap
        return int(burst + rate * max(0, until_ns - self.capped_from_ns) / 1e9)

    def step(self) -> bool:
        """Pump one chunk and take the samples due; False when this end is done."""
        now = time.monotonic_ns()
        rc = 0
        if now < self.deadline_ns and not self.past_tail(now):
            until = self._next_edge(now)
            limit = self._byte_limit(until)
            if limit is None:
                rc = self.pump.run(until)
            else:
                rc = self.pump.run(until, limit)
                if rc == 0 and self.pump.total_bytes >= limit:
                    # at the cap: wait for the allowance to grow, do not spin
                    time.sleep(max(0.0, min(CHUNK_S, (until - time.monotonic_ns()) / 1e9)))
        now = time.monotonic_ns()
        if self.window.start_ns is None and self.pump.first_ns:
            self.window.anchor(self.pump.first_ns)
        if rc < 0:
            self._book(now)
            message = os.strerror(-rc)
            for stream in self.streams:
                stream.error = stream.error or f"bulk pump: {message}"
            return False
        self._book(now)
        if rc == 1 or now >= self.deadline_ns:
            return False
        end_ns = self.window.end_ns
        return not (self.tail_ns is not None and end_ns is not None
                    and now >= end_ns + self.tail_ns)

    def _book(self, now: int) -> None:
        counts = self.pump.byte_counts
        status = self.pump.status
        start_ns, end_ns = self.window.start_ns, self.window.end_ns
        if self.live and start_ns is not None and end_ns is not None:
            if self._live is None and not self._live_done and now >= start_ns:
                self._live = engine.LIVE_METERS.open(
                    _PumpMeter(self.pump), ("bytes",), start_ns, None, replies=False,
                    unit="bytes", label="forward" if self.sending else "reverse")
            if self._live is not None and now >= end_ns:
                self._close_live()
        for index, stream in enumerate(self.streams):
            stream.bytes_total = int(counts[index])
            code = int(status[index])
            if start_ns is not None and end_ns is not None and stream.last is None:
                if stream.start is None and now >= start_ns:
                    stream.start = stream.sample()
                if stream.end is None and now >= end_ns:
                    stream.end = stream.sample()
                    stream.mss_bytes = _maxseg(stream.sock)
            if code != engine.loops.PUMP_OPEN and stream.last is None:
                stream.last = stream.sample()
                if stream.mss_bytes is None:
                    stream.mss_bytes = _maxseg(stream.sock)
                if code < 0 and -code not in (errno.ECONNRESET, errno.EPIPE):
                    stream.error = os.strerror(-code)

    def _close_live(self) -> None:
        if self._live is not None:
            engine.LIVE_METERS.close(self._live)
            self._live = None
            self._live_done = True

    def finish(self) -> None:
        """The last samples of the streams still open."""
        self._close_live()
        counts = self.pump.byte_counts
        for index, stream in enumerate(self.streams):
            stream.bytes_total = int(counts[index])
            stream.cpu_shared_by = len(self.streams)
            if stream.last is None:
                stream.last = stream.sample()
            if stream.mss_bytes is None:
                stream.mss_bytes = _maxseg(stream.sock)


def _end_report(streams: Sequence[_Stream], sending: bool) -> dict[str, Any]:
    reports = [s.report(sending) for s in sorted(streams, key=lambda s: s.stream_id)]
    windows = [r["window_s"] for r in reports if r["window_s"] > 0]
    window_s = max(windows) if windows else 0.0
    cpu_s = sum(r["cpu_s"] for r in reports)
    return {
        "role": "sender" if sending else "receiver",
        "streams": reports,
        "payload_bps": sum(r["payload_bps"] for r in reports),
        "bytes": sum(r["bytes"] for r in reports),
        "window_s": window_s,
        "cpu_percent": 100.0 * cpu_s / window_s if window_s > 0 else 0.0,
    }


# -- server side ------------------------------------------------------------------

def _set_pacing(sock: socket.socket, bytes_per_s: float) -> None:
    """Let the kernel pace this stream's writes (TCP's own pacing, no qdisc
    needed), so a capped writer sends smoothly rather than in bursts."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MAX_PACING_RATE", 47),
                        struct.pack("=I", min(max(int(bytes_per_s), 1), 0xFFFFFFFF)))
    except OSError:
        pass  # the byte cap between pump calls still holds

class BulkStepHandler:
    """The server's end of one bulk step: reads (or, reversed, writes) every stream.

    At most `step.streams` connections join; more are closed at once. One
    pump thread moves the bytes of every stream; it starts with the first
    connection and stops at `finish`, or by itself at the step's hard
    deadline, or when all `step.streams` streams are finished.
    """

    def __init__(self, step: StepParams, token: int, peer_ip: str) -> None:
        self.step = step
        self.token = token
        self.peer_ip = peer_ip
        self.sending = step.reverse
        self._window = _Window(step.warmup_s, step.duration_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []
        self._thread: threading.Thread | None = None
        self._deadline_ns = time.monotonic_ns() + int(
            step.hard_limit_s * 1e9)
        # Reversed, the server stops writing BULK_TAIL_MAX_S after its window
        # whatever the client does; forward, it reads until StepStop or the
        # step's deadline (which TCP flow control passes on to the client).
        # Either way it moves bytes no faster than the step's rate (rate_pps
        # datagrams of size_bytes) when it has one.
        cap = step.rate_cap()
        self._byte_cap = ((cap[0] * step.size_bytes, cap[1] * step.size_bytes)
                          if cap is not None else None)
        self._pumped = _Pumped(step.streams, self._window, sending=self.sending,
                               buffer_bytes=DEFAULT_WRITE_BYTES if self.sending
                               else RECV_BUFFER_BYTES,
                               tail_ns=(int(protocol.BULK_TAIL_MAX_S * 1e9) if self.sending
                                        else None),
                               deadline_ns=self._deadline_ns, byte_cap=self._byte_cap)
        self.rejected = 0

    def add_connection(self, conn: socket.socket, stream_id: int) -> None:
        with self._lock:
            if self._stop.is_set() or len(self._streams) >= self.step.streams:
                self.rejected += 1
                conn.close()
                return
            try:
                ports = (conn.getsockname()[1], conn.getpeername()[1])
            except OSError:  # reset before it joined (a planning probe, a vanished client)
                self.rejected += 1
                conn.close()
                return
            stream = _Stream(stream_id, conn, ports=ports)
            if self.sending and self._byte_cap is not None:
                _set_pacing(conn, self._byte_cap[0] / self.step.streams)
            if self.sending:
                # the writer's window starts with its first stream
                self._window.anchor(time.monotonic_ns())
            self._pumped.add(stream)
            self._streams.append(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="bulk-pump")
                self._thread.start()

    def _run(self) -> None:
        pumped = self._pumped
        try:
            while not self._stop.is_set():
                if not pumped.step():
                    with self._lock:
                        # a finished stream set with room left may still grow (probes)
                        full = len(self._streams) >= self.step.streams
                    now = time.monotonic_ns()
                    if full or now >= self._deadline_ns or pumped.past_tail(now):
                        break
                    time.sleep(CHUNK_S)
        finally:
            pumped.finish()

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        thread = self._thread
        if thread is not None and not self.sending:
            # a forward sender has stopped; the last bytes it wrote are still
            # arriving, so the pump runs on until EOF (bounded by the drain,
            # and the drain by the step's deadline)
            left_s = (self._deadline_ns - time.monotonic_ns()) / 1e9
            thread.join(timeout=max(min(self.step.drain_s, left_s), POLL_S))
        with self._lock:
            self._stop.set()
        if thread is not None:
            thread.join(timeout=4 * POLL_S + CHUNK_S)
        for stream in self._streams:
            stream.sock.close()
        wanted = sender.get("stream_ids")
        streams = self._streams
        if isinstance(wanted, list):
            streams = [s for s in streams if s.stream_id in set(wanted)]
        report = _end_report(streams, self.sending)
        report["connections"] = len(self._streams)
        report["rejected_connections"] = self.rejected
        return report


class BidirStepHandler:
    """The server's end of a --bidir step: a reader for streams 0..N-1 and a
    writer for N..2N-1, each an ordinary BulkStepHandler with its own pump,
    finished together; the report holds both ends under "forward" and
    "reverse".
    """

    def __init__(self, step: StepParams, token: int, peer_ip: str) -> None:
        self.token = token
        self.peer_ip = peer_ip
        self.streams = step.streams
        self.forward = BulkStepHandler(replace(step, bidir=False, reverse=False), token, peer_ip)
        self.reverse = BulkStepHandler(replace(step, bidir=False, reverse=True), token, peer_ip)

    def add_connection(self, conn: socket.socket, stream_id: int) -> None:
        if 0 <= stream_id < self.streams:
            self.forward.add_connection(conn, stream_id)
        else:
            self.reverse.add_connection(conn, stream_id)

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        forward = sender.get("forward")
        backward = sender.get("reverse")
        ends = (self.forward.finish(forward if isinstance(forward, dict) else {}),
                self.reverse.finish(backward if isinstance(backward, dict) else {}))
        return {"forward": ends[0], "reverse": ends[1],
                "connections": ends[0]["connections"] + ends[1]["connections"],
                "rejected_connections": (ends[0]["rejected_connections"]
                                         + ends[1]["rejected_connections"])}


# -- client side: interface counters and flow planning ----------------------------

def sysfs_counters(ifaces: Sequence[str]) -> PathCounters:
    """Byte counters of `ifaces` (the members of a bond or ECMP group) in this namespace."""
    names = tuple(ifaces)
    for name in names:
        if not os.path.isdir(f"/sys/class/net/{name}"):
            raise ConfigError(f"interface {name} does not exist here: give the interfaces the "
                              "paths leave by (e.g. the bond's members) with --path-ifaces")

    def read() -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for name in names:
            base = f"/sys/class/net/{name}/statistics/"
            with open(base + "tx_bytes", encoding="ascii") as tx, \
                    open(base + "rx_bytes", encoding="ascii") as rx:
                out[name] = (int(tx.read()), int(rx.read()))
        return out

    return read


def _data_address(client: StepClient) -> tuple[int, tuple[str, int]]:
    host, port = client.server_address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, port)


def _open_stream(client: StepClient, stream_id: int, token: int,
                 source_port: int | None) -> socket.socket:
    family, address = _data_address(client)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if source_port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
        sock.settimeout(5.0)
        sock.connect(address)
        sock.sendall(wire.pack_data_preamble(stream_id, token))
    except OSError as exc:
        sock.close()
        if source_port is not None and exc.errno == errno.EADDRINUSE:
            raise
        raise ConnectError(f"bulk stream {stream_id} could not connect to {address[0]} port "
                           f"{address[1]}: {exc.strerror or exc}") from None
    return sock


def _abort(sock: socket.socket) -> None:
    """Close with RST: no TIME_WAIT, so the port can be bound again at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def plan_flows(client: StepClient, streams: int, counters: PathCounters, *,
               reverse: bool = False, first_port: int = 41000, max_probes: int | None = None,
               probe_bytes: int = PROBE_BYTES) -> FlowPlan:
    """Pick source ports that spread `streams` flows evenly over the counted paths.

    Each candidate port opens one probe connection (in a probe step of its
    own), moves `probe_bytes` in the test's direction alone on the link, and
    the path whose counter moved is where the kernel's hash put that 5-tuple.
    Ports are kept until every path has its share. The probe connections are
    reset, so the ports are free again for the measured step.

    Raises:
        ConfigError: the paths could not all be filled within `max_probes`.
    """
    names = tuple(counters())
    planner = FlowPlanner(streams, names)
    limit = min(max_probes or 8 * streams + 16, protocol.MAX_STREAMS)
    direction = 1 if reverse else 0
    armed = client.begin_step(StepParams(workload="bulk", command="none", duration_s=max(5.0, limit * 0.25),
                                         drain_s=0.0, streams=limit, reverse=reverse))
    port = first_port
    buffer = bytearray(probe_bytes)
    try:
        while not planner.done and planner.probes < limit and port < 65536:
            before = {n: v[direction] for n, v in counters().items()}
            try:
                sock = _open_stream(client, planner.probes, armed.token, port)
            except OSError:
                port += 1  # in use here: not a candidate
                continue
            try:
                if reverse:
                    view, got = memoryview(buffer), 0
                    while got < probe_bytes:
                        n = sock.recv_into(view[got:])
                        if n == 0:
                            break
                        got += n
                else:
                    sock.sendall(buffer)
                path: int | None = None
                settle_until = time.monotonic() + 2.0
                while time.monotonic() < settle_until:
                    after = {n: v[direction] for n, v in counters().items()}
                    path = probe_path(before, after, names, min_bytes=probe_bytes * 3 // 4)
                    if path is not None:
                        break
                    time.sleep(0.005)
            finally:
                _abort(sock)
            planner.offer(port, path)
            port += 1
    except BaseException:
        client.abandon_step()
        raise
    client.end_step({"stream_ids": [], "probes": planner.probes})
    if not planner.done:
        missing = ", ".join(f"{n} needs {k} more" for n, k in planner.missing().items())
        raise ConfigError(f"flow planning found no balanced ports in {planner.probes} probes "
                          f"({missing}): check --path-ifaces names the paths' interfaces, or "
                          "give ports with --ports")
    return planner.plan()


# -- client side: one step --------------------------------------------------------

@dataclass(frozen=True)
class BulkConfig:
    """One bulk test, or a sweep of them.

    Attributes:
        streams: parallel TCP connections (UDP: 1).
        duration_s: measured seconds per step; warmup_s before it is not counted.
        udp: UDP bulk (large datagrams through the engine) instead of TCP.
        size_bytes: UDP payload per datagram; None fits one datagram in the path MTU.
        rate_bps: UDP offered goodput in bit/s; None as fast as the sender goes.
        reverse: the server sends, the client receives.
        bidir: both at once, `streams` each way (TCP); each step is then two
            step dicts, direction "forward" and "reverse", with "bidir" true.
        link_speed_bps: the line rate the ceiling is compared to (e.g. 20e9 for 2x10G).
        link_model: how the limit counts bits (see LINK_MODELS): "l1" a physical
            link (frames plus preamble and gap), "l2" a shaper such as tbf or
            htb (frame bytes only), "auto" l1 unless the traffic measured more
            than an l1 link of that speed could carry.
        paths: plan source ports over this many paths (needs path_ifaces).
        path_ifaces: interfaces whose byte counters tell the paths apart.
        ports: source ports to use (given, not planned), one per stream.
        workers: client processes the streams are split over.
        cpus: CPUs the workers are pinned to, round-robin; empty for no pinning.
        sweep_streams: stream counts, one step each (TCP).
        sweep_rates_bps: offered rates, one step each (UDP).
    """

    streams: int = 1
    duration_s: float = 5.0
    warmup_s: float = 0.5
    drain_s: float = 0.3
    udp: bool = False
    size_bytes: int | None = None
    rate_bps: float | None = None
    reverse: bool = False
    link_speed_bps: float | None = None
    link_model: str = "auto"
    bidir: bool = False
    paths: int = 1
    path_ifaces: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    workers: int = 1
    cpus: tuple[int, ...] = ()
    write_bytes: int = DEFAULT_WRITE_BYTES
    sweep_streams: tuple[int, ...] = ()
    sweep_rates_bps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.streams <= protocol.MAX_STREAMS:
            raise ConfigError(f"bulk streams must be 1..{protocol.MAX_STREAMS} (got {self.streams})")
        if any(not 1 <= n <= protocol.MAX_STREAMS for n in self.sweep_streams):
            raise ConfigError(f"bulk sweep stream counts must be 1..{protocol.MAX_STREAMS}")
        if not self.duration_s > 0 or self.warmup_s < 0 or self.drain_s < 0:
            raise ConfigError("bulk duration_s must be > 0, warmup_s and drain_s >= 0")
        if self.udp and (self.streams > 1 or any(n > 1 for n in self.sweep_streams)):
            raise ConfigError("UDP bulk runs one stream (the session's data socket): sweep "
                              "offered rates with --sweep-rates instead")
        if not self.udp and (self.rate_bps is not None or self.sweep_rates_bps):
            raise ConfigError("offered rates apply to UDP bulk only (add --udp); TCP streams "
                              "run as fast as the path takes them")
        if self.sweep_streams and self.sweep_rates_bps:
            raise ConfigError("sweep stream counts or offered rates, not both")
        if self.udp and self.reverse:
            raise ConfigError("UDP bulk runs client to server only: drop --reverse or --udp")
        if self.bidir:
            if self.udp or self.reverse:
                raise ConfigError("--bidir runs TCP streams both ways at once: drop "
                                  f"{'--udp' if self.udp else '--reverse'}")
            if self.workers > 1 or self.paths > 1 or self.ports:
                raise ConfigError("--bidir runs in one client process over the kernel's "
                                  "ports: drop --workers, --paths and --ports")
            if 2 * self.max_streams > protocol.MAX_STREAMS:
                raise ConfigError(f"--bidir opens the streams in each direction: at most "
                                  f"{protocol.MAX_STREAMS // 2} (got {self.max_streams})")
        if self.size_bytes is not None and not wire.HEADER_SIZE <= self.size_bytes <= wire.MAX_DATAGRAM:
            raise ConfigError(f"UDP size must be {wire.HEADER_SIZE}..{wire.MAX_DATAGRAM} bytes "
                              f"(got {self.size_bytes})")
        if self.paths < 1 or self.paths > 64:
            raise ConfigError(f"paths must be 1..64 (got {self.paths})")
        if self.paths > 1 and not self.ports and len(self.path_ifaces) != self.paths:
            raise ConfigError(f"planning flows over {self.paths} paths needs one interface per "
                              f"path (--path-ifaces, got {len(self.path_ifaces)}), or the source "
                              "ports themselves (--ports)")
        if self.ports and len(self.ports) < self.max_streams:
            raise ConfigError(f"{len(self.ports)} source ports given for {self.max_streams} "
                              "streams: give one per stream")
        if any(not 1 <= p <= 65535 for p in self.ports):
            raise ConfigError("source ports must be 1..65535")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be 1..64 (got {self.workers})")
        if self.link_speed_bps is not None and not self.link_speed_bps > 0:
            raise ConfigError("link speed must be > 0")
        if self.link_model not in ("auto", *LINK_MODELS):
            raise ConfigError(f"link model must be auto, l1 or l2 (got {self.link_model!r})")
        if not 1024 <= self.write_bytes <= 16 * 1024 * 1024:
            raise ConfigError(f"write size must be 1 KiB..16 MiB (got {self.write_bytes})")

    @property
    def max_streams(self) -> int:
        return max(self.sweep_streams) if self.sweep_streams else self.streams

    def stream_counts(self) -> tuple[int, ...]:
        return self.sweep_streams or (self.streams,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transport": "udp" if self.udp else "tcp",
            "direction": "bidir" if self.bidir else "reverse" if self.reverse else "forward",
            "streams": self.streams, "duration_s": self.duration_s, "warmup_s": self.warmup_s,
            "drain_s": self.drain_s, "size_bytes": self.size_bytes, "rate_bps": self.rate_bps,
            "link_speed_bps": self.link_speed_bps, "link_model": self.link_model,
            "paths": self.paths,
            "path_ifaces": list(self.path_ifaces), "ports": list(self.ports),
            "workers": self.workers, "cpus": list(self.cpus), "write_bytes": self.write_bytes,
            "sweep_streams": list(self.sweep_streams),
            "sweep_rates_bps": list(self.sweep_rates_bps),
        }


class _StopFlag(Protocol):
    def is_set(self) -> bool: ...


def _run_streams(socks: Sequence[tuple[int, socket.socket]], *, sending: bool, anchor_ns: int | None,
                 warmup_s: float, duration_s: float, tail_s: float, write_bytes: int,
                 deadline_ns: int, cpu: int | None = None,
                 stop: _StopFlag | None = None) -> dict[str, Any]:
    """Pump these streams from this thread; the end report of this end.

    `stop` set ends the pumping within a chunk: each stream's window then
    closes at that moment, so the report covers what was measured."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    window = _Window(warmup_s, duration_s)
    if anchor_ns is not None:
        window.anchor(anchor_ns)
    pumped = _Pumped(len(socks), window, sending=sending,
                     buffer_bytes=write_bytes if sending else RECV_BUFFER_BYTES,
                     tail_ns=int(tail_s * 1e9) if sending else 0, deadline_ns=deadline_ns,
                     live=True)
    for stream_id, sock in socks:
        pumped.add(_Stream(stream_id, sock,
                           ports=(sock.getsockname()[1], sock.getpeername()[1])))
    try:
        while pumped.step():
            if stop is not None and stop.is_set():
                break
    finally:
        pumped.finish()
    return _end_report(pumped.streams, sending)


def _worker_main(conn: Any, socks: list[tuple[int, socket.socket]], kwargs: dict[str, Any]) -> None:
    try:
        conn.send(("ok", _run_streams(socks, **kwargs)))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_in_workers(socks: list[tuple[int, socket.socket]], workers: int, cpus: Sequence[int],
                    stop: threading.Event | None = None, **kwargs: Any) -> dict[str, Any]:
    """Split the streams over `workers` forked processes and merge their reports."""
    if workers <= 1:
        return _run_streams(socks, cpu=cpus[0] if cpus else None, stop=stop, **kwargs)
    context = multiprocessing.get_context("fork")
    # A threading.Event does not cross fork: the workers watch this one,
    # which the parent sets when `stop` is.
    shared_stop = context.Event()
    kwargs["stop"] = shared_stop
    jobs = []
    for index in range(min(workers, len(socks))):
        share = socks[index::workers]
        parent, child = context.Pipe(duplex=False)
        cpu = cpus[index % len(cpus)] if cpus else None
        process = context.Process(target=_worker_main,
                                  args=(child, share, {**kwargs, "cpu": cpu}), daemon=True)
        process.start()
        child.close()
        jobs.append((process, parent))
    reports: list[dict[str, Any]] = []
    errors: list[str] = []
    give_up_ns = max(time.monotonic_ns() + 1_000_000_000, kwargs["deadline_ns"] + 5_000_000_000)
    for process, parent in jobs:
        while not parent.poll(CHUNK_S) and time.monotonic_ns() < give_up_ns:
            if stop is not None and stop.is_set():
                shared_stop.set()
        if parent.poll(0):
            status, payload = parent.recv()
            (reports if status == "ok" else errors).append(payload)
        else:
            errors.append("a bulk worker did not report in time")
        process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join()
    if errors:
        raise PktbenchError(f"bulk worker failed: {errors[0]}")
    merged = {"role": reports[0]["role"], "streams": sorted(
        (s for r in reports for s in r["streams"]), key=lambda s: s["stream_id"])}
    merged["payload_bps"] = sum(s["payload_bps"] for s in merged["streams"])
    merged["bytes"] = sum(s["bytes"] for s in merged["streams"])
    merged["window_s"] = max(r["window_s"] for r in reports)
    merged["cpu_percent"] = sum(r["cpu_percent"] for r in reports)
    return merged


class _PathSampler:
    """Reads the path counters at the edges of a window, from its own thread."""

    def __init__(self, counters: PathCounters | None, start_ns: int, duration_s: float) -> None:
        self.counters = counters
        self.start_ns = start_ns
        self.duration_s = duration_s
        self._samples: list[tuple[int, Mapping[str, tuple[int, int]]]] = []
        self._cut = threading.Event()
        self._thread: threading.Thread | None = None
        if counters is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self.counters is not None
        delay_s = (self.start_ns - time.monotonic_ns()) / 1e9
        if delay_s > 0 and self._cut.wait(delay_s):
            return
        self._samples.append((time.monotonic_ns(), self.counters()))
        self._cut.wait(self.duration_s)
        self._samples.append((time.monotonic_ns(), self.counters()))

    def cut(self) -> None:
        """End the window now (the step was stopped early)."""
        self._cut.set()

    def report(self, reverse: bool) -> list[dict[str, Any]] | None:
        """Bytes and bit/s per path (tx forward, rx reversed); None without counters."""
        if self._thread is None:
            return None
        self._thread.join(timeout=self.duration_s + 5.0)
        if len(self._samples) < 2:
            return None
        (t0, before), (t1, after) = self._samples[:2]
        span_s = (t1 - t0) / 1e9
        index = 1 if reverse else 0
        out = []
        for name, values in after.items():
            moved = values[index] - before.get(name, (0, 0))[index]
            out.append({"name": name, "direction": "rx" if reverse else "tx", "bytes": moved,
                        "window_s": span_s,
                        "interface_bps": moved * 8 / span_s if span_s > 0 else 0.0})
        return out


def _overhead_for(report: Mapping[str, Any], ipv6: bool) -> Overhead | None:
    """The per-segment overhead the sending end saw (MSS and options from its sockets)."""
    for stream in report.get("streams", []):
        mss = stream.get("mss_bytes")
        tcp = stream.get("tcp") or {}
        if mss:
            return tcp_overhead(int(mss), ipv6=ipv6, options_bytes=int(tcp.get("options_bytes", 0)))
    return None


# What limits a path decides which bits count against its speed. A physical
# link carries the frame plus 8 bytes of preamble and 12 of inter-frame gap
# (IEEE 802.3 clause 4.4.2): that is wire_bps. A shaper (tc tbf,
# htb) meters the frame bytes the kernel hands it and nothing else:
# frame_bps. Traffic measured above an l1 link's speed cannot
# have crossed such a link, so "auto" then judges it by the l2 model.
# LINK_MODELS (their names and descriptions) lives in pktbench.results, so
# the reporter can name a saved document's model without this module.


def link_model_for(wire_bps: float | None, frame_bps: float | None,
                   link_speed_bps: float | None, requested: str = "auto") -> str:
    """The overhead model ("l1" or "l2") that `requested` resolves to for these rates."""
    if requested in LINK_MODELS:
        return requested
    if link_speed_bps and wire_bps is not None and frame_bps is not None \
            and wire_bps > link_speed_bps:
        return "l2"
    return "l1"


def _rates(goodput_bps: float, overhead: Overhead | None, link_speed_bps: float | None,
           link_model: str = "auto") -> dict[str, Any]:
    wire_bps = overhead.wire_bps(goodput_bps) if overhead else None
    frame_bps = overhead.frame_bps(goodput_bps) if overhead else None
    model = link_model_for(wire_bps, frame_bps, link_speed_bps, link_model)
    counted = frame_bps if model == "l2" else wire_bps
    return {
        "wire_bps": wire_bps,
        "frame_bps": frame_bps,
        "link_model": model,
        "link_percent": (100.0 * counted / link_speed_bps
                         if counted is not None and link_speed_bps else None),
    }


def run_tcp_step(client: StepClient, config: BulkConfig, *, streams: int, index: int = 0,
                 ports: Sequence[int] | None = None, plan: FlowPlan | None = None,
                 counters: PathCounters | None = None,
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """Run one TCP bulk step of `streams` streams and return its step dict.

    `ports` are the source ports (one per stream) or None for the kernel's
    pick; `plan` labels each stream with the path its port was probed on.
    `stop` set ends the step early, measured up to that moment (both ends:
    the other sees the streams end).
    """
    params = StepParams(workload="bulk", command="none", duration_s=config.duration_s,
                        warmup_s=config.warmup_s, drain_s=config.drain_s, streams=streams,
                        reverse=config.reverse)
    socks: list[tuple[int, socket.socket]] = []
    sending = not config.reverse

    def send(armed: ArmedStep) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        try:
            for stream_id in range(streams):
                port = ports[stream_id] if ports else None
                try:
                    socks.append((stream_id, _open_stream(client, stream_id, armed.token, port)))
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    raise ConnectError(f"source port {port} is in use on this host: give "
                                       "--ports that no other socket holds") from None
            anchor_ns = time.monotonic_ns() if sending else None
            deadline_ns = time.monotonic_ns() + int(params.hard_limit_s * 1e9)  # as the server's
            sampler = _PathSampler(counters, (anchor_ns or time.monotonic_ns())
                                   + int(config.warmup_s * 1e9), config.duration_s)
            result = _run_in_workers(
                socks, config.workers, config.cpus, stop=stop, sending=sending,
                anchor_ns=anchor_ns, warmup_s=config.warmup_s, duration_s=config.duration_s,
                tail_s=config.drain_s, write_bytes=config.write_bytes, deadline_ns=deadline_ns)
            if stop is not None and stop.is_set():
                sampler.cut()
                if not sending:  # the server writes on until it sees the streams close
                    for _, sock in socks:
                        sock.close()
            per_path = sampler.report(config.reverse)
        except BaseException:
            for _, sock in socks:
                sock.close()
            raise
        for _, sock in socks:
            if sending:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        return result, per_path

    (result, per_path), server = drive_step(
        client, params, send, lambda sent: {"stream_ids": list(range(streams)),
                                            "payload_bps": sent[0]["payload_bps"]})
    for _, sock in socks:
        sock.close()
    return {**_tcp_step_dict(config, streams, index, result, server, ports, plan,
                             per_path,
                             ipv6=":" in client.server_address[0]
                             and not client.server_address[0].startswith("::ffff:")),
            "stopped_early": _stopped(stop)}


def run_bidir_step(client: StepClient, config: BulkConfig, *, streams: int, index: int = 0,
                   stop: threading.Event | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One --bidir step: `streams` streams each way at once, one step dict per direction.

    Streams 0..N-1 carry client to server, N..2N-1 server to client; both
    pumps run in this process, the reader in a thread of its own. `stop` set
    ends both directions early, each measured up to that moment.
    """
    params = StepParams(workload="bulk", command="none", duration_s=config.duration_s,
                        warmup_s=config.warmup_s, drain_s=config.drain_s, streams=streams,
                        bidir=True)
    socks: list[tuple[int, socket.socket]] = []

    def send(armed: ArmedStep) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            for stream_id in range(2 * streams):
                socks.append((stream_id, _open_stream(client, stream_id, armed.token, None)))
            anchor_ns = time.monotonic_ns()
            deadline_ns = anchor_ns + int(params.hard_limit_s * 1e9)
            common: dict[str, Any] = {
                "warmup_s": config.warmup_s, "duration_s": config.duration_s,
                "tail_s": config.drain_s, "write_bytes": config.write_bytes,
                "deadline_ns": deadline_ns}
            received: dict[str, Any] = {}
            failed: list[BaseException] = []

            def read_back() -> None:
                try:
                    received.update(_run_streams(socks[streams:], sending=False,
                                                 anchor_ns=None, stop=stop, **common))
                except BaseException as exc:  # raised in the caller's thread below
                    failed.append(exc)

            reader = threading.Thread(target=read_back, name="bulk-bidir-reader", daemon=True)
            reader.start()
            sent = _run_streams(socks[:streams], sending=True, anchor_ns=anchor_ns, stop=stop,
                                **common)
            for _, sock in socks[:streams]:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            reader.join(timeout=max((deadline_ns - time.monotonic_ns()) / 1e9, 0) + 5.0)
            if failed:
                raise failed[0]
            if reader.is_alive():
                raise PktbenchError("the bidir reader did not finish within the step's limit")
            if stop is not None and stop.is_set():
                for _, sock in socks[streams:]:  # the server writes on until these close
                    sock.close()
        except BaseException:
            for _, sock in socks:
                sock.close()
            raise
        return sent, received

    (sent, received), server = drive_step(
        client, params, send,
        lambda ends: {"forward": {"stream_ids": list(range(streams)),
                                  "payload_bps": ends[0]["payload_bps"]},
                      "reverse": {"stream_ids": list(range(streams, 2 * streams)),
                                  "payload_bps": ends[1]["payload_bps"]}})
    for _, sock in socks:
        sock.close()
    ipv6 = (":" in client.server_address[0]
            and not client.server_address[0].startswith("::ffff:"))
    forward = _tcp_step_dict(replace(config, bidir=False), streams, index, sent,
                             server.get("forward") or {}, None, None, None, ipv6=ipv6)
    backward = _tcp_step_dict(replace(config, bidir=False, reverse=True), streams, index,
                              received, server.get("reverse") or {}, None, None, None,
                              ipv6=ipv6)
    stopped = _stopped(stop)
    return ({**forward, "bidir": True, "stopped_early": stopped},
            {**backward, "bidir": True, "stopped_early": stopped})


def _tcp_step_dict(config: BulkConfig, streams: int, index: int, client_end: dict[str, Any],
                   server_end: dict[str, Any], ports: Sequence[int] | None,
                   plan: FlowPlan | None, per_path: list[dict[str, Any]] | None, *,
                   ipv6: bool) -> dict[str, Any]:
    sender, receiver = ((server_end, client_end) if config.reverse else (client_end, server_end))
    overhead = _overhead_for(sender, ipv6)
    by_id = {s["stream_id"]: s for s in sender.get("streams", [])}
    rows = []
    for got in receiver.get("streams", []):
        sent = by_id.get(got["stream_id"], {})
        tcp = sent.get("tcp") or {}
        row = {
            "stream_id": got["stream_id"],
            "source_port": _client_port(client_end, got["stream_id"]),
            "path": (plan.paths[plan.ports.index(ports[got["stream_id"]])]
                     if plan and ports and ports[got["stream_id"]] in plan.ports else None),
            "goodput_bps": got["payload_bps"],
            "bytes": got["bytes"],
            "sender_bps": sent.get("payload_bps"),
            "retransmits": tcp.get("retransmits"),
            "cwnd_segments": tcp.get("cwnd_segments"),
            "rtt_us": tcp.get("rtt_us"),
            "mss_bytes": sent.get("mss_bytes"),
            "error": got.get("error") or sent.get("error"),
        }
        row.update(_rates(got["payload_bps"], overhead, None))
        del row["link_percent"], row["link_model"]
        rows.append(row)
    aggregate = sum(r["goodput_bps"] for r in rows)
    retransmits = [r["retransmits"] for r in rows if r["retransmits"] is not None]
    step = {
        "index": index,
        "transport": "tcp",
        "direction": "reverse" if config.reverse else "forward",
        "streams_requested": streams,
        "streams": rows,
        "aggregate_bps": aggregate,
        "sender_bps": sender.get("payload_bps"),
        **_rates(aggregate, overhead, config.link_speed_bps, config.link_model),
        "overhead": overhead.to_dict() if overhead else None,
        "retransmits": sum(retransmits) if retransmits else None,
        "sender_cpu_percent": sender.get("cpu_percent"),
        "receiver_cpu_percent": receiver.get("cpu_percent"),
        "duration_s": receiver.get("window_s"),
        "per_path": per_path,
        "client": client_end,
        "server": server_end,
    }
    return step


def _client_port(client_end: Mapping[str, Any], stream_id: int) -> int | None:
    for stream in client_end.get("streams", []):
        if stream["stream_id"] == stream_id:
            return int(stream["local_port"])
    return None


def _path_mtu(sock: socket.socket) -> int:
    """The kernel's path MTU for a connected UDP socket (IP_MTU / IPV6_MTU)."""
    try:
        if sock.family == socket.AF_INET6:
            return int(sock.getsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_MTU", 24)))
        return int(sock.getsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU", 14)))
    except OSError:
        return 1500


def run_udp_step(client: StepClient, config: BulkConfig, *, rate_bps: float | None,
                 index: int = 0, counters: PathCounters | None = None,
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """One UDP bulk step: a blast step with large datagrams at `rate_bps` (None: max)."""
    sock = client.data_socket
    ipv6 = sock.family == socket.AF_INET6 and not client.server_address[0].startswith("::ffff:")
    mtu = _path_mtu(sock)
    size = config.size_bytes or min(wire.MAX_DATAGRAM,
                                     mtu - (40 if ipv6 else 20) - 8)
    size = max(size, wire.HEADER_SIZE)
    params = StepParams(workload="blast", command="none",
                        rate_pps=rate_bps / (8 * size) if rate_bps else None,
                        duration_s=config.duration_s, warmup_s=config.warmup_s,
                        drain_s=config.drain_s, size_bytes=size)
    # run_sender starts its schedule 1 ms from now, then the warm-up
    sampler = _PathSampler(counters, time.monotonic_ns() + int((config.warmup_s + 0.001) * 1e9),
                           config.duration_s)
    step = client.run_step(params, index=index, stop=stop)
    if stop is not None and stop.is_set():
        sampler.cut()
    overhead = udp_overhead(size, mtu_bytes=mtu, ipv6=ipv6)
    goodput = step["received_bps"]
    sent = step["sent_bps"]
    row = {"stream_id": 0, "source_port": sock.getsockname()[1], "path": None,
           "goodput_bps": goodput, "bytes": int(goodput * step["duration_s"] / 8),
           "sender_bps": sent, "retransmits": None, "cwnd_segments": None,
           "rtt_us": None, "mss_bytes": None, "error": None}
    row.update(_rates(goodput, overhead, None))
    del row["link_percent"], row["link_model"]
    return {
        "index": index,
        "transport": "udp",
        "direction": "forward",
        "streams_requested": 1,
        "offered_bps": rate_bps,
        "size_bytes": size,
        "path_mtu_bytes": mtu,
        "streams": [row],
        "aggregate_bps": goodput,
        "sender_bps": sent,
        **_rates(goodput, overhead, config.link_speed_bps, config.link_model),
        "overhead": overhead.to_dict(),
        "loss_ratio": step["loss_ratio"],
        "retransmits": None,
        "sender_cpu_percent": step["sender"]["cpu_percent"],
        "receiver_cpu_percent": step["receiver"].get("cpu_percent"),
        "duration_s": step["duration_s"],
        "per_path": sampler.report(False),
        "udp_step": {k: step[k] for k in ("sent_packets", "received_packets", "lost_packets",
                                          "sent_pps", "received_pps", "sender_bound")},
        # GSO (StepParams' default, auto) is where UDP bulk gets its throughput
        "engine": step.get("engine"),
        "stopped_early": _stopped(stop),
    }


# -- the whole test ----------------------------------------------------------------

def _stopped(stop: threading.Event | None) -> bool:
    """A step a signal cut short says so: its rates cover the time it ran."""
    return stop is not None and stop.is_set()


StepHook = Callable[[dict[str, Any]], None]


def run_session(client: StepClient, label: str, config: BulkConfig,
                counters: PathCounters | None = None, on_step: StepHook | None = None,
                stop: threading.Event | None = None) -> SweepResult:
    """Run a bulk test (one step, or a sweep over stream counts or offered
    rates) over an open control session; `label` names the target.

    Returns the result document, kind "bulk": its steps, flow plan and
    ceiling. PktbenchError on connection, protocol, planning or
    configuration trouble. (pktbench.api.run_bulk opens the session.)
    """
    from pktbench.results import environment

    if counters is None and config.path_ifaces:
        counters = sysfs_counters(config.path_ifaces)
    steps: list[dict[str, Any]] = []
    plan: FlowPlan | None = None
    ports: tuple[int, ...] | None = config.ports or None
    if config.ports:
        plan = FlowPlan(config.ports, tuple(-1 for _ in config.ports),
                        tuple(config.path_ifaces), "given")
    elif config.paths > 1 and not config.udp:
        assert counters is not None
        plan = plan_flows(client, config.max_streams, counters, reverse=config.reverse)
        ports = plan.ports
    if config.udp:
        for index, rate in enumerate(config.sweep_rates_bps or (config.rate_bps,)):
            if stop is not None and stop.is_set():
                break
            steps.append(run_udp_step(client, config, rate_bps=rate, index=index,
                                      counters=counters, stop=stop))
            if on_step:
                on_step(steps[-1])
    else:
        for index, streams in enumerate(config.stream_counts()):
            if stop is not None and stop.is_set():
                break
            if config.bidir:
                for step in run_bidir_step(client, config, streams=streams, index=index,
                                           stop=stop):
                    steps.append(step)
                    if on_step:
                        on_step(step)
                continue
            steps.append(run_tcp_step(client, config, streams=streams, index=index,
                                      ports=ports[:streams] if ports else None, plan=plan,
                                      counters=counters, stop=stop))
            if on_step:
                on_step(steps[-1])
    env = environment(client.server_address[0])
    return SweepResult.bulk(env, {"target": label, **config.to_dict()}, tuple(steps),
                            plan.to_dict() if plan else None)


@dataclass(frozen=True)
class BulkWorkload:
    """bulk: N TCP streams (UDP bulk is a blast step of the UDP workload)."""

    name: str = "bulk"
    transport: Transport = "tcp"

    def run_client_step(self, client: StepClient, params: StepParams, *, index: int = 0,
                        repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
        raise ConfigError("workload bulk is not a sweep step: run it with `pktbench bulk` "
                          "(pktbench.run_bulk)")

    def server_handler(self, arm: ServerArm) -> TcpStepHandler:
        if arm.step.bidir:
            return BidirStepHandler(arm.step, arm.token, arm.peer_ip)
        return BulkStepHandler(arm.step, arm.token, arm.peer_ip)


BULK = BulkWorkload()
