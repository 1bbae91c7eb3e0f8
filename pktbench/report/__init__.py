"""Reporters: turn a result into a table, JSON, CSV or a plot.

Owns: the explicit, read-only registry REPORTERS (result kind -> format ->
callable(result, target)), `write_report`, and `check_output_path`, which
the CLI calls for every output before a run starts so that a bad path fails
in a second, not after a long run.

Result kinds: "sweep" and "bulk" (pktbench.results.SweepResult, whose
`kind` says which), "run" (a one-step SweepResult shown as one step),
"validate" (ValidationReport), "decode" (DecodeResult), "testbed"
(api.TestbedStatus), "testbed-down" (api.TestbedRemoval), "probe"
(api.KernelProbe), "profiles" (a list of (name, description)) and
"compare" (the dict pktbench.comparison.compare gives for two sweeps).

Invariant: reporters compute nothing; every statistic comes with the result.
Must not: import matplotlib at import time (only the plot reporter does, when
called).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pktbench.errors import ConfigError
from pktbench.report._common import Target, check_output_path, open_text
from pktbench.report.bulk import bulk_step_line, render_bulk, write_bulk_table, write_bulk_wide
from pktbench.report.compare import (
    render_compare,
    write_compare,
    write_compare_table,
    write_compare_wide,
)
from pktbench.report.csvout import render_csv, write_csv
from pktbench.report.decode import (
    render_decode,
    write_decode_error,
    write_decode_json,
    write_decode_table,
    write_decode_wide,
)
from pktbench.report.jsonout import render_json, write_json
from pktbench.report.plot import write_plot
from pktbench.report.progress import Progress, step_line
from pktbench.report.table import (
    render_table,
    step_table,
    write_step_table,
    write_table,
    write_wide_table,
)
from pktbench.report.testbed import (
    render_testbed,
    write_probe_json,
    write_probe_table,
    write_removal_table,
    write_testbed_error,
    write_testbed_json,
    write_testbed_table,
)
from pktbench.report.text import listening_line, server_summary_line, write_profiles
from pktbench.report.validate import (
    render_validation,
    write_validation_error,
    write_validation_json,
    write_validation_table,
    write_validation_wide,
)

Reporter = Callable[[Any, Any], None]


def _run_table(result: Any, target: Target, wide: bool) -> None:
    from pktbench.report._common import wrap_line
    from pktbench.report.table import criteria_line

    words = criteria_line(getattr(result, "judgement", None), sweep=False,
                          requests="offered_rps" in result.steps[0])
    lines = ([words] if wide else wrap_line(words)) if words else []
    with open_text(target) as stream:
        stream.write(step_table(result.steps[0], wide=wide) + "".join(f"{line}\n" for line in lines)
                     + "\n")


def write_run_table(result: Any, target: Target) -> None:
    """Reporter ("run", "table"): the one step of a `pktbench run` result."""
    _run_table(result, target, wide=False)


def write_run_wide(result: Any, target: Target) -> None:
    """Reporter ("run", "wide"): the one step, nothing wrapped."""
    _run_table(result, target, wide=True)


def _frozen(table: Mapping[str, Mapping[str, Reporter]]
            ) -> Mapping[str, Mapping[str, Reporter]]:
    return MappingProxyType({kind: MappingProxyType(dict(formats))
                             for kind, formats in table.items()})


REPORTERS: Mapping[str, Mapping[str, Reporter]] = _frozen({
    "sweep": {"table": write_table, "wide": write_wide_table, "json": write_json,
              "csv": write_csv, "plot": write_plot},
    "bulk": {"table": write_bulk_table, "wide": write_bulk_wide, "json": write_json},
    "run": {"table": write_run_table, "wide": write_run_wide, "json": write_json},
    "validate": {"table": write_validation_table, "wide": write_validation_wide,
                 "json": write_validation_json},
    "decode": {"table": write_decode_table, "wide": write_decode_wide,
               "json": write_decode_json},
    "testbed": {"table": write_testbed_table, "json": write_testbed_json},
    "testbed-down": {"table": write_removal_table},
    "probe": {"table": write_probe_table, "json": write_probe_json},
    "profiles": {"table": write_profiles},
    "compare": {"table": write_compare_table, "wide": write_compare_wide,
                "json": write_compare},
})


def write_report(fmt: str, result: Any, target: Any, kind: str | None = None) -> None:
    """Write `result` in format `fmt` to a path, "-" or a stream.

    Args:
        fmt: "table", "wide" (every column, nothing wrapped; the table
            fits 100 columns), "json", "csv" or "plot", as the result kind offers.
        result: the result object.
        target: a path, "-" (standard output) or an open text stream.
        kind: the result kind (a REPORTERS key); default the result's own
            `kind` attribute (a SweepResult's "sweep" or "bulk").

    Raises:
        ConfigError: unknown kind or format, or the target cannot be written.
    """
    chosen = kind if kind is not None else getattr(result, "kind", None)
    formats = REPORTERS.get(chosen) if isinstance(chosen, str) else None
    if formats is None:
        raise ConfigError(f"no reporter for results of kind {chosen!r} "
                          f"(kinds: {', '.join(REPORTERS)})")
    reporter = formats.get(fmt)
    if reporter is None:
        raise ConfigError(f"unknown report format {fmt!r} for a {chosen} result "
                          f"(choose from {', '.join(formats)})")
    reporter(result, target)


__all__ = [
    "REPORTERS", "Progress", "bulk_step_line", "check_output_path",
    "listening_line", "render_bulk", "render_compare", "render_csv", "render_decode",
    "render_json", "render_table", "render_testbed", "render_validation",
    "server_summary_line", "step_line", "step_table", "write_bulk_table", "write_compare", "write_compare_table",
    "write_csv", "write_decode_error", "write_decode_json", "write_decode_table", "write_json",
    "write_plot", "write_probe_json", "write_probe_table", "write_profiles",
    "write_removal_table", "write_report", "write_run_table", "write_run_wide",
    "write_step_table", "write_bulk_wide", "write_compare_wide", "write_decode_wide",
    "write_validation_wide", "write_wide_table",
    "write_table", "write_testbed_error", "write_testbed_json", "write_testbed_table",
    "write_validation_error", "write_validation_json", "write_validation_table",
]
