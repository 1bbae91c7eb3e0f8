"""pktbench: find a network path's packets-per-second knee and throughput ceiling.

The library face (every CLI verb is a thin shell over these)::

    import pktbench
    result = pktbench.sweep("hostB", pktbench.load_profile("cloud-knee"))
    result.knee          # {"offered_pps": ..., "last_good_pps": ..., "reason": ...}
    step = pktbench.run_step(None, pktbench.step_params(workload="rr", rate_pps=20000))
    bulk = pktbench.run_bulk(None, pktbench.BulkConfig(sweep_streams=(1, 2)))
    pktbench.write_report("table", bulk, sys.stdout)   # every result has a reporter

Names are imported on first use, so `import pktbench` (and `pktbench --help`)
does not load the engine, numpy or scapy.
"""
from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Any

from pktbench._version import __version__

_LAZY = MappingProxyType({
    "sweep": "pktbench.api",
    "run_step": "pktbench.api",
    "step_params": "pktbench.api",
    "load_profile": "pktbench.config",
    "list_profiles": "pktbench.config",
    "apply_overrides": "pktbench.config",
    "Profile": "pktbench.config",
    "SweepResult": "pktbench.results",
    "load_result": "pktbench.results",
    "KneeCriteria": "pktbench.knee",
    "find_knee": "pktbench.knee",
    "StepParams": "pktbench.protocol",
    "Server": "pktbench.session",
    "ServerConfig": "pktbench.session",
    "Client": "pktbench.session",
    "decode_pcap": "pktbench.decode",
    "DecodeResult": "pktbench.decode",
    "run": "pktbench.api",
    "run_bulk": "pktbench.api",
    "BulkConfig": "pktbench.workloads.bulk",
    "validate_server": "pktbench.api",
    "ValidationReport": "pktbench.validate",
    "temporary_testbed": "pktbench.api",
    "testbed_up": "pktbench.api",
    "testbed_down": "pktbench.api",
    "testbed_status": "pktbench.api",
    "testbed_probe": "pktbench.api",
    "TestbedConfig": "pktbench.testbed",
    "TestbedInfo": "pktbench.testbed",
    "TestbedStatus": "pktbench.api",
    "TestbedRemoval": "pktbench.api",
    "KernelProbe": "pktbench.api",
    "REPORTERS": "pktbench.report",
    "write_report": "pktbench.report",
    "compare": "pktbench.comparison",
    "compare_files": "pktbench.comparison",
})

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pktbench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
