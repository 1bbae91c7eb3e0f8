"""Control sessions over TCP: the server that answers and the client that drives.

Owns every control socket. One port number serves both the TCP control
channel and the UDP data. The server runs one session at a time (tests of a
path would disturb each other) and tells any other client it is busy. Each
step arms an engine Responder bound to the session's peer address and a
per-step data token, so stray or stale datagrams of another step, session or
host are dropped and counted, never answered.

Invariants:
- Whatever a client does (vanishes, stalls, lies, sends garbage) the server
  cleans up the step and goes back to serving; only Ctrl-C stops it.
- A responder never outlives its step's hard deadline.
- The shared secret never crosses the wire (see protocol.py).
"""
from __future__ import annotations

import enum
import errno
import json
import os
import queue
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pktbench import engine, nic, protocol, wire
from pktbench._version import __version__
from pktbench.address import Target, resolve
from pktbench.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    LocalProtocolError,
    PktbenchError,
    RemoteProtocolError,
)
from pktbench.protocol import Role, StepParams
from pktbench.results import interface_for
from pktbench.step import StepResult
from pktbench.workloads import WORKLOADS, server_buffer_bytes
from pktbench.workloads.base import (
    ArmedStep, ServerArm, TcpStepHandler, UdpResponder, Workload)
from pktbench.workloads.base import Closeable as _Closeable

_C = TypeVar("_C", bound=_Closeable)

CAPABILITIES = ("rr", "blast")
# What a server announces: the workloads, and the mid-step bin counts.
SERVER_CAPABILITIES = (*CAPABILITIES, protocol.FEATURE_STEP_BINS)


_U64 = (1 << 64) - 1


def data_token(session_token: int, step_id: int) -> int:
    """The token a step's datagrams carry: tied to the session and the step,
    so a late datagram of an earlier step can never count in this one."""
    token = (session_token ^ ((step_id + 1) * 0x9E3779B97F4A7C15)) & _U64
    return token or 1


def _send(sock: socket.socket, conn: protocol.ControlConnection, event: protocol.Event) -> None:
    sock.sendall(conn.send(event))


def _receive(sock: socket.socket, conn: protocol.ControlConnection,
             timeout_s: float) -> protocol.Event:
    """The next event from the peer; RemoteProtocolError on EOF or timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        event = conn.next_event()
        if event is protocol.CLOSED:
            raise RemoteProtocolError("peer closed the control connection")
        if event is not protocol.NEED_DATA:
            return event  # type: ignore[return-value]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteProtocolError(f"peer sent nothing for {timeout_s:g} s")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise RemoteProtocolError(f"peer sent nothing for {timeout_s:g} s") from None
        except OSError as exc:
            raise RemoteProtocolError(f"control connection failed: {exc.strerror or exc}") from None
        conn.receive_data(data)


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

# Connections that have not yet become a session or joined a step. Bounded so
# that a crowd of idle or dripping peers costs a fixed amount of memory and
# descriptors; when full, the oldest goes, since a real client finishes its
# handshake within a round trip or two.
PENDING_LIMIT = 64
# A peer must send its hello (or its data preamble) this soon after connecting,
# and answer the challenge this soon after it was sent.
HELLO_TIMEOUT_S = 5.0
AUTH_TIMEOUT_S = 5.0
# A data connection's preamble arriving in pieces is looked at again after
# this long rather than spinning on a readable socket.
_PREAMBLE_RECHECK_S = 0.01
# Hostile-peer events are logged at most once a second, with a count.
_LOG_INTERVAL_S = 1.0
_LOOPBACK_BINDS = ("127.", "::1", "localhost")
# What one step may make the server allocate for its buffers (--max-step-memory):
# a 128-flow step of 1,472-byte datagrams takes 44 MiB (82 MiB with GRO), of
# 65,507-byte ones 145 MiB.
DEFAULT_STEP_BUFFER_BYTES = 256 << 20


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "0.0.0.0"
    port: int = wire.DEFAULT_PORT
    secret: bytes | None = None
    max_rate_pps: float | None = None
    max_duration_s: float | None = None
    once: bool = False
    idle_timeout_s: float = 60.0  # between steps, a silent client is dropped after this
    cpus: tuple[int, ...] = ()  # multi-flow steps pin their responder threads here, round-robin
    max_step_buffer_bytes: int = DEFAULT_STEP_BUFFER_BYTES
    stats_file: str | None = None  # the counters as JSON, rewritten after every session


@dataclass
class ServerStats:
    sessions: int = 0
    steps: int = 0
    busy_refusals: int = 0
    auth_failures: int = 0
    refused_steps: int = 0
    protocol_errors: int = 0
    unsolicited_datagrams: int = 0
    rejected_data_connections: int = 0
    handshake_timeouts: int = 0  # no hello, or no answer to the challenge, in time
    evicted_connections: int = 0  # the oldest pending connection, closed to admit a new one
    refused_connections: int = 0  # the host refused a descriptor or a thread for it
    between_steps_rcvbuf_drops: int = 0  # the data socket's kernel drops while no step ran
    step_deadlines: int = 0  # steps ended by the server's deadline: no StepStop in time
    refused_queries: int = 0  # ProgressRequests for a step that counts no bins
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(wire.DROP_REASONS, 0))

    def summary(self) -> str:
        """Every counter, in words: the per-session log line, SIGUSR1's line."""
        by_reason = ", ".join(f"{reason} {count}" for reason, count in self.drops.items()
                              if count)
        return (f"{self.sessions} sessions, {self.steps} steps, {self.refused_steps} refused "
                f"steps, {self.step_deadlines} ended at their deadline, "
                f"{self.refused_queries} refused progress queries, {self.busy_refusals} "
                f"busy, {self.auth_failures} auth failures, {self.protocol_errors} protocol "
                f"errors, {self.handshake_timeouts} handshake timeouts, "
                f"{self.evicted_connections} evicted, {self.refused_connections} refused "
                f"for resources, {self.rejected_data_connections} rejected data connections, "
                f"drops {sum(self.drops.values())}" + (f" ({by_reason})" if by_reason else "")
                + f"; between steps: {self.unsolicited_datagrams} unsolicited datagrams, "
                f"{self.between_steps_rcvbuf_drops} receive-buffer drops")

    def to_dict(self) -> dict[str, Any]:
        """Every counter, as `--stats-file` holds them (docs/security.md)."""
        return {
            "sessions": self.sessions, "steps": self.steps, "refused_steps": self.refused_steps,
            "step_deadlines": self.step_deadlines, "busy_refusals": self.busy_refusals,
            "refused_queries": self.refused_queries,
            "auth_failures": self.auth_failures, "protocol_errors": self.protocol_errors,
            "handshake_timeouts": self.handshake_timeouts,
            "evicted_connections": self.evicted_connections,
            "refused_connections": self.refused_connections,
            "rejected_data_connections": self.rejected_data_connections,
            "drops": dict(self.drops),
            "between_steps": {"unsolicited_datagrams": self.unsolicited_datagrams,
                              "rcvbuf_drops": self.between_steps_rcvbuf_drops},
        }


