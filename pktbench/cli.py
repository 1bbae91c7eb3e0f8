"""Command-line shell over the pktbench library.

Each command parses options, builds a config, calls one library function and
hands the result to a reporter. Heavy imports (the engine, scapy, matplotlib)
happen inside the commands so `pktbench --help` stays fast. PktbenchError
becomes a one-line ClickException (exit 1); bad options exit 2.
"""
from __future__ import annotations

import click

from pktbench._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pktbench")
def main() -> None:
    """Find a network path's packets-per-second knee and throughput ceiling."""


# ---------------------------------------------------------------- testbed
# `pktbench testbed ...`: thin shell over pktbench.testbed (root only).


def _testbed_summary(info: object) -> str:
    from pktbench.testbed import TestbedInfo

    assert isinstance(info, TestbedInfo)
    cfg = info.config
    lines = [
        f"testbed {info.prefix}: up, {info.mechanism} over {cfg.paths} path(s), "
        f"namespaces {info.namespaces['a']} (client) / {info.namespaces['b']} (server)",
        f"  reach a at {info.addrs['a']}, b at {info.addrs['b']}  (mtu {cfg.mtu})",
    ]
    for path in info.paths:
        lines.append(f"  path {path.index}: {path.ifname_a} {path.addr_a} <-> "
                     f"{path.ifname_b} {path.addr_b}")
    direction = "a->b and b->a" if cfg.both_directions else "a->b"
    if cfg.rate_cap_bps is not None:
        lines.append(f"  rate cap: {cfg.rate_cap_qdisc} {cfg.rate_cap_bps} bit/s per path, "
                     f"{direction}")
    for pol in info.policers:
        lines.append(f"  pps policer {pol.direction}: {pol.rate_pps}/s burst "
                     f"{pol.burst_packets} (seen {pol.seen_packets}, dropped "
                     f"{pol.dropped_packets})")
    if info.delay_applied_ms > 0:
        lines.append(f"  delay: {info.delay_applied_ms:g} ms {direction}")
    for note in info.degradations:
        lines.append(f"  degraded: {note}")
    lines.append("  counters (packets rx/tx, dropped rx/tx):")
    for side in ("a", "b"):
        for name, c in sorted(info.counters[side].items()):
            if name == "lo":
                continue
            lines.append(f"    {side} {name}: {c['rx_packets']}/{c['tx_packets']}, "
                         f"{c['rx_dropped']}/{c['tx_dropped']}")
    return "\n".join(lines)


@main.group("testbed")
def testbed_group() -> None:
    """Two network namespaces on this machine, shaped to have a known knee (root)."""


_testbed_prefix_option = click.option(
    "--prefix", default="pktb", show_default=True,
    help="Namespace name prefix: namespaces are PREFIX-a and PREFIX-b.")


