"""Every table fits 100 columns by default, names its units, and --wide shows everything.

Tables come from the result documents in tests/data, through the CLI where a
command prints them from a file (show, compare, profiles) and through the
reporters for the kinds only a live run prints (decode, validate, testbed).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import golden_support as g
from pktbench import api
from pktbench.cli import main
from pktbench.report import REPORTERS, write_report
from pktbench.results import load_result

DATA = Path(__file__).resolve().parent / "data"
WIDTH = 100
# every sweep and bulk result kept in tests/data, whoever added it
SWEEPS = sorted(p.name for p in DATA.glob("sweep-*.json"))
BULKS = sorted(p.name for p in DATA.glob("bulk-*.json"))
UNITS = ("pps", "pkt/s", "req/s", "%", "us", "Mbit/s", "Gbit/s", "segments", "packets", "B/A")


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each tabulate "simple" table in `text`: header per column (its lines joined), rows."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not re.fullmatch(r"-+( +-+)+", line):
            continue
        spans = [m.span() for m in re.finditer(r"-+", line)]
        top = i
        while top > 0 and lines[top - 1].strip() and not re.fullmatch(r"[- ]+", lines[top - 1]):
            top -= 1
            if i - top == 2:  # two-line headers at most
                break
        headers = [" ".join(h[a:b].strip() for h in lines[top:i] if h[a:b].strip())
                   for a, b in _wide_spans(spans, lines[top:i])]
        rows = []
        for row in lines[i + 1:]:
            if not row.strip() or row.startswith("["):
                break
            rows.append([row[a:b].strip() for a, b in _wide_spans(spans, [row])])
        found.append((headers, rows))
    return found


def _wide_spans(spans: list[tuple[int, int]], lines: list[str]) -> list[tuple[int, int]]:
    # the last column runs to the end of the line; the others to the next one's start
    ends = [spans[k + 1][0] for k in range(len(spans) - 1)]
    ends.append(max([spans[-1][1], *(len(line) for line in lines)]))
    return [(spans[k][0], ends[k]) for k in range(len(spans))]


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"-?[\d,]+(\.\d+)?x?", cell))


def assert_units_in_headers(text: str) -> None:
    for headers, rows in tables(text):
        for k, name in enumerate(headers):
            cells = [r[k] for r in rows if k < len(r) and r[k] not in ("", "-")]
            # counts, named by what they count
            if name in ("", "step", "stream", "rep", "runs", "src port", "path", "streams",
                        "packets", "retrans") or not cells:
                continue
            if all(_numeric(c) for c in cells):
                assert any(unit in name for unit in UNITS), (name, cells[:3])


@pytest.mark.parametrize("name", SWEEPS + BULKS)
def test_result_tables_fit_100_columns(name: str) -> None:
    text = cli("show", str(DATA / name))
    assert widest(text) <= WIDTH, text
    assert_units_in_headers(text)
    for headers, _ in tables(text):
        assert all(h for h in headers[1:]), headers  # no column without a name


@pytest.mark.parametrize("old,new", [("sweep-old-path.json", "sweep-new-path.json"),
                                     ("sweep-new-path.json", "sweep-blast.json"),
                                     ("sweep-old-path.json", "sweep-old-path.json")])
def test_compare_fits_100_columns_and_wide_has_p50(old: str, new: str) -> None:
    text = cli("compare", str(DATA / old), str(DATA / new))
    assert widest(text) <= WIDTH, text
    assert_units_in_headers(text)
    wide = cli("compare", "--wide", str(DATA / old), str(DATA / new))
    if "share no offered rate" not in text:
        assert "p50 us" in wide and "p50 us" not in text.replace("\n", " ")


def test_other_tables_fit_100_columns() -> None:
    doc = g.document("testbed-status.json")
    texts = {
        "decode": (g.decode_result(g.document("decode-session.json")), "decode"),
        "validate": (g.validation_report(g.document("validate-mixed.json")), "validate"),
        "validate-pass": (g.validation_report(g.document("validate-pass.json")), "validate"),
        "testbed": (api.TestbedStatus(doc["prefix"], g.testbed_info(doc)), "testbed"),
        "probe": (api.KernelProbe(g.document("testbed-probe.json")), "probe"),
    }
    for label, (result, kind) in texts.items():
        out = io.StringIO()
        write_report("table", result, out, kind=kind)
        assert widest(out.getvalue()) <= WIDTH, (label, out.getvalue())
        if "wide" in REPORTERS[kind]:
            wide = io.StringIO()
            write_report("wide", result, wide, kind=kind)
            assert wide.getvalue() != out.getvalue()
    assert widest(cli("profiles")) <= WIDTH


def test_failure_reasons_are_numbered_footnotes() -> None:
    text = cli("show", str(DATA / "sweep-old-path.json"))
    result = load_result(DATA / "sweep-old-path.json")
    failing = [s for s in result.steps if s["failures"] and not s["sender_bound"]]
    assert failing
    marks = re.findall(r"FAIL \[(\d+)\]", text)
    assert len(marks) == len(failing)
    for number in sorted(set(marks), key=int):
        note = next(line for line in text.splitlines() if line.startswith(f"[{number}] "))
        assert any(s["failures"][0] in note for s in failing), note
    wide = cli("show", "--wide", str(DATA / "sweep-old-path.json"))
    assert "FAIL [" not in wide and f"FAIL {failing[0]['failures'][0]}" in wide
    assert "lag p99 us" in wide and "rx Mbit/s" in wide
    assert widest(wide) > WIDTH


def test_run_and_bulk_take_wide() -> None:
    for command in ("run", "sweep", "bulk", "compare", "decode", "validate", "show"):
        assert "--wide" in cli(command, "--help"), command


def test_per_stream_table_has_no_empty_column() -> None:
    text = cli("show", str(DATA / "bulk-old-tcp.json"))
    per_stream = text.split("per stream:")[1]
    headers, rows = tables(per_stream)[0]
    assert headers == ["stream", "src port", "path", "goodput Gbit/s", "on-wire Gbit/s",
                       "retransmits segments", "cwnd segments", "rtt us"]
    assert all(len(row) == len(headers) and all(row) for row in rows)


def test_csv_marks_the_knee(tmp_path: Path) -> None:
    for name in SWEEPS:
        out = tmp_path / f"{name}.csv"
        cli("show", str(DATA / name), "--csv", str(out))
        rows = list(csv.DictReader(out.open()))
        marked = [int(r["index"]) for r in rows if r["knee"] == "true"]
        assert all(r["knee"] in ("true", "false") for r in rows)
        knee = load_result(DATA / name).knee
        assert marked == ([knee["step_index"]] if knee else []), name
