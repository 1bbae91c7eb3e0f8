"""Reporters of bulk, validate, decode, testbed and profiles on golden documents, and the CLI.

Each moved table is checked against a snapshot taken from the output before
the move (tests/data/*.table.txt); regenerate with PKTBENCH_REGEN_GOLDEN=1
only after an intended change to the output, and review the diff. The
bulk-old-*.json files are bulk documents as pktbench wrote them before bulk
and sweep results shared one schema: they must keep loading.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import golden_support as g
import pktbench
from pktbench import api
from pktbench.cli import main
from pktbench.errors import ConfigError
from pktbench.report import REPORTERS, render_json, write_report
from pktbench.results import SCHEMA_VERSION, SweepResult, load_result

DATA = g.DATA
REGEN = os.environ.get("PKTBENCH_REGEN_GOLDEN") == "1"
PACKAGE_ROOT = str(Path(pktbench.__file__).resolve().parent.parent)


def snapshot(name: str, text: str) -> None:
    path = DATA / name
    if REGEN:
        path.write_text(text)
    assert text == path.read_text()


def rendered(kind: str | None, result: Any, fmt: str = "table") -> str:
    out = io.StringIO()
    write_report(fmt, result, out, kind=kind)
    return out.getvalue()


# -- snapshots of every moved table -------------------------------------------------

@pytest.mark.parametrize("name", ["bulk-old-tcp", "bulk-old-udp"])
def test_bulk_table_snapshot(name: str) -> None:
    result = load_result(DATA / f"{name}.json")
    assert result.kind == "bulk"
    snapshot(f"{name}.table.txt", rendered(None, result))


@pytest.mark.parametrize("name", ["validate-pass", "validate-mixed"])
def test_validate_table_snapshot(name: str) -> None:
    report = g.validation_report(g.document(f"{name}.json"))
    snapshot(f"{name}.table.txt", rendered("validate", report))


def test_validate_json_is_the_report_document() -> None:
    doc = g.document("validate-mixed.json")
    report = g.validation_report(doc)
    assert json.loads(rendered("validate", report, "json")) == doc


def test_decode_table_snapshot() -> None:
    snapshot("decode-session.table.txt",
             rendered("decode", g.decode_result(g.document("decode-session.json"))))


def test_decode_json_is_the_result_document() -> None:
    doc = g.document("decode-session.json")
    assert json.loads(rendered("decode", g.decode_result(doc), "json")) == doc


def test_testbed_status_snapshot_and_json() -> None:
    doc = g.document("testbed-status.json")
    status = api.TestbedStatus(doc["prefix"], g.testbed_info(doc))
    snapshot("testbed-status.table.txt", rendered("testbed", status))
    # the golden file predates later TestbedConfig and TestbedInfo fields; they come back
    # at their defaults
    assert json.loads(rendered("testbed", status, "json")) == {
        **doc, "config": dataclasses.asdict(status.info.config), "replaced": []}
    assert doc["config"].items() <= dataclasses.asdict(status.info.config).items()


def test_testbed_not_up_and_removal_lines() -> None:
    down = api.TestbedStatus("pkq", None)
    assert rendered("testbed", down) == "testbed pkq: not up\n"
    assert json.loads(rendered("testbed", down, "json")) == {"prefix": "pkq", "up": False}
    assert rendered("testbed-down", api.TestbedRemoval("pkq", True)) == "testbed pkq: removed\n"
    assert (rendered("testbed-down", api.TestbedRemoval("pkq", False))
            == "testbed pkq: none to remove\n")


def test_probe_snapshot_and_json() -> None:
    features = g.document("testbed-probe.json")
    probe = api.KernelProbe(features)
    snapshot("testbed-probe.table.txt", rendered("probe", probe))
    assert rendered("probe", probe, "json") == json.dumps(features) + "\n"


def test_profiles_snapshot() -> None:
    snapshot("profiles.table.txt", rendered("profiles", pktbench.list_profiles()))


# -- one schema for sweep and bulk documents -------------------------------------------

def _keys_like(value: Any, fragment: str) -> list[str]:
    """Every key anywhere in `value` that contains `fragment`."""
    if isinstance(value, dict):
        return [k for k in value if fragment in k] + [
            found for v in value.values() for found in _keys_like(v, fragment)]
    if isinstance(value, list):
        return [found for v in value for found in _keys_like(v, fragment)]
    return []


def test_old_bulk_file_upgrades_to_the_shared_schema() -> None:
    old = g.document("bulk-old-tcp.json")
    result = load_result(DATA / "bulk-old-tcp.json")
    doc = result.to_dict()
    assert list(doc)[:2] == ["schema_version", "kind"]
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "bulk"
    assert doc["config"]["target"] == old["target"]
    renamed = {"bits_per_second": "goodput_bps", "wire_bits_per_second": "wire_bps",
               "frame_bits_per_second": "frame_bps", "offered_bits_per_second": "offered_bps"}
    assert doc["ceiling"] == {renamed.get(k, k): v for k, v in old["ceiling"].items()}
    assert doc["ceiling"]["goodput_bps"] == old["ceiling_bits_per_second"]
    assert doc["plan"] == old["plan"] and len(doc["steps"]) == len(old["steps"])
    for step, before in zip(doc["steps"], old["steps"]):
        assert step["aggregate_bps"] == before["aggregate_bits_per_second"]
        assert step["wire_bps"] == before["wire_bits_per_second"]
        assert [s["goodput_bps"] for s in step["streams"]] == \
            [s["bits_per_second"] for s in before["streams"]]
        assert [s["payload_bps"] for s in step["server"]["streams"]] == \
            [s["bits_per_second"] for s in before["server"]["streams"]]
        assert not _keys_like(step, "bits_per_second")
    assert doc["knee"] is None and doc["search"] is None
    # the same document again after a round trip through the JSON reporter
    again = SweepResult.from_dict(json.loads(render_json(result)))
    assert again == result


def test_a_saved_bulk_document_renders_without_the_engine() -> None:
    code = ("import sys\n"
            f"sys.path.insert(0, {PACKAGE_ROOT!r})\n"
            "from pktbench.report import write_report\n"
            "from pktbench.results import load_result\n"
            f"write_report('table', load_result({str(DATA / 'bulk-old-tcp.json')!r}), sys.stdout)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pktbench._engine', "
            "'pktbench.engine', 'pktbench.workloads', 'pktbench.session'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert done.stdout.startswith((DATA / "bulk-old-tcp.table.txt").read_text())


def test_ceiling_is_worked_out_from_the_steps() -> None:
    doc = load_result(DATA / "bulk-old-tcp.json")
    rebuilt = SweepResult.bulk(doc.environment, doc.config, doc.steps, doc.plan)
    assert rebuilt.ceiling == doc.ceiling and doc.ceiling is not None
    assert doc.ceiling["goodput_bps"] == max(s["aggregate_bps"] for s in doc.steps)


@pytest.mark.parametrize("name", ["sweep-old-path", "sweep-new-path", "sweep-blast"])
def test_old_sweep_files_load_as_sweeps(name: str) -> None:
    result = load_result(DATA / f"{name}.json")
    assert result.kind == "sweep" and result.plan is None and result.ceiling is None
    assert json.loads(render_json(result))["kind"] == "sweep"


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    doc = load_result(DATA / "sweep-blast.json").to_dict()
    doc["kind"] = "flood"
    path = tmp_path / "flood.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="kind 'flood' is not a pktbench result kind"):
        load_result(path)


def test_compare_refuses_a_sweep_against_a_bulk_result() -> None:
    code = CliRunner().invoke(main, ["compare", str(DATA / "sweep-blast.json"),
                                     str(DATA / "bulk-old-tcp.json")])
    assert code.exit_code == 1
    assert code.stderr.count("\n") == 1
    assert "sweep-blast is a rate sweep and bulk-old-tcp a bulk test" in code.stderr


def test_compare_json_is_the_comparison(tmp_path: Path) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text((DATA / "sweep-old-path.json").read_text())
    new.write_text((DATA / "sweep-new-path.json").read_text())
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", str(old), str(new), "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (DATA / "compare-old-new.txt").read_text() + "\n"
    doc = json.loads(out.read_text())
    assert doc["a"]["label"] == "old" and doc["b"]["label"] == "new"
    assert [row["metric"] for row in doc["summary"]]


# -- the registry ------------------------------------------------------------------------

def test_reporters_are_explicit_and_read_only() -> None:
    assert set(REPORTERS) == {"sweep", "bulk", "run", "validate", "decode", "testbed",
                              "testbed-down", "probe", "profiles", "compare"}
    assert set(REPORTERS["sweep"]) == {"table", "wide", "json", "csv", "plot"}
    assert set(REPORTERS["bulk"]) == {"table", "wide", "json"}
    with pytest.raises(TypeError):
        REPORTERS["xml"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        REPORTERS["bulk"]["csv"] = REPORTERS["sweep"]["csv"]  # type: ignore[index]


def test_a_format_the_kind_lacks_is_a_config_error() -> None:
    result = load_result(DATA / "bulk-old-udp.json")
    with pytest.raises(ConfigError, match="unknown report format 'csv' for a bulk result"):
        write_report("csv", result, io.StringIO())
    with pytest.raises(ConfigError, match="no reporter for results of kind"):
        write_report("table", object(), io.StringIO())


def test_public_api_names() -> None:
    for name in ("run", "run_bulk", "BulkConfig", "validate_server", "ValidationReport",
                 "temporary_testbed",
                 "testbed_up", "testbed_down", "testbed_status", "testbed_probe",
                 "TestbedConfig", "TestbedStatus", "write_report"):
        assert name in pktbench.__all__
        assert getattr(pktbench, name) is not None
    # a lazy name equal to a submodule's would turn into the module once it is imported
    clashes = [name for name in pktbench.__all__
               if importlib.util.find_spec(f"pktbench.{name}") is not None]
    assert clashes == []


# -- the commands' output, through real servers and real files --------------------------

def _table_head(text: str, lines: int) -> list[str]:
    return text.splitlines()[:lines]


def test_cli_bulk_output_keeps_its_shape(tmp_path: Path) -> None:
    # Ports above the kernel's ephemeral range: no other test's connection can hold them.
    out = tmp_path / "bulk.json"
    result = CliRunner().invoke(main, [
        "bulk", "--sweep-streams", "1,2", "--duration", "0.3", "--warmup", "0.1",
        "--link-speed", "2x10G", "--ports", "61011,61012", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    # the tables, to the overhead line (the prose under it wraps where its figures fall)
    golden = (DATA / "bulk-old-tcp.table.txt").read_text().split("\noverhead per")[0].splitlines()
    got = result.stdout.split("\noverhead per")[0].splitlines()
    assert len(got) == len(golden)
    assert max(len(line) for line in result.stdout.splitlines()) <= 100
    # every label and header is as before; the figures are this run's
    assert got[0] == golden[0] and got[1] == "flow plan (given): ports 61011, 61012"
    assert got[2:4] == golden[2:4]
    for mine, before in zip(got, golden):
        assert mine.split(":")[0] == before.split(":")[0] or mine[:4] == before[:4]
    assert result.stderr.startswith("step 1: tcp 1 stream(s): ")
    doc = json.loads(out.read_text())
    assert doc["kind"] == "bulk" and doc["schema_version"] == SCHEMA_VERSION
    assert load_result(out).ceiling == doc["ceiling"]
    assert rendered(None, load_result(out)) == result.stdout


def test_cli_sweep_workload_bulk_udp_json_to_stdout() -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
         "from pktbench.cli import main; main(prog_name='pktbench')",
         "sweep", "--workload", "bulk", "--udp", "--gbps", "1", "--duration", "0.3",
         "--warmup", "0.1", "--json", "-"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "bulk" and doc["steps"][0]["transport"] == "udp"
    # a loaded machine loses datagrams, so only "some arrived" is asserted on the rate
    assert doc["ceiling"]["goodput_bps"] == doc["steps"][0]["aggregate_bps"] > 0
    assert doc["ceiling"]["offered_bps"] == 1e9
    assert "bulk udp forward to embedded loopback server" in result.stderr


def test_cli_decode_table_and_json(tmp_path: Path) -> None:
    pytest.importorskip("scapy", reason="the capture is built with scapy")
    import test_decode

    capture = test_decode._write(tmp_path / "session.pcap", test_decode._session_packets())
    table = CliRunner().invoke(main, ["decode", str(capture)])
    assert table.exit_code == 0, table.stderr
    assert table.stdout == (DATA / "decode-session.table.txt").read_text()
    as_json = CliRunner().invoke(main, ["decode", "--json", str(capture)])
    doc = json.loads(as_json.stdout)
    assert doc["totals"] == g.document("decode-session.json")["totals"]
    missing = CliRunner().invoke(main, ["decode", "--json", str(tmp_path / "nope.pcap")])
    assert missing.exit_code == 1 and "error" in json.loads(missing.stdout)


def test_cli_validate_table_and_json(tmp_path: Path) -> None:
    pytest.importorskip("scapy", reason="validate crafts its datagrams with scapy")
    out = tmp_path / "v.json"
    result = CliRunner().invoke(main, ["validate", "--case", "valid ping", "--case",
                                       "bad magic", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["case", "expected", "observed", "result"]
    assert lines[-1].startswith("embedded loopback server (pktbench ")
    assert lines[-1].endswith(": 2 passed, 0 failed, 0 skipped")
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["cases"]] == ["valid ping", "bad magic"]
    assert rendered("validate", g.validation_report(doc)) == result.stdout


def test_cli_validate_error_keeps_stdout_one_document() -> None:
    result = CliRunner().invoke(main, ["validate", "127.0.0.1:1", "--json", "-"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["target"] == "127.0.0.1:1" and doc["error"]


def test_cli_testbed_status_of_a_missing_testbed() -> None:
    text = CliRunner().invoke(main, ["testbed", "status", "--prefix", "pkrq"])
    assert text.exit_code == 1 and text.stdout == "testbed pkrq: not up\n"
    as_json = CliRunner().invoke(main, ["testbed", "status", "--prefix", "pkrq", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"prefix": "pkrq", "up": False}


@pytest.mark.skipif(os.geteuid() != 0, reason="probing the kernel needs root")
def test_cli_testbed_probe_matches_the_library() -> None:
    features = api.testbed_probe().features
    text = CliRunner().invoke(main, ["testbed", "probe"])
    assert text.exit_code == 0
    assert text.stdout == "".join(f"{k}: {'yes' if v else 'no'}\n" for k, v in features.items())


def test_cli_profiles_output_unchanged() -> None:
    result = CliRunner().invoke(main, ["profiles"])
    assert result.exit_code == 0
    assert result.stdout == (DATA / "profiles.table.txt").read_text()


def test_help_imports_neither_scapy_numpy_nor_matplotlib() -> None:
    code = ("import sys\n"
            f"sys.path.insert(0, {PACKAGE_ROOT!r})\n"
            "from pktbench.cli import main\n"
            "try:\n"
            "    main(['--help'], prog_name='pktbench')\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            "heavy = {'scapy', 'numpy', 'matplotlib'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: pktbench" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_temporary_testbed_is_up_inside_and_gone_after() -> None:
    config = pktbench.TestbedConfig(prefix="pkrt")
    try:
        with pktbench.temporary_testbed(config) as info:
            status = pktbench.testbed_status("pkrt")
            assert status.up and status.info is not None
            assert status.info.addrs == info.addrs
            assert rendered("testbed", status).startswith("testbed pkrt: up, ")
        assert not pktbench.testbed_status("pkrt").up
    finally:
        pktbench.testbed_down("pkrt")


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_cli_testbed_up_and_status_print_the_same_summary() -> None:
    runner = CliRunner()
    try:
        up = runner.invoke(main, ["testbed", "up", "--prefix", "pkru", "--rate-cap", "1gbit"])
        assert up.exit_code == 0, up.stderr
        status = runner.invoke(main, ["testbed", "status", "--prefix", "pkru"])
        assert status.exit_code == 0
        # the interface counters may move between the calls (neighbour discovery)
        def head(text: str) -> str:
            return text.split("  counters (")[0]
        assert head(up.stdout) == head(status.stdout)
        assert head(status.stdout) == head(rendered("testbed", api.testbed_status("pkru")))
        assert "  counters (packets rx/tx, dropped rx/tx):\n    a va0: " in status.stdout
        assert up.stdout.startswith("testbed pkru: up, ")
        assert "  rate cap: tbf 1000000000 bit/s per path, a->b\n" in up.stdout
        down = runner.invoke(main, ["testbed", "down", "--prefix", "pkru"])
        assert down.exit_code == 0 and down.stdout == "testbed pkru: removed\n"
    finally:
        api.testbed_down("pkru")
