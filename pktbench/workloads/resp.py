"""TCP request/response in plain RESP (workload "rr-tcp"): both ends.

Owns: the RESP bytes a step sends and expects, the driver that runs the
compiled RespClient (pktbench._engine) through warm-up, the measured window
and the drain in bounded chunks, the step dict of a TCP step, the client
side of an rr-tcp step against `pktbench serve`, and the server's
TcpStepHandler that answers it (the RESP workload of the registry in
pktbench.workloads).

Invariants:
- The RESP command of a step is exactly what a UDP rr request of the same
  size_bytes carries after its header, minus the zero padding (a stream has
  no datagram to fill); a GET reply is the same bulk value. So one profile
  means the same commands over UDP, over TCP and against a real Redis.
- Latency counts from the scheduled send time, waits for a pipeline slot
  included; the client alone decides what was lost (no reply within
  timeout_s, or never sent because no slot freed in time).
- A TCP step dict has the keys of a UDP rr step (workload "rr", so reports
  and the knee finder read it unchanged); sender.transport says "tcp".
- Every loop call is bounded by engine.CHUNK_S; a handler never serves past
  its step's hard deadline and never closes a socket it was not given.

Must not: parse options or print; open control connections (session.py does)
or import pktbench.session.
"""
from __future__ import annotations

import dataclasses
import errno
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from pktbench import engine, errors, histogram, wire
from pktbench.address import resolve
from pktbench.errors import ConfigError, ConnectError, RemoteProtocolError
from pktbench.protocol import StepParams
from pktbench.results import interface_for
from pktbench.step import (
    InterfacePackets, PathFigures, RequestFigures, StepResult, summarize_step)
from pktbench.workloads.bulk import read_tcp_info
from pktbench.workloads.base import (
    ArmedStep, ServerArm, StepClient, TcpStepHandler, Transport, drive_step)

WORKLOAD = "rr-tcp"

# A client whose own sends (not the waits for a pipeline slot) are this late
# at the median could not keep the schedule: the step then says nothing about
# the server and is marked sender-bound, like a UDP sender that fell short.
# The median, because a client that falls behind falls further behind with
# every request, while a loaded machine's preemptions only make a tail.
SENDER_LAG_LIMIT_NS = 1_000_000


@dataclass(frozen=True)
class TcpOptions:
    """How an rr-tcp step spreads its rate: connections x pipeline depth."""

    connections: int = 1
    pipeline: int = 1

    def __post_init__(self) -> None:
        StepParams(workload=WORKLOAD, command="ping", connections=self.connections,
                   pipeline=self.pipeline)  # one set of range checks


def request_bytes(command: str, size_bytes: int) -> bytes:
    """The RESP command of an rr-tcp step (see the module invariants)."""
    return wire.request_payload(wire.COMMANDS[command], size_bytes).rstrip(b"\0")


def reply_bytes(command: str, size_bytes: int) -> bytes:
    """What a Redis-like server answers to request_bytes(command, size_bytes)."""
    return wire.reply_payload(wire.COMMANDS[command], size_bytes)


def get_value(size_bytes: int) -> bytes:
    """The value GET returns for this size (a real Redis must hold it under wire.KEY)."""
    return b"v" * wire.get_value_bytes(size_bytes)


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------

_CLOSED = ("the server closed a connection mid-step (it stopped, or a client limit such as "
           "maxclients or timeout)")
_RESP_HINTS: Mapping[int, str] = MappingProxyType({errno.ECONNRESET: _CLOSED, errno.EPIPE: _CLOSED})


def _check(rc: int, peer: str) -> None:
    # EPROTO and EMSGSIZE are the client's own verdicts on the bytes it read
    # (not RESP, or a reply larger than its buffer), not the system's.
    if rc == -errno.EPROTO:
        raise RemoteProtocolError(f"{peer} answered with bytes that are not RESP: "
                                  "is it a Redis (or pktbench) server?")
    if rc == -errno.EMSGSIZE:
        raise RemoteProtocolError(f"{peer} sent a reply larger than the client's receive "
                                  "buffer; not a reply to our command")
    errors.check_rc(rc, f"rr-tcp to {peer}", _RESP_HINTS)


