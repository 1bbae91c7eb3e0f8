"""Every key of a result document that carries a unit names it the same way, in every kind.

Rates are `_pps` (packets/s) or `_bps` (bits/s): no Mbit/s or Gbit/s keys, no
spelled-out bits_per_second. Files of older schemas (tests/data holds version
1; version 2 is made from them here) come back from `pktbench show --json`
upgraded, with the same figures under the new names.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pktbench.cli import main
from pktbench.results import _UPGRADES, SCHEMA_VERSION

DATA = Path(__file__).resolve().parent / "data"
RESULT_FILES = ["sweep-blast.json", "sweep-new-path.json", "sweep-old-path.json",
                "bulk-old-tcp.json", "bulk-old-udp.json"]
# a unit spelled in a key some other way than the one suffix convention
FORBIDDEN = re.compile(r"mbps|gbps|kbps|mbit|gbit|bits_per|per_second")


def keys(value: Any, path: str = "") -> list[str]:
    """Every key path in a JSON value, environment offload names left out."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if path.endswith("offloads"):
                continue
            found.append(f"{path}.{key}" if path else key)
            found += keys(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            found += keys(item, path + "[]")
    return found


def badly_named(document: Any) -> list[str]:
    return [k for k in keys(document) if FORBIDDEN.search(k.rsplit(".", 1)[-1])]


def show_json(path: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["show", str(path), "--json", "-"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


@pytest.mark.parametrize("name", RESULT_FILES)
def test_old_files_upgrade_to_unit_named_keys(name: str) -> None:
    old = json.loads((DATA / name).read_text())
    assert badly_named(old), "the test data should hold the old names"
    doc = show_json(DATA / name)
    assert doc["schema_version"] == SCHEMA_VERSION == 3
    assert badly_named(doc) == []


def test_sweep_rates_are_bits_per_second_after_upgrade(tmp_path: Path) -> None:
    old = json.loads((DATA / "sweep-blast.json").read_text())
    version2 = _UPGRADES[1](json.loads(json.dumps(old)))
    version2["schema_version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(version2))
    doc = show_json(tmp_path / "v2.json")
    for step, before in zip(doc["steps"], old["steps"], strict=True):
        assert step["sent_bps"] == pytest.approx(before["sent_mbps"] * 1e6, rel=1e-12)
        assert step["received_bps"] == pytest.approx(before["received_mbps"] * 1e6, rel=1e-12)
        assert "sent_mbps" not in step
    # the table still reads Mbit/s, from the bit/s figure
    table = CliRunner().invoke(main, ["show", "--wide", str(tmp_path / "v2.json")])
    assert table.exit_code == 0 and "rx Mbit/s" in table.output
    assert "5.119" in table.output


def test_bulk_rates_keep_their_values_under_the_new_names() -> None:
    old = json.loads((DATA / "bulk-old-tcp.json").read_text())
    doc = show_json(DATA / "bulk-old-tcp.json")
    assert doc["ceiling"]["goodput_bps"] == old["ceiling"]["bits_per_second"]
    assert doc["ceiling"]["wire_bps"] == old["ceiling"]["wire_bits_per_second"]
    step, before = doc["steps"][0], old["steps"][0]
    assert step["aggregate_bps"] == before["aggregate_bits_per_second"]
    assert step["sender_bps"] == before["sender_bits_per_second"]
    assert step["streams"][0]["goodput_bps"] == before["streams"][0]["bits_per_second"]
    assert step["client"]["payload_bps"] == before["client"]["bits_per_second"]


def test_new_files_are_written_with_unit_named_keys(tmp_path: Path) -> None:
    """A real run and a real bulk test on the embedded loopback server."""
    run_json, bulk_json = tmp_path / "run.json", tmp_path / "bulk.json"
    run = CliRunner().invoke(main, ["run", "--workload", "blast", "--rate", "2000",
                                    "--duration", "0.2", "--warmup", "0.05",
                                    "--json", str(run_json)])
    assert run.exit_code == 0, run.output
    bulk = CliRunner().invoke(main, ["bulk", "--duration", "0.3", "--warmup", "0.1",
                                     "--json", str(bulk_json)])
    assert bulk.exit_code == 0, bulk.output
    for path in (run_json, bulk_json):
        doc = json.loads(path.read_text())
        assert doc["schema_version"] == SCHEMA_VERSION
        assert badly_named(doc) == [], path.name
    step = json.loads(run_json.read_text())["steps"][0]
    assert step["sent_bps"] == pytest.approx(
        step["sent_packets"] * step["size_bytes"] * 8 / step["duration_s"], rel=1e-6)
    assert json.loads(bulk_json.read_text())["ceiling"]["goodput_bps"] > 0


def test_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "kind": "sweep"}))
    result = CliRunner().invoke(main, ["show", str(path)])
    assert result.exit_code == 1
    assert "newer than this pktbench reads" in result.output
    assert "Traceback" not in result.output
