"""The decode reporter: per-flow statistics of a capture and its totals line.

Owns: how a DecodeResult reads on a terminal and as JSON, including the JSON
document `pktbench decode --json` prints when the capture cannot be read.

Must not: count; every number comes with the result.
"""
from __future__ import annotations

import json
from typing import Any

from pktbench.report._common import Target, header, open_text, wrap_lines


def render_decode(result: Any, wide: bool = False) -> str:
    """The decode result as a table, one row per flow, plus a totals line.

    Args:
        result: a pktbench.decode.DecodeResult.
        wide: one line per flow with every column (default: source over
            destination, token, byte, duration and warm-up columns left to
            --wide and the JSON, so every line fits TABLE_WIDTH).

    Returns:
        The text, without a trailing newline.
    """
    from tabulate import tabulate

    from pktbench import wire

    # Measured and warm-up packets apart: the measured columns are what the
    # run's own counters report.
    if wide:
        rows = [[
            f"{f.src}:{f.src_port}", f"{f.dst}:{f.dst_port}", f.stream_id, f"{f.token:x}",
            f.kind, f.packets, f.payload_bytes,
            f"{f.size_min_bytes}" if f.size_min_bytes == f.size_max_bytes
            else f"{f.size_min_bytes}-{f.size_max_bytes}",
            f"{f.duration_s:.3f}", f"{f.rate_pps:.0f}", f.missing_packets, f.duplicate_packets,
            f.reordered_packets, f.warmup_packets,
        ] for f in result.flows]
        headers = ["source", "destination", "stream", "token", "kind", "packets",
                   "payload_bytes", "size_bytes", "duration_s", "rate_pps", "missing",
                   "duplicate", "reordered", "warm-up"]
    else:
        rows = [[
            f"{f.src}:{f.src_port}\n-> {f.dst}:{f.dst_port}", f.stream_id, f.kind, f.packets,
            f"{f.rate_pps:.0f}", f.missing_packets, f.duplicate_packets, f.reordered_packets,
        ] for f in result.flows]
        # warm-up packets are in the totals line below
        headers = [header("source", "-> destination"), header("stream"), header("kind"),
                   header("packets"), header("rate", "pps"), header("missing", "packets"),
                   header("duplicate", "packets"), header("reordered", "packets")]
    lines = [tabulate(rows, headers=headers, tablefmt="simple") if rows
             else "no pktbench packets found"]
    lines.append(
        f"{result.packets} packets: {result.pktbench_packets} pktbench "
        f"({result.pktbench_packets - result.warmup_packets} measured, "
        f"{result.warmup_packets} warm-up), "
        f"{result.other_udp_packets} other UDP, {result.non_udp_packets} not UDP, "
        f"{result.fragment_packets} fragments, {result.truncated_packets} truncated"
    )
    if result.malformed_blocks:
        lines.append(f"{result.malformed_blocks} malformed blocks skipped, not read "
                     f"(first: {result.first_malformed})")
    if result.version_mismatch_packets:
        lines.append(f"{result.version_mismatch_packets} packets carry pktbench's magic but not "
                     f"wire version {wire.VERSION}: decode them with the pktbench that sent them")
    return "\n".join(lines if wide else wrap_lines(lines))


def write_decode_table(result: Any, target: Target) -> None:
    """Reporter ("decode", "table")."""
    with open_text(target) as stream:
        stream.write(render_decode(result) + "\n")


def write_decode_wide(result: Any, target: Target) -> None:
    """Reporter ("decode", "wide"): every column, one line per flow."""
    with open_text(target) as stream:
        stream.write(render_decode(result, wide=True) + "\n")


def write_decode_json(result: Any, target: Target) -> None:
    """Reporter ("decode", "json"): `result.to_dict()`, indented."""
    with open_text(target) as stream:
        stream.write(json.dumps(result.to_dict(), indent=2) + "\n")


def write_decode_error(message: str, target: Target) -> None:
    """The one-line JSON document of a capture that could not be decoded."""
    from pktbench.decode import DECODE_SCHEMA_VERSION

    with open_text(target) as stream:
        stream.write(json.dumps({"schema_version": DECODE_SCHEMA_VERSION, "error": message})
                     + "\n")