def _testbed_rate(ctx: click.Context, param: click.Parameter,
                  value: str | None) -> int | None:
    from pktbench.errors import ConfigError
    from pktbench.testbed import parse_rate_bps

    if value is None:
        return None
    try:
        return parse_rate_bps(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@testbed_group.command("up")
@_testbed_prefix_option
@click.option("--paths", type=click.IntRange(1, 2), default=1, show_default=True,
              help="veth pairs between a and b (2: bond or ECMP over both).")
@click.option("--rate-cap", callback=_testbed_rate, metavar="RATE",
              help="Bit rate cap per path, e.g. 1gbit, 500mbit.")
@click.option("--rate-cap-qdisc", type=click.Choice(["tbf", "htb"]), default="tbf",
              show_default=True, help="tbf drops over the cap; htb queues and pushes back.")
@click.option("--pps-limit", type=click.IntRange(min=1), help="Packets/s policer (nftables).")
@click.option("--pps-burst", type=click.IntRange(min=1), default=100, show_default=True,
              help="Policer burst in packets (at least 100).")
@click.option("--delay-ms", type=click.FloatRange(min=0), default=0.0,
              help="Added one-way delay (needs tc netem).")
@click.option("--mtu", type=click.IntRange(68, 65535), default=1500, show_default=True)
@click.option("--both-directions", is_flag=True, help="Shape b->a like a->b.")
@click.option("--allow-degraded", is_flag=True,
              help="Build even without netem, leaving the delay out (and saying so).")
@click.option("--mechanism", type=click.Choice(["auto", "ecmp", "bond"]), default="auto",
              show_default=True, help="How two paths are joined.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def testbed_up(prefix: str, paths: int, rate_cap: int | None, rate_cap_qdisc: str,
               pps_limit: int | None, pps_burst: int, delay_ms: float, mtu: int,
               both_directions: bool, allow_degraded: bool, mechanism: str,
               as_json: bool) -> None:
    """Create (or keep, if identical) the namespace testbed."""
    import json

    from pktbench import testbed
    from pktbench.errors import ConfigError, PktbenchError

    try:
        config = testbed.TestbedConfig(
            prefix=prefix, paths=paths, rate_cap_bps=rate_cap,
            rate_cap_qdisc=rate_cap_qdisc,  # type: ignore[arg-type]
            pps_limit=pps_limit, pps_burst=pps_burst, delay_ms=delay_ms, mtu=mtu,
            both_directions=both_directions, allow_degraded=allow_degraded,
            mechanism=mechanism)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        info = testbed.up(config)
    except PktbenchError as exc:
        if as_json:
            click.echo(json.dumps({"error": str(exc)}))
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(info.to_dict(), indent=2) if as_json else _testbed_summary(info))


@testbed_group.command("down")
@_testbed_prefix_option
def testbed_down(prefix: str) -> None:
    """Remove the testbed (namespaces, veths, qdiscs, nft rules). Fine if none."""
    from pktbench import testbed
    from pktbench.errors import PktbenchError

    try:
        removed = testbed.down(prefix)
    except PktbenchError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"testbed {prefix}: removed" if removed else f"testbed {prefix}: none to remove")


@testbed_group.command("status")
@_testbed_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_status(prefix: str, as_json: bool) -> None:
    """Show addresses, shaping, mechanism and counters; exit 1 if not up."""
    import json

    from pktbench import testbed
    from pktbench.errors import PktbenchError

    try:
        info = testbed.status(prefix)
    except PktbenchError as exc:
        if as_json:
            click.echo(json.dumps({"error": str(exc)}))
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    if info is None:
        if as_json:
            click.echo(json.dumps({"prefix": prefix, "up": False}))
        else:
            click.echo(f"testbed {prefix}: not up")
        raise SystemExit(1)
    if as_json:
        click.echo(json.dumps({"up": True, **info.to_dict()}, indent=2))
    else:
        click.echo(_testbed_summary(info))


@testbed_group.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_probe(as_json: bool) -> None:
    """Say which kernel features (netem, bonding, tbf, htb, nft, ECMP hash) work here."""
    import json

    from pktbench import testbed
    from pktbench.errors import PktbenchError

    try:
        found = testbed.probe_kernel()
    except PktbenchError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(found))
    else:
        for name, usable in found.items():
            click.echo(f"{name}: {'yes' if usable else 'no'}")


@testbed_group.command(
    "exec", context_settings={"ignore_unknown_options": True,
                              "allow_interspersed_args": False})
@_testbed_prefix_option
@click.argument("side", type=click.Choice(["a", "b"]))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def testbed_exec(prefix: str, side: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside namespace a or b; exits with its exit code.

    Example: pktbench testbed exec b -- pktbench serve
    """
    from pktbench import testbed
    from pktbench.errors import PktbenchError

    argv = list(command[1:] if command[0] == "--" else command)
    if not argv:
        raise click.UsageError("testbed exec needs a command after --")
    try:
        proc = testbed.exec_in(side, argv, prefix=prefix)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise click.ClickException(f"command not found: {argv[0]}") from None
    except PktbenchError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(proc.returncode)
