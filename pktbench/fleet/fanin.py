"""Fan-in and fan-out: every other host loads one (`--to HOST`), or one loads all (`--from`).

Owns: the synchronized sweep of all paths into (or out of) one host, and the
aggregate of their steps, judged as one sweep to find the hub's knee.

How the start is synchronized: preflight measures each host's clock offset
over the SSH round trip (remote - coordinator). The coordinator picks one
start time T on its own clock, far enough ahead for the slowest host to start
pktbench and open its session, and a step period P longer than a step; each
source runs `pktbench sweep --start-at T+offset --step-period P`, so step k
of every source starts at T + k*P by the coordinator's clock. Each source's
share of an aggregate rate R is R/N. Each sweep records when every step
really started; the result reports, per step, how far apart the sources
started (`start_spread_ms`) and whether that stayed within the tolerance.

With `--to HOST` the hub runs one `serve` per source, on ports of its own
(a server serves one session at a time), each with a fresh token; with
`--from HOST` the hub runs one sweep per destination at once, and each
destination its usual `serve`.

Invariant: the aggregate of step k sums step k of every path that finished;
a path that failed is named and left out (the result says it is not
complete). Clocked sweeps run every planned step, so the steps pair up.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pktbench import knee
from pktbench.fleet import schedule
from pktbench.fleet.inventory import Host
from pktbench.fleet.remote import RemoteError, run_json
from pktbench.fleet.runner import FleetOptions, FleetRun, Log, _pair_doc, preflight_line
from pktbench.step import SENDER_BOUND_RATIO

# A step's wall time beyond warm-up + window + drain: the arm and result
# round trips and the result's wait, with room for a loaded host.
STEP_SLACK_S = 0.5
STEP_SLACK_FRACTION = 0.25
# The sources of one step must start within this share of the measured
# window (and at least this many ms apart is always fine) to count as in sync.
SYNC_FRACTION = 0.1
SYNC_FLOOR_MS = 20.0

_SUMMED = ("offered_pps", "sent_pps", "received_pps", "sent_packets", "received_packets",
           "lost_packets", "late_packets", "duplicate_packets", "reordered_packets")


def step_period_s(warmup_s: float, duration_s: float, drain_s: float) -> float:
    """Seconds between clocked step starts: a step and its slack."""
    busy = warmup_s + duration_s + drain_s
    return round(busy + STEP_SLACK_S + STEP_SLACK_FRACTION * busy, 3)


def lead_s(start_times_s: Sequence[float]) -> float:
    """Seconds from now to the first step: the slowest pktbench start + 1 s, 2 s at least.

    A sweep's start costs about what preflight's `pktbench --version` cost
    (both start the interpreter and import the package, at the same time on
    every host) plus one session handshake; the result reports the slack
    each source had (`ready_slack_ms`).
    """
    slowest = max(start_times_s, default=1.0)
    return round(max(2.0, slowest + 1.0), 3)


def _worst(values: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Per key, the largest of the paths' figures (a latency summary's worst case)."""
    present = [v for v in values if v]
    if not present:
        return None
    keys = [k for k in present[0] if all(isinstance(v.get(k), (int, float)) for v in present)]
    return {k: max(float(v[k]) for v in present) for k in keys}


def aggregate_steps(per_path: Mapping[str, Sequence[Mapping[str, Any]]]
                    ) -> list[dict[str, Any]]:
    """Step k of every path summed into step k of the aggregate.

    Rates and packet counts add up; the loss ratio is recomputed from the
    sums; latency is the worst path's per percentile (the aggregate is only
    as good as its worst path); a step is sender-bound when the summed sent
    rate fell short of the summed offered rate (step.SENDER_BOUND_RATIO).
    `per_path` maps a path's peer name to its sweep's steps, in order.
    """
    if not per_path:
        return []
    count = min(len(steps) for steps in per_path.values())
    out = []
    for k in range(count):
        group = {name: steps[k] for name, steps in per_path.items()}
        out.append(_sum_of(k, group))
    return out


