"""A fleet on one machine: N namespaces on one bridge, an OpenSSH server in each.

Owns: `up`/`down` of the multi-host testbed and `sshd_up`/`sshd_down`.

Layout for prefix P and N hosts: namespaces P-h1..P-hN, each with `eth0` at
198.18.0.i/24, and the coordinator's namespace P-c, which holds the bridge
`br0` (198.18.0.254/24) that every host's veth peer is enslaved to. Run the
coordinator inside P-c (`ip netns exec P-c pktbench fleet ...`): the root
namespace is never touched, and no namespace has a default route, so traffic
cannot leave the testbed. `host_pps_limits` puts an nftables policer at a
host's ingress (`limit rate over N/second burst B packets`, B >= 100) on UDP
only, so the SSH and control connections stay usable over the limit, as on a
data interface with a packet-rate cap.

sshd: one `sshd -f CONFIG` per host namespace, each with its own generated
ed25519 host key in a mode-0700 directory, root login by a generated client
key only, listening on the host's address, and XDG_CACHE_HOME set to a
directory of that host's own (the hosts share one file system); a known_hosts file and a TOML
inventory for the coordinator are written beside them. Stopped by the PID
in each server's pid file.

Must not: touch the root namespace; kill processes outside our namespaces.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pktbench import testbed as tb
from pktbench.errors import ConfigError, TestbedError

MAX_HOSTS = 64
COORDINATOR_ADDR = "198.18.0.254"
SSHD = "/usr/sbin/sshd"


def host_name(i: int) -> str:
    return f"h{i}"


def host_ns(prefix: str, i: int) -> str:
    return f"{prefix}-h{i}"


def coordinator_ns(prefix: str) -> str:
    return f"{prefix}-c"


def host_addr(i: int) -> str:
    return f"198.18.0.{i}"


def parse_host_limits(items: Sequence[str], hosts: int) -> dict[str, int]:
    """['h3=4700'] -> {'h3': 4700}; names must be h1..hN."""
    limits: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"--host-pps-limit {item!r}: expected NAME=PPS, e.g. h3=4700")
        if name not in {host_name(i) for i in range(1, hosts + 1)}:
            raise ConfigError(f"--host-pps-limit {item!r}: no host {name} "
                              f"(hosts are h1..h{hosts})")
        limits[name] = int(value)
        if not 1 <= limits[name] <= 100_000_000:
            raise ConfigError(f"--host-pps-limit {item!r}: PPS must be 1..100000000")
    return limits


@dataclass(frozen=True)
class FleetBed:
    """A multi-host testbed as built."""

    prefix: str
    hosts: tuple[str, ...]
    namespaces: Mapping[str, str]
    addresses: Mapping[str, str]
    coordinator_namespace: str
    coordinator_address: str
    pps_limits: Mapping[str, int] = field(default_factory=dict)
    pps_burst: int = tb.MIN_PPS_BURST

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "hosts": list(self.hosts),
                "namespaces": dict(self.namespaces), "addresses": dict(self.addresses),
                "coordinator_namespace": self.coordinator_namespace,
                "coordinator_address": self.coordinator_address,
                "pps_limits": dict(self.pps_limits), "pps_burst": self.pps_burst}


def _policer(limit: int, burst: int) -> str:
    return (
        f"table inet {tb.NFT_TABLE} {{\n"
        "  counter seen {}\n  counter dropped {}\n"
        "  chain police {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        "    iifname \"eth0\" meta l4proto udp counter name \"seen\"\n"
        f"    iifname \"eth0\" meta l4proto udp limit rate over {limit}/second "
        f"burst {burst} packets counter name \"dropped\" drop\n"
        "  }\n}\n")


def _existing(prefix: str) -> list[str]:
    out = tb._run(["ip", "-j", "netns", "list"]).strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    ours = {coordinator_ns(prefix)} | {host_ns(prefix, i) for i in range(1, MAX_HOSTS + 1)}
    return [name for name in names if name in ours]


def up(prefix: str, hosts: int, *, pps_limits: Mapping[str, int] | None = None,
       pps_burst: int = tb.MIN_PPS_BURST) -> FleetBed:
    """Build the N-host testbed (replacing one with the same prefix).

    Raises:
        ConfigError: bad prefix, host count or limits.
        TestbedError: not root, or a command failed (what was made is removed).
    """
    tb._check_prefix(prefix)
    if not 2 <= hosts <= MAX_HOSTS:
        raise ConfigError(f"testbed --hosts must be 2..{MAX_HOSTS} (got {hosts})")
    if pps_burst < tb.MIN_PPS_BURST:
        raise ConfigError(f"policer burst must be at least {tb.MIN_PPS_BURST} packets")
    limits = dict(pps_limits or {})
    tb.require_root()
    tb._require_tool("ip")
    tb._require_tool("ethtool")
    if limits:
        tb._require_tool("nft")
    down(prefix)
    names = tuple(host_name(i) for i in range(1, hosts + 1))
    cns = coordinator_ns(prefix)
    try:
        tb._run(["ip", "netns", "add", cns])
        sysctls = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        tb._run(tb._in_ns(cns, ["sysctl", "-q", "-w", *sysctls]))
        tb._run(["ip", "-n", cns, "link", "set", "lo", "up"])
        tb._run(["ip", "-n", cns, "link", "add", "br0", "type", "bridge"])
        tb._run(["ip", "-n", cns, "addr", "add", f"{COORDINATOR_ADDR}/24", "dev", "br0"])
        tb._run(["ip", "-n", cns, "link", "set", "br0", "up"])
        for i in range(1, hosts + 1):
            ns = host_ns(prefix, i)
            tb._run(["ip", "netns", "add", ns])
            tb._run(tb._in_ns(ns, ["sysctl", "-q", "-w", *sysctls]))
            tb._run(["ip", "-n", ns, "link", "set", "lo", "up"])
            tb._run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer",
                     "name", f"vh{i}", "netns", cns])
            tb._run(["ip", "-n", ns, "addr", "add", f"{host_addr(i)}/24", "dev", "eth0"])
            tb._run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            tb._run(["ip", "-n", cns, "link", "set", f"vh{i}", "master", "br0"])
            tb._run(["ip", "-n", cns, "link", "set", f"vh{i}", "up"])
            # as in the two-namespace testbed: every datagram a packet, a GSO
            # buffer is not one packet to the policer
            tb._run(tb._in_ns(ns, ["ethtool", "-K", "eth0", tb.UDP_SEGMENTATION_FEATURE,
                                   "off"]))
            tb._run(tb._in_ns(cns, ["ethtool", "-K", f"vh{i}", tb.UDP_SEGMENTATION_FEATURE,
                                    "off"]))
            if host_name(i) in limits:
                tb._run(tb._in_ns(ns, ["nft", "-f", "-"]),
                        input_text=_policer(limits[host_name(i)], pps_burst))
    except BaseException:
        with contextlib.suppress(Exception):
            down(prefix)
        raise
    return FleetBed(prefix=prefix, hosts=names,
                    namespaces={n: host_ns(prefix, i) for i, n in enumerate(names, 1)},
                    addresses={n: host_addr(i) for i, n in enumerate(names, 1)},
                    coordinator_namespace=cns, coordinator_address=COORDINATOR_ADDR,
                    pps_limits=limits, pps_burst=pps_burst)


def down(prefix: str) -> bool:
    """Remove every namespace of the testbed `prefix` and what runs in them."""
    tb._check_prefix(prefix)
    tb.require_root()
    removed = False
    for ns in _existing(prefix):
        tb._kill_ns_processes(ns)
        tb._run(["ip", "netns", "del", ns])
        removed = True
    return removed


def policer_counts(prefix: str, i: int) -> dict[str, int] | None:
    """{'seen': n, 'dropped': n} of host i's policer, None without one."""
    proc = subprocess.run(tb._in_ns(host_ns(prefix, i), ["nft", "-j", "list", "counters",
                                                         "table", "inet", tb.NFT_TABLE]),
                          capture_output=True, text=True, timeout=15, check=False)
    if proc.returncode != 0:
        return None
    found = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter:
            found[counter["name"]] = int(counter["packets"])
    return found


