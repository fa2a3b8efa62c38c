"""Tests of the Winograd kernels (``_winograd.pxi``): the 3x3 stride-1 forward
and input gradient (F(2x2, 3x3)) and filter gradient (F(3x3, 2x2)) with
enough channels on large planes, or enough tiles on small ones, in both
layouts.

The thresholds (``functional._WINOGRAD_MIN_CHANNELS``, ``_MIN_PLANE``) are
lowered here so that small shapes, which the oracles can check, take the
Winograd kernels; spies on ``conv2d_winograd`` and
``conv2d_grad_weight_winograd`` make sure they did.  Checked:
the oracles on hypothesis-drawn shapes and paddings, work items that cut tile
rows and images, bitwise thread-count determinism, the filter transform,
the fallback to the GEMM kernels on non-finite values, and which shapes the
default thresholds send to Winograd (large planes, and small ones with
enough tiles).  Dilated layers on their phase images (``_phases.pxi``):
the split and merge against NumPy's slicing, the three passes against the
oracles, and which shapes split.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional
from fastconv import reference as ref
from helpers import DTYPES, assert_close

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture
def winograd_calls(monkeypatch):
    """Winograd for every eligible geometry (thresholds at 1, dilated layers'
    phase planes of any size); yields the list of results of the kernel's
    calls (True: finished, False: fell back)."""
    monkeypatch.setattr(functional, "_WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(functional, "_WINOGRAD_MIN_PLANE", 1)
    monkeypatch.setattr(functional, "_PHASES_MIN_FILL", 0)
    monkeypatch.setattr(functional, "_PHASES_MIN_PLANE", {"NCHW": 1, "NHWC": 1})
    calls = []
    for name in ("conv2d_winograd", "conv2d_grad_weight_winograd", "conv2d_winograd_nhwc",
                 "conv2d_grad_weight_winograd_nhwc"):
        def spy(*args, kernel=getattr(functional._kernels, name)):
            calls.append(kernel(*args))
            return calls[-1]

        monkeypatch.setattr(functional._kernels, name, spy)
    yield calls


@pytest.fixture(params=["slot-sums", "shared-sums"])
def winograd_sums(request):
    """Run the Winograd filter gradients with a copy of M per reduction
    slot, then with all threads summing one block at a time into one M (the
    kernels pick that from 4 MiB of M, and where the blocks make a single
    slot, as small batches do here too; see conv2d_grad_weight_winograd)."""
    from fastconv._simd import kernels
    saved = kernels._tuning()["winograd_shared_sums_bytes"]
    kernels._tuning(winograd_shared_sums_bytes=0 if request.param == "shared-sums" else 1 << 62)
    yield request.param
    kernels._tuning(winograd_shared_sums_bytes=saved)


@st.composite
def winograd_problems(draw):
    """Shapes, paddings (0-2 per axis, or 'same') and the tiles per work item."""
    n = draw(st.integers(1, 3))
    c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad = draw(st.one_of(st.just("same"), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    ph, pw = (1, 1) if pad == "same" else pad
    h = draw(st.integers(max(1, 3 - 2 * ph), 13))
    w = draw(st.integers(max(1, 3 - 2 * pw), 13))
    block = draw(st.sampled_from([1, 2, 5, 16, 128]))
    return (n, c_in, h, w), (c_out, c_in, 3, 3), pad, block


@SETTINGS
@given(problem=winograd_problems(), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_forward_and_gradients_match_oracles(winograd_calls, winograd_sums, n_threads,
                                             monkeypatch, dtype, layout, problem, seed,
                                             with_bias):
    x_shape, w_shape, pad, block = problem
    monkeypatch.setattr(functional, "_WINOGRAD_BLOCK_TILES", block)
    _check_three_passes(winograd_calls, x_shape, w_shape, dict(padding=pad), dtype, layout,
                        seed, with_bias)


def _check_three_passes(winograd_calls, x_shape, w_shape, kw, dtype, layout, seed, with_bias):
    """The forward and both gradients of random (NCHW-shaped) operands in
    `layout` against the oracles, each by Winograd."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if with_bias else None
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(kw, layout=layout)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    del winograd_calls[:]
    y = fastconv.conv2d(x, w, b, **kw)
    assert_close(y, ref.conv2d(x64, w64, None if b is None else b.astype(np.float64), **kw),
                 dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = fastconv.conv2d_grad_input(g, w, x.shape, **kw)
    assert_close(dx, ref.conv2d_grad_input(g.astype(np.float64), w64, x.shape, **kw), dtype)
    dw = fastconv.conv2d_grad_weight(x, g, w.shape, **kw)
    assert_close(dw, ref.conv2d_grad_weight(x64, g.astype(np.float64), w.shape, **kw), dtype)
    assert winograd_calls == [True, True, True]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("c_in, c_out, x_hw, block", [
    (8, 8, (6, 8), 128),            # one 8 x 8 block of channels and pixels per transpose
    (16, 19, (9, 16), 5),           # pairs of blocks; blocks that cut tile rows
    (19, 16, (12, 7), 3),           # ragged channels and runs of pixels
    (37, 24, (17, 10), 16),         # a pair, a block and an edge of channels
    (24, 9, (5, 33), 7),            # long rows, few output channels
])
def test_nchw_channels_last_stages_match_oracles(winograd_calls, winograd_sums, monkeypatch,
                                                 dtype, c_in, c_out, x_hw, block):
    # NCHW stages each block's rows channels last in 8 x 8 transposes (two
    # side by side where the channels or pixels allow), the edges one by
    # one; the hypothesis shapes above have fewer than 8 channels
    monkeypatch.setattr(functional, "_WINOGRAD_BLOCK_TILES", block)
    rng = np.random.default_rng(c_in * 100 + c_out)
    x = rng.standard_normal((3, c_in) + x_hw).astype(dtype)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    del winograd_calls[:]
    y = fastconv.conv2d(x, w, b, padding=1)
    assert_close(y, ref.conv2d(x64, w64, b.astype(np.float64), padding=1), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = fastconv.conv2d_grad_input(g, w, x.shape, padding=1)
    assert_close(dx, ref.conv2d_grad_input(g.astype(np.float64), w64, x.shape, padding=1),
                 dtype)
    dw = fastconv.conv2d_grad_weight(x, g, w.shape, padding=1)
    assert_close(dw, ref.conv2d_grad_weight(x64, g.astype(np.float64), w.shape, padding=1),
                 dtype)
    assert winograd_calls == [True, True, True]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nchw_filter_gradient_with_openmps_default_threads(dtype, rng):
    # n_threads = 0 means OpenMP's default count; the shared-sums variant
    # (one reduction slot here) must still stage every row of each block
    from fastconv._simd import kernels
    x = rng.standard_normal((2, 8, 7, 7)).astype(dtype)
    g = rng.standard_normal((2, 8, 7, 7)).astype(dtype)
    results = []
    for threads in (0, 1):
        dw = np.full((8, 8, 3, 3), np.nan, dtype=dtype)
        assert kernels.conv2d_grad_weight_winograd(x, g, dw, 1, 1, 16, threads)
        results.append(dw)
    np.testing.assert_array_equal(results[0], results[1])
    assert_close(results[0], ref.conv2d_grad_weight(x.astype(np.float64), g.astype(np.float64),
                                                    (8, 8, 3, 3), padding=1), dtype)


def test_nchw_work_items_halve_for_few_channels():
    # float64, or the filter gradient, with at most 64 channels: 64 tiles
    block = functional._winograd_block_tiles
    assert block(64, 64, 8, "NCHW") == 64 and block(64, 64, 4, "NCHW", True) == 64
    assert block(64, 64, 4, "NCHW") == 128 and block(64, 65, 8, "NCHW") == 128
    assert block(64, 64, 8, "NHWC") == 128 and block(128, 128, 8, "NCHW", True) == 128


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, pad, block", [
    ((5, 6, 20, 17), 1, 128),        # blocks across images, odd output width
    ((2, 3, 31, 8), (2, 0), 3),      # blocks that cut tile rows, padding 2 and 0
    ((3, 4, 3, 3), 0, 1),            # a 1x1 output: one tile, three of its outputs dropped
])
def test_bitwise_identical_for_1_2_and_3_threads(winograd_calls, winograd_sums, monkeypatch,
                                                 dtype, layout, x_shape, pad, block):
    monkeypatch.setattr(functional, "_WINOGRAD_BLOCK_TILES", block)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((9, x_shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(padding=pad, layout=layout)
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        try:
            y = fastconv.conv2d(x, w, b, **kw)
            results.append((y, fastconv.conv2d_grad_input(np.cos(y), w, x.shape, **kw),
                            fastconv.conv2d_grad_weight(x, np.cos(y), w.shape, **kw)))
        finally:
            fastconv.set_num_threads(None)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)
    assert winograd_calls == [True] * 9


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_filter_gradient_workspace_failure_is_a_memory_error(winograd_calls, winograd_sums,
                                                             layout, rng):
    """Both filter-gradient variants report a failed workspace allocation
    as MemoryError, and give the same numbers afterwards."""
    from fastconv._simd import kernels
    x, g, w_shape = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((2, 4, 9, 9)), \
        (4, 3, 3, 3)
    if layout == "NHWC":
        x, g, w_shape = x.transpose(0, 2, 3, 1).copy(), g.transpose(0, 2, 3, 1).copy(), \
            (3, 3, 3, 4)
    expected = fastconv.conv2d_grad_weight(x, g, w_shape, padding=1, layout=layout)
    kernels._tuning(fail_allocations=True)
    try:
        with pytest.raises(MemoryError):
            fastconv.conv2d_grad_weight(x, g, w_shape, padding=1, layout=layout)
    finally:
        kernels._tuning(fail_allocations=False)
    np.testing.assert_array_equal(
        fastconv.conv2d_grad_weight(x, g, w_shape, padding=1, layout=layout), expected)


@pytest.mark.parametrize("own_gemm", [False, True], ids=["default-gemm", "own-gemm-everywhere"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_shared_sums_with_wide_channels(winograd_calls, monkeypatch, dtype, layout, own_gemm):
    """The shared-M filter gradient on 40 input and 36 output channels, with
    a ragged last block of tiles, its GEMMs as the kernels pick them or all
    in the own AVX-512 GEMM (where the CPU has it): the GEMM kernels'
    numbers, and the same bits for 1, 2, 3 and 5 threads (more threads than
    some phases have items)."""
    from fastconv import _blas
    from fastconv._simd import kernels
    monkeypatch.setattr(functional, "_WINOGRAD_BLOCK_TILES", 50)
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 40, 15, 14)).astype(dtype)
    g = rng.standard_normal((2, 36, 15, 14)).astype(dtype)
    w_shape = (36, 40, 3, 3)
    if layout == "NHWC":
        x, g, w_shape = x.transpose(0, 2, 3, 1).copy(), g.transpose(0, 2, 3, 1).copy(), \
            (3, 3, 40, 36)
    saved = kernels._tuning()["winograd_shared_sums_bytes"]
    previous = _blas._set_own_gemm(True, every_shape=True) if own_gemm else None
    results = []
    try:
        kernels._tuning(winograd_shared_sums_bytes=0)
        for threads in (1, 2, 3, 5):
            fastconv.set_num_threads(threads)
            results.append(fastconv.conv2d_grad_weight(x, g, w_shape, padding=1, layout=layout))
    finally:
        fastconv.set_num_threads(None)
        kernels._tuning(winograd_shared_sums_bytes=saved)
        if previous is not None:
            _blas._set_own_gemm(*previous)
    assert winograd_calls == [True] * 4
    monkeypatch.setattr(functional, "_WINOGRAD_MIN_CHANNELS", None)
    gemm_kernels = fastconv.conv2d_grad_weight(x, g, w_shape, padding=1, layout=layout)
    assert_close(results[0], gemm_kernels, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_read_only_and_strided_inputs(winograd_calls, rng):
    x = rng.standard_normal((2, 6, 11, 9))[:, ::2]
    w = rng.standard_normal((4, 3, 3, 3))
    x_ro, w_ro = x.copy(), w.copy()
    x_ro.flags.writeable = w_ro.flags.writeable = False
    y = fastconv.conv2d(x_ro, w_ro, padding=1)
    assert_close(y, ref.conv2d(x, w, padding=1))
    np.testing.assert_array_equal(y, fastconv.conv2d(x, w, padding=1))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("rotate_swap", [False, True])
@pytest.mark.parametrize("c_out, c_in", [(5, 3), (70, 41), (9, 33), (1, 1)])
def test_filter_transform_is_g_w_gt(dtype, rotate_swap, layout, c_out, c_in, rng):
    # rows of U cut into chunks of 32 filters and (where a row's filters lie
    # apart) stages of 8 rows, raggedly; each filter on its own, so the same
    # bits on 1-3 threads
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    filters = (w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3) if rotate_swap else w)
    expected = np.einsum("au,ocuv,bv->aboc", G, filters.astype(np.float64), G)
    # the kernels take U[xi] as (correlation input x output channels)
    expected = expected.reshape((16,) + filters.shape[:2]).transpose(0, 2, 1)
    transform, weight = functional._kernels.winograd_filters, w
    if layout == "NHWC":
        transform, weight = functional._kernels.winograd_filters_nhwc, w.transpose(2, 3, 1, 0)
        weight = weight.copy()
    results = []
    for threads in (1, 2, 3):
        u = np.full(expected.shape, np.nan, dtype=dtype)
        transform(weight, u, rotate_swap, threads)
        results.append(u)
    # summed in double precision (in another order than einsum's), rounded once
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(results[0], expected, rtol=2 * eps,
                               atol=2 * eps * np.abs(expected).max())
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_staged_filter_transform_workspace_failure_is_a_memory_error(rng):
    # NCHW's forward filters: a row of U (an input channel) lies apart in w
    from fastconv._simd import kernels
    w = rng.standard_normal((12, 10, 3, 3))
    u = np.empty((16, 10, 12))
    kernels._tuning(fail_allocations=True)
    try:
        with pytest.raises(MemoryError):
            kernels.winograd_filters(w, u, False, 2)
    finally:
        kernels._tuning(fail_allocations=False)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [(0, 0), (4, 5), (8, 9)], ids=["corner", "inner", "far"])
