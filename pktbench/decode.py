"""Decode a packet capture of pktbench traffic into per-flow statistics.

Owns: reading pcap and pcapng files (tcpdump, dumpcap), peeling the link
layer (Ethernet with VLAN tags, Linux cooked SLL and SLL2, raw IP, BSD
loopback), IPv4/IPv6 and UDP, recognising pktbench datagrams by their
header, and per-flow accounting: packets, bytes, time span, rate, sizes,
missing sequence numbers, duplicates and reordering.

Invariants:
- The header layout comes from pktbench.wire only (HEADER_FORMAT, MAGIC,
  VERSION, KINDS, COMMANDS); no offset or size is written here.
- Every record of the file is counted exactly once:
  packets == pktbench + other_udp + non_udp + fragment + truncated.
- A malformed packet is counted, never raised; only a file that cannot be
  read as a capture (bad magic, cut short, absurd record length) raises
  ConfigError with one line naming the file and what is wrong.

Must not: import scapy, open sockets, or print. Captures of pktbench runs
hold millions of packets: scapy's PcapReader dissects about 5k packets/s
here (100k packets: ~20 s), this struct-over-mmap reader about 350k/s
(100k: ~0.3 s). Memory per flow is 8 bytes per packet (its sequence
numbers, for exact duplicate/reorder counts). Formatting for the terminal
lives in pktbench.report.decode.
"""
from __future__ import annotations

import mmap
import os
import socket
import stat
import struct
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pktbench import wire
from pktbench.errors import ConfigError

DECODE_SCHEMA_VERSION = 1

# Link-layer header types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in host order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4/IPv6
LINKTYPE_LOOP = 108  # OpenBSD loopback: address family in network order
LINKTYPE_LINUX_SLL = 113  # tcpdump -i any (libpcap < 1.10 or -y LINUX_SLL)
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # tcpdump -i any with libpcap >= 1.10
_DLT_RAW_ALIASES = (12, 14)  # DLT_RAW as some BSDs number it in files

SUPPORTED_LINKTYPES: dict[int, str] = {
    LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback", LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked (SLL2)",
    12: "raw IP", 14: "raw IP",
}

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad and the pre-standard QinQ tag
_IPPROTO_UDP = 17
# IPv6 extension headers we step over to find UDP (RFC 8200 section 4).
_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_DEST_OPTS, _IPV6_AH = 0, 43, 44, 60, 51

# Largest record we believe. libpcap's own cap is 256 KiB; a jumbo-frame or
# GRO capture can go past it, garbage lengths go far past 64 MiB.
_MAX_RECORD_BYTES = 64 * 1024 * 1024

