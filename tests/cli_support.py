"""How tests start the pktbench CLI in a child process.

`python -m pktbench` puts the working directory first on sys.path, so from a
source checkout it would import the tree without its compiled engine instead
of the package under test. These argv put the tested package first instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pktbench

# the directory that holds the pktbench package this test process imported
PACKAGE_ROOT = str(Path(pktbench.__file__).resolve().parent.parent)

PKTBENCH = [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
            "from pktbench.cli import main; main(prog_name='pktbench')"]
