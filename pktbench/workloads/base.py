"""The one interface every workload implements, and what it may use.

Owns: `Workload` (a workload's name, transport, client driver and server
handler factory), `StepClient` (the public step API of a control session
that a client driver runs a step through), `ServerArm` (what the server
hands a handler factory), the handler types the server drives
(`TcpStepHandler`, `UdpResponder`), `ArmedStep`, and `drive_step`, the one
client-step skeleton every workload's driver runs its sender in.

Invariants:
- Nothing here imports pktbench.session: the session imports the registry
  (pktbench.workloads), never the other way round, so the import graph stays
  a tree.
- A client driver talks to the server only through StepClient; it keeps
  state across steps only through `StepClient.reuse`, which the session owns
  and closes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pktbench.address import Target
from pktbench.engine import BufferSizes
from pktbench.protocol import StepParams
from pktbench.step import StepResult

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True)
class ArmedStep:
    """A step the server has armed: its id, its data token and its params."""

    step_id: int
    token: int
    params: StepParams


class Closeable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=Closeable)
_O = TypeVar("_O")


class StepClient(Protocol):
    """The session's public step API, as a client driver sees it."""

    target: Target
    connect_timeout_s: float
    buffer_bytes: int
    worker_cpus: tuple[int, ...]
    buffers: BufferSizes | None

    @property
    def server_address(self) -> tuple[str, int]: ...

    @property
    def data_socket(self) -> socket.socket: ...

    def begin_step(self, params: StepParams, client_ports: list[int] | None = None
                   ) -> ArmedStep: ...

    def end_step(self, sender: dict[str, Any], timeout_s: float = 15.0) -> dict[str, Any]: ...

    def abandon_step(self) -> None: ...

    def run_step(self, params: StepParams, *, index: int = 0, repeat: int = 0,
                 stop: threading.Event | None = None) -> StepResult:
        """A whole step of the workload `params` names (through the registry)."""
        ...

    def reuse(self, key: str, fits: Callable[[Any], bool], make: Callable[[], _C]) -> _C: ...


@runtime_checkable
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


@runtime_checkable
class UdpResponder(Protocol):
    """The server side of a UDP step: answers (or counts) datagrams until stopped.

    `own_sockets`: it opened its sockets for this step, so their drop
    counters are the step's alone (else the server's shared socket's
    counters are, and the server subtracts what came before).
    `cpu_s`: its own CPU time, or None when the server should measure the
    thread that ran `serve_until`.
    """

    own_sockets: bool

    @property
    def cpu_s(self) -> float | None: ...

    def serve_until(self, until_ns: int, stop: threading.Event | None = None) -> None: ...

    def check_stop(self, sender: dict[str, Any]) -> object:
        """The validated sent figures of a StepStop; RemoteProtocolError if invalid."""
        ...

    def finish(self, sent: object) -> None: ...

    def counters(self) -> dict[str, object]: ...

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        """Requests received in bins lo..hi-1 (-1: no longer held) of a step
        that asked for bins (StepParams.bin_packets); None when it did not."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServerArm:
    """What the server gives a handler factory to arm one step.

    `udp`: the server's shared data socket; `peers`: the client's UDP
    address of each flow (one for a single-flow step, none for TCP).
    """

    step: StepParams
    token: int
    peer_ip: str
    local_ip: str
    udp: socket.socket | None
    peers: tuple[tuple[str, int], ...]
    cpus: tuple[int, ...]


class Workload(Protocol):
    """One workload: what a sweep runs, on both ends."""

    @property
    def name(self) -> str:
        """The StepParams.workload value it serves."""
        ...

    @property
    def transport(self) -> Transport: ...

    def run_client_step(self, client: StepClient, params: StepParams, *, index: int = 0,
                        repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
        """Run one step through `client` and return its step result."""
        ...

    def server_handler(self, arm: ServerArm) -> TcpStepHandler | UdpResponder:
        """Arm the receiving end of one step (a TcpStepHandler for transport
        "tcp", a UdpResponder for "udp"); RuntimeError when the host refuses
        it a thread."""
        ...


def drive_step(client: StepClient, params: StepParams, send: Callable[[ArmedStep], _O],
               stop_figures: Callable[[_O], dict[str, Any]], *,
               client_ports: list[int] | None = None) -> tuple[_O, dict[str, Any]]:
    """The client-step skeleton: arm the step, run the workload's sender,
    send StepStop with `stop_figures(outcome)`, and return the outcome with
    the receiver's counters. A sender that fails leaves the session at once,
    so the server disarms now rather than at the step's hard limit."""
    armed = client.begin_step(params, client_ports)
    try:
        outcome = send(armed)
    except BaseException:
        client.abandon_step()
        raise
    return outcome, client.end_step(stop_figures(outcome), params.result_timeout_s)
