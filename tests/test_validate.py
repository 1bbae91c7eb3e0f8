"""`pktbench validate`: it passes a correct server and catches broken ones.

The broken servers are FakeServer: the control protocol from
pktbench.protocol plus a plain Python UDP loop that answers like our
responder, then misbehaves in exactly one chosen way. A faithful FakeServer
passes the whole suite first, so each failure below belongs to its fault.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from cli_support import PKTBENCH
from click.testing import CliRunner

from pktbench import protocol, wire
from pktbench.address import Target
from pktbench.cli import main
from pktbench.errors import ConfigError
from pktbench.protocol import Role, StepParams
from pktbench.session import data_token
from pktbench.validate import CASE_NAMES, CASES, SERVING_CASE, Crafter, validate

pytest.importorskip("scapy")
pytest.importorskip("tabulate")

RR_CASES = {c.name for c in CASES if c.workload == "rr"} | {SERVING_CASE}
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]


def _next_event(conn: socket.socket, cc: protocol.ControlConnection) -> Any:
    while True:
        event = cc.next_event()
        if event is not protocol.NEED_DATA:
            return event
        cc.receive_data(conn.recv(65536))


class _PyResponder:
    """Our responder's rules, in Python, with one fault switch."""

    def __init__(self, fault: str, step: StepParams, peer: tuple[str, int], token: int) -> None:
        self.fault = fault
        self.step = step
        self.peer = peer
        self.token = token
        self.sink = step.workload == "blast"
        self.command = wire.COMMANDS[step.command]
        self.prefix = b"" if self.sink else wire.command_prefix(self.command)
        reply_bytes = 0 if self.sink else len(wire.reply_payload(self.command, step.size_bytes))
        self.min_size = wire.HEADER_SIZE + max(len(self.prefix), reply_bytes)
        self.drops = {reason: 0 for reason in wire.DROP_REASONS}
        self.received = self.replied = self.duplicate = 0
        self.seen: set[int] = set()
        self.lost = 0

    def _reason(self, data: bytes, source: tuple[str, int]) -> str | None:
        if len(data) > max(self.step.size_bytes, wire.HEADER_SIZE):
            return "oversized"
        if len(data) < wire.HEADER_SIZE:
            return "too_short"
        header = wire.unpack_header(data)
        if header.magic != wire.MAGIC:
            return "bad_magic"
        if header.version != wire.VERSION:
            return "bad_version"
        if header.kind != (wire.KIND_BLAST if self.sink else wire.KIND_REQUEST):
            return "bad_kind"
        if header.token != self.token:
            return "bad_token"
        if source[:2] != self.peer:
            return "bad_source"
        if (len(data) < self.min_size or header.command != self.command
                or not data[wire.HEADER_SIZE:].startswith(self.prefix)):
            return "bad_payload"
        return None

    def handle(self, udp: socket.socket, data: bytes, source: tuple[str, int]) -> None:
        reason = self._reason(data, source)
        if reason is not None:
            if self.fault == "miscounts" and reason == "bad_token":
                reason = "bad_source"
            self.drops[reason] += 1
            if self.fault == "answers_invalid" and reason == "bad_token":
                udp.sendto(wire.build_reply(data), source)
            return
        seq = wire.unpack_header(data).seq
        if self.sink:
            if seq in self.seen:
                self.duplicate += 1
            else:
                self.received += 1
            self.seen.add(seq)
            return
        self.received += 1
        if self.fault == "stateful" and seq in self.seen:
            return  # "already answered": wrong, the responder must be stateless
        self.seen.add(seq)
        reply = wire.build_reply(data)
        if self.fault == "amplifies":
            reply += bytes(len(data))
        if self.fault == "wrong_seq":
            header = wire.unpack_header(reply)
            reply = wire.pack_header(kind=header.kind, command=header.command,
                                     token=header.token, seq=header.seq + 1,
                                     send_ns=header.send_ns) + reply[wire.HEADER_SIZE:]
        udp.sendto(reply, source)
        self.replied += 1

    def counters(self, sent: int) -> dict[str, Any]:
        lost = max(sent - len(self.seen), 0) if self.sink else 0
        return {"received": self.received, "replied": self.replied,
                "duplicate": self.duplicate, "lost": lost, "drops": self.drops}