def _sum_of(index: int, group: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Step `index` of every path (`group`: peer -> step) as one aggregate step record.

    Built whole here, from the paths' steps, which are only read.
    """
    first = next(iter(group.values()))
    sums = {key: sum(float(s.get(key) or 0) for s in group.values()) for key in _SUMMED}
    counts = {key: int(sums[key]) for key in _SUMMED[3:]}
    sent, lost = counts["sent_packets"], counts["lost_packets"]
    return {
        "index": index, "repeat": first.get("repeat", 0),
        "workload": first.get("workload"), "size_bytes": first.get("size_bytes"),
        "warmup_s": first.get("warmup_s"),
        "duration_s": max(float(s.get("duration_s") or 0) for s in group.values()),
        **sums, **counts,
        "loss_ratio": lost / sent if sent else 0.0,
        "latency_us": _worst([s.get("latency_us") for s in group.values()]),
        # Judged as one step is: the sources together short of the aggregate
        # schedule. One source a little short is folded into the sum (its own
        # flag stays in per_path); with many sources on busy hosts one
        # almost always is.
        "sender_bound": sums["sent_pps"] < SENDER_BOUND_RATIO * sums["offered_pps"],
        "rate_max": any(bool(s.get("rate_max")) for s in group.values()),
        "receiver": {"rcvbuf_errors": sum(int((s.get("receiver") or {}).get("rcvbuf_errors")
                                              or 0) for s in group.values())},
        "per_path": {
            name: {"offered_pps": s.get("offered_pps"), "sent_pps": s.get("sent_pps"),
                   "received_pps": s.get("received_pps"), "loss_ratio": s.get("loss_ratio"),
                   "sender_bound": bool(s.get("sender_bound"))}
            for name, s in group.items()},
    }


def start_spread(starts_s: Mapping[str, Sequence[float]], due_s: Sequence[float]
                 ) -> list[dict[str, Any]]:
    """Per step: each path's start against the schedule (ms) and the spread between them.

    `starts_s` holds each path's step starts already on the coordinator's
    clock; `due_s` the scheduled start of each step on that clock.
    """
    rows = []
    for k, due in enumerate(due_s):
        late = {name: round((starts[k] - due) * 1e3, 3)
                for name, starts in starts_s.items() if k < len(starts)}
        spread = max(late.values()) - min(late.values()) if late else None
        rows.append({"late_ms": late, "spread_ms": None if spread is None else round(spread, 3)})
    return rows


def summarize(per_path_steps: Mapping[str, Sequence[Mapping[str, Any]]],
              starts_s: Mapping[str, Sequence[float]], *, start_at_s: float, period_s: float,
              criteria: knee.KneeCriteria) -> dict[str, Any]:
    """The aggregate sweep: annotated steps, its knee, and how well the starts lined up."""
    steps = aggregate_steps(per_path_steps)
    analysis = knee.analyze_steps(steps, criteria)
    timing = start_spread(starts_s, [start_at_s + k * period_s for k in range(len(steps))])
    # new records with the timing beside the judged figures (those are only read)
    annotated = [{**judged, "start_spread_ms": row["spread_ms"],
                  "per_path": {name: {**path, "start_late_ms": row["late_ms"].get(name)}
                               for name, path in judged["per_path"].items()}}
                 for judged, row in zip(analysis["steps"], timing)]
    window_ms = min((float(s.get("duration_s") or 0) for s in steps), default=0.0) * 1e3
    tolerance = max(SYNC_FLOOR_MS, SYNC_FRACTION * window_ms)
    spreads = [r["spread_ms"] for r in timing if r["spread_ms"] is not None]
    found = analysis["knee"]
    offered = [float(s["offered_pps"]) for s in annotated]
    passed = [float(s["offered_pps"]) for s in annotated
              if not s.get("failures") and not s.get("sender_bound")]
    return {
        "steps": annotated, "knee": found,
        "knee_pps": found.get("offered_pps") if found else None,
        "last_good_pps": found.get("last_good_pps") if found else None,
        "no_knee": found is None, "verdict": analysis["verdict"],
        "max_offered_pps": max(offered) if offered else None,
        "max_passing_pps": max(passed) if passed else None,
        "max_start_spread_ms": max(spreads) if spreads else None,
        "sync_tolerance_ms": round(tolerance, 3),
        "in_sync": bool(spreads) and max(spreads) <= tolerance,
    }


class FanRun(FleetRun):
    """`--to HOST` / `--from HOST`: all paths into or out of one host, at once."""

    def __init__(self, hosts: Sequence[Host], options: FleetOptions, log: Log) -> None:
        super().__init__(hosts, options, log)
        self.fan: dict[str, Any] = {}

    async def run(self) -> None:
        assert self.options.fan is not None
        direction, hub = self.options.fan
        names = list(self.hosts)
        peers = [n for n in names if n != hub]
        paths: list[schedule.Pair] = ([(p, hub) for p in peers] if direction == "to"
                                      else [(hub, p) for p in peers])
        self.fan = {"direction": direction, "hub": hub}
        t0 = time.monotonic()
        self.log(f"fleet: {len(names)} hosts, {direction} {hub}: {len(paths)} paths at once")
        try:
            await asyncio.gather(*(self._preflight_one(self.hosts[n]) for n in names))
            for name in names:
                entry = self.preflight[name]
                if entry["reachable"]:
                    self.log(preflight_line(name, entry))
                else:
                    self.log(f"  {name}: unreachable: {entry['reason']}")
            t_pre = time.monotonic()
            up = [n for n in names if self.preflight[n]["reachable"]]
            runnable = [p for p in paths if p[0] in up and p[1] in up]
            for src, dst in paths:
                if (src, dst) not in runnable:
                    bad = src if src not in up else dst
                    self._done(_pair_doc(src, dst, "unreachable",
                                         f"{bad}: {self.preflight[bad]['reason']}"))
            servers = await self._start_servers(direction, hub, runnable)
            t_serve = time.monotonic()
            self.state = "running"
            if servers:
                await self._sweep_all(direction, servers)
            t_end = time.monotonic()
            self.state = "complete"
            self.timing = {"wall_s": round(t_end - t0, 3), "preflight_s": round(t_pre - t0, 3),
                           "serve_start_s": round(t_serve - t_pre, 3),
                           "fan_s": round(t_end - t_serve, 3),
                           "ssh_connect_median_s": _median_of(
                               [e.get("ssh_connect_s") for e in self.preflight.values()])}
        except BaseException:
            self.state = "interrupted"
            raise
        finally:
            with contextlib.suppress(BaseException):  # the run's own error matters more
                await asyncio.shield(self._cleanup())
            if self.store is not None:
                manifest = {**self._manifest(paths), "mode": direction, "fan": self.fan}
                with contextlib.suppress(OSError):
                    self.store.save_manifest(manifest)

    def _done(self, doc: dict[str, Any]) -> None:
        self.results[(doc["src"], doc["dst"])] = doc
        if self.store is not None:
            self.store.save_pair(doc)

    async def _start_servers(self, direction: str, hub: str, paths: Sequence[schedule.Pair]
                             ) -> dict[schedule.Pair, tuple[int, str]]:
        """A `serve` per path: on the hub, one port each (--to), or the peer's own (--from)."""
        base = self.options.serve_port

        async def one(index: int, pair: schedule.Pair) -> tuple[int, str] | None:
            dst = pair[1]
            port = base + index if base and direction == "to" else base
            try:
                return await self.start_serve_on(dst, port)
            except RemoteError as exc:
                self._done(_pair_doc(*pair, "failed",
                                     f"{dst}: {str(exc).removeprefix(f'{dst}: ')}"))
                return None

        started = await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
        return {p: s for p, s in zip(paths, started) if s is not None}

    async def _sweep_all(self, direction: str,
                         servers: Mapping[schedule.Pair, tuple[int, str]]) -> None:
        profile = self.options_profile()
        share = len(servers)
        rates = ",".join(f"{r / share:.3f}" for r in profile.rates_pps)
        period = step_period_s(profile.warmup_s, profile.duration_s, profile.drain_s)
        sources = {src for src, _ in servers}
        costs = [float(self.preflight[s].get("pktbench_start_s") or 1.0) for s in sources]
        if direction == "from":
            # the hub starts every sweep itself: as many at once as it has CPUs
            cpus = int(self.preflight[next(iter(sources))].get("cpus") or 1)
            costs = [costs[0] * math.ceil(share / max(cpus, 1))]
        lead = lead_s(costs)
        start_at = time.time() + lead
        steps = profile.step_count
        limit = lead + period * steps + 60
        self.fan.update({"paths": len(servers), "share": 1.0 / share,
                         "start_at_s": round(start_at, 6), "period_s": period, "lead_s": lead,
                         "planned_steps": steps, "rates_pps": list(profile.rates_pps),
                         "clock_offsets_ms": {n: self.preflight[n].get("clock_offset_ms")
                                              for n in self.hosts},
                         "ssh_rtt_ms": {n: self.preflight[n].get("ssh_rtt_ms")
                                        for n in self.hosts}})
        self.log(f"  {len(servers)} sweeps of {steps} steps, each {100 / share:.4g} % of the "
                 f"aggregate rate, first step in {lead:.1f} s, one every {period:.2f} s")

        async def one(pair: schedule.Pair, port: int, token: str) -> dict[str, Any]:
            src, dst = pair
            remote = self.remotes[src]
            offset_s = float(self.preflight[src].get("clock_offset_ms") or 0.0) / 1e3
            target = f"{self.hosts[dst].target}:{port}"
            args = [target, "--profile", self.profile_paths.get(src, self.profile.name),
                    "--rates", rates, "--start-at", f"{start_at + offset_s:.6f}",
                    "--step-period", f"{period:g}", "--json", "-", "--quiet"]
            started = time.monotonic()
            stamp = time.time()
            try:
                sweep = await run_json(remote, "sweep", args, token, limit_s=limit)
            except RemoteError as exc:
                return _pair_doc(src, dst, "failed", str(exc).removeprefix(f"{src}: "),
                                 round=0, started=stamp,
                                 wall_s=round(time.monotonic() - started, 4))
            return _pair_doc(src, dst, "ok", None, round=0, started=stamp,
                             wall_s=round(time.monotonic() - started, 4), sweep=sweep,
                             clock_offset_ms=self.preflight[src].get("clock_offset_ms"))

        docs = await asyncio.gather(*(one(p, port, token)
                                      for p, (port, token) in servers.items()))
        for doc in docs:
            self._done(doc)
            line = (f"  {doc['src']} -> {doc['dst']}: "
                    + ("ok" if doc["status"] == "ok" else f"failed: {doc['reason']}"))
            self.log(line)
        peer = 0 if direction == "from" else 1
        ok = [d for d in docs if d["status"] == "ok"]
        per_path = {(d["dst"] if peer == 0 else d["src"]): d["sweep"].get("steps", [])
                    for d in ok}
        starts = {}
        slack = {}
        for d in ok:
            clock = (d["sweep"].get("config") or {}).get("step_clock") or {}
            offset_s = float(d.get("clock_offset_ms") or 0.0) / 1e3
            name = d["dst"] if peer == 0 else d["src"]
            starts[name] = [float(t) - offset_s for t in clock.get("started_at_s", [])]
            if clock.get("ready_at_s") is not None:
                # >0: the session was open this long before the first step was due
                slack[name] = round((start_at - (float(clock["ready_at_s"]) - offset_s)) * 1e3,
                                    3)
        self.fan["ready_slack_ms"] = slack
        self.fan["complete"] = len(ok) == len(servers) and all(
            len(s) == steps for s in per_path.values())
        self.fan["failed_paths"] = [f"{d['src']}->{d['dst']}" for d in docs
                                    if d["status"] != "ok"]
        self.fan.update(summarize(per_path, starts, start_at_s=start_at, period_s=period,
                                  criteria=profile.criteria))

    def options_profile(self) -> Any:
        from pktbench import config

        return config.load_profile(self.options.profile)


def _median_of(values: Sequence[Any]) -> float | None:
    nums = sorted(float(v) for v in values if isinstance(v, (int, float)))
    if not nums:
        return None
    mid = len(nums) // 2
    return round(nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2, 4)
