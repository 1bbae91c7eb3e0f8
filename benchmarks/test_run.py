"""Tests of the benchmark harness's parsers, verdicts and process handling (no network load).

Run: cd /work/wt-bench && python -m pytest benchmarks/test_run.py -q
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def fin(stdout: str = "", stderr: str = "", rc: int = 0) -> run.Finished:
    return run.Finished(["tool"], rc, stdout, stderr, 0, 0.0)


def test_iperf3_udp_received_is_packets_minus_lost() -> None:
    doc = {"end": {"sum_sent": {"seconds": 2.0, "packets": 1000, "lost_packets": 0},
                   "sum_received": {"seconds": 2.0, "packets": 1000, "lost_packets": 100}}}
    m = run.parse_iperf3_udp(fin(json.dumps(doc)))
    assert m["sent_pps"] == 500.0
    assert m["received_pps"] == 450.0
    assert m["loss_ratio"] == pytest.approx(0.1)


def test_iperf3_error_output_raises() -> None:
    with pytest.raises(run.MeasureError):
        run.parse_iperf3_udp(fin('{"error": "unable to connect"}'))


def test_netperf_keyval() -> None:
    out = "MIGRATED UDP REQUEST/RESPONSE TEST\nTHROUGHPUT=11952.36\nMEAN_LATENCY=83.55\nP50_LATENCY=78\nP99_LATENCY=145\nMIN_LATENCY=20\n"
    m = run.parse_netperf_rr(fin(out))
    assert (m["trans_per_s"], m["rtt_p50_us"], m["rtt_p99_us"]) == (11952.36, 78.0, 145.0)


def test_sockperf_pp_uses_valid_duration() -> None:
    out = ("sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=7034; ReceivedMessages=7000\n"
           "sockperf: ---> percentile 99.000 =  120.097\nsockperf: ---> percentile 50.000 =   75.605\n")
    m = run.parse_sockperf_pp(fin(stderr=out))
    assert m["trans_per_s"] == pytest.approx(7000 / 0.55)
    assert (m["rtt_p50_us"], m["rtt_p99_us"]) == (75.605, 120.097)


def test_redis_csv_in_microseconds() -> None:
    out = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
           '"GET","1915708.75","0.326","0.136","0.319","0.487","0.599","1.015"\n')
    m = run.parse_redis_csv(fin(out))
    assert m["req_per_s"] == 1915708.75
    assert m["lat_p50_us"] == pytest.approx(319.0)
    assert m["lat_p99_us"] == pytest.approx(599.0)


def test_blast_sink_received_over_sender_interval() -> None:
    tx = fin("sent_packets=1000 elapsed_s=2.0 sent_pps=500.0 eagain=0 enobufs=0\n")
    rx = fin("ready port=1\nreceived_packets=900 active_s=1.5 received_pps=600.0 rcvbuf_bytes=8388608 rxq_ovfl=100\n")
    m = run.parse_blast_sink(tx, rx)
    assert m["received_pps"] == 450.0
    assert m["loss_ratio"] == pytest.approx(0.1)
    with pytest.raises(run.MeasureError):
        run.parse_blast_sink(tx, None)


def test_pktbench_json_takes_last_step_and_aliases(tmp_path: Path) -> None:
    step = {"sent_pps": 10.0, "received_pps": 9.0, "loss_ratio": 0.1, "latency_us": {"p50": 5.0, "p99": 7.0},
            "send_lag_us": {"p99": 2.0}, "sender_bound": False, "received_bps": 2.5e9}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": 1, "steps": [{"sent_pps": 1.0}, step]}))
    m = run.parse_pktbench_json(path)
    assert m["trans_per_s"] == m["req_per_s"] == 9.0
    assert (m["rtt_p50_us"], m["lat_p99_us"], m["send_lag_p99_us"]) == (5.0, 7.0, 2.0)
    assert m["sender_bound"] == 0.0 and m["received_gbps"] == 2.5
    with pytest.raises(run.MeasureError):
        run.parse_pktbench_json(tmp_path / "missing.json")


def outcome(**runs: list[dict[str, float]]) -> run.Outcome:
    o = run.Outcome("B1", "lo")
    o.runs.update(runs)
    return o


def test_verdicts_use_medians_and_bounds() -> None:
    o = outcome(p=[{"x": 100.0}, {"x": 110.0}, {"x": 1.0}], r=[{"x": 100.0}])
    assert run.verdict(run.Target("g", ("p", "x"), ("r", "x"), low=1.0), o, False)[3] == "PASS"
    assert run.verdict(run.Target("g", ("p", "x"), ("r", "x"), low=1.05), o, False)[3] == "MISS"
    assert run.verdict(run.Target("g", ("p", "x"), 100.0, low=0.995, high=1.005), o, False)[3] == "PASS"
    assert run.verdict(run.Target("g", ("q", "x"), ("r", "x"), low=1.0), o, True)[3] == "pending"
    assert run.verdict(run.Target("g", ("p", "x"), ("z", "x"), low=1.0), o, False)[3] == "no ref"


def test_runner_stops_a_server_by_its_group() -> None:
    r = run.Runner({"PATH": "/usr/bin:/bin"})
    proc = r.spawn(["sh", "-c", "sleep 30 & sleep 30"])
    t0 = time.monotonic()
    done = r.stop(proc)
    assert time.monotonic() - t0 < 5
    assert done.rc != 0 and proc.pid not in r.live


def test_runner_wait_times_out() -> None:
    r = run.Runner({"PATH": "/usr/bin:/bin"})
    with pytest.raises(run.MeasureError):
        r.wait(r.spawn(["sleep", "30"]), timeout_s=0.3)
    assert not r.live


def test_missing_pktbench_cli_is_pending() -> None:
    cli = run.find_pktbench("false", {"PATH": "/usr/bin:/bin"})
    assert not cli.available and cli.reason
