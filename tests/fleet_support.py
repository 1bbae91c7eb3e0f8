"""A multi-host testbed with a real sshd per namespace, for the fleet tests (root).

`fleet_bed(...)` builds it (always removed afterwards) and hands back a `Bed`
that runs `pktbench fleet` inside the coordinator's namespace and lists any
pktbench process left in the host namespaces.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pktbench.fleet import testbed as ftb
from cli_support import PKTBENCH


class Bed:
    def __init__(self, prefix: str, directory: Path, sshd: ftb.SshdSet, hosts: int,
                 profile_text: str) -> None:
        self.prefix, self.dir, self.sshd, self.hosts = prefix, directory, sshd, hosts
        self.profile = directory / "quick.toml"
        self.profile.write_text(profile_text)

    def argv(self, *args: str, known_hosts: str | None = None, profile: Path | None = None
             ) -> list[str]:
        return ftb.coordinator_argv(self.prefix, [
            *PKTBENCH, "fleet", str(self.sshd.inventory), "--known-hosts",
            known_hosts or str(self.sshd.known_hosts), "--profile",
            str(profile or self.profile), *args])

    def fleet(self, *args: str, timeout: float = 240, known_hosts: str | None = None,
              profile: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, known_hosts=known_hosts, profile=profile),
                              capture_output=True, text=True, timeout=timeout)

    def pktbench_processes(self) -> list[str]:
        found = []
        for i in range(1, self.hosts + 1):
            pids = subprocess.run(["ip", "netns", "pids", ftb.host_ns(self.prefix, i)],
                                  capture_output=True, text=True, timeout=10).stdout.split()
            for pid in pids:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if b"pktbench" in cmdline:
                    found.append(f"h{i}:{pid}:{cmdline[:80]!r}")
        return found


def require_sshd_bed() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, sshd)")
    if not Path(ftb.SSHD).exists():
        pytest.skip("openssh-server is not installed")


@contextlib.contextmanager
def fleet_bed(directory: Path, tag: str, hosts: int, profile_text: str, *,
              pps_limits: Mapping[str, int] | None = None,
              pktbench_command: str | None = None) -> Iterator[Bed]:
    """`hosts` namespaces with sshd, prefix unique to this process and `tag`.

    The inventory runs the package under test (`pktbench_command` to say otherwise)
    and makes venvs with this interpreter.
    """
    require_sshd_bed()
    prefix = f"pk{tag}{os.getpid()}"
    with ftb.fleet_testbed(prefix, hosts, directory / "ssh", pps_limits=pps_limits,
                           pktbench_command=pktbench_command or shlex.join(PKTBENCH),
                           python_command=sys.executable) as (_, sshd):
        yield Bed(prefix, directory, sshd, hosts, profile_text)
