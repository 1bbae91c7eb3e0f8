"""The two-namespace testbed: two "hosts" on one machine, with a known knee.

Owns: creating, shaping, inspecting and removing a pair of network namespaces
(`<prefix>-a`, the client side, and `<prefix>-b`, the server side) joined by one
or two veth pairs, and running commands inside them. This is the only module
in pktbench that runs `ip`, `tc`, `nft` or `sysctl`.

Invariants:
- Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544) only,
  and neither namespace has a default route, so testbed traffic cannot leave
  the pair. Path i uses 198.18.i.0/24 (.1 in a, .2 in b); with two paths each
  side also owns a service address on lo (198.19.0.1 in a, 198.19.0.2 in b)
  reached over both paths (a bond where the driver exists, else an ECMP route
  with the layer-4 hash, which spreads flows by 5-tuple like bond layer3+4).
- Veth ends are created directly inside the namespaces, never in the root
  namespace, so interface names cannot collide between parallel testbeds and
  removing the two namespaces removes everything: veths, qdiscs, nft tables.
- Shaping sits on the a->b direction unless both directions are asked for:
  the rate cap is the egress qdisc of a's veth ends (tbf or htb), the pps
  policer an nftables `limit rate over` rule at b's ingress. Both are per
  direction; the rate cap is per path, the policer is shared by all paths.
- The configuration in force is stamped into the alias of a's first veth end
  as the last setup step: the kernel holds the state (no files, no module
  state), and a testbed without the stamp is a half-built leftover.
- Failure mid-setup removes what was made before the error propagates.

Must not: touch the root namespace's interfaces, routes, sysctls or nft state;
kill processes other than those living inside the testbed's own namespaces;
send traffic (callers do that, through exec_in/popen_in).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pktbench.errors import ConfigError, TestbedError

Side = Literal["a", "b"]
Mechanism = Literal["single", "ecmp", "bond"]
_MECHANISMS: tuple[Mechanism, ...] = ("single", "ecmp", "bond")
SIDES: tuple[Side, Side] = ("a", "b")
DEFAULT_PREFIX = "pktb"
ROOT_ERROR = "testbed needs root (CAP_NET_ADMIN): run as root"

#: Service addresses (two paths): reached over every path.
SERVICE_ADDRS: Mapping[Side, str] = {"a": "198.19.0.1", "b": "198.19.0.2"}
BOND_IFNAME = "pkbond0"
PROBE_PREFIX = "pktbprobe"  # throw-away namespaces: PROBE_PREFIX<pid>x<hex>
NFT_TABLE = "pktbench"
MIN_PPS_BURST = 100
_STAMP_VERSION = 1
_CMD_TIMEOUT_S = 15.0
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # `ip netns add` mounts a namespace file
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,23}$")
_PACKAGES = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "sysctl": "procps",
             "ethtool": "ethtool"}
# A veth hands a UDP GSO buffer to its peer whole unless it segments it
# itself: left on, one send of 64 datagrams would cross the path (and its
# policer, counters and qdiscs) as one packet. Off, every datagram is a packet.
UDP_SEGMENTATION_FEATURE = "tx-udp-segmentation"


@dataclass(frozen=True)
class TestbedConfig:
    """What to build. Rates are per direction; `rate_cap_bps` is per path.

    Attributes:
        prefix: namespace name prefix; namespaces are `<prefix>-a`, `<prefix>-b`.
        paths: 1 (one veth pair) or 2 (two pairs, bond or ECMP between them).
        rate_cap_bps: bit rate cap per path (egress qdisc), None for no cap.
        rate_cap_qdisc: "tbf" drops over the cap; "htb" queues and pushes back.
        pps_limit: packets/s policer over all paths, None for no policer.
        pps_burst: policer burst in packets (>= 100: smaller bursts drop far
            below the limit on kernels like this one).
        delay_ms: one-way added delay per shaped direction (needs tc netem).
        mtu: MTU of every veth end (and the bond).
        both_directions: shape b->a exactly like a->b.
        allow_degraded: build even when a feature is missing (netem for
            delay), recording what was left out instead of failing.
        mechanism: "auto" (bond if the driver exists, else ECMP), "ecmp", "bond".
        loss_percent: drop this share of the UDP packets crossing a shaped
            direction at random, whatever the rate (nftables `numgen
            random`, resolution 0.01 %): a path with a known loss floor.
    """

    __test__ = False  # not a pytest test class despite the name

    prefix: str = DEFAULT_PREFIX
    paths: int = 1
    rate_cap_bps: int | None = None
    rate_cap_qdisc: Literal["tbf", "htb"] = "tbf"
    pps_limit: int | None = None
    pps_burst: int = MIN_PPS_BURST
    delay_ms: float = 0.0
    mtu: int = 1500
    both_directions: bool = False
    allow_degraded: bool = False
    mechanism: Literal["auto", "ecmp", "bond"] = "auto"
    loss_percent: float = 0.0

    def __post_init__(self) -> None:
        _check_prefix(self.prefix)
        if self.paths not in (1, 2):
            raise ConfigError(f"testbed paths must be 1 or 2 (got {self.paths})")
        if self.rate_cap_bps is not None and not 8_000 <= self.rate_cap_bps <= 10**12:
            raise ConfigError(
                f"testbed rate_cap_bps must be 8kbit..1tbit (got {self.rate_cap_bps})")
        if self.rate_cap_qdisc not in ("tbf", "htb"):
            raise ConfigError(
                f"testbed rate_cap_qdisc must be tbf or htb (got {self.rate_cap_qdisc!r})")
        if self.pps_limit is not None and not 1 <= self.pps_limit <= 100_000_000:
            raise ConfigError(
                f"testbed pps_limit must be 1..100000000 (got {self.pps_limit})")
        if not MIN_PPS_BURST <= self.pps_burst <= 1_000_000:
            raise ConfigError(
                f"testbed pps_burst must be {MIN_PPS_BURST}..1000000 packets (got "
                f"{self.pps_burst}); smaller bursts drop far below the limit")
        if not 0.0 <= self.delay_ms <= 10_000.0:
            raise ConfigError(f"testbed delay_ms must be 0..10000 (got {self.delay_ms})")
        if not 68 <= self.mtu <= 65535:
            raise ConfigError(f"testbed mtu must be 68..65535 (got {self.mtu})")
        if self.mechanism not in ("auto", "ecmp", "bond"):
            raise ConfigError(
                f"testbed mechanism must be auto, ecmp or bond (got {self.mechanism!r})")
        if not 0.0 <= self.loss_percent < 100.0:
            raise ConfigError(f"testbed loss_percent must be 0..100 (got {self.loss_percent})")
        if self.mechanism != "auto" and self.paths == 1:
            raise ConfigError(
                f"testbed mechanism={self.mechanism} needs paths=2 (got paths=1)")


@dataclass(frozen=True)
class PathInfo:
    """One veth pair: its two ends and their addresses (CIDR)."""

    index: int
    ifname_a: str
    ifname_b: str
    addr_a: str
    addr_b: str


@dataclass(frozen=True)
class PolicerInfo:
    """The pps policer at `side`'s ingress, which polices traffic toward it."""

    side: Side
    direction: str
    rate_pps: int
    burst_packets: int
    seen_packets: int | None
    dropped_packets: int | None


