#!/usr/bin/env python3
"""Benchmark harness: pktbench beside the reference tools on this machine.

Owns: rows B1-B7 of the performance goals (UDP blast, UDP request/response, pacing, TCP
bulk, RESP against redis-server, memory, UDP blast with GSO on veth counted at the
receiver's ingress), each as a set of measurements (reference tools,
the C probes in benchmarks/probe/, and pktbench) plus targets (ratios with a goal). It
runs every measurement of a row N times in alternating order (ABBA), takes medians,
prints a table with ratios and PASS/MISS, and writes a markdown block for BENCHMARKS.md
and a JSON file with every run under benchmarks/results/.

Invariants:
- Traffic goes only to 127.0.0.1 or to the two namespaces this harness creates
  (198.18.0.1/24 <-> 198.18.0.2/24, no default route); servers bind only those addresses.
  The testbed's veths have UDP segmentation off, so a GSO buffer crosses as the packets it
  holds; an nftables counter in the receiving namespace counts what arrives.
- Every process it starts is bounded (its own -t/-n plus a harness timeout), runs in its
  own session, and is stopped by that PID's process group; namespaces are removed on exit,
  also after an error or SIGINT/SIGTERM.
- Client/sender is pinned to CPU 0, server/receiver to CPU 1 (taskset), as in the anchors.
- pktbench is run as a subprocess and only through the argv builders in the PKTBENCH
  section below; when its CLI is absent those rows print "pending" instead of failing.
- Which pktbench runs is said on the console and in the markdown: the installed package,
  or this source tree built in place by the harness. `--baseline REV` also builds git
  revision REV in place in a temporary directory and runs its measurements beside the
  current build's, alternating, so a change's before/after come from one invocation.
  Every process runs in the temporary directory, so the source tree never shadows the
  build meant (`python -c` puts the working directory first on sys.path).

Must not: import pktbench, touch processes or namespaces it did not create, write outside
benchmarks/results/, the in-place build of this tree, a temporary directory it removes, and
the iperf3 3.21 it builds from ../shared/tools into the user's cache directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROBES = HERE / "probe"
RESULTS_DIR = HERE / "results"

SENDER_CPU = "0"
RECEIVER_CPU = "1"
VETH_CLIENT_ADDR = "198.18.0.1"
VETH_SERVER_ADDR = "198.18.0.2"
PAYLOAD_BYTES = 64
SINK_RCVBUF_BYTES = 4 << 20  # = rmem_max here; below it small-packet loss is a buffer artefact
# Reference medians measured earlier on a machine of this kind; used only to size count-based runs and as a
# fallback for B3's "80 % of B1's maximum" when B1 was not measured in this invocation.
ANCHOR_REDIS_RPS = {(1, 1): 13_000, (50, 1): 120_000, (50, 16): 1_600_000}
ANCHOR_C_SENDMMSG_PPS = {"lo": 641_000, "veth": 576_000}
# B7: iperf3 with UDP GSO (--gsro, 3.20+) is not in Debian; ../shared/tools has its source
# and a build script, and the build goes to a cache directory outside the repository.
TOOLS_DIR = REPO.parent / "shared" / "tools"
IPERF3_GSRO_MIN = (3, 20)
GSO_SEGMENTS = 64  # datagrams per GSO buffer in the C probe (the kernel takes up to 64, 128 since 6.x)
GSO_BUFFERS_PER_CALL = 8  # the probe's second variant: this many GSO buffers per sendmmsg
GSO_SEGMENTS_IPERF3 = 128  # the third: iperf3 --gsro's buffer (the kernel's UDP_MAX_SEGMENTS since 6.x)
INGRESS_TABLE = "pktbench_bench"
INGRESS_COUNTER = "udp64"
RX_LOSS_MAX = 0.001  # B7's receiver-loss goal (0.1 %)

Metrics = dict[str, float]


class MeasureError(Exception):
    """One run of one measurement failed (tool missing, timeout, unparsable output)."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    runs: int
    duration_s: float
    locations: tuple[str, ...]
    rows: tuple[str, ...]
    b6_short_s: float
    b6_long_s: float
    b6_sessions: int
    b6_session_s: float
    wait_quiet_s: float
    invocation: str


@dataclass(frozen=True)
class Location:
    name: str  # "lo" or "veth"
    server_addr: str
    client_ns: Optional[str]
    server_ns: Optional[str]
    udp_segmentation_off: bool = False  # both veth ends: GSO buffers cross as separate packets
    ingress_counter: bool = False  # the nftables counter of 64-byte datagrams at the receiver's ingress
    gso_note: str = ""  # why the two above are not in place, when they are not


LOOPBACK = Location("lo", "127.0.0.1", None, None)


# ----------------------------------------------------------------------------- processes


@dataclass
class Finished:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    maxrss_kib: int
    wall_s: float


@dataclass
class Proc:
    argv: list[str]
    popen: subprocess.Popen[bytes]
    out: IO[bytes]  # temporary files, not pipes: a chatty tool can never block on a full pipe
    err: IO[bytes]
    t0: float
    done: Optional[Finished] = None

    @property
    def pid(self) -> int:
        return self.popen.pid


