"""Shared fixtures: thread counts and a seeded RNG."""

import numpy as np
import pytest

import fastconv
from fastconv import _threads


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request, monkeypatch):
    """Run the test with fastconv pinned to 1, then 2 threads -- even for the
    tiny shapes that would otherwise run serially (see threads_for)."""
    monkeypatch.setattr(_threads, "SMALL_WORK", 0)
    fastconv.set_num_threads(request.param)
    yield request.param
    fastconv.set_num_threads(None)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["gather", "scatter", "scatter-position-major"])
def grad_input_method(request, monkeypatch):
    """Force each evaluation of the input gradient in turn (the API picks
    gather or scatter by a cost model, and the scatter kernel its GEMM's
    orientation by shape, so small test shapes would see only one):
    gather, scatter with its planar ``W^T @ dY`` product, and scatter with
    the position-major ``dY^T @ W`` one."""
    from fastconv import functional
    from fastconv._simd import kernels
    method = "gather" if request.param == "gather" else "scatter"
    monkeypatch.setattr(functional, "_FORCE_GRAD_INPUT_METHOD", method)
    kernels._tuning(scatter_position_major=int(request.param == "scatter-position-major"))
    yield method
    kernels._tuning(scatter_position_major=-1)


@pytest.fixture(params=["by-rule", "im2col", "row-shift"])
def conv_lowering(request):
    """Run the vertical-stride-1 forward and input gradient as the kernels
    pick for each shape (_kernels._row_shift_pays), then forced each way:
    the full im2col, and the row-shift lowering (patches packed once per
    column tap, one GEMM per filter row; see _kernels._correlate_row_shift)."""
    from fastconv._simd import kernels
    saved = kernels._tuning()["row_shift"]
    kernels._tuning(row_shift={"by-rule": -1, "im2col": 0, "row-shift": 1}[request.param])
    yield request.param
    kernels._tuning(row_shift=saved)


@pytest.fixture(params=["per-image", "batched"])
def image_batching(request):
    """Run the im2col forward with one GEMM per image, then with small
    images batched side by side into one GEMM (the kernel batches images
    of fewer than 192 output positions; here every small image batches)."""
    from fastconv._simd import kernels
    saved = kernels._tuning()
    on = request.param == "batched"
    kernels._tuning(batch_columns_f32=4096 if on else 0, batch_columns_f64=4096 if on else 0)
    yield request.param
    kernels._tuning(batch_columns_f32=saved["batch_columns_f32"],
                    batch_columns_f64=saved["batch_columns_f64"])


@pytest.fixture(params=["one-block", "channel-blocks", "2KB-blocks"])
def grad_weight_blocks(request):
    """Run the filter gradient as one block per group, then cut into
    blocks of one input channel (NCHW columns; NHWC: of one tap, as a
    kernel row is then over the limit) each, then into blocks of at most
    2 KB (a few channels or rows each,
    the last one short, on these tests' shapes; the kernels cut NCHW
    float64 gradients, float32 ones of 2 MiB or more, and all NHWC ones
    into blocks of at most 512 KiB; see conv2d_grad_weight and
    conv2d_grad_weight_nhwc)."""
    from fastconv._simd import kernels
    saved = kernels._tuning()
    limit = {"one-block": 0, "channel-blocks": 1, "2KB-blocks": 2000}[request.param]
    kernels._tuning(gw_block_bytes_f32=limit, gw_block_bytes_f64=limit, gw_row_block_bytes=limit,
                    gw_block_from_bytes_f32=0)
    yield request.param
    kernels._tuning(**{key: saved[key] for key in (
        "gw_block_bytes_f32", "gw_block_bytes_f64", "gw_row_block_bytes",
        "gw_block_from_bytes_f32")})


@pytest.fixture(params=["dW", "dW^T"])
def grad_weight_orientation(request):
    """Run the filter gradient's float32 GEMMs in each orientation (the
    kernel picks dW^T = patches x dY^T for few output channels per group,
    the plain dW = dY x patches^T otherwise; see conv2d_grad_weight)."""
    from fastconv._simd import kernels
    kernels._tuning(gw_transpose_f32=request.param == "dW^T")
    yield request.param
    kernels._tuning(gw_transpose_f32=True)
