"""Every workload pktbench runs, each one module with both of its ends.

Owns: WORKLOADS, the registry: StepParams.workload name -> the Workload
(pktbench.workloads.base) that drives its client step and arms its server
handler. Built here from explicit imports and read-only, so what a server
serves is visible in the import graph and nothing registers itself.

    rr, blast   udp.py        (more than one stream: multiflow.py)
    rr-tcp      resp.py       (against a real Redis: redis.py's RedisClient)
    bulk        bulk.py

Must not: import pktbench.session (the session imports this).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pktbench import engine
from pktbench.protocol import StepParams
from pktbench.workloads.base import Workload
from pktbench.workloads.bulk import BULK, DEFAULT_WRITE_BYTES, RECV_BUFFER_BYTES
from pktbench.workloads.resp import RESP
from pktbench.workloads.udp import BLAST, RR

WORKLOADS: Mapping[str, Workload] = MappingProxyType(
    {w.name: w for w in (RR, BLAST, RESP, BULK)})


def server_buffer_bytes(step: StepParams) -> int:
    """What the server's end of `step` allocates for its buffers, before it
    is armed, so a server can refuse a step over its memory budget.

    Kernel socket buffers are not in it: the kernel bounds those
    (net.core.rmem_max, net.ipv4.udp_mem, tcp_mem) and frees them itself.
    """
    if step.workload in ("rr", "blast"):
        gro = step.gso != "off" and engine.udp_offload_support()[1]
        return engine.responder_buffer_bytes(step.size_bytes, gro=gro, flows=step.streams)
    if step.workload == "bulk":
        pump = DEFAULT_WRITE_BYTES if step.reverse else RECV_BUFFER_BYTES
        return pump + step.streams * 4096
    # rr-tcp: the RESP server's receive and send room per connection
    reply_room = max(128, step.size_bytes)
    per_connection = max(65536, 4 * step.size_bytes) + max(65536, 4 * reply_room) + 1024
    return step.connections * per_connection


__all__ = ["WORKLOADS", "Workload", "server_buffer_bytes"]
