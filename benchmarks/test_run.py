"""Tests of the benchmark harness's parsers, verdicts and process handling (no network load).

Run: cd /work/wt-bench && python -m pytest benchmarks/test_run.py -q
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
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


# ----------------------------------------------------------------------------- B7: GSO on veth


def test_iperf3_version_parsing() -> None:
    assert run.iperf3_version("iperf 3.21+ (cJSON 1.7.15)\nLinux vm 6.18") == (3, 21)
    assert run.iperf3_version("iperf 3.12 (cJSON 1.7.15)") == (3, 12)
    assert run.iperf3_version("command not found") is None


def fake_iperf3(path: Path, version: str, gsro: bool) -> Path:
    help_line = "  --gsro   enable UDP GSO/GRO" if gsro else "  -u, --udp   use UDP"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n"
                    f'case "$1" in --version) echo "iperf {version} (cJSON 1.7.15)";; '
                    f'*) echo "Usage: iperf3 [-s|-c host] [options]"; echo "{help_line}";; esac\n')
    path.chmod(0o755)
    return path


def test_find_iperf3_gsro_prefers_path_and_skips_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    fake_iperf3(bindir / "iperf3", "3.12", gsro=False)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    found, why = run.find_iperf3_gsro(None, tools=tmp_path / "no-tools", prefix=tmp_path / "cache")
    assert found is None and "skipped" in why  # Debian's 3.12 has no --gsro: not taken
    fake_iperf3(bindir / "iperf3", "3.21+", gsro=True)
    found, why = run.find_iperf3_gsro(None, tools=tmp_path / "no-tools", prefix=tmp_path / "cache")
    assert found == str(bindir / "iperf3") and "3.21 on PATH" in why


def test_find_iperf3_gsro_builds_from_tools_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # whatever iperf3 the machine has must not be picked
    if shutil.which("iperf3") and run.iperf3_gsro_ok(str(shutil.which("iperf3")))[0]:
        pytest.skip("this machine's /usr/bin iperf3 already has --gsro")
    tools = tmp_path / "tools"
    tools.mkdir()
    # A stand-in for build-iperf3.sh: makes PREFIX/bin/iperf3 as the real script does.
    (tools / "build-iperf3.sh").write_text(
        'mkdir -p "$1/bin"\n'
        'printf \'#!/bin/sh\\ncase "$1" in --version) echo "iperf 3.21+";; *) echo "  --gsro";; esac\\n\' > "$1/bin/iperf3"\n'
        'chmod +x "$1/bin/iperf3"\necho "$1/bin/iperf3"\n')
    prefix = tmp_path / "cache" / "iperf3-3.21"
    found, why = run.find_iperf3_gsro(None, tools=tools, prefix=prefix)
    assert found == str(prefix / "bin" / "iperf3") and "built from" in why
    (tools / "build-iperf3.sh").unlink()  # the second time the cached build is reused
    found, why = run.find_iperf3_gsro(None, tools=tools, prefix=prefix)
    assert found == str(prefix / "bin" / "iperf3") and "built earlier" in why
    with pytest.raises(SystemExit):
        run.find_iperf3_gsro(str(fake_iperf3(tmp_path / "old" / "iperf3", "3.12", gsro=False)))


def test_nft_counter_parse_and_ingress_rules() -> None:
    out = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "netdev", '
           '"name": "udp64", "table": "pktbench_bench", "handle": 2, "packets": 753472, "bytes": 54250000}}]}')
    assert run.parse_nft_counter(out) == 753472
    with pytest.raises(run.MeasureError):
        run.parse_nft_counter('{"nftables": [{"metainfo": {}}]}')
    with pytest.raises(run.MeasureError):
        run.parse_nft_counter("Error: No such file or directory")
    rules = run.ingress_rules("vb")
    # Only 64-byte payloads (UDP length 72) on the receiver's device: not the control connection.
    assert 'hook ingress device "vb"' in rules and "udp length 72" in rules
    assert f'counter name "{run.INGRESS_COUNTER}"' in rules


def test_ingress_rate_is_the_count_over_the_senders_interval() -> None:
    m = run.with_ingress({"sent_pps": 1000.0, "sent_packets": 2000.0}, 1990)
    assert m["ingress_packets"] == 1990.0
    assert m["ingress_ratio"] == pytest.approx(0.995)
    assert m["ingress_pps"] == pytest.approx(995.0)
    assert "ingress_pps" not in run.with_ingress({"sent_pps": 1.0}, 5)  # no count to scale by


def test_gso_probe_output_gives_segments_per_send() -> None:
    tx = fin("sent_packets=6400 sends=100 elapsed_s=2.0 sent_pps=3200.0 segments=64 eagain=0 enobufs=0\n")
    rx = fin("ready port=1\nreceived_packets=6400 active_s=2.0 received_pps=3200.0 rcvbuf_bytes=1 rxq_ovfl=0\n")
    m = run.parse_blast_sink(tx, rx)
    assert m["segments_per_send"] == 64.0 and m["sent_packets"] == m["received_packets"] == 6400.0
    assert m["loss_ratio"] == 0.0


def test_pktbench_json_gso_fields(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    # The step's "engine" record says which datagram path ran (step.py's EngineFigures).
    path.write_text(json.dumps({"steps": [{"sent_pps": 5.0, "sent_packets": 10, "received_packets": 10,
                                           "engine": {"udp_gso": True, "udp_gro": False, "gso_segments": 64,
                                                      "gso_segments_mean": 62.5, "burst_packets": 64}}]}))
    m = run.parse_pktbench_json(path)
    assert (m["udp_gso"], m["udp_gro"], m["gso_segments"], m["sent_packets"]) == (1.0, 0.0, 64.0, 10.0)
    assert (m["gso_segments_mean"], m["burst_packets"]) == (62.5, 64.0)


def b7_harness(tmp_path: Path, iperf: "str | None" = "/opt/iperf3", gso: bool = True) -> run.Harness:
    s = run.Settings(runs=1, duration_s=2.0, locations=("veth",), rows=("B7",), b6_short_s=1, b6_long_s=2,
                     b6_sessions=1, b6_session_s=1, wait_quiet_s=0, invocation="test")
    cli = run.PktbenchCli(("pktbench",), True, "", True, False, "test", run_gso=gso, run_workers=True)
    h = run.Harness(s, {"current": cli}, run.Runner({}), tmp_path)
    h.iperf3_gsro, h.iperf3_gsro_note = iperf, "given" if iperf else "none here"
    return h


VETH = run.Location("veth", "198.18.0.2", "nsa", "nsb", udp_segmentation_off=True, ingress_counter=True)


def b7_argv(h: run.Harness, loc: run.Location = VETH) -> dict[str, list[str]]:
    row = run.row_b7(h, loc)
    out = {}
    for m in row.measurements:
        assert m.plan is not None
        plan = m.plan(h, loc, 5201)
        assert plan.ingress, m.key  # every B7 measurement reads the ingress counter
        out[m.key] = [str(a) for a in plan.client]
    return out


def test_b7_builds_each_tools_command_line(tmp_path: Path) -> None:
    argv = b7_argv(b7_harness(tmp_path))
    ip = argv["iperf3_gsro"]
    assert ip[0] == "/opt/iperf3" and "--gsro" in ip and ip[ip.index("-l") + 1] == "64"
    assert ip[ip.index("-b") + 1] == "0" and "-P" not in ip
    assert argv["iperf3_gsro_p2"][argv["iperf3_gsro_p2"].index("-P") + 1] == "2"
    g = argv["c_gso"]
    assert g[0].endswith("probe/gsoblast") and g[g.index("-g") + 1] == "64" and g[g.index("-m") + 1] == "1"
    assert argv["c_gso_mmsg"][argv["c_gso_mmsg"].index("-m") + 1] == str(run.GSO_BUFFERS_PER_CALL)
    assert argv["c_gso128"][argv["c_gso128"].index("-g") + 1] == "128"
    assert argv["c_sendmmsg"][0].endswith("probe/blast")
    pk = argv["pktbench_gso"]
    assert pk[pk.index("--rate") + 1] == "max" and pk[pk.index("--gso") + 1] == "on" and "--workers" not in pk
    assert argv["pktbench_gso_w2"][argv["pktbench_gso_w2"].index("--workers") + 1] == "2"
    # A build without --gso runs its default path (the row still runs), and says so.
    h = b7_harness(tmp_path, gso=False)
    assert "--gso" not in b7_argv(h)["pktbench_gso"]
    assert "without --gso" in next(m.label for m in run.row_b7(h, VETH).measurements if m.key == "pktbench_gso")
    h.builds["baseline"] = h.builds["current"]
    h.builds["current"] = dataclasses.replace(h.builds["current"], run_gso=True)
    assert "where the build has it" in next(m.label for m in run.row_b7(h, VETH).measurements
                                            if m.key == "pktbench_gso")


def test_b7_skips_with_a_note(tmp_path: Path) -> None:
    row = run.row_b7(b7_harness(tmp_path, iperf=None), VETH)
    skips = {m.key: m.skip for m in row.measurements}
    assert skips["iperf3_gsro"] == skips["iperf3_gsro_p2"] == "none here"
    assert not skips["pktbench_gso"] and not skips["c_gso"]
    # Without segmentation off the path would carry GSO buffers as single packets: nothing runs.
    bad = run.Location("veth", "198.18.0.2", "a", "b", gso_note="ethtool missing")
    assert all(m.skip == "ethtool missing" for m in run.row_b7(b7_harness(tmp_path), bad).measurements)


def test_skipped_reference_gives_a_skipped_verdict(tmp_path: Path) -> None:
    h = b7_harness(tmp_path, iperf=None)
    row = run.row_b7(h, VETH)
    o = run.Outcome("B7", "veth")
    o.skipped.update({m.key: m.skip for m in row.measurements if m.skip})
    o.runs["pktbench_gso"] = [{"sent_pps": 5.0, "loss_ratio": 0.0}]
    h.outcomes.append((row, o))
    meas, targ = run.tables(h)
    verdicts = {t[2]: t[7] for t in targ[1:]}
    assert verdicts["sent pps >= 1.1x iperf3 --gsro"] == "skipped"
    assert verdicts[f"receiver loss <= {run.RX_LOSS_MAX:.1%} (ratio = loss / {run.RX_LOSS_MAX:.1%})"] == "PASS"
    assert any(r[2].startswith("iperf3 3.21") and r[4] == "skipped" for r in meas[1:])


@pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler (cc) to build the probes")
def test_gso_probe_and_gro_sink_count_every_datagram(tmp_path: Path) -> None:
    """Real datagrams on 127.0.0.1: a count-bounded GSO send (a short last buffer included)
    arrives whole at the sink, with UDP_GRO and without."""
    for name in ("gsoblast", "sink"):
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(tmp_path / name), str(run.PROBES / f"{name}.c")],
                       check=True, timeout=60)
    for gro in ([], ["-G"]):
        port = run.free_port()
        sink = subprocess.Popen([str(tmp_path / "sink"), "-b", "127.0.0.1", "-p", str(port), "-t", "10", "-i", "0.3",
                                 "-R", "4194304", *gro], stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None and sink.stdout.readline().startswith("ready")
            tx = subprocess.run([str(tmp_path / "gsoblast"), "-d", "127.0.0.1", "-p", str(port), "-g", "64", "-m", "4",
                                 "-n", "1000", "-t", "5"], capture_output=True, text=True, timeout=20)
            rx_out, _ = sink.communicate(timeout=15)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        m = run.parse_blast_sink(fin(tx.stdout), fin(rx_out))
        assert m["sent_packets"] == 1000.0
        assert m["segments_per_send"] == pytest.approx(1000 / 16)  # 15 full buffers and one of 40
        assert m["received_packets"] + m["rxq_ovfl"] == 1000.0 and m["rxq_ovfl"] == 0
    bad = subprocess.run([str(tmp_path / "gsoblast"), "-g", "200"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "segments 1..128" in bad.stderr
