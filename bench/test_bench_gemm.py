"""The GEMM behind the kernels, on the suite's products, single-threaded as
the kernels call it: fastconv's own AVX-512 GEMM against the BLAS it wraps
(OpenBLAS; oneMKL with FASTCONV_BLAS=mkl) and PyTorch's ``torch.mm`` (oneMKL
inside), grouped per product and dtype, GFLOP/s in ``extra_info``."""

import numpy as np
import pytest

from fastconv import _bench


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["own", "blas", "torch"])
@pytest.mark.parametrize("case", _bench.GEMM_SUITE, ids=lambda c: c.name)
def test_gemm(benchmark, record_rate, case, impl, dtype):
    a, b, c = _bench.gemm_arrays(case, np.dtype(dtype))
    fn, restore = _bench.gemm_impl(impl, case, a, b, c)
    if fn is None:
        pytest.skip(f"{impl} not available here")
    try:
        benchmark.group = f"gemm-{case.name}-{dtype}"
        benchmark(fn)
    finally:
        restore()
    record_rate("gflops", 2 * case.m * case.n * case.k)
