"""Numbers and verdicts on testbed paths whose answer is known in advance.

Each test shapes the path between namespaces a and b so that the right
answer follows from the shaping alone: a tbf rate cap whose packet rate is
the bit rate over the frame size, and random loss drawn per packet by
nftables. `pktbench serve` runs in b, the client in a; every process is
stopped by PID and the testbed fixture removes the namespaces, even when a
test fails. Rates are odd on purpose.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktbench import testbed as tb
from test_two_hosts import ServerInB, client

pytestmark = pytest.mark.root

# Ethernet header + IPv4 + UDP around the datagram, as tbf counts a frame on veth.
FRAME_OVERHEAD_BYTES = 14 + 20 + 8


@pytest.fixture
def shaped(make_testbed) -> tb.TestbedInfo:
    return make_testbed(rate_cap_bps=4_000_000)


@pytest.fixture
def shaped_server(shaped: tb.TestbedInfo) -> Iterator[ServerInB]:
    running = ServerInB(shaped)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def lossy(make_testbed) -> tb.TestbedInfo:
    return make_testbed(loss_percent=1.0)


@pytest.fixture
def lossy_server(lossy: tb.TestbedInfo) -> Iterator[ServerInB]:
    running = ServerInB(lossy)
    try:
        yield running
    finally:
        running.close()


def test_blast_ndr_behind_tbf_is_the_shapers_packet_rate(shaped, shaped_server,
                                                         tmp_path: Path) -> None:
    size = 77
    capacity_pps = 4_000_000 / (8 * (size + FRAME_OVERHEAD_BYTES))  # 4,201.7 pps
    out = tmp_path / "ndr.json"
    # tbf's queue (50 ms and a 15 KB burst, about 460 frames) lets trials a
    # few % above the cap pass: only the delivered rate tells them apart.
    done = client(shaped, "sweep", shaped_server.address, "--workload", "blast",
                  "--size", str(size), "--rates", "1733,2911,3877,5507,6911,8807",
                  "--search", "ndr,pdr", "--precision", "0.01", "--duration", "2",
                  "--warmup", "0.5", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert document["judgement"]["capacity_pps"] == pytest.approx(capacity_pps, rel=0.01)
    assert document["ndr_pps"] == pytest.approx(capacity_pps, rel=0.01), done.stdout
    assert document["pdr_pps"] >= document["ndr_pps"]
    assert document["search"]["ndr"]["upper_bound_by"] == "capacity"
    assert "capacity: " in done.stdout
    # the live lines judge as the table does: the lossy steps say FAIL there too
    live = [line for line in done.stderr.splitlines() if "offered 6,911 pps" in line]
    assert live and all("FAIL loss" in line for line in live), done.stderr
    assert "judged by: loss > 0.1 %" in done.stdout  # the default profile's threshold


@pytest.fixture
def very_lossy(make_testbed) -> tb.TestbedInfo:
    return make_testbed(loss_percent=80.0)


def test_run_with_80_percent_loss_fails_under_fail_on_loss(very_lossy, tmp_path: Path) -> None:
    server = ServerInB(very_lossy)
    try:
        out = tmp_path / "run.json"
        done = client(very_lossy, "run", server.address, "--workload", "blast",
                      "--rate", "3119", "--duration", "1", "--fail-on", "loss",
                      "--json", str(out))
        passing = client(very_lossy, "run", server.address, "--workload", "blast",
                         "--rate", "3119", "--duration", "0.5", "--max-loss", "0.9",
                         "--fail-on", "loss")
    finally:
        server.close()
    assert done.returncode == 3, done.stdout + done.stderr
    step = json.loads(out.read_text())["steps"][0]
    assert 0.75 < step["loss_ratio"] < 0.85
    assert "FAIL loss" in done.stdout and "judged by: loss > 0.1 %" in done.stdout
    assert "FAIL: the path failed loss" in done.stderr
    assert json.loads(out.read_text())["judgement"]["verdict"] == "fail"
    # the same path judged by a looser threshold passes, and says which one applied
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "judged by: loss > 90 %" in passing.stdout


def test_random_loss_is_a_loss_floor_not_a_knee(lossy, lossy_server, tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    done = client(lossy, "sweep", lossy_server.address, "--workload", "blast",
                  "--rates", "2113,3307,5113,7019", "--duration", "1.5", "--warmup", "0.2",
                  "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    # 1 % drawn per packet, counted on 3,000-10,000 packets a step (and a busy
    # machine's receiver may add a few drops of its own)
    losses = [s["loss_ratio"] for s in document["steps"]]
    assert all(0.005 < loss < 0.02 for loss in losses), losses
    assert document["knee"] is None, done.stdout
    floor = document["judgement"]["loss_floor_ratio"]
    assert floor == pytest.approx(0.01, abs=0.003)
    assert f"the path loses {100 * floor:.1f} % at every rate: no knee; loss floor " \
           f"{100 * floor:.1f} %" in done.stdout
