"""B1 and B3 with each engine: what the pure-Python engine gives up.

A quick check, not the full harness: on loopback, a `pktbench serve` (pinned
to CPU 1) and `pktbench run` (pinned to CPU 0) with the same engine, the two
engines alternating run by run, 5 runs of each, medians printed as a
Markdown table. Usage (from the repository, engine built in place):

    python benchmarks/engines.py [--runs 5] [--duration 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKTBENCH = [sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r}); "
            "from pktbench.cli import main; main(prog_name='pktbench')"]
ENGINES = ("cython", "python")


def one_step(engine: str, rate: str, duration: float) -> dict[str, Any]:
    server = subprocess.Popen(["taskset", "-c", "1", *PKTBENCH, "--engine", engine, "serve",
                               "--bind", "127.0.0.1", "--port", "0", "--quiet"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip().rsplit(":", 1)[1]
        done = subprocess.run(["taskset", "-c", "0", *PKTBENCH, "--engine", engine, "run",
                               f"127.0.0.1:{port}", "--workload", "blast", "--rate", rate,
                               "--duration", str(duration), "--warmup", "0.2", "--json", "-"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode not in (0, 1) or not done.stdout:
            raise SystemExit(f"{engine} {rate}: {done.stderr.strip()}")
        step: dict[str, Any] = json.loads(done.stdout)["steps"][0]
        return step
    finally:
        server.terminate()
        server.wait(timeout=10)


def medians(rate: str | dict[str, str], runs: int, duration: float) -> dict[str, dict[str, float]]:
    samples: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    for i in range(runs):
        order = ENGINES if i % 2 == 0 else ENGINES[::-1]  # ABBA
        for engine in order:
            this_rate = rate[engine] if isinstance(rate, dict) else rate
            samples[engine].append(one_step(engine, this_rate, duration))
    return {engine: {key: statistics.median(float(s[key] or 0) for s in steps)
                     for key in ("offered_pps", "sent_pps", "received_pps")}
            for engine, steps in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    print("| row | measure | compiled (cython) | pure Python | pure/compiled |")
    print("|---|---|---:|---:|---:|")
    b1 = medians("max", args.runs, args.duration)
    for key in ("sent_pps", "received_pps"):
        c, p = b1["cython"][key], b1["python"][key]
        print(f"| B1 | 64 B blast at max, {key.replace('_', ' ')} | {c:,.0f} | {p:,.0f} | "
              f"{p / c:.2f}x |", flush=True)
    rates: list[str | dict[str, str]] = ["1000", "10000", "100000",
                                         {e: str(int(0.8 * b1[e]["sent_pps"])) for e in ENGINES}]
    for rate in rates:
        got = medians(rate, args.runs, args.duration)
        label = "80 % of its own B1" if isinstance(rate, dict) else f"{int(rate):,} pps"
        cells = []
        for engine in ENGINES:
            m = got[engine]
            cells.append(f"{m['sent_pps'] / m['offered_pps']:.3f} ({m['offered_pps']:,.0f} pps)"
                         if isinstance(rate, dict) else f"{m['sent_pps'] / m['offered_pps']:.3f}")
        print(f"| B3 | achieved/offered at {label} | {cells[0]} | {cells[1]} | |", flush=True)


if __name__ == "__main__":
    main()
