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
from typing import TYPE_CHECKING, Any, Protocol

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
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104

# --- UDP GSO / GRO ------------------------------------------------------------
GSO_MODES = ("auto", "on", "off")
# The kernel takes at most 64 segments a GSO buffer (UDP_MAX_SEGMENTS on the
# oldest kernels that have it), all in one UDP payload.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65507
# Burst rule: a paced blast releases at most the datagrams due within this
# quantum at once (1,000 pps: 1; 100,000 pps: 10; 640,000 pps and up: 64).
BURST_QUANTUM_S = 100e-6


def burst_for(rate_pps: float | None, cap: int | None = None) -> int:
    """Datagrams a paced send holds for and releases together: those due in
    BURST_QUANTUM_S, at least 1, at most GSO_MAX_SEGMENTS and `cap`
    (--burst N). An unpaced step (rate None) sends GSO_MAX_SEGMENTS (or cap)."""
    burst = GSO_MAX_SEGMENTS if not rate_pps else max(1, int(rate_pps * BURST_QUANTUM_S))
    burst = min(burst, GSO_MAX_SEGMENTS)
    return max(1, min(burst, cap)) if cap is not None else burst


def gso_segments_for(size_bytes: int) -> int:
    """Datagrams of this size one GSO buffer may carry (0: GSO cannot help)."""
    segments = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // max(size_bytes, 1))
    return segments if segments > 1 else 0


_offload_probe: tuple[bool, bool] | None = None


def udp_offload_support() -> tuple[bool, bool]:
    """(UDP_SEGMENT, UDP_GRO): whether this kernel takes each option on a UDP
    socket, probed once on a fresh unbound socket; and whether the selected
    engine has the loops for them (the pure-Python one has not)."""
    global _offload_probe
    if _offload_probe is None:
        found = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for option, value in ((UDP_SEGMENT, 1400), (UDP_GRO, 1)):
                try:
                    probe.setsockopt(SOL_UDP, option, value)
                    found.append(True)
                except OSError:
                    found.append(False)
        _offload_probe = (found[0], found[1])
    capable = bool(getattr(loops, "UDP_OFFLOAD", False))
    return _offload_probe[0] and capable, _offload_probe[1] and capable


def check_gso_mode(gso: str) -> None:
    """Refuse `gso` unless it is auto, on or off, and `on` where GSO cannot run."""
    if gso not in GSO_MODES:
        raise errors.ConfigError(f"gso must be one of {', '.join(GSO_MODES)} (got {gso!r})")
    if gso == "on" and not udp_offload_support()[0]:
        why = ("the pure-Python engine has no GSO path" if not getattr(loops, "UDP_OFFLOAD", False)
               else "this kernel refuses UDP_SEGMENT (Linux 4.18 or later has it)")
        raise errors.ConfigError(f"--gso on: UDP GSO is not available: {why}; use --gso auto or off")


def merge_engine_figures(figures: list[dict[str, object]]) -> dict[str, object]:
    """The "engine" figures of several flows as one: a path ran if it ran in
    every flow, counts add up, the largest segment and burst sizes stand."""
    if not figures:
        return {}
    merged = dict(figures[0])
    for figure in figures[1:]:
        for name, value in figure.items():
            seen = merged.get(name)
            if isinstance(value, bool):
                merged[name] = bool(seen) and value
            elif isinstance(value, int) and isinstance(seen, int):
                merged[name] = (max(seen, value) if name in ("gso_segments", "burst_packets")
                                else seen + value)
            elif seen is None:
                merged[name] = value
    if "gso_segments_mean" in merged:
        datagrams = 0.0
        for figure in figures:
            mean, buffers = figure.get("gso_segments_mean"), figure.get("gso_buffers")
            if isinstance(mean, float) and isinstance(buffers, int):
                datagrams += mean * buffers
        total = merged.get("gso_buffers")
        merged["gso_segments_mean"] = datagrams / total if isinstance(total, int) and total else 0.0
    return merged


def set_gro(sock: socket.socket, wanted: bool) -> bool:
    """Turn UDP_GRO on or off on `sock`; True when it is on afterwards."""
    on = wanted and udp_offload_support()[1]
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1 if on else 0)
    except OSError:
        return False
    return on

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


