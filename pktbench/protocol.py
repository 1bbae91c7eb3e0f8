"""The pktbench control protocol, sans-IO: bytes in, events out.

Owns: the control-channel messages (frozen event dataclasses), their framing,
the conversation state table, the challenge-response authentication helpers
and the validation of step parameters a client asks the server to run.

Must not: open sockets, read clocks, start threads or sleep. The caller
(session.py) moves the bytes: it passes what the socket gave to
`ControlConnection.receive_data`, pulls events with `next_event`, and writes
whatever `send` returns. The only side effect here is drawing random numbers
for challenges and session tokens.

Framing
=======
Every message is one frame: a 4-byte big-endian unsigned length, then that
many bytes of UTF-8 JSON holding one object with a "type" key and exactly the
fields of that message (like iperf3's JSON_write/JSON_read, with a cap). A
frame longer than MAX_FRAME_BYTES, bad UTF-8, JSON that is not an object,
NaN/Infinity, duplicate keys, an unknown type, a missing, extra or ill-typed
field: all are the peer's fault and raise RemoteProtocolError. New fields
need a new CONTROL_VERSION or a capability both ends announced.

The conversation (one state, seen the same way by both ends)
============================================================
The control channel strictly takes turns, so a single conversation state
describes both ends: each ControlConnection moves it on what it sends and on
what it receives, and the two ends always agree. ``C:`` marks what the client
sends, ``S:`` what the server sends::

    HELLO        C: Hello                     -> SERVER_HELLO
    SERVER_HELLO S: ServerHello(challenge)    -> AUTH
                 S: ServerHello(no challenge) -> WELCOME
                 S: Error(busy | version_mismatch | refused) -> DONE
    AUTH         C: AuthResponse              -> VERDICT
                 C: Bye                       -> CLOSING
    VERDICT      S: Welcome                   -> READY
                 S: Error(auth_failed)        -> DONE
    WELCOME      S: Welcome                   -> READY
    READY        C: StepRequest               -> STEP_PENDING
                 C: Bye                       -> CLOSING
    STEP_PENDING S: StepReady                 -> STEP_RUNNING  (data flows out of band)
                 S: Error(refused)            -> READY         (the session goes on)
    STEP_RUNNING C: StepStop                  -> STEP_RESULT
                 C: Bye                       -> CLOSING       (abort mid-step)
                 C: ProgressRequest           -> STEP_PROGRESS (feature step_bins only)
    STEP_PROGRESS S: Progress                 -> STEP_RUNNING
                 S: Error(refused)            -> STEP_RUNNING  (the step goes on)
    STEP_RESULT  S: StepResult                -> READY
    CLOSING      S: Goodbye                   -> DONE
    any live state (all but DONE):
                 S: Error(bad_request | internal) -> DONE

Invariants
----------
Rule 1: every transition lives in TRANSITIONS below (plus the one "any live
  state" rule, added to the table by code right after it). Two facts the
  table cannot hold are checked in ControlConnection._advance: a StepResult
  or Progress carries the step_id of the StepReady it answers, and the
  challenge the server sent is remembered for verify_auth.

Mid-step progress (feature "step_bins", announced in ServerHello): an rr
step that asked for bins (StepParams.bin_phase/bin_packets) has the server
count its received requests per bin; ProgressRequest asks for the counts of
bins bin_start..bin_end-1 (at most MAX_PROGRESS_BINS), and the client waits
for the answer before it sends anything else (one query outstanding, by the
table). A query outside a step breaks the table (bad_request); one in a step
without bins is refused and the step goes on.
Rule 2: the table does not know which end we are. Sending an event the
  table forbids is a LocalProtocolError; receiving one is a
  RemoteProtocolError. Peer bytes enter in exactly one place
  (ControlConnection.next_event), which relabels every error found while
  decoding or checking them as RemoteProtocolError.
Rule 3: errors are sticky. After any protocol error, local or remote, the
  state is ERROR: next_event raises RemoteProtocolError and send raises
  LocalProtocolError, except that a server may still send one Error message
  so the client learns why it is being dropped.
Rule 4: end of stream (receive_data(b"")) is a clean CLOSED only in HELLO
  (nothing was said) or DONE (everything was said). Anywhere else, or in the
  middle of a frame, the peer vanished: RemoteProtocolError.

Authentication
==============
When the server has a shared secret it sends a fresh 32-byte random
challenge in ServerHello; the client answers with
HMAC-SHA256(secret, AUTH_LABEL + challenge). The secret never crosses the
wire, and a captured answer is useless against any other challenge. There is
no client nonce: a client nonce only matters when the server must prove
itself too, which this protocol does not ask for. This keeps strangers from
using a server as a packet source; it does not encrypt or protect the channel
against an attacker who can rewrite it.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import numbers
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Union

from pktbench import wire
from pktbench.errors import (
    AuthError,
    ConfigError,
    LocalProtocolError,
    PktbenchError,
    RemoteProtocolError,
    ServerBusyError,
    ServerRefusedError,
)

__all__ = [
    "AUTH_LABEL",
    "CLOSED",
    "CONTROL_VERSION",
    "ERROR_CODES",
    "FEATURE_STEP_BINS",
    "MAX_FRAME_BYTES",
    "MAX_NESTING",
    "MAX_PROGRESS_BINS",
    "MAX_STREAMS",
    "MAX_WAIT_S",
    "NEED_DATA",
    "TRANSITIONS",
    "AuthResponse",
    "Bye",
    "ControlConnection",
    "Error",
    "Event",
    "Goodbye",
    "Hello",
    "Progress",
    "ProgressRequest",
    "Role",
    "ServerHello",
    "Signal",
    "State",
    "StepParams",
    "StepReady",
    "StepRequest",
    "StepResult",
    "StepStop",
    "Welcome",
    "auth_mac",
    "check_version",
    "make_challenge",
    "make_session_token",
    "validate_client_ports",
    "validate_step_params",
    "verify_auth",
]

# 2: a bulk end's report names its payload rate payload_bps (was bits_per_second).
CONTROL_VERSION = 2
MAX_FRAME_BYTES = 64 * 1024  # JSON payload bytes per frame, length prefix excluded
_LENGTH = struct.Struct("!I")

CHALLENGE_BYTES = 32
AUTH_LABEL = b"pktbench control auth v1\x00"  # domain separation: this MAC means nothing elsewhere
_MAC_HEX_CHARS = 2 * hashlib.sha256().digest_size

ERROR_CODES = frozenset({"busy", "auth_failed", "version_mismatch", "refused", "bad_request",
                         "internal"})

# ServerHello.capabilities names it when the server counts an rr step's
# requests per bin and answers ProgressRequest (see the module doc).
FEATURE_STEP_BINS = "step_bins"
MAX_PROGRESS_BINS = 256  # bins one Progress carries at most (the engine's BIN_RING)

MAX_NESTING = 32  # deepest list/object nesting inside a message's dict fields
_U16_MAX = 2**16 - 1
_U64_MAX = 2**64 - 1


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class State(enum.Enum):
    HELLO = "HELLO"
    SERVER_HELLO = "SERVER_HELLO"
    AUTH = "AUTH"
    VERDICT = "VERDICT"
    WELCOME = "WELCOME"
    READY = "READY"
    STEP_PENDING = "STEP_PENDING"
    STEP_RUNNING = "STEP_RUNNING"
    STEP_RESULT = "STEP_RESULT"
    STEP_PROGRESS = "STEP_PROGRESS"
    CLOSING = "CLOSING"
    DONE = "DONE"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


class Signal(enum.Enum):
    """What next_event returns when it has no event to give."""

    NEED_DATA = "NEED_DATA"  # feed more bytes with receive_data
    CLOSED = "CLOSED"  # the peer closed the stream cleanly


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


# --------------------------------------------------------------------------
# Value checks shared by the event constructors. They raise LocalProtocolError
# (building a bad message is our bug); next_event relabels them for peers.
# --------------------------------------------------------------------------

def _fail(message: str) -> LocalProtocolError:
    return LocalProtocolError(message)


def _check_int(owner: str, name: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass, and True is never a meaningful port or id
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(f"{owner}.{name} must be an integer (got {type(value).__name__})")
    if not low <= value <= high:
        raise _fail(f"{owner}.{name} must be in {low}..{high} (got {value})")
    return value


def _check_str(owner: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(f"{owner}.{name} must be a string (got {type(value).__name__})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes can smuggle in lone surrogates that could never be sent back
        raise _fail(f"{owner}.{name} is not encodable as UTF-8") from None
    return value


def _check_hex(owner: str, name: str, value: object, chars: int) -> str:
    text = _check_str(owner, name, value)
    if len(text) != chars or any(c not in "0123456789abcdef" for c in text):
        raise _fail(f"{owner}.{name} must be {chars} lowercase hex digits (got {text[:80]!r})")
    return text


def _json_copy(owner: str, path: str, value: object, depth: int = 0) -> Any:
    """A JSON-ready deep copy of `value`, so a message always encodes and
    round-trips equal. Integral/real numbers of any kind (numpy counters
    included) become int/float; tuples become lists."""
    if depth > MAX_NESTING:
        # an explicit bound, so hostile nesting fails cleanly instead of in RecursionError
        raise _fail(f"{owner}.{path.split('.')[0]} is nested deeper than {MAX_NESTING} levels")
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            _check_str(owner, path, value)
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise _fail(f"{owner}.{path} must be a finite number (got {number})")
        return number
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(f"{owner}.{path} keys must be strings (got {key!r})")
            copied[_check_str(owner, f"{path} key", key)] = _json_copy(owner, f"{path}.{key}", item,
                                                                       depth + 1)
        return copied
    if isinstance(value, (list, tuple)):
        return [_json_copy(owner, f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value)]
    raise _fail(f"{owner}.{path} holds a {type(value).__name__}, which JSON cannot carry")


def _check_dict(owner: str, name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"{owner}.{name} must be an object (got {type(value).__name__})")
    copied: dict[str, Any] = _json_copy(owner, name, value)
    return copied


def _check_names(owner: str, name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(f"{owner}.{name} must be a list of strings (got {type(value).__name__})")
    return tuple(_check_str(owner, f"{name}[]", item) for item in value)


# --------------------------------------------------------------------------
# Events. Constructors validate; instances compare by value. Dict fields are
# private copies made at construction: treat them as read-only.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """Base of every control message."""

    TYPE: ClassVar[str] = ""

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Hello(Event):
    """C -> S: the first message; which protocol version and features the client has."""

    TYPE: ClassVar[str] = "hello"
    version: int = CONTROL_VERSION
    capabilities: tuple[str, ...] = ()
    client: str = "pktbench"

    def __post_init__(self) -> None:
        _check_int("Hello", "version", self.version, 0, _U16_MAX)
        self._set("capabilities", _check_names("Hello", "capabilities", self.capabilities))
        _check_str("Hello", "client", self.client)


@dataclass(frozen=True)
class ServerHello(Event):
    """S -> C: the server's version and features; a challenge when it requires a secret."""

    TYPE: ClassVar[str] = "server_hello"
    version: int = CONTROL_VERSION
    capabilities: tuple[str, ...] = ()
    server: str = "pktbench"
    challenge_hex: str | None = None

    def __post_init__(self) -> None:
        _check_int("ServerHello", "version", self.version, 0, _U16_MAX)
        self._set("capabilities", _check_names("ServerHello", "capabilities", self.capabilities))
        _check_str("ServerHello", "server", self.server)
        if self.challenge_hex is not None:
            _check_hex("ServerHello", "challenge_hex", self.challenge_hex, 2 * CHALLENGE_BYTES)