# ---------------------------------------------------------------- sshd


@dataclass(frozen=True)
class SshdSet:
    """The OpenSSH servers of a testbed and the files a coordinator needs."""

    directory: Path
    client_key: Path
    known_hosts: Path
    inventory: Path
    pids: Mapping[str, int]


def _keygen(path: Path, comment: str) -> None:
    tb._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _sshd_config(host_dir: Path, address: str, authorized: Path) -> str:
    return "\n".join([
        "Port 22", f"ListenAddress {address}",
        f"HostKey {host_dir / 'ssh_host_ed25519_key'}",
        f"PidFile {host_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "MaxSessions 64", "MaxStartups 64", "LogLevel ERROR",
        # Hosts of one machine share a file system: each gets a cache of its
        # own, as separate machines have (`fleet --install` puts its venv there).
        f"SetEnv XDG_CACHE_HOME={host_dir / 'cache'}",
        "Subsystem sftp internal-sftp", ""])


def sshd_up(bed: FleetBed, directory: str | os.PathLike[str], *,
            pktbench_command: str = "pktbench", python_command: str | None = None) -> SshdSet:
    """Start an sshd in every host namespace; keys, known_hosts and inventory in `directory`.

    `pktbench_command` goes into the inventory's `pktbench` field,
    `python_command` (when given) into its `python` field.

    Raises:
        TestbedError: sshd or ssh-keygen missing, or a server did not start
            (those started are stopped).
    """
    if not Path(SSHD).exists():
        raise TestbedError(f"{SSHD} not found: install openssh-server "
                           "(apt-get install openssh-server)")
    tb._require_tool("ssh-keygen")
    base = Path(directory)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    client_key = base / "client_ed25519"
    if not client_key.exists():
        _keygen(client_key, "pktbench-fleet-testbed")
    authorized = base / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    known_lines = []
    inventory = []
    pids: dict[str, int] = {}
    try:
        for name in bed.hosts:
            host_dir = base / name
            host_dir.mkdir(mode=0o700, exist_ok=True)
            key = host_dir / "ssh_host_ed25519_key"
            if not key.exists():
                _keygen(key, f"{name}-host")
            address = bed.addresses[name]
            config = host_dir / "sshd_config"
            config.write_text(_sshd_config(host_dir, address, authorized))
            pidfile = host_dir / "sshd.pid"
            pidfile.unlink(missing_ok=True)
            tb._run(tb._in_ns(bed.namespaces[name],
                              [SSHD, "-f", str(config), "-E", str(host_dir / "sshd.log")]))
            deadline = time.monotonic() + 10
            # sshd creates the pid file before it writes the number into it
            while not _pid_in(pidfile) and time.monotonic() < deadline:
                time.sleep(0.02)
            pid = _pid_in(pidfile)
            if pid is None:
                raise TestbedError(f"sshd in {bed.namespaces[name]} did not start: see "
                                   f"{host_dir / 'sshd.log'}")
            pids[name] = pid
            pub = Path(f"{key}.pub").read_text().split()
            known_lines.append(f"{address} {pub[0]} {pub[1]}")
            inventory.append("\n".join([
                "[[hosts]]", f'name = "{name}"', f'address = "{address}"', 'user = "root"',
                f'key = "{client_key}"', f"pktbench = {json.dumps(pktbench_command)}",
                *([f"python = {json.dumps(python_command)}"] if python_command else []), ""]))
    except BaseException:
        _stop_pids(pids.values())
        raise
    known_hosts = base / "known_hosts"
    known_hosts.write_text("\n".join(known_lines) + "\n")
    inventory_path = base / "inventory.toml"
    inventory_path.write_text("\n".join(inventory))
    (base / "sshd.json").write_text(json.dumps({"pids": pids}))
    return SshdSet(directory=base, client_key=client_key, known_hosts=known_hosts,
                   inventory=inventory_path, pids=pids)


