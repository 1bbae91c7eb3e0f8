"""Small text reporters: the profile list and the server's log lines.

Must not: compute; each formatter prints what it is given.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pktbench.report._common import Target, open_text


def write_profiles(profiles: Sequence[tuple[str, str]], target: Target) -> None:
    """Reporter ("profiles", "table"): name and description of each profile."""
    from tabulate import tabulate

    with open_text(target) as stream:
        stream.write(tabulate(list(profiles), headers=["profile", "description"]) + "\n")


def listening_line(address: tuple[str, int]) -> str:
    """The line `pktbench serve` prints once it listens (clients and scripts read it)."""
    return f"listening on {address[0]}:{address[1]}"


def server_summary_line(stats: Any) -> str:
    """What a server did, printed to stderr when `pktbench serve` ends."""
    return (f"pktbench serve: {stats.sessions} sessions, {stats.steps} steps, "
            f"{stats.busy_refusals} busy, {stats.auth_failures} auth failures, "
            f"{stats.protocol_errors} dropped, drops {sum(stats.drops.values())}")
