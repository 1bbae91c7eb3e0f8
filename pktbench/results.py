"""The result document of sweeps, runs and bulk tests: schema version, reading, host facts.

Owns: SCHEMA_VERSION, the SweepResult wrapper around the result document (its
`kind` is "sweep" for rate sweeps and single runs, "bulk" for throughput
tests), the bulk ceiling, loading result files (refusing newer schemas,
upgrading older ones, old bulk files included), grouping the repeats of a
rate, and `environment()`, the host facts recorded with a run.

Invariants:
- `SweepResult.to_dict()` is exactly what the JSON file holds; `from_dict`
  of it gives an equal SweepResult.
- A document with a schema_version newer than SCHEMA_VERSION is refused,
  never half-read. Older versions are upgraded one version at a time by the
  functions in `_UPGRADES`.

Must not: compute step statistics (the engine and accounting do), judge steps
(the knee finder does), or send traffic. `environment()` only reads /proc,
/sys and runs `ethtool -k` (read-only) when it is installed.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pktbench._version import __version__
from pktbench.errors import ConfigError

SCHEMA_VERSION = 3

KINDS = ("sweep", "bulk")

# How a bulk ceiling's link counts bits (a bulk document's `link_model`):
# see pktbench.workloads.bulk.link_model_for for how one is chosen.
LINK_MODELS: Mapping[str, str] = MappingProxyType({
    "l1": "L1: frame + preamble + inter-frame gap, as a physical link carries it",
    "l2": "L2: frame bytes only, as a shaper (tbf, htb) counts them"})
_REQUIRED_KEYS = ("environment", "config", "steps")


def _one_to_two(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had two documents: sweeps (no `kind`) and bulk tests (`kind` "bulk").

    A version-1 bulk file numbered its schema on its own and kept the target
    and two copies of the ceiling at the top level; version 2 keeps the
    target in `config`, as sweeps do, and the ceiling once.
    """
    if doc.get("kind") == "bulk":
        target = doc.pop("target", None)
        doc["config"] = {**doc.get("config", {}), "target": target}
        doc.pop("ceiling_bits_per_second", None)
        doc.pop("ceiling_wire_bits_per_second", None)
        doc.setdefault("tool", {"name": "pktbench",
                                "version": doc.get("environment", {}).get("pktbench", "unknown")})
    else:
        doc["kind"] = "sweep"
    for key in ("knee", "kneedle_pps", "ndr_pps", "pdr_pps", "search", "plan", "ceiling",
                "judgement"):
        doc.setdefault(key, None)
    return doc


# Version 3 names every rate by its unit the same way in every kind: bits
# per second end in _bps (sweep steps said Mbit/s in sent_mbps, bulk steps
# spelled bits_per_second out). Old key -> new key, per part of a document.
_BULK_STEP_RENAMES: Mapping[str, str] = MappingProxyType({
    "aggregate_bits_per_second": "aggregate_bps", "sender_bits_per_second": "sender_bps",
    "offered_bits_per_second": "offered_bps", "wire_bits_per_second": "wire_bps",
    "frame_bits_per_second": "frame_bps"})
_BULK_ROW_RENAMES: Mapping[str, str] = MappingProxyType({
    "bits_per_second": "goodput_bps", "sender_bits_per_second": "sender_bps",
    "wire_bits_per_second": "wire_bps", "frame_bits_per_second": "frame_bps"})
_CEILING_RENAMES: Mapping[str, str] = MappingProxyType({
    "bits_per_second": "goodput_bps", "wire_bits_per_second": "wire_bps",
    "frame_bits_per_second": "frame_bps", "offered_bits_per_second": "offered_bps"})
_MBIT_STEP_RENAMES: Mapping[str, str] = MappingProxyType({
    "sent_mbps": "sent_bps", "received_mbps": "received_bps"})


def _renamed(mapping: Any, renames: Mapping[str, str]) -> Any:
    """`mapping` with its keys renamed in place of the old ones (order kept)."""
    if not isinstance(mapping, dict):
        return mapping
    return {renames.get(key, key): value for key, value in mapping.items()}


def _end_report(end: Any) -> Any:
    """A bulk step's client or server end: payload rates per stream and in total."""
    if not isinstance(end, dict):
        return end
    end = _renamed(end, {"bits_per_second": "payload_bps"})
    if isinstance(end.get("streams"), list):
        end["streams"] = [_renamed(s, {"bits_per_second": "payload_bps"})
                          for s in end["streams"]]
    return end