_PCAP_MAGIC: dict[bytes, tuple[str, int]] = {  # file magic -> (byte order, ns per tick)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanosecond-resolution pcap (tcpdump --nano)
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

_HEADER = struct.Struct(wire.HEADER_FORMAT)
_KIND_NAMES = {value: name for name, value in wire.KINDS.items()}
_COMMAND_VALUES = frozenset(wire.COMMANDS.values())
_UDP_HEADER_BYTES = 8


@dataclass(frozen=True)
class FlowStats:
    """One pktbench flow: a UDP 5-tuple, a stream, a session token and a kind.

    `kind` is the direction: "request" and "blast" go to the server,
    "response" comes back. Sequence accounting starts at the first sequence
    number seen, since a capture may begin after the stream did.

    Warm-up packets (wire.FLAG_WARMUP) are counted apart: every other count,
    size, time and sequence figure is of the measured packets only, which is
    what the run's own counters report. Warm-up numbers its packets from 0
    as the measured window does, so mixing them would read as duplicates.
    """

    src: str
    src_port: int
    dst: str
    dst_port: int
    stream_id: int
    token: int
    kind: str
    packets: int
    payload_bytes: int  # UDP payload, i.e. pktbench's datagram size, summed
    frame_bytes: int  # original frame lengths as captured on the link
    first_ns: int  # capture timestamps, ns since the epoch
    last_ns: int
    duration_s: float
    rate_pps: float  # (packets - 1) / duration: the arrival rate between first and last
    size_min_bytes: int
    size_max_bytes: int
    seq_first: int  # lowest sequence number seen
    seq_last: int  # highest sequence number seen
    missing_packets: int  # sequence numbers in [seq_first, seq_last] never seen
    gaps: int  # runs of consecutive missing sequence numbers
    duplicate_packets: int  # arrivals of a sequence number already seen
    reordered_packets: int  # first arrivals after a higher sequence number
    warmup_packets: int = 0  # packets flagged warm-up, in none of the counts above
    warmup_missing_packets: int = 0
    warmup_duplicate_packets: int = 0


@dataclass(frozen=True)
class DecodeResult:
    """What decode_pcap found in one capture file."""

    path: str
    link_types: tuple[int, ...]
    port: int | None
    packets: int  # every record in the file
    pktbench_packets: int
    other_udp_packets: int  # UDP that is not a pktbench datagram (or not on `port`)
    non_udp_packets: int  # not IPv4/IPv6, or not UDP: ignored
    fragment_packets: int  # non-first IP fragments: they carry no UDP header
    truncated_packets: int  # captured too short (snaplen) to read the headers
    version_mismatch_packets: int  # part of other_udp: pktbench magic, another VERSION
    flows: tuple[FlowStats, ...]
    warmup_packets: int = 0  # part of pktbench_packets: flagged warm-up
    malformed_blocks: int = 0  # skipped: too short for their type, or a packet overrunning them
    first_malformed: str | None = None  # what was wrong with the first of them

    @property
    def non_pktbench_packets(self) -> int:
        return self.packets - self.pktbench_packets

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document; every count key ends in _packets, sizes in _bytes."""
        return {
            "schema_version": DECODE_SCHEMA_VERSION,
            "capture": {"path": self.path, "link_types": list(self.link_types),
                        "port": self.port},
            "totals": {
                "packets": self.packets,
                "pktbench_packets": self.pktbench_packets,
                "warmup_packets": self.warmup_packets,
                "measured_packets": self.pktbench_packets - self.warmup_packets,
                "non_pktbench_packets": self.non_pktbench_packets,
                "other_udp_packets": self.other_udp_packets,
                "non_udp_packets": self.non_udp_packets,
                "fragment_packets": self.fragment_packets,
                "truncated_packets": self.truncated_packets,
                "version_mismatch_packets": self.version_mismatch_packets,
                "malformed_blocks": self.malformed_blocks,
            },
            "flows": [asdict(flow) for flow in self.flows],
        }


class _Flow:
    __slots__ = ("packets", "payload_bytes", "frame_bytes", "first_ns", "last_ns",
                 "size_min", "size_max", "seqs", "warmup_seqs")

    def __init__(self, time_ns: int) -> None:
        self.warmup_seqs = array("Q")
        self.packets = 0
        self.payload_bytes = 0
        self.frame_bytes = 0
        self.first_ns = time_ns
        self.last_ns = time_ns
        self.size_min = wire.MAX_DATAGRAM + 1
        self.size_max = 0
        self.seqs = array("Q")


def _open_capture(path: Path) -> tuple[Any, Any]:
    """(open file or None, buffer): an mmap of a regular file, else its bytes."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the capture ({exc.strerror or exc})") from None
    try:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode):
            if info.st_size == 0:
                raise ConfigError(f"{path}: the capture is empty; was tcpdump stopped before "
                                  f"it wrote anything?")
            # mmap: the file is paged in as it is read, never copied whole.
            return handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        with handle:  # a pipe or device cannot be mapped
            return None, handle.read()
    except OSError as exc:
        handle.close()
        raise ConfigError(f"{path}: cannot read the capture ({exc.strerror or exc})") from None
    except ConfigError:
        handle.close()
        raise


def _cut_short(path: Path, number: int, offset: int) -> ConfigError:
    return ConfigError(f"{path}: the capture ends in the middle of packet {number} "
                       f"(byte {offset}); it was cut short or is corrupt")


