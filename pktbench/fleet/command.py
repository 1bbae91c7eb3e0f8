"""`pktbench fleet` and `pktbench testbed up --hosts N`: thin shells over the fleet package.

Exit codes of `fleet`: 0 every planned path measured; 3 the run ended but
some paths are failed or unreachable (the result says which), or with
--to/--from the sources did not start their steps together; 1 nothing
could run; 130 interrupted (finished tests are kept in --out DIR).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pktbench.errors import ConfigError


def _read_pairs(path: str) -> tuple[tuple[str, str], ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--pairs {path}: cannot read: {exc.strerror}") from None
    pairs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].replace("->", " ").strip()
        if not line:
            continue
        words = line.split()
        if len(words) != 2 or words[0] == words[1]:
            raise ConfigError(f"--pairs {path}: line {number}: expected 'SRC DST' (two "
                              "different host names)")
        pairs.append((words[0], words[1]))
    if not pairs:
        raise ConfigError(f"--pairs {path}: no pairs in it")
    return tuple(pairs)


@click.command("fleet")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--mesh", is_flag=True, help="Every ordered pair (the default).")
@click.option("--to", "to_host", metavar="HOST",
              help="Fan-in: every other host loads HOST at once, in step; the aggregate's knee.")
@click.option("--from", "from_host", metavar="HOST",
              help="Fan-out: HOST loads every other host at once, in step.")
@click.option("--pairs", "pairs_file", metavar="FILE",
              help="Only these paths: one 'SRC DST' per line.")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="K",
              help="Mesh with K peers per host (out and in) instead of all of them.")
@click.option("--profile", "profile_name", default="default", show_default=True,
              metavar="NAME|FILE", help="Sweep profile each path runs (a file is copied over).")
@click.option("--bulk", is_flag=True, help="Also measure each path's throughput ceiling.")
@click.option("--parallel", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N tests at once in a round.")
@click.option("--out", "out_dir", metavar="DIR",
              help="Save each test as it ends, plus a manifest, into DIR.")
@click.option("--resume", "resume_dir", metavar="DIR",
              help="Continue the run saved in DIR: run only the paths not measured yet.")
@click.option("--json", "json_path", metavar="FILE", help="Write the fleet result ('-' = stdout).")
@click.option("--plot", "plot_path", metavar="FILE.png", help="Write the knee heatmap.")
@click.option("--hosts", "group", metavar="GROUP", help="Only the inventory group GROUP.")
@click.option("--known-hosts", metavar="FILE",
              help="known_hosts to check host keys against [default: ~/.ssh/known_hosts].")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Trust and record the key of a host not in known_hosts (first contact).")
@click.option("--insecure", is_flag=True, help="Do not check host keys (testbeds only).")
@click.option("--outlier-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="Outlier: below the fleet median by more than this fraction.")
@click.option("--serve-port", type=click.IntRange(0, 65535), default=7425, show_default=True,
              help="Port of the `serve` started on each host (0: any free one).")
@click.option("--install", "install_wheel", metavar="WHEEL",
              help="Copy this pktbench wheel to each host (SFTP) and run it from a venv "
                   "under the user's cache directory there.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.5), default=10.0,
              show_default=True, help="Seconds to wait for each host's SSH.")
def fleet_command(inventory: str, mesh: bool, to_host: str | None, from_host: str | None,
                  pairs_file: str | None, sample: int | None,
                  profile_name: str, bulk: bool, parallel: int | None, out_dir: str | None,
                  resume_dir: str | None, json_path: str | None, plot_path: str | None,
                  group: str | None, known_hosts: str | None, accept_new_host_keys: bool,
                  insecure: bool, outlier_fraction: float, serve_port: int,
                  install_wheel: str | None, connect_timeout: float) -> None:
    """Map every path of a fleet over SSH: knee matrix, host medians, outliers.

    Runs `pktbench serve` on each host of INVENTORY (our TOML, or an Ansible
    INI/YAML inventory) and `pktbench sweep` from each source, in rounds in
    which no host takes part in two tests. With --to HOST (--from HOST) every
    other host sweeps into HOST (HOST into every other) at the same moments;
    the profile's rates are then the aggregate, split evenly over the paths.
    """
    from pktbench import config
    from pktbench.fleet import inventory as inv
    from pktbench.fleet import result as fleet_result
    from pktbench.fleet.remote import SshPolicy
    from pktbench.fleet.runner import FleetOptions, run_fleet
    from pktbench.report import check_output_path
    from pktbench.report.fleet import render_fleet, write_heatmap

    if pairs_file and (mesh or sample):
        raise click.UsageError("--pairs runs the listed paths: not with --mesh or --sample")
    fan: tuple[str, str] | None = None
    if to_host is not None or from_host is not None:
        given = [o for o, v in (("--to", to_host), ("--from", from_host), ("--mesh", mesh),
                                ("--pairs", pairs_file), ("--sample", sample),
                                ("--resume", resume_dir), ("--bulk", bulk), ("--plot", plot_path),
                                ("--parallel", parallel)) if v]
        if len(given) > 1:
            raise click.UsageError(f"{given[0]} runs all paths into or out of one host at once: "
                                   f"not with {given[1]}")
        fan = ("to", to_host) if to_host is not None else ("from", str(from_host))
    if out_dir and resume_dir and Path(out_dir).resolve() != Path(resume_dir).resolve():
        raise click.UsageError("--resume DIR continues in DIR: give it without --out")
    if insecure and (known_hosts or accept_new_host_keys):
        raise click.UsageError("--insecure checks no host keys: not with --known-hosts or "
                               "--accept-new-host-keys")
    if json_path:
        check_output_path(json_path, "json")
    if plot_path:
        check_output_path(plot_path, "plot")
    directory = resume_dir or out_dir
    if resume_dir and not Path(resume_dir).is_dir():
        raise ConfigError(f"--resume {resume_dir}: no such directory")
    if out_dir and not resume_dir and Path(out_dir).exists() and any(Path(out_dir).iterdir()):
        raise ConfigError(f"--out {out_dir} is not empty: continue it with --resume {out_dir}")
    if install_wheel:
        from pktbench.fleet.install import load_wheel

        load_wheel(install_wheel)  # a wrong file fails before any connection
    policy = SshPolicy(known_hosts=known_hosts, accept_new=accept_new_host_keys,
                       insecure=insecure, connect_timeout_s=connect_timeout)
    hosts = inv.load_inventory(inventory, group=group)
    if len(hosts) < 2:
        raise ConfigError(f"{inventory}: a fleet needs at least 2 hosts (got {len(hosts)})")
    profile = config.load_profile(profile_name)  # a bad profile fails before any connection
    if fan is not None:
        if fan[1] not in {h.name for h in hosts}:
            raise ConfigError(f"--{fan[0]} {fan[1]}: no such host in {inventory}")
        if profile.search:
            raise ConfigError(f"--{fan[0]}: profile {profile_name} searches NDR/PDR; a "
                              "synchronized sweep runs its listed rates only")
    options = FleetOptions(
        inventory=inventory, profile=profile_name,
        pairs=_read_pairs(pairs_file) if pairs_file else None, sample=sample, bulk=bulk,
        parallel=parallel, out_dir=directory, resume=bool(resume_dir),
        ssh=policy,
        serve_port=serve_port, outlier_fraction=outlier_fraction, fan=fan,
        install=install_wheel)
    if options.pairs is not None:
        names = {h.name for h in hosts}
        missing = [n for p in options.pairs for n in p if n not in names]
        if missing:
            raise ConfigError(f"--pairs {pairs_file}: host {missing[0]} is not in {inventory}")
    if sample is not None and sample > len(hosts) - 1:
        raise ConfigError(f"--sample {sample}: at most {len(hosts) - 1} peers with "
                          f"{len(hosts)} hosts")

    if not (insecure or accept_new_host_keys or policy.known_hosts_path.exists()):
        raise ConfigError(f"known_hosts file {policy.known_hosts_path} not found: give "
                          "--known-hosts FILE, or --accept-new-host-keys for first contact")

    def log(line: str) -> None:
        click.echo(line, err=True)

    run_class = None
    if fan is not None:
        from pktbench.fleet.fanin import FanRun

        run_class = FanRun
    run = run_fleet(hosts, options, log, run_class)
    doc = fleet_result.build(
        hosts=[h.to_dict() for h in hosts], preflight=run.preflight, pair_docs=run.results,
        profile={"name": profile_name, "text": run.profile.text},
        mode=fan[0] if fan else "pairs" if pairs_file else "mesh", bulk=bulk,
        rounds=1 if fan else len(run.rounds),
        parallel=parallel, timing=run.timing, outlier_fraction=outlier_fraction,
        state=run.state, fan=getattr(run, "fan", None))
    text = json.dumps(doc, indent=2) + "\n"
    if directory:
        (Path(directory) / "fleet.json").write_text(text, encoding="utf-8")
    click.echo(render_fleet(doc), file=sys.stderr if json_path == "-" else sys.stdout)
    if json_path == "-":
        click.echo(text, nl=False)
    elif json_path:
        Path(json_path).write_text(text, encoding="utf-8")
    if plot_path:
        write_heatmap(doc, plot_path)
    if doc["counts"]["ok"] == 0 and doc["pairs"]:
        raise SystemExit(1)
    if doc["counts"]["ok"] < len(doc["pairs"]):
        raise SystemExit(3)
    if fan is not None and not (doc.get("fan") or {}).get("in_sync"):
        raise SystemExit(3)  # the sources did not start together: no fan-in figure


def testbed_hosts_up(prefix: str, hosts: int, limits: tuple[str, ...], burst: int,
                     as_json: bool) -> None:
    """`pktbench testbed up --hosts N`: the multi-host bed (no sshd; see `testbed sshd`)."""
    from pktbench.fleet import testbed as ftb

    bed = ftb.up(prefix, hosts, pps_limits=ftb.parse_host_limits(limits, hosts),
                 pps_burst=burst)
    if as_json:
        click.echo(json.dumps(bed.to_dict(), indent=2))
        return
    click.echo(f"testbed {prefix}: {hosts} hosts on bridge br0 in {bed.coordinator_namespace} "
               f"(coordinator {bed.coordinator_address})")
    for name in bed.hosts:
        limit = bed.pps_limits.get(name)
        click.echo(f"  {name}: {bed.addresses[name]} in {bed.namespaces[name]}"
                   + (f", UDP ingress policer {limit}/s burst {bed.pps_burst}" if limit else ""))
    click.echo(f"run the coordinator inside {bed.coordinator_namespace}: ip netns exec "
               f"{bed.coordinator_namespace} pktbench fleet INVENTORY")


@click.group("sshd")
def sshd_group() -> None:
    """An OpenSSH server in every host of a `testbed up --hosts N` bed (root)."""


@sshd_group.command("up")
@click.option("--prefix", default="pktb", show_default=True)
@click.option("--dir", "directory", required=True, metavar="DIR",
              help="Where keys, known_hosts, sshd configs and inventory.toml go.")
@click.option("--pktbench", "command", default="pktbench", show_default=True,
              help="The pktbench command written into the inventory.")
def sshd_up_command(prefix: str, directory: str, command: str) -> None:
    """Start sshd in each host namespace; writes DIR/inventory.toml and DIR/known_hosts."""
    from pktbench.fleet import testbed as ftb

    bed = _bed_of(prefix)
    made = ftb.sshd_up(bed, directory, pktbench_command=command)
    click.echo(f"sshd up in {len(made.pids)} hosts; inventory {made.inventory}, known_hosts "
               f"{made.known_hosts}")


@sshd_group.command("down")
@click.option("--dir", "directory", required=True, metavar="DIR")
def sshd_down_command(directory: str) -> None:
    """Stop the servers `testbed sshd up --dir DIR` started."""
    from pktbench.fleet import testbed as ftb

    click.echo(f"sshd: stopped {ftb.sshd_down(directory)}")


def _bed_of(prefix: str) -> Any:
    from pktbench.errors import TestbedError
    from pktbench.fleet import testbed as ftb

    names = ftb._existing(prefix)
    hosts = sorted((n for n in names if n.startswith(f"{prefix}-h")),
                   key=lambda n: int(n.rsplit("h", 1)[1]))
    if not hosts:
        raise TestbedError(f"no multi-host testbed {prefix}: run `pktbench testbed up --hosts N`")
    count = len(hosts)
    return ftb.FleetBed(prefix=prefix, hosts=tuple(ftb.host_name(i) for i in range(1, count + 1)),
                        namespaces={ftb.host_name(i): ftb.host_ns(prefix, i)
                                    for i in range(1, count + 1)},
                        addresses={ftb.host_name(i): ftb.host_addr(i)
                                   for i in range(1, count + 1)},
                        coordinator_namespace=ftb.coordinator_ns(prefix),
                        coordinator_address=ftb.COORDINATOR_ADDR)
