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

import importlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pktbench import engine, nic, protocol, wire, workers
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
from pktbench.step import summarize_step

CAPABILITIES = ("rr", "blast")


class TcpStepHandler(Protocol):
    """The server side of a step whose data runs over TCP connections.

    The server hands it every data connection that presents the step's data
    token from the session's peer; `finish` stops it and returns the
    receiver's counters for StepResult. It must never block the caller for
    longer than the step's drain.
    """

    token: int
    peer_ip: str

    def add_connection(self, conn: socket.socket, stream_id: int) -> None: ...

    def finish(self, sender: dict[str, Any]) -> dict[str, Any]: ...


# workload name -> factory(step, data token, peer ip); filled by the modules
# that implement TCP workloads when they are imported (the server imports
# every module named in TCP_WORKLOAD_MODULES when it opens).
TCP_STEP_HANDLERS: dict[str, Callable[[StepParams, int, str], TcpStepHandler]] = {}
TCP_WORKLOAD_MODULES: tuple[str, ...] = ("pktbench.bulk", "pktbench.tcp_rr")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data
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
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(wire.DROP_REASONS, 0))


class Server:
    """`pktbench serve`: a control listener plus the UDP data socket."""

    def __init__(self, config: ServerConfig, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.stats = ServerStats()
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._rxq_dropped = 0
        self._workers: set[threading.Thread] = set()
        self._tcp_step: TcpStepHandler | None = None
        self.buffers: engine.BufferSizes | None = None

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

    def open(self) -> None:
        for module in TCP_WORKLOAD_MODULES:
            importlib.import_module(module)
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
                listener.listen(16)
            except OSError as exc:
                listener.close()
                udp.close()
                if exc.errno == 98:
                    raise ConfigError(f"port {self.config.port} on {self.config.bind} is in use "
                                      "(TCP or UDP); choose another with --port") from None
                raise ConfigError(f"cannot listen on {self.config.bind}:{self.config.port}: "
                                  f"{exc.strerror or exc}") from None
            self._listener, self._udp = listener, udp
            self.buffers = engine.tune_socket(udp)
            return
        raise ConfigError("could not find a free port for both TCP and UDP; give one with --port")

    def close(self) -> None:
        self._stop.set()
        for sock in (self._listener, self._udp):
            if sock is not None:
                sock.close()

    def stop(self) -> None:
        self._stop.set()

    # -- serving -----------------------------------------------------------
    def serve_forever(self) -> None:
        """Accept sessions until stop() (or after one session with `once`)."""
        assert self._listener is not None
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                if self.config.once and self.stats.sessions and not self._busy.locked():
                    break
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            threading.Thread(target=self._dispatch, args=(conn, peer), daemon=True).start()
        for worker in list(self._workers):
            worker.join(timeout=5)

    def _dispatch(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        """A control connection starts a session; a data connection joins a step."""
        try:
            conn.settimeout(5.0)
            first = conn.recv(len(wire.DATA_MAGIC), socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            conn.close()
            return
        if first == wire.DATA_MAGIC:
            self._attach_data(conn, str(peer[0]))
            return
        if not self._busy.acquire(blocking=False):
            self._refuse_busy(conn, peer)
            return
        worker = threading.current_thread()
        self._workers.add(worker)
        try:
            self._session_thread(conn, peer)
        finally:
            self._workers.discard(worker)

    def _attach_data(self, conn: socket.socket, peer_ip: str) -> None:
        try:
            stream_id, token = wire.unpack_data_preamble(_recv_exactly(conn,
                                                                       wire.DATA_PREAMBLE_SIZE))
        except (OSError, ValueError):
            self.stats.rejected_data_connections += 1
            conn.close()
            return
        handler = self._tcp_step
        if handler is None or handler.token != token or handler.peer_ip != peer_ip:
            self.stats.rejected_data_connections += 1
            conn.close()
            return
        handler.add_connection(conn, stream_id)

    def _refuse_busy(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        self.stats.busy_refusals += 1
        cc = protocol.ControlConnection(Role.SERVER)
        try:
            _receive(conn, cc, 2.0)
            _send(conn, cc, protocol.Error("busy", "another client is running a test on this "
                                                   "server; try again when it is done"))
        except (PktbenchError, OSError):
            pass
        finally:
            conn.close()
        self._log(f"refused {peer[0]}: busy")

    def _session_thread(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        self.stats.sessions += 1
        started = time.monotonic()
        steps_before = self.stats.steps
        outcome = "ok"
        try:
            self._session(conn, str(peer[0]))
        except AuthError as exc:
            self.stats.auth_failures += 1
            outcome = f"auth failed ({exc})"
        except (RemoteProtocolError, LocalProtocolError, OSError) as exc:
            self.stats.protocol_errors += 1
            outcome = f"dropped: {exc}"
        except Exception as exc:  # the server must survive its own bugs too
            self.stats.protocol_errors += 1
            outcome = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            # Free the server before the peer sees the close, so a client
            # that reconnects at once is not told the server is busy.
            self._tcp_step = None
            self._busy.release()
            conn.close()
        self._log(f"session {peer[0]}: {self.stats.steps - steps_before} steps in "
                  f"{time.monotonic() - started:.1f} s, {outcome}")

    def _session(self, conn: socket.socket, peer_ip: str) -> None:
        cc = protocol.ControlConnection(Role.SERVER)
        hello = _receive(conn, cc, 10.0)
        if not isinstance(hello, protocol.Hello):  # the table already forbids this
            raise RemoteProtocolError("expected Hello")
        mismatch = protocol.check_version(hello)
        if mismatch is not None:
            _send(conn, cc, mismatch)
            raise RemoteProtocolError(mismatch.message)
        challenge = protocol.make_challenge() if self.config.secret else None
        _send(conn, cc, protocol.ServerHello(capabilities=CAPABILITIES,
                                             server=f"pktbench {__version__}",
                                             challenge_hex=challenge))
        if challenge is not None:
            answer = _receive(conn, cc, 10.0)
            if isinstance(answer, protocol.Bye):
                _send(conn, cc, protocol.Goodbye())
                return
            assert isinstance(answer, protocol.AuthResponse)
            assert self.config.secret is not None
            if not protocol.verify_auth(self.config.secret, challenge, answer.mac_hex):
                _send(conn, cc, protocol.Error("auth_failed", "wrong shared secret"))
                raise AuthError("wrong shared secret")
        session_token = protocol.make_session_token()
        assert self._udp is not None
        _send(conn, cc, protocol.Welcome(session_token=session_token,
                                         data_port=self._udp.getsockname()[1]))
        step_id = 0
        while True:
            event = _receive(conn, cc, self.config.idle_timeout_s)
            if isinstance(event, protocol.Bye):
                _send(conn, cc, protocol.Goodbye())
                return
            assert isinstance(event, protocol.StepRequest)
            params = dict(event.params)
            client_port = params.pop("client_port", None)
            client_ports = params.pop("client_ports", None)
            flows: tuple[int, ...] = ()
            try:
                step = protocol.validate_step_params(
                    params, max_rate_pps=self.config.max_rate_pps,
                    max_duration_s=self.config.max_duration_s)
                if step.workload in CAPABILITIES and (
                        not isinstance(client_port, int) or not 1 <= client_port <= 65535):
                    raise ConfigError("step params: client_port must be the client's UDP port")
                if step.workload in CAPABILITIES and (step.streams > 1
                                                      or client_ports is not None):
                    flows = protocol.validate_client_ports(client_ports, step.streams)
                if step.workload not in CAPABILITIES and step.workload not in TCP_STEP_HANDLERS:
                    raise ConfigError(f"step params: workload {step.workload} is not served here")
            except ConfigError as exc:
                self.stats.refused_steps += 1
                _send(conn, cc, protocol.Error("refused", str(exc)))
                continue
            token = data_token(session_token, step_id)
            if step.workload in TCP_STEP_HANDLERS:
                self._run_tcp_step(conn, cc, step, peer_ip, token, step_id)
            else:
                self._run_step(conn, cc, step, (peer_ip, client_port), token, step_id, flows)
            step_id += 1

    def _run_tcp_step(self, conn: socket.socket, cc: protocol.ControlConnection,
                      step: StepParams, peer_ip: str, token: int, step_id: int) -> None:
        handler = TCP_STEP_HANDLERS[step.workload](step, token, peer_ip)
        hard_limit_s = step.warmup_s + step.duration_s + step.drain_s + step.timeout_s + 10.0
        self._tcp_step = handler
        sender: dict[str, Any] = {}
        try:
            _send(conn, cc, protocol.StepReady(step_id))
            event = _receive(conn, cc, hard_limit_s)
            if isinstance(event, protocol.Bye):
                _send(conn, cc, protocol.Goodbye())
                raise RemoteProtocolError("client left mid-step")
            assert isinstance(event, protocol.StepStop)
            sender = dict(event.sender)
        finally:
            self._tcp_step = None
            receiver = handler.finish(sender)
        self.stats.steps += 1
        _send(conn, cc, protocol.StepResult(step_id, receiver))

    def _flush_udp(self) -> None:
        """Drop whatever arrived while no step was armed, counting it."""
        assert self._udp is not None
        while True:
            try:
                self._udp.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. a queued ICMP error from an earlier step
            self.stats.unsolicited_datagrams += 1

    def _peer_for_socket(self, peer: tuple[str, int]) -> tuple[str, int]:
        assert self._udp is not None
        if self._udp.family == socket.AF_INET6 and ":" not in peer[0]:
            return ("::ffff:" + peer[0], peer[1])
        return peer

    def _run_step(self, conn: socket.socket, cc: protocol.ControlConnection, step: StepParams,
                  peer: tuple[str, int], token: int, step_id: int,
                  flows: tuple[int, ...] = ()) -> None:
        assert self._udp is not None
        self._flush_udp()
        loop: engine.ResponderLoop | workers.StreamResponders
        if len(flows) > 1:  # one connected socket and responder per client flow
            try:
                loop = workers.StreamResponders(
                    self._udp, local_ip=str(conn.getsockname()[0]),
                    peers=[self._peer_for_socket((peer[0], port)) for port in flows],
                    token=token, command=wire.COMMANDS[step.command],
                    size_bytes=step.size_bytes, sink=step.workload == "blast",
                    busy_poll=step.busy_poll, cpus=self.config.cpus)
            except ConfigError as exc:
                self.stats.refused_steps += 1
                _send(conn, cc, protocol.Error("refused", str(exc)))
                return
        else:
            loop = engine.ResponderLoop(
                self._udp, peer=self._peer_for_socket(peer), token=token,
                command=wire.COMMANDS[step.command], size_bytes=step.size_bytes,
                sink=step.workload == "blast", busy_poll=step.busy_poll)
        hard_limit_s = step.warmup_s + step.duration_s + step.drain_s + step.timeout_s + 10.0
        stop = threading.Event()
        cpu: dict[str, float] = {}
        host_drops_before = engine.udp_rcvbuf_errors()
        interface = interface_for(peer[0])
        nic_before = nic.read_counters(interface)

        def serve() -> None:
            before = engine.thread_cpu_s()
            try:
                loop.serve_until(engine.monotonic_ns() + int(hard_limit_s * 1e9), stop)
            finally:
                cpu["s"] = engine.thread_cpu_s() - before

        worker = threading.Thread(target=serve, daemon=True)
        worker.start()
        started = time.monotonic()
        try:
            _send(conn, cc, protocol.StepReady(step_id))
            event = _receive(conn, cc, hard_limit_s)
            if isinstance(event, protocol.Bye):
                _send(conn, cc, protocol.Goodbye())
                raise RemoteProtocolError("client left mid-step")
            assert isinstance(event, protocol.StepStop)
            sent = event.sender.get("sent")
            if not isinstance(sent, int) or sent < 0:
                raise RemoteProtocolError("StepStop without a valid 'sent' count")
            if isinstance(loop, workers.StreamResponders):
                sent_per_stream = workers.check_sent_per_stream(
                    event.sender.get("sent_per_stream"), len(flows))
            if step.workload == "blast":
                # stragglers still in flight count; then the window closes
                stop.wait(step.drain_s)
        finally:
            stop.set()
            worker.join(timeout=5)
            if isinstance(loop, workers.StreamResponders):
                loop.close()
        elapsed = time.monotonic() - started
        if isinstance(loop, workers.StreamResponders):
            loop.finish(sent_per_stream)
            cpu["s"] = loop.cpu_s
        else:
            loop.finish(sent)
        receiver = loop.counters()
        drops: dict[str, int] = receiver["drops"]  # type: ignore[assignment]
        # SO_RXQ_OVFL counts for the socket's whole life; the step gets the rise.
        rxq_total = int(receiver.pop("rcvbuf_drops"))  # type: ignore[call-overload]
        if isinstance(loop, workers.StreamResponders):
            receiver["rcvbuf_errors"] = rxq_total  # fresh sockets: their life is this step
        else:
            receiver["rcvbuf_errors"] = max(rxq_total - self._rxq_dropped, 0)
            self._rxq_dropped = max(rxq_total, self._rxq_dropped)
        receiver["host_rcvbuf_errors"] = engine.udp_rcvbuf_errors() - host_drops_before
        receiver["interface"] = interface
        receiver["nic"] = nic.deltas(nic_before, nic.read_counters(interface))
        receiver["received_packets"] = receiver["received"]
        receiver["cpu_percent"] = 100.0 * cpu.get("s", 0.0) / elapsed if elapsed > 0 else 0.0
        receiver["buffers_bytes"] = self.buffers.rcvbuf_bytes if self.buffers else None
        for reason, count in drops.items():
            self.stats.drops[reason] += count
        self.stats.steps += 1
        _send(conn, cc, protocol.StepResult(step_id, receiver))


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmedStep:
    step_id: int
    token: int
    params: StepParams


class Client:
    """One control session to a server; runs steps and returns step dicts."""

    def __init__(self, target: Target, *, secret: bytes | None = None,
                 connect_timeout_s: float = 5.0, buffer_bytes: int = engine.DEFAULT_BUFFER_BYTES,
                 worker_cpus: tuple[int, ...] = ()) -> None:
        self.target = target
        self.worker_cpus = worker_cpus  # CPUs of multi-flow steps' sender processes
        self.workers: workers.WorkerPool | None = None  # started by the first such step
        self.secret = secret
        self.connect_timeout_s = connect_timeout_s
        self.buffer_bytes = buffer_bytes
        self._control: socket.socket | None = None
        self._data: socket.socket | None = None
        self._cc = protocol.ControlConnection(Role.CLIENT)
        self._session_token = 0
        self._step_id = 0
        self.server_name = ""
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

    def abandon_step(self) -> None:
        """Leave mid-step so the server disarms at once, not at its deadline."""
        assert self._control is not None
        try:
            _send(self._control, self._cc, protocol.Bye())
        except (PktbenchError, OSError):
            pass

    def run_step(self, params: StepParams, *, index: int = 0, repeat: int = 0,
                 stop: threading.Event | None = None) -> dict[str, Any]:
        """Run one step on the server and return its step dict."""
        if params.workload == "rr-tcp":
            from pktbench import tcp_rr

            return tcp_rr.run_client_step(self, params, index=index, repeat=repeat, stop=stop)
        if params.workload not in CAPABILITIES:
            raise ConfigError(f"workload {params.workload} is not available over UDP")
        if params.streams > 1:  # one sender process and flow per stream
            return workers.run_client_step(self, params, index=index, repeat=repeat, stop=stop)
        interface = interface_for(self.server_address[0])
        nic_before = nic.read_counters(interface)
        armed = self.begin_step(params)
        template = wire.build_request(wire.COMMANDS[params.command], params.size_bytes,
                                      token=armed.token, seq=0, send_ns=0)
        try:
            outcome = engine.run_sender(
                self.data_socket, template, rate_pps=params.rate_pps,
                duration_s=params.duration_s, warmup_s=params.warmup_s, drain_s=params.drain_s,
                expect_replies=params.workload == "rr", busy_poll=params.busy_poll,
                timeout_s=params.timeout_s, outstanding=params.outstanding, stop=stop)
        except BaseException:
            self.abandon_step()
            raise
        receiver = self.end_step({"sent": outcome.counters["sent"]}, params.drain_s + 15.0)
        step = summarize_step(params, outcome, receiver, index=index, repeat=repeat)
        step["sender"]["interface"] = interface
        if self.buffers is not None:
            step["sender"]["socket_buffers_bytes"] = {"rcvbuf": self.buffers.rcvbuf_bytes,
                                                      "sndbuf": self.buffers.sndbuf_bytes}
        step["sender"]["nic"] = nic.deltas(nic_before, nic.read_counters(interface))
        return step

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None
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
    """`pktbench serve` on 127.0.0.1 in a child process, pinned apart from us.

    Sender and receiver share two cores here; on separate CPUs neither
    steals the other's cycles, which is how the reference tools are run.
    """

    def __init__(self, *, bind: str = "127.0.0.1", pin: bool = True) -> None:
        self.bind = bind
        self.pin = pin
        self.process: subprocess.Popen[str] | None = None
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
        # Run from the directory holding the package we were imported from, so
        # `-m pktbench` in the child finds this same pktbench, not a source
        # tree without its compiled engine that happens to be the cwd.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pktbench", "serve", "--bind", self.bind, "--port", "0",
             "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=package_root)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            error = self.process.stderr.read() if self.process.stderr else ""
            self.stop()
            raise ConnectError(f"the embedded server did not start: {(line + error).strip()}")
        self.port = int(line.rsplit(":", 1)[1])
        cpus = sorted(os.sched_getaffinity(0))
        if self.pin and len(cpus) >= 2:
            os.sched_setaffinity(self.process.pid, {cpus[-1]})
            os.sched_setaffinity(0, set(cpus[:-1]))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.process = None
