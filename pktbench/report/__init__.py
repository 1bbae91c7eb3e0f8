"""Reporters: turn a SweepResult into a table, JSON, CSV or a plot.

Owns: the explicit registry REPORTERS (name -> callable(result, target)),
`write_report`, and `check_output_path`, which the CLI calls for every
output before a sweep starts so that a bad path fails in a second, not after
a long run.

Invariant: reporters compute nothing; every statistic comes with the result.
Must not: import matplotlib at import time (only the plot reporter does, when
called).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pktbench.errors import ConfigError
from pktbench.report._common import check_output_path
from pktbench.report.compare import compare, render_compare, write_compare
from pktbench.report.csvout import render_csv, write_csv
from pktbench.report.jsonout import render_json, write_json
from pktbench.report.plot import write_plot
from pktbench.report.progress import Progress, step_line
from pktbench.report.table import render_table, step_table, write_step_table, write_table
from pktbench.results import SweepResult

Reporter = Callable[[SweepResult, Any], None]

REPORTERS: dict[str, Reporter] = {
    "table": write_table,
    "json": write_json,
    "csv": write_csv,
    "plot": write_plot,
}


def write_report(kind: str, result: SweepResult, target: Any) -> None:
    """Write `result` with the reporter named `kind` to a path, "-" or a stream.

    Raises:
        ConfigError: unknown reporter, or the target cannot be written.
    """
    reporter = REPORTERS.get(kind)
    if reporter is None:
        raise ConfigError(f"unknown report format {kind!r} (choose from {', '.join(REPORTERS)})")
    reporter(result, target)


__all__ = [
    "REPORTERS", "Progress", "check_output_path", "compare", "render_compare", "render_csv",
    "render_json", "render_table", "step_line", "step_table", "write_compare", "write_csv",
    "write_json", "write_plot", "write_report", "write_step_table", "write_table",
]
