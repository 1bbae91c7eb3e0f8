"""`pktbench fleet --install WHEEL` over real SSH: a wheel of this tree, copied and used (root).

Two namespaces with an sshd each, whose inventory names a pktbench command
that does not exist: without --install preflight refuses both hosts; with
it, a wheel built from this tree goes over SFTP into a venv under each
host's cache directory and the run measures both paths with that pktbench.
A second run finds the venvs complete and reuses them.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_support import Bed, fleet_bed

pytestmark = [pytest.mark.root, pytest.mark.slow]

ONE_STEP = """description = "install test: one short one-way step"
workload = "blast"
command = "none"
duration_s = 0.2
warmup_s = 0.05
drain_s = 0.05

[rates]
list_pps = [1000]
"""
MISSING = "/nonexistent/pktbench"
# The wheel is built from the checkout these tests belong to: the package under
# test may be an installed copy, and site-packages is not a source tree.
SOURCE_TREE = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SOURCE_TREE / "pyproject.toml").is_file():
        pytest.skip(f"no source tree at {SOURCE_TREE}: cannot build a wheel")
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(out), str(SOURCE_TREE)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not installed: cannot build a wheel")
    assert build.returncode == 0, build.stderr[-2000:]
    (made,) = out.glob("pktbench-*.whl")
    return made


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with fleet_bed(tmp_path_factory.mktemp("fleet-install"), "w", 2, ONE_STEP,
                   pktbench_command=MISSING) as made:
        yield made


def test_install_copies_the_wheel_and_runs_from_its_venv(bed: Bed, wheel: Path) -> None:
    plain = bed.fleet("--json", "-", timeout=120)
    assert plain.returncode == 1, plain.stderr[-2000:]
    for name in ("h1", "h2"):
        (line,) = [x for x in plain.stderr.splitlines() if x.startswith(f"  {name}: unreach")]
        assert f"pktbench not runnable as `{MISSING}`" in line, line

    run = bed.fleet("--install", str(wheel), "--json", "-", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["counts"]["ok"] == 2
    assert all(p["max_offered_pps"] == 1000 and p["no_knee"] for p in doc["pairs"])
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for host in doc["hosts"]:
        installed = host["installed"]
        cache = bed.sshd.directory / host["name"] / "cache" / "pktbench"
        venv = Path(installed["venv"])
        assert venv.parent == cache and not installed["reused"], installed
        assert installed["sha256"] == digest and installed["file"] == wheel.name
        assert hashlib.sha256((cache / "wheels" / wheel.name).read_bytes()
                              ).hexdigest() == digest
        assert (venv / ".pktbench-wheel").read_text().strip() == digest
        # the package the venv runs is the wheel's, not this tree
        where = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import pktbench, pktbench._engine as e; "
                                "print(pktbench.__file__); print(e.__file__)"],
                               capture_output=True, text=True, timeout=60, cwd="/")
        assert where.returncode == 0, where.stderr
        assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
        assert f"installed {wheel.name} in {venv}" in run.stderr
    assert bed.pktbench_processes() == []

    again = bed.fleet("--install", str(wheel), "--json", "-", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    doc = json.loads(again.stdout)
    assert doc["counts"]["ok"] == 2
    assert all(h["installed"]["reused"] for h in doc["hosts"]), doc["hosts"]
    assert "already there" in again.stderr
    assert bed.pktbench_processes() == []


def test_a_file_that_is_not_a_wheel_is_one_line(bed: Bed, tmp_path: Path) -> None:
    bogus = tmp_path / "tool.tar.gz"
    bogus.write_text("x")
    run = bed.fleet("--install", str(bogus), timeout=60)
    assert run.returncode == 1 and "not a pktbench wheel" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