@dataclass(frozen=True)
class TestbedInfo:
    """A testbed as it stands in the kernel.

    `addrs` is where each side is reached: the service address with two
    paths, the path address with one. `qdiscs` lists the non-trivial qdisc
    lines per side and interface; `counters` the interface counters.
    """

    __test__ = False  # not a pytest test class despite the name

    prefix: str
    config: TestbedConfig
    namespaces: Mapping[Side, str]
    mechanism: Mechanism
    paths: tuple[PathInfo, ...]
    addrs: Mapping[Side, str]
    delay_applied_ms: float
    degradations: tuple[str, ...]
    qdiscs: Mapping[Side, Mapping[str, tuple[str, ...]]]
    policers: tuple[PolicerInfo, ...]
    counters: Mapping[Side, Mapping[str, Mapping[str, int]]]
    # veth end -> whether it segments UDP GSO buffers itself (None: unknown)
    udp_segmentation: Mapping[str, bool | None] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (units in key names)."""
        return {
            "prefix": self.prefix,
            "config": dataclasses.asdict(self.config),
            "namespaces": dict(self.namespaces),
            "mechanism": self.mechanism,
            "paths": [dataclasses.asdict(p) for p in self.paths],
            "addrs": dict(self.addrs),
            "delay_applied_ms": self.delay_applied_ms,
            "degradations": list(self.degradations),
            "qdiscs": {s: {i: list(q) for i, q in d.items()} for s, d in self.qdiscs.items()},
            "policers": [dataclasses.asdict(p) for p in self.policers],
            "counters": {s: {i: dict(c) for i, c in d.items()}
                         for s, d in self.counters.items()},
            "udp_segmentation": dict(self.udp_segmentation),
        }


# ---------------------------------------------------------------- helpers


def ifname(side: Side, path_index: int) -> str:
    """Name of path `path_index`'s veth end inside namespace `side`."""
    return f"v{side}{path_index}"


