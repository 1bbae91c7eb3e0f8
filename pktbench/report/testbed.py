"""The testbed reporters: status summary, removal line and the kernel probe.

Owns: how a testbed's state (pktbench.api.TestbedStatus), its removal
(TestbedRemoval) and the kernel feature probe (KernelProbe) read on a
terminal and as JSON, and the JSON error document of a failed command.

Must not: read the kernel; everything shown comes with the result.
"""
from __future__ import annotations

import json
from typing import Any

from pktbench.report._common import Target, open_text


def render_testbed(info: Any) -> str:
    """A testbed that is up: addresses, paths, shaping, degradations and counters.

    Args:
        info: a pktbench.testbed.TestbedInfo.

    Returns:
        The text, without a trailing newline.
    """
    cfg = info.config
    lines = [
        f"testbed {info.prefix}: up, {info.mechanism} over {cfg.paths} path(s), "
        f"namespaces {info.namespaces['a']} (client) / {info.namespaces['b']} (server)",
        f"  reach a at {info.addrs['a']}, b at {info.addrs['b']}  (mtu {cfg.mtu})",
    ]
    for path in info.paths:
        lines.append(f"  path {path.index}: {path.ifname_a} {path.addr_a} <-> "
                     f"{path.ifname_b} {path.addr_b}")
    direction = "a->b and b->a" if cfg.both_directions else "a->b"
    if cfg.rate_cap_bps is not None:
        lines.append(f"  rate cap: {cfg.rate_cap_qdisc} {cfg.rate_cap_bps} bit/s per path, "
                     f"{direction}")
    for pol in info.policers:
        lines.append(f"  pps policer {pol.direction}: {pol.rate_pps}/s burst "
                     f"{pol.burst_packets} (seen {pol.seen_packets}, dropped "
                     f"{pol.dropped_packets})")
    if info.delay_applied_ms > 0:
        lines.append(f"  delay: {info.delay_applied_ms:g} ms {direction}")
    segmenting = getattr(info, "udp_segmentation", {})
    if segmenting:
        left_on = sorted(name for name, on in segmenting.items() if on is not False)
        lines.append("  tx-udp-segmentation: off on every veth (a GSO send: one packet a datagram)"
                     if not left_on else
                     f"  tx-udp-segmentation: on at {', '.join(left_on)}: a GSO send may cross "
                     "as one packet")
    for note in info.degradations:
        lines.append(f"  degraded: {note}")
    lines.append("  counters (packets rx/tx, dropped rx/tx):")
    for side in ("a", "b"):
        for name, c in sorted(info.counters[side].items()):
            if name == "lo":
                continue
            lines.append(f"    {side} {name}: {c['rx_packets']}/{c['tx_packets']}, "
                         f"{c['rx_dropped']}/{c['tx_dropped']}")
    return "\n".join(lines)


def write_testbed_table(status: Any, target: Target) -> None:
    """Reporter ("testbed", "table"): the summary, or that the testbed is not up."""
    text = (render_testbed(status.info) if status.info is not None
            else f"testbed {status.prefix}: not up")
    replaced = getattr(status, "replaced", ())
    if replaced:
        text = (f"testbed {status.prefix}: rebuilt, the old one differed: "
                f"{'; '.join(replaced)}\n" + text)
    with open_text(target) as stream:
        stream.write(text + "\n")


def write_testbed_json(status: Any, target: Target) -> None:
    """Reporter ("testbed", "json"): {"up": true, ...TestbedInfo.to_dict(), "replaced": [...]}.

    `replaced` lists what differed in the testbed this one replaced (empty
    when it was built anew or kept); a testbed that is not up is {"up": false}.
    """
    if status.info is None:
        text = json.dumps({"prefix": status.prefix, "up": False})
    else:
        replaced = list(getattr(status, "replaced", ()))
        text = json.dumps({"up": True, **status.info.to_dict(), "replaced": replaced}, indent=2)
    with open_text(target) as stream:
        stream.write(text + "\n")


def write_removal_table(removal: Any, target: Target) -> None:
    """Reporter ("testbed-down", "table")."""
    state = "removed" if removal.removed else "none to remove"
    with open_text(target) as stream:
        stream.write(f"testbed {removal.prefix}: {state}\n")


def write_probe_table(probe: Any, target: Target) -> None:
    """Reporter ("probe", "table"): one "feature: yes|no" line each."""
    with open_text(target) as stream:
        for name, usable in probe.features.items():
            stream.write(f"{name}: {'yes' if usable else 'no'}\n")


def write_probe_json(probe: Any, target: Target) -> None:
    """Reporter ("probe", "json"): {feature: bool} on one line."""
    with open_text(target) as stream:
        stream.write(json.dumps(dict(probe.features)) + "\n")


def write_testbed_error(message: str, target: Target) -> None:
    """The JSON document of a testbed command that failed: {"error": message}."""
    with open_text(target) as stream:
        stream.write(json.dumps({"error": message}) + "\n")
