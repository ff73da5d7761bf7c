"""Build: the Cython fast path in ext/ becomes sensor._loop; everything else is plain Python."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# TRUESOURCE_DEBUG=1 builds with assertions and debug symbols, for gdb and sanitizers.
debug = os.environ.get("TRUESOURCE_DEBUG") == "1"
# -Wno-sign-compare: Cython's generated C compares its signed loop counters with our unsigned sizes (harmless, and
# about a hundred lines of noise before `make run`'s demo); other warnings and every error still show.
compile_args = (["-O0", "-g"] if debug else ["-O3"]) + ["-Wno-sign-compare"]

extensions = [
    Extension(
        "sensor._loop",
        ["ext/loop.pyx"],
        extra_compile_args=compile_args,
        undef_macros=["NDEBUG"] if debug else [],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={"language_level": "3"},
        annotate=False,
    ),
)