def _mbit_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    out = _renamed(step, _MBIT_STEP_RENAMES)
    for key in _MBIT_STEP_RENAMES.values():
        if isinstance(out.get(key), (int, float)) and not isinstance(out[key], bool):
            # rounded to the µbit/s so 5.119 Mbit/s reads 5119000.0, not 5119000.000000001
            out[key] = round(out[key] * 1e6, 6)
    return out


def _bulk_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    out = _renamed(step, _BULK_STEP_RENAMES)
    if isinstance(out.get("streams"), list):
        out["streams"] = [_renamed(r, _BULK_ROW_RENAMES) for r in out["streams"]]
    if isinstance(out.get("per_path"), list):
        out["per_path"] = [_renamed(p, {"bits_per_second": "interface_bps"})
                           for p in out["per_path"]]
    for end in ("client", "server"):
        if end in out:
            out[end] = _end_report(out[end])
    return out


def _two_to_three(doc: dict[str, Any]) -> dict[str, Any]:
    """Every rate in bit/s under a `_bps` key, in sweep and bulk documents alike."""
    steps = doc.get("steps")
    if isinstance(steps, list):
        if doc.get("kind") == "bulk":
            doc["steps"] = [_bulk_step(s) for s in steps]
        else:
            doc["steps"] = [_mbit_step(s) for s in steps]
    if isinstance(doc.get("ceiling"), dict):
        doc["ceiling"] = _renamed(doc["ceiling"], _CEILING_RENAMES)
    return doc


# Upgrades from version N to N + 1, applied in order by `upgrade_document`;
# read-only so no caller can change how old files are read.
_UPGRADES: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] = MappingProxyType(
    {1: _one_to_two, 2: _two_to_three})


@dataclass(frozen=True)
class SweepResult:
    """One result document: the steps as measured plus what was concluded from them.

    Attributes mirror the document's top-level keys; `steps` holds the step
    dicts unchanged. `kind` "sweep" (a rate sweep, or one `run` step) carries
    the knee and search fields; `kind` "bulk" carries the flow `plan` and
    the `ceiling` (see `bulk_ceiling`) and leaves the knee fields None.
    """

    environment: dict[str, Any]
    config: dict[str, Any]
    steps: tuple[dict[str, Any], ...]
    knee: dict[str, Any] | None = None
    kneedle_pps: float | None = None
    ndr_pps: float | None = None
    pdr_pps: float | None = None
    search: dict[str, Any] | None = None
    tool: dict[str, Any] = field(
        default_factory=lambda: {"name": "pktbench", "version": __version__})
    kind: str = "sweep"
    plan: dict[str, Any] | None = None
    ceiling: dict[str, Any] | None = None
    judgement: dict[str, Any] | None = None
    # SIGINT/SIGTERM ended the run early: `steps` are the ones that finished
    # (a `run` keeps its one step, cut short). Written only when true.
    interrupted: bool = False

    @classmethod
    def bulk(cls, environment: dict[str, Any], config: dict[str, Any],
             steps: tuple[dict[str, Any], ...], plan: dict[str, Any] | None = None
             ) -> SweepResult:
        """A bulk test's document; its ceiling is worked out here, once."""
        return cls(environment=environment, config=config, steps=steps, kind="bulk",
                   plan=plan, ceiling=bulk_ceiling(steps, config.get("link_speed_bps")))

    @property
    def target(self) -> str:
        """Where the traffic went, as the config records it ("" when unknown)."""
        return str(self.config.get("target") or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "tool": dict(self.tool),
            "environment": self.environment,
            "config": self.config,
            "steps": list(self.steps),
            "knee": self.knee,
            "kneedle_pps": self.kneedle_pps,
            "ndr_pps": self.ndr_pps,
            "pdr_pps": self.pdr_pps,
            "search": self.search,
            "plan": self.plan,
            "ceiling": self.ceiling,
            "judgement": self.judgement,
            **({"interrupted": True} if self.interrupted else {}),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: str = "result") -> SweepResult:
        """Build from a sweep document, upgrading an older schema.

        Raises:
            ConfigError: newer schema, not a pktbench result, or a missing key.
        """
        doc = upgrade_document(document, source)
        for key in _REQUIRED_KEYS:
            if key not in doc:
                raise ConfigError(f"{source}: key '{key}' is missing; not a complete "
                                  "pktbench sweep result")
        if not isinstance(doc["steps"], list):
            raise ConfigError(f"{source}: 'steps' must be a list of step results")
        if doc.get("kind") not in KINDS:
            raise ConfigError(f"{source}: kind {doc.get('kind')!r} is not a pktbench result "
                              f"kind ({', '.join(KINDS)})")
        return cls(
            environment=dict(doc["environment"]),
            config=dict(doc["config"]),
            steps=tuple(doc["steps"]),
            knee=doc.get("knee"),
            kneedle_pps=doc.get("kneedle_pps"),
            ndr_pps=doc.get("ndr_pps"),
            pdr_pps=doc.get("pdr_pps"),
            search=doc.get("search"),
            tool=dict(doc.get("tool") or {"name": "pktbench", "version": "unknown"}),
            kind=doc["kind"],
            plan=doc.get("plan"),
            ceiling=doc.get("ceiling"),
            judgement=doc.get("judgement"),
            interrupted=doc.get("interrupted") is True,
        )

    @property
    def knee_pps(self) -> float | None:
        return None if self.knee is None else self.knee.get("offered_pps")

    @property
    def last_good_pps(self) -> float | None:
        return None if self.knee is None else self.knee.get("last_good_pps")

    def rate_groups(self) -> list[RateGroup]:
        """The steps grouped by offered rate (the repeats of one rate), ascending."""
        return group_by_rate(self.steps)


