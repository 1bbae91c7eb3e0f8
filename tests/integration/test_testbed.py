"""The namespace testbed: setup and removal, reachability, shaping accuracy, CLI.

Tests marked `root` build real namespaces (skipped without root or a working
`ip netns`); each uses its own prefix and tears down even on failure. Loads
are a few thousand packets for at most a second each.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from click.testing import CliRunner

from pktbench import testbed as tb
from pktbench.cli import main
from pktbench.errors import ConfigError, TestbedError


_OUR_IFNAMES = {"va0", "va1", "vb0", "vb1", tb.BOND_IFNAME, "p0", "p1"}


def _root_links() -> set[str]:
    """Links of the root namespace that bear a name the testbed uses."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"] for link in json.loads(out)} & _OUR_IFNAMES


def _our_namespaces(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout.strip()
    names = {entry["name"] for entry in json.loads(out)} if out else set()
    # Our own probes only: a parallel run's probes are none of our business.
    probes = f"{tb.PROBE_PREFIX}{os.getpid()}x"
    return {name for name in names if name.startswith((f"{prefix}-", probes))}


# ------------------------------------------------------------ no root needed


@pytest.mark.parametrize("fields, word", [
    ({"paths": 3}, "paths"),
    ({"pps_limit": 5500, "pps_burst": 50}, "pps_burst"),
    ({"prefix": "bad/name"}, "prefix"),
    ({"prefix": "x" * 25}, "prefix"),
    ({"mtu": 20}, "mtu"),
    ({"mechanism": "bond"}, "paths=2"),
    ({"rate_cap_bps": 10}, "rate_cap_bps"),
    ({"delay_ms": -1.0}, "delay_ms"),
])
def test_config_rejects_bad_values_naming_the_field(fields: dict[str, object],
                                                    word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        tb.TestbedConfig(**fields)  # type: ignore[arg-type]


def test_without_net_admin_every_entry_point_says_run_as_root(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb, "_effective_caps", lambda: 0)
    for call in (lambda: tb.up(tb.TestbedConfig(prefix="never")),
                 lambda: tb.down("never"), lambda: tb.status("never"),
                 lambda: tb.exec_in("a", ["true"], prefix="never"), tb.probe_kernel):
        with pytest.raises(TestbedError) as caught:
            call()
        assert str(caught.value) == tb.ROOT_ERROR
    result = CliRunner().invoke(main, ["testbed", "up", "--prefix", "never"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tb.ROOT_ERROR}"


# ------------------------------------------------------------ root


@pytest.mark.root
def test_probe_kernel_reports_every_feature_and_leaves_nothing() -> None:
    found = tb.probe_kernel()
    assert set(found) == {"netem", "bonding", "tbf", "htb", "nft", "ecmp_hash_policy"}
    assert all(isinstance(v, bool) for v in found.values())
    assert not _our_namespaces(tb.PROBE_PREFIX)


@pytest.mark.root
def test_up_then_down_leaves_nothing_behind(testbed_prefix: str) -> None:
    links_before = _root_links()
    config = tb.TestbedConfig(prefix=testbed_prefix, paths=2, rate_cap_bps=100_000_000,
                              pps_limit=5500, both_directions=True)
    try:
        info = tb.up(config)
        assert _our_namespaces(testbed_prefix) == {f"{testbed_prefix}-a",
                                                   f"{testbed_prefix}-b"}
        assert info.config == config
        assert info.mechanism in ("ecmp", "bond")
        assert [p.direction for p in info.policers] == ["a->b", "b->a"]
        # The veths were born inside the namespaces: the root one never saw them.
        assert _root_links() == links_before
        # A process left inside must not keep the namespace (and veths) alive.
        sleeper = tb.popen_in("b", ["sleep", "30"], prefix=testbed_prefix)
    finally:
        assert tb.down(testbed_prefix) is True
    assert sleeper.wait(timeout=5) != 0
    assert not _our_namespaces(testbed_prefix)
    assert _root_links() == links_before
    assert tb.status(testbed_prefix) is None
    assert tb.down(testbed_prefix) is False


@pytest.mark.root
def test_up_is_idempotent_and_rebuilds_on_a_new_config(make_testbed, testbed_prefix) -> None:
    first = make_testbed(pps_limit=5500)

    def mac() -> str:
        out = tb.exec_in("a", ["ip", "-j", "link", "show", "va0"], prefix=testbed_prefix,
                         capture_output=True, timeout_s=10).stdout
        return str(json.loads(out)[0]["address"])

    mac_before = mac()
    again = make_testbed(pps_limit=5500)
    assert again.config == first.config
    assert mac() == mac_before, "an identical up() must not rebuild"
    with pytest.raises(TestbedError, match="another config"):
        tb.up(tb.TestbedConfig(prefix=testbed_prefix, pps_limit=6000), replace=False)
    changed = make_testbed(pps_limit=6000)
    assert [p.rate_pps for p in changed.policers] == [6000]
    assert mac() != mac_before


@pytest.mark.root
def test_half_built_leftover_is_reported_then_rebuilt(make_testbed, testbed_prefix) -> None:
    make_testbed(pps_limit=5500)
    subprocess.run(["ip", "netns", "del", f"{testbed_prefix}-b"], check=True)
    with pytest.raises(TestbedError, match="half-built.*testbed down"):
        tb.status(testbed_prefix)
    info = make_testbed(pps_limit=5500)
    assert set(info.namespaces.values()) == _our_namespaces(testbed_prefix)
    assert info.policers[0].seen_packets == 0


@pytest.mark.root
def test_failure_mid_setup_removes_what_was_made(testbed_prefix: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb, "_policer_ruleset", lambda names, config: "table bogus {\n")
    with pytest.raises(TestbedError, match="nft"):
        tb.up(tb.TestbedConfig(prefix=testbed_prefix, pps_limit=5500))
    assert not _our_namespaces(testbed_prefix)


@pytest.mark.root
def test_delay_without_netem_is_refused_unless_degradation_is_accepted(
        make_testbed, testbed_prefix) -> None:
    if tb.probe_kernel()["netem"]:
        pytest.skip("this kernel has netem: the delay is applied, nothing to refuse")
    with pytest.raises(TestbedError, match="netem"):
        make_testbed(delay_ms=5.0)
    assert not _our_namespaces(testbed_prefix)
    info = make_testbed(delay_ms=5.0, allow_degraded=True)
    assert info.delay_applied_ms == 0.0
    assert any("netem" in note for note in info.degradations)


@pytest.mark.root
@pytest.mark.parametrize("testbed", [{"paths": 1}, {"paths": 2}], indirect=True,
                         ids=["one-path", "two-paths"])
def test_udp_echo_reaches_b_and_comes_back(testbed: tb.TestbedInfo, ns_udp: Any) -> None:
    offer = ns_udp.offer(200, 0.1, echo=True)
    assert offer.sent == 20 and offer.received == 20 and offer.replies == 20
    for path in testbed.paths:  # every path address answers too
        by_path = ns_udp.offer(100, 0.05, echo=True, dst=path.addr_b.split("/")[0])
        assert by_path.replies == by_path.sent == 5


@pytest.mark.root
def test_no_default_route_in_either_namespace(testbed: tb.TestbedInfo) -> None:
    for side in tb.SIDES:
        routes = tb.exec_in(side, ["ip", "-j", "route", "show"], prefix=testbed.prefix,
                            capture_output=True, timeout_s=10).stdout
        assert all(route["dst"] != "default" for route in json.loads(routes))
        # A lookup outside 198.18.0.0/15 finds nothing (TEST-NET-1; nothing is sent).
        lookup = tb.exec_in(side, ["ip", "route", "get", "192.0.2.1"],
                            prefix=testbed.prefix, capture_output=True, timeout_s=10)
        assert lookup.returncode != 0 and "unreachable" in lookup.stderr


@pytest.mark.root
@pytest.mark.testbed_config(pps_limit=5500)
def test_pps_policer_passes_below_and_clips_above_the_limit(testbed: tb.TestbedInfo,
                                                            ns_udp: Any) -> None:
    below = ns_udp.offer(3000, 1.0)
    assert below.sent == 3000
    assert below.loss_ratio <= 0.002, below
    before = tb.policer_counters("b", testbed.prefix)
    above = ns_udp.offer(8000, 1.0)
    after = tb.policer_counters("b", testbed.prefix)
    assert above.sent == 8000
    assert abs(above.received_pps - 5500) / 5500 <= 0.05, above
    assert before is not None and after is not None
    dropped = after["dropped_packets"] - before["dropped_packets"]
    assert dropped == above.sent - above.received  # all loss is the policer's
    info = tb.status(testbed.prefix)
    assert info is not None and info.policers[0].dropped_packets == after["dropped_packets"]


@pytest.mark.root
@pytest.mark.testbed_config(pps_limit=5500, paths=2)
def test_pps_policer_is_shared_by_both_paths(testbed: tb.TestbedInfo,
                                             ns_udp: Any) -> None:
    above = ns_udp.offer(8000, 1.0, flows=16)
    assert abs(above.received_pps - 5500) / 5500 <= 0.05, above


@pytest.mark.root
@pytest.mark.testbed_config(paths=2, rate_cap_bps=50_000_000)
def test_flows_with_different_source_ports_use_both_paths(testbed: tb.TestbedInfo,
                                                          ns_udp: Any) -> None:
    assert all(any(line.startswith("qdisc tbf") for line in testbed.qdiscs["a"][name])
               for name in ("va0", "va1"))
    before = tb.interface_counters("a", testbed.prefix)
    offer = ns_udp.offer(2000, 0.5, flows=16)
    after = tb.interface_counters("a", testbed.prefix)
    assert offer.received == offer.sent == 1000
    per_path = [after[f"va{i}"]["tx_packets"] - before[f"va{i}"]["tx_packets"]
                for i in range(2)]
    assert sum(per_path) >= 1000
    # 16 flows over a layer-4 hash: each path carries a real share.
    assert min(per_path) >= 100, per_path


@pytest.mark.root
@pytest.mark.testbed_config(rate_cap_bps=10_000_000)
def test_tbf_cap_holds_the_bit_rate(ns_udp: Any) -> None:
    # 1000 B payload = 1042 B on the veth: 10 Mbit/s carries ~1200 of them a second.
    # The receiver's span includes the queue draining after the sender stops,
    # at the cap too, so packets / span is the cap plus only the first burst.
    offer = ns_udp.offer(3000, 1.0, size_bytes=1000)
    frames_per_s = 10_000_000 / (1042 * 8)
    assert offer.sent == 3000
    assert abs(offer.received / offer.span_s - frames_per_s) / frames_per_s <= 0.03, offer


@pytest.mark.root
def test_cli_up_status_exec_down(testbed_prefix: str) -> None:
    runner = CliRunner()
    try:
        result = runner.invoke(main, ["testbed", "up", "--prefix", testbed_prefix,
                                      "--paths", "2", "--rate-cap", "1gbit",
                                      "--pps-limit", "5500", "--pps-burst", "200"])
        assert result.exit_code == 0, result.output
        assert "ecmp" in result.output or "bond" in result.output
        result = runner.invoke(main, ["testbed", "status", "--prefix", testbed_prefix,
                                      "--json"])
        status = json.loads(result.output)
        assert result.exit_code == 0 and status["up"] is True
        assert status["config"]["rate_cap_bps"] == 10**9
        assert status["policers"][0]["burst_packets"] == 200
        result = runner.invoke(main, ["testbed", "exec", "--prefix", testbed_prefix, "b",
                                      "--", "sh", "-c", "exit 7"])
        assert result.exit_code == 7
    finally:
        result = runner.invoke(main, ["testbed", "down", "--prefix", testbed_prefix])
    assert result.exit_code == 0 and "removed" in result.output
    result = runner.invoke(main, ["testbed", "status", "--prefix", testbed_prefix])
    assert result.exit_code == 1 and "not up" in result.output
    result = runner.invoke(main, ["testbed", "up", "--prefix", testbed_prefix,
                                  "--pps-limit", "5500", "--pps-burst", "10"])
    assert result.exit_code == 2 and "pps_burst" in result.output
    assert not _our_namespaces(testbed_prefix)
