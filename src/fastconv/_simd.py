"""Runtime SIMD dispatch: pick the kernel build this CPU runs best.

``_kernels`` is compiled for the x86-64 baseline (SSE2); on x86-64 the same
source is also compiled with AVX2 + FMA as ``_kernels_avx2`` (see
setup.py).  Both round identically (no FMA contraction), so the choice
changes speed, never results.  ``FASTCONV_SIMD=baseline`` forces the
baseline build (the tests use it); ``FASTCONV_SIMD=avx2`` asks for the AVX2
build even if the CPU probe says no (for experiments only: it crashes on
CPUs without AVX2).
"""

import os

import fastconv._kernels as _baseline
from fastconv._cpu import has_avx2_fma

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
    return levels


def _select():
    want = os.environ.get("FASTCONV_SIMD", "auto").strip().lower() or "auto"
    if want not in ("auto", "baseline", "avx2"):
        raise ImportError(f"fastconv: FASTCONV_SIMD must be auto, baseline or avx2, "
                          f"got {want!r}")
    if want == "baseline":
        return _baseline, "baseline"
    avx2 = _avx2_module()
    if avx2 is not None and (want == "avx2" or has_avx2_fma()):
        return avx2, "avx2"
    return _baseline, "baseline"


#: The kernel module in use; ``level`` names it ("baseline" or "avx2").
kernels, level = _select()
