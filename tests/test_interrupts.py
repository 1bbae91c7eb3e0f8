"""SIGINT and SIGTERM on real sweeps, runs and bulk tests: what finished is kept.

Each test starts the CLI as a child process on the embedded loopback server,
signals it in the middle, then parses the JSON it leaves and checks that no
process it started is still alive.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cli_support import PKTBENCH


def _children(pid: int) -> set[int]:
    """Every descendant of `pid` now (from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Cli:
    """The CLI in a child process, its stderr read line by line in a thread."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen([*PKTBENCH, *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        self.kill()
        raise AssertionError(f"no line with {text!r}; stderr: {''.join(self.err)}")

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str]:
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout_s, self.kill)  # a hung child fails, not the suite
        timer.start()
        try:
            out = self.proc.stdout.read()
            code = self.proc.wait()
        finally:
            timer.cancel()
        self._reader.join(timeout=5)
        return code, out

    def kill(self) -> None:
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()


def _interrupt(cli: Cli, signum: int) -> tuple[int, str, set[int]]:
    children = _children(cli.proc.pid)
    cli.proc.send_signal(signum)
    code, out = cli.finish()
    return code, out, children


def _gone(children: set[int]) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    return [pid for pid in children if _alive(pid)]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signalled_sweep_keeps_its_finished_steps(tmp_path, signum, code):
    cli = Cli("sweep", "--rates", "1k,2k,3k,4k,5k,6k", "--duration", "0.4", "--warmup", "0",
              "--no-early-stop", "--json", "out.json", "--csv", "out.csv", cwd=tmp_path)
    cli.wait_for_line("2,000")  # the second step's progress line: two steps done
    exit_code, out, children = _interrupt(cli, signum)
    assert exit_code == code, "".join(cli.err)
    assert children, "the embedded server should have been running"
    assert _gone(children) == []
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["interrupted"] is True
    offered = [step["offered_pps"] for step in doc["steps"]]
    assert 2 <= len(offered) < 6 and offered == sorted(offered)
    assert all(not step["sender"]["stopped_early"] for step in doc["steps"])
    assert len((tmp_path / "out.csv").read_text().splitlines()) == len(offered) + 1
    assert "2,000" in out  # the table of what finished
    assert "interrupted by " + signal.Signals(signum).name in "".join(cli.err)
    assert "Traceback" not in "".join(cli.err)


def test_a_signalled_run_reports_its_cut_step(tmp_path):
    cli = Cli("run", "--rate", "2000", "-t", "20", "-J", cwd=tmp_path)
    # over 10 s, run reports every second by default: the first report says it is sending
    cli.wait_for_line(" s]  sent ")
    exit_code, out, children = _interrupt(cli, signal.SIGTERM)
    assert exit_code == 143, "".join(cli.err)
    assert _gone(children) == []
    doc = json.loads(out)  # -J: stdout is the JSON document alone
    assert doc["interrupted"] is True
    (step,) = doc["steps"]
    assert step["sender"]["stopped_early"] is True
    assert 0 < step["sent_packets"] < 2000 * 20
    # its rates are over the time it sent, not the 20 s it was planned for
    assert step["duration_s"] < 15
    assert step["sent_pps"] == pytest.approx(2000, rel=0.2)
    assert step["intervals"][0]["start_s"] == 0 and step["intervals"][0]["sent_packets"] > 0


def test_a_signalled_bulk_test_keeps_its_steps(tmp_path):
    cli = Cli("bulk", "--sweep-streams", "1,1,1,1,1,1", "-t", "0.5", "--warmup", "0.1",
              "--json", "bulk.json", cwd=tmp_path)
    cli.wait_for_line("Gbit/s")  # a finished step's progress line
    exit_code, _, children = _interrupt(cli, signal.SIGINT)
    assert exit_code == 130, "".join(cli.err)
    assert _gone(children) == []
    doc = json.loads((tmp_path / "bulk.json").read_text())
    assert doc["interrupted"] is True and doc["kind"] == "bulk"
    assert 1 <= len(doc["steps"]) < 6


@pytest.mark.parametrize("reverse", [False, True])
def test_a_signalled_bulk_step_ends_at_once_measured_to_that_moment(tmp_path, reverse):
    cli = Cli("bulk", "-t", "20", "--warmup", "0.2", "-i", "0.5", *(["-R"] if reverse else []),
              "--json", "bulk.json", cwd=tmp_path)
    cli.wait_for_line(" s]  ")  # an interval of the measured window went by
    signalled = time.monotonic()
    exit_code, _, children = _interrupt(cli, signal.SIGINT)
    assert time.monotonic() - signalled < 5, "the step ran on after the signal"
    assert exit_code == 130, "".join(cli.err)
    assert _gone(children) == []
    doc = json.loads((tmp_path / "bulk.json").read_text())
    assert doc["interrupted"] is True
    (step,) = doc["steps"]
    assert step["stopped_early"] is True
    assert 0.3 < step["duration_s"] < 10  # the window up to the signal, not the 20 s asked
    # both ends measured the same cut window: goodput (receiver) and sender rate agree
    assert step["aggregate_bps"] > 0
    assert step["aggregate_bps"] == pytest.approx(step["sender_bps"], rel=0.1)


def test_a_signalled_bidir_step_ends_both_directions_at_once(tmp_path):
    cli = Cli("bulk", "--bidir", "-t", "20", "--warmup", "0.2", "-i", "0.5",
              "--json", "bulk.json", cwd=tmp_path)
    cli.wait_for_line(" s]  ")
    signalled = time.monotonic()
    exit_code, _, children = _interrupt(cli, signal.SIGINT)
    assert time.monotonic() - signalled < 5, "the step ran on after the signal"
    assert exit_code == 130, "".join(cli.err)
    assert _gone(children) == []
    doc = json.loads((tmp_path / "bulk.json").read_text())
    assert doc["interrupted"] is True
    forward, backward = doc["steps"]
    assert (forward["direction"], backward["direction"]) == ("forward", "reverse")
    for step in (forward, backward):
        assert step["bidir"] is True and step["stopped_early"] is True
        assert 0.3 < step["duration_s"] < 10
        assert step["aggregate_bps"] > 0