class _Phase(enum.Enum):
    FIRST = "first bytes"  # control or data: not known yet
    HELLO = "hello"
    AUTH = "challenge answer"
    READY = "between steps"
    STEP = "step running"
    FINISHING = "step finishing"
    CLOSING = "closing"


_PENDING_PHASES = frozenset({_Phase.FIRST, _Phase.HELLO, _Phase.AUTH})
_UNREAD_PHASES = frozenset({_Phase.FINISHING})


@dataclass(eq=False)
class _Peer:
    """One accepted connection, as the event loop tracks it."""

    sock: socket.socket
    address: tuple[Any, ...]
    accepted: float
    deadline: float
    wait_s: float = HELLO_TIMEOUT_S  # the span `deadline` was set for
    phase: _Phase = _Phase.FIRST
    cc: protocol.ControlConnection = field(
        default_factory=lambda: protocol.ControlConnection(Role.SERVER))
    out: bytearray = field(default_factory=bytearray)
    close_after_write: bool = False
    challenge: str | None = None
    recheck_at: float | None = None  # a partial data preamble: look again then
    closed: bool = False

    @property
    def ip(self) -> str:
        return str(self.address[0])


@dataclass(eq=False)
class _Session:
    peer: _Peer
    token: int
    started: float
    steps_before: int
    step_id: int = 0
    live: _LiveStep | None = None


class _LiveStep:
    """A step armed on the server: its responder runs in engine threads while
    the event loop waits for the client's StepStop.

    `finish` may block (a blast step's drain, joining the responder) and so
    runs off the event loop; `abort` stops everything without a result.
    """

    def __init__(self, step: StepParams, step_id: int) -> None:
        self.step = step
        self.step_id = step_id

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        """Received requests per bin (see protocol.ProgressRequest); None: no bins."""
        return None


class _TcpLiveStep(_LiveStep):
    def __init__(self, step: StepParams, step_id: int, handler: TcpStepHandler) -> None:
        super().__init__(step, step_id)
        self.handler = handler

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        return self.handler.finish(sender)

    def abort(self) -> None:
        self.finish({})


class _UdpLiveStep(_LiveStep):
    def __init__(self, server: Server, step: StepParams, step_id: int,
                 loop: UdpResponder, peer_ip: str) -> None:
        super().__init__(step, step_id)
        self._server = server
        self._loop = loop
        self._stop = threading.Event()
        self._cpu_s = 0.0
        self._host_drops_before = engine.udp_rcvbuf_errors()
        self._reassembly_before = engine.ip_reassembly_failures()
        # The shared data socket was just drained; its kernel drop count from
        # here on is this step's (multi-flow steps have fresh sockets).
        shared = server._udp if not loop.own_sockets else None  # noqa: SLF001
        self._socket_drops_before = engine.socket_drops(shared) if shared is not None else None
        self._interface = interface_for(peer_ip)
        self._nic_before = nic.read_counters(self._interface)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="responder")
        self._started = 0.0
        # Armed now: the responder stops answering at this deadline, and a
        # drain never runs past it, whatever the step asked for.
        self._deadline_ns = engine.monotonic_ns() + int(step.hard_limit_s * 1e9)

    def start(self) -> None:
        """Start the responder; RuntimeError when the host refuses a thread."""
        self._thread.start()
        self._started = time.monotonic()

    def _serve(self) -> None:
        before = engine.thread_cpu_s()
        try:
            self._loop.serve_until(self._deadline_ns, self._stop)
        finally:
            self._cpu_s = engine.thread_cpu_s() - before

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._loop.close()

    def abort(self) -> None:
        self._halt()

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        # From the loop thread while the responder runs: the bins asked for
        # closed a reply timeout ago, so their counts no longer move.
        return self._loop.bin_counts(lo, hi)

    def _final_bins(self, sent: int) -> dict[str, Any] | None:
        """The step's last bins (as many as a Progress holds), so the client
        gets the intervals that close at its change-over."""
        if self.step.bins is None or not sent:
            return None
        end = self.step.bin_of(sent - 1) + 1
        start = max(0, end - protocol.MAX_PROGRESS_BINS)
        counts = self._loop.bin_counts(start, end)
        return {"start": start, "counts": counts} if counts is not None else None

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        loop = self._loop
        try:
            sent = sender.get("sent")
            if not isinstance(sent, int) or isinstance(sent, bool) or sent < 0:
                raise RemoteProtocolError("StepStop without a valid 'sent' count")
            _check_plausible("sent", sent, self.step)
            figures = loop.check_stop(sender)
            if isinstance(figures, list):  # per-flow counts of a multi-flow step
                _check_plausible("sum of sent_per_stream", sum(figures), self.step)
            if self.step.workload == "blast":
                # stragglers still in flight count; then the window closes
                left_s = (self._deadline_ns - engine.monotonic_ns()) / 1e9
                self._stop.wait(max(0.0, min(self.step.drain_s, left_s)))
        finally:
            self._halt()
        socket_drops = (engine.socket_drops(self._server._udp)  # noqa: SLF001
                        if self._socket_drops_before is not None
                        and self._server._udp is not None else None)  # noqa: SLF001
        elapsed = time.monotonic() - self._started
        loop.finish(figures)
        cpu_s = loop.cpu_s if loop.cpu_s is not None else self._cpu_s
        receiver = loop.counters()
        drops: dict[str, int] = receiver["drops"]  # type: ignore[assignment]
        # SO_RXQ_OVFL counts for the socket's whole life; the step gets the rise.
        rxq_total = int(receiver.pop("rcvbuf_drops"))  # type: ignore[call-overload]
        server = self._server
        if loop.own_sockets:
            receiver["rcvbuf_errors"] = rxq_total  # fresh sockets: their life is this step
        elif socket_drops is not None and self._socket_drops_before is not None:
            receiver["rcvbuf_errors"] = socket_drops - self._socket_drops_before
            server._drops_mark = socket_drops  # noqa: SLF001
            server._rxq_dropped = max(rxq_total, server._rxq_dropped)  # noqa: SLF001
        else:
            receiver["rcvbuf_errors"] = max(rxq_total - server._rxq_dropped, 0)  # noqa: SLF001
            server._rxq_dropped = max(rxq_total, server._rxq_dropped)  # noqa: SLF001
        reassembly = engine.ip_reassembly_failures()
        receiver["ip_reassembly"] = {name: reassembly[name] - self._reassembly_before[name]
                                     for name in reassembly}
        receiver["host_rcvbuf_errors"] = engine.udp_rcvbuf_errors() - self._host_drops_before
        receiver["interface"] = self._interface
        receiver["nic"] = nic.deltas(self._nic_before, nic.read_counters(self._interface))
        receiver["received_packets"] = receiver["received"]
        receiver["cpu_percent"] = 100.0 * cpu_s / elapsed if elapsed > 0 else 0.0
        receiver["buffers_bytes"] = server.buffers.rcvbuf_bytes if server.buffers else None
        bins = self._final_bins(int(sender["sent"]))
        if bins is not None:
            receiver["bins"] = bins
        for reason, count in drops.items():
            server.stats.drops[reason] += count
        return receiver


