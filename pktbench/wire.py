"""The pktbench data-packet format: the single source of truth.

Owns: the fixed 32-byte header (field table FIELDS), its numeric constants
(magic, version, kinds, commands), the RESP payloads a request or reply
carries, the drop reasons a receiver counts, and the default port.

Invariants:
- Network byte order, fixed-size fields, magic and version first.
- Everything else derives its layout from FIELDS: the struct format, the
  numpy dtype, the scapy layer, and ext/_wire.pxi (rendered by render_pxi();
  a test fails when the checked-in file drifts).
- Bump VERSION on any change to the header or the payload rules.

This module does no I/O and imports only the standard library.

Packet layout (UDP payload)::

    header (HEADER_SIZE bytes) | RESP command or reply | zero padding

A request is padded to the datagram size the user asks for; the padding is
zeros after a complete RESP command (SET instead grows its value to fill).
A reply carries the request's header with kind RESPONSE, then the RESP reply,
and is never longer than the request it answers.
"""
from __future__ import annotations

import struct
import sys
from typing import NamedTuple

MAGIC = 0x504B  # "PK"
VERSION = 1
DEFAULT_PORT = 7425


class Field(NamedTuple):
    name: str
    code: str  # struct code, network order is applied to the whole header
    doc: str


FIELDS: tuple[Field, ...] = (
    Field("magic", "H", "constant MAGIC; anything else is dropped as bad_magic"),
    Field("version", "B", "constant VERSION; anything else is dropped as bad_version"),
    Field("kind", "B", "KIND_* value: request, response or one-way blast"),
    Field("command", "B", "COMMAND_* value of the RESP command carried"),
    Field("flags", "B", "FLAG_* bits (FLAGS); a reply echoes its request's; unknown bits zero"),
    Field("stream_id", "H", "sender's stream (worker) number"),
    Field("token", "Q", "session token handed out by the server's control channel"),
    Field("seq", "Q", "per-stream sequence number, from 0"),
    Field("send_ns", "Q", "sender's CLOCK_MONOTONIC (or REALTIME in testbeds) at send, ns"),
)

HEADER_FORMAT = "!" + "".join(f.code for f in FIELDS)
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
_HEADER = struct.Struct(HEADER_FORMAT)


def _offsets() -> dict[str, int]:
    offsets: dict[str, int] = {}
    position = 0
    for field in FIELDS:
        offsets[field.name] = position
        position += struct.calcsize("!" + field.code)
    return offsets


OFFSETS: dict[str, int] = _offsets()

KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_BLAST = 3
KINDS = {"request": KIND_REQUEST, "response": KIND_RESPONSE, "blast": KIND_BLAST}

# Header flag bits. Warm-up packets (and the replies to them) carry
# FLAG_WARMUP so that neither end counts them in the measured window, and a
# capture can tell them from measured packets: warm-up numbers its packets
# from 0 too, so without the bit they would read as duplicates.
FLAG_WARMUP = 0x01
FLAGS = {"warmup": FLAG_WARMUP}

COMMAND_NONE = 0
COMMAND_PING = 1
COMMAND_GET = 2
COMMAND_SET = 3
COMMANDS = {"none": COMMAND_NONE, "ping": COMMAND_PING, "get": COMMAND_GET, "set": COMMAND_SET}

# Why a receiver dropped a datagram. Order is the index into the engine's
# drop-counter array; append only.
DROP_REASONS: tuple[str, ...] = (
    "too_short",
    "bad_magic",
    "bad_version",
    "bad_kind",
    "bad_token",
    "bad_source",
    "bad_payload",
    "oversized",
    "bad_seq",  # a blast seq beyond what the step's rate and length allow
)

# The key every GET/SET uses; it exists on our responder for every step.
KEY = b"pktbench:key"

MAX_DATAGRAM = 65507  # largest UDP payload over IPv4

# A TCP data connection (bulk or RESP streams) opens with this preamble on
# the control port, so the server can tell it from a control connection and
# tie it to the step whose data token it carries.
DATA_MAGIC = b"PKTD"
_DATA_PREAMBLE = struct.Struct("!4sBBHQ")  # magic, version, reserved, stream_id, token
DATA_PREAMBLE_SIZE = _DATA_PREAMBLE.size


def pack_data_preamble(stream_id: int, token: int) -> bytes:
    return _DATA_PREAMBLE.pack(DATA_MAGIC, VERSION, 0, stream_id, token)


