"""The suite's fwd+bwd with NCHW and with channels-last (NHWC) operands, and
PyTorch on channels_last tensors (when installed)."""

import numpy as np
import pytest

from fastconv import _bench

IMPLS = _bench.LAYOUTS + ("torch-NHWC",)
CASES = ([(c, _bench.conv_layout_impl) for c in _bench.CONV_SUITE]
         + [(c, _bench.pool_layout_impl) for c in _bench.POOL_SUITE])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case,make", CASES, ids=lambda c: getattr(c, "name", ""))
def test_layout(benchmark, record_rate, case, make, impl, dtype):
    if impl.startswith("torch"):
        pytest.importorskip("torch")
    fn = make(impl, case, np.dtype(dtype))
    benchmark.group = f"layout-{case.name}-{dtype}"
    benchmark(fn)
    if hasattr(case, "c_out"):
        record_rate("gflops", 6 * _bench.conv_macs(case))
