"""The server against a hostile client, over real loopback sockets.

Each test plays one attack a client can make with nothing but the protocol
and the data port, then checks that the server refused or counted it, went
quiet after the step, and still measures a legitimate client with no loss
at 2,000 pps. docs/security.md lists the attacks and what each did before.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import pktbench
from pktbench import protocol, wire
from pktbench.address import Target
from pktbench.errors import PktbenchError
from pktbench.protocol import StepParams
from pktbench.session import Client, _receive, _send

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pktbench.__file__)))

LEGIT = StepParams(workload="rr", command="ping", rate_pps=2000, duration_s=1.0,
                   drain_s=0.2, timeout_s=0.5)


class ChildServer:
    """`pktbench serve` in a child process: an attack that freezes it cannot
    freeze the test, and its CPU time is its own."""

    def __init__(self, child: subprocess.Popen[str], target: Target, log: Path) -> None:
        self.child = child
        self.target = target
        self.log = log

    @property
    def address(self) -> tuple[str, int]:
        return self.target.host, self.target.port

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def hostile_server(*options: str) -> Iterator[ChildServer]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with open(log, "w") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", "pktbench", "serve", "--bind", "127.0.0.1", "--port", "0",
                 *options], stdout=subprocess.PIPE, stderr=err, text=True, cwd=PACKAGE_ROOT)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("listening on "), line
            yield ChildServer(child, Target("127.0.0.1", int(line.rsplit(":", 1)[1])), log)
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()


def assert_legit_client_measured(server: ChildServer) -> None:
    """Within 2 s of the attack a fresh client connects, and its step loses nothing."""
    started = time.monotonic()
    with Client(server.target, connect_timeout_s=2.0) as client:
        answered = time.monotonic() - started
        result = client.run_step(LEGIT)
    assert answered < 2.0, f"the server took {answered:.1f} s to answer a client"
    assert result["sent_packets"] == 2000
    assert result["lost_packets"] == 0, result


def assert_quiet(server: ChildServer, seconds: float = 1.0, *, after_s: float = 0.0) -> None:
    """The server uses under 5 % of a core once the step is over (measured
    over `seconds`, starting `after_s` from now)."""
    time.sleep(after_s)
    before = server.cpu_s()
    time.sleep(seconds)
    used = (server.cpu_s() - before) / seconds
    assert used < 0.05, f"{100 * used:.0f} % of a core with no step running"


def raw_step_request(client: Client, params: dict[str, Any]) -> protocol.Event:
    assert client._control is not None  # noqa: SLF001 - the attacker speaks raw protocol
    _send(client._control, client._cc, protocol.StepRequest(params))  # noqa: SLF001
    return _receive(client._control, client._cc, 5.0)  # noqa: SLF001


def blast(client: Client, token: int, seqs: list[int], size: int = 64) -> None:
    for seq in seqs:
        client.data_socket.send(wire.build_request(wire.COMMAND_NONE, size, token=token,
                                                   seq=seq, send_ns=time.monotonic_ns()))


BLAST = StepParams(workload="blast", command="none", rate_pps=1000, duration_s=0.5,
                   drain_s=0.1, timeout_s=0.5)


# -- finding 5: a step parameter the engine's clock cannot hold -----------------

@pytest.mark.parametrize("key, value", [("duration_s", 1e300), ("warmup_s", 1e300),
                                        ("rate_pps", 1e300), ("count", 1 << 70)])
def test_a_huge_step_parameter_is_refused_with_a_reason(key: str, value: object) -> None:
    with hostile_server() as server:
        with Client(server.target) as client:
            params = BLAST.to_dict() | {key: value, "client_port": 1}
            answer = raw_step_request(client, params)
            assert isinstance(answer, protocol.Error) and answer.code == "refused", answer
            assert key in answer.message and "\n" not in answer.message
        assert_legit_client_measured(server)


# -- finding 1: a StepStop count the step could never have sent --------------------

@pytest.mark.parametrize("sent", [(1 << 64) - 1, 2_500_000_000])
def test_an_implausible_sent_count_is_refused_and_freezes_nothing(sent: int) -> None:
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(BLAST)
            blast(client, armed.token, list(range(100)))
            started = time.monotonic()
            with pytest.raises(PktbenchError):
                client.end_step({"sent": sent}, timeout_s=5.0)
            assert time.monotonic() - started < 2.0
        assert_quiet(server)
        assert_legit_client_measured(server)


def test_loss_accounting_work_is_bounded_by_the_window_not_the_range() -> None:
    # In a child: a loop that holds the GIL would freeze this process too.
    code = (
        f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r})\n"  # the package under test
        "import socket\n"
        "from pktbench import _engine\n"
        "from pktbench.engine import pack_sockaddr\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "r = _engine.Responder(s.fileno(), peer=pack_sockaddr('127.0.0.1', 9), token=1,\n"
        "                      command=0, sink=True, max_size=64)\n"
        "r.finish((1 << 64) - 1)\n"
        "c = dict(zip(_engine.RESPONDER_COUNTERS, r.counters.tolist()))\n"
        "print(c['lost'], c['loss_episodes'], c['loss_max_run'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=10, check=True)
    assert done.stdout.split() == [str((1 << 64) - 1), "1", str((1 << 64) - 1)]


# -- finding 2: a datagram whose seq jumps far past the step ----------------------

@pytest.mark.parametrize("seq", [1 << 63, 2_500_000_000])
def test_a_huge_seq_is_counted_as_bad_and_the_responder_goes_quiet(seq: int) -> None:
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(BLAST)
            blast(client, armed.token, list(range(50)) + [seq] + list(range(50, 100)))
            receiver = client.end_step({"sent": 100}, timeout_s=5.0)
        assert receiver["drops"]["bad_seq"] == 1, receiver["drops"]
        assert receiver["received"] == 100
        assert receiver["lost"] == 0
        time.sleep(0.5)
        assert_quiet(server)
        assert_legit_client_measured(server)


# -- finding 8: pcapng blocks too short for their fields ----------------------------

def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _capture_with_short_blocks() -> bytes:
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _pcapng_block(1, struct.pack("<HHI", 101, 0, 0))  # raw IP
    frame = (b"\x45\x00" + struct.pack("!H", 28 + 64) + bytes(4) + b"\x40\x11" + bytes(2)
             + socket.inet_aton("198.18.0.1") + socket.inet_aton("198.18.0.2")
             + struct.pack("!HHHH", 40000, wire.DEFAULT_PORT, 8 + 64, 0)
             + wire.build_request(wire.COMMAND_NONE, 64, token=7, seq=0, send_ns=0))

    def epb(seq_frame: bytes) -> bytes:
        return _pcapng_block(6, struct.pack("<IIIII", 0, 0, 1, len(seq_frame), len(seq_frame))
                             + seq_frame)

    short = _pcapng_block(6, struct.pack("<III", 0, 0, 1))  # 24 bytes: no caplen, no origlen
    return shb + idb + epb(frame) + short + epb(frame) + short


def test_decode_counts_short_blocks_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "short.pcapng"
    path.write_bytes(_capture_with_short_blocks())
    done = subprocess.run([sys.executable, "-m", "pktbench", "decode", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=PACKAGE_ROOT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stdout.splitlines() if "malformed" in line]
    assert len(lines) == 1 and lines[0].startswith("2 malformed blocks"), done.stdout
    # the two packets around the short blocks are read, and only they
    assert "2 packets: 2 pktbench" in done.stdout, done.stdout


# -- finding 4: receive-buffer drops between steps are not the next step's ----------

def _socket_drops_on_port(port: int) -> int:
    """The kernel's drops of every UDP socket bound to `port` (/proc/net/udp{,6})."""
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        with open(path, encoding="ascii") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[12])
    return total