@dataclass(frozen=True)
class AuthResponse(Event):
    """C -> S: auth_mac(secret, challenge_hex) of the challenge in ServerHello."""

    TYPE: ClassVar[str] = "auth_response"
    mac_hex: str

    def __post_init__(self) -> None:
        _check_hex("AuthResponse", "mac_hex", self.mac_hex, _MAC_HEX_CHARS)


@dataclass(frozen=True)
class Welcome(Event):
    """S -> C: the session is open; data packets must carry session_token."""

    TYPE: ClassVar[str] = "welcome"
    session_token: int
    data_port: int

    def __post_init__(self) -> None:
        # zero is never handed out, so a zeroed header can never match a live session
        _check_int("Welcome", "session_token", self.session_token, 1, _U64_MAX)
        _check_int("Welcome", "data_port", self.data_port, 1, _U16_MAX)


@dataclass(frozen=True)
class StepRequest(Event):
    """C -> S: run one step with these parameters (see validate_step_params)."""

    TYPE: ClassVar[str] = "step_request"
    params: dict[str, Any]

    def __post_init__(self) -> None:
        self._set("params", _check_dict("StepRequest", "params", self.params))


@dataclass(frozen=True)
class StepReady(Event):
    """S -> C: the receiver is armed for step `step_id`; start sending."""

    TYPE: ClassVar[str] = "step_ready"
    step_id: int

    def __post_init__(self) -> None:
        _check_int("StepReady", "step_id", self.step_id, 0, _U64_MAX)


