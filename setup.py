"""Build: the Cython fast path in ext/ becomes sensor._loop; everything else is plain Python."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# TRUESOURCE_DEBUG=1 builds with assertions and debug symbols, for gdb and sanitizers.
debug = os.environ.get("TRUESOURCE_DEBUG") == "1"
compile_args = ["-O0", "-g"] if debug else ["-O3"]

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
