"""`pktbench fleet` over real SSH: six namespaces on a bridge, an sshd in each (root).

One host (h3) has a UDP ingress policer at 4,700 pps. A quick one-way UDP
profile sweeps 3,500 and 5,500 pps on every ordered path: only the paths into
h3 may show a knee, and it must bracket the policer's rate. With one host's
sshd stopped, that host's paths are unreachable and the rest complete; a
SIGINT mid-run leaves a resumable --out DIR and no pktbench process behind.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pktbench.fleet import testbed as ftb
from fleet_support import Bed, fleet_bed, require_sshd_bed

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICED, LIMIT = "h3", 4700
QUICK = """description = "fleet test: one-way UDP, a rate each side of the policer"
workload = "blast"
command = "none"
size_bytes = 64
duration_s = 0.4
warmup_s = 0.1
drain_s = 0.1
early_stop_steps = 1

[rates]
list_pps = [3500, 5500]

[criteria]
max_loss_ratio = 0.01
min_delivery_ratio = 0.97
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_sshd_bed()
    with fleet_bed(tmp_path_factory.mktemp("fleet"), "f", 6, QUICK,
                   pps_limits={POLICED: LIMIT}) as made:
        yield made


def _pairs(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["src"], p["dst"]): p for p in doc["pairs"]}


def test_mesh_finds_the_policed_host_incoming_paths(bed: Bed) -> None:
    out, result = bed.dir / "mesh", bed.dir / "mesh.json"
    run = bed.fleet("--mesh", "--out", str(out), "--json", str(result),
                    "--plot", str(bed.dir / "mesh.png"))
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(result.read_text())
    pairs = _pairs(doc)
    assert len(pairs) == 30 and doc["counts"]["ok"] == 30
    assert doc["schedule"]["rounds"] == 10
    for (src, dst), p in pairs.items():
        if dst == POLICED:
            assert p["knee_pps"] is not None, (src, dst, p)
            assert p["last_good_pps"] <= LIMIT <= p["knee_pps"], (src, dst, p)
        else:
            assert p["knee_pps"] is None and p["no_knee"], (src, dst, p)
    hosts = [(o["host"], o["direction"]) for o in doc["outliers"] if o["kind"] == "host"]
    assert hosts == [(POLICED, "in")]
    assert sorted(o["dst"] for o in doc["outliers"] if o["kind"] == "pair") == [POLICED] * 5
    timing = doc["timing"]
    assert timing["mesh_over_rounds_x_per_test"] <= 1.3, timing
    assert timing["test_overhead_median_s"] is not None and timing["ssh_connect_median_s"]
    assert all(h["clock_offset_ms"] is not None for h in doc["hosts"])
    assert len(list((out / "pairs").glob("*/*.json"))) == 30
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"
    assert (bed.dir / "mesh.png").read_bytes()[:4] == b"\x89PNG"
    assert "host h3 in" in run.stdout
    counts = ftb.policer_counts(bed.prefix, 3)
    assert counts is not None and counts["dropped"] > 0
    assert bed.pktbench_processes() == []


def test_bulk_ceiling_of_one_path(bed: Bed) -> None:
    pairs = bed.dir / "one.txt"
    pairs.write_text("h1 h2\n")
    run = bed.fleet("--pairs", str(pairs), "--bulk", "--json", "-")
    assert run.returncode == 0, run.stderr[-2000:]
    (pair,) = json.loads(run.stdout)["pairs"]
    assert pair["ceiling_bps"] > 1e8


def _wait_gone(bed: Bed, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = bed.pktbench_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_sigint_leaves_a_resumable_out_dir_and_no_process(bed: Bed) -> None:
    out = bed.dir / "interrupted"
    pairs = bed.dir / "pairs.txt"
    pairs.write_text("h1 h2\nh2 h4\nh4 h1\nh2 h1\n")
    proc = subprocess.Popen(bed.argv("--pairs", str(pairs), "--out", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not list((out / "pairs").glob("*/*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((out / "pairs").glob("*/*.json")), "no test finished"
        time.sleep(1.0)  # the next test is under way
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert _wait_gone(bed) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"
    done = {p.parent.name + ">" + p.stem: json.loads(p.read_text())
            for p in (out / "pairs").glob("*/*.json")}
    assert 1 <= len(done) < 4 and all(d["status"] == "ok" for d in done.values())
    run = bed.fleet("--pairs", str(pairs), "--resume", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{len(done) and 4 - len(done)} to run" in run.stderr
    after = {p.parent.name + ">" + p.stem: json.loads(p.read_text())
             for p in (out / "pairs").glob("*/*.json")}
    assert len(after) == 4 and all(d["status"] == "ok" for d in after.values())
    assert all(after[k]["started"] == d["started"] for k, d in done.items())
    assert json.loads((out / "fleet.json").read_text())["counts"]["ok"] == 4
    assert _wait_gone(bed) == []


def test_a_host_without_sshd_is_unreachable_and_the_rest_completes(bed: Bed) -> None:
    ftb.sshd_stop(bed.sshd, "h5")
    result = bed.dir / "partial.json"
    run = bed.fleet("--mesh", "--json", str(result))
    assert run.returncode == 3, run.stderr[-2000:]
    assert "h5: unreachable" in run.stderr and "connection refused" in run.stderr
    doc = json.loads(result.read_text())
    for (src, dst), p in _pairs(doc).items():
        if "h5" in (src, dst):
            assert p["status"] == "unreachable" and "h5" in p["reason"], p
        else:
            assert p["status"] == "ok", p
            assert (p["knee_pps"] is not None) == (dst == POLICED), p
    assert doc["counts"] == {"ok": 20, "failed": 0, "unreachable": 10}
    assert doc["schedule"]["rounds"] == 10  # five hosts left: 2n rounds with a bye each
    assert [(o["host"], o["direction"]) for o in doc["outliers"]
            if o["kind"] == "host"] == [(POLICED, "in")]
    assert bed.pktbench_processes() == []