@dataclass(frozen=True)
class StepStop(Event):
    """C -> S: the client has stopped sending; `sender` holds its counters."""

    TYPE: ClassVar[str] = "step_stop"
    sender: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._set("sender", _check_dict("StepStop", "sender", self.sender))


@dataclass(frozen=True)
class StepResult(Event):
    """S -> C: the receiver's counters for step `step_id`."""

    TYPE: ClassVar[str] = "step_result"
    step_id: int
    receiver: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_int("StepResult", "step_id", self.step_id, 0, _U64_MAX)
        self._set("receiver", _check_dict("StepResult", "receiver", self.receiver))


@dataclass(frozen=True)
class ProgressRequest(Event):
    """C -> S, mid-step: the received counts of the step's bins bin_start..bin_end-1."""

    TYPE: ClassVar[str] = "progress_request"
    bin_start: int
    bin_end: int

    def __post_init__(self) -> None:
        _check_int("ProgressRequest", "bin_start", self.bin_start, 0, MAX_COUNT)
        _check_int("ProgressRequest", "bin_end", self.bin_end, self.bin_start,
                   self.bin_start + MAX_PROGRESS_BINS)


@dataclass(frozen=True)
class Progress(Event):
    """S -> C: requests the server received in bins bin_start.. of step
    `step_id`, one count per bin; -1 for a bin it no longer holds."""

    TYPE: ClassVar[str] = "progress"
    step_id: int
    bin_start: int
    counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_int("Progress", "step_id", self.step_id, 0, _U64_MAX)
        _check_int("Progress", "bin_start", self.bin_start, 0, MAX_COUNT)
        if not isinstance(self.counts, (list, tuple)) or len(self.counts) > MAX_PROGRESS_BINS:
            raise _fail(f"Progress.counts must be a list of at most {MAX_PROGRESS_BINS} counts")
        self._set("counts", tuple(_check_int("Progress", "counts[]", count, -1, _U64_MAX)
                                  for count in self.counts))


