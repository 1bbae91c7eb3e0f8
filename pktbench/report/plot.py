"""The plot reporter: delivered rate, loss and latency against the offered rate.

Owns: the sweep figure, two panels sharing a log x axis of offered packets/s:
- rates: the delivered (received) rate with the offered = delivered line, the
  loss in percent on a second y axis, sender-bound steps marked;
- latency: p50, p99 and p99.9 round trip (rr), or jitter (blast).
Repeats of a rate are drawn as their median with an error bar from the
lowest to the highest repeat. The knee, the last good rate, NDR and PDR are
vertical lines on both panels. The title names the profile, the path (target,
interface, MTU) and the date the run started. `compare --plot` overlays two
results on the same panels (`write_compare_plot`).

matplotlib is optional: it is imported inside the writers only, and its
absence is a ConfigError with the install hint. The figure is built with
matplotlib.figure.Figure directly, so no pyplot state or GUI backend is used.

Must not: compute statistics beyond the min/median/max of repeats that
results.RateGroup gives.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Union

from pktbench.errors import ConfigError
from pktbench.report._common import (
    MATPLOTLIB_HINT,
    PLOT_SUFFIXES,
    check_output_path,
    counts_requests,
    fmt_pps,
    is_number,
    received_label,
)
from pktbench.results import RateGroup, SweepResult, group_by_rate

PlotTarget = Union[str, "os.PathLike[str]", IO[bytes]]

# one colour per run in an overlay; the first run of a single plot takes the first
_RUN_COLOURS = ("tab:blue", "tab:orange")
_LATENCY_KEYS = (("p50", "o-"), ("p99", "s-"), ("p999", "^-"))
_MARKERS: tuple[tuple[str, str, str, Any], ...] = (  # (label, which rate, colour, line style)
    ("knee", "knee", "red", "--"),
    ("last good", "last_good", "green", ":"),
    ("NDR", "ndr", "purple", "-."),
    ("PDR", "pdr", "brown", (0, (5, 2, 1, 2))),
)


def _groups(result: SweepResult) -> list[RateGroup]:
    # search trials probe odd rates for NDR/PDR; they are drawn as those two lines
    return group_by_rate(s for s in result.steps
                         if not s.get("search_trial") and is_number(s.get("offered_pps")))


def _points(groups: Sequence[RateGroup], *path: str, scale: float = 1.0
            ) -> tuple[list[float], list[float], list[list[float]]]:
    """x, the median, and [below, above] error bar lengths (min and max of the repeats)."""
    xs: list[float] = []
    ys: list[float] = []
    err: list[list[float]] = [[], []]
    for group in groups:
        spread = group.spread(*path)
        if spread is None:
            continue
        xs.append(group.offered_pps)
        ys.append(spread.median * scale)
        err[0].append((spread.median - spread.min) * scale)
        err[1].append((spread.max - spread.median) * scale)
    return xs, ys, err


def _in_requests(results: Sequence[SweepResult]) -> bool:
    """Sweeps counted in requests (rr-tcp, redis://): rates are requests/s."""
    return all(r.steps and all(counts_requests(s) for s in r.steps) for r in results)


def _marker_rate(result: SweepResult, which: str) -> float | None:
    value: Any = {"knee": result.knee_pps, "last_good": result.last_good_pps,
                  "ndr": result.ndr_pps, "pdr": result.pdr_pps}[which]
    return float(value) if is_number(value) else None


def path_text(result: SweepResult) -> str:
    """Where the traffic went: target, interface and MTU, as the result records them."""
    host = result.config.get("host") or result.config.get("target") or "embedded server"
    env = result.environment
    text = f"to {host}"
    if env.get("interface"):
        text += f" via {env['interface']}"
    if env.get("mtu"):
        text += f", MTU {env['mtu']}"
    return text


def title_text(result: SweepResult) -> str:
    """Two lines: profile, workload and path; then the date and the host it ran on."""
    config, env = result.config, result.environment
    workload = str(config.get("workload") or "rr")
    what = workload + (f" {str(config['command']).upper()}"
                       if workload == "rr" and config.get("command") else "")
    if is_number(config.get("size_bytes")):
        what += f", {config['size_bytes']} B"
    date = str(env.get("started_utc") or "date not recorded").replace("T", " ")
    facts = ", ".join(str(env[k]) for k in ("kernel", "cpu") if env.get(k))
    return (f"{config.get('profile') or 'sweep'}: {what} {path_text(result)}\n"
            f"{date}" + (f" - {facts}" if facts else ""))


def _draw(result: SweepResult, axes: tuple[Any, Any, Any], colour: str, label: str,
          overlay: bool) -> None:
    """One result's curves on (rate, loss, latency) axes; `label` prefixes its legend.

    In an overlay the knee, last good, NDR and PDR lines take the run's colour
    (their line styles tell them apart); alone, each has a colour of its own.
    """
    rate_ax, loss_ax, latency_ax = axes
    workload = str(result.config.get("workload") or "rr")
    groups = _groups(result)
    prefix = f"{label}: " if label else ""
    requests = _in_requests([result])
    xs, ys, err = _points(groups, "received_pps")
    if xs:
        rate_ax.errorbar(xs, ys, yerr=err, marker="o", color=colour, capsize=3,
                         label=f"{prefix}answered in time, req/s" if requests
                         else f"{prefix}delivered ({received_label(workload)})")
    if requests:
        # what crossed the path, beside the requests answered: a packet limit shows here
        for key, marker, words in (("toward_server_pps", "s", "path toward server, pkt/s"),
                                   ("back_pps", "D", "path back, pkt/s")):
            xs, ys, err = _points(groups, "path", key)
            if xs:
                rate_ax.errorbar(xs, ys, yerr=err, marker=marker, linestyle="-.",
                                 color=colour, alpha=0.6, capsize=2, label=f"{prefix}{words}")
    bound = [(float(s["offered_pps"]), float(s["sent_pps"])) for s in result.steps
             if s.get("sender_bound") and is_number(s.get("sent_pps"))
             and is_number(s.get("offered_pps"))]
    if bound:
        rate_ax.plot([b[0] for b in bound], [b[1] for b in bound], linestyle="none",
                     marker="x", color="black", label=f"{prefix}sender-bound (sent)")
    xs, ys, err = _points(groups, "loss_ratio", scale=100.0)
    if xs:
        loss_ax.errorbar(xs, ys, yerr=err, marker="v", linestyle=":", color=colour,
                         alpha=0.8, capsize=2,
                         label=f"{prefix}{'late or unanswered' if requests else 'loss'} %")
    if workload == "rr":
        for key, style in _LATENCY_KEYS:
            xs, ys, err = _points(groups, "latency_us", key)
            if xs:
                name = "p99.9" if key == "p999" else key
                latency_ax.errorbar(xs, ys, yerr=err, fmt=style, color=colour, capsize=2,
                                    alpha=1.0 if key == "p99" else 0.6,
                                    label=f"{prefix}{name}")
    else:
        xs, ys, err = _points(groups, "jitter_us")
        if xs:
            latency_ax.errorbar(xs, ys, yerr=err, fmt="o-", color=colour, capsize=2,
                                label=f"{prefix}jitter")
    unit = "req/s" if requests else "pps"
    for name, which, line_colour, style in _MARKERS:
        rate = _marker_rate(result, which)
        if rate is None:
            continue
        for ax in (rate_ax, latency_ax):
            ax.axvline(rate, color=colour if overlay else line_colour, linestyle=style,
                       linewidth=1.2,
                       label=f"{prefix}{name} {fmt_pps(rate)} {unit}" if ax is rate_ax
                       else None)


def build_figure(results: Sequence[SweepResult], labels: Sequence[str] = ()) -> Any:
    """The figure (matplotlib.figure.Figure) of one result, or of several overlaid.

    Args:
        results: one sweep result, or two (`compare --plot`), drawn in turn.
        labels: the legend name of each result (default: none for one, A/B
            for two).

    Raises:
        ConfigError: matplotlib is missing, or a result is not a sweep.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter
    except ImportError:
        raise ConfigError(MATPLOTLIB_HINT) from None
    for result in results:
        if result.kind != "sweep":
            raise ConfigError(f"a plot draws sweep results; this is a {result.kind} result")
    names = list(labels) or ([""] if len(results) == 1 else
                             [chr(ord("A") + i) for i in range(len(results))])
    figure = Figure(figsize=(9, 8), layout="constrained")
    rate_ax, latency_ax = figure.subplots(2, 1, sharex=True)
    loss_ax = rate_ax.twinx()
    offered = sorted({g.offered_pps for r in results for g in _groups(r)})
    if offered:
        rate_ax.plot(offered, offered, linestyle="--", color="grey", linewidth=1,
                     label="delivered = offered")
    for index, result in enumerate(results):
        _draw(result, (rate_ax, loss_ax, latency_ax), _RUN_COLOURS[index % 2], names[index],
              overlay=len(results) > 1)
    what = "requests" if _in_requests(results) else "packets"
    rate_ax.set_ylabel("answered req/s; path pkt/s" if what == "requests"
                       else "delivered rate (packets per second)")
    rate_ax.set_yscale("log")
    loss_ax.set_ylabel("late or unanswered (%)" if what == "requests" else "loss (%)")
    loss_ax.set_ylim(bottom=0)
    workload = str(results[0].config.get("workload") or "rr") if results else "rr"
    latency_ax.set_ylabel("round-trip latency (us)" if workload == "rr" else "jitter (us)")
    if any(latency_ax.get_lines()):
        latency_ax.set_yscale("log")
    for ax in (rate_ax, latency_ax):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    handles, texts = rate_ax.get_legend_handles_labels()
    more_handles, more_texts = loss_ax.get_legend_handles_labels()
    if handles or more_handles:
        rate_ax.legend(handles + more_handles, texts + more_texts, loc="best",
                       fontsize="small" if len(results) == 1 else "x-small")
    if latency_ax.get_legend_handles_labels()[0]:
        latency_ax.legend(loc="best", fontsize="small" if len(results) == 1 else "x-small")
    if offered:
        # Label a handful of the rates actually run rather than powers of ten.
        every = max(1, -(-len(offered) // 8))
        ticks = offered[::every]
        latency_ax.set_xticks(ticks, [fmt_pps(t) for t in ticks], rotation=30)
        latency_ax.xaxis.set_minor_formatter(NullFormatter())
    latency_ax.set_xlabel(f"offered rate ({what} per second)")
    if len(results) == 1:
        figure.suptitle(title_text(results[0]), fontsize="medium")
    else:
        figure.suptitle("\n".join(f"{name}: {title_text(r).splitlines()[0]} "
                                  f"({title_text(r).splitlines()[1].split(' - ')[0]})"
                                  for name, r in zip(names, results)), fontsize="small")
    return figure


def _format(target: PlotTarget, image_format: str | None) -> str:
    if isinstance(target, (str, os.PathLike)):
        check_output_path(target, "plot")
        image_format = Path(target).suffix.lower().lstrip(".")
    elif image_format is None:
        image_format = "png"
    if f".{image_format}" not in PLOT_SUFFIXES:
        raise ConfigError(f"plot format must be png or svg (got {image_format!r})")
    return image_format


def write_plot(result: SweepResult, target: PlotTarget, image_format: str | None = None) -> None:
    """Reporter "plot": save the figure to a .png/.svg path (or a binary stream).

    Raises:
        ConfigError: matplotlib missing, or the path is not .png/.svg or not writable.
    """
    image_format = _format(target, image_format)
    build_figure([result]).savefig(target, format=image_format)


def write_compare_plot(old: SweepResult, new: SweepResult, target: PlotTarget,
                       labels: Sequence[str] = ("A", "B"),
                       image_format: str | None = None) -> None:
    """Two sweeps overlaid on the same panels, A and B as `compare` names them.

    Raises:
        ConfigError: matplotlib missing, a bad path, or a result that is not a sweep.
    """
    image_format = _format(target, image_format)
    build_figure([old, new], labels).savefig(target, format=image_format)
