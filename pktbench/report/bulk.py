"""The bulk reporter: per-step and per-stream throughput tables, overhead and the ceiling.

Owns: how a bulk result reads on a terminal (the table `pktbench bulk` and
`pktbench sweep --workload bulk` print) and the one progress line per
finished bulk step.

Must not: compute; the ceiling, the on-wire rates and the overhead text come
with the result.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pktbench.report._common import Footnotes, Target, header, is_number, open_text, wrap_lines
from pktbench.results import LINK_MODELS


def _gbit(value: Any) -> str:
    return f"{value / 1e9:.3f}" if isinstance(value, (int, float)) else "-"


def _pct(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def bulk_step_line(step: Mapping[str, Any]) -> str:
    """One progress line for a finished bulk step."""
    what = (f"{step['streams_requested']} stream(s)" if step["transport"] == "tcp" else
            f"offered {_gbit(step.get('offered_bps'))} Gbit/s")
    return (f"step {_label(step)}: {step['transport']} {what}: "
            f"{_gbit(step['aggregate_bps'])} Gbit/s goodput, "
            f"{_gbit(step['wire_bps'])} Gbit/s on the wire")


def _label(step: Mapping[str, Any]) -> str:
    """The step's number, and its direction when a --bidir step ran both ("1 fwd", "1 rev")."""
    number = str(step["index"] + 1)
    if step.get("bidir"):
        return f"{number} {'rev' if step.get('direction') == 'reverse' else 'fwd'}"
    return number


def _plan_line(plan: Mapping[str, Any]) -> str:
    line = f"flow plan ({plan['method']}): ports {', '.join(map(str, plan['ports']))}"
    if plan["method"] == "probed":
        line += f" over {', '.join(plan['path_names'])} ({plan['probes']} probes)"
    return line


def _step_rows(steps: Any, transport: str) -> tuple[list[str], list[list[Any]]]:
    headers = [header("step"), header("streams"), header("goodput", "Gbit/s"),
               header("on-wire", "Gbit/s"), header("link", "%"),
               header("retransmits", "segments"), header("sender CPU", "%"),
               header("receiver CPU", "%")]
    if transport == "udp":
        headers[1] = header("offered", "Gbit/s")
        headers[5] = header("loss", "%")
    rows = []
    for step in steps:
        tcp = step["transport"] == "tcp"
        offered = step.get("offered_bps")
        second = step["streams_requested"] if tcp else _gbit(offered) if offered else "max"
        fifth = step["retransmits"] if tcp else _pct(100 * step["loss_ratio"])
        rows.append([_label(step), second, _gbit(step["aggregate_bps"]),
                     _gbit(step["wire_bps"]), _pct(step["link_percent"]),
                     fifth if fifth is not None else "-", _pct(step["sender_cpu_percent"]),
                     _pct(step["receiver_cpu_percent"])])
    return headers, rows


def _dash(value: Any) -> Any:
    return value if value is not None else "-"


def _stream_lines(step: Mapping[str, Any]) -> list[str]:
    from tabulate import tabulate

    rows = [[s["stream_id"], s["source_port"],
             s["path"] if s["path"] is not None and s["path"] >= 0 else "-",
             _gbit(s["goodput_bps"]), _gbit(s["wire_bps"]),
             _dash(s["retransmits"]), _dash(s["cwnd_segments"]), _dash(s["rtt_us"])]
            for s in step["streams"]]
    headers = [header("stream"), header("src port"), header("path"),
               header("goodput", "Gbit/s"), header("on-wire", "Gbit/s"),
               header("retransmits", "segments"), header("cwnd", "segments"),
               header("rtt", "us")]
    if step.get("transport") == "udp":  # one datagram flow: no TCP figures to show
        headers = headers[:5]
        rows = [row[:5] for row in rows]
    errors = [s["error"] or "" for s in step["streams"]]
    if any(errors):  # a column only when some stream has something to say in it
        notes = Footnotes()
        headers.append(header("error"))
        for row, error in zip(rows, errors):
            row.append(notes.mark(error) if error else "")
    lines = ["", f"step {_label(step)} per stream:",
             tabulate(rows, headers=headers, disable_numparse=True)]
    if any(errors):
        lines += notes.lines()
    per_path = step.get("per_path")
    if per_path:
        lines.append("per path (interface counters, " + per_path[0]["direction"] + "): "
                     + ", ".join(f"{p['name']} {_gbit(p['interface_bps'])} Gbit/s"
                                 for p in per_path))
    return lines


def _ceiling_lines(ceiling: Mapping[str, Any], transport: str) -> list[str]:
    if ceiling.get("goodput_bps") is None:
        return []
    lines = [""]
    if ceiling.get("overhead"):
        unit = "segment" if transport == "tcp" else "datagram"
        lines.append(f"overhead per {unit}: " + ceiling["overhead"]["text"])
    text = (f"ceiling: {_gbit(ceiling['goodput_bps'])} Gbit/s goodput, "
            f"{_gbit(ceiling['wire_bps'])} Gbit/s on the wire "
            f"({_gbit(ceiling['frame_bps'])} Gbit/s of Ethernet frames)")
    if ceiling.get("link_speed_bps"):
        model = LINK_MODELS.get(str(ceiling.get("link_model")))
        text += (f" = {_pct(ceiling['link_percent'])}% of the {_gbit(ceiling['link_speed_bps'])}"
                 " Gbit/s link" + (f" by the {model}" if model else "")
                 + f" (goodput can reach at most "
                 f"{_gbit(ceiling['max_goodput_at_link_bps'])} Gbit/s there)")
        if is_number(ceiling.get("link_percent")) and ceiling["link_percent"] > 100.0:
            text += "; more than a link of that speed carries: the path does not cross one"
    lines.append(text)
    return lines


def render_bulk(result: Any, wide: bool = False) -> str:
    """The bulk result as text: the step table, each step's streams, overhead, the ceiling.

    Args:
        result: a bulk result (its `config`, `target`, `plan`, `steps` and
            `ceiling`, as `pktbench.run_bulk` returns it).
        wide: leave long lines whole (default: prose wraps at TABLE_WIDTH).

    Returns:
        The report without a trailing newline.
    """
    from tabulate import tabulate

    cfg = result.config
    transport = cfg["transport"]
    lines = [f"bulk {transport} {cfg['direction']} to {result.target}"]
    if result.plan is not None:
        lines.append(_plan_line(result.plan))
    headers, rows = _step_rows(result.steps, transport)
    lines.append(tabulate(rows, headers=headers, disable_numparse=True))
    for step in result.steps:
        lines += _stream_lines(step)
    lines += _ceiling_lines(result.ceiling or {}, transport)
    return "\n".join(lines if wide else wrap_lines(lines))


def write_bulk_table(result: Any, target: Target) -> None:
    """Reporter ("bulk", "table"): `render_bulk` and a newline to a stream, path or "-"."""
    with open_text(target) as stream:
        stream.write(render_bulk(result) + "\n")


def write_bulk_wide(result: Any, target: Target) -> None:
    """Reporter ("bulk", "wide"): `render_bulk(result, wide=True)`."""
    with open_text(target) as stream:
        stream.write(render_bulk(result, wide=True) + "\n")
