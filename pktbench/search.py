"""NDR and PDR search: the highest rates with zero loss and with loss <= a ratio.

Owns the choice of the next (rate, duration) trial and the bounds that the
trials prove. A caller supplies `trial(rate_pps, duration_s) -> TrialOutcome`;
this module never sends a packet, so tests drive it with simulated paths.

The method is RFC 2544's throughput search made cheaper the MLRsearch way
(RFC 9971): short trials first and longer ones as the interval narrows, both
goals from one set of trials. Invariants:
  * A lower bound for a goal is a rate whose trial at the current phase's
    duration (or longer) was not sender-bound and lost no more than the goal
    allows; an upper bound is any rate with a trial that lost more, whatever
    its duration (a short lossy trial already proves the rate fails, as in
    RFC 2544 where any loss fails a rate). A lower bound counts only below
    the lowest upper bound.
  * A sender-bound trial without excess loss says nothing about the path; it
    caps the search (the path cannot be tested at or above that rate) and the
    result says the bound is the sender. No bound is above the highest rate
    the sender reached in any trial.
  * Short trials only narrow the interval. In the last phase both bounds
    rest on trials of the full duration: a failure seen only in a shorter
    trial is run again at the full duration before it counts.
  * Behind a buffer a trial above the path's capacity can pass while the
    queue absorbs the excess, for longer than any practical trial at rates
    just above it. Where the received rate of lossy trials saturates (the
    delivered-rate plateau, see `delivered_plateau_pps`), that rate is the
    path's capacity and caps both goals: no rate above it can be sustained
    without loss.
  * Every trial informs both goals: a rate that passes NDR passes PDR, a rate
    that fails PDR fails NDR.
  * The search stops by itself: at the precision goal, at max_trials or at
    max_time_s, whichever comes first.

Must not: open sockets, sleep, print, or judge anything but loss.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Literal

from pktbench.errors import ConfigError

__all__ = ["GoalResult", "SearchResult", "Trial", "TrialOutcome", "delivered_plateau_pps",
           "search_throughput"]

UpperBoundBy = Literal["path", "sender", "capacity", "max_pps"]
StoppedBy = Literal["precision", "max_trials", "max_time"]

# Relative slack when comparing rates and durations computed in floating point.
_EPS = 1e-9


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial measured.

    Attributes:
        offered_pps: the rate the trial offered.
        loss_ratio: lost / sent (0 when nothing was sent).
        sender_bound: the sender could not generate the offered rate.
        duration_s: the measured duration.
        sent_pps: what actually left the sender, if known (helps the search
            jump close to a sender's limit).
        received_pps: what the receiver counted per second of the trial, if
            known (lossy trials with a flat received rate show the capacity).
    """

    offered_pps: float
    loss_ratio: float
    sender_bound: bool
    duration_s: float
    sent_pps: float | None = None
    received_pps: float | None = None


@dataclass(frozen=True)
class Trial:
    """One trial the search asked for, and what came back."""

    rate_pps: float
    duration_s: float
    phase: int
    outcome: TrialOutcome

    @property
    def loss_ratio(self) -> float:
        return self.outcome.loss_ratio


