"""A real Redis server as the far end of a request/response sweep.

Owns: redis:// URLs with credentials, the connection handshake (AUTH,
PING), preparing the key a GET step reads, and `RedisClient`, which runs
rr-tcp steps with the same engine as against `pktbench serve` but with no
control channel: the client counts everything. Lost means no reply within
timeout_s (or never sent because no pipeline slot freed); a RESP error reply
counts as lost and as a resp_error.

Invariants:
- The password never appears in a message, a result or a target string.
- Every connection is opened, authenticated and checked with PING before
  a step's clock starts, and every step uses fresh connections, so replies
  still owed by one step can never be counted in the next.
- Only wire.KEY is written (GET and SET steps) and it is deleted on close.

Must not: speak anything but RESP2 to the target; run without a bound.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from pktbench import engine, wire
from pktbench.workloads import resp
from pktbench.address import Target, parse_target, resolve
from pktbench.errors import AuthError, ConfigError, ConnectError, RemoteProtocolError
from pktbench.protocol import StepParams
from pktbench.step import StepResult

HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RedisAuth:
    """AUTH credentials: a password, and an ACL user name when not "default"."""

    password: str
    username: str | None = None

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"RedisAuth(username={self.username!r}, password='***')"


def parse_redis_url(text: str) -> tuple[Target, RedisAuth | None]:
    """`redis://[[USER]:PASSWORD@]HOST[:PORT]` -> (target, credentials or None).

    Raises:
        ConfigError: not a redis:// URL, or a malformed one (the message
            never repeats the password).
    """
    raw = text.strip()
    if not raw.lower().startswith("redis://"):
        raise ConfigError(f"{raw!r} is not a redis:// URL")
    userinfo, at, hostport = raw[len("redis://"):].rpartition("@")
    target = parse_target("redis://" + hostport)
    if not at:
        return target, None
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        raise ConfigError(f"redis URL for {target}: write credentials as "
                          "redis://:PASSWORD@HOST:PORT or redis://USER:PASSWORD@HOST:PORT")
    return target, RedisAuth(unquote(password), unquote(user) or None)


def encode_command(*args: bytes) -> bytes:
    """A RESP array of bulk strings, as every Redis client sends commands."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def call(sock: socket.socket, *args: bytes, where: str) -> bytes:
    """Send one command on a blocking socket and return its complete reply."""
    sock.sendall(encode_command(*args))
    data = b""
    while True:
        values, status = engine.loops.parse_replies(data)
        if values:
            return data[:values[0][0]]
        if status == "malformed":
            raise RemoteProtocolError(f"{where} does not speak RESP (is it a Redis server?)")
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise RemoteProtocolError(f"{where} did not answer within {sock.gettimeout():g} s "
                                      "(is it a Redis server?)") from None
        if not chunk:
            raise ConnectError(f"{where} closed the connection during the handshake")
        data += chunk


def _first_line(reply: bytes) -> str:
    return reply[1:].split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]


