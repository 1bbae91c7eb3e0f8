"""The watch's OpenMetrics/Prometheus endpoint (`--metrics ADDR:PORT`).

Owns: `MetricsState` (the figures the endpoint serves, updated from the same
records the JSONL file gets, so a scrape always equals what some interval
line in the file holds) and `serve_metrics` (prometheus-client's HTTP server
on its own registry, bound to loopback unless told otherwise).

Invariants: one lock guards the state; a scrape reads one consistent copy of
it (the counters of one interval line, never half of two).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pktbench.errors import ConfigError
from pktbench.watch.tracker import LATENCY_BUCKETS_S, Record


class MetricsState:
    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._values: dict[str, float] = {
            "sent_packets": 0, "received_packets": 0, "lost_packets": 0, "late_packets": 0,
            "lost_up_packets": 0, "lost_down_packets": 0, "intervals": 0, "outages": 0,
            "outage_s": 0.0, "sessions": 0, "latency_sum_s": 0.0}
        self._buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._knee: float | None = None
        self._knee_checks = 0

    def update(self, record: Record, *, buckets: list[int] | None = None,
               latency_sum_s: float | None = None) -> None:
        kind = record.get("type")
        with self._lock:
            v = self._values
            if kind == "interval":
                totals = record.get("totals") or {}
                for key in ("sent_packets", "received_packets", "lost_packets", "late_packets",
                            "lost_up_packets", "lost_down_packets"):
                    v[key] = int(totals.get(key, v[key]))
                v["intervals"] += 1
                if buckets is not None:
                    self._buckets = list(buckets)
                if latency_sum_s is not None:
                    v["latency_sum_s"] = latency_sum_s
            elif kind == "outage":
                v["outages"] += 1
                v["outage_s"] += float(record.get("duration_s") or 0.0)
            elif kind == "session":
                v["sessions"] += 1
            elif kind == "knee":
                self._knee_checks += 1
                if record.get("knee_pps") is not None:
                    self._knee = float(record["knee_pps"])

    def snapshot(self) -> tuple[dict[str, float], list[int], float | None, int]:
        with self._lock:
            return dict(self._values), list(self._buckets), self._knee, self._knee_checks


class _Collector:
    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
        values, buckets, knee, knee_checks = self.state.snapshot()
        label = [self.state.target]

        def counter(name: str, doc: str, value: float) -> Any:
            family = CounterMetricFamily(f"pktbench_probe_{name}", doc, labels=["target"])
            family.add_metric(label, value)
            return family

        yield counter("sent_packets", "Probe requests sent (completed intervals)",
                      values["sent_packets"])
        yield counter("received_packets", "Probe replies received in time",
                      values["received_packets"])
        yield counter("lost_packets", "Probe requests without a reply in time",
                      values["lost_packets"])
        yield counter("late_packets", "Probe replies that came after the timeout",
                      values["late_packets"])
        yield counter("lost_up_packets", "Lost probe requests the server never received "
                      "(rr, from its per-interval counts)", values["lost_up_packets"])
        yield counter("lost_down_packets", "Lost probes the server received: the reply was "
                      "lost or late (rr, from its per-interval counts)",
                      values["lost_down_packets"])
        yield counter("intervals", "Intervals completed and written", values["intervals"])
        yield counter("outages", "Outages (loss runs of at least the outage threshold)",
                      values["outages"])
        yield counter("outage_seconds", "Time spent in outages", values["outage_s"])
        yield counter("sessions", "Control sessions opened (reconnects included)",
                      values["sessions"])
        yield counter("knee_checks", "Knee checks run", knee_checks)
        cumulative = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_S, buckets):
            running += count
            cumulative.append((repr(bound), running))
        running += buckets[-1]
        cumulative.append(("+Inf", running))
        hist = HistogramMetricFamily("pktbench_probe_latency_seconds",
                                     "Round trip from the scheduled send time",
                                     labels=["target"])
        hist.add_metric(label, cumulative, values["latency_sum_s"])
        yield hist
        gauge = GaugeMetricFamily("pktbench_probe_last_knee_pps",
                                  "Knee of the last knee check, packets/s", labels=["target"])
        if knee is not None:
            gauge.add_metric(label, knee)
        yield gauge


def parse_address(text: str) -> tuple[str, int]:
    """ADDR:PORT, [v6]:PORT or PORT (loopback) -> (address, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--metrics wants ADDR:PORT or PORT (got {text!r})") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics port must be 0..65535 (got {port})")
    return host, port


class MetricsServer:
    """The HTTP endpoint; `port` is the one bound (useful with port 0)."""

    def __init__(self, state: MetricsState, address: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError("--metrics needs prometheus-client: pip install "
                              "'pktbench[watch]'") from None
        host, port = parse_address(address)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(state))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"--metrics cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        self.host = host
        self.port = int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
