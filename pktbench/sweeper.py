"""Rate sweeps and NDR/PDR searches against one server: the main job.

Owns the order of steps (rates ascending, repeats back to back), early stop
once the knee is confirmed, the retrial that confirms a failure at the top
of the schedule, and the optional NDR/PDR search. Judging steps belongs to
knee.py, the search strategy to search.py, numbers per step to step.py.

Invariant: every step is bounded (its duration, warm-up, drain and timeout
come from the profile), and the whole sweep stops on `stop`: the step then
running ends early (its books closed by the session) and is left out, since
a cut window measures nothing about its rate.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pktbench import knee, search
from pktbench.address import Target
from pktbench.config import Profile
from pktbench.engine import engine_environment
from pktbench.errors import ConfigError
from pktbench.protocol import StepParams, validate_step_params
from pktbench.workloads.redis import RedisAuth, RedisClient
from pktbench.results import SweepResult, environment
from pktbench.session import Client, LocalServer
from pktbench.step import StepResult
from pktbench.workloads.resp import TcpOptions

StepCallback = Callable[[dict[str, Any], int, int], None]  # step, done, planned
MAX_START_AHEAD_S = 3600.0


@dataclass(frozen=True)
class StepClock:
    """Step k starts at `start_at` + k x `period_s` on this host's wall clock.

    Several sources given the same clock (each corrected by its own offset)
    send their steps at the same moments, so a server sees their sum: the
    fan-in of `pktbench fleet --to`. A clocked sweep runs every planned step
    (no early stop, no retrial, no search): the steps of all sources must
    pair up one to one.
    """

    start_at: float
    period_s: float

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ConfigError(f"step period must be > 0 s (got {self.period_s:g})")
        if self.start_at > time.time() + MAX_START_AHEAD_S:
            raise ConfigError(f"start time {self.start_at:.3f} is more than "
                              f"{MAX_START_AHEAD_S:.0f} s ahead of this host's clock")

    def due(self, index: int) -> float:
        return self.start_at + index * self.period_s


@dataclass(frozen=True)
class SweepPlan:
    profile: Profile
    early_stop: bool = True
    tcp: TcpOptions | None = None  # run the profile's rr steps as rr-tcp
    workers: int = 1  # UDP steps over this many sender processes and flows
    clock: StepClock | None = None

    @property
    def criteria(self) -> knee.KneeCriteria:
        return self.profile.criteria


def step_params_for(profile: Profile, rate_pps: float | None, *,
                    duration_s: float | None = None, tcp: TcpOptions | None = None,
                    workers: int = 1) -> StepParams:
    """The StepParams of one step of `profile` at `rate_pps`.

    Over TCP (`tcp` given) the step is rr-tcp with `tcp`'s connections and
    pipeline depth (see `tcp_options_for` for the profile's own); over UDP
    an rr step closes its loop at the profile's `outstanding`, and with
    `workers` > 1 runs over that many sender processes, one flow each.
    """
    extra: dict[str, Any] = {}
    if tcp is not None:
        if profile.workload != "rr":
            raise ConfigError(f"profile {profile.name}: workload {profile.workload} is one-way; "
                              "request/response over TCP needs an rr profile")
        extra = {"workload": "rr-tcp", "connections": tcp.connections,
                 "pipeline": tcp.pipeline}
    elif profile.workload == "rr" and profile.outstanding is not None:
        extra = {"outstanding": profile.outstanding}
    if workers > 1:
        if tcp is not None:
            raise ConfigError("workers split UDP steps over processes; over TCP, spread the "
                              "rate with connections instead")
        extra["streams"] = workers
    return validate_step_params({
        "workload": profile.workload,
        "command": profile.command if profile.workload == "rr" else "none",
        "rate_pps": rate_pps,
        "duration_s": duration_s if duration_s is not None else profile.duration_s,
        "warmup_s": profile.warmup_s,
        "drain_s": profile.drain_s,
        "size_bytes": profile.size_bytes,
        "busy_poll": profile.busy_poll,
        "timeout_s": profile.timeout_s,
        **({"gso": profile.gso, "burst": profile.burst} if tcp is None else {}),
        **extra,
    })


def tcp_options_for(profile: Profile) -> TcpOptions:
    """The profile's rr-over-TCP options (connections, pipeline), 1 where unset."""
    return TcpOptions(profile.connections or 1, profile.pipeline or 1)


def _outcome(step: Mapping[str, Any]) -> search.TrialOutcome:
    return search.TrialOutcome(offered_pps=step["offered_pps"], loss_ratio=step["loss_ratio"],
                               sender_bound=step["sender_bound"], duration_s=step["duration_s"],
                               sent_pps=step["sent_pps"], received_pps=step["received_pps"])


def _as_dict(step: StepResult) -> dict[str, Any]:
    """A step for readers that take plain mappings (progress, reports)."""
    return step  # type: ignore[return-value]  # a TypedDict is a dict at run time


def _rates_above(steps: Sequence[Mapping[str, Any]], rate_pps: float) -> int:
    return len({s["offered_pps"] for s in steps if s["offered_pps"] > rate_pps * (1 + 1e-9)})


class _Runner:
    def __init__(self, client: Client | RedisClient, plan: SweepPlan, on_step: StepCallback | None,
                 stop: threading.Event | None) -> None:
        self.client = client
        self.plan = plan
        self.on_step = on_step
        self.stop = stop
        self.steps: list[StepResult] = []
        self.planned = plan.profile.step_count
        self.started_at: list[float] = []  # wall clock at each step's start (clocked sweeps)
        self.ready_at = time.time()  # the session is open: the earliest a step could start

    def step(self, rate_pps: float, repeat: int, duration_s: float | None = None
             ) -> StepResult:
        params = step_params_for(self.plan.profile, rate_pps, duration_s=duration_s,
                                 tcp=self.plan.tcp, workers=self.plan.workers)
        if self.plan.clock is not None:
            self._wait_until(self.plan.clock.due(len(self.steps)))
            self.started_at.append(time.time())
        result = self.client.run_step(params, index=len(self.steps), repeat=repeat,
                                      stop=self.stop)
        return result

    def _wait_until(self, due: float) -> None:
        # Sleeps in short slices so a stop (Ctrl-C) between steps is not held up.
        while not self.stopped():
            left = due - time.time()
            if left <= 0:
                return
            if self.stop is not None:
                self.stop.wait(min(left, 0.2))
            else:
                time.sleep(min(left, 0.2))

    def sweep(self) -> None:
        profile = self.plan.profile
        criteria = self.plan.criteria
        for rate in profile.rates_pps:
            for repeat in range(profile.repeat):
                step = self.step(rate, repeat)
                if self.stopped():
                    # a step cut short by `stop` is no measurement of its rate
                    if not (step.get("sender") or {}).get("stopped_early"):
                        self._record(step)
                    return
                self._record(step)
            if self.plan.clock is not None:
                continue  # every source runs every step: they are summed one to one
            found = knee.find_knee(self.steps, criteria)
            if (self.plan.early_stop and found is not None and profile.early_stop_steps > 0
                    and _rates_above(self.steps, found.offered_pps)
                    >= max(profile.early_stop_steps, criteria.confirm_steps)):
                return
        retrial = knee.pending_confirmation_pps(self.steps, criteria)
        if retrial is not None and not self.stopped() and self.plan.clock is None:
            self.planned += 1
            repeats = sum(1 for s in self.steps if s["offered_pps"] == retrial)
            self._record(self.step(retrial, repeats))

    def _record(self, step: StepResult) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(self._judged(step), len(self.steps), self.planned)

    def _judged(self, step: StepResult) -> dict[str, Any]:
        """`step` judged as the final table will judge it, on the sweep's steps so far.

        The live line and the table apply the same criteria, loss floor and
        latency baseline; only later steps can still move the floor or the
        baseline. A search trial is judged beside the sweep's steps.
        """
        steps = self.steps if self.steps and self.steps[-1] is step else [*self.steps, step]
        return knee.annotate(steps, self.plan.criteria)[-1]

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def search(self) -> search.SearchResult:
        profile = self.plan.profile
        trials: list[StepResult] = []

        def trial(rate_pps: float, duration_s: float) -> search.TrialOutcome:
            step: StepResult = {**self.step(rate_pps, 0, duration_s=duration_s),
                                "search_trial": True}
            trials.append(step)
            if self.on_step is not None:
                self.on_step(self._judged(step), len(self.steps) + len(trials), 0)
            return _outcome(_as_dict(step))

        # The sweep already showed where loss starts: searching above the
        # lowest lossy rate would only hammer a path known to be broken.
        lossy = [s["offered_pps"] for s in self.steps
                 if s["loss_ratio"] > profile.pdr_loss_ratio and not s["sender_bound"]]
        max_pps = min(lossy) if lossy else max(profile.rates_pps)
        # Each bound rests on a trial as long as the sweep's steps; shorter
        # trials only narrow the interval first (RFC 9971).
        result = search.search_throughput(
            trial, min_pps=min(profile.rates_pps), max_pps=max_pps,
            pdr_loss_ratio=profile.pdr_loss_ratio, precision=profile.precision,
            initial_duration_s=min(0.5, profile.duration_s),
            final_duration_s=profile.duration_s,
            known=[_outcome(s) for s in self.steps])
        self.search_steps = trials
        return result


def sweep(target: Target | None, profile: Profile, *, secret: bytes | None = None,
          early_stop: bool = True, on_step: StepCallback | None = None,
          stop: threading.Event | None = None, tcp: TcpOptions | None = None,
          redis_auth: RedisAuth | None = None, workers: int = 1,
          cpus: tuple[int, ...] = (), clock: StepClock | None = None) -> SweepResult:
    """Sweep `profile`'s rates against `target` (None: an embedded loopback server).

    With `tcp`, rr steps run as rr-tcp over that many connections and that
    pipeline depth; a redis:// target always runs rr-tcp (with `tcp`, else
    the profile's connections and pipeline, else one connection without
    pipelining), authenticated with `redis_auth`. `workers` > 1 sends each
    UDP step from that many processes (pinned to `cpus` round-robin), one
    flow each. With `clock`, step k starts at `clock.due(k)` and every
    planned step runs (see StepClock); the document's config records the
    clock and when each step started.

    Returns the SweepResult with every step annotated, the knee (or None),
    the Kneedle estimate and, when the profile asks, NDR/PDR.
    """
    if workers > 1 and ((target is not None and target.redis) or tcp is not None):
        raise ConfigError("workers split UDP steps over processes; over TCP, spread the rate "
                          "with connections instead")
    if clock is not None and profile.search:
        raise ConfigError("a clocked sweep (--start-at) runs its planned steps only: "
                          "no NDR/PDR search")
    if target is not None and target.redis:
        redis = target
        plan = SweepPlan(profile, early_stop, tcp or tcp_options_for(profile), clock=clock)
        return _sweep(target, plan, lambda: RedisClient(redis, auth=redis_auth), on_step, stop,
                      embedded=False)
    plan = SweepPlan(profile, early_stop, tcp, workers, clock)
    if target is None:
        with LocalServer() as server:
            return _sweep(server.target, plan, lambda: Client(server.target, worker_cpus=cpus),
                          on_step, stop, embedded=True)
    remote = target
    return _sweep(target, plan, lambda: Client(remote, secret=secret, worker_cpus=cpus),
                  on_step, stop, embedded=False)


def _sweep(target: Target, plan: SweepPlan, connect: Callable[[], Client | RedisClient],
           on_step: StepCallback | None, stop: threading.Event | None, *,
           embedded: bool) -> SweepResult:
    with connect() as client:
        runner = _Runner(client, plan, on_step, stop)
        runner.sweep()
        found: search.SearchResult | None = None
        if plan.profile.search and not runner.stopped():
            found = runner.search()
        buffers = client.buffers
    analysis = knee.analyze_steps(runner.steps, plan.criteria)
    env = environment(target.host)
    env.update(engine_environment())
    if buffers is not None:
        env["client_socket_buffers_bytes"] = {"rcvbuf": buffers.rcvbuf_bytes,
                                              "sndbuf": buffers.sndbuf_bytes}
    config = {"target": "embedded loopback server" if embedded else str(target),
              "early_stop": plan.early_stop, **plan.profile.to_dict()}
    if plan.tcp is not None:
        config.update(transport="tcp", connections=plan.tcp.connections,
                      pipeline=plan.tcp.pipeline)
    if plan.workers > 1:
        config["workers"] = plan.workers
    if plan.clock is not None:
        config["early_stop"] = False
        config["step_clock"] = {
            "start_at_s": plan.clock.start_at, "period_s": plan.clock.period_s,
            "ready_at_s": round(runner.ready_at, 6),
            "started_at_s": [round(t, 6) for t in runner.started_at],
            "start_late_s": [round(t - plan.clock.due(i), 6)
                             for i, t in enumerate(runner.started_at)]}
    judgement = {
        "verdict": analysis["verdict"],
        "failed_criteria": analysis["failed_criteria"],
        "criteria": plan.criteria.as_dict(),
        "loss_floor_ratio": analysis["loss_floor_ratio"],
        "baseline_p99_us": analysis["baseline_p99_us"],
        "capacity_pps": (found.capacity_pps if found is not None and found.capacity_pps
                         is not None else analysis["capacity_pps"]),
        "sender_max_pps": analysis["sender_max_pps"],
    }
    search_doc = None
    if found is not None:
        search_doc = found.to_dict()
        search_doc["trials"] = getattr(runner, "search_steps", [])
        search_doc["elapsed_s"] = found.elapsed_s
        search_doc["stopped_by"] = found.stopped_by
    return SweepResult(
        environment=env, config=config, steps=tuple(analysis["steps"]), knee=analysis["knee"],
        judgement=judgement,
        kneedle_pps=analysis["kneedle_pps"],
        ndr_pps=found.ndr_pps if found is not None and "ndr" in plan.profile.search else None,
        pdr_pps=found.pdr_pps if found is not None and "pdr" in plan.profile.search else None,
        search=search_doc)
