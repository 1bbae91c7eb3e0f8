"""pktbench.decode and `pktbench decode`: exact counts from captures written with scapy."""
from __future__ import annotations

import json
from decimal import Decimal
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pktbench import wire
from pktbench.cli import main
from pktbench.decode import DecodeResult, FlowStats, decode_pcap, sequence_stats
from pktbench.errors import ConfigError

pytest.importorskip("scapy", reason="the captures are written with scapy")
from scapy.layers.inet import IP, TCP, UDP, fragment  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, fragment6)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1Q, Ether  # noqa: E402
from scapy.packet import Packet, raw  # noqa: E402
from scapy.utils import wrpcap, wrpcapng  # noqa: E402

PORT = wire.DEFAULT_PORT
CLIENT, SERVER = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8::2"
T0 = 1_700_000_000  # capture start, seconds since the epoch


def _request(seq: int, size: int = 100, *, command: int = wire.COMMAND_PING, stream_id: int = 0,
             token: int = 0xABC) -> bytes:
    return wire.build_request(command, size, token=token, seq=seq, send_ns=seq * 1000,
                              stream_id=stream_id)


def _write(path: Path, packets: list[Packet], step_s: float = 0.001, **kwargs: Any) -> Path:
    for index, packet in enumerate(packets):
        packet.time = T0 + index * step_s
    wrpcap(str(path), packets, **kwargs)
    return path


