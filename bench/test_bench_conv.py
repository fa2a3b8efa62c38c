"""Conv layers of the speed suite, fastconv side by side with the baselines.

Every case of ``fastconv._bench.CONV_SUITE`` runs through each implementation
(fastconv, a NumPy im2col baseline, PyTorch when installed) for the forward
pass and for forward+backward; the textbook oracle runs on a tiny case only.
``extra_info["gflops"]`` records the achieved rate.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _bench
from fastconv import reference as ref

IMPLS = ["fastconv", "numpy", "torch"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", _bench.CONV_SUITE, ids=lambda c: c.name)
def test_conv(benchmark, record_rate, case, impl, direction, dtype):
    if impl == "torch":
        pytest.importorskip("torch")
    arrays = _bench.conv_arrays(case, np.dtype(dtype))
    pair = _bench.CONV_IMPLS[impl](case, *arrays)
    if pair is None:
        pytest.skip(f"{impl} has no implementation for {case.name}")
    _bench.set_threads(fastconv.get_num_threads())
    fn = pair[0] if direction == "fwd" else pair[1]
    benchmark.group = f"{case.name}-{dtype}-{direction}"
    benchmark(fn)
    flops = (2 if direction == "fwd" else 6) * _bench.conv_macs(case)
    record_rate("gflops", flops)


TINY = _bench.ConvCase("tiny", 2, 3, 10, 4, 3, 1, 1, 1)


@pytest.mark.parametrize("impl", ["fastconv", "oracle"])
def test_tiny_against_oracle(benchmark, record_rate, impl):
    x, w, b, g = _bench.conv_arrays(TINY, np.float64)
    mod = fastconv if impl == "fastconv" else ref
    benchmark.group = "tiny-float64-fwd"
    benchmark(mod.conv2d, x, w, b, padding=1)
    record_rate("gflops", 2 * _bench.conv_macs(TINY))
