"""Parsing and resolving the HOST[:PORT] targets every client verb takes.

Forms: `HOST`, `HOST:PORT`, `[V6ADDR]`, `[V6ADDR]:PORT`, a bare IPv6
address (no port), and `redis://HOST[:PORT]` for a real Redis server.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from pktbench.errors import ConfigError, ConnectError
from pktbench.wire import DEFAULT_PORT

REDIS_DEFAULT_PORT = 6379


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    redis: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'redis://' if self.redis else ''}{host}:{self.port}"


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> Target:
    """Split a target string; raises ConfigError naming what is wrong."""
    raw = text.strip()
    redis = raw.lower().startswith("redis://")
    if redis:
        raw = raw[len("redis://"):].rstrip("/")
        default_port = REDIS_DEFAULT_PORT
    if not raw:
        raise ConfigError(f"target {text!r} has no host; use HOST[:PORT] or [IPV6]:PORT")
    port_text: str | None = None
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep:
            raise ConfigError(f"target {text!r}: missing ']' after the IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"target {text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    else:
        host = raw  # a name, an IPv4 address, or a bare IPv6 address
    if not host:
        raise ConfigError(f"target {text!r} has no host")
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"target {text!r}: port must be a number from 1 to 65535 "
                              f"(got {port_text!r})")
        port = int(port_text)
    return Target(host, port, redis)


def resolve(target: Target, kind: int = socket.SOCK_STREAM) -> tuple[int, tuple[str, int]]:
    """(family, (address, port)) for the target; ConnectError when it does not resolve."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectError(f"cannot resolve host {target.host!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))
