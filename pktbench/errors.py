"""The one exception tree of pktbench.

Every class also inherits the builtin a caller would naturally catch, so
`except ValueError` still works for a bad profile. Messages name the thing
that is wrong and how to fix it; the CLI prints them as one line.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType


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


# -- errno mapping -----------------------------------------------------------
# An engine call that fails returns -errno; errno_error turns it into the
# OSError subclass Python itself would pick for that errno (ConnectionResetError
# for ECONNRESET, PermissionError for EPERM, ...), which is also an EngineError,
# so callers catch either the builtin or pktbench's base. EAGAIN, ENOBUFS and
# EINTR never get here: the engine counts them.


class EngineBlockingIOError(EngineError, BlockingIOError):
    pass


class EngineBrokenPipeError(EngineError, ConnectError, BrokenPipeError):
    pass


class EngineConnectionAbortedError(EngineError, ConnectError, ConnectionAbortedError):
    pass


class EngineConnectionRefusedError(EngineError, ConnectError, ConnectionRefusedError):
    pass


class EngineConnectionResetError(EngineError, ConnectError, ConnectionResetError):
    pass


class EnginePermissionError(EngineError, PermissionError):
    pass


class EngineTimeoutError(EngineError, TimeoutError):
    pass


class EngineInterruptedError(EngineError, InterruptedError):
    pass


class EngineFileNotFoundError(EngineError, FileNotFoundError):
    pass


class EngineFileExistsError(EngineError, FileExistsError):
    pass


class EngineIsADirectoryError(EngineError, IsADirectoryError):
    pass


class EngineNotADirectoryError(EngineError, NotADirectoryError):
    pass


class EngineProcessLookupError(EngineError, ProcessLookupError):
    pass


class EngineChildProcessError(EngineError, ChildProcessError):
    pass


_BY_BUILTIN: Mapping[type[OSError], type[EngineError]] = MappingProxyType({
    BlockingIOError: EngineBlockingIOError,
    BrokenPipeError: EngineBrokenPipeError,
    ConnectionAbortedError: EngineConnectionAbortedError,
    ConnectionRefusedError: EngineConnectionRefusedError,
    ConnectionResetError: EngineConnectionResetError,
    PermissionError: EnginePermissionError,
    TimeoutError: EngineTimeoutError,
    InterruptedError: EngineInterruptedError,
    FileNotFoundError: EngineFileNotFoundError,
    FileExistsError: EngineFileExistsError,
    IsADirectoryError: EngineIsADirectoryError,
    NotADirectoryError: EngineNotADirectoryError,
    ProcessLookupError: EngineProcessLookupError,
    ChildProcessError: EngineChildProcessError,
})


def errno_error(code: int, what: str, hint: str | None = None) -> EngineError:
    """The exception for errno `code` in `what`: its matching OSError subclass.

    `hint` replaces the system's text (os.strerror) when the caller knows
    what the errno means in its context.
    """
    builtin = type(OSError(code, ""))  # Python's own errno -> subclass table
    cls = _BY_BUILTIN.get(builtin, EngineError)
    return cls(code, f"{what}: {hint or os.strerror(code)}")


def check_rc(rc: int, what: str, hints: Mapping[int, str] | None = None) -> None:
    """Raise errno_error for a negative engine return code; counts pass."""
    if rc < 0:
        raise errno_error(-rc, what, hints.get(-rc) if hints else None)


class TestbedError(PktbenchError, RuntimeError):
    """The namespace testbed could not be set up, shaped or removed."""

    __test__ = False  # not a pytest test class despite the name