@dataclass(frozen=True)
class Error(Event):
    """S -> C: the server refuses or ends the conversation; `code` is one of ERROR_CODES."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str = ""

    def __post_init__(self) -> None:
        _check_str("Error", "code", self.code)
        if self.code not in ERROR_CODES:
            raise _fail(f"Error.code must be one of {sorted(ERROR_CODES)} (got {self.code!r})")
        _check_str("Error", "message", self.message)

    def to_exception(self) -> PktbenchError:
        """The exception a client raises for this message."""
        text = self.message or self.code
        if self.code == "busy":
            return ServerBusyError(f"server is busy: {text}")
        if self.code == "auth_failed":
            return AuthError(f"server refused the secret: {text}; check the shared secret")
        if self.code == "refused":
            return ServerRefusedError(f"server refused the step: {text}")
        if self.code == "version_mismatch":
            return RemoteProtocolError(f"control protocol version mismatch: {text}")
        if self.code == "bad_request":
            return LocalProtocolError(f"server says we broke the control protocol: {text}")
        return RemoteProtocolError(f"server failed: {text}")


@dataclass(frozen=True)
class Bye(Event):
    """C -> S: the client is done; the server answers Goodbye."""

    TYPE: ClassVar[str] = "bye"


@dataclass(frozen=True)
class Goodbye(Event):
    """S -> C: the last message; both ends close after it."""

    TYPE: ClassVar[str] = "goodbye"


_EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (Hello, ServerHello, AuthResponse, Welcome, StepRequest, StepReady, StepStop,
                StepResult, ProgressRequest, Progress, Error, Bye, Goodbye)
}


# --------------------------------------------------------------------------
# The state table (see the module docstring for the picture and the rules).
# A key is the event class, or (class, qualifier) where the same class moves
# to different states: ServerHello by whether it challenges, Error by code.
# --------------------------------------------------------------------------

EventKey = Union[type[Event], tuple[type[Event], str]]
C, S = Role.CLIENT, Role.SERVER

TRANSITIONS: dict[State, dict[tuple[Role, EventKey], State]] = {
    State.HELLO: {
        (C, Hello): State.SERVER_HELLO,
    },
    State.SERVER_HELLO: {
        (S, (ServerHello, "challenge")): State.AUTH,
        (S, (ServerHello, "open")): State.WELCOME,
        (S, (Error, "busy")): State.DONE,
        (S, (Error, "version_mismatch")): State.DONE,
        (S, (Error, "refused")): State.DONE,
    },
    State.AUTH: {
        (C, AuthResponse): State.VERDICT,
        (C, Bye): State.CLOSING,
    },
    State.VERDICT: {
        (S, Welcome): State.READY,
        (S, (Error, "auth_failed")): State.DONE,
    },
    State.WELCOME: {
        (S, Welcome): State.READY,
    },
    State.READY: {
        (C, StepRequest): State.STEP_PENDING,
        (C, Bye): State.CLOSING,
    },
    State.STEP_PENDING: {
        (S, StepReady): State.STEP_RUNNING,
        (S, (Error, "refused")): State.READY,
    },
    State.STEP_RUNNING: {
        (C, StepStop): State.STEP_RESULT,
        (C, Bye): State.CLOSING,
        (C, ProgressRequest): State.STEP_PROGRESS,
    },
    State.STEP_PROGRESS: {
        (S, Progress): State.STEP_RUNNING,
        (S, (Error, "refused")): State.STEP_RUNNING,
    },
    State.STEP_RESULT: {
        (S, StepResult): State.READY,
    },
    State.CLOSING: {
        (S, Goodbye): State.DONE,
    },
    State.DONE: {},
}
# The "any live state" rule: the server can always give up, with a reason.
for _state, _moves in TRANSITIONS.items():
    if _state is not State.DONE:
        for _code in ("bad_request", "internal"):
            _moves.setdefault((S, (Error, _code)), State.DONE)
del _state, _moves, _code

# Where the peer may close the stream without having broken the protocol.
_CLEAN_EOF_STATES = frozenset({State.HELLO, State.DONE, State.CLOSED})


def _event_key(event: Event) -> EventKey:
    if isinstance(event, ServerHello):
        return (ServerHello, "open" if event.challenge_hex is None else "challenge")
    if isinstance(event, Error):
        return (Error, event.code)
    return type(event)


def _describe(key: EventKey) -> str:
    if isinstance(key, tuple):
        cls, qualifier = key
        return f"{cls.__name__}({qualifier})"
    return key.__name__


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise _fail(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _fail(f"duplicate key {key!r} in a message")
        obj[key] = value
    return obj


def _encode(event: Event, max_frame_bytes: int) -> bytes:
    obj: dict[str, Any] = {"type": event.TYPE}
    for f in fields(event):
        value = getattr(event, f.name)
        obj[f.name] = list(value) if isinstance(value, tuple) else value
    payload = json.dumps(obj, ensure_ascii=False, allow_nan=False, sort_keys=True,
                         separators=(",", ":")).encode("utf-8")
    if len(payload) > max_frame_bytes:
        raise _fail(f"{type(event).__name__} encodes to {len(payload)} bytes, over the "
                    f"{max_frame_bytes}-byte frame cap; send fewer or smaller fields")
    return _LENGTH.pack(len(payload)) + payload


def _decode(payload: bytes) -> Event:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers too long to convert
        raise _fail(f"frame is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise _fail(f"frame must hold a JSON object (got {type(obj).__name__})")
    kind = obj.pop("type", None)
    if not isinstance(kind, str):
        raise _fail("message has no string 'type' field")
    cls = _EVENT_TYPES.get(kind)
    if cls is None:
        raise _fail(f"unknown message type {kind[:40]!r}")
    names = {f.name for f in fields(cls)}
    missing = sorted(names - obj.keys())
    if missing:
        raise _fail(f"{cls.__name__} is missing field(s) {', '.join(missing)}")
    extra = sorted(obj.keys() - names)
    if extra:
        raise _fail(f"{cls.__name__} has unknown field(s) {', '.join(n[:40] for n in extra)}")
    return cls(**obj)


# --------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------

class ControlConnection:
    """One end of a control connection: a buffer, a parser and the state table.

    Args:
        role: which end we are.
        max_frame_bytes: the largest JSON payload accepted or sent.
    """

    def __init__(self, role: Role, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role (got {role!r})")
        self.role = role
        self.max_frame_bytes = max_frame_bytes
        self._state = State.HELLO
        self._buffer = bytearray()
        self._eof = False
        self._challenge_hex: str | None = None
        self._step_id: int | None = None
        self._final_error_sent = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def challenge_hex(self) -> str | None:
        """The challenge of the ServerHello sent or received, if it had one."""
        return self._challenge_hex

    @property
    def step_id(self) -> int | None:
        """The step_id of the last StepReady, None before the first step."""
        return self._step_id

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes read from the peer; b"" means the peer closed the stream.

        Raises:
            LocalProtocolError: data arrived after end of stream was reported.
        """
        if self._eof:
            raise LocalProtocolError("receive_data called after end of stream (b\"\") was fed")
        if len(data) == 0:
            self._eof = True
        else:
            self._buffer += data

    def next_event(self) -> Event | Literal[Signal.NEED_DATA, Signal.CLOSED]:
        """The next complete message from the peer, NEED_DATA, or CLOSED.

        Raises:
            RemoteProtocolError: the peer's bytes break the framing, a message
                is malformed or illegal here, or the stream ended where it may
                not. The connection then stays in State.ERROR.
        """
        if self._state is State.ERROR:
            raise RemoteProtocolError(
                "control connection is in ERROR after an earlier protocol error; close it")
        try:
            return self._next_event()
        except (LocalProtocolError, RemoteProtocolError) as exc:
            # The one place where peer bytes come in: whatever went wrong here is theirs.
            self._state = State.ERROR
            raise RemoteProtocolError(str(exc)) from exc

    def _next_event(self) -> Event | Literal[Signal.NEED_DATA, Signal.CLOSED]:
        if len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                raise _fail(f"frame of {length} bytes is over the {self.max_frame_bytes}-byte cap")
            end = _LENGTH.size + length
            if len(self._buffer) >= end:
                payload = bytes(self._buffer[_LENGTH.size:end])
                del self._buffer[:end]
                if self._state in (State.DONE, State.CLOSED):
                    raise _fail(f"peer sent a message after the conversation ended "
                                f"({self._state.name})")
                event = _decode(payload)
                self._advance(self.role.peer, event)
                return event
        if not self._eof:
            return NEED_DATA
        if self._buffer:
            raise _fail(f"peer closed the stream in the middle of a frame "
                        f"({len(self._buffer)} bytes of it arrived)")
        if self._state not in _CLEAN_EOF_STATES:
            raise _fail(f"peer closed the control connection in state {self._state.name}")
        self._state = State.CLOSED
        return CLOSED

    def fits(self, event: Event) -> bool:
        """Whether `event` encodes within this connection's frame cap."""
        try:
            _encode(event, self.max_frame_bytes)
        except LocalProtocolError:
            return False
        return True

    def send(self, event: Event) -> bytes:
        """The bytes to write for `event`, after checking it is legal now.

        Raises:
            LocalProtocolError: `event` is not legal for our role in this
                state, or does not fit in a frame. The connection then stays
                in State.ERROR.
        """
        if not isinstance(event, Event) or type(event) is Event:
            raise LocalProtocolError(f"send() takes a protocol event (got {type(event).__name__})")
        if self._state is State.ERROR:
            # Rule 3: one last Error so the client learns why it is dropped.
            if self.role is Role.SERVER and isinstance(event, Error) and not self._final_error_sent:
                self._final_error_sent = True
                return _encode(event, self.max_frame_bytes)
            raise LocalProtocolError(
                "control connection is in ERROR after an earlier protocol error; close it")
        try:
            data = _encode(event, self.max_frame_bytes)
            self._advance(self.role, event)
        except LocalProtocolError:
            self._state = State.ERROR
            raise
        return data

    def _advance(self, sender: Role, event: Event) -> None:
        key = _event_key(event)
        new_state = TRANSITIONS.get(self._state, {}).get((sender, key))
        if new_state is None:
            raise _fail(f"{sender.name} cannot send {_describe(key)} in state {self._state.name}")
        if isinstance(event, (StepResult, Progress)) and event.step_id != self._step_id:
            raise _fail(f"{type(event).__name__} is for step {event.step_id} but the running "
                        f"step is {self._step_id}")
        if isinstance(event, ServerHello):
            self._challenge_hex = event.challenge_hex
        if isinstance(event, StepReady):
            self._step_id = event.step_id
        self._state = new_state


