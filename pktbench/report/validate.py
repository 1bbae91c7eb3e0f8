"""The validate reporter: one row per crafted case and the verdict line.

Owns: how a ValidationReport reads on a terminal and as JSON, including the
JSON document `pktbench validate --json` writes when the run could not start.

Must not: judge cases; pass, fail and skip come with the report.
"""
from __future__ import annotations

import json
from typing import Any

from pktbench.report._common import Target, open_text, wrap_line


def render_validation(report: Any, wide: bool = False) -> str:
    """The report as a table (case, expected, observed, result) with a verdict line.

    Args:
        report: a pktbench.validate.ValidationReport.
        wide: wrap the text columns wider (default: every line fits TABLE_WIDTH).

    Returns:
        The text, without a trailing newline.
    """
    from tabulate import tabulate

    rows = [(c.name, c.expected, c.observed, c.status) for c in report.cases]
    table = tabulate(rows, headers=("case", "expected", "observed", "result"),
                     maxcolwidths=[None, 34, 60, None] if wide else [None, 24, 36, None])
    failed, skipped = len(report.failures), len(report.skipped)
    passed = len(report.cases) - failed - skipped
    verdict = (f"{report.target} ({report.server}): {passed} passed, {failed} failed, "
               f"{skipped} skipped")
    if skipped:
        reasons = sorted({c.observed.removeprefix("skipped (").removesuffix(")")
                          for c in report.skipped})
        verdict += f" ({'; '.join(reasons)}: not passed, not failed)"
    return table + "\n" + "\n".join([verdict] if wide else wrap_line(verdict))


def write_validation_table(report: Any, target: Target) -> None:
    """Reporter ("validate", "table")."""
    with open_text(target) as stream:
        stream.write(render_validation(report) + "\n")


def write_validation_wide(report: Any, target: Target) -> None:
    """Reporter ("validate", "wide"): the text columns wrapped wider."""
    with open_text(target) as stream:
        stream.write(render_validation(report, wide=True) + "\n")


def write_validation_json(report: Any, target: Target) -> None:
    """Reporter ("validate", "json"): `report.to_dict()`, indented."""
    with open_text(target) as stream:
        stream.write(json.dumps(report.to_dict(), indent=2) + "\n")


def write_validation_error(target_label: str | None, message: str, target: Target) -> None:
    """The JSON document of a run that could not start, so --json output stays one document."""
    from pktbench.validate import VALIDATE_SCHEMA_VERSION

    document = {"schema_version": VALIDATE_SCHEMA_VERSION, "target": target_label,
                "ok": False, "error": message}
    with open_text(target) as stream:
        stream.write(json.dumps(document, indent=2) + "\n")
