"""Build script for fastconv's Cython extensions.

Everything about *how* the kernels are compiled lives here, once:

* Cython compiler directives (bounds checks off, C division, ...);
* ``FASTCONV_DEBUG=1`` turns bounds checks and wraparound checks back on and
  compiles with ``-O0 -g`` -- use it for sanitizer / valgrind runs;
* OpenMP is used when the compiler can build and link a tiny OpenMP program,
  otherwise the kernels compile serially (``prange`` degrades to ``range``);
  ``FASTCONV_NO_OPENMP=1`` forces the serial build.

No host-specific flag (``-march=native``) is ever used: the wheels must run on
any x86-64 / aarch64 machine.  The heavy lifting (GEMM) is done by the BLAS
that NumPy ships, which has its own runtime CPU dispatch.  The kernels get
theirs by being compiled twice on x86-64: ``_kernels`` for the baseline
(SSE2) and ``_kernels_avx2`` (the same source, ``include``d) with
``-mavx2 -mfma``; ``fastconv._simd`` picks one at import from what the CPU
and OS support.  ``-ffp-contract=off`` keeps every multiply and add
separately rounded, so both builds return bitwise identical results.
"""

import glob
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTCONV_DEBUG", "0") not in ("", "0")
NO_OPENMP = os.environ.get("FASTCONV_NO_OPENMP", "0") not in ("", "0")

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
    "cpow": True,
}


def _openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) if unavailable."""
    if NO_OPENMP or sys.platform == "win32":
        # MSVC's OpenMP 2.0 lacks what Cython's prange needs for Py_ssize_t
        # loop variables; Windows builds are serial for now.
        return [], []
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = (
        "#include <omp.h>\n"
        "int main(void){int s=0;\n"
        "#pragma omp parallel for reduction(+:s)\n"
        "for(int i=0;i<8;i++) s+=i; return s==28 ? 0 : 1;}\n"
    )
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "omp_check.c")
        with open(path, "w") as f:
            f.write(src)
        for cflags, lflags in candidates:
            cmd = cc.split() + cflags + [path, "-o", os.path.join(tmp, "a.out")] + lflags
            try:
                ok = subprocess.run(cmd, capture_output=True).returncode == 0
            except OSError:
                ok = False
            if ok:
                return cflags, lflags
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("fastconv: OpenMP not available, building serial kernels", file=sys.stderr)
    return [], []


def _x86_64():
    """True when building for x86-64 (the only target with a SIMD variant)."""
    target = (os.environ.get("_PYTHON_HOST_PLATFORM") or sysconfig.get_platform()).lower()
    return target.endswith(("x86_64", "amd64")) or (
        target == "linux" and platform.machine().lower() in ("x86_64", "amd64"))


def _extensions():
    omp_cflags, omp_lflags = _openmp_flags()
    if sys.platform == "win32":
        base_cflags = ["/O2"]
    elif DEBUG:
        base_cflags = ["-O0", "-g3", "-fno-omit-frame-pointer"]
    else:
        # -g0 drops the debug info that Python's own CFLAGS (-g) would add:
        # it is most of the size of a Cython module with fused types.
        base_cflags = ["-O3", "-g0"]
    if sys.platform != "win32":
        # Offsets computed from hyper-parameters near the 2**62 limit the
        # Python layer allows may wrap in intermediate products before the
        # final (in-range) index; make that defined behaviour.
        base_cflags.append("-fwrapv")
        # No fused multiply-adds the source did not ask for: the SIMD
        # variants and the baseline must round identically.
        base_cflags.append("-ffp-contract=off")
    common = dict(
        include_dirs=[np.get_include(), "src/fastconv"],
        # C headers the modules include (some only through another header,
        # which cythonize does not follow): a change to any rebuilds them
        depends=sorted(glob.glob("src/fastconv/*.h")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=base_cflags + omp_cflags,
        extra_link_args=omp_lflags,
    )
    names = ["_openmp", "_blas", "_cpu", "_alloc", "_kernels", "cython_api"]
    exts = [
        Extension(f"fastconv.{name}", [f"src/fastconv/{name}.pyx"], **common)
        for name in names
    ]
    if _x86_64() and sys.platform != "win32":
        avx2 = dict(common, extra_compile_args=common["extra_compile_args"] + ["-mavx2", "-mfma"])
        exts.append(Extension("fastconv._kernels_avx2", ["src/fastconv/_kernels_avx2.pyx"],
                              **avx2))
    return cythonize(
        exts,
        compiler_directives=COMPILER_DIRECTIVES,
        include_path=["src"],
        # Generated C lives in build/, one folder per mode: cythonize only
        # compares timestamps, so a release .c would otherwise be reused by
        # a debug build (and the other way round) with the wrong directives.
        build_dir=os.path.join("build", "cython-debug" if DEBUG else "cython"),
    )


setup(ext_modules=_extensions())
