"""The one rate grammar of every option and profile key.

A rate is a decimal number with an optional k/M/G/T scale (powers of 1000,
any case): `20000`, `20k`, `1.5M`, `1e6`. Packet rates (pps) may be `max`
where the caller allows it (as fast as the sender goes). Bit rates may end in
a unit (`bit`, `bits`, `bit/s`, `b/s`, `bps`: all bit/s, as in `10Gbps`; so
unlike tc, `bps` is never bytes) and may be a multiple of a link (`2x10G`).
Lists are comma-separated.

Owns the limits too: a rate is finite, > 0 and at most MAX_PPS or MAX_BPS,
so a typo such as `1e300` or `nan` is one clear error, not a step that never
ends. Stdlib only (config and the testbed use it without the engine).
"""
from __future__ import annotations

import math
import re

from pktbench.errors import ConfigError

__all__ = ["MAX_BPS", "MAX_PPS", "MAX_STEP_PPS", "check_step_pps", "is_bare_number", "parse_bps", "parse_bps_list", "parse_pps", "parse_pps_list",
           "parse_pps_or_max"]

# Far above any real path (100 GbE carries 148.8 Mpps of minimum frames), low
# enough that a step's packet count (rate x duration) stays an exact integer in
# a float and in the engine's 64-bit counters.
MAX_PPS = 1e12
MAX_BPS = 1e15
# What one step may offer (run, sweep, profiles alike): a rate above this is
# almost certainly a typo (an extra zero), and a step's load stays bounded.
MAX_STEP_PPS = 50_000_000.0

_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?"
_PPS_RE = re.compile(rf"^{_NUMBER}\s*([kmgt]?)\s*(?:pps)?$", re.IGNORECASE)
_BPS_RE = re.compile(rf"^(?:(\d+)\s*[x*]\s*)?{_NUMBER}\s*([kmgt]?)\s*(?:bit/s|bits?|b/s|bps)?$",
                     re.IGNORECASE)


def _value(mantissa: str, exponent: str | None, scale: str) -> float:
    # Exponents past float range are refused before float() turns them into inf.
    if exponent is not None and abs(int(exponent)) > 300:
        return math.inf
    return float(mantissa + ("e" + exponent if exponent is not None else "")) * _SCALE[scale.lower()]


def _checked(value: float, text: str, what: str, limit: float, unit: str) -> float:
    if not math.isfinite(value) or value > limit:
        raise ConfigError(f"{what} {text.strip()!r} is too large: at most {limit:g} {unit}")
    if not value > 0:
        raise ConfigError(f"{what} {text.strip()!r} must be > 0")
    return value


def parse_pps(text: str, what: str = "rate") -> float:
    """'20000', '20k', '1.5M', '2e5' -> packets per second.

    Raises:
        ConfigError: not a rate, not > 0, or above MAX_PPS.
    """
    match = _PPS_RE.match(text.strip())
    if match is None:
        raise ConfigError(f"{what} {text.strip()!r} is not a rate: give packets per second "
                          "(20000, 20k, 1.5M)")
    return _checked(_value(*match.groups()), text, what, MAX_PPS, "pps")


def parse_pps_or_max(text: str, what: str = "rate") -> float | None:
    """As parse_pps, and 'max' -> None (send as fast as the socket takes packets)."""
    if text.strip().lower() == "max":
        return None
    try:
        return parse_pps(text, what)
    except ConfigError as exc:
        if "is not a rate" in str(exc):
            raise ConfigError(f"{exc} or 'max'") from None
        raise


def check_step_pps(value: float, text: str, what: str = "rate") -> float:
    """`value` (pps) if one step may offer it, else the one error run and sweep both give."""
    if value > MAX_STEP_PPS:
        raise ConfigError(f"{what} {text.strip()!r} is above what one step offers: at most "
                          f"{MAX_STEP_PPS:,.0f} pps")
    return value


def parse_pps_list(text: str, what: str = "rates") -> tuple[float, ...]:
    """'1k,2k,5000' -> (1000.0, 2000.0, 5000.0)."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{what} must list at least one rate, e.g. 1k,2k,5k")
    return tuple(parse_pps(part, what.rstrip("s")) for part in parts)


def is_bare_number(text: str) -> bool:
    """A number with neither a scale nor a unit ('5000', '1.5'): ambiguous where pps and
    bit/s could both be meant."""
    return re.fullmatch(rf"{_NUMBER}", text.strip(), re.IGNORECASE) is not None


def parse_bps(text: str, what: str = "bit rate", *, bare_scale: str = "") -> float:
    """'10G', '2x10G', '25gbit', '400mbit/s', '10Gbps', '64000' -> bit/s.

    `bare_scale` is the scale of a number given without one (a list of
    Gbit/s reads `1,2.5` as 1G and 2.5G).

    Raises:
        ConfigError: not a bit rate, not > 0, or above MAX_BPS.
    """
    match = _BPS_RE.match(text.strip())
    if match is None:
        raise ConfigError(f"{what} {text.strip()!r} is not a bit rate: use e.g. 10G, 2x10G, "
                          "500M or 25gbit")
    count, mantissa, exponent, scale = match.groups()
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text.strip()):
        scale = bare_scale
    return _checked((int(count) if count else 1) * _value(mantissa, exponent, scale),
                    text, what, MAX_BPS, "bit/s")


def parse_bps_list(text: str, what: str = "rates", *, bare_scale: str = "") -> tuple[float, ...]:
    """'1,2.5,500M' -> bit/s, each entry as parse_bps."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{what} {text!r} is empty: give e.g. 1G,2G,5G")
    return tuple(parse_bps(part, what.rstrip("s"), bare_scale=bare_scale) for part in parts)