def socket_drops(sock: socket.socket) -> int | None:
    """The kernel's drop count of one UDP socket (sk_drops: the "drops"
    column of /proc/net/udp and udp6), readable at any moment, unlike
    SO_RXQ_OVFL, which only arrives with the next datagram read. None where
    /proc does not list the socket."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path, encoding="ascii") as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None


def ip_reassembly_failures() -> dict[str, int]:
    """This network namespace's IP reassembly failures, v4 + v6: "fails"
    (ReasmFails, timeouts included) and "timeouts" (ReasmTimeout), from
    /proc/net/snmp and /proc/net/snmp6; zeros where they cannot be read."""
    counts = {"fails": 0, "timeouts": 0}
    try:
        with open("/proc/net/snmp", encoding="ascii") as handle:
            rows = [line.split() for line in handle if line.startswith("Ip:")]
        if len(rows) >= 2:
            named = dict(zip(rows[0][1:], rows[1][1:]))
            counts["fails"] += int(named.get("ReasmFails", 0))
            counts["timeouts"] += int(named.get("ReasmTimeout", 0))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/snmp6", encoding="ascii") as handle:
            named = dict(line.split()[:2] for line in handle if line.startswith("Ip6Reasm"))
        counts["fails"] += int(named.get("Ip6ReasmFails", 0))
        counts["timeouts"] += int(named.get("Ip6ReasmTimeout", 0))
    except (OSError, ValueError):
        pass
    return counts


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


# glibc's malloc raises its mmap threshold each time a large block is freed,
# so the next step's large buffers come from the heap, and a freed heap stays
# resident: the server kept a gigabyte after one big step. A fixed threshold
# keeps every step buffer in its own mapping, returned to the kernel on free.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 256 * 1024


def _libc() -> Any:
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc only; elsewhere AttributeError
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def keep_buffers_unpooled() -> None:
    """Make large allocations always mmap'd (and unmapped when freed)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_memory() -> None:
    """Hand the heap's free pages back to the kernel after a step."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


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
                 outstanding: int | None, gso: str = "off", burst: int | None = None) -> None:
        gso_ok, _ = udp_offload_support()
        segments = gso_segments_for(len(template)) if gso != "off" and gso_ok else 0
        # Bursts are how a GSO sender paces. rr holds no request back unless
        # told (--burst): a held request's latency would count the wait, and
        # several due at once still share a buffer. The per-datagram path
        # sends each datagram as it falls due, as it always has.
        if burst is None and (expect_replies or not segments):
            self.burst = 1
        else:
            self.burst = burst_for(rate_pps, burst)
        self.gro = set_gro(sock, expect_replies and gso != "off")
        self.engine = loops.PacedSender(sock.fileno(), template, rate_pps=rate_pps or 0.0,
                                          expect_replies=expect_replies, busy_poll=busy_poll,
                                          timeout_s=timeout_s, batch=batch,
                                          max_outstanding=outstanding or 0,
                                          gso_segments=segments, burst=self.burst,
                                          gro=self.gro)
        self.gso_requested = segments
        self.limit = 0

    def figures(self) -> dict[str, object]:
        """Which send path ran: the result's "engine" figures of the sender."""
        engine = self.engine
        buffers = int(engine.gso_buffers)
        fallback = engine.gso_errno
        return {
            "udp_gso": buffers > 0 and fallback == 0,
            "gso_segments": int(engine.gso_segments) if buffers > 0 else 0,
            "gso_segments_mean": (int(engine.gso_datagrams) / buffers) if buffers else 0.0,
            "gso_buffers": buffers,
            "gso_fallback": errno.errorcode.get(fallback, str(fallback)) if fallback else None,
            "burst_packets": int(engine.burst),
            "udp_gro": self.gro,
        }

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


class Snapshotting(Protocol):
    """An engine loop whose meter can be read while it runs (PacedSender, RespClient)."""

    def snapshot(self) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...


@dataclass
class LiveWindow:
    """One measured window running in this process, as interval reports see it.

    `counter_names` names the snapshot's counters (SENDER_COUNTERS or
    CLIENT_COUNTERS); `final` is the snapshot taken as the window closed
    (after its drain), None while it runs. `replies`: the sender counts
    replies (rr); a one-way sender's received counter stays 0. `unit`
    "bytes" is a bulk pump's: its one counter is payload bytes moved, and
    `label` says which way ("forward": this end writes, "reverse": reads).
    """

    meter: Snapshotting
    counter_names: tuple[str, ...]
    start_ns: int
    offered_pps: float | None
    replies: bool = True
    unit: str = "packets"
    label: str | None = None
    final: tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]] | None = None