class Runner:
    """Starts pinned processes (in a namespace when asked) and stops them by process group."""

    def __init__(self, env: dict[str, str], cwd: Optional[Path] = None) -> None:
        self.env = env
        self.cwd = cwd
        self.live: dict[int, Proc] = {}
        two_cpus = (os.cpu_count() or 1) >= 2
        self.cpu = {"client": SENDER_CPU, "server": RECEIVER_CPU if two_cpus else SENDER_CPU}

    def wrap(self, loc: Location, role: str, argv: Sequence[object]) -> list[str]:
        ns = loc.server_ns if role == "server" else loc.client_ns
        pre = ["ip", "netns", "exec", ns] if ns else []
        # ip netns exec and taskset both exec(), so the PID we hold is the tool's own.
        return pre + ["taskset", "-c", self.cpu[role]] + [str(a) for a in argv]

    def spawn(self, argv: list[str]) -> Proc:
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        except FileNotFoundError as exc:
            raise MeasureError(f"{argv[0]}: not found ({exc.filename}); run benchmarks/install_tools.sh") from exc
        proc = Proc(argv, popen, out, err, time.monotonic())
        self.live[proc.pid] = proc
        return proc

    def _exited(self, proc: Proc) -> bool:
        # WNOWAIT leaves the zombie in place, so the PID (and process group id) cannot be
        # reused while we still signal the group.
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def _reap(self, proc: Proc) -> Finished:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own group (forked children)
        except (ProcessLookupError, PermissionError):
            pass
        _, status, usage = os.wait4(proc.pid, 0)
        proc.popen.returncode = os.waitstatus_to_exitcode(status)
        proc.out.seek(0)
        proc.err.seek(0)
        proc.done = Finished(proc.argv, proc.popen.returncode,
                             proc.out.read().decode(errors="replace"),
                             proc.err.read().decode(errors="replace"),
                             int(usage.ru_maxrss), time.monotonic() - proc.t0)
        proc.out.close()
        proc.err.close()
        self.live.pop(proc.pid, None)
        return proc.done

    def wait(self, proc: Proc, timeout_s: float) -> Finished:
        """Waits for a bounded client; past the timeout its group is killed and the run fails."""
        deadline = time.monotonic() + timeout_s
        while not self._exited(proc):
            if time.monotonic() > deadline:
                self.stop(proc, grace_s=0.0)
                raise MeasureError(f"{shlex.join(proc.argv)}: no exit within {timeout_s:.0f} s")
            time.sleep(0.02)
        return self._reap(proc)

    def stop(self, proc: Proc, grace_s: float = 0.0) -> Finished:
        """Lets a server exit by itself for grace_s, then SIGINT, SIGTERM, SIGKILL its group."""
        if proc.done:
            return proc.done
        for sig, wait_s in ((None, grace_s), (signal.SIGINT, 2.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if sig is not None and not self._exited(proc):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not self._exited(proc):
                time.sleep(0.02)
            if self._exited(proc):
                break
        return self._reap(proc)

    def stop_all(self) -> None:
        for proc in list(self.live.values()):
            self.stop(proc)

    def listening(self, loc: Location, port: int, proto: str, proc: Proc, timeout_s: float = 8.0) -> None:
        """Waits until something listens on port in the server's namespace (ss, no traffic)."""
        pre = ["ip", "netns", "exec", loc.server_ns] if loc.server_ns else []
        argv = pre + ["ss", "-H", "-l" + ("t" if proto == "tcp" else "u") + "n", f"sport = :{port}"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._exited(proc):
                fin = self._reap(proc)
                raise MeasureError(f"server exited early (rc {fin.rc}): {shlex.join(fin.argv)}: {fin.stderr.strip()[-300:]}")
            if subprocess.run(argv, capture_output=True, text=True).stdout.strip():
                return
            time.sleep(0.05)
        self.stop(proc)
        raise MeasureError(f"server not listening on {proto}/{port} after {timeout_s:.0f} s: {shlex.join(proc.argv)}")


def cpu_busy(interval_s: float = 0.3) -> float:
    """Fraction of all CPUs busy over interval_s (from /proc/stat), to spot foreign load."""
    def sample() -> tuple[int, int]:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle
    t0, i0 = sample()
    time.sleep(interval_s)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


QUIET_BUSY = 0.15  # above this share of both CPUs busy before a run, someone else is loading the machine


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (tools here use one number for both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise MeasureError("no free port on 127.0.0.1")


def udp_mib(loc: Location) -> dict[str, int]:
    """The Udp line of /proc/net/snmp in the receiver's namespace."""
    pre = ["ip", "netns", "exec", loc.server_ns] if loc.server_ns else []
    text = subprocess.run(pre + ["cat", "/proc/net/snmp"], capture_output=True, text=True).stdout
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def ingress_rules(dev: str, payload: int = PAYLOAD_BYTES) -> str:
    """nft script: a named counter of the IPv4 UDP datagrams of `payload` bytes arriving on dev.

    The netdev ingress hook sees each packet as the device hands it up, before any socket:
    with segmentation off on the sending veth, one per datagram; with it on, one per GSO
    buffer. Only that datagram size is counted, so the TCP control connection is not."""
    return (f"table netdev {INGRESS_TABLE} {{\n"
            f"  counter {INGRESS_COUNTER} {{ }}\n"
            f"  chain ingress {{ type filter hook ingress device \"{dev}\" priority -500; policy accept;\n"
            f"    meta protocol ip udp length {payload + 8} counter name \"{INGRESS_COUNTER}\"\n"
            "  }\n}\n")


def parse_nft_counter(text: str) -> int:
    """Packets of the named counter in `nft -j list counter ...` output."""
    try:
        items = json.loads(text)["nftables"]
        return int(next(o["counter"]["packets"] for o in items if "counter" in o))
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise MeasureError(f"nft: no counter in output ({exc}): {text[-200:]}") from exc


def ingress_packets(loc: Location) -> int:
    """The receiver's ingress counter now (cumulative; runs take differences)."""
    argv = ["ip", "netns", "exec", str(loc.server_ns), "nft", "-j", "list", "counter", "netdev",
            INGRESS_TABLE, INGRESS_COUNTER]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise MeasureError(f"nft: reading the ingress counter failed: {r.stderr.strip()[-200:]}")
    return parse_nft_counter(r.stdout)


def with_ingress(m: Metrics, ingress: int) -> Metrics:
    """Adds what the receiver's ingress counted, over the sender's own interval.

    ingress_pps = sent_pps x ingress/sent: each tool times its sending its own way, and the
    counter has no clock, so the count is scaled by the tool's own rate."""
    m["ingress_packets"] = float(ingress)
    sent = m.get("sent_packets")
    if sent:
        m["ingress_ratio"] = ingress / sent
        if "sent_pps" in m:
            m["ingress_pps"] = m["sent_pps"] * ingress / sent
    return m


# ----------------------------------------------------------------------------- testbed


class Testbed:
    """Two namespaces joined by one veth pair; removed on exit whatever happened."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}"
        self.client_ns = f"pkbench-a{tag}"
        self.server_ns = f"pkbench-b{tag}"
        self.made: list[str] = []

    def __enter__(self) -> Location:
        if os.geteuid() != 0:
            raise SystemExit("--netns needs root (it creates network namespaces); rerun as root or drop --netns")
        a, b = self.client_ns, self.server_ns
        try:
            for ns in (a, b):
                self._ip("netns", "add", ns)
                self.made.append(ns)
            self._ip("link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
            self._ip("-n", a, "addr", "add", f"{VETH_CLIENT_ADDR}/24", "dev", "va")
            self._ip("-n", b, "addr", "add", f"{VETH_SERVER_ADDR}/24", "dev", "vb")
            for ns, dev in ((a, "va"), (b, "vb")):
                self._ip("-n", ns, "link", "set", "lo", "up")
                self._ip("-n", ns, "link", "set", dev, "up")
            seg_off, why_seg = self._segmentation_off(((a, "va"), (b, "vb")))
            counter, why_counter = self._ingress_counter(b, "vb")
        except BaseException:
            self.__exit__()
            raise
        return Location("veth", VETH_SERVER_ADDR, a, b, seg_off, counter,
                        "; ".join(w for w in (why_seg, why_counter) if w))

    @staticmethod
    def _segmentation_off(ends: Sequence[tuple[str, str]]) -> tuple[bool, str]:
        """tx-udp-segmentation off on each end: a GSO buffer then leaves the veth as the
        datagrams it holds, as on a real NIC path, instead of as one packet split only at
        the receiving socket (which makes a policer or counter see one packet per buffer)."""
        if not shutil.which("ethtool"):
            return False, "ethtool missing (apt-get install ethtool): veth UDP segmentation left on"
        for ns, dev in ends:
            r = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx-udp-segmentation", "off"],
                               capture_output=True, text=True)
            shown = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", dev],
                                   capture_output=True, text=True).stdout
            if r.returncode or "tx-udp-segmentation: off" not in shown:
                return False, f"ethtool -K {dev} tx-udp-segmentation off failed: {r.stderr.strip()[-200:]}"
        return True, ""

    @staticmethod
    def _ingress_counter(ns: str, dev: str) -> tuple[bool, str]:
        if not shutil.which("nft"):
            return False, "nft missing (apt-get install nftables): no ingress counter"
        r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ingress_rules(dev),
                           capture_output=True, text=True)
        if r.returncode:
            return False, f"nft: the ingress counter could not be made: {r.stderr.strip()[-200:]}"
        return True, ""

    def __exit__(self, *exc: object) -> None:
        for ns in reversed(self.made):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()

    @staticmethod
    def _ip(*args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"testbed: `ip {' '.join(args)}` failed: {r.stderr.strip()}")


# ----------------------------------------------------------------------------- parsers


def kv_line(text: str) -> Metrics:
    """key=value tokens of the probes' one-line output (last occurrence wins)."""
    out: Metrics = {}
    for key, val in re.findall(r"(\w+)=([-+0-9.eE]+)", text):
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def parse_iperf3_udp(fin: Finished) -> Metrics:
    try:
        end = json.loads(fin.stdout)["end"]
        sent, recv = end["sum_sent"], end["sum_received"]
    except (ValueError, KeyError) as exc:
        raise MeasureError(f"iperf3: no UDP summary in output ({exc}): {fin.stdout[-300:]} {fin.stderr[-300:]}") from exc
    secs = float(sent["seconds"])
    # The receiver's "packets" is the highest sequence seen; received = packets - lost.
    received = float(recv["packets"]) - float(recv["lost_packets"])
    return {"sent_pps": sent["packets"] / secs, "received_pps": received / secs,
            "loss_ratio": float(recv["lost_packets"]) / max(float(recv["packets"]), 1.0),
            "sent_packets": float(sent["packets"]), "received_packets": received}


def parse_iperf3_tcp(fin: Finished) -> Metrics:
    try:
        end = json.loads(fin.stdout)["end"]
        return {"received_gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "sent_gbps": end["sum_sent"]["bits_per_second"] / 1e9,
                "retransmits": float(end["sum_sent"].get("retransmits", 0))}
    except (ValueError, KeyError) as exc:
        raise MeasureError(f"iperf3: no TCP summary ({exc}): {fin.stderr[-300:]}") from exc


def parse_netperf_rr(fin: Finished) -> Metrics:
    kv = dict(re.findall(r"^(\w+)=([-0-9.]+)\s*$", fin.stdout, re.M))
    if "THROUGHPUT" not in kv:
        raise MeasureError(f"netperf: no THROUGHPUT in output: {fin.stdout[-300:]} {fin.stderr[-300:]}")
    return {"trans_per_s": float(kv["THROUGHPUT"]), "rtt_p50_us": float(kv["P50_LATENCY"]),
            "rtt_p99_us": float(kv["P99_LATENCY"]), "rtt_mean_us": float(kv["MEAN_LATENCY"]),
            "rtt_min_us": float(kv["MIN_LATENCY"])}


def parse_sockperf_pp(fin: Finished) -> Metrics:
    text = fin.stdout + fin.stderr
    valid = re.search(r"\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", text)
    p50 = re.search(r"percentile 50\.000 =\s*([0-9.]+)", text)
    p99 = re.search(r"percentile 99\.000 =\s*([0-9.]+)", text)
    if not (valid and p50 and p99):
        raise MeasureError(f"sockperf: no summary in output: {text[-300:]}")
    return {"trans_per_s": int(valid.group(3)) / float(valid.group(1)),
            "rtt_p50_us": float(p50.group(1)), "rtt_p99_us": float(p99.group(1))}


def parse_redis_csv(fin: Finished) -> Metrics:
    rows = [ln.replace('"', "").split(",") for ln in fin.stdout.splitlines() if ln.startswith('"')]
    if len(rows) < 2:
        raise MeasureError(f"redis-benchmark: no CSV rows: {fin.stdout[-300:]} {fin.stderr[-300:]}")
    rec = dict(zip(rows[0], rows[1]))
    return {"req_per_s": float(rec["rps"]), "lat_p50_us": 1000 * float(rec["p50_latency_ms"]),
            "lat_p99_us": 1000 * float(rec["p99_latency_ms"]), "lat_mean_us": 1000 * float(rec["avg_latency_ms"])}


def parse_pingpong(fin: Finished) -> Metrics:
    kv = kv_line(fin.stdout)
    if not kv.get("transactions"):
        raise MeasureError(f"pingpong: no transactions: {fin.stdout[-300:]} {fin.stderr[-300:]}")
    return {k: kv[k] for k in ("trans_per_s", "rtt_p50_us", "rtt_p99_us", "rtt_min_us", "rtt_mean_us", "lost")}


def parse_blast_sink(cli: Finished, srv: Optional[Finished]) -> Metrics:
    tx = kv_line(cli.stdout)
    rx = kv_line(srv.stdout if srv else "")
    if "sent_packets" not in tx or "received_packets" not in rx:
        raise MeasureError(f"C probe: missing counts: {cli.stdout.strip()} | {srv.stdout.strip() if srv else ''} {cli.stderr[-200:]}")
    # Received over the sender's interval, as iperf3 reports it, so the two compare.
    m = {"sent_pps": tx["sent_pps"], "received_pps": rx["received_packets"] / tx["elapsed_s"],
         "loss_ratio": 1.0 - rx["received_packets"] / max(tx["sent_packets"], 1.0),
         "rxq_ovfl": rx.get("rxq_ovfl", 0.0), "sent_packets": tx["sent_packets"],
         "received_packets": rx["received_packets"]}
    if "sends" in tx:  # the GSO probe: datagrams per send actually achieved
        m["segments_per_send"] = tx["sent_packets"] / max(tx["sends"], 1.0)
    return m


def _dig(doc: object, dotted: str) -> Optional[float]:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    if isinstance(doc, bool):
        return float(doc)
    return float(doc) if isinstance(doc, (int, float)) else None


def parse_pktbench_json(path: Path) -> Metrics:
    """Maps pktbench's result (one step, or a document whose last step counts) to row metrics."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MeasureError(f"pktbench: no JSON result at {path}: {exc}") from exc
    top = doc
    if isinstance(doc, dict) and doc.get("steps"):
        doc = doc["steps"][-1]
    wanted = {
        "sent_pps": "sent_pps", "received_pps": "received_pps", "loss_ratio": "loss_ratio",
        "sent_packets": "sent_packets", "received_packets": "received_packets",
        "rtt_p50_us": "latency_us.p50", "rtt_p99_us": "latency_us.p99",
        "send_lag_p99_us": "send_lag_us.p99", "sender_bound": "sender_bound",
    }
    out = {k: v for k, v in ((k, _dig(doc, p)) for k, p in wanted.items()) if v is not None}
    for name in ("received", "sent"):  # results before schema 3 said Mbit/s in _mbps
        bps = _dig(doc, f"{name}_bps")
        mbps = bps / 1e6 if bps is not None else _dig(doc, f"{name}_mbps")
        if mbps is not None:
            out[f"{name}_mbps"] = mbps
    if "received_pps" in out:  # the same figure under each row's name
        out["trans_per_s"] = out["req_per_s"] = out["received_pps"]
    if "rtt_p50_us" in out:
        out["lat_p50_us"], out["lat_p99_us"] = out["rtt_p50_us"], out.get("rtt_p99_us", float("nan"))
    gbps = _dig(doc, "received_gbps")
    bulk_bps = _dig(doc, "aggregate_bps")  # pktbench bulk's goodput
    if bulk_bps is None:
        bulk_bps = _dig(doc, "aggregate_bits_per_second")  # before schema 3
    if gbps is None and bulk_bps is not None:
        gbps = bulk_bps / 1e9
    if gbps is None and "received_mbps" in out:
        gbps = out["received_mbps"] / 1000.0
    if gbps is not None:
        out["received_gbps"] = gbps
    # Which send/receive path ran (GSO, GRO, datagrams per send): in the step, or in the
    # document's engine/environment record.
    for key in ("udp_gso", "udp_gro", "gso_segments", "gso_segments_mean", "burst_packets"):
        for where in (doc, top):
            for prefix in ("engine.", "environment.engine.", "environment.", ""):
                got = _dig(where, prefix + key)
                if got is not None and key not in out:
                    out[key] = got
    if not out:
        raise MeasureError(f"pktbench: {path} has none of the expected keys")
    return out


# ----------------------------------------------------------------------------- PKTBENCH
# The only place that knows pktbench's command line. Adjust here when the CLI settles.


@dataclass(frozen=True)
class PktbenchCli:
    argv: tuple[str, ...]  # how to invoke it, e.g. ("pktbench",)
    available: bool
    reason: str  # why not available (shown as "pending: ...")
    serve_bind: bool = False  # serve accepts --bind ADDR
    serve_busy_poll: bool = False  # serve accepts --busy-poll
    what: str = ""  # which build this is, as the console and the markdown say it
    run_gso: bool = False  # run accepts --gso auto|on|off (UDP GSO blast)
    run_workers: bool = False  # run accepts --workers N


def find_pktbench(override: Optional[str], env: dict[str, str], what: str = "",
                  cwd: Optional[Path] = None) -> PktbenchCli:
    argv = tuple(shlex.split(override)) if override else ("pktbench",)

    def helptext(*sub: str) -> Optional[str]:
        try:
            r = subprocess.run([*argv, *sub, "--help"], capture_output=True, text=True, env=env, timeout=30,
                               cwd=cwd)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout if r.returncode == 0 else None

    what = what or shlex.join(argv)
    run_help, serve_help = helptext("run"), helptext("serve")
    if run_help is None or serve_help is None:
        return PktbenchCli(argv, False, "pktbench CLI has no `run`/`serve` yet", what=what)
    if "--workload" not in run_help or "--json" not in run_help:
        return PktbenchCli(argv, False, "`pktbench run` lacks --workload/--json", what=what)
    return PktbenchCli(argv, True, "", "--bind" in serve_help, "--busy-poll" in serve_help, what=what,
                       run_gso="--gso" in run_help, run_workers="--workers" in run_help)


# The CLI of the pktbench importable from `root` (a source tree with its engine built in
# place), or of this Python's installed package when root is None. `env PYTHONPATH=`
# rather than a sys.path edit, so processes pktbench itself starts import the same build.
_CLI_MAIN = "import sys; from pktbench.cli import main; sys.exit(main())"


def cli_argv(root: Optional[Path]) -> tuple[str, ...]:
    if root is None:
        return (sys.executable, "-c", _CLI_MAIN)
    return ("env", f"PYTHONPATH={root}", sys.executable, "-c", _CLI_MAIN)


def has_inplace_engine(root: Path) -> bool:
    return any((root / "pktbench").glob("_engine*.so"))


def build_in_place(root: Path, label: str) -> None:
    """`python setup.py build_ext --inplace` in root (incremental: quick when nothing changed)."""
    print(f"building {label} in place: python setup.py build_ext --inplace (in {root})", flush=True)
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root,
                           capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"building {label} took over 900 s; gave up")
    if r.returncode != 0 or not has_inplace_engine(root):
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"building {label} in place failed (needs a C compiler and Cython>=3.1): {tail}")
    print(f"  built in {time.monotonic() - t0:.0f} s", flush=True)


def installed_package(env: dict[str, str], cwd: Path) -> Optional[str]:
    """Where this Python's installed pktbench is, if it has its engine; run outside the tree."""
    code = ("import os, pktbench, pktbench.engine as e; "
            "print(pktbench.__version__, 'with the', e.ENGINE_NAME, 'engine, in', os.path.dirname(pktbench.__file__))")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, cwd=cwd, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def current_build(mode: str, env: dict[str, str], cwd: Path) -> tuple[tuple[str, ...], str]:
    """(argv, what) of the build measured as "current".

    auto: this tree when it has an in-place build (rebuilt incrementally, so it is the
    checked-out code), else the installed package (a fresh clone after `pip install .`),
    else this tree built in place now.
    """
    installed = installed_package(env, cwd) if mode != "tree" else None
    if mode == "installed" or (mode == "auto" and installed and not has_inplace_engine(REPO)):
        if not installed:
            raise SystemExit("--build installed: this Python has no pktbench with its compiled engine "
                             "(pip install . first)")
        return cli_argv(None), f"installed package {installed}"
    build_in_place(REPO, "this source tree")
    return cli_argv(REPO), f"this source tree ({git_describe(REPO)}), built in place"


def git_describe(root: Path, rev: str = "HEAD") -> str:
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "--verify", f"{rev}^{{commit}}"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not a git checkout"
    if r.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return r.stdout.strip() + (" with uncommitted changes" if dirty and rev == "HEAD" else "")


def baseline_build(rev: str, tmp: Path) -> tuple[tuple[str, ...], str]:
    """Export git revision `rev` of this repository into tmp and build it in place there."""
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a revision of this repository")
    sha = r.stdout.strip()
    src = tmp / f"baseline-{sha[:10]}"
    src.mkdir()
    archive = tmp / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), sha],
                   check=True, timeout=120)
    subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(src)], check=True, timeout=120)
    archive.unlink()
    build_in_place(src, f"baseline {rev} ({sha[:10]})")
    return cli_argv(src), f"baseline {rev} ({sha[:10]}), built in place in a temporary directory"