Record = tuple[int, int, int, int, int]  # time_ns, linktype, data offset, caplen, origlen


def _pcap_records(path: Path, buf: Any, link_types: set[int]) -> Iterator[Record]:
    if len(buf) < 24:
        raise ConfigError(f"{path}: the pcap file header is cut short ({len(buf)} of 24 bytes)")
    order, tick_ns = _PCAP_MAGIC[bytes(buf[:4])]
    linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0xFFFF  # upper bits: FCS info
    link_types.add(linktype)
    record = struct.Struct(order + "IIII")
    offset, size, number = 24, len(buf), 0
    while offset < size:
        number += 1
        if offset + 16 > size:
            raise _cut_short(path, number, offset)
        seconds, fraction, caplen, origlen = record.unpack_from(buf, offset)
        if caplen > _MAX_RECORD_BYTES:
            raise ConfigError(f"{path}: packet {number} (byte {offset}) claims {caplen} "
                              f"captured bytes; the file is corrupt")
        data = offset + 16
        if data + caplen > size:
            raise _cut_short(path, number, offset)
        yield seconds * 1_000_000_000 + fraction * tick_ns, linktype, data, caplen, origlen
        offset = data + caplen


def _pcapng_tick(option: int) -> tuple[int, int]:
    """if_tsresol (pcapng section 4.2) as (multiplier, divisor) to nanoseconds."""
    if option & 0x80:
        return 1_000_000_000, 1 << (option & 0x7F)
    exponent = option & 0x7F
    if exponent <= 9:
        return 10 ** (9 - exponent), 1
    return 1, 10 ** (exponent - 9)


# The shortest block of each type pcapng defines: 12 bytes of framing plus
# the fixed part of its body. A block shorter than that, or one whose packet
# overruns it, has intact framing and is skipped and counted, not read.
_PCAPNG_MIN_BLOCK = {1: 20, 3: 16, 6: 32}


def _pcapng_records(path: Path, buf: Any, link_types: set[int],
                    malformed: list[str] | None = None) -> Iterator[Record]:
    # pcapng (draft-ietf-opsawg-pcapng): a sequence of blocks; each section
    # header sets the byte order, each interface block a link type and clock.
    if malformed is None:
        malformed = []
    size, offset, number = len(buf), 0, 0
    order = "<"
    interfaces: list[tuple[int, int, int]] = []  # linktype, multiplier, divisor
    while offset < size:
        if offset + 12 > size:
            raise _cut_short(path, number + 1, offset)
        if bytes(buf[offset:offset + 4]) == _PCAPNG_SHB:
            byte_order = bytes(buf[offset + 8:offset + 12])
            if byte_order == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif byte_order == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise ConfigError(f"{path}: pcapng section at byte {offset} has an unknown "
                                  f"byte-order mark; the file is corrupt")
            interfaces = []
        block_type, block_len = struct.unpack_from(order + "II", buf, offset)
        if block_len < 12 or block_len % 4 or block_len > _MAX_RECORD_BYTES:
            raise ConfigError(f"{path}: pcapng block at byte {offset} has length {block_len}; "
                              f"the file is corrupt")
        if offset + block_len > size:
            raise _cut_short(path, number + 1, offset)
        if struct.unpack_from(order + "I", buf, offset + block_len - 4)[0] != block_len:
            raise ConfigError(f"{path}: pcapng block at byte {offset} has length {block_len} "
                              f"but its trailer disagrees; the file is corrupt")
        body = offset + 8
        if block_len < _PCAPNG_MIN_BLOCK.get(block_type, 12):
            number += block_type in (6, 3)
            malformed.append(f"block at byte {offset} (type {block_type}) is {block_len} bytes, "
                             f"shorter than its fixed fields")
            offset += block_len
            continue
        if block_type == 1:  # interface description
            linktype = struct.unpack_from(order + "H", buf, body)[0]
            multiplier, divisor = 1000, 1  # default resolution: microseconds
            position, end = body + 8, offset + block_len - 4
            while position + 4 <= end:
                code, length = struct.unpack_from(order + "HH", buf, position)
                if code == 0:
                    break
                if code == 9 and length >= 1:
                    multiplier, divisor = _pcapng_tick(buf[position + 4])
                position += 4 + (length + 3) // 4 * 4
            interfaces.append((linktype, multiplier, divisor))
            link_types.add(linktype)
        elif block_type in (6, 3):  # enhanced packet, simple packet
            number += 1
            if block_type == 6:
                interface, high, low, caplen, origlen = struct.unpack_from(order + "IIIII", buf,
                                                                           body)
                data = body + 20
                stamp = (high << 32) | low
            else:
                interface, stamp = 0, 0  # simple packets carry no time
                origlen = struct.unpack_from(order + "I", buf, body)[0]
                data = body + 4
                caplen = min(origlen, offset + block_len - 4 - data)
            if interface >= len(interfaces):
                raise ConfigError(f"{path}: packet {number} names interface {interface}, "
                                  f"which the file never described; the file is corrupt")
            if data + caplen > offset + block_len - 4:
                malformed.append(f"packet {number} (byte {offset}) claims {caplen} bytes, "
                                 f"more than its block")
                offset += block_len
                continue
            linktype, multiplier, divisor = interfaces[interface]
            yield stamp * multiplier // divisor, linktype, data, caplen, origlen
        offset += block_len


