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

from pktbench.workloads.base import Workload
from pktbench.workloads.bulk import BULK
from pktbench.workloads.resp import RESP
from pktbench.workloads.udp import BLAST, RR

WORKLOADS: Mapping[str, Workload] = MappingProxyType(
    {w.name: w for w in (RR, BLAST, RESP, BULK)})

__all__ = ["WORKLOADS", "Workload"]