def test_non_finite_inputs_fall_back_to_the_textbook_sums(winograd_calls, winograd_sums, bad,
                                                         where, rng):
    # An infinity minus itself inside a transform is NaN where the textbook
    # sum has an infinity: such calls are recomputed by the GEMM kernels.
    x = rng.standard_normal((2, 3, 9, 10))
    x[1, 2][where] = bad
    w = np.abs(rng.standard_normal((4, 3, 3, 3)))     # one sign: the sums stay infinite
    y = fastconv.conv2d(x, w, padding=1)
    assert winograd_calls == [False]
    assert_close(y, ref.conv2d(x, w, padding=1))
    if not np.isnan(bad):
        assert np.isinf(y).any()
    dx = fastconv.conv2d_grad_input(x[:, :3], np.abs(w[:3]), x.shape, padding=1)
    assert_close(dx, ref.conv2d_grad_input(x[:, :3], np.abs(w[:3]), x.shape, padding=1))
    # the filter gradient with a non-finite input, then sensitivity: the
    # textbook multiplies the latter by the zero padding too (NaN)
    g = rng.standard_normal(y.shape)
    dw = fastconv.conv2d_grad_weight(x, g, w.shape, padding=1)
    assert_close(dw, ref.conv2d_grad_weight(x, g, w.shape, padding=1))
    dw = fastconv.conv2d_grad_weight(x[:, :, :, ::-1].copy(), x[:, :, :, ::-1][:, :3].copy(),
                                     (3, 3, 3, 3), padding=1)
    assert_close(dw, ref.conv2d_grad_weight(x[:, :, :, ::-1], x[:, :, :, ::-1][:, :3],
                                            (3, 3, 3, 3), padding=1))
    assert winograd_calls == [False] * 4


