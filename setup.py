"""Build the Cython engine: one extension module, pktbench._engine.

ext/_engine.pyx includes one .pyx per workload (udp, resp, bulk), so they
share cdef types; the C calls they make are declared in ext/*.pxd.

The engine is optional, as msgpack's is: without Cython or a C compiler the
package installs with its pure-Python engine (pktbench/_fallback.py) and says
so. PKTBENCH_PUREPYTHON=1 skips the build; PKTBENCH_REQUIRE_EXTENSION=1 makes
a failed build an error (CI and the wheel builds set it).

PKTBENCH_DEBUG=1 writes annotated HTML next to the sources and turns on
line tracing, so a hot loop that touches Python objects shows up in yellow.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

pure = os.environ.get("PKTBENCH_PUREPYTHON", "") not in ("", "0")
required = os.environ.get("PKTBENCH_REQUIRE_EXTENSION") == "1"


def skip(reason):
    if required:
        sys.exit(f"pktbench: the compiled engine is required but {reason}")
    print(f"pktbench: WARNING: {reason}; installing the pure-Python engine only "
          "(slower; see README)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python engine in charge instead of failing the install."""

    def run(self):
        try:
            super().run()
        except (PlatformError, CCompilerError, ExecError, OSError) as exc:
            skip(f"the engine could not be built ({exc})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (PlatformError, CCompilerError, ExecError, OSError) as exc:
            skip(f"{ext.name} could not be built ({exc})")


try:
    from Cython.Build import cythonize
except ImportError:
    cythonize = None

debug = os.environ.get("PKTBENCH_DEBUG") == "1"
directives = {"language_level": 3, "embedsignature": True}
macros = [("_GNU_SOURCE", None)]  # sendmmsg, recvmmsg, ppoll
if debug:
    directives.update(linetrace=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extensions = [Extension("pktbench._engine", ["ext/_engine.pyx"], include_dirs=["ext"],
                        define_macros=macros, extra_compile_args=["-O2"])]

if pure:
    ext_modules = []
elif cythonize is None:
    skip("Cython>=3.1 is missing (pip install 'Cython>=3.1,<4')")
    ext_modules = []
else:
    ext_modules = cythonize(extensions, compiler_directives=directives, annotate=debug)

# The man page is rendered from the click commands (`pktbench man`, `make man`);
# tests/test_docs.py fails when man/pktbench.1 and the commands differ.
setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt},
      data_files=[("share/man/man1", ["man/pktbench.1"])])
