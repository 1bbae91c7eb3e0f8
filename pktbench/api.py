"""The library face of pktbench: what every CLI verb calls.

`run_step` measures one step against a server (or against an embedded
server on loopback when no target is given). Nothing here parses options
or prints; errors are PktbenchError subclasses.
"""
from __future__ import annotations

import threading
from typing import Any

from pktbench import redis_target
from pktbench.address import Target, parse_target
from pktbench.config import Profile
from pktbench.engine import engine_environment
from pktbench.protocol import StepParams, validate_step_params
from pktbench.results import SweepResult, environment
from pktbench.redis_target import RedisAuth
from pktbench.session import Client, LocalServer
from pktbench.sweeper import StepCallback
from pktbench.tcp_rr import TcpOptions
from pktbench.sweeper import sweep as _sweep_impl


def step_params(**params: Any) -> StepParams:
    """Validated StepParams from keyword arguments (ConfigError names a bad key)."""
    return validate_step_params({k: v for k, v in params.items() if v is not None or k == "rate_pps"})


def as_target(target: str | Target | None) -> Target | None:
    if target is None or isinstance(target, Target):
        return target
    return parse_target(target)


def run_step(target: str | Target | None, params: StepParams, *, secret: bytes | None = None,
             redis_auth: RedisAuth | None = None,
             stop: threading.Event | None = None,
             worker_cpus: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run one step and return its step dict (see pktbench.step).

    A redis:// target is driven directly (RESP over TCP, no pktbench server);
    its password comes from the URL unless `redis_auth` is given. A UDP step
    with params.streams > 1 is sent by that many processes, one flow each,
    pinned to `worker_cpus` round-robin (see pktbench.workers).
    """
    if isinstance(target, str) and target.strip().lower().startswith("redis://"):
        return redis_target.run_step(target, params, auth=redis_auth, stop=stop)
    resolved = as_target(target)
    if resolved is not None and resolved.redis:
        return redis_target.run_step(resolved, params, auth=redis_auth, stop=stop)
    if resolved is None:
        with LocalServer() as server:
            with Client(server.target, worker_cpus=worker_cpus) as client:
                return client.run_step(params, stop=stop)
    with Client(resolved, secret=secret, worker_cpus=worker_cpus) as client:
        return client.run_step(params, stop=stop)


def run_result(target: str | Target | None, params: StepParams,
               step: dict[str, Any]) -> SweepResult:
    """A one-step result document, the same shape a sweep writes."""
    resolved = as_target(target)
    host = resolved.host if resolved else "127.0.0.1"
    config = {"mode": "run", "target": str(resolved) if resolved else "embedded loopback server",
              **params.to_dict()}
    env = environment(host)
    env.update(engine_environment())
    return SweepResult(environment=env, config=config, steps=(step,))


def sweep(target: str | Target | None, profile: Profile, *, secret: bytes | None = None,
          early_stop: bool = True, on_step: StepCallback | None = None,
          stop: threading.Event | None = None, tcp: TcpOptions | None = None,
          redis_auth: RedisAuth | None = None, workers: int = 1,
          cpus: tuple[int, ...] = ()) -> SweepResult:
    """Sweep the profile's rates against `target` (None: both ends on this machine).

    A redis:// target (its password in the URL or `redis_auth`) sweeps a
    real Redis server over RESP/TCP; `tcp` runs rr steps over TCP
    connections with pipelining against a pktbench server; `workers` > 1
    sends each UDP step from that many processes (pinned to `cpus`).
    """
    resolved: Target | None
    if isinstance(target, str) and target.strip().lower().startswith("redis://"):
        resolved, url_auth = redis_target.parse_redis_url(target)
        redis_auth = redis_auth or url_auth
    else:
        resolved = as_target(target)
    return _sweep_impl(resolved, profile, secret=secret, early_stop=early_stop,
                       on_step=on_step, stop=stop, tcp=tcp, redis_auth=redis_auth,
                       workers=workers, cpus=cpus)
