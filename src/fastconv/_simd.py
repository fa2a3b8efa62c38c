"""Runtime SIMD dispatch: pick the kernel build this CPU runs best.

``_kernels`` is compiled for the x86-64 baseline (SSE2); on x86-64 the same
source is also compiled with AVX2 + FMA as ``_kernels_avx2`` (see
setup.py).  Both round identically (no FMA contraction), so the choice
changes speed, never results.  The levels, best last:

- ``baseline``: the baseline build;
- ``avx2``: the AVX2 build;
- ``avx512``: the AVX2 build with its AVX-512 max-pooling rows switched on
  (``_pool_avx2.h``; the same bits), on CPUs with AVX-512F.

Two AVX-512 kernels are outside these levels: the own GEMM (``_blas.pyx``)
and the direct filter gradient (``_gradw_avx512.h``) run wherever the CPU
has AVX-512, in either build, so they too leave results independent of the
level.

``FASTCONV_SIMD`` picks one: ``auto`` (the default) takes the best this CPU
runs, ``baseline`` and ``avx2`` force those (the tests use them).
``FASTCONV_SIMD=avx2`` asks for the AVX2 build even if the CPU probe says no
(for experiments only: it crashes on CPUs without AVX2); ``avx512`` never
turns on rows the CPU cannot run.
"""

import os

import fastconv._kernels as _baseline
from fastconv._cpu import has_avx2_fma, has_avx512f

__all__ = ["kernels", "level", "available"]


def _avx2_module():
    try:
        from fastconv import _kernels_avx2
    except ImportError:        # not built (non-x86 target)
        return None
    return _kernels_avx2


def available():
    """The SIMD levels this build and CPU can run, best last."""
    levels = ["baseline"]
    if _avx2_module() is not None and has_avx2_fma():
        levels.append("avx2")
        if has_avx512f():
            levels.append("avx512")
    return levels


def _select():
    want = os.environ.get("FASTCONV_SIMD", "auto").strip().lower() or "auto"
    if want not in ("auto", "baseline", "avx2", "avx512"):
        raise ImportError(f"fastconv: FASTCONV_SIMD must be auto, baseline, avx2 or avx512, "
                          f"got {want!r}")
    if want == "baseline":
        return _baseline, "baseline"
    avx2 = _avx2_module()
    if avx2 is not None and (want == "avx2" or has_avx2_fma()):
        on = want != "avx2" and avx2._tuning(max_pool_avx512=True)["max_pool_avx512"]
        return avx2, "avx512" if on else "avx2"
    return _baseline, "baseline"


#: The kernel module in use; ``level`` names the level ("baseline", "avx2"
#: or "avx512").
kernels, level = _select()
