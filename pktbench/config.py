"""Workload profiles: the TOML files, their validation, and the resolved Profile.

Owns: the profile schema (which keys exist, their types and allowed values),
rate schedules (`make_schedule`), loading built-in or user profiles, and
applying command-line overrides.

Invariants:
- A Profile is frozen and always valid: every way of making one (TOML file,
  overrides) goes through the same checks in `_build`.
- `rates_pps` is the resolved schedule: positive, strictly increasing.
- Every error is a one-line ConfigError that names the file (or "command
  line"), the key, and what is allowed.

Must not: open sockets, run anything, or know how a sweep is executed. The
profile files themselves are data only (profiles/*.toml).
"""
from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pktbench import wire
from pktbench.errors import ConfigError
from pktbench.knee import KneeCriteria
from pktbench.protocol import GSO_MODES, MAX_BURST, MAX_PIPELINE, MAX_STREAMS
from pktbench.rates import MAX_STEP_PPS, parse_pps, parse_pps_list

if sys.version_info >= (3, 11):
    import tomllib
    from importlib.resources.abc import Traversable
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib
    from importlib.abc import Traversable

WORKLOADS: tuple[str, ...] = ("rr", "blast")
COMMANDS: tuple[str, ...] = ("ping", "get", "set", "none")
SEARCH_METHODS: tuple[str, ...] = ("ndr", "pdr")
SCALES: tuple[str, ...] = ("log", "linear")

# Safety bounds: a profile asking for more than this is almost certainly a typo
# (an extra zero), and every load must stay bounded in time.
MAX_RATE_PPS = MAX_STEP_PPS
MAX_DURATION_S = 3600.0
MAX_STEPS = 1000
MAX_OUTSTANDING = 65536  # StepParams.outstanding's bound


# The knee finder owns the criteria; profiles only fill them in.
Criteria = KneeCriteria


@dataclass(frozen=True)
class Profile:
    """A fully resolved workload: what to send, at which rates, judged how.

    Attributes:
        name: profile name (file stem unless the file says otherwise).
        description: one line shown by `list_profiles`.
        workload: "rr" (UDP request/response) or "blast" (one-way UDP).
        command: RESP command carried by rr requests; "none" for blast.
        size_bytes: UDP payload size of each request or datagram.
        rates_pps: offered rates, ascending, one step each (per repeat).
        rate_scale: how `rates_pps` was made: "log", "linear" or "list".
        duration_s: measured time of one step.
        warmup_s: time at the step's rate before measuring starts.
        drain_s: wait after sending stops for late responses/packets.
        repeat: how many times each rate is run.
        timeout_s: rr only: a request with no response by then is lost.
        busy_poll: receive by busy-polling (lower, steadier latency; burns a CPU).
        criteria: knee thresholds.
        search: NDR/PDR searches to run after the sweep ("ndr", "pdr").
        pdr_loss_ratio: loss ratio PDR accepts.
        precision: a search stops once (upper - lower) / upper <= precision.
        early_stop_steps: stop the sweep after this many consecutive failing
            steps past the knee (0 runs every rate).
        connections: rr over TCP (rr-tcp, redis://): connections the rate is
            spread over; None leaves it to the command line (1).
        pipeline: rr over TCP: requests in flight per connection at most; None: 1.
        outstanding: rr over UDP: close the loop at this many requests in
            flight (1 = ping-pong); None is open loop.
        gso: UDP GSO send / GRO receive: "auto" (where the kernel has it),
            "on" (refuse to run without), "off" (one datagram per message).
        burst: most datagrams one paced send releases; None: the rate's rule
            (those due in 100 us, at most 64; rr: 1).
    """

    name: str
    description: str = ""
    workload: str = "rr"
    command: str = "ping"
    size_bytes: int = 64
    rates_pps: tuple[float, ...] = (1000.0,)
    rate_scale: str = "list"
    duration_s: float = 1.0
    warmup_s: float = 0.3
    drain_s: float = 0.3
    repeat: int = 1
    timeout_s: float = 0.2
    busy_poll: bool = False
    criteria: Criteria = field(default_factory=Criteria)
    search: tuple[str, ...] = ()
    pdr_loss_ratio: float = 0.005
    precision: float = 0.02
    early_stop_steps: int = 2
    connections: int | None = None
    pipeline: int | None = None
    outstanding: int | None = None
    gso: str = "auto"
    burst: int | None = None

    @property
    def step_count(self) -> int:
        return len(self.rates_pps) * self.repeat

    def estimated_duration_s(self) -> float:
        """Wall time of the sweep itself (no searches, no control round trips)."""
        return self.step_count * (self.warmup_s + self.duration_s + self.drain_s)

    def to_dict(self) -> dict[str, Any]:
        """The resolved profile as the JSON result's "config" section."""
        return {
            "profile": self.name,
            "description": self.description,
            "workload": self.workload,
            "command": self.command,
            "size_bytes": self.size_bytes,
            "rates_pps": list(self.rates_pps),
            "rate_scale": self.rate_scale,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "drain_s": self.drain_s,
            "repeat": self.repeat,
            "timeout_s": self.timeout_s,
            "busy_poll": self.busy_poll,
            "gso": self.gso,
            "burst": self.burst,
            "criteria": self.criteria.as_dict(),
            "search": list(self.search),
            "pdr_loss_ratio": self.pdr_loss_ratio,
            "precision": self.precision,
            "early_stop_steps": self.early_stop_steps,
            # unset transport options stay out, so older result files compare equal
            **{key: value for key, value in (("connections", self.connections),
                                             ("pipeline", self.pipeline),
                                             ("outstanding", self.outstanding))
               if value is not None},
        }


