"""The human-readable knee table of a sweep, and the summary of a single step.

Owns: the layout of the sweep table (one row per step, the knee row marked),
the lines under it (knee, last good rate, reason, kneedle estimate, NDR/PDR),
the spread of repeated rates, and `step_table` for `pktbench run`.

Invariants: every number printed comes straight from the result (formatted by
report._common); the only arithmetic is grouping repeats and picking the
highest passing rate to say "no knee up to X".

Must not: judge steps or compute statistics.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from pktbench.report._common import (
    TABLE_WIDTH,
    Footnotes,
    Target,
    counts_requests,
    fmt_loss_percent,
    fmt_mbit,
    fmt_path,
    fmt_pps,
    fmt_us,
    header,
    is_number,
    open_text,
    received_label,
    step_verdict,
    wrap_lines,
)
from pktbench.results import SweepResult

KNEE_MARK = "knee ->"

_CRITERION_WORDS = {
    "loss": "loss rose above the allowed ratio",
    "latency": "p99 latency rose above the allowed multiple of the low-rate baseline",
    "delivery": "fewer packets came back than were offered",
}
_REQUEST_CRITERION_WORDS = {
    "loss": "requests answered late or not at all rose above the allowed ratio",
    "delivery": "fewer requests were answered in time than were offered",
}


def _in_requests(result: SweepResult) -> bool:
    """A sweep counted in requests (rr-tcp, redis://): rates are req/s, not pps."""
    return bool(result.steps) and all(counts_requests(s) for s in result.steps)


def _unit(result: SweepResult) -> str:
    return "req/s" if _in_requests(result) else "pps"


def _workload(result: SweepResult) -> str:
    workload = result.config.get("workload")
    if workload is None and result.steps:
        workload = result.steps[0].get("workload")
    return str(workload or "rr")


def _latency(step: Mapping[str, Any], key: str) -> Any:
    latency = step.get("latency_us")
    return latency.get(key) if isinstance(latency, Mapping) else None


def _headline(result: SweepResult) -> str:
    config = result.config
    workload = _workload(result)
    what = workload
    command = config.get("command")
    if workload == "rr" and command:
        what += f" {str(command).upper()}"
    if config.get("transport") == "tcp":
        what += " over TCP"
    parts = [what]
    if is_number(config.get("size_bytes")):
        parts.append(f"{config['size_bytes']} B")
    rates = config.get("rates_pps") or []
    if rates and is_number(config.get("duration_s")):
        repeat = config.get("repeat", 1)
        times = f" x {repeat} repeats" if is_number(repeat) and repeat > 1 else ""
        parts.append(f"{len(rates)} rates{times}, {config['duration_s']:g} s each"
                     f" after {config.get('warmup_s', 0):g} s warm-up")
    modes = sorted({str(s.get("latency_mode")) for s in result.steps if s.get("latency_mode")})
    if workload == "rr" and modes:
        parts.append(f"latency {'/'.join(modes)}, from the scheduled send time")
    name = config.get("profile") or "sweep"
    host = config.get("host")
    target = f" -> {host}" if host else ""
    return f"{name}{target}: " + ", ".join(parts)


def _has_repeats(result: SweepResult) -> bool:
    return any(step.get("repeat", 0) for step in result.steps)


def _share(step: Mapping[str, Any], key: str) -> str:
    requests = step.get("requests") or 0
    return fmt_loss_percent((step.get(key) or 0) / requests if requests else None)


def _path_cells(step: Mapping[str, Any]) -> list[str]:
    path = step.get("path")
    if not isinstance(path, Mapping):
        return ["-", "-", "-"]
    return [fmt_pps(path.get("toward_server_pps")), fmt_pps(path.get("back_pps")),
            f"{path.get('retransmits', 0):,}"]


_NARROW_DROPS = (1, 8, 10)  # sent, p50, max of a request row


def _request_rows(result: SweepResult, notes: Footnotes | None
                  ) -> tuple[list[str], list[list[str]]]:
    """A sweep counted in requests: rates in req/s, late and unanswered apart, the path.

    The narrow table leaves out the sent rate, p50 and max latency, which the
    --wide table and the JSON keep.
    """
    repeats = _has_repeats(result)
    wide = notes is None
    knee_index = result.knee.get("step_index") if result.knee else None
    if wide:
        headers = ["offered req/s", "sent req/s", "answered req/s", "late %", "unanswered %",
                   "to server pkt/s", "back pkt/s", "retrans", "p50 us", "p99 us", "max us",
                   "verdict"]
    else:
        headers = [header("offered", "req/s"), header("answered", "req/s"),
                   header("late", "%"), header("unansw.", "%"), header("to srv", "pkt/s"),
                   header("back", "pkt/s"), header("retrans"), header("p99", "us"),
                   header("verdict")]
    if repeats:
        headers.insert(1, "rep" if wide else header("rep"))
    headers.insert(0, "")
    rows: list[list[str]] = []
    marked = False
    for step in result.steps:
        row = [fmt_pps(step.get("offered_rps")), fmt_pps(step.get("sent_rps")),
               fmt_pps(step.get("answered_rps")), _share(step, "late_requests"),
               _share(step, "unanswered_requests"), *_path_cells(step),
               *(fmt_us(_latency(step, k)) for k in ("p50", "p99", "max")),
               step_verdict(step, notes)]
        if not wide:  # sent, p50 and max stay in --wide and the JSON
            row = [cell for i, cell in enumerate(row) if i not in _NARROW_DROPS]
        is_knee = not marked and knee_index is not None and step.get("index") == knee_index
        marked = marked or is_knee
        if repeats:
            row.insert(1, str(step.get("repeat", 0)))
        row.insert(0, KNEE_MARK if is_knee else "")
        rows.append(row)
    return headers, rows


def _step_rows(result: SweepResult, notes: Footnotes | None
               ) -> tuple[list[str], list[list[str]]]:
    """Headers and rows; with `notes` (the default, narrow table) failure reasons go there.

    The narrow table leaves out what a wide one adds: max latency, send lag
    and the payload rate of rr steps, which the --wide table and the JSON keep.
    """
    if _in_requests(result):
        return _request_rows(result, notes)
    workload = _workload(result)
    repeats = _has_repeats(result)
    wide = notes is None
    knee_index = result.knee.get("step_index") if result.knee else None
    label = received_label(workload)
    if wide:
        headers = ["offered pps", "sent pps", f"{label} pps", "loss %"]
        if workload == "rr":
            headers += ["p50 us", "p99 us", "p99.9 us", "max us"]
        else:
            headers += ["jitter us"]
        headers += ["lag p99 us", "rx Mbit/s", "verdict"]
    else:
        headers = [header("offered", "pps"), header("sent", "pps"), header(label, "pps"),
                   header("loss", "%")]
        if workload == "rr":
            headers += [header("p50", "us"), header("p99", "us"), header("p99.9", "us"),
                        header("max", "us")]
        else:
            headers += [header("jitter", "us"), header("lag p99", "us"),
                        header("rx", "Mbit/s")]
        headers += [header("verdict")]
    if repeats:
        headers.insert(1, "rep" if wide else header("rep"))
    headers.insert(0, "")  # the knee mark, where the eye starts reading a row
    rows: list[list[str]] = []
    marked = False
    for step in result.steps:
        row = [fmt_pps(step.get("offered_pps")), fmt_pps(step.get("sent_pps")),
               fmt_pps(step.get("received_pps")), fmt_loss_percent(step.get("loss_ratio"))]
        if workload == "rr":
            row += [fmt_us(_latency(step, k)) for k in ("p50", "p99", "p999", "max")]
        else:
            row += [fmt_us(step.get("jitter_us"))]
        lag = step.get("send_lag_us")
        if wide or workload != "rr":
            row += [fmt_us(lag.get("p99") if isinstance(lag, Mapping) else None),
                    fmt_mbit(step.get("received_bps"))]
        row.append(step_verdict(step, notes))
        is_knee = not marked and knee_index is not None and step.get("index") == knee_index
        marked = marked or is_knee
        if repeats:
            row.insert(1, str(step.get("repeat", 0)))
        row.insert(0, KNEE_MARK if is_knee else "")
        rows.append(row)
    return headers, rows


def _spread_lines(result: SweepResult) -> list[str]:
    workload = _workload(result)
    rows = []
    for group in result.rate_groups():
        if len(group.steps) < 2:
            continue
        received = group.spread("received_pps")
        p99 = group.spread("latency_us", "p99")
        rows.append([
            fmt_pps(group.offered_pps), str(len(group.steps)),
            " / ".join(fmt_pps(v) for v in (received.min, received.median, received.max))
            if received else "-",
            " / ".join(fmt_us(v) for v in (p99.min, p99.median, p99.max)) if p99 else "-",
        ])
    if not rows:
        return []
    unit = _unit(result)
    got = "answered" if _in_requests(result) else received_label(workload)
    headers = [f"offered {unit}", "runs", f"{got} {unit} min / median / max"]
    headers.append("p99 us min / median / max")
    return ["", "repeats:", tabulate(rows, headers=headers, tablefmt="simple",
                                     disable_numparse=True, colalign=("right",) * 4)]


def _search_line(name: str, value: Any, result: SweepResult) -> str | None:
    if value is None:
        return None
    search = result.search or {}
    if name == "NDR":
        what = "highest rate with zero loss"
    else:
        ratio = search.get("pdr_loss_ratio")
        what = (f"highest rate with loss <= {fmt_loss_percent(ratio)}%" if is_number(ratio)
                else "highest rate within the partial drop ratio")
    detail = search.get(name.lower())
    unit = _unit(result)
    line = f"{name}: {fmt_pps(value)} {unit} ({what}"
    if isinstance(detail, Mapping):
        line += (f"; interval {fmt_pps(detail.get('lower_pps'))}..{fmt_pps(detail.get('upper_pps'))}"
                 f" {unit} after {detail.get('trials', '?')} trials")
        if is_number(detail.get("duration_s")):
            line += f", {detail['duration_s']:.1f} s of traffic"
    return line + ")"


def _floor_percent(ratio: float) -> str:
    return f"{100 * ratio:.1f} %" if ratio >= 0.001 else f"{100 * ratio:.2f} %"


def _pct(ratio: Any) -> str:
    return f"{100 * ratio:g} %" if is_number(ratio) else "?"


def criteria_line(judgement: Mapping[str, Any] | None, *, sweep: bool = True,
                  requests: bool = False) -> str | None:
    """The thresholds a result was judged by, in words ("judged by: loss > 0.1 %, ...").

    A single step (`sweep` false) has no latency baseline, loss floor or knee.
    `requests`: the steps are counted in requests (rr-tcp, redis://).
    """
    if not judgement or not isinstance(judgement.get("criteria"), Mapping):
        return None
    c = judgement["criteria"]
    floor = judgement.get("loss_floor_ratio") or 0.0
    loss = (f"{'late or unanswered' if requests else 'loss'} > "
            f"{_pct(c.get('max_loss_ratio'))}")
    if floor > 0:
        loss += f" above the {_floor_percent(floor)} loss floor"
    parts = [loss]
    factor = c.get("latency_factor")
    if sweep and is_number(factor) and factor != float("inf"):
        parts.append(f"p99 > {factor:g}x the low-rate baseline "
                     f"(at least {c.get('latency_floor_us', 0):g} us)")
    parts.append(f"{'answered' if requests else 'received'} < "
                 f"{_pct(c.get('min_delivery_ratio'))} of offered")
    line = "judged by: " + ", ".join(parts)
    if not sweep:
        return line
    if c.get("loss_floor_ratio") is None and floor <= 0:
        line += "; no loss floor found"
    confirm = c.get("confirm_steps")
    if is_number(confirm) and confirm:
        line += f"; a knee needs {confirm} more failing step{'s' if confirm != 1 else ''}"
    return line


def _summary_lines(result: SweepResult) -> list[str]:
    lines: list[str] = []
    knee = result.knee
    judgement = result.judgement or {}
    floor = judgement.get("loss_floor_ratio") or 0.0
    if knee and floor > 0:
        lines.append(f"loss floor: the path loses {_floor_percent(floor)} at every rate; "
                     "the knee is judged on the loss above it")
    requests = _in_requests(result)
    unit = _unit(result)
    if knee:
        criterion = knee.get("criterion")
        words = {**_CRITERION_WORDS, **_REQUEST_CRITERION_WORDS} if requests else _CRITERION_WORDS
        if requests:
            head = (f"knee: {fmt_pps(knee.get('offered_pps'))} req/s offered (path: "
                    f"{fmt_path(knee.get('path'), offered=True)})")
        else:
            head = f"knee: {fmt_pps(knee.get('offered_pps'))} pps"
        lines.append(f"{head} - {knee.get('reason', '')}")
        if criterion in words:
            lines.append(f"  criterion: {criterion} ({words[criterion]})")
        last_good = knee.get("last_good_pps")
        good = "none (the lowest rate already failed)"
        if last_good is not None:
            good = f"{fmt_pps(last_good)} {unit}"
            if requests:
                good += f" (path: {fmt_path(knee.get('last_good_path'))})"
        lines.append("last good rate: " + good)
    elif result.steps:
        passing = [s["offered_pps"] for s in result.steps
                   if not s.get("failures") and not s.get("sender_bound")]
        bound = [s["offered_pps"] for s in result.steps if s.get("sender_bound")]
        if floor > 0 and passing:
            line = (f"the path loses {_floor_percent(floor)} at every rate: no knee; "
                    f"loss floor {_floor_percent(floor)}")
        elif passing:
            line = f"no knee: every step passed up to {fmt_pps(max(passing))} {unit}"
        else:
            line = "no knee found"
        if bound and passing and floor <= 0:
            line = (f"no knee up to {fmt_pps(max(passing))} {unit} (sender-bound above: from "
                    f"{fmt_pps(min(bound))} {unit} the sender itself could not reach the "
                    "offered rate)")
        elif bound:
            line += (f"; from {fmt_pps(min(bound))} {unit} the sender itself could not reach "
                     "the offered rate (sender-bound, not the path)")
        lines.append(line)
    else:
        lines.append("no steps were run")
    if result.kneedle_pps is not None:
        lines.append(f"kneedle estimate: {fmt_pps(result.kneedle_pps)} {unit} "
                     "(where the p99 latency curve bends most against offered rate)")
    capacity = judgement.get("capacity_pps")
    if is_number(capacity):
        lines.append(f"capacity: {fmt_pps(capacity)} {unit} delivered (the received rate "
                     "saturates there however much more is offered)")
    for name, value in (("NDR", result.ndr_pps), ("PDR", result.pdr_pps)):
        search_line = _search_line(name, value, result)
        if search_line:
            lines.append(search_line)
    judged = criteria_line(result.judgement, requests=requests)
    if judged:
        lines.append(judged)
    return lines


def render_table(result: SweepResult, wide: bool = False) -> str:
    """The sweep as text: headline, one row per step, the knee marked, summary lines.

    By default every line fits TABLE_WIDTH (100) columns: failure reasons are
    numbered footnotes under the table and prose lines wrap. `wide` shows
    every column, reasons in the verdict column, and wraps nothing.
    """
    notes = None if wide else Footnotes()
    headers, rows = _step_rows(result, notes)
    align = ["left"] + ["right"] * (len(headers) - 2) + ["left"]
    parts = [_headline(result), ""]
    if rows:
        parts.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                              colalign=align))
    if notes is not None and notes.texts:
        parts += notes.lines()
    parts += _spread_lines(result)
    parts.append("")
    parts += _summary_lines(result)
    if not wide:
        parts = wrap_lines(parts)
    return "\n".join(parts) + "\n"