def bulk_ceiling(steps: tuple[dict[str, Any], ...], link_speed_bps: float | None
                 ) -> dict[str, Any]:
    """The bulk step with the highest aggregate goodput, on-wire too, beside the link speed."""
    best = max(steps, key=lambda s: s["aggregate_bps"], default=None)
    if best is None:
        return {"goodput_bps": None}
    link = link_speed_bps
    overhead = best.get("overhead")
    model = best.get("link_model") or "l1"
    ratio = overhead["goodput_ratio"] if overhead else None
    if model == "l2" and best.get("frame_bps"):
        # a shaper meters frames: goodput can reach link x goodput / frame bits
        ratio = best["aggregate_bps"] / best["frame_bps"]
    return {
        "goodput_bps": best["aggregate_bps"],
        "wire_bps": best["wire_bps"],
        "frame_bps": best["frame_bps"],
        "step_index": best["index"],
        "streams": best["streams_requested"],
        "offered_bps": best.get("offered_bps"),
        "link_speed_bps": link,
        "link_percent": best["link_percent"],
        **({"link_model": model if link else None} if "link_model" in best else {}),
        "goodput_link_percent": (100.0 * best["aggregate_bps"] / link
                                 if link else None),
        "max_goodput_at_link_bps": link * ratio if link and ratio else None,
        "overhead": overhead,
    }


def upgrade_document(document: Mapping[str, Any], source: str = "result") -> dict[str, Any]:
    """Bring a result document to SCHEMA_VERSION (a copy; the input is untouched).

    Raises:
        ConfigError: no schema_version, or one newer than this pktbench reads.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: not a pktbench result (expected a JSON object)")
    version = document.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(f"{source}: not a pktbench result (no integer schema_version)")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: schema_version {version} is newer than this pktbench reads "
            f"({SCHEMA_VERSION}); upgrade pktbench (pip install -U pktbench)"
        )
    doc: dict[str, Any] = json.loads(json.dumps(document))
    while version < SCHEMA_VERSION:
        upgrade = _UPGRADES.get(version)
        if upgrade is None:
            raise ConfigError(f"{source}: schema_version {version} is too old to read "
                              f"(this pktbench reads {min(_UPGRADES, default=SCHEMA_VERSION)}"
                              f" to {SCHEMA_VERSION})")
        doc = upgrade(doc)
        version += 1
        doc["schema_version"] = version
    return doc


def load_result(path: str | os.PathLike[str]) -> SweepResult:
    """Read a JSON result file written by `pktbench sweep`, `run` or `bulk` with --json.

    Args:
        path: the file.

    Returns:
        The result, upgraded to SCHEMA_VERSION.

    Raises:
        ConfigError: unreadable file, invalid JSON (with the line), a newer
            schema, or not a pktbench result.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"result file {source} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"result file {source} cannot be read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    return SweepResult.from_dict(document, source)


# --------------------------------------------------------------------------
# Repeats


@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float