def _fitted_result(cc: protocol.ControlConnection, step_id: int,
                   receiver: dict[str, Any]) -> protocol.StepResult:
    """The StepResult, within one control frame: a step of many flows first
    loses its per-flow zero counters and engine details, then its per-flow
    list (the totals stay), rather than its session."""
    result = protocol.StepResult(step_id, receiver)
    streams = receiver.get("streams")
    if cc.fits(result) or not isinstance(streams, list):
        return result
    compact = [{key: value for key, value in stream.items()
                if key != "engine" and value not in (0, None, {})}
               | {"stream_id": stream.get("stream_id"), "client_port": stream.get("client_port")}
               for stream in streams if isinstance(stream, dict)]
    for stream in compact:
        if isinstance(stream.get("drops"), dict):
            stream["drops"] = {k: v for k, v in stream["drops"].items() if v}
    result = protocol.StepResult(step_id, receiver | {"streams": compact,
                                                      "streams_compacted": True})
    if cc.fits(result):
        return result
    return protocol.StepResult(step_id, {k: v for k, v in receiver.items() if k != "streams"}
                               | {"streams_omitted": len(streams)})


def _check_plausible(name: str, count: int, step: StepParams) -> None:
    """Refuse a peer's packet count that the step's rate and length cannot
    reach: it would drive the loss accounting, so it is never trusted."""
    if count > step.max_packets:
        raise RemoteProtocolError(
            f"StepStop {name} {count} is more than this step can send (at most "
            f"{step.max_packets} at {step.rate_pps or protocol.MAX_RATE_PPS:g} pps for "
            f"{step.warmup_s + step.duration_s:g} s)")


def _is_loopback(bind: str) -> bool:
    return bind.startswith(_LOOPBACK_BINDS)


