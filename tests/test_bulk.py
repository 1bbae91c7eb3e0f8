"""Bulk throughput on loopback: TCP_INFO, streams at both ends, UDP bulk, planning, CLI."""
from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from pktbench import protocol, session, wire
from pktbench.workloads import bulk
from pktbench.address import Target
from pktbench.cli import main
from pktbench.errors import ConfigError
from pktbench.results import SCHEMA_VERSION

from engine_support import serving

SHORT = {"duration_s": 0.4, "warmup_s": 0.1, "drain_s": 0.1}


@pytest.fixture
def server() -> Iterator[session.Server]:
    with serving(session.ServerConfig(bind="127.0.0.1", port=0)) as srv:
        yield srv


@pytest.fixture
def client(server: session.Server) -> Iterator[session.Client]:
    with session.Client(Target(*server.address)) as c:
        yield c


def _connected_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    return listener, a, b


def test_tcp_info_from_a_live_connection() -> None:
    listener, a, b = _connected_pair()
    try:
        a.sendall(b"x" * 100_000)
        got = 0
        while got < 100_000:
            got += len(b.recv(65536))
        info = bulk.read_tcp_info(a)
        assert info is not None
        assert info["state"] == 1  # TCP_ESTABLISHED
        assert info["snd_cwnd"] and info["snd_cwnd"] >= 1
        assert info["rtt_us"] is not None and info["total_retrans"] == 0
        assert info["bytes_acked"] is None or info["bytes_acked"] >= 100_000
        # Linux enables timestamps by default (net.ipv4.tcp_timestamps=1)
        with open("/proc/sys/net/ipv4/tcp_timestamps", encoding="ascii") as f:
            if f.read().strip() == "1":
                assert info.timestamps and info.options_bytes == 12
                assert "timestamps" in info.option_names()
    finally:
        for s in (listener, a, b):
            s.close()


def test_short_tcp_info_leaves_missing_fields_none() -> None:
    info = bulk.parse_tcp_info(bytes(104))
    assert info["total_retrans"] == 0
    assert info["bytes_acked"] is None and info["snd_wnd"] is None


def test_step_params_reverse_is_for_bulk_only() -> None:
    assert protocol.validate_step_params({"workload": "bulk", "reverse": True}).reverse
    with pytest.raises(ConfigError, match="reverse"):
        protocol.validate_step_params({"workload": "blast", "reverse": True})
    with pytest.raises(ConfigError, match="reverse"):
        protocol.validate_step_params({"workload": "bulk", "reverse": 1})


def _check_tcp_step(step: dict[str, Any], streams: int) -> None:
    assert step["transport"] == "tcp" and step["streams_requested"] == streams
    assert [s["stream_id"] for s in step["streams"]] == list(range(streams))
    assert len({s["source_port"] for s in step["streams"]}) == streams
    for s in step["streams"]:
        assert s["goodput_bps"] > 0 and s["error"] is None
        # receiver-side goodput can never beat what the sender wrote overall
        assert s["bytes"] > 0
    assert step["aggregate_bps"] == pytest.approx(
        sum(s["goodput_bps"] for s in step["streams"]))
    overhead = step["overhead"]
    assert step["wire_bps"] == pytest.approx(
        step["aggregate_bps"] * overhead["wire_bytes"] / overhead["payload_bytes"])
    assert step["retransmits"] is not None and step["retransmits"] >= 0
    assert step["sender_cpu_percent"] > 0 and step["receiver_cpu_percent"] > 0


@pytest.mark.parametrize("reverse", [False, True])
def test_tcp_streams_both_ends_count(client: session.Client, reverse: bool) -> None:
    config = bulk.BulkConfig(streams=2, reverse=reverse, link_speed_bps=100e9, **SHORT)
    step = bulk.run_tcp_step(client, config, streams=2)
    _check_tcp_step(step, 2)
    assert step["direction"] == ("reverse" if reverse else "forward")
    receiver = step["client"] if reverse else step["server"]
    sender = step["server"] if reverse else step["client"]
    assert receiver["role"] == "receiver" and sender["role"] == "sender"
    sent_total = sum(s["total_bytes"] for s in sender["streams"])
    received_total = sum(s["total_bytes"] for s in receiver["streams"])
    assert 0 < received_total <= sent_total
    assert step["link_percent"] == pytest.approx(100 * step["wire_bps"] / 100e9)
    # the sender's TCP_INFO is carried across: cwnd and RTT for every stream
    assert all(s["cwnd_segments"] and s["rtt_us"] is not None for s in step["streams"])