@dataclass(frozen=True)
class GoalResult:
    """The bounds found for one loss goal (NDR: loss_ratio 0).

    Attributes:
        loss_ratio: the goal's loss ratio.
        lower_pps: the highest rate that met the goal below upper_pps; None
            when even min_pps failed. This is the NDR/PDR figure.
        upper_pps: the lowest rate that failed the goal (or that the sender
            could not generate); None when nothing failed up to max_pps.
        upper_bound_by: "path" (a trial lost too much), "sender" (the sender
            could not generate the rate), "capacity" (above the delivered-rate
            plateau, see `delivered_plateau_pps`) or "max_pps" (nothing failed).
        lower_duration_s: the longest trial that proved lower_pps.
        trials: trials run until this goal was settled.
        duration_s: trial time (sum of trial durations) until it was settled.
        complete: the bounds met the precision at the final trial duration.
    """

    loss_ratio: float
    lower_pps: float | None
    upper_pps: float | None
    upper_bound_by: UpperBoundBy
    lower_duration_s: float | None
    trials: int
    duration_s: float
    complete: bool

    @property
    def relative_width(self) -> float | None:
        if self.lower_pps is None or self.upper_pps is None:
            return None
        return (self.upper_pps - self.lower_pps) / self.lower_pps

    def to_dict(self) -> dict[str, Any]:
        """The SCHEMA.md shape: {lower_pps, upper_pps, trials, duration_s} and why the upper."""
        return {"lower_pps": self.lower_pps, "upper_pps": self.upper_pps,
                "upper_bound_by": self.upper_bound_by, "lower_duration_s": self.lower_duration_s,
                "trials": self.trials, "duration_s": self.duration_s}


@dataclass(frozen=True)
class SearchResult:
    """Both goals, every trial, and why the search stopped.

    capacity_pps is the delivered-rate plateau (None when received rates did
    not saturate); sender_max_pps the highest rate the sender reached.
    """

    ndr: GoalResult
    pdr: GoalResult
    pdr_loss_ratio: float
    trials: tuple[Trial, ...]
    trial_time_s: float
    elapsed_s: float
    stopped_by: StoppedBy
    notes: tuple[str, ...] = field(default=())
    capacity_pps: float | None = None
    sender_max_pps: float | None = None

    @property
    def ndr_pps(self) -> float | None:
        return self.ndr.lower_pps

    @property
    def pdr_pps(self) -> float | None:
        return self.pdr.lower_pps

    def to_dict(self) -> dict[str, Any]:
        """The SCHEMA.md "search" object."""
        return {"ndr": self.ndr.to_dict(), "pdr": self.pdr.to_dict(),
                "pdr_loss_ratio": self.pdr_loss_ratio, "capacity_pps": self.capacity_pps,
                "sender_max_pps": self.sender_max_pps, "notes": list(self.notes)}


# The delivered-rate plateau.
# Above a path's capacity C the receiver counts about C x T packets in a
# trial of T seconds whatever the offered rate: a policer passes C per
# second, and a shaper's queue, once full, drains at C (the queue's content
# adds at most its size / T, and nothing once a warm-up filled it). Random
# loss does not saturate: received = offered x (1 - p) grows with offered.
# So the plateau is a group of lossy, not sender-bound trials whose
# received rates lie within `precision` of the lowest of them while their
# offered rates span at least PLATEAU_MIN_SPAN times `precision` more; its
# value is that lowest received rate, the trial whose queue was fullest.
# Limits: needs two saturated trials well apart in offered rate; a receiver
# whose own CPU saturates shows a plateau too, which is then the capacity
# of path and receiver together.
PLATEAU_MIN_SPAN = 3.0


def delivered_plateau_pps(points: Iterable[tuple[float, float]], precision: float
                          ) -> float | None:
    """The received rate at which lossy trials saturate, or None.

    Args:
        points: (offered_pps, received_pps) of lossy trials or steps that
            were not sender-bound.
        precision: how close received rates must be to count as one level.

    Returns:
        The plateau's received rate, or None when received rates still grow
        with offered rate (or fewer than two saturated trials exist).
    """
    usable = sorted((received, offered) for offered, received in points
                    if received > 0 and offered > 0)
    for anchor, _ in usable:
        level = [offered for received, offered in usable
                 if anchor <= received <= anchor * (1.0 + precision)]
        if max(level) >= min(level) * (1.0 + PLATEAU_MIN_SPAN * precision) \
                and min(level) > anchor * (1.0 + precision):
            return anchor
    return None


class _Budget(Exception):
    """Raised inside the search when max_trials or max_time_s is reached."""

    def __init__(self, stopped_by: StoppedBy) -> None:
        super().__init__(stopped_by)
        self.stopped_by = stopped_by


