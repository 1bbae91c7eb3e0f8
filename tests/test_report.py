"""Reporters on golden sweep documents: snapshots, and table/JSON/CSV agreeing on every number.

Snapshots (tests/data/*.table.txt, *.csv) are regenerated with
PKTBENCH_REGEN_GOLDEN=1 after an intended change to the output; review the diff.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pktbench import results
from pktbench.report import table
from pktbench.errors import ConfigError
from pktbench.report import (
    REPORTERS,
    Progress,
    check_output_path,
    render_compare,
    render_csv,
    render_json,
    render_table,
    step_line,
    step_table,
    write_plot,
    write_report,
)
from pktbench.comparison import compare
from pktbench.report.csvout import flatten_step
from pktbench.results import SCHEMA_VERSION, SweepResult, environment, load_result

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = ["sweep-old-path", "sweep-new-path", "sweep-blast"]
REGEN = os.environ.get("PKTBENCH_REGEN_GOLDEN") == "1"


def golden(name: str) -> SweepResult:
    return load_result(DATA / f"{name}.json")


def snapshot(path: Path, text: str) -> None:
    if REGEN:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PKTBENCH_REGEN_GOLDEN=1 once"
    assert text == path.read_text()


# --------------------------------------------------------------------------
# snapshots


@pytest.mark.parametrize("name", GOLDEN)
def test_table_snapshot(name: str) -> None:
    snapshot(DATA / f"{name}.table.txt", render_table(golden(name)))


@pytest.mark.parametrize("name", GOLDEN)
def test_csv_snapshot(name: str) -> None:
    snapshot(DATA / f"{name}.csv", render_csv(golden(name)))


def test_compare_snapshot() -> None:
    text = render_compare(compare(golden("sweep-old-path"), golden("sweep-new-path"),
                                  label_a="old", label_b="new"))
    snapshot(DATA / "compare-old-new.txt", text)


# --------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize("name", GOLDEN)
def test_json_round_trip(name: str, tmp_path: Path) -> None:
    result = golden(name)
    text = render_json(result)
    document = json.loads(text)
    assert next(iter(document)) == "schema_version"
    assert document["schema_version"] == SCHEMA_VERSION
    # the golden files are version 1: what is written is their upgrade, nothing else
    assert document == results.upgrade_document(json.loads((DATA / f"{name}.json").read_text()))
    assert SweepResult.from_dict(document) == result
    path = tmp_path / "out.json"
    write_report("json", result, path)
    assert load_result(path) == result


def test_json_writes_non_finite_numbers_as_null() -> None:
    result = golden("sweep-blast")
    steps = list(result.steps)
    steps[0] = dict(steps[0], jitter_us=float("nan"), sent_pps=float("inf"))
    text = render_json(SweepResult(result.environment, result.config, tuple(steps)))
    first = json.loads(text)["steps"][0]
    assert first["jitter_us"] is None and first["sent_pps"] is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    document = json.loads((DATA / "sweep-old-path.json").read_text())
    document["schema_version"] = SCHEMA_VERSION + 1
    path = tmp_path / "future.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=f"schema_version {SCHEMA_VERSION + 1} is newer than "
                                          "this pktbench reads .* upgrade pktbench"):
        load_result(path)


def test_older_schema_is_upgraded_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def one_to_two(doc: dict[str, Any]) -> dict[str, Any]:
        doc["config"]["upgraded"] = True
        return doc

    monkeypatch.setattr(results, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(results, "_UPGRADES", {1: one_to_two})
    original = json.loads((DATA / "sweep-old-path.json").read_text())
    upgraded = results.upgrade_document(original)
    assert upgraded["schema_version"] == 2 and upgraded["config"]["upgraded"] is True
    assert "upgraded" not in original["config"]


@pytest.mark.parametrize("text,fragment", [
    ("{\n  \"schema_version\": 1,\n  oops\n}", "line 3: not valid JSON"),
    ("{\"steps\": []}", "not a pktbench result"),
    ("[1, 2]", "not a pktbench result"),
    ("{\"schema_version\": 1, \"config\": {}, \"steps\": []}", "key 'environment' is missing"),
])
def test_broken_result_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_result(path)


# --------------------------------------------------------------------------
# the three formats agree


def _cell_value(cell: str) -> Any:
    if cell == "":
        return None
    if cell in ("true", "false"):
        return cell == "true"
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell


@pytest.mark.parametrize("name", GOLDEN)
def test_csv_has_the_json_numbers_exactly(name: str) -> None:
    result = golden(name)
    rows = list(csv.DictReader(io.StringIO(render_csv(result))))
    assert len(rows) == len(result.steps)
    for row, step in zip(rows, result.steps):
        flat = flatten_step(step)
        assert row.pop("knee") in ("true", "false")  # which one: tests/test_tables.py
        for column, cell in row.items():
            expected = flat.get(column)
            if isinstance(expected, list):
                assert cell == "; ".join(expected)
            else:
                value = _cell_value(cell)
                assert value == expected, (column, cell, expected)
                assert type(value) is type(expected), (column, cell, expected)
        # every leaf of the step is in the CSV
        assert {k for k, v in flat.items() if not isinstance(v, dict)} <= set(row)


def _parse_simple_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Split a tabulate "simple" table by the column spans of its dashes line."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"[- ]*-[- ]*", line))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]

    def cut(line: str) -> list[str]:
        cells = [line[a:b].strip() for a, b in spans[:-1]]
        cells.append(line[spans[-1][0]:].strip())
        return cells

    headers = cut(lines[rule - 1])
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        rows.append(cut(line))
    return headers, rows


def _close(cell: str, value: float | None, scale: float = 1.0) -> bool:
    """The cell shows `value` (times scale) rounded to the digits the cell has."""
    if value is None:
        return cell == "-"
    number = float(cell.replace(",", ""))
    decimals = len(cell.split(".")[1]) if "." in cell else 0
    return abs(number - value * scale) <= 0.5 * 10 ** -decimals + 1e-9


@pytest.mark.parametrize("name", GOLDEN)
def test_table_shows_the_json_numbers(name: str) -> None:
    result = golden(name)
    headers, rows = _parse_simple_table(render_table(result, wide=True))
    assert len(rows) == len(result.steps)
    column = {h: i for i, h in enumerate(headers)}
    received = "responses pps" if result.config["workload"] == "rr" else "received pps"
    for row, step in zip(rows, result.steps):
        assert _close(row[column["offered pps"]], step["offered_pps"])
        assert _close(row[column["sent pps"]], step["sent_pps"])
        assert _close(row[column[received]], step["received_pps"])
        assert row[column["loss %"]] == "0" if step["loss_ratio"] == 0 else \
            _close(row[column["loss %"]], step["loss_ratio"], 100)
        if step["latency_us"] is not None:
            for header, key in (("p50 us", "p50"), ("p99 us", "p99"), ("p99.9 us", "p999"),
                                ("max us", "max")):
                assert _close(row[column[header]], step["latency_us"][key]), header
        else:
            assert _close(row[column["jitter us"]], step["jitter_us"])
        assert _close(row[column["lag p99 us"]], step["send_lag_us"]["p99"])
        assert _close(row[column["rx Mbit/s"]], step["received_bps"], 1e-6)
        verdict = row[column["verdict"]]
        if step["sender_bound"]:
            assert verdict == "sender-bound"
        elif step["failures"]:
            assert verdict.startswith("FAIL ") and step["failures"][0] in verdict
        else:
            assert verdict == "ok"
    marked = [i for i, row in enumerate(rows) if row[0] == table.KNEE_MARK]
    if result.knee is None:
        assert marked == []
    else:
        assert len(marked) == 1
        assert result.steps[marked[0]]["index"] == result.knee["step_index"]


def test_table_summary_lines_say_knee_last_good_and_searches() -> None:
    text = render_table(golden("sweep-old-path"))
    assert "knee: 6,207 pps - loss 11.57% > 0.1% at 6,207 pps, confirmed at 8,056 pps" in text
    assert "criterion: loss" in text
    assert "last good rate: 4,782 pps" in text
    assert "kneedle estimate: 5,610 pps" in text
    assert "NDR: 5,472 pps (highest rate with zero loss; interval 5,472..5,580 pps" in text
    assert "PDR: 5,523 pps (highest rate with loss <= 0.50%" in text


def test_table_without_knee_names_sender_bound_steps() -> None:
    text = render_table(golden("sweep-blast"), wide=True)
    assert "no knee up to 432,876 pps (sender-bound above" in text
    assert "from 657,933 pps the sender itself could not reach the offered rate" in text
    assert table.KNEE_MARK not in text


def test_repeats_show_their_spread() -> None:
    result = golden("sweep-new-path")
    text = render_table(result)
    assert "repeats:" in text
    group = next(g for g in result.rate_groups() if g.offered_pps == 38522)
    p99 = group.spread("latency_us", "p99")
    assert p99 is not None and p99.min == 1070.0 and p99.max == 1193.6
    line = next(line for line in text.splitlines()
                if line.strip().startswith("38,522") and " / " in line)
    assert "1,070 / 1,132 / 1,194" in line


def test_step_table_for_a_single_run() -> None:
    step = golden("sweep-old-path").steps[7]
    text = step_table(step)
    assert "6,207 pps" in text
    assert "responses" in text and "10,975 packets" in text
    assert "110.5 / 140.2 / 265.2 / 459.3 / 2,558 us" in text
    assert "send lag p99" in text and "Mbit/s" in text
    assert "FAIL loss 11.57% > 0.1%" in text


# --------------------------------------------------------------------------
# registry and output paths


def test_reporters_registry() -> None:
    assert set(REPORTERS["sweep"]) == {"table", "wide", "json", "csv", "plot"}
    with pytest.raises(ConfigError, match="unknown report format 'xml'"):
        write_report("xml", golden("sweep-blast"), io.StringIO())


@pytest.mark.parametrize("kind", ["table", "json", "csv"])
def test_text_reporters_write_streams_and_paths(kind: str, tmp_path: Path) -> None:
    result = golden("sweep-old-path")
    stream = io.StringIO()
    write_report(kind, result, stream)
    path = tmp_path / f"out.{kind}"
    write_report(kind, result, path)
    assert path.read_text() == stream.getvalue() != ""


def test_check_output_path(tmp_path: Path) -> None:
    assert check_output_path("-") is None
    assert check_output_path(tmp_path / "r.json") == tmp_path / "r.json"
    with pytest.raises(ConfigError, match="output directory .*missing does not exist"):
        check_output_path(tmp_path / "missing" / "r.json")
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_path(tmp_path)
    with pytest.raises(ConfigError, match="must end in .png or .svg"):
        check_output_path(tmp_path / "r.jpg", "plot")
    with pytest.raises(ConfigError, match="cannot go to standard output"):
        check_output_path("-", "plot")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write to any directory, so there is no read-only one")
def test_check_output_path_refuses_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            check_output_path(locked / "r.json")
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------
# plot

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib not installed (pktbench[plot])")
@pytest.mark.parametrize("name", GOLDEN)
def test_plot_writes_png_and_svg(name: str, tmp_path: Path) -> None:
    png, svg = tmp_path / "sweep.png", tmp_path / "sweep.svg"
    write_plot(golden(name), png)
    write_report("plot", golden(name), svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:2000]


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ConfigError, match=r"plotting needs matplotlib: pip install 'pktbench\[plot\]'"):
        write_plot(golden("sweep-blast"), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="plotting needs matplotlib"):
        check_output_path(tmp_path / "x.png", "plot")


# --------------------------------------------------------------------------
# compare


def test_compare_old_and_new_path() -> None:
    old, new = golden("sweep-old-path"), golden("sweep-new-path")
    result = compare(old, new, label_a="old", label_b="new")
    summary = {row["metric"]: row for row in result["summary"]}
    assert summary["knee_pps"]["a"] == 6207 and summary["knee_pps"]["b"] == 38522
    assert summary["knee_pps"]["ratio"] == pytest.approx(38522 / 6207)
    assert summary["knee_pps"]["verdict"] == "better"
    assert summary["ndr_pps"]["verdict"] == "better"
    # Every rate the old sweep ran was also run by the new one.
    assert [row["offered_pps"] for row in result["rates"]] == [s["offered_pps"] for s in old.steps]
    at_knee = next(row for row in result["rates"] if row["offered_pps"] == 6207)
    assert at_knee["a_p99_us"] == 265.2
    assert at_knee["b_p99_us"] == pytest.approx((90.6 + 85.0) / 2)  # median of two repeats
    assert at_knee["p99_verdict"] == "better"
    assert json.loads(json.dumps(result)) == result


def test_compare_reversed_is_worse() -> None:
    result = compare(golden("sweep-new-path"), golden("sweep-old-path"))
    summary = {row["metric"]: row for row in result["summary"]}
    assert summary["knee_pps"]["verdict"] == "worse"
    assert all(row["p50_verdict"] == "worse" for row in result["rates"])


def test_compare_with_itself_is_the_same() -> None:
    result = compare(golden("sweep-old-path"), golden("sweep-old-path"))
    assert {row["verdict"] for row in result["summary"]} == {"same"}
    assert {row["p99_verdict"] for row in result["rates"]} == {"same"}


def test_compare_with_no_knee_on_one_side() -> None:
    blast, old = golden("sweep-blast"), golden("sweep-old-path")
    row = compare(old, blast)["summary"][0]
    assert row["metric"] == "knee_pps" and row["b"] is None
    assert row["verdict"] == "better" and "B had no knee up to 432,876 pps (sender-bound above)" in row["note"]
    assert "no per-rate comparison" in render_compare(compare(old, blast))


# --------------------------------------------------------------------------
# progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_prints_only_step_lines() -> None:
    stream = io.StringIO()
    steps = golden("sweep-old-path").steps[:3]
    with Progress(len(steps), stream=stream) as progress:
        for step in steps:
            progress.step_started(step["offered_pps"])
            progress.step_done(step)
    lines = stream.getvalue().splitlines()
    assert lines == [step_line(step, i + 1, 3) for i, step in enumerate(steps)]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[0].startswith("step 1/3  offered 1,000 pps")


def test_progress_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    clock = FakeClock()
    steps = golden("sweep-old-path").steps[:2]
    progress = Progress(4, stream=stream, bar=True, clock=clock)
    progress.step_started(steps[0]["offered_pps"])
    clock.now += 3
    progress.step_done(steps[0])
    assert progress.bar_text().startswith("[######..................] 1/4 steps  ~9 s left")
    progress.close()
    output = stream.getvalue()
    assert "now 1,000 pps" in output
    assert output.endswith("\r\x1b[K")  # the bar is wiped when the sweep ends


def test_quiet_progress_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress(1, stream=stream, quiet=True) as progress:
        progress.step_done(golden("sweep-blast").steps[0])
        progress.message("searching")
    assert stream.getvalue() == ""


def test_step_line_words() -> None:
    steps = golden("sweep-blast").steps
    assert "received 9,999" in step_line(steps[0]) and "jitter 3.95 us" in step_line(steps[0])
    assert step_line(steps[-1]).endswith("sender-bound")


# --------------------------------------------------------------------------
# environment


def test_environment_has_the_documented_keys() -> None:
    env = environment(host="127.0.0.1", engine="python")
    for key in ("kernel", "cpu", "cpus", "mtu", "rmem_max_bytes", "wmem_max_bytes", "offloads",
                "python", "pktbench", "engine", "interface"):
        assert key in env
    assert env["interface"] == "lo" and env["engine"] == "python"
    assert isinstance(env["cpus"], int) and env["cpus"] >= 1
    if Path("/sys/class/net/lo/mtu").exists():
        assert env["mtu"] == int(Path("/sys/class/net/lo/mtu").read_text())
    json.dumps(env)


def test_interface_for_unknown_host_is_none() -> None:
    assert results.interface_for("not-an-address") is None
    assert results.interface_for("::1") == "lo"


def _request_step(index: int, offered: float, answered: float, late: int, unanswered: int,
                  out_pps: float, retransmits: int) -> dict[str, Any]:
    requests = int(offered)
    lost = late + unanswered
    return {
        "index": index, "repeat": 0, "workload": "rr", "offered_pps": offered,
        "sent_pps": offered, "received_pps": answered, "sent_packets": requests,
        "received_packets": requests - lost, "lost_packets": lost, "loss_ratio": lost / requests,
        "latency_us": {"p50": 150.0, "p99": 900.0, "max": 2000.0}, "sender_bound": False,
        "receiver": {}, "offered_rps": offered, "sent_rps": offered, "answered_rps": answered,
        "requests": requests, "answered_requests": requests - lost, "late_requests": late,
        "unanswered_requests": unanswered, "unsent_requests": 0, "error_requests": 0,
        "timeout_s": 0.2,
        "path": {"source": "tcp_info", "window_s": 1.0, "connections": 16,
                 "toward_server_packets": int(out_pps), "back_packets": int(out_pps),
                 "toward_server_pps": out_pps, "back_pps": out_pps - 17,
                 "packets_per_request": 1.0, "offered_toward_server_pps": offered,
                 "retransmits": retransmits, "retransmits_pps": float(retransmits),
                 "interface": None},
    }


def test_request_sweep_speaks_requests_and_path_packets() -> None:
    from pktbench import knee
    from pktbench.report.progress import step_line

    steps = [_request_step(0, 3917, 3917, 0, 0, 3917, 0),
             _request_step(1, 4713, 4713, 0, 0, 4709, 0),
             _request_step(2, 6113, 179, 971, 4963, 950, 68),
             _request_step(3, 7307, 144, 862, 6301, 906, 68)]
    analysis = knee.analyze_steps(steps)
    assert analysis["knee"]["offered_rps"] == 6113 and analysis["knee"]["last_good_rps"] == 4713
    result = SweepResult({}, {"workload": "rr", "transport": "tcp"}, tuple(analysis["steps"]),
                         knee=analysis["knee"], judgement={"criteria": knee.KneeCriteria().as_dict()})
    narrow = render_table(result)
    assert max(len(line) for line in narrow.splitlines()) <= 100, narrow
    text = " ".join(narrow.split())  # prose lines wrap at 100 columns
    assert ("knee: 6,113 req/s offered (path: 950 pkt/s toward server (offered 6,113 at 1.00 "
            "packets a request), 933 back, 68 retransmits) - late or unanswered 97% > 0.5% "
            "(16% late: answered after the 200 ms timeout; 81% unanswered)") in text
    assert "last good rate: 4,713 req/s (path: 4,709 pkt/s toward server, 4,692 back, " \
           "0 retransmits)" in text
    assert "judged by: late or unanswered > 0.5 %" in text and " pps" not in text
    for cell in ("offered", "answered", "late", "unansw.", "to srv", "back", "retrans"):
        assert cell in narrow
    wide = render_table(result, wide=True)
    assert "to server pkt/s" in wide and "unanswered %" in wide and "max us" in wide
    line = step_line(analysis["steps"][2], 3, 4)
    assert line.startswith("step 3/4  offered 6,113 req/s  sent 6,113  answered 179  "
                           "late 15.9%  unanswered 81.2%  path 950/933 pkt/s out/back, "
                           "68 retrans")
    assert line.endswith("(mostly unanswered: no reply by the end of the drain)")


def test_request_table_snapshot() -> None:
    # a real redis-server behind a 5,500 pkt/s policer (burst 100), 16 connections
    snapshot(DATA / "sweep-redis-policed.table.txt", render_table(golden("sweep-redis-policed")))
