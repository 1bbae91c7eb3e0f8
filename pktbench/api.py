"""The library face of pktbench: what every CLI verb calls.

`run_step` measures one step against a server (or against an embedded
server on loopback when no target is given); `run`, `sweep` and `run_bulk`
return result documents (pktbench.results.SweepResult); `validate`, the
testbed functions and the kernel probe return their own result objects.
Every result goes to a reporter (pktbench.report) to be shown. Nothing here
parses options or prints; errors are PktbenchError subclasses.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pktbench import engine
from pktbench.address import Target, parse_target
from pktbench.config import Profile
from pktbench.engine import engine_environment
from pktbench.knee import KneeCriteria
from pktbench.protocol import StepParams, validate_step_params
from pktbench.results import SweepResult, environment
from pktbench.session import Client, LocalServer
from pktbench.step import StepResult
from pktbench.sweeper import StepCallback, StepClock
from pktbench.sweeper import sweep as _sweep_impl
from pktbench.testbed import DEFAULT_PREFIX, TestbedConfig, TestbedInfo
from pktbench.workloads import redis as redis_target
from pktbench.workloads.redis import RedisAuth
from pktbench.workloads.resp import TcpOptions

if TYPE_CHECKING:
    from pktbench.workloads.bulk import BulkConfig, PathCounters
    from pktbench.validate import ValidationReport


def step_params(**params: Any) -> StepParams:
    """Validated StepParams from keyword arguments (ConfigError names a bad key)."""
    return validate_step_params({k: v for k, v in params.items() if v is not None or k == "rate_pps"})


def check_gso_mode(gso: str) -> None:
    """Refuse a gso mode this host cannot run ("on" without UDP GSO) before any traffic."""
    engine.check_gso_mode(gso)


def as_target(target: str | Target | None) -> Target | None:
    if target is None or isinstance(target, Target):
        return target
    return parse_target(target)


def run_step(target: str | Target | None, params: StepParams, *, secret: bytes | None = None,
             redis_auth: RedisAuth | None = None,
             stop: threading.Event | None = None,
             worker_cpus: tuple[int, ...] = ()) -> StepResult:
    """Run one step and return its step dict (see pktbench.step).

    A redis:// target is driven directly (RESP over TCP, no pktbench server);
    its password comes from the URL unless `redis_auth` is given. A UDP step
    with params.streams > 1 is sent by that many processes, one flow each,
    pinned to `worker_cpus` round-robin (see pktbench.workloads.multiflow).
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


def run(target: str | Target | None, params: StepParams, *, secret: bytes | None = None,
        redis_auth: RedisAuth | None = None, stop: threading.Event | None = None,
        worker_cpus: tuple[int, ...] = (),
        criteria: KneeCriteria | None = None) -> SweepResult:
    """Run one step and return it as a result document (what `pktbench run` shows).

    Args:
        target: "HOST[:PORT]", "redis://HOST[:PORT]", a Target, or None for a
            server started on this machine.
        params: the step (see `step_params`).
        secret: the pktbench server's shared secret, if it has one.
        redis_auth: AUTH for a redis:// target (default: from its URL).
        stop: set to end the step early.
        worker_cpus: CPUs for the sender processes of a multi-stream UDP step.
        criteria: what the step is judged by; default: the `default`
            profile's, the same a sweep applies.

    Returns:
        A SweepResult of kind "sweep" with config mode "run", one judged step
        and its judgement.

    Raises:
        PktbenchError: connection, authentication, protocol or engine trouble.
    """
    step = run_step(target, params, secret=secret, redis_auth=redis_auth, stop=stop,
                    worker_cpus=worker_cpus)
    return run_result(target, params, step, criteria)


