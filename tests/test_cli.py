"""The command line as a user meets it: help, exit codes, one-line errors, outputs."""
from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import PKTBENCH
from click.testing import CliRunner

from pktbench.cli import main
from pktbench.results import SCHEMA_VERSION

import pktbench

# `-m pktbench` must find the package under test, not a source tree in the cwd.
PACKAGE_ROOT = str(Path(pktbench.__file__).resolve().parent.parent)

COMMANDS = ["serve", "run", "sweep", "profiles", "compare", "decode", "testbed"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return int(port)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    code, out, _ = invoke(command, "--help")
    assert code == 0
    assert "Usage:" in out


def test_bad_rate_is_a_usage_error():
    code, _, err = invoke("run", "--rate", "fast")
    assert code == 2
    assert "not a rate" in err


def test_connection_refused_is_one_line_with_the_fix():
    code, _, err = invoke("run", f"127.0.0.1:{free_port()}", "--duration", "0.1")
    assert code == 1
    assert "is `pktbench serve` running" in one_line_error(err)


def test_unresolvable_host_is_one_line():
    code, _, err = invoke("run", "no-such-host.invalid", "--duration", "0.1")
    assert code == 1
    assert "cannot resolve host" in one_line_error(err)


def test_bad_target_port_is_one_line():
    code, _, err = invoke("run", "127.0.0.1:99999")
    assert code == 1
    assert "port must be a number from 1 to 65535" in one_line_error(err)


def test_size_too_small_names_the_minimum():
    code, _, err = invoke("run", "--size", "20", "--duration", "0.1")
    assert code == 1
    assert "at least" in one_line_error(err)


def test_profile_typo_names_file_and_key(tmp_path):
    profile = tmp_path / "typo.toml"
    profile.write_text('workload = "rr"\nduraton_s = 1\n')
    code, _, err = invoke("sweep", "--profile", str(profile))
    assert code == 1
    line = one_line_error(err)
    assert "typo.toml" in line and "duraton_s" in line


def test_output_directory_is_checked_before_any_traffic(tmp_path):
    code, _, err = invoke("sweep", "--json", str(tmp_path / "missing" / "out.json"))
    assert code == 1
    assert "does not exist" in one_line_error(err)


def test_serve_on_a_port_in_use_is_one_line():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        code, _, err = invoke("serve", "--bind", "127.0.0.1", "--port",
                              str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert code == 1
    assert "in use" in one_line_error(err)


def test_profiles_lists_the_built_in_ones():
    code, out, _ = invoke("profiles")
    assert code == 0
    for name in ("default", "redis-ping", "redis-get-small", "redis-set-1k", "cloud-knee",
                 "blast-64"):
        assert name in out


def test_run_embedded_writes_the_step_document(tmp_path):
    path = tmp_path / "run.json"
    code, out, err = invoke("run", "--rate", "2000", "--duration", "0.5", "--json", str(path))
    assert code == 0, err
    assert "responses" in out and "p99" in out
    document = json.loads(path.read_text())
    step = document["steps"][0]
    assert document["schema_version"] == SCHEMA_VERSION
    for key in ("offered_pps", "sent_pps", "received_pps", "sent_packets", "received_packets",
                "loss_ratio", "latency_us", "sender_bound"):
        assert key in step
    for key in ("p50", "p90", "p99", "p999", "max"):
        assert step["latency_us"][key] > 0
    assert step["sent_packets"] == 1000 and step["received_packets"] == 1000
    from pktbench import engine
    env = document["environment"]
    assert (env["engine"], env["engine_build"]) == (engine.ENGINE_NAME, engine.ENGINE_BUILD)
    assert env["engine_wheel"]


def test_engine_python_option_runs_the_pure_engine_and_says_so(tmp_path):
    path = tmp_path / "run.json"
    done = subprocess.run([*PKTBENCH, "--engine", "python", "run", "--rate", "1k",
                           "--duration", "0.3", "--json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(path.read_text())
    assert document["steps"][0]["received_packets"] == 300
    env = document["environment"]
    assert (env["engine"], env["engine_build"]) == ("python", "pure")
    version = subprocess.run([*PKTBENCH, "--engine", "python", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "engine: python, pure" in version.stdout


def test_sweep_embedded_table_json_and_csv_agree(tmp_path):
    json_path, csv_path = tmp_path / "s.json", tmp_path / "s.csv"
    code, out, err = invoke("sweep", "--rates", "1k,2k,4k", "--duration", "0.3",
                            "--warmup", "0.1", "--json", str(json_path), "--csv", str(csv_path))
    assert code == 0, err
    document = json.loads(json_path.read_text())
    rows = list(csv.DictReader(csv_path.open()))
    # a step that fails on a loaded machine earns one confirming retrial
    assert sorted({s["offered_pps"] for s in document["steps"]}) == [1000, 2000, 4000]
    assert len(rows) == len(document["steps"]) >= 3
    for step, row in zip(document["steps"], rows):
        assert float(row["offered_pps"]) == step["offered_pps"]
        assert int(row["sent_packets"]) == step["sent_packets"]
        assert int(row["received_packets"]) == step["received_packets"]
        assert f"{step['offered_pps']:,.0f}" in out
    assert "step 1/3" in err and "step 3/" in err  # live progress on stderr


def test_sweep_json_to_stdout_stays_valid_json():
    # the table and progress move to stderr when stdout carries the JSON
    result = subprocess.run(
        [*PKTBENCH, "sweep", "--rates", "1k", "--duration", "0.2",
         "--warmup", "0", "--json", "-"],
        capture_output=True, text=True, timeout=60, check=False, cwd=PACKAGE_ROOT)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["steps"][0]["offered_pps"] == 1000


def test_sweep_plot_and_compare(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting is an optional extra")
    old, new, plot = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "curve.png"
    for path, extra in ((old, ["--plot", str(plot)]), (new, [])):
        code, _, err = invoke("sweep", "--rates", "1k,3k", "--duration", "0.3", "--warmup", "0",
                              "--quiet", "--json", str(path), *extra)
        assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = invoke("compare", str(old), str(new))
    assert code == 0, err
    assert "old" in out and "new" in out and "1,000" in out


def test_compare_refuses_a_file_that_is_not_a_result(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{\"hello\": 1}")
    code, _, err = invoke("compare", str(bogus), str(bogus))
    assert code == 1
    assert "bogus.json" in one_line_error(err)


def test_library_face_is_lazy_and_callable():
    code = ("import sys, pktbench; assert 'pktbench._engine' not in sys.modules; "
            "assert 'scapy' not in sys.modules; "
            "profile = pktbench.Profile(name='t', rates_pps=(1000.0,), duration_s=0.2, warmup_s=0);"
            "result = pktbench.sweep(None, profile); "
            "assert callable(pktbench.sweep); "
            "print(result.steps[0]['received_packets'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=PACKAGE_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200"


def test_fail_on_exits_3_only_for_what_it_names() -> None:
    from pktbench.cli import EXIT_PATH_FAILED, _exit_on_failure

    failed = {"verdict": "fail", "failed_criteria": ["loss"]}
    _exit_on_failure(failed, ())  # not asked: no exit
    _exit_on_failure(failed, ("latency",))
    _exit_on_failure({"verdict": "pass", "failed_criteria": []}, ("knee", "loss"))
    for names in (("loss",), ("knee",), ("delivery", "loss")):
        with pytest.raises(SystemExit) as stop:
            _exit_on_failure(failed, names)
        assert stop.value.code == EXIT_PATH_FAILED == 3


def test_run_prints_the_thresholds_it_judged_by() -> None:
    done = subprocess.run([*PKTBENCH, "run", "--workload", "blast", "--rate", "2311",
                           "--duration", "0.3", "--max-loss", "0.0137", "--fail-on", "loss"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "judged by: loss > 1.37 %" in done.stdout and "verdict       ok" in done.stdout
