"""Compare two results (A = before, B = after): did the path get better or worse?

Owns: `compare(a, b)`, a plain dict (JSON-ready) with the headline rates
(knee, last good, kneedle, NDR, PDR) and, at every offered rate both sweeps
ran, the received rate, loss and p50/p99 latency side by side with ratios
B/A and a word; `compare_bulk`, the same for two bulk tests (ceilings and
the aggregate bit/s of matching steps); and `compare_files`, either for two
result files.
pktbench.report.compare renders the dict.

Invariants: ratios are always B / A. Rates are "better" when higher,
latencies and loss when lower. A change within `tolerance` (default 5%) is
"same": repeated sweeps of one path differ by about that much. Repeats of a
rate are summarised by their median (results.RateGroup.spread).

Must not: rerun, re-judge or re-derive a knee; it only sets the two results'
own numbers side by side.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pktbench.errors import ConfigError
from pktbench.report._common import fmt_pps, is_number
from pktbench.results import RateGroup, SweepResult, load_result

# Two offered rates are "the same rate" when within this fraction (schedules
# round to whole pps, and a sweep may be re-run with a slightly edited list).
RATE_MATCH_TOLERANCE = 0.005

_HEADLINES = (
    ("knee_pps", "knee"),
    ("last_good_pps", "last good rate"),
    ("kneedle_pps", "kneedle estimate"),
    ("ndr_pps", "NDR"),
    ("pdr_pps", "PDR"),
)


def _verdict(a: Any, b: Any, higher_is_better: bool, tolerance: float) -> tuple[float | None, str]:
    if not (is_number(a) and is_number(b)):
        return None, "n/a"
    if a == 0:
        if b == 0:
            return None, "same"
        return None, "better" if (b > 0) == higher_is_better else "worse"
    ratio = b / a
    if abs(ratio - 1) <= tolerance:
        return ratio, "same"
    return ratio, "better" if (ratio > 1) == higher_is_better else "worse"


def _max_offered(result: SweepResult) -> float | None:
    rates = [s["offered_pps"] for s in result.steps if is_number(s.get("offered_pps"))]
    return max(rates) if rates else None


def _headline_values(result: SweepResult) -> dict[str, Any]:
    return {
        "knee_pps": result.knee_pps,
        "last_good_pps": result.last_good_pps,
        "kneedle_pps": result.kneedle_pps,
        "ndr_pps": result.ndr_pps,
        "pdr_pps": result.pdr_pps,
    }


def _max_judged(result: SweepResult) -> tuple[float | None, bool]:
    """(highest rate the path was judged at, whether the sender was bound above it)."""
    judged = [s["offered_pps"] for s in result.steps
              if is_number(s.get("offered_pps")) and not s.get("sender_bound")]
    bound = any(s.get("sender_bound") for s in result.steps)
    if not judged:
        return _max_offered(result), bound
    return max(judged), bound and any(s.get("sender_bound") and is_number(s.get("offered_pps"))
                                      and s["offered_pps"] > max(judged) for s in result.steps)


def _no_knee(label: str, result: SweepResult) -> tuple[float | None, str]:
    top, bound = _max_judged(result)
    words = f"{label} had no knee up to {fmt_pps(top)} pps"
    return top, words + (" (sender-bound above)" if bound else "")


def _knee_row(a: SweepResult, b: SweepResult, tolerance: float) -> tuple[float | None, str, str]:
    """The knee is special: "no knee" means "better than the highest rate judged".

    Sender-bound steps never count: a sweep whose sender could not reach a
    rate says nothing about the path there.
    """
    ka, kb = a.knee_pps, b.knee_pps
    if ka is not None and kb is not None:
        ratio, word = _verdict(ka, kb, True, tolerance)
        return ratio, word, ""
    if ka is None and kb is None:
        return None, "n/a", "neither sweep found a knee"
    if ka is None:
        max_a, words = _no_knee("A", a)
        if max_a is not None and kb is not None and kb <= max_a:
            return None, "worse", words
        return None, "n/a", words
    max_b, words = _no_knee("B", b)
    if max_b is not None and is_number(ka) and max_b >= ka:
        return None, "better", words
    return None, "n/a", words


def _median(group: RateGroup, *path: str) -> float | None:
    spread = group.spread(*path)
    return None if spread is None else spread.median


def _describe(result: SweepResult, label: str) -> dict[str, Any]:
    env = result.environment
    return {
        "label": label,
        "profile": result.config.get("profile"),
        "host": result.config.get("host"),
        "kernel": env.get("kernel"),
        "cpu": env.get("cpu"),
        "mtu": env.get("mtu"),
        "steps": len(result.steps),
    }


def compare(a: SweepResult, b: SweepResult, *, label_a: str = "A", label_b: str = "B",
            tolerance: float = 0.05) -> dict[str, Any]:
    """Set two sweeps side by side.

    Args:
        a: the baseline (e.g. the old environment).
        b: the candidate (e.g. the new environment).
        label_a, label_b: names shown in the table (e.g. the file names).
        tolerance: relative change treated as "same".

    Returns:
        {"a": {...}, "b": {...}, "tolerance": float,
         "summary": [{"metric", "name", "a", "b", "ratio", "verdict", "note"}],
         "rates": [{"offered_pps", "a_received_pps", "b_received_pps",
                    "a_loss_ratio", "b_loss_ratio", "a_p50_us", "b_p50_us",
                    "p50_ratio", "p50_verdict", "a_p99_us", "b_p99_us",
                    "p99_ratio", "p99_verdict"}]}

    Two bulk results compare by `compare_bulk` instead (the dict then has
    "kind" "bulk"); a rate sweep's dict has "kind" "sweep".

    Raises:
        ConfigError: one result is a rate sweep and the other a bulk test.
    """
    if a.kind != b.kind:
        raise ConfigError(f"{label_a} is a {_KIND_WORDS.get(a.kind, a.kind)} and {label_b} a "
                          f"{_KIND_WORDS.get(b.kind, b.kind)}: compare sets results of one kind "
                          "side by side (a sweep with a sweep, a bulk test with a bulk test)")
    if a.kind == "bulk":
        return compare_bulk(a, b, label_a=label_a, label_b=label_b, tolerance=tolerance)
    values_a, values_b = _headline_values(a), _headline_values(b)
    summary = []
    for metric, name in _HEADLINES:
        if metric == "knee_pps":
            ratio, word, note = _knee_row(a, b, tolerance)
        else:
            ratio, word = _verdict(values_a[metric], values_b[metric], True, tolerance)
            note = ""
        if values_a[metric] is None and values_b[metric] is None and metric != "knee_pps":
            continue
        summary.append({"metric": metric, "name": name, "a": values_a[metric],
                        "b": values_b[metric], "ratio": ratio, "verdict": word, "note": note})

    groups_b = b.rate_groups()
    rates = []
    for group_a in a.rate_groups():
        match = next((g for g in groups_b
                      if abs(g.offered_pps - group_a.offered_pps)
                      <= RATE_MATCH_TOLERANCE * group_a.offered_pps), None)
        if match is None:
            continue
        row: dict[str, Any] = {"offered_pps": group_a.offered_pps}
        row["a_received_pps"] = _median(group_a, "received_pps")
        row["b_received_pps"] = _median(match, "received_pps")
        row["a_loss_ratio"] = _median(group_a, "loss_ratio")
        row["b_loss_ratio"] = _median(match, "loss_ratio")
        for key in ("p50", "p99"):
            va, vb = _median(group_a, "latency_us", key), _median(match, "latency_us", key)
            ratio, word = _verdict(va, vb, False, tolerance)
            row[f"a_{key}_us"], row[f"b_{key}_us"] = va, vb
            row[f"{key}_ratio"], row[f"{key}_verdict"] = ratio, word
        rates.append(row)

    return {"kind": "sweep", "a": _describe(a, label_a), "b": _describe(b, label_b),
            "tolerance": tolerance, "summary": summary, "rates": rates}


_KIND_WORDS = {"sweep": "rate sweep", "bulk": "bulk test"}


def _bulk_describe(result: SweepResult, label: str) -> dict[str, Any]:
    env, config = result.environment, result.config
    return {
        "label": label,
        "transport": config.get("transport"),
        "direction": config.get("direction"),
        "host": result.target or config.get("host"),
        "kernel": env.get("kernel"),
        "cpu": env.get("cpu"),
        "mtu": env.get("mtu"),
        "steps": len(result.steps),
    }


def _bulk_key(step: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two bulk steps the same test: transport, direction, streams, offered rate."""
    offered: Any = step.get("offered_bps")
    return (step.get("transport"), step.get("direction"), step.get("streams_requested"),
            round(offered / 1e6) if is_number(offered) else None)


