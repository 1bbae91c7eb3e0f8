"""pktbench.wire: golden bytes, round trips, request/reply sizing, and drift of ext/_wire.pxi."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktbench import wire

ROOT = Path(__file__).resolve().parents[1]

# Written by hand from the layout in wire.FIELDS (network order):
# magic 504b | version 01 | kind 01 (request) | command 02 (get) | flags 00 |
# stream_id 0a0b | token 1122334455667788 | seq 0102030405060708 |
# send_ns 00000000deadbeef
GOLDEN_FIELDS = dict(kind=1, command=2, flags=0, stream_id=0x0A0B, token=0x1122334455667788,
                     seq=0x0102030405060708, send_ns=0xDEADBEEF)
GOLDEN_HEX = ("504b" "01" "01" "02" "00" "0a0b"
              "1122334455667788" "0102030405060708" "00000000deadbeef")

ALL_COMMANDS = sorted(wire.COMMANDS.values())
REPLIED_COMMANDS = [c for c in ALL_COMMANDS if c != wire.COMMAND_NONE]  # blasts get no reply


def _field_strategy() -> st.SearchStrategy[dict[str, int]]:
    """Any in-range value for every header field, derived from wire.FIELDS."""
    return st.fixed_dictionaries({
        f.name: st.integers(0, 2 ** (8 * struct.calcsize("!" + f.code)) - 1) for f in wire.FIELDS
    })


def _parse_resp_bulk_array(data: bytes) -> tuple[list[bytes], int]:
    """Independent parser for a RESP array of bulk strings: (items, bytes used)."""
    assert data[:1] == b"*", data[:20]
    line_end = data.index(b"\r\n")
    count = int(data[1:line_end])
    position = line_end + 2
    items = []
    for _ in range(count):
        assert data[position:position + 1] == b"$"
        line_end = data.index(b"\r\n", position)
        length = int(data[position + 1:line_end])
        start = line_end + 2
        items.append(data[start:start + length])
        assert data[start + length:start + length + 2] == b"\r\n"
        position = start + length + 2
    return items, position


# --- header layout --------------------------------------------------------

def test_golden_header_bytes() -> None:
    assert wire.pack_header(**GOLDEN_FIELDS).hex() == GOLDEN_HEX


def test_golden_header_unpacks_to_its_fields() -> None:
    header = wire.unpack_header(bytes.fromhex(GOLDEN_HEX))
    assert header == wire.Header(magic=0x504B, version=1, **GOLDEN_FIELDS)


def test_layout_is_fixed_magic_and_version_first() -> None:
    assert wire.HEADER_SIZE == 32 == len(bytes.fromhex(GOLDEN_HEX))
    assert [f.name for f in wire.FIELDS][:2] == ["magic", "version"]
    assert wire.HEADER_FORMAT.startswith("!")
    assert list(wire.Header._fields) == [f.name for f in wire.FIELDS]


def test_offsets_follow_field_sizes() -> None:
    position = 0
    for field in wire.FIELDS:
        assert wire.OFFSETS[field.name] == position
        position += struct.calcsize("!" + field.code)
    assert position == wire.HEADER_SIZE


def test_offsets_locate_each_golden_field() -> None:
    data = bytes.fromhex(GOLDEN_HEX)
    header = wire.unpack_header(data)
    for field in wire.FIELDS:
        (value,) = struct.unpack_from("!" + field.code, data, wire.OFFSETS[field.name])
        assert value == getattr(header, field.name)


@given(_field_strategy())
def test_pack_unpack_round_trip(fields: dict[str, int]) -> None:
    data = wire.pack_header(**fields)
    assert len(data) == wire.HEADER_SIZE
    assert wire.unpack_header(data)._asdict() == fields


@given(_field_strategy(), st.binary(max_size=64))
def test_unpack_ignores_trailing_bytes_and_accepts_buffers(fields: dict[str, int],
                                                           tail: bytes) -> None:
    data = wire.pack_header(**fields) + tail
    expected = wire.Header(**fields)
    assert wire.unpack_header(data) == expected
    assert wire.unpack_header(bytearray(data)) == expected
    assert wire.unpack_header(memoryview(data)) == expected


def test_unpack_short_input_is_a_value_error_naming_sizes() -> None:
    with pytest.raises(ValueError, match=f"need {wire.HEADER_SIZE} header bytes, got 31"):
        wire.unpack_header(bytes(31))


@settings(max_examples=300)
@given(st.binary(max_size=3 * wire.HEADER_SIZE))
def test_unpack_header_random_bytes_only_value_error(data: bytes) -> None:
    try:
        header = wire.unpack_header(data)
    except ValueError:
        assert len(data) < wire.HEADER_SIZE
    else:
        assert wire.pack_header(**header._asdict()) == data[:wire.HEADER_SIZE]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_build_reply_random_bytes_only_value_error(data: bytes) -> None:
    try:
        reply = wire.build_reply(data)
    except ValueError:
        return
    assert wire.unpack_header(reply).kind == wire.KIND_RESPONSE


@settings(max_examples=300)
@given(st.binary(max_size=200).map(lambda b: wire.pack_header(
    kind=wire.KIND_REQUEST, command=wire.COMMAND_GET, token=1, seq=2, send_ns=3) + b))
def test_build_reply_random_get_payload_only_value_error(data: bytes) -> None:
    # GET replies size themselves from the request length; any length must work.
    reply = wire.build_reply(data)
    assert len(reply) <= len(data) or len(data) < wire.min_request_size(wire.COMMAND_GET)


# --- numpy ----------------------------------------------------------------

def test_numpy_dtype_matches_fields() -> None:
    dtype = wire.numpy_dtype()
    assert dtype.itemsize == wire.HEADER_SIZE
    assert list(dtype.names) == [f.name for f in wire.FIELDS]
    for field in wire.FIELDS:
        assert dtype.fields[field.name][1] == wire.OFFSETS[field.name]


def test_numpy_decodes_golden_bytes() -> None:
    row = np.frombuffer(bytes.fromhex(GOLDEN_HEX), dtype=wire.numpy_dtype())[0]
    assert {name: int(row[name]) for name in row.dtype.names} == \
        wire.unpack_header(bytes.fromhex(GOLDEN_HEX))._asdict()


@given(st.lists(_field_strategy(), min_size=1, max_size=20))
def test_numpy_decodes_many_headers_like_unpack(rows: list[dict[str, int]]) -> None:
    blob = b"".join(wire.pack_header(**fields) for fields in rows)
    array = np.frombuffer(blob, dtype=wire.numpy_dtype())
    assert len(array) == len(rows)
    for decoded, fields in zip(array, rows):
        assert {name: int(decoded[name]) for name in array.dtype.names} == fields


# --- RESP payloads and request/reply sizes ---------------------------------

def test_resp_golden_payloads() -> None:
    assert wire.resp_command(wire.COMMAND_PING) == b"*1\r\n$4\r\nPING\r\n"
    assert wire.resp_command(wire.COMMAND_GET) == b"*2\r\n$3\r\nGET\r\n$12\r\npktbench:key\r\n"
    assert wire.resp_command(wire.COMMAND_SET, 3) == \
        b"*3\r\n$3\r\nSET\r\n$12\r\npktbench:key\r\n$3\r\nvvv\r\n"
    assert wire.resp_reply(wire.COMMAND_PING) == b"+PONG\r\n"
    assert wire.resp_reply(wire.COMMAND_SET) == b"+OK\r\n"
    assert wire.resp_reply(wire.COMMAND_GET, 2) == b"$2\r\nvv\r\n"


def _sizes(command: int) -> list[int]:
    low = wire.min_request_size(command)
    # Every size near the minimum and across the digit-count boundaries of
    # SET/GET value lengths (9->10, 99->100, ...), plus common MTU payloads.
    return (list(range(low, low + 160)) + [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007,
                                            1472, 1500, 8972, 9000, 10045, 10046, 10047,
                                            wire.MAX_DATAGRAM])


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=wire.command_name)
def test_request_is_exactly_the_size_asked(command: int) -> None:
    for size in _sizes(command):
        request = wire.build_request(command, size, token=7, seq=size, send_ns=9, stream_id=3)
        assert len(request) == size
        header = wire.unpack_header(request)
        assert header.command == command
        assert header.kind == (wire.KIND_BLAST if command == wire.COMMAND_NONE
                               else wire.KIND_REQUEST)
        assert (header.token, header.seq, header.send_ns, header.stream_id) == (7, size, 9, 3)


@pytest.mark.parametrize("command", REPLIED_COMMANDS, ids=wire.command_name)
def test_reply_is_never_longer_than_request(command: int) -> None:
    for size in _sizes(command):
        request = wire.build_request(command, size, token=7, seq=1, send_ns=9, stream_id=3)
        reply = wire.build_reply(request)
        assert wire.HEADER_SIZE < len(reply) <= len(request)
        header = wire.unpack_header(reply)
        assert header._replace(kind=wire.KIND_REQUEST) == wire.unpack_header(request)
        assert header.kind == wire.KIND_RESPONSE


def test_get_reply_fills_the_request_size() -> None:
    # The GET reply is the largest that fits; a digit-count boundary of the
    # length prefix can cost one byte, never more.
    for size in _sizes(wire.COMMAND_GET):
        request = wire.build_request(wire.COMMAND_GET, size, token=1, seq=1, send_ns=1)
        assert size - 1 <= len(wire.build_reply(request)) <= size


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=wire.command_name)
def test_request_payload_is_one_resp_command_then_zeros(command: int) -> None:
    for size in _sizes(command):
        payload = wire.request_payload(command, size)
        if command == wire.COMMAND_NONE:
            assert payload == bytes(size - wire.HEADER_SIZE)
            continue
        items, used = _parse_resp_bulk_array(payload)
        assert items[0] == wire.command_name(command).upper().encode()
        assert payload[used:] == bytes(len(payload) - used)
        if command == wire.COMMAND_SET:
            assert items[1] == wire.KEY and set(items[2]) == {ord("v")}
            # SET grows its value to fill; the length prefix's digit count can
            # leave one byte of padding.
            assert len(payload) - used <= 1


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=wire.command_name)
def test_too_small_size_is_refused_clearly(command: int) -> None:
    low = wire.min_request_size(command)
    for size in (0, 1, wire.HEADER_SIZE - 1, low - 1):
        with pytest.raises(ValueError, match=rf"size {size} is too small for "
                                             rf"{wire.command_name(command)}: at least {low}"):
            wire.build_request(command, size, token=1, seq=1, send_ns=1)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=wire.command_name)
def test_oversized_request_is_refused(command: int) -> None:
    with pytest.raises(ValueError, match="larger than a UDP datagram"):
        wire.build_request(command, wire.MAX_DATAGRAM + 1, token=1, seq=1, send_ns=1)


@given(st.sampled_from(ALL_COMMANDS), st.data())
def test_any_valid_size_round_trips(command: int, data: st.DataObject) -> None:
    size = data.draw(st.integers(wire.min_request_size(command), wire.MAX_DATAGRAM))
    request = wire.build_request(command, size, token=2, seq=3, send_ns=4)
    assert len(request) == size
    if command == wire.COMMAND_NONE:
        assert request[wire.HEADER_SIZE:] == bytes(size - wire.HEADER_SIZE)
    else:
        assert request[wire.HEADER_SIZE:].startswith(wire.command_prefix(command))
        assert len(wire.build_reply(request)) <= size


def test_unknown_command_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown command 9"):
        wire.resp_command(9)
    request = wire.pack_header(kind=wire.KIND_REQUEST, command=9, token=1, seq=1, send_ns=1)
    with pytest.raises(ValueError, match="unknown command 9"):
        wire.build_reply(request + bytes(40))


# --- generated Cython include ----------------------------------------------

def test_checked_in_pxi_matches_render() -> None:
    checked_in = (ROOT / "ext" / "_wire.pxi").read_text()
    assert checked_in == wire.render_pxi(), (
        "ext/_wire.pxi is stale: run `python -m pktbench.wire --pxi > ext/_wire.pxi`")


def test_pxi_names_every_offset_and_drop_reason() -> None:
    text = wire.render_pxi()
    for field in wire.FIELDS:
        assert f"WIRE_OFF_{field.name.upper()} = {wire.OFFSETS[field.name]}\n" in text
    for index, reason in enumerate(wire.DROP_REASONS):
        assert f"WIRE_DROP_{reason.upper()} = {index}\n" in text
    assert f"WIRE_HEADER_SIZE = {wire.HEADER_SIZE}\n" in text


def test_module_main_prints_the_pxi() -> None:
    result = subprocess.run([sys.executable, "-m", "pktbench.wire", "--pxi"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == wire.render_pxi()


def _pxi_enum_members(text: str, prefix: str) -> list[str]:
    """The members, in order, of the pxi's `cdef enum:` block of `prefix`_*."""
    blocks = text.split("cdef enum:\n")[1:]
    for block in blocks:
        members = []
        for line in block.splitlines():
            if not line.startswith("    "):
                break
            members.append(line.strip())
        if members and members[0].startswith(prefix + "_"):
            return members
    raise AssertionError(f"no {prefix}_* enum in the pxi")