class FakeServer:
    """One-session-at-a-time pktbench server on 127.0.0.1 made for tests."""

    def __init__(self, fault: str = "none") -> None:
        self.fault = fault
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.01)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def target(self) -> Target:
        return Target("127.0.0.1", self.port)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()
        self.udp.close()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(20)
            try:
                self._session(conn, peer[0])
            except Exception as exc:  # noqa: BLE001 - surfaced by the tests
                self.errors.append(exc)
            finally:
                conn.close()

    def _session(self, conn: socket.socket, peer_ip: str) -> None:
        cc = protocol.ControlConnection(Role.SERVER)
        assert isinstance(_next_event(conn, cc), protocol.Hello)
        conn.sendall(cc.send(protocol.ServerHello(capabilities=("rr", "blast"),
                                                  server=f"fake {self.fault}")))
        session_token = protocol.make_session_token()
        conn.sendall(cc.send(protocol.Welcome(session_token=session_token,
                                              data_port=self.port)))
        step_id = 0
        while True:
            event = _next_event(conn, cc)
            if isinstance(event, protocol.Bye):
                conn.sendall(cc.send(protocol.Goodbye()))
                return
            assert isinstance(event, protocol.StepRequest)
            params = dict(event.params)
            client_port = params.pop("client_port")
            responder = _PyResponder(self.fault, protocol.validate_step_params(params),
                                     (peer_ip, client_port), data_token(session_token, step_id))
            self._flush()
            done = threading.Event()
            loop = threading.Thread(target=self._udp_loop, args=(responder, done), daemon=True)
            loop.start()
            conn.sendall(cc.send(protocol.StepReady(step_id)))
            stop = _next_event(conn, cc)
            done.set()
            loop.join(timeout=5)
            assert isinstance(stop, protocol.StepStop)
            conn.sendall(cc.send(protocol.StepResult(
                step_id, responder.counters(int(stop.sender["sent"])))))
            step_id += 1

    def _flush(self) -> None:
        self.udp.setblocking(False)
        try:
            while True:
                self.udp.recvfrom(65536)
        except OSError:
            pass
        finally:
            self.udp.settimeout(0.01)

    def _udp_loop(self, responder: _PyResponder, done: threading.Event) -> None:
        while True:
            try:
                data, source = self.udp.recvfrom(65536)
            except socket.timeout:
                if done.is_set():
                    return
                continue
            responder.handle(self.udp, data, source)


def _failed(report: Any) -> set[str]:
    return {c.name for c in report.failures}


def _problems(report: Any, name: str) -> str:
    return " | ".join(report.case(name).problems)


# --------------------------------------------------------------------------
# A correct server passes
# --------------------------------------------------------------------------

def test_real_server_passes_every_case() -> None:
    report = validate(None)
    assert [c.name for c in report.cases] == list(CASE_NAMES)
    assert report.ok, [(c.name, c.observed) for c in report.failures]
    if ROOT:
        assert not report.skipped
        assert "InCsumErrors +" in report.case("bad udp checksum").observed
    valid = report.case("valid get")
    assert valid.passed and "== wire.build_reply" in valid.observed
    assert "drops bad_token=1" in report.case("wrong token").observed
    assert "client: 1 response + 1 duplicate" in report.case("replayed sequence number").observed


def test_faithful_fake_passes_every_case() -> None:
    # The baseline that makes every fault test below attributable to its fault.
    with FakeServer() as server:
        report = validate(server.target)
    assert not server.errors
    assert report.ok, [(c.name, c.observed) for c in report.failures]
    assert report.server == "fake none"


# --------------------------------------------------------------------------
# Broken responders are caught
# --------------------------------------------------------------------------

def test_catches_a_server_that_answers_invalid_packets() -> None:
    with FakeServer("answers_invalid") as server:
        report = validate(server.target)
    assert _failed(report) == {"wrong token"}
    assert "answered the wrong-token request" in _problems(report, "wrong token")


def test_catches_a_server_that_miscounts_a_drop() -> None:
    with FakeServer("miscounts") as server:
        report = validate(server.target)
    assert _failed(report) == {"wrong token"}
    assert "drops bad_source=1, expected bad_token=1" in _problems(report, "wrong token")


def test_catches_a_server_that_deduplicates_replayed_requests() -> None:
    with FakeServer("stateful") as server:
        report = validate(server.target)
    assert _failed(report) == {"replayed sequence number"}
    assert "got 1 of 2 replies" in _problems(report, "replayed sequence number")