def _run_until(client: Any, until_ns: int, stop: threading.Event | None, peer: str,
               *, until_done: bool = False) -> bool:
    """Run the client in chunks; False if `stop` was set first."""
    chunk_ns = int(engine.CHUNK_S * 1e9)
    while True:
        now = engine.monotonic_ns()
        if now >= until_ns:
            return True
        if stop is not None and stop.is_set():
            return False
        _check(client.run(min(until_ns, now + chunk_ns)), peer)
        if until_done and client.done:
            return True


WARMUP_GRACE_NS = 10_000_000
_WRITTEN_AT = engine.loops.CLIENT_COUNTERS.index("written")

SYSFS_NET = Path("/sys/class/net")



def _interface_packets(name: str | None) -> tuple[int, int] | None:
    """(tx_packets, rx_packets) of a device in this network namespace, None if unreadable."""
    if not name:
        return None
    stats = SYSFS_NET / name / "statistics"
    try:
        return (int((stats / "tx_packets").read_text()), int((stats / "rx_packets").read_text()))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _PathSample:
    at_ns: int
    segs_out: int
    segs_in: int
    retransmits: int
    written: int
    interface: tuple[int, int] | None


class PathMeter:
    """The packets our connections put on the path, read at the window's two ends.

    A request/response over TCP is not one packet each way: pure ACKs,
    retransmits and coalesced segments are what a path limited in packets
    per second sees. TCP_INFO counts them per connection (tcpi_segs_out,
    tcpi_segs_in, tcpi_total_retrans); the egress device's sysfs counters
    count them too, with every other packet on that device.

    TCP never carries more than a policer passes for long: a drop stalls a
    connection for a retransmission timeout, so the packets carried fall
    below the limit exactly when the schedule asks for more. What the
    schedule asked the path to carry is the offered request rate times the
    packets each written request took in this window.
    """

    def __init__(self, sockets: Sequence[socket.socket], interface: str | None,
                 written: Callable[[], int]) -> None:
        self._sockets = list(sockets)
        self._interface = interface
        self._written = written
        self._start: _PathSample | None = None
        self._end: _PathSample | None = None

    def _sample(self) -> _PathSample | None:
        out = in_ = retrans = 0
        for sock in self._sockets:
            info = read_tcp_info(sock)
            if info is None or info["segs_out"] is None or info["segs_in"] is None:
                return None
            out += info["segs_out"] or 0
            in_ += info["segs_in"] or 0
            retrans += info["total_retrans"] or 0
        return _PathSample(engine.monotonic_ns(), out, in_, retrans, self._written(),
                           _interface_packets(self._interface))

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        self._end = self._sample()

    def figures(self, offered_rps: float) -> PathFigures | None:
        """The window's deltas and rates; None when TCP_INFO could not be read."""
        a, b = self._start, self._end
        if a is None or b is None or b.at_ns <= a.at_ns:
            return None
        window_s = (b.at_ns - a.at_ns) / 1e9
        out = _segments(b.segs_out - a.segs_out)
        back = _segments(b.segs_in - a.segs_in)
        retrans = max(b.retransmits - a.retransmits, 0)
        written = max(b.written - a.written, 0)
        # retransmits are the path's doing, not what the schedule asked for
        per_request = max(out - retrans, 0) / written if written else 0.0
        interface: InterfacePackets | None = None
        if self._interface and a.interface is not None and b.interface is not None:
            tx = max(b.interface[0] - a.interface[0], 0)
            rx = max(b.interface[1] - a.interface[1], 0)
            interface = {"name": self._interface, "tx_packets": tx, "rx_packets": rx,
                         "tx_pps": tx / window_s, "rx_pps": rx / window_s}
        return {"source": "tcp_info", "window_s": window_s, "connections": len(self._sockets),
                "toward_server_packets": out, "back_packets": back,
                "toward_server_pps": out / window_s, "back_pps": back / window_s,
                "packets_per_request": per_request,
                "offered_toward_server_pps": offered_rps * per_request,
                "retransmits": retrans, "retransmits_pps": retrans / window_s,
                "interface": interface}


