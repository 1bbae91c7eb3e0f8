"""UDP request/response and one-way blast (workloads "rr" and "blast"): both ends.

Owns: the client driver of a single-flow UDP step (the compiled sender on
the session's data socket), and the server's responder for it on the
server's shared data socket. A step of more than one stream goes to the
multi-flow workload (pktbench.workloads.multiflow) on both ends.

Invariants:
- A single-flow step uses the session's one connected data socket at both
  ends, so its drop counters span the socket's life (the server subtracts).
- rr expects a reply to every request; blast expects none (the server counts).

Must not: open control connections or import pktbench.session.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pktbench import engine, nic, wire
from pktbench.protocol import StepParams
from pktbench.results import interface_for
from pktbench.step import StepResult, summarize_step
from pktbench.workloads import multiflow
from pktbench.workloads.base import (
    ArmedStep, ServerArm, StepClient, Transport, UdpResponder, drive_step)


def run_single_flow(client: StepClient, params: StepParams, *, index: int = 0,
                    repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
    """One rr or blast step on the session's data socket; its step result."""
    interface = interface_for(client.server_address[0])
    nic_before = nic.read_counters(interface)

    def send(armed: ArmedStep) -> engine.SenderOutcome:
        template = wire.build_request(wire.COMMANDS[params.command], params.size_bytes,
                                      token=armed.token, seq=0, send_ns=0)
        return engine.run_sender(
            client.data_socket, template, rate_pps=params.rate_pps,
            duration_s=params.duration_s, warmup_s=params.warmup_s, drain_s=params.drain_s,
            expect_replies=params.workload == "rr", busy_poll=params.busy_poll,
            timeout_s=params.timeout_s, outstanding=params.outstanding, stop=stop,
            gso=params.gso, burst=params.burst)

    outcome, receiver = drive_step(client, params, send,
                                   lambda outcome: {"sent": outcome.counters["sent"]})
    figures: dict[str, Any] = {"interface": interface}
    if client.buffers is not None:
        figures["socket_buffers_bytes"] = {"rcvbuf": client.buffers.rcvbuf_bytes,
                                           "sndbuf": client.buffers.sndbuf_bytes}
    figures["nic"] = nic.deltas(nic_before, nic.read_counters(interface))
    figures["engine"] = outcome.extra.get("engine")
    return summarize_step(params, outcome, receiver, index=index, repeat=repeat,
                          sender_figures=figures)


class SingleFlowResponder:
    """The server side of a single-flow step: the engine's responder on the
    server's shared data socket."""

    own_sockets = False
    cpu_s = None  # the server measures the thread that serves

    def __init__(self, loop: engine.ResponderLoop) -> None:
        self._loop = loop

    def serve_until(self, until_ns: int, stop: threading.Event | None = None) -> None:
        self._loop.serve_until(until_ns, stop)

    def check_stop(self, sender: dict[str, Any]) -> object:
        return sender["sent"]  # the server has checked it is a count

    def finish(self, sent: object) -> None:
        assert isinstance(sent, int)
        self._loop.finish(sent)

    def counters(self) -> dict[str, object]:
        return self._loop.counters()

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        return self._loop.bin_counts(lo, hi)

    def close(self) -> None:
        pass  # the shared socket is the server's


@dataclass(frozen=True)
class UdpWorkload:
    """rr or blast: single-flow here, more than one stream in multiflow."""

    name: str
    transport: Transport = "udp"

    def run_client_step(self, client: StepClient, params: StepParams, *, index: int = 0,
                        repeat: int = 0, stop: threading.Event | None = None) -> StepResult:
        if params.streams > 1:  # one sender process and flow per stream
            return multiflow.run_client_step(client, params, index=index, repeat=repeat,
                                             stop=stop)
        return run_single_flow(client, params, index=index, repeat=repeat, stop=stop)

    def server_handler(self, arm: ServerArm) -> UdpResponder:
        step = arm.step
        assert arm.udp is not None and arm.peers
        if len(arm.peers) > 1:
            return multiflow.StreamResponders(
                arm.udp, local_ip=arm.local_ip, peers=arm.peers, token=arm.token,
                command=wire.COMMANDS[step.command], size_bytes=step.size_bytes,
                sink=step.workload == "blast", busy_poll=step.busy_poll, cpus=arm.cpus,
                seq_limit=step.max_packets, rate_cap=step.rate_cap(len(arm.peers)),
                gso=step.gso)
        return SingleFlowResponder(engine.ResponderLoop(
            arm.udp, peer=arm.peers[0], token=arm.token, command=wire.COMMANDS[step.command],
            size_bytes=step.size_bytes, sink=step.workload == "blast",
            busy_poll=step.busy_poll, seq_limit=step.max_packets, rate_cap=step.rate_cap(),
            gso=step.gso, bins=step.bins))


RR = UdpWorkload("rr")
BLAST = UdpWorkload("blast")
