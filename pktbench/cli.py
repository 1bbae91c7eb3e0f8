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
