"""Packet-format validation of a pktbench server: crafted good and bad datagrams.

Owns: the validation suite (one server step per crafted case), how each
case's outcome is judged, and the ValidationReport that `pktbench validate`
renders. Every request is crafted with the scapy layer (pktbench.scapy_layer)
and every expected reply comes from wire.build_reply, so a server passes only
when its bytes agree with the single source of truth in wire.py.

How a case runs: the session's Client arms a step, so the server's responder
accepts only datagrams with that step's token from the client's registered UDP
address (Client.data_socket). The case's datagrams go out from that socket,
from a second local socket (wrong source), or as hand-made IPv4 packets
through a raw socket (fragments, bad UDP checksum; root only). Then, for
request/response steps, one valid "probe" request follows: the server reads
its one socket in order, so by the time the probe's reply is back any reply to
the case's datagrams is back too (a short grace catches stragglers). The
step's receiver counters come back over the control channel and are compared
exactly: valid datagrams counted, the invalid one counted under its
wire.DROP_REASONS name and no other, replies only to valid requests, never
longer than the request, each equal field by field to wire.build_reply.

Invariants:
- Each crafted datagram carries a sequence number no other datagram of its
  step has (the replayed case repeats one on purpose), so every reply is
  attributed to exactly one request: a reply to an invalid datagram, to an
  unknown sequence number, or longer than its request is a failure by name.
- A case that cannot run here (raw IP without root, IPv6 target) is reported
  as skipped with the reason, never as passed.
- Loads are tiny: a handful of datagrams per case and one short paced step at
  the end; traffic goes only to the target the caller names.

Facts established by experiment on Linux 6.x (loopback and veth) and asserted:
- IP fragments of a valid request are reassembled by the server's kernel: the
  server sees one datagram and answers it.
- A UDP datagram with a wrong checksum never reaches the application: the
  kernel discards it (at receive time) and counts it in /proc/net/snmp
  Udp InCsumErrors (and InErrors) of the server's network namespace. The
  server's own counters do not see it. The snmp counter is checked only when
  the server's address is local to this namespace.

Must not: be imported by the CLI at start-up (it pulls in scapy inside the
functions that craft). It opens its own sockets only for crafting: the second
local UDP socket and the raw IPv4 socket; the session itself is session.Client.
"""
from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pktbench import wire
from pktbench.address import Target, parse_target
from pktbench.errors import PktbenchError
from pktbench.protocol import StepParams
from pktbench.session import Client, LocalServer

VALIDATE_SCHEMA_VERSION = 1

STEP_SIZE_BYTES = 64  # rr ping and blast steps: the smallest common request
LARGE_SIZE_BYTES = 128  # get and set steps: room for a real value
STEP_RATE_PPS = 10.0  # declared rate of a crafted step; we send a handful
STEP_DURATION_S = 3.0  # keeps the responder armed while a case runs
REPLY_WAIT_S = 1.0  # a valid request unanswered after this is a failure
GRACE_S = 0.05  # after the probe's reply, for replies that come out of order
BLAST_WAIT_S = 0.2  # a sink sends nothing back: wait this long for wrong replies
FRAGMENT_BYTES = 24  # IP fragment payload size (a multiple of 8, RFC 791)
SERVING_RATE_PPS = 500.0  # the closing ordinary step
SERVING_DURATION_S = 1.0
SEQ_STRIDE = 1000  # sequence numbers of one step's datagrams are this far apart
PROBE_LABEL = "probe request"

_NO_DROPS: dict[str, int] = {}


@dataclass(frozen=True)
class CaseResult:
    """One case: what should happen, what did, and the verdict.

    `passed` is True only for a case that ran and met every expectation; a
    skipped case has passed False and skipped True. `problems` names each
    expectation that was not met.
    """

    name: str
    expected: str
    observed: str
    passed: bool
    skipped: bool = False
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return "skip" if self.skipped else ("pass" if self.passed else "FAIL")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "expected": self.expected, "observed": self.observed,
                "passed": self.passed, "skipped": self.skipped, "status": self.status.lower(),
                "problems": list(self.problems)}


