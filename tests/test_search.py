"""NDR/PDR search against simulated paths: no network, a fake clock."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktbench.errors import ConfigError
from pktbench.search import SearchResult, TrialOutcome, search_throughput

Trial = Callable[[float, float], TrialOutcome]


class FakeClock:
    """Advances by each trial's duration plus a fixed overhead."""

    def __init__(self, overhead_s: float = 0.0) -> None:
        self.now_s = 0.0
        self.overhead_s = overhead_s

    def __call__(self) -> float:
        return self.now_s

    def spend(self, duration_s: float) -> None:
        self.now_s += duration_s + self.overhead_s


def policed_path(limit_pps: float, *, seed: int = 0, limit_noise: float = 0.0,
                 loss_floor: float = 0.0, sender_max_pps: float | None = None,
                 clock: FakeClock | None = None) -> Trial:
    """A hard policer: loss = max(0, 1 - limit/rate) plus a little noise on any loss.

    With limit_noise the limit itself jitters per trial (relative sigma).
    """
    rng = np.random.default_rng(seed)

    def trial(rate_pps: float, duration_s: float) -> TrialOutcome:
        if clock is not None:
            clock.spend(duration_s)
        sent_pps = rate_pps if sender_max_pps is None else min(rate_pps, sender_max_pps)
        limit = limit_pps * (1.0 + rng.normal(0.0, limit_noise))
        loss = max(0.0, 1.0 - limit / sent_pps)
        if loss > 0.0:
            loss = min(1.0, loss + abs(rng.normal(0.0, 1e-4)))
        loss = min(1.0, loss + loss_floor)
        bound = sender_max_pps is not None and rate_pps > sender_max_pps * 1.001
        return TrialOutcome(rate_pps, loss, bound, duration_s, sent_pps)

    return trial


def buffered_path(capacity_pps: float, queue_packets: float, *, warmup_s: float = 0.5,
                  loss_floor: float = 0.0, clock: FakeClock | None = None,
                  log: list[TrialOutcome] | None = None) -> Trial:
    """A shaper with a queue: the excess over capacity fills the queue, overflow is lost.

    The warm-up runs at the trial's rate first, so it pre-fills the queue; the
    measured window then delivers capacity x T less what the warm-up left
    queued, plus what is still queued at the end (it drains afterwards).
    """
    def trial(rate_pps: float, duration_s: float) -> TrialOutcome:
        if clock is not None:
            clock.spend(duration_s)
        excess = max(0.0, rate_pps - capacity_pps)
        queued_at_start = min(queue_packets, excess * warmup_s)
        room = queue_packets - queued_at_start
        sent = rate_pps * duration_s
        lost = max(0.0, excess * duration_s - room)
        received = (sent - lost) * (1.0 - loss_floor)
        outcome = TrialOutcome(rate_pps, (sent - received) / sent, False, duration_s, rate_pps,
                               received / duration_s)
        if log is not None:
            log.append(outcome)
        return outcome

    return trial


def check_invariants(result: SearchResult, precision: float) -> None:
    for goal in (result.ndr, result.pdr):
        if goal.lower_pps is not None and goal.upper_pps is not None:
            assert goal.lower_pps < goal.upper_pps
            if goal.complete:
                assert goal.relative_width is not None and goal.relative_width <= precision * 1.000001
    if result.ndr_pps is not None and result.pdr_pps is not None:
        assert result.ndr_pps <= result.pdr_pps
    durations = [t.duration_s for t in result.trials]
    assert durations == sorted(durations), "trials never get shorter"


