"""The compare reporter: two sweeps side by side as text, or the comparison as JSON.

Owns: `render_compare`, the text table of the dict pktbench.comparison.compare
gives, and the two reporters of result kind "compare".

Must not: compare; every ratio and verdict comes with the comparison.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from pktbench.report._common import (
    Footnotes,
    Target,
    fmt_loss_percent,
    fmt_pps,
    fmt_ratio,
    fmt_us,
    header,
    is_number,
    open_text,
    wrap_lines,
)


def _cell_pps(value: Any) -> str:
    return f"{fmt_pps(value)} pps" if is_number(value) else "none"


def _rate_table(comparison: Mapping[str, Any], wide: bool) -> str:
    """Rate by rate; the default leaves out the p50 columns to fit TABLE_WIDTH."""
    la, lb = comparison["a"]["label"], comparison["b"]["label"]
    rate_rows = []
    for row in comparison["rates"]:
        cells = [fmt_pps(row["offered_pps"]),
                 fmt_pps(row["a_received_pps"]), fmt_pps(row["b_received_pps"]),
                 fmt_loss_percent(row["a_loss_ratio"]), fmt_loss_percent(row["b_loss_ratio"])]
        if wide:
            cells += [fmt_us(row["a_p50_us"]), fmt_us(row["b_p50_us"]),
                      fmt_ratio(row["p50_ratio"]), row["p50_verdict"]]
        cells += [fmt_us(row["a_p99_us"]), fmt_us(row["b_p99_us"]),
                  fmt_ratio(row["p99_ratio"]), row["p99_verdict"]]
        rate_rows.append(cells)
    if wide:
        headers = ["offered pps", f"{la} recv pps", f"{lb} recv pps", f"{la} loss %",
                   f"{lb} loss %", f"{la} p50 us", f"{lb} p50 us", "p50 B/A", "p50",
                   f"{la} p99 us", f"{lb} p99 us", "p99 B/A", "p99"]
        align: tuple[str, ...] = ("right",) * 8 + ("left",) + ("right",) * 3 + ("left",)
    else:
        # A and B, not the labels, which can be long file names
        headers = [header("offered", "pps"), header("A recv", "pps"), header("B recv", "pps"),
                   header("A loss", "%"), header("B loss", "%"), header("A p99", "us"),
                   header("B p99", "us"), header("p99", "B/A"), header("p99", "B is")]
        align = ("right",) * 8 + ("left",)
    return tabulate(rate_rows, headers=headers, tablefmt="simple", disable_numparse=True,
                    colalign=align)


def _gbit(value: Any) -> str:
    return f"{value / 1e9:.3f}" if is_number(value) else "-"


def _cell_gbit(value: Any) -> str:
    return f"{_gbit(value)} Gbit/s" if is_number(value) else "none"


def _plain(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else (
        "-" if value is None else str(value))


def render_bulk_compare(comparison: Mapping[str, Any], wide: bool = False) -> str:
    """Two bulk tests as text: who is A and B, the ceilings, then step by step.

    Prose lines wrap at TABLE_WIDTH unless `wide`.
    """
    a, b = comparison["a"], comparison["b"]
    lines = []
    for side in (a, b):
        how = " ".join(str(side[k]) for k in ("transport", "direction") if side.get(k))
        facts = ", ".join(str(side[k]) for k in ("host", "kernel") if side.get(k))
        mtu = f", MTU {side['mtu']}" if side.get("mtu") else ""
        lines.append(f"{side['label']}: {how}, {facts}{mtu} ({side['steps']} steps)")
    lines.append("")
    rows = [[row["name"], _cell_gbit(row["a"]), _cell_gbit(row["b"]), fmt_ratio(row["ratio"]),
             row["verdict"]] for row in comparison["summary"]]
    lines.append(tabulate(rows, headers=["", a["label"], b["label"], "B/A", "B is"],
                          tablefmt="simple", disable_numparse=True,
                          colalign=("left", "right", "right", "right", "left")))
    if comparison["steps"]:
        lines += ["", "at the steps both ran (same transport, direction, streams, offered rate):"]
        step_rows = [[row["streams"], _gbit(row["offered_bps"]), _gbit(row["a_bps"]),
                      _gbit(row["b_bps"]), fmt_ratio(row["ratio"]), row["verdict"],
                      f"{_plain(row['a_retransmits'])}, {_plain(row['b_retransmits'])}",
                      f"{_plain(row['a_sender_cpu_percent'])}, "
                      f"{_plain(row['b_sender_cpu_percent'])}"]
                     for row in comparison["steps"]]
        headers = ["streams", "offered Gbit/s", "A Gbit/s", "B Gbit/s", "B/A", "B is",
                   "retrans A, B", "CPU % A, B"]
        lines.append(tabulate(step_rows, headers=headers, tablefmt="simple",
                              disable_numparse=True,
                              colalign=("right",) * 5 + ("left",) + ("right",) * 2))
    else:
        lines += ["", "the two tests share no step: no step-by-step comparison"]
    tolerance = comparison.get("tolerance")
    if isinstance(tolerance, (int, float)):
        lines += ["", f"changes within {tolerance * 100:g}% count as same; "
                      "throughput: higher is better"]
    return "\n".join(lines if wide else wrap_lines(lines)) + "\n"


def render_compare(comparison: Mapping[str, Any], wide: bool = False) -> str:
    """The comparison as text: who is A and B, the headline rates, then rate by rate.

    By default every line fits TABLE_WIDTH; `wide` adds the p50 columns.
    """
    if comparison.get("kind") == "bulk":
        return render_bulk_compare(comparison, wide)
    a, b = comparison["a"], comparison["b"]
    lines = []
    for side in (a, b):
        facts = ", ".join(str(side[k]) for k in ("profile", "host", "kernel", "cpu")
                          if side.get(k))
        mtu = f", MTU {side['mtu']}" if side.get("mtu") else ""
        lines.append(f"{side['label']}: {facts}{mtu} ({side['steps']} steps)")
    lines.append("")
    notes = Footnotes()  # a verdict's note goes under the table, unless --wide

    def verdict(row: Mapping[str, Any]) -> str:
        if not row.get("note"):
            return str(row["verdict"])
        return f"{row['verdict']} " + (f"({row['note']})" if wide else notes.mark(row["note"]))

    rows = [[row["name"], _cell_pps(row["a"]), _cell_pps(row["b"]), fmt_ratio(row["ratio"]),
             verdict(row)] for row in comparison["summary"]]
    lines.append(tabulate(rows, headers=["", a["label"], b["label"], "B/A", "B is"],
                          tablefmt="simple", disable_numparse=True,
                          colalign=("left", "right", "right", "right", "left")))
    lines += notes.lines()
    if comparison["rates"]:
        lines += ["", "at the offered rates both sweeps ran (medians of repeats"
                  + ("):" if wide else f"; A: {a['label']}, B: {b['label']}):")]
        lines.append(_rate_table(comparison, wide))
    else:
        lines += ["", "the two sweeps share no offered rate: no per-rate comparison"]
    tolerance = comparison.get("tolerance")
    if isinstance(tolerance, (int, float)):
        lines += ["", f"changes within {tolerance * 100:g}% count as same; "
                      "rates: higher is better, latency and loss: lower is better"]
    return "\n".join(lines if wide else wrap_lines(lines)) + "\n"


def write_compare_wide(comparison: Mapping[str, Any], target: Target) -> None:
    """Reporter ("compare", "wide"): every column."""
    with open_text(target) as stream:
        stream.write(render_compare(comparison, wide=True) + "\n")


def write_compare_table(comparison: Mapping[str, Any], target: Target) -> None:
    """Reporter ("compare", "table"): `render_compare` and a newline."""
    with open_text(target) as stream:
        stream.write(render_compare(comparison) + "\n")


def write_compare(comparison: Mapping[str, Any], target: Target) -> None:
    """Reporter ("compare", "json"): the comparison document, as `compare --json` promises."""
    from pktbench.report.jsonout import finite

    with open_text(target) as stream:
        stream.write(json.dumps(finite(dict(comparison)), indent=2, allow_nan=False) + "\n")
