"""Build sensor._loop with clang's libFuzzer coverage and AddressSanitizer into build/fuzz/ext (`make fuzz`).

The in-place build (`make build`) is left alone: the fuzz runner loads this one through TRUESOURCE_FUZZ_EXT.
A Python that is not itself sanitized must preload the ASan runtime. clang's plain ASan runtime also defines
the coverage callbacks, so libFuzzer (inside atheris) would never see the extension's counters; as atheris
documents (using_sanitizers.md), the runtime to preload is ASan and libFuzzer merged into one shared object,
built here from clang's own archives. Prints the two paths: the runtime, then the module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "fuzz" / "ext"
# fuzzer-no-link: coverage counters for libFuzzer (linked into atheris), not a second libFuzzer main.
SANITIZE = ["-fsanitize=fuzzer-no-link,address", "-fno-omit-frame-pointer", "-O1", "-g"]


def clang_file(name: str) -> str:
    return subprocess.run(["clang", f"-print-file-name={name}"], check=True, capture_output=True,
                          text=True).stdout.strip()


def build_runtime() -> Path:
    """ASan + libFuzzer (no main) as one preloadable library; ASan's preinit object cannot go in a shared one."""
    OUT.mkdir(parents=True, exist_ok=True)
    asan = OUT / "asan.a"
    shutil.copy(clang_file("libclang_rt.asan-x86_64.a"), asan)
    subprocess.run(["ar", "d", str(asan), "asan_preinit.cpp.o"], check=True)
    runtime = OUT / "asan_with_fuzzer.so"
    subprocess.run(["clang++", "-Wl,--whole-archive", clang_file("libclang_rt.fuzzer_no_main-x86_64.a"), str(asan),
                    "-Wl,--no-whole-archive", "-lpthread", "-ldl", "-shared", "-o", str(runtime)], check=True)
    asan.unlink()
    return runtime


def build() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / "loop.pyx"
    shutil.copy(ROOT / "ext" / "loop.pyx", source)
    for include in (ROOT / "ext").glob("*.pxi"):
        shutil.copy(include, OUT / include.name)
    [module] = cythonize([Extension("sensor._loop", [str(source)])], include_path=[str(OUT)],
                         compiler_directives={"language_level": "3"}, quiet=True)
    c_file = Path(module.sources[0])
    target = OUT / f"_loop{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = ["clang", *SANITIZE, "-fPIC", "-shared", "-UNDEBUG", f"-I{sysconfig.get_paths()['include']}",
               str(c_file), "-o", str(target)]
    subprocess.run(command, check=True)
    return target


if __name__ == "__main__":
    print(build_runtime())
    print(build())
    sys.exit(0)