def _link_payload(packet: bytes, linktype: int) -> tuple[int, int]:
    """(offset of the IP header, IP version) or (-1, 0) for non-IP frames."""
    if linktype == LINKTYPE_ETHERNET:
        offset = 12
        ethertype = (packet[offset] << 8) | packet[offset + 1]
        while ethertype in _ETHERTYPE_VLAN:
            offset += 4
            ethertype = (packet[offset] << 8) | packet[offset + 1]
        offset += 2
    elif linktype == LINKTYPE_LINUX_SLL:
        ethertype, offset = (packet[14] << 8) | packet[15], 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        ethertype, offset = (packet[0] << 8) | packet[1], 20
    else:
        # Raw IP and the loopback encapsulations: the IP version nibble is
        # the reliable tell (AF_INET6 differs between BSDs).
        offset = 4 if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) else 0
        version = packet[offset] >> 4
        return (offset, version) if version in (4, 6) else (-1, 0)
    if ethertype == _ETHERTYPE_IPV4:
        return offset, 4
    if ethertype == _ETHERTYPE_IPV6:
        return offset, 6
    return -1, 0


def decode_pcap(path: str | os.PathLike[str], *, port: int | None = None) -> DecodeResult:
    """Read a capture and account every pktbench flow in it.

    A UDP datagram is a pktbench packet when its payload starts with a
    header of this wire VERSION, with MAGIC, a known kind and a known
    command; with `port`, one of its UDP ports must also be `port`.

    Args:
        path: a pcap (microsecond or nanosecond) or pcapng file.
        port: only count pktbench packets to or from this UDP port.

    Returns:
        Totals for the whole file and one FlowStats per flow, in order of
        first appearance.

    Raises:
        ConfigError: the file cannot be read, is not a capture, uses a link
            type this decoder does not read, or is cut short or corrupt.
    """
    capture = Path(path)
    handle, buf = _open_capture(capture)
    try:
        return _decode(capture, buf, port)
    finally:
        if handle is not None:
            buf.close()
            handle.close()


