"""The plot: rates and loss on one panel, latency on another, the four rates marked.

PNGs are written through the CLI (`show --plot`, `compare --plot`) from the
results in tests/data and a real `run`; the figure's structure (axes, labels,
legend entries, error bars, title) is read from `build_figure`.
"""
from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pktbench.cli import main
from pktbench.results import load_result

pytest.importorskip("matplotlib", reason="plotting is an optional extra (pktbench[plot])")

from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from pktbench.report.plot import build_figure  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SWEEPS = ["sweep-old-path.json", "sweep-new-path.json", "sweep-blast.json"]


def legend_texts(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(str(path))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400
    assert pixels.std() > 0.05  # something was drawn


@pytest.mark.parametrize("name", SWEEPS)
def test_show_plot_writes_a_png(name: str, tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    result = CliRunner().invoke(main, ["show", str(DATA / name), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert_png(out)


def test_panels_axes_and_markers() -> None:
    result = load_result(DATA / "sweep-new-path.json")
    figure = build_figure([result])
    assert len(figure.axes) == 3  # rates, loss (its twin y axis), latency
    rate_ax, latency_ax, loss_ax = figure.axes
    assert rate_ax.get_ylabel() == "delivered rate (packets per second)"
    assert loss_ax.get_ylabel() == "loss (%)"
    assert latency_ax.get_ylabel() == "round-trip latency (us)"
    assert latency_ax.get_xlabel() == "offered rate (packets per second)"
    assert rate_ax.get_xscale() == "log" and latency_ax.get_yscale() == "log"
    texts = legend_texts(rate_ax)
    for wanted in ("knee 38,522 pps", "last good 29,678 pps", "NDR 48,112 pps",
                   "PDR 50,000 pps", "delivered (responses)", "loss %"):
        assert wanted in texts, texts
    assert legend_texts(latency_ax) == ["p50", "p99", "p99.9"]
    # the knee and the other three rates are vertical lines on both panels
    for ax in (rate_ax, latency_ax):
        xs = {line.get_xdata()[0] for line in ax.get_lines()
              if len(set(line.get_xdata())) == 1}
        assert {38522.0, 29678.0, 48112.0, 50000.0} <= xs
    # two repeats per rate: error bars from the lowest to the highest repeat
    bars = [c for c in latency_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    p99 = next(c for c in bars if c.get_label() == "p99")
    segments = p99.lines[2][0].get_segments()
    group = next(g for g in result.rate_groups() if g.offered_pps == 38522)
    spread = group.spread("latency_us", "p99")
    assert spread is not None
    low, high = next(seg[:, 1] for seg in segments if seg[0, 0] == 38522)
    assert (low, high) == pytest.approx((spread.min, spread.max))
    title = figure._suptitle.get_text()
    assert "cloud-knee" in title and "to 198.18.0.2 via ens5, MTU 9001" in title


def test_blast_plots_jitter_and_loss() -> None:
    figure = build_figure([load_result(DATA / "sweep-blast.json")])
    rate_ax, latency_ax, loss_ax = figure.axes
    assert latency_ax.get_ylabel() == "jitter (us)"
    assert "sender-bound (sent)" in legend_texts(rate_ax)
    assert "knee" not in " ".join(legend_texts(rate_ax))  # this sweep has none


def test_title_has_the_date_of_a_real_run(tmp_path: Path) -> None:
    doc_path, plot = tmp_path / "run.json", tmp_path / "run.png"
    result = CliRunner().invoke(main, ["run", "--rate", "2000", "--duration", "0.2",
                                       "--json", str(doc_path)])
    assert result.exit_code == 0, result.output
    started = json.loads(doc_path.read_text())["environment"]["started_utc"]
    began = calendar.timegm(time.strptime(started, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(time.time() - began) < 600
    shown = CliRunner().invoke(main, ["show", str(doc_path), "--plot", str(plot)])
    assert shown.exit_code == 0, shown.output
    assert_png(plot)
    title = build_figure([load_result(doc_path)])._suptitle.get_text()
    assert started.replace("T", " ") in title and "to " in title


def test_compare_plot_overlays_two_runs(tmp_path: Path) -> None:
    out = tmp_path / "both.png"
    old, new = DATA / "sweep-old-path.json", DATA / "sweep-new-path.json"
    result = CliRunner().invoke(main, ["compare", str(old), str(new), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert_png(out)
    figure = build_figure([load_result(old), load_result(new)], ("old", "new"))
    rate_ax, latency_ax, _ = figure.axes
    texts = legend_texts(rate_ax)
    assert "old: knee 6,207 pps" in texts and "new: knee 38,522 pps" in texts
    assert "old: delivered (responses)" in texts and "new: loss %" in texts
    assert {"old: p99", "new: p99"} <= set(legend_texts(latency_ax))


def test_compare_plot_of_bulk_results_is_refused_first(tmp_path: Path) -> None:
    bulk = str(DATA / "bulk-old-tcp.json")
    result = CliRunner().invoke(main, ["compare", bulk, bulk, "--plot",
                                       str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "overlays two sweeps" in result.output
    assert "goodput" not in result.output and not (tmp_path / "x.png").exists()


def test_request_sweep_plots_requests_and_the_paths_packets() -> None:
    # a real redis-server behind a 5,500 pkt/s policer (burst 100), 16 connections
    figure = build_figure([load_result(DATA / "sweep-redis-policed.json")])
    rate_ax, latency_ax, loss_ax = figure.axes
    assert rate_ax.get_ylabel() == "answered req/s; path pkt/s"
    assert loss_ax.get_ylabel() == "late or unanswered (%)"
    assert latency_ax.get_xlabel() == "offered rate (requests per second)"
    texts = legend_texts(rate_ax)
    for entry in ("answered in time, req/s", "path toward server, pkt/s", "path back, pkt/s",
                  "late or unanswered %", "knee 4,713 req/s", "last good 3,917 req/s"):
        assert entry in texts, texts
