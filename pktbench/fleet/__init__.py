"""Fleet: every ordered path of a set of hosts, reached over SSH, in rounds.

The coordinator only orchestrates: it reaches each host over one SSH
connection, starts `pktbench serve` and `pktbench sweep` there through the
stable command line, and collects the sweep documents. Traffic runs between
the fleet's own hosts.

Modules: inventory (hosts from our TOML or an Ansible inventory), schedule
(the round-robin tournament), remote (asyncssh connections and remote
processes), runner (preflight, rounds, saving and resuming), result (the
fleet document, medians and outliers), testbed (N namespaces on one bridge
with an OpenSSH server each, for trying a fleet on one machine).
"""
from __future__ import annotations

FLEET_SCHEMA_VERSION = 1
FLEET_KIND = "pktbench-fleet"
