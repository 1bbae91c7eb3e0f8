"""What users of iperf3 and flent type: short flags, JSON on stdout, compare, rate units."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pktbench.cli import main

DATA = Path(__file__).resolve().parent / "data"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.stderr
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- compare -----------------------------------------------------------------------

def test_compare_json_file_is_json_and_the_table_stays_on_stdout(tmp_path):
    code, out, _ = invoke("compare", str(DATA / "sweep-old-path.json"),
                          str(DATA / "sweep-new-path.json"), "--json", str(tmp_path / "c.json"))
    assert code == 0 and "knee" in out
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["kind"] == "sweep" and doc["summary"][0]["metric"] == "knee_pps"


@pytest.mark.parametrize("flag", [["--json", "-"], ["-J"]])
def test_compare_json_on_stdout_is_only_json(flag):
    code, out, err = invoke("compare", str(DATA / "sweep-old-path.json"),
                            str(DATA / "sweep-new-path.json"), *flag)
    assert code == 0
    assert json.loads(out)["a"]["label"] == "sweep-old-path"
    assert "knee" in err  # the table went to stderr


def test_compare_bulk_with_bulk():
    code, out, _ = invoke("compare", str(DATA / "bulk-old-tcp.json"),
                          str(DATA / "bulk-old-tcp.json"), "-J")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "bulk"
    assert [row["streams"] for row in doc["steps"]] == [1, 2]
    assert all(row["verdict"] == "same" and row["ratio"] == 1.0 for row in doc["steps"])
    assert doc["summary"][0]["a"] == pytest.approx(73.69e9, rel=1e-3)
    code, out, _ = invoke("compare", str(DATA / "bulk-old-udp.json"),
                          str(DATA / "bulk-old-udp.json"))
    assert code == 0 and "ceiling (goodput)" in out and "2.000 Gbit/s" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_compare_refuses_sweep_against_bulk_in_one_line():
    code, _, err = invoke("compare", str(DATA / "bulk-old-tcp.json"),
                          str(DATA / "sweep-new-path.json"))
    assert code == 1
    assert "bulk-old-tcp is a bulk test and sweep-new-path a rate sweep" in error_line(err)


# -- one meaning per option ------------------------------------------------------

def test_run_and_sweep_refuse_the_same_rates_with_the_same_words():
    _, _, run_err = invoke("run", "--rate", "1e12")
    _, _, sweep_err = invoke("sweep", "--rates", "1e12")
    _, _, to_err = invoke("sweep", "--to", "1e12")
    for err in (run_err, sweep_err, to_err):
        assert "is above what one step offers: at most 50,000,000 pps" in error_line(err)
    code, _, err = invoke("run", "--rate", "1e99")
    assert code == 2 and "too large" in error_line(err)


def test_bulk_rate_without_a_unit_is_refused_with_a_hint():
    code, _, err = invoke("bulk", "--udp", "--rate", "5000")
    assert code == 2
    line = error_line(err)
    assert "'5000' has no unit" in line and "5000M" in line and "-b 5000" in line


def test_minus_p_joins_the_host_and_must_agree():
    code, _, err = invoke("run", "-p", "9")
    assert code == 2 and "give HOST too" in error_line(err)
    code, _, err = invoke("run", "127.0.0.1:7000", "-p", "9")
    assert code == 2 and "names port 7000 and -p says 9" in error_line(err)
    code, _, err = invoke("run", "127.0.0.1", "-p", "1", "-t", "0.1")
    assert code == 1 and "127.0.0.1:1" in error_line(err)  # refused, at the port -p gave


def test_json_flag_and_file_together_are_refused():
    code, _, err = invoke("sweep", "-J", "--json", "x.json")
    assert code == 2 and "not both" in error_line(err)


# -- real steps on the embedded server ---------------------------------------------

def test_run_takes_a_profile_as_sweep_does(tmp_path):
    out_json = tmp_path / "run.json"
    code, _, err = invoke("run", "--profile", "redis-get-small", "-t", "0.3", "--rate", "500",
                          "--json", str(out_json))
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    step = doc["steps"][0]
    assert step["command"] == "get" and step["size_bytes"] == 96  # the profile's
    assert step["warmup_s"] == 0.5  # the profile's warm-up, not run's 0
    assert step["sent_packets"] == 150  # -t 0.3 at 500 pps: the command line wins


def test_run_short_flags_csv_and_quiet(tmp_path):
    code, out, err = invoke("run", "-t", "0.3", "-l", "128", "--rate", "1000", "-q", "-J",
                            "--csv", str(tmp_path / "run.csv"))
    assert code == 0, err
    doc = json.loads(out)
    (step,) = doc["steps"]
    assert step["size_bytes"] == 128 and step["sent_packets"] == 300
    rows = list(csv.DictReader((tmp_path / "run.csv").open()))
    assert len(rows) == 1 and rows[0]["sent_packets"] == "300"


def test_bulk_short_flags():
    code, out, err = invoke("bulk", "-u", "-b", "200M", "-t", "0.3", "--warmup", "0", "-q",
                            "-l", "1400", "-J")
    assert code == 0, err
    doc = json.loads(out)
    (step,) = doc["steps"]
    assert step["transport"] == "udp" and step["size_bytes"] == 1400
    assert step["offered_bps"] == 200e6
    assert "ceiling" in err and "step 1:" not in err  # -q: the table only, no progress line


# -- interval reports and the JSON stream --------------------------------------------

INTERVAL_KEYS = {"start_s", "end_s", "sent_packets", "received_packets", "sent_pps",
                 "received_pps", "latency_p50_us", "latency_p99_us"}


def test_run_interval_reports_are_live_and_kept(tmp_path):
    code, out, err = invoke("run", "--rate", "2000", "-t", "1.2", "-i", "0.4", "-J")
    assert code == 0, err
    (step,) = json.loads(out)["steps"]
    intervals = step["intervals"]
    assert len(intervals) >= 3
    assert all(set(item) == INTERVAL_KEYS for item in intervals)
    starts = [item["start_s"] for item in intervals]
    assert starts[0] == 0 and starts == sorted(starts)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(intervals, intervals[1:]))
    assert sum(item["sent_packets"] for item in intervals) == step["sent_packets"]
    assert step["sent_packets"] == pytest.approx(2400, rel=0.05)
    full = [item for item in intervals if item["end_s"] - item["start_s"] > 0.3]
    assert all(item["sent_pps"] == pytest.approx(2000, rel=0.25) for item in full)
    assert all(item["latency_p99_us"] > 0 for item in full)
    assert err.count(" s]  sent ") == len(intervals)  # each printed as it ended


def test_blast_intervals_leave_what_the_sender_cannot_see_null():
    code, out, err = invoke("run", "--workload", "blast", "--rate", "2000", "-t", "0.6",
                            "-i", "0.3", "-J", "-q")
    assert code == 0, err
    intervals = json.loads(out)["steps"][0]["intervals"]
    assert intervals and all(item["received_pps"] is None and item["latency_p50_us"] is None
                             for item in intervals)
    assert " s]  sent " not in err  # -q


def test_sweep_intervals_only_when_asked(tmp_path):
    code, _, err = invoke("sweep", "--rates", "1k,2k", "-t", "0.5", "--warmup", "0", "-q",
                          "--json", str(tmp_path / "plain.json"))
    assert code == 0, err
    assert all("intervals" not in s for s in json.loads((tmp_path / "plain.json").read_text())
               ["steps"])
    code, _, err = invoke("sweep", "--rates", "1k,2k", "-t", "0.5", "--warmup", "0",
                          "-i", "0.25", "--json", str(tmp_path / "i.json"))
    assert code == 0, err
    steps = json.loads((tmp_path / "i.json").read_text())["steps"]
    assert [sum(i["sent_packets"] for i in s["intervals"]) for s in steps] == [
        s["sent_packets"] for s in steps]
    assert [s["sent_packets"] for s in steps] == [pytest.approx(500, rel=0.05),
                                                  pytest.approx(1000, rel=0.05)]


def test_json_stream_is_one_object_per_line(tmp_path):
    code, out, err = invoke("sweep", "--rates", "1k,2k", "-t", "0.4", "--warmup", "0",
                            "-i", "0.2", "--json-stream", "--json", str(tmp_path / "s.json"))
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 2 and kinds.count("interval") >= 4
    first_step = kinds.index("step")
    assert set(kinds[1:first_step]) == {"interval"}  # step 0's intervals came before it
    assert {e["step"] for e in events if e["event"] == "interval"} == {0, 1}
    assert events[-1]["result"]["steps"] == json.loads((tmp_path / "s.json").read_text())["steps"]
    assert "no knee" in err  # the table went to stderr


def test_bulk_json_stream():
    code, out, err = invoke("bulk", "-t", "0.3", "--warmup", "0.1", "--json-stream", "-q")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["start", "step", "end"]
    assert events[1]["result"]["aggregate_bps"] > 0
    assert events[2]["result"]["kind"] == "bulk"


def test_json_stream_and_json_to_stdout_conflict():
    code, _, err = invoke("run", "--json-stream", "-J")
    assert code == 2 and "--json-stream writes stdout" in error_line(err)
    code, _, err = invoke("run", "-i", "0.01")
    assert code == 2 and "too short" in error_line(err)


# -- start-up stays light --------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["sweep", "--help"],
                                  ["bulk", "--help"], ["compare", "--help"]])
def test_help_imports_no_heavy_module(argv):
    import subprocess
    import sys

    from cli_support import PACKAGE_ROOT

    code = (f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
            "from pktbench.cli import main\n"
            "try:\n"
            f"    main({argv!r}, prog_name='pktbench')\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'scapy', 'matplotlib') or m == 'pktbench._engine')\n"
            "print('IMPORTED', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert "Usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "IMPORTED []", done.stdout[-500:]


# -- bidirectional bulk ------------------------------------------------------------------

def test_bulk_bidir_reports_each_direction():
    code, out, err = invoke("bulk", "--bidir", "-P", "2", "-t", "0.4", "--warmup", "0.1",
                            "-J")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config"]["direction"] == "bidir"
    forward, backward = doc["steps"]
    assert (forward["direction"], backward["direction"]) == ("forward", "reverse")
    assert forward["bidir"] is backward["bidir"] is True
    assert forward["index"] == backward["index"] == 0
    assert [s["stream_id"] for s in forward["streams"]] == [0, 1]
    assert [s["stream_id"] for s in backward["streams"]] == [2, 3]
    for step in (forward, backward):
        assert step["aggregate_bps"] > 0 and all(s["bytes"] > 0 for s in step["streams"])
    # the client wrote the forward streams and read the reverse ones, the server the opposite
    assert forward["client"]["role"] == "sender" and forward["server"]["role"] == "receiver"
    assert backward["client"]["role"] == "receiver" and backward["server"]["role"] == "sender"
    assert "1 fwd" in err and "1 rev" in err  # the table (on stderr with -J) names them


@pytest.mark.parametrize("extra, word", [(["--udp"], "--udp"), (["-R"], "--reverse"),
                                         (["--workers", "2"], "--workers")])
def test_bulk_bidir_refuses_what_it_cannot_do(extra, word):
    code, _, err = invoke("bulk", "--bidir", *extra)
    assert code == 2 and word in error_line(err)


def test_bulk_intervals_add_up_to_the_step_in_each_direction():
    code, out, err = invoke("bulk", "--bidir", "-t", "0.8", "-i", "0.2", "--warmup", "0.1",
                            "-J")
    assert code == 0, err
    for step in json.loads(out)["steps"]:
        intervals = step["intervals"]
        assert len(intervals) >= 2, intervals
        assert {i["direction"] for i in intervals} == {step["direction"]}
        assert set(intervals[0]) == {"start_s", "end_s", "direction", "bytes", "payload_bps"}
        # this end's pump, interval by interval, is what its window counted; the
        # reverse reader's last sample can be taken a chunk before its window closes
        assert sum(i["bytes"] for i in intervals) == pytest.approx(step["client"]["bytes"],
                                                                   rel=0.01), intervals
    assert err.count(" s]  forward  ") >= 2 and err.count(" s]  reverse  ") >= 2, err
    code, _, err = invoke("bulk", "-u", "-i", "1")
    assert code == 2 and "-i/--interval" in error_line(err)


def test_validate_minus_j_is_json_on_stdout():
    code, out, err = invoke("validate", "--case", "valid ping", "-J")
    assert code == 0, err
    doc = json.loads(out)
    assert [case["name"] for case in doc["cases"]][0] == "valid ping"
    assert "valid ping" in err  # the table went to stderr
