"""Live progress of a sweep on stderr: a line per finished step, and a bar.

Owns: `step_line` (the one-line summary of a finished step) and `Progress`,
which prints those lines and, on a terminal, redraws a one-line bar below
them with the step count, the rate being run and the time left.

Invariants: writes only to its stream (stderr by default), so stdout stays
clean for `--json -`. When the stream is not a terminal there is no bar and
no control characters: only the per-step lines, which read well in CI logs.
No dependency beyond the standard library.

Must not: judge steps or compute statistics; the time-left estimate is the
only arithmetic (mean wall time per finished step x steps left).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any

from pktbench.report._common import (
    counts_requests,
    fmt_loss_percent,
    fmt_pps,
    fmt_us,
    received_label,
    step_verdict,
)

BAR_WIDTH = 24


def step_line(step: Mapping[str, Any], done: int | None = None, total: int | None = None) -> str:
    """'step  3/10  offered 5,848 pps  sent 5,848  responses 5,848  loss 0%  p99 140.3 us  ok'."""
    width = len(str(total)) if total else 1
    position = f"step {done:>{width}}/{total}" if done is not None and total else "step"
    if counts_requests(step):
        parts = [position] + _request_parts(step)
    else:
        parts = [position, f"offered {fmt_pps(step.get('offered_pps'))} pps",
                 f"sent {fmt_pps(step.get('sent_pps'))}",
                 f"{received_label(step.get('workload', 'rr'))} "
                 f"{fmt_pps(step.get('received_pps'))}",
                 f"loss {fmt_loss_percent(step.get('loss_ratio'))}%"]
    latency = step.get("latency_us")
    if isinstance(latency, Mapping) and latency.get("p99") is not None:
        parts.append(f"p99 {fmt_us(latency.get('p99'))} us")
    elif step.get("jitter_us") is not None:
        parts.append(f"jitter {fmt_us(step.get('jitter_us'))} us")
    if step.get("repeat"):
        parts.insert(1, f"repeat {step['repeat']}")
    parts.append(step_verdict(step))
    return "  ".join(parts)


def _share(step: Mapping[str, Any], key: str) -> str:
    requests = step.get("requests") or 0
    return fmt_loss_percent((step.get(key) or 0) / requests if requests else None)


def _request_parts(step: Mapping[str, Any]) -> list[str]:
    """'offered 6,011 req/s  sent 5,127  answered 4,795  late 5.5%  unanswered 15%  path ...'."""
    parts = [f"offered {fmt_pps(step.get('offered_rps'))} req/s",
             f"sent {fmt_pps(step.get('sent_rps'))}",
             f"answered {fmt_pps(step.get('answered_rps'))}",
             f"late {_share(step, 'late_requests')}%",
             f"unanswered {_share(step, 'unanswered_requests')}%"]
    path = step.get("path")
    if isinstance(path, Mapping):
        parts.append(f"path {fmt_pps(path.get('toward_server_pps'))}/"
                     f"{fmt_pps(path.get('back_pps'))} pkt/s out/back, "
                     f"{path.get('retransmits', 0):,} retrans")
    return parts


class Progress:
    """Progress of one sweep; use as a context manager so the bar is always cleared.

    Args:
        total_steps: steps the sweep plans (searches may add more; the count grows).
        stream: where to write; stderr by default.
        quiet: print nothing at all.
        bar: force the bar on or off; default: on when `stream` is a terminal.
        clock: monotonic seconds, replaceable in tests.
    """

    def __init__(self, total_steps: int, *, stream: IO[str] | None = None, quiet: bool = False,
                 bar: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_steps = max(total_steps, 0)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        if bar is None:
            isatty = getattr(self._stream, "isatty", None)
            bar = bool(isatty and isatty())
        self._bar = bar and not quiet
        self._clock = clock
        self._started = clock()
        self._current: str = ""
        self._bar_shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def step_started(self, offered_pps: float, what: str = "") -> None:
        """A step at `offered_pps` began (only the bar shows it)."""
        self._current = f"{what + ' ' if what else ''}{fmt_pps(offered_pps)} pps"
        self._draw()

    def step_done(self, step: Mapping[str, Any]) -> None:
        """A step finished: print its line, advance the bar."""
        self.done += 1
        self.total_steps = max(self.total_steps, self.done)
        self._current = ""
        self.message(step_line(step, self.done, self.total_steps))

    def message(self, text: str) -> None:
        """A line of its own above the bar (e.g. "searching NDR between ...")."""
        if self._quiet:
            return
        self._clear()
        self._stream.write(text + "\n")
        self._draw()

    def seconds_left(self) -> float | None:
        if self.done == 0:
            return None
        per_step = (self._clock() - self._started) / self.done
        return per_step * max(self.total_steps - self.done, 0)

    def bar_text(self) -> str:
        total = max(self.total_steps, 1)
        filled = min(BAR_WIDTH, round(BAR_WIDTH * self.done / total))
        text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total_steps} steps"
        left = self.seconds_left()
        if left is not None:
            text += f"  ~{left:.0f} s left"
        if self._current:
            text += f"  now {self._current}"
        return text

    def close(self) -> None:
        self._clear()
        self._stream.flush()

    def _clear(self) -> None:
        if self._bar_shown:
            self._stream.write("\r\x1b[K")
            self._bar_shown = False

    def _draw(self) -> None:
        if not self._bar:
            return
        self._stream.write("\r\x1b[K" + self.bar_text())
        self._stream.flush()
        self._bar_shown = True
