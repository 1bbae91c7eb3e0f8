"""The JSON reporter: the sweep document exactly as `SweepResult.to_dict` gives it.

Owns: serialising a result as strict JSON (schema_version first, keys with
units as the result carries them). Non-finite floats (NaN, inf) have no JSON
spelling, so they are written as null rather than producing a file that
strict parsers reject.

Must not: add, drop or recompute numbers; `load_result` of the output gives
back an equal SweepResult.
"""
from __future__ import annotations

import json
import math
from typing import Any

from pktbench.report._common import Target, open_text
from pktbench.results import SweepResult


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def render_json(result: SweepResult) -> str:
    return json.dumps(finite(result.to_dict()), indent=2, allow_nan=False) + "\n"


def write_json(result: SweepResult, target: Target) -> None:
    """Reporter "json": the sweep document to a stream, a path, or "-" (stdout)."""
    with open_text(target) as stream:
        stream.write(render_json(result))
