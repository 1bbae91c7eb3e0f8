"""`--install WHEEL`: put a pktbench wheel into a venv on each host, over SFTP.

Owns: checking the wheel on the coordinator, copying it to a host over the
run's SSH connection (SFTP), installing it into a venv under the remote
user's cache directory, and the command the run then uses there.

Layout on a host: `${XDG_CACHE_HOME:-~/.cache}/pktbench/` (mode 0700) holds
`wheels/NAME.whl` and `venv-SHA16/`, one venv per wheel content (the first 16
hex digits of its SHA-256). A venv whose `.pktbench-wheel` marker holds the
wheel's full SHA-256 is complete and is reused; the marker is written last,
so a venv left half-built by an interrupted install is made again. The venv
is made with `--system-site-packages` by the host's `python` (inventory),
so dependencies the host already has are used as they are and pip fetches
only what is missing, from the index the host's pip is configured with.

Must not: run anything but the host's python, pip and coreutils; put the
wheel anywhere but the user's cache directory.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from pktbench.errors import ConfigError
from pktbench.fleet.remote import RemoteError, RemoteHost, last_line

_WHEEL_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?"
                       r"-[^-]+-[^-]+-[^-]+\.whl$")
MARKER = ".pktbench-wheel"


@dataclass(frozen=True)
class Wheel:
    """A pktbench wheel on the coordinator."""

    path: Path
    version: str
    sha256: str

    @property
    def venv_name(self) -> str:
        return f"venv-{self.sha256[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "version": self.version, "sha256": self.sha256}


def load_wheel(path: str) -> Wheel:
    """Check that `path` is a readable pktbench wheel; its version and digest.

    Raises:
        ConfigError: missing, unreadable, or not a pktbench wheel by its name.
    """
    wheel = Path(path)
    match = _WHEEL_RE.match(wheel.name)
    if match is None or match.group("name").lower().replace(".", "_") != "pktbench":
        raise ConfigError(f"--install {path}: not a pktbench wheel (expected "
                          "pktbench-VERSION-TAGS.whl)")
    try:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ConfigError(f"--install {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--install {path}: cannot read: {exc.strerror}") from None
    return Wheel(path=wheel, version=match.group("version"), sha256=digest)


async def install(remote: RemoteHost, wheel: Wheel, timeout_s: float = 300.0
                  ) -> dict[str, Any]:
    """Install `wheel` on `remote` (or find it installed); points `remote` at its pktbench.

    Returns the preflight record: venv, command, reused, copy_s, install_s.

    Raises:
        RemoteError: the cache directory, the copy, the venv or pip failed;
            the message is one line (pip's last line of error).
    """
    started = time.monotonic()
    status, out, err = await remote.run(
        'd="${XDG_CACHE_HOME:-$HOME/.cache}/pktbench"; umask 077; '
        'mkdir -p "$d/wheels" && chmod 700 "$d" && cd "$d" && pwd')
    if status != 0 or not out.strip():
        raise RemoteError(f"install: no cache directory: {last_line(err) or f'exit {status}'}")
    cache = out.strip().splitlines()[-1]
    venv = f"{cache}/{wheel.venv_name}"
    command = shlex.quote(f"{venv}/bin/pktbench")
    record: dict[str, Any] = {"venv": venv, "command": f"{venv}/bin/pktbench",
                              **wheel.to_dict()}
    q_venv = shlex.quote(venv)
    status, _, _ = await remote.run(
        f'test "$(cat {q_venv}/{MARKER} 2>/dev/null)" = {wheel.sha256} && '
        f"test -x {q_venv}/bin/pktbench")
    if status == 0:
        remote.command = command
        return {**record, "reused": True, "copy_s": 0.0, "install_s": 0.0}
    remote_wheel = f"{cache}/wheels/{wheel.path.name}"
    try:
        async with remote.conn.start_sftp_client() as sftp:
            await sftp.put(str(wheel.path), remote_wheel)
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"install: SFTP copy of {wheel.path.name} failed: {exc}") from None
    copied = time.monotonic()
    q_wheel = shlex.quote(remote_wheel)
    status, out, _ = await remote.run(f"sha256sum {q_wheel}")
    if status != 0 or out.split()[:1] != [wheel.sha256]:
        raise RemoteError(f"install: the copy of {wheel.path.name} does not match its SHA-256")
    # The wheel goes in with --ignore-installed: a pktbench of the same version
    # in the system site-packages would otherwise satisfy pip, and the venv
    # would get no entry point. The second pip call adds only the missing
    # dependencies; the marker is written once the entry point runs.
    pip = f"PIP_DISABLE_PIP_VERSION_CHECK=1 {q_venv}/bin/python -m pip install --quiet --no-input"
    script = (f"rm -rf {q_venv} && {remote.host.python} -m venv --system-site-packages "
              f"{q_venv} && {pip} --no-deps --ignore-installed {q_wheel} && "
              f"{pip} {q_wheel} && {command} --version >/dev/null && "
              f"echo {wheel.sha256} > {q_venv}/{MARKER}")
    status, out, err = await remote.run(script, timeout_s=timeout_s)
    if status != 0:
        raise RemoteError(f"install: {last_line(err) or last_line(out) or f'exit {status}'}")
    remote.command = command
    done = time.monotonic()
    return {**record, "reused": False, "copy_s": round(copied - started, 4),
            "install_s": round(done - copied, 4)}
