"""Every numeric option of the CLI, fed huge, tiny, NaN, inf, negative and garbage values.

The property: the command either succeeds, or fails with exit status 1 or 2
and one "Error:" line, never a traceback. Values that parse point the
command at a closed port on loopback, so it fails fast at the connection
(a one-line error too) instead of running traffic.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pktbench.cli import main

DATA = Path(__file__).resolve().parent / "data"
CLOSED = "127.0.0.1:1"  # nothing listens on port 1 here: refused at once

# (command prefix, option) for every option that reads a number or a rate.
NUMERIC_OPTIONS = {
    "run": ["--rate", "--duration", "-t", "--warmup", "--size", "-l", "--outstanding",
            "--timeout", "--workers", "--max-loss", "--min-delivery", "--connections",
            "--pipeline", "-p", "-i"],
    "sweep": ["--rates", "--from", "--to", "--steps", "--pdr-loss", "--precision",
              "--duration", "-t", "--warmup", "--repeat", "--size", "--max-loss",
              "--latency-factor", "--min-delivery", "--outstanding", "--workers", "-p", "-i"],
    "bulk": ["--streams", "-P", "--duration", "-t", "--warmup", "--size", "--rate", "-b",
             "--write-size", "--link-speed", "--paths", "--sweep-streams", "--sweep-rates",
             "--workers", "-l", "-p", "-i"],
    "serve": ["--port", "--max-rate", "--max-duration"],
    "decode": ["--port"],
}

# Extra arguments so a value that parses still ends quickly.
CONTEXT = {
    "run": [CLOSED],
    "sweep": [CLOSED],
    "bulk": [CLOSED],
    "serve": ["--print-systemd-unit"],
    "decode": [str(DATA / "no-such-capture.pcap")],
}

SPECIAL = ["nan", "NaN", "inf", "-inf", "+inf", "infinity", "1e99", "1e308", "1e309",
           "1e-300", "-1", "-0", "0", "0.0", "1e400", "9" * 400, "-1e99", "0x10", "1,2,,3",
           "", " ", "max", "1k", "2.5G", "10x10G", "1e12", "5e7", "1.5M", "3", "abc", "1..2",
           "1e", "1_000", "\u0661", "1\x00", "65536", "99999999999999999999"]

values = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.text(alphabet="0123456789.eE+-kKmMgGx,", min_size=1, max_size=12),
)


def _check(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert not (result.exception and not isinstance(result.exception, SystemExit)), (
        f"{args}: {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.stderr, (args, result.stderr)
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), (args, result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (args, result.stderr)
    others = [line for line in result.stderr.splitlines()
              if line.strip() and not line.startswith(("Error:", "Usage:", "Try "))]
    assert not others, (args, result.stderr)


CASES = [(command, option) for command, options in NUMERIC_OPTIONS.items()
         for option in options]


@pytest.mark.parametrize("command, option", CASES, ids=[f"{c} {o}" for c, o in CASES])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=values)
def test_numeric_option_never_raises(command, option, value):
    _check([command, *CONTEXT[command], option, value])


@pytest.mark.parametrize("command, option", CASES, ids=[f"{c} {o}" for c, o in CASES])
def test_special_values(command, option):
    for value in SPECIAL:
        _check([command, *CONTEXT[command], option, value])


def _mangle(node: object, value: object) -> object:
    """Every number in a JSON document replaced by `value`."""
    if isinstance(node, dict):
        return {key: _mangle(item, value) for key, item in node.items()}
    if isinstance(node, list):
        return [_mangle(item, value) for item in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return value
    return node


ODD_NUMBERS = [math.nan, math.inf, -math.inf, -1, 0, 1e308, -1e308, 10 ** 30, "12", None,
               [], {}]


@pytest.mark.parametrize("name", ["sweep-old-path", "bulk-old-tcp", "bulk-old-udp"])
@pytest.mark.parametrize("odd", ODD_NUMBERS, ids=repr)
def test_compare_of_files_with_odd_numbers(tmp_path, name, odd):
    document = json.loads((DATA / f"{name}.json").read_text())
    mangled = _mangle(document, odd)
    if isinstance(mangled, dict):
        mangled["schema_version"] = document["schema_version"]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(mangled))  # NaN/Infinity as Python's json writes them
    _check(["compare", str(DATA / f"{name}.json"), str(path), "--json", str(tmp_path / "c.json")])
    _check(["compare", str(path), str(path)])
    if (tmp_path / "c.json").exists():
        json.loads((tmp_path / "c.json").read_text())  # what --json writes is JSON


@given(text=st.text(max_size=200))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_compare_of_garbage_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("garbage") / "g.json"
    path.write_text(text)
    _check(["compare", str(path), str(DATA / "sweep-old-path.json")])
