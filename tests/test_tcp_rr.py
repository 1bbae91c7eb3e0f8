"""rr-tcp: the RESP framing, the client engine and our responder on loopback.

Layers: RESP parsers on bytes (golden cases and hypothesis properties), the
client against small scripted servers (pipelining, waiting for a window
slot, error replies, a server that vanishes or speaks something else), the
responder against raw sockets, and whole steps through `pktbench serve`.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_support import serving
from hypothesis import given
from hypothesis import strategies as st

from pktbench import engine, knee, wire
from pktbench.workloads import resp as tcp_rr
from pktbench.address import Target
from pktbench.errors import ConfigError, ConnectError, RemoteProtocolError
from pktbench.protocol import StepParams, validate_step_params
from pktbench.workloads.redis import encode_command
from pktbench.session import Client, Server, ServerConfig

PING = wire.resp_command(wire.COMMAND_PING)


# --------------------------------------------------------------------------
# RESP framing
# --------------------------------------------------------------------------

def test_replies_golden() -> None:
    data = (b"+PONG\r\n" b"-ERR no\r\n" b":-42\r\n" b"$3\r\nabc\r\n" b"$-1\r\n" b"$0\r\n\r\n"
            b"*-1\r\n" b"*0\r\n" b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n")
    values, status = engine.loops.parse_replies(data)
    assert status == "complete"
    assert [kind for _, kind in values] == ["+", "-", ":", "$", "$", "$", "*", "*", "*"]
    assert sum(length for length, _ in values) == len(data)
    assert values[-1][0] == len(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n")


@pytest.mark.parametrize("data", [
    b"PONG\r\n",            # no type byte
    b"+PONG\rX",            # CR without LF
    b"$3\r\nabcd\r\n",      # bulk longer than its length
    b"$-2\r\n",             # negative length other than -1
    b":12a\r\n",            # not a number
    b"*-5\r\n",
    b"$99999999999999999999\r\n",
    b"%1\r\n",              # RESP3 map: not spoken
])
def test_replies_malformed(data: bytes) -> None:
    assert engine.loops.parse_replies(data) == ([], "malformed")


def test_commands_golden() -> None:
    data = (b"*1\r\n$4\r\nping\r\n" b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
            b"*3\r\n$3\r\nSeT\r\n$1\r\nk\r\n$2\r\nvv\r\n" b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n"
            b"*1\r\n$3\r\nGET\r\n" b"*1\r\n$4\r\nINFO\r\n")
    commands, status = engine.loops.parse_commands(data)
    assert status == "complete"
    assert [command for _, command in commands] == [
        wire.COMMAND_PING, wire.COMMAND_GET, wire.COMMAND_SET, wire.COMMAND_PING,
        wire.COMMAND_NONE,  # GET without a key: refused
        wire.COMMAND_NONE]
    for command in ("ping", "get", "set"):
        request = tcp_rr.request_bytes(command, 200)
        assert engine.loops.parse_commands(request) == ([(len(request), wire.COMMANDS[command])],
                                                "complete")


@pytest.mark.parametrize("data", [b"PING\r\n", b"*0\r\n", b"*1\r\n:1\r\n", b"*1\r\n$-1\r\n",
                                  b"*1\r\n$4\r\nPINGX\r\n"])
def test_commands_malformed(data: bytes) -> None:
    assert engine.loops.parse_commands(data) == ([], "malformed")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_line = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
resp_values = st.recursive(
    st.one_of(
        _line.map(lambda b: b"+" + b + b"\r\n"),
        _line.map(lambda b: b"-" + b + b"\r\n"),
        st.integers(-(10**17), 10**17).map(lambda i: b":%d\r\n" % i),
        st.binary(max_size=64).map(_bulk),
        st.just(b"$-1\r\n"),
        st.just(b"*-1\r\n"),
    ),
    lambda children: st.lists(children, max_size=5).map(
        lambda items: b"*%d\r\n" % len(items) + b"".join(items)),
    max_leaves=20,
)


@given(st.lists(resp_values, min_size=1, max_size=8))
def test_replies_split_exactly(values: list[bytes]) -> None:
    parsed, status = engine.loops.parse_replies(b"".join(values))
    assert status == "complete"
    assert [length for length, _ in parsed] == [len(v) for v in values]
    assert [kind for _, kind in parsed] == [chr(v[0]) for v in values]


@given(resp_values, st.data())
def test_reply_prefix_is_incomplete(value: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(value) - 1))
    assert engine.loops.parse_replies(value[:cut]) == ([], "incomplete" if cut else "complete")


@given(st.binary(max_size=2000))
def test_replies_any_bytes(data: bytes) -> None:
    values, status = engine.loops.parse_replies(data)
    consumed = sum(length for length, _ in values)
    assert all(length > 0 for length, _ in values)
    assert consumed <= len(data)
    assert (status == "complete") == (consumed == len(data))


@given(st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=5), min_size=1,
                max_size=5), st.data())
def test_commands_split_and_prefix(commands: list[list[bytes]], data: st.DataObject) -> None:
    encoded = [encode_command(*args) for args in commands]
    parsed, status = engine.loops.parse_commands(b"".join(encoded))
    assert status == "complete"
    assert [length for length, _ in parsed] == [len(c) for c in encoded]
    cut = data.draw(st.integers(1, len(encoded[0]) - 1))
    assert engine.loops.parse_commands(encoded[0][:cut]) == ([], "incomplete")


@given(st.binary(max_size=2000))
def test_commands_any_bytes(data: bytes) -> None:
    commands, status = engine.loops.parse_commands(data)
    consumed = sum(length for length, _ in commands)
    assert consumed <= len(data) and all(length > 0 for length, _ in commands)
    assert status in ("complete", "incomplete", "malformed")


@pytest.mark.parametrize("data", [
    b"*16777216\r\n" + b"*1\r\n" * 200_000,       # deep nesting, promised but absent
    b"*1000000\r\n" + b":1\r\n" * 200_000,        # a huge array arriving
    b"$536870912\r\n" + b"v" * 1_000_000,          # a huge bulk arriving
    b"+" + b"x" * 1_000_000,                       # a line without end
])
def test_parsers_stay_linear_on_hostile_input(data: bytes) -> None:
    started = time.monotonic()
    for parse in (engine.loops.parse_replies, engine.loops.parse_commands):
        values, status = parse(data)
        assert status in ("incomplete", "malformed")
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------
# Step parameters and bytes
# --------------------------------------------------------------------------

def test_request_bytes_match_udp_payloads() -> None:
    for command in ("ping", "get", "set"):
        udp = wire.request_payload(wire.COMMANDS[command], 128)
        tcp = tcp_rr.request_bytes(command, 128)
        assert udp.startswith(tcp) and set(udp[len(tcp):]) <= {0}
    assert len(tcp_rr.request_bytes("set", 1024)) == 1024 - wire.HEADER_SIZE
    assert tcp_rr.reply_bytes("get", 96) == _bulk(tcp_rr.get_value(96))


def test_step_params_rr_tcp() -> None:
    step = validate_step_params({"workload": "rr-tcp", "connections": 8, "pipeline": 16})
    assert (step.command, step.connections, step.pipeline) == ("ping", 8, 16)
    with pytest.raises(ConfigError, match="pipeline must be in 1..1024"):
        validate_step_params({"workload": "rr-tcp", "pipeline": 0})
    with pytest.raises(ConfigError, match="connections"):
        validate_step_params({"workload": "rr-tcp", "connections": 129})
    with pytest.raises(ConfigError, match="needs command"):
        StepParams(workload="rr-tcp", command="none")


# --------------------------------------------------------------------------
# The client against scripted servers
# --------------------------------------------------------------------------

Script = Callable[[socket.socket], None]


class ScriptedServer:
    """A loopback TCP server running `script` on each accepted connection."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.script = script
        self.threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def connect(self, count: int = 1) -> list[socket.socket]:
        sockets = []
        for _ in range(count):
            sock = socket.create_connection(self.address, timeout=5)
            conn, _ = self.listener.accept()
            conn.settimeout(10)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)
            sockets.append(sock)
        return sockets

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.script(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def answer_each(reply: bytes, *, stall_after: int | None = None, stall_s: float = 0.0,
                seen: list[int] | None = None, batch: int = 1) -> Script:
    """Answer every command with `reply`, waiting until `batch` are in before replying."""

    def script(conn: socket.socket) -> None:
        buffer = b""
        answered = 0
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            commands, status = engine.loops.parse_commands(buffer)
            assert status != "malformed"
            if len(commands) < batch:
                continue
            buffer = buffer[sum(length for length, _ in commands):]
            if seen is not None:
                seen.append(len(commands))
            # like Redis: the replies to one read go out in one write
            pending = b""
            for _ in commands:
                answered += 1
                if stall_after is not None and answered == stall_after:
                    conn.sendall(pending)
                    pending = b""
                    time.sleep(stall_s)
                pending += reply
            conn.sendall(pending)

    return script


def ping_step(**overrides: object) -> StepParams:
    values: dict[str, object] = {"workload": "rr-tcp", "command": "ping", "rate_pps": 1000.0,
                                 "duration_s": 0.3, "drain_s": 1.0, "timeout_s": 1.0}
    values.update(overrides)
    return StepParams(**values)  # type: ignore[arg-type]


def test_pipeline_keeps_p_requests_in_flight(scripted: Callable[[Script], ScriptedServer]
                                             ) -> None:
    seen: list[int] = []
    server = scripted(answer_each(b"+PONG\r\n", seen=seen, batch=8))
    sockets = server.connect()
    params = ping_step(rate_pps=None, pipeline=8, duration_s=0.2)
    outcome = tcp_rr.drive(sockets, params, peer="scripted")
    for sock in sockets:
        sock.close()
    c = outcome.counters
    # the server answers only once 8 are in: without a window of 8, nothing moves
    assert c["received"] >= 8 * 10
    assert seen and min(seen) >= 8
    assert c["sent"] == c["written"]
    assert c["sent"] - c["received"] < 8  # a last part-batch this server never answers


def test_full_window_wait_counts_in_latency(scripted: Callable[[Script], ScriptedServer]
                                            ) -> None:
    """No coordinated omission: requests due during a stall carry the stall."""
    server = scripted(answer_each(b"+PONG\r\n", stall_after=100, stall_s=0.2))
    sockets = server.connect()
    outcome = tcp_rr.drive(sockets, ping_step(rate_pps=1000.0, duration_s=1.0), peer="scripted")
    step = tcp_rr.summarize(ping_step(rate_pps=1000.0, duration_s=1.0), outcome, {})
    for sock in sockets:
        sock.close()
    assert step["sent_packets"] == step["received_packets"] == 1000
    assert step["sender"]["window_waits"] >= 150  # ~200 fell due while request 100 hung
    assert step["latency_us"]["max"] >= 190_000
    assert step["latency_us"]["p90"] >= 40_000
    # sent late because the window was full: the actual send-to-reply time stays short
    assert step["latency_actual_us"]["p90"] < step["latency_us"]["p90"] / 4
    assert not step["sender_bound"]


def test_resp_error_replies_are_lost(scripted: Callable[[Script], ScriptedServer]) -> None:
    server = scripted(answer_each(b"-ERR not today\r\n"))
    sockets = server.connect(2)
    params = ping_step(connections=2, rate_pps=2000.0)
    step = tcp_rr.summarize(params, tcp_rr.drive(sockets, params, peer="scripted"), {})
    for sock in sockets:
        sock.close()
    assert step["sent_packets"] == 600
    assert step["received_packets"] == 0
    assert step["loss_ratio"] == 1.0
    assert step["sender"]["resp_errors"] == 600
    assert step["loss_episodes"]["count"] == 2  # one run per connection


def test_late_replies_are_lost(scripted: Callable[[Script], ScriptedServer]) -> None:
    server = scripted(answer_each(b"+PONG\r\n", stall_after=1, stall_s=0.3))
    sockets = server.connect()
    params = ping_step(rate_pps=100.0, duration_s=0.5, timeout_s=0.1, drain_s=0.5)
    step = tcp_rr.summarize(params, tcp_rr.drive(sockets, params, peer="scripted"), {})
    sockets[0].close()
    assert step["sent_packets"] == 50
    assert step["late_packets"] >= 1
    assert step["lost_packets"] == 50 - step["received_packets"] >= step["late_packets"]
    # counted in requests: late (answered after the timeout) apart from never answered
    assert step["requests"] == 50 and step["offered_rps"] == 100.0
    assert step["late_requests"] == step["late_packets"]
    assert step["answered_requests"] == step["received_packets"]
    assert step["unanswered_requests"] == 50 - step["answered_requests"] - step["late_requests"]
    assert step["unanswered_requests"] == 0  # the drain outlasts the stall: all came back
    assert knee.attribute(step) == "late"
    failures = knee.evaluate_step(step, None)
    assert failures and failures[0].reason.startswith("late or unanswered ")
    assert "late: answered after the 100 ms timeout; 0% unanswered" in failures[0].reason
    assert "loss" not in failures[0].reason


def test_unanswered_requests_are_not_late(scripted: Callable[[Script], ScriptedServer]) -> None:
    # the server answers 10 requests, then sits on the 11th past the end of the drain
    server = scripted(answer_each(b"+PONG\r\n", stall_after=11, stall_s=1.5))
    sockets = server.connect()
    params = ping_step(rate_pps=100.0, duration_s=0.5, timeout_s=0.1, drain_s=0.3)
    step = tcp_rr.summarize(params, tcp_rr.drive(sockets, params, peer="scripted"), {})
    sockets[0].close()
    assert step["answered_requests"] == 10
    assert step["late_requests"] == 0
    assert step["unanswered_requests"] == 40
    # pipeline 1: the 11th waits on the wire, the 39 due after it never got a window slot
    assert step["unsent_requests"] == 39
    assert knee.attribute(step) == "unanswered"
    path = step["path"]
    assert path is not None and path["source"] == "tcp_info"
    # one segment per request written each way (no retransmits on loopback), in the window
    assert 10 <= path["toward_server_packets"] <= 12 and path["retransmits"] == 0
    assert path["interface"] is not None and path["interface"]["name"] == "lo"


def test_server_that_hangs_up(scripted: Callable[[Script], ScriptedServer]) -> None:
    def hang_up(conn: socket.socket) -> None:
        conn.recv(100)

    server = scripted(hang_up)
    sockets = server.connect()
    with pytest.raises(ConnectError, match="closed a connection mid-step"):
        tcp_rr.drive(sockets, ping_step(), peer="scripted")
    sockets[0].close()


def test_server_that_is_not_resp(scripted: Callable[[Script], ScriptedServer]) -> None:
    def http(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(1)

    server = scripted(http)
    sockets = server.connect()
    with pytest.raises(RemoteProtocolError, match="not RESP"):
        tcp_rr.drive(sockets, ping_step(), peer="scripted")
    sockets[0].close()


# --------------------------------------------------------------------------
# The responder on raw sockets
# --------------------------------------------------------------------------

class Responder:
    def __init__(self, capacity: int = 4, size_bytes: int = 96) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.engine = engine.loops.RespServer(capacity, tcp_rr.reply_bytes("get", size_bytes))
        self.kept: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from pktbench import engine

        while not self.stop.is_set():
            assert self.engine.run(engine.monotonic_ns() + 20_000_000) == 0

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.listener.getsockname(), timeout=5)
        conn, _ = self.listener.accept()
        conn.setblocking(False)
        self.kept.append(conn)
        assert self.engine.add(conn.fileno())
        return client

    def close(self) -> dict[str, int]:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.kept:
            conn.close()
        self.listener.close()
        return dict(zip(engine.loops.SERVER_COUNTERS, map(int, self.engine.counters)))


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while True:
        values, status = engine.loops.parse_replies(data)
        assert status != "malformed"
        if len(values) >= count:
            out, pos = [], 0
            for length, _ in values:
                out.append(data[pos:pos + length])
                pos += length
            return out
        chunk = sock.recv(65536)
        if not chunk:
            return []
        data += chunk


def test_responder_answers_like_redis() -> None:
    responder = Responder()
    try:
        sock = responder.connect()
        pipelined = (PING + tcp_rr.request_bytes("get", 96) + tcp_rr.request_bytes("set", 300)
                     + b"*1\r\n$4\r\nINFO\r\n")
        # one byte at a time: commands cut anywhere are reassembled
        for i in range(len(pipelined)):
            sock.send(pipelined[i:i + 1])
        assert read_replies(sock, 4) == [b"+PONG\r\n", tcp_rr.reply_bytes("get", 96), b"+OK\r\n",
                                         b"-ERR unknown command or wrong number of arguments\r\n"]
        sock.sendall(b"GARBAGE\r\n")
        assert read_replies(sock, 1) == [b"-ERR Protocol error: expected an array of bulk "
                                         b"strings\r\n"]
        assert sock.recv(100) == b""  # and the connection is shut
        other = responder.connect()  # the responder still serves everyone else
        other.sendall(PING * 1000)
        assert read_replies(other, 1000) == [b"+PONG\r\n"] * 1000
    finally:
        counts = responder.close()
    assert counts["commands"] == 1004
    assert counts["protocol_errors"] == 1
    assert counts["unknown_commands"] == 1
    assert counts["connections"] == 2


def test_responder_refuses_past_capacity() -> None:
    responder = Responder(capacity=1)
    try:
        responder.connect()
        extra = socket.create_connection(responder.listener.getsockname(), timeout=5)
        conn, _ = responder.listener.accept()
        assert not responder.engine.add(conn.fileno())
        conn.close()
        extra.close()
    finally:
        responder.close()


# --------------------------------------------------------------------------
# Whole steps through `pktbench serve`
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as srv:
        yield srv


def run(server: Server, **overrides: object) -> dict[str, Any]:
    with Client(Target(*server.address)) as client:
        return client.run_step(ping_step(**overrides))


def test_counts_exact_at_low_rate(server: Server) -> None:
    step = run(server, rate_pps=2000.0, duration_s=0.5, warmup_s=0.1)
    assert step["workload"] == "rr"  # read by reports like a UDP rr step
    assert step["sender"]["transport"] == "tcp"
    assert step["sent_packets"] == step["received_packets"] == 1000
    assert step["lost_packets"] == 0
    receiver = step["receiver"]
    # the server saw the measured requests and the warm-up ones, nothing else; a
    # warm-up stalled past its grace on a loaded machine may write a few fewer
    warmup = step["sender"]["warmup_requests"]
    assert 190 <= warmup <= 200
    assert receiver["received"] == receiver["replied"] == 1000 + warmup
    assert receiver["connections"] == 1
    assert abs(step["received_pps"] - 2000.0) < 1.0


def test_connections_and_pipeline(server: Server) -> None:
    step = run(server, command="get", size_bytes=200, rate_pps=8000.0, duration_s=0.5,
               connections=4, pipeline=8)
    assert step["sent_packets"] == step["received_packets"] == 4000
    assert step["receiver"]["connections"] == 4
    reply = len(tcp_rr.reply_bytes("get", 200))
    assert step["received_bps"] == pytest.approx(4000 * reply * 8 / 0.5)


def test_latency_is_sane(server: Server) -> None:
    step = run(server, rate_pps=1000.0, duration_s=0.5)
    latency = step["latency_us"]
    actual = step["latency_actual_us"]
    assert isinstance(latency, dict) and isinstance(actual, dict)
    assert 1.0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert latency["p50"] < 20_000  # a loopback round trip, even on a busy machine
    assert actual["p50"] <= latency["p50"] * 1.01 + 1.0


def test_max_rate_with_pipelining(server: Server) -> None:
    step = run(server, rate_pps=None, duration_s=0.3, connections=2, pipeline=16)
    assert step["rate_max"] is True
    assert step["received_packets"] == step["sent_packets"] > 1000
    assert step["lost_packets"] == 0