@dataclass
class _Bounds:
    lower: float | None
    upper: float | None
    upper_by: UpperBoundBy
    hint: float | None          # best pass below upper proved only by shorter trials
    upper_hint: float | None    # lowest failure inside the interval seen only in shorter trials


class _Search:
    """The mutable state of one search; lives only inside search_throughput."""

    def __init__(self, trial: Callable[[float, float], TrialOutcome], *, min_pps: float,
                 max_pps: float, max_trials: int, max_time_s: float,
                 clock: Callable[[], float], precision: float = 0.01,
                 known: Sequence[TrialOutcome] = ()) -> None:
        self.trial = trial
        self.precision = precision
        self.known = tuple(known)
        self.min_pps = min_pps
        self.max_pps = max_pps
        self.max_trials = max_trials
        self.max_time_s = max_time_s
        self.clock = clock
        self.started = clock()
        self.trials: list[Trial] = []
        # (trial position, use) pairs whose loss already steered a jump: each
        # upper-bound trial's forwarding-rate estimate is tried at most once
        # for a jump down and once inside a bracket, then plain bisection
        # takes over, so a path whose loss misleads the estimate costs little.
        self.estimates_used: set[tuple[int, str]] = set()

    # -- measuring

    def run(self, rate_pps: float, duration_s: float, phase: int) -> None:
        if len(self.trials) >= self.max_trials:
            raise _Budget("max_trials")
        if self.clock() - self.started + duration_s > self.max_time_s:
            raise _Budget("max_time")
        outcome = self.trial(rate_pps, duration_s)
        if not isinstance(outcome, TrialOutcome):
            raise ConfigError(f"search: the trial callback returned {type(outcome).__name__};"
                              " it must return a TrialOutcome")
        if not 0.0 <= outcome.loss_ratio <= 1.0 or math.isnan(outcome.loss_ratio):
            if outcome.loss_ratio < 0.0:
                # More received than sent (duplicates): no loss.
                outcome = TrialOutcome(outcome.offered_pps, 0.0, outcome.sender_bound,
                                       outcome.duration_s, outcome.sent_pps)
            else:
                raise ConfigError(f"search: trial at {rate_pps:,.0f} pps returned loss_ratio"
                                  f" {outcome.loss_ratio!r}; it must be in [0, 1]")
        self.trials.append(Trial(rate_pps, duration_s, phase, outcome))

    def trial_time_s(self) -> float:
        return sum(t.outcome.duration_s for t in self.trials)

    def capacity_pps(self) -> float | None:
        outcomes = [*self.known, *(t.outcome for t in self.trials)]
        return delivered_plateau_pps(
            ((o.offered_pps, o.received_pps) for o in outcomes
             if o.loss_ratio > 0 and not o.sender_bound and o.received_pps is not None),
            self.precision)

    def sender_max_pps(self) -> float | None:
        """The highest rate the sender reached, when any trial was sender-bound."""
        if not any(t.outcome.sender_bound for t in self.trials):
            return None
        return max((min(t.rate_pps, t.outcome.sent_pps) if t.outcome.sent_pps is not None
                    else t.rate_pps for t in self.trials
                    if not t.outcome.sender_bound or t.outcome.sent_pps is not None),
                   default=None)

    # -- classification

    def bounds(self, goal_loss: float, duration_s: float, final: bool = False) -> _Bounds:
        def full(t: Trial) -> bool:
            return t.duration_s >= duration_s * (1 - _EPS)

        failing = [t for t in self.trials if t.loss_ratio > goal_loss]
        fails = [t.rate_pps for t in failing if full(t) or not final]
        caps = [t.rate_pps for t in self.trials
                if t.outcome.sender_bound and t.loss_ratio <= goal_loss]
        upper_fail = min(fails, default=None)
        upper_cap = min(caps, default=None)
        upper: float | None
        upper_by: UpperBoundBy
        if upper_fail is not None and (upper_cap is None or upper_fail <= upper_cap):
            upper, upper_by = upper_fail, "path"
        elif upper_cap is not None:
            upper, upper_by = upper_cap, "sender"
        else:
            upper, upper_by = None, "max_pps"
        capacity = self.capacity_pps()
        if capacity is not None:
            # Sustained, a rate above the plateau loses more than the goal allows.
            limit = capacity / (1.0 - goal_loss)
            if upper is None or limit < upper * (1 - _EPS):
                upper, upper_by = limit, "capacity"
        lower: float | None = None
        hint: float | None = None
        for t in self.trials:
            if t.outcome.sender_bound or t.loss_ratio > goal_loss:
                continue
            if upper is not None and t.rate_pps >= upper:
                continue  # a pass above a failure: non-monotonic noise, not a bound
            if full(t):
                lower = t.rate_pps if lower is None else max(lower, t.rate_pps)
            else:
                hint = t.rate_pps if hint is None else max(hint, t.rate_pps)
        if hint is not None and lower is not None and hint <= lower:
            hint = None
        upper_hint = min((t.rate_pps for t in failing if final and not full(t)
                          and (upper is None or t.rate_pps < upper)
                          and (lower is None or t.rate_pps > lower)), default=None)
        return _Bounds(lower, upper, upper_by, hint, upper_hint)

    def _estimate(self, upper: float, upper_by: UpperBoundBy, goal_loss: float,
                  use: str) -> float | None:
        """Where the trial at `upper` suggests the goal's limit lies (once per use)."""
        for position in range(len(self.trials) - 1, -1, -1):
            t = self.trials[position]
            if t.rate_pps != upper or (position, use) in self.estimates_used:
                continue
            self.estimates_used.add((position, use))
            if upper_by == "path" and t.loss_ratio > goal_loss:
                # The forwarding rate at overload, corrected by the allowed
                # loss (the MLRsearch "maximum receive rate" first guess).
                return upper * (1.0 - t.loss_ratio) / (1.0 - goal_loss)
            if upper_by == "sender" and t.outcome.sent_pps:
                return float(t.outcome.sent_pps)
            return None
        return None

    def next_rate(self, goal_loss: float, duration_s: float, width: float,
                  expansions: int, final: bool = False) -> tuple[float, bool] | None:
        """The next rate to try for one goal in one phase, or None when settled.

        Returns (rate, is_external): external steps grow geometrically while
        they last (1+w, (1+w)^2, (1+w)^4, ... in one direction).
        """
        b = self.bounds(goal_loss, duration_s, final)
        if b.upper_hint is not None:
            return b.upper_hint, False  # confirm a short trial's failure at the full duration
        lower, upper = b.lower, b.upper
        if lower is not None and upper is not None:
            if (upper - lower) / lower <= width * (1 + _EPS):
                return None
            midpoint = math.sqrt(lower * upper)  # bisection in log space
            estimate = self._estimate(upper, b.upper_by, goal_loss, "bracket")
            if estimate is not None:
                # Land just above the lower bound when overload says the limit
                # is near it: one trial can then close the interval.
                low_edge, high_edge = lower * (1 + width), upper / (1 + width)
                if low_edge < high_edge:
                    probe = min(max(estimate, low_edge), high_edge)
                    if probe < midpoint:
                        return probe, False
            return midpoint, False
        if lower is None:
            if upper is not None and upper <= self.min_pps * (1 + _EPS):
                return None  # min_pps itself fails: nothing lower to try
            if b.hint is not None:
                return b.hint, False  # re-prove the best earlier pass at this duration
            if upper is None:
                return self.max_pps, False
            rate = upper / (1 + width) ** (2 ** expansions)
            estimate = self._estimate(upper, b.upper_by, goal_loss, "jump")
            if estimate is not None and estimate < rate:
                rate = estimate
            return max(self.min_pps, rate), True
        # upper is None: nothing failed yet
        if lower >= self.max_pps * (1 - _EPS):
            return None
        return min(self.max_pps, lower * (1 + width) ** (2 ** expansions)), True


