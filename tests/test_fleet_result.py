"""The fleet document, its reports and `pktbench compare` of two fleet results."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pktbench.fleet import result
from pktbench.report.fleet import compare_fleets, render_fleet, render_matrix, write_heatmap
from cli_support import PKTBENCH

DATA = Path(__file__).parent / "data"


def _sweep(knee_at: float | None, rates: tuple[float, ...] = (2500, 4000, 5500, 7000)
           ) -> dict[str, Any]:
    steps = [{"offered_pps": r, "failures": ["loss"] if knee_at and r >= knee_at else [],
              "sender_bound": False, "warmup_s": 0.2, "duration_s": 0.5} for r in rates]
    knee = None
    if knee_at is not None:
        below = [r for r in rates if r < knee_at]
        knee = {"offered_pps": knee_at, "last_good_pps": below[-1] if below else None,
                "reason": "loss", "criterion": "loss"}
    return {"steps": steps, "knee": knee, "ndr_pps": None, "pdr_pps": None,
            "config": {"drain_s": 0.2}}


def _fleet(n: int, slow_in: str | None = None, dead: str | None = None,
           slow_rate: float = 5500) -> dict[str, Any]:
    names = [f"h{i}" for i in range(1, n + 1)]
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for src in names:
        for dst in names:
            if src == dst:
                continue
            if dead in (src, dst):
                docs[(src, dst)] = {"status": "unreachable", "reason": f"{dead}: refused"}
            else:
                docs[(src, dst)] = {"status": "ok", "sweep": _sweep(
                    slow_rate if dst == slow_in else None), "wall_s": 4.0}
    hosts = [{"name": n_, "test_address": f"198.18.0.{i}"} for i, n_ in enumerate(names, 1)]
    pre = {n_: {"reachable": n_ != dead, "reason": "refused" if n_ == dead else None}
           for n_ in names}
    return result.build(hosts=hosts, preflight=pre, pair_docs=docs,
                        profile={"name": "quick", "text": None}, mode="mesh", bulk=False,
                        rounds=2 * (n - 1), parallel=None, timing={})


def test_outliers_name_the_host_and_its_direction() -> None:
    doc = _fleet(6, slow_in="h3")
    assert doc["fleet_median_pps"] == 7000
    hosts = [o for o in doc["outliers"] if o["kind"] == "host"]
    assert hosts == [{"kind": "host", "host": "h3", "direction": "in", "median_pps": 4000.0,
                      "fleet_median_pps": 7000.0, "below_by": round(1 - 4000 / 7000, 4)}]
    pairs = sorted(o["src"] for o in doc["outliers"] if o["kind"] == "pair")
    assert pairs == ["h1", "h2", "h4", "h5", "h6"]
    assert all(o["dst"] == "h3" for o in doc["outliers"] if o["kind"] == "pair")
    h3 = next(h for h in doc["hosts"] if h["name"] == "h3")
    assert h3["median_out_pps"] == 7000


def test_unreachable_host_and_counts() -> None:
    doc = _fleet(5, dead="h2")
    assert doc["counts"] == {"ok": 12, "failed": 0, "unreachable": 8}
    text = render_matrix(doc)
    assert text.splitlines()[:-1].__str__().count("unreach") == 8


def test_matrix_fits_100_columns_and_pages() -> None:
    doc = _fleet(40, slow_in="h7")
    text = render_fleet(doc)
    assert max(len(line) for line in render_matrix(doc).splitlines()[:-1]) <= 100
    assert "destinations 1-11 of 40" in text and "destinations 34-40 of 40" in text
    assert "host h7 in" in text


def test_heatmap_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "heat.png"
    write_heatmap(_fleet(6, slow_in="h3"), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_per_pair_and_host() -> None:
    old, new = _fleet(4, slow_in="h2", slow_rate=4000), _fleet(4)
    comparison = compare_fleets(old, new)
    fixed = [p for p in comparison["pairs"] if p["dst"] == "h2"]
    assert all(p["old_good_pps"] == 2500 and p["new_good_pps"] == 7000 for p in fixed)
    h2 = next(h for h in comparison["hosts"] if h["host"] == "h2")
    assert h2["ratio_in"] == pytest.approx(7000 / 2500) and h2["ratio_out"] == 1


def test_cli_compare_detects_fleet_files(tmp_path: Path) -> None:
    old, new = tmp_path / "old-fleet.json", tmp_path / "new-fleet.json"
    old.write_text(json.dumps(_fleet(3, slow_in="h1")))
    new.write_text(json.dumps(_fleet(3)))
    out = subprocess.run([*PKTBENCH, "compare", str(old), str(new), "--json",
                          str(tmp_path / "c.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "h2 -> h1" in out.stdout and "1.75x" in out.stdout
    assert json.loads((tmp_path / "c.json").read_text())["kind"] == "pktbench-fleet-compare"
    # A sweep result against a fleet result is one clear line, not a traceback.
    bad = subprocess.run([*PKTBENCH, "compare", str(old), str(DATA / "sweep-old-path.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not a pktbench fleet result" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("args,expect", [
    (["/nonexistent.toml"], "inventory /nonexistent.toml not found"),
    (["INV", "--profile", "nosuch"], "nosuch"),
    (["INV", "--pairs", "PAIRS"], "host zz is not in"),
    (["INV", "--sample", "5"], "--sample 5: at most 1 peers"),
    (["INV", "--known-hosts", "/nonexistent"], "known_hosts file /nonexistent not found"),
])
def test_fleet_cli_errors_are_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text('[[hosts]]\nname = "a"\naddress = "198.18.0.1"\n'
                   '[[hosts]]\nname = "b"\naddress = "198.18.0.2"\n')
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a b\nzz a\n")
    argv = [str(inv) if a == "INV" else str(pairs) if a == "PAIRS" else a for a in args]
    out = subprocess.run([*PKTBENCH, "fleet", *argv], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and expect in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
