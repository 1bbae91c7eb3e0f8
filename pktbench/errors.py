"""The one exception tree of pktbench.

Every class also inherits the builtin a caller would naturally catch, so
`except ValueError` still works for a bad profile. Messages name the thing
that is wrong and how to fix it; the CLI prints them as one line.
"""
from __future__ import annotations


class PktbenchError(Exception):
    """Base of every error pktbench raises on purpose."""


class ConfigError(PktbenchError, ValueError):
    """A profile, option or parameter is invalid."""


class LocalProtocolError(PktbenchError, RuntimeError):
    """We were about to break the control protocol."""


class RemoteProtocolError(PktbenchError, RuntimeError):
    """The peer broke the control protocol (or is not a pktbench peer)."""


class AuthError(PktbenchError, PermissionError):
    """The peer refused our credentials, or sent wrong ones."""


class ServerBusyError(PktbenchError, RuntimeError):
    """The server is serving another client."""


class ServerRefusedError(PktbenchError, RuntimeError):
    """The server refused a step (rate or duration over its limits, bad params)."""


class ConnectError(PktbenchError, ConnectionError):
    """The control connection could not be made."""


class EngineError(PktbenchError, OSError):
    """A socket call in the engine failed with an errno that is not a counter."""


class TestbedError(PktbenchError, RuntimeError):
    """The namespace testbed could not be set up, shaped or removed."""

    __test__ = False  # not a pytest test class despite the name
