"""NIC counters: real sysfs reads, and the delta arithmetic."""
from pktbench import nic


def test_loopback_counters_are_read_from_sysfs():
    counters = nic.read_counters("lo")
    assert "rx_dropped" in counters and "tx_dropped" in counters
    assert all(isinstance(value, int) and value >= 0 for value in counters.values())


def test_unknown_interface_gives_nothing():
    assert nic.read_counters("no-such-if0") == {}
    assert nic.read_counters(None) == {}


def test_deltas_keep_only_counters_that_moved():
    before = {"rx_dropped": 5, "tx_dropped": 1, "ethtool.pps_allowance_exceeded": 10}
    after = {"rx_dropped": 5, "tx_dropped": 3, "ethtool.pps_allowance_exceeded": 250,
             "new_counter": 7}
    assert nic.deltas(before, after) == {"tx_dropped": 2, "ethtool.pps_allowance_exceeded": 240}
    assert nic.deltas({"rx_dropped": 9}, {"rx_dropped": 2}) == {"rx_dropped": 0}
