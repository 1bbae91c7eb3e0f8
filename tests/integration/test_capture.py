"""The tool's counters agree with a packet capture, and validate works over the testbed.

`pktbench serve` runs in namespace b with tcpdump capturing its data port;
`pktbench run` drives a blast step and an rr step from namespace a at a rate
tcpdump keeps up with. The capture, decoded by pktbench.decode, must hold
exactly as many packets per flow as the client sent and received and the
server counted. Every process started here is stopped by PID, and the
testbed fixture removes the namespaces, even when a test fails.

Needs root and tcpdump (`apt-get install -y tcpdump`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import PKTBENCH

from pktbench import testbed as tb
from pktbench import wire
from pktbench.decode import FlowStats, decode_pcap

pytestmark = pytest.mark.root

PORT = wire.DEFAULT_PORT  # the namespaces are ours alone: the default port is free
RATE_PPS = 2173  # odd on purpose: counts that come out right by accident are rarer
DURATION_S = 2.0
# The sweep profiles' warm-up: warm-up packets number from 0 as the measured
# window does, and the capture must still agree with the run's counters.
WARMUP_S = 0.5


def _python(*args: str) -> list[str]:
    # the namespaces run the same pktbench this test imported
    return [*PKTBENCH, *args]


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT,
          timeout_s: float = 10.0) -> None:
    """Stop one process we started, by its PID: `sig` first, SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def server(testbed: tb.TestbedInfo) -> Iterator[subprocess.Popen[str]]:
    """`pktbench serve` in namespace b on the data port."""
    proc = tb.popen_in("b", _python("serve", "--bind", testbed.addrs["b"], "--port", str(PORT),
                                    "--quiet"),
                       prefix=testbed.prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line + (proc.stderr.read() if proc.stderr
                                                         else "")
        yield proc
    finally:
        _stop(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def tcpdump_path() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        pytest.skip("tcpdump is not installed (apt-get install -y tcpdump)")
    return path


def _run_step(testbed: tb.TestbedInfo, out: Path, workload: str) -> dict[str, Any]:
    proc = tb.exec_in("a", _python("run", testbed.addrs["b"], "--workload", workload,
                                   "--rate", str(RATE_PPS), "--duration", str(DURATION_S),
                                   "--warmup", str(WARMUP_S),
                                   "--json", str(out)),
                      prefix=testbed.prefix, capture_output=True, timeout_s=60)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(out.read_text())["steps"]
    assert len(steps) == 1
    return steps[0]  # type: ignore[no-any-return]


def _flows(flows: tuple[FlowStats, ...], kind: str) -> list[FlowStats]:
    return [f for f in flows if f.kind == kind]


def test_capture_counts_equal_the_tools_counters(testbed: tb.TestbedInfo,
                                                 server: subprocess.Popen[str],
                                                 tcpdump_path: str, tmp_path: Path) -> None:
    pcap = tmp_path / "b.pcap"
    ifname = testbed.paths[0].ifname_b
    # -Z root: tcpdump would otherwise drop to its own user and fail to write
    # into a root-only temporary directory; -s 128 keeps every header.
    # --immediate-mode: without it packets still in a half-filled ring block
    # when tcpdump stops are counted "received by filter" but never written.
    capture = tb.popen_in("b", [tcpdump_path, "-i", ifname, "-n", "-s", "128", "-B", "8192",
                                "--immediate-mode", "-Z", "root", "-w", str(pcap),
                                "udp", "port", str(PORT)],
                          prefix=testbed.prefix, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert capture.stderr is not None
        ready = capture.stderr.readline()  # "listening on IF, link-type ..." once capturing
        assert "listening on" in ready, ready
        blast = _run_step(testbed, tmp_path / "blast.json", "blast")
        rr = _run_step(testbed, tmp_path / "rr.json", "rr")
        time.sleep(0.5)  # the last replies are in the ring before tcpdump stops
    finally:
        _stop(capture)  # SIGINT: tcpdump flushes the file and prints its statistics
    summary = capture.stderr.read() if capture.stderr else ""
    if capture.stderr is not None:
        capture.stderr.close()
    stats = {m.group(2): int(m.group(1))
             for m in re.finditer(r"^(\d+) packets? (captured|received by filter|dropped by "
                                  r"kernel)$", summary, re.MULTILINE)}
    assert stats.get("dropped by kernel") == 0, summary
    assert stats.get("captured") == stats.get("received by filter"), summary

    decoded = decode_pcap(pcap, port=PORT)
    assert decoded.truncated_packets == 0 and decoded.fragment_packets == 0
    # nothing else on the data port: every captured datagram is one of the steps'
    assert decoded.other_udp_packets == 0

    expected_blast = round(RATE_PPS * DURATION_S)
    expected_warmup = round(RATE_PPS * WARMUP_S)
    assert blast["sent_packets"] == expected_blast
    [blast_flow] = _flows(decoded.flows, "blast")
    assert blast_flow.packets == blast["sent_packets"]
    assert blast_flow.packets == blast["received_packets"]
    assert blast_flow.packets == blast["receiver"]["received"]
    assert blast_flow.missing_packets == 0 and blast_flow.duplicate_packets == 0
    # The warm-up ends at its deadline, so it may send a few packets fewer
    # than scheduled; the receiver counted exactly what the capture holds.
    assert blast_flow.warmup_packets == blast["receiver"]["warmup"]
    assert 0.95 * expected_warmup <= blast_flow.warmup_packets <= expected_warmup
    assert blast_flow.warmup_duplicate_packets == 0 == blast["duplicate_packets"]
    assert (blast_flow.src, blast_flow.dst, blast_flow.dst_port) == (
        testbed.addrs["a"], testbed.addrs["b"], PORT)

    [requests] = _flows(decoded.flows, "request")
    [responses] = _flows(decoded.flows, "response")
    assert requests.token == responses.token != blast_flow.token
    assert requests.packets == rr["sent_packets"] == expected_blast
    assert requests.packets == rr["receiver"]["received"]
    # the responder's "replied" counts every reply it sent, warm-up ones too
    assert responses.packets + responses.warmup_packets == rr["receiver"]["replied"]
    assert responses.packets == rr["received_packets"]
    assert requests.duplicate_packets == responses.duplicate_packets == 0
    assert requests.warmup_packets == rr["receiver"]["warmup"]
    assert 0.95 * expected_warmup <= requests.warmup_packets <= expected_warmup
    assert responses.warmup_packets == requests.warmup_packets
    assert (responses.src, responses.src_port, responses.dst, responses.dst_port) == (
        requests.dst, requests.dst_port, requests.src, requests.src_port)
    # never an amplifier, on the wire either
    assert responses.size_max_bytes <= requests.size_min_bytes


def test_validate_passes_over_the_testbed(testbed: tb.TestbedInfo,
                                          server: subprocess.Popen[str],
                                          tmp_path: Path) -> None:
    out = tmp_path / "validate.json"
    proc = tb.exec_in("a", _python("validate", testbed.addrs["b"], "--json", str(out)),
                      prefix=testbed.prefix, capture_output=True, timeout_s=120)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["ok"] and report["skipped_cases"] == 0
    cases = {c["name"]: c for c in report["cases"]}
    assert cases["ip fragments"]["status"] == "pass"
    # The server's InCsumErrors lives in namespace b, out of sight from a.
    checksum = cases["bad udp checksum"]
    assert checksum["status"] == "pass" and "not visible here" in checksum["expected"]
    assert os.path.basename(report["target"]).startswith(testbed.addrs["b"])
