"""`pktbench fleet --to HOST` over real SSH: four sources load one policed host in step (root).

Five namespaces with an sshd each; h5 has a UDP ingress policer at 4,700
pps. The fan-in sweeps an aggregate of 2,400..6,600 pps, a quarter from each
of h1..h4, so no source alone ever offers more than 1,650 pps: only their sum
crosses the policer, and the aggregate knee must bracket its rate. The steps
of the four sources must start within the tolerance of each other. The
reverse, h1 loading the other four at once, stays below every limit.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pktbench.fleet import testbed as ftb
from fleet_support import Bed, fleet_bed

pytestmark = [pytest.mark.root, pytest.mark.slow]

HUB, LIMIT = "h5", 4700
FANIN = """description = "fan-in test: one-way UDP, aggregate rates around the policer"
workload = "blast"
command = "none"
size_bytes = 64
duration_s = 0.5
warmup_s = 0.1
drain_s = 0.1

[rates]
list_pps = [2400, 3600, 4200, 5400, 6600]

[criteria]
max_loss_ratio = 0.01
min_delivery_ratio = 0.97
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with fleet_bed(tmp_path_factory.mktemp("fleet-fanin"), "i", 5, FANIN,
                   pps_limits={HUB: LIMIT}) as made:
        yield made


def test_fan_in_finds_the_aggregate_knee_of_the_policed_host(bed: Bed) -> None:
    before = ftb.policer_counts(bed.prefix, 5)
    out = bed.dir / "fan"
    run = bed.fleet("--to", HUB, "--json", "-", "--out", str(out), timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["mode"] == "to" and doc["counts"] == {"ok": 4, "failed": 0, "unreachable": 0}
    fan = doc["fan"]
    assert fan["hub"] == HUB and fan["paths"] == 4 and fan["complete"], fan
    assert fan["knee_pps"] is not None, fan["steps"]
    assert fan["last_good_pps"] <= LIMIT <= fan["knee_pps"], fan["steps"]
    steps = fan["steps"]
    assert [s["offered_pps"] for s in steps] == [2400, 3600, 4200, 5400, 6600]
    for s in steps:
        per_path = s["per_path"]
        assert sorted(per_path) == ["h1", "h2", "h3", "h4"]
        # each source alone stays far below the policer; the sum is what it meets
        assert all(p["offered_pps"] == pytest.approx(s["offered_pps"] / 4) for p in
                   per_path.values())
        assert all(p["offered_pps"] < LIMIT / 2 for p in per_path.values())
        assert s["received_pps"] == pytest.approx(sum(p["received_pps"]
                                                      for p in per_path.values()))
        if s["offered_pps"] > LIMIT * 1.1:
            # what got through is about the policer's rate, whoever sent it
            assert s["received_pps"] < LIMIT * 1.1, s
    # synchronized: every source started every step within the tolerance
    assert fan["in_sync"], [s["start_spread_ms"] for s in steps]
    assert 0 <= fan["max_start_spread_ms"] <= fan["sync_tolerance_ms"]
    assert set(fan["clock_offsets_ms"]) == {"h1", "h2", "h3", "h4", "h5"}
    assert all(v > 0 for v in fan["ready_slack_ms"].values()), fan["ready_slack_ms"]
    counts = ftb.policer_counts(bed.prefix, 5)
    assert counts is not None and before is not None
    assert counts["dropped"] - before["dropped"] > 0
    # nothing else drops on the bridge: every packet the windows lost, the policer
    # dropped (it also counts warm-up and drain, so it may have dropped more)
    lost = sum(s["lost_packets"] for s in steps)
    assert 0 < lost <= counts["dropped"] - before["dropped"]
    assert "aggregate knee into h5" in run.stderr
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"
    assert len(list((out / "pairs").glob("*/*.json"))) == 4
    assert bed.pktbench_processes() == []


def test_fan_out_loads_every_other_host_at_once(bed: Bed) -> None:
    rates = bed.dir / "out.toml"
    rates.write_text(FANIN.replace("[2400, 3600, 4200, 5400, 6600]", "[2000, 4000]"))
    run = bed.fleet("--from", "h1", "--json", "-", profile=rates, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    fan = json.loads(run.stdout)["fan"]
    assert fan["direction"] == "from" and fan["hub"] == "h1" and fan["complete"], fan
    assert fan["in_sync"] and fan["no_knee"], fan["steps"]
    for s in fan["steps"]:
        assert sorted(s["per_path"]) == ["h2", "h3", "h4", "h5"]
        assert s["loss_ratio"] == 0 and s["received_pps"] == pytest.approx(s["offered_pps"])
    assert "aggregate" in run.stderr and "out of h1" in run.stderr
    assert bed.pktbench_processes() == []
