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
        assert step["aggregate_bits_per_second"] > 0
        assert all(stream["error"] is None and stream["bytes"] > 0 for stream in step["streams"])
    # each stream on its own source port
    assert len({s["source_port"] for s in steps[1]["streams"]}) == 2
    assert document["ceiling_bits_per_second"] == max(s["aggregate_bits_per_second"]
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
