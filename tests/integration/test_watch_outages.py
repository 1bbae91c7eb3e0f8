"""`pktbench watch` on the namespace testbed: outages timed to the packet.

Server in namespace b, watcher in namespace a. An nftables table in b that
drops everything in and out stands in for a path outage; killing and
restarting the server stands in for a host that went down. Both timings are
taken by the test around its own actions and compared with the JSONL file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import PKTBENCH

from pktbench import testbed as tb

pytestmark = pytest.mark.root

TOLERANCE_S = 0.010
METRICS_PORT = 9917  # inside namespace a, which only this test uses


def _cpus() -> tuple[str, str]:
    cpus = sorted(os.sched_getaffinity(0))
    return (str(cpus[0]), str(cpus[-1]))


class Server:
    def __init__(self, info: tb.TestbedInfo) -> None:
        self.info = info
        self.address = info.addrs["b"]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = tb.popen_in(
            "b", ["taskset", "-c", _cpus()[1], *PKTBENCH, "serve", "--bind", self.address],
            prefix=self.info.prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on"), line

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)
        self.process = None


class Dropper:
    """One nft process in namespace b, so a rule goes in or out within a ms or so."""

    TABLE = "pktbwatch"

    def __init__(self, info: tb.TestbedInfo) -> None:
        self.process = tb.popen_in("b", ["nft", "-i"], prefix=info.prefix,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._command(f"add table inet {self.TABLE}; "
                      f"add chain inet {self.TABLE} i {{ type filter hook input priority -400; "
                      "policy accept; }; "
                      f"add chain inet {self.TABLE} o {{ type filter hook output priority -400; "
                      "policy accept; }")

    def _command(self, text: str) -> tuple[float, float]:
        """Run `text`; (time before, time after it was applied)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        before = time.time()
        self.process.stdin.write(f"{text}\nlist table inet {self.TABLE}\n")
        self.process.stdin.flush()
        seen: list[str] = []
        while True:
            line = self.process.stdout.readline()
            seen.append(line)
            if not line:
                raise AssertionError("nft -i ended: " + "".join(seen))
            if line.rstrip("\n") == "}":
                break
        after = time.time()
        assert "Error" not in "".join(seen), "".join(seen)
        return before, after

    def drop(self, chains: str = "io") -> tuple[float, float]:
        """Drop what b receives (i: the requests) and/or what it sends (o: the replies)."""
        return self._command("; ".join(f"add rule inet {self.TABLE} {chain} drop"
                                       for chain in chains))

    def allow(self) -> tuple[float, float]:
        return self._command(f"flush chain inet {self.TABLE} i; flush chain inet {self.TABLE} o")

    def close(self) -> None:
        try:
            self._command(f"delete table inet {self.TABLE}; add table inet {self.TABLE}")
        finally:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=10)


@pytest.fixture
def bed(make_testbed: Any) -> tb.TestbedInfo:
    info: tb.TestbedInfo = make_testbed()
    return info


@pytest.fixture
def server(bed: tb.TestbedInfo) -> Iterator[Server]:
    running = Server(bed)
    running.start()
    try:
        yield running
    finally:
        running.kill()


