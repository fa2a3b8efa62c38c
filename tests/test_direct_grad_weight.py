"""Tests of the direct filter gradient (``_kernels.conv2d_grad_weight_direct``
over ``_gradw_avx512.h``): stride-1 NCHW filter gradients summed as dot
products of padded planes, on AVX-512 CPUs.

The selection rule (``functional._direct_grad_weight``) is opened up here
so that every stride-1 shape the oracle can check takes the kernel; a spy
on the kernel makes sure it ran (True: finished, False: declined).
Checked: the oracle on hypothesis-drawn shapes (paddings, dilations,
groups, block edges) with one image per chunk and with the default chunks,
bitwise thread-count determinism, non-finite inputs (declined, then the
GEMM kernel's sums) and sensitivities (kept: the textbook's NaNs), the
workspace failure, planes too large to pad, and which shapes the default
rule sends to it.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional
from fastconv import reference as ref
from fastconv._simd import kernels
from helpers import DTYPES, assert_close

pytestmark = pytest.mark.skipif(not kernels.direct_grad_weight_available(),
                                reason="the direct filter gradient needs AVX-512")

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture
def direct_calls(monkeypatch):
    """The direct kernel for every stride-1 geometry; yields the list of its
    calls' results."""
    monkeypatch.setattr(functional, "_DIRECT_GW_MAX_FILTERS", 1 << 30)
    monkeypatch.setattr(functional, "_DIRECT_GW_MIN_ROWS", 1)
    monkeypatch.setattr(functional, "_DIRECT_GW_MIN_PLANE", 1)
    calls = []

    def spy(*args, kernel=kernels.conv2d_grad_weight_direct):
        calls.append(kernel(*args))
        return calls[-1]

    monkeypatch.setattr(functional._kernels, "conv2d_grad_weight_direct", spy)
    yield calls


@pytest.fixture(params=["one-image-chunks", "default-chunks"])
def chunks(request):
    """Pad one image at a time (each chunk's sums added to dW in turn), then
    as many as the default byte budget holds."""
    saved = kernels._tuning()["direct_gw_chunk_bytes"]
    kernels._tuning(direct_gw_chunk_bytes=1 if request.param == "one-image-chunks" else saved)
    yield request.param
    kernels._tuning(direct_gw_chunk_bytes=saved)


@st.composite
def stride1_problems(draw):
    """Stride-1 geometries: 1-3 images, groups 1-3, 1-6 filters and 1-3
    channels per group (block edges of 4; one channel only without groups,
    depthwise layers having kernels of their own), kernels up to 4x5,
    dilations up to 3, int or pair paddings, planes up to 14 x 14 that the
    kernel fits."""
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1 if groups == 1 else 2, 3))
    og = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, kh)), draw(st.integers(0, kw)))
    h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - 2 * pad[0]), 14))
    w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - 2 * pad[1]), 14))
    n = draw(st.integers(1, 3))
    return ((n, cg * groups, h, w), (og * groups, cg, kh, kw),
            dict(padding=pad if draw(st.booleans()) else pad[0] if pad[0] == pad[1] else pad,
                 dilation=dil, groups=groups))


def _problem(x_shape, w_shape, hyper, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    y_shape = ref.conv2d(np.zeros(x_shape), np.zeros(w_shape), **hyper).shape
    g = rng.standard_normal(y_shape).astype(dtype)
    return x, g


def _both_dtypes_match_oracle(calls, x, g, w_shape, hyper):
    """The filter gradient of float64 x and g, computed in float32 and in
    float64, against the oracle; returns the direct kernel's answers."""
    expected = ref.conv2d_grad_weight(x, g, w_shape, **hyper)
    del calls[:]
    for dtype in DTYPES:
        dw = fastconv.conv2d_grad_weight(x.astype(dtype), g.astype(dtype), w_shape, **hyper)
        assert_close(dw, expected, dtype)
    return calls


@SETTINGS
@given(problem=stride1_problems(), seed=st.integers(0, 2**32 - 1))
def test_matches_oracle(direct_calls, chunks, n_threads, problem, seed):
    x_shape, w_shape, hyper = problem
    x, g = _problem(x_shape, w_shape, hyper, np.float64, seed)
    assert _both_dtypes_match_oracle(direct_calls, x, g, w_shape, hyper) == [True, True]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, w_shape, hyper", [
    ((7, 6, 13, 11), (10, 6, 3, 3), dict(padding=1)),                  # ragged blocks
    ((4, 8, 9, 9), (12, 4, 3, 2), dict(padding=(1, 2), groups=2)),
    ((5, 3, 12, 10), (5, 3, 2, 3), dict(dilation=(2, 3), padding=2)),
])
def test_bitwise_identical_for_1_2_and_3_threads(direct_calls, chunks, dtype, x_shape,
                                                 w_shape, hyper):
    x, g = _problem(x_shape, w_shape, hyper, dtype, seed=3)
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        try:
            results.append(fastconv.conv2d_grad_weight(x, g, w_shape, **hyper))
        finally:
            fastconv.set_num_threads(None)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    assert direct_calls == [True] * 3


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 2, 4, 5), (1, 3, 6, 6)],
                         ids=["first", "inner", "last"])
