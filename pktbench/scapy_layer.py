"""The pktbench data header as a scapy layer, for crafting and checking packets.

Owns: `PktbenchHeader` (the fixed header) and `PktbenchResp` (the RESP command
or reply after it), their binding to UDP on wire.DEFAULT_PORT, and a small
RESP framer (`resp_message_length`) used to split the RESP message from the
zero padding that follows it.

Invariants:
- The layout is read from pktbench/wire.py: `fields_desc` is built from
  wire.FIELDS (order, names, struct codes), the enum labels come from
  wire.KINDS and wire.COMMANDS, and the defaults come from the keyword
  defaults of wire.pack_header. Nothing here repeats a name, size or offset,
  so `raw(PktbenchHeader(...)) == wire.pack_header(...)` for the same fields.
- A struct code this module does not know fails at import, loudly, rather
  than producing a layer of the wrong size.

Must not: be imported by the CLI at start-up or by anything on the
packet-rate path. Importing scapy costs about half a second and scapy
sends only a few thousand packets per second; it is for crafting and
validation only. Import this module inside the functions that need it.

The payload is RESP, the Redis serialization protocol
(https://redis.io/docs/latest/develop/reference/protocol-spec/).
"""
from __future__ import annotations

import inspect
import struct
from collections.abc import Callable
from typing import Any