def test_bulk_pump_moves_every_byte_and_sees_the_end() -> None:
    """One thread pumps two streams each way: counts are exact, EOF and a reset show."""
    from pktbench import engine
    BulkPump, PUMP_EOF, PUMP_OPEN = engine.loops.BulkPump, engine.loops.PUMP_EOF, engine.loops.PUMP_OPEN

    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    try:
        sender = BulkPump(2, True, 4096)
        receiver = BulkPump(2, False, 8192)
        for near, far in pairs:
            near.setblocking(False)
            far.setblocking(False)
            assert sender.add(near.fileno()) >= 0
            receiver.add(far.fileno())
        assert sender.add(0) == -1  # full
        deadline = time.monotonic_ns() + 200_000_000
        while time.monotonic_ns() < deadline:
            assert sender.run(time.monotonic_ns() + 5_000_000) == 0
            assert receiver.run(time.monotonic_ns() + 5_000_000) == 0
        sent = [int(n) for n in sender.byte_counts]
        assert all(n > 0 for n in sent) and list(sender.status) == [PUMP_OPEN] * 2
        assert sender.first_ns > 0
        pairs[0][0].shutdown(socket.SHUT_WR)  # stream 0 ends cleanly
        pairs[1][1].close()  # stream 1's reader goes away
        assert receiver.run(time.monotonic_ns() + 200_000_000) == 0
        assert int(receiver.byte_counts[0]) == sent[0]
        assert list(receiver.status) == [PUMP_EOF, PUMP_OPEN]
        assert sender.run(time.monotonic_ns() + 1_000_000_000) == 1  # no stream can write
        assert all(-int(s) in (errno.EPIPE, errno.ECONNRESET) for s in sender.status)
    finally:
        for near, far in pairs:
            near.close()
            far.close()


