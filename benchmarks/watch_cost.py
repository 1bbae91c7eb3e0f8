"""What a `pktbench watch` costs each end: CPU share, RSS over time, JSONL bytes.

Starts `pktbench serve` on 127.0.0.1 and `pktbench watch` against it (each a
process of its own, pinned to its own CPU when there are two), lets the
watch settle, then samples both processes' CPU time (/proc/PID/stat) and
RSS (/proc/PID/status) until the watch ends, and prints one JSON line:

    python benchmarks/watch_cost.py --rate 1000 --duration 60

Loopback only; bounded by --duration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
PKTBENCH = [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {ROOT!r}); "
            "from pktbench.cli import main; main(prog_name='pktbench')"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=19417)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pin = (["taskset", "-c", str(cpus[-1])], ["taskset", "-c", str(cpus[0])]) \
        if len(cpus) > 1 else ([], [])
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "watch.jsonl"
        server = subprocess.Popen([*pin[0], *PKTBENCH, "serve", "--bind", "127.0.0.1",
                                   "--port", str(args.port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        watcher = None
        try:
            assert server.stdout is not None
            server.stdout.readline()
            watcher = subprocess.Popen(
                [*pin[1], *PKTBENCH, "watch", f"127.0.0.1:{args.port}", "--rate",
                 str(args.rate), "--duration", str(args.duration + args.settle),
                 "--jsonl", str(jsonl), "-q"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(args.settle)
            t0 = time.monotonic()
            c0 = {"watcher": cpu_s(watcher.pid), "server": cpu_s(server.pid)}
            rss: dict[str, list[int]] = {"watcher": [], "server": []}
            while watcher.poll() is None and time.monotonic() - t0 < args.duration - 1:
                rss["watcher"].append(rss_kib(watcher.pid))
                rss["server"].append(rss_kib(server.pid))
                time.sleep(min(10.0, args.duration / 6))
            elapsed = time.monotonic() - t0
            c1 = {"watcher": cpu_s(watcher.pid), "server": cpu_s(server.pid)}
            watcher.wait(timeout=args.duration + 60)
        finally:
            for proc in (watcher, server):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
        lines = jsonl.read_text().splitlines()
        intervals = [line for line in lines if '"type":"interval"' in line]
        result = {
            "rate_pps": args.rate, "measured_s": round(elapsed, 1),
            "cpu_percent_of_one_core": {name: round(100 * (c1[name] - c0[name]) / elapsed, 2)
                                        for name in c0},
            "rss_kib": rss,
            "jsonl_bytes_per_interval": round(sum(len(x) + 1 for x in intervals)
                                              / max(len(intervals), 1), 1),
            "intervals": len(intervals),
            "lost_packets": sum(json.loads(x)["lost_packets"] for x in intervals),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