def _ceiling_value(result: SweepResult, key: str) -> Any:
    return (result.ceiling or {}).get(key)


_BULK_HEADLINES = (
    ("ceiling_goodput_bps", "goodput_bps", "ceiling (goodput)"),
    ("ceiling_wire_bps", "wire_bps", "ceiling (on the wire)"),
)


def compare_bulk(a: SweepResult, b: SweepResult, *, label_a: str = "A", label_b: str = "B",
                 tolerance: float = 0.05) -> dict[str, Any]:
    """Set two bulk tests side by side: ceilings, then step by step where both ran one.

    Steps match when transport, direction, stream count and offered rate (to
    the Mbit/s) agree. Throughput is better higher; retransmits and CPU
    lower.

    Returns:
        {"kind": "bulk", "a": {...}, "b": {...}, "tolerance": float,
         "summary": [{"metric", "name", "a", "b", "ratio", "verdict"}] (bit/s),
         "steps": [{"transport", "direction", "streams", "offered_bps",
                    "a_bps", "b_bps", "ratio", "verdict",
                    "a_retransmits", "b_retransmits",
                    "a_sender_cpu_percent", "b_sender_cpu_percent",
                    "a_loss_ratio", "b_loss_ratio"}]}

    Raises:
        ConfigError: either result is not a bulk test.
    """
    for result, label in ((a, label_a), (b, label_b)):
        if result.kind != "bulk":
            raise ConfigError(f"{label} is a {_KIND_WORDS.get(result.kind, result.kind)}, "
                              "not a bulk test")
    summary = []
    for metric, key, name in _BULK_HEADLINES:
        va, vb = _ceiling_value(a, key), _ceiling_value(b, key)
        ratio, word = _verdict(va, vb, True, tolerance)
        summary.append({"metric": metric, "name": name, "a": va, "b": vb, "ratio": ratio,
                        "verdict": word})
    steps_b = {_bulk_key(step): step for step in b.steps}
    steps = []
    for step_a in a.steps:
        step_b = steps_b.get(_bulk_key(step_a))
        if step_b is None:
            continue
        va, vb = step_a.get("aggregate_bps"), step_b.get("aggregate_bps")
        ratio, word = _verdict(va, vb, True, tolerance)
        steps.append({
            "transport": step_a.get("transport"), "direction": step_a.get("direction"),
            "streams": step_a.get("streams_requested"),
            "offered_bps": step_a.get("offered_bps"),
            "a_bps": va, "b_bps": vb, "ratio": ratio, "verdict": word,
            "a_retransmits": step_a.get("retransmits"),
            "b_retransmits": step_b.get("retransmits"),
            "a_sender_cpu_percent": step_a.get("sender_cpu_percent"),
            "b_sender_cpu_percent": step_b.get("sender_cpu_percent"),
            "a_loss_ratio": step_a.get("loss_ratio"), "b_loss_ratio": step_b.get("loss_ratio"),
        })
    return {"kind": "bulk", "a": _bulk_describe(a, label_a), "b": _bulk_describe(b, label_b),
            "tolerance": tolerance, "summary": summary, "steps": steps}


def compare_files(old: str | os.PathLike[str], new: str | os.PathLike[str], *,
                  tolerance: float = 0.05) -> dict[str, Any]:
    """`compare` of two result files, labelled with their file names (without suffix).

    Args:
        old: the baseline's JSON result file.
        new: the candidate's JSON result file.
        tolerance: relative change treated as "same".

    Returns:
        The comparison dict (see `compare`).

    Raises:
        ConfigError: a file cannot be read, is not a result, or the two are of
            different kinds (a sweep and a bulk test).
    """
    loaded = []
    for path in (old, new):
        try:
            result = load_result(path)
            compare(result, result)  # a file that cannot be set beside itself is malformed
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ConfigError(f"{path}: not a well-formed pktbench result "
                              f"({type(exc).__name__}: {exc})") from None
        loaded.append(result)
    return compare(loaded[0], loaded[1], label_a=Path(old).stem, label_b=Path(new).stem,
                   tolerance=tolerance)


__all__ = ["RATE_MATCH_TOLERANCE", "compare", "compare_bulk", "compare_files"]
