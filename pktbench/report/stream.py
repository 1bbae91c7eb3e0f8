"""Live output while a run goes: interval lines, and the --json-stream event stream.

Owns: `interval_line` (one interval report as text, like iperf3's -i lines)
and `JsonStream`, which writes one JSON object per line as things happen:

    {"event": "start", "kind": ..., "command": ..., "time_unix_s": ...}
    {"event": "interval", "step": N, ...the interval's keys...}
    {"event": "step", "step": N, "result": {...the step...}}
    {"event": "end", "interrupted": bool, "result": {...the whole document...}}

so a dashboard or another program can follow a run without waiting for it.
Each line is flushed when written; the lines of two threads never mix.

Must not: compute figures; the intervals and steps come as measured.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from pktbench.report._common import fmt_pps, fmt_us, is_number
from pktbench.report.jsonout import finite


def interval_line(item: Mapping[str, Any]) -> str:
    """'[  1.00-  2.00 s] sent 2,000 pps  received 2,000 pps  p50 71.2 us  p99 180 us'."""
    if "payload_bps" in item:  # a bulk pump's interval
        return (f"[{item['start_s']:7.2f}-{item['end_s']:7.2f} s]  {item['direction']}  "
                f"{item['bytes']:,} bytes  {item['payload_bps'] / 1e9:.3f} Gbit/s")
    words = [f"[{item['start_s']:7.2f}-{item['end_s']:7.2f} s]",
             f"sent {fmt_pps(item['sent_pps'])} pps"]
    if is_number(item.get("received_pps")):
        words.append(f"received {fmt_pps(item['received_pps'])} pps")
    if is_number(item.get("latency_p50_us")):
        words.append(f"p50 {fmt_us(item['latency_p50_us'])} us")
    if is_number(item.get("latency_p99_us")):
        words.append(f"p99 {fmt_us(item['latency_p99_us'])} us")
    return "  ".join(words)


class JsonStream:
    """One JSON object per line on `stream` (--json-stream)."""

    def __init__(self, stream: IO[str], kind: str, command: str) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.steps = 0
        self._write({"event": "start", "kind": kind, "command": command,
                     "time_unix_s": time.time()})

    def _write(self, obj: Mapping[str, Any]) -> None:
        line = json.dumps(finite(dict(obj)), allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def interval(self, item: Mapping[str, Any]) -> None:
        self._write({"event": "interval", "step": self.steps, **item})

    def step(self, step: Mapping[str, Any]) -> None:
        self._write({"event": "step", "step": self.steps, "result": dict(step)})
        self.steps += 1

    def end(self, document: Mapping[str, Any]) -> None:
        self._write({"event": "end", "interrupted": bool(document.get("interrupted")),
                     "result": dict(document)})
