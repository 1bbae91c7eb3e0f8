"""Shared plumbing of the reporters: output targets and number formatting.

Owns: checking an output path before a run, opening a path-or-stream target,
and the one way each kind of number is printed (pps, microseconds, loss
percent, Mbit/s), so the table, the comparison and the progress lines agree.

Must not: compute statistics or judge steps; it only formats what it is given.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Union

from pktbench.errors import ConfigError

Target = Union[str, "os.PathLike[str]", IO[str]]

PLOT_SUFFIXES = (".png", ".svg")
MATPLOTLIB_HINT = "plotting needs matplotlib: pip install 'pktbench[plot]'"


def check_output_path(path: str | os.PathLike[str], kind: str | None = None) -> Path | None:
    """Fail before a run, not after it, when an output cannot be written.

    Args:
        path: where a report will go; "-" means standard output (not for plots).
        kind: the reporter ("table", "json", "csv", "plot"); "plot" also
            checks the file extension and that matplotlib is importable.

    Returns:
        The path, or None for "-".

    Raises:
        ConfigError: the directory does not exist or is not writable, the path
            is a directory or a read-only file, or the plot cannot be made.
    """
    if str(path) == "-":
        if kind == "plot":
            raise ConfigError("a plot cannot go to standard output: give a .png or .svg path")
        return None
    target = Path(path)
    if kind == "plot":
        if target.suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(f"plot path {target} must end in .png or .svg "
                              f"(got {target.suffix or 'no extension'!r})")
        if importlib.util.find_spec("matplotlib") is None:
            raise ConfigError(MATPLOTLIB_HINT)
    if target.is_dir():
        raise ConfigError(f"output path {target} is a directory: give a file name")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigError(f"output directory {directory} does not exist: create it or "
                          "choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {directory} is not writable: choose another path")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"output file {target} is not writable: choose another path")
    return target


@contextlib.contextmanager
def open_text(target: Target, newline: str | None = None) -> Iterator[IO[str]]:
    """A writable text stream for a path, "-" (stdout) or an open stream (left open)."""
    if isinstance(target, (str, os.PathLike)):
        if str(target) == "-":
            yield sys.stdout
            return
        check_output_path(target)
        with open(target, "w", encoding="utf-8", newline=newline) as handle:
            yield handle
    else:
        yield target


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def fmt_pps(value: Any) -> str:
    if not is_number(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def fmt_us(value: Any) -> str:
    if not is_number(value):
        return "-"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_loss_percent(ratio: Any) -> str:
    """A loss ratio as percent; small losses keep enough digits to be seen."""
    if not is_number(ratio):
        return "-"
    percent = ratio * 100
    if percent == 0:
        return "0"
    if abs(percent) < 0.01:
        return f"{percent:.4f}"
    if abs(percent) < 10:
        return f"{percent:.2f}"
    return f"{percent:.1f}"


def fmt_mbit(value: Any) -> str:
    """A rate in bit/s (a `_bps` key) written in Mbit/s."""
    if not is_number(value):
        return "-"
    value = value / 1e6
    if abs(value) < 10:
        return f"{value:.3f}"
    if abs(value) < 1000:
        return f"{value:.2f}"
    return f"{value:,.1f}"


# A terminal's width that every table fits by default; --wide lifts it.
TABLE_WIDTH = 100


def wrap_line(line: str, width: int = TABLE_WIDTH, indent: str = "  ") -> list[str]:
    """A prose line broken at spaces to fit `width`, continuations indented."""
    if len(line) <= width:
        return [line]
    lead = line[:len(line) - len(line.lstrip())]
    return textwrap.wrap(line, width=width, initial_indent="", subsequent_indent=lead + indent,
                         break_long_words=False, break_on_hyphens=False) or [line]


def wrap_lines(lines: list[str], width: int = TABLE_WIDTH) -> list[str]:
    """Each prose line wrapped; a block of several lines (a table) is left as it is."""
    return [part for line in lines
            for part in ([line] if "\n" in line else wrap_line(line, width))]


def header(name: str, unit: str = "") -> str:
    """A two-line column header: the name above its unit (bottom-aligned when unitless)."""
    return f"{name}\n{unit}" if unit else f"\n{name}"


class Footnotes:
    """Long texts of table cells, numbered once each and listed under the table."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self, width: int = TABLE_WIDTH) -> list[str]:
        out: list[str] = []
        for number, text in enumerate(self.texts, 1):
            label = f"[{number}] "
            out += textwrap.wrap(text, width=width, initial_indent=label,
                                 subsequent_indent=" " * len(label),
                                 break_long_words=False, break_on_hyphens=False) or [label]
        return out


def fmt_ratio(value: Any) -> str:
    return f"{value:.2f}x" if is_number(value) else "-"


def received_label(workload: Any) -> str:
    """rr counts completed request/response pairs; blast counts datagrams."""
    return "responses" if workload == "rr" else "received"


_ATTRIBUTION_WORDS = {"receiver-reassembly-failed": "receiving host: IP reassembly failed",
                      "late": "mostly late: TCP delivered them after the timeout",
                      "unanswered": "mostly unanswered: no reply by the end of the drain",
                      "server-error": "mostly RESP error replies"}


def counts_requests(step: Mapping[str, Any]) -> bool:
    """A step counted in requests (rr-tcp, redis://): see step.counts_requests."""
    return "offered_rps" in step


def fmt_path(path: Any, *, offered: bool = False) -> str:
    """'5,204 pkt/s toward server, 5,204 back, 0 retransmits' ('-' when unknown).

    `offered` adds what the schedule asked the path to carry toward the
    server, which TCP falls below once a policer drops and it stalls.
    """
    if not isinstance(path, Mapping) or not is_number(path.get("toward_server_pps")):
        return "-"
    text = f"{fmt_pps(path['toward_server_pps'])} pkt/s toward server"
    if offered and is_number(path.get("offered_toward_server_pps")):
        text += (f" (offered {fmt_pps(path['offered_toward_server_pps'])} at "
                 f"{path.get('packets_per_request', 0):.2f} packets a request)")
    retransmits = path.get("retransmits") or 0
    return (text + f", {fmt_pps(path.get('back_pps'))} back, {retransmits:,} retransmit"
            + ("" if retransmits == 1 else "s"))


def failure_reason(step: Mapping[str, Any]) -> str | None:
    """The failed criteria of a step in words, with where the loss went; None if it passed."""
    failures = step.get("failures") or []
    if step.get("sender_bound") or not failures:
        return None
    text = "; ".join(str(f) for f in failures)
    attribution = step.get("attribution")
    if attribution and attribution not in ("ok", "sender-bound"):
        text += f" ({_ATTRIBUTION_WORDS.get(attribution, attribution)})"
    return text


def step_verdict(step: Mapping[str, Any], notes: Footnotes | None = None) -> str:
    """ok / sender-bound / FAIL with the failed criteria in words (or a footnote mark)."""
    if step.get("sender_bound"):
        return "sender-bound"
    reason = failure_reason(step)
    if reason is None:
        return "ok"
    return "FAIL " + (notes.mark(reason) if notes is not None else reason)
