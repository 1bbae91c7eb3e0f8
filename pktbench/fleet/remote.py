"""SSH to fleet hosts (asyncssh) and the remote processes started there.

Owns: one SSH connection per host for the whole run, host-key checking,
running short commands, and starting and stopping long ones (`serve`,
`sweep`) through a small POSIX shell wrapper.

The wrapper, per process: reads the run's token from the first line of
stdin into a fresh mode-0600 file in the host's run directory (a mode-0700
`mktemp -d`), so the secret never appears on a command line; starts the
command with `--token-file`; prints the command's PID; and keeps reading
stdin, so that when the SSH channel goes away (the coordinator died, the
connection dropped) the command is sent SIGTERM. The coordinator stops each
process it started by that PID (TERM, then KILL), on success, error or
Ctrl-C alike.

Must not: pass secrets in argv or environment, or connect with host keys
unchecked unless the caller asked for `insecure`.
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from pktbench.errors import PktbenchError
from pktbench.fleet.inventory import Host

PID_MARK = "pktbench-fleet-pid "

_WRAPPER = """umask 077
d={rundir}
IFS= read -r t || exit 97
f=$(mktemp "$d/token.XXXXXX") || exit 97
printf '%s\\n' "$t" > "$f"
exec 3<&0
{command} </dev/null &
p=$!
echo "{mark}$p"
{{ cat <&3 >/dev/null 2>&1; [ -e "$f" ] && kill -TERM "$p" 2>/dev/null; }} >/dev/null 2>&1 &
wait "$p"
rc=$?
rm -f "$f"
exit $rc
"""

_STOP = ('kill -TERM {pid} 2>/dev/null; i=0; while kill -0 {pid} 2>/dev/null && '
         '[ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL {pid} 2>/dev/null; true')


class RemoteError(PktbenchError, RuntimeError):
    """A host could not be reached or a remote command failed."""


@dataclass(frozen=True)
class SshPolicy:
    """How host keys are checked. `known_hosts` None: the user's ~/.ssh/known_hosts."""

    known_hosts: str | None = None
    accept_new: bool = False
    insecure: bool = False
    connect_timeout_s: float = 10.0

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts or os.path.expanduser("~/.ssh/known_hosts"))


def _known_host_name(host: Host) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def _explain(exc: BaseException, host: Host, policy: SshPolicy, *, known: bool = False
             ) -> str:
    where = f"{host.address}:{host.port}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if known:
            # The one case --accept-new-host-keys must never paper over.
            return (f"{where}: host key CHANGED: it does not match the key for "
                    f"{_known_host_name(host)} in {policy.known_hosts_path} (refused; remove "
                    "that line only if the change is expected)")
        return (f"{where}: host key not verified against {policy.known_hosts_path} "
                "(first contact: --accept-new-host-keys)")
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"{where}: SSH login refused for user {host.user or 'default'} (check key/user)"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{where}: SSH disconnected: {exc.reason}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"{where}: no SSH answer in {policy.connect_timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (is sshd running?)"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}"
    if isinstance(exc, (ValueError, asyncssh.KeyImportError)):
        return f"{where}: {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def _has_known_key(path: Path, host: Host) -> bool:
    if not path.exists():
        return False
    try:
        known = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError):
        return False  # asyncssh.connect reads it again and says what is wrong
    return bool(known.match(host.address, host.address, host.port)[0])


async def connect(host: Host, policy: SshPolicy) -> asyncssh.SSHClientConnection:
    """One SSH connection to `host`, host key checked as `policy` says.

    Raises:
        RemoteError: unreachable, refused, host key unknown or changed,
            login refused; the message is one line naming the host.
    """
    known: Any
    record = False
    path = policy.known_hosts_path
    listed = not policy.insecure and _has_known_key(path, host)
    if policy.insecure:
        known = None
    elif policy.accept_new and not listed:
        known, record = None, True
    elif not path.exists():
        raise RemoteError(f"known_hosts file {path} not found: give --known-hosts FILE, "
                          "or --accept-new-host-keys for first contact")
    else:
        known = str(path)
    options: dict[str, Any] = {"known_hosts": known, "port": host.port,
                               "connect_timeout": policy.connect_timeout_s}
    if host.user:
        options["username"] = host.user
    if host.key:
        options["client_keys"] = [host.key]
        options["agent_path"] = None
    try:
        conn = await asyncio.wait_for(asyncssh.connect(host.address, **options),
                                      policy.connect_timeout_s + 1.0)
    except (OSError, asyncssh.Error, asyncio.TimeoutError, ValueError) as exc:
        raise RemoteError(_explain(exc, host, policy, known=listed)) from None
    if record:
        key = conn.get_server_host_key()
        if key is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            line = f"{_known_host_name(host)} {key.export_public_key().decode().strip()}\n"
            with open(path, "a", encoding="ascii") as out:
                out.write(line)
    return conn


