"""The packet loops touch no Python objects (Cython's annotation says so)."""
from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The module is ext/_engine.pyx; each workload's loops are a file it includes,
# and Cython writes one annotation page per included file.
MODULE = "ext/_engine.pyx"
HOT_LOOPS = {
    "ext/udp.pyx": ("cdef int _run(", "cdef inline uint64_t _window_room(", "cdef int _send(",
                        "cdef int _receive(", "cdef bint _accept(", "cdef void _account(",
                        "cdef inline void _prepare_reply(", "cdef void finalize_to("),
}


def _bodies(source: list[str], signatures: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(signature, first body line, last body line), 1-based."""
    found = []
    for number, line in enumerate(source, start=1):
        if any(sig in line for sig in signatures):
            end = number
            while end < len(source) and (source[end].startswith(" " * 8) or not source[end].strip()):
                end += 1
            found.append((line.strip(), number + 1, end))
    return found


@pytest.mark.parametrize("pyx", sorted(HOT_LOOPS))
def test_hot_loops_have_no_python_interaction(pyx, tmp_path):
    pytest.importorskip("Cython", reason="the annotation needs Cython (a build requirement)")
    if not (REPO / MODULE).exists():
        pytest.skip("needs the source tree (ext/), not only the installed package")
    out = tmp_path / "_engine.c"
    subprocess.run([sys.executable, "-m", "cython", "-3", "-a", "-I", str(REPO / "ext"),
                    str(REPO / MODULE), "-o", str(out)], check=True, capture_output=True,
                   timeout=120)
    annotated = (tmp_path / Path(pyx).with_suffix(".html").name).read_text()
    scores = {int(n): int(score) for score, n in re.findall(
        r'<pre class="cython line score-(\d+)"[^>]*>\+?<span class="">(\d+)</span>:', annotated)}
    source = (REPO / pyx).read_text().splitlines()
    bodies = _bodies(source, HOT_LOOPS[pyx])
    assert len(bodies) >= len(HOT_LOOPS[pyx])
    for signature, first, last in bodies:
        yellow = [f"{n}: {html.unescape(source[n - 1].strip())}"
                  for n in range(first, last + 1) if scores.get(n, 0) > 0]
        assert not yellow, f"{signature} touches Python objects:\n" + "\n".join(yellow)