def pktbench_serve(h: "Harness", loc: Location, port: int, busy_poll: bool = False) -> list[str]:
    cli = h.pkt
    argv = [*cli.argv, "serve", "--port", str(port)]
    if cli.serve_bind:
        argv += ["--bind", loc.server_addr]
    if busy_poll and cli.serve_busy_poll:
        argv += ["--busy-poll"]
    return argv


def pktbench_run(h: "Harness", target: str, args: Sequence[object], json_path: Path,
                 command: str = "run") -> list[str]:
    return [*h.pkt.argv, command, target, *[str(a) for a in args], "--json", str(json_path)]


def pktbench_plan(h: "Harness", loc: Location, port: int, args: Sequence[object], name: str,
                  busy_poll: bool = False, server: Optional[Sequence[object]] = None,
                  target: Optional[str] = None, command: str = "run") -> "Plan":
    path = h.tmp / f"{name}-{loc.name}-{time.monotonic_ns()}.json"
    return Plan(client=pktbench_run(h, target or f"{loc.server_addr}:{port}", args, path, command),
                server=server if server is not None else pktbench_serve(h, loc, port, busy_poll),
                parse=lambda cli, srv: _pktbench_result(cli, path),
                timeout_s=h.s.duration_s + 60)


def _pktbench_result(cli: Finished, path: Path) -> Metrics:
    if cli.rc != 0 and not path.exists():
        raise MeasureError(f"pktbench run exited {cli.rc}: {cli.stderr.strip()[-300:]}")
    return parse_pktbench_json(path)


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Plan:
    client: Sequence[object]  # str() of each item is the argument (paths, ints)
    parse: Callable[[Finished, Optional[Finished]], Metrics]
    server: Optional[Sequence[object]] = None
    server_proto: str = "tcp"
    server_exit_grace_s: float = 0.0  # servers that exit by themselves and print results
    timeout_s: float = 60.0
    udp_mib: bool = False
    ingress: bool = False  # read the receiver's ingress counter around the run (B7)


@dataclass(frozen=True)
class Measurement:
    key: str
    label: str
    is_pktbench: bool
    show: tuple[str, ...]  # metrics printed in the summary
    plan: Optional[Callable[["Harness", Location, int], Plan]] = None
    custom: Optional[Callable[["Harness", Location], Metrics]] = None
    build: str = "current"  # which pktbench build a pktbench measurement runs ("current", "baseline")
    skip: str = ""  # when set, the measurement cannot run here; this says why (shown as "skipped")


@dataclass(frozen=True)
class Target:
    goal: str
    subject: tuple[str, str]  # (measurement key, metric)
    reference: "tuple[str, str] | float"
    low: Optional[float] = None  # ratio must be >= low
    high: Optional[float] = None  # ratio must be <= high
    beside: Optional[tuple[str, str]] = None  # shown as the reference tool's own ratio


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    measurements: tuple[Measurement, ...]
    targets: tuple[Target, ...]
    notes: tuple[str, ...] = ()


