"""The server under hostile load and host limits, over real loopback sockets.

Idle crowds, handshakes that never finish, back-to-back sessions, a host
out of threads or descriptors: the next legitimate client is served, and
never told `busy` by anyone but a real session.
"""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import pktbench
from pktbench import protocol
from pktbench.address import Target
from pktbench.errors import ServerBusyError
from pktbench.protocol import StepParams
from pktbench.session import HELLO_TIMEOUT_S, Client, LocalServer, ServerConfig
from engine_support import serving

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pktbench.__file__)))
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a cgroup")


def tiny_step() -> StepParams:
    # Generous waits: these tests are about who gets served, not how fast.
    return StepParams(workload="rr", command="ping", rate_pps=1000, duration_s=0.1,
                      drain_s=0.3, timeout_s=1.0)


@contextmanager
def cli_server(preexec: Callable[[], None] | None = None) -> Iterator[tuple[subprocess.Popen[str],
                                                                         Target]]:
    """`pktbench serve` on a free loopback port in a child process."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pktbench", "serve", "--bind", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=PACKAGE_ROOT,
        preexec_fn=preexec)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("listening on "), line
        yield child, Target("127.0.0.1", int(line.rsplit(":", 1)[1]))
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()


@contextmanager
def pids_cgroup(limit: int) -> Iterator[Path]:
    """A fresh pids cgroup (v1 or v2) with pids.max = `limit`, removed after."""
    name = f"pktbench-test-{os.getpid()}"
    v1 = Path("/sys/fs/cgroup/pids")
    v2 = Path("/sys/fs/cgroup")
    if (v1 / "cgroup.procs").exists():
        group = v1 / name
    elif "pids" in (v2 / "cgroup.controllers").read_text(errors="replace").split():
        subtree = v2 / "cgroup.subtree_control"
        if "pids" not in subtree.read_text().split():
            subtree.write_text("+pids")
        group = v2 / name
    else:
        pytest.skip("no pids cgroup controller on this host")
    group.mkdir()
    try:
        (group / "pids.max").write_text(str(limit))
        yield group
    finally:
        for _ in range(50):  # the server's process may take a moment to be reaped
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def hold_idle_connections(target: Target, count: int) -> list[socket.socket]:
    idle = []
    for _ in range(count):
        idle.append(socket.create_connection((target.host, target.port), timeout=5))
    return idle


@root_only
def test_idle_crowd_in_a_small_pids_cgroup_leaves_the_server_serving():
    with pids_cgroup(40) as group:
        procs = group / "cgroup.procs"

        def join_cgroup() -> None:
            procs.write_text(str(os.getpid()))

        with cli_server(join_cgroup) as (child, target):
            idle = hold_idle_connections(target, 60)
            try:
                time.sleep(0.5)  # a thread per connection would have hit the limit by now
                assert child.poll() is None, "the server died under 60 idle connections"
                with Client(target) as client:
                    assert client.run_step(tiny_step())["received_packets"] == 100
                assert child.poll() is None
            finally:
                for sock in idle:
                    sock.close()


def test_out_of_descriptors_the_server_refuses_and_goes_on():
    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    with cli_server(few_descriptors) as (child, target):
        idle = hold_idle_connections(target, 60)
        try:
            time.sleep(0.5)
            assert child.poll() is None, "the server died when it ran out of descriptors"
            with Client(target) as client:
                assert client.run_step(tiny_step())["received_packets"] == 100
        finally:
            for sock in idle:
                sock.close()


def test_handshakes_that_never_finish_never_make_a_client_see_busy():
    secret = b"s3cret"
    stop = threading.Event()
    attempts = [0]

    def never_answers() -> None:
        hello = protocol.ControlConnection(protocol.Role.CLIENT).send(protocol.Hello())
        while not stop.is_set():
            try:
                with socket.create_connection(target, timeout=10) as sock:
                    attempts[0] += 1
                    sock.sendall(hello)
                    while not stop.is_set() and sock.recv(4096):
                        pass  # the challenge arrives and is never answered
            except OSError:
                time.sleep(0.05)

    def drips_hello() -> None:
        hello = protocol.ControlConnection(protocol.Role.CLIENT).send(protocol.Hello())
        while not stop.is_set():
            try:
                with socket.create_connection(target, timeout=10) as sock:
                    attempts[0] += 1
                    for byte in hello:
                        if stop.is_set():
                            break
                        sock.sendall(bytes([byte]))
                        time.sleep(0.3)
            except OSError:
                time.sleep(0.05)

    with serving(ServerConfig(bind="127.0.0.1", port=0, secret=secret)) as server:
        target = server.address
        attackers = [threading.Thread(target=fn, daemon=True)
                     for fn in (never_answers, drips_hello) * 4]
        for thread in attackers:
            thread.start()
        busy = sessions = 0
        try:
            time.sleep(0.3)  # every attacker holds a connection before we start
            until = time.monotonic() + HELLO_TIMEOUT_S + 2.0  # past the first expiries
            while time.monotonic() < until:
                try:
                    with Client(Target(*target), secret=secret) as client:
                        if sessions % 10 == 0:
                            assert client.run_step(tiny_step())["received_packets"] == 100
                    sessions += 1
                except ServerBusyError:
                    busy += 1
                time.sleep(0.02)
        finally:
            stop.set()
            for thread in attackers:
                thread.join(timeout=15)
        stats = server.stats
    assert busy == 0
    assert sessions > 20
    assert attempts[0] >= 8
    assert stats.handshake_timeouts >= 8  # the attackers were cut off, not served


def test_back_to_back_sessions_never_see_busy():
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        target = Target(*server.address)
        busy = 0
        for index in range(100):
            try:
                with Client(target) as client:
                    if index % 25 == 0:
                        assert client.run_step(tiny_step())["received_packets"] == 100
            except ServerBusyError:
                busy += 1
        assert server.stats.sessions == 100 - busy
    assert busy == 0


def test_a_burst_of_connects_is_queued_not_dropped():
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        address = server.address
        started = time.monotonic()
        for _ in range(1000):
            socket.create_connection(address, timeout=10).close()
        elapsed = time.monotonic() - started
        with Client(Target(*address)) as client:
            assert client.run_step(tiny_step())["received_packets"] == 100
    # A SYN dropped from a full backlog is retried after 1 s: one such
    # retry per hundred connects would already cost 10 s.
    assert elapsed < 5.0, f"1000 connect/close took {elapsed:.1f} s"


def test_the_log_reports_the_servers_counters():
    lines: list[str] = []
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        server._log = lines.append  # noqa: SLF001 - serving() mutes the log
        with Client(Target(*server.address)) as client:
            client.run_step(tiny_step())
    session_lines = [line for line in lines if line.startswith("session ")]
    assert session_lines, lines
    assert "rejected data connections" in session_lines[-1]
    assert "unsolicited datagrams" in session_lines[-1]


def test_a_server_beyond_loopback_without_a_token_warns():
    lines: list[str] = []
    from pktbench.session import Server

    with Server(ServerConfig(bind="0.0.0.0", port=0), log=lines.append):
        pass
    with Server(ServerConfig(bind="127.0.0.1", port=0), log=lines.append):
        pass
    with Server(ServerConfig(bind="0.0.0.0", port=0, secret=b"x"), log=lines.append):
        pass
    assert len(lines) == 1 and lines[0].startswith("warning:") and "token" in lines[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_embedded_server_leaves_with_its_parent(how):
    code = ("import sys, time; from pktbench.session import LocalServer\n"
            "server = LocalServer(pin=False); server.start()\n"
            "print(server.process.pid, server.port, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=PACKAGE_ROOT)
    try:
        assert parent.stdout is not None
        pid, port = (int(x) for x in parent.stdout.readline().split())
        with Client(Target("127.0.0.1", port)) as client:  # it serves while the parent lives
            assert client.run_step(tiny_step())["received_packets"] == 100
        parent.send_signal(how)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone = not _alive(pid)
        if not gone:
            os.kill(pid, signal.SIGKILL)
        assert gone, "the embedded server outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_the_embedded_server_is_started_by_function_and_pinned():
    ours = os.sched_getaffinity(0)
    with LocalServer() as server:
        assert server.process is not None
        command = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
        assert any(b"serve_for_parent" in part for part in command)
        assert b"-m" not in command and b"serve" not in command
        if len(ours) >= 2:
            assert not os.sched_getaffinity(0) & os.sched_getaffinity(server.process.pid)
        with Client(server.target) as client:
            assert client.run_step(tiny_step())["received_packets"] == 100
    assert os.sched_getaffinity(0) == ours  # our own CPUs are given back