@dataclass(frozen=True)
class RateGroup:
    """All repeats of one offered rate, in the order they ran."""

    offered_pps: float
    steps: tuple[dict[str, Any], ...]

    def spread(self, *path: str) -> Spread | None:
        """min/median/max of one numeric key over the repeats, e.g. ("latency_us", "p99").

        Repeats where the value is missing (None, or no latency dict) are left
        out; None when no repeat has it.
        """
        values = [v for v in (_dig(step, path) for step in self.steps)
                  if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v)]
        if not values:
            return None
        return Spread(min(values), float(statistics.median(values)), max(values))


def _dig(mapping: Mapping[str, Any], path: Iterable[str]) -> Any:
    value: Any = mapping
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def group_by_rate(steps: Iterable[Mapping[str, Any]]) -> list[RateGroup]:
    """Group step dicts by offered rate; rates ascending, repeats in run order."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for step in steps:
        groups.setdefault(float(step["offered_pps"]), []).append(dict(step))
    return [RateGroup(rate, tuple(sorted(group, key=lambda s: s.get("repeat", 0))))
            for rate, group in sorted(groups.items())]


# --------------------------------------------------------------------------
# Host facts

# The offloads that change what a small-packet or bulk test measures.
_OFFLOADS = (
    "rx-checksumming", "tx-checksumming", "scatter-gather", "tcp-segmentation-offload",
    "generic-segmentation-offload", "generic-receive-offload", "large-receive-offload",
    "rx-gro-list", "rx-udp-gro-forwarding", "tx-udp-segmentation",
)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def interface_for(host: str | None) -> str | None:
    """Name of the interface the kernel routes `host` (an IP address) through.

    Reads the routing table from /proc/net (per network namespace, no
    subprocess); loopback addresses give "lo". None when unknown.
    """
    if not host:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        family = socket.AF_INET
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
            family = socket.AF_INET6
        except OSError:
            return None
    if (family == socket.AF_INET and packed[0] == 127) or (
            family == socket.AF_INET6 and packed == socket.inet_pton(socket.AF_INET6, "::1")):
        return "lo"
    best: tuple[int, str] | None = None
    if family == socket.AF_INET:
        address = struct.unpack("!I", packed)[0]
        for line in (_read("/proc/net/route") or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) < 8:
                continue
            # Destination and Mask are host-order hex of the kernel's big-endian u32.
            dest = struct.unpack("!I", struct.pack("=I", int(cols[1], 16)))[0]
            mask = struct.unpack("!I", struct.pack("=I", int(cols[7], 16)))[0]
            if address & mask == dest:
                prefix = bin(mask).count("1")
                if best is None or prefix > best[0]:
                    best = (prefix, cols[0])
    else:
        address6 = int.from_bytes(packed, "big")
        for line in (_read("/proc/net/ipv6_route") or "").splitlines():
            cols = line.split()
            if len(cols) < 10:
                continue
            prefix = int(cols[1], 16)
            dest = int(cols[0], 16)
            mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1) if prefix else 0
            if address6 & mask == dest and cols[9] != "lo":
                if best is None or prefix > best[0]:
                    best = (prefix, cols[9])
    return None if best is None else best[1]


def _offloads(interface: str) -> dict[str, bool]:
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return {}
    try:
        out = subprocess.run([ethtool, "-k", interface], capture_output=True, text=True,
                             timeout=2, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, bool] = {}
    for line in out.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in _OFFLOADS:
            found[key] = value.split()[0] == "on" if value.split() else False
    return found


def environment(host: str | None = None, interface: str | None = None,
                engine: str = "cython") -> dict[str, Any]:
    """Facts about this host that change what a sweep measures.

    Args:
        host: the peer's IP address; used to find the interface when
            `interface` is not given.
        interface: the interface the traffic uses, if known.
        engine: which engine ran ("cython" or "python").

    Returns:
        The "environment" section of the sweep document. Unknown facts are None
        (mtu) or empty (offloads); this never raises for a missing file or tool.
    """
    iface = interface or interface_for(host)
    mtu = _read_int(f"/sys/class/net/{iface}/mtu") if iface else None
    return {
        # when the run began, ISO 8601 in UTC (plots and reports date a result by it)
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": f"{platform.system()} {platform.release()}",
        "cpu": _cpu_model(),
        "cpus": os.cpu_count() or 1,
        "interface": iface,
        "mtu": mtu,
        "rmem_max_bytes": _read_int("/proc/sys/net/core/rmem_max"),
        "wmem_max_bytes": _read_int("/proc/sys/net/core/wmem_max"),
        "offloads": _offloads(iface) if iface else {},
        "python": platform.python_version(),
        "pktbench": __version__,
        "engine": engine,
    }
