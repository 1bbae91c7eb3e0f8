"""`pktbench watch` and `pktbench watch-report`: options in, a Watch run, records out.

Owns: option parsing for both commands, the record sink of a live watch (the
JSONL file, fsync'd at every outage; the metrics state; one console line per
interval and per event) and the summary printed at the end, on SIGINT or
SIGTERM too. Heavy imports happen inside the commands.
"""
from __future__ import annotations

import json
import math
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any

import click

from pktbench.cli_files import read_secret
from pktbench.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, *, allow_forever: bool = False) -> float | None:
    """'20', '20s', '500ms', '30m', '6h', '2d' -> seconds; 'forever' -> None."""
    if allow_forever and text.strip().lower() in ("forever", "inf", "0"):
        return None
    match = _DURATION_RE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 20, 20s, 30m, 24h"
                                 f"{', forever' if allow_forever else ''})")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise click.BadParameter(f"{text!r} must be more than 0")
    return seconds


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "DURATION"

    def __init__(self, allow_forever: bool = False) -> None:
        self.allow_forever = allow_forever

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        try:
            return parse_duration(str(value), allow_forever=self.allow_forever)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


def _console_line(record: dict[str, Any]) -> str | None:
    from pktbench.watch.report import _iso
    kind = record["type"]
    if kind == "interval":
        lat = record.get("latency_us") or {}
        loss = record.get("loss_ratio")
        return (f"{_iso(record['start_s'])[11:23]}  sent {record['sent_packets']:>7}  "
                f"lost {record['lost_packets']:>6} ({(loss or 0) * 100:6.2f} %)  "
                f"p50 {lat.get('p50', float('nan')):8.1f} us  "
                f"p99 {lat.get('p99', float('nan')):8.1f} us  {record.get('state', '')}")
    if kind == "outage":
        return (f"OUTAGE {_iso(record['start_s'])} .. {_iso(record['end_s'])} "
                f"{record['duration_s']:.3f} s, {record['lost_packets']} lost, direction "
                f"{record.get('direction', '-')}")
    if kind == "outage_start":
        return f"outage started {_iso(record['start_s'])}"
    if kind in ("session", "session_lost", "connect_failed"):
        return f"{kind.replace('_', ' ')} {record.get('session')}: {record.get('reason')}"
    if kind == "knee":
        return f"knee check: {record.get('knee_pps')} pps {record.get('error', '')}".rstrip()
    return None


@click.command("watch")
@click.argument("host")
@click.option("--workload", type=click.Choice(["rr", "blast", "rr-tcp"]), default="rr",
              show_default=True, help="rr is timed to the packet; blast and rr-tcp to the "
                                      "interval.")
@click.option("--rate", "rate_pps", type=float, default=1000.0, show_default=True,
              metavar="PPS", help="Probe rate, packets/s.")
@click.option("--size", "size_bytes", type=click.IntRange(16, 65507), default=64,
              show_default=True, metavar="B", help="UDP payload bytes.")
@click.option("--interval", "interval_s", type=DurationType(), default="1",
              show_default=True, help="Length of one interval record.")
@click.option("--duration", "duration_s", type=DurationType(allow_forever=True),
              default="forever", show_default=True, help="How long to watch (20, 30m, 24h, "
                                                         "forever).")
@click.option("--timeout", "timeout_s", type=DurationType(), default="1",
              show_default=True, help="A reply later than this is late (and the request lost).")
@click.option("--outage-min", "outage_min_s", type=DurationType(), default="50ms",
              show_default=True, help="A loss run at least this long is an outage.")
@click.option("--step-length", "step_s", type=DurationType(), default="60",
              show_default=True, help="Change over to a new bounded server step this often.")
@click.option("--jsonl", "jsonl_path", metavar="FILE",
              help="Write one JSON line per interval and event to FILE.")
@click.option("--rotate-size", "rotate_bytes", type=click.IntRange(4096), default=64 << 20,
              show_default=True, metavar="BYTES", help="Rotate the JSONL file at this size "
                                                        "(and at UTC midnight).")
@click.option("--metrics", "metrics_addr", metavar="ADDR:PORT",
              help="Serve OpenMetrics/Prometheus metrics here (PORT alone: 127.0.0.1).")
