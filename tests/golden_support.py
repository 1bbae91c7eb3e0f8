"""Result objects rebuilt from the JSON documents in tests/data, for reporter snapshots.

The validate, decode and testbed documents are written by their commands'
--json; these readers give back the objects the reporters take, so a table
can be checked against a snapshot without a server, a capture or root.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pktbench.decode import DecodeResult, FlowStats
from pktbench.testbed import PathInfo, PolicerInfo, TestbedConfig, TestbedInfo
from pktbench.validate import CaseResult, ValidationReport

DATA = Path(__file__).resolve().parent / "data"


def document(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def validation_report(doc: dict[str, Any]) -> ValidationReport:
    cases = tuple(CaseResult(c["name"], c["expected"], c["observed"], c["passed"],
                             c["skipped"], tuple(c["problems"])) for c in doc["cases"])
    return ValidationReport(doc["target"], doc["server"], cases)


def decode_result(doc: dict[str, Any]) -> DecodeResult:
    totals = doc["totals"]
    return DecodeResult(
        path=doc["capture"]["path"], link_types=tuple(doc["capture"]["link_types"]),
        port=doc["capture"]["port"], packets=totals["packets"],
        pktbench_packets=totals["pktbench_packets"],
        other_udp_packets=totals["other_udp_packets"],
        non_udp_packets=totals["non_udp_packets"], fragment_packets=totals["fragment_packets"],
        truncated_packets=totals["truncated_packets"],
        version_mismatch_packets=totals["version_mismatch_packets"],
        malformed_blocks=totals.get("malformed_blocks", 0),
        flows=tuple(FlowStats(**flow) for flow in doc["flows"]))


def testbed_info(doc: dict[str, Any]) -> TestbedInfo:
    return TestbedInfo(
        prefix=doc["prefix"], config=TestbedConfig(**doc["config"]),
        namespaces=doc["namespaces"], mechanism=doc["mechanism"],
        paths=tuple(PathInfo(**p) for p in doc["paths"]), addrs=doc["addrs"],
        delay_applied_ms=doc["delay_applied_ms"], degradations=tuple(doc["degradations"]),
        qdiscs={s: {i: tuple(q) for i, q in d.items()} for s, d in doc["qdiscs"].items()},
        policers=tuple(PolicerInfo(**p) for p in doc["policers"]), counters=doc["counters"],
        udp_segmentation=doc.get("udp_segmentation", {}))
