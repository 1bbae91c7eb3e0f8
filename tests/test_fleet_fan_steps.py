"""Fan-in/fan-out pieces: the aggregate of synchronized steps, its knee, the clocked sweep."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pktbench import config, sweeper
from pktbench.errors import ConfigError
from pktbench.fleet import fanin, result
from pktbench.report.fleet import render_fleet
from cli_support import PKTBENCH

CRITERIA = config.load_profile("default").criteria


def _step(offered: float, received: float, *, sent: float | None = None,
          duration: float = 0.5) -> dict[str, Any]:
    sent = offered if sent is None else sent
    sent_packets = round(sent * duration)
    received_packets = round(received * duration)
    return {"index": 0, "repeat": 0, "workload": "blast", "size_bytes": 64,
            "offered_pps": offered, "sent_pps": sent, "received_pps": received,
            "sent_packets": sent_packets, "received_packets": received_packets,
            "lost_packets": sent_packets - received_packets, "late_packets": 0,
            "duplicate_packets": 0, "reordered_packets": 0,
            "loss_ratio": (sent_packets - received_packets) / sent_packets,
            "duration_s": duration, "warmup_s": 0.1, "latency_us": None,
            "sender_bound": sent < 0.99 * offered, "rate_max": False, "receiver": {}}


def _paths(limit: float, shares: dict[str, float], rates: list[float]
           ) -> dict[str, list[dict[str, Any]]]:
    """Each path gets its share of each aggregate rate; above `limit` in sum, all lose alike."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in shares}
    for rate in rates:
        through = min(1.0, limit / rate)
        for name, share in shares.items():
            out[name].append(_step(rate * share, rate * share * through))
    return out


def test_aggregate_sums_rates_and_recomputes_loss() -> None:
    per_path = {"a": [_step(1000, 1000)], "b": [_step(3000, 2000)]}
    (agg,) = fanin.aggregate_steps(per_path)
    assert agg["offered_pps"] == 4000 and agg["received_pps"] == 3000
    assert agg["sent_packets"] == 2000 and agg["lost_packets"] == 500
    assert agg["loss_ratio"] == pytest.approx(0.25)
    assert agg["per_path"]["b"]["loss_ratio"] == pytest.approx(1 / 3)


def test_one_source_slightly_short_does_not_make_the_aggregate_sender_bound() -> None:
    short = _step(1000, 985, sent=985)  # 98.5 %: bound on its own
    assert short["sender_bound"]
    per_path = {"a": [short], "b": [_step(1000, 1000)], "c": [_step(1000, 1000)]}
    (agg,) = fanin.aggregate_steps(per_path)
    assert not agg["sender_bound"] and agg["per_path"]["a"]["sender_bound"]
    per_path = {"a": [_step(1000, 500, sent=500)], "b": [_step(1000, 1000)]}
    assert fanin.aggregate_steps(per_path)[0]["sender_bound"]


def test_the_knee_of_the_sum_where_no_path_alone_reaches_the_limit() -> None:
    rates = [2400, 3600, 4200, 5400, 6600]
    per_path = _paths(4700, {"h1": 0.25, "h2": 0.25, "h3": 0.25, "h4": 0.25}, rates)
    start = 1000.0
    starts = {name: [start + k * 1.5 + 0.001 * i for k in range(len(rates))]
              for i, name in enumerate(per_path)}
    fan = fanin.summarize(per_path, starts, start_at_s=start, period_s=1.5, criteria=CRITERIA)
    assert fan["knee_pps"] == 5400 and fan["last_good_pps"] == 4200
    assert [s["offered_pps"] for s in fan["steps"]] == rates
    assert fan["in_sync"] and fan["max_start_spread_ms"] == pytest.approx(3.0)
    assert fan["steps"][0]["per_path"]["h4"]["start_late_ms"] == pytest.approx(3.0)
    late = {**starts, "h4": [t + 0.2 for t in starts["h4"]]}
    off = fanin.summarize(per_path, late, start_at_s=start, period_s=1.5, criteria=CRITERIA)
    assert not off["in_sync"] and off["max_start_spread_ms"] == pytest.approx(203.0)


