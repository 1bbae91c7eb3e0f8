"""Per-interface drop and allowance counters, read before and after a step.

Cloud NICs expose the reason a path degrades at a few thousand pps as driver
counters (for example pps_allowance_exceeded, bw_in_allowance_exceeded);
every interface has rx/tx dropped counters in sysfs. A step records the
deltas of both on each host, so a knee can be explained by the NIC that
caused it. Reads sysfs and, where installed, `ethtool -S`; never raises.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_SYSFS_COUNTERS = ("rx_dropped", "tx_dropped", "rx_missed_errors", "rx_fifo_errors",
                   "rx_over_errors")
# Driver counters that explain loss: allowances, drops, discards, overruns.
_INTERESTING = re.compile(r"allowance|exceed|drop|discard|miss|fifo|overrun|no_?buf",
                          re.IGNORECASE)


def read_counters(interface: str | None) -> dict[str, int]:
    """Current loss-related counters of `interface` ({} when unknown)."""
    if not interface:
        return {}
    counters: dict[str, int] = {}
    stats = Path("/sys/class/net") / interface / "statistics"
    for name in _SYSFS_COUNTERS:
        try:
            counters[name] = int((stats / name).read_text())
        except (OSError, ValueError):
            continue
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return counters
    try:
        output = subprocess.run([ethtool, "-S", interface], capture_output=True, text=True,
                                timeout=2, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return counters
    for line in output.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and _INTERESTING.search(name) and value.strip().lstrip("-").isdigit():
            counters[f"ethtool.{name.strip()}"] = int(value)
    return counters


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved during the step (a counter reset reads as 0)."""
    return {name: max(after[name] - before.get(name, after[name]), 0)
            for name in after if after[name] != before.get(name, after[name])}