def _decode(path: Path, buf: Any, port: int | None) -> DecodeResult:
    magic = bytes(buf[:4])
    link_types: set[int] = set()
    malformed: list[str] = []
    if magic in _PCAP_MAGIC:
        records = _pcap_records(path, buf, link_types)
    elif magic == _PCAPNG_SHB:
        records = _pcapng_records(path, buf, link_types, malformed)
    else:
        start = magic.hex() or "nothing"
        raise ConfigError(f"{path}: not a pcap or pcapng capture (starts with {start}); "
                          f"write one with `tcpdump -w FILE`")

    totals = {"packets": 0, "pktbench": 0, "other_udp": 0, "non_udp": 0, "fragment": 0,
              "truncated": 0, "version": 0, "warmup": 0}
    flows: dict[tuple[bytes, int, bytes, int, int, int, int], _Flow] = {}
    header_size = wire.HEADER_SIZE
    unpack_header = _HEADER.unpack_from
    inet_ntop_family = {4: socket.AF_INET, 6: socket.AF_INET6}

    for time_ns, linktype, data, caplen, origlen in records:
        totals["packets"] += 1
        if linktype not in SUPPORTED_LINKTYPES:
            raise ConfigError(f"{path}: link type {linktype} is not one decode reads "
                              f"(Ethernet, Linux cooked, raw IP, loopback); capture on such an "
                              f"interface, e.g. `tcpdump -i any` or `-i lo`")
        packet = buf[data:data + caplen]
        try:
            l3, version = _link_payload(packet, linktype)
            if version == 4:
                if packet[l3] >> 4 != 4:
                    totals["non_udp"] += 1
                    continue
                ihl = (packet[l3] & 0x0F) * 4
                fragment = ((packet[l3 + 6] & 0x1F) << 8) | packet[l3 + 7]
                if packet[l3 + 9] != _IPPROTO_UDP or ihl < 20:
                    totals["non_udp"] += 1
                    continue
                if fragment:
                    totals["fragment"] += 1
                    continue
                src, dst = packet[l3 + 12:l3 + 16], packet[l3 + 16:l3 + 20]
                l4 = l3 + ihl
            elif version == 6:
                next_header, l4 = packet[l3 + 6], l3 + 40
                src, dst = packet[l3 + 8:l3 + 24], packet[l3 + 24:l3 + 40]
                fragmented = False
                while next_header in (_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS,
                                      _IPV6_FRAGMENT, _IPV6_AH):
                    if next_header == _IPV6_FRAGMENT:
                        fragmented = ((packet[l4 + 2] << 8) | packet[l4 + 3]) >> 3 != 0
                        step = 8
                    elif next_header == _IPV6_AH:
                        step = (packet[l4 + 1] + 2) * 4
                    else:
                        step = (packet[l4 + 1] + 1) * 8
                    next_header = packet[l4]
                    l4 += step
                if next_header != _IPPROTO_UDP:
                    totals["non_udp"] += 1
                    continue
                if fragmented:
                    totals["fragment"] += 1
                    continue
            else:
                totals["non_udp"] += 1
                continue
            sport, dport, udp_len = struct.unpack_from("!HHH", packet, l4)
        except (IndexError, struct.error):
            totals["truncated"] += 1
            continue

        payload = l4 + _UDP_HEADER_BYTES
        size_bytes = udp_len - _UDP_HEADER_BYTES
        if size_bytes < header_size:
            # Includes udp_len < 8 (malformed) and jumbograms (udp_len 0).
            totals["other_udp"] += 1
            continue
        if caplen - payload < header_size:
            totals["truncated"] += 1
            continue
        (h_magic, h_version, kind, command, flags, stream_id, token, seq,
         _send_ns) = unpack_header(packet, payload)
        if h_magic != wire.MAGIC or h_version != wire.VERSION or kind not in _KIND_NAMES \
                or command not in _COMMAND_VALUES \
                or (port is not None and sport != port and dport != port):
            totals["other_udp"] += 1
            if h_magic == wire.MAGIC and h_version != wire.VERSION:
                totals["version"] += 1
            continue

        totals["pktbench"] += 1
        key = (src, sport, dst, dport, stream_id, token, kind)
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = _Flow(time_ns)
        if flags & wire.FLAG_WARMUP:
            totals["warmup"] += 1
            flow.warmup_seqs.append(seq)
            continue
        if not flow.packets:
            flow.first_ns = flow.last_ns = time_ns  # the measured window starts here
        flow.packets += 1
        flow.payload_bytes += size_bytes
        flow.frame_bytes += origlen
        if time_ns < flow.first_ns:
            flow.first_ns = time_ns
        if time_ns > flow.last_ns:
            flow.last_ns = time_ns
        if size_bytes < flow.size_min:
            flow.size_min = size_bytes
        if size_bytes > flow.size_max:
            flow.size_max = size_bytes
        flow.seqs.append(seq)

    stats = []
    for (src, sport, dst, dport, stream_id, token, kind), flow in flows.items():
        family = inet_ntop_family[4 if len(src) == 4 else 6]
        duration_s = (flow.last_ns - flow.first_ns) / 1e9
        seq = sequence_stats(flow.seqs)
        warmup = sequence_stats(flow.warmup_seqs)
        stats.append(FlowStats(
            src=socket.inet_ntop(family, src), src_port=sport,
            dst=socket.inet_ntop(family, dst), dst_port=dport,
            stream_id=stream_id, token=token, kind=_KIND_NAMES[kind],
            packets=flow.packets, payload_bytes=flow.payload_bytes,
            frame_bytes=flow.frame_bytes, first_ns=flow.first_ns, last_ns=flow.last_ns,
            duration_s=duration_s,
            rate_pps=(flow.packets - 1) / duration_s if duration_s > 0 else 0.0,
            size_min_bytes=flow.size_min if flow.packets else 0, size_max_bytes=flow.size_max,
            **seq, warmup_packets=len(flow.warmup_seqs),
            warmup_missing_packets=warmup["missing_packets"],
            warmup_duplicate_packets=warmup["duplicate_packets"],
        ))
    return DecodeResult(
        path=str(path), link_types=tuple(sorted(link_types)), port=port,
        packets=totals["packets"], pktbench_packets=totals["pktbench"],
        other_udp_packets=totals["other_udp"], non_udp_packets=totals["non_udp"],
        fragment_packets=totals["fragment"], truncated_packets=totals["truncated"],
        version_mismatch_packets=totals["version"], flows=tuple(stats),
        warmup_packets=totals["warmup"],
        malformed_blocks=len(malformed), first_malformed=malformed[0] if malformed else None,
    )


