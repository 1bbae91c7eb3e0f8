"""Numbers and verdicts on testbed paths whose answer is known in advance.

Each test shapes the path between namespaces a and b so that the right
answer follows from the shaping alone: a tbf rate cap whose packet rate is
the bit rate over the frame size, and random loss drawn per packet by
nftables. `pktbench serve` runs in b, the client in a; every process is
stopped by PID and the testbed fixture removes the namespaces, even when a
test fails. Rates are odd on purpose.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktbench import testbed as tb
from test_two_hosts import ServerInB, client

pytestmark = pytest.mark.root

# Ethernet header + IPv4 + UDP around the datagram, as tbf counts a frame on veth.
FRAME_OVERHEAD_BYTES = 14 + 20 + 8


@pytest.fixture
def shaped(make_testbed) -> tb.TestbedInfo:
    return make_testbed(rate_cap_bps=4_000_000)


@pytest.fixture
def shaped_server(shaped: tb.TestbedInfo) -> Iterator[ServerInB]:
    running = ServerInB(shaped)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def lossy(make_testbed) -> tb.TestbedInfo:
    return make_testbed(loss_percent=1.0)


@pytest.fixture
def lossy_server(lossy: tb.TestbedInfo) -> Iterator[ServerInB]:
    running = ServerInB(lossy)
    try:
        yield running
    finally:
        running.close()


def test_blast_ndr_behind_tbf_is_the_shapers_packet_rate(shaped, shaped_server,
                                                         tmp_path: Path) -> None:
    size = 77
    capacity_pps = 4_000_000 / (8 * (size + FRAME_OVERHEAD_BYTES))  # 4,201.7 pps
    out = tmp_path / "ndr.json"
    # tbf's queue (50 ms and a 15 KB burst, about 460 frames) lets trials a
    # few % above the cap pass: only the delivered rate tells them apart.
    done = client(shaped, "sweep", shaped_server.address, "--workload", "blast",
                  "--size", str(size), "--rates", "1733,2911,3877,5507,6911,8807",
                  "--search", "ndr,pdr", "--precision", "0.01", "--duration", "2",
                  "--warmup", "0.5", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert document["judgement"]["capacity_pps"] == pytest.approx(capacity_pps, rel=0.01)
    assert document["ndr_pps"] == pytest.approx(capacity_pps, rel=0.01), done.stdout
    assert document["pdr_pps"] >= document["ndr_pps"]
    assert document["search"]["ndr"]["upper_bound_by"] == "capacity"
    assert "capacity: " in done.stdout
    # the live lines judge as the table does: the lossy steps say FAIL there too
    live = [line for line in done.stderr.splitlines() if "offered 6,911 pps" in line]
    assert live and all("FAIL loss" in line for line in live), done.stderr
    assert "judged by: loss > 0.1 %" in done.stdout  # the default profile's threshold


@pytest.fixture
def very_lossy(make_testbed) -> tb.TestbedInfo:
    return make_testbed(loss_percent=80.0)


def test_run_with_80_percent_loss_fails_under_fail_on_loss(very_lossy, tmp_path: Path) -> None:
    server = ServerInB(very_lossy)
    try:
        out = tmp_path / "run.json"
        done = client(very_lossy, "run", server.address, "--workload", "blast",
                      "--rate", "3119", "--duration", "1", "--fail-on", "loss",
                      "--json", str(out))
        passing = client(very_lossy, "run", server.address, "--workload", "blast",
                         "--rate", "3119", "--duration", "0.5", "--max-loss", "0.9",
                         "--fail-on", "loss")
    finally:
        server.close()
    assert done.returncode == 3, done.stdout + done.stderr
    step = json.loads(out.read_text())["steps"][0]
    assert 0.75 < step["loss_ratio"] < 0.85
    assert "FAIL loss" in done.stdout and "judged by: loss > 0.1 %" in done.stdout
    assert "FAIL: the path failed loss" in done.stderr
    assert json.loads(out.read_text())["judgement"]["verdict"] == "fail"
    # the same path judged by a looser threshold passes, and says which one applied
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "judged by: loss > 90 %" in passing.stdout


def test_random_loss_is_a_loss_floor_not_a_knee(lossy, lossy_server, tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    done = client(lossy, "sweep", lossy_server.address, "--workload", "blast",
                  "--rates", "2113,3307,5113,7019", "--duration", "1.5", "--warmup", "0.2",
                  "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    # 1 % drawn per packet, counted on 3,000-10,000 packets a step (and a busy
    # machine's receiver may add a few drops of its own)
    losses = [s["loss_ratio"] for s in document["steps"]]
    assert all(0.005 < loss < 0.02 for loss in losses), losses
    assert document["knee"] is None, done.stdout
    floor = document["judgement"]["loss_floor_ratio"]
    assert floor == pytest.approx(0.01, abs=0.003)
    assert f"the path loses {100 * floor:.1f} % at every rate: no knee; loss floor " \
           f"{100 * floor:.1f} %" in done.stdout


REDIS_SERVER = shutil.which("redis-server")
POLICER_PPS = 5500
# The policer's bucket: a client or a Redis preempted for a few ms catches up
# in a burst, which a 100-packet bucket punishes below the limit (see
# test_two_hosts' rr knee). Over a 1 s window the bucket lets at most
# POLICER_BURST packets more than the rate through.
POLICER_BURST = 300


@pytest.fixture
def redis_policed(make_testbed) -> tb.TestbedInfo:
    return make_testbed(pps_limit=POLICER_PPS, pps_burst=POLICER_BURST)


@pytest.fixture
def redis_in_b(redis_policed: tb.TestbedInfo, tmp_path: Path) -> Iterator[str]:
    """A real redis-server in b (nothing saved), stopped by its PID; yields its URL."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    address = redis_policed.addrs["b"]
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        process = tb.popen_in("b", [REDIS_SERVER, "--bind", address, "--port", "6379",
                                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                                    "--protected-mode", "no"],
                              prefix=redis_policed.prefix, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while b"Ready to accept connections" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start in b: " + log.read_text())
            time.sleep(0.05)
        yield f"redis://{address}:6379"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_redis_behind_a_policer_knee_shows_the_paths_packet_rates(
        redis_policed, redis_in_b, tmp_path: Path) -> None:
    out = tmp_path / "redis.json"
    before = tb.policer_counters("b", prefix=redis_policed.prefix)
    # 16 connections, one request in flight each: every request is one
    # segment toward the server (the reply carries the ACK, the next request
    # the reply's), so requests/s below the policer pass and above it do not.
    done = client(redis_policed, "sweep", redis_in_b, "--command", "get",
                  "--rates", "3917,4713,6113,7307", "--connections", "16", "--pipeline", "1",
                  "--duration", "1", "--warmup", "0.3", "--json", str(out), timeout_s=90)
    assert done.returncode == 0, done.stdout + done.stderr
    after = tb.policer_counters("b", prefix=redis_policed.prefix)
    document = json.loads(out.read_text())
    steps = {s["index"]: s for s in document["steps"]}
    # every segment TCP_INFO counted toward the server met the policer, which dropped some
    assert before is not None and after is not None
    assert after["seen_packets"] - before["seen_packets"] >= sum(
        s["path"]["toward_server_packets"] for s in document["steps"])
    assert after["dropped_packets"] > before["dropped_packets"]
    knee = document["knee"]
    assert knee is not None, done.stdout
    assert knee["offered_rps"] == knee["offered_pps"] > POLICER_PPS
    assert knee["last_good_rps"] is not None and knee["last_good_rps"] < POLICER_PPS
    good = next(s for s in document["steps"] if s["offered_rps"] == knee["last_good_rps"])
    bad = steps[knee["step_index"]]
    assert knee["path"] == bad["path"] and knee["last_good_path"] == good["path"]

    # the last good step's packets toward the server passed the policer...
    carried = good["path"]
    assert carried["retransmits"] == 0 and good["late_requests"] == 0
    assert carried["toward_server_pps"] <= POLICER_PPS + POLICER_BURST / carried["window_s"]
    assert carried["toward_server_pps"] == pytest.approx(good["answered_rps"], rel=0.03)
    # ...counted twice: TCP_INFO of our connections and a's egress device
    # (Redis has no control connection: nothing else crosses va0 in the window)
    interface = carried["interface"]
    assert interface is not None and interface["name"] == "va0"
    assert abs(interface["tx_packets"] - carried["toward_server_packets"]) <= \
        0.02 * carried["toward_server_packets"] + 5
    # ...and the knee step asked the path for more than the policer passes:
    # it dropped, TCP retransmitted and stalled, and the schedule collapsed
    asked = bad["path"]
    assert asked["offered_toward_server_pps"] > POLICER_PPS
    assert asked["retransmits"] > 0
    assert asked["toward_server_pps"] < asked["offered_toward_server_pps"]
    assert bad["answered_rps"] < 0.9 * bad["offered_rps"]
    assert bad["late_requests"] + bad["unanswered_requests"] == bad["lost_packets"]
    assert bad["attribution"] in ("late", "unanswered")

    # the knee line names the path's packet rates both ways, in pkt/s, and req/s
    # (prose lines wrap at 100 columns: read them joined)
    text = " ".join(done.stdout.split())
    knee_line = text[text.index("knee: "):text.index(" criterion: ")]
    assert knee_line.startswith(f"knee: {bad['offered_rps']:,.0f} req/s offered (path: "
                                f"{asked['toward_server_pps']:,.0f} pkt/s toward server "
                                f"(offered {asked['offered_toward_server_pps']:,.0f} at ")
    assert f", {asked['back_pps']:,.0f} back, {asked['retransmits']:,} retransmit" in knee_line
    assert "late or unanswered" in knee_line and "loss" not in knee_line
    assert f"last good rate: {good['offered_rps']:,.0f} req/s (path: " \
           f"{carried['toward_server_pps']:,.0f} pkt/s toward server" in text
    assert "path-bound" not in done.stdout + done.stderr
    live = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert live and all(" req/s " in line and " pps" not in line for line in live), live