def test_non_finite_weights_never_take_winograd(winograd_calls, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    w[1, 0, 2, 2] = np.inf
    with np.errstate(invalid="ignore"):
        y = fastconv.conv2d(x, w, padding=1)
        expected = ref.conv2d(x, w, padding=1)
    assert_close(y, expected)
    assert winograd_calls == []


def test_overflowing_transform_falls_back(winograd_calls, winograd_sums):
    # finite inputs whose transformed sums overflow float32
    x = np.full((1, 1, 4, 4), 3e38, dtype=np.float32)
    x[0, 0, 1::2] = -3e38
    w = np.zeros((1, 1, 3, 3), dtype=np.float32)
    w[0, 0, 1, 1] = 1
    y = fastconv.conv2d(x, w, padding=1)
    assert winograd_calls == [False]
    np.testing.assert_array_equal(y, x)


def test_default_thresholds_pick_large_planes_with_many_channels(monkeypatch):
    calls = []
    for name in ("conv2d_winograd", "conv2d_grad_weight_winograd", "conv2d_winograd_nhwc"):
        kernel = getattr(functional._kernels, name)
        monkeypatch.setattr(functional._kernels, name,
                            lambda *a, kernel=kernel: calls.append(a[0].shape) or kernel(*a))
    x = np.zeros((1, 32, 48, 48), dtype=np.float32)
    fastconv.conv2d(x, np.zeros((32, 32, 3, 3), np.float32), padding=1)      # taken
    fastconv.conv2d_grad_input(x, np.zeros((32, 32, 3, 3), np.float32), x.shape, padding=1)
    fastconv.conv2d_grad_weight(x, x, (32, 32, 3, 3), padding=1)
    fastconv.conv2d(x, np.zeros((16, 32, 3, 3), np.float32), padding=1)      # 16 channels
    fastconv.conv2d(x[:, :, :9, :9], np.zeros((32, 32, 3, 3), np.float32))  # 16 tiles
    fastconv.conv2d(x, np.zeros((32, 32, 3, 3), np.float32), padding=1, stride=2)
    fastconv.conv2d(x, np.zeros((32, 16, 3, 3), np.float32), padding=1, groups=2)
    fastconv.conv2d(x, np.zeros((32, 32, 3, 5), np.float32), padding=(1, 2))
    fastconv.conv2d(x.transpose(0, 2, 3, 1), np.zeros((3, 3, 32, 32), np.float32), padding=1,
                    layout="NHWC")
    # dilated: on its four phase images of 24x24 (576 tiles)
    fastconv.conv2d(x, np.zeros((32, 32, 3, 3), np.float32), padding=2, dilation=2)
    fastconv.conv2d(x[:, :, :47], np.zeros((32, 32, 3, 3), np.float32), padding=2, dilation=2)
    assert calls == [(1, 32, 48, 48)] * 3 + [(1, 48, 48, 32)] + [(4, 32, 24, 24)] * 2
    del calls[:]
    # a filter gradient whose sums M (16 x 32 x 32 float32: 64 KiB) exceed
    # the budget keeps the GEMM kernels
    monkeypatch.setattr(functional, "_WINOGRAD_MAX_SUMS_BYTES", 64 << 10)
    fastconv.conv2d_grad_weight(x, x, (32, 32, 3, 3), padding=1)
    monkeypatch.setattr(functional, "_WINOGRAD_MAX_SUMS_BYTES", (64 << 10) - 1)
    fastconv.conv2d_grad_weight(x, x, (32, 32, 3, 3), padding=1)
    assert calls == [(1, 32, 48, 48)]


def _takes_winograd(x_shape, c_out, itemsize=4, layout="NCHW", grad_weight=False):
    n, c_in = x_shape[:2]
    w_shape = (c_out, c_in, 3, 3)
    geo = functional._conv_geometry("conv2d", x_shape, w_shape, 1, 1, 1, 1)
    return functional._winograd(w_shape, geo, n, itemsize, layout, grad_weight)


def test_small_planes_take_winograd_with_enough_tiles():
    takes = _takes_winograd
    # large planes: 32 channels, whatever the tiles
    assert takes((1, 32, 48, 48), 32) and takes((1, 32, 48, 48), 32, grad_weight=True)
    # ResNet-18's 14x14 layers (392 tiles) and CIFAR's 8x8 ones (512)
    for itemsize in (4, 8):
        for grad_weight in (False, True):
            assert takes((8, 256, 14, 14), 256, itemsize, grad_weight=grad_weight)
            assert takes((32, 64, 8, 8), 64, itemsize, grad_weight=grad_weight)
    # at least 32 channels, 16 in NHWC and in NCHW's filter gradient
    assert takes((32, 32, 16, 16), 32) and not takes((32, 16, 16, 16), 16)
    assert takes((32, 16, 16, 16), 16, grad_weight=True)
    assert takes((1, 16, 48, 48), 16, grad_weight=True) and not takes((1, 16, 48, 48), 16)
    assert takes((32, 16, 16, 16), 16, layout="NHWC")
    assert not takes((32, 8, 16, 16), 16, layout="NHWC")
    # NCHW: at least 64 tiles (1 image of 14x14 has 49, 2 have 98), 32 for
    # the filter gradient, and a tile per 128 KiB of U (float32 512 x 512
    # filters: 16 MiB, 128 tiles; float64 256)
    assert not takes((1, 128, 14, 14), 128) and takes((2, 128, 14, 14), 128)
    assert takes((1, 128, 14, 14), 128, grad_weight=True)
    assert not takes((1, 128, 5, 5), 128, grad_weight=True)
    for grad_weight in (False, True):
        assert takes((8, 512, 7, 7), 512, 4, grad_weight=grad_weight)
        assert not takes((4, 512, 7, 7), 512, 4, grad_weight=grad_weight)
        assert not takes((8, 512, 7, 7), 512, 8, grad_weight=grad_weight)
        assert takes((16, 512, 7, 7), 512, 8, grad_weight=grad_weight)
    # NHWC: the filter gradient wants 256 tiles, and transforms U of more
    # than 8 MiB (float32 or float64 512 x 512 filters, float64 ones of
    # 256 x 512) want 256 tiles; sums M of that size are never the filter
    # gradient's
    nhwc = dict(layout="NHWC")
    assert takes((8, 256, 7, 7), 256, **nhwc)
    assert not takes((8, 256, 7, 7), 256, grad_weight=True, **nhwc)
    assert takes((16, 256, 7, 7), 256, grad_weight=True, **nhwc)
    for itemsize in (4, 8):
        assert not takes((8, 512, 7, 7), 512, itemsize, **nhwc)
        assert takes((16, 512, 7, 7), 512, itemsize, **nhwc)
        assert not takes((32, 512, 7, 7), 512, itemsize, grad_weight=True, **nhwc)
    assert not takes((8, 256, 7, 7), 512, 8, **nhwc) and takes((8, 256, 7, 7), 512, 4, **nhwc)
    # only 3x3, stride 1, undilated, ungrouped
    w_shape, n = (64, 64, 3, 3), 8
    for stride, dilation, groups, kernel in ((2, 1, 1, 3), (1, 2, 1, 3), (1, 1, 2, 3),
                                             (1, 1, 1, 5)):
        w_shape = (64, 64 // groups, kernel, kernel)
        geo = functional._conv_geometry("conv2d", (n, 64, 14, 14), w_shape, stride, 1,
                                        dilation, groups)
        assert not functional._winograd(w_shape, geo, n, 4)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_small_planes_reach_the_kernels(monkeypatch, layout):
    # 2 images of 14x14 (98 tiles): the forward and the input gradient by
    # Winograd, and in NCHW the filter gradient too (NHWC's wants 256 tiles)
    calls = []
    for name in ("conv2d_winograd", "conv2d_grad_weight_winograd", "conv2d_winograd_nhwc",
                 "conv2d_grad_weight_winograd_nhwc"):
        kernel = getattr(functional._kernels, name)
        monkeypatch.setattr(functional._kernels, name,
                            lambda *a, name=name, kernel=kernel: calls.append(name) or kernel(*a))
    x = np.ones((2, 64, 14, 14), dtype=np.float32)
    w = np.ones((64, 64, 3, 3), dtype=np.float32)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(padding=1, layout=layout)
    y = fastconv.conv2d(x, w, **kw)
    fastconv.conv2d_grad_input(y, w, x.shape, **kw)
    fastconv.conv2d_grad_weight(x, y, w.shape, **kw)
    if layout == "NHWC":
        assert calls == ["conv2d_winograd_nhwc"] * 2
    else:
        assert calls == ["conv2d_winograd"] * 2 + ["conv2d_grad_weight_winograd"]


def test_environment_switch_turns_winograd_off():
    # FASTCONV_WINOGRAD=0 at import: the GEMM kernels' results, bit for bit,
    # and show_config says so
    script = textwrap.dedent("""
        import io, numpy as np, fastconv
        from fastconv import functional
        x = np.random.default_rng(0).standard_normal((1, 32, 48, 48))
        w = np.random.default_rng(1).standard_normal((32, 32, 3, 3))
        y = fastconv.conv2d(x, w, padding=1)
        buf = io.StringIO()
        fastconv.show_config(file=buf)
        functional._WINOGRAD_MIN_CHANNELS = None
        print(np.array_equal(y, fastconv.conv2d(x, w, padding=1)),
              [l.split(":", 1)[1].strip() for l in buf.getvalue().splitlines()
               if l.strip().startswith("winograd")])
    """)
    for value, expected in (("0", "True ['off']"), ("1", "False ['3x3 stride 1")):
        env = dict(os.environ, FASTCONV_WINOGRAD=value)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True).stdout
        assert out.startswith(expected), out


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_inputs_fall_back_in_nhwc(winograd_calls, winograd_sums, bad, rng):
    x = rng.standard_normal((2, 9, 10, 3))
    x[1, 4, 5, 2] = bad
    w = np.abs(rng.standard_normal((3, 3, 3, 4)))
    kw = dict(padding=1, layout="NHWC")
    y = fastconv.conv2d(x, w, **kw)
    assert_close(y, ref.conv2d(x, w, **kw))
    g = rng.standard_normal(y.shape)
    assert_close(fastconv.conv2d_grad_weight(x, g, w.shape, **kw),
                 ref.conv2d_grad_weight(x, g, w.shape, **kw))
    gx = x[..., :3].copy()
    w3 = w[:, :, :3, :3].copy()
    assert_close(fastconv.conv2d_grad_input(gx, w3, x.shape, **kw),
                 ref.conv2d_grad_input(gx, w3, x.shape, **kw))
    assert winograd_calls == [False] * 3


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_filter_gradient_kernels_take_no_channels(layout):
    # the kernels trust their inputs, but an empty gradient must not divide
    # by zero in their reduction plan (the Python layer returns before them)
    from fastconv._simd import kernels
    for c_out, c_in in ((0, 3), (4, 0)):
        x, g = np.ones((2, c_in, 5, 5)), np.ones((2, c_out, 5, 5))
        if layout == "NHWC":
            sums = np.empty((c_in, c_out, 3, 3))
            assert kernels.conv2d_grad_weight_winograd_nhwc(
                x.transpose(0, 2, 3, 1).copy(), g.transpose(0, 2, 3, 1).copy(), sums,
                1, 1, 128, 2)
        else:
            assert kernels.conv2d_grad_weight_winograd(x, g, np.empty((c_out, c_in, 3, 3)),
                                                       1, 1, 128, 2)


# ---- dilated convolutions on their phase images (_phases.pxi) ----------


def _phase_split_oracle(full, plane, rows, cols):
    """The phase images by the axis maps' definition (NCHW)."""
    n, dh, dw = full.shape[0], len(rows), len(cols)
    out = np.zeros((dh * dw * n, full.shape[1], *plane), dtype=full.dtype)
    for p, (src_p, lead_p, count_p) in enumerate(rows):
        for q, (src_q, lead_q, count_q) in enumerate(cols):
            image = (p * dw + q) * n
            out[image:image + n, :, lead_p:lead_p + count_p, lead_q:lead_q + count_q] = \
                full[:, :, src_p::dh, src_q::dw]
    return out


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hw, pad, dilation", [
    ((6, 9), (2, 3), (2, 3)),       # multiples: every phase alike
    ((7, 9), (1, 2), (2, 2)),       # phases of 4 and 3 rows; paddings 1 and 0 (leads)
    ((8, 5), (3, 0), (4, 1)),
    ((5, 11), (3, 5), (3, 4)),
    ((1, 2), (3, 4), (3, 3)),       # phases with no input at all
])
def test_phase_split_and_merge_follow_the_axis_maps(n_threads, dtype, layout, hw, pad,
                                                    dilation, rng):
    geo = functional._conv_geometry("conv2d", (2, 3, *hw), (4, 3, 3, 3), 1, pad, dilation, 1)
    (_, in_h, x_rows, y_rows), (_, in_w, x_cols, y_cols) = (
        functional._phase_axis(n, n_out, p, d) for n, n_out, p, d in
        zip(hw, (geo.out_h, geo.out_w), pad, dilation))
    nhwc = layout == "NHWC"
    for plane, rows, cols, full_hw in (((in_h, in_w), x_rows, x_cols, hw),
                                       ((-(-geo.out_h // dilation[0]),
                                         -(-geo.out_w // dilation[1])), y_rows, y_cols,
                                        (geo.out_h, geo.out_w))):
        full = rng.standard_normal((2, 3, *full_hw)).astype(dtype)
        expected = _phase_split_oracle(full, plane, rows, cols)
        if nhwc:
            full, expected = full.transpose(0, 2, 3, 1).copy(), expected.transpose(0, 2, 3, 1)
        full.flags.writeable = False             # the split reads const memoryviews
        phases = functional._phase_split(full, plane, rows, cols, layout, n_threads)
        np.testing.assert_array_equal(phases, expected)
        # the maps cover the full array: the merge writes all of it
        merged = np.full_like(full, np.nan)
        phases.flags.writeable = False
        functional._kernels.phase_merge(phases, merged, rows, cols, nhwc, n_threads)
        np.testing.assert_array_equal(merged, full)


@st.composite
def dilated_problems(draw):
    """Dilated 3x3 problems: any plane, paddings 0 to twice the dilation (or
    'same'), so the phases' own paddings are 0-2."""
    dh, dw = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)).filter(lambda d: d != (1, 1)))
    n = draw(st.integers(1, 2))
    c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad = draw(st.one_of(st.just("same"),
                         st.tuples(st.integers(0, 2 * dh), st.integers(0, 2 * dw))))
    ph, pw = (dh, dw) if pad == "same" else pad
    h = draw(st.integers(max(1, 2 * dh + 1 - 2 * ph), 16))
    w = draw(st.integers(max(1, 2 * dw + 1 - 2 * pw), 16))
    return (n, c_in, h, w), (c_out, c_in, 3, 3), pad, (dh, dw)


