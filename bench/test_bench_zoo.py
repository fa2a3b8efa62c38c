"""Layers of well-known networks (``fastconv._bench.LAYER_ZOO``: ResNet,
MobileNet, CIFAR nets, AlexNet, ...), fastconv side by side with PyTorch
(when installed), forward and forward+backward, grouped per layer;
``extra_info["gflops"]`` records the achieved rate.  ``python -m fastconv
bench --zoo`` prints the same as one table.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _bench


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("case", _bench.LAYER_ZOO, ids=lambda c: c.name)
def test_zoo_layer(benchmark, record_rate, case, impl, direction, dtype):
    if impl == "torch":
        pytest.importorskip("torch")
    arrays = _bench.conv_arrays(case, np.dtype(dtype))
    pair = _bench.CONV_IMPLS[impl](case, *arrays)
    _bench.set_threads(fastconv.get_num_threads())
    benchmark.group = f"{case.name}-{dtype}-{direction}"
    benchmark(pair[0] if direction == "fwd" else pair[1])
    record_rate("gflops", (2 if direction == "fwd" else 6) * _bench.conv_macs(case))
