"""Build and run-time configuration report (``fastconv.show_config()``)."""

import platform
import sys

import numpy as np

from fastconv._blas import blas_info
from fastconv._openmp import openmp_enabled
from fastconv import _simd
from fastconv._threads import get_num_threads
from fastconv._version import __version__


def config():
    """Return fastconv's configuration as a dict (see :func:`show_config`)."""
    blas = blas_info()
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "openmp": openmp_enabled(),
        "simd": _simd.level,
        "simd_available": ", ".join(_simd.available()),
        "threads": get_num_threads(),
        "blas": blas["name"],
        "blas_path": blas["path"],
        "blas_int_bits": blas["int_bits"],
        "blas_thread_control": blas["thread_control"],
        "blas_config": blas["config"],
    }


def show_config(file=None):
    """Print the version, OpenMP and BLAS in use, and the thread count.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default ``sys.stdout``).
    """
    for key, value in config().items():
        print(f"{key:>20}: {value}", file=file or sys.stdout)
