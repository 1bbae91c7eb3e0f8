"""The fleet result: per ordered pair, per host, the outliers, and the timing.

Owns: FLEET document building from the per-pair documents, the summary of
one sweep document (knee, last good, NDR, PDR, highest passing rate), host
medians in and out, and the outliers.

A pair's figure for medians and outliers is `good_pps`: the last good rate
below its knee, or, with no knee, the highest rate tried (then the path is
at least that good, `no_knee` is true: the knee finder saw no confirmed
failure, and a step the sender could not generate is never the path's). A host or pair is an outlier
when its figure is below the fleet median by more than `outlier_fraction`;
a host's direction is "in" (as destination) or "out" (as source).

Must not: open connections or read files other than the ones named.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pktbench._version import __version__
from pktbench.errors import ConfigError
from pktbench.fleet import FLEET_KIND, FLEET_SCHEMA_VERSION


def summarize_sweep(sweep: Mapping[str, Any] | None) -> dict[str, Any]:
    """Knee, last good, NDR/PDR and the highest passing rate of one sweep document."""
    if not sweep:
        return {"knee_pps": None, "last_good_pps": None, "ndr_pps": None, "pdr_pps": None,
                "max_offered_pps": None, "good_pps": None, "no_knee": None, "knee_reason": None}
    knee = sweep.get("knee") or None
    steps = [s for s in sweep.get("steps", []) if not s.get("search_trial")]
    offered = [float(s["offered_pps"]) for s in steps if s.get("offered_pps") is not None]
    passed = [float(s["offered_pps"]) for s in steps
              if s.get("offered_pps") is not None and not s.get("failures")
              and not s.get("sender_bound")]
    if knee:
        good = knee.get("last_good_pps")
    elif passed:
        # The knee finder found no confirmed failure (a lone one, or a step the
        # sender could not generate, is not the path's): good up to the top.
        good = max(offered)
    else:
        good = None
    return {"knee_pps": knee.get("offered_pps") if knee else None,
            "last_good_pps": knee.get("last_good_pps") if knee else None,
            "ndr_pps": sweep.get("ndr_pps"), "pdr_pps": sweep.get("pdr_pps"),
            "max_offered_pps": max(offered) if offered else None,
            "good_pps": float(good) if good is not None else None,
            "no_knee": knee is None, "knee_reason": knee.get("reason") if knee else None}


def _median(values: Iterable[float | None]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return float(statistics.median(nums)) if nums else None


def build(*, hosts: Sequence[Mapping[str, Any]], preflight: Mapping[str, Mapping[str, Any]],
          pair_docs: Mapping[tuple[str, str], Mapping[str, Any]], profile: Mapping[str, Any],
          mode: str, bulk: bool, rounds: int, parallel: int | None,
          timing: Mapping[str, Any], outlier_fraction: float = 0.2,
          state: str = "complete", fan: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fleet document (schema-versioned) from a run's pieces.

    `fan` (modes "to" and "from"): the aggregate sweep of fanin.summarize
    and its clock; then the pairs are the paths into or out of the hub, each
    judged alone, and there are no medians or outliers (the paths ran at
    once, into one host: they are not independent samples of the fleet).
    """
    if not 0 < outlier_fraction < 1:
        raise ConfigError(f"outlier fraction must be between 0 and 1 (got {outlier_fraction})")
    names = [h["name"] for h in hosts]
    pairs = []
    for (src, dst), doc in sorted(pair_docs.items(), key=lambda kv: (names.index(kv[0][0])
                                                                      if kv[0][0] in names else 0,
                                                                      names.index(kv[0][1])
                                                                      if kv[0][1] in names else 0)):
        entry: dict[str, Any] = {"src": src, "dst": dst, "status": doc.get("status"),
                                 "reason": doc.get("reason"), "round": doc.get("round")}
        entry.update(summarize_sweep(doc.get("sweep")))
        bulk_doc = doc.get("bulk") or {}
        entry["ceiling_bps"] = bulk_doc.get("ceiling_bps") if bulk else None
        for key in ("wall_s", "traffic_s", "overhead_s"):
            entry[key] = doc.get(key)
        pairs.append(entry)
    ok = [p for p in pairs if p["status"] == "ok" and p["good_pps"] is not None]
    if fan is not None:
        ok = []
    fleet_median = _median(p["good_pps"] for p in ok)
    limit = None if fleet_median is None else fleet_median * (1 - outlier_fraction)
    host_rows = []
    outliers: list[dict[str, Any]] = []
    for host in hosts:
        name = host["name"]
        pre = dict(preflight.get(name, {}))
        med_in = _median(p["good_pps"] for p in ok if p["dst"] == name)
        med_out = _median(p["good_pps"] for p in ok if p["src"] == name)
        ceil_in = _median(p["ceiling_bps"] for p in ok if p["dst"] == name)
        ceil_out = _median(p["ceiling_bps"] for p in ok if p["src"] == name)
        host_rows.append({
            "name": name, "test_address": host.get("test_address"),
            "reachable": pre.get("reachable"), "reason": pre.get("reason"),
            "pktbench_version": pre.get("pktbench_version"), "cpus": pre.get("cpus"),
            "installed": pre.get("install"),
            "clock_offset_ms": pre.get("clock_offset_ms"), "ssh_rtt_ms": pre.get("ssh_rtt_ms"),
            "median_in_pps": med_in, "median_out_pps": med_out,
            "median_ceiling_in_bps": ceil_in, "median_ceiling_out_bps": ceil_out})
        for direction, value in (("in", med_in), ("out", med_out)):
            if limit is not None and fleet_median and value is not None and value < limit:
                outliers.append({"kind": "host", "host": name, "direction": direction,
                                 "median_pps": value, "fleet_median_pps": fleet_median,
                                 "below_by": round(1 - value / fleet_median, 4)})
    for p in ok:
        if limit is not None and p["good_pps"] < limit:
            assert fleet_median is not None
            outliers.append({"kind": "pair", "src": p["src"], "dst": p["dst"],
                             "direction": f"{p['src']}->{p['dst']}", "good_pps": p["good_pps"],
                             "knee_pps": p["knee_pps"], "fleet_median_pps": fleet_median,
                             "below_by": round(1 - p["good_pps"] / fleet_median, 4)})
    counts = {status: sum(1 for p in pairs if p["status"] == status)
              for status in ("ok", "failed", "unreachable")}
    return {
        "schema_version": FLEET_SCHEMA_VERSION, "kind": FLEET_KIND,
        "tool": {"name": "pktbench", "version": __version__}, "created": time.time(),
        "state": state, "mode": mode, "profile": dict(profile), "bulk": bulk,
        "outlier_fraction": outlier_fraction,
        "schedule": {"hosts": len(hosts), "rounds": rounds, "parallel": parallel,
                     "tests": len(pairs)},
        "counts": counts, "fleet_median_pps": fleet_median,
        "hosts": host_rows, "pairs": pairs, "outliers": outliers, "timing": dict(timing),
        **({"fan": dict(fan)} if fan is not None else {})}


def load_fleet(path: str | Path) -> dict[str, Any]:
    """Read a fleet result file.

    Raises:
        ConfigError: unreadable, not JSON, not a fleet result, or a newer schema.
    """
    source = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"result file {source} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"result file {source} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("kind") != FLEET_KIND:
        raise ConfigError(f"{source}: not a pktbench fleet result")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > FLEET_SCHEMA_VERSION:
        raise ConfigError(f"{source}: fleet schema_version {version} is newer than this "
                          f"pktbench reads ({FLEET_SCHEMA_VERSION})")
    return doc


def is_fleet_file(path: str | Path) -> bool:
    """True when `path` holds a fleet result (False for anything else, unreadable too)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == FLEET_KIND