def run_result(target: str | Target | None, params: StepParams,
               step: Mapping[str, Any], criteria: KneeCriteria | None = None) -> SweepResult:
    """A one-step result document, the same shape a sweep writes, judged by `criteria`."""
    from pktbench import knee
    from pktbench.config import load_profile

    if criteria is None:
        criteria = load_profile("default").criteria
    analysis = knee.analyze_steps([step], criteria)
    judgement = {"verdict": analysis["verdict"], "failed_criteria": analysis["failed_criteria"],
                 "criteria": criteria.as_dict(), "loss_floor_ratio": analysis["loss_floor_ratio"],
                 "baseline_p99_us": None, "capacity_pps": None,
                 "sender_max_pps": analysis["sender_max_pps"]}
    resolved = as_target(target)
    host = resolved.host if resolved else "127.0.0.1"
    config = {"mode": "run", "target": str(resolved) if resolved else "embedded loopback server",
              **params.to_dict()}
    env = environment(host)
    env.update(engine_environment())
    return SweepResult(environment=env, config=config, steps=tuple(analysis["steps"]),
                       judgement=judgement)


def sweep(target: str | Target | None, profile: Profile, *, secret: bytes | None = None,
          early_stop: bool = True, on_step: StepCallback | None = None,
          stop: threading.Event | None = None, tcp: TcpOptions | None = None,
          redis_auth: RedisAuth | None = None, workers: int = 1,
          cpus: tuple[int, ...] = (), clock: StepClock | None = None) -> SweepResult:
    """Sweep the profile's rates against `target` (None: both ends on this machine).

    A redis:// target (its password in the URL or `redis_auth`) sweeps a
    real Redis server over RESP/TCP; `tcp` runs rr steps over TCP
    connections with pipelining against a pktbench server; `workers` > 1
    sends each UDP step from that many processes (pinned to `cpus`);
    `clock` starts step k at a set wall-clock time (sweeper.StepClock).
    """
    resolved: Target | None
    if isinstance(target, str) and target.strip().lower().startswith("redis://"):
        resolved, url_auth = redis_target.parse_redis_url(target)
        redis_auth = redis_auth or url_auth
    else:
        resolved = as_target(target)
    return _sweep_impl(resolved, profile, secret=secret, early_stop=early_stop,
                       on_step=on_step, stop=stop, tcp=tcp, redis_auth=redis_auth,
                       workers=workers, cpus=cpus, clock=clock)


def run_bulk(target: str | Target | None, config: BulkConfig, *, secret: bytes | None = None,
             counters: PathCounters | None = None,
             on_step: Callable[[dict[str, Any]], None] | None = None,
             stop: threading.Event | None = None) -> SweepResult:
    """Measure bulk throughput: one step, or a sweep over stream counts or offered rates.

    Args:
        target: "HOST[:PORT]" of a pktbench server, a Target, or None for a
            server started on this machine.
        config: what to run (pktbench.workloads.bulk.BulkConfig).
        secret: the server's shared secret, if it has one.
        counters: per-path byte counters; default: the sysfs counters of
            config.path_ifaces when given.
        on_step: called with each finished step dict.
        stop: set to stop between steps.

    Returns:
        A SweepResult of kind "bulk": the steps, the flow plan and the ceiling.

    Raises:
        PktbenchError: connection, protocol, planning or configuration trouble.
    """
    from pktbench.workloads import bulk

    resolved = parse_target(target) if isinstance(target, str) else target
    if counters is None and config.path_ifaces:
        counters = bulk.sysfs_counters(config.path_ifaces)
    if resolved is None:
        with LocalServer() as server, Client(server.target, secret=secret) as client:
            return bulk.run_session(client, "embedded loopback server", config, counters,
                                    on_step, stop)
    with Client(resolved, secret=secret) as client:
        return bulk.run_session(client, str(resolved), config, counters, on_step, stop)


def validate_server(target: str | Target | None, secret: bytes | None = None, *,
                    cases: tuple[str, ...] | None = None, serving_check: bool = True
                    ) -> ValidationReport:
    """Check a pktbench server against crafted good and bad datagrams.

    Args:
        target: "HOST[:PORT]", a Target, or None for a server started on this
            machine for the run.
        secret: the server's shared secret, if it has one.
        cases: names of the cases to run (pktbench.validate.CASE_NAMES;
            default all).
        serving_check: end with an ordinary short step that must get every
            response.

    Returns:
        A ValidationReport; its `ok` is False when any case failed.

    Raises:
        ConfigError: a bad target or an unknown case name.
        ConnectError, AuthError, ServerBusyError: the session could not start.
    """
    # pktbench.validate is the module; the package-level name would be ambiguous
    from pktbench.validate import validate

    return validate(target, secret, cases=cases, serving_check=serving_check)