def namespace(side: Side, prefix: str = DEFAULT_PREFIX) -> str:
    """Name of the namespace of `side`."""
    return f"{prefix}-{side}"


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"testbed prefix {prefix!r} must be 1-24 letters, digits, '_' or '.', "
            "starting with a letter or digit")


def _check_side(side: str) -> Side:
    if side not in SIDES:
        raise ConfigError(f"testbed side must be 'a' or 'b' (got {side!r})")
    return side


def _effective_caps() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status_file:
            for line in status_file:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        return None
    return None


def require_root() -> None:
    """Raise TestbedError unless we may create namespaces and configure them."""
    caps = _effective_caps()
    if caps is None:
        ok = os.geteuid() == 0
    else:
        ok = bool(caps >> _CAP_NET_ADMIN & 1) and bool(caps >> _CAP_SYS_ADMIN & 1)
    if not ok:
        raise TestbedError(ROOT_ERROR)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no error message"


def _run(argv: Sequence[str], *, input_text: str | None = None,
         timeout_s: float = _CMD_TIMEOUT_S) -> str:
    """Run one configuration command; its stdout, or TestbedError naming it."""
    tool = argv[3] if argv[:2] == ["ip", "netns"] and len(argv) > 3 else argv[0]
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True,
                              text=True, timeout=timeout_s, check=True)
    except FileNotFoundError:
        raise TestbedError(
            f"`{tool}` not found: install {_PACKAGES.get(tool, tool)} "
            f"(apt-get install {_PACKAGES.get(tool, tool)})") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"`{' '.join(argv)}` did not finish in {timeout_s:g} s") from None
    except subprocess.CalledProcessError as exc:
        raise TestbedError(
            f"`{' '.join(argv)}` failed: {_first_line(exc.stderr or exc.stdout or '')}"
        ) from None
    return proc.stdout


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        subprocess.run(list(argv), capture_output=True, timeout=_CMD_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _netns_names() -> set[str]:
    out = _run(["ip", "-j", "netns", "list"]).strip()
    if not out:
        return set()
    return {entry["name"] for entry in json.loads(out)}


def _require_tool(tool: str) -> None:
    if shutil.which(tool) is None:
        package = _PACKAGES.get(tool, tool)
        raise TestbedError(f"`{tool}` not found: install {package} (apt-get install {package})")


# ---------------------------------------------------------------- probing


def probe_kernel() -> dict[str, bool]:
    """Say which features this kernel (and userland) offers the testbed.

    Tries each one in a throw-away namespace, which is removed afterwards.
    Keys: netem, bonding, tbf, htb, nft, ecmp_hash_policy.

    Raises:
        TestbedError: not root, or a throw-away namespace cannot be made.
    """
    require_root()
    _require_tool("ip")
    ns = f"{PROBE_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
    _run(["ip", "netns", "add", ns])
    try:
        _run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        found = {
            "netem": _succeeds(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root",
                                "netem", "delay", "1ms"]),
            "tbf": _succeeds(["tc", "-n", ns, "qdisc", "replace", "dev", "p0", "root",
                              "tbf", "rate", "1mbit", "burst", "16kb", "latency", "10ms"]),
            "htb": _succeeds(["tc", "-n", ns, "qdisc", "replace", "dev", "p0", "root",
                              "handle", "1:", "htb"]),
            "bonding": _succeeds(["ip", "-n", ns, "link", "add", "pb0", "type", "bond",
                                  "mode", "balance-xor", "xmit_hash_policy", "layer3+4"]),
            "nft": shutil.which("nft") is not None and _succeeds(
                _in_ns(ns, ["nft", "add", "table", "inet", "probe"])),
            "ecmp_hash_policy": _succeeds(_in_ns(
                ns, ["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"])),
        }
    finally:
        # Deleting the namespace takes the veths, qdiscs, bond and table with it.
        _run(["ip", "netns", "del", ns])
    return found


# ---------------------------------------------------------------- stamp


def _stamp_text(config: TestbedConfig, mechanism: str, delay_applied_ms: float) -> str:
    text = json.dumps([_STAMP_VERSION, mechanism, delay_applied_ms,
                       list(dataclasses.astuple(config))], separators=(",", ":"))
    if len(text) > 255:  # IFALIASZ - 1
        raise TestbedError(f"testbed stamp is too long ({len(text)} > 255 chars): "
                           "use a shorter prefix")
    return text


