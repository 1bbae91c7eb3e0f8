"""The knee finder on synthetic sweeps: criteria, words, confirmation, Kneedle."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pktbench.errors import ConfigError
from pktbench.knee import (
    DEFAULT_LATENCY_FLOOR_US,
    KneeCriteria,
    analyze_steps,
    annotate,
    attribute,
    baseline_p99_us,
    evaluate_step,
    find_knee,
    kneedle,
    latency_kneedle_pps,
    loss_floor_ratio,
    pending_confirmation_pps,
    summarize_knee,
)


def make_step(offered_pps: float, *, loss_ratio: float = 0.0, received_pps: float | None = None,
              p99_us: float | None = None, sender_bound: bool = False, index: int = 0,
              repeat: int = 0, sent_packets: int = 10_000, rcvbuf_errors: int = 0) -> dict[str, Any]:
    lost = round(sent_packets * loss_ratio)
    if received_pps is None:
        received_pps = offered_pps * (1.0 - loss_ratio)
    return {
        "index": index, "repeat": repeat, "workload": "rr" if p99_us is not None else "blast",
        "offered_pps": float(offered_pps), "sent_pps": float(offered_pps),
        "received_pps": float(received_pps),
        "sent_packets": sent_packets, "received_packets": sent_packets - lost,
        "lost_packets": lost, "loss_ratio": loss_ratio,
        "latency_us": None if p99_us is None else {"p50": p99_us / 2, "p99": p99_us},
        "sender_bound": sender_bound,
        "receiver": {"received_packets": sent_packets - lost - rcvbuf_errors, "drops": {},
                     "rcvbuf_errors": rcvbuf_errors, "cpu_percent": 10.0},
    }


def sweep(losses: list[float], *, start: float = 1000.0, step: float = 1000.0,
          **kwargs: Any) -> list[dict[str, Any]]:
    return [make_step(start + i * step, loss_ratio=loss, index=i, **kwargs)
            for i, loss in enumerate(losses)]


# --------------------------------------------------------------------------- criteria

@pytest.mark.parametrize("kwargs", [
    {"max_loss_ratio": -0.1}, {"max_loss_ratio": 1.5}, {"latency_factor": 1.0},
    {"latency_factor": float("nan")}, {"min_delivery_ratio": 1.2}, {"baseline_steps": 0},
    {"baseline_steps": 1.5}, {"confirm_steps": -1}, {"latency_floor_us": -1.0},
    {"latency_floor_us": float("inf")},
])
def test_criteria_reject_bad_values(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        KneeCriteria(**kwargs)


def test_criteria_defaults() -> None:
    c = KneeCriteria()
    assert (c.max_loss_ratio, c.latency_factor, c.min_delivery_ratio) == (0.005, 4.0, 0.95)
    assert (c.baseline_steps, c.confirm_steps) == (2, 1)
    assert c.latency_floor_us == DEFAULT_LATENCY_FLOOR_US == 50.0


# --------------------------------------------------------------------------- reasons in words

def test_loss_reason_words() -> None:
    [failure] = evaluate_step(make_step(7000, loss_ratio=0.032), None)
    assert failure.criterion == "loss"
    assert failure.reason == "loss 3.2% > 0.5%"


def test_loss_reason_never_prints_equal_numbers() -> None:
    [failure] = evaluate_step(make_step(7000, loss_ratio=0.00501), None)
    assert failure.reason == "loss 0.501% > 0.5%"


def test_loss_at_threshold_passes() -> None:
    assert evaluate_step(make_step(7000, loss_ratio=0.005), None) == []


def test_latency_reason_words() -> None:
    step = make_step(7000, p99_us=812.0)
    [failure] = evaluate_step(step, 198.0)
    assert failure.criterion == "latency"
    assert failure.reason == "p99 latency 4.1x baseline (812 us vs 198 us)"


def test_delivery_reason_words() -> None:
    step = make_step(7000, received_pps=5480.0)
    [failure] = evaluate_step(step, None)
    assert failure.criterion == "delivery"
    assert failure.reason == "received 5,480 pps is 78% of offered 7,000 pps"


def test_delivery_just_under_threshold_shows_enough_digits() -> None:
    [failure] = evaluate_step(make_step(10_000, received_pps=9_496.0), None)
    assert failure.reason == "received 9,496 pps is 94.96% of offered 10,000 pps"


def test_all_criteria_in_order() -> None:
    step = make_step(7000, loss_ratio=0.2, received_pps=5000.0, p99_us=2000.0)
    failures = evaluate_step(step, 100.0)
    assert [f.criterion for f in failures] == ["loss", "latency", "delivery"]


def test_latency_floor_keeps_tiny_baselines_from_making_knees() -> None:
    # Busy-poll: 10 us baseline; 40 us is scheduling noise, not a queue.
    assert evaluate_step(make_step(7000, p99_us=40.0), 10.0) == []
    assert evaluate_step(make_step(7000, p99_us=199.0), 10.0) == []
    [failure] = evaluate_step(make_step(7000, p99_us=250.0), 10.0)
    assert failure.limit == 200.0
    assert failure.reason == ("p99 latency 25.0x baseline (250 us vs 10 us;"
                              " limit 200 us from the 50 us floor)")


def test_latency_floor_zero_judges_by_factor_alone() -> None:
    criteria = KneeCriteria(latency_floor_us=0.0)
    [failure] = evaluate_step(make_step(7000, p99_us=41.0), 10.0, criteria)
    assert failure.reason == "p99 latency 4.1x baseline (41 us vs 10 us)"


def test_latency_skipped_without_latency_or_baseline() -> None:
    assert evaluate_step(make_step(7000), 100.0) == []
    assert evaluate_step(make_step(7000, p99_us=10_000.0), None) == []


def test_missing_field_is_a_config_error() -> None:
    step = make_step(7000)
    del step["loss_ratio"]
    with pytest.raises(ConfigError, match="loss_ratio"):
        evaluate_step(step, None)


# --------------------------------------------------------------------------- attribution

def test_attribution_rules() -> None:
    assert attribute(make_step(7000)) == "ok"
    assert attribute(make_step(7000, loss_ratio=0.1, sender_bound=True)) == "sender-bound"
    assert attribute(make_step(7000, loss_ratio=0.01, rcvbuf_errors=80)) == "receiver-host-bound"
    assert attribute(make_step(7000, loss_ratio=0.01, rcvbuf_errors=10)) == "path-bound"
    # Exactly half is not "most".
    assert attribute(make_step(7000, loss_ratio=0.01, rcvbuf_errors=50)) == "path-bound"
    # A host-wide counter larger than our loss still means the host dropped them.
    assert attribute(make_step(7000, loss_ratio=0.01, rcvbuf_errors=5000)) == "receiver-host-bound"


def test_attribution_without_receiver_counters_is_path() -> None:
    step = make_step(7000, loss_ratio=0.01)
    del step["receiver"]
    assert attribute(step) == "path-bound"


# --------------------------------------------------------------------------- find_knee

def test_clean_knee() -> None:
    steps = sweep([0, 0, 0, 0, 0, 0.032, 0.08, 0.2])
    knee = find_knee(steps)
    assert knee is not None
    assert knee.offered_pps == 6000.0
    assert knee.last_good_pps == 5000.0
    assert knee.criterion == "loss"
    assert knee.reason == "loss 3.2% > 0.5%"
    assert knee.step_index == 5
    assert knee.attribution == "path-bound"


def test_spurious_failure_is_noise_not_knee() -> None:
    steps = sweep([0, 0, 0.01, 0, 0, 0, 0.05, 0.1])
    knee = find_knee(steps)
    assert knee is not None
    assert knee.offered_pps == 7000.0
    assert knee.last_good_pps == 6000.0
    # The noisy step still shows its own failure in the table.
    assert annotate(steps)[2]["failures"] == ["loss 1% > 0.5%"]


def test_no_knee() -> None:
    steps = sweep([0, 0, 0.001, 0, 0.004, 0])
    assert find_knee(steps) is None
    assert pending_confirmation_pps(steps) is None
    assert summarize_knee(None) is None


def test_sender_bound_steps_are_never_the_knee() -> None:
    passing = sweep([0, 0, 0, 0, 0])
    bound = [make_step(6000 + 1000 * i, loss_ratio=0.3, received_pps=3000, sender_bound=True,
                       index=5 + i) for i in range(3)]
    assert find_knee(passing + bound) is None


def test_sender_bound_step_between_failures_is_skipped() -> None:
    steps = sweep([0, 0, 0, 0, 0.02])
    steps.append(make_step(6000, loss_ratio=0.5, sender_bound=True, index=5))
    steps.append(make_step(7000, loss_ratio=0.04, index=6))
    knee = find_knee(steps)
    assert knee is not None and knee.offered_pps == 5000.0 and knee.last_good_pps == 4000.0


def test_unconfirmed_failure_at_the_top_awaits_a_retrial() -> None:
    steps = sweep([0, 0, 0, 0, 0.02])
    steps.append(make_step(6000, loss_ratio=0.5, sender_bound=True, index=5))
    assert find_knee(steps) is None
    assert pending_confirmation_pps(steps) == 5000.0
    # The retrial fails too: now it is the knee, confirmed at the same rate.
    steps.append(make_step(5000, loss_ratio=0.03, index=4, repeat=1))
    knee = find_knee(steps)
    assert knee is not None and knee.offered_pps == 5000.0
    assert pending_confirmation_pps(steps) is None


def test_knee_at_first_step_has_no_last_good_rate() -> None:
    knee = find_knee(sweep([0.1, 0.2, 0.3]))
    assert knee is not None
    assert knee.offered_pps == 1000.0 and knee.last_good_pps is None and knee.step_index == 0


def test_repeats_are_judged_by_their_median() -> None:
    losses_by_rate = {
        1000: [0.0, 0.0, 0.0],
        2000: [0.0, 0.03, 0.0],      # one bad repeat: median passes
        3000: [0.001, 0.0, 0.004],
        4000: [0.01, 0.002, 0.02],   # median 1%: fails
        5000: [0.05, 0.03, 0.08],
    }
    steps = [make_step(rate, loss_ratio=loss, index=i, repeat=r)
             for i, (rate, losses) in enumerate(losses_by_rate.items())
             for r, loss in enumerate(losses)]
    knee = find_knee(steps)
    assert knee is not None
    assert knee.offered_pps == 4000.0 and knee.last_good_pps == 3000.0
    assert knee.reason == "loss 1% > 0.5%"
    assert knee.step_index == 3


def test_failing_retrials_confirm_without_a_higher_rate() -> None:
    steps = sweep([0, 0, 0])
    steps += [make_step(4000, loss_ratio=loss, index=3, repeat=r)
              for r, loss in enumerate([0.02, 0.0, 0.03])]
    knee = find_knee(steps)
    assert knee is not None and knee.offered_pps == 4000.0


def test_confirm_steps_zero_and_two() -> None:
    steps = sweep([0, 0.01, 0, 0, 0.02, 0.03, 0, 0.05, 0.06, 0.07])
    knee0 = find_knee(steps, KneeCriteria(confirm_steps=0))
    knee1 = find_knee(steps, KneeCriteria(confirm_steps=1))
    knee2 = find_knee(steps, KneeCriteria(confirm_steps=2))
    assert knee0 is not None and knee0.offered_pps == 2000.0
    assert knee1 is not None and knee1.offered_pps == 5000.0
    assert knee2 is not None and knee2.offered_pps == 8000.0 and knee2.last_good_pps == 7000.0


def test_latency_only_knee() -> None:
    p99s = [100.0, 110.0, 120.0, 130.0, 500.0, 900.0, 2000.0]
    steps = [make_step(1000 * (i + 1), p99_us=p, index=i) for i, p in enumerate(p99s)]
    assert baseline_p99_us(steps) == 105.0
    knee = find_knee(steps)
    assert knee is not None
    assert knee.criterion == "latency"
    assert knee.offered_pps == 5000.0 and knee.last_good_pps == 4000.0
    assert knee.reason == "p99 latency 4.8x baseline (500 us vs 105 us)"
    assert knee.attribution == "ok"


def test_baseline_skips_sender_bound_and_uses_medians_of_repeats() -> None:
    steps = [make_step(500, p99_us=5000.0, sender_bound=True),
             make_step(1000, p99_us=90.0), make_step(1000, p99_us=100.0, repeat=1),
             make_step(1000, p99_us=400.0, repeat=2),
             make_step(2000, p99_us=120.0), make_step(3000, p99_us=10_000.0)]
    assert baseline_p99_us(steps) == 110.0
    assert baseline_p99_us(steps, KneeCriteria(baseline_steps=1)) == 100.0
    assert baseline_p99_us(sweep([0, 0])) is None


def test_delivery_only_knee() -> None:
    ratios = [1.0, 0.99, 0.98, 0.97, 0.78, 0.6, 0.5]
    steps = [make_step(1000 * (i + 1), received_pps=1000 * (i + 1) * r, index=i)
             for i, r in enumerate(ratios)]
    knee = find_knee(steps)
    assert knee is not None
    assert knee.criterion == "delivery"
    assert knee.offered_pps == 5000.0 and knee.last_good_pps == 4000.0
    assert knee.reason == "received 3,900 pps is 78% of offered 5,000 pps"


def test_knee_reason_joins_every_failure() -> None:
    steps = sweep([0, 0])
    steps += [make_step(3000, loss_ratio=0.032, received_pps=2000, index=2),
              make_step(4000, loss_ratio=0.1, index=3)]
    knee = find_knee(steps)
    assert knee is not None and knee.criterion == "loss"
    assert knee.reason == "loss 3.2% > 0.5%; received 2,000 pps is 67% of offered 3,000 pps"


def test_receiver_host_bound_knee_is_attributed() -> None:
    steps = sweep([0, 0, 0.02, 0.05], rcvbuf_errors=450)
    knee = find_knee(steps)
    assert knee is not None and knee.attribution == "receiver-host-bound"


def test_steps_in_any_order() -> None:
    steps = sweep([0, 0, 0, 0.02, 0.04])
    knee = find_knee(list(reversed(steps)))
    assert knee is not None and knee.offered_pps == 4000.0


def test_empty_and_all_sender_bound() -> None:
    assert find_knee([]) is None
    assert find_knee([make_step(1000, loss_ratio=0.5, sender_bound=True)]) is None


def test_summarize_knee_matches_schema() -> None:
    knee = find_knee(sweep([0, 0, 0.02, 0.04]))
    summary = summarize_knee(knee)
    assert summary == {"offered_pps": 3000.0, "last_good_pps": 2000.0,
                       "reason": "loss 2% > 0.5%", "criterion": "loss", "step_index": 2,
                       "loss_floor_ratio": 0.0}


def test_annotate_fills_copies() -> None:
    steps = sweep([0, 0.02, 0.04], rcvbuf_errors=0)
    steps.append(make_step(4000, loss_ratio=0.2, sender_bound=True, index=3))
    annotated = annotate(steps)
    assert "failures" not in steps[0] and "attribution" not in steps[0]
    assert [s["failures"] for s in annotated] == [
        [], ["loss 2% > 0.5%"], ["loss 4% > 0.5%"],
        ["loss 20% > 0.5%", "received 3,200 pps is 80% of offered 4,000 pps"]]
    assert [s["attribution"] for s in annotated] == ["ok", "path-bound", "path-bound",
                                                     "sender-bound"]


def test_analyze_steps_bundle() -> None:
    p99s = [100, 100, 101, 103, 108, 130, 450, 900]
    steps = [make_step(1000 * (i + 1), p99_us=float(p), index=i) for i, p in enumerate(p99s)]
    result = analyze_steps(steps)
    assert result["knee"]["offered_pps"] == 7000.0
    assert result["baseline_p99_us"] == 100.0
    assert result["kneedle_pps"] is not None and 5000 <= result["kneedle_pps"] <= 7000
    assert len(result["steps"]) == len(steps)


# --------------------------------------------------------------------------- loss floor

def test_rate_independent_loss_is_a_floor_not_a_knee() -> None:
    # 1 % random loss at every rate, counted on 20,000 packets a step.
    losses = [0.0102, 0.0097, 0.0105, 0.0099, 0.0101, 0.0096, 0.0103]
    steps = sweep(losses, start=1370.0, step=910.0, sent_packets=20_000)
    assert loss_floor_ratio(steps) == pytest.approx(0.0099, abs=1e-4)
    assert find_knee(steps) is None
    assert pending_confirmation_pps(steps) is None
    assert all(s["failures"] == [] for s in annotate(steps))
    # Without the floor every step fails and the lowest rate is called the knee.
    raw = find_knee(steps, KneeCriteria(loss_floor_ratio=0.0))
    assert raw is not None and raw.offered_pps == 1370.0 and raw.last_good_pps is None


def test_knee_above_a_floor_is_judged_on_the_loss_above_it() -> None:
    losses = [0.0101, 0.0098, 0.0103, 0.0100, 0.041, 0.12, 0.2]
    steps = sweep(losses, start=1000.0, step=1000.0, sent_packets=20_000)
    knee = find_knee(steps)
    assert knee is not None
    assert knee.offered_pps == 5000.0 and knee.last_good_pps == 4000.0
    assert knee.loss_floor_ratio == pytest.approx(0.00995)
    assert knee.reason == "loss 4.1% > 1.7% (0.5% above the 1% loss floor, 0.21% counting noise)"
    assert summarize_knee(knee)["loss_floor_ratio"] == pytest.approx(0.00995)  # type: ignore[index]


def test_delivery_is_judged_on_what_the_floor_leaves() -> None:
    # A 6 % floor leaves 94 % delivery, under the 95 % limit, at every rate.
    steps = sweep([0.060, 0.061, 0.059, 0.060], sent_packets=50_000)
    assert find_knee(steps) is None
    assert find_knee(steps, KneeCriteria(loss_floor_ratio=0.0)) is not None


def test_overload_at_every_rate_is_not_a_floor() -> None:
    # Above a 900 pps limit from the first rate: loss grows with rate.
    rates = [1000.0, 1300.0, 1700.0]
    steps = [make_step(r, loss_ratio=1 - 900 / r, index=i) for i, r in enumerate(rates)]
    assert loss_floor_ratio(steps) == 0.0
    knee = find_knee(steps)
    assert knee is not None and knee.offered_pps == 1000.0 and knee.last_good_pps is None


def test_floor_needs_loss_at_every_low_rate_and_two_rates() -> None:
    assert loss_floor_ratio(sweep([0.0, 0.01, 0.01])) == 0.0
    assert loss_floor_ratio(sweep([0.8])) == 0.0  # one step cannot show rate independence
    knee = find_knee([make_step(1000, loss_ratio=0.8)], KneeCriteria(confirm_steps=0))
    assert knee is not None


def test_floor_noise_allowance_follows_the_packet_count() -> None:
    # 1 % +- counting noise on 2,000 packets (sigma 0.22 %): still one floor.
    steps = sweep([0.0085, 0.0140, 0.0110], sent_packets=2_000)
    assert loss_floor_ratio(steps) == pytest.approx(0.01125)  # median of the lowest two
    # The same spread on 10^6 packets is not noise: loss grew with rate.
    steps = sweep([0.0085, 0.0160, 0.0110], sent_packets=1_000_000)
    assert loss_floor_ratio(steps) == 0.0


def test_configured_floor() -> None:
    steps = sweep([0.0, 0.0, 0.02, 0.03, 0.05])
    criteria = KneeCriteria(loss_floor_ratio=0.02)
    assert loss_floor_ratio(steps, criteria) == 0.02
    knee = find_knee(steps, criteria)
    assert knee is not None and knee.offered_pps == 4000.0
    with pytest.raises(ConfigError, match="loss_floor_ratio"):
        KneeCriteria(loss_floor_ratio=1.0)
    assert analyze_steps(steps, criteria)["loss_floor_ratio"] == 0.02


# --------------------------------------------------------------------------- Kneedle

def test_kneedle_paper_figure_2() -> None:
    # Satopaa et al. 2011, figure 2: y = -1/(x + 0.1) + 5 on 10 points; knee 0.22.
    x = np.linspace(0.0, 1.0, 10)
    y = -1.0 / (x + 0.1) + 5.0
    assert kneedle(x, y, curve="concave", direction="increasing") == pytest.approx(2 / 9)


def test_kneedle_figure_2_mirrored_shapes() -> None:
    x = np.linspace(0.0, 1.0, 10)
    y = -1.0 / (x + 0.1) + 5.0
    # Mirror in x: concave decreasing; knee mirrors too.
    assert kneedle(1.0 - x, y, curve="concave", direction="decreasing") == pytest.approx(7 / 9)
    # Mirror in y: convex decreasing, same knee position.
    assert kneedle(x, -y, curve="convex", direction="decreasing") == pytest.approx(2 / 9)
    # Rotate by 180 degrees: convex increasing.
    assert kneedle(1.0 - x, -y, curve="convex", direction="increasing") == pytest.approx(7 / 9)


@pytest.mark.parametrize("curve", ["convex", "concave"])
def test_kneedle_straight_line_has_no_knee(curve: str) -> None:
    x = np.linspace(1000, 10_000, 10)
    assert kneedle(x, 3.0 * x + 7.0, curve=curve) is None  # type: ignore[arg-type]


def test_kneedle_hockey_stick() -> None:
    rates = np.arange(1000.0, 11_000.0, 1000.0)
    p99 = np.where(rates <= 6000, 100.0, 100.0 + (rates - 6000) * 0.5)
    assert kneedle(rates, p99) == 6000.0
    # Order of points does not matter.
    assert kneedle(rates[::-1], p99[::-1]) == 6000.0


def test_kneedle_sensitivity_makes_it_conservative() -> None:
    x = np.linspace(0.0, 1.0, 10)
    y = x ** 1.5  # a gentle bend
    assert kneedle(x, y, sensitivity=0.0) is not None
    assert kneedle(x, y, sensitivity=10.0) is None


def test_kneedle_degenerate_inputs() -> None:
    assert kneedle([1.0, 2.0], [1.0, 5.0]) is None
    assert kneedle([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) is None
    with pytest.raises(ConfigError, match="distinct"):
        kneedle([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="equal length"):
        kneedle([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="finite"):
        kneedle([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="curve"):
        kneedle([1.0, 2.0, 3.0], [1.0, 2.0, 9.0], curve="wiggly")  # type: ignore[arg-type]


def test_latency_kneedle_uses_medians_and_skips_sender_bound() -> None:
    rates = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]
    p99s = [100, 100, 100, 100, 100, 100, 400, 700]
    steps = [make_step(r, p99_us=float(p), repeat=k) for r, p in zip(rates, p99s) for k in (0, 1)]
    steps.append(make_step(1000, p99_us=9000.0, repeat=2))  # outlier repeat, outvoted
    steps.append(make_step(9000, p99_us=100.0, sender_bound=True))
    assert latency_kneedle_pps(steps) == 6000.0
    assert latency_kneedle_pps(sweep([0, 0, 0, 0])) is None


def test_latency_kneedle_log_rate() -> None:
    rates = [1000 * 2 ** i for i in range(8)]
    # Flat, then p99 grows linearly in log(rate): the bend is at 16,000 on a log axis.
    p99s = [100, 100, 100, 100, 100, 200, 300, 400]
    steps = [make_step(r, p99_us=float(p)) for r, p in zip(rates, p99s)]
    assert latency_kneedle_pps(steps, log_rate=True) == pytest.approx(16_000.0)
    # On a linear axis the rise is log-shaped (concave): no convex bend to find.
    assert latency_kneedle_pps(steps) is None


def test_attribution_derives_lost_packets_from_loss_ratio() -> None:
    step = make_step(7000, loss_ratio=0.01, rcvbuf_errors=80)
    del step["lost_packets"]
    assert attribute(step) == "receiver-host-bound"