@pytest.mark.parametrize("seed", range(5))
def test_policer_at_5500(seed: int) -> None:
    clock = FakeClock()
    result = search_throughput(policed_path(5500, seed=seed, clock=clock),
                               min_pps=100, max_pps=100_000, clock=clock)
    check_invariants(result, 0.01)
    assert result.stopped_by == "precision" and result.ndr.complete and result.pdr.complete
    assert 5500 / 1.01 <= result.ndr.lower_pps <= 5500 < result.ndr.upper_pps
    assert result.ndr_pps == pytest.approx(5500, rel=0.01)
    # PDR (0.5 % loss) is at 5500 / 0.995 = 5527.6: at or above NDR, bracketed.
    true_pdr = 5500 / 0.995
    assert result.pdr_pps >= result.ndr_pps
    assert result.pdr.lower_pps <= true_pdr < result.pdr.upper_pps
    assert result.pdr_pps == pytest.approx(true_pdr, rel=0.01)
    assert result.ndr.upper_bound_by == "path" and result.notes == ()
    assert result.ndr.lower_duration_s == 2.0
    assert len(result.trials) <= 15
    assert result.trials[0].rate_pps == 100_000 and result.trials[0].duration_s == 0.5
    assert result.trial_time_s == pytest.approx(sum(t.duration_s for t in result.trials))
    assert result.elapsed_s == pytest.approx(clock.now_s)


@pytest.mark.parametrize("seed", range(5))
def test_policer_with_a_jittering_limit(seed: int) -> None:
    # The limit itself wanders by 0.2 % (sigma) from trial to trial.
    result = search_throughput(policed_path(5500, seed=seed, limit_noise=0.002),
                               min_pps=100, max_pps=100_000)
    check_invariants(result, 0.01)
    assert result.ndr.lower_pps <= 5500 * 1.006 and result.ndr.upper_pps >= 5500 * 0.994
    assert result.ndr_pps == pytest.approx(5500, rel=0.01 + 0.006)
    assert len(result.trials) <= 15


def test_pdr_above_ndr_with_a_loss_floor() -> None:
    # 0.1 % loss at every rate (a software path), then a policer at 8000 pps.
    result = search_throughput(policed_path(8000, loss_floor=0.001, limit_noise=0.0),
                               min_pps=500, max_pps=50_000)
    assert result.ndr_pps is None and result.ndr.upper_pps == 500
    assert any("even min_pps" in note for note in result.notes)
    # loss = 1 - 8000/r + 0.001 <= 0.005  <=>  r <= 8000 / 0.996
    assert result.pdr_pps == pytest.approx(8000 / 0.996, rel=0.01)
    assert result.pdr.lower_pps <= 8000 / 0.996 <= result.pdr.upper_pps * 1.0001
    check_invariants(result, 0.01)


def test_path_that_never_loses_is_bounded_by_the_sender() -> None:
    result = search_throughput(policed_path(1e12, sender_max_pps=12_000),
                               min_pps=100, max_pps=20_000)
    check_invariants(result, 0.01)
    for goal in (result.ndr, result.pdr):
        assert goal.upper_bound_by == "sender"
        assert goal.lower_pps == pytest.approx(12_000, rel=0.01)
        assert goal.lower_pps <= 12_000 * 1.001 < goal.upper_pps
    assert any("upper bound is the sender" in note for note in result.notes)
    assert len(result.trials) <= 12


def test_path_and_sender_that_never_lose_stop_at_max_pps() -> None:
    result = search_throughput(policed_path(1e12), min_pps=100, max_pps=20_000)
    assert result.ndr_pps == 20_000 and result.ndr.upper_pps is None
    assert result.ndr.upper_bound_by == "max_pps"
    assert any("raise max_pps" in note for note in result.notes)
    # One trial per phase at max_pps, nothing else.
    assert [(t.rate_pps, t.duration_s) for t in result.trials] == [
        (20_000, 0.5), (20_000, 1.0), (20_000, 2.0)]


def test_monotonic_in_the_path_limit() -> None:
    limits = [700, 2_000, 5_500, 16_000, 45_000]
    ndrs = [search_throughput(policed_path(limit, seed=3), min_pps=100, max_pps=100_000).ndr_pps
            for limit in limits]
    assert all(n is not None for n in ndrs)
    assert ndrs == sorted(ndrs)
    for limit, ndr in zip(limits, ndrs):
        assert ndr == pytest.approx(limit, rel=0.01)


@settings(max_examples=60, deadline=None)
@given(limit_pps=st.floats(200, 90_000), seed=st.integers(0, 2**16),
       precision=st.sampled_from([0.005, 0.01, 0.04]))
