"""Multi-core UDP steps (client worker processes, one server socket per flow)
and the sweep-integration of bulk: all on loopback, short and bounded."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pktbench.cli import main

# --------------------------------------------------------------------------
# sweep --workload bulk


def test_cli_sweep_bulk_over_stream_counts_writes_the_bulk_document(tmp_path: Path) -> None:
    out = tmp_path / "bulk.json"
    result = CliRunner().invoke(main, [
        "sweep", "--workload", "bulk", "--streams", "1,2", "--duration", "0.5", "--warmup",
        "0.1", "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "ceiling:" in result.output and "streams" in result.output
    document = json.loads(out.read_text())
    assert document["kind"] == "bulk"
    assert document["config"]["sweep_streams"] == [1, 2]
    assert document["config"]["duration_s"] == 0.5
    steps = document["steps"]
    assert [s["streams_requested"] for s in steps] == [1, 2]
    assert [len(s["streams"]) for s in steps] == [1, 2]
    for step in steps:
        assert step["aggregate_bps"] > 0
        assert all(stream["error"] is None and stream["bytes"] > 0 for stream in step["streams"])
    # each stream on its own source port
    assert len({s["source_port"] for s in steps[1]["streams"]}) == 2
    assert document["ceiling"]["goodput_bps"] == max(s["aggregate_bps"]
                                                         for s in steps)


def test_cli_sweep_bulk_refuses_rate_sweep_options() -> None:
    runner = CliRunner()
    mixed = runner.invoke(main, ["sweep", "--workload", "bulk", "--streams", "1",
                                 "--rates", "1k"])
    assert mixed.exit_code == 2 and "--rates does not apply to --workload bulk" in mixed.output
    tcp_rates = runner.invoke(main, ["sweep", "--workload", "bulk", "--gbps", "1"])
    assert tcp_rates.exit_code == 2 and "add --udp" in tcp_rates.output
    nothing = runner.invoke(main, ["sweep", "--workload", "bulk"])
    assert nothing.exit_code == 2 and "--streams LIST" in nothing.output
    stray = runner.invoke(main, ["sweep", "--streams", "2"])
    assert stray.exit_code == 2 and "need --workload bulk" in stray.output


# --------------------------------------------------------------------------
# multi-core UDP steps

import socket  # noqa: E402
from engine_support import serving  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pktbench import engine, protocol, wire  # noqa: E402
from pktbench.workloads import multiflow as workers  # noqa: E402
from pktbench.address import Target  # noqa: E402
from pktbench.errors import ConfigError, ServerRefusedError  # noqa: E402
from pktbench.protocol import StepParams  # noqa: E402
from pktbench.session import Client, Server, ServerConfig  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    host, port = server.address
    with Client(Target(host, port)) as c:
        yield c  # its worker pool lives as long as the session


def test_connected_reuseport_sockets_each_get_their_own_flow() -> None:
    """The kernel behaviour the server relies on: a connected socket in an
    SO_REUSEPORT group receives exactly its 4-tuple; others go to the rest."""
    def bound(address: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
        return sock

    main = bound(("127.0.0.1", 0))
    port = main.getsockname()[1]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    flows = []
    try:
        for sender in senders:
            sender.connect(("127.0.0.1", port))
        for sender in senders[:2]:
            flow = bound(("127.0.0.1", port))
            flow.connect(sender.getsockname())
            flows.append(flow)
        for index, sender in enumerate(senders):
            for _ in range(20):
                sender.send(bytes([index]))

        def drained(sock: socket.socket) -> list[bytes]:
            got = []
            while True:
                try:
                    got.append(sock.recv(16))
                except BlockingIOError:
                    return got

        assert drained(flows[0]) == [b"\x00"] * 20
        assert drained(flows[1]) == [b"\x01"] * 20
        assert drained(main) == [b"\x02"] * 20
    finally:
        for sock in [main, *senders, *flows]:
            sock.close()


@pytest.mark.parametrize("workload", ["rr", "blast"])
def test_two_workers_exact_counts_and_one_flow_per_server_socket(client: Client,
                                                                 workload: str) -> None:
    params = StepParams(workload=workload, command="ping" if workload == "rr" else "none",
                        rate_pps=2000, duration_s=0.5, warmup_s=0.1, drain_s=0.3,
                        timeout_s=0.2, streams=2)
    step = client.run_step(params)
    # the step dict keeps its keys and sums the flows
    assert step["sent_packets"] == 1000 and step["received_packets"] == 1000
    assert step["lost_packets"] == 0 and step["loss_ratio"] == 0.0
    assert step["offered_pps"] == 2000 and not step["sender_bound"]
    assert step["sender"]["workers"] == 2
    figures = step["workers"]
    assert [w["worker"] for w in figures] == [0, 1]
    assert [w["sent_packets"] for w in figures] == [500, 500]
    assert [w["received_packets"] for w in figures] == [500, 500]
    assert len({w["client_port"] for w in figures}) == 2
    assert client.data_socket.getsockname()[1] not in {w["client_port"] for w in figures}
    # each server socket got exactly its own worker's flow, nothing else
    receiver = step["receiver"]
    streams = receiver["streams"]
    assert [s["client_port"] for s in streams] == [w["client_port"] for w in figures]
    assert [s["received"] for s in streams] == [500, 500]
    assert all(sum(s["drops"].values()) == 0 for s in streams)
    assert sum(receiver["drops"].values()) == 0
    if workload == "rr":
        # warm-up requests are answered too, never counted
        assert [s["warmup"] for s in streams] == [100, 100]
        assert [s["replied"] for s in streams] == [600, 600]
        assert step["latency_us"] is not None
        assert all(w["latency_us"] is not None for w in figures)
    else:
        assert [s["replied"] for s in streams] == [0, 0]
        assert [s["lost"] for s in streams] == [0, 0]
        assert step["jitter_us"] is not None


def test_merged_histograms_are_the_bucket_sums(server: Server, client: Client) -> None:
    pool = workers._pool_for(client, 2)
    params = StepParams(workload="rr", command="ping", rate_pps=1000, duration_s=0.4,
                        drain_s=0.3, timeout_s=0.2, streams=2)
    armed = client.begin_step(params, client_ports=pool.ports)
    start_ns = engine.monotonic_ns() + 100_000_000
    jobs = [{"template": wire.build_request(wire.COMMAND_PING, 64, token=armed.token, seq=0,
                                            send_ns=0, stream_id=i),
             "rate_pps": 500.0, "duration_s": 0.4, "drain_s": 0.3, "expect_replies": True,
             "timeout_s": 0.2, "start_ns": start_ns} for i in range(2)]
    outcomes = pool.run(jobs, timeout_s=20.0)
    client.end_step({"sent": sum(o.sent for o in outcomes),
                     "sent_per_stream": [o.sent for o in outcomes]})
    merged = workers.merge_outcomes(outcomes, 1000.0)
    for name in ("latency_hist", "actual_latency_hist", "send_lag_hist"):
        expected = getattr(outcomes[0], name) + getattr(outcomes[1], name)
        assert np.array_equal(getattr(merged, name), expected)
        assert getattr(merged, name).dtype == np.uint64
    assert int(merged.latency_hist.sum()) == merged.counters["received"] == 400
    assert merged.counters["sent"] == 400
    assert merged.counters["lat_min_ns"] == min(o.counters["lat_min_ns"] for o in outcomes)
    assert merged.counters["lat_max_ns"] == max(o.counters["lat_max_ns"] for o in outcomes)
    # both workers shared one schedule start, so their spans agree
    assert abs(outcomes[0].send_span_s - outcomes[1].send_span_s) < 0.05


def test_server_refuses_a_multi_flow_step_without_its_ports(client: Client) -> None:
    with pytest.raises(ServerRefusedError, match="client_ports must"):
        client.begin_step(StepParams(workload="blast", command="none", rate_pps=100,
                                     streams=2))
    with pytest.raises(ServerRefusedError, match="one UDP port per stream"):
        client.begin_step(StepParams(workload="blast", command="none", rate_pps=100,
                                     streams=2), client_ports=[40000])
    # the session goes on
    assert client.run_step(StepParams(workload="rr", command="ping", rate_pps=1000,
                                      duration_s=0.1))["received_packets"] == 100


def test_client_ports_validation() -> None:
    assert protocol.validate_client_ports([1000, 1001], 2) == (1000, 1001)
    for bad, streams in (("1000", 1), ([1000, 1000], 2), ([0, 5], 2), ([True, 5], 2),
                         ([1000], 2)):
        with pytest.raises(ConfigError, match="^step params: client_ports must"):
            protocol.validate_client_ports(bad, streams)


def test_outstanding_is_split_over_the_workers() -> None:
    assert workers.split_outstanding(None, 3) == [None, None, None]
    assert workers.split_outstanding(5, 2) == [3, 2]
    with pytest.raises(ConfigError, match="--outstanding >= 4"):
        workers.split_outstanding(2, 4)


def test_cli_run_with_workers_reports_each_worker(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = CliRunner().invoke(main, [
        "run", "--workload", "blast", "--rate", "2000", "--duration", "0.3", "--workers", "2",
        "--cpus", "0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    step = json.loads(out.read_text())["steps"][0]
    assert step["sent_packets"] == 600 and step["received_packets"] == 600
    assert [w["cpu"] for w in step["workers"]] == [0, 0]
    assert [s["received"] for s in step["receiver"]["streams"]] == [300, 300]
    refused = CliRunner().invoke(main, ["run", "--workload", "rr-tcp", "--workers", "2"])
    assert refused.exit_code == 2 and "--workers splits rr and blast" in refused.output