@dataclass(frozen=True)
class ValidationReport:
    """Every case of one validation run against one server."""

    target: str
    server: str
    cases: tuple[CaseResult, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.passed and not c.skipped)

    @property
    def skipped(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if c.skipped)

    @property
    def ok(self) -> bool:
        """No case failed (skipped cases do not fail a run; they are listed)."""
        return not self.failures

    def case(self, name: str) -> CaseResult:
        for result in self.cases:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": VALIDATE_SCHEMA_VERSION,
            "target": self.target,
            "server": self.server,
            "ok": self.ok,
            "passed_cases": sum(c.passed for c in self.cases),
            "failed_cases": len(self.failures),
            "skipped_cases": len(self.skipped),
            "cases": [c.to_dict() for c in self.cases],
        }


# --------------------------------------------------------------------------
# Crafting
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Datagram:
    """One thing a case sends.

    `payload` is the UDP payload the server's socket would read; `seq` the
    sequence number written into it (also for datagrams cut too short to hold
    it, so a wrong reply can still be named). `answered`: a valid request
    that must be answered with wire.build_reply(payload). `route`: "socket"
    (the session's data socket), "other" (a second local UDP port) or "raw"
    (`ip_packets` through a raw IPv4 socket).
    """

    label: str
    payload: bytes
    seq: int
    answered: bool = False
    route: str = "socket"
    ip_packets: tuple[bytes, ...] = ()


class Crafter:
    """Builds one step's datagrams with the scapy layer."""

    def __init__(self, *, token: int, command: int, size_bytes: int,
                 local: tuple[str, int], server: tuple[str, int]) -> None:
        from scapy.packet import Raw  # scapy only here: CLI start-up stays fast

        from pktbench.scapy_layer import PktbenchHeader

        self._header = PktbenchHeader
        self._raw = Raw
        self.token = token
        self.command = command
        self.size_bytes = size_bytes
        self.local = local
        self.server = server
        self._next_seq = SEQ_STRIDE

    def next_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += SEQ_STRIDE
        return seq

    def request(self, seq: int, *, command: int | None = None, size_bytes: int | None = None,
                **header: int) -> bytes:
        """A request (or blast packet) of this step, with header fields overridden."""
        cmd = self.command if command is None else command
        size = self.size_bytes if size_bytes is None else size_bytes
        fields: dict[str, Any] = {
            "kind": wire.KIND_BLAST if cmd == wire.COMMAND_NONE else wire.KIND_REQUEST,
            "command": cmd, "token": self.token, "seq": seq, "send_ns": time.monotonic_ns()}
        fields.update(header)
        packet = self._header(**fields) / self._raw(wire.request_payload(cmd, size))
        return bytes(packet)

    def ip_packet(self, payload: bytes, *, ip_id: int) -> Any:
        """IPv4/UDP from the session's data address to the server, as scapy builds it."""
        from scapy.layers.inet import IP, UDP

        return (IP(src=self.local[0], dst=self.server[0], id=ip_id)
                / UDP(sport=self.local[1], dport=self.server[1]) / self._raw(payload))

    def fragments(self, payload: bytes) -> tuple[bytes, ...]:
        from scapy.layers.inet import fragment

        packet = self.ip_packet(payload, ip_id=0x5042)
        return tuple(bytes(piece) for piece in fragment(  # type: ignore[no-untyped-call]
            packet, fragsize=FRAGMENT_BYTES))

    def bad_checksum(self, payload: bytes) -> bytes:
        from scapy.layers.inet import IP, UDP

        packet = self.ip_packet(payload, ip_id=0x5043)
        good = IP(bytes(packet))[UDP].chksum
        # 0 means "no checksum" over IPv4 (RFC 768) and 0xffff is how a computed
        # zero is sent: neither may stand in for a wrong sum.
        wrong = good ^ 0x00FF
        while wrong in (0, 0xFFFF, good):
            wrong = (wrong + 1) & 0xFFFF
        packet[UDP].chksum = wrong
        return bytes(packet)


# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------

Build = Callable[[Crafter], list[Datagram]]


@dataclass(frozen=True)
class Case:
    """A crafted case: the step it runs in, what it sends and what must follow.

    `received` is how many of the case's datagrams the server must count as
    valid, `duplicates` how many it must count as duplicates (blast sink);
    `drops` the exact drop counters (every other reason must stay 0).
    """

    name: str
    expected: str
    workload: str
    command: str
    size_bytes: int
    build: Build
    received: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    raw: bool = False
    check_csum_errors: bool = False