# --------------------------------------------------------------------------
# Server-side decisions and authentication
# --------------------------------------------------------------------------

def check_version(hello: Hello) -> Error | None:
    """The Error a server sends instead of ServerHello when it cannot talk to
    this client, or None when the versions match."""
    if hello.version == CONTROL_VERSION:
        return None
    return Error(
        "version_mismatch",
        f"client speaks control protocol version {hello.version}, this server speaks "
        f"{CONTROL_VERSION}; run the same pktbench version on both hosts",
    )


def make_challenge() -> str:
    """A fresh challenge for ServerHello: 32 random bytes, hex."""
    return secrets.token_hex(CHALLENGE_BYTES)


def make_session_token() -> int:
    """A random nonzero u64 for Welcome.session_token."""
    return secrets.randbelow(_U64_MAX) + 1


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ConfigError("shared secret must be non-empty bytes; "
                          "give the same secret to both ends")


def auth_mac(secret: bytes, challenge_hex: str) -> str:
    """The client's answer to a challenge: HMAC-SHA256(secret, AUTH_LABEL + challenge), hex.

    Raises:
        ConfigError: the secret is empty.
        LocalProtocolError: challenge_hex is not a well-formed challenge.
    """
    _check_secret(secret)
    challenge = bytes.fromhex(_check_hex("auth_mac", "challenge_hex", challenge_hex,
                                         2 * CHALLENGE_BYTES))
    return hmac.new(bytes(secret), AUTH_LABEL + challenge, hashlib.sha256).hexdigest()


