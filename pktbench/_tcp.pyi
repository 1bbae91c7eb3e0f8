# Type stubs for the compiled pktbench._tcp (ext/_tcp.pyx).
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

HISTOGRAM_BUCKETS: int
MAX_CONNECTIONS: int
MAX_PIPELINE: int
CLIENT_COUNTERS: tuple[str, ...]
SERVER_COUNTERS: tuple[str, ...]

_Status = Literal["complete", "incomplete", "malformed"]

def parse_replies(data: bytes) -> tuple[list[tuple[int, str]], _Status]: ...
def parse_commands(data: bytes) -> tuple[list[tuple[int, int]], _Status]: ...

class RespClient:
    counters: npt.NDArray[np.uint64]
    latency_hist: npt.NDArray[np.uint64]
    actual_latency_hist: npt.NDArray[np.uint64]
    send_lag_hist: npt.NDArray[np.uint64]
    def __init__(self, fds: Sequence[int], request: bytes, *, rate_pps: float, pipeline: int,
                 timeout_s: float = ..., busy_poll: bool = ..., rx_bytes: int = ...) -> None: ...
    def begin(self, t0_ns: int, limit: int, warmup: bool) -> None: ...
    def stop_issuing(self) -> None: ...
    @property
    def scheduled(self) -> int: ...
    @property
    def done(self) -> bool: ...
    def run(self, until_ns: int) -> int: ...
    def finish(self) -> None: ...

class RespServer:
    counters: npt.NDArray[np.uint64]
    def __init__(self, capacity: int, get_reply: bytes, *, rx_bytes: int = ...,
                 busy_poll: bool = ...) -> None: ...
    def add(self, fd: int) -> bool: ...
    def run(self, until_ns: int) -> int: ...