def test_trial_count_bounded_and_bounds_valid(limit_pps: float, seed: int,
                                              precision: float) -> None:
    result = search_throughput(policed_path(limit_pps, seed=seed, limit_noise=0.001), min_pps=100,
                               max_pps=100_000, precision=precision)
    check_invariants(result, precision)
    assert result.stopped_by == "precision"
    assert len(result.trials) <= 20
    assert result.ndr_pps == pytest.approx(limit_pps, rel=precision + 0.005)


def test_max_trials_stops_the_search() -> None:
    result = search_throughput(policed_path(5500), min_pps=100, max_pps=100_000,
                               precision=1e-6, max_trials=5)
    assert len(result.trials) == 5
    assert result.stopped_by == "max_trials"
    assert not result.ndr.complete
    assert any("stopped by max_trials" in note for note in result.notes)
    # What was proved so far is still reported.
    assert result.ndr_pps is not None and result.ndr.upper_pps is not None


def test_max_time_stops_the_search() -> None:
    clock = FakeClock(overhead_s=1.0)
    result = search_throughput(policed_path(5500, clock=clock), min_pps=100, max_pps=100_000,
                               max_time_s=5.0, clock=clock)
    assert result.stopped_by == "max_time"
    assert clock.now_s <= 5.0 + 1.0  # the last started trial fitted in the budget
    assert result.elapsed_s == clock.now_s


def test_goals_report_their_own_cost_in_schema_shape() -> None:
    result = search_throughput(policed_path(5500), min_pps=100, max_pps=100_000)
    doc = result.to_dict()
    assert set(doc) == {"ndr", "pdr", "pdr_loss_ratio", "capacity_pps", "sender_max_pps",
                        "notes"}
    assert set(doc["ndr"]) == {"lower_pps", "upper_pps", "upper_bound_by", "lower_duration_s",
                               "trials", "duration_s"}
    assert doc["capacity_pps"] is None  # the simulated policer reports no received rate
    assert doc["pdr_loss_ratio"] == 0.005
    assert 0 < doc["ndr"]["trials"] <= doc["pdr"]["trials"] <= len(result.trials)
    assert doc["pdr"]["duration_s"] <= result.trial_time_s


@pytest.mark.parametrize("capacity_pps, queue_packets", [(4717.0, 520.0), (13_331.0, 2_000.0),
                                                        (987.0, 120.0)])
def test_a_buffer_cannot_lift_ndr_above_the_delivered_capacity(capacity_pps: float,
                                                               queue_packets: float) -> None:
    # Trials a few % above capacity pass (the queue absorbs 2 s of the excess);
    # the received rate of the lossy ones is the capacity.
    path = buffered_path(capacity_pps, queue_packets)
    assert path(capacity_pps * 1.03, 2.0).loss_ratio == 0.0
    result = search_throughput(path, min_pps=capacity_pps / 5, max_pps=capacity_pps * 2.1,
                               precision=0.01, initial_duration_s=0.5, final_duration_s=2.0)
    assert result.capacity_pps == pytest.approx(capacity_pps, rel=1e-6)
    assert result.ndr_pps is not None and result.pdr_pps is not None
    assert capacity_pps / 1.01 <= result.ndr_pps <= capacity_pps
    assert result.ndr.upper_bound_by == "capacity"
    assert result.pdr_pps <= capacity_pps / (1 - 0.005)
    assert any(n.startswith(f"capacity: the received rate saturates at {capacity_pps:,.0f}")
               for n in result.notes)
    check_invariants(result, 0.01)


def test_known_steps_feed_the_plateau() -> None:
    steps: list[TrialOutcome] = []
    sweep = buffered_path(2_903.0, 300.0, log=steps)
    for rate in (4_400.0, 6_100.0):
        sweep(rate, 2.0)
    # Without the sweep's steps the search sees one lossy rate only.
    result = search_throughput(buffered_path(2_903.0, 300.0), min_pps=500, max_pps=4_400.0,
                               known=steps)
    assert result.capacity_pps == pytest.approx(2_903.0)
    assert result.ndr_pps is not None and 2_903.0 / 1.01 <= result.ndr_pps <= 2_903.0


