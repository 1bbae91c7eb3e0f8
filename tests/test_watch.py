"""The watch: answers to outages (made-up answers), its files and endpoint, and a
short loopback watch over chained steps through a real server."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_support import PKTBENCH

from pktbench import engine, wire
from pktbench.address import Target
from pktbench.session import Server, ServerConfig
from pktbench.watch.jsonl import JsonlWriter, read_records
from pktbench.watch.metrics import MetricsServer, MetricsState
from pktbench.watch.probe import Watch, WatchConfig
from pktbench.watch.report import summarize
from pktbench.watch.tracker import Tracker

RATE = 2000
BASE_NS = 1_700_000_000 * 10**9


def _answers(n: int, lost: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    due = BASE_NS + np.arange(n, dtype=np.int64) * (10**9 // RATE)
    lat = 100_000.0 + (np.arange(n) % 7) * 1000.0
    for lo, hi in lost:
        lat[lo:hi] = np.nan
    return due, lat


def _track(n: int, lost: list[tuple[int, int]], piece: int = 317,
           outage_min_s: float = 0.05) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tracker = Tracker(out.append, interval_s=1.0, outage_min_s=outage_min_s)
    due, lat = _answers(n, lost)
    for lo in range(0, n, piece):  # pieces that straddle intervals and runs
        tracker.feed(lo, due[lo:lo + piece], lat[lo:lo + piece])
    tracker.advance(float(due[-1]) / 1e9 + 1.0)
    tracker.flush()
    return out


def test_a_loss_run_is_one_outage_from_first_lost_to_first_answered() -> None:
    records = _track(20000, [(4001, 10003)])
    outages = [r for r in records if r["type"] == "outage"]
    assert len(outages) == 1
    o = outages[0]
    assert o["start_s"] == pytest.approx((BASE_NS + 4001 * 500_000) / 1e9)
    assert o["end_s"] == pytest.approx((BASE_NS + 10003 * 500_000) / 1e9)
    assert o["duration_s"] == pytest.approx(3.001)
    assert o["lost_packets"] == 6002
    assert o["first_lost_seq"] == 4001 and o["first_answered_seq"] == 10003
    assert [r["type"] for r in records].count("outage_start") == 1


def test_an_outage_is_timed_by_when_its_requests_left() -> None:
    out: list[dict[str, Any]] = []
    tracker = Tracker(out.append, interval_s=1.0, outage_min_s=0.05)
    due, lat = _answers(6000, [(2000, 4000)])
    sent = due.copy()
    sent[1990:2010] += 7_000_000  # a stalled sender: these left 7 ms late
    tracker.feed(0, due, lat, sent)
    outage = next(r for r in out if r["type"] == "outage")
    assert outage["start_s"] == pytest.approx((BASE_NS + 2000 * 500_000 + 7_000_000) / 1e9)
    assert outage["start_scheduled_s"] == pytest.approx((BASE_NS + 2000 * 500_000) / 1e9)
    assert outage["end_s"] == pytest.approx((BASE_NS + 4000 * 500_000) / 1e9)


def test_short_runs_are_loss_episodes_not_outages_and_intervals_add_up() -> None:
    records = _track(10000, [(100, 103), (2500, 2501), (2600, 2650)])
    intervals = [r for r in records if r["type"] == "interval"]
    assert not [r for r in records if r["type"] == "outage"]
    assert len(intervals) == 5
    assert [r["sent_packets"] for r in intervals] == [2000] * 5
    assert sum(r["lost_packets"] for r in intervals) == 3 + 1 + 50
    assert intervals[0]["loss_episodes"] == 1 and intervals[0]["max_loss_run"] == 3
    assert intervals[1]["loss_episodes"] == 2 and intervals[1]["max_loss_run"] == 50
    for before, after in zip(intervals, intervals[1:]):
        assert after["start_s"] == before["end_s"] and after["seq"][0] == before["seq"][1]
    lat = intervals[2]["latency_us"]
    assert lat["min"] == 100.0 and lat["max"] == 106.0
    assert intervals[2]["jitter_us"] > 0
    hours = [r for r in records if r["type"] == "hour"]
    assert len(hours) == 1 and hours[0]["sent_packets"] == 10000


def test_an_idle_tracker_still_closes_intervals() -> None:
    out: list[dict[str, Any]] = []
    tracker = Tracker(out.append, interval_s=1.0, outage_min_s=0.05)
    tracker.state = "disconnected"
    tracker.advance(100.2)
    tracker.advance(103.5)
    assert [(r["start_s"], r["sent_packets"], r["state"]) for r in out] == [
        (100.0, 0, "disconnected"), (101.0, 0, "disconnected"), (102.0, 0, "disconnected")]


def test_jsonl_rotates_by_size_and_reads_back_with_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    writer = JsonlWriter(str(path), rotate_bytes=4096)
    writer.write({"type": "start", "start_s": 1.0, "workload": "rr", "rate_pps": 1.0,
                  "interval_s": 1.0})
    for i in range(200):
        writer.write({"type": "interval", "start_s": 10.0 + i, "end_s": 11.0 + i,
                      "sent_packets": 5, "received_packets": 5, "late_packets": 0,
                      "latency_us": None}, sync=i % 50 == 0)
    writer.close()
    with open(path, "ab") as handle:
        handle.write(b'{"type": "interval", "sta')  # a writer killed mid-line
    parts = sorted(tmp_path.iterdir())
    assert len(parts) > 2 and all(p.stat().st_size <= 4096 + 200 for p in parts)
    loaded = read_records([str(path)])
    assert loaded.torn_lines == 1
    assert [r["start_s"] for r in loaded.records if r["type"] == "interval"] == \
        [10.0 + i for i in range(200)]
    summary = summarize(loaded.records)
    assert summary["sent_packets"] == 1000 and summary["intervals"] == 200


def test_metrics_endpoint_serves_the_state_on_loopback() -> None:
    state = MetricsState("h:1")
    server = MetricsServer(state, "127.0.0.1:0")
    try:
        state.update({"type": "interval", "totals": {"sent_packets": 7, "received_packets": 5,
                                                     "lost_packets": 2,
                                                     "late_packets": 1}},
                     buckets=[1] * 16, latency_sum_s=0.5)
        state.update({"type": "outage", "duration_s": 1.5})
        state.update({"type": "knee", "knee_pps": 5500.0})
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                      timeout=5).read().decode()
    finally:
        server.close()
    assert 'pktbench_probe_sent_packets_total{target="h:1"} 7.0' in text
    assert 'pktbench_probe_lost_packets_total{target="h:1"} 2.0' in text
    assert 'pktbench_probe_outages_total{target="h:1"} 1.0' in text
    assert 'pktbench_probe_last_knee_pps{target="h:1"} 5500.0' in text
    assert 'pktbench_probe_latency_seconds_bucket{le="+Inf",target="h:1"} 16.0' in text
    assert server.host == "127.0.0.1"


def test_replies_hold_each_requests_answer_in_both_engines(
        engine_impl: Any, udp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = udp_pair
    template = wire.build_request(wire.COMMANDS["ping"], 64, token=9, seq=0, send_ns=0)
    sender = engine_impl.PacedSender(client.fileno(), template, rate_pps=1000,
                                     expect_replies=True, timeout_s=0.5, keep_replies=True)
    sender.begin(engine.monotonic_ns(), 40, False)
    sender.run(engine.monotonic_ns() + 60_000_000, True)
    assert sender.sent == 40
    server.setblocking(False)
    for index in range(40):
        data = bytearray(server.recv(2048))
        data[wire.OFFSETS["kind"]] = wire.KIND_RESPONSE
        if index % 3:
            server.sendto(bytes(data), client.getsockname())
    sender.run(engine.monotonic_ns() + 30_000_000, False)
    answers = sender.replies(0, 40)
    assert answers.dtype == np.uint32
    assert [bool(v) for v in answers] == [bool(i % 3) for i in range(40)]
    assert int(answers.max()) < 500_000_000
    lags = sender.send_lags(0, 40)
    assert lags.dtype == np.uint32 and lags.size == 40 and int(lags.max()) < 60_000_000
    with pytest.raises(ValueError):
        sender.replies(0, 41)


def test_lazy_reads_time_each_reply_by_its_arrival_not_by_the_read(
        engine_impl: Any, udp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = udp_pair
    template = wire.build_request(wire.COMMANDS["ping"], 64, token=9, seq=0, send_ns=0)
    sender = engine_impl.PacedSender(client.fileno(), template, rate_pps=1000,
                                     expect_replies=True, timeout_s=0.5, keep_replies=True,
                                     spin=False, kernel_timestamps=True)
    if not sender.kernel_timestamps:
        pytest.skip("this engine stamps replies when it reads them")
    t0 = engine.monotonic_ns()
    sender.begin(t0, 20, False)
    sender.run(t0 + 30_000_000, True)
    assert sender.sent == 20
    server.setblocking(False)
    for _ in range(20):
        data = bytearray(server.recv(2048))
        data[wire.OFFSETS["kind"]] = wire.KIND_RESPONSE
        server.sendto(bytes(data), client.getsockname())
    answered_by = engine.monotonic_ns()
    time.sleep(0.15)  # the replies wait in the socket, unread
    sender.run(engine.monotonic_ns() + 30_000_000, False)
    latency = sender.replies(0, 20).astype(np.int64) - 1
    assert (latency >= 0).all()
    due = t0 + np.arange(20) * 1_000_000
    # Stamped at arrival: no reply's latency reaches past the moment it was
    # answered, though each was read 150 ms later.
    assert (due + latency <= answered_by + 2_000_000).all(), (due + latency - answered_by)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server(ServerConfig(bind="127.0.0.1", port=0), log=lambda line: None)
    running.open()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.stop()
        thread.join(timeout=10)
        running.close()


def test_a_loopback_watch_chains_steps_without_gaps_in_the_count(server: Server) -> None:
    records: list[dict[str, Any]] = []
    host, port = server.address
    config = WatchConfig(target=Target(host, port), rate_pps=RATE, duration_s=4.5,
                         interval_s=0.5, timeout_s=0.3, step_s=1.0)
    started = time.monotonic()
    end = Watch(config, records.append).run()
    assert time.monotonic() - started < 8
    steps = [r for r in records if r["type"] == "step"]
    intervals = [r for r in records if r["type"] == "interval"]
    assert len(steps) >= 3
    for before, after in zip(steps, steps[1:]):  # sequence numbers carry on
        assert after["seq"][0] == before["seq"][1]
        assert after["gap_before_s"] is not None and 0 < after["gap_before_s"] < 0.5
    assert sum(s["sent_packets"] for s in steps) == end["sent_packets"]
    assert sum(r["sent_packets"] for r in intervals) == end["sent_packets"]
    assert end["sent_packets"] > RATE * 3.5
    assert not [r for r in records if r["type"] == "outage"]
    # change-overs are not loss: every request was answered by the server
    assert all(s["lost_up_packets"] == 0 for s in steps)
    assert end["lost_packets"] <= end["sent_packets"] * 0.001


@pytest.mark.parametrize("workload", ["blast", "rr-tcp"])
def test_blast_and_rr_tcp_watches_count_every_interval(server: Server, workload: str) -> None:
    records: list[dict[str, Any]] = []
    host, port = server.address
    config = WatchConfig(target=Target(host, port), workload=workload, rate_pps=500,
                         duration_s=3.0, interval_s=0.5, timeout_s=0.3, step_s=1.0)
    end = Watch(config, records.append).run()
    intervals = [r for r in records if r["type"] == "interval"]
    assert len(intervals) >= 4
    assert sum(r["sent_packets"] for r in intervals) == end["sent_packets"]
    assert sum(r["received_packets"] for r in intervals) == end["received_packets"]
    for interval in intervals:  # each interval is one server step at the probe's rate
        assert 0.9 * 250 <= interval["sent_packets"] <= 1.1 * 250, interval
        assert interval["lost_packets"] <= 1, interval
    assert not [r for r in records if r["type"] == "outage"]
    if workload == "rr-tcp":
        assert all(r["latency_us"] and r["latency_us"]["p50"] > 0 for r in intervals)


def test_bad_input_is_one_line_and_nonzero() -> None:
    done = subprocess.run([*PKTBENCH, "watch", "127.0.0.1", "--duration", "soon"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "soon" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*PKTBENCH, "watch", "127.0.0.1", "--knee-every", "6h"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "--knee-profile" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*PKTBENCH, "watch-report", "/nonexistent/w.jsonl"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_watch_report_summarizes_and_plots_from_the_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "w.jsonl"
    out: list[dict[str, Any]] = [{"type": "start", "start_s": 1_700_000_000.0, "workload": "rr",
                                  "rate_pps": RATE, "interval_s": 1.0, "target": "t"}]
    out += _track(20000, [(4001, 10003)])
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    done = subprocess.run([*PKTBENCH, "watch-report", str(path), "--json", "--plot",
                           str(tmp_path / "w.png")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["outages"]) == 1 and summary["sent_packets"] == 20000
    assert summary["availability"] == pytest.approx(1 - 3.001 / 10, abs=0.01)
    assert (tmp_path / "w.png").stat().st_size > 1000


def test_a_knee_check_pauses_the_probe_and_the_pause_is_not_loss(server: Server,
                                                                  tmp_path: Path) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text('workload = "rr"\ncommand = "ping"\nduration_s = 0.3\nwarmup_s = 0.1\n'
                       'drain_s = 0.2\ntimeout_s = 0.2\n[rates]\nfrom_pps = 1000\n'
                       'to_pps = 8000\nsteps = 3\nscale = "log"\n')
    records: list[dict[str, Any]] = []
    host, port = server.address
    config = WatchConfig(target=Target(host, port), rate_pps=1000, duration_s=5.0,
                         interval_s=0.5, timeout_s=0.3, knee_every_s=1.5,
                         knee_profile=str(profile))
    end = Watch(config, records.append).run()
    kinds = [r["type"] for r in records]
    assert kinds.count("pause") == kinds.count("resume") >= 1
    knees = [r for r in records if r["type"] == "knee"]
    assert knees and all("error" not in k for k in knees) and knees[0]["steps"] >= 3
    paused = [r for r in records if r["type"] == "interval" and r["state"] == "paused"]
    assert paused and all(r["lost_packets"] == 0 for r in paused)
    assert kinds.count("session") >= 2  # the probe's session closes for the sweep's
    assert not [r for r in records if r["type"] == "outage"]
    assert end["lost_packets"] <= end["sent_packets"] * 0.001