def test_fast_receiver_raises_its_wakeup_mark_and_loses_no_held_byte() -> None:
    """A fast TCP stream gets a high SO_RCVLOWAT, yet bytes held under it are
    counted at the next window edge, and once the sender stalls, within ticks."""
    from pktbench import engine
    BulkPump = engine.loops.BulkPump

    listener = socket.create_server(("127.0.0.1", 0))
    writer = socket.create_connection(listener.getsockname())
    reader, _ = listener.accept()
    listener.close()
    chunk = bytes(1 << 20)
    sent = 0
    try:
        reader.setblocking(False)
        pump = BulkPump(1, False, 256 * 1024)
        pump.add(reader.fileno())
        written = threading.Event()

        def write(total: int) -> None:
            nonlocal sent
            for _ in range(total):
                writer.sendall(chunk)
                sent += len(chunk)
            written.set()

        thread = threading.Thread(target=write, args=(256,))
        thread.start()
        marks = []
        while not written.is_set():
            pump.run(time.monotonic_ns() + 5_000_000)
            marks.append(reader.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
        thread.join()
        assert max(marks) > 16 * 1024  # the mark rose with the rate
        # the writer is done but the stream stays open: a window edge reads what is held
        assert pump.run(time.monotonic_ns() + 2_000_000) == 0
        assert int(pump.byte_counts[0]) == sent
        # a stalled stream also drops its mark within a few ticks
        writer.sendall(bytes(1000))
        sent += 1000
        deadline = time.monotonic() + 1.0
        while int(pump.byte_counts[0]) < sent and time.monotonic() < deadline:
            pump.run(time.monotonic_ns() + 50_000_000)
        assert int(pump.byte_counts[0]) == sent
        assert reader.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    finally:
        writer.close()
        reader.close()


def test_stray_connections_do_not_join(server: session.Server, client: session.Client) -> None:
    """A data connection with a wrong token is refused; extra streams are cut off."""
    armed = client.begin_step(protocol.StepParams(workload="bulk", command="none", streams=1,
                                                  duration_s=0.2, drain_s=0.0))
    good = socket.create_connection(server.address)
    good.sendall(wire.pack_data_preamble(0, armed.token))
    bad = socket.create_connection(server.address)
    bad.sendall(wire.pack_data_preamble(1, armed.token ^ 1))
    extra = socket.create_connection(server.address)
    extra.sendall(wire.pack_data_preamble(2, armed.token))
    try:
        good.sendall(b"z" * 10_000)
        bad.settimeout(2.0)
        extra.settimeout(2.0)
        assert bad.recv(1) == b""  # closed by the server
        assert extra.recv(1) == b""
        good.shutdown(socket.SHUT_WR)
        report = client.end_step({"stream_ids": [0]})
    finally:
        for s in (good, bad, extra):
            s.close()
    assert report["connections"] == 1 and report["rejected_connections"] == 1
    assert report["streams"][0]["total_bytes"] == 10_000
    assert server.stats.rejected_data_connections >= 1


def test_udp_bulk_at_an_offered_rate(client: session.Client) -> None:
    config = bulk.BulkConfig(udp=True, size_bytes=8000, **SHORT)
    step = bulk.run_udp_step(client, config, rate_bps=200e6)
    assert step["transport"] == "udp" and step["size_bytes"] == 8000
    assert step["offered_bps"] == 200e6
    # paced: never over the offered rate (a busy machine may hold it under);
    # loopback loses nothing at this load, so the receiver saw what was sent
    assert 0 < step["sender_bps"] <= 200e6 * 1.02
    assert step["aggregate_bps"] == pytest.approx(step["sender_bps"],
                                                              rel=0.02)
    assert step["overhead"]["frames"] == 1  # loopback's MTU holds the whole datagram
    assert step["path_mtu_bytes"] >= 8000


def test_planning_over_one_counted_path_and_a_dead_one(client: session.Client) -> None:
    def lo_counters() -> dict[str, tuple[int, int]]:
        with open("/sys/class/net/lo/statistics/tx_bytes", encoding="ascii") as tx:
            moved = int(tx.read())
        return {"lo": (moved, moved)}

    plan = bulk.plan_flows(client, 2, lo_counters, first_port=47000)
    assert plan.method == "probed" and len(plan.ports) == 2 and plan.paths == (0, 0)
    # the probes were reset, so the planned ports can be bound again at once
    step = bulk.run_tcp_step(client, bulk.BulkConfig(streams=2, **SHORT), streams=2,
                             ports=plan.ports, plan=plan)
    assert [s["source_port"] for s in step["streams"]] == list(plan.ports)
    assert [s["path"] for s in step["streams"]] == [0, 0]

    def with_dead_path() -> dict[str, tuple[int, int]]:
        return {**lo_counters(), "dead": (0, 0)}

    with pytest.raises(ConfigError, match="dead needs 1 more"):
        bulk.plan_flows(client, 2, with_dead_path, first_port=47100, max_probes=4)


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--path-ifaces"):
        bulk.BulkConfig(streams=2, paths=2)
    with pytest.raises(ConfigError, match="UDP"):
        bulk.BulkConfig(udp=True, streams=2)
    with pytest.raises(ConfigError, match="--udp"):
        bulk.BulkConfig(rate_bps=1e9)
    with pytest.raises(ConfigError, match="one per stream"):
        bulk.BulkConfig(streams=3, ports=(40000, 40001))
    with pytest.raises(ConfigError, match="does not exist"):
        bulk.sysfs_counters(["no-such-if0"])


def test_workers_split_streams_and_merge(client: session.Client) -> None:
    config = bulk.BulkConfig(streams=3, workers=2, cpus=(0,), **SHORT)
    step = bulk.run_tcp_step(client, config, streams=3)
    _check_tcp_step(step, 3)


def test_cli_sweep_writes_the_ceiling(tmp_path: Any) -> None:
    out = tmp_path / "bulk.json"
    result = CliRunner().invoke(main, [
        "bulk", "--sweep-streams", "1,2", "--duration", "0.4", "--warmup", "0.1",
        "--link-speed", "2x10G", "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # prose lines wrap at 100 columns
    assert "ceiling:" in text and "% of the 20.000 Gbit/s link" in text
    doc = json.loads(out.read_text())
    assert doc["kind"] == "bulk" and doc["schema_version"] == SCHEMA_VERSION
    aggregates = [s["aggregate_bps"] for s in doc["steps"]]
    assert [len(s["streams"]) for s in doc["steps"]] == [1, 2]
    assert doc["ceiling"]["goodput_bps"] == max(aggregates)
    assert doc["ceiling"]["link_speed_bps"] == 20e9
    assert doc["ceiling"]["overhead"]["text"]
    for step in doc["steps"]:
        assert all(s["goodput_bps"] > 0 for s in step["streams"])


def test_cli_bad_options_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["bulk", "--link-speed", "fast"]).exit_code == 2
    assert runner.invoke(main, ["bulk", "--udp", "--streams", "2"]).exit_code == 2
    assert runner.invoke(main, ["bulk", "--sweep-streams", "1,x"]).exit_code == 2


def test_link_model_is_chosen_by_what_can_carry_the_traffic() -> None:
    from pktbench.workloads.bulk import LINK_MODELS, link_model_for

    # 0.406 Gbit/s on an L1 wire cannot cross a 0.4 Gbit/s physical link: a shaper metered frames
    assert link_model_for(406e6, 399e6, 400e6) == "l2"
    assert link_model_for(380e6, 374e6, 400e6) == "l1"
    assert link_model_for(406e6, 399e6, None) == "l1"
    assert link_model_for(380e6, 374e6, 400e6, "l2") == "l2"
    assert link_model_for(406e6, 399e6, 400e6, "l1") == "l1"
    assert set(LINK_MODELS) == {"l1", "l2"}
    with pytest.raises(ConfigError, match="link model"):
        bulk.BulkConfig(link_model="l3")