def sequence_stats(seqs: Any) -> dict[str, int]:
    """Loss, duplicate and reorder counts of sequence numbers in arrival order.

    Definitions (after RFC 4737 and iperf's UDP accounting):
    - missing: numbers between the lowest and highest seen that never
      arrived. Loss before the first or after the last arrival of a capture
      is invisible here.
    - gaps: runs of consecutive missing numbers.
    - duplicate: an arrival of a number that already arrived.
    - reordered: a first arrival whose number is below one already seen.

    Args:
        seqs: unsigned sequence numbers in arrival order (array, list, ndarray).

    Returns:
        dict with seq_first, seq_last, missing_packets, gaps,
        duplicate_packets and reordered_packets.
    """
    import numpy as np

    values = np.asarray(seqs, dtype=np.uint64)
    if values.size == 0:
        return {"seq_first": 0, "seq_last": 0, "missing_packets": 0, "gaps": 0,
                "duplicate_packets": 0, "reordered_packets": 0}
    unique, first_index = np.unique(values, return_index=True)
    first_arrival = np.zeros(values.size, dtype=bool)
    first_arrival[first_index] = True
    highest_before = np.maximum.accumulate(values)[:-1]
    reordered = np.count_nonzero(first_arrival[1:] & (values[1:] < highest_before))
    # Python ints: the span of uint64 sequence numbers can exceed what uint64 holds + 1.
    span = int(unique[-1]) - int(unique[0]) + 1
    return {
        "seq_first": int(unique[0]),
        "seq_last": int(unique[-1]),
        "missing_packets": span - int(unique.size),
        "gaps": int(np.count_nonzero(np.diff(unique) > 1)),
        "duplicate_packets": int(values.size - unique.size),
        "reordered_packets": int(reordered),
    }


__all__ = ["DECODE_SCHEMA_VERSION", "DecodeResult", "FlowStats", "SUPPORTED_LINKTYPES",
           "decode_pcap", "sequence_stats"]