def _valid(label: str) -> Build:
    def build(c: Crafter) -> list[Datagram]:
        seq = c.next_seq()
        return [Datagram(label, c.request(seq), seq, answered=True)]
    return build


def _dropped(label: str, make: Callable[[Crafter, int], bytes], route: str = "socket") -> Build:
    def build(c: Crafter) -> list[Datagram]:
        seq = c.next_seq()
        return [Datagram(label, make(c, seq), seq, route=route)]
    return build


def _blast_valid(c: Crafter) -> list[Datagram]:
    # A sink accounts sequence numbers from 0 against the sent count.
    return [Datagram("blast", c.request(seq), seq) for seq in range(3)]


def _blast_replay(c: Crafter) -> list[Datagram]:
    first, second = c.request(0), c.request(1)
    return [Datagram("blast", first, 0), Datagram("blast", second, 1),
            Datagram("replayed blast", second, 1)]


def _replay(c: Crafter) -> list[Datagram]:
    seq = c.next_seq()
    request = c.request(seq)
    return [Datagram("request", request, seq, answered=True),
            Datagram("replayed request", request, seq, answered=True)]


def _fragments(c: Crafter) -> list[Datagram]:
    seq = c.next_seq()
    request = c.request(seq)
    return [Datagram("fragmented request", request, seq, answered=True, route="raw",
                     ip_packets=c.fragments(request))]


def _bad_checksum(c: Crafter) -> list[Datagram]:
    seq = c.next_seq()
    request = c.request(seq)
    return [Datagram("bad-checksum request", request, seq, route="raw",
                     ip_packets=(c.bad_checksum(request),))]


def _dropped_as(reason: str) -> str:
    return f"dropped, counted as {reason}"


