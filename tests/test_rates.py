"""The one rate grammar (pktbench.rates), and every option and profile key that reads a rate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pktbench import rates
from pktbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, pps", [
    ("20000", 20000), ("20k", 20000), ("1.5M", 1.5e6), ("1.5G", 1.5e9), ("2e5", 2e5),
    (" 5.5K ", 5500), (".5k", 500), ("100pps", 100), ("1T", 1e12),
])
def test_pps(text: str, pps: float) -> None:
    assert rates.parse_pps(text) == pytest.approx(pps)


@pytest.mark.parametrize("text, bps", [
    ("2x10G", 20e9), ("10G", 10e9), ("25gbit", 25e9), ("100M", 100e6), ("1.5g", 1.5e9),
    ("2 x 25G", 50e9), ("1000000", 1e6), ("400mbit/s", 400e6), ("10Gbps", 10e9),
    ("1gbit", 1e9), ("500mbit", 500e6), ("64000", 64000), ("1.5kbit", 1500), ("1mbps", 1e6),
])
def test_bps(text: str, bps: float) -> None:
    assert rates.parse_bps(text) == pytest.approx(bps)


BAD = ["", "fast", "10Q", "x10G", "0", "-1", "-1G", "nan", "inf", "-inf", "1e400", "1e300",
       "9" * 400, "1e99999999999999", "1.5GG", "max5", "5 k k", "0x10", "1,5"]


@pytest.mark.parametrize("text", BAD)
def test_bad_rates_are_one_line_config_errors(text: str) -> None:
    for parse in (rates.parse_pps, rates.parse_bps, rates.parse_pps_or_max):
        with pytest.raises(ConfigError) as raised:
            parse(text)
        assert "\n" not in str(raised.value)


def test_max_and_lists() -> None:
    assert rates.parse_pps_or_max("max") is None and rates.parse_pps_or_max(" MAX ") is None
    with pytest.raises(ConfigError, match="or 'max'"):
        rates.parse_pps_or_max("fast")
    with pytest.raises(ConfigError):
        rates.parse_pps("max")  # only where the caller allows it
    assert rates.parse_pps_list("1k, 2k,5000") == (1000.0, 2000.0, 5000.0)
    assert rates.parse_pps_list("1.5G") == (1.5e9,)
    assert rates.parse_bps_list("1,2.5,500M", bare_scale="g") == (1e9, 2.5e9, 500e6)
    for parse in (rates.parse_pps_list, rates.parse_bps_list):
        with pytest.raises(ConfigError):
            parse(",")
        with pytest.raises(ConfigError):
            parse("1k,nan")


def test_limits_are_inclusive() -> None:
    assert rates.parse_pps(f"{rates.MAX_PPS:.0f}") == rates.MAX_PPS
    assert rates.parse_bps(f"{rates.MAX_BPS:.0f}") == rates.MAX_BPS
    with pytest.raises(ConfigError, match="too large"):
        rates.parse_pps(f"{rates.MAX_PPS * 1.01:.0f}")


@given(st.floats(min_value=1e-3, max_value=1e9, allow_nan=False),
       st.sampled_from(["", "k", "M", "G"]))
def test_pps_reads_what_it_is_written(value: float, suffix: str) -> None:
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[suffix]
    if value * scale > rates.MAX_PPS:
        return
    assert rates.parse_pps(f"{value!r}{suffix}") == pytest.approx(value * scale)


@given(st.text(max_size=30))
def test_any_text_is_a_rate_or_a_config_error(text: str) -> None:
    for parse in (rates.parse_pps_or_max, rates.parse_bps):
        try:
            value = parse(text)
        except ConfigError:
            continue
        assert value is None or 0 < value < float("inf")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pktbench", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)


@pytest.mark.parametrize("args", [
    ("sweep", "--rates", "1k,nan"), ("sweep", "--rates", "1e400"), ("sweep", "--rates", "-5k"),
    ("sweep", "--rates", "1.5G"), ("run", "--rate", "inf"), ("run", "--rate", "1e999"),
    ("sweep", "--from", "nan"), ("bulk", "--udp", "--rate", "-1G"),
    ("bulk", "--link-speed", "2x1e400G"), ("bulk", "--udp", "--sweep-rates", "1,nan"),
    ("sweep", "--workload", "bulk", "--udp", "--gbps", "1,inf"),
    ("testbed", "up", "--rate-cap", "1e400"),
])
def test_cli_rate_options_fail_in_one_line(args: tuple[str, ...]) -> None:
    done = _cli(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and any(word in lines[-1].lower() for word in ("rate", "speed", "list_pps")), done.stderr


def test_rates_option_takes_the_same_grammar_as_rate() -> None:
    """`--rates 1.5M` reads like `--rate 1.5M`: the sweep runs them on this machine."""
    done = _cli("sweep", "--rates", "1.5k,2.5k", "--duration", "0.2", "--warmup", "0",
                "--workload", "blast", "--json", "/dev/stdout", "--quiet")
    assert done.returncode == 0, done.stderr
    assert '"offered_pps": 1500.0' in done.stdout and '"offered_pps": 2500.0' in done.stdout