class Server:
    """`pktbench serve`: a control listener plus the UDP data socket.

    One thread runs one selectors loop over the listener and every control
    connection; a live step's responder runs in engine threads beside it.
    selectors rather than asyncio: the loop is a small state machine over
    sans-IO ControlConnections that must also hand raw accepted sockets to
    engine threads, and asyncio would own those sockets and add a second
    scheduler in front of the engine's own threads for no gain.
    """

    capabilities: tuple[str, ...] = SERVER_CAPABILITIES  # what ServerHello announces

    def __init__(self, config: ServerConfig, log: Callable[[str], None] | None = None, *,
                 workloads: Mapping[str, Workload] = WORKLOADS) -> None:
        self.workloads = workloads
        self.config = config
        self.stats = ServerStats()
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._rxq_dropped = 0
        self._drops_mark: int | None = None  # data socket's kernel drops when the last step ended
        self._tcp_step: TcpStepHandler | None = None
        self._session: _Session | None = None
        self._peers: set[_Peer] = set()
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._finished: queue.SimpleQueue[tuple[_Session, int, dict[str, Any] | BaseException]] = (
            queue.SimpleQueue())
        self._finishers: set[threading.Thread] = set()
        self._spare_fd: int | None = None
        self._accept_paused_until = 0.0
        self._last_note = 0.0
        self._notes_held = 0
        self._watch: socket.socket | None = None
        self.buffers: engine.BufferSizes | None = None
        self._stats_asked = threading.Event()
        self._started_wall = time.time()

    # -- set-up ------------------------------------------------------------
    def __enter__(self) -> Server:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def in_session(self) -> bool:
        """Whether a client holds the server now."""
        return self._session is not None

    def open(self) -> None:
        family = socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET
        for _ in range(20):
            listener = socket.socket(family, socket.SOCK_STREAM)
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    for sock in (listener, udp):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.config.bind, self.config.port))
                port = listener.getsockname()[1]
                # Multi-flow steps bind one connected socket per flow to this port.
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    udp.bind((self.config.bind, port))
                except OSError:
                    if self.config.port == 0:  # the kernel's TCP pick is taken for UDP: pick again
                        listener.close()
                        udp.close()
                        continue
                    raise
                # The kernel caps the backlog at net.core.somaxconn; asking for
                # SOMAXCONN takes whatever the host allows, so a burst of
                # connects queues instead of being dropped into SYN retries.
                listener.listen(socket.SOMAXCONN)
                listener.setblocking(False)
            except OSError as exc:
                listener.close()
                udp.close()
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {self.config.port} on {self.config.bind} is in use "
                                      "(TCP or UDP); choose another with --port") from None
                raise ConfigError(f"cannot listen on {self.config.bind}:{self.config.port}: "
                                  f"{exc.strerror or exc}") from None
            self._listener, self._udp = listener, udp
            self.buffers = engine.tune_socket(udp)
            self._drops_mark = engine.socket_drops(udp)
            self._spare_fd = _open_spare_fd()
            engine.keep_buffers_unpooled()
            self.write_stats()
            if not self.config.secret and not _is_loopback(self.config.bind):
                self._log(f"warning: listening on {self.config.bind} without a token: anyone "
                          "who reaches this port can run tests through it (--token)")
            return
        raise ConfigError("could not find a free port for both TCP and UDP; give one with --port")

    def close(self) -> None:
        self.stop()
        for sock in (self._listener, self._udp):
            if sock is not None:
                sock.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        self._wake_r.close()
        self._wake_w.close()

    def request_stats(self) -> None:
        """Log the counters and rewrite the stats file soon (safe from a
        signal handler or any thread: the loop does the work)."""
        self._stats_asked.set()
        self._wake()

    def write_stats(self) -> None:
        """The counters to `stats_file`, whole or not at all (write, then rename)."""
        path = self.config.stats_file
        if path is None:
            return
        document = {"pid": os.getpid(), "started": round(self._started_wall, 3),
                    "written": round(time.time(), 3), "in_session": self.in_session,
                    "limits": {"max_rate_pps": self.config.max_rate_pps,
                               "max_duration_s": self.config.max_duration_s,
                               "max_step_buffer_bytes": self.config.max_step_buffer_bytes,
                               "step_slack_s": protocol.STEP_SLACK_S},
                    **self.stats.to_dict()}
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle, sort_keys=True)
                handle.write("\n")
            os.replace(temporary, path)
        except OSError as exc:
            self._note(f"cannot write the stats file {path}: {exc.strerror or exc}")
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def stop(self) -> None:
        """Ask serve_forever to return (from any thread)."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full (a wake-up is already pending) or closed

    # -- the event loop ----------------------------------------------------
    def serve_forever(self, *, until_eof: socket.socket | None = None) -> None:
        """Serve until stop() (or after one session with `once`, or when
        `until_eof` reaches end of file: a parent that went away)."""
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            self._selector = selector
            selector.register(self._listener, selectors.EVENT_READ, "listener")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            if until_eof is not None:
                until_eof.setblocking(False)
                selector.register(until_eof, selectors.EVENT_READ, "watch")
            try:
                while not self._stop.is_set():
                    self._turn(selector)
            finally:
                self._shutdown()
                self._selector = None
                self.write_stats()

    def _turn(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            assert self._listener is not None
            selector.register(self._listener, selectors.EVENT_READ, "listener")
        wait = 1.0
        for peer in self._peers:
            wait = min(wait, peer.deadline - now)
            if peer.recheck_at is not None:
                wait = min(wait, peer.recheck_at - now)
        if self._accept_paused_until:
            wait = min(wait, self._accept_paused_until - now)
        if self._stats_asked.is_set():
            self._stats_asked.clear()
            self._log(f"stats: {self.stats.summary()}")
            self.write_stats()
        for key, events in selector.select(max(wait, 0.0)):
            if key.data == "listener":
                self._accept_burst()
            elif key.data == "wake":
                self._drain_wake()
            elif key.data == "watch":
                self._check_watch(key.fileobj)  # type: ignore[arg-type]
            else:
                self._guarded(key.data, events)
        self._collect_finished()
        now = time.monotonic()
        for peer in list(self._peers):
            if peer.closed:
                continue
            if peer.recheck_at is not None and now >= peer.recheck_at:
                peer.recheck_at = None
                self._watch_events(peer)
            if not peer.closed and now >= peer.deadline:
                self._expire(peer)
        if (self.config.once and self.stats.sessions and self._session is None
                and not self._finishers):
            self._stop.set()

    def _guarded(self, peer: _Peer, events: int) -> None:
        """Handle one peer's events; whatever goes wrong ends that peer only."""
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(peer)
            if not peer.closed and events & selectors.EVENT_READ:
                self._readable(peer)
        except RemoteProtocolError as exc:
            self._tell(peer, protocol.Error("bad_request", _reason(exc)[:200]))
            self._fail(peer, f"dropped: {_reason(exc)}")
        except (LocalProtocolError, OSError) as exc:
            self._fail(peer, f"dropped: {_reason(exc)}")
        except Exception as exc:  # the server must survive its own bugs too
            self._fail(peer, f"internal error: {type(exc).__name__}: {exc}")

    def _tell(self, peer: _Peer, error: protocol.Error) -> None:
        """One last Error to a control peer that broke the protocol, so it
        learns why it is dropped; best effort: it never waits on the peer."""
        if peer.closed or peer.phase is _Phase.FIRST:
            return
        try:
            peer.sock.send(bytes(peer.out) + peer.cc.send(error), socket.MSG_DONTWAIT)
        except (LocalProtocolError, OSError):
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _check_watch(self, watch: socket.socket) -> None:
        try:
            if watch.recv(4096):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._stop.set()  # the watched end is gone: whoever started us has left

    # -- accepting ---------------------------------------------------------
    def _accept_burst(self) -> None:
        assert self._listener is not None
        for _ in range(256):  # let other work run between long bursts
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_for_descriptors(exc)
                    continue
                if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(f"refused a connection: {exc.strerror}")
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                self._pause_accepting(f"accept failed: {exc.strerror or exc}")
                return
            self._admit(sock, address)

    def _refuse_for_descriptors(self, exc: OSError) -> None:
        """Out of descriptors: the oldest pending handshake gives its
        descriptor to the newcomer; with none pending, take the waiting
        connection with the spare descriptor and close it at once, so the
        peer learns now and the backlog drains."""
        pending = [p for p in self._peers if p.phase in _PENDING_PHASES]
        if pending:
            oldest = min(pending, key=lambda p: p.accepted)
            self.stats.evicted_connections += 1
            self._note(f"closed {oldest.ip}: out of file descriptors, and it had not "
                       "completed its handshake")
            self._close(oldest)
            return  # the accept loop takes the newcomer with the freed descriptor
        self.stats.refused_connections += 1
        if self._spare_fd is None:
            self._pause_accepting(f"refused a connection: {exc.strerror}")
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
            sock.close()
        except OSError:
            pass
        self._spare_fd = _open_spare_fd()
        self._note(f"refused a connection: {exc.strerror} (the host is out of file descriptors)")

    def _pause_accepting(self, line: str) -> None:
        self.stats.refused_connections += 1
        self._note(line)
        if self._selector is not None and not self._accept_paused_until:
            assert self._listener is not None
            self._selector.unregister(self._listener)
            self._accept_paused_until = time.monotonic() + 0.1

    def _admit(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        pending = [p for p in self._peers if p.phase in _PENDING_PHASES]
        if len(pending) >= PENDING_LIMIT:
            oldest = min(pending, key=lambda p: p.accepted)
            self.stats.evicted_connections += 1
            self._note(f"closed {oldest.ip}: {len(pending)} connections were waiting "
                       "to complete a handshake")
            self._close(oldest)
        sock.setblocking(False)
        now = time.monotonic()
        peer = _Peer(sock, address, accepted=now, deadline=now + HELLO_TIMEOUT_S)
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, peer)
        self._peers.add(peer)

    def _note(self, line: str) -> None:
        """Log a hostile-peer event, at most one line a second."""
        now = time.monotonic()
        if now - self._last_note < _LOG_INTERVAL_S:
            self._notes_held += 1
            return
        held, self._notes_held = self._notes_held, 0
        self._last_note = now
        self._log(line + (f" (and {held} similar events before)" if held else ""))

    # -- reading and writing -----------------------------------------------
    def _readable(self, peer: _Peer) -> None:
        if peer.phase is _Phase.FIRST:
            if not self._sort_first(peer):
                return
        if peer.phase is _Phase.FINISHING:
            return  # nothing is read until the step's result is out
        try:
            data = peer.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        peer.cc.receive_data(data)
        while not peer.closed:
            event = peer.cc.next_event()
            if event is protocol.NEED_DATA:
                return
            if event is protocol.CLOSED:
                self._end_of_stream(peer)
                return
            assert isinstance(event, protocol.Event)
            self._handle(peer, event)
            if peer.phase in _UNREAD_PHASES:
                return  # what follows waits for the step's result

    def _sort_first(self, peer: _Peer) -> bool:
        """Tell a data connection from a control one by its first bytes; True
        when it is a control connection (read on)."""
        try:
            head = peer.sock.recv(wire.DATA_PREAMBLE_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        if not head:
            self._close(peer)  # connected and left: a port probe
            return False
        magic = wire.DATA_MAGIC
        shared = min(len(head), len(magic))
        if head[:shared] != magic[:shared]:
            peer.phase = _Phase.HELLO
            return True
        if len(head) < wire.DATA_PREAMBLE_SIZE:
            # Level-triggered readiness would spin on the partial preamble.
            assert self._selector is not None
            self._selector.unregister(peer.sock)
            peer.recheck_at = time.monotonic() + _PREAMBLE_RECHECK_S
            return False
        self._attach_data(peer, peer.sock.recv(wire.DATA_PREAMBLE_SIZE))
        return False

    def _attach_data(self, peer: _Peer, preamble: bytes) -> None:
        self._forget(peer)
        conn = peer.sock
        try:
            stream_id, token = wire.unpack_data_preamble(preamble)
        except ValueError:
            self.stats.rejected_data_connections += 1
            conn.close()
            return
        handler = self._tcp_step
        if handler is None or handler.token != token or handler.peer_ip != peer.ip:
            self.stats.rejected_data_connections += 1
            conn.close()
            return
        conn.settimeout(5.0)
        try:
            handler.add_connection(conn, stream_id)
        except (RuntimeError, OSError) as exc:  # the host refused the step a thread
            self.stats.rejected_data_connections += 1
            self.stats.refused_connections += 1
            conn.close()
            self._note(f"refused a data connection from {peer.ip}: {exc}")

    def _queue(self, peer: _Peer, event: protocol.Event, *, then_close: bool = False) -> None:
        peer.out += peer.cc.send(event)
        peer.close_after_write = peer.close_after_write or then_close
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        if peer.closed:
            return
        while peer.out:
            try:
                sent = peer.sock.send(peer.out)
            except (BlockingIOError, InterruptedError):
                break
            del peer.out[:sent]
        if not peer.out and peer.close_after_write:
            self._close(peer)
            return
        self._watch_events(peer)

    def _watch_events(self, peer: _Peer) -> None:
        if peer.closed or peer.recheck_at is not None or self._selector is None:
            return
        events = selectors.EVENT_WRITE if peer.out else 0
        if peer.phase is not _Phase.FINISHING and not peer.close_after_write:
            events |= selectors.EVENT_READ
        try:
            key = self._selector.get_key(peer.sock)
        except KeyError:
            if events:
                self._selector.register(peer.sock, events, peer)
            return
        if not events:
            self._selector.unregister(peer.sock)
        elif key.events != events:
            self._selector.modify(peer.sock, events, peer)

    def _forget(self, peer: _Peer) -> None:
        """Stop tracking a peer without closing its socket."""
        peer.closed = True
        self._peers.discard(peer)
        if self._selector is not None:
            try:
                self._selector.unregister(peer.sock)
            except (KeyError, ValueError):
                pass

    def _close(self, peer: _Peer) -> None:
        if peer.closed:
            return
        self._forget(peer)
        peer.sock.close()

    # -- the conversation ----------------------------------------------------
    def _handle(self, peer: _Peer, event: protocol.Event) -> None:
        if isinstance(event, protocol.Hello):
            self._on_hello(peer, event)
        elif isinstance(event, protocol.AuthResponse):
            self._on_auth(peer, event)
        elif isinstance(event, protocol.Bye):
            self._on_bye(peer)
        elif isinstance(event, protocol.StepRequest):
            self._on_step_request(peer, event)
        elif isinstance(event, protocol.StepStop):
            self._on_step_stop(peer, event)
        elif isinstance(event, protocol.ProgressRequest):
            self._on_progress_request(peer, event)
        else:  # the state table admits nothing else from a client
            raise RemoteProtocolError(f"unexpected {type(event).__name__}")

    def _on_hello(self, peer: _Peer, hello: protocol.Hello) -> None:
        mismatch = protocol.check_version(hello)
        if mismatch is not None:
            self.stats.protocol_errors += 1
            self._queue(peer, mismatch, then_close=True)
            self._log(f"refused {peer.ip}: {mismatch.message}")
            return
        if self.config.secret:
            peer.challenge = protocol.make_challenge()
            peer.phase = _Phase.AUTH
            _wait(peer, AUTH_TIMEOUT_S)
            self._queue(peer, protocol.ServerHello(capabilities=self.capabilities,
                                                   server=f"pktbench {__version__}",
                                                   challenge_hex=peer.challenge))
            return
        if self._refuse_if_busy(peer):
            return
        self._queue(peer, protocol.ServerHello(capabilities=self.capabilities,
                                               server=f"pktbench {__version__}"))
        self._begin_session(peer)

    def _on_auth(self, peer: _Peer, answer: protocol.AuthResponse) -> None:
        assert self.config.secret is not None and peer.challenge is not None
        if not protocol.verify_auth(self.config.secret, peer.challenge, answer.mac_hex):
            self.stats.auth_failures += 1
            self._queue(peer, protocol.Error("auth_failed", "wrong shared secret"),
                        then_close=True)
            self._log(f"refused {peer.ip}: auth failed (wrong shared secret)")
            return
        if self._refuse_if_busy(peer):
            return
        self._begin_session(peer)

    def _refuse_if_busy(self, peer: _Peer) -> bool:
        """Only a peer that has said hello and proved the secret learns the
        server is busy, and only then may it take the server."""
        if self._session is None:
            return False
        self.stats.busy_refusals += 1
        self._queue(peer, protocol.Error("busy", "another client is running a test on this "
                                                 "server; try again when it is done"),
                    then_close=True)
        self._log(f"refused {peer.ip}: busy")
        return True

    def _begin_session(self, peer: _Peer) -> None:
        self.stats.sessions += 1
        session_token = protocol.make_session_token()
        self._session = _Session(peer, session_token, started=time.monotonic(),
                                 steps_before=self.stats.steps)
        peer.phase = _Phase.READY
        _wait(peer, self.config.idle_timeout_s)
        assert self._udp is not None
        self._queue(peer, protocol.Welcome(session_token=session_token,
                                           data_port=self._udp.getsockname()[1]))

    def _session_of(self, peer: _Peer) -> _Session:
        session = self._session
        if session is None or session.peer is not peer:
            raise LocalProtocolError("event for a connection that holds no session")
        return session

    def _on_bye(self, peer: _Peer) -> None:
        if peer.phase is _Phase.AUTH:  # a client without the secret leaves
            self._queue(peer, protocol.Goodbye(), then_close=True)
            return
        session = self._session_of(peer)
        outcome = "ok"
        if session.live is not None:
            session.live.abort()
            session.live = None
            self.stats.protocol_errors += 1
            outcome = "dropped: client left mid-step"
        # The server is free before the client reads Goodbye, so a client
        # that reconnects at once is never told it is busy.
        self._end_session(session, outcome)
        self._queue(peer, protocol.Goodbye(), then_close=True)

    def _on_step_request(self, peer: _Peer, event: protocol.StepRequest) -> None:
        session = self._session_of(peer)
        params = dict(event.params)
        client_port = params.pop("client_port", None)
        client_ports = params.pop("client_ports", None)
        flows: tuple[int, ...] = ()
        try:
            step = protocol.validate_step_params(
                params, max_rate_pps=self.config.max_rate_pps,
                max_duration_s=self.config.max_duration_s)
            workload = self.workloads.get(step.workload)
            udp = workload is not None and workload.transport == "udp"
            if udp and (not isinstance(client_port, int) or not 1 <= client_port <= 65535):
                raise ConfigError("step params: client_port must be the client's UDP port")
            if udp and (step.streams > 1 or client_ports is not None):
                flows = protocol.validate_client_ports(client_ports, step.streams)
            if workload is None:
                raise ConfigError(f"step params: workload {step.workload} is not served here")
            self._check_budget(step)
            token = data_token(session.token, session.step_id)
            live = self._arm(peer, workload, step, session.step_id, token, client_port, flows)
        except ConfigError as exc:
            self.stats.refused_steps += 1
            self._queue(peer, protocol.Error("refused", str(exc)))
            return
        session.live = live
        peer.phase = _Phase.STEP
        _wait(peer, step.hard_limit_s)
        self._queue(peer, protocol.StepReady(session.step_id))

    def _on_progress_request(self, peer: _Peer, event: protocol.ProgressRequest) -> None:
        # The table admits it only mid-step, and only one at a time; the
        # protocol bounds its range, so an answer is one small frame.
        live = self._session_of(peer).live
        assert live is not None
        counts = live.bin_counts(event.bin_start, event.bin_end)
        if counts is None:
            self.stats.refused_queries += 1
            self._queue(peer, protocol.Error(
                "refused", "this step counts no bins: ask for bin_phase and bin_packets "
                           "in its StepRequest (single-stream rr only)"))
            return
        self._queue(peer, protocol.Progress(live.step_id, event.bin_start, tuple(counts)))

    def _check_budget(self, step: StepParams) -> None:
        need, budget = server_buffer_bytes(step), self.config.max_step_buffer_bytes
        if need > budget:
            what = (f"{step.connections} connections" if step.workload == "rr-tcp"
                    else f"{step.streams} flows")
            raise ConfigError(
                f"step params: this step needs {need / 2**20:.1f} MiB of server buffers "
                f"({what} of {step.size_bytes} bytes), over this server's budget of "
                f"{budget / 2**20:.1f} MiB per step (--max-step-memory); use fewer flows "
                "or smaller datagrams")

    def _arm(self, peer: _Peer, workload: Workload, step: StepParams, step_id: int,
             token: int, client_port: object, flows: tuple[int, ...]) -> _LiveStep:
        """Start a step's receiving end; ConfigError when it cannot run now."""
        try:
            local_ip = str(peer.sock.getsockname()[0])
            if workload.transport == "tcp":
                handler = workload.server_handler(ServerArm(
                    step, token, peer.ip, local_ip, None, (), self.config.cpus))
                assert isinstance(handler, TcpStepHandler)
                self._tcp_step = handler
                return _TcpLiveStep(step, step_id, handler)
            assert self._udp is not None and isinstance(client_port, int)
            self._flush_udp()
            # a multi-flow step has one connected socket and responder per client flow
            ports = flows if len(flows) > 1 else (client_port,)
            responder = workload.server_handler(ServerArm(
                step, token, peer.ip, local_ip, self._udp,
                tuple(self._peer_for_socket((peer.ip, port)) for port in ports),
                self.config.cpus))
            assert isinstance(responder, UdpResponder)
            live = _UdpLiveStep(self, step, step_id, responder, peer.ip)
            try:
                live.start()
            except RuntimeError:
                responder.close()  # per-flow sockets go with the refused step
                raise
            return live
        except RuntimeError as exc:  # the host refused a thread
            self._tcp_step = None
            self.stats.refused_connections += 1
            self._note(f"refused a step from {peer.ip}: {exc}")
            raise ConfigError("the server cannot start a thread now (host limit); "
                              "try again later") from None

    def _on_step_stop(self, peer: _Peer, event: protocol.StepStop) -> None:
        session = self._session_of(peer)
        live = session.live
        assert live is not None
        self._tcp_step = None  # no data connection joins a finishing step
        peer.phase = _Phase.FINISHING
        _wait(peer, min(live.step.drain_s, live.step.hard_limit_s) + 30.0)
        self._watch_events(peer)
        sender = dict(event.sender)

        def finish() -> None:
            outcome: dict[str, Any] | BaseException
            try:
                outcome = live.finish(sender)
            except BaseException as exc:  # handed to the loop, which drops the session
                outcome = exc
            self._finished.put((session, live.step_id, outcome))
            self._wake()

        thread = threading.Thread(target=finish, daemon=True, name="step-finish")
        try:
            thread.start()
        except RuntimeError:  # no thread to spare: finish here, the loop waits
            finish()
            return
        self._finishers.add(thread)

    def _collect_finished(self) -> None:
        for thread in [t for t in self._finishers if not t.is_alive()]:
            self._finishers.discard(thread)
        while True:
            try:
                session, step_id, outcome = self._finished.get_nowait()
            except queue.Empty:
                return
            session.live = None  # the step's buffers go with it
            engine.release_memory()
            peer = session.peer
            if self._session is not session:
                continue
            if isinstance(outcome, BaseException):
                self._fail(peer, f"dropped: {_reason(outcome)}")
                continue
            self.stats.steps += 1
            session.step_id = step_id + 1
            peer.phase = _Phase.READY
            _wait(peer, self.config.idle_timeout_s)
            try:
                self._queue(peer, _fitted_result(peer.cc, step_id, outcome))
            except (OSError, LocalProtocolError) as exc:
                self._fail(peer, f"dropped: {_reason(exc)}")

    def _end_of_stream(self, peer: _Peer) -> None:
        if self._session is not None and self._session.peer is peer:
            self._end_session(self._session, "ok")
        self._close(peer)

    def _expire(self, peer: _Peer) -> None:
        if peer.phase in _PENDING_PHASES:
            self.stats.handshake_timeouts += 1
            self._note(f"closed {peer.ip}: no {peer.phase.value} within {peer.wait_s:g} s")
            self._close(peer)
        elif peer.phase is _Phase.CLOSING or peer.close_after_write:
            self._close(peer)  # a peer that does not read its last message
        elif peer.phase is _Phase.FINISHING:
            _wait(peer, 1.0)  # the finisher owns the step, and its joins are bounded
        elif peer.phase is _Phase.STEP:
            self.stats.step_deadlines += 1
            self._fail(peer, f"dropped: no StepStop by the step's deadline ({peer.wait_s:.1f} s: "
                             f"its schedule + 1 % + {protocol.STEP_SLACK_S:g} s)")
        else:
            self._fail(peer, f"dropped: peer sent nothing for {peer.wait_s:g} s")

    def _fail(self, peer: _Peer, outcome: str) -> None:
        """End a peer on an error: a session is logged, a handshake counted."""
        session = self._session
        if session is not None and session.peer is peer:
            if session.live is not None and peer.phase is _Phase.FINISHING:
                # The finisher still owns the step; the loop ends the session
                # when the result comes back.
                return
            if session.live is not None:
                session.live.abort()
                session.live = None
            self.stats.protocol_errors += 1
            self._end_session(session, outcome)
        elif peer.phase in _PENDING_PHASES:
            self.stats.protocol_errors += 1
            self._log(f"refused {peer.ip}: {outcome}")
        self._close(peer)

    def _end_session(self, session: _Session, outcome: str) -> None:
        self._tcp_step = None
        self._session = None
        if session.live is None:
            engine.release_memory()  # an aborted step's buffers are gone by now
        session.peer.phase = _Phase.CLOSING
        _wait(session.peer, 2.0)
        self._log(f"session {session.peer.ip}: {self.stats.steps - session.steps_before} steps "
                  f"in {time.monotonic() - session.started:.1f} s, {outcome}; server: "
                  f"{self.stats.summary()}")
        self.write_stats()

    def _shutdown(self) -> None:
        session = self._session
        if session is not None:
            for thread in list(self._finishers):
                thread.join(timeout=10)
            if session.live is not None:
                session.live.abort()
                session.live = None
            self._end_session(session, "dropped: server stopping")
        for peer in list(self._peers):
            self._close(peer)

    # -- UDP data socket ---------------------------------------------------
    def _flush_udp(self) -> None:
        """Drop whatever arrived while no step was armed, counting it."""
        assert self._udp is not None
        while True:
            try:
                self._udp.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. a queued ICMP error from an earlier step
            self.stats.unsolicited_datagrams += 1
        drops = engine.socket_drops(self._udp)
        if drops is not None and self._drops_mark is not None:
            self.stats.between_steps_rcvbuf_drops += drops - self._drops_mark
        self._drops_mark = drops

    def _peer_for_socket(self, peer: tuple[str, int]) -> tuple[str, int]:
        assert self._udp is not None
        if self._udp.family == socket.AF_INET6 and ":" not in peer[0]:
            return ("::ffff:" + peer[0], peer[1])
        return peer


def _wait(peer: _Peer, seconds: float) -> None:
    peer.wait_s = seconds
    peer.deadline = time.monotonic() + seconds


def _open_spare_fd() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, PktbenchError):
        return f"control connection failed: {exc.strerror or exc}"
    return str(exc)


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

