"""The knee finder: where a path stops keeping up, said in words.

Owns the pass/fail criteria of a sweep step (loss, p99 latency against a
low-rate baseline, delivered rate against offered), the attribution of a
step's loss (sender, receiving host, or path), the confirmed knee of a sweep,
and a Kneedle curvature estimate of the p99-latency curve.

Invariants:
  * A step dict has the shape of SCHEMA.md's "step"; nothing here mutates one
    (`annotate` returns copies).
  * Repeats of one offered rate are judged by their medians, never one by one.
  * A sender-bound step is neither a pass nor a fail of the path: it is never
    the knee, never a confirmation, never the "last good rate", never part of
    the latency baseline.
  * A single failure followed by passes is noise, not a knee.
  * Loss that the path shows at every rate, the same at low rates as at
    higher ones, is the path's loss floor: steps are judged on the loss
    above it, and the floor alone is never a knee.

Must not: do I/O, print, read clocks or know how steps were measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from pktbench.errors import ConfigError
from pktbench.search import delivered_plateau_pps
from pktbench.step import counts_requests

Step = Mapping[str, Any]
Criterion = Literal["loss", "latency", "delivery"]
Attribution = Literal["ok", "sender-bound", "receiver-host-bound", "receiver-reassembly-failed",
                      "path-bound", "late", "unanswered", "server-error"]

__all__ = [
    "DEFAULT_LATENCY_FLOOR_US",
    "FLOOR_MIN_RATES",
    "Failure",
    "KneeCriteria",
    "KneeResult",
    "analyze_steps",
    "annotate",
    "capacity_pps",
    "attribute",
    "baseline_p99_us",
    "evaluate_step",
    "find_knee",
    "kneedle",
    "latency_kneedle_pps",
    "loss_floor_ratio",
    "pending_confirmation_pps",
    "summarize_knee",
]

# Why a latency floor, and why 50 us.
# The latency criterion compares a step's p99 with k x the baseline p99 of the
# lowest-rate steps. When the baseline is tiny (busy-poll RR measures p99 of
# about 5 us on loopback and veth), k x baseline is 20 us: one vCPU wake-up
# (~75 us on the measured hosts), a timer tick or a softirq that lands on the
# wrong core moves p99 that far with no queue anywhere on the path. A knee is a
# queue building up, and at the rates pktbench sweeps (10^4..10^6 pps) a queue
# that matters adds hundreds of microseconds. So the limit is
#     k x max(baseline p99, floor)
# With the defaults (k = 4, floor = 50 us) a busy-poll baseline of 5-10 us
# needs p99 above 200 us to fail (40 us vs 10 us passes), while a blocking-mode
# baseline (p99 110-140 us, above the floor) is judged by k x baseline alone.
DEFAULT_LATENCY_FLOOR_US = 50.0

# Why a loss floor, and how it is told from a knee.
# A path that drops a fixed share of packets whatever the rate (a lossy
# radio link, a policer on another flow, nftables `numgen random`) fails a
# plain loss threshold at every step, and calling its lowest rate "the knee"
# sends the user looking for a capacity limit that does not exist. Overload
# loss grows with rate (loss = 1 - capacity / offered above the limit);
# random loss does not. So, with the floor set to "auto", the floor is the
# median loss of the lowest max(FLOOR_MIN_RATES, baseline_steps) judged
# rates when every one of them lost packets and their losses differ by no
# more than max_loss_ratio plus three binomial standard deviations (the
# noise of counting p x n losses out of n packets). Limits: a sweep that
# starts above a knee whose loss grows slowly (under max_loss_ratio between
# its first rates) reads as a floor; the knee is then found above it, on
# the loss the floor leaves. Start sweeps below the expected knee.
FLOOR_MIN_RATES = 2


@dataclass(frozen=True)
class KneeCriteria:
    """What makes a step fail. All thresholds are inclusive on the passing side.

    Attributes:
        max_loss_ratio: a step fails when loss_ratio is above this (0.005 = 0.5 %).
        latency_factor: a step fails when p99 latency is above this many times
            max(baseline p99, latency_floor_us). Only steps with latency (rr).
        min_delivery_ratio: a step fails when received_pps (responses per
            second for rr) is below this fraction of offered_pps.
        baseline_steps: the baseline p99 is the median of the p99 of this many
            lowest offered rates that are not sender-bound.
        confirm_steps: how many further failures (next higher rates, or failing
            retrials at the same rate) a failure needs to be the knee.
        latency_floor_us: the smallest baseline the latency limit is built on
            (see DEFAULT_LATENCY_FLOOR_US for why).
        loss_floor_ratio: the path's rate-independent loss, which steps are
            judged above: None detects it from the lowest rates (see
            FLOOR_MIN_RATES), 0 judges raw loss, a ratio is a floor known in
            advance.
    """

    max_loss_ratio: float = 0.005
    latency_factor: float = 4.0
    min_delivery_ratio: float = 0.95
    baseline_steps: int = 2
    confirm_steps: int = 1
    latency_floor_us: float = DEFAULT_LATENCY_FLOOR_US
    loss_floor_ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_loss_ratio <= 1.0:
            raise ConfigError(
                f"knee criteria: max_loss_ratio must be in [0, 1] (got {self.max_loss_ratio!r})"
            )
        if not self.latency_factor > 1.0:  # also rejects NaN
            raise ConfigError(
                f"knee criteria: latency_factor must be > 1 (got {self.latency_factor!r});"
                " use inf to disable the latency criterion"
            )
        if not 0.0 <= self.min_delivery_ratio <= 1.0:
            raise ConfigError(
                "knee criteria: min_delivery_ratio must be in [0, 1]"
                f" (got {self.min_delivery_ratio!r}); use 0 to disable it"
            )
        if isinstance(self.baseline_steps, bool) or not isinstance(self.baseline_steps, int) \
                or self.baseline_steps < 1:
            raise ConfigError(
                f"knee criteria: baseline_steps must be an integer >= 1 (got {self.baseline_steps!r})"
            )
        if isinstance(self.confirm_steps, bool) or not isinstance(self.confirm_steps, int) \
                or self.confirm_steps < 0:
            raise ConfigError(
                f"knee criteria: confirm_steps must be an integer >= 0 (got {self.confirm_steps!r})"
            )
        if not (self.latency_floor_us >= 0.0 and math.isfinite(self.latency_floor_us)):
            raise ConfigError(
                "knee criteria: latency_floor_us must be a finite number >= 0"
                f" (got {self.latency_floor_us!r})"
            )
        if self.loss_floor_ratio is not None and (
                isinstance(self.loss_floor_ratio, bool)
                or not 0.0 <= self.loss_floor_ratio < 1.0):
            raise ConfigError(
                "knee criteria: loss_floor_ratio must be in [0, 1), or None to detect it"
                f" (got {self.loss_floor_ratio!r})"
            )


@dataclass(frozen=True)
class Failure:
    """One criterion a step failed: which, the measured value, the limit, in words."""

    criterion: Criterion
    reason: str
    value: float
    limit: float


@dataclass(frozen=True)
class KneeResult:
    """The confirmed knee of a sweep.

    Attributes:
        offered_pps: the lowest offered rate whose (median) step failed, confirmed.
        last_good_pps: the highest passing rate below it; None if the knee is
            the first rate the path was judged at.
        reason: every failure at the knee, in words, joined by "; ".
        criterion: the first failed criterion, in the order loss, latency, delivery.
        step_index: the "index" of a step at the knee rate that failed (its
            position in the sweep; the list position if the step has no index).
        attribution: where the knee's lost packets went (see `attribute`),
            decided by the majority of the repeats at the knee rate.
        failures: the Failure records behind `reason`.
        loss_floor_ratio: the loss floor the knee was judged above (0: none).
    """

    offered_pps: float
    last_good_pps: float | None
    reason: str
    criterion: Criterion
    step_index: int
    attribution: Attribution = "ok"
    failures: tuple[Failure, ...] = ()
    loss_floor_ratio: float = 0.0


# --------------------------------------------------------------------------- words

def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _percent(ratio: float, *, distinct_from: float | None = None) -> str:
    """A ratio as a percentage with as few digits as reads well.

    When `distinct_from` is given, digits are added until the two renderings
    differ, so "loss 0.501% > 0.5%" never prints as "0.5% > 0.5%".
    """
    value = 100.0 * ratio
    decimals = 0 if abs(value) >= 10 else 1 if abs(value) >= 1 else 2
    text = _trim(f"{value:.{decimals}f}")
    if distinct_from is not None:
        other = 100.0 * distinct_from
        while decimals < 6:
            other_text = _trim(f"{other:.{decimals}f}")
            if text != other_text or value == other:
                break
            decimals += 1
            text = _trim(f"{value:.{decimals}f}")
    return text + "%"


def _factor(value: float, limit: float) -> str:
    decimals = 1
    while decimals < 4 and f"{value:.{decimals}f}" == f"{limit:.{decimals}f}" and value != limit:
        decimals += 1
    return f"{value:.{decimals}f}"


def _us(value: float) -> str:
    return f"{value:,.1f}" if abs(value) < 10 else f"{value:,.0f}"


def _pps(value: float) -> str:
    return f"{value:,.0f}"


# --------------------------------------------------------------------------- steps

def _field(step: Step, key: str, position: int | None = None) -> float:
    try:
        value = step[key]
    except KeyError:
        where = f"step {step.get('index', position)}"
        raise ConfigError(f"{where}: missing {key!r}; pass step dicts shaped like SCHEMA.md") from None
    if value is None:
        where = f"step {step.get('index', position)}"
        raise ConfigError(f"{where}: {key!r} is None; pass step dicts shaped like SCHEMA.md")
    return float(value)


def _p99_us(step: Step) -> float | None:
    latency = step.get("latency_us")
    if not latency:
        return None
    p99 = latency.get("p99")
    return None if p99 is None else float(p99)


def evaluate_step(step: Step, baseline_p99_us: float | None,
                  criteria: KneeCriteria = KneeCriteria(),
                  loss_floor_ratio: float = 0.0) -> list[Failure]:
    """The criteria one step fails, in the order loss, latency, delivery.

    Args:
        step: a step dict (SCHEMA.md), or the median step of a rate's repeats.
        baseline_p99_us: the sweep's baseline p99 (`baseline_p99_us()`); None
            skips the latency criterion, as does a step without latency.
        criteria: the thresholds.
        loss_floor_ratio: the path's loss floor (`loss_floor_ratio()`): the
            loss limit is max_loss_ratio above it (plus three binomial
            standard deviations of the floor over the step's sent_packets),
            and the delivery limit is min_delivery_ratio of what the floor
            leaves.

    Returns:
        One Failure per failed criterion; [] when the step passes.

    Raises:
        ConfigError: the step lacks offered_pps, received_pps or loss_ratio.
    """
    failures: list[Failure] = []
    loss_ratio = _field(step, "loss_ratio")
    # Loss drawn at random by the floor varies from step to step: three
    # binomial standard deviations of it are counting noise, not a knee.
    packets = float(step.get("sent_packets") or 0)
    noise = (3.0 * math.sqrt(loss_floor_ratio * (1.0 - loss_floor_ratio) / packets)
             if loss_floor_ratio > 0 and packets > 0 else 0.0)
    loss_limit = loss_floor_ratio + criteria.max_loss_ratio + noise
    requests = counts_requests(step)
    if loss_ratio > loss_limit:
        # Over TCP nothing is lost on the way: a request is answered late or
        # not at all, and the two say different things about the path.
        what = "late or unanswered" if requests else "loss"
        reason = (f"{what} {_percent(loss_ratio, distinct_from=loss_limit)}"
                  f" > {_percent(loss_limit)}")
        if requests:
            reason += _late_words(step)
        if loss_floor_ratio > 0:
            reason += (f" ({_percent(criteria.max_loss_ratio)} above the"
                       f" {_percent(loss_floor_ratio)} loss floor"
                       + (f", {_percent(noise)} counting noise" if noise else "") + ")")
        failures.append(Failure("loss", reason, loss_ratio, loss_limit))

    p99 = _p99_us(step)
    if p99 is not None and baseline_p99_us is not None:
        limit_us = criteria.latency_factor * max(baseline_p99_us, criteria.latency_floor_us)
        if p99 > limit_us:
            if baseline_p99_us > 0:
                head = (f"p99 latency {_factor(p99 / baseline_p99_us, criteria.latency_factor)}x"
                        f" baseline ({_us(p99)} us vs {_us(baseline_p99_us)} us")
            else:
                head = f"p99 latency above baseline ({_us(p99)} us vs {_us(baseline_p99_us)} us"
            if baseline_p99_us < criteria.latency_floor_us:
                # Say why a large multiple is judged against a larger limit.
                head += f"; limit {_us(limit_us)} us from the {_us(criteria.latency_floor_us)} us floor"
            failures.append(Failure("latency", head + ")", p99, limit_us))

    offered_pps = _field(step, "offered_pps")
    received_pps = _field(step, "received_pps")
    if offered_pps > 0:
        delivery = received_pps / offered_pps
        delivery_limit = criteria.min_delivery_ratio * (1.0 - loss_floor_ratio)
        if delivery < delivery_limit:
            got, unit = ("answered", "req/s") if requests else ("received", "pps")
            reason = (f"{got} {_pps(received_pps)} {unit} is"
                      f" {_percent(delivery, distinct_from=delivery_limit)}"
                      f" of offered {_pps(offered_pps)} {unit}")
            if loss_floor_ratio > 0:
                reason += (f" (limit {_percent(delivery_limit)} with the"
                           f" {_percent(loss_floor_ratio)} loss floor)")
            failures.append(Failure("delivery", reason, delivery, delivery_limit))
    return failures


def _late_words(step: Step) -> str:
    """" (2.5% late: answered after the 200 ms timeout; 0.4% unanswered)"."""
    requests = float(step.get("requests") or 0)
    if requests <= 0:
        return ""
    timeout_ms = 1000.0 * float(step.get("timeout_s") or 0.0)
    parts = [f"{_percent(float(step.get('late_requests') or 0) / requests)} late: answered "
             f"after the {timeout_ms:,.0f} ms timeout",
             f"{_percent(float(step.get('unanswered_requests') or 0) / requests)} unanswered"]
    errors = float(step.get("error_requests") or 0)
    if errors:
        parts.append(f"{_percent(errors / requests)} answered with an error")
    return " (" + "; ".join(parts) + ")"


def attribute(step: Step) -> Attribution:
    """Where a step's lost packets went.

    The rule, in order:
      1. "sender-bound" when step["sender_bound"] is true: the sender could not
         generate the offered rate (short sends, EAGAIN/ENOBUFS), so nothing
         about the path can be read from this step.
      2. "ok" when no packet was lost (lost_packets == 0). Attribution speaks
         about loss only; a latency or delivery failure without loss stays "ok"
         here and is explained by the step's failures.
      3. "receiver-host-bound" when the receiving host's socket-buffer drops
         (receiver.rcvbuf_errors, capped at lost_packets because the kernel
         counter may be host-wide) are more than half of lost_packets: the
         packets crossed the path and the receiving host could not take them.
      4. "receiver-reassembly-failed" ("receiving host: IP reassembly
         failed") when the receiving host's IP reassembly failures during the
         step (receiver.ip_reassembly.fails, capped the same way) are more than
         half of lost_packets: fragments arrived and never made a datagram.
      5. "path-bound" otherwise: most lost packets were sent but never reached
         the receiver's socket (or, for rr, their responses never came back).
         Packets the receiver read and then rejected (receiver.drops) count on
         this side: they arrived as something other than what was sent.
    A step counted in requests (rr-tcp, redis://) loses nothing on the way:
    TCP delivers or stalls. Its requests not answered in time are "late"
    (answered after the timeout), "unanswered" (no reply by the end of the
    drain, requests never written included) or "server-error" (a RESP error
    reply), whichever holds most of them.
    """
    if step.get("sender_bound"):
        return "sender-bound"
    lost_packets = step.get("lost_packets")
    if lost_packets is None:
        lost_packets = round(float(step.get("loss_ratio") or 0.0) * int(step.get("sent_packets") or 0))
    lost = int(lost_packets)
    if lost <= 0:
        return "ok"
    if counts_requests(step):
        shares: dict[Attribution, int] = {
            "late": int(step.get("late_requests") or 0),
            "unanswered": int(step.get("unanswered_requests") or 0),
            "server-error": int(step.get("error_requests") or 0)}
        return max(shares, key=lambda name: shares[name])
    receiver = step.get("receiver") or {}
    rcvbuf = min(int(receiver.get("rcvbuf_errors") or 0), lost)
    if 2 * rcvbuf > lost:
        return "receiver-host-bound"
    reassembly = receiver.get("ip_reassembly") or {}
    if 2 * min(int(reassembly.get("fails") or 0), lost) > lost:
        return "receiver-reassembly-failed"
    return "path-bound"


# --------------------------------------------------------------------------- grouping

@dataclass(frozen=True)
class _Rate:
    """The repeats of one offered rate, judged by their medians."""

    offered_pps: float
    positions: tuple[int, ...]   # list positions of the non-sender-bound repeats
    median_step: dict[str, Any]  # {} when every repeat was sender-bound
    sender_bound: bool


# What a median step of a rate counted in requests carries for its reasons.
_REQUEST_KEYS = ("offered_rps", "requests", "late_requests", "unanswered_requests",
                 "error_requests", "timeout_s")


def _group(steps: Sequence[Step]) -> list[_Rate]:
    by_rate: dict[float, list[int]] = {}
    for position, step in enumerate(steps):
        rate = _field(step, "offered_pps", position)
        # Repeats carry the same planned rate; rounding absorbs float noise
        # from a JSON round trip or a rate computed twice.
        by_rate.setdefault(round(rate, 3), []).append(position)
    groups: list[_Rate] = []
    for rate in sorted(by_rate):
        usable = [p for p in by_rate[rate] if not steps[p].get("sender_bound")]
        if not usable:
            groups.append(_Rate(rate, (), {}, True))
            continue
        p99s = [v for v in (_p99_us(steps[p]) for p in usable) if v is not None]
        median_step: dict[str, Any] = {
            "index": steps[usable[0]].get("index", usable[0]),
            "offered_pps": float(np.median([_field(steps[p], "offered_pps", p) for p in usable])),
            "received_pps": float(np.median([_field(steps[p], "received_pps", p) for p in usable])),
            "loss_ratio": float(np.median([_field(steps[p], "loss_ratio", p) for p in usable])),
            "latency_us": {"p99": float(np.median(p99s))} if p99s else None,
            "sent_packets": float(np.median([float(steps[p].get("sent_packets") or 0)
                                             for p in usable])),
            "sender_bound": False,
        }
        if counts_requests(steps[usable[0]]):
            for key in _REQUEST_KEYS:
                median_step[key] = float(np.median([float(steps[p].get(key) or 0)
                                                    for p in usable]))
        groups.append(_Rate(rate, tuple(usable), median_step, False))
    return groups


def _baseline(groups: Sequence[_Rate], criteria: KneeCriteria) -> float | None:
    p99s = [p for p in (_p99_us(g.median_step) for g in groups if not g.sender_bound)
            if p is not None]
    if not p99s:
        return None
    return float(np.median(p99s[: criteria.baseline_steps]))


def baseline_p99_us(steps: Sequence[Step], criteria: KneeCriteria = KneeCriteria()) -> float | None:
    """The latency baseline: median p99 of the lowest `baseline_steps` rates.

    Rates are taken in increasing offered order, skipping sender-bound ones and
    ones without latency; each rate contributes the median p99 of its repeats.
    Returns None when no step has latency (blast sweeps). A knee inside the
    baseline rates cannot be seen by the latency criterion: keep the first
    rates of a sweep well below the expected knee.
    """
    return _baseline(_group(steps), criteria)


def _floor(groups: Sequence[_Rate], criteria: KneeCriteria) -> float:
    if criteria.loss_floor_ratio is not None:
        return criteria.loss_floor_ratio
    judged = [g for g in groups if not g.sender_bound]
    low = judged[: max(FLOOR_MIN_RATES, criteria.baseline_steps)]
    if len(low) < FLOOR_MIN_RATES:
        return 0.0  # one rate cannot show that loss does not grow with rate
    losses = [float(g.median_step["loss_ratio"]) for g in low]
    if min(losses) <= 0.0:
        return 0.0
    floor = float(np.median(losses))
    packets = [float(g.median_step.get("sent_packets") or 0) for g in low]
    # Two counts of the same binomial loss differ by up to ~3 sigma of their difference.
    sigmas = [math.sqrt(floor * (1.0 - floor) / n) for n in packets if n > 0]
    noise = 3.0 * math.sqrt(2.0) * max(sigmas, default=0.0)
    if max(losses) - min(losses) > criteria.max_loss_ratio + noise:
        return 0.0  # loss grows with rate: overload, not a floor
    return floor


def loss_floor_ratio(steps: Sequence[Step], criteria: KneeCriteria = KneeCriteria()) -> float:
    """The path's rate-independent loss ratio, 0.0 when there is none.

    With criteria.loss_floor_ratio set, that value; with None, the median
    loss of the lowest judged rates when all of them lost packets and their
    losses do not grow with rate (see FLOOR_MIN_RATES for the rule and its
    limits). Steps are judged on the loss above it.
    """
    return _floor(_group(steps), criteria)


def _step_index(steps: Sequence[Step], position: int) -> int:
    index = steps[position].get("index")
    return int(index) if index is not None else position


# --------------------------------------------------------------------------- knee

def _scan(steps: Sequence[Step], criteria: KneeCriteria
          ) -> tuple[KneeResult | None, float | None]:
    """Walk the rates upward; return (knee, rate awaiting confirmation)."""
    groups = _group(steps)
    baseline = _baseline(groups, criteria)
    floor = _floor(groups, criteria)
    judged = [g for g in groups if not g.sender_bound]
    verdicts = [evaluate_step(g.median_step, baseline, criteria, floor) for g in judged]
    for i, (group, failures) in enumerate(zip(judged, verdicts)):
        if not failures:
            continue
        # Confirmations: failing retrials at this rate beyond the first
        # failing repeat, then consecutive failing rates above it.
        failing_repeats = sum(1 for p in group.positions
                              if evaluate_step(steps[p], baseline, criteria, floor))
        confirmations = max(0, failing_repeats - 1)
        j = i + 1
        while confirmations < criteria.confirm_steps and j < len(judged) and verdicts[j]:
            confirmations += 1
            j += 1
        if confirmations < criteria.confirm_steps:
            if j >= len(judged):
                # Failing up to the last judged rate but not yet confirmed:
                # neither noise nor knee until a retrial says which.
                return None, group.offered_pps
            continue  # a passing rate came first: this failure was noise
        last_good = next((judged[k].offered_pps for k in range(i - 1, -1, -1) if not verdicts[k]),
                         None)
        failing = [p for p in group.positions
                   if evaluate_step(steps[p], baseline, criteria, floor)]
        representative = failing[0] if failing else group.positions[0]
        attributions = [attribute(steps[p]) for p in group.positions]
        majority = max(set(attributions), key=lambda a: (attributions.count(a), a != "ok", a))
        knee = KneeResult(
            offered_pps=group.offered_pps,
            last_good_pps=last_good,
            reason="; ".join(f.reason for f in failures),
            criterion=failures[0].criterion,
            step_index=_step_index(steps, representative),
            attribution=majority,
            failures=tuple(failures),
            loss_floor_ratio=floor,
        )
        return knee, None
    return None, None


def find_knee(steps: Sequence[Step], criteria: KneeCriteria = KneeCriteria()) -> KneeResult | None:
    """The confirmed knee of a sweep, or None.

    Steps are grouped by offered rate (repeats are judged by the median of
    their loss ratio, received rate and p99). Sender-bound repeats are set
    aside; a rate whose repeats are all sender-bound is skipped. Walking the
    rates upward, the knee is the first failing rate whose failure is
    confirmed by `criteria.confirm_steps` further failures: failing retrials
    at the same rate first, then the next higher judged rates. A failure
    followed by a pass before it is confirmed is noise and the walk goes on.
    A failure at the top of the sweep that nothing confirms is not a knee
    (see `pending_confirmation_pps` to schedule a retrial).

    Args:
        steps: step dicts (SCHEMA.md) in any order, repeats included.
        criteria: the thresholds.

    Returns:
        The KneeResult, or None when no confirmed failure exists.

    Raises:
        ConfigError: a step lacks offered_pps, received_pps or loss_ratio.
    """
    return _scan(steps, criteria)[0]


def pending_confirmation_pps(steps: Sequence[Step],
                             criteria: KneeCriteria = KneeCriteria()) -> float | None:
    """The rate whose failure still needs a retrial to count as the knee.

    Non-None only when the lowest unexplained failure is at (or just under)
    the top of what was judged, so no higher rate can confirm it; the sweep
    driver can rerun that rate and call `find_knee` again.
    """
    return _scan(steps, criteria)[1]


def annotate(steps: Sequence[Step], criteria: KneeCriteria = KneeCriteria()) -> list[dict[str, Any]]:
    """Copies of the steps with "failures" (reasons in words) and "attribution" filled.

    Each step is judged on its own numbers against the sweep's baseline, so a
    noisy repeat shows its own failure in the table even when the rate's
    median passes, and against the sweep's loss floor. Sender-bound steps
    keep their failures as facts; their attribution says they do not speak
    for the path.
    """
    groups = _group(steps)
    baseline = _baseline(groups, criteria)
    floor = _floor(groups, criteria)
    annotated: list[dict[str, Any]] = []
    for step in steps:
        copy = dict(step)
        failures = evaluate_step(step, baseline, criteria, floor)
        copy["failures"] = [f.reason for f in failures]
        copy["failed_criteria"] = [f.criterion for f in failures]
        copy["attribution"] = attribute(step)
        annotated.append(copy)
    return annotated


def _path_at(steps: Sequence[Step], rate: float | None, index: int | None = None
             ) -> dict[str, Any] | None:
    """The path figures of the step at `index`, or of the median repeat at `rate`."""
    if index is not None:
        chosen = [s for s in steps if s.get("index") == index]
    elif rate is not None:
        at_rate = sorted((s for s in steps if round(float(s.get("offered_pps") or 0), 3)
                          == round(rate, 3) and not s.get("sender_bound")),
                         key=lambda s: float((s.get("path") or {}).get("toward_server_pps") or 0))
        chosen = at_rate[len(at_rate) // 2:][:1]
    else:
        return None
    path = chosen[0].get("path") if chosen else None
    return dict(path) if isinstance(path, Mapping) else None


def summarize_knee(knee: KneeResult | None, steps: Sequence[Step] = ()) -> dict[str, Any] | None:
    """The SCHEMA.md "knee" object for a KneeResult (None stays None).

    A sweep counted in requests (rr-tcp, redis://) names its rates in
    requests/s too (offered_rps, last_good_rps) and carries the path's
    packets at the knee step and at the last good rate (the steps' "path").
    """
    if knee is None:
        return None
    summary: dict[str, Any] = {
        "offered_pps": knee.offered_pps,
        "last_good_pps": knee.last_good_pps,
        "reason": knee.reason,
        "criterion": knee.criterion,
        "step_index": knee.step_index,
        "loss_floor_ratio": knee.loss_floor_ratio,
    }
    if steps and all(counts_requests(s) for s in steps):
        summary.update({
            "offered_rps": knee.offered_pps,
            "last_good_rps": knee.last_good_pps,
            "path": _path_at(steps, knee.offered_pps, knee.step_index),
            "last_good_path": _path_at(steps, knee.last_good_pps),
        })
    return summary


# --------------------------------------------------------------------------- Kneedle

# Kneedle (Satopaa, Albrecht, Irwin, Raghavan, ICDCS Workshops 2011), offline
# form, written from the paper's description:
#   1. sort by x, normalise x and y to [0, 1];
#   2. turn the curve into a concave increasing one (convex curves are
#      reflected in y, decreasing concave and increasing convex ones in x);
#   3. difference curve D = y_n - x_n: the knee maximises the distance from
#      the chord joining the end points;
#   4. at every local maximum of D set a threshold T = D(max) - S * mean(dx_n);
#      the knee is the first maximum after which D falls below T before the
#      next maximum; reaching a local minimum first resets T to 0.
# Limits: no smoothing (median repeats first: noise makes spurious maxima),
# needs >= 3 distinct x, and it finds curvature, not a threshold crossing: on
# a sweep it answers "where does the curve bend", not "where does it fail".
# A straight line has D == 0 everywhere and no knee.

def kneedle(x: Iterable[float], y: Iterable[float], *,
            curve: Literal["convex", "concave"] = "convex",
            direction: Literal["increasing", "decreasing"] = "increasing",
            sensitivity: float = 1.0) -> float | None:
    """The knee of a curve by Kneedle, in x units, or None.

    Args:
        x: distinct sample positions (any order).
        y: values at x.
        curve: "convex" (bends up, e.g. latency vs rate) or "concave" (bends
            down, e.g. delivered vs offered rate).
        direction: "increasing" or "decreasing" overall trend of y.
        sensitivity: S of the paper; larger is more conservative.

    Returns:
        The x of the knee, or None with fewer than 3 points, a flat or
        straight curve, or no point where the bend is clear enough.

    Raises:
        ConfigError: bad curve/direction/sensitivity, mismatched lengths,
            non-finite values or repeated x.
    """
    if curve not in ("convex", "concave"):
        raise ConfigError(f"kneedle: curve must be 'convex' or 'concave' (got {curve!r})")
    if direction not in ("increasing", "decreasing"):
        raise ConfigError(
            f"kneedle: direction must be 'increasing' or 'decreasing' (got {direction!r})")
    if not (sensitivity >= 0.0 and math.isfinite(sensitivity)):
        raise ConfigError(f"kneedle: sensitivity must be a finite number >= 0 (got {sensitivity!r})")
    xs = np.asarray(list(x), dtype=float)
    ys = np.asarray(list(y), dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ConfigError(f"kneedle: x and y must be 1-D and of equal length "
                          f"(got {xs.shape} and {ys.shape})")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ConfigError("kneedle: x and y must be finite; drop NaN/inf points first")
    if xs.size < 3:
        return None
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if np.any(np.diff(xs) <= 0):
        raise ConfigError("kneedle: x values must be distinct; take the median of repeats first")
    y_span = float(ys.max() - ys.min())
    if y_span == 0.0:
        return None
    xn = (xs - xs[0]) / (xs[-1] - xs[0])
    yn = (ys - ys.min()) / y_span
    original = np.arange(xs.size)
    if curve == "convex":
        yn = 1.0 - yn
    if (curve == "convex") == (direction == "increasing"):
        xn = (1.0 - xn)[::-1]
        yn = yn[::-1]
        original = original[::-1]
    diff = yn - xn
    # Float noise on a straight line must not look like a bend.
    diff[np.abs(diff) < 1e-12] = 0.0
    step_x = float(np.mean(np.diff(xn)))
    d = [float(v) for v in diff]
    n = len(d)

    def is_max(i: int) -> bool:
        return 0 < i < n - 1 and d[i - 1] < d[i] >= d[i + 1]

    def is_min(i: int) -> bool:
        return 0 < i < n - 1 and d[i - 1] > d[i] <= d[i + 1]

    candidate: int | None = None
    threshold = 0.0
    for i in range(1, n):
        if candidate is not None and d[i] < threshold:
            return float(xs[original[candidate]])
        if is_max(i):
            candidate = i
            threshold = d[i] - sensitivity * step_x
        elif candidate is not None and is_min(i):
            threshold = 0.0
    return None


def latency_kneedle_pps(steps: Sequence[Step], *, sensitivity: float = 1.0,
                        log_rate: bool = False) -> float | None:
    """Kneedle's estimate of where p99 latency bends upward against offered rate.

    Uses the median p99 of each rate's non-sender-bound repeats (convex,
    increasing). With `log_rate`, rates are compared on a log axis, which suits
    geometric sweeps. None for sweeps without latency or with < 3 rates.
    """
    points = [(g.offered_pps, _p99_us(g.median_step)) for g in _group(steps) if not g.sender_bound]
    usable = [(r, p) for r, p in points if p is not None and r > 0]
    if len(usable) < 3:
        return None
    rates = np.array([r for r, _ in usable])
    p99s = np.array([p for _, p in usable])
    xs = np.log(rates) if log_rate else rates
    knee_x = kneedle(xs, p99s, curve="convex", direction="increasing", sensitivity=sensitivity)
    if knee_x is None:
        return None
    return float(math.exp(knee_x)) if log_rate else knee_x


# Steps of a sweep are as far apart as its rates; received rates within 1 %
# of each other over rates that far apart are one level.
PLATEAU_PRECISION = 0.01


def capacity_pps(steps: Sequence[Step]) -> float | None:
    """The delivered-rate plateau of a sweep's lossy steps (see search.delivered_plateau_pps)."""
    return delivered_plateau_pps(
        ((_field(s, "offered_pps"), _field(s, "received_pps")) for s in steps
         if float(s.get("loss_ratio") or 0.0) > 0 and not s.get("sender_bound")),
        PLATEAU_PRECISION)


def sender_max_pps(steps: Sequence[Step]) -> float | None:
    """The highest rate the sender reached, when some step was sender-bound (else None)."""
    if not any(s.get("sender_bound") for s in steps):
        return None
    return max((float(s.get("sent_pps") or 0.0) for s in steps), default=None)


def analyze_steps(steps: Sequence[Step], criteria: KneeCriteria = KneeCriteria()
                  ) -> dict[str, Any]:
    """Everything the reports need from a sweep's steps.

    Returns:
        {"verdict": "fail" when a knee was found (or the only step failed),
         "failed_criteria": criteria any judged step failed,
         "steps": annotated copies, "knee": SCHEMA knee object or None,
         "kneedle_pps": float or None, "baseline_p99_us": float or None,
         "loss_floor_ratio": the floor steps were judged above (0.0: none),
         "capacity_pps": the delivered-rate plateau or None,
         "sender_max_pps": the sender's highest rate when it was bound, or None}
    """
    knee = find_knee(steps, criteria)
    annotated = annotate(steps, criteria)
    failed = {c for s in annotated if not s.get("sender_bound") for c in s["failed_criteria"]}
    failed_criteria = [c for c in ("loss", "latency", "delivery") if c in failed]
    # One step cannot be confirmed by another: `run` fails on its own failures.
    single = len(steps) == 1 and not steps[0].get("sender_bound")
    return {
        "verdict": "fail" if knee is not None or (single and failed_criteria) else "pass",
        "failed_criteria": failed_criteria,
        "steps": annotated,
        "knee": summarize_knee(knee, steps),
        "kneedle_pps": latency_kneedle_pps(steps),
        "baseline_p99_us": baseline_p99_us(steps, criteria),
        "loss_floor_ratio": loss_floor_ratio(steps, criteria),
        "capacity_pps": capacity_pps(steps),
        "sender_max_pps": sender_max_pps(steps),
    }