# --------------------------------------------------------------------------
# Schedules


def make_schedule(from_pps: float, to_pps: float, steps: int, scale: str = "log") -> tuple[float, ...]:
    """Offered rates from `from_pps` to `to_pps` inclusive.

    Rates are rounded to whole packets per second (a fraction of a packet per
    second is below what any step can resolve), so schedules print cleanly.

    Args:
        from_pps: first rate, > 0.
        to_pps: last rate, >= from_pps.
        steps: number of rates, >= 1 (1 only when from_pps == to_pps).
        scale: "log" (same ratio between neighbours) or "linear".

    Returns:
        Strictly increasing rates.

    Raises:
        ConfigError: bad arguments, or rounding made two rates equal.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {_words(SCALES)} (got {scale!r})")
    for key, value in (("from_pps", from_pps), ("to_pps", to_pps)):
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key} must be a number > 0 (got {value!r})")
        if value > MAX_RATE_PPS:
            raise ConfigError(f"{key} must be <= {MAX_RATE_PPS:,.0f} (got {value!r})")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or steps > MAX_STEPS:
        raise ConfigError(f"steps must be an integer from 1 to {MAX_STEPS} (got {steps!r})")
    if to_pps < from_pps:
        raise ConfigError(f"to_pps must be >= from_pps (got {to_pps!r} < {from_pps!r})")
    if steps == 1:
        if to_pps != from_pps:
            raise ConfigError("steps must be >= 2 when to_pps differs from from_pps (got 1)")
        return (float(from_pps),)
    if to_pps == from_pps:
        raise ConfigError(f"to_pps must be > from_pps when steps > 1 (both {from_pps!r})")
    rates: list[float] = []
    for i in range(steps):
        fraction = i / (steps - 1)
        if scale == "log":
            value = from_pps * (to_pps / from_pps) ** fraction
        else:
            value = from_pps + (to_pps - from_pps) * fraction
        rates.append(float(round(value)) if value >= 1 else round(value, 3))
    rates[0], rates[-1] = float(from_pps), float(to_pps)
    for low, high in zip(rates, rates[1:]):
        if high <= low:
            raise ConfigError(
                f"{steps} steps from {from_pps:g} to {to_pps:g} pps repeat the rate {low:g} "
                "after rounding to whole pps: use fewer steps or a wider range"
            )
    return tuple(rates)


# --------------------------------------------------------------------------
# Schema

# key -> (kind, check); kind names the TOML type shown in messages.
_TOP_KEYS = (
    "name", "description", "workload", "command", "size_bytes", "rates", "duration_s",
    "warmup_s", "drain_s", "repeat", "timeout_s", "busy_poll", "criteria", "search",
    "early_stop_steps", "connections", "pipeline", "outstanding", "gso", "burst",
)
_RATES_KEYS = ("from_pps", "to_pps", "steps", "scale", "list_pps")
_CRITERIA_KEYS = ("max_loss_ratio", "latency_factor", "min_delivery_ratio", "baseline_steps",
                  "confirm_steps", "latency_floor_us", "loss_floor_ratio")
_SEARCH_KEYS = ("methods", "pdr_loss_ratio", "precision")

# Everything apply_overrides accepts besides Profile's own field names.
_OVERRIDE_EXTRA = ("from_pps", "to_pps", "steps", "scale") + _CRITERIA_KEYS


# Defaults of every optional key come from the dataclasses, written once.
_D = Profile(name="")
_DC = Criteria()


class _KeyError(Exception):
    """A problem with one key; `_build` adds the source name in front."""


def _words(options: Iterable[str]) -> str:
    return ", ".join(repr(o) for o in options)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 1e5 and value == int(value) else f"{value:g}"


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            if prefix and key in _TOP_KEYS:
                # TOML puts every key after a [table] header into that table.
                hint = f"move '{key}' above the [{prefix[:-1]}] header; "
            raise _KeyError(
                f"key '{prefix}{key}' is not allowed here ({hint}allowed: {', '.join(allowed)})"
            )


def _number(table: Mapping[str, Any], key: str, default: float, label: str, *,
            minimum: float | None = None, exclusive_min: bool = False,
            maximum: float | None = None) -> float:
    value = table.get(key, default)
    if not _is_number(value) or not math.isfinite(value):
        raise _KeyError(f"{label} must be a number (got {value!r})")
    if minimum is not None:
        if exclusive_min and value <= minimum:
            raise _KeyError(f"{label} must be > {_fmt(minimum)} (got {value!r})")
        if not exclusive_min and value < minimum:
            raise _KeyError(f"{label} must be >= {_fmt(minimum)} (got {value!r})")
    if maximum is not None and value > maximum:
        raise _KeyError(f"{label} must be <= {_fmt(maximum)} (got {value!r})")
    return float(value)


def _loss_floor(table: Mapping[str, Any]) -> float | None:
    """criteria.loss_floor_ratio: "auto" (detect it; None in a resolved profile) or a ratio."""
    value = table.get("loss_floor_ratio", "auto")
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        raise _KeyError(f'criteria.loss_floor_ratio must be "auto" or a ratio in [0, 1) '
                        f"(got {value!r})")
    ratio = _number(table, "loss_floor_ratio", 0.0, "criteria.loss_floor_ratio", minimum=0)
    if ratio >= 1.0:
        raise _KeyError(f"criteria.loss_floor_ratio must be < 1 (got {value!r})")
    return ratio


def _integer(table: Mapping[str, Any], key: str, default: int, label: str, *,
             minimum: int, maximum: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _KeyError(f"{label} must be an integer (got {value!r})")
    if not minimum <= value <= maximum:
        raise _KeyError(f"{label} must be from {minimum} to {maximum} (got {value!r})")
    return value


def _optional_integer(table: Mapping[str, Any], key: str, label: str, *,
                      maximum: int) -> int | None:
    if table.get(key) is None:
        return None
    return _integer(table, key, 1, label, minimum=1, maximum=maximum)


def _string(table: Mapping[str, Any], key: str, default: str, label: str,
            choices: Sequence[str] | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise _KeyError(f"{label} must be a string (got {value!r})")
    if choices is not None and value not in choices:
        raise _KeyError(f"{label} must be one of {_words(choices)} (got {value!r})")
    return value


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _KeyError(f"{key} must be a table like [{key}] (got {value!r})")
    return value


def _rates(raw: Mapping[str, Any]) -> tuple[tuple[float, ...], str]:
    if "rates" not in raw:
        raise _KeyError("key 'rates' is missing: add a [rates] table with from_pps/to_pps/steps "
                        "or list_pps")
    table = _table(raw, "rates")
    _check_keys(table, _RATES_KEYS, "rates.")
    if "list_pps" in table:
        extra = [k for k in ("from_pps", "to_pps", "steps", "scale") if k in table]
        if extra:
            raise _KeyError(f"rates.list_pps cannot be combined with rates.{extra[0]}: "
                            "give either a list or from_pps/to_pps/steps")
        values = table["list_pps"]
        if not isinstance(values, list) or not values:
            raise _KeyError(f"rates.list_pps must be a non-empty list of pps (got {values!r})")
        return _explicit_rates(values, "rates.list_pps"), "list"
    missing = [k for k in ("from_pps", "to_pps", "steps") if k not in table]
    if missing:
        raise _KeyError(f"key 'rates.{missing[0]}' is missing (a generated schedule needs "
                        "from_pps, to_pps and steps; or give list_pps)")
    table = {**table, **{key: _rate_value(table[key], f"rates.{key}")
                         for key in ("from_pps", "to_pps")}}
    from_pps = _number(table, "from_pps", 0, "rates.from_pps", minimum=0, exclusive_min=True,
                       maximum=MAX_RATE_PPS)
    to_pps = _number(table, "to_pps", 0, "rates.to_pps", minimum=0, exclusive_min=True,
                     maximum=MAX_RATE_PPS)
    steps = _integer(table, "steps", 0, "rates.steps", minimum=1, maximum=MAX_STEPS)
    scale = _string(table, "scale", "log", "rates.scale", SCALES)
    try:
        return make_schedule(from_pps, to_pps, steps, scale), scale
    except ConfigError as exc:
        raise _KeyError(f"rates: {exc}") from None


def _rate_value(value: Any, label: str) -> Any:
    """A rate written as text ('20k', '1.5M') is read with the one rate grammar.

    Numbers pass as they are, to the same range checks as every rate.
    """
    if not isinstance(value, str):
        return value
    try:
        return parse_pps(value, label)
    except ConfigError as exc:
        raise _KeyError(str(exc)) from None


def _explicit_rates(values: Sequence[Any], label: str) -> tuple[float, ...]:
    if len(values) > MAX_STEPS:
        raise _KeyError(f"{label} may list at most {MAX_STEPS} rates (got {len(values)})")
    rates: list[float] = []
    for i, raw_value in enumerate(values):
        value = _rate_value(raw_value, f"{label}[{i}]")
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise _KeyError(f"{label}[{i}] must be a number > 0 (got {value!r})")
        if value > MAX_RATE_PPS:
            raise _KeyError(f"{label}[{i}] must be <= {_fmt(MAX_RATE_PPS)} (got {value!r})")
        if rates and value <= rates[-1]:
            raise _KeyError(f"{label} must be strictly increasing "
                            f"(got {value!r} after {rates[-1]:g})")
        rates.append(float(value))
    return tuple(rates)


def _build(raw: Mapping[str, Any], default_name: str) -> Profile:
    """Check every key of a TOML-shaped dict and make the Profile (raises _KeyError)."""
    _check_keys(raw, _TOP_KEYS, "")
    name = _string(raw, "name", default_name, "name")
    if not name.strip():
        raise _KeyError("name must not be empty")
    description = _string(raw, "description", "", "description")
    workload = _string(raw, "workload", "rr", "workload", WORKLOADS)
    command = _string(raw, "command", "none" if workload == "blast" else "ping", "command",
                      COMMANDS)
    if workload == "blast" and command != "none":
        raise _KeyError(f"command must be 'none' for workload 'blast' (got {command!r})")
    if workload == "rr" and command == "none":
        raise _KeyError("command must be one of 'ping', 'get', 'set' for workload 'rr' "
                        "(got 'none')")
    min_size = wire.min_request_size(wire.COMMANDS[command])
    size_bytes = _integer(raw, "size_bytes", max(_D.size_bytes, min_size), "size_bytes",
                          minimum=1, maximum=wire.MAX_DATAGRAM)
    if size_bytes < min_size:
        raise _KeyError(f"size_bytes must be >= {min_size} for command {command!r} "
                        f"(header {wire.HEADER_SIZE} B + the command) (got {size_bytes})")
    rates_pps, rate_scale = _rates(raw)
    duration_s = _number(raw, "duration_s", _D.duration_s, "duration_s", minimum=0, exclusive_min=True,
                         maximum=MAX_DURATION_S)
    warmup_s = _number(raw, "warmup_s", _D.warmup_s, "warmup_s", minimum=0, maximum=MAX_DURATION_S)
    drain_s = _number(raw, "drain_s", _D.drain_s, "drain_s", minimum=0, maximum=60)
    repeat = _integer(raw, "repeat", _D.repeat, "repeat", minimum=1, maximum=100)
    timeout_s = _number(raw, "timeout_s", _D.timeout_s, "timeout_s", minimum=0, exclusive_min=True,
                        maximum=60)
    if workload == "rr" and timeout_s > drain_s:
        # A response inside the timeout is only counted if we still listen for it.
        raise _KeyError(f"drain_s must be >= timeout_s for workload 'rr' "
                        f"(got drain_s {drain_s:g} < timeout_s {timeout_s:g})")
    busy_poll = raw.get("busy_poll", _D.busy_poll)
    if not isinstance(busy_poll, bool):
        raise _KeyError(f"busy_poll must be true or false (got {busy_poll!r})")
    early_stop_steps = _integer(raw, "early_stop_steps", _D.early_stop_steps, "early_stop_steps",
                                minimum=0, maximum=MAX_STEPS)
    gso = _string(raw, "gso", _D.gso, "gso", choices=GSO_MODES)
    burst = _optional_integer(raw, "burst", "burst", maximum=MAX_BURST)

    connections = _optional_integer(raw, "connections", "connections", maximum=MAX_STREAMS)
    pipeline = _optional_integer(raw, "pipeline", "pipeline", maximum=MAX_PIPELINE)
    outstanding = _optional_integer(raw, "outstanding", "outstanding", maximum=MAX_OUTSTANDING)
    if workload != "rr":
        for key, value in (("connections", connections), ("pipeline", pipeline),
                           ("outstanding", outstanding)):
            if value is not None:
                raise _KeyError(f"{key} is for workload 'rr' only (got workload {workload!r}); "
                                f"remove {key}")

    crit = _table(raw, "criteria")
    _check_keys(crit, _CRITERIA_KEYS, "criteria.")
    criteria = Criteria(
        max_loss_ratio=_number(crit, "max_loss_ratio", _DC.max_loss_ratio, "criteria.max_loss_ratio",
                               minimum=0, maximum=1),
        latency_factor=_number(crit, "latency_factor", _DC.latency_factor, "criteria.latency_factor",
                               minimum=1, exclusive_min=True),
        min_delivery_ratio=_number(crit, "min_delivery_ratio", _DC.min_delivery_ratio,
                                   "criteria.min_delivery_ratio", minimum=0, maximum=1),
        baseline_steps=_integer(crit, "baseline_steps", _DC.baseline_steps, "criteria.baseline_steps",
                                minimum=1, maximum=MAX_STEPS),
        confirm_steps=_integer(crit, "confirm_steps", _DC.confirm_steps, "criteria.confirm_steps",
                               minimum=0, maximum=MAX_STEPS),
        latency_floor_us=_number(crit, "latency_floor_us", _DC.latency_floor_us,
                                 "criteria.latency_floor_us", minimum=0),
        loss_floor_ratio=_loss_floor(crit),
    )

    search_table = _table(raw, "search")
    _check_keys(search_table, _SEARCH_KEYS, "search.")
    methods = search_table.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise _KeyError(f"search.methods must be a list of strings (got {methods!r})")
    for method in methods:
        if method not in SEARCH_METHODS:
            raise _KeyError(f"search.methods may contain {_words(SEARCH_METHODS)} "
                            f"(got {method!r})")
    if len(set(methods)) != len(methods):
        raise _KeyError(f"search.methods lists a method twice (got {methods!r})")
    pdr_loss_ratio = _number(search_table, "pdr_loss_ratio", _D.pdr_loss_ratio, "search.pdr_loss_ratio",
                             minimum=0, exclusive_min=True, maximum=1)
    precision = _number(search_table, "precision", _D.precision, "search.precision",
                        minimum=0, exclusive_min=True, maximum=0.5)

    return Profile(
        name=name, description=description, workload=workload, command=command,
        size_bytes=size_bytes, rates_pps=rates_pps, rate_scale=rate_scale,
        duration_s=duration_s, warmup_s=warmup_s, drain_s=drain_s, repeat=repeat,
        timeout_s=timeout_s, busy_poll=busy_poll, criteria=criteria,
        search=tuple(methods), pdr_loss_ratio=pdr_loss_ratio, precision=precision,
        early_stop_steps=early_stop_steps, connections=connections, pipeline=pipeline,
        outstanding=outstanding, gso=gso, burst=burst,
    )


# --------------------------------------------------------------------------
# Loading


def _profiles_dir() -> Traversable:
    """Where the built-in profiles live.

    Installed, they are the package data of `pktbench.profiles`. Running from
    a source checkout (PYTHONPATH=.), that package does not exist and the
    profiles/ directory beside the pktbench package is used instead.
    """
    try:
        installed = resources.files("pktbench.profiles")
        if any(entry.name.endswith(".toml") for entry in installed.iterdir()):
            return installed
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "profiles"


def _builtin_files() -> dict[str, Traversable]:
    directory = _profiles_dir()
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {e.name[: -len(".toml")]: e for e in entries if e.name.endswith(".toml")}


def _parse_toml(data: bytes, source: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if where:
            message = message[: where.start()].strip()
            raise ConfigError(
                f"{source}: line {where.group(1)}: TOML syntax error: {message}"
            ) from None
        raise ConfigError(f"{source}: TOML syntax error: {message}") from None


def profile_from_toml(data: bytes | str, source: str, default_name: str = "profile") -> Profile:
    """Parse and validate TOML text; `source` names it in error messages."""
    raw = _parse_toml(data.encode("utf-8") if isinstance(data, str) else data, source)
    try:
        return _build(raw, default_name)
    except _KeyError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (e.g. "cloud-knee"), or a .toml file by path.

    Raises:
        ConfigError: unknown name, unreadable file, TOML syntax error, or an
            invalid key; the message names the file and the key.
    """
    if isinstance(name_or_path, Path) or _looks_like_path(name_or_path):
        path = Path(name_or_path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"profile file {path} not found") from None
        except IsADirectoryError:
            raise ConfigError(f"profile file {path} is a directory, not a .toml file") from None
        except OSError as exc:
            raise ConfigError(f"profile file {path} cannot be read: {exc.strerror}") from None
        return profile_from_toml(data, str(path), path.stem)
    builtins = _builtin_files()
    entry = builtins.get(name_or_path)
    if entry is None:
        close = difflib.get_close_matches(name_or_path, list(builtins), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown profile '{name_or_path}' ({hint}built-in: {', '.join(sorted(builtins))}; "
            "or give a path to a .toml file)"
        )
    return profile_from_toml(entry.read_bytes(), f"profiles/{entry.name}", name_or_path)


def list_profiles() -> list[tuple[str, str]]:
    """(name, description) of every built-in profile, sorted by name."""
    return sorted(
        (profile.name, profile.description)
        for profile in (load_profile(name) for name in _builtin_files())
    )


def apply_overrides(profile: Profile, source: str = "command line", **options: Any) -> Profile:
    """A copy of `profile` with command-line options applied.

    Options that are None are ignored, so click's unset options can be passed
    straight through. Accepted: any Profile field (rates_pps as a sequence or a
    "1k,2k" string, search as a sequence or "ndr,pdr"), the schedule keys
    from_pps/to_pps/steps/scale (missing ones are taken from the profile's
    schedule), and the criteria fields by their own names.

    Raises:
        ConfigError: unknown option, or a value the profile schema refuses.
    """
    given = {k: v for k, v in options.items() if v is not None}
    allowed = [f for f in Profile.__dataclass_fields__ if f not in ("criteria", "rate_scale")]
    allowed += list(_OVERRIDE_EXTRA)
    try:
        _check_keys(given, allowed, "")
    except _KeyError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    raw: dict[str, Any] = {
        "name": profile.name, "description": profile.description,
        "workload": profile.workload, "command": profile.command,
        "size_bytes": profile.size_bytes, "duration_s": profile.duration_s,
        "warmup_s": profile.warmup_s, "drain_s": profile.drain_s, "repeat": profile.repeat,
        "timeout_s": profile.timeout_s, "busy_poll": profile.busy_poll,
        "early_stop_steps": profile.early_stop_steps,
        **{key: value for key, value in (("connections", profile.connections),
                                         ("pipeline", profile.pipeline),
                                         ("outstanding", profile.outstanding),
                                         ("burst", profile.burst))
           if value is not None},
        "gso": profile.gso,
        "criteria": profile.criteria.as_dict(),
        "search": {"methods": list(profile.search), "pdr_loss_ratio": profile.pdr_loss_ratio,
                   "precision": profile.precision},
        "rates": {"list_pps": list(profile.rates_pps)},
    }
    if "workload" in given and given["workload"] != profile.workload and "command" not in given:
        # Switching workload without naming a command: take that workload's default.
        raw.pop("command")
    if given.get("workload", profile.workload) != "rr":
        # rr-only options the profile carries do not follow it to a one-way workload.
        for key in ("connections", "pipeline", "outstanding"):
            if key not in given:
                raw.pop(key, None)
    for key, value in given.items():
        if key in _CRITERIA_KEYS:
            raw["criteria"][key] = value
        elif key == "search":
            methods = value.split(",") if isinstance(value, str) else list(value)
            raw["search"]["methods"] = [m.strip() for m in methods if m.strip()]
        elif key in ("pdr_loss_ratio", "precision"):
            raw["search"][key] = value
        elif key == "rates_pps":
            listed = parse_pps_list(value) if isinstance(value, str) else tuple(value)
            raw["rates"] = {"list_pps": list(listed)}
        elif key not in ("from_pps", "to_pps", "steps", "scale"):
            raw[key] = value
    schedule_keys = [k for k in ("from_pps", "to_pps", "steps", "scale") if k in given]
    if schedule_keys:
        if "rates_pps" in given:
            raise ConfigError(f"{source}: give either an explicit rate list or "
                              f"{'/'.join(schedule_keys)}, not both")
        raw["rates"] = {
            "from_pps": given.get("from_pps", profile.rates_pps[0]),
            "to_pps": given.get("to_pps", profile.rates_pps[-1]),
            "steps": given.get("steps", len(profile.rates_pps)),
            "scale": given.get("scale", profile.rate_scale if profile.rate_scale in SCALES
                               else "log"),
        }
    try:
        built = _build(raw, profile.name)
    except _KeyError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if "rates" in raw and not schedule_keys and "rates_pps" not in given:
        built = replace(built, rate_scale=profile.rate_scale)
    return built