class Client:
    """One control session to a server; runs steps and returns step dicts."""

    def __init__(self, target: Target, *, secret: bytes | None = None,
                 connect_timeout_s: float = 5.0, buffer_bytes: int = engine.DEFAULT_BUFFER_BYTES,
                 worker_cpus: tuple[int, ...] = ()) -> None:
        self.target = target
        self.worker_cpus = worker_cpus  # CPUs of multi-flow steps' sender processes
        self._kept: dict[str, _Closeable] = {}  # what a workload keeps for the session
        self.secret = secret
        self.connect_timeout_s = connect_timeout_s
        self.buffer_bytes = buffer_bytes
        self._control: socket.socket | None = None
        self._data: socket.socket | None = None
        self._cc = protocol.ControlConnection(Role.CLIENT)
        self._session_token = 0
        self._step_id = 0
        self.server_name = ""
        self.server_capabilities: tuple[str, ...] = ()
        self.buffers: engine.BufferSizes | None = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        family, address = resolve(self.target)
        control = socket.socket(family, socket.SOCK_STREAM)
        control.settimeout(self.connect_timeout_s)
        where = str(self.target)
        try:
            control.connect(address)
        except ConnectionRefusedError:
            control.close()
            raise ConnectError(f"connection refused by {where}: is `pktbench serve` running on "
                               f"{where}?") from None
        except socket.timeout:
            control.close()
            raise ConnectError(f"no answer from {where} within {self.connect_timeout_s:g} s: "
                               "host unreachable or a firewall drops the port") from None
        except OSError as exc:
            control.close()
            raise ConnectError(f"cannot reach {where}: {exc.strerror or exc}") from None
        control.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._control = control
        try:
            self._handshake(address, family)
        except BaseException:
            self.close()
            raise

    def _handshake(self, address: tuple[str, int], family: int) -> None:
        assert self._control is not None
        cc = self._cc
        _send(self._control, cc, protocol.Hello(capabilities=CAPABILITIES,
                                                client=f"pktbench {__version__}"))
        event = self._expect((protocol.ServerHello,), 10.0)
        assert isinstance(event, protocol.ServerHello)
        self.server_name = event.server
        self.server_capabilities = tuple(event.capabilities)
        if event.challenge_hex is not None:
            if not self.secret:
                _send(self._control, cc, protocol.Bye())
                raise AuthError(f"{self.target} requires a shared secret: pass --token or "
                                "--token-file")
            _send(self._control, cc, protocol.AuthResponse(
                protocol.auth_mac(self.secret, event.challenge_hex)))
        welcome = self._expect((protocol.Welcome,), 10.0)
        assert isinstance(welcome, protocol.Welcome)
        self._session_token = welcome.session_token
        data = socket.socket(family, socket.SOCK_DGRAM)
        self.buffers = engine.tune_socket(data, self.buffer_bytes)
        data.connect((address[0], welcome.data_port))
        self._data = data

    def _expect(self, kinds: tuple[type[protocol.Event], ...], timeout_s: float
                ) -> protocol.Event:
        assert self._control is not None
        event = _receive(self._control, self._cc, timeout_s)
        if isinstance(event, protocol.Error):
            raise event.to_exception()
        if not isinstance(event, kinds):
            raise RemoteProtocolError(f"server sent {type(event).__name__}, expected "
                                      f"{' or '.join(k.__name__ for k in kinds)}")
        return event

    def _flush_data(self) -> None:
        assert self._data is not None
        while True:
            try:
                self._data.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a queued ICMP error from an earlier step; keep draining

    @property
    def server_address(self) -> tuple[str, int]:
        """(address, port) of the server's data port."""
        assert self._data is not None
        host, port = self._data.getpeername()[:2]
        return str(host), int(port)

    @property
    def data_socket(self) -> socket.socket:
        """The connected UDP socket every UDP step of this session uses."""
        assert self._data is not None
        return self._data

    def begin_step(self, params: StepParams, client_ports: list[int] | None = None
                   ) -> ArmedStep:
        """Ask the server to arm a step; returns once it is ready for data.

        The caller then sends the step's traffic (with `ArmedStep.token` in
        every header, or in every TCP data preamble) and calls `end_step`.
        `client_ports`: a multi-flow UDP step's source ports, one per stream.
        """
        assert self._control is not None and self._data is not None
        request = params.to_dict()
        request["client_port"] = self._data.getsockname()[1]
        if client_ports is not None:
            request["client_ports"] = list(client_ports)
        self._flush_data()
        _send(self._control, self._cc, protocol.StepRequest(request))
        ready = self._expect((protocol.StepReady,), 10.0)
        assert isinstance(ready, protocol.StepReady)
        return ArmedStep(ready.step_id, data_token(self._session_token, ready.step_id), params)

    def end_step(self, sender: dict[str, Any], timeout_s: float = 15.0) -> dict[str, Any]:
        """Tell the server sending has stopped; returns the receiver's counters."""
        assert self._control is not None
        _send(self._control, self._cc, protocol.StepStop(sender))
        result = self._expect((protocol.StepResult,), timeout_s)
        assert isinstance(result, protocol.StepResult)
        return dict(result.receiver)

    def request_progress(self, bin_start: int, bin_end: int) -> None:
        """Ask mid-step for bins bin_start..bin_end-1 (a server with the
        step_bins feature, a step that asked for bins); the answer comes by
        `poll` or `wait_progress`, and nothing else may be sent before it."""
        assert self._control is not None
        _send(self._control, self._cc, protocol.ProgressRequest(bin_start, bin_end))

    @property
    def progress_pending(self) -> bool:
        """A ProgressRequest is still unanswered."""
        return self._cc.state is protocol.State.STEP_PROGRESS

    def poll(self) -> protocol.Event | None:
        """The server's next message if it has fully arrived, else None; never blocks.

        Raises:
            RemoteProtocolError: the server closed the connection or broke the protocol.
        """
        assert self._control is not None
        while True:
            event = self._cc.next_event()
            if event is protocol.CLOSED:
                raise RemoteProtocolError("control connection closed by the server")
            if event is not protocol.NEED_DATA:
                assert isinstance(event, protocol.Event)
                return event
            try:
                # A socket with a timeout waits for data inside recv whatever
                # the flags, so readiness is asked first, without waiting.
                readable, _, _ = select.select([self._control], [], [], 0)
                if not readable:
                    return None
                data = self._control.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise RemoteProtocolError(f"control connection failed: "
                                          f"{exc.strerror or exc}") from None
            self._cc.receive_data(data)

    def wait_progress(self, timeout_s: float) -> protocol.Progress:
        """The answer to the outstanding ProgressRequest, waiting up to `timeout_s`.

        Raises:
            ServerRefusedError: the step counts no bins (the step goes on).
            RemoteProtocolError: no answer in time, or the session is gone.
        """
        event = self._expect((protocol.Progress,), timeout_s)
        assert isinstance(event, protocol.Progress)
        return event

    def abandon_step(self) -> None:
        """Leave mid-step so the server disarms at once, not at its deadline."""
        assert self._control is not None
        try:
            _send(self._control, self._cc, protocol.Bye())
        except (PktbenchError, OSError):
            pass

    def reuse(self, key: str, fits: Callable[[Any], bool], make: Callable[[], _C]) -> _C:
        """Something a workload keeps for this session (a multi-flow step's
        worker pool): the one kept under `key` if `fits` accepts it, else a
        new one from `make` (the old one closed). The session closes it."""
        kept = self._kept.get(key)
        if kept is not None and fits(kept):
            return kept  # type: ignore[return-value]
        if kept is not None:
            del self._kept[key]
            kept.close()
        made = make()
        self._kept[key] = made
        return made

    def run_step(self, params: StepParams, *, index: int = 0, repeat: int = 0,
                 stop: threading.Event | None = None) -> StepResult:
        """Run one step on the server and return its step result."""
        workload = WORKLOADS.get(params.workload)
        if workload is None:
            raise ConfigError(f"workload {params.workload} is not available")
        return workload.run_client_step(self, params, index=index, repeat=repeat, stop=stop)

    def close(self) -> None:
        while self._kept:
            self._kept.popitem()[1].close()
        if self._control is not None:
            try:
                if self._cc.state is protocol.State.READY:
                    _send(self._control, self._cc, protocol.Bye())
                    _receive(self._control, self._cc, 2.0)
            except (PktbenchError, OSError):
                pass
            self._control.close()
            self._control = None
        if self._data is not None:
            self._data.close()
            self._data = None