@dataclass(frozen=True)
class TestbedStatus:
    """A testbed prefix and what stands in the kernel under it (None: not up)."""

    __test__ = False  # not a pytest test class despite the name

    prefix: str
    info: TestbedInfo | None
    # what differed in the testbed `testbed_up` replaced (empty: built anew or kept)
    replaced: tuple[str, ...] = ()

    @property
    def up(self) -> bool:
        return self.info is not None


@dataclass(frozen=True)
class TestbedRemoval:
    """What `testbed_down` did: removed is False when there was nothing to remove."""

    __test__ = False

    prefix: str
    removed: bool


@dataclass(frozen=True)
class KernelProbe:
    """Which testbed features (netem, tbf, htb, bonding, nft, ECMP hash) work here."""

    features: Mapping[str, bool]


def testbed_up(config: TestbedConfig, *, force: bool = True) -> TestbedStatus:
    """Build the namespace testbed `config` describes, or keep the identical one (root).

    A different testbed under the same prefix is removed and rebuilt; with
    `force` false that is refused while processes run inside it (a server
    started with `testbed exec`, say), since removing it kills them.

    Args:
        config: prefix, paths, shaping and policing of the testbed.
        force: rebuild a different testbed even with processes inside.

    Returns:
        The testbed as it now stands; `replaced` lists what differed in the
        one it replaced.

    Raises:
        PktbenchError: not root, a missing tool, the kernel refused a part,
            or (force false) a different testbed has processes inside.
    """
    from pktbench import testbed as bed
    from pktbench.errors import TestbedError

    plan = bed.plan_up(config)
    if plan.rebuild and plan.processes and not force:
        raise TestbedError(bed.busy_message(config.prefix, plan))
    info = bed.up(config)
    return TestbedStatus(config.prefix, info, plan.differences if plan.rebuild else ())


def testbed_down(prefix: str = DEFAULT_PREFIX) -> TestbedRemoval:
    """Remove the testbed under `prefix` (namespaces and all inside); fine if none.

    Args:
        prefix: the namespaces are PREFIX-a and PREFIX-b.

    Returns:
        Whether there was a testbed to remove.

    Raises:
        PktbenchError: not root, or the kernel refused the removal.
    """
    from pktbench import testbed as bed

    return TestbedRemoval(prefix, bed.down(prefix))


def testbed_status(prefix: str = DEFAULT_PREFIX) -> TestbedStatus:
    """Describe the testbed under `prefix`: addresses, shaping, counters.

    Args:
        prefix: the namespaces are PREFIX-a and PREFIX-b.

    Returns:
        The status; its `info` is None when no testbed is up.

    Raises:
        PktbenchError: the kernel state could not be read.
    """
    from pktbench import testbed as bed

    return TestbedStatus(prefix, bed.status(prefix))


def testbed_probe() -> KernelProbe:
    """Try each testbed feature in a throw-away namespace (root).

    Returns:
        Feature name -> usable here.

    Raises:
        PktbenchError: not root, or `ip` is missing.
    """
    from pktbench import testbed as bed

    return KernelProbe(bed.probe_kernel())


@contextlib.contextmanager
def temporary_testbed(config: TestbedConfig) -> Iterator[TestbedInfo]:
    """The testbed for the length of a `with` block; removed on the way out, even on error.

    Args:
        config: as for `testbed_up`.

    Yields:
        The testbed's TestbedInfo (addresses to use inside the block).

    Raises:
        PktbenchError: as `testbed_up` and `testbed_down`.
    """
    status = testbed_up(config)
    assert status.info is not None
    try:
        yield status.info
    finally:
        testbed_down(config.prefix)
