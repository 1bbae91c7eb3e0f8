"""Helpers for tests that run the engine's responder in-process."""
from __future__ import annotations

import threading

from pktbench import engine


class ThreadedResponder:
    """An engine ResponderLoop serving in a daemon thread until stopped."""

    def __init__(self, loop: object, seconds: float) -> None:
        self.loop = loop
        self.stop = threading.Event()
        deadline = engine.monotonic_ns() + int(seconds * 1e9)
        self.thread = threading.Thread(
            target=loop.serve_until, args=(deadline, self.stop), daemon=True)  # type: ignore[attr-defined]
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