def _segments(delta: int) -> int:
    # tcpi_segs_* are 32-bit and wrap; a window never sends 2**32 segments
    return delta % (1 << 32)


class _RespPhases:
    """A RespClient as engine.run_phases sees it."""

    def __init__(self, client: Any, stop: threading.Event | None, peer: str,
                 path: PathMeter | None = None) -> None:
        self._client = client
        self._stop = stop
        self._peer = peer
        self._warmup_count = 0
        self._path = path

    def begin(self, start_ns: int, count: int, warmup: bool) -> None:
        self._client.begin(start_ns, count, warmup)
        self._warmup_count = count if warmup else 0
        if not warmup and self._path is not None:
            self._path.start()

    def send_until(self, until_ns: int) -> bool:
        completed = _run_until(self._client, until_ns, self._stop, self._peer)
        # The warm-up's last request falls due just before the phase ends; a
        # late wake-up, or a full pipeline window still waiting for the reply
        # before it, would leave it unwritten and the server would see one
        # request fewer than the schedule. Due is not enough: wait until it is
        # written. Warm-up is not measured, so it may finish its count (within
        # a bound) while the measured window still closes on time.
        late_ns = until_ns + WARMUP_GRACE_NS
        while (completed and self._written() < self._warmup_count
               and engine.monotonic_ns() < late_ns):
            completed = _run_until(self._client, engine.monotonic_ns() + 200_000,
                                   self._stop, self._peer)
        return completed

    def sent(self) -> int:
        # what went out: a due request still waiting for a window slot has not
        return self._written()

    def _written(self) -> int:
        return int(self._client.counters[_WRITTEN_AT])

    def end_sending(self) -> None:
        if self._path is not None:
            self._path.stop()
        self._client.stop_issuing()

    def drain_until(self, until_ns: int) -> bool:
        return _run_until(self._client, until_ns, self._stop, self._peer, until_done=True)


def drive(sockets: Sequence[socket.socket], params: StepParams, *, peer: str,
          stop: threading.Event | None = None) -> engine.SenderOutcome:
    """Run one step's requests over connected sockets; the client's own counts.

    Warm-up requests go out on the same schedule just before t0 and their
    replies are discarded. The measured window holds duration_s * rate_pps
    requests (rate_pps None: every window kept full for duration_s); then
    the drain waits up to drain_s for the replies still owed.

    Raises:
        ConnectError: the server closed a connection.
        RemoteProtocolError: the server does not speak RESP.
    """
    rate = params.rate_pps
    reply = reply_bytes(params.command, params.size_bytes)
    for sock in sockets:
        sock.setblocking(False)
    client = engine.loops.RespClient(
        [sock.fileno() for sock in sockets], request_bytes(params.command, params.size_bytes),
        rate_pps=rate or 0.0, pipeline=params.pipeline, timeout_s=params.timeout_s,
        busy_poll=params.busy_poll, rx_bytes=max(65536, 2 * len(reply) + 1024))
    path = PathMeter(sockets, _egress_interface(sockets[0]),
                     lambda: int(client.counters[_WRITTEN_AT]))
    # RESP has no grace: its window closes on time and what is still owed is drained
    phases = engine.run_phases(_RespPhases(client, stop, peer, path), rate_pps=rate,
                               warmup_s=params.warmup_s, duration_s=params.duration_s,
                               drain_s=params.drain_s, drain=True, grace=False,
                               meter=client, counter_names=engine.loops.CLIENT_COUNTERS)
    start_ns, send_end_ns = phases.start_ns, phases.send_end_ns
    client.finish()
    counters = {name: int(value)
                for name, value in zip(engine.loops.CLIENT_COUNTERS, client.counters)}
    span_s = params.duration_s if rate else max((send_end_ns - start_ns) / 1e9, 1e-9)
    if stop is not None and stop.is_set() and not phases.completed:
        # cut short: the rates are over the time it really sent, not the planned window
        span_s = min(span_s, max((send_end_ns - start_ns) / 1e9, 1e-9))
    return engine.SenderOutcome(
        counters=counters,
        latency_hist=client.latency_hist.copy(),
        actual_latency_hist=client.actual_latency_hist.copy(),
        send_lag_hist=client.send_lag_hist.copy(),
        offered_pps=rate,
        duration_s=params.duration_s,
        send_span_s=span_s,
        cpu_s=phases.cpu_s,
        stopped_early=not phases.completed,
        warmup_sent=phases.warmup_sent,
        extra={"path": path.figures(rate or counters["written"] / span_s)},
    )


