"""Build and run-time configuration report (``fastconv.show_config()``)."""

import os
import platform
import sys

import numpy as np

from fastconv._blas import _mapped_libraries, blas_info
from fastconv._cpu import compiler, l3_cache_bytes
from fastconv._openmp import openmp_enabled, openmp_spec
from fastconv import _simd
from fastconv._threads import get_num_threads
from fastconv._version import __version__
from fastconv.functional import direct_grad_weight_config, winograd_config


_SPEC_NAMES = {200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0", 201511: "4.5",
               201811: "5.0", 202011: "5.1", 202111: "5.2"}


def openmp_runtime():
    """The OpenMP spec the kernels target and the runtime library loaded in
    this process (found in /proc/self/maps on Linux)."""
    if not openmp_enabled():
        return "none (serial build)"
    spec = _SPEC_NAMES.get(openmp_spec(), str(openmp_spec()))
    found = [path for path in _mapped_libraries("omp")
             if os.path.basename(path).lower().startswith(("libgomp", "libomp", "libiomp"))]
    return f"OpenMP {spec}, {found[0] if found else 'library not identified'}"


def config():
    """Return fastconv's configuration as a dict (see :func:`show_config`)."""
    blas = blas_info()
    l3 = l3_cache_bytes()
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "compiler": compiler(),
        "openmp": openmp_enabled(),
        "openmp_runtime": openmp_runtime(),
        "simd": _simd.level,
        "simd_available": ", ".join(_simd.available()),
        "threads": get_num_threads(),
        "blas": blas["name"],
        "blas_path": blas["path"],
        "blas_int_bits": blas["int_bits"],
        "blas_thread_control": blas["thread_control"],
        "blas_config": blas["config"],
        "own_gemm": ("on, AVX-512 (FASTCONV_GEMM=blas turns it off)"
                     if blas["own_gemm"] else "off"),
        "winograd": winograd_config(),
        "direct_grad_weight": direct_grad_weight_config(),
        "l3_cache": _mib(l3) if l3 else "not reported",
        "pool_grad_streaming": _streaming(),
    }


def _mib(nbytes):
    return f"{nbytes / 2**20:g} MiB"


def _streaming():
    """When the NCHW pool gradients stream their planes out (STREAM_MIN_BYTES)."""
    threshold = _simd.kernels._tuning()["stream_min_bytes"]
    if threshold < 0:
        return "never"
    if threshold == 0:
        return "every NCHW gradient"
    return f"NCHW gradients of {_mib(threshold)} or more"


def show_config(file=None):
    """Print the version, compiler, OpenMP runtime, BLAS, SIMD level and
    thread count (and where Winograd, the own GEMM and the direct filter
    gradient are used, the L3 size the OS reports and from which size the
    NCHW pool gradients stream out).

    Parameters
    ----------
    file : file-like, optional
        Where to print (default ``sys.stdout``).
    """
    for key, value in config().items():
        print(f"{key:>20}: {value}", file=file or sys.stdout)
