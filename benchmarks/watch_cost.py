"""What a steady probe costs each end: pktbench watch beside irtt and a C floor.

At one rate, three pairs run in turn, each a server pinned to one CPU and a
client pinned to the other, on 127.0.0.1:

- pktbench: `pktbench serve` and `pktbench watch --jsonl FILE`;
- irtt: `irtt server` and `irtt client -i 1/RATE` (the steady prober people
  run for days today; skipped when it is not installed);
- floor: benchmarks/probe/pingpong (`-S`, and `-c -r RATE`): a C open-loop
  client that sleeps to each due time, reads the echoes that came meanwhile
  and sends, and a blocking echo server; one wake-up per request at each end,
  no timing work: what the host's wake-ups cost by themselves.

Each pair settles, then both processes' CPU time (/proc/PID/stat) is read
over the measured span, and pktbench's RSS every 10 s. The pairs alternate
for --runs rounds; the line printed is JSON with every run, the medians and
the ratios of pktbench to the others:

    python benchmarks/watch_cost.py --rate 1000 --duration 30 --runs 3

Loopback only; every process is bounded by its own duration and stopped by PID.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = str(HERE.parent)
PKTBENCH = [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {ROOT!r}); "
            "from pktbench.cli import main; main(prog_name='pktbench')"]
PINGPONG = HERE / "probe" / "pingpong"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def measure(server_argv: list[str], client_argv: list[str], *, ready: Callable[[Any], None],
            settle_s: float, duration_s: float, pins: tuple[list[str], list[str]],
            sample: bool = False) -> dict[str, Any]:
    """Run one server/client pair; CPU share of each over the span after settling."""
    server = subprocess.Popen([*pins[0], *server_argv], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    client = None
    try:
        ready(server)
        client = subprocess.Popen([*pins[1], *client_argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        time.sleep(settle_s)
        t0 = time.monotonic()
        c0 = (cpu_s(client.pid), cpu_s(server.pid))
        c1 = c0
        rss: dict[str, list[int]] = {"client": [], "server": []}
        while client.poll() is None and time.monotonic() - t0 < duration_s:
            if sample:
                rss["client"].append(rss_kib(client.pid))
                rss["server"].append(rss_kib(server.pid))
            time.sleep(max(0.0, min(10.0, duration_s - (time.monotonic() - t0))))
            try:  # the last reading before the client ends is the one kept
                c1 = (cpu_s(client.pid), cpu_s(server.pid))
            except OSError:
                break
        elapsed = time.monotonic() - t0
        ended_early = client.poll() is not None
        if not ended_early:  # measured: stop it (a watch writes its end record)
            client.terminate()
        client.wait(timeout=60)
        out = client.stdout.read() if client.stdout else ""
    finally:
        _stop(client)
        _stop(server)
    result: dict[str, Any] = {"client_cpu_percent": round(100 * (c1[0] - c0[0]) / elapsed, 2),
                              "server_cpu_percent": round(100 * (c1[1] - c0[1]) / elapsed, 2),
                              "measured_s": round(elapsed, 1), "client_output": out.strip(),
                              "client_ended_early": ended_early,
                              "client_exit": client.returncode}
    if sample:
        result["rss_kib"] = rss
    return result


def _first_line(proc: subprocess.Popen[Any]) -> None:
    assert proc.stdout is not None
    proc.stdout.readline()


def _pause(seconds: float) -> Callable[[Any], None]:
    return lambda proc: time.sleep(seconds)


def run_pktbench(args: argparse.Namespace, port: int, pins: Any, tmp: Path) -> dict[str, Any]:
    jsonl = tmp / f"watch-{port}.jsonl"
    result = measure(
        [*PKTBENCH, "serve", "--bind", "127.0.0.1", "--port", str(port)],
        [*PKTBENCH, "watch", f"127.0.0.1:{port}", "--rate", str(args.rate), "--duration",
         str(args.duration + args.settle + 30), "--jsonl", str(jsonl), "-q"],
        ready=_first_line, settle_s=args.settle, duration_s=args.duration, pins=pins,
        sample=True)
    lines = jsonl.read_text().splitlines()
    intervals = [line for line in lines if '"type":"interval"' in line]
    result["end_record"] = next((json.loads(x) for x in reversed(lines)
                                 if '"type":"end"' in x), None)
    result["jsonl_bytes_per_interval"] = round(sum(len(x) + 1 for x in intervals)
                                               / max(len(intervals), 1), 1)
    result["intervals"] = len(intervals)
    result["lost_packets"] = sum(json.loads(x)["lost_packets"] for x in intervals)
    jsonl.unlink()
    return result


def run_irtt(args: argparse.Namespace, port: int, pins: Any) -> dict[str, Any]:
    interval_us = max(1, round(1e6 / args.rate))
    total = args.duration + args.settle + 30
    return measure(
        ["irtt", "server", "-b", f"127.0.0.1:{port}", "-i", "0", "-l", "0",
         "-d", f"{int(total) + 30}s"],
        ["irtt", "client", "-i", f"{interval_us}us", "-d", f"{int(total)}s", "-l", "64", "-Q",
         f"127.0.0.1:{port}"],
        ready=_pause(1.0), settle_s=args.settle, duration_s=args.duration, pins=pins)


def run_floor(args: argparse.Namespace, port: int, pins: Any) -> dict[str, Any]:
    total = args.duration + args.settle + 30
    return measure(
        [str(PINGPONG), "-S", "-b", "127.0.0.1", "-p", str(port), "-t", str(total + 30)],
        [str(PINGPONG), "-c", "127.0.0.1", "-p", str(port), "-r", str(args.rate),
         "-s", "64", "-t", str(total)],
        ready=_first_line, settle_s=args.settle, duration_s=args.duration, pins=pins)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=19417)
    parser.add_argument("--only-pktbench", action="store_true",
                        help="skip irtt and the C floor (e.g. a one-hour RSS run)")
    args = parser.parse_args()
    if not 0 < args.rate <= 1_000_000 or args.duration <= 0 or args.runs < 1:
        parser.error("--rate in (0, 1e6], --duration > 0, --runs >= 1")
    cpus = sorted(os.sched_getaffinity(0))
    pins = (["taskset", "-c", str(cpus[-1])], ["taskset", "-c", str(cpus[0])]) \
        if len(cpus) > 1 else ([], [])
    if not args.only_pktbench and not PINGPONG.exists():
        subprocess.run(["make", "-C", str(HERE), "probe/pingpong"], check=True,
                       stdout=subprocess.DEVNULL)
    have_irtt = shutil.which("irtt") is not None and not args.only_pktbench
    runs: dict[str, list[dict[str, Any]]] = {"pktbench": [], "irtt": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.runs):
            port = args.port + 3 * index
            runs["pktbench"].append(run_pktbench(args, port, pins, Path(tmp)))
            if have_irtt:
                runs["irtt"].append(run_irtt(args, port + 1, pins))
            if not args.only_pktbench:
                runs["floor"].append(run_floor(args, port + 2, pins))
    medians = {name: {end: round(statistics.median(r[f"{end}_cpu_percent"] for r in rs), 2)
                      for end in ("client", "server")}
               for name, rs in runs.items() if rs}
    ratios = {f"pktbench/{name}": {end: round(medians["pktbench"][end] / medians[name][end], 2)
                                   if medians[name][end] else None
                                   for end in ("client", "server")}
              for name in medians if name != "pktbench"}
    print(json.dumps({"rate_pps": args.rate, "duration_s": args.duration, "runs": args.runs,
                      "median_cpu_percent_of_one_core": medians, "ratios": ratios,
                      "every_run": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
