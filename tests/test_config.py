"""Profiles: every shipped profile loads, bad ones fail with one line naming file and key."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from pktbench import config
from pktbench.config import (
    Criteria,
    Profile,
    apply_overrides,
    list_profiles,
    load_profile,
    make_schedule,
    profile_from_toml,
)
from pktbench.errors import ConfigError

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
SHIPPED = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))

GOOD = """
description = "test"
[rates]
from_pps = 1000
to_pps = 8000
steps = 4
"""


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------
# shipped profiles


def test_the_expected_profiles_ship() -> None:
    assert {"default", "redis-ping", "redis-get-small", "redis-set-1k", "cloud-knee",
            "blast-64"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_by_name_and_by_path(name: str) -> None:
    by_name = load_profile(name)
    by_path = load_profile(PROFILES_DIR / f"{name}.toml")
    assert by_name == by_path
    assert by_name.name == name
    assert by_name.description
    assert list(by_name.rates_pps) == sorted(set(by_name.rates_pps))
    # Every shipped load is bounded: no profile runs for more than a few minutes.
    assert by_name.estimated_duration_s() < 180


def test_list_profiles_names_every_file_with_its_description() -> None:
    listed = dict(list_profiles())
    assert sorted(listed) == SHIPPED
    assert all(listed.values())


def test_default_profile_is_a_quick_rr_ping_sweep() -> None:
    profile = load_profile("default")
    assert (profile.workload, profile.command, profile.size_bytes) == ("rr", "ping", 64)
    assert profile.rates_pps[0] == 1000 and profile.rates_pps[-1] == 200_000
    assert 8 <= len(profile.rates_pps) <= 12
    assert profile.estimated_duration_s() <= 20


def test_cloud_knee_steps_finely_through_a_few_thousand_pps() -> None:
    profile = load_profile("cloud-knee")
    assert profile.rate_scale == "log"
    assert profile.rates_pps[0] == 1000 and profile.rates_pps[-1] == 50_000
    between = [r for r in profile.rates_pps if 3000 <= r <= 8000]
    assert len(between) >= 3
    assert set(profile.search) == {"ndr", "pdr"}


def test_blast_profile_has_no_command() -> None:
    profile = load_profile("blast-64")
    assert (profile.workload, profile.command) == ("blast", "none")


def test_profiles_dir_falls_back_to_the_source_tree() -> None:
    directory = config._profiles_dir()
    assert (Path(str(directory)) / "default.toml").is_file() or any(
        entry.name == "default.toml" for entry in directory.iterdir())


def test_profile_is_frozen() -> None:
    profile = load_profile("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.duration_s = 5  # type: ignore[misc]


def test_to_dict_carries_the_resolved_schedule_and_criteria() -> None:
    profile = load_profile("cloud-knee")
    data = profile.to_dict()
    assert data["rates_pps"] == list(profile.rates_pps)
    assert data["criteria"] == profile.criteria.as_dict()
    assert data["profile"] == "cloud-knee"


# --------------------------------------------------------------------------
# bad profiles

BAD = [
    ("unknown-key", "rate = 5\n" + GOOD, ["key 'rate' is not allowed here",
                                          "did you mean 'rates'?", "allowed:"]),
    ("unknown-nested-key", GOOD + "[criteria]\nmax_loss = 0.1\n",
     ["key 'criteria.max_loss'", "did you mean 'criteria.max_loss_ratio'?"]),
    ("key-after-table", GOOD + "duration_s = 2\n",
     ["key 'rates.duration_s'", "move 'duration_s' above the [rates] header"]),
    ("negative", "duration_s = -5\n" + GOOD, ["duration_s must be > 0 (got -5)"]),
    ("wrong-type", "duration_s = \"long\"\n" + GOOD, ["duration_s must be a number (got 'long')"]),
    ("bool-as-number", "repeat = true\n" + GOOD, ["repeat must be an integer (got True)"]),
    ("float-as-integer", "repeat = 1.5\n" + GOOD, ["repeat must be an integer (got 1.5)"]),
    ("bad-choice", "workload = \"tcp\"\n" + GOOD, ["workload must be one of 'rr', 'blast'",
                                                    "(got 'tcp')"]),
    ("blast-with-command", "workload = \"blast\"\ncommand = \"ping\"\n" + GOOD,
     ["command must be 'none' for workload 'blast'"]),
    ("rr-without-command", "command = \"none\"\n" + GOOD, ["for workload 'rr'"]),
    ("size-too-small", "command = \"set\"\nsize_bytes = 40\n" + GOOD,
     ["size_bytes must be >= 71 for command 'set'", "(got 40)"]),
    ("size-too-big", "size_bytes = 70000\n" + GOOD, ["size_bytes must be from 1 to 65507"]),
    ("missing-rates", "description = \"x\"\n", ["key 'rates' is missing"]),
    ("rates-not-a-table", "rates = [1, 2]\n", ["rates must be a table like [rates]"]),
    ("missing-steps", "[rates]\nfrom_pps = 1\nto_pps = 5\n", ["key 'rates.steps' is missing"]),
    ("list-and-range", "[rates]\nlist_pps = [1, 2]\nsteps = 3\n",
     ["rates.list_pps cannot be combined with rates.steps"]),
    ("list-not-increasing", "[rates]\nlist_pps = [1000, 500]\n",
     ["rates.list_pps must be strictly increasing"]),
    ("list-negative", "[rates]\nlist_pps = [1000, -5]\n", ["rates.list_pps[1] must be a number > 0"]),
    ("range-backwards", "[rates]\nfrom_pps = 5000\nto_pps = 1000\nsteps = 3\n",
     ["to_pps must be >= from_pps"]),
    ("bad-scale", "[rates]\nfrom_pps = 1\nto_pps = 5\nsteps = 3\nscale = \"exp\"\n",
     ["rates.scale must be one of 'log', 'linear'"]),
    ("rate-typo-extra-zero", "[rates]\nfrom_pps = 1000\nto_pps = 500000000\nsteps = 3\n",
     ["rates.to_pps must be <= 50,000,000"]),
    ("timeout-after-drain", "timeout_s = 1.0\ndrain_s = 0.2\n" + GOOD,
     ["drain_s must be >= timeout_s"]),
    ("bad-search", GOOD + "[search]\nmethods = [\"ndr\", \"mlr\"]\n",
     ["search.methods may contain 'ndr', 'pdr' (got 'mlr')"]),
    ("loss-over-one", GOOD + "[criteria]\nmax_loss_ratio = 2\n",
     ["criteria.max_loss_ratio must be <= 1 (got 2)"]),
    ("busy-poll-string", "busy_poll = \"yes\"\n" + GOOD, ["busy_poll must be true or false"]),
    ("connections-zero", "connections = 0\n" + GOOD, ["connections must be from 1 to 128 (got 0)"]),
    ("pipeline-too-deep", "pipeline = 5000\n" + GOOD,
     ["pipeline must be from 1 to 1024 (got 5000)"]),
    ("outstanding-float", "outstanding = 1.5\n" + GOOD, ["outstanding must be an integer (got 1.5)"]),
    ("outstanding-on-blast", "workload = \"blast\"\noutstanding = 4\n" + GOOD,
     ["outstanding is for workload 'rr' only", "remove outstanding"]),
    ("pipeline-typo", "pipelines = 4\n" + GOOD, ["key 'pipelines'", "did you mean 'pipeline'?"]),
    ("outstanding-after-table", GOOD + "outstanding = 1\n",
     ["key 'rates.outstanding'", "move 'outstanding' above the [rates] header"]),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_profile_gives_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                         expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "description = \"x\"\n\nduration_s = \n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: TOML syntax error")
    assert "\n" not in message


def test_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(b"description = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_profile(path)


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(ConfigError, match="profile file nope/x.toml not found"):
        load_profile("nope/x.toml")
    with pytest.raises(ConfigError, match="unknown profile 'defualt' \\(did you mean 'default'"):
        load_profile("defualt")


def test_a_minimal_profile_takes_the_documented_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD, "mine.toml"))
    assert profile.name == "mine"
    assert profile.criteria == Criteria()
    assert (profile.workload, profile.command, profile.repeat) == ("rr", "ping", 1)
    assert profile.rates_pps == (1000.0, 2000.0, 4000.0, 8000.0)


def test_blast_defaults_to_command_none() -> None:
    profile = profile_from_toml("workload = \"blast\"\n" + GOOD, "inline.toml")
    assert profile.command == "none"


# --------------------------------------------------------------------------
# schedules


def test_log_schedule_has_a_constant_ratio_and_exact_ends() -> None:
    rates = make_schedule(1000, 50_000, 16, "log")
    assert rates[0] == 1000 and rates[-1] == 50_000 and len(rates) == 16
    ratio = (50_000 / 1000) ** (1 / 15)
    for low, high in zip(rates, rates[1:]):
        assert math.isclose(high / low, ratio, rel_tol=0.002)


def test_linear_schedule_is_evenly_spaced() -> None:
    assert make_schedule(1000, 5000, 5, "linear") == (1000, 2000, 3000, 4000, 5000)


def test_single_step_schedule() -> None:
    assert make_schedule(5500, 5500, 1) == (5500.0,)


@pytest.mark.parametrize("args,fragment", [
    ((0, 100, 3, "log"), "from_pps must be a number > 0"),
    ((100, 50, 3, "log"), "to_pps must be >= from_pps"),
    ((100, 200, 1, "log"), "steps must be >= 2"),
    ((100, 200, 0, "log"), "steps must be an integer from 1"),
    ((100, 200, 3, "cubic"), "scale must be one of"),
    ((1000, 1005, 20, "linear"), "repeat the rate"),
])
def test_bad_schedules(args: tuple, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_schedule(*args)


def test_profile_rates_may_be_written_in_the_rate_grammar() -> None:
    profile = profile_from_toml('name = "t"\n[rates]\nfrom_pps = "1.5k"\nto_pps = "2M"\nsteps = 3\n',
                                "inline.toml")
    assert profile.rates_pps[0] == 1500 and profile.rates_pps[-1] == 2_000_000
    listed = profile_from_toml('name = "t"\n[rates]\nlist_pps = ["1k", 2500, "5k"]\n', "inline.toml")
    assert listed.rates_pps == (1000.0, 2500.0, 5000.0)
    for bad in ('"fast"', '"1e400"', '"-5k"', "nan", "inf", "-1"):
        with pytest.raises(ConfigError) as raised:
            profile_from_toml(f'name = "t"\n[rates]\nlist_pps = [{bad}]\n', "inline.toml")
        assert "\n" not in str(raised.value) and "list_pps[0]" in str(raised.value)


# --------------------------------------------------------------------------
# overrides


def test_overrides_ignore_none_and_replace_what_is_given() -> None:
    base = load_profile("default")
    assert apply_overrides(base, duration_s=None, repeat=None) == base
    changed = apply_overrides(base, duration_s=2.5, repeat=3, max_loss_ratio=0.01,
                              search="ndr,pdr")
    assert (changed.duration_s, changed.repeat) == (2.5, 3)
    assert changed.criteria.max_loss_ratio == 0.01
    assert changed.search == ("ndr", "pdr")
    assert changed.rates_pps == base.rates_pps and changed.rate_scale == base.rate_scale


def test_schedule_overrides_keep_the_rest_of_the_schedule() -> None:
    base = load_profile("default")
    changed = apply_overrides(base, to_pps=10_000)
    assert changed.rates_pps[0] == base.rates_pps[0] and changed.rates_pps[-1] == 10_000
    assert len(changed.rates_pps) == len(base.rates_pps)
    assert apply_overrides(base, rates_pps="1k,5.5k").rates_pps == (1000.0, 5500.0)
    assert apply_overrides(base, rates_pps="1k,5.5k").rate_scale == "list"


def test_switching_to_blast_takes_blast_default_command() -> None:
    assert apply_overrides(load_profile("default"), workload="blast").command == "none"


def test_bad_overrides_name_the_command_line() -> None:
    base = load_profile("default")
    with pytest.raises(ConfigError, match=r"^command line: duration_s must be > 0 \(got -1\)$"):
        apply_overrides(base, duration_s=-1)
    with pytest.raises(ConfigError, match="key 'rate' is not allowed here"):
        apply_overrides(base, rate=5)
    with pytest.raises(ConfigError, match="not both"):
        apply_overrides(base, rates_pps=[1000], steps=4)


def test_estimated_duration() -> None:
    profile = Profile(name="p", rates_pps=(1.0, 2.0), repeat=3, duration_s=1, warmup_s=0.5,
                      drain_s=0.5)
    assert profile.step_count == 6
    assert profile.estimated_duration_s() == 12


# --------------------------------------------------------------------------
# TCP and closed-loop options


def test_profile_sets_connections_pipeline_and_outstanding(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "connections = 4\npipeline = 8\noutstanding = 2\n"
                                 + GOOD))
    assert (profile.connections, profile.pipeline, profile.outstanding) == (4, 8, 2)
    data = profile.to_dict()
    assert (data["connections"], data["pipeline"], data["outstanding"]) == (4, 8, 2)
    unset = load_profile(write(tmp_path, GOOD, "plain.toml"))
    assert (unset.connections, unset.pipeline, unset.outstanding) == (None, None, None)
    # unset options stay out of results, which then read as before
    assert not {"connections", "pipeline", "outstanding"} & set(unset.to_dict())


def test_overrides_set_and_check_the_transport_options(tmp_path: Path) -> None:
    base = load_profile(write(tmp_path, "outstanding = 2\npipeline = 8\n" + GOOD))
    changed = apply_overrides(base, outstanding=1, connections=3)
    assert (changed.connections, changed.pipeline, changed.outstanding) == (3, 8, 1)
    assert apply_overrides(base, duration_s=2).outstanding == 2  # kept when not named
    with pytest.raises(ConfigError, match=r"^command line: outstanding must be from 1 to 65536 "
                                          r"\(got 0\)$"):
        apply_overrides(base, outstanding=0)
    # a one-way workload drops the rr-only options it was not given...
    blast = apply_overrides(base, workload="blast")
    assert (blast.pipeline, blast.outstanding) == (None, None)
    # ...and refuses ones it is given
    with pytest.raises(ConfigError, match="^command line: outstanding is for workload 'rr'"):
        apply_overrides(base, workload="blast", outstanding=4)


def test_step_params_carry_the_profile_options(tmp_path: Path) -> None:
    from pktbench.sweeper import step_params_for, tcp_options_for
    from pktbench.workloads.resp import TcpOptions

    profile = load_profile(write(tmp_path, "connections = 3\npipeline = 4\noutstanding = 2\n"
                                 + GOOD))
    udp = step_params_for(profile, 1000.0)
    assert (udp.workload, udp.outstanding, udp.connections, udp.pipeline) == ("rr", 2, 1, 1)
    tcp = step_params_for(profile, 1000.0, tcp=tcp_options_for(profile))
    assert (tcp.workload, tcp.connections, tcp.pipeline, tcp.outstanding) == ("rr-tcp", 3, 4,
                                                                              None)
    # explicit options win over the profile's
    explicit = step_params_for(profile, 1000.0, tcp=TcpOptions(5, 1))
    assert (explicit.connections, explicit.pipeline) == (5, 1)
    plain = step_params_for(load_profile("default"), 1000.0)
    assert plain.outstanding is None
    assert tcp_options_for(load_profile("default")) == TcpOptions(1, 1)


def test_cli_sweep_outstanding_reaches_the_steps(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from pktbench.cli import main

    out = tmp_path / "sweep.json"
    result = CliRunner().invoke(main, [
        "sweep", "--rates", "1M", "--duration", "0.2", "--warmup", "0", "--outstanding", "1",
        "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["config"]["outstanding"] == 1
    step = document["steps"][0]
    # one request in flight at a time cannot reach 1M pps over loopback's round trips
    assert step["sender_bound"] and step["sent_pps"] < 500_000
    refused = CliRunner().invoke(main, ["sweep", "--workload", "rr-tcp", "--outstanding", "1"])
    assert refused.exit_code == 2 and "--outstanding is for rr over UDP" in refused.output