def verify_auth(secret: bytes, challenge_hex: str, mac_hex: str) -> bool:
    """True when `mac_hex` answers `challenge_hex` under `secret` (constant-time compare)."""
    expected = auth_mac(secret, challenge_hex)
    if not isinstance(mac_hex, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), mac_hex.encode("utf-8", "replace"))


# --------------------------------------------------------------------------
# Step parameters
# --------------------------------------------------------------------------

WORKLOADS = ("rr", "blast", "bulk", "rr-tcp")
REQUEST_WORKLOADS = ("rr", "rr-tcp")  # the ones that carry a RESP command
MAX_STREAMS = 128  # a remote client must not make the server allocate without bound
MAX_PIPELINE = 1024  # requests in flight per rr-tcp connection
GSO_MODES = ("auto", "on", "off")  # StepParams.gso (engine.GSO_MODES says the same)
MAX_BURST = 64  # datagrams one paced send releases at most (one GSO buffer)
MAX_WAIT_S = 60.0  # longest drain or response timeout a client may ask a server to hold
# Hard ceilings on what a step may ask for, whatever the server's own limits:
# every value a peer sends becomes a deadline, an allocation or a loop bound,
# and must stay far inside what the engine's 64-bit nanosecond clock and
# counters hold.
MAX_STEP_S = 86400.0  # warmup_s and duration_s each: a day
MAX_RATE_PPS = 1e9  # beyond any NIC's packet rate (100 Gbit/s of 64-byte frames is 148.8 Mpps)
MAX_COUNT = 1 << 40
MAX_BIN_PACKETS = 1e12  # requests per bin: an hour's interval at a rate beyond any NIC's
# A peer's packet count or sequence number is trusted up to this many times
# what the step's rate and length allow, plus a fixed allowance; above it,
# it is refused (StepStop) or dropped as bad_seq (datagrams).
PLAUSIBLE_MARGIN = 1.25
PLAUSIBLE_SLACK_PACKETS = 1 << 16
# How long past its schedule (warm-up + duration) a step may stay armed,
# whatever drain_s and timeout_s it asked for: the sender's 1 % pacing grace
# plus this fixed slack for the control round trips and the last packets in
# flight. A drain is cut at that deadline; a client silent past it loses the
# step and its session.
STEP_SLACK_S = 5.0
PACING_GRACE = 0.01
# The receiving end answers (and counts) at most the step's rate times this
# margin, with a token bucket of RATE_BURST_PACKETS plus RATE_BURST_S worth
# of the rate: room for a sender's batch and for catching up after a stall.
RATE_MARGIN = 1.05
RATE_BURST_PACKETS = 64
RATE_BURST_S = 0.25
# A reverse bulk step's server end stops writing this long after its window:
# the client's window starts a path delay later, and a planning probe step
# (drain_s 0) still needs its last probe served.
BULK_TAIL_MAX_S = 1.0