def _egress_interface(sock: socket.socket) -> str | None:
    try:
        peer = sock.getpeername()[0]
    except OSError:
        return None
    return interface_for(str(peer))


def summarize(params: StepParams, outcome: engine.SenderOutcome, receiver: dict[str, Any],
              *, index: int = 0, repeat: int = 0) -> StepResult:
    """The step result of an rr-tcp step: a UDP rr step's keys, TCP facts in "sender",
    the step counted in requests (RequestFigures) and the packets on the path."""
    c = outcome.counters
    span_s = outcome.send_span_s
    scheduled, answered = c["sent"], c["received"]
    unanswered = max(scheduled - answered - c["late"] - c["resp_errors"], 0)
    requests: RequestFigures = {
        "offered_rps": float(params.rate_pps) if params.rate_pps is not None
        else outcome.sent_pps,
        "sent_rps": c["written"] / span_s if span_s > 0 else 0.0,
        "answered_rps": answered / span_s if span_s > 0 else 0.0,
        "requests": scheduled,
        "answered_requests": answered,
        "late_requests": c["late"],
        "unanswered_requests": unanswered,
        "unsent_requests": min(max(scheduled - c["written"], 0), unanswered),
        "error_requests": c["resp_errors"],
        "timeout_s": params.timeout_s,
    }
    path = cast("PathFigures | None", outcome.extra.get("path"))
    lag_p50_ns = histogram.percentile_ns(outcome.send_lag_hist, 50.0)
    lagging = (params.rate_pps is not None and lag_p50_ns is not None
               and lag_p50_ns > SENDER_LAG_LIMIT_NS)
    return summarize_step(dataclasses.replace(params, workload="rr"), outcome, receiver,
                          index=index, repeat=repeat, sender_bound=lagging,
                          requests=requests, path=path,
                          sender_figures={
                              "transport": "tcp",
                              "connections": params.connections,
                              "pipeline": params.pipeline,
                              "written_requests": c["written"],
                              "warmup_requests": outcome.warmup_sent,
                              "window_waits": c["window_waits"],
                              "resp_errors": c["resp_errors"],
                              "late_replies": c["late"],
                          })


def connect_data(address: tuple[str, int], family: int, count: int, token: int,
                 timeout_s: float) -> list[socket.socket]:
    """`count` data connections to a pktbench server, each opened with the preamble."""
    sockets: list[socket.socket] = []
    try:
        for stream_id in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(wire.pack_data_preamble(stream_id, token))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConnectError(f"cannot open data connection {len(sockets)} of {count} to "
                           f"{address[0]}:{address[1]}: {exc.strerror or exc}") from None
    return sockets