def _write_raw_pcap(path: Path, frames: list[bytes], *, linktype: int = 1,
                    caplens: list[int] | None = None) -> Path:
    """A pcap written byte by byte, for lengths scapy will not write."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for index, frame in enumerate(frames):
        caplen = len(frame) if caplens is None else caplens[index]
        out.append(struct.pack("<IIII", T0, index, caplen, len(frame)) + frame[:caplen])
    path.write_bytes(b"".join(out))
    return path


def _check_totals(result: DecodeResult) -> None:
    assert result.packets == (result.pktbench_packets + result.other_udp_packets
                              + result.non_udp_packets + result.fragment_packets
                              + result.truncated_packets)
    assert result.non_pktbench_packets == result.packets - result.pktbench_packets
    assert sum(f.packets + f.warmup_packets for f in result.flows) == result.pktbench_packets
    assert sum(f.warmup_packets for f in result.flows) == result.warmup_packets


# Request seqs as sent into the capture: 3, 7 and 8 are lost, 5 arrives twice,
# 4 arrives after 5 (reordered).
REQUEST_SEQS = [0, 1, 2, 5, 5, 4, 6, 9]
REQUEST_SIZES = [100, 100, 200, 100, 100, 300, 100, 100]


def _session_packets() -> list[Packet]:
    client = Ether() / IP(src=CLIENT, dst=SERVER)
    server = Ether() / IP(src=SERVER, dst=CLIENT)
    packets: list[Packet] = []
    for seq, size in zip(REQUEST_SEQS, REQUEST_SIZES):
        request = _request(seq, size)
        packets.append(client / UDP(sport=40000, dport=PORT) / request)
        if seq in (0, 1, 2):
            packets.append(server / UDP(sport=PORT, dport=40000) / wire.build_reply(request))
    packets += [
        client / UDP(sport=5353, dport=53) / b"\x12\x34 a foreign datagram",
        client / UDP(sport=40001, dport=PORT) / (b"not pktbench, on our port" * 3),
        client / UDP(sport=40002, dport=PORT) / wire.pack_header(
            kind=wire.KIND_BLAST, version=wire.VERSION + 1, token=1, seq=0, send_ns=0),
        client / UDP(sport=40003, dport=PORT) / bytes(10),
        client / TCP(sport=40000, dport=PORT) / _request(0),
        Ether() / ARP(),
    ]
    return packets


@pytest.fixture
def session_pcap(tmp_path: Path) -> Path:
    return _write(tmp_path / "session.pcap", _session_packets())


def test_session_counts_exactly(session_pcap: Path) -> None:
    result = decode_pcap(session_pcap)
    _check_totals(result)
    assert result.link_types == (1,)
    assert (result.packets, result.pktbench_packets, result.other_udp_packets,
            result.non_udp_packets, result.fragment_packets, result.truncated_packets,
            result.version_mismatch_packets) == (17, 11, 4, 2, 0, 0, 1)
    assert result.non_pktbench_packets == 6

    requests, replies = result.flows
    assert (requests.src, requests.src_port, requests.dst, requests.dst_port) == \
        (CLIENT, 40000, SERVER, PORT)
    assert (requests.kind, requests.stream_id, requests.token) == ("request", 0, 0xABC)
    assert requests.packets == 8
    assert requests.payload_bytes == sum(REQUEST_SIZES)
    assert requests.frame_bytes == sum(REQUEST_SIZES) + 8 * (14 + 20 + 8)
    assert (requests.size_min_bytes, requests.size_max_bytes) == (100, 300)
    assert (requests.seq_first, requests.seq_last) == (0, 9)
    assert (requests.missing_packets, requests.gaps, requests.duplicate_packets,
            requests.reordered_packets) == (3, 2, 1, 1)
    # Packet i of the file is at T0 + i ms; requests are packets 0, 2, 4, 6..10.
    assert requests.first_ns == T0 * 10**9
    assert requests.last_ns == T0 * 10**9 + 10 * 10**6
    assert requests.duration_s == pytest.approx(0.010)
    assert requests.rate_pps == pytest.approx(7 / 0.010)

    assert (replies.src, replies.src_port, replies.kind) == (SERVER, PORT, "response")
    assert replies.packets == 3
    assert (replies.missing_packets, replies.duplicate_packets, replies.reordered_packets) == \
        (0, 0, 0)
    assert replies.payload_bytes == sum(len(wire.build_reply(_request(seq, size)))
                                        for seq, size in ((0, 100), (1, 100), (2, 200)))


def test_port_filter(session_pcap: Path) -> None:
    same = decode_pcap(session_pcap, port=PORT)
    assert same.pktbench_packets == 11 and len(same.flows) == 2
    other = decode_pcap(session_pcap, port=PORT + 1)
    _check_totals(other)
    assert (other.pktbench_packets, other.other_udp_packets, other.flows) == (0, 15, ())


def test_pktbench_on_any_port_without_filter(tmp_path: Path) -> None:
    packets = [Ether() / IP() / UDP(sport=1111, dport=2222) / _request(s) for s in range(5)]
    result = decode_pcap(_write(tmp_path / "p.pcap", packets))
    assert result.pktbench_packets == 5
    assert decode_pcap(tmp_path / "p.pcap", port=PORT).pktbench_packets == 0


def test_streams_tokens_and_kinds_are_separate_flows(tmp_path: Path) -> None:
    base = Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=PORT)
    packets = [base / _request(0, stream_id=1), base / _request(0, stream_id=2),
               base / _request(1, stream_id=1), base / _request(0, token=7),
               base / wire.build_request(wire.COMMAND_NONE, 64, token=0xABC, seq=0, send_ns=0)]
    result = decode_pcap(_write(tmp_path / "s.pcap", packets))
    keys = [(f.stream_id, f.token, f.kind, f.packets) for f in result.flows]
    assert keys == [(1, 0xABC, "request", 2), (2, 0xABC, "request", 1), (0, 7, "request", 1),
                    (0, 0xABC, "blast", 1)]


def test_warmup_packets_are_counted_apart(tmp_path: Path) -> None:
    # A run with a warm-up: 250 flagged packets numbered from 0, then the
    # measured window numbered from 0 again, as the engine sends them.
    base = Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=PORT)
    warm = [base / wire.build_request(wire.COMMAND_NONE, 64, token=0xABC, seq=s, send_ns=s,
                                      flags=wire.FLAG_WARMUP) for s in range(250)]
    measured = [base / wire.build_request(wire.COMMAND_NONE, 64, token=0xABC, seq=s, send_ns=s)
                for s in range(1003) if s != 17]
    result = decode_pcap(_write(tmp_path / "w.pcap", warm + measured))
    _check_totals(result)
    [flow] = result.flows
    assert (flow.packets, flow.warmup_packets) == (1002, 250)
    assert (flow.missing_packets, flow.duplicate_packets) == (1, 0)
    assert (flow.warmup_missing_packets, flow.warmup_duplicate_packets) == (0, 0)
    assert abs(flow.first_ns - (T0 * 10**9 + 250 * 10**6)) < 1000  # the measured window's first
    assert result.warmup_packets == 250 and result.pktbench_packets == 1252
    totals = result.to_dict()["totals"]
    assert (totals["warmup_packets"], totals["measured_packets"]) == (250, 1002)


def test_ipv6_with_extension_headers(tmp_path: Path) -> None:
    client = Ether() / IPv6(src=CLIENT6, dst=SERVER6)
    packets = [client / UDP(sport=40000, dport=PORT) / _request(0),
               client / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=40000, dport=PORT)
               / _request(2),
               Ether() / IPv6(src=SERVER6, dst=CLIENT6) / UDP(sport=PORT, dport=40000)
               / wire.build_reply(_request(0)),
               client / TCP() / b"x"]
    result = decode_pcap(_write(tmp_path / "v6.pcap", packets))
    _check_totals(result)
    assert (result.pktbench_packets, result.non_udp_packets) == (3, 1)
    requests, replies = result.flows
    assert (requests.src, requests.dst, requests.packets) == (CLIENT6, SERVER6, 2)
    assert (requests.missing_packets, requests.gaps) == (1, 1)
    assert (replies.src, replies.kind) == (SERVER6, "response")


def test_ipv4_and_ipv6_fragments(tmp_path: Path) -> None:
    big = _request(0, 3000, command=wire.COMMAND_SET)
    v4 = fragment(IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=PORT) / big, fragsize=1000)
    v6 = fragment6(IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment()
                   / UDP(sport=40000, dport=PORT) / big, 1280)
    assert len(v4) > 1 and len(v6) > 1
    result = decode_pcap(_write(tmp_path / "frag.pcap", [Ether() / f for f in v4 + v6]))
    _check_totals(result)
    # The first fragment carries the UDP and pktbench headers; the rest cannot be attributed.
    assert result.pktbench_packets == 2
    assert result.fragment_packets == len(v4) + len(v6) - 2
    assert [f.size_max_bytes for f in result.flows] == [3000, 3000]


def _one_of_each() -> Packet:
    return IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=PORT) / _request(3)


@pytest.mark.parametrize("frame, linktype", [
    (CookedLinux(proto=0x0800) / _one_of_each(), 113),
    (CookedLinuxV2(proto=0x0800) / _one_of_each(), 276),
    (CookedLinuxV2(proto=0x86DD) / IPv6() / UDP(dport=PORT) / _request(3), 276),
    (Ether() / Dot1Q(vlan=10) / Dot1Q(vlan=20) / _one_of_each(), 1),
], ids=["sll", "sll2", "sll2-ipv6", "qinq"])
def test_link_layers(tmp_path: Path, frame: Packet, linktype: int) -> None:
    result = decode_pcap(_write(tmp_path / "l.pcap", [frame]))
    assert result.link_types == (linktype,)
    assert result.pktbench_packets == 1
    assert result.flows[0].seq_first == 3


@pytest.mark.parametrize("linktype, prefix", [(101, b""), (228, b""), (0, b"\x02\0\0\0"),
                                              (108, b"\0\0\0\x02")])
def test_raw_and_loopback_link_types(tmp_path: Path, linktype: int, prefix: bytes) -> None:
    frames = [prefix + raw(_one_of_each()), prefix + raw(IPv6() / UDP(dport=PORT) / _request(4))]
    result = decode_pcap(_write_raw_pcap(tmp_path / "r.pcap", frames, linktype=linktype))
    assert result.pktbench_packets == 2


def test_non_ip_on_cooked_capture_is_ignored(tmp_path: Path) -> None:
    result = decode_pcap(_write(tmp_path / "arp.pcap", [CookedLinux(proto=0x0806) / ARP()]))
    assert (result.packets, result.non_udp_packets) == (1, 1)


def test_pcapng_and_nanosecond_pcap(tmp_path: Path) -> None:
    packets = [Ether() / _one_of_each(), Ether() / _one_of_each()]
    packets[0].time, packets[1].time = T0, T0 + 0.5
    wrpcapng(str(tmp_path / "c.pcapng"), packets)
    ng = decode_pcap(tmp_path / "c.pcapng")
    assert ng.pktbench_packets == 2 and ng.flows[0].duplicate_packets == 1
    assert ng.flows[0].duration_s == pytest.approx(0.5)
    packets[1].time = Decimal(T0) + Decimal("0.000000123")  # a float cannot hold this
    wrpcap(str(tmp_path / "n.pcap"), packets, nano=True)
    nano = decode_pcap(tmp_path / "n.pcap")
    assert nano.flows[0].last_ns - nano.flows[0].first_ns == 123


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def test_pcapng_nanosecond_resolution_and_two_interfaces(tmp_path: Path) -> None:
    # Built by hand (pcapng spec): section header, an Ethernet interface with
    # if_tsresol=9 (ns), a raw-IP interface at the default microseconds, and
    # one enhanced packet block on each.
    ether, raw_ip = raw(Ether() / _one_of_each()), raw(_one_of_each())
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_ns = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB", 9, 1, 9)
                           + bytes(3) + struct.pack("<HH", 0, 0))
    idb_us = _pcapng_block(1, struct.pack("<HHI", 101, 0, 0))
    stamp_ns, stamp_us = T0 * 10**9 + 123, T0 * 10**6 + 7

    def epb(interface: int, stamp: int, frame: bytes) -> bytes:
        return _pcapng_block(6, struct.pack("<IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF,
                                            len(frame), len(frame)) + frame)

    path = tmp_path / "hand.pcapng"
    path.write_bytes(shb + idb_ns + idb_us + epb(0, stamp_ns, ether) + epb(1, stamp_us, raw_ip))
    result = decode_pcap(path)
    assert result.link_types == (1, 101)
    (flow,) = result.flows
    assert (flow.packets, flow.first_ns, flow.last_ns) == (2, stamp_ns, stamp_us * 1000)


def test_snaplen_truncation_is_counted(tmp_path: Path) -> None:
    frame = raw(Ether() / _one_of_each())
    headers = 14 + 20 + 8
    path = _write_raw_pcap(tmp_path / "t.pcap", [frame] * 4,
                           caplens=[len(frame), headers + wire.HEADER_SIZE, headers + 5, 20])
    result = decode_pcap(path)
    _check_totals(result)
    assert (result.pktbench_packets, result.truncated_packets) == (2, 2)
    assert result.flows[0].frame_bytes == 2 * len(frame)


def test_hundred_thousand_packets(tmp_path: Path) -> None:
    frame = bytearray(raw(Ether() / _one_of_each()))
    seq_at = 14 + 20 + 8 + wire.OFFSETS["seq"]
    frames = []
    for seq in range(100_000):
        if seq % 1000 == 999:
            continue  # one loss per thousand
        frame[seq_at:seq_at + 8] = seq.to_bytes(8, "big")
        frames.append(bytes(frame))
    result = decode_pcap(_write_raw_pcap(tmp_path / "big.pcap", frames))
    (flow,) = result.flows
    assert flow.packets == 99_900
    assert (flow.missing_packets, flow.gaps) == (99, 99)  # seq 99999 is after the last arrival


# --- a bad file is one clear error ------------------------------------------------

def test_truncated_and_corrupt_files(tmp_path: Path, session_pcap: Path) -> None:
    data = session_pcap.read_bytes()
    cases = {
        "empty": (b"", "is empty"),
        "text": (b"hello, this is not a capture\n", "not a pcap or pcapng capture"),
        "short-header": (data[:20], "file header is cut short"),
        "mid-record": (data[:-10], "ends in the middle of packet 17"),
        "mid-record-header": (data[:24 + 8], "ends in the middle of packet 1"),
        "huge-caplen": (data[:24] + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 60) + bytes(60),
                        "claims 4294967280 captured bytes"),
        "link-type": (data[:20] + struct.pack("<I", 147) + data[24:], "link type 147"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=message) as info:
            decode_pcap(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), name


def test_truncated_pcapng(tmp_path: Path) -> None:
    wrpcapng(str(tmp_path / "c.pcapng"), [Ether() / _one_of_each()] * 3)
    data = (tmp_path / "c.pcapng").read_bytes()
    (tmp_path / "cut.pcapng").write_bytes(data[:-7])
    with pytest.raises(ConfigError, match="cut short or is corrupt"):
        decode_pcap(tmp_path / "cut.pcapng")


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        decode_pcap(tmp_path / "missing.pcap")
    with pytest.raises(ConfigError, match="cannot read the capture"):
        decode_pcap(tmp_path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=120), max_size=6),
       linktype=st.sampled_from([0, 1, 101, 113, 228, 229, 276]))
def test_random_frames_never_crash(tmp_path: Path, frames: list[bytes], linktype: int) -> None:
    result = decode_pcap(_write_raw_pcap(tmp_path / "fuzz.pcap", frames, linktype=linktype))
    _check_totals(result)
    assert result.packets == len(frames)


_VALID_FRAME = raw(Ether() / IPv6() / IPv6ExtHdrHopByHop() / UDP(dport=PORT) / _request(1))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, len(_VALID_FRAME) - 1), value=st.integers(0, 255),
       cut=st.integers(0, len(_VALID_FRAME)))
def test_mutated_frames_never_crash(tmp_path: Path, position: int, value: int, cut: int) -> None:
    frame = bytearray(_VALID_FRAME)
    frame[position] = value
    result = decode_pcap(_write_raw_pcap(tmp_path / "m.pcap", [bytes(frame)],
                                         caplens=[cut]))
    _check_totals(result)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a",
                                                 b"\x4d\x3c\xb2\xa1", b""]))
def test_random_files_raise_only_config_error(tmp_path: Path, body: bytes, magic: bytes) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(magic + body)
    try:
        _check_totals(decode_pcap(path))
    except ConfigError as exc:
        assert "\n" not in str(exc)


# --- sequence accounting -------------------------------------------------------------------

def _naive_sequence_stats(seqs: list[int]) -> dict[str, int]:
    seen: set[int] = set()
    duplicates = reordered = 0
    highest = -1
    for seq in seqs:
        if seq in seen:
            duplicates += 1
        elif seq < highest:
            reordered += 1
        seen.add(seq)
        highest = max(highest, seq)
    ordered = sorted(seen)
    return {"seq_first": ordered[0], "seq_last": ordered[-1],
            "missing_packets": ordered[-1] - ordered[0] + 1 - len(ordered),
            "gaps": sum(1 for a, b in zip(ordered, ordered[1:]) if b - a > 1),
            "duplicate_packets": duplicates, "reordered_packets": reordered}


@given(st.lists(st.integers(0, 60), min_size=1, max_size=80))
def test_sequence_stats_matches_naive(seqs: list[int]) -> None:
    assert sequence_stats(seqs) == _naive_sequence_stats(seqs)


def test_sequence_stats_edges() -> None:
    assert sequence_stats([]) == {"seq_first": 0, "seq_last": 0, "missing_packets": 0, "gaps": 0,
                                  "duplicate_packets": 0, "reordered_packets": 0}
    top = 2**64 - 1
    assert sequence_stats(np.array([0, top], dtype=np.uint64))["missing_packets"] == top - 1
    assert sequence_stats([3, 2, 1, 0])["reordered_packets"] == 3


# --- the CLI command -------------------------------------------------------------------------

def test_cli_table(session_pcap: Path) -> None:
    result = CliRunner().invoke(main, ["decode", str(session_pcap)])
    assert result.exit_code == 0, result.output
    assert f"{CLIENT}:40000" in result.output and f"{SERVER}:{PORT}" in result.output
    assert ("17 packets: 11 pktbench (11 measured, 0 warm-up), 4 other UDP, 2 not UDP, "
            "0 fragments, 0 truncated") in \
        result.output
    assert "not wire version" in result.output


def test_cli_json(session_pcap: Path) -> None:
    result = CliRunner().invoke(main, ["decode", str(session_pcap), "--json", "--port", str(PORT)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["schema_version"] == 1
    assert document["capture"]["port"] == PORT
    assert document["totals"]["pktbench_packets"] == 11
    flow = document["flows"][0]
    assert set(flow) == set(FlowStats.__dataclass_fields__)
    assert (flow["missing_packets"], flow["duplicate_packets"], flow["reordered_packets"]) == \
        (3, 1, 1)


def test_cli_bad_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["decode", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output

    as_json = CliRunner().invoke(main, ["decode", str(tmp_path / "none.pcap"), "--json"])
    assert as_json.exit_code == 1
    assert "No such file" in json.loads(as_json.output)["error"]


def test_cli_bad_port_is_usage_error(session_pcap: Path) -> None:
    result = CliRunner().invoke(main, ["decode", str(session_pcap), "--port", "0"])
    assert result.exit_code == 2