def test_random_loss_is_no_plateau() -> None:
    from pktbench.search import delivered_plateau_pps

    # 1 % loss at every rate: received grows with offered.
    assert delivered_plateau_pps([(r, 0.99 * r) for r in (1000.0, 2000.0, 4000.0)], 0.01) is None
    # A policer at 5,500: flat.
    assert delivered_plateau_pps([(6100.0, 5503.0), (7900.0, 5500.0), (9000.0, 5501.0)],
                                 0.01) == 5500.0
    # One saturated trial is not a plateau; nor two at nearly the same rate.
    assert delivered_plateau_pps([(6100.0, 5500.0)], 0.01) is None
    assert delivered_plateau_pps([(6100.0, 5500.0), (6110.0, 5501.0)], 0.01) is None


def test_a_failure_seen_only_in_a_short_trial_is_confirmed_at_full_duration() -> None:
    # A path that loses in short trials only (start-up transients) below 3,000 pps.
    def trial(rate_pps: float, duration_s: float) -> TrialOutcome:
        limit = 3_000.0 if duration_s < 2.0 else 4_000.0
        loss = max(0.0, 1 - limit / rate_pps)
        return TrialOutcome(rate_pps, loss, False, duration_s, rate_pps)

    result = search_throughput(trial, min_pps=500, max_pps=8_000, precision=0.01)
    assert result.ndr_pps is not None and 4_000 / 1.01 <= result.ndr_pps <= 4_000
    final = [t for t in result.trials if t.duration_s == 2.0]
    assert result.ndr.upper_pps in [t.rate_pps for t in final if t.loss_ratio > 0]


def test_never_above_the_rate_the_sender_reached() -> None:
    # Sender-bound from 61,616 pps: it never sends more than that.
    result = search_throughput(policed_path(1e12, sender_max_pps=61_616), min_pps=1_000,
                               max_pps=200_000)
    assert result.sender_max_pps is not None and result.sender_max_pps <= 61_616
    for goal in (result.ndr, result.pdr):
        assert goal.lower_pps is not None and goal.lower_pps <= result.sender_max_pps
        assert goal.upper_bound_by == "sender"


def test_single_phase_when_durations_equal() -> None:
    result = search_throughput(policed_path(5500), min_pps=100, max_pps=100_000,
                               initial_duration_s=1.0, final_duration_s=1.0)
    assert {t.duration_s for t in result.trials} == {1.0}
    assert result.ndr_pps == pytest.approx(5500, rel=0.01)


@pytest.mark.parametrize("kwargs, name", [
    ({"min_pps": 0}, "min_pps"), ({"max_pps": 50}, "max_pps"),
    ({"pdr_loss_ratio": 1.0}, "pdr_loss_ratio"), ({"precision": 0}, "precision"),
    ({"initial_duration_s": 0}, "initial_duration_s"),
    ({"final_duration_s": 0.1}, "final_duration_s"), ({"max_trials": 0}, "max_trials"),
    ({"max_time_s": -1}, "max_time_s"),
])
def test_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    args: dict[str, float] = {"min_pps": 100, "max_pps": 1000, **kwargs}
    with pytest.raises(ConfigError, match=name):
        search_throughput(policed_path(500), **args)  # type: ignore[arg-type]


def test_callback_with_impossible_loss_is_an_error() -> None:
    def trial(rate_pps: float, duration_s: float) -> TrialOutcome:
        return TrialOutcome(rate_pps, float("nan"), False, duration_s)

    with pytest.raises(ConfigError, match="loss_ratio"):
        search_throughput(trial, min_pps=100, max_pps=1000)


def test_duplicates_make_negative_loss_count_as_none() -> None:
    def trial(rate_pps: float, duration_s: float) -> TrialOutcome:
        return TrialOutcome(rate_pps, -0.001 if rate_pps <= 700 else 0.2, False, duration_s)

    result = search_throughput(trial, min_pps=100, max_pps=1000)
    assert result.ndr_pps == pytest.approx(700, rel=0.01)
    assert all(t.loss_ratio >= 0 for t in result.trials)