from scapy.config import conf
from scapy.fields import (
    ByteEnumField,
    ByteField,
    FlagsField,
    Field,
    IntEnumField,
    IntField,
    LongEnumField,
    LongField,
    ShortEnumField,
    ShortField,
    StrLenField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_bottom_up, bind_layers

from pktbench import wire

# struct code -> (plain field, enum field). Only unsigned codes: the header is
# made of counters and identifiers, and wire.numpy_dtype() maps these same codes.
# scapy types its enum fields apart from the plain ones; both are called alike here.
_FIELD_TYPES: dict[str, tuple[Callable[..., Field[Any, Any]], Callable[..., Field[Any, Any]]]] = {
    "B": (ByteField, ByteEnumField),
    "H": (ShortField, ShortEnumField),
    "I": (IntField, IntEnumField),
    "Q": (LongField, LongEnumField),
}

# Fields shown by label rather than number; the labels are wire's own tables.
_ENUMS: dict[str, dict[str, int]] = {"kind": wire.KINDS, "command": wire.COMMANDS}

# Defaults for the fields wire.pack_header requires. A header with command
# "none" is a one-way blast packet (see wire.build_request), so that is the
# kind a bare PktbenchHeader() gets.
_REQUIRED_DEFAULTS: dict[str, int] = {"kind": wire.KIND_BLAST}


def _field_defaults() -> dict[str, int]:
    defaults: dict[str, int] = {}
    for name, parameter in inspect.signature(wire.pack_header).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            defaults[name] = parameter.default
    return defaults


def fields_from_wire(fields: tuple[wire.Field, ...] = wire.FIELDS) -> list[Any]:
    """Build a scapy `fields_desc` from a wire field table.

    Args:
        fields: the field table; wire.FIELDS unless a test passes another.

    Returns:
        One scapy field per entry, in order.

    Raises:
        ValueError: a struct code has no scapy equivalent here.
    """
    defaults = _field_defaults()
    desc: list[Any] = []  # Packet.fields_desc is invariant over scapy's field container types
    for field in fields:
        try:
            plain, enum = _FIELD_TYPES[field.code]
        except KeyError:
            raise ValueError(
                f"wire field {field.name!r} uses struct code {field.code!r}, which "
                f"pktbench.scapy_layer cannot map; add it to _FIELD_TYPES"
            ) from None
        default = defaults.get(field.name, _REQUIRED_DEFAULTS.get(field.name, 0))
        labels = _ENUMS.get(field.name)
        if field.name == "flags":
            # Bit i is named by wire.FLAGS; unnamed bits show as their position.
            width = 8 * struct.calcsize("!" + field.code)
            names = [next((n for n, v in wire.FLAGS.items() if v == 1 << i), f"bit{i}")
                     for i in range(width)]
            desc.append(FlagsField(field.name, default, width, names))
        elif labels is None:
            desc.append(plain(field.name, default))
        else:
            desc.append(enum(field.name, default, {v: k for k, v in labels.items()}))
    return desc


class PktbenchHeader(Packet):  # type: ignore[misc]
    """The fixed pktbench header at the start of every data datagram.

    scapy's Packet already has a `command()` method, so `pkt.command` is that
    method, not the field: read the field with `pkt.getfieldval("command")`.
    Assigning (`pkt.command = 2`) and keyword construction work as usual.
    """

    name = "pktbench"
    fields_desc = fields_from_wire()

    def mysummary(self) -> str:
        return str(self.sprintf(
            "pktbench %PktbenchHeader.kind% %PktbenchHeader.command% "
            "stream=%PktbenchHeader.stream_id% seq=%PktbenchHeader.seq%"
        ))

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        # A "none" command carries only zero padding; every other command
        # starts with a RESP message.
        if self.getfieldval("command") != wire.COMMAND_NONE and payload:
            return PktbenchResp
        return conf.padding_layer  # type: ignore[no-any-return]


def resp_message_length(data: bytes) -> int:
    """Length of the one complete RESP message at the start of `data`.

    Understands the RESP2 types pktbench sends (arrays, bulk and simple
    strings, errors, integers), nested arrays included.

    Raises:
        ValueError: `data` does not start with a complete RESP message.
    """
    return _resp_end(bytes(data), 0, depth=0)


_RESP_MAX_DEPTH = 8  # our messages are one level deep; bounds recursion on hostile input


def _resp_line_end(data: bytes, start: int) -> int:
    end = data.find(b"\r\n", start)
    if end < 0:
        raise ValueError(f"RESP line at offset {start} has no CRLF")
    return end


def _resp_int(data: bytes, start: int, end: int) -> int:
    text = data[start:end]
    if not text or not text.lstrip(b"-").isdigit():
        raise ValueError(f"RESP length at offset {start} is not an integer: {text[:20]!r}")
    return int(text)


def _resp_end(data: bytes, start: int, *, depth: int) -> int:
    if depth > _RESP_MAX_DEPTH:
        raise ValueError(f"RESP arrays nested deeper than {_RESP_MAX_DEPTH}")
    if start >= len(data):
        raise ValueError(f"RESP message ends early at offset {start}")
    marker = data[start:start + 1]
    line_end = _resp_line_end(data, start + 1)
    if marker in (b"+", b"-", b":"):
        return line_end + 2
    if marker == b"$":
        length = _resp_int(data, start + 1, line_end)
        if length < 0:  # null bulk string
            return line_end + 2
        end = line_end + 2 + length
        if data[end:end + 2] != b"\r\n":
            raise ValueError(f"RESP bulk string at offset {start} is not {length} bytes + CRLF")
        return end + 2
    if marker == b"*":
        count = _resp_int(data, start + 1, line_end)
        position = line_end + 2
        for _ in range(max(count, 0)):
            position = _resp_end(data, position, depth=depth + 1)
        return position
    raise ValueError(f"RESP type byte {marker!r} at offset {start} is not one pktbench uses")


def _resp_or_all(data: bytes | None) -> int:
    data = data or b""
    try:
        return resp_message_length(data)
    except ValueError:
        return len(data)


class PktbenchResp(Packet):  # type: ignore[misc]
    """The RESP command (request) or reply (response) after the header.

    Dissection keeps exactly one RESP message in `resp`; the zero padding
    that brings a request to its datagram size becomes scapy Padding. Bytes
    that are not a complete RESP message stay whole in `resp`.
    """

    name = "pktbench RESP"
    fields_desc = [StrLenField("resp", b"", length_from=lambda pkt: _resp_or_all(pkt.original))]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return conf.padding_layer  # type: ignore[no-any-return]

    def mysummary(self) -> tuple[str, list[type[Packet]]]:  # type: ignore[override]
        lines = bytes(self.resp).split(b"\r\n")
        # A command is an array: show its verb (third line); a reply shows itself.
        text = lines[2] if lines[0].startswith(b"*") and len(lines) > 2 else lines[0]
        # scapy prints only the top summary unless a layer says it needs the
        # ones below: the header's kind, stream and seq matter more than RESP.
        return "RESP " + text[:32].decode("ascii", "replace"), [PktbenchHeader]


# Requests go to the server port; replies come back from it. Building
# UDP()/PktbenchHeader() fills in only dport (the request direction).
bind_bottom_up(UDP, PktbenchHeader, sport=wire.DEFAULT_PORT)
bind_layers(UDP, PktbenchHeader, dport=wire.DEFAULT_PORT)

# The name the project layout uses.
PktbenchHdr = PktbenchHeader

__all__ = ["PktbenchHeader", "PktbenchHdr", "PktbenchResp", "fields_from_wire",
           "resp_message_length"]
