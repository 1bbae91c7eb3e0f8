"""Fixtures for tests that need the namespace testbed (root only).

Owns: the root/`ip netns` skip for tests marked `root`, a per-run unique
testbed prefix, the `testbed` fixture (brings one up with the shaping named by
`@pytest.mark.testbed_config(...)` or indirect parametrisation, and always
takes it down), a `make_testbed` factory, and `ns_udp`, bounded UDP traffic
helpers that run small python3 scripts inside the namespaces.

Invariants: every load is bounded in packets and seconds; traffic goes only to
the testbed's own 198.18.0.0/15 addresses; every namespace made here is
removed, even when the test fails.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pktbench import testbed as tb

_counter = itertools.count()

# Receives datagrams until `max_s` passes or nothing came for `idle_s` after
# the first one; echoes them back when asked. Prints one JSON line at the end.
_SINK = r"""
import json, socket, sys, time
host, port, max_s, idle_s, echo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((host, port))
s.settimeout(0.02)
print("ready", flush=True)
n = 0
first = last = None
deadline = time.monotonic() + max_s
while True:
    now = time.monotonic()
    if now > deadline or (last is not None and now - last > idle_s):
        break
    try:
        data, peer = s.recvfrom(65536)
    except socket.timeout:
        continue
    n += 1
    last = time.monotonic()
    if first is None:
        first = last
    if echo:
        s.sendto(data, peer)
span = (last - first) if first is not None and last is not None else 0.0
print(json.dumps({"received": n, "span_s": span}), flush=True)
"""

# Sends `rate` datagrams/s for `duration` s round-robin over `flows` sockets
# (one source port each), paced against a perf_counter schedule; with
# `replies`, counts the echoes that come back within 0.5 s of the end.
_SOURCE = r"""
import json, socket, sys, time
dst, port, rate, duration, flows, size, replies = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
socks = []
for _ in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, port))
    s.setblocking(False)
    socks.append(s)
payload = b"p" * size
count = int(rate * duration)
errors = got = 0
def drain():
    global got
    for s in socks:
        while True:
            try:
                s.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            got += 1
t0 = time.perf_counter() + 0.005
for i in range(count):
    target = t0 + i / rate
    while True:
        ahead = target - time.perf_counter()
        if ahead <= 0:
            break
        if ahead > 0.002:
            time.sleep(ahead - 0.001)
    try:
        socks[i % flows].send(payload)
    except OSError:
        errors += 1
    if replies and i % 16 == 0:
        drain()
elapsed = time.perf_counter() - t0
if replies:
    end = time.monotonic() + 0.5
    while time.monotonic() < end and got < count - errors:
        drain()
        time.sleep(0.005)
print(json.dumps({"sent": count - errors, "errors": errors, "elapsed_s": elapsed, "replies": got}), flush=True)
"""


@dataclass(frozen=True)
class Offer:
    """What one bounded UDP offer did."""

    offered_pps: float
    sent: int
    received: int
    replies: int
    elapsed_s: float
    span_s: float  # receiver: first to last packet

    @property
    def received_pps(self) -> float:
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def loss_ratio(self) -> float:
        return (self.sent - self.received) / self.sent if self.sent else 0.0


class NsUdp:
    """Bounded UDP sources and sinks inside a testbed (a sends, b receives)."""

    def __init__(self, info: tb.TestbedInfo) -> None:
        self.info = info

    def offer(self, rate_pps: float, duration_s: float, *, port: int = 9400,
              flows: int = 1, size_bytes: int = 64, echo: bool = False,
              dst: str | None = None) -> Offer:
        """Offer `rate_pps` from a to b for `duration_s`; count what b got."""
        assert rate_pps * duration_s <= 200_000 and duration_s <= 5.0, "keep loads small"
        prefix = self.info.prefix
        host = dst or self.info.addrs["b"]
        sink = tb.popen_in("b", [sys.executable, "-c", _SINK, host, str(port),
                                 str(duration_s + 3.0), "0.3", "1" if echo else "0"],
                           prefix=prefix, stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            assert sink.stdout.readline().strip() == "ready"
            source = tb.exec_in("a", [sys.executable, "-c", _SOURCE, host, str(port),
                                      str(rate_pps), str(duration_s), str(flows),
                                      str(size_bytes), "1" if echo else "0"],
                                prefix=prefix, capture_output=True,
                                timeout_s=duration_s + 10.0)
            assert source.returncode == 0, source.stderr
            sent = json.loads(source.stdout)
            out, _ = sink.communicate(timeout=duration_s + 10.0)
            got = json.loads(out.strip().splitlines()[-1])
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait(timeout=5)
        return Offer(offered_pps=rate_pps, sent=sent["sent"], received=got["received"],
                     replies=sent["replies"], elapsed_s=sent["elapsed_s"],
                     span_s=got["span_s"])


def _netns_usable() -> str | None:
    """None when `ip netns` works here, else why not."""
    name = f"pktbcheck{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True,
                       timeout=10)
    except FileNotFoundError:
        return "`ip` (iproute2) is not installed"
    except (subprocess.SubprocessError, OSError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        return f"`ip netns add` fails here: {stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "testbed_config(**kwargs): TestbedConfig fields for the `testbed` fixture")


@pytest.fixture(scope="session")
def _root_skip_reason() -> str | None:
    try:
        tb.require_root()
    except tb.TestbedError:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces"
    return _netns_usable()


@pytest.fixture(autouse=True)
def _skip_root_tests_without_root(request: pytest.FixtureRequest,
                                  _root_skip_reason: str | None) -> None:
    if request.node.get_closest_marker("root") and _root_skip_reason:
        pytest.skip(_root_skip_reason)


@pytest.fixture
def testbed_prefix() -> str:
    """A prefix no other run or test uses: pid plus a counter."""
    return f"pkbt{os.getpid()}x{next(_counter)}"


@pytest.fixture
def make_testbed(testbed_prefix: str) -> Iterator[Callable[..., tb.TestbedInfo]]:
    """Factory: make(**TestbedConfig fields) -> TestbedInfo; all torn down after."""
    made: set[str] = set()

    def make(**fields: Any) -> tb.TestbedInfo:
        fields.setdefault("prefix", testbed_prefix)
        made.add(fields["prefix"])
        return tb.up(tb.TestbedConfig(**fields))

    try:
        yield make
    finally:
        for prefix in made:
            tb.down(prefix)


@pytest.fixture
def testbed(request: pytest.FixtureRequest, testbed_prefix: str
            ) -> Iterator[tb.TestbedInfo]:
    """A testbed shaped by `@pytest.mark.testbed_config(...)` or indirect params."""
    fields: dict[str, Any] = {}
    marker = request.node.get_closest_marker("testbed_config")
    if marker is not None:
        fields.update(marker.kwargs)
    fields.update(getattr(request, "param", None) or {})
    fields.setdefault("prefix", testbed_prefix)
    with tb.testbed(tb.TestbedConfig(**fields)) as info:
        yield info


@pytest.fixture
def ns_udp(testbed: tb.TestbedInfo) -> NsUdp:
    """Bounded UDP traffic helpers over the `testbed` fixture."""
    return NsUdp(testbed)
