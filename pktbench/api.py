"""The library face of pktbench: what every CLI verb calls.

`run_step` measures one step against a server (or against an embedded
server on loopback when no target is given). Nothing here parses options
or prints; errors are PktbenchError subclasses.
"""
from __future__ import annotations

import threading
from typing import Any

from pktbench.address import Target, parse_target
from pktbench.protocol import StepParams, validate_step_params
from pktbench.session import Client, LocalServer


def step_params(**params: Any) -> StepParams:
    """Validated StepParams from keyword arguments (ConfigError names a bad key)."""
    return validate_step_params({k: v for k, v in params.items() if v is not None or k == "rate_pps"})


def as_target(target: str | Target | None) -> Target | None:
    if target is None or isinstance(target, Target):
        return target
    return parse_target(target)


def run_step(target: str | Target | None, params: StepParams, *, secret: bytes | None = None,
             stop: threading.Event | None = None) -> dict[str, Any]:
    """Run one step and return its step dict (see pktbench.step)."""
    resolved = as_target(target)
    if resolved is None:
        with LocalServer() as server:
            with Client(server.target) as client:
                return client.run_step(params, stop=stop)
    with Client(resolved, secret=secret) as client:
        return client.run_step(params, stop=stop)
