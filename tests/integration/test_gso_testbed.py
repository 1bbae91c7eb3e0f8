"""UDP GSO on the testbed (root): every datagram of a GSO send is a packet on the path.

The testbed's veths do not segment UDP GSO buffers themselves
(tx-udp-segmentation off), so the kernel splits each buffer before it
leaves: an nftables counter at the receiver's ingress sees each datagram,
and a policer polices each one, exactly as without GSO.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cli_support import PKTBENCH, serve_in_namespace

from pktbench import engine
from pktbench import testbed as tb

pytestmark = pytest.mark.root

PORT = "7426"
POLICER_PPS = 7_300  # odd, so a knee at a round rate would be a coincidence
COUNTER = "gso_udp_in"


@pytest.fixture
def served(testbed: tb.TestbedInfo) -> Iterator[tb.TestbedInfo]:
    """`pktbench serve` in namespace b, pinned away from the client, for the test."""
    if not engine.udp_offload_support()[0]:
        pytest.skip("needs the compiled engine on a kernel with UDP_SEGMENT")
    with serve_in_namespace(testbed, PORT, cpu=1):
        yield testbed


def _pktbench(info: tb.TestbedInfo, *args: str) -> dict[str, Any]:
    proc = tb.exec_in("a", ["taskset", "-c", "0", *PKTBENCH, *args, "--json", "-", "--quiet"],
                      prefix=info.prefix, capture_output=True, timeout_s=120)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _count_udp_ingress(info: tb.TestbedInfo) -> None:
    dev = info.paths[0].ifname_b
    # netdev ingress: before IP, so it sees every datagram the veth delivers
    # (the namespace goes with the testbed, and the table with it)
    made = tb.exec_in("b", ["nft", "-f", "-"], prefix=info.prefix, input_text=(
        f"table netdev {COUNTER} {{\n  counter udp_in {{ }}\n  chain ingress {{\n"
        f'    type filter hook ingress device "{dev}" priority 0;\n'
        "    meta l4proto udp counter name \"udp_in\"\n  }\n}\n"))
    assert made.returncode == 0


def _udp_ingress(info: tb.TestbedInfo) -> int:
    proc = tb.exec_in("b", ["nft", "-j", "list", "counter", "netdev", COUNTER, "udp_in"],
                      prefix=info.prefix, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return next(int(item["counter"]["packets"]) for item in json.loads(proc.stdout)["nftables"]
                if "counter" in item)


def test_gso_blast_received_count_equals_the_ingress_counter(served: tb.TestbedInfo) -> None:
    assert served.udp_segmentation and not any(served.udp_segmentation.values())
    _count_udp_ingress(served)
    doc = _pktbench(served, "run", f"{served.addrs['b']}:{PORT}", "--workload", "blast",
                    "--rate", "60k", "-t", "1", "--gso", "on")
    step = doc["steps"][0]
    assert step["engine"]["udp_gso"] and step["engine"]["gso_segments_mean"] > 1
    assert step["sent_packets"] >= 0.99 * 60_000  # a shared machine may stall the sender
    # no warm-up and nothing else on UDP: one packet on the path per datagram counted
    assert step["received_packets"] == _udp_ingress(served) == step["sent_packets"]


def _knee(info: tb.TestbedInfo, gso: str) -> tuple[float | None, dict[str, Any]]:
    doc = _pktbench(info, "sweep", f"{info.addrs['b']}:{PORT}", "--workload", "blast",
                    "--rates", "3k,5k,11k,15k", "--duration", "1", "--warmup", "0.2",
                    "--gso", gso)
    knee = doc.get("knee") or {}
    return knee.get("last_good_pps"), doc


# A burst allowance of 1,000 packets: a sender the shared machine stalls
# catches up in one batch (GSO or not), which a 100-packet bucket would police
# as if the rate were over. The rates are far enough from the limit that the
# bucket cannot carry a step over it (11k loses about a quarter).
@pytest.mark.testbed_config(pps_limit=POLICER_PPS, pps_burst=1000)
def test_a_policer_knee_is_the_same_with_gso_on_and_off(served: tb.TestbedInfo) -> None:
    with_gso, doc_on = _knee(served, "on")
    without, doc_off = _knee(served, "off")
    assert any(step["engine"]["udp_gso"] for step in doc_on["steps"])
    assert not any(step["engine"]["udp_gso"] for step in doc_off["steps"])
    assert with_gso == without == 5_000, (doc_on["knee"], doc_off["knee"])
    # above the policer both lose what it drops: the same share, within noise
    over_on, over_off = doc_on["steps"][-1], doc_off["steps"][-1]
    assert over_on["received_pps"] == pytest.approx(POLICER_PPS, rel=0.05)
    assert over_off["received_pps"] == pytest.approx(POLICER_PPS, rel=0.05)
