"""The Python face of the compiled engine: sockets, chunked loops, errors.

Owns: UDP socket set-up (large buffers, drop counting), running the engine's
loops in bounded chunks so stop requests, Ctrl-C and deadlines are honoured,
and turning -errno results into exceptions. Only this module and session.py
open sockets.

Invariants: a loop call never runs longer than CHUNK_S; EAGAIN/ENOBUFS are
counters in the engine, never exceptions here.
"""
from __future__ import annotations

import errno
import os
import resource
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pktbench import errors, histogram, wire


# --- the engine's loops: the one place pktbench chooses and imports them ----
# Every other module reaches them as `engine.loops` (looked up when called, so
# a test can swap the implementation here alone).
def _select_engine() -> tuple[ModuleType, str]:
    """Compiled, unless told or unable.

    PKTBENCH_PUREPYTHON=1 (or `pktbench --engine python`) asks for the
    pure-Python twin; a missing extension falls back to it with a warning,
    so an install without a compiler still measures (more slowly).
    """
    if os.environ.get("PKTBENCH_PUREPYTHON", "") not in ("", "0"):
        from pktbench import _fallback
        return _fallback, "python"
    try:
        from pktbench import _engine as compiled
    except ImportError as exc:
        from pktbench import _fallback
        print(f"pktbench: warning: compiled engine unavailable ({exc}); using the pure-Python "
              "engine, which is slower (build it with `pip install .` and a C compiler)",
              file=sys.stderr)
        return _fallback, "python"
    return compiled, "cython"


_selected, ENGINE_NAME = _select_engine()
if TYPE_CHECKING:
    # Both engines have the same names and behaviour (tests/test_fallback.py):
    # the compiled one's stub, pktbench/_engine.pyi, types every caller.
    from pktbench import _engine as _typed
    loops = _typed
else:
    loops = _selected
# --- end of the engine's import block ---------------------------------------

ENGINE_BUILD = "compiled" if ENGINE_NAME == "cython" else "pure"


def _wheel_tag() -> str:
    """The tag of the wheel this package was installed from, or "source build"."""
    from importlib import metadata
    try:
        dist = metadata.distribution("pktbench")
        here = os.path.realpath(os.path.dirname(__file__))
        if os.path.realpath(str(dist.locate_file("pktbench"))) != here:
            return "source build"  # another copy is installed; this one runs from a tree
        tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "")
                .splitlines() if line.startswith("Tag:")]
    except (metadata.PackageNotFoundError, OSError):
        return "source build"
    # A plain linux_* tag is a wheel pip built on this host from the sdist.
    portable = [tag for tag in tags if "linux_" not in tag or "manylinux" in tag
                or "musllinux" in tag]
    return ".".join(portable) if portable else "source build"


def engine_environment() -> dict[str, str]:
    """Which engine ran, how it was built and where it came from (every result records it)."""
    return {"engine": ENGINE_NAME, "engine_build": ENGINE_BUILD, "engine_wheel": _wheel_tag()}


CHUNK_S = 0.02
DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024

# Linux socket options the socket module does not name.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

monotonic_ns = loops.monotonic_ns


@dataclass(frozen=True)
class BufferSizes:
    requested_bytes: int
    rcvbuf_bytes: int
    sndbuf_bytes: int


def tune_socket(sock: socket.socket, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> BufferSizes:
    """Ask for large buffers and per-socket drop counts; report what we got.

    With the default ~200 KiB receive buffer, small datagrams start to drop
    near 200k pps here: that would be a buffer artefact, not the path's knee.
    As root the *FORCE options go past net.core.rmem_max; otherwise the
    kernel silently caps the request, so the effective size is read back.
    """
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    # Blocking with a kernel receive timeout: the engine's blocking mode
    # sleeps inside recvmmsg (one syscall per wake-up, as netperf's recv),
    # and the timeout keeps every wait within one chunk. Every other call
    # passes MSG_DONTWAIT.
    sock.setblocking(True)
    seconds = int(CHUNK_S)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("@ll", seconds, int((CHUNK_S - seconds) * 1e6)))
    # getsockopt reports twice the usable size (the kernel's bookkeeping share).
    return BufferSizes(
        requested_bytes=buffer_bytes,
        rcvbuf_bytes=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2,
        sndbuf_bytes=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2,
    )


# What a UDP loop's errno means here, where the system's text would not say.
_UDP_HINTS: Mapping[int, str] = MappingProxyType({
    errno.ECONNREFUSED: "the peer's UDP port refused the datagrams (is `pktbench serve` running there?)",
})