@SETTINGS
@given(problem=dilated_problems(), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_dilated_phases_match_oracles(winograd_calls, n_threads, dtype, layout, problem, seed,
                                      with_bias):
    x_shape, w_shape, pad, dilation = problem
    _check_three_passes(winograd_calls, x_shape, w_shape, dict(padding=pad, dilation=dilation),
                        dtype, layout, seed, with_bias)


@pytest.mark.parametrize("w_shape, kw, passes", [
    ((4, 3, 3, 3), dict(padding=2, dilation=2, stride=2), 0),
    ((6, 1, 3, 3), dict(padding=2, dilation=2, groups=3), 0),
    ((4, 3, 5, 5), dict(padding=4, dilation=2), 0),
    # phases with 3 rows of padding: the input gradient's full correlation
    # would pad dY by -1 (the forward and the filter gradient split)
    ((4, 3, 3, 3), dict(padding=(6, 2), dilation=2), 2),
])
def test_dilated_layers_that_do_not_split_take_the_gemm(winograd_calls, w_shape, kw, passes,
                                                        rng):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal(w_shape)
    y = fastconv.conv2d(x, w, **kw)
    assert_close(y, ref.conv2d(x, w, **kw))
    g = rng.standard_normal(y.shape)
    assert_close(fastconv.conv2d_grad_input(g, w, x.shape, **kw),
                 ref.conv2d_grad_input(g, w, x.shape, **kw))
    assert_close(fastconv.conv2d_grad_weight(x, g, w.shape, **kw),
                 ref.conv2d_grad_weight(x, g, w.shape, **kw))
    assert winograd_calls == [True] * passes


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_dilated_non_finite_inputs_fall_back(winograd_calls, bad, layout, rng):
    x = rng.standard_normal((2, 3, 8, 10))
    x[1, 2, 5, 4] = bad
    w = np.abs(rng.standard_normal((3, 3, 3, 3)))
    g = rng.standard_normal((2, 3, 8, 10))
    kw = dict(padding=2, dilation=2)
    expected = (ref.conv2d(x, w, **kw), ref.conv2d_grad_input(x, w, x.shape, **kw),
                ref.conv2d_grad_weight(x, g, w.shape, **kw))
    if layout == "NHWC":
        def to_nhwc(a):
            return a.transpose(0, 2, 3, 1).copy()
        x, g, w = to_nhwc(x), to_nhwc(g), w.transpose(2, 3, 1, 0).copy()
        expected = (to_nhwc(expected[0]), to_nhwc(expected[1]), expected[2].transpose(2, 3, 1, 0))
    kw["layout"] = layout
    assert_close(fastconv.conv2d(x, w, **kw), expected[0])
    assert_close(fastconv.conv2d_grad_input(x, w, x.shape, **kw), expected[1])
    assert_close(fastconv.conv2d_grad_weight(x, g, w.shape, **kw), expected[2])
    assert winograd_calls == [False] * 3


def test_default_thresholds_split_dilated_layers():
    def phase(x_shape, c_out, pad, dilation, itemsize=4, layout="NCHW", grad_weight=False):
        w_shape = (c_out, x_shape[1], 3, 3)
        geo = functional._conv_geometry("conv2d", x_shape, w_shape, 1, pad, dilation, 1)
        return functional._winograd_phases(x_shape, w_shape, geo, itemsize, layout,
                                           grad_weight)
    # the zoo's dilated layer: four images of 28x28 per image, padding 1
    got = phase((8, 64, 56, 56), 64, 2, 2).geo
    assert got.dilation == (1, 1) and (got.out_h, got.out_w) == (28, 28)
    assert (got.pad_top, got.pad_bottom, got.pad_left, got.pad_right) == (1, 1, 1, 1)
    assert phase((8, 64, 56, 56), 64, 2, 2, 8, grad_weight=True) is not None
    assert phase((8, 64, 56, 56), 64, (4, 2), (2, 1)) is not None
    # as many tiles and channels as undilated layers need
    assert phase((8, 8, 56, 56), 64, 2, 2) is None
    assert phase((1, 64, 8, 8), 64, 2, 2) is None
    # DeepLab's odd planes: phases of 17 and 16 rows and columns, one
    # leading zero for the phases whose padding is the smaller
    got = phase((8, 64, 33, 33), 64, 2, 2)
    assert got.in_hw == (17, 17) and (got.geo.out_h, got.geo.out_w) == (17, 17)
    np.testing.assert_array_equal(got.x_rows, [(0, 0, 17), (1, 0, 16)])
    np.testing.assert_array_equal(got.y_rows, [(0, 0, 17), (1, 0, 16)])
    got = phase((8, 64, 32, 32), 64, 3, 2)          # paddings 2 and 1 (common 1)
    assert got.geo.pad_top == 1 and got.in_hw == (17, 17)
    np.testing.assert_array_equal(got.x_rows, [(1, 1, 16), (0, 0, 16)])
    # undilated, or strided: not here
    assert phase((8, 64, 56, 56), 64, 1, 1) is None
    # small phase planes: at least 3/4 of the tiles' outputs wanted (not 3x3
    # or 5x5) and 36 positions (16 in NHWC)
    for hw, d in ((33, 12), (50, 10), (14, 12), (64, 64), (65, 36)):
        for layout in ("NCHW", "NHWC"):
            assert phase((2, 256, hw, hw), 256, d, d, layout=layout) is None
    assert phase((8, 64, 28, 28), 64, 8, 8) is None                       # 4x4
    assert phase((8, 64, 28, 28), 64, 8, 8, layout="NHWC") is not None
    assert phase((2, 256, 33, 33), 256, 6, 6) is not None                 # 6x6
    assert phase((4, 64, 49, 49), 64, 7, 7) is not None                   # 7x7
    geo = functional._conv_geometry("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), 2, 2, 2, 1)
    assert functional._winograd_phases((8, 64, 56, 56), (64, 64, 3, 3), geo, 4) is None
