"""The plot reporter: received rate and latency against offered rate.

Owns: a two-panel figure (received vs offered with the ideal line; p50/p99
latency, or jitter for blast, vs offered), log x, the knee and last good rate
marked, saved as PNG or SVG by the file's extension.

matplotlib is optional: it is imported inside `write_plot` only, and its
absence is a ConfigError with the install hint. The figure is built with
matplotlib.figure.Figure directly, so no pyplot state or GUI backend is used.

Must not: compute statistics (it plots the step values as they are).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Union

from pktbench.errors import ConfigError
from pktbench.report._common import (
    MATPLOTLIB_HINT,
    PLOT_SUFFIXES,
    check_output_path,
    fmt_pps,
    is_number,
    received_label,
)
from pktbench.results import SweepResult

PlotTarget = Union[str, "os.PathLike[str]", IO[bytes]]


def _series(result: SweepResult, *path: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for step in result.steps:
        value: Any = step
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if is_number(value) and is_number(step.get("offered_pps")):
            xs.append(float(step["offered_pps"]))
            ys.append(float(value))
    return xs, ys


def write_plot(result: SweepResult, target: PlotTarget, image_format: str | None = None) -> None:
    """Reporter "plot": save the figure to a .png/.svg path (or a binary stream).

    Raises:
        ConfigError: matplotlib missing, or the path is not .png/.svg or not writable.
    """
    if isinstance(target, (str, os.PathLike)):
        check_output_path(target, "plot")
        image_format = Path(target).suffix.lower().lstrip(".")
    elif image_format is None:
        image_format = "png"
    if f".{image_format}" not in PLOT_SUFFIXES:
        raise ConfigError(f"plot format must be png or svg (got {image_format!r})")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(MATPLOTLIB_HINT) from None

    workload = str(result.config.get("workload") or "rr")
    figure = Figure(figsize=(8, 7), layout="constrained")
    rate_ax, latency_ax = figure.subplots(2, 1, sharex=True)

    offered = sorted({float(s["offered_pps"]) for s in result.steps
                      if is_number(s.get("offered_pps"))})
    if offered:
        rate_ax.plot(offered, offered, linestyle="--", color="grey", linewidth=1,
                     label="offered")
    xs, ys = _series(result, "received_pps")
    rate_ax.plot(xs, ys, marker="o", label=f"{received_label(workload)}")
    bound = [(float(s["offered_pps"]), float(s["sent_pps"])) for s in result.steps
             if s.get("sender_bound") and is_number(s.get("sent_pps"))]
    if bound:
        rate_ax.plot([b[0] for b in bound], [b[1] for b in bound], linestyle="none",
                     marker="x", color="black", label="sender-bound (sent)")
    rate_ax.set_ylabel("packets per second")
    rate_ax.set_yscale("log")

    if workload == "rr":
        for key, style in (("p50", "o-"), ("p99", "s-")):
            xs, ys = _series(result, "latency_us", key)
            if xs:
                latency_ax.plot(xs, ys, style, label=f"{key} latency")
        latency_ax.set_ylabel("round-trip latency (us)")
    else:
        xs, ys = _series(result, "jitter_us")
        if xs:
            latency_ax.plot(xs, ys, "o-", label="jitter")
        latency_ax.set_ylabel("jitter (us)")
    if any(latency_ax.get_lines()):
        latency_ax.set_yscale("log")

    for ax in (rate_ax, latency_ax):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if result.knee and is_number(result.knee.get("offered_pps")):
            ax.axvline(result.knee["offered_pps"], color="red", linestyle="--",
                       label=f"knee {fmt_pps(result.knee['offered_pps'])} pps")
        if result.knee and is_number(result.knee.get("last_good_pps")):
            ax.axvline(result.knee["last_good_pps"], color="green", linestyle=":",
                       label=f"last good {fmt_pps(result.knee['last_good_pps'])} pps")
        if ax.get_lines():
            ax.legend(loc="best", fontsize="small")
    if offered:
        # Label a handful of the rates actually run rather than powers of ten.
        every = max(1, -(-len(offered) // 8))
        ticks = offered[::every]
        from matplotlib.ticker import NullFormatter

        latency_ax.set_xticks(ticks, [fmt_pps(t) for t in ticks], rotation=30)
        latency_ax.xaxis.set_minor_formatter(NullFormatter())
    latency_ax.set_xlabel("offered rate (packets per second)")
    title = str(result.config.get("profile") or "sweep")
    if result.config.get("host"):
        title += f" -> {result.config['host']}"
    figure.suptitle(title)
    figure.savefig(target, format=image_format)
