"""SIGINT and SIGTERM as a request to stop, so a run ends with its results.

Owns `StopOnSignal`: while it is active, the first SIGINT or SIGTERM sets
its `stop` event (every library call that takes `stop` ends its step early,
closes the step's books and returns what finished); a second one raises
KeyboardInterrupt, for a user who does not want to wait. The caller writes
what finished, then exits with `exit_code` (130 for SIGINT, 143 for
SIGTERM, as a shell reports a process those signals ended).

Must not: print, or touch signals outside the main thread (there Python
cannot install handlers, and the caller's own handling stays).
Stdlib only.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["StopOnSignal"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """A context manager turning SIGINT/SIGTERM into `stop.set()` while it is active."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now, without the results
        self.signum = signum
        self.stop.set()

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (130 SIGINT, 143 SIGTERM); 0 when none came."""
        return 128 + self.signum if self.signum is not None else 0