def write_table(result: SweepResult, target: Target) -> None:
    """Reporter "table": `render_table` to a stream, a path, or "-" (stdout)."""
    with open_text(target) as stream:
        stream.write(render_table(result))


def _request_step_rows(step: Mapping[str, Any]) -> list[list[str]]:
    timeout_ms = 1000 * float(step.get("timeout_s") or 0)
    rows = [
        ["offered", f"{fmt_pps(step.get('offered_rps'))} req/s "
                    f"({step.get('requests', 0):,} requests)"],
        ["sent", f"{fmt_pps(step.get('sent_rps'))} req/s written"],
        ["answered", f"{fmt_pps(step.get('answered_rps'))} req/s "
                     f"({step.get('answered_requests', 0):,} requests within {timeout_ms:,.0f} ms)"],
        ["late", f"{_share(step, 'late_requests')} % ({step.get('late_requests', 0):,} "
                 f"requests answered after the {timeout_ms:,.0f} ms timeout)"],
        ["unanswered", f"{_share(step, 'unanswered_requests')} % "
                       f"({step.get('unanswered_requests', 0):,} requests never answered"
                       + (f", {step['unsent_requests']:,} of them never written: the pipeline "
                          "window stayed full" if step.get("unsent_requests") else "") + ")"],
    ]
    if step.get("error_requests"):
        rows.append(["errors", f"{step['error_requests']:,} RESP error replies"])
    path = step.get("path")
    rows.append(["path", fmt_path(path, offered=True) if isinstance(path, Mapping)
                 else "- (TCP_INFO unreadable)"])
    interface = path.get("interface") if isinstance(path, Mapping) else None
    if isinstance(interface, Mapping):
        rows.append([f"interface {interface.get('name')}",
                     f"{fmt_pps(interface.get('tx_pps'))} pkt/s tx, "
                     f"{fmt_pps(interface.get('rx_pps'))} pkt/s rx ("
                     + ("loopback: both directions and every other local packet"
                        if interface.get("name") == "lo" else "every packet on the device")
                     + ")"])
    return rows