def _read_stamp(prefix: str) -> tuple[TestbedConfig, Mechanism, float] | None:
    """The stamp of a complete testbed, or None when there is none (or a foreign one)."""
    out = subprocess.run(["ip", "-j", "-n", namespace("a", prefix), "link", "show",
                          ifname("a", 0)], capture_output=True, text=True,
                         timeout=_CMD_TIMEOUT_S, check=False)
    if out.returncode != 0:
        return None
    try:
        alias = json.loads(out.stdout)[0].get("ifalias", "")
        version, mechanism, delay_applied_ms, values = json.loads(alias)
        known = [m for m in _MECHANISMS if m == mechanism]
        if version != _STAMP_VERSION or not known:
            return None
        return TestbedConfig(*values), known[0], float(delay_applied_ms)
    except (ValueError, TypeError, KeyError, IndexError, ConfigError):
        return None


# ---------------------------------------------------------------- setup


def _resolve(config: TestbedConfig, kernel: Mapping[str, bool]
             ) -> tuple[Mechanism, float, tuple[str, ...]]:
    """Pick the mechanism and delay this kernel allows, or say what is missing."""
    degradations: list[str] = []
    if config.rate_cap_bps is not None and not kernel[config.rate_cap_qdisc]:
        raise TestbedError(f"rate cap needs tc {config.rate_cap_qdisc}, which this kernel "
                           "lacks: drop the rate cap or pick the other qdisc")
    if config.loss_percent > 0 and not kernel["nft"]:
        raise TestbedError("random loss needs nftables (`nft` and nf_tables in the kernel): "
                           "apt-get install nftables, or drop loss_percent")
    if config.pps_limit is not None and not kernel["nft"]:
        raise TestbedError("pps policer needs nftables (`nft` and nf_tables in the kernel): "
                           "apt-get install nftables, or drop the pps limit")
    delay_applied_ms = config.delay_ms
    if config.delay_ms > 0 and not kernel["netem"]:
        if not config.allow_degraded:
            raise TestbedError(
                f"delay_ms={config.delay_ms:g} needs tc netem, which is missing from this "
                "kernel: drop the delay, or allow degradation to run without it")
        delay_applied_ms = 0.0
        degradations.append(f"delay_ms={config.delay_ms:g} not applied: netem is missing "
                            "(only queueing delay under a rate cap remains)")
    mechanism: Mechanism
    if config.paths == 1:
        mechanism = "single"
    elif config.mechanism == "bond" or (config.mechanism == "auto" and kernel["bonding"]):
        if not kernel["bonding"]:
            raise TestbedError("mechanism=bond needs the bonding driver, which this kernel "
                               "lacks: use mechanism ecmp (or auto)")
        mechanism = "bond"
    else:
        if not kernel["ecmp_hash_policy"]:
            raise TestbedError("ECMP needs net.ipv4.fib_multipath_hash_policy=1, which this "
                               "kernel refuses: use paths=1")
        mechanism = "ecmp"
    return mechanism, delay_applied_ms, tuple(degradations)


