"""The control protocol, with no network: two ControlConnections pass bytes in memory.

Frames that a correct peer would never send are built here by hand (length
prefix + JSON), independently of the module's encoder, so these tests also
pin the wire format.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktbench import wire
from pktbench.errors import (
    AuthError,
    ConfigError,
    LocalProtocolError,
    RemoteProtocolError,
    ServerBusyError,
    ServerRefusedError,
)
from pktbench.protocol import (
    AUTH_LABEL,
    CLOSED,
    CONTROL_VERSION,
    ERROR_CODES,
    MAX_FRAME_BYTES,
    MAX_STREAMS,
    MAX_PROGRESS_BINS,
    NEED_DATA,
    AuthResponse,
    Bye,
    ControlConnection,
    Error,
    Event,
    Goodbye,
    Hello,
    Progress,
    ProgressRequest,
    Role,
    ServerHello,
    State,
    StepParams,
    StepReady,
    StepRequest,
    StepResult,
    StepStop,
    Welcome,
    auth_mac,
    check_version,
    make_challenge,
    make_session_token,
    validate_step_params,
    verify_auth,
)

C, S = Role.CLIENT, Role.SERVER
SECRET = b"correct horse battery staple"
CHALLENGE = "ab" * 32


def frame(obj: object) -> bytes:
    """A frame built by hand: 4-byte big-endian length + UTF-8 JSON."""
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode("utf-8")
    return struct.pack("!I", len(payload)) + payload


TYPE_NAMES = {Hello: "hello", ServerHello: "server_hello", AuthResponse: "auth_response",
              Welcome: "welcome", StepRequest: "step_request", StepReady: "step_ready",
              StepStop: "step_stop", StepResult: "step_result", Error: "error", Bye: "bye",
              Goodbye: "goodbye", ProgressRequest: "progress_request", Progress: "progress"}


def wire_dict(event: Event) -> dict[str, object]:
    obj: dict[str, object] = {"type": TYPE_NAMES[type(event)]}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        obj[f.name] = list(value) if isinstance(value, tuple) else value
    return obj


class ConnectionPair:
    """A client and a server wired back to back in memory."""

    def __init__(self) -> None:
        self.conn = {C: ControlConnection(C), S: ControlConnection(S)}

    def send(self, role: Role, event: Event, *, chunk_bytes: int | None = None) -> list[Event]:
        """`role` sends `event`; returns what the peer's next_event gave back."""
        data = self.conn[role].send(event)
        peer = self.conn[role.peer]
        received: list[Event] = []
        pieces = [data] if chunk_bytes is None else [
            data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
        for piece in pieces:
            peer.receive_data(piece)
            while True:
                got = peer.next_event()
                if got is NEED_DATA:
                    break
                assert isinstance(got, Event)
                received.append(got)
        assert self.conn[C].state is self.conn[S].state, "the two ends disagree on the state"
        return received

    def exchange(self, role: Role, event: Event, **kwargs: int) -> None:
        assert self.send(role, event, **kwargs) == [event]

    @property
    def state(self) -> State:
        return self.conn[C].state


# Each state, and the conversation that reaches it.
PATHS: dict[State, list[tuple[Role, Event]]] = {
    State.HELLO: [],
    State.SERVER_HELLO: [(C, Hello())],
    State.AUTH: [(C, Hello()), (S, ServerHello(challenge_hex=CHALLENGE))],
    State.VERDICT: [(C, Hello()), (S, ServerHello(challenge_hex=CHALLENGE)),
                    (C, AuthResponse(auth_mac(SECRET, CHALLENGE)))],
    State.WELCOME: [(C, Hello()), (S, ServerHello())],
}
PATHS[State.READY] = PATHS[State.WELCOME] + [(S, Welcome(12345, 7425))]
PATHS[State.STEP_PENDING] = PATHS[State.READY] + [(C, StepRequest({"rate_pps": 1000}))]
PATHS[State.STEP_RUNNING] = PATHS[State.STEP_PENDING] + [(S, StepReady(1))]
PATHS[State.STEP_RESULT] = PATHS[State.STEP_RUNNING] + [(C, StepStop({"sent_packets": 10}))]
PATHS[State.STEP_PROGRESS] = PATHS[State.STEP_RUNNING] + [(C, ProgressRequest(0, 4))]
PATHS[State.CLOSING] = PATHS[State.READY] + [(C, Bye())]
PATHS[State.DONE] = PATHS[State.CLOSING] + [(S, Goodbye())]


def pair_in(state: State) -> ConnectionPair:
    pair = ConnectionPair()
    for role, event in PATHS[state]:
        pair.exchange(role, event)
    assert pair.state is state
    return pair


# One sample of every kind of message, by the name used in LEGAL below.
SAMPLES: dict[str, Event] = {
    "Hello": Hello(),
    "ServerHello(open)": ServerHello(),
    "ServerHello(challenge)": ServerHello(challenge_hex=CHALLENGE),
    "AuthResponse": AuthResponse("00" * 32),
    "Welcome": Welcome(1, 7425),
    "StepRequest": StepRequest({}),
    "StepReady": StepReady(1),
    "StepStop": StepStop({}),
    "StepResult": StepResult(1, {}),
    "ProgressRequest": ProgressRequest(2, 5),
    "Progress": Progress(1, 2, (10, 0, -1)),
    "Bye": Bye(),
    "Goodbye": Goodbye(),
    **{f"Error({code})": Error(code, "why") for code in sorted(ERROR_CODES)},
}

# The protocol as specified, written independently of the module's table:
# (state, sender, message) -> next state. Everything else is illegal.
LIVE = [s for s in PATHS if s is not State.DONE]
LEGAL: dict[tuple[State, Role, str], State] = {
    (State.HELLO, C, "Hello"): State.SERVER_HELLO,
    (State.SERVER_HELLO, S, "ServerHello(challenge)"): State.AUTH,
    (State.SERVER_HELLO, S, "ServerHello(open)"): State.WELCOME,
    (State.SERVER_HELLO, S, "Error(busy)"): State.DONE,
    (State.SERVER_HELLO, S, "Error(version_mismatch)"): State.DONE,
    (State.SERVER_HELLO, S, "Error(refused)"): State.DONE,
    (State.AUTH, C, "AuthResponse"): State.VERDICT,
    (State.AUTH, C, "Bye"): State.CLOSING,
    (State.VERDICT, S, "Welcome"): State.READY,
    (State.VERDICT, S, "Error(auth_failed)"): State.DONE,
    (State.WELCOME, S, "Welcome"): State.READY,
    (State.READY, C, "StepRequest"): State.STEP_PENDING,
    (State.READY, C, "Bye"): State.CLOSING,
    (State.STEP_PENDING, S, "StepReady"): State.STEP_RUNNING,
    (State.STEP_PENDING, S, "Error(refused)"): State.READY,
    (State.STEP_RUNNING, C, "StepStop"): State.STEP_RESULT,
    (State.STEP_RUNNING, C, "Bye"): State.CLOSING,
    (State.STEP_RESULT, S, "StepResult"): State.READY,
    (State.STEP_RUNNING, C, "ProgressRequest"): State.STEP_PROGRESS,
    (State.STEP_PROGRESS, S, "Progress"): State.STEP_RUNNING,
    (State.STEP_PROGRESS, S, "Error(refused)"): State.STEP_RUNNING,
    (State.CLOSING, S, "Goodbye"): State.DONE,
    **{(state, S, f"Error({code})"): State.DONE
       for state in LIVE for code in ("bad_request", "internal")},
}
ALL_MOVES = [(state, role, name) for state in PATHS for role in (C, S) for name in SAMPLES]
ILLEGAL = [move for move in ALL_MOVES if move not in LEGAL]


def move_id(move: tuple[State, Role, str]) -> str:
    state, role, name = move
    return f"{state.name}-{role.name}-{name}"


# --------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------

def test_happy_path_without_auth() -> None:
    pair = ConnectionPair()
    hello = Hello(CONTROL_VERSION, ["rr", "blast"], "pktbench 0.1")
    pair.exchange(C, hello)
    assert check_version(hello) is None
    pair.exchange(S, ServerHello(CONTROL_VERSION, ["rr"], "pktbench 0.1", None))
    assert pair.state is State.WELCOME
    token = make_session_token()
    pair.exchange(S, Welcome(token, 7425))
    for step_id in (1, 2):
        params = StepParams(rate_pps=5000.0, count=100).to_dict()
        pair.exchange(C, StepRequest(params))
        assert validate_step_params(params) == StepParams(rate_pps=5000.0, count=100)
        pair.exchange(S, StepReady(step_id))
        assert pair.state is State.STEP_RUNNING
        pair.exchange(C, StepStop({"sent_packets": 100, "eagain": 0}))
        pair.exchange(S, StepResult(step_id, {"received_packets": 99, "drops": {"bad_token": 1}}))
        assert pair.state is State.READY
        assert pair.conn[C].step_id == pair.conn[S].step_id == step_id
    pair.exchange(C, Bye())
    pair.exchange(S, Goodbye())
    assert pair.state is State.DONE
    for conn in pair.conn.values():
        conn.receive_data(b"")
        assert conn.next_event() is CLOSED
        assert conn.next_event() is CLOSED
        assert conn.state is State.CLOSED


def test_happy_path_with_auth() -> None:
    pair = ConnectionPair()
    pair.exchange(C, Hello())
    challenge = make_challenge()
    pair.exchange(S, ServerHello(challenge_hex=challenge))
    assert pair.state is State.AUTH
    assert pair.conn[C].challenge_hex == pair.conn[S].challenge_hex == challenge
    answer = AuthResponse(auth_mac(SECRET, pair.conn[C].challenge_hex or ""))
    pair.exchange(C, answer)
    assert pair.state is State.VERDICT
    assert verify_auth(SECRET, pair.conn[S].challenge_hex or "", answer.mac_hex)
    pair.exchange(S, Welcome(make_session_token(), 7425))
    pair.exchange(C, StepRequest({"workload": "blast", "rate_pps": 100}))
    pair.exchange(S, StepReady(7))
    pair.exchange(C, Bye())  # abort mid-step
    pair.exchange(S, Goodbye())
    assert pair.state is State.DONE


def test_refused_step_keeps_the_session() -> None:
    pair = pair_in(State.READY)
    params = {"rate_pps": 5e6}
    pair.exchange(C, StepRequest(params))
    with pytest.raises(ConfigError) as refused:
        validate_step_params(params, max_rate_pps=1e6, max_duration_s=None)
    error = Error("refused", str(refused.value))
    pair.exchange(S, error)
    assert pair.state is State.READY
    assert isinstance(error.to_exception(), ServerRefusedError)
    assert "rate_pps" in str(error.to_exception())
    pair.exchange(C, StepRequest({"rate_pps": 1000}))
    pair.exchange(S, StepReady(2))
    assert pair.state is State.STEP_RUNNING


def test_busy_and_version_mismatch_end_right_after_hello() -> None:
    pair = pair_in(State.SERVER_HELLO)
    pair.exchange(S, Error("busy", "serving 192.0.2.1"))
    assert pair.state is State.DONE
    assert isinstance(Error("busy", "x").to_exception(), ServerBusyError)

    pair = ConnectionPair()
    hello = Hello(version=CONTROL_VERSION + 1)
    pair.exchange(C, hello)
    refusal = check_version(hello)
    assert refusal is not None and refusal.code == "version_mismatch"
    assert str(CONTROL_VERSION + 1) in refusal.message
    pair.exchange(S, refusal)
    assert pair.state is State.DONE
    assert isinstance(refusal.to_exception(), RemoteProtocolError)


def test_auth_failed_ends_the_conversation() -> None:
    pair = pair_in(State.AUTH)
    wrong = AuthResponse(auth_mac(b"not the secret", CHALLENGE))
    pair.exchange(C, wrong)
    assert not verify_auth(SECRET, pair.conn[S].challenge_hex or "", wrong.mac_hex)
    pair.exchange(S, Error("auth_failed", "wrong secret"))
    assert pair.state is State.DONE
    assert isinstance(Error("auth_failed").to_exception(), AuthError)


def test_server_error_reaches_a_client_that_already_sent_step_stop() -> None:
    # The server fails mid-step while the client's StepStop is in flight.
    pair = pair_in(State.STEP_RUNNING)
    client, server = pair.conn[C], pair.conn[S]
    stop = client.send(StepStop({}))
    failure = server.send(Error("internal", "engine died"))
    client.receive_data(failure)
    assert client.next_event() == Error("internal", "engine died")
    assert client.state is State.DONE
    del stop  # the server closes without reading it


# --------------------------------------------------------------------------
# The state table, move by move, against the specification above
# --------------------------------------------------------------------------

@pytest.mark.parametrize("move", list(LEGAL), ids=move_id)
def test_legal_move(move: tuple[State, Role, str]) -> None:
    state, role, name = move
    pair = pair_in(state)
    pair.exchange(role, SAMPLES[name])
    assert pair.state is LEGAL[move]


@pytest.mark.parametrize("move", ILLEGAL, ids=move_id)
def test_illegal_move_fails_on_both_sides(move: tuple[State, Role, str]) -> None:
    state, role, name = move
    event = SAMPLES[name]
    pair = pair_in(state)

    sender = pair.conn[role]
    with pytest.raises(LocalProtocolError):
        sender.send(event)
    assert sender.state is State.ERROR

    receiver = pair.conn[role.peer]
    receiver.receive_data(frame(wire_dict(event)))
    with pytest.raises(RemoteProtocolError):
        receiver.next_event()
    assert receiver.state is State.ERROR


def test_step_result_must_answer_the_running_step() -> None:
    pair = pair_in(State.STEP_RESULT)
    with pytest.raises(LocalProtocolError, match="step 2"):
        pair.conn[S].send(StepResult(2, {}))
    client = pair.conn[C]
    client.receive_data(frame(wire_dict(StepResult(2, {}))))
    with pytest.raises(RemoteProtocolError, match="running step is 1"):
        client.next_event()


def test_errors_are_sticky() -> None:
    pair = pair_in(State.READY)
    server = pair.conn[S]
    server.receive_data(frame({"type": "nonsense"}))
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        server.next_event()
    # a good message afterwards does not revive the connection
    server.receive_data(frame(wire_dict(StepRequest({}))))
    with pytest.raises(RemoteProtocolError, match="ERROR"):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(StepReady(1))
    # ...but the server can say why, once
    farewell = server.send(Error("bad_request", "unknown message type"))
    pair.conn[C].receive_data(farewell)
    assert pair.conn[C].next_event() == Error("bad_request", "unknown message type")
    with pytest.raises(LocalProtocolError):
        server.send(Error("bad_request", "again"))
    assert server.state is State.ERROR


def test_local_error_is_sticky_and_client_cannot_send_error() -> None:
    client = pair_in(State.READY).conn[C]
    with pytest.raises(LocalProtocolError):
        client.send(StepStop({}))
    with pytest.raises(LocalProtocolError):
        client.send(StepRequest({}))  # legal in READY, but the connection has failed
    with pytest.raises(LocalProtocolError):
        client.send(Error("internal", "clients never send Error"))


def test_send_rejects_non_events() -> None:
    conn = ControlConnection(C)
    with pytest.raises(LocalProtocolError):
        conn.send({"type": "hello"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ControlConnection("client")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Framing: sizes, partial reads, end of stream
# --------------------------------------------------------------------------

def test_wire_format_is_length_prefixed_json() -> None:
    data = ControlConnection(C).send(Hello(1, ["rr"], "me"))
    (length,) = struct.unpack("!I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == {"type": "hello", "version": 1, "capabilities": ["rr"],
                                     "client": "me"}


def test_oversize_length_is_refused_before_the_body_arrives() -> None:
    conn = ControlConnection(S)
    conn.receive_data(struct.pack("!I", MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="cap"):
        conn.next_event()
    assert conn.state is State.ERROR


def test_frame_of_exactly_the_cap_is_accepted() -> None:
    body = json.dumps(wire_dict(Hello())).encode()
    body += b" " * (MAX_FRAME_BYTES - len(body))  # JSON allows trailing whitespace
    conn = ControlConnection(S)
    conn.receive_data(frame(body))
    assert conn.next_event() == Hello()


def test_oversize_message_cannot_be_sent() -> None:
    pair = pair_in(State.STEP_RESULT)
    with pytest.raises(LocalProtocolError, match="frame cap"):
        pair.conn[S].send(StepResult(1, {"blob": "x" * MAX_FRAME_BYTES}))
    assert pair.conn[S].state is State.ERROR


def test_smaller_cap_is_honoured() -> None:
    conn = ControlConnection(S, max_frame_bytes=16)
    conn.receive_data(frame(wire_dict(Hello(client="a long client name"))))
    with pytest.raises(RemoteProtocolError, match="16-byte cap"):
        conn.next_event()


def test_one_byte_at_a_time() -> None:
    pair = ConnectionPair()
    script = PATHS[State.STEP_RESULT] + [(S, StepResult(1, {"é": "ünïcode"})), (C, Bye()),
                                         (S, Goodbye())]
    for role, event in script:
        assert pair.send(role, event, chunk_bytes=1) == [event]
    assert pair.state is State.DONE


def test_partial_frame_needs_data_then_completes() -> None:
    data = ControlConnection(C).send(Hello())
    server = ControlConnection(S)
    for cut in (1, 3, 4, len(data) - 1):
        server = ControlConnection(S)
        server.receive_data(data[:cut])
        assert server.next_event() is NEED_DATA
        assert server.next_event() is NEED_DATA
        server.receive_data(data[cut:])
        assert server.next_event() == Hello()
        assert server.next_event() is NEED_DATA


def test_several_frames_in_one_read() -> None:
    pair = pair_in(State.STEP_RUNNING)
    server = pair.conn[S]
    server.receive_data(pair.conn[C].send(StepStop({})) + frame(wire_dict(Bye())))
    assert server.next_event() == StepStop({})
    with pytest.raises(RemoteProtocolError, match="Bye in state STEP_RESULT"):
        server.next_event()


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_eof_mid_frame(cut: int) -> None:
    data = ControlConnection(C).send(Hello())
    server = ControlConnection(S)
    server.receive_data(data[:cut])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        server.next_event()
    assert server.state is State.ERROR


def test_eof_before_anything_is_clean() -> None:
    server = ControlConnection(S)
    server.receive_data(b"")
    assert server.next_event() is CLOSED
    assert server.state is State.CLOSED


@pytest.mark.parametrize("state", [s for s in LIVE if s is not State.HELLO], ids=lambda s: s.name)
def test_eof_mid_conversation_is_the_peers_fault(state: State) -> None:
    for role in (C, S):
        conn = pair_in(state).conn[role]
        conn.receive_data(b"")
        with pytest.raises(RemoteProtocolError, match=f"closed the control connection in state "
                                                      f"{state.name}"):
            conn.next_event()


def test_no_data_after_the_end() -> None:
    pair = pair_in(State.DONE)
    pair.conn[S].receive_data(frame(wire_dict(Hello())))
    with pytest.raises(RemoteProtocolError, match="after the conversation ended"):
        pair.conn[S].next_event()
    conn = ControlConnection(S)
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after end of stream"):
        conn.receive_data(b"more")


# --------------------------------------------------------------------------
# Garbage from the peer
# --------------------------------------------------------------------------

GOOD_HELLO = wire_dict(Hello())
GARBAGE_FRAMES = {
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls client hello": bytes.fromhex("160301020001000200"),
    "empty payload": frame(b""),
    "bad utf-8": frame(b'{"type": "hello\xff"}'),
    "utf-8 bom": frame(b"\xef\xbb\xbf" + json.dumps(GOOD_HELLO).encode()),
    "not json": frame(b"hello there"),
    "truncated json": frame(b'{"type": "hello"'),
    "json list": frame([GOOD_HELLO]),
    "json string": frame("hello"),
    "json number": frame(1),
    "json null": frame(None),
    "no type": frame({"version": 1}),
    "type not a string": frame({**GOOD_HELLO, "type": 1}),
    "unknown type": frame({"type": "launch_missiles"}),
    "missing field": frame({"type": "hello", "version": 1, "capabilities": []}),
    "extra field": frame({**GOOD_HELLO, "admin": True}),
    "version is a string": frame({**GOOD_HELLO, "version": "1"}),
    "version is a bool": frame({**GOOD_HELLO, "version": True}),
    "version is a float": frame({**GOOD_HELLO, "version": 1.0}),
    "version negative": frame({**GOOD_HELLO, "version": -1}),
    "version huge": frame({**GOOD_HELLO, "version": 10**30}),
    "capabilities a string": frame({**GOOD_HELLO, "capabilities": "rr"}),
    "capabilities an object": frame({**GOOD_HELLO, "capabilities": {"rr": 1}}),
    "capability not a string": frame({**GOOD_HELLO, "capabilities": [1]}),
    "client null": frame({**GOOD_HELLO, "client": None}),
    "lone surrogate": frame(b'{"type":"hello","version":1,"capabilities":[],'
                            b'"client":"\\ud800"}'),
    "NaN": frame(b'{"type":"hello","version":NaN,"capabilities":[],"client":""}'),
    "Infinity": frame(b'{"type":"hello","version":Infinity,"capabilities":[],"client":""}'),
    "duplicate key": frame(b'{"type":"hello","version":1,"version":1,"capabilities":[],'
                           b'"client":""}'),
    "very long integer": frame(b'{"type":"hello","version":' + b"9" * 5000
                               + b',"capabilities":[],"client":""}'),
    "deep nesting": frame(b"[" * 30000 + b"]" * 30000),  # within the cap, past the recursion limit
}


@pytest.mark.parametrize("data", list(GARBAGE_FRAMES.values()), ids=list(GARBAGE_FRAMES))
def test_garbage_from_a_client(data: bytes) -> None:
    server = ControlConnection(S)
    server.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.state is State.ERROR


FIELD_GARBAGE = {
    "token zero": (State.WELCOME, {"type": "welcome", "session_token": 0, "data_port": 7425}),
    "token over u64": (State.WELCOME, {"type": "welcome", "session_token": 2**64,
                                       "data_port": 7425}),
    "port zero": (State.WELCOME, {"type": "welcome", "session_token": 5, "data_port": 0}),
    "port over 65535": (State.WELCOME, {"type": "welcome", "session_token": 5,
                                        "data_port": 65536}),
    "challenge too short": (State.SERVER_HELLO, {**wire_dict(ServerHello()),
                                                 "challenge_hex": "abcd"}),
    "challenge upper case": (State.SERVER_HELLO, {**wire_dict(ServerHello()),
                                                  "challenge_hex": "AB" * 32}),
    "challenge missing": (State.SERVER_HELLO, {k: v for k, v in wire_dict(ServerHello()).items()
                                               if k != "challenge_hex"}),
    "unknown error code": (State.SERVER_HELLO, {"type": "error", "code": "teapot",
                                                "message": ""}),
    "step id negative": (State.STEP_PENDING, {"type": "step_ready", "step_id": -1}),
    "receiver not an object": (State.STEP_RESULT, {"type": "step_result", "step_id": 1,
                                                   "receiver": [1, 2]}),
    "receiver nested too deep": (State.STEP_RESULT, {
        "type": "step_result", "step_id": 1,
        "receiver": json.loads('{"a":' * 200 + "1" + "}" * 200)}),
    "infinite float in receiver": (State.STEP_RESULT, b'{"type":"step_result","step_id":1,'
                                                      b'"receiver":{"x":1e400}}'),
    "server sends a client message": (State.SERVER_HELLO, wire_dict(Hello())),
}


@pytest.mark.parametrize("case", list(FIELD_GARBAGE.values()), ids=list(FIELD_GARBAGE))
def test_ill_typed_field_from_a_server(case: tuple[State, object]) -> None:
    state, obj = case
    client = pair_in(state).conn[C]
    client.receive_data(frame(obj))
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.state is State.ERROR


def test_remote_errors_keep_their_cause_and_name_the_problem() -> None:
    server = ControlConnection(S)
    server.receive_data(frame({**GOOD_HELLO, "client": 5}))
    with pytest.raises(RemoteProtocolError, match=r"Hello\.client must be a string") as info:
        server.next_event()
    assert isinstance(info.value.__cause__, LocalProtocolError)


# --------------------------------------------------------------------------
# Events: validation and value semantics
# --------------------------------------------------------------------------

def test_events_compare_by_value_and_are_frozen() -> None:
    assert Hello(1, ["a", "b"], "x") == Hello(1, ("a", "b"), "x")
    assert Hello(1, ["a"], "x") != Hello(1, ["b"], "x")
    assert StepResult(1, {"a": (1, 2)}) == StepResult(1, {"a": [1, 2]})
    assert Bye() == Bye() and Bye() != Goodbye()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Welcome(1, 2).data_port = 3  # type: ignore[misc]


def test_dict_fields_are_private_copies() -> None:
    counters = {"sent_packets": 1, "nested": {"x": 1}}
    stop = StepStop(counters)
    counters["sent_packets"] = 2
    counters["nested"]["x"] = 2  # type: ignore[index]
    assert stop.sender == {"sent_packets": 1, "nested": {"x": 1}}


def test_numpy_counters_are_carried_as_plain_numbers() -> None:
    np = pytest.importorskip("numpy")
    stop = StepStop({"sent_packets": np.uint64(7), "cpu_percent": np.float64(12.5),
                     "hist": np.arange(3).tolist()})
    assert stop.sender == {"sent_packets": 7, "cpu_percent": 12.5, "hist": [0, 1, 2]}
    assert type(stop.sender["sent_packets"]) is int
    pair = pair_in(State.STEP_RUNNING)
    pair.exchange(C, stop)


@pytest.mark.parametrize("build", [
    lambda: Hello(version="1"),
    lambda: Hello(version=True),
    lambda: Hello(capabilities="rr"),
    lambda: Hello(capabilities=[b"rr"]),
    lambda: Hello(client=None),
    lambda: ServerHello(challenge_hex="xyz"),
    lambda: AuthResponse("00" * 31),
    lambda: Welcome(0, 7425),
    lambda: Welcome(2**64, 7425),
    lambda: Welcome(1, 70000),
    lambda: StepReady(-1),
    lambda: StepRequest([("rate_pps", 1)]),
    lambda: StepRequest({1: "x"}),
    lambda: StepRequest({"x": float("nan")}),
    lambda: StepRequest({"x": object()}),
    lambda: StepStop({"x": "\ud800"}),
    lambda: StepResult(1, {"x": {1, 2}}),
    lambda: Error("teapot", "short and stout"),
    lambda: Error("busy", 5),
], ids=lambda f: "")
def test_constructors_validate(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def test_error_codes_map_to_exceptions() -> None:
    assert set(ERROR_CODES) == {"busy", "auth_failed", "version_mismatch", "refused",
                                "bad_request", "internal"}
    kinds = {code: type(Error(code, "m").to_exception()) for code in ERROR_CODES}
    assert kinds == {"busy": ServerBusyError, "auth_failed": AuthError,
                     "version_mismatch": RemoteProtocolError, "refused": ServerRefusedError,
                     "bad_request": LocalProtocolError, "internal": RemoteProtocolError}
    assert "m" in str(Error("internal", "m").to_exception())


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------

def test_mac_is_hmac_sha256_of_label_and_challenge() -> None:
    # Pinned so that another implementation of the client can interoperate.
    expected = hmac.new(SECRET, AUTH_LABEL + bytes.fromhex(CHALLENGE), hashlib.sha256).hexdigest()
    assert auth_mac(SECRET, CHALLENGE) == expected
    assert AUTH_LABEL == b"pktbench control auth v1\x00"


def test_wrong_secret_fails() -> None:
    challenge = make_challenge()
    assert verify_auth(SECRET, challenge, auth_mac(SECRET, challenge))
    assert not verify_auth(SECRET, challenge, auth_mac(SECRET + b"x", challenge))
    assert not verify_auth(SECRET, challenge, auth_mac(b"c", challenge))


def test_replayed_mac_fails_on_a_new_challenge() -> None:
    first, second = make_challenge(), make_challenge()
    assert first != second
    captured = auth_mac(SECRET, first)
    assert verify_auth(SECRET, first, captured)
    assert not verify_auth(SECRET, second, captured)


def test_secret_never_crosses_the_wire() -> None:
    client, server = ControlConnection(C), ControlConnection(S)
    sent = []
    challenge = make_challenge()
    for sender, receiver, event in (
            (client, server, Hello()),
            (server, client, ServerHello(challenge_hex=challenge)),
            (client, server, AuthResponse(auth_mac(SECRET, challenge)))):
        sent.append(sender.send(event))
        receiver.receive_data(sent[-1])
        assert receiver.next_event() == event
    for data in sent:
        assert SECRET not in data
        assert SECRET.hex().encode() not in data


def test_malformed_macs_are_refused_not_raised() -> None:
    challenge = make_challenge()
    good = auth_mac(SECRET, challenge)
    for mac in ("", good[:-1], good.upper(), "é" * 64, None):
        assert not verify_auth(SECRET, challenge, mac)  # type: ignore[arg-type]


def test_auth_helpers_check_their_inputs() -> None:
    with pytest.raises(ConfigError, match="secret"):
        auth_mac(b"", CHALLENGE)
    with pytest.raises(LocalProtocolError):
        auth_mac(SECRET, "not hex")


def test_challenges_and_tokens() -> None:
    challenges = {make_challenge() for _ in range(100)}
    assert len(challenges) == 100
    assert all(len(c) == 64 and int(c, 16) >= 0 for c in challenges)
    tokens = [make_session_token() for _ in range(100)]
    assert all(0 < t < 2**64 for t in tokens) and len(set(tokens)) == 100
    Welcome(tokens[0], 7425)


# --------------------------------------------------------------------------
# Step parameters
# --------------------------------------------------------------------------

def test_step_defaults() -> None:
    assert validate_step_params({}) == StepParams()
    blast = validate_step_params({"workload": "blast"})
    assert blast.command == "none" and blast.size_bytes == 64
    set_step = validate_step_params({"command": "set"})
    assert set_step.size_bytes == wire.min_request_size(wire.COMMAND_SET) > 64


def test_step_params_round_trip_through_a_request() -> None:
    step = StepParams(workload="rr", command="get", rate_pps=5500.0, count=None, duration_s=2.5,
                      warmup_s=0.5, drain_s=0.1, size_bytes=200, busy_poll=True, timeout_s=0.2,
                      streams=4)
    pair = pair_in(State.READY)
    request = StepRequest(step.to_dict())
    (received,) = pair.send(C, request)
    assert isinstance(received, StepRequest)
    assert validate_step_params(received.params, max_rate_pps=1e6, max_duration_s=10) == step


def test_integers_are_accepted_for_float_fields() -> None:
    step = validate_step_params({"rate_pps": 1000, "duration_s": 2})
    assert step.rate_pps == 1000.0 and isinstance(step.rate_pps, float)
    assert isinstance(step.duration_s, float)


@pytest.mark.parametrize("params, words", [
    ({"rate": 5}, "unknown key 'rate'"),
    ({"workload": "tcp"}, "workload must be one of"),
    ({"workload": ["rr"]}, "workload must be one of"),
    ({"command": "del"}, "command must be one of"),
    ({"command": None}, "command must be one of"),
    ({"workload": "rr", "command": "none"}, "rr needs command"),
    ({"workload": "blast", "command": "ping"}, "command must be none"),
    ({"workload": "bulk", "command": "set"}, "command must be none"),
    ({"rate_pps": 0}, "rate_pps must be > 0"),
    ({"rate_pps": -5}, "rate_pps must be > 0"),
    ({"rate_pps": "fast"}, "rate_pps must be a number"),
    ({"rate_pps": True}, "rate_pps must be a number"),
    ({"rate_pps": math.inf}, "rate_pps must be a finite"),
    ({"rate_pps": 10**400}, "rate_pps must be a finite"),
    ({"count": 0}, "count must be >= 1"),
    ({"count": 1.5}, "count must be an integer"),
    ({"duration_s": 0}, "duration_s must be > 0"),
    ({"warmup_s": -1}, "warmup_s must be >= 0"),
    ({"drain_s": -0.1}, "drain_s must be >= 0"),
    ({"drain_s": 3600}, "drain_s must be at most"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
    ({"timeout_s": 1e6}, "timeout_s must be at most"),
    ({"size_bytes": 10}, "size_bytes 10 is too small for rr/ping"),
    ({"command": "set", "size_bytes": 64}, "too small for rr/set"),
    ({"size_bytes": wire.MAX_DATAGRAM + 1}, "over the largest UDP payload"),
    ({"size_bytes": 64.0}, "size_bytes must be an integer"),
    ({"busy_poll": 1}, "busy_poll must be true or false"),
    ({"streams": 0}, "streams must be in 1.."),
    ({"streams": MAX_STREAMS + 1}, "streams must be in 1.."),
])
def test_bad_step_params(params: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(".", r"\.")) as info:
        validate_step_params(params)
    assert str(info.value).startswith("step params: ")


def test_step_limits() -> None:
    ok = validate_step_params({"rate_pps": 1e6, "duration_s": 9, "warmup_s": 1},
                              max_rate_pps=1e6, max_duration_s=10)
    assert ok.rate_pps == 1e6
    with pytest.raises(ConfigError, match="over this server's limit of 1e\\+06 pps"):
        validate_step_params({"rate_pps": 1e6 + 1}, max_rate_pps=1e6)
    with pytest.raises(ConfigError, match="null .* is refused"):
        validate_step_params({"rate_pps": None}, max_rate_pps=1e6)
    with pytest.raises(ConfigError, match="warmup_s \\+ duration_s = 11 s"):
        validate_step_params({"duration_s": 10, "warmup_s": 1}, max_duration_s=10)
    assert validate_step_params({"rate_pps": None, "duration_s": 1e4}).rate_pps is None


def test_step_params_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be an object"):
        validate_step_params([("rate_pps", 1)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Properties: whatever a peer sends, only RemoteProtocolError comes out
# --------------------------------------------------------------------------

def drain(conn: ControlConnection, data: bytes, splits: list[int]) -> None:
    """Feed `data` in pieces and pull events until the connection wants more,
    is closed, or fails with RemoteProtocolError. Bounded: each call to
    next_event consumes a frame or returns, so it cannot spin."""
    cuts = sorted({min(max(s, 0), len(data)) for s in splits} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])] + [b""]
    try:
        for piece in pieces:
            conn.receive_data(piece)
            for _ in range(len(data) + 2):
                if conn.next_event() in (NEED_DATA, CLOSED):
                    break
            else:
                pytest.fail("next_event kept returning events without consuming input")
    except RemoteProtocolError:
        assert conn.state is State.ERROR


STATES_TO_FUZZ = [State.HELLO, State.AUTH, State.READY, State.STEP_RUNNING, State.STEP_RESULT,
                  State.DONE]


@settings(max_examples=300)
@given(data=st.binary(max_size=300), splits=st.lists(st.integers(0, 300), max_size=5),
       state=st.sampled_from(STATES_TO_FUZZ), role=st.sampled_from([C, S]))
def test_random_bytes_only_raise_remote_protocol_error(data: bytes, splits: list[int],
                                                       state: State, role: Role) -> None:
    drain(pair_in(state).conn[role], data, splits)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=6,
)
FIELD_NAMES = st.sampled_from(["version", "capabilities", "client", "server", "challenge_hex",
                               "mac_hex", "session_token", "data_port", "params", "step_id",
                               "sender", "receiver", "code", "message", "type", "x"])


@settings(max_examples=300)
@given(kind=st.sampled_from(sorted(TYPE_NAMES.values()) + ["x"]),
       body=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=4),
       state=st.sampled_from(STATES_TO_FUZZ), role=st.sampled_from([C, S]),
       trailing=st.binary(max_size=20))
def test_random_messages_only_raise_remote_protocol_error(kind: str, body: dict[str, object],
                                                          state: State, role: Role,
                                                          trailing: bytes) -> None:
    data = frame({**body, "type": kind}) + trailing
    drain(pair_in(state).conn[role], data, [])


@settings(max_examples=100)
@given(counters=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6),
       step_id=st.integers(0, 2**64 - 1))
def test_any_json_counters_round_trip(counters: dict[str, object], step_id: int) -> None:
    pair = pair_in(State.STEP_PENDING)
    pair.exchange(S, StepReady(step_id))
    pair.exchange(C, StepStop(counters))
    pair.exchange(S, StepResult(step_id, counters))
    assert pair.state is State.READY


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data(), value=JSON_VALUES,
       state=st.sampled_from(STATES_TO_FUZZ), role=st.sampled_from([C, S]))
def test_messages_with_one_random_field_only_raise_remote_protocol_error(
        name: str, data: st.DataObject, value: object, state: State, role: Role) -> None:
    obj = wire_dict(SAMPLES[name])
    obj[data.draw(st.sampled_from(sorted(obj)))] = value
    drain(pair_in(state).conn[role], frame(obj), [])


# --------------------------------------------------------------------------
# Mid-step progress (feature step_bins)
# --------------------------------------------------------------------------

def test_progress_queries_take_turns_mid_step_and_a_refusal_keeps_the_step() -> None:
    pair = pair_in(State.STEP_RUNNING)
    pair.exchange(C, ProgressRequest(0, 3))
    assert pair.state is State.STEP_PROGRESS
    busy = pair_in(State.STEP_PROGRESS)
    with pytest.raises(LocalProtocolError):  # one query at a time, and nothing else meanwhile
        busy.conn[C].send(StepStop({"sent": 10}))
    pair.exchange(S, Progress(1, 0, (5, 0, -1)))
    assert pair.state is State.STEP_RUNNING
    pair.exchange(C, ProgressRequest(3, 4))
    pair.exchange(S, Error("refused", "this step counts no bins"))
    assert pair.state is State.STEP_RUNNING
    pair.exchange(C, StepStop({"sent": 10}))
    pair.exchange(S, StepResult(1, {"bins": {"start": 0, "counts": [5, 0, 1]}}))
    assert pair.state is State.READY


def test_a_progress_for_another_step_is_the_peers_fault() -> None:
    pair = pair_in(State.STEP_PROGRESS)
    client = pair.conn[C]
    client.receive_data(frame({"type": "progress", "step_id": 9, "bin_start": 0, "counts": []}))
    with pytest.raises(RemoteProtocolError, match="step 9"):
        client.next_event()


@pytest.mark.parametrize("fields", [
    {"bin_start": 0, "bin_end": MAX_PROGRESS_BINS + 1},  # too many bins in one answer
    {"bin_start": 5, "bin_end": 4},
    {"bin_start": -1, "bin_end": 0},
    {"bin_start": 0, "bin_end": 1.5},
    {"bin_start": 0},
])
def test_a_progress_request_out_of_bounds_is_refused_on_both_ends(fields: dict[str, object]
                                                                   ) -> None:
    if len(fields) == 2:
        with pytest.raises(LocalProtocolError):
            ProgressRequest(**fields)  # type: ignore[arg-type]
    pair = pair_in(State.STEP_RUNNING)
    server = pair.conn[S]
    server.receive_data(frame({"type": "progress_request", **fields}))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.state is State.ERROR


def test_a_progress_answer_is_bounded() -> None:
    with pytest.raises(LocalProtocolError):
        Progress(1, 0, tuple(range(MAX_PROGRESS_BINS + 1)))
    with pytest.raises(LocalProtocolError):
        Progress(1, 0, (-2,))
    assert ControlConnection(S).fits(Progress(1, 0, (2**64 - 1,) * MAX_PROGRESS_BINS))


def test_step_bins_are_sent_only_when_asked_and_checked() -> None:
    assert "bin_phase" not in StepParams().to_dict()
    params = StepParams(rate_pps=2000.0, bin_phase=250.0, bin_packets=1000.0)
    assert validate_step_params(params.to_dict()) == params
    assert params.bins == (250.0, 1000.0)
    # seq s is in bin floor((s + phase) / packets): 749 in bin 0, 750 in bin 1
    assert (params.bin_of(749), params.bin_of(750), params.bin_of(1750)) == (0, 1, 2)
    for bad in ({"bin_phase": 1.0}, {"bin_phase": 0.0, "bin_packets": 0.5},
                {"bin_phase": 10.0, "bin_packets": 10.0}, {"bin_phase": -1.0, "bin_packets": 9.0},
                {"bin_phase": 0.0, "bin_packets": 9.0, "workload": "blast", "command": "none"},
                {"bin_phase": 0.0, "bin_packets": 9.0, "streams": 2}):
        with pytest.raises(ConfigError, match="bin"):
            validate_step_params({"rate_pps": 1000, **bad})
