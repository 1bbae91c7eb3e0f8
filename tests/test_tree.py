"""The source tree carries no unresolved merge: a conflict marker in a script
or a doc breaks it silently (a shell script fails only when run)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


def test_no_conflict_markers_in_tracked_files() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    offenders = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        if MARKER.search(data.decode("utf-8", "replace")):
            offenders.append(name)
    assert not offenders, f"unresolved merge conflict markers in: {', '.join(offenders)}"


def test_tests_import_their_helpers_as_plain_pytest_does() -> None:
    # README's `pytest -q` puts tests/ on sys.path, not the repository root:
    # `from tests.x import` works only under `python -m pytest`.
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("*.py")
                 if re.search(r"^\s*(from|import) tests\.", path.read_text(), re.MULTILINE)]
    assert not offenders, f"import test helpers by module name (cli_support, ...): {offenders}"
