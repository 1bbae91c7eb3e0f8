"""The throughput ceiling on a shaped two-path testbed (root).

Each path is capped by tbf at CAP_BPS, which counts Ethernet frames without
FCS, preamble and gap: a path full of 1448-byte segments carries exactly
CAP_BPS of frames, CAP_BPS * 1448/1514 of goodput and CAP_BPS * 1538/1514 on
the wire. One stream rides one path; planned flows fill both.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cli_support import PKTBENCH, serve_in_namespace

from pktbench import testbed as tb

pytestmark = pytest.mark.root

CAP_BPS = 200_000_000
TOLERANCE = 0.03


@pytest.fixture
def served(testbed: tb.TestbedInfo) -> Iterator[tb.TestbedInfo]:
    """`pktbench serve` in namespace b for the test's length."""
    with serve_in_namespace(testbed, "7425"):
        yield testbed


def _bulk(info: tb.TestbedInfo, *args: str) -> tuple[dict[str, Any], str]:
    paths = [p.ifname_a for p in info.paths]
    proc = tb.exec_in("a", [*PKTBENCH, "bulk", info.addrs["b"],
                            "--path-ifaces", ",".join(paths), "--json", "-", "--quiet", *args],
                      prefix=info.prefix, capture_output=True, timeout_s=90)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.testbed_config(paths=2, rate_cap_bps=CAP_BPS)
def test_one_stream_fills_one_path_and_planned_flows_fill_both(
        served: tb.TestbedInfo) -> None:
    assert served.mechanism in ("ecmp", "bond")
    doc, table = _bulk(served, "--sweep-streams", "1,2", "--paths", "2", "--duration", "3",
                       "--link-speed", f"2x{CAP_BPS}")
    one, two = doc["steps"]
    overhead = one["overhead"]
    # MSS and options as the sockets report them: 1448 + 12 timestamps on a 1500 MTU
    assert overhead["frame_bytes"] == overhead["payload_bytes"] + 66
    assert overhead["wire_bytes"] == overhead["frame_bytes"] + 24

    assert one["frame_bps"] == pytest.approx(CAP_BPS, rel=TOLERANCE)
    assert one["wire_bps"] == pytest.approx(CAP_BPS, rel=TOLERANCE)
    assert two["frame_bps"] == pytest.approx(2 * CAP_BPS, rel=TOLERANCE)
    assert two["wire_bps"] == pytest.approx(2 * CAP_BPS, rel=TOLERANCE)
    # goodput is lower than on-wire by exactly the header overhead
    for step in (one, two):
        assert step["aggregate_bps"] == pytest.approx(
            step["wire_bps"] * overhead["goodput_ratio"])

    # the plan put the two flows on different paths, and the counters agree
    assert doc["plan"]["method"] == "probed"
    assert sorted(s["path"] for s in two["streams"]) == [0, 1]
    for stream in two["streams"]:
        assert stream["goodput_bps"] == pytest.approx(CAP_BPS * overhead["goodput_ratio"],
                                                          rel=TOLERANCE)
    per_path = {p["name"]: p["interface_bps"] for p in two["per_path"]}
    assert all(rate == pytest.approx(CAP_BPS, rel=0.05) for rate in per_path.values())
    busy_paths = [p for p in one["per_path"] if p["interface_bps"] > CAP_BPS / 2]
    assert len(busy_paths) == 1

    ceiling = doc["ceiling"]
    assert ceiling["goodput_bps"] == two["aggregate_bps"]
    assert ceiling["streams"] == 2
    # tbf meters frame bytes: traffic above what an L1 link of this speed
    # carries is judged by the L2 model, never as more than 100 % of it
    model = ceiling["link_model"]
    if two["wire_bps"] > 2 * CAP_BPS:
        assert model == "l2"
    counted = two["frame_bps"] if model == "l2" else two["wire_bps"]
    assert ceiling["link_percent"] == pytest.approx(100 * counted / (2 * CAP_BPS))
    assert ceiling["link_percent"] <= 100 * (1 + TOLERANCE)
    assert ceiling["max_goodput_at_link_bps"] >= ceiling["goodput_bps"] * (1 - TOLERANCE)
    table = " ".join(table.split())  # prose lines wrap at 100 columns
    assert "ceiling:" in table and "of the 0.400 Gbit/s link" in table
    assert f"link by the {model.upper()}: " in table


@pytest.mark.testbed_config(paths=2, rate_cap_bps=CAP_BPS)
def test_udp_bulk_saturates_one_path(served: tb.TestbedInfo) -> None:
    doc, _ = _bulk(served, "--udp", "--sweep-rates", "0.1,0.3", "--duration", "1.5")
    below, above = doc["steps"]
    assert below["size_bytes"] == 1472  # fits the 1500-byte path MTU
    assert below["loss_ratio"] < 0.01
    assert below["aggregate_bps"] == pytest.approx(100e6, rel=TOLERANCE)
    assert above["frame_bps"] == pytest.approx(CAP_BPS, rel=TOLERANCE)
    assert above["loss_ratio"] > 0.2
    assert doc["ceiling"]["offered_bps"] == 300e6
