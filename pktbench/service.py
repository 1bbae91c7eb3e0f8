"""Running `pktbench serve` under a supervisor: the systemd unit, logs, pid file.

Owns: the unit shipped in package data (pktbench/data/pktbench-serve.service)
and its rendering with this install's executable, the text/JSON log line
formats, and the pid file's life (written once listening, removed on exit
only while it still names this process).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from pktbench.errors import ConfigError

UNIT_NAME = "pktbench-serve.service"
_SHIPPED_EXEC = "/usr/local/bin/pktbench"


def shipped_unit() -> str:
    return resources.files("pktbench").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")


def executable() -> str:
    """The command that runs this install's pktbench, absolute, for ExecStart=."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "pktbench":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return os.path.abspath(found)
    # `python -m pktbench`: the same interpreter, so the same install, runs the service
    return f"{os.path.abspath(sys.executable)} -m pktbench"


def systemd_unit(exec_path: str | None = None) -> str:
    """The shipped unit with ExecStart= naming `exec_path` (default: this install)."""
    path = exec_path or executable()
    if any(ch.isspace() for ch in path.removesuffix(" -m pktbench")):
        raise ConfigError(f"cannot name {path!r} in ExecStart=: the path contains whitespace")
    return shipped_unit().replace(f"ExecStart={_SHIPPED_EXEC} ", f"ExecStart={path} ", 1)


def _json_line(message: str, **fields: Any) -> str:
    return json.dumps({"ts": round(time.time(), 3), "pid": os.getpid(), "msg": message,
                       **fields}, sort_keys=True)


def logger(log_format: str, quiet: bool) -> Callable[[str], None]:
    """The Server's log: nothing, plain lines, or one JSON object per line (stderr)."""
    if quiet:
        return lambda line: None
    if log_format == "json":
        return lambda line: print(_json_line(line, event="log"), file=sys.stderr, flush=True)
    return lambda line: print(line, file=sys.stderr, flush=True)


def announce(log_format: str, host: str, port: int) -> None:
    """The listening line on stdout (scripts and tests wait for it)."""
    from pktbench.report import listening_line

    line = listening_line((host, port))
    if log_format == "json":
        line = _json_line(line, event="listening", host=host, port=port)
    print(line, flush=True)


def log_stats(log_format: str, stats: Any) -> None:
    """What the server did, on stderr when it stops."""
    from pktbench.report import server_summary_line

    line = server_summary_line(stats)
    if log_format == "json":
        line = _json_line(line, event="stopped", **{
            **stats.to_dict(), "busy": stats.busy_refusals, "dropped": stats.protocol_errors,
            "drops": sum(stats.drops.values()), "drops_by_reason": dict(stats.drops)})
    print(line, file=sys.stderr, flush=True)


@contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's id to `path` (atomically) for the block's duration."""
    if path is None:
        yield
        return
    target = Path(path)
    pid = str(os.getpid())
    temporary = target.with_name(f".{target.name}.{pid}")
    try:
        temporary.write_text(pid + "\n", encoding="ascii")
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write pid file {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        try:
            if target.read_text(encoding="ascii").strip() == pid:
                target.unlink()
        except OSError:
            pass