def check_rc(rc: int, what: str) -> None:
    """Raise the matching OSError subclass (errors.errno_error) for a negative engine return."""
    errors.check_rc(rc, what, _UDP_HINTS)


def pack_sockaddr(host: str, port: int) -> bytes:
    """A struct sockaddr_in/in6 as the kernel fills it in for recvmmsg."""
    if ":" in host:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
            + socket.inet_pton(socket.AF_INET, host) + bytes(8))


def udp_rcvbuf_errors() -> int:
    """Host-wide UDP receive-buffer drops (/proc/net/snmp, v4 + v6)."""
    total = 0
    for path, prefix in (("/proc/net/snmp", "Udp:"), ("/proc/net/snmp6", "Udp6RcvbufErrors")):
        try:
            with open(path, encoding="ascii") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        if prefix == "Udp:":
            rows = [line.split() for line in lines if line.startswith("Udp:")]
            if len(rows) >= 2 and "RcvbufErrors" in rows[0]:
                total += int(rows[1][rows[0].index("RcvbufErrors")])
        else:
            total += sum(int(line.split()[1]) for line in lines if line.startswith(prefix))
    return total


def thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


@dataclass
class SenderOutcome:
    """What the sending side of one step measured (its measured window only)."""

    counters: dict[str, int]
    latency_hist: npt.NDArray[np.uint64]
    actual_latency_hist: npt.NDArray[np.uint64]
    send_lag_hist: npt.NDArray[np.uint64]
    offered_pps: float | None
    duration_s: float
    send_span_s: float
    cpu_s: float
    stopped_early: bool = False
    warmup_sent: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return self.counters["sent"]

    @property
    def sent_pps(self) -> float:
        return self.sent / self.send_span_s if self.send_span_s > 0 else 0.0


def _counters(array: npt.NDArray[np.uint64], names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(value) for name, value in zip(names, array)}


class _Sender:
    """Holds a PacedSender and its phase limit (the cdef class hides it)."""

    def __init__(self, sock: socket.socket, template: bytes, rate_pps: float | None,
                 expect_replies: bool, busy_poll: bool, timeout_s: float, batch: int,
                 outstanding: int | None) -> None:
        self.engine = loops.PacedSender(sock.fileno(), template, rate_pps=rate_pps or 0.0,
                                          expect_replies=expect_replies, busy_poll=busy_poll,
                                          timeout_s=timeout_s, batch=batch,
                                          max_outstanding=outstanding or 0)
        self.limit = 0

    def phase(self, t0_ns: int, limit: int, warmup: bool) -> None:
        self.limit = limit
        self.engine.begin(t0_ns, limit, warmup)

    def run_until(self, until_ns: int, *, send: bool, stop: threading.Event | None) -> bool:
        chunk_ns = int(CHUNK_S * 1e9)
        received_index = loops.SENDER_COUNTERS.index("received")
        while True:
            now = monotonic_ns()
            if now >= until_ns:
                return True
            if stop is not None and stop.is_set():
                return False
            check_rc(self.engine.run(min(until_ns, now + chunk_ns), send), "sending")
            if send and self.engine.sent >= self.limit:
                return True
            if not send and self.engine.counters[received_index] >= self.engine.sent:
                return True


UNLIMITED = 1 << 62


