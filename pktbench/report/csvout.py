"""The CSV reporter: one row per step, nested keys flattened with dots.

Owns: the flattening (latency_us.p50, receiver.drops.bad_token, ...) and the
column order (the first step's keys in document order, then any key first
seen in a later step). Numbers are written with repr, so a float read back
equals the JSON value exactly; None is an empty cell, booleans are
true/false, the failures list is joined with "; ". The last column, `knee`,
is true on the knee step only.

Must not: compute or round anything.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from pktbench.report._common import Target, open_text
from pktbench.results import SweepResult


def flatten_step(step: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"latency_us": {"p50": 1.0}} -> {"latency_us.p50": 1.0}; a None dict stays one key."""
    flat: dict[str, Any] = {}
    for key, value in step.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_step(value, name + "."))
        else:
            flat[name] = value
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_columns(result: SweepResult) -> list[str]:
    columns: dict[str, None] = {}
    for step in result.steps:
        for key in flatten_step(step):
            columns.setdefault(key, None)
    # A dict that is None in one step (no latency for a blast step) and filled
    # in another would give both "latency_us" and "latency_us.p50": keep the leaves.
    return [c for c in columns if not any(o.startswith(c + ".") for o in columns)]


def render_csv(result: SweepResult) -> str:
    buffer = io.StringIO()
    _write(result, buffer)
    return buffer.getvalue()


# The last column: true on the step the knee finder named the knee (the
# first with its step_index), false on every other, so a spreadsheet can
# filter to it.
KNEE_COLUMN = "knee"


def _write(result: SweepResult, stream: Any) -> None:
    columns = csv_columns(result)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*columns, KNEE_COLUMN])
    knee_index = result.knee.get("step_index") if result.knee else None
    marked = False  # repeats of a rate share an index: the first is marked, as in the table
    for step in result.steps:
        flat = flatten_step(step)
        is_knee = not marked and knee_index is not None and step.get("index") == knee_index
        marked = marked or is_knee
        writer.writerow([*(_cell(flat.get(c)) for c in columns), _cell(is_knee)])


def write_csv(result: SweepResult, target: Target) -> None:
    """Reporter "csv": one row per step to a stream, a path, or "-" (stdout)."""
    with open_text(target, newline="") as stream:
        _write(result, stream)