def test_non_finite_inputs_fall_back_to_the_textbook_sums(direct_calls, chunks, bad, where):
    """An inf or NaN input would meet the zero columns of the padded dY
    (0 * inf = NaN where the textbook has no term): the kernel declines and
    the GEMM kernel sums as the textbook does."""
    x, g = _problem((2, 4, 7, 7), (5, 4, 3, 3), dict(padding=1), np.float64)
    x[where] = bad
    assert _both_dtypes_match_oracle(direct_calls, x, g, (5, 4, 3, 3),
                                     dict(padding=1)) == [False, False]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("x_shape, w_shape, hyper, where", [
    ((2, 3, 7, 7), (5, 3, 3, 3), dict(padding=1), (0, 0, 0, 0)),
    ((2, 3, 7, 7), (5, 3, 3, 3), dict(padding=1), (1, 4, 3, 2)),
    ((2, 3, 7, 7), (5, 3, 3, 3), dict(padding=1), (1, 4, 6, 6)),
    # the last tap reads furthest past its plane's rows: from the last input
    # plane of a chunk that would be dY's first values, here an inf
    ((2, 1, 5, 20), (8, 1, 7, 7), dict(padding=3), (0, 0, 0, 0)),
    ((1, 1, 8, 7), (2, 1, 2, 3), dict(padding=0), (0, 0, 0, 0)),
    ((3, 2, 9, 9), (4, 2, 3, 3), dict(padding=3, dilation=3), (0, 0, 0, 0)),
], ids=["corner", "inner", "far-corner", "7x7", "2x3", "dilated"])
def test_non_finite_sensitivities_give_the_textbook_nans(direct_calls, chunks, bad, x_shape,
                                                         w_shape, hyper, where):
    """A non-finite dY meets the zero padding as in the textbook (its sums
    include ``dY * 0``), never the zero columns the kernel adds to dY, nor
    does any tap read another plane."""
    x, g = _problem(x_shape, w_shape, hyper, np.float64)
    g[where] = bad
    assert _both_dtypes_match_oracle(direct_calls, x, g, w_shape, hyper) == [True, True]


def test_empty_shapes_write_zeros():
    """Called directly on an empty batch, the kernel writes zeros (the API
    returns before calling it)."""
    x = np.ones((0, 2, 5, 5))
    g = np.ones((0, 3, 5, 5))
    dw = np.full((3, 2, 3, 3), np.nan)
    assert kernels.conv2d_grad_weight_direct(x, g, dw, 1, 1, 1, 1, 1, 1)
    assert not dw.any()


def test_workspace_failure_is_a_memory_error(direct_calls):
    x, g = _problem((2, 3, 8, 8), (4, 3, 3, 3), dict(padding=1), np.float64)
    kernels._tuning(fail_allocations=True)
    try:
        with pytest.raises(MemoryError):
            fastconv.conv2d_grad_weight(x, g, (4, 3, 3, 3), padding=1)
    finally:
        kernels._tuning(fail_allocations=False)


def test_planes_too_large_to_pad_are_declined(direct_calls):
    """A padding far beyond the input (as large a plane to pad as the
    depthwise kernels refuse) goes to the GEMM kernel."""
    x, g = _problem((1, 2, 3, 3), (3, 2, 3, 3), dict(padding=40), np.float64)
    expected = ref.conv2d_grad_weight(x, g, (3, 2, 3, 3), padding=40)
    del direct_calls[:]
    assert_close(fastconv.conv2d_grad_weight(x, g, (3, 2, 3, 3), padding=40), expected)
    assert direct_calls == [False]


def test_read_only_inputs(direct_calls):
    x, g = _problem((2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1), np.float32)
    x.flags.writeable = False
    g.flags.writeable = False
    expected = ref.conv2d_grad_weight(x.astype(np.float64), g.astype(np.float64),
                                      (4, 3, 3, 3), padding=1)
    assert_close(fastconv.conv2d_grad_weight(x, g, (4, 3, 3, 3), padding=1), expected,
                 np.float32)
    assert direct_calls == [True]


@pytest.mark.parametrize("dtype, x_shape, w_shape, hyper, direct", [
    (np.float32, (32, 16, 32, 32), (16, 16, 3, 3), dict(padding=1), True),   # CIFAR, 16 ch
    (np.float64, (32, 16, 32, 32), (16, 16, 3, 3), dict(padding=1), True),
    (np.float32, (8, 128, 28, 28), (128, 4, 3, 3), dict(padding=1, groups=32), True),
    (np.float32, (8, 64, 56, 56), (64, 32, 3, 3), dict(padding=1, groups=2), True),
    (np.float64, (8, 64, 56, 56), (64, 32, 3, 3), dict(padding=1, groups=2), False),
    (np.float32, (32, 64, 8, 8), (64, 64, 3, 3), dict(padding=1), False),    # 64 filters
    (np.float32, (32, 3, 32, 32), (16, 3, 3, 3), dict(padding=1), False),    # 27 rows
    (np.float32, (32, 16, 32, 32), (16, 16, 3, 3), dict(padding=1, stride=2), False),
    (np.float32, (32, 16, 6, 6), (16, 16, 3, 3), dict(padding=1), False),    # 36 positions
])
def test_default_rule(dtype, x_shape, w_shape, hyper, direct):
    """Few filters per group, enough (channel, tap) rows, stride 1 and
    planes of at least 64 positions: the shapes measured faster."""
    geo = functional._conv_geometry("t", x_shape, w_shape, hyper.get("stride", 1),
                                    hyper["padding"], 1, hyper.get("groups", 1))
    assert functional._direct_grad_weight(w_shape, geo, np.dtype(dtype)) is direct
