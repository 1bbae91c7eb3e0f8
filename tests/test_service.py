"""`pktbench serve` under a supervisor: the systemd unit, pid file and JSON logs."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_support import PKTBENCH
from pktbench import service

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _printed_unit(tmp_path: Path) -> Path:
    done = subprocess.run([*PKTBENCH, "serve", "--print-systemd-unit"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = tmp_path / service.UNIT_NAME
    path.write_text(done.stdout)
    return path


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_printed_unit_runs_this_install_with_the_promised_limits(tmp_path):
    unit = _printed_unit(tmp_path).read_text()
    lines = set(unit.splitlines())
    for line in ("DynamicUser=yes", "Restart=on-failure", "TasksMax=256", "MemoryMax=1G",
                 "LoadCredential=token:/etc/pktbench/token",
                 "AmbientCapabilities=CAP_NET_ADMIN", "CapabilityBoundingSet=CAP_NET_ADMIN"):
        assert line in lines, line
    (exec_line,) = [line for line in lines if line.startswith("ExecStart=")]
    command = exec_line.removeprefix("ExecStart=").split()
    assert Path(command[0]).is_absolute() and Path(command[0]).exists()
    assert "--token-file" in command and "${CREDENTIALS_DIRECTORY}/token" in command


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
def test_systemd_analyze_verify_accepts_the_unit_and_would_catch_a_bad_one(tmp_path):
    good = _printed_unit(tmp_path)
    done = _verify(good)
    # verify exits 0 on unknown keys, printing a warning: silence about our unit
    # is the pass (it also loads the host's units, and may warn about those)
    ours = [line for line in done.stderr.splitlines()
            if not line.startswith(("/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/"))]
    assert done.returncode == 0 and done.stdout == "" and ours == [], done.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(good.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in _verify(bad).stderr


def test_shipped_unit_differs_from_the_printed_one_only_in_execstart(tmp_path):
    printed = _printed_unit(tmp_path).read_text().splitlines()
    shipped = service.shipped_unit().splitlines()
    assert len(printed) == len(shipped)
    differ = [(a, b) for a, b in zip(shipped, printed) if a != b]
    assert len(differ) == 1 and differ[0][0].startswith("ExecStart=/usr/local/bin/pktbench ")


def test_pid_file_and_json_log_for_other_supervisors(tmp_path):
    pid_path = tmp_path / "run" / "serve.pid"
    pid_path.parent.mkdir()
    server = subprocess.Popen(
        [*PKTBENCH, "serve", "--bind", "127.0.0.1", "--port", "0", "--once",
         "--pid-file", str(pid_path), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        listening = json.loads(server.stdout.readline())
        assert listening["event"] == "listening" and listening["pid"] == server.pid
        assert pid_path.read_text() == f"{server.pid}\n"
        done = subprocess.run([*PKTBENCH, "run", f"127.0.0.1:{listening['port']}", "--rate", "1k",
                               "--duration", "0.2"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"ts", "pid", "msg", "event"} <= record.keys() for record in records)
    assert records[-1]["event"] == "stopped" and records[-1]["sessions"] == 1
    assert not pid_path.exists()


def test_unwritable_pid_file_is_one_line_error(tmp_path):
    done = subprocess.run([*PKTBENCH, "serve", "--bind", "127.0.0.1", "--port", "0", "--once",
                           "--pid-file", str(tmp_path / "missing" / "serve.pid")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot write pid file" in done.stderr and "Traceback" not in done.stderr