def test_drops_between_steps_are_counted_apart_from_the_next_step() -> None:
    with hostile_server() as server:
        with Client(server.target) as client:
            flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                before = _socket_drops_on_port(server.target.port)
                junk = bytes(64)
                for _ in range(60_000):  # far more than the 4 MiB buffer holds
                    flood.sendto(junk, server.address)
            finally:
                flood.close()
            idle_drops = _socket_drops_on_port(server.target.port) - before
            assert idle_drops > 0, "the flood did not overflow the server's buffer"
            at_start = _socket_drops_on_port(server.target.port)
            result = client.run_step(LEGIT)
            during = _socket_drops_on_port(server.target.port) - at_start
            assert result["receiver"]["rcvbuf_errors"] == during == 0, result["receiver"]
            assert result["lost_packets"] == 0
        deadline = time.monotonic() + 5
        while "session " not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        (line,) = [x for x in server.log.read_text().splitlines() if x.startswith("session ")]
        between = line.split("between steps:", 1)[1]
        drained = int(between.split("unsolicited datagrams")[0].strip())
        dropped = int(between.split(",")[1].split("receive-buffer drops")[0].strip())
        assert drained > 0 and dropped >= idle_drops, line
        assert_legit_client_measured(server)


# -- finding 6: IP reassembly failures named per step ---------------------------------