@dataclass
class Outcome:
    row: str
    where: str
    runs: dict[str, list[Metrics]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    commands: dict[str, dict[str, str]] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def median(self, key: str, metric: str) -> Optional[float]:
        vals = [r[metric] for r in self.runs.get(key, []) if metric in r and np.isfinite(r[metric])]
        return float(np.median(vals)) if vals else None


# ----------------------------------------------------------------------------- rows


def _d(h: "Harness") -> str:
    return f"{h.s.duration_s:g}"


def _di(h: "Harness") -> str:  # netperf and sockperf take whole seconds
    return str(max(1, int(round(h.s.duration_s))))


def iperf3_udp(rate_pps: Optional[int]) -> Callable[["Harness", Location, int], Plan]:
    def plan(h: "Harness", loc: Location, port: int) -> Plan:
        bitrate = "0" if rate_pps is None else str(rate_pps * PAYLOAD_BYTES * 8)  # -b counts payload bits
        return Plan(server=["iperf3", "-s", "-1", "-B", loc.server_addr, "-p", str(port)],
                    client=["iperf3", "-c", loc.server_addr, "-p", str(port), "-u", "-l", str(PAYLOAD_BYTES),
                            "-b", bitrate, "-t", _d(h), "-J"],
                    parse=lambda c, s: _with_ratio(parse_iperf3_udp(c), rate_pps),
                    server_exit_grace_s=2.0, udp_mib=True, timeout_s=h.s.duration_s + 30)
    return plan


def _with_ratio(m: Metrics, rate_pps: Optional[int]) -> Metrics:
    if rate_pps:
        m["achieved_ratio"] = m["sent_pps"] / rate_pps
    return m


def row_b1(h: "Harness", loc: Location) -> Row:
    def c_probe(h: "Harness", loc: Location, port: int) -> Plan:
        return Plan(server=[PROBES / "sink", "-b", loc.server_addr, "-p", port, "-t", f"{h.s.duration_s + 15:g}",
                            "-i", "0.5", "-R", SINK_RCVBUF_BYTES],
                    client=[PROBES / "blast", "-d", loc.server_addr, "-p", port, "-s", PAYLOAD_BYTES,
                            "-b", 64, "-t", _d(h)],
                    parse=parse_blast_sink, server_proto="udp", server_exit_grace_s=5.0, udp_mib=True,
                    timeout_s=h.s.duration_s + 15)

    def pkt(h: "Harness", loc: Location, port: int) -> Plan:
        return pktbench_plan(h, loc, port, ["--workload", "blast", "--rate", "max", "--size", PAYLOAD_BYTES,
                                            "--duration", _d(h)], "b1")

    pps = ("sent_pps", "received_pps", "loss_ratio")
    return Row("B1", "UDP 64-byte blast, one sender process", (
        Measurement("iperf3_udp64", "iperf3 -u -l 64 -b 0", False, pps, plan=iperf3_udp(None)),
        Measurement("c_sendmmsg", "C sendmmsg 64x64 B -> recvmmsg sink, 4 MiB rcvbuf", False, pps, plan=c_probe),
        Measurement("pktbench_blast", "pktbench blast --rate max", True, pps + ("sender_bound",), plan=pkt),
    ), (
        Target("sent pps >= 1.05x iperf3", ("pktbench_blast", "sent_pps"), ("iperf3_udp64", "sent_pps"), low=1.05),
        Target("received pps >= 1.05x iperf3", ("pktbench_blast", "received_pps"), ("iperf3_udp64", "received_pps"), low=1.05),
        Target("sent pps >= 0.95x C sendmmsg", ("pktbench_blast", "sent_pps"), ("c_sendmmsg", "sent_pps"), low=0.95),
        Target("received pps >= 0.95x C sendmmsg", ("pktbench_blast", "received_pps"), ("c_sendmmsg", "received_pps"), low=0.95),
    ))


def row_b2(h: "Harness", loc: Location) -> Row:
    a = loc.server_addr

    def netperf(h: "Harness", loc: Location, port: int) -> Plan:
        return Plan(server=["netserver", "-D", "-4", "-L", a, "-p", str(port)],
                    client=["netperf", "-j", "-H", a, "-p", str(port), "-t", "UDP_RR", "-l", _di(h), "--",
                            "-r", f"{PAYLOAD_BYTES},{PAYLOAD_BYTES}",
                            "-k", "THROUGHPUT,MEAN_LATENCY,P50_LATENCY,P99_LATENCY,MIN_LATENCY"],
                    parse=lambda c, s: parse_netperf_rr(c), timeout_s=h.s.duration_s + 30)

    def sockperf(h: "Harness", loc: Location, port: int) -> Plan:
        return Plan(server=["sockperf", "sr", "-i", a, "-p", str(port)], server_proto="udp",
                    client=["sockperf", "pp", "-i", a, "-p", str(port), "-m", str(PAYLOAD_BYTES), "-t", _di(h),
                            "--full-rtt"],
                    parse=lambda c, s: parse_sockperf_pp(c), timeout_s=h.s.duration_s + 30)

    def c_busy(h: "Harness", loc: Location, port: int) -> Plan:
        return Plan(server=[PROBES / "pingpong", "-S", "-y", "-b", a, "-p", port, "-t", f"{h.s.duration_s + 15:g}",
                            "-i", "0.5"], server_proto="udp", server_exit_grace_s=3.0,
                    client=[PROBES / "pingpong", "-y", "-c", a, "-p", port, "-s", PAYLOAD_BYTES, "-t", _d(h)],
                    parse=lambda c, s: parse_pingpong(c), timeout_s=h.s.duration_s + 15)

    def pkt(busy: bool) -> Callable[["Harness", Location, int], Plan]:
        def plan(h: "Harness", loc: Location, port: int) -> Plan:
            args: list[object] = ["--workload", "rr", "--rate", "max", "--outstanding", 1, "--size", PAYLOAD_BYTES, "--duration", _d(h)]
            return pktbench_plan(h, loc, port, [str(x) for x in args] + (["--busy-poll"] if busy else []),
                                 "b2busy" if busy else "b2", busy_poll=busy)
        return plan

    rr = ("trans_per_s", "rtt_p50_us", "rtt_p99_us")
    return Row("B2", "UDP request/response, one outstanding", (
        Measurement("netperf_udp_rr", "netperf UDP_RR 64/64", False, rr, plan=netperf),
        Measurement("sockperf_pp", "sockperf ping-pong 64 B --full-rtt", False, rr, plan=sockperf),
        Measurement("c_pingpong_busy", "C ping-pong, both ends busy-poll", False, rr, plan=c_busy),
        Measurement("pktbench_rr", "pktbench rr --rate max --outstanding 1 (blocking)", True, rr, plan=pkt(False)),
        Measurement("pktbench_rr_busy", "pktbench rr --rate max --outstanding 1 --busy-poll", True, rr, plan=pkt(True)),
    ), (
        Target("trans/s >= netperf UDP_RR", ("pktbench_rr", "trans_per_s"), ("netperf_udp_rr", "trans_per_s"), low=1.0),
        Target("RTT p50 within 10% of sockperf pp", ("pktbench_rr", "rtt_p50_us"), ("sockperf_pp", "rtt_p50_us"), high=1.10),
        Target("busy-poll RTT p50 <= 1.3x C busy-poll", ("pktbench_rr_busy", "rtt_p50_us"), ("c_pingpong_busy", "rtt_p50_us"), high=1.30),
    ), ("latency goals are one-sided: lower than the reference passes",))


def b1_max_pps(h: "Harness", loc: Location) -> tuple[int, str]:
    for key, what in (("pktbench_blast", "pktbench B1 median"), ("c_sendmmsg", "C sendmmsg B1 median")):
        got = h.lookup("B1", loc.name, key, "sent_pps")
        if got:
            return int(got), what
    return ANCHOR_C_SENDMMSG_PPS.get(loc.name, 600_000), "C sendmmsg anchor (ANCHORS.md)"


def row_b3(h: "Harness", loc: Location) -> Row:
    top, basis = b1_max_pps(h, loc)
    rates = [(1_000, "1k"), (10_000, "10k"), (100_000, "100k"), (int(0.8 * top), "80%max")]
    ms: list[Measurement] = []
    ts: list[Target] = []
    for rate, label in rates:
        def pkt(h: "Harness", loc: Location, port: int, rate: int = rate, label: str = label) -> Plan:
            return pktbench_plan(h, loc, port, ["--workload", "blast", "--rate", str(rate), "--size", str(PAYLOAD_BYTES),
                                                "--duration", _d(h)], f"b3-{label}")
        ref_key, pkt_key = f"iperf3_{label}", f"pktbench_{label}"
        ms.append(Measurement(ref_key, f"iperf3 -u -l 64 -b {rate * 512} ({rate} pps)", False,
                              ("sent_pps", "achieved_ratio", "received_pps"), plan=iperf3_udp(rate)))
        def paced(h: "Harness", loc: Location, port: int, f: Callable[..., Plan] = pkt, r: int = rate) -> Plan:
            return _ratio_plan(f(h, loc, port), r)

        ms.append(Measurement(pkt_key, f"pktbench blast --rate {rate}", True,
                              ("sent_pps", "received_pps", "send_lag_p99_us"), plan=paced))
        ts.append(Target(f"achieved/offered at {label} ({rate} pps) within +-0.5%", (pkt_key, "sent_pps"), float(rate),
                         low=0.995, high=1.005, beside=(ref_key, "sent_pps")))
    return Row("B3", "pacing accuracy", tuple(ms), tuple(ts),
               (f"80%max = 0.8 x {top} pps ({basis})", "send-lag p99 is reported, not judged"))


def _ratio_plan(plan: Plan, rate: int) -> Plan:
    inner = plan.parse
    return Plan(plan.client, lambda c, s: _with_ratio(inner(c, s), rate), plan.server, plan.server_proto,
                plan.server_exit_grace_s, plan.timeout_s, plan.udp_mib)


def row_b4(h: "Harness", loc: Location) -> Row:
    ms: list[Measurement] = []
    ts: list[Target] = []
    # Same streams and the same bytes per write for both tools: iperf3's default
    # 128 KiB, and 1 MiB (pktbench's default, where the syscall rate stops
    # mattering on loopback).
    for streams, write in ((1, "128K"), (4, "128K"), (1, "1M"), (4, "1M")):
        write_bytes = 131072 if write == "128K" else 1048576
        tag = f"{streams}_{write}"

        def ref(h: "Harness", loc: Location, port: int, n: int = streams, w: str = write) -> Plan:
            extra = ["-P", str(n)] if n > 1 else []
            return Plan(server=["iperf3", "-s", "-1", "-B", loc.server_addr, "-p", str(port)],
                        client=["iperf3", "-c", loc.server_addr, "-p", str(port), *extra, "-l", w,
                                "-t", _d(h), "-J"],
                        parse=lambda c, s: parse_iperf3_tcp(c), server_exit_grace_s=2.0,
                        timeout_s=h.s.duration_s + 30)

        def pkt(h: "Harness", loc: Location, port: int, n: int = streams, wb: int = write_bytes,
                t: str = tag) -> Plan:
            return pktbench_plan(h, loc, port, ["--streams", str(n), "--write-size", str(wb),
                                                "--duration", _d(h), "--quiet"], f"b4-{t}",
                                 command="bulk")

        ms.append(Measurement(f"iperf3_tcp{tag}", f"iperf3 TCP -P {streams} -l {write}", False,
                              ("received_gbps", "retransmits"), plan=ref))
        ms.append(Measurement(f"pktbench_bulk{tag}",
                              f"pktbench bulk --streams {streams} --write-size {write_bytes}", True,
                              ("received_gbps",), plan=pkt))
        ts.append(Target(f"Gbit/s >= 0.95x iperf3, {streams} stream(s), {write} writes",
                         (f"pktbench_bulk{tag}", "received_gbps"),
                         (f"iperf3_tcp{tag}", "received_gbps"), low=0.95))
    return Row("B4", "TCP bulk", tuple(ms), tuple(ts))


def redis_server(h: "Harness", loc: Location, port: int) -> list[str]:
    # Bound to one loopback/testbed address only, so protected mode (which would refuse
    # the testbed client without a password) is off without exposing anything.
    return ["redis-server", "--bind", loc.server_addr, "--port", str(port), "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", str(h.tmp), "--logfile", "", "--daemonize", "no"]


def row_b5(h: "Harness", loc: Location) -> Row:
    ms: list[Measurement] = []
    ts: list[Target] = []
    for (c, p), expect in ANCHOR_REDIS_RPS.items():
        tag = f"c{c}P{p}"

        def ref(h: "Harness", loc: Location, port: int, c: int = c, p: int = p, expect: int = expect) -> Plan:
            n = max(1000, int(expect * h.s.duration_s))  # count-based: sized to ~duration at the anchor rate
            return Plan(server=redis_server(h, loc, port),
                        client=["redis-benchmark", "-h", loc.server_addr, "-p", str(port), "-c", str(c), "-P", str(p),
                                "-t", "get", "-n", str(n), "--csv"],
                        parse=lambda cl, s: parse_redis_csv(cl), timeout_s=h.s.duration_s * 4 + 30)

        def pkt(h: "Harness", loc: Location, port: int, c: int = c, p: int = p, tag: str = tag) -> Plan:
            return pktbench_plan(h, loc, port, ["--workload", "rr", "--command", "get", "--connections", str(c),
                                                "--pipeline", str(p), "--rate", "max", "--duration", _d(h)],
                                 f"b5-{tag}", server=redis_server(h, loc, port),
                                 target=f"redis://{loc.server_addr}:{port}")

        show = ("req_per_s", "lat_p50_us", "lat_p99_us")
        ms.append(Measurement(f"redis_bench_{tag}", f"redis-benchmark -t get -c {c} -P {p}", False, show, plan=ref))
        ms.append(Measurement(f"pktbench_redis_{tag}", f"pktbench rr redis:// GET -c {c} -P {p}", True, show, plan=pkt))
        ts.append(Target(f"GET rate >= 0.9x redis-benchmark -c {c} -P {p}", (f"pktbench_redis_{tag}", "req_per_s"),
                         (f"redis_bench_{tag}", "req_per_s"), low=0.90))
        for q in ("p50", "p99"):
            ts.append(Target(f"latency {q} within 10% (-c {c} -P {p})", (f"pktbench_redis_{tag}", f"lat_{q}_us"),
                             (f"redis_bench_{tag}", f"lat_{q}_us"), high=1.10))
    return Row("B5", "TCP RESP GET against redis-server", tuple(ms), tuple(ts),
               ("latency goals are one-sided: lower than redis-benchmark passes",))


def row_b6(h: "Harness", loc: Location) -> Row:
    def step(seconds: float) -> Callable[["Harness", Location], Metrics]:
        def run(h: "Harness", loc: Location) -> Metrics:
            return b6_step(h, loc, seconds)
        return run

    return Row("B6", "memory", (
        Measurement("pktbench_rss_short", f"pktbench blast max, {h.s.b6_short_s:g} s step", True,
                    ("client_peak_rss_kib", "server_peak_rss_kib"), custom=step(h.s.b6_short_s)),
        Measurement("pktbench_rss_long", f"pktbench blast max, {h.s.b6_long_s:g} s step", True,
                    ("client_peak_rss_kib", "server_peak_rss_kib"), custom=step(h.s.b6_long_s)),
        Measurement("pktbench_sessions", f"pktbench serve across {h.s.b6_sessions} sessions", True,
                    ("rss_first_kib", "rss_last_kib", "rss_max_kib"), custom=b6_sessions),
    ), (
        Target(f"client peak RSS {h.s.b6_long_s:g} s within 10% of {h.s.b6_short_s:g} s",
               ("pktbench_rss_long", "client_peak_rss_kib"), ("pktbench_rss_short", "client_peak_rss_kib"), high=1.10),
        Target(f"server peak RSS {h.s.b6_long_s:g} s within 10% of {h.s.b6_short_s:g} s",
               ("pktbench_rss_long", "server_peak_rss_kib"), ("pktbench_rss_short", "server_peak_rss_kib"), high=1.10),
        Target(f"server RSS flat over {h.s.b6_sessions} sessions (last/first <= 1.10)",
               ("pktbench_sessions", "rss_last_kib"), ("pktbench_sessions", "rss_first_kib"), high=1.10),
    ), ("no reference tool: pktbench against itself",))


def proc_status_kib(pid: int, field_name: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return float(m.group(1)) if m else float("nan")


def b6_step(h: "Harness", loc: Location, seconds: float) -> Metrics:
    port = free_port()
    srv = h.runner.spawn(h.runner.wrap(loc, "server", pktbench_serve(h, loc, port)))
    try:
        h.runner.listening(loc, port, "tcp", srv)
        path = h.tmp / f"b6-{time.monotonic_ns()}.json"
        argv = h.runner.wrap(loc, "client", pktbench_run(h, f"{loc.server_addr}:{port}",
                             ["--workload", "blast", "--rate", "max", "--size", str(PAYLOAD_BYTES),
                              "--duration", f"{seconds:g}"], path))
        h.note_command(argv, srv.argv)
        cli = h.runner.wait(h.runner.spawn(argv), seconds + 60)
        if cli.rc != 0:
            raise MeasureError(f"pktbench run exited {cli.rc}: {cli.stderr.strip()[-300:]}")
        server_hwm = proc_status_kib(srv.pid, "VmHWM")
    finally:
        h.runner.stop(srv)
    return {"client_peak_rss_kib": float(cli.maxrss_kib), "server_peak_rss_kib": server_hwm}


def b6_sessions(h: "Harness", loc: Location) -> Metrics:
    port = free_port()
    srv = h.runner.spawn(h.runner.wrap(loc, "server", pktbench_serve(h, loc, port)))
    rss: list[float] = []
    try:
        h.runner.listening(loc, port, "tcp", srv)
        for i in range(h.s.b6_sessions):
            path = h.tmp / f"b6s-{i}-{time.monotonic_ns()}.json"
            argv = h.runner.wrap(loc, "client", pktbench_run(h, f"{loc.server_addr}:{port}",
                                 ["--workload", "blast", "--rate", "max", "--size", str(PAYLOAD_BYTES),
                                  "--duration", f"{h.s.b6_session_s:g}"], path))
            if i == 0:
                h.note_command(argv, srv.argv)
            cli = h.runner.wait(h.runner.spawn(argv), h.s.b6_session_s + 60)
            if cli.rc != 0:
                raise MeasureError(f"pktbench run exited {cli.rc} in session {i}: {cli.stderr.strip()[-300:]}")
            time.sleep(0.3)  # let the server finish tearing the session down
            rss.append(proc_status_kib(srv.pid, "VmRSS"))
    finally:
        h.runner.stop(srv)
    return {"rss_first_kib": rss[0], "rss_last_kib": rss[-1], "rss_max_kib": max(rss)}


def iperf3_plan(binary: str, streams: int = 1) -> Callable[["Harness", Location, int], Plan]:
    """iperf3 3.20+ with UDP GSO on send and GRO on receive (--gsro), 64-byte datagrams."""
    def plan(h: "Harness", loc: Location, port: int) -> Plan:
        extra = ["-P", str(streams)] if streams > 1 else []
        return Plan(server=[binary, "-s", "-1", "-B", loc.server_addr, "-p", str(port)],
                    client=[binary, "-c", loc.server_addr, "-p", str(port), "-u", "--gsro", "-l", str(PAYLOAD_BYTES),
                            "-b", "0", *extra, "-t", _d(h), "-J"],
                    parse=lambda c, s: parse_iperf3_udp(c), server_exit_grace_s=2.0, udp_mib=True, ingress=True,
                    timeout_s=h.s.duration_s + 30)
    return plan


def c_gso_plan(segments: int, buffers: int) -> Callable[["Harness", Location, int], Plan]:
    """probe/gsoblast (UDP_SEGMENT) -> probe/sink -G (UDP_GRO, counts each buffer's datagrams)."""
    def plan(h: "Harness", loc: Location, port: int) -> Plan:
        return Plan(server=[PROBES / "sink", "-b", loc.server_addr, "-p", port, "-t", f"{h.s.duration_s + 15:g}",
                            "-i", "0.5", "-R", SINK_RCVBUF_BYTES, "-G"],
                    client=[PROBES / "gsoblast", "-d", loc.server_addr, "-p", port, "-s", PAYLOAD_BYTES,
                            "-g", segments, "-m", buffers, "-t", _d(h)],
                    parse=parse_blast_sink, server_proto="udp", server_exit_grace_s=5.0, udp_mib=True,
                    ingress=True, timeout_s=h.s.duration_s + 15)
    return plan


def c_sendmmsg_plan(h: "Harness", loc: Location, port: int) -> Plan:
    """The per-datagram reference: probe/blast (sendmmsg, 64 a call) -> probe/sink."""
    return Plan(server=[PROBES / "sink", "-b", loc.server_addr, "-p", port, "-t", f"{h.s.duration_s + 15:g}",
                        "-i", "0.5", "-R", SINK_RCVBUF_BYTES],
                client=[PROBES / "blast", "-d", loc.server_addr, "-p", port, "-s", PAYLOAD_BYTES,
                        "-b", 64, "-t", _d(h)],
                parse=parse_blast_sink, server_proto="udp", server_exit_grace_s=5.0, udp_mib=True,
                ingress=True, timeout_s=h.s.duration_s + 15)


def pktbench_gso_args(h: "Harness", workers: int = 1) -> list[str]:
    """pktbench blast at max rate; with GSO forced on when this build has --gso (so a
    missing GSO path fails the run instead of measuring the per-datagram one)."""
    args = ["--workload", "blast", "--rate", "max", "--size", str(PAYLOAD_BYTES), "--duration", _d(h)]
    if h.pkt.run_gso:
        args += ["--gso", "on"]
    if workers > 1:
        args += ["--workers", str(workers)]
    return args


def row_b7(h: "Harness", loc: Location) -> Row:
    def pkt(workers: int) -> Callable[["Harness", Location, int], Plan]:
        def plan(h: "Harness", loc: Location, port: int) -> Plan:
            p = pktbench_plan(h, loc, port, pktbench_gso_args(h, workers), f"b7-w{workers}")
            return dataclasses.replace(p, ingress=True, udp_mib=True)
        return plan

    path = "" if loc.udp_segmentation_off and loc.ingress_counter else (loc.gso_note or "testbed not set up")
    iperf, why_iperf = h.iperf3_gsro, h.iperf3_gsro_note
    iperf_skip = path or ("" if iperf else why_iperf or "no iperf3 with --gsro")
    cli = h.builds["current"]
    w2_skip = path or ("" if cli.run_workers or not cli.available else "this pktbench has no --workers")
    pps = ("sent_pps", "ingress_pps", "received_pps", "loss_ratio")
    # One label for a measurement and its baseline twin: say what each build was given.
    gso_builds = [b.run_gso for b in h.builds.values()]
    gso_label = (" --gso on" if all(gso_builds) else
                 " (--gso on where the build has it)" if any(gso_builds) else " (a build without --gso)")
    ms = (
        Measurement("iperf3_gsro", "iperf3 3.21 -u --gsro -l 64 -b 0", False, pps,
                    plan=iperf3_plan(iperf or "iperf3"), skip=iperf_skip),
        Measurement("c_gso", f"C UDP_SEGMENT {GSO_SEGMENTS} x 64 B a send -> recvmmsg sink, UDP_GRO", False, pps,
                    plan=c_gso_plan(GSO_SEGMENTS, 1), skip=path),
        Measurement("c_gso_mmsg", f"C UDP_SEGMENT {GSO_SEGMENTS} x 64 B, {GSO_BUFFERS_PER_CALL} buffers a "
                    "sendmmsg -> sink, UDP_GRO", False, pps,
                    plan=c_gso_plan(GSO_SEGMENTS, GSO_BUFFERS_PER_CALL), skip=path),
        Measurement("c_gso128", f"C UDP_SEGMENT {GSO_SEGMENTS_IPERF3} x 64 B a send (as iperf3 --gsro) -> sink, "
                    "UDP_GRO", False, pps, plan=c_gso_plan(GSO_SEGMENTS_IPERF3, 1), skip=path),
        Measurement("c_sendmmsg", "C sendmmsg 64x64 B (per datagram) -> recvmmsg sink", False, pps,
                    plan=c_sendmmsg_plan, skip=path),
        Measurement("pktbench_gso", "pktbench blast --rate max" + gso_label, True,
                    pps + ("sender_bound", "udp_gso", "udp_gro", "gso_segments_mean"), plan=pkt(1), skip=path),
        Measurement("iperf3_gsro_p2", "iperf3 3.21 -u --gsro -l 64 -b 0 -P 2", False, pps,
                    plan=iperf3_plan(iperf or "iperf3", 2), skip=iperf_skip),
        Measurement("pktbench_gso_w2", "pktbench blast --rate max --workers 2" + gso_label, True,
                    pps + ("udp_gso", "udp_gro", "gso_segments_mean"), plan=pkt(2), skip=w2_skip),
    )
    loss = float(RX_LOSS_MAX)
    ts = (
        Target("sent pps >= 1.1x iperf3 --gsro", ("pktbench_gso", "sent_pps"), ("iperf3_gsro", "sent_pps"), low=1.1),
        Target("ingress pps >= 1.1x iperf3 --gsro", ("pktbench_gso", "ingress_pps"), ("iperf3_gsro", "ingress_pps"),
               low=1.1),
        Target(f"receiver loss <= {loss:.1%} (ratio = loss / {loss:.1%})", ("pktbench_gso", "loss_ratio"), loss,
               high=1.0),
        Target(f"sent pps >= 0.9x C UDP_SEGMENT {GSO_SEGMENTS}/send", ("pktbench_gso", "sent_pps"),
               ("c_gso", "sent_pps"), low=0.9),
        Target(f"sent pps >= 0.9x C UDP_SEGMENT {GSO_SEGMENTS}/send x {GSO_BUFFERS_PER_CALL}/sendmmsg",
               ("pktbench_gso", "sent_pps"), ("c_gso_mmsg", "sent_pps"), low=0.9),
        Target(f"sent pps >= 0.9x C UDP_SEGMENT {GSO_SEGMENTS_IPERF3}/send", ("pktbench_gso", "sent_pps"),
               ("c_gso128", "sent_pps"), low=0.9),
        Target("--workers 2: sent pps >= 1.1x iperf3 -P 2 --gsro", ("pktbench_gso_w2", "sent_pps"),
               ("iperf3_gsro_p2", "sent_pps"), low=1.1),
        Target(f"--workers 2: receiver loss <= {loss:.1%}", ("pktbench_gso_w2", "loss_ratio"), loss, high=1.0),
    )
    notes = (
        "veth with tx-udp-segmentation off at both ends: a GSO buffer leaves the sender as the datagrams it holds",
        f"ingress = nftables netdev ingress counter on the receiver's veth, IPv4 UDP of {PAYLOAD_BYTES} B payload "
        "(udp length 72); ingress_pps = sent_pps x ingress/sent (the tool's own interval)",
        "loss_ratio is each tool's own: iperf3's lost/expected at its receiver, the C sink's 1 - received/sent, "
        "pktbench's loss_ratio",
        "one sender process on CPU 0 (iperf3 -P 2 and --workers 2 share it), receiver on CPU 1",
        f"iperf3 --gsro sends {GSO_SEGMENTS_IPERF3} datagrams a buffer at -l 64 (its GSO_MAX_DG_IN_BF); "
        f"the C probe runs {GSO_SEGMENTS} and {GSO_SEGMENTS_IPERF3}",
        f"iperf3 with --gsro: {h.iperf3_gsro or 'none'} ({why_iperf or 'found'}); Debian's iperf3 stays B1/B3's",
    )
    return Row("B7", "UDP 64-byte blast with GSO, veth, counted at the receiver's ingress", ms, ts, notes)


# ----------------------------------------------------------------------------- iperf3 with GSO


def iperf3_version(text: str) -> Optional[tuple[int, int]]:
    """(major, minor) from `iperf3 --version` output ("iperf 3.21+ (cJSON 1.7.15)")."""
    m = re.search(r"iperf (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def iperf3_gsro_ok(binary: str) -> tuple[bool, str]:
    """Whether binary is an iperf3 >= 3.20 whose help lists --gsro, and its version text."""
    try:
        ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        hlp = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False, "not runnable"
    got = iperf3_version(ver.stdout + ver.stderr)
    shown = ".".join(map(str, got)) if got else "?"
    return bool(got and got >= IPERF3_GSRO_MIN and "--gsro" in hlp.stdout + hlp.stderr), shown


def iperf3_cache_prefix() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pktbench-bench" / "iperf3-3.21"


def find_iperf3_gsro(explicit: Optional[str], tools: Path = TOOLS_DIR,
                     prefix: Optional[Path] = None) -> tuple[Optional[str], str]:
    """(path, how it was found) of an iperf3 with --gsro, or (None, why not).

    Order: --iperf3-gsro PATH; iperf3 on PATH when it is 3.20+ with --gsro; a build from
    ../shared/tools (build-iperf3.sh) into the cache directory, reused when present."""
    if explicit:
        ok, ver = iperf3_gsro_ok(explicit)
        if not ok:
            raise SystemExit(f"--iperf3-gsro {explicit}: not an iperf3 >= 3.20 with --gsro (version {ver})")
        return explicit, f"iperf3 {ver}, given with --iperf3-gsro"
    on_path = shutil.which("iperf3")
    if on_path:
        ok, ver = iperf3_gsro_ok(on_path)
        if ok:
            return on_path, f"iperf3 {ver} on PATH"
    prefix = prefix or iperf3_cache_prefix()
    cached = prefix / "bin" / "iperf3"
    if cached.exists() and iperf3_gsro_ok(str(cached))[0]:
        return str(cached), f"iperf3 {iperf3_gsro_ok(str(cached))[1]} built earlier from {tools}"
    script = tools / "build-iperf3.sh"
    if not script.exists():
        return None, (f"no iperf3 >= 3.20 with --gsro on PATH and no {script} to build one: "
                      "the iperf3 --gsro measurements are skipped")
    print(f"building iperf3 3.21 (--gsro) from {tools} into {prefix}", flush=True)
    try:
        r = subprocess.run(["sh", str(script), str(prefix)], capture_output=True, text=True, timeout=600,
                           cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None, f"building iperf3 from {tools} took over 600 s: skipped"
    if r.returncode or not cached.exists() or not iperf3_gsro_ok(str(cached))[0]:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"building iperf3 from {tools} failed ({tail}): skipped"
    return str(cached), f"iperf3 {iperf3_gsro_ok(str(cached))[1]} built from {tools} into {prefix}"


ROWS: dict[str, Callable[["Harness", Location], Row]] = {
    "B1": row_b1, "B2": row_b2, "B3": row_b3, "B4": row_b4, "B5": row_b5, "B6": row_b6, "B7": row_b7,
}
ROW_LOCATIONS = {"B6": ("lo",), "B7": ("veth",)}  # memory does not depend on the path; GSO needs the veth


# ----------------------------------------------------------------------------- harness


BASELINE_SUFFIX = "@baseline"


class Harness:
    def __init__(self, s: Settings, builds: dict[str, PktbenchCli], runner: Runner, tmp: Path) -> None:
        self.s, self.builds, self.runner, self.tmp = s, builds, runner, tmp
        self.active = "current"  # the build whose argv pktbench_* give while a measurement runs
        self.outcomes: list[tuple[Row, Outcome]] = []
        self._current: Optional[tuple[Outcome, str]] = None
        self.iperf3_gsro: Optional[str] = None  # B7's iperf3 with --gsro (main finds or builds it)
        self.iperf3_gsro_note = "not looked for"

    @property
    def pkt(self) -> PktbenchCli:
        return self.builds[self.active]

    def measurements(self, row: Row) -> list[Measurement]:
        """The row's measurements; with a baseline, each pktbench one is followed by its twin."""
        out: list[Measurement] = []
        for m in row.measurements:
            out.append(m)
            if m.is_pktbench and "baseline" in self.builds:
                out.append(dataclasses.replace(m, key=m.key + BASELINE_SUFFIX, label=m.label + " [baseline]",
                                               build="baseline"))
        return out

    def lookup(self, row: str, where: str, key: str, metric: str) -> Optional[float]:
        for r, o in self.outcomes:
            if r.key == row and o.where == where:
                return o.median(key, metric)
        return None

    def note_command(self, client: list[str], server: Optional[list[str]]) -> None:
        if self._current:
            out, key = self._current
            # Paths relative to the repository so the recorded commands read the same anywhere.
            def show(argv: list[str]) -> str:
                return shlex.join(argv).replace(str(REPO) + os.sep, "").replace(str(REPO), ".")
            cmds = {"client": show(client)}
            if server:
                cmds["server"] = show(server)
            out.commands[key] = cmds

    def measure_once(self, m: Measurement, loc: Location) -> Metrics:
        self.active = m.build
        try:
            return self._measure_once(m, loc)
        finally:
            self.active = "current"

    def _measure_once(self, m: Measurement, loc: Location) -> Metrics:
        if m.custom:
            return m.custom(self, loc)
        assert m.plan is not None
        port = free_port()
        plan = m.plan(self, loc, port)
        srv: Optional[Proc] = None
        server_argv = self.runner.wrap(loc, "server", plan.server) if plan.server else None
        client_argv = self.runner.wrap(loc, "client", plan.client)
        self.note_command(client_argv, server_argv)
        try:
            if server_argv:
                srv = self.runner.spawn(server_argv)
                self.runner.listening(loc, port, plan.server_proto, srv)
            before = udp_mib(loc) if plan.udp_mib else {}
            counted = ingress_packets(loc) if plan.ingress else 0
            cli = self.runner.wait(self.runner.spawn(client_argv), plan.timeout_s)
            sfin = self.runner.stop(srv, plan.server_exit_grace_s) if srv else None
            if cli.rc != 0 and not cli.stdout.strip():
                raise MeasureError(f"{Path(str(plan.client[0])).name} exited {cli.rc}: {cli.stderr.strip()[-300:]}")
            metrics = plan.parse(cli, sfin)
            if plan.ingress:  # read after the server stopped: every datagram sent has arrived or is lost
                metrics = with_ingress(metrics, ingress_packets(loc) - counted)
            if plan.udp_mib:
                after = udp_mib(loc)
                metrics["rcvbuf_errors"] = float(after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0))
            return metrics
        finally:
            if srv and not srv.done:
                self.runner.stop(srv)

    def wait_quiet(self) -> float:
        """Waits (bounded) for foreign load to pass; returns the busy share seen last."""
        deadline = time.monotonic() + self.s.wait_quiet_s
        busy = cpu_busy()
        while busy > QUIET_BUSY and time.monotonic() < deadline:
            time.sleep(0.5)
            busy = cpu_busy()
        return busy

    def run_row(self, key: str, loc: Location) -> None:
        row = ROWS[key](self, loc)
        out = Outcome(row.key, loc.name)
        self.outcomes.append((row, out))
        print(f"\n== {row.key} {row.title} [{loc.name}] ==", flush=True)
        measurements = self.measurements(row)
        for m in measurements:
            cli = self.builds[m.build]
            if m.skip:
                out.skipped[m.key] = m.skip
                print(f"  {m.key}: skipped ({m.skip})", flush=True)
            elif m.is_pktbench and not cli.available:
                out.pending[m.key] = cli.reason
                print(f"  {m.key}: pending ({cli.reason})", flush=True)
        active = [m for m in measurements if m.key not in out.pending and m.key not in out.skipped]
        for rep in range(self.s.runs):
            # ABBA order: slow drift (thermal, host neighbours) hits every measurement alike.
            for m in (active if rep % 2 == 0 else list(reversed(active))):
                self._current = (out, m.key)
                busy = self.wait_quiet()
                try:
                    metrics = self.measure_once(m, loc)
                except MeasureError as exc:
                    out.errors.setdefault(m.key, []).append(str(exc))
                    print(f"  run {rep + 1}/{self.s.runs} {m.key}: FAILED {exc}", flush=True)
                    continue
                finally:
                    self._current = None
                metrics["host_busy_before"] = busy
                out.runs.setdefault(m.key, []).append(metrics)
                shown = " ".join(f"{k}={fmt(metrics[k])}" for k in m.show if k in metrics)
                if busy > QUIET_BUSY:
                    shown += f"  [machine {busy:.0%} busy before this run]"
                print(f"  run {rep + 1}/{self.s.runs} {m.key}: {shown}", flush=True)
                time.sleep(0.2)


# ----------------------------------------------------------------------------- reporting


def fmt(v: Optional[float]) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"


def verdict(t: Target, o: Outcome, pending: bool) -> tuple[Optional[float], Optional[float], Optional[float], str]:
    sub = o.median(*t.subject)
    ref = t.reference if isinstance(t.reference, float) else o.median(*t.reference)
    if sub is None:
        return None, ref, None, "pending" if pending else "no data"
    if ref is None or ref == 0:
        return sub, ref, None, "no ref"
    ratio = sub / ref
    ok = (t.low is None or ratio >= t.low) and (t.high is None or ratio <= t.high)
    return sub, ref, ratio, "PASS" if ok else "MISS"


def goal_text(t: Target) -> str:
    if t.low is not None and t.high is not None:
        return f"{t.low:g}..{t.high:g}"
    return f">= {t.low:g}" if t.low is not None else f"<= {t.high:g}"


def tables(h: Harness) -> tuple[list[list[str]], list[list[str]]]:
    meas = [["row", "where", "measurement", "metric", "median", "min", "max", "n"]]
    targ = [["row", "where", "goal", "pktbench", "reference", "ratio", "target", "verdict"]]
    for row, o in h.outcomes:
        for m in h.measurements(row):
            runs = o.runs.get(m.key, [])
            if not runs:
                state = ("pending" if m.key in o.pending else "skipped" if m.key in o.skipped
                         else "failed" if m.key in o.errors else "-")
                meas.append([row.key, o.where, m.label, "-", state, "", "", "0"])
                continue
            for metric in m.show:
                vals = np.array([r[metric] for r in runs if metric in r], dtype=float)
                vals = vals[np.isfinite(vals)]
                if vals.size:
                    meas.append([row.key, o.where, m.label, metric, fmt(float(np.median(vals))),
                                 fmt(float(vals.min())), fmt(float(vals.max())), str(vals.size)])
        for t in row.targets:
            pending = t.subject[0] in o.pending
            sub, ref, ratio, v = verdict(t, o, pending)
            skipped = [k for k in (t.subject[0], t.reference[0] if isinstance(t.reference, tuple) else "")
                       if k in o.skipped]
            if skipped and ratio is None:
                v = "skipped"
            ref_txt = fmt(ref)
            if t.beside:
                b = o.median(*t.beside)
                ref_txt = f"{fmt(ref)} (iperf3 {b / ref:.4f})" if b is not None and ref else ref_txt
            targ.append([row.key, o.where, t.goal, fmt(sub), ref_txt,
                         "-" if ratio is None else f"{ratio:.3f}", goal_text(t), v])
    return meas, targ


def comparison(h: Harness) -> list[list[str]]:
    """Current build beside the baseline: medians, each side's run-to-run spread, the ratio."""
    rows = [["row", "where", "measurement", "metric", "current", "baseline", "current/baseline",
             "current min..max", "baseline min..max"]]
    for row, o in h.outcomes:
        for m in row.measurements:
            if not m.is_pktbench:
                continue
            for metric in m.show:
                cur = [r[metric] for r in o.runs.get(m.key, []) if metric in r and np.isfinite(r[metric])]
                base = [r[metric] for r in o.runs.get(m.key + BASELINE_SUFFIX, [])
                        if metric in r and np.isfinite(r[metric])]
                if not cur and not base:
                    continue
                c = float(np.median(cur)) if cur else None
                b = float(np.median(base)) if base else None
                ratio = f"{c / b:.3f}" if c is not None and b else "-"
                rows.append([row.key, o.where, m.label, metric, fmt(c), fmt(b), ratio,
                             f"{fmt(min(cur))}..{fmt(max(cur))}" if cur else "-",
                             f"{fmt(min(base))}..{fmt(max(base))}" if base else "-"])
    return rows


def render_plain(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_md(rows: list[list[str]], right: Sequence[int]) -> str:
    head = "| " + " | ".join(rows[0]) + " |"
    sep = "|" + "|".join("---:" if i in right else "---" for i in range(len(rows[0]))) + "|"
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    return "\n".join([head, sep, *body])


def tool_version(argv: list[str], pattern: str) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, r.stdout + r.stderr)
    return m.group(1) if m else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    for ln in Path("/proc/cpuinfo").read_text().splitlines():
        if ln.startswith("model name"):
            cpu = ln.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "kernel": platform.release(),
        "python": platform.python_version(),
        "rmem_max": Path("/proc/sys/net/core/rmem_max").read_text().strip(),
        "loadavg_start": Path("/proc/loadavg").read_text().split(" ")[0],
        "iperf3": tool_version(["iperf3", "-v"], r"iperf (\S+)"),
        "netperf": tool_version(["netperf", "-V"], r"version (\S+)"),
        "sockperf": tool_version(["sockperf", "-v"], r"version (\S+?)(?:-|\s)"),
        "redis": tool_version(["redis-server", "-v"], r"v=(\S+)"),
    }


def markdown(h: Harness, mach: dict[str, str], meas: list[list[str]], targ: list[list[str]],
             comp: Optional[list[list[str]]] = None) -> str:
    s = h.s
    today = datetime.date.today().isoformat()
    lines = [
        f"### pktbench against reference tools ({today})",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, kernel {mach['kernel']}, Python {mach['python']}, "
        f"rmem_max {mach['rmem_max']}; load average at start {mach['loadavg_start']}.",
        f"Tools: iperf3 {mach['iperf3']}, netperf {mach['netperf']}, sockperf {mach['sockperf']}, "
        f"redis {mach['redis']}; C probes from benchmarks/probe (cc -O2)."
        + (f" B7's iperf3 with --gsro: {mach['iperf3_gsro']}." if "iperf3_gsro" in mach else ""),
        f"Method: median of {s.runs} runs of {s.duration_s:g} s per measurement, measurements of a row "
        f"alternating (ABBA); client/sender on CPU {SENDER_CPU}, server/receiver on CPU {RECEIVER_CPU} (taskset); "
        f"`lo` = 127.0.0.1, `veth` = namespaces {VETH_CLIENT_ADDR}/24 -> {VETH_SERVER_ADDR}/24 over one veth pair, "
        "no default route, made and removed by the harness.",
        *[f"pktbench ({name}): {cli.what}" + ("." if cli.available else f", pending ({cli.reason}).")
          for name, cli in h.builds.items()],
        "",
        f"Command: `{s.invocation}`",
        "",
        "#### Targets",
        "",
        render_md(targ, right=(3, 4, 5)),
        "",
        "#### Measurements",
        "",
        render_md(meas, right=(4, 5, 6, 7)),
        "",
    ]
    if comp is not None:
        lines += ["#### Current build beside the baseline (same invocation, runs alternating)", "",
                  render_md(comp, right=(4, 5, 6, 7, 8)), ""]
    notes = [f"- {r.key} [{o.where}]: {n}" for r, o in h.outcomes for n in r.notes]
    notes += [f"- {r.key} [{o.where}] {k}: skipped, {why}" for r, o in h.outcomes for k, why in o.skipped.items()]
    errs = [f"- {r.key} [{o.where}] {k}: {len(v)} failed run(s), last: {v[-1][:200]}"
            for r, o in h.outcomes for k, v in o.errors.items()]
    for r, o in h.outcomes:
        busy = sum(1 for runs in o.runs.values() for m in runs if m.get("host_busy_before", 0) > QUIET_BUSY)
        if busy:
            notes.append(f"- {r.key} [{o.where}]: {busy} run(s) started while other load kept the machine "
                         f"over {QUIET_BUSY:.0%} busy (see host_busy_before in the JSON)")
    if notes or errs:
        lines += ["#### Notes", "", *notes, *errs, ""]
    lines += ["<details><summary>Exact commands (last run of each measurement)</summary>", ""]
    for r, o in h.outcomes:
        for key, cmds in o.commands.items():
            for role in ("server", "client"):
                if role in cmds:
                    lines.append(f"- {r.key} {o.where} {key} {role}: `{cmds[role]}`")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def build_probes() -> None:
    missing = [p for p in ("blast", "gsoblast", "sink", "pingpong")
               if not (PROBES / p).exists() or (PROBES / p).stat().st_mtime < (PROBES / f"{p}.c").stat().st_mtime
               or (PROBES / p).stat().st_mtime < (PROBES / "common.h").stat().st_mtime]
    for p in missing:
        cmd = [os.environ.get("CC", "cc"), "-O2", "-Wall", "-o", str(PROBES / p), str(PROBES / f"{p}.c")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"building probe {p} failed: {r.stderr.strip()}")


def check_tools(rows: Sequence[str]) -> None:
    # B7 needs ethtool and nft too, but without them its measurements are skipped with a note.
    need = {"B1": ["iperf3"], "B2": ["netperf", "netserver", "sockperf"], "B3": ["iperf3"], "B4": ["iperf3"],
            "B5": ["redis-server", "redis-benchmark"], "B6": [], "B7": []}
    missing = sorted({t for r in rows for t in need[r] + ["taskset", "ss", "ip"] if not shutil.which(t)})
    if missing:
        raise SystemExit(f"missing reference tools: {', '.join(missing)}; run `sh benchmarks/install_tools.sh` as root")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pktbench beside iperf3, netperf, sockperf, redis-benchmark and C probes")
    p.add_argument("--rows", default="B1,B2,B3,B4,B5,B6,B7",
                   help="comma list of rows (default all; B7 runs on the veth testbed only, with --netns)")
    p.add_argument("--quick", action="store_true", help="smoke check: 3 runs of 2 s, short B6")
    p.add_argument("--runs", type=int, help="runs per measurement (default 5, quick 3)")
    p.add_argument("--duration", type=float, help="seconds per run (default 5, quick 2)")
    p.add_argument("--netns", action="store_true", help="also run the veth testbed rows (root)")
    p.add_argument("--no-lo", action="store_true", help="skip the loopback rows")
    p.add_argument("--pktbench", help="command that invokes pktbench (default: see --build)")
    p.add_argument("--build", choices=("auto", "tree", "installed"), default="auto",
                   help="pktbench to measure: this source tree built in place, or this Python's installed package; "
                        "auto (default): the tree if it has an in-place build, else the installed package, "
                        "else the tree built in place now")
    p.add_argument("--baseline", metavar="REV",
                   help="also build git revision REV in a temporary directory and measure it beside the current "
                        "build, runs alternating; prints both and their ratio")
    p.add_argument("--wait-quiet", type=float, default=20.0,
                   help="before each run wait up to this many seconds for other load to pass (default 20)")
    p.add_argument("--iperf3-gsro", metavar="PATH",
                   help="B7's iperf3 with --gsro (3.20+); default: iperf3 on PATH if it has --gsro, else one "
                        "built from ../shared/tools into ~/.cache/pktbench-bench")
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/<stamp>.md, JSON beside it)")
    a = p.parse_args(argv)
    a.rows = tuple(r.strip().upper() for r in a.rows.split(",") if r.strip())
    bad = [r for r in a.rows if r not in ROWS]
    if bad:
        p.error(f"--rows: unknown {', '.join(bad)}; choose from {', '.join(ROWS)}")
    runs = a.runs or (3 if a.quick else 5)
    dur = a.duration or (2.0 if a.quick else 5.0)
    if not 1 <= runs <= 50 or not 0.5 <= dur <= 120:
        p.error("--runs must be 1..50 and --duration 0.5..120 s")
    a.runs, a.duration = runs, dur
    return a


def choose_builds(a: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, PktbenchCli]:
    """The pktbench builds to measure: "current", and "baseline" with --baseline."""
    if a.pktbench:
        builds = {"current": find_pktbench(a.pktbench, env, cwd=tmp)}
    else:
        argv, what = current_build(a.build, env, tmp)
        builds = {"current": find_pktbench(shlex.join(argv), env, what, cwd=tmp)}
    if a.baseline:
        argv, what = baseline_build(a.baseline, tmp)
        builds["baseline"] = find_pktbench(shlex.join(argv), env, what, cwd=tmp)
    return builds


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    locations = (() if a.no_lo else ("lo",)) + (("veth",) if a.netns else ())
    if not locations:
        raise SystemExit("nothing to run: --no-lo without --netns")
    s = Settings(a.runs, a.duration, locations, a.rows,
                 b6_short_s=2.0 if a.quick else 5.0, b6_long_s=15.0 if a.quick else 60.0,
                 b6_sessions=10, b6_session_s=0.5 if a.quick else 1.0, wait_quiet_s=a.wait_quiet,
                 invocation="python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else list(argv)))
    check_tools(a.rows)
    build_probes()
    env = dict(os.environ)
    tmpdir = Path(tempfile.mkdtemp(prefix="pktbench-bench-"))
    try:
        builds = choose_builds(a, env, tmpdir)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    for name, cli in builds.items():
        print(f"pktbench ({name}): {cli.what}" + ("" if cli.available else f"; pending ({cli.reason})"))
    mach = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in mach.items()))

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    runner = Runner(env, cwd=tmpdir)
    h = Harness(s, builds, runner, tmpdir)
    if "B7" in a.rows and "veth" in locations:
        h.iperf3_gsro, h.iperf3_gsro_note = find_iperf3_gsro(a.iperf3_gsro)
        mach["iperf3_gsro"] = h.iperf3_gsro_note
        print(f"B7 iperf3 --gsro: {h.iperf3_gsro or 'none'} ({h.iperf3_gsro_note})", flush=True)
    elif a.rows == ("B7",):
        print("B7 runs only on the veth testbed: add --netns", file=sys.stderr)
    try:
        for where in locations:
            rows = [r for r in a.rows if where in ROW_LOCATIONS.get(r, ("lo", "veth"))]
            if not rows:
                continue
            if where == "lo":
                for key in rows:
                    h.run_row(key, LOOPBACK)
            else:
                with Testbed() as veth:
                    try:
                        for key in rows:
                            h.run_row(key, veth)
                    finally:
                        runner.stop_all()  # nothing may outlive its namespace
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started and reporting what was measured", file=sys.stderr)
    finally:
        runner.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)

    meas, targ = tables(h)
    comp = comparison(h) if "baseline" in builds else None
    print("\n" + render_plain(targ) + "\n\n" + render_plain(meas))
    if comp is not None:
        print("\ncurrent build beside the baseline:\n" + render_plain(comp))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or RESULTS_DIR / f"{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(h, mach, meas, targ, comp))
    raw = {"settings": s.__dict__, "machine": mach,
           "pktbench": {name: {"what": cli.what, "argv": list(cli.argv), "available": cli.available,
                               "reason": cli.reason} for name, cli in builds.items()},
           "outcomes": [{"row": r.key, "where": o.where, "runs": o.runs, "errors": o.errors, "pending": o.pending,
                         "skipped": o.skipped,
                         "commands": o.commands} for r, o in h.outcomes]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"\nmarkdown: {out}\njson: {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
