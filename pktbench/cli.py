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


# --- decode: per-flow statistics of a packet capture -------------------------

@main.command()
@click.argument("capture", type=click.Path(dir_okay=False, path_type=str))
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Count only pktbench packets to or from this UDP port.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
def decode(capture: str, port: int | None, as_json: bool) -> None:
    """Per-flow packets, rate, loss, duplicates and reordering in CAPTURE (pcap/pcapng)."""
    import json

    from pktbench.decode import DECODE_SCHEMA_VERSION, decode_pcap, render_table
    from pktbench.errors import PktbenchError

    try:
        result = decode_pcap(capture, port=port)
    except PktbenchError as exc:
        if as_json:
            # stdout stays one valid JSON document, errors included.
            click.echo(json.dumps({"schema_version": DECODE_SCHEMA_VERSION, "error": str(exc)}))
            raise click.exceptions.Exit(1) from None
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_table(result))
