"""Server and client over real loopback sockets: sessions, hostile clients, limits."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import pktbench
from pktbench import protocol, wire
from pktbench.address import Target
from pktbench.errors import AuthError, ConnectError, ServerBusyError, ServerRefusedError
from pktbench.protocol import StepParams
from pktbench.session import Client, Server, ServerConfig


class RunningServer:
    def __init__(self, config: ServerConfig) -> None:
        self.lines: list[str] = []
        self.server = Server(config, log=self.lines.append)
        self.server.open()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> Target:
        host, port = self.server.address
        return Target(host, port)

    def close(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
        self.server.close()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = RunningServer(ServerConfig(bind="127.0.0.1", port=0))
    try:
        yield running
    finally:
        running.close()


def rr(rate: float = 2000, duration: float = 0.5, **extra: object) -> StepParams:
    return StepParams(workload="rr", command="ping", rate_pps=rate, duration_s=duration,
                      drain_s=0.3, timeout_s=0.3, **extra)  # type: ignore[arg-type]


def test_rr_and_blast_steps_count_exactly(server):
    with Client(server.target) as client:
        step = client.run_step(rr())
        blast = client.run_step(StepParams(workload="blast", command="none", rate_pps=4000,
                                           duration_s=0.5, drain_s=0.2))
    assert step["sent_packets"] == step["received_packets"] == 1000
    assert step["receiver"]["received"] == 1000
    assert step["latency_us"]["p50"] > 0
    assert blast["sent_packets"] == 2000
    assert blast["receiver"]["received"] == blast["received_packets"] == 2000
    assert blast["lost_packets"] == 0
    assert server.server.stats.steps == 2


def test_many_steps_in_one_session_never_mix(server):
    with Client(server.target) as client:
        counts = [client.run_step(rr(rate=1000, duration=0.2))["received_packets"]
                  for _ in range(4)]
    assert counts == [200] * 4


def test_second_client_is_told_the_server_is_busy(server):
    with Client(server.target) as first:
        with pytest.raises(ServerBusyError, match="busy"):
            Client(server.target).connect()
        assert first.run_step(rr(rate=500, duration=0.2))["received_packets"] == 100
    assert server.server.stats.busy_refusals == 1


def test_step_over_the_servers_limits_is_refused_and_session_goes_on():
    running = RunningServer(ServerConfig(bind="127.0.0.1", port=0, max_rate_pps=5000,
                                         max_duration_s=2))
    try:
        with Client(running.target) as client:
            with pytest.raises(ServerRefusedError, match="limit of 5000 pps"):
                client.run_step(rr(rate=6000))
            with pytest.raises(ServerRefusedError, match="limit of 2 s"):
                client.run_step(rr(rate=100, duration=3))
            assert client.run_step(rr(rate=1000, duration=0.2))["received_packets"] == 200
    finally:
        running.close()


def test_token_is_required_and_checked():
    running = RunningServer(ServerConfig(bind="127.0.0.1", port=0, secret=b"s3cret"))
    try:
        with pytest.raises(AuthError, match="requires a shared secret"):
            Client(running.target).connect()
        with pytest.raises(AuthError, match="refused the secret"):
            Client(running.target, secret=b"wrong").connect()
        with Client(running.target, secret=b"s3cret") as client:
            assert client.run_step(rr(rate=1000, duration=0.2))["received_packets"] == 200
    finally:
        running.close()
    assert running.server.stats.auth_failures == 1


def test_refused_connection_names_the_fix():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectError, match=r"is `pktbench serve` running on 127.0.0.1:\d+"):
        Client(Target("127.0.0.1", port)).connect()


def test_version_mismatch_is_refused(server):
    sock = socket.create_connection((server.target.host, server.target.port), timeout=5)
    try:
        conn = protocol.ControlConnection(protocol.Role.CLIENT)
        sock.sendall(conn.send(protocol.Hello(version=99)))
        while True:
            conn.receive_data(sock.recv(65536))
            event = conn.next_event()
            if event is not protocol.NEED_DATA:
                break
    finally:
        sock.close()
    assert isinstance(event, protocol.Error) and event.code == "version_mismatch"


def test_garbage_on_the_control_port_does_not_hurt_the_server(server):
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\xff" * 64, b"\x00\x10\x00\x00" + b"x" * 100):
        with socket.create_connection((server.target.host, server.target.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(3)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    with Client(server.target) as client:
        assert client.run_step(rr(rate=1000, duration=0.2))["received_packets"] == 200
    assert server.server.stats.protocol_errors >= 3


def test_data_connection_with_a_wrong_token_is_rejected(server):
    with socket.create_connection((server.target.host, server.target.port), timeout=5) as s:
        s.sendall(wire.pack_data_preamble(0, 12345))
        s.settimeout(3)
        assert s.recv(10) == b""
    time.sleep(0.1)
    assert server.server.stats.rejected_data_connections == 1


def test_flood_of_garbage_changes_nothing_but_the_drop_counters(server):
    stop = threading.Event()
    flooded = [0]

    def flood() -> None:
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        payloads = [os.urandom(n) for n in (1, 20, 64, 300)]
        payloads.append(wire.build_request(wire.COMMAND_PING, 64, token=1, seq=0, send_ns=0))
        deadline = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < deadline:
            for payload in payloads:
                junk.sendto(payload, (server.target.host, server.target.port))
                flooded[0] += 1
            time.sleep(0.0005)
        junk.close()

    with Client(server.target) as client:
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            step = client.run_step(rr(rate=2000, duration=1.0))
        finally:
            stop.set()
            flooder.join()
    drops = step["receiver"]["drops"]
    assert step["received_packets"] == step["sent_packets"] == 2000
    assert step["receiver"]["replied"] == 2000  # nothing was answered but our requests
    assert sum(drops.values()) > 0
    assert drops["bad_source"] + drops["bad_token"] > 0


def test_a_client_killed_mid_step_leaves_the_server_serving(server):
    code = (
        "import sys; from pktbench.session import Client; from pktbench.address import Target;"
        "from pktbench.protocol import StepParams;"
        f"c = Client(Target('127.0.0.1', {server.target.port})); c.connect();"
        "print('armed', flush=True);"
        "c.run_step(StepParams(workload='rr', command='ping', rate_pps=2000, duration_s=20))"
    )
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(pktbench.__file__)))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=package_root)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "armed"
        time.sleep(1.0)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    deadline = time.monotonic() + 10
    while server.server.in_session and time.monotonic() < deadline:
        time.sleep(0.05)
    with Client(server.target) as client:
        assert client.run_step(rr(rate=1000, duration=0.3))["received_packets"] == 300
    assert any("dropped" in line for line in server.lines)
