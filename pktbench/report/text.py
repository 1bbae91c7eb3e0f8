"""Small text reporters: the profile list, the version line, the server's log lines and
the --fail-on verdict line.

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
    return f"pktbench serve: {stats.summary()}"


def version_line(version: str, engine_info: dict[str, str]) -> str:
    """What `pktbench --version` prints: the release and which engine this install runs."""
    return (f"pktbench {version} (engine: {engine_info['engine']}, {engine_info['engine_build']}, "
            f"{engine_info['engine_wheel']})")


def fail_on_line(failed: Sequence[str], fail_on: Sequence[str]) -> str:
    """The stderr line before a --fail-on exit: which asked-for criteria the path failed."""
    return (f"FAIL: the path failed {', '.join(dict.fromkeys(failed))} "
            f"(--fail-on {','.join(fail_on)})")
