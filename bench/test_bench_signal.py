"""correlate2d ('same') against scipy.signal.correlate2d on 256²-1024² images."""

import numpy as np
import pytest

from fastconv import _bench


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["fastconv", "scipy"])
@pytest.mark.parametrize("case", _bench.SIGNAL_SUITE, ids=lambda c: c.name)
def test_correlate2d(benchmark, record_rate, case, impl, dtype):
    if impl == "scipy":
        pytest.importorskip("scipy")
    a, b = _bench.signal_arrays(case, np.dtype(dtype))
    fn = _bench.signal_impl(impl, a, b)
    benchmark.group = f"{case.name}-{dtype}"
    benchmark(fn)
    record_rate("gflops", 2 * case.size ** 2 * case.k ** 2)
