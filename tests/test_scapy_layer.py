"""pktbench.scapy_layer: same bytes as pktbench.wire, dissection, UDP binding, summaries."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktbench import wire

scapy_layer = pytest.importorskip("pktbench.scapy_layer", reason="scapy is not installed")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.packet import Padding, Raw, raw  # noqa: E402

PktbenchHeader = scapy_layer.PktbenchHeader
PktbenchResp = scapy_layer.PktbenchResp
PORT = wire.DEFAULT_PORT
ROOT = Path(__file__).resolve().parents[1]
ALL_COMMANDS = sorted(wire.COMMANDS.values())


def _field_strategy() -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({
        f.name: st.integers(0, 2 ** (8 * struct.calcsize("!" + f.code)) - 1) for f in wire.FIELDS
    })


def _values(layer: PktbenchHeader) -> dict[str, int]:
    # getfieldval, not attributes: scapy's Packet.command() shadows the field.
    return {f.name: int(layer.getfieldval(f.name)) for f in wire.FIELDS}


# --- layout taken from wire ---------------------------------------------------

def test_fields_desc_follows_wire_fields() -> None:
    assert [f.name for f in PktbenchHeader.fields_desc] == [f.name for f in wire.FIELDS]
    for scapy_field, wire_field in zip(PktbenchHeader.fields_desc, wire.FIELDS):
        assert scapy_field.sz == struct.calcsize("!" + wire_field.code)
    assert len(raw(PktbenchHeader())) == wire.HEADER_SIZE


def test_bare_header_is_wire_default() -> None:
    assert raw(PktbenchHeader()) == wire.pack_header(kind=wire.KIND_BLAST, token=0, seq=0,
                                                     send_ns=0)


def test_enum_labels_come_from_wire() -> None:
    by_name = {f.name: f for f in PktbenchHeader.fields_desc}
    assert by_name["kind"].i2s == {v: k for k, v in wire.KINDS.items()}
    assert by_name["command"].i2s == {v: k for k, v in wire.COMMANDS.items()}
    # Labels are accepted when building, too.
    assert raw(PktbenchHeader(kind="response", command="set", token=1, seq=2, send_ns=3)) == \
        wire.pack_header(kind=wire.KIND_RESPONSE, command=wire.COMMAND_SET, token=1, seq=2,
                         send_ns=3)


def test_unknown_struct_code_is_refused() -> None:
    table = (wire.Field("magic", "H", ""), wire.Field("weird", "d", "a float"))
    with pytest.raises(ValueError, match="'weird' uses struct code 'd'"):
        scapy_layer.fields_from_wire(table)


def test_other_field_tables_build_matching_layers() -> None:
    table = (wire.Field("kind", "B", ""), wire.Field("width", "I", ""),
             wire.Field("seq", "Q", ""))
    desc = scapy_layer.fields_from_wire(table)
    assert [f.name for f in desc] == ["kind", "width", "seq"]
    assert [f.sz for f in desc] == [1, 4, 8]
    assert desc[0].i2s == {v: k for k, v in wire.KINDS.items()}


# --- same bytes as wire ---------------------------------------------------------

@settings(max_examples=200)
@given(_field_strategy())
def test_layer_bytes_equal_pack_header(fields: dict[str, int]) -> None:
    assert raw(PktbenchHeader(**fields)) == wire.pack_header(**fields)


@settings(max_examples=200)
@given(_field_strategy())
def test_dissect_wire_bytes_gives_same_fields(fields: dict[str, int]) -> None:
    layer = PktbenchHeader(wire.pack_header(**fields))
    assert _values(layer) == fields
    assert raw(layer) == wire.pack_header(**fields)


def test_golden_header_dissects() -> None:
    data = bytes.fromhex("504b01010200" "0a0b" "1122334455667788" "0102030405060708"
                         "00000000deadbeef")
    layer = PktbenchHeader(data)
    assert _values(layer) == dict(magic=0x504B, version=1, kind=1, command=2, flags=0,
                                  stream_id=0x0A0B, token=0x1122334455667788,
                                  seq=0x0102030405060708, send_ns=0xDEADBEEF)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=wire.command_name)
@pytest.mark.parametrize("size", [None, 100, 1472])
def test_requests_and_replies_dissect_and_rebuild(command: int, size: int | None) -> None:
    size = size or wire.min_request_size(command)
    request = wire.build_request(command, size, token=11, seq=12, send_ns=13, stream_id=4)
    packet = UDP(raw(UDP(sport=40000, dport=PORT) / request))
    assert raw(packet[UDP].payload) == request
    header = packet[PktbenchHeader]
    assert _values(header) == wire.unpack_header(request)._asdict()
    if command == wire.COMMAND_NONE:
        assert PktbenchResp not in packet
        return
    assert bytes(packet[PktbenchResp].resp) == wire.request_payload(command, size).rstrip(b"\0")
    pad = bytes(packet[PktbenchResp].payload)
    assert pad == bytes(len(pad))

    reply = wire.build_reply(request)
    back = UDP(raw(UDP(sport=PORT, dport=40000) / reply))
    assert raw(back[UDP].payload) == reply
    assert back[PktbenchHeader].kind == wire.KIND_RESPONSE
    assert bytes(back[PktbenchResp].resp) == reply[wire.HEADER_SIZE:]


def test_blast_padding_is_padding_layer() -> None:
    request = wire.build_request(wire.COMMAND_NONE, 64, token=1, seq=2, send_ns=3)
    header = PktbenchHeader(request)
    assert isinstance(header.payload, Padding)
    assert bytes(header.payload) == bytes(64 - wire.HEADER_SIZE)


# --- binding to UDP in both directions --------------------------------------------

def test_built_packet_gets_server_port() -> None:
    packet = UDP() / PktbenchHeader()
    assert packet.dport == PORT
    assert UDP(raw(packet)).dport == PORT


@pytest.mark.parametrize("ip", [IP(src="127.0.0.1", dst="127.0.0.1"), IPv6(src="::1", dst="::1")],
                         ids=["ipv4", "ipv6"])
def test_request_direction_dissects(ip: IP) -> None:
    built = ip / UDP(sport=50000, dport=PORT) / PktbenchHeader(kind="request", command="ping",
                                                               token=5, seq=6, send_ns=7)
    dissected = type(ip)(raw(built))
    assert PktbenchHeader in dissected
    assert dissected[PktbenchHeader].seq == 6


@pytest.mark.parametrize("ip", [IP(), IPv6()], ids=["ipv4", "ipv6"])
def test_reply_direction_dissects(ip: IP) -> None:
    reply = wire.pack_header(kind=wire.KIND_RESPONSE, command=wire.COMMAND_PING, token=5,
                             seq=6, send_ns=7) + wire.resp_reply(wire.COMMAND_PING)
    dissected = type(ip)(raw(ip / UDP(sport=PORT, dport=50000) / reply))
    assert PktbenchHeader in dissected
    assert bytes(dissected[PktbenchResp].resp) == b"+PONG\r\n"


def test_other_ports_stay_raw() -> None:
    data = wire.pack_header(kind=wire.KIND_BLAST, token=1, seq=1, send_ns=1)
    dissected = IP(raw(IP() / UDP(sport=50000, dport=PORT + 1) / data))
    assert PktbenchHeader not in dissected
    assert raw(dissected[Raw]) == data


# --- summaries ----------------------------------------------------------------------

def test_summary_of_request_and_reply() -> None:
    request = wire.build_request(wire.COMMAND_GET, 100, token=1, seq=42, send_ns=3, stream_id=7)
    packet = IP(raw(IP() / UDP(sport=50000, dport=PORT) / request))
    assert packet.summary() == \
        "IP / UDP / pktbench request get stream=7 seq=42 / RESP GET / Padding"
    reply = IP(raw(IP() / UDP(sport=PORT, dport=50000) / wire.build_reply(request)))
    assert reply.summary().startswith("IP / UDP / pktbench response get stream=7 seq=42 / RESP $")


def test_header_mysummary() -> None:
    assert PktbenchHeader(kind="blast", seq=9).mysummary() == "pktbench blast none stream=0 seq=9"


# --- RESP framing ----------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    b"+PONG\r\n", b"+OK\r\n", b"-ERR nope\r\n", b":12\r\n", b"$-1\r\n", b"$0\r\n\r\n",
    b"$3\r\nabc\r\n", b"*0\r\n", b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
    wire.resp_command(wire.COMMAND_SET, 20), wire.resp_reply(wire.COMMAND_GET, 15),
])
def test_resp_message_length(message: bytes) -> None:
    assert scapy_layer.resp_message_length(message + b"\0\0garbage") == len(message)


@pytest.mark.parametrize("data", [b"", b"+PONG", b"$5\r\nabc\r\n", b"*2\r\n$1\r\na\r\n",
                                  b"$x\r\n", b"\0\0\0", b"*1\r\n" * 50])
def test_resp_message_length_refuses_incomplete(data: bytes) -> None:
    with pytest.raises(ValueError):
        scapy_layer.resp_message_length(data)


@settings(max_examples=500)
@given(st.binary(max_size=120) | st.lists(st.sampled_from(
    [b"*", b"$", b"+", b":", b"-", b"1", b"3", b"-1", b"\r\n", b"a"]), max_size=30).map(b"".join))
def test_resp_parser_only_raises_value_error(data: bytes) -> None:
    try:
        length = scapy_layer.resp_message_length(data)
    except ValueError:
        return
    assert 0 < length <= len(data)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_dissecting_random_udp_payload_never_fails(data: bytes) -> None:
    packet = UDP(raw(UDP(sport=1, dport=PORT) / data))
    assert raw(packet[UDP].payload) == data


# --- kept off the start-up path --------------------------------------------------------------

def test_cli_and_wire_do_not_import_scapy() -> None:
    code = ("import sys, pktbench, pktbench.wire, pktbench.cli, pktbench.decode\n"
            "from click.testing import CliRunner\n"
            "assert CliRunner().invoke(pktbench.cli.main, ['--help']).exit_code == 0\n"
            "assert CliRunner().invoke(pktbench.cli.main, ['decode', '--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scapy'))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_flags_are_named_from_wire() -> None:
    layer = PktbenchHeader(kind="blast", flags="warmup", token=5, seq=3, send_ns=9)
    assert raw(layer) == wire.pack_header(kind=wire.KIND_BLAST, flags=wire.FLAG_WARMUP,
                                          token=5, seq=3, send_ns=9)
    parsed = PktbenchHeader(raw(layer))
    assert parsed.flags.warmup and int(parsed.flags) == wire.FLAG_WARMUP
    assert not PktbenchHeader(raw(PktbenchHeader())).flags.warmup