def run_client_step(client: StepClient, params: StepParams, *, index: int = 0,
                    repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
    """One rr-tcp step against `pktbench serve`: arm, connect, drive, collect."""
    if params.workload != WORKLOAD:
        raise ConfigError(f"workload {params.workload} is not {WORKLOAD}")

    def send(armed: ArmedStep) -> engine.SenderOutcome:
        sockets: list[socket.socket] = []
        try:
            family, address = resolve(client.target)
            sockets = connect_data(address, family, params.connections, armed.token,
                                   client.connect_timeout_s)
            return drive(sockets, params, peer=str(client.target), stop=stop)
        finally:
            for sock in sockets:
                sock.close()

    outcome, receiver = drive_step(client, params, send, lambda outcome: {"sent": outcome.sent})
    return summarize(params, outcome, receiver, index=index, repeat=repeat)


# --------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------

class TcpRrStepHandler:
    """Answers one rr-tcp step's RESP connections until `finish`.

    A serving thread runs the compiled RespServer over every connection the
    server hands in (at most step.connections, one per stream id); it stops
    at finish() or at the step's hard deadline, whichever comes first.
    """

    def __init__(self, step: StepParams, token: int, peer_ip: str) -> None:
        self.token = token
        self.peer_ip = peer_ip
        self.step = step
        # The step's rate holds on the traffic: commands past it wait unread,
        # so TCP pushes back on a client pipelining faster than it asked.
        max_rate_pps, burst = step.rate_cap() or (0.0, 0.0)
        self._engine = engine.loops.RespServer(
            step.connections, reply_bytes("get", step.size_bytes),
            rx_bytes=max(65536, 4 * step.size_bytes), busy_poll=step.busy_poll,
            max_rate_pps=max_rate_pps, burst=burst)
        self._lock = threading.Lock()
        self._sockets: dict[int, socket.socket] = {}
        self._rejected = 0
        self._stop = threading.Event()
        self._cpu_s = 0.0
        self._error: str | None = None
        self._started_ns = engine.monotonic_ns()
        hard_limit_s = step.hard_limit_s
        self._thread = threading.Thread(
            target=self._serve, args=(self._started_ns + int(hard_limit_s * 1e9),), daemon=True)
        self._thread.start()

    def add_connection(self, conn: socket.socket, stream_id: int) -> None:
        with self._lock:
            if (self._stop.is_set() or not 0 <= stream_id < self.step.connections
                    or stream_id in self._sockets):
                self._rejected += 1
                conn.close()
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._engine.add(conn.fileno()):
                self._rejected += 1
                conn.close()
                return
            self._sockets[stream_id] = conn

    def _serve(self, deadline_ns: int) -> None:
        chunk_ns = int(engine.CHUNK_S * 1e9)
        before = engine.thread_cpu_s()
        try:
            while not self._stop.is_set():
                now = engine.monotonic_ns()
                if now >= deadline_ns:
                    return
                engine.check_rc(self._engine.run(min(deadline_ns, now + chunk_ns)),
                                "serving RESP")
        except Exception as exc:  # reported in the step result, never kills the server
            self._error = str(exc)
        finally:
            self._cpu_s = engine.thread_cpu_s() - before

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        elapsed_s = (engine.monotonic_ns() - self._started_ns) / 1e9
        with self._lock:
            for sock in self._sockets.values():
                sock.close()
            connections = len(self._sockets)
        counts = {name: int(value) for name, value in
                  zip(engine.loops.SERVER_COUNTERS, self._engine.counters)}
        receiver: dict[str, Any] = {
            "received": counts["commands"],
            "received_packets": counts["commands"],
            "received_bytes": counts["received_bytes"],
            "replied": counts["replies"],
            "reply_bytes": counts["reply_bytes"],
            "connections": connections,
            "rejected_connections": self._rejected,
            "throttled": counts["throttled"],
            "drops": {"protocol_error": counts["protocol_errors"],
                      "unknown_command": counts["unknown_commands"]},
            "rcvbuf_errors": 0,
            "cpu_percent": 100.0 * self._cpu_s / elapsed_s if elapsed_s > 0 else 0.0,
        }
        if self._error is not None:
            receiver["error"] = self._error
        return receiver


@dataclass(frozen=True)
class RespWorkload:
    """rr-tcp: RESP commands over TCP data connections."""

    name: str = WORKLOAD
    transport: Transport = "tcp"

    def run_client_step(self, client: StepClient, params: StepParams, *, index: int = 0,
                        repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
        return run_client_step(client, params, index=index, repeat=repeat, stop=stop)

    def server_handler(self, arm: ServerArm) -> TcpStepHandler:
        return TcpRrStepHandler(arm.step, arm.token, arm.peer_ip)


RESP = RespWorkload()