class RedisClient:
    """Runs rr-tcp steps against a Redis server; the same face as session.Client (a StepClient)."""

    def __init__(self, target: Target, *, auth: RedisAuth | None = None,
                 connect_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        self.target = target
        self.auth = auth
        self.connect_timeout_s = connect_timeout_s
        self.server_name = ""
        self.buffers = None  # no UDP socket: sweep records no client buffers
        self._value_for_get: bytes | None = None
        self._wrote_key = False

    def __enter__(self) -> RedisClient:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        """Check the server answers (and accepts our credentials) before any step."""
        sock = self.open_connection()
        try:
            info = call(sock, b"INFO", b"server", where=str(self.target))
            for line in info.split(b"\r\n"):
                if line.startswith(b"redis_version:"):
                    self.server_name = "redis " + line.split(b":", 1)[1].decode("ascii", "replace")
        finally:
            sock.close()

    def open_connection(self) -> socket.socket:
        """A connected, authenticated TCP socket that has answered PING."""
        where = str(self.target)
        family, address = resolve(self.target)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout_s)
        try:
            try:
                sock.connect(address)
            except ConnectionRefusedError:
                raise ConnectError(f"connection refused by {where}: is redis-server running "
                                   "there?") from None
            except socket.timeout:
                raise ConnectError(f"no answer from {where} within {self.connect_timeout_s:g} s"
                                   ) from None
            except OSError as exc:
                raise ConnectError(f"cannot reach {where}: {exc.strerror or exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.auth is not None:
                args = [b"AUTH"]
                if self.auth.username:
                    args.append(self.auth.username.encode())
                args.append(self.auth.password.encode())
                reply = call(sock, *args, where=where)
                if reply.startswith(b"-"):
                    raise AuthError(f"{where} refused AUTH: {_first_line(reply)} "
                                    "(check --redis-password)")
            reply = call(sock, b"PING", where=where)
            if reply.startswith((b"-NOAUTH", b"-WRONGPASS")):
                raise AuthError(f"{where} requires a password: pass --redis-password or use "
                                "redis://:PASSWORD@HOST:PORT")
            if reply.startswith(b"-"):
                raise ConnectError(f"{where} refused PING: {_first_line(reply)}")
            if reply != b"+PONG\r\n":
                raise RemoteProtocolError(f"{where} answered PING with {reply[:40]!r}, not "
                                          "+PONG: is it a Redis server?")
        except BaseException:
            sock.close()
            raise
        return sock

    def _prepare(self, params: StepParams, sock: socket.socket) -> None:
        """GET must find a value of the step's size under wire.KEY."""
        if params.command == "set":
            self._wrote_key = True
            self._value_for_get = None  # the SETs overwrite it
        if params.command != "get":
            return
        value = resp.get_value(params.size_bytes)
        if value == self._value_for_get:
            return
        reply = call(sock, b"SET", wire.KEY, value, where=str(self.target))
        if reply != b"+OK\r\n":
            raise ConnectError(f"{self.target} refused SET {wire.KEY.decode()}: "
                               f"{_first_line(reply)}")
        self._value_for_get = value
        self._wrote_key = True

    def run_step(self, params: StepParams, *, index: int = 0, repeat: int = 0,
                 stop: threading.Event | None = None) -> StepResult:
        """One rr-tcp step against the server; returns its step dict."""
        if params.workload != resp.WORKLOAD:
            raise ConfigError(f"a Redis target runs request/response over TCP only "
                              f"(workload {resp.WORKLOAD}), not {params.workload}")
        sockets: list[socket.socket] = []
        try:
            for _ in range(params.connections):
                sockets.append(self.open_connection())
            self._prepare(params, sockets[0])
            outcome = resp.drive(sockets, params, peer=str(self.target), stop=stop)
        finally:
            for sock in sockets:
                sock.close()
        c = outcome.counters
        # No far end reports back: what the client saw answered is all we know.
        receiver: dict[str, Any] = {
            "received_packets": c["received"] + c["late"] + c["resp_errors"],
            "drops": {},
            "rcvbuf_errors": 0,
            "server": self.server_name or "redis",
        }
        return resp.summarize(params, outcome, receiver, index=index, repeat=repeat)

    def close(self) -> None:
        """Delete the benchmark key if a step wrote it (best effort)."""
        if not self._wrote_key:
            return
        self._wrote_key = False
        self._value_for_get = None
        try:
            sock = self.open_connection()
        except (OSError, ConnectError, AuthError, RemoteProtocolError):
            return
        try:
            call(sock, b"DEL", wire.KEY, where=str(self.target))
        except (OSError, ConnectError, RemoteProtocolError):
            pass
        finally:
            sock.close()


def run_step(target: str | Target, params: StepParams, *, auth: RedisAuth | None = None,
             stop: threading.Event | None = None) -> StepResult:
    """Run one rr-tcp step against the Redis server at `target` (a redis:// URL or Target).

    Credentials in the URL are used unless `auth` is given.
    """
    if isinstance(target, str):
        target, url_auth = parse_redis_url(target)
        auth = auth or url_auth
    with RedisClient(target, auth=auth) as client:
        return client.run_step(params, stop=stop)
