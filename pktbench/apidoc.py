"""The API reference: HTML made by pdoc from the docstrings of the library's modules.

`python -m pktbench.apidoc DIR` (or `make api-docs`) writes DIR/index.html
and a page per module; tests/test_docs.py builds it too and fails when a
name `import pktbench` offers has no page, so the reference cannot fall
behind the code. pdoc is a documentation tool, not a dependency of the
package: `pip install 'pktbench[docs]'`.

The package's own namespace resolves its names lazily (so `import pktbench`
stays light), which pdoc cannot follow; the reference documents the modules
those names come from instead, listed in API_MODULES.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pktbench.errors import ConfigError

# The modules whose names `pktbench` offers, and the ones a library user meets
# in their results (reports, the step result, the knee, the rates grammar).
API_MODULES = (
    "pktbench.api", "pktbench.results", "pktbench.step", "pktbench.config",
    "pktbench.knee", "pktbench.search", "pktbench.comparison", "pktbench.report",
    "pktbench.protocol", "pktbench.session", "pktbench.workloads.bulk", "pktbench.testbed",
    "pktbench.decode", "pktbench.validate", "pktbench.rates", "pktbench.errors",
)


def build(output: str | Path, modules: Sequence[str] = API_MODULES) -> list[str]:
    """Write the HTML reference of `modules` into `output`; returns pdoc's warnings.

    Raises:
        ConfigError: pdoc is not installed.
    """
    try:
        import pdoc
        import pdoc.render
    except ImportError:
        raise ConfigError("the API reference needs pdoc: pip install 'pktbench[docs]'") \
            from None
    pdoc.render.configure(docformat="google", show_source=False,
                          footer_text="pktbench API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=Path(output))
    return [str(w.message) for w in caught]


if __name__ == "__main__":
    for message in build(sys.argv[1] if len(sys.argv) > 1 else "build/api"):
        print(f"pdoc: {message}", file=sys.stderr)