class LiveMeters:
    """The measured windows now running in this process, for readers in other threads.

    Senders register their window for its length (`watching`); an interval
    reporter (pktbench.intervals) polls `windows()` and each window's meter
    snapshot. Registering costs a lock and a list append per step, so it is
    always on, listener or not. Windows that closed stay until `collect`
    takes them, so a reader that polls late still sees how a window ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[LiveWindow] = []
        self._closed: list[LiveWindow] = []
        self.listeners = 0  # closed windows are only kept while someone reads them

    def windows(self) -> list[LiveWindow]:
        with self._lock:
            return list(self._running)

    def collect(self) -> list[LiveWindow]:
        """The windows that closed since the last call, oldest first."""
        with self._lock:
            closed, self._closed = self._closed, []
            return closed

    def open(self, meter: Snapshotting, counter_names: tuple[str, ...], start_ns: int,
             offered_pps: float | None, replies: bool = True, unit: str = "packets",
             label: str | None = None) -> LiveWindow:
        window = LiveWindow(meter, counter_names, start_ns, offered_pps, replies, unit, label)
        with self._lock:
            self._running.append(window)
        return window

    def close(self, window: LiveWindow) -> None:
        final = window.meter.snapshot() if self.listeners else None
        with self._lock:
            if window in self._running:
                self._running.remove(window)
                if self.listeners:
                    window.final = final
                    self._closed.append(window)


LIVE_METERS = LiveMeters()


class PhaseLoop(Protocol):
    """What run_phases drives: a sender engine with a phase limit."""

    def begin(self, start_ns: int, count: int, warmup: bool) -> None: ...

    def send_until(self, until_ns: int) -> bool:
        """Send on schedule until `until_ns`; False if stopped first."""
        ...

    def sent(self) -> int: ...

    def end_sending(self) -> None:
        """The measured window is over: issue nothing more."""
        ...

    def drain_until(self, until_ns: int) -> bool:
        """Collect replies still owed until `until_ns`; False if stopped first."""
        ...


@dataclass(frozen=True)
class Phases:
    start_ns: int  # t0 of the measured window
    count: int  # what the measured window schedules (UNLIMITED at rate None)
    send_end_ns: int
    cpu_s: float  # this thread's CPU time in the measured window
    completed: bool
    warmup_sent: int


def run_phases(loop: PhaseLoop, *, rate_pps: float | None, warmup_s: float, duration_s: float,
               drain_s: float, drain: bool, grace: bool, start_ns: int | None = None,
               meter: Snapshotting | None = None,
               counter_names: tuple[str, ...] = (), replies: bool = True) -> Phases:
    """The one warm-up / measure / drain driver of every sender.

    Warm-up is sent on the measured schedule just before t0, so t0 is where
    the warm-up's last period ends. `grace` lets a sender woken late finish
    each phase (1 % of it, at least 10 ms, paced steps only for the measured
    window); anything unsent after it is sender-bound, not a longer step.
    `drain`: wait up to drain_s for replies still owed after a completed
    window. `start_ns` (monotonic) is when the schedule begins: by default
    1 ms from now. `meter`, when given, is shown to LIVE_METERS for the
    measured window and its drain (interval reports read it there).
    """
    period_ns = 1e9 / rate_pps if rate_pps else 0.0
    if start_ns is None:
        start_ns = monotonic_ns() + 1_000_000
    warmup_sent = 0
    if warmup_s > 0:
        warmup_count = int(round(warmup_s * rate_pps)) if rate_pps else UNLIMITED
        loop.begin(start_ns, warmup_count, True)
        warmup_grace_ns = int(max(0.01, warmup_s * 0.01) * 1e9) if grace and rate_pps else 0
        loop.send_until(start_ns + int(warmup_s * 1e9) + warmup_grace_ns)
        warmup_sent = loop.sent()
        start_ns = (start_ns + int(warmup_count * period_ns)) if rate_pps else monotonic_ns()
    count = int(round(duration_s * rate_pps)) if rate_pps else UNLIMITED
    grace_ns = int(max(0.01, duration_s * 0.01) * 1e9) if grace and rate_pps else 0
    loop.begin(start_ns, count, False)
    live = (LIVE_METERS.open(meter, counter_names, start_ns, rate_pps, replies)
            if meter is not None else None)
    try:
        cpu_before = thread_cpu_s()
        completed = loop.send_until(start_ns + int(duration_s * 1e9) + grace_ns)
        send_end_ns = monotonic_ns()
        cpu_s = thread_cpu_s() - cpu_before
        loop.end_sending()
        if drain and completed:
            completed = loop.drain_until(monotonic_ns() + int(drain_s * 1e9))
    finally:
        if live is not None:
            LIVE_METERS.close(live)
    return Phases(start_ns, count, send_end_ns, cpu_s, completed, warmup_sent)


class _SenderPhases:
    """A _Sender as run_phases sees it."""

    def __init__(self, sender: _Sender, stop: threading.Event | None) -> None:
        self._sender = sender
        self._stop = stop

    def begin(self, start_ns: int, count: int, warmup: bool) -> None:
        self._sender.phase(start_ns, count, warmup)

    def send_until(self, until_ns: int) -> bool:
        return self._sender.run_until(until_ns, send=True, stop=self._stop)

    def sent(self) -> int:
        return int(self._sender.engine.sent)

    def end_sending(self) -> None:
        pass  # a drain runs with send=False

    def drain_until(self, until_ns: int) -> bool:
        return self._sender.run_until(until_ns, send=False, stop=self._stop)


def run_sender(sock: socket.socket, template: bytes, *, rate_pps: float | None,
               duration_s: float, warmup_s: float = 0.0, drain_s: float = 0.5,
               expect_replies: bool, busy_poll: bool = False, timeout_s: float = 1.0,
               batch: int = 64, outstanding: int | None = None,
               stop: threading.Event | None = None, start_ns: int | None = None,
               gso: str = "off", burst: int | None = None) -> SenderOutcome:
    """Send one step from a connected UDP socket and collect replies.

    The schedule is absolute: packet i of the measured window is due at
    t0 + i / rate_pps, so its count is exactly duration_s * rate_pps when the
    sender keeps up. Warm-up packets carry the warm-up flag, are sent on the
    same schedule just before t0 and are never counted by either end.
    rate_pps None sends as fast as the socket takes packets. `outstanding`
    closes the loop: at most that many requests wait for replies at once
    (1 = ping-pong, as netperf UDP_RR and sockperf ping-pong measure).
    `start_ns` (monotonic) is when the schedule begins, so senders in several
    processes can share one; by default 1 ms from now. `gso` "auto" or "on"
    sends datagrams due together as UDP GSO buffers where the kernel takes
    them (falling back per datagram on EIO/EINVAL), and reads rr replies
    coalesced (UDP_GRO); `burst` caps the datagrams a paced send releases at
    once (burst_for). The outcome's extra["engine"] says which path ran.
    """
    sender = _Sender(sock, template, rate_pps, expect_replies, busy_poll, timeout_s, batch,
                     outstanding, gso, burst)
    phases = run_phases(_SenderPhases(sender, stop), rate_pps=rate_pps, warmup_s=warmup_s,
                        duration_s=duration_s, drain_s=drain_s, drain=expect_replies,
                        grace=True, start_ns=start_ns, meter=sender.engine,
                        counter_names=loops.SENDER_COUNTERS, replies=expect_replies)
    start_ns, count, send_end_ns = phases.start_ns, phases.count, phases.send_end_ns
    sender.engine.finish()
    counters = _counters(sender.engine.counters, loops.SENDER_COUNTERS)
    span_s = max(duration_s, (send_end_ns - start_ns) / 1e9) if not rate_pps else duration_s
    if rate_pps and counters["sent"] < count:
        span_s = max(duration_s, (send_end_ns - start_ns) / 1e9)
    if stop is not None and stop.is_set() and not phases.completed:
        # cut short: the rates are over the time it really sent, not the planned window
        span_s = min(span_s, max((send_end_ns - start_ns) / 1e9, 1e-9))
    return SenderOutcome(
        counters=counters,
        latency_hist=sender.engine.latency_hist.copy(),
        actual_latency_hist=sender.engine.actual_latency_hist.copy(),
        send_lag_hist=sender.engine.send_lag_hist.copy(),
        offered_pps=rate_pps,
        duration_s=duration_s,
        send_span_s=span_s,
        cpu_s=phases.cpu_s,
        stopped_early=not phases.completed,
        warmup_sent=phases.warmup_sent,
        extra={"engine": sender.figures()},
    )


# Each flow of a multi-flow step receives into at most this many bytes: 64
# datagrams of a typical size, fewer large ones or GRO trains (8 slots of
# 64 KiB still take hundreds of datagrams a call), so a step's memory follows
# its flow count, not flows x 64 x 64 KiB. A single-flow step keeps 64 slots.
RESPONDER_RX_BYTES_PER_FLOW = 512 << 10
_WINDOW_BITS = 1 << 20  # the Responder's loss window


_GRO_SLOT = 65536  # a receive slot with UDP_GRO holds a whole coalesced train


def _rx_slot(size_bytes: int, gro: bool) -> int:
    slot = max(size_bytes, wire.HEADER_SIZE) + 1
    return max(slot, _GRO_SLOT) if gro else slot


def responder_batch(size_bytes: int, *, gro: bool = False, flows: int = 1) -> int:
    """Receive slots a responder fills per call for this datagram size."""
    if flows <= 1:
        return 64
    return max(4, min(64, RESPONDER_RX_BYTES_PER_FLOW // _rx_slot(size_bytes, gro)))


def responder_buffer_bytes(size_bytes: int, *, gro: bool = False, flows: int = 1) -> int:
    """What a step's Responders allocate over its `flows` flows (receive and
    reply slots, their message headers and control space, the loss
    windows), rounded up."""
    slot = _rx_slot(size_bytes, gro)
    reply = max(size_bytes, wire.HEADER_SIZE) + 1
    batch = responder_batch(size_bytes, gro=gro, flows=flows)
    return flows * (batch * (slot + reply + 512) + _WINDOW_BITS // 8 + 4096)


class ResponderLoop:
    """A Responder for one step, run in chunks by `serve_until`."""

    def __init__(self, sock: socket.socket, *, peer: tuple[str, int], token: int,
                 command: int, size_bytes: int, sink: bool, busy_poll: bool = False,
                 batch: int | None = None, seq_limit: int = (1 << 64) - 1,
                 rate_cap: tuple[float, float] | None = None, gso: str = "off",
                 flows: int = 1, bins: tuple[float, float] | None = None) -> None:
        prefix = b"" if sink else wire.command_prefix(command)
        max_rate_pps, burst = rate_cap or (0.0, 0.0)
        reply = b"" if sink else wire.reply_payload(command, size_bytes)
        self.sink = sink
        self.bins = bins  # (bin_phase, bin_packets): count requests per interval
        bin_phase, bin_packets = bins or (0.0, 0.0)
        # The socket may be shared across steps: each step sets GRO its way.
        self.gro = set_gro(sock, gso != "off")
        gso_ok, _ = udp_offload_support()
        segments = (gso_segments_for(wire.HEADER_SIZE + len(reply))
                    if gso != "off" and gso_ok and not sink else 0)
        self.engine = loops.Responder(
            sock.fileno(), peer=pack_sockaddr(peer[0], peer[1]), token=token, command=command,
            sink=sink, max_size=max(size_bytes, wire.HEADER_SIZE), prefix=prefix, reply=reply,
            busy_poll=busy_poll, batch=batch or responder_batch(size_bytes, gro=self.gro,
                                                                  flows=flows),
            window_bits=_WINDOW_BITS, seq_limit=seq_limit, max_rate_pps=max_rate_pps,
            burst=burst, gro=self.gro, gso_segments=segments, bin_phase=bin_phase,
            bin_packets=bin_packets)

    def serve_until(self, until_ns: int, stop: threading.Event | None = None) -> None:
        chunk_ns = int(CHUNK_S * 1e9)
        while True:
            now = monotonic_ns()
            if now >= until_ns or (stop is not None and stop.is_set()):
                return
            check_rc(self.engine.run(min(until_ns, now + chunk_ns)), "serving")

    def finish(self, sent_packets: int) -> None:
        self.engine.finish(sent_packets)

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        """Requests received per bin lo..hi-1 (-1: no longer held); None: no bins."""
        if self.bins is None:
            return None
        return self.engine.bin_counts(lo, hi)

    def counters(self) -> dict[str, object]:
        result: dict[str, object] = dict(_counters(self.engine.counters,
                                                   loops.RESPONDER_COUNTERS))
        result["drops"] = _counters(self.engine.drops, wire.DROP_REASONS)
        result["jitter_us"] = self.engine.jitter_ns / 1000.0 if self.sink else None
        fallback = self.engine.gso_errno
        result["engine"] = {
            "udp_gro": self.gro, "gro_reads": int(self.engine.gro_reads),
            "reply_gso_buffers": int(self.engine.gso_buffers),
            "reply_gso_fallback": errno.errorcode.get(fallback, str(fallback)) if fallback else None,
        }
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