def _step_error(message: str) -> ConfigError:
    return ConfigError(f"step params: {message}")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _step_error(f"{name} must be a number (got {type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _step_error(f"{name} must be a finite number (got {str(value)[:40]})")
    return number


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _step_error(f"{name} must be an integer (got {type(value).__name__})")
    return value


@dataclass(frozen=True)
class StepParams:
    """One step as the server runs it. rate_pps and count are totals over all
    streams; rate_pps None means as fast as the sender can go; count None
    means the step ends after duration_s (else at whichever comes first).
    size_bytes is the UDP payload (or TCP write) size. command "none" is the
    only one for blast and bulk; rr needs ping, get or set."""

    workload: str = "rr"
    command: str = "ping"
    rate_pps: float | None = None
    count: int | None = None
    outstanding: int | None = None
    duration_s: float = 1.0
    warmup_s: float = 0.0
    drain_s: float = 0.2
    size_bytes: int = 64
    busy_poll: bool = False
    timeout_s: float = 1.0
    streams: int = 1
    reverse: bool = False
    bidir: bool = False  # bulk: streams 0..N-1 client to server and N..2N-1 back, at once
    connections: int = 1  # rr-tcp: TCP connections the rate is spread over
    pipeline: int = 1  # rr-tcp: requests in flight per connection at most
    gso: str = "auto"  # UDP: GSO send / GRO receive: auto (where the kernel has it), on, off
    burst: int | None = None  # UDP: most datagrams a paced send releases at once
    # rr: count received requests per bin, request seq s in bin
    # floor((s + bin_phase) / bin_packets) (doubles, so both ends agree), for
    # ProgressRequest and the result's "bins"; None: no bins.
    bin_phase: float | None = None
    bin_packets: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.workload, str) or self.workload not in WORKLOADS:
            raise _step_error(f"workload must be one of {', '.join(WORKLOADS)} "
                              f"(got {self.workload!r})")
        if not isinstance(self.command, str) or self.command not in wire.COMMANDS:
            raise _step_error(f"command must be one of {', '.join(wire.COMMANDS)} "
                              f"(got {self.command!r})")
        if self.workload in REQUEST_WORKLOADS and self.command == "none":
            raise _step_error(f"workload {self.workload} needs command ping, get or set "
                              "(got none)")
        if self.workload not in REQUEST_WORKLOADS and self.command != "none":
            raise _step_error(f"workload {self.workload} is one-way: command must be none "
                              f"(got {self.command})")
        if self.rate_pps is not None:
            object.__setattr__(self, "rate_pps", _number("rate_pps", self.rate_pps))
            if self.rate_pps <= 0:
                raise _step_error(f"rate_pps must be > 0, or null for as fast as possible "
                                  f"(got {self.rate_pps:g})")
            if self.rate_pps > MAX_RATE_PPS:
                raise _step_error(f"rate_pps must be at most {MAX_RATE_PPS:g} "
                                  f"(got {self.rate_pps:g})")
        if self.outstanding is not None and not 1 <= _integer("outstanding",
                                                              self.outstanding) <= 65536:
            raise _step_error(f"outstanding must be 1..65536 requests, or null for open loop "
                              f"(got {self.outstanding})")
        if self.count is not None and not 1 <= _integer("count", self.count) <= MAX_COUNT:
            raise _step_error(f"count must be >= 1 and at most {MAX_COUNT}, or null to run "
                              f"for duration_s (got {self.count})")
        for name, minimum, inclusive in (("duration_s", 0.0, False), ("warmup_s", 0.0, True),
                                         ("drain_s", 0.0, True), ("timeout_s", 0.0, False)):
            value = _number(name, getattr(self, name))
            object.__setattr__(self, name, value)
            if value < minimum or (value == minimum and not inclusive):
                relation = ">=" if inclusive else ">"
                raise _step_error(f"{name} must be {relation} {minimum:g} (got {value:g})")
        for name, most in (("drain_s", MAX_WAIT_S), ("timeout_s", MAX_WAIT_S),
                           ("duration_s", MAX_STEP_S), ("warmup_s", MAX_STEP_S)):
            if getattr(self, name) > most:
                raise _step_error(f"{name} must be at most {most:g} "
                                  f"(got {getattr(self, name):g})")
        size = _integer("size_bytes", self.size_bytes)
        smallest = wire.min_request_size(wire.COMMANDS[self.command])
        if size < smallest:
            raise _step_error(f"size_bytes {size} is too small for {self.workload}/{self.command}: "
                              f"at least {smallest} (header {wire.HEADER_SIZE} + command)")
        if size > wire.MAX_DATAGRAM:
            raise _step_error(f"size_bytes {size} is over the largest UDP payload "
                              f"({wire.MAX_DATAGRAM})")
        if not isinstance(self.busy_poll, bool):
            raise _step_error(f"busy_poll must be true or false "
                              f"(got {type(self.busy_poll).__name__})")
        streams = _integer("streams", self.streams)
        if not 1 <= streams <= MAX_STREAMS:
            raise _step_error(f"streams must be in 1..{MAX_STREAMS} (got {streams})")
        if not isinstance(self.reverse, bool):
            raise _step_error(f"reverse must be true or false (got {type(self.reverse).__name__})")
        if self.reverse and self.workload != "bulk":
            raise _step_error(f"reverse is for bulk only (got workload {self.workload})")
        if not isinstance(self.bidir, bool):
            raise _step_error(f"bidir must be true or false (got {type(self.bidir).__name__})")
        if self.bidir and (self.workload != "bulk" or self.reverse):
            raise _step_error("bidir is for bulk only, and not with reverse (it runs both)")
        if self.bidir and 2 * streams > MAX_STREAMS:
            raise _step_error(f"bidir runs streams in each direction: at most "
                              f"{MAX_STREAMS // 2} (got {streams})")
        for name, most in (("connections", MAX_STREAMS), ("pipeline", MAX_PIPELINE)):
            if not 1 <= _integer(name, getattr(self, name)) <= most:
                raise _step_error(f"{name} must be in 1..{most} (got {getattr(self, name)})")
        if not isinstance(self.gso, str) or self.gso not in GSO_MODES:
            raise _step_error(f"gso must be one of {', '.join(GSO_MODES)} (got {self.gso!r})")
        if self.burst is not None and not 1 <= _integer("burst", self.burst) <= MAX_BURST:
            raise _step_error(f"burst must be 1..{MAX_BURST} datagrams, or null for the rate's "
                              f"rule (got {self.burst})")
        if (self.bin_phase is None) != (self.bin_packets is None):
            raise _step_error("bin_phase and bin_packets go together (or neither)")
        if self.bin_packets is not None and self.bin_phase is not None:
            if self.workload != "rr" or streams != 1:
                raise _step_error("bins are for single-stream rr steps")
            packets = _number("bin_packets", self.bin_packets)
            phase = _number("bin_phase", self.bin_phase)
            if not 1.0 <= packets <= MAX_BIN_PACKETS:
                raise _step_error(f"bin_packets must be 1..{MAX_BIN_PACKETS:g} (got {packets:g})")
            if not 0.0 <= phase < packets:
                raise _step_error(f"bin_phase must be >= 0 and below bin_packets (got {phase:g})")
            object.__setattr__(self, "bin_packets", packets)
            object.__setattr__(self, "bin_phase", phase)

    @property
    def bins(self) -> tuple[float, float] | None:
        """(bin_phase, bin_packets) of a step that counts per bin, else None."""
        if self.bin_phase is None or self.bin_packets is None:
            return None
        return self.bin_phase, self.bin_packets

    def bin_of(self, seq: int) -> int:
        """The bin request `seq` counts in: the responder's expression, exactly."""
        assert self.bin_phase is not None and self.bin_packets is not None
        return math.floor((float(seq) + self.bin_phase) / self.bin_packets)

    @property
    def hard_limit_s(self) -> float:
        """The longest either end keeps this step armed: its schedule, the
        sender's pacing grace and STEP_SLACK_S, never what the peer asked
        for drain_s or timeout_s."""
        scheduled = self.warmup_s + self.duration_s
        return scheduled + max(0.01, scheduled * PACING_GRACE) + STEP_SLACK_S

    def rate_cap(self, flows: int = 1) -> tuple[float, float] | None:
        """(rate_pps, burst) the receiving end holds each of `flows` flows
        to: the step's rate shared over them, RATE_MARGIN over it; None for
        a step without a rate (allowed only on a server without --max-rate)."""
        if self.rate_pps is None:
            return None
        rate = self.rate_pps * RATE_MARGIN / flows
        return rate, RATE_BURST_PACKETS + rate * RATE_BURST_S

    @property
    def max_packets(self) -> int:
        """The most datagrams this step can plausibly carry (warm-up
        included): a peer's `sent` or sequence number above it is not trusted.
        A step without a rate is bounded by MAX_RATE_PPS."""
        rate = self.rate_pps if self.rate_pps is not None else MAX_RATE_PPS
        packets = rate * (self.warmup_s + self.duration_s) * PLAUSIBLE_MARGIN
        if self.count is not None:
            packets = min(packets, (self.count + rate * self.warmup_s) * PLAUSIBLE_MARGIN)
        return math.ceil(packets) + PLAUSIBLE_SLACK_PACKETS

    @property
    def result_timeout_s(self) -> float:
        """How long a client waits for StepResult after StepStop: the server's
        drain, then 15 s for it to count and answer."""
        return self.drain_s + 15.0

    def to_dict(self) -> dict[str, Any]:
        """The dict a client puts in StepRequest.params."""
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        # Keys newer than the first release go only when they ask for something, so a
        # server that predates them still takes every step that does not need them.
        for key, default in (("bidir", False), ("gso", "auto"), ("burst", None),
                             ("bin_phase", None), ("bin_packets", None)):
            if params[key] == default:
                del params[key]
        return params


