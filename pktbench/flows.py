"""Flow planning and on-wire overhead arithmetic for bulk throughput.

Owns: the bytes a payload costs on an Ethernet link (preamble, inter-frame
gap, Ethernet header and FCS, IP, TCP with the options in use or UDP, IP
fragments for datagrams larger than the MTU), the conversions between
goodput and on-wire bit rates, parsing of link speeds such as "2x10G" and of
sweep lists, and the bookkeeping that picks source ports so N flows spread
evenly over the members of a bond or ECMP group.

Invariants: goodput (payload bits) <= frame bits (what the kernel's interface
counters and a tbf shaper count: Ethernet header, no FCS) <= on-wire bits
(FCS, preamble and inter-frame gap added); the ratios depend only on the
overhead figures, never on the measured rate.

Must not: open sockets, read counters or clocks. Probing which path a source
port lands on is done by pktbench.workloads.bulk, which feeds the results in here.

Why plan empirically: the kernel's multipath hash (and a bond's layer3+4
hash) mixes the 5-tuple with a per-boot random seed, so no userspace formula
predicts it. A probe flow from a candidate port shows where the kernel put
it (the path whose byte counter moved); the planner keeps ports until every
path has its share.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pktbench.errors import ConfigError

# IEEE 802.3 framing (clause 3 and 4): what each frame costs beyond its IP packet.
ETHERNET_HEADER_BYTES = 14  # destination, source, EtherType
ETHERNET_FCS_BYTES = 4
PREAMBLE_BYTES = 8  # 7 preamble + 1 start-of-frame delimiter
INTERFRAME_GAP_BYTES = 12  # 96 bit times of idle line
MIN_ETHERNET_PAYLOAD_BYTES = 46  # shorter IP packets are padded up to this
IPV4_HEADER_BYTES = 20
IPV6_HEADER_BYTES = 40
IPV6_FRAGMENT_HEADER_BYTES = 8  # RFC 8200 section 4.5
TCP_HEADER_BYTES = 20
TCP_TIMESTAMPS_OPTION_BYTES = 12  # 10-byte option + 2 NOPs for alignment (RFC 7323, 1323 App. A)
UDP_HEADER_BYTES = 8

_PER_FRAME_OUTSIDE_COUNTERS = ETHERNET_FCS_BYTES + PREAMBLE_BYTES + INTERFRAME_GAP_BYTES


@dataclass(frozen=True)
class Overhead:
    """What one payload unit (a full TCP segment, or one UDP datagram) costs.

    `frame_bytes` is what Linux interface counters and tc shapers count for
    the unit (Ethernet header included, FCS not); `wire_bytes` adds FCS,
    preamble and inter-frame gap: the line occupancy.
    """

    transport: str
    payload_bytes: int
    frames: int
    l4_header_bytes: int
    l4_options_bytes: int
    ip_header_bytes: int  # per frame (IPv6 fragment header included)
    padding_bytes: int  # Ethernet padding over all frames of the unit

    @property
    def frame_bytes(self) -> int:
        return (self.payload_bytes + self.l4_header_bytes + self.l4_options_bytes
                + self.frames * (self.ip_header_bytes + ETHERNET_HEADER_BYTES)
                + self.padding_bytes)

    @property
    def wire_bytes(self) -> int:
        return self.frame_bytes + self.frames * _PER_FRAME_OUTSIDE_COUNTERS

    @property
    def goodput_ratio(self) -> float:
        """Payload share of the line: goodput / on-wire rate."""
        return self.payload_bytes / self.wire_bytes

    def wire_bps(self, goodput_bps: float) -> float:
        return goodput_bps * self.wire_bytes / self.payload_bytes

    def frame_bps(self, goodput_bps: float) -> float:
        return goodput_bps * self.frame_bytes / self.payload_bytes

    def goodput_bps(self, wire_bps: float) -> float:
        """The goodput a line of `wire_bps` carries at best with this overhead."""
        return wire_bps * self.goodput_ratio

    def describe(self) -> str:
        """One line: how the on-wire bytes of a unit add up."""
        l4 = "TCP" if self.transport == "tcp" else "UDP"
        options = f" + options {self.l4_options_bytes}" if self.l4_options_bytes else ""
        frames = f" x {self.frames} frames" if self.frames > 1 else ""
        padding = f" + padding {self.padding_bytes}" if self.padding_bytes else ""
        return (f"payload {self.payload_bytes} + {l4} {self.l4_header_bytes}{options} + "
                f"(IP {self.ip_header_bytes} + Ethernet {ETHERNET_HEADER_BYTES + ETHERNET_FCS_BYTES}"
                f" + preamble {PREAMBLE_BYTES} + gap {INTERFRAME_GAP_BYTES}){frames}{padding} = "
                f"{self.wire_bytes} bytes on the wire; goodput is "
                f"{100 * self.goodput_ratio:.2f}% of the on-wire rate")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out.update(ethernet_bytes=ETHERNET_HEADER_BYTES + ETHERNET_FCS_BYTES,
                   preamble_bytes=PREAMBLE_BYTES, interframe_gap_bytes=INTERFRAME_GAP_BYTES,
                   frame_bytes=self.frame_bytes, wire_bytes=self.wire_bytes,
                   goodput_ratio=self.goodput_ratio, text=self.describe())
        return out


def _padding(ip_packet_bytes: int) -> int:
    return max(0, MIN_ETHERNET_PAYLOAD_BYTES - ip_packet_bytes)


def tcp_overhead(mss_bytes: int, *, ipv6: bool = False, options_bytes: int = 0) -> Overhead:
    """Overhead of one full TCP segment.

    Args:
        mss_bytes: payload per segment as TCP_MAXSEG reports it on a
            connected socket (the options in use already taken off).
        ipv6: IPv6 (40-byte header) rather than IPv4 (20).
        options_bytes: TCP option bytes in every segment (12 with timestamps).
    """
    if mss_bytes < 1:
        raise ConfigError(f"TCP MSS must be >= 1 byte (got {mss_bytes})")
    if options_bytes < 0 or options_bytes > 40 or options_bytes % 4:
        raise ConfigError(f"TCP options must be 0..40 bytes in 4-byte words (got {options_bytes})")
    ip_bytes = IPV6_HEADER_BYTES if ipv6 else IPV4_HEADER_BYTES
    packet = ip_bytes + TCP_HEADER_BYTES + options_bytes + mss_bytes
    return Overhead("tcp", mss_bytes, 1, TCP_HEADER_BYTES, options_bytes, ip_bytes,
                    _padding(packet))


def udp_overhead(size_bytes: int, *, mtu_bytes: int = 1500, ipv6: bool = False) -> Overhead:
    """Overhead of one UDP datagram of `size_bytes` payload, fragmented at `mtu_bytes`.

    A datagram larger than the MTU leaves as IP fragments: each carries its
    own IP (and Ethernet) header, and all but the last carry a multiple of 8
    bytes (RFC 791 section 3.2; RFC 8200 section 4.5 adds an 8-byte fragment
    header in IPv6).
    """
    if size_bytes < 0:
        raise ConfigError(f"UDP payload must be >= 0 bytes (got {size_bytes})")
    ip_bytes = IPV6_HEADER_BYTES if ipv6 else IPV4_HEADER_BYTES
    datagram = UDP_HEADER_BYTES + size_bytes
    if mtu_bytes < ip_bytes + 16:
        raise ConfigError(f"MTU {mtu_bytes} is too small for IP fragments")
    if datagram + ip_bytes <= mtu_bytes:
        return Overhead("udp", size_bytes, 1, UDP_HEADER_BYTES, 0, ip_bytes,
                        _padding(datagram + ip_bytes))
    header = ip_bytes + (IPV6_FRAGMENT_HEADER_BYTES if ipv6 else 0)
    per_fragment = (mtu_bytes - header) // 8 * 8
    frames = math.ceil(datagram / per_fragment)
    last = datagram - (frames - 1) * per_fragment
    return Overhead("udp", size_bytes, frames, UDP_HEADER_BYTES, 0, header,
                    _padding(last + header))


# -- parsing --------------------------------------------------------------------

def parse_count_list(text: str, what: str = "stream counts") -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); every entry a positive integer."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be a comma-separated list of integers, "
                          "e.g. 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} {text!r} must be a non-empty list of integers >= 1")
    return values


# -- flow planning --------------------------------------------------------------

def path_quotas(streams: int, paths: int) -> tuple[int, ...]:
    """How many of `streams` flows each of `paths` paths should carry."""
    if paths < 1 or streams < 1:
        raise ConfigError(f"flow planning needs streams >= 1 and paths >= 1 "
                          f"(got {streams} streams, {paths} paths)")
    return tuple(streams // paths + (1 if i < streams % paths else 0) for i in range(paths))


def probe_path(before: Mapping[str, int], after: Mapping[str, int], names: Sequence[str], *,
               min_bytes: int, dominance: float = 0.8) -> int | None:
    """Which path (index into `names`) a probe flow took, from byte counters.

    The probe is sent alone, so its path's counter moves by about the probe's
    size while the others move only by stray traffic (ARP, control-channel
    ACKs). None when no counter moved by `min_bytes`, or no path carried at
    least `dominance` of what moved: the probe is then retried or skipped.
    """
    deltas = [max(0, after.get(n, 0) - before.get(n, 0)) for n in names]
    total = sum(deltas)
    best = max(range(len(names)), key=lambda i: deltas[i])
    if deltas[best] < min_bytes or deltas[best] < dominance * total:
        return None
    return best


@dataclass(frozen=True)
class FlowPlan:
    """Source ports for the streams, and the path each one was seen on.

    `ports` is ordered so that every prefix is as balanced as the paths
    allow: a sweep over 1, 2, 4 streams takes the first N ports.
    """

    ports: tuple[int, ...]
    paths: tuple[int, ...]  # path index per port, in the same order
    path_names: tuple[str, ...]
    method: str  # "probed" or "given"
    probes: int = 0
    unclear_probes: int = 0

    def for_streams(self, streams: int) -> tuple[int, ...]:
        if streams > len(self.ports):
            raise ConfigError(f"the flow plan holds {len(self.ports)} ports, {streams} "
                              "streams asked: plan for the largest stream count")
        return self.ports[:streams]

    def to_dict(self) -> dict[str, Any]:
        return {"ports": list(self.ports), "paths": list(self.paths),
                "path_names": list(self.path_names), "method": self.method,
                "probes": self.probes, "unclear_probes": self.unclear_probes}


class FlowPlanner:
    """Collects probed (port, path) pairs until every path has its quota."""

    def __init__(self, streams: int, path_names: Sequence[str]) -> None:
        self.path_names = tuple(path_names)
        self.quotas = path_quotas(streams, len(self.path_names))
        self._kept: list[list[int]] = [[] for _ in self.path_names]
        self.probes = 0
        self.unclear = 0

    @property
    def done(self) -> bool:
        return all(len(k) >= q for k, q in zip(self._kept, self.quotas))

    def offer(self, port: int, path: int | None) -> bool:
        """Record a probe's outcome; True if `port` is kept for `path`."""
        self.probes += 1
        if path is None:
            self.unclear += 1
            return False
        if len(self._kept[path]) >= self.quotas[path]:
            return False
        self._kept[path].append(port)
        return True

    def missing(self) -> dict[str, int]:
        return {name: q - len(k) for name, k, q in zip(self.path_names, self._kept, self.quotas)
                if len(k) < q}

    def plan(self) -> FlowPlan:
        """Round-robin over the paths, so any prefix of the ports is balanced."""
        ports: list[int] = []
        paths: list[int] = []
        queues = [list(k) for k in self._kept]
        while any(queues):
            for index, queue in enumerate(queues):
                if queue:
                    ports.append(queue.pop(0))
                    paths.append(index)
        return FlowPlan(tuple(ports), tuple(paths), self.path_names, "probed", self.probes,
                        self.unclear)
