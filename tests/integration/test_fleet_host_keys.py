"""Host keys of `pktbench fleet` over real SSH: first contact and a changed key (root).

Two namespaces with an sshd each. Against an empty known_hosts a run is
refused host by host with a one-line reason; `--accept-new-host-keys` runs it
and records exactly the servers' keys; a key that differs from the recorded
one is refused even with that flag, and the file is left as it was.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_support import Bed, fleet_bed

pytestmark = [pytest.mark.root, pytest.mark.slow]

ONE_STEP = """description = "host-key test: one short one-way step"
workload = "blast"
command = "none"
duration_s = 0.2
warmup_s = 0.05
drain_s = 0.05

[rates]
list_pps = [1000]
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with fleet_bed(tmp_path_factory.mktemp("fleet-keys"), "k", 2, ONE_STEP) as made:
        yield made


def _server_keys(bed: Bed) -> set[tuple[str, str, str]]:
    keys = set()
    for i, name in enumerate(("h1", "h2"), 1):
        kind, blob = (bed.sshd.directory / name / "ssh_host_ed25519_key.pub"
                      ).read_text().split()[:2]
        keys.add((f"198.18.0.{i}", kind, blob))
    return keys


def _entries(path: Path) -> set[tuple[str, str, str]]:
    return {(w[0], w[1], w[2]) for w in (line.split() for line in path.read_text().splitlines())
            if len(w) >= 3}


def test_first_contact_needs_the_flag_and_records_the_keys(bed: Bed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    refused = bed.fleet("--json", "-", known_hosts=str(known), timeout=120)
    assert refused.returncode == 1, refused.stderr[-2000:]
    for name, address in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
        # the progress line: one per host, naming it, its address and the way out
        (line,) = [x for x in refused.stderr.splitlines()
                   if x.startswith(f"  {name}: unreachable: ")]
        assert address in line and "--accept-new-host-keys" in line, line
    assert "Traceback" not in refused.stderr
    assert known.read_text() == ""

    accepted = bed.fleet("--accept-new-host-keys", "--json", "-", known_hosts=str(known),
                         timeout=120)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    doc = json.loads(accepted.stdout)
    assert doc["counts"]["ok"] == 2
    assert all(p["max_offered_pps"] == 1000 for p in doc["pairs"])
    assert _entries(known) == _server_keys(bed)

    # Recorded now: the plain check passes without the flag, nothing is added.
    again = bed.fleet("--json", "-", known_hosts=str(known), timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _entries(known) == _server_keys(bed) and len(known.read_text().splitlines()) == 2
    assert bed.pktbench_processes() == []


def test_a_changed_host_key_is_refused_even_with_the_flag(bed: Bed, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    h2 = [e for e in _server_keys(bed) if e[0] == "198.18.0.2"][0]
    known.write_text(f"198.18.0.1 {kind} {blob}\n{' '.join(h2)}\n")
    before = known.read_text()
    run = bed.fleet("--accept-new-host-keys", "--json", "-", known_hosts=str(known),
                    timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("  h1: unreachable: ")]
    assert "198.18.0.1" in line and "CHANGED" in line, line
    assert not [x for x in run.stderr.splitlines() if x.startswith("  h2: unreachable: ")]
    doc = json.loads(run.stdout)
    assert {p["status"] for p in doc["pairs"]} == {"unreachable"}
    assert known.read_text() == before
    assert bed.pktbench_processes() == []
