"""On-wire overhead arithmetic, link speeds, sweep lists and the flow planner."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pktbench import flows
from pktbench.errors import ConfigError


def test_tcp_segment_with_timestamps_on_1500_mtu() -> None:
    # MSS 1448 = 1500 - 20 IP - 20 TCP - 12 timestamps option
    o = flows.tcp_overhead(1448, options_bytes=12)
    assert o.frame_bytes == 1514  # what the interface counters and tbf count
    assert o.wire_bytes == 1538  # + FCS 4 + preamble 8 + gap 12
    assert o.goodput_ratio == pytest.approx(1448 / 1538)
    assert o.wire_bps(1448e6) == pytest.approx(1538e6)
    assert o.frame_bps(1448e6) == pytest.approx(1514e6)
    assert o.goodput_bps(1538e6) == pytest.approx(1448e6)
    assert "1538 bytes on the wire" in o.describe()
    assert "options 12" in o.describe()


def test_tcp_ipv6_without_timestamps() -> None:
    o = flows.tcp_overhead(1440, ipv6=True)
    assert o.wire_bytes == 1440 + 20 + 40 + 14 + 4 + 8 + 12
    assert o.to_dict()["ip_header_bytes"] == 40


def test_udp_datagram_fitting_the_mtu() -> None:
    o = flows.udp_overhead(1472, mtu_bytes=1500)
    assert (o.frames, o.frame_bytes, o.wire_bytes) == (1, 1514, 1538)


def test_udp_fragments_carry_their_own_headers() -> None:
    # 8192 + 8 UDP = 8200 bytes of IP payload; 1480 per fragment -> 6 fragments
    o = flows.udp_overhead(8192, mtu_bytes=1500)
    assert o.frames == 6
    assert o.frame_bytes == 8192 + 8 + 6 * (20 + 14)
    assert o.wire_bytes == o.frame_bytes + 6 * 24
    v6 = flows.udp_overhead(8192, mtu_bytes=1500, ipv6=True)
    # 1452 -> 1448 bytes per IPv6 fragment (a multiple of 8): 6 fragments with 48-byte headers
    assert v6.frames == 6 and v6.ip_header_bytes == 48


def test_short_packets_are_padded_to_the_ethernet_minimum() -> None:
    o = flows.udp_overhead(1, mtu_bytes=1500)
    assert o.padding_bytes == 46 - (20 + 8 + 1)
    assert o.wire_bytes == 84  # the minimum frame: 64 bytes + preamble + gap


@given(st.integers(1, 9000), st.sampled_from([0, 12]), st.booleans())
def test_goodput_below_frames_below_wire(mss: int, options: int, ipv6: bool) -> None:
    o = flows.tcp_overhead(mss, ipv6=ipv6, options_bytes=options)
    assert o.payload_bytes < o.frame_bytes < o.wire_bytes
    assert o.goodput_bps(o.wire_bps(1e9)) == pytest.approx(1e9)


def test_overhead_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        flows.tcp_overhead(0)
    with pytest.raises(ConfigError):
        flows.tcp_overhead(1448, options_bytes=13)
    with pytest.raises(ConfigError):
        flows.udp_overhead(100, mtu_bytes=30)


def test_sweep_lists() -> None:
    assert flows.parse_count_list("1,2,4") == (1, 2, 4)
    for bad in ("", "1,a", "0,2"):
        with pytest.raises(ConfigError):
            flows.parse_count_list(bad)


def test_path_quotas_balance() -> None:
    assert flows.path_quotas(4, 2) == (2, 2)
    assert flows.path_quotas(5, 2) == (3, 2)
    assert flows.path_quotas(1, 3) == (1, 0, 0)
    with pytest.raises(ConfigError):
        flows.path_quotas(0, 2)


def test_probe_path_reads_the_counter_that_moved() -> None:
    names = ["p0", "p1"]
    before = {"p0": 1000, "p1": 5000}
    assert flows.probe_path(before, {"p0": 1100, "p1": 300_000}, names, min_bytes=200_000) == 1
    # nothing moved enough: unclear
    assert flows.probe_path(before, {"p0": 2000, "p1": 6000}, names, min_bytes=200_000) is None
    # both moved alike (other traffic on the link): unclear
    assert flows.probe_path(before, {"p0": 300_000, "p1": 300_000}, names,
                            min_bytes=200_000) is None


def test_planner_keeps_ports_until_every_path_has_its_share() -> None:
    planner = flows.FlowPlanner(3, ["p0", "p1"])
    assert planner.quotas == (2, 1)
    assert planner.offer(100, 0)
    assert not planner.offer(101, None)
    assert planner.offer(102, 0)
    assert not planner.offer(103, 0)  # p0 is full
    assert not planner.done and planner.missing() == {"p1": 1}
    assert planner.offer(104, 1)
    assert planner.done
    plan = planner.plan()
    # round-robin: every prefix is balanced
    assert plan.ports == (100, 104, 102) and plan.paths == (0, 1, 0)
    assert plan.for_streams(2) == (100, 104)
    assert (plan.probes, plan.unclear_probes, plan.method) == (5, 1, "probed")
    with pytest.raises(ConfigError):
        plan.for_streams(4)
    assert plan.to_dict()["path_names"] == ["p0", "p1"]