def run_sender(sock: socket.socket, template: bytes, *, rate_pps: float | None,
               duration_s: float, warmup_s: float = 0.0, drain_s: float = 0.5,
               expect_replies: bool, busy_poll: bool = False, timeout_s: float = 1.0,
               batch: int = 64, outstanding: int | None = None,
               stop: threading.Event | None = None, start_ns: int | None = None
               ) -> SenderOutcome:
    """Send one step from a connected UDP socket and collect replies.

    The schedule is absolute: packet i of the measured window is due at
    t0 + i / rate_pps, so its count is exactly duration_s * rate_pps when the
    sender keeps up. Warm-up packets carry the warm-up flag, are sent on the
    same schedule just before t0 and are never counted by either end.
    rate_pps None sends as fast as the socket takes packets. `outstanding`
    closes the loop: at most that many requests wait for replies at once
    (1 = ping-pong, as netperf UDP_RR and sockperf ping-pong measure).
    `start_ns` (monotonic) is when the schedule begins, so senders in several
    processes can share one; by default 1 ms from now.
    """
    sender = _Sender(sock, template, rate_pps, expect_replies, busy_poll, timeout_s, batch,
                     outstanding)
    period_ns = 1e9 / rate_pps if rate_pps else 0.0
    if start_ns is None:
        start_ns = monotonic_ns() + 1_000_000
    warmup_sent = 0
    if warmup_s > 0:
        warmup_count = int(round(warmup_s * rate_pps)) if rate_pps else UNLIMITED
        sender.phase(start_ns, warmup_count, True)
        # The last warm-up packet is due one period before the deadline; a
        # sender woken a little late still sends it (the phase ends at its limit).
        warmup_grace_ns = int(max(0.01, warmup_s * 0.01) * 1e9) if rate_pps else 0
        sender.run_until(start_ns + int(warmup_s * 1e9) + warmup_grace_ns, send=True, stop=stop)
        warmup_sent = sender.engine.sent
        start_ns = (start_ns + int(warmup_count * period_ns)) if rate_pps else monotonic_ns()
    count = int(round(duration_s * rate_pps)) if rate_pps else UNLIMITED
    # A sender that keeps up finishes by t0 + duration. A short grace lets a
    # sender that was preempted near the end catch up (the lag histogram
    # shows the stall); anything still unsent after it marks the step
    # sender-bound instead of stretching it.
    grace_ns = int(max(0.01, duration_s * 0.01) * 1e9)
    sender.phase(start_ns, count, False)
    cpu_before = thread_cpu_s()
    completed = sender.run_until(start_ns + int(duration_s * 1e9) + (grace_ns if rate_pps else 0),
                                 send=True, stop=stop)
    send_end_ns = monotonic_ns()
    cpu_s = thread_cpu_s() - cpu_before
    if expect_replies and completed:
        completed = sender.run_until(monotonic_ns() + int(drain_s * 1e9), send=False, stop=stop)
    sender.engine.finish()
    counters = _counters(sender.engine.counters, loops.SENDER_COUNTERS)
    span_s = max(duration_s, (send_end_ns - start_ns) / 1e9) if not rate_pps else duration_s
    if rate_pps and counters["sent"] < count:
        span_s = max(duration_s, (send_end_ns - start_ns) / 1e9)
    return SenderOutcome(
        counters=counters,
        latency_hist=sender.engine.latency_hist.copy(),
        actual_latency_hist=sender.engine.actual_latency_hist.copy(),
        send_lag_hist=sender.engine.send_lag_hist.copy(),
        offered_pps=rate_pps,
        duration_s=duration_s,
        send_span_s=span_s,
        cpu_s=cpu_s,
        stopped_early=not completed,
        warmup_sent=warmup_sent,
    )


class ResponderLoop:
    """A Responder for one step, run in chunks by `serve_until`."""

    def __init__(self, sock: socket.socket, *, peer: tuple[str, int], token: int,
                 command: int, size_bytes: int, sink: bool, busy_poll: bool = False,
                 batch: int = 64, seq_limit: int = (1 << 64) - 1) -> None:
        prefix = b"" if sink else wire.command_prefix(command)
        reply = b"" if sink else wire.reply_payload(command, size_bytes)
        self.sink = sink
        self.engine = loops.Responder(
            sock.fileno(), peer=pack_sockaddr(peer[0], peer[1]), token=token, command=command,
            sink=sink, max_size=max(size_bytes, wire.HEADER_SIZE), prefix=prefix, reply=reply,
            busy_poll=busy_poll, batch=batch, seq_limit=seq_limit)

    def serve_until(self, until_ns: int, stop: threading.Event | None = None) -> None:
        chunk_ns = int(CHUNK_S * 1e9)
        while True:
            now = monotonic_ns()
            if now >= until_ns or (stop is not None and stop.is_set()):
                return
            check_rc(self.engine.run(min(until_ns, now + chunk_ns)), "serving")

    def finish(self, sent_packets: int) -> None:
        self.engine.finish(sent_packets)

    def counters(self) -> dict[str, object]:
        result: dict[str, object] = dict(_counters(self.engine.counters,
                                                   loops.RESPONDER_COUNTERS))
        result["drops"] = _counters(self.engine.drops, wire.DROP_REASONS)
        result["jitter_us"] = self.engine.jitter_ns / 1000.0 if self.sink else None
        return result


def latency_summaries(outcome: SenderOutcome) -> dict[str, dict[str, float] | None]:
    c = outcome.counters
    has = c["received"] > 0
    return {
        "latency_us": histogram.summary_us(outcome.latency_hist, min_ns=c["lat_min_ns"],
                                           max_ns=c["lat_max_ns"]) if has else None,
        "latency_actual_us": histogram.summary_us(outcome.actual_latency_hist,
                                                  min_ns=c["actual_min_ns"],
                                                  max_ns=c["actual_max_ns"]) if has else None,
        "send_lag_us": histogram.summary_us(outcome.send_lag_hist, max_ns=c["lag_max_ns"]),
    }