_STEP_KEYS = tuple(f.name for f in fields(StepParams))


def validate_client_ports(value: object, streams: int) -> tuple[int, ...]:
    """The client's UDP source ports of a multi-flow step, one per stream.

    A client running a UDP step over several flows (streams > 1) sends them
    in StepRequest.params as "client_ports" (the server takes them out before
    validate_step_params, like "client_port"): the server arms one responder
    per port, and datagrams from any other port are not that step's.

    Raises:
        ConfigError: not a list of distinct ports 1..65535, one per stream.
    """
    if (not isinstance(value, (list, tuple))
            or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= _U16_MAX
                       for p in value)):
        raise _step_error("client_ports must be a list of the client's UDP ports (1..65535)")
    if len(value) != streams:
        raise _step_error(f"client_ports must name one UDP port per stream: {streams} streams, "
                          f"{len(value)} ports")
    if len(set(value)) != len(value):
        raise _step_error("client_ports must be distinct: one flow per stream")
    return tuple(value)


def validate_step_params(
    params: Mapping[str, object],
    *,
    max_rate_pps: float | None = None,
    max_duration_s: float | None = None,
) -> StepParams:
    """Check a StepRequest's params against the rules and this server's limits.

    Missing keys take StepParams' defaults, except that command defaults to
    ping for rr and none otherwise, and size_bytes to 64 or the smallest
    request the command fits in.

    Args:
        params: StepRequest.params.
        max_rate_pps: the server's highest allowed total rate; None for no limit.
            With a limit, an unbounded rate (rate_pps null) is refused.
        max_duration_s: the server's longest allowed warmup_s + duration_s.

    Returns:
        The validated StepParams.

    Raises:
        ConfigError: a key is unknown, a value is invalid, or a limit is
            exceeded; the message names the key (the server sends it back in
            Error("refused", message)).
    """
    if not isinstance(params, Mapping):
        raise _step_error(f"must be an object (got {type(params).__name__})")
    unknown = sorted(str(key) for key in params if key not in _STEP_KEYS)
    if unknown:
        raise _step_error(f"unknown key {unknown[0]!r}; known keys: {', '.join(_STEP_KEYS)}")
    values: dict[str, Any] = dict(params)
    workload = values.get("workload", "rr")
    if "command" not in values:
        values["command"] = "ping" if workload in REQUEST_WORKLOADS else "none"
    command = values["command"]
    if "size_bytes" not in values and isinstance(command, str) and command in wire.COMMANDS:
        values["size_bytes"] = max(64, wire.min_request_size(wire.COMMANDS[command]))
    step = StepParams(**values)

    if max_rate_pps is not None:
        if step.rate_pps is None:
            raise _step_error(f"rate_pps null (as fast as possible) is refused: this server "
                              f"allows at most {max_rate_pps:g} pps; ask for a rate")
        if step.rate_pps > max_rate_pps:
            raise _step_error(f"rate_pps {step.rate_pps:g} is over this server's limit of "
                              f"{max_rate_pps:g} pps; lower the rate or raise the server's limit")
    if max_duration_s is not None and step.warmup_s + step.duration_s > max_duration_s:
        raise _step_error(f"warmup_s + duration_s = {step.warmup_s + step.duration_s:g} s is over "
                          f"this server's limit of {max_duration_s:g} s; shorten the step or raise "
                          f"the server's limit")
    return step