@dataclass
class RemoteProcess:
    """A long command started on a host through the wrapper."""

    host: str
    pid: int
    process: asyncssh.SSHClientProcess[str]
    stopped: bool = False


class RemoteHost:
    """A connected host: short commands, and processes it must stop later."""

    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self.conn = conn
        self.run_dir: str | None = None
        self.running: dict[int, RemoteProcess] = {}
        self.command: str | None = None  # set by --install: the venv's pktbench

    @property
    def words(self) -> str:
        """The pktbench command on this host, as shell words."""
        return self.command or self.host.pktbench

    async def run(self, command: str, *, input_text: str | None = None,
                  timeout_s: float = 30.0) -> tuple[int, str, str]:
        """Run a short command; (exit status, stdout, stderr)."""
        try:
            result = await asyncio.wait_for(
                self.conn.run(command, input=input_text, check=False), timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteError(f"{self.host.name}: `{command[:60]}` did not finish in "
                              f"{timeout_s:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"{self.host.name}: SSH failed: {exc}") from None
        status = result.exit_status if result.exit_status is not None else 255
        return status, str(result.stdout or ""), str(result.stderr or "")

    async def make_run_dir(self) -> str:
        status, out, err = await self.run('umask 077; mktemp -d "${TMPDIR:-/tmp}/pktbench-'
                                          'fleet.XXXXXX"')
        if status != 0 or not out.strip():
            raise RemoteError(f"{self.host.name}: cannot make a run directory: "
                              f"{(err or out).strip()[:120]}")
        self.run_dir = out.strip()
        return self.run_dir

    async def put_text(self, name: str, text: str) -> str:
        """Write `text` to RUNDIR/name (mode 0600); its remote path."""
        assert self.run_dir is not None
        path = f"{self.run_dir}/{name}"
        status, _, err = await self.run(f"umask 077; cat > {shlex.quote(path)}",
                                        input_text=text)
        if status != 0:
            raise RemoteError(f"{self.host.name}: cannot write {path}: {err.strip()[:120]}")
        return path

    async def start(self, subcommand: str, args: Sequence[str], token: str, *,
                    limit_s: float | None = None, pid_timeout_s: float = 30.0) -> RemoteProcess:
        """Start `pktbench SUBCOMMAND --token-file F ARGS` with `token` in F."""
        assert self.run_dir is not None
        command = f"{self.words} {subcommand} --token-file \"$f\" {shlex.join(args)}"
        if limit_s is not None:
            # A bound of its own: it ends even if nobody is left to stop it.
            command = f"timeout -k 5 {int(limit_s) + 1} {command}"
        script = _WRAPPER.format(rundir=shlex.quote(self.run_dir), command=command,
                                 mark=PID_MARK)
        try:
            process = await self.conn.create_process(script, encoding="utf-8")
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"{self.host.name}: cannot start {subcommand}: {exc}") from None
        process.stdin.write(token + "\n")
        try:
            line = await asyncio.wait_for(process.stdout.readline(), pid_timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            process.close()
            raise RemoteError(f"{self.host.name}: {subcommand} did not start in "
                              f"{pid_timeout_s:g} s") from None
        if not line.startswith(PID_MARK):
            err = await _drain(process.stderr)
            process.close()
            raise RemoteError(f"{self.host.name}: {subcommand} did not start: "
                              f"{_last_line(err) or line.strip() or 'no output'}")
        proc = RemoteProcess(self.host.name, int(line[len(PID_MARK):].strip()), process)
        self.running[proc.pid] = proc
        return proc

    async def stop(self, proc: RemoteProcess) -> None:
        """Stop `proc` by its PID (TERM, KILL after 3 s); fine if it has ended."""
        if proc.stopped:
            return
        if proc.process.exit_status is None:
            try:
                await self.run(_STOP.format(pid=proc.pid), timeout_s=15.0)
            except RemoteError:
                pass  # the channel's end makes the wrapper stop it too
        proc.stopped = True
        proc.process.close()
        self.running.pop(proc.pid, None)

    async def cleanup(self) -> None:
        """Stop everything still running here and remove the run directory."""
        for proc in list(self.running.values()):
            await self.stop(proc)
        if self.run_dir is not None:
            try:
                await self.run(f"rm -rf {shlex.quote(self.run_dir)}", timeout_s=15.0)
            except RemoteError:
                pass
            self.run_dir = None

    async def clock_offset(self, samples: int = 5) -> tuple[float, float]:
        """(offset_ms, rtt_ms) of this host's clock: the sample with the least RTT.

        One shell reads a line and prints its clock, over one channel, so a
        sample costs one network round trip and not a channel's set-up.
        Offset is remote - local, local being the round trip's midpoint.
        """
        try:
            process = await self.conn.create_process(
                "while IFS= read -r _; do date +%s%N; done", encoding="utf-8")
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"{self.host.name}: SSH failed: {exc}") from None
        best: tuple[float, float] | None = None
        try:
            for _ in range(samples):
                start = time.time()
                process.stdin.write("\n")
                line = await asyncio.wait_for(process.stdout.readline(), 10.0)
                end = time.time()
                if not line.strip().isdigit():
                    raise RemoteError(f"{self.host.name}: `date +%s%N` gave no clock")
                rtt = end - start
                offset = int(line.strip()) / 1e9 - (start + end) / 2
                if best is None or rtt < best[1]:
                    best = (offset * 1e3, rtt * 1e3)
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteError(f"{self.host.name}: no clock reading in 10 s") from None
        finally:
            process.stdin.write_eof()
            process.close()
        assert best is not None
        return best

    def close(self) -> None:
        self.conn.close()


async def _drain(stream: Any, timeout_s: float = 2.0) -> str:
    try:
        return str(await asyncio.wait_for(stream.read(), timeout_s))
    except (asyncio.TimeoutError, TimeoutError, OSError, asyncssh.Error):
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


async def finish(proc: RemoteProcess, timeout_s: float) -> tuple[int, str, str]:
    """Wait for `proc` to end: (exit status, stdout after the PID line, stderr)."""
    try:
        out, err = await asyncio.wait_for(
            asyncio.gather(proc.process.stdout.read(), proc.process.stderr.read()), timeout_s)
        await asyncio.wait_for(proc.process.wait_closed(), 10.0)
    except (asyncio.TimeoutError, TimeoutError):
        raise RemoteError(f"{proc.host}: did not finish in {timeout_s:g} s") from None
    status = proc.process.exit_status
    proc.stopped = True
    return (255 if status is None else status), str(out), str(err)


last_line = _last_line


async def run_json(remote: RemoteHost, command: str, args: Sequence[str], token: str, *,
                   limit_s: float) -> dict[str, Any]:
    """Run `pktbench COMMAND ARGS` on `remote` and return the JSON it wrote on stdout.

    Raises:
        RemoteError: it did not start, did not end within limit_s + 15 s,
            exited non-zero (its last line of error said) or wrote no JSON.
    """
    proc = await remote.start(command, list(args), token, limit_s=limit_s)
    status, out, err = await finish(proc, limit_s + 15)
    remote.running.pop(proc.pid, None)
    if status != 0:
        raise RemoteError(f"{command} exited {status}: {last_line(err) or 'no message'}")
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        raise RemoteError(f"{command} wrote no JSON: {last_line(err) or out[:80]}") from None
    if not isinstance(doc, dict):
        raise RemoteError(f"{command} wrote JSON that is not a result document")
    return doc