def test_uneven_step_counts_pair_up_to_the_shortest() -> None:
    per_path = {"a": [_step(100, 100), _step(200, 200)], "b": [_step(100, 100)]}
    assert len(fanin.aggregate_steps(per_path)) == 1


def test_period_and_lead() -> None:
    assert fanin.step_period_s(0.1, 0.5, 0.1) == pytest.approx(0.7 + 0.5 + 0.25 * 0.7)
    assert fanin.lead_s([0.3]) == 2.0 and fanin.lead_s([0.5, 3.0]) == pytest.approx(4.0)


def test_fan_document_and_report() -> None:
    rates = [2400, 3600, 4200, 5400, 6600]
    per_path = _paths(4700, {"h1": 0.5, "h2": 0.5}, rates)
    starts = {n: [10.0 + k for k in range(5)] for n in per_path}
    fan = {"direction": "to", "hub": "h3", "paths": 2, "share": 0.5, "period_s": 1.0,
           "lead_s": 2.0, "clock_offsets_ms": {"h1": 0.4, "h2": -0.2, "h3": 0.0},
           **fanin.summarize(per_path, starts, start_at_s=10.0, period_s=1.0,
                             criteria=CRITERIA)}
    hosts = [{"name": n, "test_address": None} for n in ("h1", "h2", "h3")]
    pair_docs = {(n, "h3"): {"status": "ok", "sweep": None} for n in ("h1", "h2")}
    doc = result.build(hosts=hosts, preflight={}, pair_docs=pair_docs,
                       profile={"name": "x"}, mode="to", bulk=False, rounds=1, parallel=None,
                       timing={}, fan=fan)
    assert doc["mode"] == "to" and doc["outliers"] == [] and doc["fan"]["knee_pps"] == 5400
    text = render_fleet(doc)
    assert "aggregate knee into h3: 5,400 pps offered (last good 4,200 pps)" in text
    assert "in sync" in text and max(len(line) for line in text.splitlines()) <= 100


def test_a_clocked_sweep_starts_each_step_on_time() -> None:
    profile = config.apply_overrides(config.load_profile("default"), workload="blast",
                                     rates_pps="500,800,900", duration_s=0.1, warmup_s=0.05,
                                     drain_s=0.05)
    start = time.time() + 2.0  # after the embedded server's start on a loaded machine
    clock = sweeper.StepClock(start, 0.8)
    done = sweeper.sweep(None, profile, clock=clock)
    record = done.config["step_clock"]
    assert len(done.steps) == 3 and done.config["early_stop"] is False
    assert record["ready_at_s"] < start
    for k, (t, late) in enumerate(zip(record["started_at_s"], record["start_late_s"])):
        assert t >= start + 0.8 * k
        assert 0 <= late < 0.4, record  # the loaded machine's wake-up, not a missed slot


def test_clock_refuses_search_and_far_starts() -> None:
    searching = config.apply_overrides(config.load_profile("default"), search="ndr")
    with pytest.raises(ConfigError, match="no NDR/PDR search"):
        sweeper.sweep(None, searching, clock=sweeper.StepClock(time.time(), 1.0))
    with pytest.raises(ConfigError, match="ahead"):
        sweeper.StepClock(time.time() + 7200, 1.0)
    with pytest.raises(ConfigError, match="period"):
        sweeper.StepClock(time.time(), 0.0)


@pytest.mark.parametrize("args,expect", [
    (["sweep", "--start-at", "1"], "--start-at and --step-period go together"),
    (["fleet", "INV", "--to", "a", "--mesh"], "--to runs all paths into or out of one host"),
    (["fleet", "INV", "--from", "a", "--bulk"], "not with --bulk"),
    (["fleet", "INV", "--to", "zz"], "--to zz: no such host in"),
    (["fleet", "INV", "--to", "a", "--from", "b"], "not with --from"),
])
def test_fan_cli_errors_are_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text('[[hosts]]\nname = "a"\naddress = "198.18.0.1"\n'
                   '[[hosts]]\nname = "b"\naddress = "198.18.0.2"\n')
    argv = [str(inv) if a == "INV" else a for a in args]
    out = subprocess.run([*PKTBENCH, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and expect in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