def _pid_in(pidfile: Path) -> int | None:
    try:
        words = pidfile.read_text().split()
    except OSError:
        return None
    return int(words[0]) if words and words[0].isdigit() else None


def _stop_pids(pids: Iterator[int] | Any) -> None:
    pids = [p for p in pids]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(tb._is_zombie(p) is False for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if not tb._is_zombie(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def sshd_stop(sshd: SshdSet, name: str) -> None:
    """Stop one host's sshd listener (its pid from the pid file)."""
    _stop_pids([sshd.pids[name]])


def sshd_down(directory: str | os.PathLike[str]) -> int:
    """Stop the servers `sshd_up` started in `directory`; how many were running."""
    record = Path(directory) / "sshd.json"
    if not record.exists():
        return 0
    pids = list(json.loads(record.read_text())["pids"].values())
    running = [p for p in pids if not tb._is_zombie(p)]
    _stop_pids(pids)
    record.unlink()
    return len(running)


@contextlib.contextmanager
def fleet_testbed(prefix: str, hosts: int, directory: str | os.PathLike[str], *,
                  pps_limits: Mapping[str, int] | None = None,
                  pktbench_command: str = "pktbench", python_command: str | None = None
                  ) -> Iterator[tuple[FleetBed, SshdSet]]:
    """The testbed with sshd in every host, for the `with` block; always removed."""
    try:
        bed = up(prefix, hosts, pps_limits=pps_limits)
        sshd = sshd_up(bed, directory, pktbench_command=pktbench_command,
                       python_command=python_command)
        yield bed, sshd
    finally:
        with contextlib.suppress(Exception):
            sshd_down(directory)
        down(prefix)


def coordinator_argv(prefix: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the coordinator's namespace."""
    return ["ip", "netns", "exec", coordinator_ns(prefix), *argv]


def shell_command(argv: Sequence[str]) -> str:
    return shlex.join(argv)