# --------------------------------------------------------------------------
# The embedded server: both ends on this machine
# --------------------------------------------------------------------------

class LocalServer:
    """A pktbench Server on 127.0.0.1 in a child process, pinned apart from us.

    Sender and receiver share two cores here; on separate CPUs neither
    steals the other's cycles, which is how the reference tools are run.
    The child runs `serve_for_parent` (the library, not the CLI): it hands
    its port back over a socket pair and exits when that socket reaches end
    of file, so the server never outlives this process, however it ends.
    """

    def __init__(self, *, bind: str = "127.0.0.1", pin: bool = True) -> None:
        self.bind = bind
        self.pin = pin
        self.process: subprocess.Popen[bytes] | None = None
        self._link: socket.socket | None = None
        self._our_cpus: set[int] = set()  # given back at stop
        self.port = 0

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def target(self) -> Target:
        return Target(self.bind, self.port)

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        # The child imports the very package we were imported from, not
        # whatever a working directory or PYTHONPATH would put first.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {package_root!r}); "
                "from pktbench.session import serve_for_parent; "
                f"sys.exit(serve_for_parent({theirs.fileno()}, {self.bind!r}))")
        # A file, not a pipe, for the child's stderr: nobody reads it while
        # the child runs, and a full pipe would stall it.
        with tempfile.TemporaryFile() as errors:
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", code], pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
            except OSError as exc:
                ours.close()
                raise ConnectError(f"the embedded server did not start: {exc}") from None
            finally:
                theirs.close()
            self._link = ours
            line = _read_line(ours, timeout_s=30.0)
            if not line.startswith("port "):
                self.stop()
                errors.seek(0)
                said = errors.read().decode("utf-8", "replace").strip().splitlines()
                detail = line.removeprefix("error ") or (said[-1] if said
                                                         else "it exited without a word")
                raise ConnectError(f"the embedded server did not start: {detail}")
        self.port = int(line.split()[1])
        cpus = sorted(os.sched_getaffinity(0))
        if self.pin and len(cpus) >= 2:
            os.sched_setaffinity(self.process.pid, {cpus[-1]})
            os.sched_setaffinity(0, set(cpus[:-1]))
            self._our_cpus = set(cpus)

    def stop(self) -> None:
        if self._our_cpus:
            os.sched_setaffinity(0, self._our_cpus)
            self._our_cpus = set()
        if self._link is not None:
            self._link.close()  # the child's cue to leave
            self._link = None
        if self.process is None:
            return
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _read_line(sock: socket.socket, *, timeout_s: float) -> str:
    """One line from `sock`, "" when it closes or stays silent first."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.decode("utf-8", "replace").strip()


def serve_for_parent(fd: int, bind: str = "127.0.0.1") -> int:
    """Run a quiet Server on `bind` (a free port) for the process holding the
    other end of socket `fd`: write "port N\\n" to it, then serve until
    it closes. Returns the exit status for a child process."""
    import signal

    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = socket.socket(fileno=fd)
    try:
        try:
            server = Server(ServerConfig(bind=bind, port=0), log=lambda line: None)
            server.open()
        except PktbenchError as exc:
            link.sendall(f"error {exc}\n".encode())
            return 1
        with server:
            link.sendall(f"port {server.address[1]}\n".encode())
            server.serve_forever(until_eof=link)
        return 0
    except OSError:
        return 1  # the parent left before we could tell it anything
    finally:
        link.close()