CASES: tuple[Case, ...] = (
    Case("valid ping", "answered with wire.build_reply", "rr", "ping", STEP_SIZE_BYTES,
         _valid("ping request"), received=1),
    Case("valid get", "answered with wire.build_reply", "rr", "get", LARGE_SIZE_BYTES,
         _valid("get request"), received=1),
    Case("valid set", "answered with wire.build_reply", "rr", "set", LARGE_SIZE_BYTES,
         _valid("set request"), received=1),
    Case("valid blast", "counted 3 of 3, no loss, no reply", "blast", "none", STEP_SIZE_BYTES,
         _blast_valid, received=3),
    Case("truncated header", _dropped_as("too_short"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("truncated header", lambda c, s: c.request(s)[:wire.HEADER_SIZE - 12]),
         drops={"too_short": 1}),
    Case("empty payload", _dropped_as("too_short"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("empty datagram", lambda c, s: b""), drops={"too_short": 1}),
    Case("header without command", _dropped_as("bad_payload"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("bare header", lambda c, s: c.request(s)[:wire.HEADER_SIZE]),
         drops={"bad_payload": 1}),
    Case("bad magic", _dropped_as("bad_magic"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("bad-magic request", lambda c, s: c.request(s, magic=wire.MAGIC ^ 0xFFFF)),
         drops={"bad_magic": 1}),
    Case("unknown version", _dropped_as("bad_version"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("next-version request", lambda c, s: c.request(s, version=wire.VERSION + 1)),
         drops={"bad_version": 1}),
    Case("reply sent to server", _dropped_as("bad_kind"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("response-kind datagram",
                  lambda c, s: c.request(s, kind=wire.KIND_RESPONSE)),
         drops={"bad_kind": 1}),
    Case("wrong token", _dropped_as("bad_token"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("wrong-token request", lambda c, s: c.request(s, token=c.token ^ 0x5A5A)),
         drops={"bad_token": 1}),
    Case("wrong command", _dropped_as("bad_payload"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("get request in a ping step",
                  lambda c, s: c.request(s, command=wire.COMMAND_GET)),
         drops={"bad_payload": 1}),
    Case("oversized", _dropped_as("oversized"), "rr", "ping", STEP_SIZE_BYTES,
         _dropped("1024-byte request in a 64-byte step",
                  lambda c, s: c.request(s, size_bytes=1024)),
         drops={"oversized": 1}),
    Case("wrong source port", _dropped_as("bad_source") + " (never reflected)", "rr", "ping",
         STEP_SIZE_BYTES,
         _dropped("request from another port", lambda c, s: c.request(s), route="other"),
         drops={"bad_source": 1}),
    Case("replayed sequence number",
         "answered twice, identically (stateless); client: 1 response + 1 duplicate",
         "rr", "ping", STEP_SIZE_BYTES, _replay, received=2),
    Case("replayed blast sequence", "seq 0, 1, 1: counted 2, plus 1 duplicate", "blast", "none",
         STEP_SIZE_BYTES, _blast_replay, received=2, duplicates=1),
    Case("ip fragments", "reassembled by the kernel, answered with wire.build_reply", "rr",
         "ping", STEP_SIZE_BYTES, _fragments, received=1, raw=True),
    Case("bad udp checksum",
         "dropped by the kernel: not answered, not counted by the server, "
         "InCsumErrors +1", "rr", "ping", STEP_SIZE_BYTES, _bad_checksum, raw=True,
         check_csum_errors=True),
)

SERVING_CASE = "still serving"
SERVING_EXPECTED = (f"a {SERVING_RATE_PPS:g} pps x {SERVING_DURATION_S:g} s rr step gets "
                    "every response")
CASE_NAMES: tuple[str, ...] = tuple(c.name for c in CASES) + (SERVING_CASE,)


# --------------------------------------------------------------------------
# Running and judging
# --------------------------------------------------------------------------

def udp_csum_errors() -> int | None:
    """Udp InCsumErrors of this network namespace (/proc/net/snmp), None if unreadable."""
    try:
        with open("/proc/net/snmp", encoding="ascii") as handle:
            rows = [line.split() for line in handle if line.startswith("Udp:")]
    except OSError:
        return None
    if len(rows) < 2 or "InCsumErrors" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("InCsumErrors")])


def is_local_address(address: str) -> bool:
    """True when `address` belongs to this network namespace (bind succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def raw_unavailable(family: int) -> str | None:
    """Why the raw-IP cases cannot run here, or None when they can."""
    if family != socket.AF_INET:
        return "IPv4 only"
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return "needs root"
    except OSError as exc:
        return f"no raw sockets: {exc.strerror or exc}"
    return None


@dataclass
class _Reply:
    data: bytes
    on_data_socket: bool


def _collect(sockets: list[socket.socket], until: float, replies: list[_Reply],
             done: Callable[[], bool]) -> None:
    """Read replies on every socket until `until` (monotonic s) or `done()`."""
    while not done():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        readable, _, _ = select.select(sockets, [], [], remaining)
        for sock in readable:
            while True:
                try:
                    data = sock.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error queued by an earlier step
                replies.append(_Reply(data, sock is sockets[0]))


def _fields_differing(reply: bytes, expected: bytes) -> list[str]:
    """Names of the header fields (and 'payload', 'length') where reply != expected."""
    if len(reply) < wire.HEADER_SIZE:
        return [f"reply of {len(reply)} bytes has no complete header"]
    got, want = wire.unpack_header(reply), wire.unpack_header(expected)
    diffs = [f"{name} {getattr(got, name)} != {getattr(want, name)}"
             for name in wire.Header._fields if getattr(got, name) != getattr(want, name)]
    if reply[wire.HEADER_SIZE:] != expected[wire.HEADER_SIZE:]:
        diffs.append(f"payload {reply[wire.HEADER_SIZE:][:24]!r} != "
                     f"{expected[wire.HEADER_SIZE:][:24]!r}")
    return diffs


def _judge_replies(sent: list[Datagram], replies: list[_Reply]) -> tuple[list[str], str]:
    """(problems, summary) for one step's replies; the probe's is left out of the summary."""
    problems: list[str] = []
    by_seq: dict[int, list[Datagram]] = {}
    for datagram in sent:
        by_seq.setdefault(datagram.seq, []).append(datagram)
    largest = max((len(d.payload) for d in sent), default=0)
    answers: dict[int, int] = {}
    duplicates = wrong = 0
    for reply in replies:
        if not reply.on_data_socket or len(reply.data) < wire.HEADER_SIZE:
            wrong += 1
        if not reply.on_data_socket:
            problems.append(f"sent a {len(reply.data)}-byte reply to an unregistered "
                            "source address (open reflector)")
            continue
        if len(reply.data) < wire.HEADER_SIZE:
            problems.append(f"sent a {len(reply.data)}-byte reply that is not a pktbench "
                            "datagram")
            continue
        seq = wire.unpack_header(reply.data).seq
        matches = by_seq.get(seq)
        if not matches:
            wrong += 1
            problems.append(f"reply carries seq {seq}, which no request of this step had "
                            "(wrong sequence number)")
            if len(reply.data) > largest:
                problems.append(f"reply of {len(reply.data)} bytes is longer than every "
                                f"request of the step (amplification)")
            continue
        request = matches[0]
        if len(reply.data) > len(request.payload):
            problems.append(f"reply of {len(reply.data)} bytes to a {len(request.payload)}-byte "
                            f"request (amplification)")
        if not any(d.answered for d in matches):
            wrong += 1
            problems.append(f"answered the {request.label} (seq {seq}), which must be dropped")
            continue
        count = answers.get(seq, 0) + 1
        answers[seq] = count
        if count > 1:
            duplicates += 1  # what a client counts: a second reply to one request
        if count > sum(d.answered for d in matches):
            problems.append(f"answered seq {seq} {count} times, sent {len(matches)} times")
        diffs = _fields_differing(reply.data, wire.build_reply(request.payload))
        if diffs:
            problems.append(f"reply to seq {seq} differs from wire.build_reply: "
                            + "; ".join(diffs))
    for seq, matches in by_seq.items():
        wanted = sum(d.answered for d in matches)
        if answers.get(seq, 0) < wanted:
            problems.append(f"{matches[0].label} (seq {seq}) got {answers.get(seq, 0)} of "
                            f"{wanted} replies")
    case_replies = sum(n for seq, n in answers.items()
                       if any(d.label != PROBE_LABEL for d in by_seq[seq]))
    if case_replies == 0:
        summary = f"{wrong} wrong replies" if wrong else "not answered"
    else:
        times = f" {case_replies}x" if case_replies > 1 else ""
        summary = f"answered{times}"
        if not any("differs from wire.build_reply" in p for p in problems):
            summary += ", == wire.build_reply"
        if duplicates:
            summary += (f"; client: {case_replies - duplicates} response + "
                        f"{duplicates} duplicate")
    return problems, summary


def _drops_text(drops: dict[str, int]) -> str:
    nonzero = {k: v for k, v in drops.items() if v}
    return ", ".join(f"{k}={v}" for k, v in nonzero.items()) or "none"


class _Runner:
    """Runs the cases over one Client session."""

    def __init__(self, client: Client) -> None:
        self.client = client
        sock = client.data_socket
        self.family = sock.family
        host, port = sock.getsockname()[:2]
        self.local = (str(host), int(port))
        self.server = client.server_address
        self.raw_reason = raw_unavailable(self.family)
        self.server_is_local = is_local_address(self.server[0])

    @contextmanager
    def _sockets(self, datagrams: list[Datagram]) -> Iterator[tuple[socket.socket | None,
                                                                    socket.socket | None]]:
        other = raw = None
        try:
            if any(d.route == "other" for d in datagrams):
                other = socket.socket(self.family, socket.SOCK_DGRAM)
                other.bind((self.local[0], 0))
                other.connect(self.server)
                other.setblocking(False)
            if any(d.route == "raw" for d in datagrams):
                raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            yield other, raw
        finally:
            for sock in (other, raw):
                if sock is not None:
                    sock.close()

    def _send(self, datagram: Datagram, other: socket.socket | None,
              raw: socket.socket | None) -> None:
        if datagram.route == "other":
            assert other is not None
            other.send(datagram.payload)
        elif datagram.route == "raw":
            assert raw is not None
            for packet in datagram.ip_packets:
                raw.sendto(packet, (self.server[0], 0))
        else:
            self.client.data_socket.send(datagram.payload)

    def run_case(self, case: Case) -> CaseResult:
        if case.raw and self.raw_reason:
            return CaseResult(case.name, case.expected, f"skipped ({self.raw_reason})",
                              passed=False, skipped=True)
        rr = case.workload == "rr"
        params = StepParams(workload=case.workload, command=case.command,
                            rate_pps=STEP_RATE_PPS, duration_s=STEP_DURATION_S,
                            drain_s=0.1, size_bytes=case.size_bytes)
        armed = self.client.begin_step(params)
        crafter = Crafter(token=armed.token, command=wire.COMMANDS[case.command],
                          size_bytes=case.size_bytes, local=self.local, server=self.server)
        datagrams = case.build(crafter)
        if rr:
            # The probe: answered last, it bounds the wait for every other reply.
            seq = crafter.next_seq()
            datagrams.append(Datagram(PROBE_LABEL, crafter.request(seq), seq,
                                      answered=True))
        replies: list[_Reply] = []
        csum_before = udp_csum_errors() if case.check_csum_errors else None
        try:
            with self._sockets(datagrams) as (other, raw):
                for datagram in datagrams:
                    self._send(datagram, other, raw)
                listen = [self.client.data_socket] + ([other] if other is not None else [])
                if rr:
                    probe = datagrams[-1].seq

                    def probe_answered() -> bool:
                        return any(r.on_data_socket and len(r.data) >= wire.HEADER_SIZE
                                   and wire.unpack_header(r.data).seq == probe
                                   for r in replies)
                    _collect(listen, time.monotonic() + REPLY_WAIT_S, replies, probe_answered)
                    _collect(listen, time.monotonic() + GRACE_S, replies, lambda: False)
                else:
                    _collect(listen, time.monotonic() + BLAST_WAIT_S, replies, lambda: False)
        except BaseException:
            self.client.abandon_step()
            raise
        # A sink counts loss against the blast sequence numbers sent (0..n-1).
        sent = sum(d.answered for d in datagrams) if rr else case.received
        receiver = self.client.end_step({"sent": sent})
        csum_after = udp_csum_errors() if case.check_csum_errors else None
        return self._judge(case, datagrams, replies, receiver, rr, csum_before, csum_after)

    def _judge(self, case: Case, datagrams: list[Datagram], replies: list[_Reply],
               receiver: dict[str, Any], rr: bool, csum_before: int | None,
               csum_after: int | None) -> CaseResult:
        problems, reply_summary = _judge_replies(datagrams, replies)
        want_received = case.received + (1 if rr else 0)
        want_replied = want_received if rr else 0
        drops = {reason: int(receiver.get("drops", {}).get(reason, 0))
                 for reason in wire.DROP_REASONS}
        want_drops = {reason: case.drops.get(reason, 0) for reason in wire.DROP_REASONS}
        received = int(receiver.get("received", -1))
        replied = int(receiver.get("replied", -1))
        if received != want_received:
            problems.append(f"server counted {received} valid datagrams, expected {want_received}")
        if replied != want_replied:
            problems.append(f"server counted {replied} replies, expected {want_replied}")
        if drops != want_drops:
            problems.append(f"server drops {_drops_text(drops)}, expected "
                            f"{_drops_text(want_drops)}")
        server_text = f"server: received {received}"
        if rr:
            server_text = (f"server: received {received - 1} + probe, "
                           f"replied {replied - 1} + probe")
        else:
            duplicates = int(receiver.get("duplicate", -1))
            lost = int(receiver.get("lost", -1))
            server_text += f", duplicate {duplicates}, lost {lost}"
            if duplicates != case.duplicates:
                problems.append(f"server counted {duplicates} duplicates, expected "
                                f"{case.duplicates}")
            if lost != 0:
                problems.append(f"server counted {lost} lost, expected 0")
        server_text += f", drops {_drops_text(drops)}"
        observed = f"{reply_summary}; {server_text}"
        expected = case.expected
        if case.check_csum_errors:
            if not self.server_is_local:
                expected = expected.replace("InCsumErrors +1",
                                            "InCsumErrors on the server host (not visible here)")
            elif csum_before is None or csum_after is None:
                observed += "; InCsumErrors unreadable"
            else:
                delta = csum_after - csum_before
                observed += f"; InCsumErrors +{delta}"
                if delta < 1:
                    problems.append("the kernel did not count a UDP checksum error, so the "
                                    "datagram never arrived: the case proved nothing")
        if problems:
            observed += "; " + "; ".join(problems)
        return CaseResult(case.name, expected, observed, passed=not problems,
                          problems=tuple(problems))

    def run_serving(self) -> CaseResult:
        expected = SERVING_EXPECTED
        params = StepParams(workload="rr", command="ping", rate_pps=SERVING_RATE_PPS,
                            duration_s=SERVING_DURATION_S, drain_s=0.5, timeout_s=1.0,
                            size_bytes=STEP_SIZE_BYTES)
        step = self.client.run_step(params)
        sent, received = step["sent_packets"], step["received_packets"]
        problems = []
        if sent == 0 or received != sent:
            problems.append(f"{sent - received} of {sent} requests unanswered")
        if step["duplicate_packets"]:
            problems.append(f"{step['duplicate_packets']} duplicate replies")
        drops = step["receiver"].get("drops", {})
        if any(drops.values()):
            problems.append(f"server dropped {_drops_text(drops)}")
        observed = f"sent {sent}, answered {received}"
        if problems:
            observed += "; " + "; ".join(problems)
        return CaseResult(SERVING_CASE, expected, observed, passed=not problems,
                          problems=tuple(problems))


def _run_all(client: Client, cases: tuple[Case, ...], serving: bool) -> list[CaseResult]:
    runner = _Runner(client)
    results: list[CaseResult] = []
    pending = [(c.name, c.expected) for c in cases]
    if serving:
        pending.append((SERVING_CASE, SERVING_EXPECTED))
    try:
        for case in cases:
            results.append(runner.run_case(case))
        if serving:
            results.append(runner.run_serving())
    except (PktbenchError, OSError) as exc:
        # The session is gone (the server stopped talking, refused, or broke
        # the protocol): the case that hit it fails, the rest cannot run.
        reason = str(exc) if isinstance(exc, PktbenchError) else (exc.strerror or str(exc))
        name, expected = pending[len(results)]
        results.append(CaseResult(name, expected, f"session failed: {reason}", passed=False,
                                  problems=(reason,)))
        for name, expected in pending[len(results):]:
            results.append(CaseResult(name, expected, "not run: the session ended",
                                      passed=False, problems=("not run",)))
    return results


def validate(target: str | Target | None, secret: bytes | None = None, *,
             cases: tuple[str, ...] | None = None, serving_check: bool = True
             ) -> ValidationReport:
    """Run the validation suite against a pktbench server.

    Args:
        target: "HOST[:PORT]", a Target, or None for a server started on this
            machine for the run (like `pktbench run` without a host).
        secret: the server's shared secret, if it has one.
        cases: names from CASE_NAMES to run (default: all, in order).
        serving_check: end with an ordinary short rr step that must get every
            response.

    Returns:
        A ValidationReport; `report.ok` is False when any case failed.

    Raises:
        ConfigError: a bad target or an unknown case name.
        ConnectError, AuthError, ServerBusyError: the session could not start.
    """
    from pktbench.errors import ConfigError

    chosen = CASES
    if cases is not None:
        unknown = [name for name in cases if name not in CASE_NAMES]
        if unknown:
            raise ConfigError(f"unknown validation case {unknown[0]!r}: choose from "
                              f"{', '.join(CASE_NAMES)}")
        chosen = tuple(c for c in CASES if c.name in cases)
        serving_check = serving_check and SERVING_CASE in cases
    resolved = parse_target(target) if isinstance(target, str) else target
    if resolved is not None and resolved.redis:
        raise ConfigError(f"validate checks a pktbench server, not Redis ({resolved}); "
                          "give HOST[:PORT] of `pktbench serve`")
    if resolved is None:
        with LocalServer(pin=False) as server:
            with Client(server.target, secret=secret) as client:
                results = _run_all(client, chosen, serving_check)
                return ValidationReport("embedded loopback server", client.server_name,
                                        tuple(results))
    with Client(resolved, secret=secret) as client:
        results = _run_all(client, chosen, serving_check)
        return ValidationReport(str(resolved), client.server_name, tuple(results))


__all__ = ["CASES", "CASE_NAMES", "CaseResult", "ValidationReport", "VALIDATE_SCHEMA_VERSION",
           "validate"]