def _shape_egress(ns: str, dev: str, config: TestbedConfig, delay_ms: float) -> None:
    """Put the rate cap and delay on `dev`'s egress (the direction leaving `ns`)."""
    tc = ["tc", "-n", ns]
    rate = config.rate_cap_bps
    if rate is None and delay_ms <= 0:
        return
    if rate is None:
        _run([*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
              "delay", f"{delay_ms:g}ms", "limit", "100000"])
        return
    # Burst: 1 ms at the cap, so timer granularity cannot pull high rates under
    # it, and never under 10 full frames, so tbf can always send an MTU frame.
    # Over t seconds a saturated path delivers about cap * t + burst (+ the
    # 50 ms queue, which drains after the sender stops).
    burst_bytes = max(10 * (config.mtu + 14), rate // 8 // 1000)
    if config.rate_cap_qdisc == "tbf":
        tbf = ["tbf", "rate", f"{rate}bit", "burst", str(burst_bytes), "latency", "50ms"]
        if delay_ms > 0:
            _run([*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                  "delay", f"{delay_ms:g}ms", "limit", "100000"])
            _run([*tc, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf])
        else:
            _run([*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", *tbf])
        return
    _run([*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"])
    _run([*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
          "rate", f"{rate}bit", "ceil", f"{rate}bit", "burst", str(burst_bytes)])
    if delay_ms > 0:
        _run([*tc, "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "netem",
              "delay", f"{delay_ms:g}ms", "limit", "100000"])


def _policer_ruleset(ingress_ifnames: Sequence[str], config: TestbedConfig) -> str:
    devices = ", ".join(f'"{name}"' for name in ingress_ifnames)
    # prerouting/raw sees every IPv4 packet arriving from the paths (ARP is not
    # in the inet family, so neighbour discovery is never policed). One rule
    # serves all paths, so the limit is an aggregate over them.
    # Drops are also counted per protocol: a policer drops the control
    # channel's TCP segments too, and a UDP loss count is checked against
    # the UDP drops alone.
    return (
        f"table inet {NFT_TABLE} {{\n"
        "  counter seen { }\n"
        "  counter dropped { }\n"
        "  counter dropped_udp { }\n"
        "  chain over_limit {\n"
        "    counter name \"dropped\"\n"
        "    meta l4proto udp counter name \"dropped_udp\"\n"
        "    drop\n"
        "  }\n"
        "  chain police {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    iifname {{ {devices} }} counter name \"seen\"\n"
        f"    iifname {{ {devices} }} limit rate over {config.pps_limit}/second "
        f"burst {config.pps_burst} packets jump over_limit\n"
        "  }\n"
        "}\n"
    )


LOSS_TABLE = "pktbench_loss"


def _loss_ruleset(ingress_ifnames: Sequence[str], config: TestbedConfig) -> str:
    devices = ", ".join(f'"{name}"' for name in ingress_ifnames)
    # numgen random draws per packet, so the loss is independent of rate and
    # of its neighbours (Bernoulli): the path's loss floor. UDP only, so the
    # control channel's TCP is not slowed by retransmits.
    return (
        f"table inet {LOSS_TABLE} {{\n"
        "  counter dropped_random { }\n"
        "  chain lose {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    iifname {{ {devices} }} meta l4proto udp numgen random mod 10000 < "
        f"{round(config.loss_percent * 100)} counter name \"dropped_random\" drop\n"
        "  }\n"
        "}\n"
    )


def _build(config: TestbedConfig, mechanism: Mechanism,
           delay_ms: float) -> None:
    prefix = config.prefix
    ns = {side: namespace(side, prefix) for side in SIDES}
    for side in SIDES:
        _run(["ip", "netns", "add", ns[side]])
    sysctls = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
               "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
    if mechanism == "ecmp":
        sysctls.append("net.ipv4.fib_multipath_hash_policy=1")
    for side in SIDES:
        # IPv6 off: no router solicitations or MLD reports to blur the counters.
        _run(_in_ns(ns[side], ["sysctl", "-q", "-w", *sysctls]))
        _run(["ip", "-n", ns[side], "link", "set", "lo", "up"])
    for i in range(config.paths):
        _run(["ip", "link", "add", ifname("a", i), "netns", ns["a"], "mtu", str(config.mtu),
              "type", "veth", "peer", "name", ifname("b", i), "netns", ns["b"],
              "mtu", str(config.mtu)])
    peer: dict[Side, Side] = {"a": "b", "b": "a"}
    host_octet = {"a": "1", "b": "2"}
    if mechanism == "bond":
        for side in SIDES:
            _run(["ip", "-n", ns[side], "link", "add", BOND_IFNAME, "mtu", str(config.mtu),
                  "type", "bond", "mode", "balance-xor", "xmit_hash_policy", "layer3+4"])
            for i in range(config.paths):
                _run(["ip", "-n", ns[side], "link", "set", ifname(side, i),
                      "master", BOND_IFNAME])
                _run(["ip", "-n", ns[side], "link", "set", ifname(side, i), "up"])
            _run(["ip", "-n", ns[side], "addr", "add", f"198.18.0.{host_octet[side]}/24",
                  "dev", BOND_IFNAME])
            _run(["ip", "-n", ns[side], "link", "set", BOND_IFNAME, "up"])
    else:
        for side in SIDES:
            for i in range(config.paths):
                _run(["ip", "-n", ns[side], "addr", "add",
                      f"198.18.{i}.{host_octet[side]}/24", "dev", ifname(side, i)])
                _run(["ip", "-n", ns[side], "link", "set", ifname(side, i), "up"])
    if mechanism != "single":
        for side in SIDES:
            other = peer[side]
            _run(["ip", "-n", ns[side], "addr", "add", f"{SERVICE_ADDRS[side]}/32",
                  "dev", "lo"])
            # src makes replies come back to the service address, so both
            # directions hash over both paths.
            route = ["ip", "-n", ns[side], "route", "add", f"{SERVICE_ADDRS[other]}/32",
                     "src", SERVICE_ADDRS[side]]
            if mechanism == "bond":
                route += ["via", f"198.18.0.{host_octet[other]}", "dev", BOND_IFNAME]
            else:
                for i in range(config.paths):
                    route += ["nexthop", "via", f"198.18.{i}.{host_octet[other]}",
                              "dev", ifname(side, i)]
            _run(route)
    for side in SIDES:
        for i in range(config.paths):
            _run(_in_ns(ns[side], ["ethtool", "-K", ifname(side, i),
                                   UDP_SEGMENTATION_FEATURE, "off"]))
    shaped_sides: tuple[Side, ...] = SIDES if config.both_directions else ("a",)
    for side in shaped_sides:
        for i in range(config.paths):
            _shape_egress(ns[side], ifname(side, i), config, delay_ms)
        # Traffic leaving `side` is policed where it arrives, at the peer.
        receiver: Side = "b" if side == "a" else "a"
        names = [ifname(receiver, i) for i in range(config.paths)]
        if mechanism == "bond":
            names.append(BOND_IFNAME)
        if config.pps_limit is not None:
            _run(_in_ns(ns[receiver], ["nft", "-f", "-"]),
                 input_text=_policer_ruleset(names, config))
        if config.loss_percent > 0:
            _run(_in_ns(ns[receiver], ["nft", "-f", "-"]),
                 input_text=_loss_ruleset(names, config))
    # Last step: the stamp marks the testbed complete.
    _run(["ip", "-n", ns["a"], "link", "set", ifname("a", 0), "alias",
          _stamp_text(config, mechanism, delay_ms)])


# ---------------------------------------------------------------- public API


def config_differences(old: TestbedConfig | None, new: TestbedConfig) -> list[str]:
    """What changes from `old` to `new`, one "field old -> new" each; None: no whole testbed."""
    if old is None:
        return ["what stands under this prefix is no complete testbed (half-built or foreign)"]

    def shown(value: Any) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) \
            else str(value).lower() if isinstance(value, bool) else str(value)

    return [f"{f.name} {shown(getattr(old, f.name))} -> {shown(getattr(new, f.name))}"
            for f in dataclasses.fields(TestbedConfig)
            if getattr(old, f.name) != getattr(new, f.name)]


@dataclasses.dataclass(frozen=True)
class UpPlan:
    """What `up` would do to the testbed under a prefix, found without changing anything.

    `differences` is empty when the identical testbed stands (kept) or none
    does (built); `processes` are (namespace, pid, command) running inside
    the testbed that a rebuild would kill.
    """

    present: bool
    differences: tuple[str, ...]
    processes: tuple[tuple[str, int, str], ...]

    @property
    def rebuild(self) -> bool:
        return self.present and bool(self.differences)


def _ns_processes(ns: str) -> list[tuple[str, int, str]]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=_CMD_TIMEOUT_S, check=False)
    found = []
    for word in out.stdout.split():
        if not word.isdigit() or int(word) == os.getpid() or _is_zombie(int(word)):
            continue
        try:
            with open(f"/proc/{word}/comm", encoding="utf-8", errors="replace") as comm:
                name = comm.read().strip()
        except OSError:
            continue  # gone meanwhile
        found.append((ns, int(word), name))
    return found


def plan_up(config: TestbedConfig) -> UpPlan:
    """Whether `up(config)` would keep, build or rebuild, what differs, and who runs inside."""
    require_root()
    _check_prefix(config.prefix)
    _require_tool("ip")
    present = sorted(_netns_names() & {namespace(s, config.prefix) for s in SIDES})
    if not present:
        return UpPlan(False, (), ())
    existing = _read_stamp(config.prefix) if len(present) == 2 else None
    differences = config_differences(existing[0] if existing else None, config)
    processes = [p for ns in present for p in _ns_processes(ns)]
    return UpPlan(True, tuple(differences), tuple(processes))


def busy_message(prefix: str, plan: UpPlan) -> str:
    """The one-line refusal to rebuild a testbed that has processes inside."""
    shown = ", ".join(f"{name} (pid {pid} in {ns})" for ns, pid, name in plan.processes[:4])
    more = f" and {len(plan.processes) - 4} more" if len(plan.processes) > 4 else ""
    return (f"testbed {prefix} differs from the one asked for ({'; '.join(plan.differences)}) "
            f"and has {len(plan.processes)} process(es) inside: {shown}{more}; rebuilding "
            "would kill them: stop them, run `pktbench testbed down`, or pass --force")


def up(config: TestbedConfig, *, replace: bool = True) -> TestbedInfo:
    """Build the testbed `config` describes, or keep the identical one in place.

    A testbed with the same prefix but another config (or half-built leftovers)
    is removed and rebuilt when `replace` is true, and refused otherwise.
    `plan_up` tells beforehand which it will be and who runs inside (the CLI
    refuses to rebuild over running processes without --force).

    Returns:
        The testbed's status right after setup.

    Raises:
        TestbedError: not root, a feature is missing (netem for a delay without
            allow_degraded, nft for a policer), or a command failed. Anything
            made before the failure has been removed.
    """
    require_root()
    _require_tool("ip")
    _require_tool("ethtool")
    present = _netns_names() & {namespace(s, config.prefix) for s in SIDES}
    existing = _read_stamp(config.prefix) if len(present) == 2 else None
    if existing is not None and existing[0] == config:
        info = status(config.prefix)
        if info is not None:
            return info
    if present and not replace:
        raise TestbedError(
            f"testbed {config.prefix} exists with another config: run "
            f"`pktbench testbed down` first (or replace it)")
    # Refuse a config this kernel cannot build before touching a working testbed.
    mechanism, delay_ms, _ = _resolve(config, probe_kernel())
    if present:
        down(config.prefix)
    try:
        _build(config, mechanism, delay_ms)
    except BaseException:
        with contextlib.suppress(Exception):
            down(config.prefix)
        raise
    info = status(config.prefix)
    if info is None:
        raise TestbedError(f"testbed {config.prefix} vanished right after setup")
    return info


def _kill_ns_processes(ns: str) -> None:
    """Stop what still runs inside our namespace: it would keep it alive unnamed."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=_CMD_TIMEOUT_S, check=False)
    pids = [int(p) for p in out.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 1.0
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")
                    and not _is_zombie(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def down(prefix: str = DEFAULT_PREFIX) -> bool:
    """Remove the testbed: its namespaces and so everything inside them.

    Processes still running inside the two namespaces are stopped first
    (SIGTERM, then SIGKILL after 1 s), since they would keep the namespaces
    and their veths alive. Nothing to remove is fine.

    Returns:
        True if something was removed.

    Raises:
        TestbedError: not root, or a namespace could not be deleted.
    """
    require_root()
    _check_prefix(prefix)
    _require_tool("ip")
    present = _netns_names()
    removed = False
    for side in SIDES:
        ns = namespace(side, prefix)
        if ns in present:
            _kill_ns_processes(ns)
            _run(["ip", "netns", "del", ns])
            removed = True
    return removed


def interface_counters(side: Side, prefix: str = DEFAULT_PREFIX
                       ) -> dict[str, dict[str, int]]:
    """Counters of every interface in `side`'s namespace (lo included).

    Returns:
        {ifname: {rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped, tx_dropped}}
    """
    out = _run(["ip", "-j", "-s", "-n", _existing_ns(side, prefix), "link", "show"])
    counters: dict[str, dict[str, int]] = {}
    for link in json.loads(out):
        stats = link.get("stats64") or link.get("stats") or {}
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        counters[link["ifname"]] = {
            "rx_packets": int(rx.get("packets", 0)), "tx_packets": int(tx.get("packets", 0)),
            "rx_bytes": int(rx.get("bytes", 0)), "tx_bytes": int(tx.get("bytes", 0)),
            "rx_dropped": int(rx.get("dropped", 0)), "tx_dropped": int(tx.get("dropped", 0)),
        }
    return counters


def policer_counters(side: Side, prefix: str = DEFAULT_PREFIX) -> dict[str, int] | None:
    """Packets the policer at `side`'s ingress saw and dropped, None if it has none.

    Returns:
        {"seen_packets", "dropped_packets", "dropped_udp_packets", "passed_packets"}
        or None.
    """
    require_root()
    _check_side(side)
    proc = subprocess.run(_in_ns(namespace(side, prefix),
                                 ["nft", "-j", "list", "counters", "table", "inet", NFT_TABLE]),
                          capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        return None
    found: dict[str, int] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == NFT_TABLE:
            found[f"{counter['name']}_packets"] = int(counter["packets"])
    if "seen_packets" not in found or "dropped_packets" not in found:
        return None
    found["passed_packets"] = found["seen_packets"] - found["dropped_packets"]
    return found


def _qdisc_lines(ns: str) -> dict[str, tuple[str, ...]]:
    out = _run(["tc", "-n", ns, "qdisc", "show"])
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) < 5 or words[1] in ("noqueue", "noop"):
            continue
        dev = words[words.index("dev") + 1] if "dev" in words else "?"
        lines.setdefault(dev, []).append(line.strip())
    return {dev: tuple(entries) for dev, entries in lines.items()}


def status(prefix: str = DEFAULT_PREFIX) -> TestbedInfo | None:
    """Describe the testbed in force, or None when none exists.

    Raises:
        TestbedError: not root, or a half-built testbed is in the way
            (the message says to run `pktbench testbed down`).
    """
    require_root()
    _check_prefix(prefix)
    _require_tool("ip")
    present = _netns_names() & {namespace(s, prefix) for s in SIDES}
    if not present:
        return None
    stamp = _read_stamp(prefix)
    if stamp is None or len(present) != 2:
        raise TestbedError(f"testbed {prefix} is half-built (a failed or foreign setup): "
                           "run `pktbench testbed down` and bring it up again")
    config, mechanism, delay_applied_ms = stamp
    ns: dict[Side, str] = {side: namespace(side, prefix) for side in SIDES}
    path_count = config.paths if mechanism != "bond" else 1
    paths = tuple(
        PathInfo(index=i, ifname_a=ifname("a", i), ifname_b=ifname("b", i),
                 addr_a=f"198.18.{i}.1/24", addr_b=f"198.18.{i}.2/24")
        for i in range(path_count))
    if mechanism == "bond":
        paths = (PathInfo(0, BOND_IFNAME, BOND_IFNAME, "198.18.0.1/24", "198.18.0.2/24"),)
    addrs: dict[Side, str] = (dict(SERVICE_ADDRS) if mechanism != "single"
                              else {"a": "198.18.0.1", "b": "198.18.0.2"})
    degradations: list[str] = []
    if config.delay_ms > 0 and delay_applied_ms <= 0:
        degradations.append(f"delay_ms={config.delay_ms:g} not applied: netem is missing "
                            "(only queueing delay under a rate cap remains)")
    policers: list[PolicerInfo] = []
    if config.pps_limit is not None:
        policed: tuple[Side, ...] = ("b", "a") if config.both_directions else ("b",)
        for side in policed:
            counts = policer_counters(side, prefix)
            policers.append(PolicerInfo(
                side=side, direction="a->b" if side == "b" else "b->a",
                rate_pps=config.pps_limit, burst_packets=config.pps_burst,
                seen_packets=counts["seen_packets"] if counts else None,
                dropped_packets=counts["dropped_packets"] if counts else None))
    return TestbedInfo(
        prefix=prefix, config=config, namespaces=ns, mechanism=mechanism,
        paths=paths, addrs=addrs, delay_applied_ms=delay_applied_ms,
        degradations=tuple(degradations),
        qdiscs={side: _qdisc_lines(ns[side]) for side in SIDES},
        policers=tuple(policers),
        counters={side: interface_counters(side, prefix) for side in SIDES},
        udp_segmentation={name: udp_segmentation(ns[side], name) for side in SIDES
                          for name in (ifname(side, i) for i in range(config.paths))},
    )


def udp_segmentation(ns: str, dev: str) -> bool | None:
    """Whether `dev` in `ns` segments UDP GSO buffers itself (ethtool -k), None if unknown."""
    if shutil.which("ethtool") is None:
        return None
    proc = subprocess.run(_in_ns(ns, ["ethtool", "-k", dev]), capture_output=True, text=True,
                          timeout=_CMD_TIMEOUT_S, check=False)
    for line in proc.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name == UDP_SEGMENTATION_FEATURE:
            return value.split()[0] == "on" if value.split() else None
    return None


def _existing_ns(side: str, prefix: str) -> str:
    checked = _check_side(side)
    require_root()
    ns = namespace(checked, prefix)
    if ns not in _netns_names():
        raise TestbedError(f"testbed {prefix} is not up (no namespace {ns}): "
                           "run `pktbench testbed up` first")
    return ns


def exec_in(side: Side, argv: Sequence[str], *, prefix: str = DEFAULT_PREFIX,
            timeout_s: float | None = None, capture_output: bool = False,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside `side`'s namespace and wait for it.

    The command's exit status is returned, not checked.

    Raises:
        TestbedError: not root, the testbed is not up, the command is not
            found, or it outlived `timeout_s` (it is killed).
    """
    if not argv:
        raise ConfigError("testbed exec needs a command")
    ns = _existing_ns(side, prefix)
    try:
        return subprocess.run(_in_ns(ns, argv), input=input_text, text=True,
                              capture_output=capture_output, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise TestbedError(f"`{' '.join(argv)}` in {ns} did not finish in "
                           f"{timeout_s:g} s (killed)") from None


def popen_in(side: Side, argv: Sequence[str], *, prefix: str = DEFAULT_PREFIX,
             **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start `argv` inside `side`'s namespace without waiting (servers, sinks).

    The caller owns the process and must wait for it; `down()` stops any that
    is still running in the namespace.
    """
    if not argv:
        raise ConfigError("testbed exec needs a command")
    ns = _existing_ns(side, prefix)
    return subprocess.Popen(_in_ns(ns, argv), **popen_kwargs)


@contextlib.contextmanager
def testbed(config: TestbedConfig) -> Iterator[TestbedInfo]:
    """Bring the testbed up for the `with` block and always take it down."""
    try:
        yield up(config)
    finally:
        down(config.prefix)


testbed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