def _reassembly_fails() -> int:
    with open("/proc/net/snmp", encoding="ascii") as handle:
        rows = [line.split() for line in handle if line.startswith("Ip:")]
    return int(dict(zip(rows[0], rows[1]))["ReasmFails"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a raw socket to send fragments")
def test_reassembly_failures_during_a_step_are_reported_and_named() -> None:
    from pktbench.knee import attribute
    from pktbench.report._common import step_verdict

    raw_sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(BLAST)
            kernel_before = _reassembly_fails()
            try:
                # First fragments whose rest never comes: past the kernel's
                # fragment memory limit, incomplete datagrams are evicted as
                # reassembly failures.
                for ident in range(6000):
                    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 1480, ident, 0x2000,
                                         64, socket.IPPROTO_UDP, 0,
                                         socket.inet_aton("127.0.0.1"),
                                         socket.inet_aton("127.0.0.1"))
                    udp = struct.pack("!HHHH", 40000, server.target.port, 3008, 0)
                    raw_sock.sendto(header + udp + bytes(1472), ("127.0.0.1", 0))
            finally:
                raw_sock.close()
            blast(client, armed.token, list(range(100)))
            receiver = client.end_step({"sent": 100}, timeout_s=5.0)
            kernel_delta = _reassembly_fails() - kernel_before
        fails = receiver["ip_reassembly"]["fails"]
        assert 0 < fails <= kernel_delta + 100, (fails, kernel_delta)
        step = {"lost_packets": fails, "sent_packets": fails + 100,
                "receiver": receiver, "failures": ["loss 50 % > 1 %"]}
        assert attribute(step) == "receiver-reassembly-failed"
        step["attribution"] = attribute(step)
        assert step_verdict(step).endswith("(receiving host: IP reassembly failed)")
        assert_legit_client_measured(server)


# -- finding 3: limits on the traffic itself ------------------------------------------

def flood(client: Client, token: int, *, command: int, pps: float, seconds: float,
          size: int = 64) -> int:
    """Send valid datagrams of the step at `pps` for `seconds` (in bursts
    every 10 ms); returns how many were sent."""
    sock, sent, start = client.data_socket, 0, time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        due = int((now - start) * pps)
        while sent < due:
            try:
                sock.send(wire.build_request(command, size, token=token, seq=sent,
                                             send_ns=time.monotonic_ns()))
            except (BlockingIOError, ConnectionRefusedError):
                pass
            sent += 1
        time.sleep(0.01)
    return sent


def drain_replies(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return got
        except OSError:
            continue
        got += 1


def test_a_step_blasting_past_its_rate_is_answered_at_its_rate() -> None:
    asked = StepParams(workload="rr", command="ping", rate_pps=1000, duration_s=2.0,
                       drain_s=0.2, timeout_s=0.5)
    with hostile_server() as server:
        with Client(server.target, buffer_bytes=16 << 20) as client:
            armed = client.begin_step(asked)
            started = time.monotonic()
            sent = flood(client, armed.token, command=wire.COMMANDS["ping"], pps=50_000,
                         seconds=2.0)
            elapsed = time.monotonic() - started
            time.sleep(0.2)
            replies = drain_replies(client.data_socket)
            receiver = client.end_step({"sent": 2000}, timeout_s=5.0)
        rate, burst = asked.rate_cap() or (0.0, 0.0)
        assert sent > 10 * 1000 * elapsed, sent  # the attack did blast, at 10x the rate or more
        assert receiver["replied"] == replies, (receiver, replies)
        assert 0.5 * 1000 * elapsed < replies <= rate * (elapsed + 0.3) + burst, (replies, elapsed)
        assert receiver["over_rate"] >= sent - replies - receiver["rcvbuf_errors"] - 100
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


def test_an_rr_tcp_step_pipelining_past_its_rate_is_answered_at_its_rate() -> None:
    from pktbench.workloads.resp import connect_data
    asked = StepParams(workload="rr-tcp", command="ping", rate_pps=1000, duration_s=2.0,
                       drain_s=0.2, timeout_s=0.5, connections=1)
    ping = b"*1\r\n$4\r\nPING\r\n"
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(asked)
            (sock,) = connect_data(client.server_address, socket.AF_INET, 1, armed.token, 5.0)
            sock.setblocking(False)
            written = answered = 0
            started = time.monotonic()
            try:
                while time.monotonic() - started < 2.0:  # as fast as the socket takes them
                    try:
                        written += sock.send(ping * 256) // len(ping)
                    except BlockingIOError:
                        pass
                    try:
                        answered += sock.recv(1 << 20).count(b"+PONG")
                    except BlockingIOError:
                        time.sleep(0.001)
                elapsed = time.monotonic() - started
            finally:
                sock.close()
            receiver = client.end_step({"sent": 2000}, timeout_s=5.0)
        rate, burst = asked.rate_cap() or (0.0, 0.0)
        assert written > 10 * answered, (written, answered)  # the attack did pipeline ahead
        assert 0.5 * 1000 * elapsed < answered <= rate * (elapsed + 0.3) + burst, \
            (answered, elapsed)
        assert receiver["replied"] <= rate * (elapsed + 0.5) + burst, receiver
        assert receiver["throttled"] > 0, receiver
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


def test_a_step_that_never_sends_stepstop_ends_at_the_deadline() -> None:
    asked = StepParams(workload="rr", command="ping", rate_pps=1000, duration_s=1.0,
                       drain_s=60.0, timeout_s=60.0)
    deadline_s = asked.hard_limit_s
    assert deadline_s < 7.0  # the slack is fixed: drain_s and timeout_s do not add to it
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(asked)
            armed_at = time.monotonic()
            # keep asking, never StepStop; a legitimate client is told busy meanwhile
            flood(client, armed.token, command=wire.COMMANDS["ping"], pps=1000, seconds=2.0)
            with pytest.raises(PktbenchError, match="busy"):
                Client(server.target).connect()
            sock = client.data_socket
            answered_late = 0
            while time.monotonic() < armed_at + deadline_s + 1.5:
                drain_replies(sock)
                flood(client, armed.token, command=wire.COMMANDS["ping"], pps=1000,
                      seconds=0.1)
                if time.monotonic() > armed_at + deadline_s + 0.5:
                    time.sleep(0.05)
                    answered_late += drain_replies(sock)
            assert answered_late == 0, "the responder answered past the step's deadline"
        assert "no StepStop by the step's deadline" in server.log.read_text()
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


def bulk_stream(server: ChildServer, token: int) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=5.0)
    sock.sendall(wire.pack_data_preamble(0, token))
    return sock


def test_reverse_bulk_stops_writing_after_its_window() -> None:
    asked = StepParams(workload="bulk", command="none", duration_s=2.0, drain_s=60.0,
                       timeout_s=60.0, reverse=True)
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(asked)
            sock = bulk_stream(server, armed.token)
            buffer = bytearray(1 << 20)
            first = last = None
            sock.settimeout(0.5)
            try:
                # never StepStop: read whatever the server writes, for as long as it does
                while time.monotonic() < (first or time.monotonic()) + 6.0:
                    try:
                        if not sock.recv_into(buffer):
                            break
                    except socket.timeout:
                        continue
                    last = time.monotonic()
                    first = first or last
            finally:
                sock.close()
        assert first is not None and last is not None
        assert last - first < asked.duration_s + protocol.BULK_TAIL_MAX_S + 0.5, last - first
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_bulk_asked_a_low_rate_is_held_to_it(reverse: bool) -> None:
    asked = StepParams(workload="bulk", command="none", rate_pps=100, size_bytes=1000,
                       duration_s=2.0, drain_s=0.2, reverse=reverse)
    rate, burst = asked.rate_cap() or (0.0, 0.0)
    with hostile_server() as server:
        with Client(server.target) as client:
            armed = client.begin_step(asked)
            sock = bulk_stream(server, armed.token)
            started = time.monotonic()
            moved = 0
            buffer = bytearray(1 << 20)
            sock.settimeout(0.05)
            try:
                while time.monotonic() < started + 2.0:  # as fast as the server lets us
                    try:
                        moved += sock.recv_into(buffer) if reverse else sock.send(buffer)
                    except socket.timeout:
                        pass
            except OSError:
                pass
            elapsed = time.monotonic() - started
            server_end = client.end_step({"stream_ids": [0]}, timeout_s=10.0)
            sock.close()
        counted = server_end["streams"][0]["total_bytes"]
        allowed = (burst + rate * (elapsed + 0.5)) * asked.size_bytes
        assert 0.5 * 100 * 1000 * elapsed < counted <= allowed, (counted, allowed)
        if reverse:
            assert moved <= counted
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


# -- finding 7: memory bounded by configuration ---------------------------------------

def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_multiflow_step(client: Client, flows: int, size: int) -> tuple[protocol.Event,
                                                                      list[socket.socket]]:
    socks = []
    for _ in range(flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    params = StepParams(workload="blast", command="none", rate_pps=flows * 100, streams=flows,
                        size_bytes=size, duration_s=1.0, drain_s=0.1).to_dict()
    params["client_port"] = client.data_socket.getsockname()[1]
    params["client_ports"] = [s.getsockname()[1] for s in socks]
    return raw_step_request(client, params), socks


def test_a_step_over_the_buffer_budget_is_refused_in_one_line() -> None:
    with hostile_server("--max-step-memory", "64M") as server:
        with Client(server.target) as client:
            answer, socks = big_multiflow_step(client, 128, wire.MAX_DATAGRAM)
            for sock in socks:
                sock.close()
        assert isinstance(answer, protocol.Error) and answer.code == "refused", answer
        assert "budget of 64.0 MiB" in answer.message and "\n" not in answer.message
        assert_legit_client_measured(server)


def test_memory_after_a_large_step_is_back_to_idle() -> None:
    flows, size, per_flow = 128, wire.MAX_DATAGRAM, 8
    with hostile_server() as server:
        assert_legit_client_measured(server)  # everything a step imports is loaded
        idle = vm_rss_bytes(server.child.pid)
        peak = idle
        for _ in range(2):  # the second step is the one glibc used to serve from its heap
            with Client(server.target) as client:
                answer, socks = big_multiflow_step(client, flows, size)
                try:
                    assert isinstance(answer, protocol.StepReady), answer
                    token = client_token(client, answer.step_id)
                    for sock in socks:  # fill one receive batch of every flow
                        for seq in range(per_flow):
                            sock.sendto(wire.build_request(wire.COMMAND_NONE, size, token=token,
                                                           seq=seq, send_ns=time.monotonic_ns()),
                                        server.address)
                    time.sleep(0.3)
                    peak = max(peak, vm_rss_bytes(server.child.pid))
                    _send(client._control, client._cc,  # noqa: SLF001
                          protocol.StepStop({"sent": flows * per_flow,
                                             "sent_per_stream": [per_flow] * flows}))
                    result = _receive(client._control, client._cc, 10.0)  # noqa: SLF001
                    assert isinstance(result, protocol.StepResult), result
                    assert result.receiver["received"] == flows * per_flow, result.receiver
                finally:
                    for sock in socks:
                        sock.close()
        time.sleep(1.0)
        after = vm_rss_bytes(server.child.pid)
        assert peak > idle + flows * per_flow * size // 2, (idle, peak)  # the step did use it
        assert after <= idle * 1.10, f"idle {idle >> 20} MiB, after the step {after >> 20} MiB"
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)


def client_token(client: Client, step_id: int) -> int:
    from pktbench.session import data_token
    return data_token(client._session_token, step_id)  # noqa: SLF001


# -- the counters a client drives, reported ---------------------------------------------

def test_every_counter_is_in_the_stats_file_and_on_sigusr1(tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    with hostile_server("--stats-file", str(stats_path)) as server:
        assert json.loads(stats_path.read_text())["sessions"] == 0  # written at start
        with Client(server.target) as client:
            junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for _ in range(50):  # between steps: drained and counted at the next arm
                    junk.sendto(bytes(64), server.address)
            finally:
                junk.close()
            stray = socket.create_connection(server.address, timeout=2.0)
            stray.sendall(wire.pack_data_preamble(0, 12345))  # no step has this token
            stray.close()
            result = client.run_step(LEGIT)
            assert result["lost_packets"] == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stats = json.loads(stats_path.read_text())
            if stats["sessions"] == 1 and not stats["in_session"]:
                break
            time.sleep(0.05)
        assert stats["steps"] == 1 and stats["rejected_data_connections"] == 1, stats
        assert stats["between_steps"]["unsolicited_datagrams"] == 50, stats
        assert set(stats["drops"]) == set(wire.DROP_REASONS)
        assert stats["limits"]["max_step_buffer_bytes"] == 256 << 20
        server.child.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while "stats: " not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        (line,) = [x for x in server.log.read_text().splitlines() if x.startswith("stats: ")]
        assert "1 rejected data connections" in line and "50 unsolicited datagrams" in line
        assert_legit_client_measured(server)


# -- finding 9: a burst of connects ------------------------------------------------------

def test_a_burst_of_connects_leaves_a_legit_client_measured() -> None:
    with hostile_server() as server:
        started = time.monotonic()
        for _ in range(1000):
            socket.create_connection(server.address, timeout=10).close()
        assert time.monotonic() - started < 5.0
        assert_legit_client_measured(server)
        assert_quiet(server, after_s=3.0)
