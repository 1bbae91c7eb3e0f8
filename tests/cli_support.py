"""How tests start the pktbench CLI in a child process.

`python -m pktbench` puts the working directory first on sys.path, so from a
source checkout it would import the tree without its compiled engine instead
of the package under test. These argv put the tested package first instead.
`serve_in_namespace` runs `pktbench serve` in a testbed's namespace b.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pktbench
from pktbench import testbed as tb

# the directory that holds the pktbench package this test process imported
PACKAGE_ROOT = str(Path(pktbench.__file__).resolve().parent.parent)

PKTBENCH = [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
            "from pktbench.cli import main; main(prog_name='pktbench')"]


@contextmanager
def serve_in_namespace(info: tb.TestbedInfo, port: str, *, cpu: int | None = None
                       ) -> Iterator[None]:
    """`pktbench serve` in namespace b (pinned to `cpu` if given) until the block ends."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    server = tb.popen_in("b", [*pin, *PKTBENCH, "serve", "--bind", "0.0.0.0", "--port", port,
                               "--quiet"], prefix=info.prefix, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("listening on ")
        yield
    finally:
        server.terminate()
        server.wait(timeout=5)
        if server.stdout is not None:
            server.stdout.close()