def _watcher(info: tb.TestbedInfo, *args: str) -> subprocess.Popen[str]:
    return tb.popen_in("a", ["taskset", "-c", _cpus()[0], *PKTBENCH, "watch", *args],
                       prefix=info.prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reap(watcher: subprocess.Popen[str]) -> None:
    """A watcher the test did not see end is killed, so none outlives a failure."""
    if watcher.poll() is None:
        watcher.kill()
        watcher.communicate()


def _wait_for(path: Path, kind: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r["type"] == kind for r in _records(path)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {kind} record in {path} within {timeout_s} s")


_SCRAPE = (
    "import sys, urllib.request\n"
    "print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/metrics', "
    "timeout=5).read().decode())\n")


def _scrape(info: tb.TestbedInfo) -> dict[str, float]:
    done = tb.exec_in("a", [sys.executable, "-c", _SCRAPE, str(METRICS_PORT)],
                      prefix=info.prefix, capture_output=True, timeout_s=20)
    assert done.returncode == 0, done.stderr
    values: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("pktbench_probe_") and "{" in line:
            name = line.split("{", 1)[0]
            labels = line.split("{", 1)[1].split("}", 1)[0]
            if "le=" not in labels:
                values[name] = float(line.rsplit(" ", 1)[1])
            elif 'le="+Inf"' in labels:
                values[name + "{+Inf}"] = float(line.rsplit(" ", 1)[1])
    return values


def _within(value: float, lo: float, hi: float) -> bool:
    return lo - TOLERANCE_S <= value <= hi + TOLERANCE_S


def test_a_3s_drop_is_one_outage_timed_within_10ms_and_metrics_match_the_file(
        bed: tb.TestbedInfo, server: Server, tmp_path: Path) -> None:
    jsonl = tmp_path / "watch.jsonl"
    dropper = Dropper(bed)
    watcher = _watcher(bed, server.address, "--rate", "2000", "--duration", "20",
                       "--jsonl", str(jsonl), "--metrics", f"127.0.0.1:{METRICS_PORT}", "-q")
    try:
        _wait_for(jsonl, "interval", 10)
        time.sleep(1.5)
        on = dropper.drop()
        time.sleep(3.0)
        off = dropper.allow()
        _wait_for(jsonl, "outage", 10)
        metrics = _scrape(bed)
        snapshot = _records(jsonl)
        out, err = watcher.communicate(timeout=60)
    finally:
        _reap(watcher)
        dropper.close()
    assert watcher.returncode == 0, err
    records = _records(jsonl)
    outages = [r for r in records if r["type"] == "outage"]
    assert len(outages) == 1, outages
    outage = outages[0]
    start, end = outage["start_s"], outage["end_s"]
    print(f"outage start - rule on {1e3 * (start - on[0]):+.2f}..{1e3 * (start - on[1]):+.2f} ms,"
          f" end - rule off {1e3 * (end - off[0]):+.2f}..{1e3 * (end - off[1]):+.2f} ms, "
          f"duration {outage['duration_s']:.4f} s")
    assert _within(outage["start_s"], *on), (outage, on)
    assert _within(outage["end_s"], *off), (outage, off)
    assert _within(outage["duration_s"], off[0] - on[1], off[1] - on[0]), (outage, on, off)
    assert outage["direction"] == "up", outage  # b's input dropped the requests
    assert outage["lost_packets"] == pytest.approx(3.0 * 2000, rel=0.02)
    assert "outages: 1 " in out, out
    # The scrape equals the file: the counters are the totals of the interval
    # line that many intervals in, and the sum of the lines up to it.
    intervals = [r for r in snapshot if r["type"] == "interval"]
    count = int(metrics["pktbench_probe_intervals_total"])
    assert 1 <= count <= len(intervals)
    upto = intervals[:count]
    for name in ("sent", "received", "lost"):
        key = f"{name}_packets"
        value = metrics[f"pktbench_probe_{name}_packets_total"]
        assert value == upto[-1]["totals"][key] == sum(r[key] for r in upto), name
    assert metrics["pktbench_probe_outages_total"] == 1
    for way in ("up", "down"):  # the one-way split scrapes as the file holds it too
        key = f"lost_{way}_packets"
        assert metrics[f"pktbench_probe_{key}_total"] == upto[-1]["totals"][key] == sum(
            r[key] or 0 for r in upto), way
    received = upto[-1]["totals"]["received_packets"]
    assert metrics["pktbench_probe_latency_seconds_count"] == received
    # Every request of the watch is in exactly one interval line.
    every = [r for r in records if r["type"] == "interval"]
    end = next(r for r in records if r["type"] == "end")
    assert sum(r["sent_packets"] for r in every) == end["sent_packets"] > 35_000


def test_a_restarted_server_is_an_outage_and_a_new_session_and_sigkill_leaves_whole_lines(
        bed: tb.TestbedInfo, server: Server, tmp_path: Path) -> None:
    jsonl = tmp_path / "watch.jsonl"
    watcher = _watcher(bed, server.address, "--rate", "1000", "--duration", "60",
                       "--timeout", "0.5", "--jsonl", str(jsonl), "-q")
    try:
        _wait_for(jsonl, "interval", 10)
        time.sleep(1.0)
        killed_at = time.time()
        server.kill()
        time.sleep(2.0)
        server.start()
        restarted_at = time.time()
        _wait_for(jsonl, "outage", 15)
        time.sleep(2.0)
        assert watcher.poll() is None, "the watch went on"
        watcher.send_signal(signal.SIGKILL)
        stopped_at = time.time()
        watcher.communicate(timeout=10)
    finally:
        _reap(watcher)
    lines = jsonl.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    sessions = [r for r in records if r["type"] == "session"]
    assert [s["session"] for s in sessions] == [1, 2], sessions
    assert sessions[1]["start_s"] >= restarted_at - 1.0
    outages = [r for r in records if r["type"] == "outage"]
    assert len(outages) == 1, outages
    outage = outages[0]
    assert killed_at - 0.5 <= outage["start_s"] <= killed_at + 0.5, (outage, killed_at)
    assert outage["end_s"] >= restarted_at - 0.2
    assert any("new session 2" in note for note in outage["control"]), outage["control"]
    assert any(r["type"] == "session_lost" for r in records)
    # Completed intervals are all there, back to back, up to the last second or two.
    intervals = [r for r in records if r["type"] == "interval"]
    for before, after in zip(intervals, intervals[1:]):
        assert after["start_s"] == pytest.approx(before["end_s"]), (before, after)
    assert intervals[-1]["end_s"] >= stopped_at - 1.0 - 0.5 - 0.5
    assert not any(r["type"] == "end" for r in records)
    # watch-report reads the file alone
    done = subprocess.run([*PKTBENCH, "watch-report", str(jsonl), "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["outages"]) == 1 and summary["sessions"] == 2
    assert summary["ended"].startswith("no end record")


def _one_way(intervals: list[dict[str, Any]], window: tuple[float, float]
             ) -> list[dict[str, Any]]:
    """The intervals with loss that overlap a drop window."""
    lo, hi = window
    return [r for r in intervals if r["lost_packets"] and r["end_s"] > lo and r["start_s"] < hi]


def test_a_one_way_drop_is_lost_up_or_lost_down_in_each_interval_it_touches(
        bed: tb.TestbedInfo, server: Server, tmp_path: Path) -> None:
    jsonl = tmp_path / "watch.jsonl"
    dropper = Dropper(bed)
    watcher = _watcher(bed, server.address, "--rate", "2000", "--duration", "11",
                       "--interval", "0.5", "--timeout", "0.5", "--jsonl", str(jsonl), "-q")
    try:
        _wait_for(jsonl, "interval", 10)
        time.sleep(1.0)
        up_on = dropper.drop("i")  # b's input: the requests never reach the server
        time.sleep(1.5)
        up_off = dropper.allow()
        time.sleep(2.5)
        down_on = dropper.drop("o")  # b's output: the server answers, the replies are lost
        time.sleep(1.5)
        down_off = dropper.allow()
        out, err = watcher.communicate(timeout=60)
    finally:
        _reap(watcher)
        dropper.close()
    assert watcher.returncode == 0, err
    records = _records(jsonl)
    intervals = [r for r in records if r["type"] == "interval"]
    up = _one_way(intervals, (up_on[0], up_off[1]))
    down = _one_way(intervals, (down_on[0], down_off[1]))
    assert len(up) >= 3 and len(down) >= 3, (up, down)
    for record in up:
        assert (record["lost_up_packets"], record["lost_down_packets"]) == (
            record["lost_packets"], 0), record
    for record in down:
        assert (record["lost_up_packets"], record["lost_down_packets"]) == (
            0, record["lost_packets"]), record
    # the loss is the drop's: 1.5 s of 2,000 pps each way, and nothing else
    assert sum(r["lost_packets"] for r in up) == pytest.approx(3000, rel=0.03)
    assert sum(r["lost_packets"] for r in down) == pytest.approx(3000, rel=0.03)
    assert sum(r["lost_packets"] for r in intervals) == sum(
        r["lost_packets"] for r in up + down)
    end = next(r for r in records if r["type"] == "end")
    assert end["lost_up_packets"] == sum(r["lost_up_packets"] for r in up)
    assert end["lost_down_packets"] == sum(r["lost_down_packets"] for r in down)
    starts = [r["start_s"] for r in intervals]
    assert starts == sorted(starts)
    directions = sorted(o["direction"] for o in records if o["type"] == "outage")
    assert directions == ["down", "up"], directions