@pytest.mark.parametrize("prefix,tuple_name,names", wire.COUNTER_TABLES)
def test_counter_enums_follow_the_table(prefix: str, tuple_name: str,
                                        names: tuple[str, ...]) -> None:
    text = (ROOT / "ext" / "_wire.pxi").read_text()
    assert _pxi_enum_members(text, prefix) == (
        [f"{prefix}_{name.upper()}" for name in names] + [f"{prefix}_COUNTERS"])
    assert getattr(wire, tuple_name) == names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("prefix,tuple_name,names", wire.COUNTER_TABLES)
def test_both_engines_name_counters_from_the_table(prefix: str, tuple_name: str,
                                                   names: tuple[str, ...]) -> None:
    from pktbench import _fallback
    assert getattr(_fallback, tuple_name) == names
    # the fallback's own index constants must sit where the table puts their names
    for index, name in enumerate(names):
        constant = getattr(_fallback, f"{prefix}_{name.upper()}", None)
        if constant is not None:
            assert constant == index, f"_fallback.{prefix}_{name.upper()}"
    try:
        from pktbench import _engine  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        pytest.skip("compiled engine not built")
    assert getattr(_engine, tuple_name) == names


def test_client_counters_begin_with_the_senders() -> None:
    # the shared meter writes S_* indices into the RESP client's counters too
    assert wire.CLIENT_COUNTERS[:len(wire.SENDER_COUNTERS)] == wire.SENDER_COUNTERS
