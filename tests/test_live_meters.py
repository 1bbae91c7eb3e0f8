"""Meter snapshots taken from another thread while a step's loop runs (interval reports)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from pktbench import _fallback, engine, wire
from pktbench.protocol import StepParams
from pktbench.session import Client, ServerConfig

from engine_support import serving

ENGINES = [pytest.param(_fallback, id="python")]
if engine.ENGINE_NAME == "cython":
    ENGINES.insert(0, pytest.param(engine.loops, id="cython"))


@pytest.mark.parametrize("loops", ENGINES)
def test_snapshot_reads_a_running_sender(loops):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        template = wire.build_request(wire.COMMANDS["none"], 64, token=1, seq=0, send_ns=0)
        sender = loops.PacedSender(tx.fileno(), template, rate_pps=4000.0,
                                   expect_replies=False)
        start = loops.monotonic_ns()
        sender.begin(start, 2000, False)
        worker = threading.Thread(target=sender.run, args=(start + 600_000_000,))
        worker.start()
        seen = []
        while worker.is_alive():
            now, counters, hist = sender.snapshot()
            seen.append((now, int(counters[loops.SENDER_COUNTERS.index("sent")])))
            assert len(hist) == loops.HISTOGRAM_BUCKETS
            time.sleep(0.05)
        worker.join()
        final = int(sender.snapshot()[1][loops.SENDER_COUNTERS.index("sent")])
    finally:
        tx.close()
        rx.close()
    counts = [count for _, count in seen]
    assert counts == sorted(counts)  # a running counter only grows
    assert 0 < counts[len(counts) // 2] < final  # read mid-loop, not only at the end
    assert final == int(sender.counters[loops.SENDER_COUNTERS.index("sent")]) >= 2000 * 0.9


def test_live_meters_show_each_measured_window():
    polled: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for window in engine.LIVE_METERS.windows():
                polled.append(int(window.meter.snapshot()[1][
                    window.counter_names.index("sent")]))
            time.sleep(0.02)

    engine.LIVE_METERS.listeners += 1
    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    try:
        with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
            host, port = server.address
            from pktbench.address import Target
            with Client(Target(host, port)) as client:
                step = client.run_step(StepParams(workload="rr", command="ping",
                                                  rate_pps=2000, duration_s=0.6,
                                                  warmup_s=0.1, drain_s=0.2, timeout_s=0.2))
    finally:
        stop.set()
        reader.join(timeout=5)
        engine.LIVE_METERS.listeners -= 1
    closed = engine.LIVE_METERS.collect()
    assert len(closed) == 1 and closed[0].offered_pps == 2000
    assert closed[0].final is not None
    names = closed[0].counter_names
    # the window's last reading is the step's count (a loaded machine may send a few short)
    assert int(closed[0].final[1][names.index("sent")]) == step["sent_packets"]
    assert step["sent_packets"] == pytest.approx(1200, rel=0.05)
    assert any(0 < count < step["sent_packets"] for count in polled)  # seen while it ran
    assert engine.LIVE_METERS.windows() == []
