"""Fleet reports: the knee matrix, host and outlier tables, heatmap, comparison.

Owns: text rendering of a fleet document (sources as rows, destinations as
columns, paged so no line is wider than `width`), the heatmap PNG, and
`compare_fleets` (old vs new per pair and per host).

Invariant: computes nothing the fleet document does not hold, except the
old/new ratios of a comparison. Must not import matplotlib until a heatmap
is asked for.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pktbench.errors import ConfigError

CELL = 7


def _k(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def cell(pair: Mapping[str, Any] | None) -> str:
    """A matrix cell: the knee, '>X' (no knee up to X), or why there is no figure."""
    if pair is None:
        return ""
    status = pair.get("status")
    if status == "unreachable":
        return "unreach"
    if status != "ok":
        return "failed"
    if pair.get("knee_pps") is not None:
        return _k(pair["knee_pps"])
    return ">" + _k(pair.get("max_offered_pps"))


def render_matrix(doc: Mapping[str, Any], width: int = 100) -> str:
    """Knee matrix (rows: source, columns: destination), paged to `width` columns."""
    names = [h["name"] for h in doc["hosts"]]
    by_pair = {(p["src"], p["dst"]): p for p in doc["pairs"]}
    label = max([len("src \\ dst"), *(len(n) for n in names)])
    per_page = max(1, (width - label - 1) // (CELL + 1))
    pages = []
    for start in range(0, len(names), per_page):
        cols = names[start:start + per_page]
        head = "src \\ dst".ljust(label) + "".join(" " + c[:CELL].rjust(CELL) for c in cols)
        lines = [head, "-" * len(head)]
        for src in names:
            row = src.ljust(label)
            for dst in cols:
                text = "." if src == dst else cell(by_pair.get((src, dst)))
                row += " " + text[:CELL].rjust(CELL)
            lines.append(row)
        if len(names) > per_page:
            lines.insert(0, f"destinations {start + 1}-{start + len(cols)} of {len(names)}")
        pages.append("\n".join(lines))
    legend = ("knee pps per path (source row -> destination column); '>X': no knee up to X; "
              "unreach: a host failed preflight")
    return "\n\n".join(pages) + "\n" + legend


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_fan(doc: Mapping[str, Any], width: int = 100) -> str:
    """--to/--from: the aggregate per step, each path's received rate per step, the clocks."""
    fan = doc["fan"]
    hub, into = fan["hub"], fan["direction"] == "to"
    steps = fan.get("steps") or []
    head = (f"fan-{'in' if into else 'out'}: {fan.get('paths', 0)} paths "
            f"{'into' if into else 'out of'} {hub} at once, each "
            f"{100 * (fan.get('share') or 0):.3g} % of the aggregate rate")
    rows = [[s["index"], f"{s['offered_pps']:,.0f}", f"{s['sent_pps']:,.0f}",
             f"{s['received_pps']:,.0f}", f"{100 * s['loss_ratio']:.2f}",
             _ms(s.get("start_spread_ms")),
             ("sender-bound" if s.get("sender_bound") else
              "fail: " + ", ".join(s["failed_criteria"]) if s.get("failed_criteria") else "ok")]
            for s in steps]
    table = tabulate(rows, headers=["step", "offered pps", "sent pps", "received pps",
                                    "loss %", "spread ms", "verdict"], disable_numparse=True)
    peers = sorted({name for s in steps for name in s.get("per_path", {})})
    per_page = max(1, (width - 24) // (CELL + 1))
    prow = []
    offsets = fan.get("clock_offsets_ms") or {}
    for name in peers:
        offset = offsets.get(name if into else hub)  # the clock of the host that sweeps
        cells = []
        for s in steps[:per_page]:
            path = s["per_path"].get(name) or {}
            cells.append(_k(path.get("received_pps")))
        prow.append([name, _ms(offset), *cells])
    ptable = tabulate(prow, headers=["path peer", "sweeper clock ms",
                                     *[f"rx {s['index']}" for s in steps[:per_page]]],
                      disable_numparse=True)
    if fan.get("knee_pps") is not None:
        verdict = (f"aggregate knee into {hub}: {fan['knee_pps']:,.0f} pps offered (last good "
                   f"{fan.get('last_good_pps') or 0:,.0f} pps)" if into else
                   f"aggregate knee out of {hub}: {fan['knee_pps']:,.0f} pps offered (last good "
                   f"{fan.get('last_good_pps') or 0:,.0f} pps)")
    elif steps:
        verdict = f"no aggregate knee up to {fan.get('max_offered_pps') or 0:,.0f} pps"
    else:
        verdict = "no aggregate: no path finished"
    sync = (f"start spread at most {_ms(fan.get('max_start_spread_ms'))} ms "
            f"(tolerance {_ms(fan.get('sync_tolerance_ms'))} ms): "
            + ("in sync" if fan.get("in_sync") else "NOT in sync, the aggregate is unreliable")
            + f"\nstep period {fan.get('period_s', 0):.2f} s, first step "
            f"{fan.get('lead_s', 0):.1f} s after the start")
    parts = [head, table, ptable, verdict, sync]
    failed = fan.get("failed_paths") or []
    reasons = [f"  {p['src']} -> {p['dst']}: {p['status']}: {p['reason']}"
               for p in doc.get("pairs", []) if p.get("status") != "ok"]
    if failed or reasons:
        parts.append("paths left out of the aggregate:\n" + "\n".join(reasons))
    return "\n\n".join(parts)


def render_fleet(doc: Mapping[str, Any], width: int = 100) -> str:
    """The whole human report: matrix, hosts, outliers, timing."""
    if doc.get("fan") is not None:
        return render_fan(doc, width)
    parts = [render_matrix(doc, width)]
    rows = []
    reasons = []
    for h in doc["hosts"]:
        up = h.get("reachable")
        rows.append([h["name"], "-" if up is None else "yes" if up else "no",
                     _k(h.get("median_in_pps")), _k(h.get("median_out_pps")),
                     "" if h.get("clock_offset_ms") is None else f"{h['clock_offset_ms']:+.1f}",
                     "" if h.get("ssh_rtt_ms") is None else f"{h['ssh_rtt_ms']:.1f}"])
        if h.get("reason"):
            reasons.append(f"  {h['name']}: {h['reason']}")
    parts.append(tabulate(rows, headers=["host", "up", "median in", "median out",
                                         "clock ms", "ssh rtt ms"], disable_numparse=True)
                 + ("\nunreachable:\n" + "\n".join(reasons) if reasons else ""))
    outliers = doc.get("outliers") or []
    if outliers:
        lines = [f"outliers (below the fleet median {_k(doc.get('fleet_median_pps'))} pps by "
                 f"more than {doc['outlier_fraction']:.0%}):"]
        for o in outliers:
            if o["kind"] == "host":
                lines.append(f"  host {o['host']} {o['direction']}: median {_k(o['median_pps'])} "
                             f"pps ({o['below_by']:.0%} below)")
            else:
                lines.append(f"  path {o['direction']}: {_k(o['good_pps'])} pps good, knee "
                             f"{_k(o.get('knee_pps'))} ({o['below_by']:.0%} below)")
        parts.append("\n".join(lines))
    else:
        parts.append("outliers: none")
    t = doc.get("timing") or {}
    if t.get("mesh_s") is not None:
        text = (f"{doc['schedule']['rounds']} rounds, {doc['counts']['ok']} tests ok in "
                f"{t['mesh_s']:.1f} s (preflight {t.get('preflight_s', 0):.1f} s, serve start "
                f"{t.get('serve_start_s', 0):.1f} s)")
        if t.get("mesh_over_rounds_x_per_test") is not None:
            text += (f"; rounds x median test {t['rounds_x_per_test_s']:.1f} s, ratio "
                     f"{t['mesh_over_rounds_x_per_test']:.2f}; per-test overhead (SSH, "
                     f"start-up) {t.get('test_overhead_median_s') or 0:.2f} s")
        parts.append(text)
    return "\n\n".join(parts)


def write_heatmap(doc: Mapping[str, Any], path: str | Path) -> None:
    """The knee matrix as a PNG heatmap (no knee: the highest rate tried, hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [h["name"] for h in doc["hosts"]]
    n = len(names)
    grid = np.full((n, n), np.nan)
    by_pair = {(p["src"], p["dst"]): p for p in doc["pairs"]}
    for i, src in enumerate(names):
        for j, dst in enumerate(names):
            p = by_pair.get((src, dst))
            if p and p.get("status") == "ok":
                grid[i, j] = p.get("knee_pps") or p.get("max_offered_pps") or np.nan
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(grid, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="knee pps (no knee: highest rate tried)")
    ax.set_xticks(range(n), names, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("destination (serve)")
    ax.set_ylabel("source (sweep)")
    if n <= 24:
        for i in range(n):
            for j in range(n):
                text = "" if i == j else cell(by_pair.get((names[i], names[j])))
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    ax.set_title("pktbench fleet: knee per path")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def _ratio(old: float | None, new: float | None) -> float | None:
    if old is None or new is None or old == 0:
        return None
    return new / old


def compare_fleets(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Per pair and per host: old and new good rate (knee or last good) and the ratio."""
    old_pairs = {(p["src"], p["dst"]): p for p in old["pairs"]}
    new_pairs = {(p["src"], p["dst"]): p for p in new["pairs"]}
    pairs = []
    for key in list(old_pairs) + [k for k in new_pairs if k not in old_pairs]:
        a, b = old_pairs.get(key), new_pairs.get(key)
        va = a.get("good_pps") if a else None
        vb = b.get("good_pps") if b else None
        pairs.append({"src": key[0], "dst": key[1], "old": cell(a) if a else "absent",
                      "new": cell(b) if b else "absent", "old_good_pps": va,
                      "new_good_pps": vb, "ratio": _ratio(va, vb)})
    old_hosts = {h["name"]: h for h in old["hosts"]}
    new_hosts = {h["name"]: h for h in new["hosts"]}
    hosts = []
    for name in list(old_hosts) + [n for n in new_hosts if n not in old_hosts]:
        a, b = old_hosts.get(name, {}), new_hosts.get(name, {})
        hosts.append({"host": name,
                      "old_in_pps": a.get("median_in_pps"), "new_in_pps": b.get("median_in_pps"),
                      "ratio_in": _ratio(a.get("median_in_pps"), b.get("median_in_pps")),
                      "old_out_pps": a.get("median_out_pps"),
                      "new_out_pps": b.get("median_out_pps"),
                      "ratio_out": _ratio(a.get("median_out_pps"), b.get("median_out_pps"))})
    return {"kind": "pktbench-fleet-compare", "pairs": pairs, "hosts": hosts,
            "fleet_median_pps": {"old": old.get("fleet_median_pps"),
                                 "new": new.get("fleet_median_pps")}}


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_fleet_compare(comparison: Mapping[str, Any], labels: Sequence[str]) -> str:
    old, new = labels
    rows = [[f"{p['src']} -> {p['dst']}", p["old"], p["new"], _r(p["ratio"])]
            for p in comparison["pairs"]]
    pairs = tabulate(rows, headers=["path", old, new, "new/old"])
    hrows = [[h["host"], _k(h["old_in_pps"]), _k(h["new_in_pps"]), _r(h["ratio_in"]),
              _k(h["old_out_pps"]), _k(h["new_out_pps"]), _r(h["ratio_out"])]
             for h in comparison["hosts"]]
    hosts = tabulate(hrows, headers=["host", f"in {old}", f"in {new}", "in new/old",
                                     f"out {old}", f"out {new}", "out new/old"])
    med = comparison["fleet_median_pps"]
    return (f"{pairs}\n\n{hosts}\n\nfleet median: {_k(med['old'])} -> {_k(med['new'])} pps "
            "(knee cells; ratios of the last good rate, or of the highest passing one)")


def compare_fleet_files(old_path: str, new_path: str, json_path: str | None) -> str:
    """Load two fleet results, compare, optionally write JSON; the text report."""
    from pktbench.fleet.result import load_fleet

    old, new = load_fleet(old_path), load_fleet(new_path)
    comparison = compare_fleets(old, new)
    if json_path == "-":
        sys.stdout.write(json.dumps(comparison, indent=2) + "\n")
    elif json_path:
        try:
            Path(json_path).write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {json_path}: {exc.strerror}") from None
    return render_fleet_compare(comparison, (Path(old_path).stem, Path(new_path).stem))