@click.option("--knee-every", "knee_every_s", type=DurationType(), default=None,
              help="Pause the probe for a knee check this often (e.g. 6h).")
@click.option("--knee-profile", metavar="NAME", help="Profile of the knee check sweep.")
@click.option("--quiet", "-q", is_flag=True, help="No line per interval on the console.")
@click.option("--token-file", metavar="FILE", help="File holding the shared secret.")
@click.option("--token", metavar="SECRET", envvar="PKTBENCH_TOKEN",
              help="Shared secret (HMAC challenge-response; never sent).")
def watch_command(host: str, workload: str, rate_pps: float, size_bytes: int,
                  interval_s: float, duration_s: float | None, timeout_s: float,
                  outage_min_s: float, step_s: float, jsonl_path: str | None,
                  rotate_bytes: int, metrics_addr: str | None, knee_every_s: float | None,
                  knee_profile: str | None, quiet: bool, token_file: str | None,
                  token: str | None) -> None:
    """Watch HOST under a steady probe; time every outage to the packet."""
    from pktbench import api
    from pktbench.watch.jsonl import JsonlWriter
    from pktbench.watch.metrics import MetricsServer, MetricsState
    from pktbench.watch.probe import Watch, WatchConfig
    from pktbench.watch.report import IntervalDigest, render_text, summarize

    target = api.as_target(host)
    assert target is not None
    config = WatchConfig(target=target, workload=workload, rate_pps=rate_pps,
                         size_bytes=size_bytes, interval_s=interval_s, duration_s=duration_s,
                         timeout_s=timeout_s, outage_min_s=outage_min_s, step_s=step_s,
                         lease_s=max(600.0, 2 * step_s),
                         secret=read_secret(token, token_file), knee_every_s=knee_every_s,
                         knee_profile=knee_profile)
    config.check()
    if knee_profile is not None:
        from pktbench.config import load_profile
        load_profile(knee_profile)  # a bad profile fails now, not hours into the watch
    writer = JsonlWriter(jsonl_path, rotate_bytes=rotate_bytes) if jsonl_path else None
    state = MetricsState(str(target))
    metrics = MetricsServer(state, metrics_addr) if metrics_addr else None
    if metrics is not None:
        click.echo(f"metrics on http://{metrics.host}:{metrics.port}/metrics", err=True)
    records: list[dict[str, Any]] = []  # the summary's input: every record but intervals
    digest = IntervalDigest()  # ... which it gets in bounded memory
    stop = threading.Event()
    watch: Watch | None = None

    def sink(record: dict[str, Any]) -> None:
        kind = record["type"]
        if writer is not None:
            writer.write(record, sync=kind in ("outage", "outage_start", "session_lost", "end"))
        if kind == "interval" and watch is not None:
            totals = watch.tracker.totals
            state.update(record, buckets=totals.bucket_counts,
                         latency_sum_s=totals.latency_sum_s)
        else:
            state.update(record)
        if kind == "interval":
            digest.add(record)
        else:
            records.append(record)
        if not quiet or kind not in ("interval",):
            line = _console_line(record)
            if line is not None:
                click.echo(line)

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch = Watch(config, sink, stop=stop)
        watch.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if metrics is not None:
            metrics.close()
    summary = summarize(records, digest)
    if writer is not None:
        writer.write({"type": "summary", **summary}, sync=True)
        writer.close()
    click.echo("\n".join(render_text(summary)))
    if received:
        sys.exit(130 if received[0] == signal.SIGINT else 143)


@click.command("watch-report")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document.")
@click.option("--plot", "plot_path", metavar="PNG", help="Write a time-series plot here.")
def watch_report_command(files: tuple[str, ...], as_json: bool, plot_path: str | None) -> None:
    """Summarize watch JSONL files (rotated parts of FILE are read with it)."""
    from pktbench.watch.jsonl import read_records
    from pktbench.watch.report import plot, render_text, summarize

    loaded = read_records(list(files))
    summary = summarize(loaded.records)
    summary["files"] = loaded.files
    summary["torn_lines"] = loaded.torn_lines
    if plot_path:
        plot(loaded.records, plot_path)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo("\n".join(render_text(summary)))
        if loaded.torn_lines:
            click.echo(f"  ({loaded.torn_lines} torn line(s) skipped)")

