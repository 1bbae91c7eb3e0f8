"""Helpers for tests that run the engine's responder in-process."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pktbench import engine
from pktbench.session import Server, ServerConfig


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


@contextmanager
def serving(config: ServerConfig) -> Iterator[Server]:
    """A pktbench Server accepting sessions in a daemon thread; stopped on exit."""
    server = Server(config, log=lambda line: None)
    server.open()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=10)
        server.close()
