"""Build the Cython engine: one extension module, pktbench._engine.

ext/_engine.pyx includes one .pyx per workload (udp, resp, bulk), so they
share cdef types; the C calls they make are declared in ext/*.pxd.

PKTBENCH_DEBUG=1 writes annotated HTML next to the sources and turns on
line tracing, so a hot loop that touches Python objects shows up in yellow.
"""
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:
    sys.exit("pktbench needs Cython>=3.1 to build its engine: pip install 'Cython>=3.1,<4'")

debug = os.environ.get("PKTBENCH_DEBUG") == "1"
directives = {"language_level": 3, "embedsignature": True}
macros = [("_GNU_SOURCE", None)]  # sendmmsg, recvmmsg, ppoll
if debug:
    directives.update(linetrace=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extensions = [Extension("pktbench._engine", ["ext/_engine.pyx"], include_dirs=["ext"],
                        define_macros=macros, extra_compile_args=["-O2"])]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=debug))