def unpack_data_preamble(data: bytes) -> tuple[int, int]:
    """(stream_id, token) of a data-connection preamble; ValueError if it is not one."""
    if len(data) != DATA_PREAMBLE_SIZE:
        raise ValueError(f"data preamble must be {DATA_PREAMBLE_SIZE} bytes, got {len(data)}")
    magic, version, _, stream_id, token = _DATA_PREAMBLE.unpack(data)
    if magic != DATA_MAGIC:
        raise ValueError("not a pktbench data connection")
    if version != VERSION:
        raise ValueError(f"data connection speaks version {version}, this end {VERSION}")
    return stream_id, token


class Header(NamedTuple):
    magic: int
    version: int
    kind: int
    command: int
    flags: int
    stream_id: int
    token: int
    seq: int
    send_ns: int


def pack_header(
    *,
    kind: int,
    token: int,
    seq: int,
    send_ns: int,
    command: int = COMMAND_NONE,
    stream_id: int = 0,
    flags: int = 0,
    magic: int = MAGIC,
    version: int = VERSION,
) -> bytes:
    return _HEADER.pack(magic, version, kind, command, flags, stream_id, token, seq, send_ns)


def unpack_header(data: bytes | bytearray | memoryview) -> Header:
    if len(data) < HEADER_SIZE:
        raise ValueError(f"need {HEADER_SIZE} header bytes, got {len(data)}")
    return Header(*_HEADER.unpack_from(data))


def numpy_dtype():  # type: ignore[no-untyped-def]
    """Structured big-endian dtype of the header, for decoding many at once."""
    import numpy as np

    return np.dtype([(f.name, ">" + f.code.replace("H", "u2").replace("B", "u1").replace("Q", "u8"))
                     for f in FIELDS])


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def resp_command(command: int, value_bytes: int = 0) -> bytes:
    """The RESP array for one command, as redis-cli would send it."""
    if command == COMMAND_PING:
        return b"*1\r\n" + _bulk(b"PING")
    if command == COMMAND_GET:
        return b"*2\r\n" + _bulk(b"GET") + _bulk(KEY)
    if command == COMMAND_SET:
        return b"*3\r\n" + _bulk(b"SET") + _bulk(KEY) + _bulk(b"v" * value_bytes)
    raise ValueError(f"unknown command {command}")


def resp_reply(command: int, value_bytes: int = 0) -> bytes:
    if command == COMMAND_PING:
        return b"+PONG\r\n"
    if command == COMMAND_SET:
        return b"+OK\r\n"
    if command == COMMAND_GET:
        return _bulk(b"v" * value_bytes)
    raise ValueError(f"unknown command {command}")


def command_prefix(command: int) -> bytes:
    """The bytes every valid request for `command` starts with after the header."""
    if command == COMMAND_SET:
        return b"*3\r\n" + _bulk(b"SET") + _bulk(KEY)
    return resp_command(command)


def min_request_size(command: int) -> int:
    """Smallest UDP payload that carries the header and a complete command."""
    if command == COMMAND_NONE:
        return HEADER_SIZE
    return HEADER_SIZE + len(resp_command(command, 1 if command == COMMAND_SET else 0))


def _set_value_bytes(size: int) -> int:
    """SET's value length so that the whole request is exactly `size` bytes."""
    room = size - HEADER_SIZE - len(command_prefix(COMMAND_SET)) - 2  # trailing CRLF
    value = room - 3  # "$" + at least one digit + CRLF
    while value > 0 and len(b"$%d\r\n" % value) + value > room:
        value -= 1
    return value


def get_value_bytes(size: int) -> int:
    """GET's reply value length: the largest that keeps the reply within `size`."""
    room = size - HEADER_SIZE - 2
    value = room - 3
    while value > 0 and len(b"$%d\r\n" % value) + value > room:
        value -= 1
    return max(value, 0)


def request_payload(command: int, size: int) -> bytes:
    """The bytes after the header of a request of total datagram `size`."""
    if size < min_request_size(command):
        raise ValueError(
            f"size {size} is too small for {command_name(command)}: "
            f"at least {min_request_size(command)} bytes (header {HEADER_SIZE} + command)"
        )
    if size > MAX_DATAGRAM:
        raise ValueError(f"size {size} is larger than a UDP datagram can be ({MAX_DATAGRAM})")
    if command == COMMAND_NONE:
        body = b""
    elif command == COMMAND_SET:
        body = resp_command(command, _set_value_bytes(size))
    else:
        body = resp_command(command)
    return body + bytes(size - HEADER_SIZE - len(body))


def reply_payload(command: int, size: int) -> bytes:
    """The bytes after the header of the reply to a request of `size` bytes."""
    if command == COMMAND_GET:
        return resp_reply(command, get_value_bytes(size))
    return resp_reply(command)