SUBSET = ("valid ping", "valid set", "bad magic", "valid blast", "still serving")


def test_catches_amplification() -> None:
    with FakeServer("amplifies") as server:
        report = validate(server.target, cases=SUBSET)
    # every rr step's probe is amplified too; one-way blast has no replies
    assert _failed(report) == set(SUBSET) & RR_CASES
    assert "reply of 103 bytes to a 64-byte request (amplification)" in _problems(
        report, "valid ping")
    assert report.case("valid blast").passed


def test_catches_a_wrong_sequence_number() -> None:
    with FakeServer("wrong_seq") as server:
        report = validate(server.target, cases=SUBSET)
    assert _failed(report) == set(SUBSET) & RR_CASES
    problems = _problems(report, "valid ping")
    assert "which no request of this step had (wrong sequence number)" in problems
    assert "got 0 of 1 replies" in problems


# --------------------------------------------------------------------------
# Crafting, skipping, the CLI
# --------------------------------------------------------------------------

def _crafter() -> Crafter:
    return Crafter(token=0x1234, command=wire.COMMAND_PING, size_bytes=64,
                   local=("127.0.0.1", 40000), server=("127.0.0.1", 7425))


def test_crafted_requests_equal_wire_requests() -> None:
    crafter = _crafter()
    request = crafter.request(5, send_ns=99)
    assert request == wire.build_request(wire.COMMAND_PING, 64, token=0x1234, seq=5, send_ns=99)


def test_bad_checksum_is_wrong_but_not_zero() -> None:
    from scapy.layers.inet import IP, UDP

    crafter = _crafter()
    payload = crafter.request(1)
    bad = IP(crafter.bad_checksum(payload))
    good = IP(bytes(crafter.ip_packet(payload, ip_id=1)))
    assert bad[UDP].chksum not in (0, good[UDP].chksum)
    assert bytes(bad[UDP].payload) == payload


def test_fragments_carry_the_request() -> None:
    from scapy.layers.inet import IP, UDP, defragment

    crafter = _crafter()
    payload = crafter.request(1)
    pieces = [IP(p) for p in crafter.fragments(payload)]
    assert len(pieces) == 3 and all(p.flags.MF for p in pieces[:-1])
    whole = defragment(pieces)[0]
    assert bytes(whole[UDP].payload) == payload


def test_unknown_case_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown validation case 'bad magik'"):
        validate("127.0.0.1:1", cases=("bad magik",))


_RAW_CASES = ("valid ping", "ip fragments", "bad udp checksum")


def test_raw_cases_are_skipped_without_raw_sockets() -> None:
    with FakeServer() as server:
        if not ROOT:
            report = validate(server.target, cases=_RAW_CASES).to_dict()
        else:
            # root without CAP_NET_RAW: what an unprivileged user gets
            if shutil.which("setpriv") is None:
                pytest.skip("setpriv (util-linux) is needed to drop CAP_NET_RAW")
            proc = subprocess.run(
                ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw",
                 *PKTBENCH, "validate", str(server.target),
                 *[arg for name in _RAW_CASES for arg in ("--case", name)], "--json", "-"],
                capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
    statuses = {c["name"]: (c["status"], c["observed"]) for c in report["cases"]}
    assert statuses["valid ping"][0] == "pass"
    for name in ("ip fragments", "bad udp checksum"):
        assert statuses[name] == ("skip", "skipped (needs root)")
    assert report["ok"] and report["skipped_cases"] == 2


def test_cli_exit_codes_and_json() -> None:
    runner = CliRunner()
    with FakeServer() as good:
        result = runner.invoke(main, ["validate", str(good.target), "--case", "bad magic",
                                      "--json", "-"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1 and document["ok"] is True
    assert document["cases"][0]["observed"].startswith("not answered")

    with FakeServer("answers_invalid") as bad:
        result = runner.invoke(main, ["validate", str(bad.target), "--case", "wrong token"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "0 passed, 1 failed" in result.output


def test_cli_error_is_one_line_and_json_stays_valid() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again before the run: refused
    result = CliRunner().invoke(main, ["validate", f"127.0.0.1:{port}", "--json", "-"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert "connection refused" in document["error"] and document["ok"] is False
    assert "Traceback" not in result.output
