"""`testbed up` does not rebuild a testbed with processes inside unless --force.

A real testbed (root), a real process started inside its server namespace;
the refusal names what differs and who runs there, the process survives it,
--force replaces the testbed (killing the process) and says what differed.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pktbench import testbed as tb
from pktbench.cli import main

pytestmark = pytest.mark.root


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"docsf{os.getpid()}"
    try:
        yield name
    finally:
        tb.down(name)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_up_refuses_to_rebuild_over_processes_unless_forced(prefix: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["testbed", "up", "--prefix", prefix])
    assert first.exit_code == 0, first.output
    # a process of ours inside the server namespace, bounded by its own timeout
    proc = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-b", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not tb.plan_up(
                tb.TestbedConfig(prefix=prefix)).processes:
            time.sleep(0.05)
        # the identical testbed is kept, process and all
        same = runner.invoke(main, ["testbed", "up", "--prefix", prefix])
        assert same.exit_code == 0 and "rebuilt" not in same.output
        assert _alive(proc)

        refused = runner.invoke(main, ["testbed", "up", "--prefix", prefix,
                                       "--pps-limit", "5000", "--mtu", "1400"])
        assert refused.exit_code == 1
        message = refused.output.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert "pps_limit none -> 5000" in message and "mtu 1500 -> 1400" in message
        assert f"sleep (pid {proc.pid} in {prefix}-b)" in message and "--force" in message
        assert _alive(proc)
        status = json.loads(runner.invoke(main, ["testbed", "status", "--prefix", prefix,
                                                 "--json"]).output)
        assert status["config"]["pps_limit"] is None and status["config"]["mtu"] == 1500

        forced = runner.invoke(main, ["testbed", "up", "--prefix", prefix, "--json",
                                      "--pps-limit", "5000", "--mtu", "1400", "--force"])
        assert forced.exit_code == 0, forced.output
        doc = json.loads(forced.output)
        assert doc["config"]["pps_limit"] == 5000 and doc["config"]["mtu"] == 1400
        assert "pps_limit none -> 5000" in doc["replaced"]
        proc.wait(timeout=5)  # killed with the old namespace
        assert not _alive(proc)

        # nothing inside now: a different shape is rebuilt without --force, and said so
        again = runner.invoke(main, ["testbed", "up", "--prefix", prefix, "--mtu", "1500",
                                     "--pps-limit", "5000"])
        assert again.exit_code == 0, again.output
        assert again.output.startswith(f"testbed {prefix}: rebuilt, the old one differed: "
                                       "mtu 1400 -> 1500")
    finally:
        if _alive(proc):
            proc.kill()
            proc.wait(timeout=5)
