"""Server in namespace b, client in namespace a, a policed path between them.

The policer (nftables, 5,500 pps, burst 100) puts a known knee on the path,
so the sweep's knee, the NDR search and the one-way loss accounting can be
checked against ground truth.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from cli_support import PKTBENCH

from pktbench import testbed as tb

pytestmark = pytest.mark.root

POLICER_PPS = 5500


def _cpus() -> tuple[str, str]:
    cpus = sorted(os.sched_getaffinity(0))
    return (str(cpus[0]), str(cpus[-1]))


class ServerInB:
    def __init__(self, info: tb.TestbedInfo, *extra: str) -> None:
        self.info = info
        self.address = info.addrs["b"]
        self.process = tb.popen_in(
            "b", ["taskset", "-c", _cpus()[1], *PKTBENCH, "serve", "--bind", self.address,
                  *extra],
            prefix=info.prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on"), line + self.process.stderr.read()

    def close(self) -> str:
        self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return str(err)


@pytest.fixture
def policed(make_testbed) -> tb.TestbedInfo:
    return make_testbed(pps_limit=POLICER_PPS, pps_burst=100)


@pytest.fixture
def server(policed) -> Iterator[ServerInB]:
    running = ServerInB(policed)
    try:
        yield running
    finally:
        running.close()


def client(info: tb.TestbedInfo, *args: str, timeout_s: float = 240
           ) -> subprocess.CompletedProcess[str]:
    return tb.exec_in("a", ["taskset", "-c", _cpus()[0], *PKTBENCH, *args], prefix=info.prefix,
                      timeout_s=timeout_s, capture_output=True)


def test_sweep_finds_the_policers_knee_and_outputs_agree(policed, server, tmp_path):
    json_path, csv_path = tmp_path / "sweep.json", tmp_path / "sweep.csv"
    done = client(policed, "sweep", server.address, "--workload", "blast",
                  "--from", "4000", "--to", "8000", "--steps", "21", "--scale", "linear",
                  "--duration", "1", "--warmup", "0.3", "--json", str(json_path),
                  "--csv", str(csv_path))
    assert done.returncode == 0, done.stderr
    document = json.loads(json_path.read_text())
    knee = document["knee"]
    assert knee is not None, done.stdout
    assert abs(knee["offered_pps"] - POLICER_PPS) / POLICER_PPS <= 0.05
    assert knee["last_good_pps"] < knee["offered_pps"]
    assert knee["criterion"] == "loss"
    # the early stop kept the sweep from hammering the path up to 8,000 pps
    assert max(s["offered_pps"] for s in document["steps"]) < 8000
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(document["steps"])
    for step, row in zip(document["steps"], rows):
        assert float(row["offered_pps"]) == step["offered_pps"]
        assert int(row["received_packets"]) == step["received_packets"]
        # one-way loss is what the receiver did not count, exactly
        assert step["lost_packets"] == step["sent_packets"] - step["receiver"]["received"]
        if step["offered_pps"] > POLICER_PPS * 1.03:
            assert step["received_pps"] == pytest.approx(POLICER_PPS, rel=0.03)
            assert step["attribution"] == "path-bound"
    assert f"{knee['offered_pps']:,.0f}" in done.stdout
    assert "knee" in done.stdout


def test_ndr_search_finds_the_policer_within_two_percent(policed, server, tmp_path):
    json_path = tmp_path / "ndr.json"
    done = client(policed, "sweep", server.address, "--workload", "blast",
                  "--rates", "3000,4500,6000,7500", "--search", "ndr,pdr", "--precision", "0.01",
                  "--duration", "1", "--warmup", "0.3", "--json", str(json_path))
    assert done.returncode == 0, done.stderr
    document = json.loads(json_path.read_text())
    assert document["ndr_pps"] == pytest.approx(POLICER_PPS, rel=0.02)
    assert document["pdr_pps"] >= document["ndr_pps"]
    assert document["search"]["ndr"]["trials"] > 0


def test_one_way_loss_matches_the_policers_own_drop_count(policed, server, tmp_path):
    before = tb.policer_counters("b", prefix=policed.prefix)
    json_path = tmp_path / "run.json"
    done = client(policed, "run", server.address, "--workload", "blast", "--rate", "8000",
                  "--duration", "1", "--json", str(json_path))
    assert done.returncode == 0, done.stderr
    after = tb.policer_counters("b", prefix=policed.prefix)
    assert before is not None and after is not None
    step = json.loads(json_path.read_text())["steps"][0]
    # the policer also drops some control-channel TCP segments; compare UDP
    policed_drops = after["dropped_udp_packets"] - before["dropped_udp_packets"]
    assert step["lost_packets"] > 0
    assert step["lost_packets"] == policed_drops
    assert step["sent_packets"] - step["receiver"]["received"] == policed_drops


def test_request_response_knee_through_the_policer(make_testbed, tmp_path):
    # A deeper bucket than the other tests: a sender preempted for a few ms
    # catches up in a burst, which a 100-packet bucket would punish below the
    # limit; the knee between 5,000 and 6,000 pps stays where it is.
    policed = make_testbed(pps_limit=POLICER_PPS, pps_burst=300)
    server = ServerInB(policed)
    json_path = tmp_path / "rr.json"
    try:
        done = client(policed, "sweep", server.address, "--workload", "rr",
                      "--rates", "3000,4500,5000,6000,7000,8000", "--duration", "1",
                      "--warmup", "0.3", "--json", str(json_path))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    knee = json.loads(json_path.read_text())["knee"]
    assert knee is not None and knee["offered_pps"] == 6000
    assert knee["last_good_pps"] == 5000


def test_wrong_token_is_refused_in_one_line(policed):
    server = ServerInB(policed, "--token", "right-secret", "--port", "7500")
    try:
        wrong = client(policed, "run", f"{server.address}:7500", "--token", "wrong",
                       "--duration", "0.2")
        missing = client(policed, "run", f"{server.address}:7500", "--duration", "0.2")
        right = client(policed, "run", f"{server.address}:7500", "--token", "right-secret",
                       "--rate", "1000", "--duration", "0.3")
    finally:
        server.close()
    assert wrong.returncode == 1 and "refused the secret" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert missing.returncode == 1 and "requires a shared secret" in missing.stderr
    assert right.returncode == 0, right.stderr


def test_killed_client_then_next_client_is_served(policed, server):
    victim = tb.popen_in("a", [*PKTBENCH, "run", server.address, "--rate", "2000",
                               "--duration", "20"], prefix=policed.prefix,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
    finally:
        victim.kill()
        victim.wait(timeout=10)
    deadline = time.monotonic() + 15
    while True:
        nxt = client(policed, "run", server.address, "--rate", "1000", "--duration", "0.5")
        if nxt.returncode == 0 or time.monotonic() > deadline or "busy" not in nxt.stderr:
            break
        time.sleep(0.5)
    assert nxt.returncode == 0, nxt.stderr
    assert "500 packets" in nxt.stdout