def write_wide_table(result: SweepResult, target: Target) -> None:
    """Reporter "wide": `render_table(result, wide=True)`, every column."""
    with open_text(target) as stream:
        stream.write(render_table(result, wide=True))


def step_table(step: Mapping[str, Any], wide: bool = False) -> str:
    """One step (as `pktbench run` measures it) as label/value lines.

    Values wrap to keep every line within TABLE_WIDTH unless `wide`.
    """
    workload = step.get("workload", "rr")
    label = received_label(workload)
    rows: list[list[str]]
    if counts_requests(step):
        rows = _request_step_rows(step)
    else:
        rows = [
            ["offered", f"{fmt_pps(step.get('offered_pps'))} pps"],
            ["sent", f"{fmt_pps(step.get('sent_pps'))} pps "
                     f"({step.get('sent_packets', 0):,} packets)"],
            [label, f"{fmt_pps(step.get('received_pps'))} pps "
                    f"({step.get('received_packets', 0):,} packets)"],
            ["loss", f"{fmt_loss_percent(step.get('loss_ratio'))} % "
                     f"({step.get('lost_packets', 0):,} packets)"],
        ]
        late = step.get("late_packets") or 0
        dup = step.get("duplicate_packets") or 0
        reordered = step.get("reordered_packets") or 0
        if late or dup or reordered:
            rows.append(["late / dup / reordered", f"{late:,} / {dup:,} / {reordered:,}"])
    latency = step.get("latency_us")
    if isinstance(latency, Mapping):
        keys = ("p50", "p90", "p99", "p999", "max")
        rows.append(["latency p50/p90/p99/p99.9/max",
                     " / ".join(fmt_us(latency.get(k)) for k in keys)
                     + f" us ({step.get('latency_mode', 'blocking')}, from scheduled send)"])
    if step.get("jitter_us") is not None:
        rows.append(["jitter", f"{fmt_us(step.get('jitter_us'))} us"])
    lag = step.get("send_lag_us")
    if isinstance(lag, Mapping):
        rows.append(["send lag p99", f"{fmt_us(lag.get('p99'))} us"])
    rows.append(["throughput", f"{fmt_mbit(step.get('sent_bps'))} Mbit/s sent, "
                               f"{fmt_mbit(step.get('received_bps'))} Mbit/s received"])
    receiver = step.get("receiver")
    if isinstance(receiver, Mapping):
        drops = {k: v for k, v in (receiver.get("drops") or {}).items() if v}
        if drops or receiver.get("rcvbuf_errors"):
            text = ", ".join(f"{k} {v:,}" for k, v in sorted(drops.items()))
            if receiver.get("rcvbuf_errors"):
                text = (text + ", " if text else "") + \
                    f"socket buffer overflows {receiver['rcvbuf_errors']:,}"
            rows.append(["receiver drops", text])
    if "failures" in step or "sender_bound" in step:
        rows.append(["verdict", step_verdict(step)])
    label_width = max(len(r[0]) for r in rows)
    widths = None if wide else [None, TABLE_WIDTH - label_width - 2]
    return tabulate(rows, tablefmt="plain", disable_numparse=True, maxcolwidths=widths) + "\n"


def write_step_table(step: Mapping[str, Any], target: Target) -> None:
    with open_text(target) as stream:
        stream.write(step_table(step))
