"""`mypy --strict pktbench` is clean: the engine's callers are checked against its stub."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_mypy_strict_reports_no_errors() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    if not (REPO / "pktbench" / "_engine.pyi").exists():
        pytest.skip("needs the source tree, not only the installed package")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir=/dev/null", "pktbench"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    errors = [line for line in done.stdout.splitlines() if re.match(r"\S+:\d+: error:", line)]
    assert done.returncode == 0 and not errors, done.stdout[-4000:] + done.stderr[-2000:]