def build_request(command: int, size: int, *, token: int, seq: int, send_ns: int,
                  stream_id: int = 0, flags: int = 0) -> bytes:
    kind = KIND_BLAST if command == COMMAND_NONE else KIND_REQUEST
    return pack_header(kind=kind, command=command, token=token, seq=seq, send_ns=send_ns,
                       stream_id=stream_id, flags=flags) + request_payload(command, size)


def build_reply(request: bytes) -> bytes:
    """The exact reply our responder sends to a valid `request`."""
    header = unpack_header(request)
    echoed = pack_header(kind=KIND_RESPONSE, command=header.command, token=header.token,
                         seq=header.seq, send_ns=header.send_ns, stream_id=header.stream_id,
                         flags=header.flags)
    return echoed + reply_payload(header.command, len(request))


def command_name(command: int) -> str:
    for name, value in COMMANDS.items():
        if value == command:
            return name
    return f"command {command}"


# Engine counters: (enum prefix in ext/_wire.pxi, Python tuple, names), in
# index order. The compiled loops index their counters arrays by the enums
# rendered from here and export the tuples, and _fallback.py imports them, so
# a name and its index cannot drift apart. The RESP client's counters start
# with the sender's, which lets one meter type and one summary serve both.
SENDER_COUNTERS = (
    "sent", "sent_bytes", "send_calls", "eagain", "enobufs", "received", "received_bytes",
    "late", "duplicate", "bogus", "warmup_replies", "lost", "loss_episodes", "loss_max_run",
    "rcvbuf_drops", "lat_min_ns", "lat_max_ns", "actual_min_ns", "actual_max_ns", "lag_max_ns",
)
RESPONDER_COUNTERS = (
    "received", "received_bytes", "replied", "reply_bytes", "reply_eagain", "reply_errors",
    "warmup", "duplicate", "reordered", "stale", "seq_end", "rcvbuf_drops", "lost",
    "loss_episodes", "loss_max_run",
    "over_rate",  # valid datagrams past the step's rate and burst: neither answered nor counted
)
CLIENT_COUNTERS = SENDER_COUNTERS + ("written", "resp_errors", "window_waits", "recv_calls")
SERVER_COUNTERS = (
    "connections", "commands", "received_bytes", "replies", "reply_bytes", "unknown_commands",
    "protocol_errors", "peer_closed", "send_errors", "eagain",
    "throttled",  # times a connection's commands waited for the step's rate (not read meanwhile)
)
COUNTER_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("S", "SENDER_COUNTERS", SENDER_COUNTERS),
    ("R", "RESPONDER_COUNTERS", RESPONDER_COUNTERS),
    ("C", "CLIENT_COUNTERS", CLIENT_COUNTERS),
    ("V", "SERVER_COUNTERS", SERVER_COUNTERS),
)


def render_pxi() -> str:
    """ext/_wire.pxi: the header layout as Cython enums for the engine."""
    lines = [
        "# GENERATED by `python -m pktbench.wire --pxi > ext/_wire.pxi` from pktbench/wire.py.",
        "# Do not edit: change FIELDS or the counter tables in pktbench/wire.py and regenerate.",
        "",
        "cdef enum:",
        f"    WIRE_MAGIC = {MAGIC:#x}",
        f"    WIRE_VERSION = {VERSION}",
        f"    WIRE_HEADER_SIZE = {HEADER_SIZE}",
    ]
    lines += [f"    WIRE_OFF_{f.name.upper()} = {OFFSETS[f.name]}" for f in FIELDS]
    lines += [f"    WIRE_KIND_{name.upper()} = {value}" for name, value in KINDS.items()]
    lines += [f"    WIRE_COMMAND_{name.upper()} = {value}" for name, value in COMMANDS.items()]
    lines += [f"    WIRE_FLAG_{name.upper()} = {value:#x}" for name, value in FLAGS.items()]
    lines += [f"    WIRE_DROP_{name.upper()} = {i}" for i, name in enumerate(DROP_REASONS)]
    lines.append(f"    WIRE_DROP_REASONS = {len(DROP_REASONS)}")
    for prefix, tuple_name, names in COUNTER_TABLES:
        lines += ["", f"# {tuple_name}: index into the loop's counters array", "cdef enum:"]
        lines += [f"    {prefix}_{name.upper()}" for name in names]
        lines.append(f"    {prefix}_COUNTERS")
        lines += ["", f"{tuple_name} = ("]
        lines += [f"    \"{name}\"," for name in names]
        lines.append(")")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--pxi"]:
        sys.stdout.write(render_pxi())
    else:
        sys.exit("usage: python -m pktbench.wire --pxi > ext/_wire.pxi")