def _check(name: str, ok: bool, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"search: {name} must be {rule} (got {value!r})")


def search_throughput(
    trial: Callable[[float, float], TrialOutcome],
    *,
    min_pps: float,
    max_pps: float,
    pdr_loss_ratio: float = 0.005,
    precision: float = 0.01,
    initial_duration_s: float = 0.5,
    final_duration_s: float = 2.0,
    max_trials: int = 60,
    max_time_s: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
    known: Sequence[TrialOutcome] = (),
) -> SearchResult:
    """Find NDR (no loss) and PDR (loss <= pdr_loss_ratio) between min_pps and max_pps.

    Phases: the trial duration grows geometrically from initial_duration_s to
    final_duration_s (doubling per phase, so 0.5 s -> 1 s -> 2 s by default)
    while the width goal halves down to `precision` at the last phase. In each
    phase NDR is refined first, then PDR, every trial serving both:
      * no trial yet: try max_pps;
      * only an upper bound: jump down to the overload forwarding rate
        (rate x (1 - loss)) or by a step that grows geometrically;
      * only a lower bound: expand up by such a step, up to max_pps;
      * a lower bound proved only by shorter trials: re-run it at this duration;
      * in the last phase, a failure inside the interval seen only in a
        shorter trial: re-run it at the full duration;
      * both bounds: bisect in log space until (upper - lower) / lower <= width.
    The delivered-rate plateau of lossy trials (and of `known` ones), when
    there is one, caps both goals (see the module notes).

    Limits: any lossy trial pins an upper bound (no exceed ratio), so a noisy
    path yields a conservative NDR; NDR on software paths is less stable than
    PDR. Trials at one rate are not merged.

    Args:
        trial: runs one trial at (rate_pps, duration_s) and returns its outcome.
        min_pps, max_pps: the search range.
        pdr_loss_ratio: the PDR goal (0.005 = 0.5 %).
        precision: the final relative width (upper - lower) / lower.
        initial_duration_s, final_duration_s: trial durations of the first
            and last phase.
        max_trials, max_time_s: the budget; the search stops when the next
            trial would exceed either (max_time_s counts wall time by `clock`).
        clock: a monotonic clock in seconds (tests pass a fake one).
        known: outcomes measured before the search (a sweep's steps); they
            count only towards the delivered-rate plateau.

    Returns:
        SearchResult with both goals, the trials, and notes in words.

    Raises:
        ConfigError: an argument is out of range or the callback misbehaves.
    """
    finite = math.isfinite
    _check("min_pps", finite(min_pps) and min_pps > 0, min_pps, "a number > 0")
    _check("max_pps", finite(max_pps) and max_pps >= min_pps, max_pps, f">= min_pps ({min_pps})")
    _check("pdr_loss_ratio", 0.0 <= pdr_loss_ratio < 1.0, pdr_loss_ratio, "in [0, 1)")
    _check("precision", finite(precision) and precision > 0, precision, "a number > 0")
    _check("initial_duration_s", finite(initial_duration_s) and initial_duration_s > 0,
           initial_duration_s, "a number > 0")
    _check("final_duration_s", finite(final_duration_s) and final_duration_s >= initial_duration_s,
           final_duration_s, f">= initial_duration_s ({initial_duration_s})")
    _check("max_trials", isinstance(max_trials, int) and not isinstance(max_trials, bool)
           and max_trials >= 1, max_trials, "an integer >= 1")
    _check("max_time_s", max_time_s > 0, max_time_s, "> 0")

    ratio = final_duration_s / initial_duration_s
    last_phase = max(0, math.ceil(math.log2(ratio) - _EPS)) if ratio > 1 else 0
    phases = [(initial_duration_s * ratio ** (k / last_phase) if last_phase else final_duration_s,
               precision * 2.0 ** (last_phase - k)) for k in range(last_phase + 1)]

    search = _Search(trial, min_pps=min_pps, max_pps=max_pps, max_trials=max_trials,
                     max_time_s=max_time_s, clock=clock, precision=precision, known=known)
    goals = (0.0, pdr_loss_ratio)
    settled: dict[float, tuple[int, float]] = {}
    stopped_by: StoppedBy = "precision"
    try:
        for phase, (duration_s, width) in enumerate(phases):
            for goal_loss in goals:
                expansions = 0
                final = phase == last_phase
                while (step := search.next_rate(goal_loss, duration_s, width, expansions,
                                                final)) is not None:
                    rate_pps, external = step
                    search.run(rate_pps, duration_s, phase)
                    expansions = expansions + 1 if external else 0
                if phase == last_phase:
                    settled[goal_loss] = (len(search.trials), search.trial_time_s())
    except _Budget as stop:
        stopped_by = stop.stopped_by

    def result(goal_loss: float) -> GoalResult:
        complete = goal_loss in settled
        b = search.bounds(goal_loss, final_duration_s, final=complete)
        lower = b.lower
        if lower is None and not complete:
            lower = search.bounds(goal_loss, 0.0).lower  # best proof we have
        reached = search.sender_max_pps()
        if lower is not None and reached is not None and lower > reached:
            # Never claim a rate the sender did not reach.
            lower = max((t.rate_pps for t in search.trials if t.rate_pps <= reached
                         and not t.outcome.sender_bound and t.loss_ratio <= goal_loss),
                        default=None)
        lower_duration = max((t.duration_s for t in search.trials
                              if t.rate_pps == lower and not t.outcome.sender_bound
                              and t.loss_ratio <= goal_loss), default=None)
        trials, spent_s = settled.get(goal_loss, (len(search.trials), search.trial_time_s()))
        return GoalResult(goal_loss, lower, b.upper, b.upper_by, lower_duration,
                          trials, spent_s, complete)

    ndr, pdr = result(0.0), result(pdr_loss_ratio)
    capacity = search.capacity_pps()
    notes: list[str] = []
    if capacity is not None:
        absorbed = [t.rate_pps for t in search.trials if t.loss_ratio == 0
                    and not t.outcome.sender_bound and t.rate_pps > capacity * (1 + _EPS)]
        note = (f"capacity: the received rate saturates at {capacity:,.0f} pps (the"
                " delivered-rate plateau of the lossy trials)")
        if absorbed:
            note += (f"; {len(absorbed)} trial(s) up to {max(absorbed):,.0f} pps passed only"
                     " while a buffer absorbed the excess")
        notes.append(note)
    for name, goal in (("NDR", ndr), ("PDR", pdr)):
        if goal.upper_bound_by == "sender":
            notes.append(f"{name}: the upper bound is the sender, not the path: it could not"
                         f" generate {goal.upper_pps:,.0f} pps")
        elif goal.upper_bound_by == "capacity":
            notes.append(f"{name}: bounded by the path's delivered capacity"
                         f" ({goal.upper_pps:,.0f} pps for this goal)")
        elif goal.upper_bound_by == "max_pps" and goal.lower_pps is not None:
            notes.append(f"{name}: no loss above the goal up to max_pps {max_pps:,.0f} pps;"
                         " raise max_pps to find the limit")
        if goal.lower_pps is None and goal.upper_pps is not None:
            notes.append(f"{name}: even min_pps {min_pps:,.0f} pps failed; lower min_pps")
    if stopped_by != "precision":
        notes.append(f"stopped by {stopped_by} after {len(search.trials)} trials:"
                     f" bounds may be wider than precision {precision:g}")
    return SearchResult(ndr=ndr, pdr=pdr, pdr_loss_ratio=pdr_loss_ratio,
                        trials=tuple(search.trials), trial_time_s=search.trial_time_s(),
                        elapsed_s=clock() - search.started, stopped_by=stopped_by,
                        notes=tuple(notes), capacity_pps=capacity,
                        sender_max_pps=search.sender_max_pps())
