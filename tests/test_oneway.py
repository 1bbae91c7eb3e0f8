"""Per-interval one-way loss: the responder's bins (both engines), the mid-step
progress query through a real server, and a loopback watch that splits its
loss from them (or says why it cannot, against a server without the feature)."""
from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest

from pktbench import engine, protocol, wire
from pktbench.address import Target
from pktbench.errors import ServerRefusedError
from pktbench.protocol import StepParams
from pktbench.session import CAPABILITIES, Client, Server, ServerConfig
from pktbench.watch.metrics import MetricsState
from pktbench.watch.probe import NO_FEATURE, Watch, WatchConfig
from pktbench.watch.report import render_text, summarize

from engine_support import ThreadedResponder, serving

TOKEN = 0x0123456789ABCDEF


def _drain(sock: socket.socket, seconds: float = 0.3) -> int:
    """Replies read until none came for `seconds`."""
    before = sock.gettimeout()
    sock.settimeout(seconds)
    got = 0
    try:
        while True:
            sock.recv(65536)
            got += 1
    except (socket.timeout, BlockingIOError):
        return got
    finally:
        sock.settimeout(before)  # a session's data socket is read without a timeout


@pytest.mark.usefixtures("engine_impl")
def test_bins_count_each_received_request_once_in_its_interval(
        udp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = udp_pair
    params = StepParams(rate_pps=1000.0, bin_phase=3.0, bin_packets=10.0)
    loop = engine.ResponderLoop(server, peer=client.getsockname(), token=TOKEN,
                                command=wire.COMMAND_PING, size_bytes=64, sink=False,
                                seq_limit=10_000, bins=params.bins)
    responder = ThreadedResponder(loop, 10.0)
    skipped = {7, 15, 16, 17, 18, 19, 42}  # a sender that drops these: the path's up loss
    try:
        for seq in range(100):
            if seq not in skipped:
                client.send(wire.build_request(wire.COMMAND_PING, 64, token=TOKEN, seq=seq,
                                               send_ns=0))
        # neither warm-up requests nor a seq the step cannot reach are counted
        client.send(wire.build_request(wire.COMMAND_PING, 64, token=TOKEN, seq=5, send_ns=0,
                                       flags=wire.FLAG_WARMUP))
        client.send(wire.build_request(wire.COMMAND_PING, 64, token=TOKEN, seq=20_000, send_ns=0))
        replies = _drain(client)
        expected = [0] * 11
        for seq in set(range(100)) - skipped:
            expected[params.bin_of(seq)] += 1
        # bin 0 is seqs 0-6, bin 1 7-16 (7, 15, 16 skipped), bin 2 17-26 (17-19 skipped)
        assert expected[:3] == [7, 10 - 3, 10 - 3]
        assert loop.bin_counts(0, 11) == expected
        assert loop.bin_counts(11, 20) == [0] * 9  # bins not reached yet: nothing received
        assert replies == 100 - len(skipped) + 2  # binning changes no answer
        # seq 2587 is in bin 259: bins more than 256 before it are no longer held
        client.send(wire.build_request(wire.COMMAND_PING, 64, token=TOKEN, seq=2587,
                                       send_ns=0))
        _drain(client, 0.2)
        counts = loop.bin_counts(0, 10)
        assert counts is not None and counts[:4] == [-1] * 4 and counts[4:] == expected[4:10]
        with pytest.raises(ValueError):
            loop.bin_counts(0, engine.loops.BIN_RING + 1)
    finally:
        responder.close()
    plain = engine.ResponderLoop(server, peer=client.getsockname(), token=TOKEN,
                                 command=wire.COMMAND_PING, size_bytes=64, sink=False)
    assert plain.bin_counts(0, 1) is None


def _requests(client: Client, token: int, seqs: range) -> None:
    sock = client.data_socket
    for seq in seqs:
        sock.send(wire.build_request(wire.COMMAND_PING, 64, token=token, seq=seq, send_ns=0))


def test_a_progress_query_gets_the_servers_bins_and_a_step_without_bins_refuses_it() -> None:
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        host, port = server.address
        with Client(Target(host, port)) as client:
            assert protocol.FEATURE_STEP_BINS in client.server_capabilities
            params = StepParams(rate_pps=10000.0, duration_s=5.0, drain_s=0.0,
                                bin_phase=0.0, bin_packets=100.0)
            armed = client.begin_step(params)
            _requests(client, armed.token, range(0, 250))
            _drain(client.data_socket)
            client.request_progress(0, 4)
            assert client.progress_pending
            answer = client.wait_progress(5.0)
            assert (answer.bin_start, answer.counts) == (0, (100, 100, 50, 0))
            result = client.end_step({"sent": 250})
            assert result["bins"] == {"start": 0, "counts": [100, 100, 50]}
            armed = client.begin_step(StepParams(rate_pps=1000.0, duration_s=5.0, drain_s=0.0))
            client.request_progress(0, 1)
            with pytest.raises(ServerRefusedError, match="counts no bins"):
                client.wait_progress(5.0)
            _requests(client, armed.token, range(0, 10))
            _drain(client.data_socket)
            result = client.end_step({"sent": 10})  # the refusal left the step running
            assert result["received"] == 10 and "bins" not in result
        assert server.stats.refused_queries == 1 and server.stats.protocol_errors == 0


def _raw_frame(obj: dict[str, Any]) -> bytes:
    import json
    payload = json.dumps(obj).encode()
    return struct.pack("!I", len(payload)) + payload


def _error_then_closed(sock: socket.socket) -> bytes:
    sock.settimeout(5.0)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("mid_step", [False, True])
def test_a_hostile_progress_query_is_an_error_and_the_server_serves_on(mid_step: bool) -> None:
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        host, port = server.address
        client = Client(Target(host, port))
        client.connect()
        try:
            if mid_step:  # far more bins than one answer holds
                client.begin_step(StepParams(rate_pps=1000.0, duration_s=5.0, bin_phase=0.0,
                                             bin_packets=10.0))
                query = {"type": "progress_request", "bin_start": 0, "bin_end": 10**6}
            else:  # no step running
                query = {"type": "progress_request", "bin_start": 0, "bin_end": 1}
            sock = client._control  # noqa: SLF001
            assert sock is not None
            sock.sendall(_raw_frame(query))
            said = _error_then_closed(sock)
        finally:
            client.close()
        assert b'"bad_request"' in said, said
        deadline = time.monotonic() + 5
        while server.stats.protocol_errors < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stats.protocol_errors == 1
        with Client(Target(host, port)) as again:  # the server goes on
            assert again.run_step(StepParams(rate_pps=1000.0, duration_s=0.2))["lost_packets"] \
                == 0


def _watch(server: Server, **kwargs: Any) -> tuple[list[dict[str, Any]], MetricsState]:
    records: list[dict[str, Any]] = []
    host, port = server.address
    metrics = MetricsState("t")

    def emit(record: dict[str, Any]) -> None:
        records.append(record)
        metrics.update(record)

    settings: dict[str, Any] = {"rate_pps": 1000, "interval_s": 0.25, "duration_s": 2.2,
                                "step_s": 1.0, **kwargs}
    config = WatchConfig(target=Target(host, port), **settings)
    Watch(config, emit).run()
    return records, metrics


@pytest.mark.parametrize("lease_s", [600.0, 0.6])
def test_replies_late_past_the_timeout_are_lost_down_in_every_interval(lease_s: float) -> None:
    # A 1 us timeout: every request reaches the server (its bins count it)
    # and every reply comes too late, so all the loss is the down direction.
    # 0.6 s steps put change-overs inside intervals: those add both steps' bins.
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        records, metrics = _watch(server, timeout_s=1e-6, lease_s=lease_s)
    intervals = [r for r in records if r["type"] == "interval" and r["sent_packets"]]
    assert len(intervals) >= 7
    steps = [r for r in records if r["type"] == "step"]
    spanning = [r for r in intervals
                if any(r["seq"][0] < s["seq"][0] < r["seq"][1] for s in steps)]
    assert bool(spanning) == (lease_s < 1), (spanning, steps)
    for record in intervals:
        # (an odd reply may read as in time: the kernel's arrival stamp is
        # moved to the monotonic clock by an offset taken at the read)
        assert record["lost_packets"] >= 0.95 * record["sent_packets"], record
        assert record["lost_up_packets"] + record["lost_down_packets"] == record["lost_packets"]
        if lease_s < 1:
            # With a 1 us timeout a change-over sends StepStop right after the
            # last request, and a loaded host may stop the responder before it
            # reads the last few; an interval that took one step's bins only
            # would be short by hundreds.
            assert record["lost_up_packets"] <= 5, record
        else:
            assert record["lost_up_packets"] == 0, record
    starts = [r["start_s"] for r in records if r["type"] == "interval"]
    assert starts == sorted(starts)  # held records still leave in order
    total = sum(r["lost_packets"] for r in records if r["type"] == "interval")
    up = sum(r["lost_up_packets"] for r in intervals)
    assert records[-1]["lost_down_packets"] == total - up and total > 0
    values, _, _, _ = metrics.snapshot()
    assert values["lost_down_packets"] == total - up and values["lost_up_packets"] == up
    summary = summarize(records)  # watch-report shows the split beside the loss
    assert (summary["lost_up_packets"], summary["lost_down_packets"]) == (up, total - up)
    assert f"lost {total} (up {up}, down {total - up})" in "\n".join(render_text(summary))


def test_a_server_without_the_feature_leaves_the_direction_unknown_and_says_why() -> None:
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        server.capabilities = CAPABILITIES  # as a server from before step_bins
        records, _ = _watch(server, timeout_s=1e-6, duration_s=1.2)
        assert server.stats.refused_queries == 0 and server.stats.protocol_errors == 0
    lossy = [r for r in records if r["type"] == "interval" and r["lost_packets"]]
    assert lossy
    for record in lossy:
        assert record["lost_up_packets"] is None and record["lost_down_packets"] is None
        assert record["one_way_unknown"] == NO_FEATURE
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all(s["lost_up_packets"] == 0 for s in steps)  # the per-step split holds
