"""Pooling cases of the speed suite (forward + backward per call)."""

import numpy as np
import pytest

from fastconv import _bench


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["fastconv", "numpy", "torch"])
@pytest.mark.parametrize("case", _bench.POOL_SUITE, ids=lambda c: c.name)
def test_pool(benchmark, record_rate, case, impl, dtype):
    if impl == "torch":
        pytest.importorskip("torch")
    x = _bench.pool_arrays(case, np.dtype(dtype))
    fn = _bench.POOL_IMPLS[impl](case, x)
    benchmark.group = f"{case.name}-{dtype}"
    benchmark(fn)
    record_rate("gbytes_per_s", 3 * x.nbytes)
