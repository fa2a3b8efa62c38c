"""Tests of fastconv's pooling functions (max_pool2d, max_pool2d_grad, avg_pool2d,
avg_pool2d_grad).

The NumPy oracles in ``fastconv.reference`` are the specification; PyTorch (when it is
importable) is a second, independent check.  Sections:

1. oracle agreement on hypothesis-drawn geometries (both dtypes, 1 and 2 threads),
   with the stride-2 row loops and the general loops each checked;
2. named edge cases (empty batch, kernel = input, ceil_mode rules, inf/NaN, a large plane);
3. max_pool2d_grad index handling (dtypes, out-of-range and malformed indices);
4. central finite differences of both gradients;
5. awkward-but-valid inputs (layouts, byte order, dtypes, lists);
6. PyTorch agreement (values, indices, autograd gradients);
7. determinism across thread counts;
8. regressions (ceil_mode with a kernel larger than the padded input).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import fastconv
from fastconv import _threads
from fastconv import reference as ref
from helpers import DTYPES, assert_close, garbage_output_array, numgrad, randn

HYP = settings(max_examples=60, deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
HYP_TORCH = settings(max_examples=40, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def distinct(rng, shape, dtype=np.float64, step=0.25):
    """Pairwise-distinct values (a shuffled arithmetic progression), exact in float32,
    with gaps of ``step`` so that small perturbations never change an argmax."""
    size = int(np.prod(shape))
    vals = (rng.permutation(size) - size // 2) * step
    return vals.reshape(shape).astype(dtype)


def many_ties(rng, shape, dtype=np.float64):
    """Values in {0, 1, 2}: nearly every window holds tied maxima."""
    return rng.integers(0, 3, size=shape).astype(dtype)


@st.composite
def pool_geometries(draw, min_n=0, max_n=3):
    """A valid pooling problem: input shape plus keyword arguments.

    Kernel 1..5 (rectangular too), stride None/1..5 (int or pair), padding 0..k//2 per
    dim, ceil_mode.  H, W in 1..12 but at least the kernel minus the padding, so the
    kernel fits the padded input (see ``test_ceil_mode_kernel_larger_than_padded_input``
    for the other case).
    """
    kh = draw(st.integers(1, 5))
    kw = draw(st.one_of(st.just(kh), st.integers(1, 5)))
    ph = draw(st.integers(0, kh // 2))
    pw = draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 12))
    n = draw(st.integers(min_n, max_n))
    c = draw(st.integers(1, 4))
    if kh == kw and draw(st.booleans()):
        kernel_size = kh
    else:
        kernel_size = (kh, kw)
    stride = draw(st.one_of(st.none(), st.integers(1, 5),
                            st.tuples(st.integers(1, 5), st.integers(1, 5))))
    padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    ceil_mode = draw(st.booleans())
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                  ceil_mode=ceil_mode)
    return (n, c, h, w), kwargs


seeds = st.integers(0, 2**32 - 1)


def _torch_pool_kwargs(kw):
    out = dict(kw)
    out["stride"] = kw["stride"] if kw["stride"] is not None else kw["kernel_size"]
    return out


# ---------------------------------------------------------------------------
# 1. agreement with the oracles on drawn geometries
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=pool_geometries(), seed=seeds)
def test_max_pool2d_matches_oracle_distinct_values(n_threads, dtype, geo, seed):
    """Values and int64 indices equal the oracle's exactly on distinct inputs."""
    shape, kw = geo
    x = distinct(np.random.default_rng(seed), shape, dtype)
    y, idx = fastconv.max_pool2d(x, **kw)
    y_ref, idx_ref = ref.max_pool2d(x, **kw)
    assert y.dtype == np.dtype(dtype) and idx.dtype == np.int64
    assert y.shape == y_ref.shape and idx.shape == idx_ref.shape
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=pool_geometries(), seed=seeds)
def test_max_pool2d_ties_pick_first_maximum(n_threads, dtype, geo, seed):
    """With many tied maxima the index is the first maximum in row-major window order."""
    shape, kw = geo
    x = many_ties(np.random.default_rng(seed), shape, dtype)
    y, idx = fastconv.max_pool2d(x, **kw)
    y_ref, idx_ref = ref.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=pool_geometries(), seed=seeds, ties=st.booleans())
def test_max_pool2d_grad_matches_oracle(n_threads, dtype, geo, seed, ties):
    """The gradient routed through the forward indices equals the oracle's."""
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = many_ties(rng, shape, dtype) if ties else distinct(rng, shape, dtype)
    _, idx = fastconv.max_pool2d(x, **kw)
    g = randn(rng, idx.shape, dtype)
    dx = fastconv.max_pool2d_grad(g, idx, shape)
    dx_ref = ref.max_pool2d_grad(g, idx, shape)
    assert dx.shape == shape and dx.dtype == np.dtype(dtype)
    assert_close(dx, dx_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=pool_geometries(), seed=seeds, include=st.booleans())
def test_avg_pool2d_matches_oracle(n_threads, dtype, geo, seed, include):
    """Window means (both count_include_pad modes) equal the oracle's."""
    shape, kw = geo
    x = randn(np.random.default_rng(seed), shape, dtype)
    y = fastconv.avg_pool2d(x, count_include_pad=include, **kw)
    y_ref = ref.avg_pool2d(x, count_include_pad=include, **kw)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, y_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=pool_geometries(), seed=seeds, include=st.booleans())
def test_avg_pool2d_grad_matches_oracle(n_threads, dtype, geo, seed, include):
    """The spread gradient (both count_include_pad modes) equals the oracle's."""
    shape, kw = geo
    rng = np.random.default_rng(seed)
    out_shape = ref.avg_pool2d(np.zeros(shape), **kw).shape
    g = randn(rng, out_shape, dtype)
    dx = fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **kw)
    dx_ref = ref.avg_pool2d_grad(g, shape, count_include_pad=include, **kw)
    assert dx.shape == shape and dx.dtype == np.dtype(dtype)
    assert_close(dx, dx_ref, dtype)


@pytest.fixture(params=["stride2_loops", "general_loops"])
def pool_loops(request):
    """Run with the dedicated stride-2, 2/3-tap row loops on, then off (the
    general per-tap loops), so both evaluations meet the oracle."""
    from fastconv._simd import kernels as _kernels
    _kernels._tuning(pool_fast_paths=request.param == "stride2_loops")
    yield request.param
    _kernels._tuning(pool_fast_paths=True)


@st.composite
def stride2_geometries(draw):
    """Pooling problems that the stride-2 row loops serve: kernel width 2 or 3,
    stride width 2, any height geometry, padding and ceil_mode; widths up to 40
    so that rows have inner columns, edge columns and vector remainders."""
    kw = draw(st.sampled_from([2, 3]))
    kh = draw(st.integers(1, 4))
    pw = draw(st.integers(0, kw // 2))
    ph = draw(st.integers(0, kh // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 40))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    kwargs = dict(kernel_size=(kh, kw), stride=(draw(st.integers(1, 3)), 2),
                  padding=(ph, pw), ceil_mode=draw(st.booleans()))
    return shape, kwargs


def special_values(rng, shape, dtype):
    """Small integers (ties everywhere) sprinkled with NaN, -inf and +inf."""
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.04] = np.nan
    x[rng.random(shape) < 0.04] = -np.inf
    x[rng.random(shape) < 0.02] = np.inf
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=stride2_geometries(), seed=seeds, special=st.booleans())
def test_stride2_max_pool_matches_oracle(pool_loops, n_threads, dtype, geo, seed, special):
    """Values and indices equal the oracle's bit for bit (ties, NaN, inf)."""
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = special_values(rng, shape, dtype) if special else distinct(rng, shape, dtype)
    y, idx = fastconv.max_pool2d(x, **kw)
    y_ref, idx_ref = ref.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    g = randn(rng, idx.shape, dtype)
    assert_close(fastconv.max_pool2d_grad(g, idx, shape), ref.max_pool2d_grad(g, idx, shape),
                 dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(geo=stride2_geometries(), seed=seeds, include=st.booleans())
def test_stride2_avg_pool_matches_oracle(pool_loops, n_threads, dtype, geo, seed, include):
    """Means and spread gradients (both count_include_pad modes) equal the oracle's."""
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = randn(rng, shape, dtype)
    y = fastconv.avg_pool2d(x, count_include_pad=include, **kw)
    assert_close(y, ref.avg_pool2d(x, count_include_pad=include, **kw), dtype)
    g = randn(rng, y.shape, dtype)
    assert_close(fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **kw),
                 ref.avg_pool2d_grad(g, shape, count_include_pad=include, **kw), dtype)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geo=st.one_of(pool_geometries(min_n=1), stride2_geometries()), seed=seeds,
       include=st.booleans())
def test_pools_write_every_element_of_uninitialized_outputs(pool_loops, n_threads, dtype,
                                                            layout, geo, seed, include,
                                                            monkeypatch):
    """All four pooling functions allocate their results uninitialized and
    trust the kernel to write every element; with those arrays filled with
    garbage, every result still equals the oracle's."""
    from fastconv import functional
    monkeypatch.setattr(functional, "output_array", garbage_output_array)
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape, dtype)
    y_ref, idx_ref = ref.max_pool2d(x, **kw)
    g = randn(rng, y_ref.shape, dtype)
    a_ref = ref.avg_pool2d(x, count_include_pad=include, **kw)
    expected = (y_ref, idx_ref, ref.max_pool2d_grad(g, idx_ref, shape), a_ref,
                ref.avg_pool2d_grad(g, shape, count_include_pad=include, **kw))
    nhwc = layout == "NHWC"
    to = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))) if nhwc else (lambda a: a)
    back = (lambda a: a.transpose(0, 3, 1, 2)) if nhwc else (lambda a: a)
    y, idx = fastconv.max_pool2d(to(x), layout=layout, **kw)
    got = (y, idx,
           fastconv.max_pool2d_grad(to(g), idx, to(x).shape, layout=layout),
           fastconv.avg_pool2d(to(x), count_include_pad=include, layout=layout, **kw),
           fastconv.avg_pool2d_grad(to(g), to(x).shape, count_include_pad=include,
                                    layout=layout, **kw))
    np.testing.assert_array_equal(back(got[1]), idx_ref)
    for a, e in zip(got[:1] + got[2:], expected[:1] + expected[2:]):
        assert_close(back(a), e, dtype)


def test_pool_results_start_on_a_cache_line(rng):
    """Pool results are allocated 64-byte aligned (NumPy's own buffers are
    16-byte aligned; misaligned vector stores cost up to 64 % there)."""
    x = randn(rng, (2, 3, 20, 20), np.float64)
    y, idx = fastconv.max_pool2d(x, 2)
    dx = fastconv.max_pool2d_grad(y, idx, x.shape)
    a = fastconv.avg_pool2d(x, 3, 2)
    da = fastconv.avg_pool2d_grad(a, x.shape, 3, 2)
    for arr in (y, idx, dx, a, da):
        assert arr.ctypes.data % 64 == 0 and arr.flags.c_contiguous and arr.flags.writeable


def test_stride2_loops_agree_bitwise_with_general_loops(rng):
    """Both evaluations sum and compare in window order: identical bits."""
    from fastconv._simd import kernels as _kernels
    x = randn(rng, (2, 3, 17, 23), np.float32)
    results = []
    for fast in (True, False):
        _kernels._tuning(pool_fast_paths=fast)
        try:
            out = []
            for k, p in ((2, 0), (3, 1), (3, 0), (2, 1)):
                y, idx = fastconv.max_pool2d(x, k, 2, p, ceil_mode=True)
                a = fastconv.avg_pool2d(x, k, 2, p, ceil_mode=True)
                out += [y, idx, a, fastconv.avg_pool2d_grad(a, x.shape, k, 2, p, True)]
            results.append(out)
        finally:
            _kernels._tuning(pool_fast_paths=True)
    for fast, general in zip(*results):
        np.testing.assert_array_equal(fast, general)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, pad", [(2, 0), (3, 0), (3, 1), (2, 1)])
def test_square_stride2_rows_agree_bitwise_with_general_loops(dtype, k, pad, n_threads):
    """k x k, stride-2 windows (the AVX2 row kernels of _pool_avx2.h where
    compiled): rows from fewer than one vector to several with every
    remainder, ties, NaN and infinities -- values, indices and gradients
    equal the general loops' bits and the oracle."""
    from fastconv._simd import kernels as _kernels
    rng = np.random.default_rng(k * 10 + pad)
    for width in list(range(k, 42)) + [56, 57, 112]:
        shape = (1, 2, 2 * k + 3, width)
        x = special_values(rng, shape, dtype)
        results = []
        for fast in (True, False):
            _kernels._tuning(pool_fast_paths=fast)
            try:
                y, idx = fastconv.max_pool2d(x, k, 2, pad)
                a = fastconv.avg_pool2d(x, k, 2, pad)
                g = np.arange(a.size, dtype=dtype).reshape(a.shape) - 3
                results.append([y, idx, a, fastconv.avg_pool2d_grad(g, shape, k, 2, pad),
                                fastconv.max_pool2d_grad(g, idx, shape)])
            finally:
                _kernels._tuning(pool_fast_paths=True)
        for fast, general in zip(*results):
            np.testing.assert_array_equal(fast, general, err_msg=f"width {width}")
        y_ref, idx_ref = ref.max_pool2d(x, k, 2, pad)
        np.testing.assert_array_equal(results[0][0], y_ref)
        np.testing.assert_array_equal(results[0][1], idx_ref)


def test_prefetch_distance_changes_no_result(n_threads):
    """The pools' prefetch (PREFETCH_OUT_ROWS output rows ahead, 0 = off, or
    far past the array) only asks for cache lines: every result is the same;
    a negative distance is refused."""
    from fastconv._simd import kernels as _kernels
    rng = np.random.default_rng(5)
    x = special_values(rng, (2, 3, 13, 37), np.float64)
    saved = _kernels._tuning()["prefetch_out_rows"]
    results = []
    try:
        for ahead in (0, 1, 8, 10 ** 6):
            _kernels._tuning(prefetch_out_rows=ahead)
            out = []
            for k, s in ((2, 2), (3, 2), (3, (1, 2))):
                y, idx = fastconv.max_pool2d(x, k, s)
                a = fastconv.avg_pool2d(x, k, s)
                out += [y, idx, a, fastconv.max_pool2d_grad(a, idx, x.shape),
                        fastconv.avg_pool2d_grad(a, x.shape, k, s)]
            results.append(out)
        with pytest.raises(ValueError, match="prefetch_out_rows"):
            _kernels._tuning(prefetch_out_rows=-1)
    finally:
        _kernels._tuning(prefetch_out_rows=saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def _kernel_builds():
    """The kernel modules this machine runs: the baseline build, and the AVX2
    build where it is compiled and the CPU has AVX2/FMA."""
    from fastconv import _kernels, _simd
    builds = [_kernels]
    if "avx2" in _simd.available():
        from fastconv import _kernels_avx2
        builds.append(_kernels_avx2)
    return builds


# (kernel, stride, padding, ceil_mode): the written-once 2x2 and 3x3 planes,
# the max gradient's scatter (overlapping and padded windows) and the
# average gradient's general loops
_STREAM_POOLS = [(2, 2, 0, False), (3, 2, 0, False), (3, 2, 1, False), (2, 1, 1, False),
                 (3, (1, 2), 1, True), ((2, 3), 2, 0, True)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_gradients_agree_bitwise_with_in_place(dtype, n_threads, monkeypatch):
    """Large pool gradients are built plane by plane in a thread's scratch
    plane and copied out with streaming stores (STREAM_MIN_BYTES; here
    forced on for small arrays): the same bits as the planes written in
    place, on both builds, with the stride-2 loops on and off.  Plane sizes
    in bytes that are not multiples of 16 put every plane's start at another
    alignment (the copy's plain head and tail); a plane past
    STREAM_MAX_PLANE is written in place."""
    from fastconv import functional
    rng = np.random.default_rng(17)
    shapes = [(2, 3, 5, 5), (1, 3, 7, 9), (2, 2, 9, 40), (1, 3, 12, 56), (2, 2, 11, 57),
              (1, 1, 200, 201)]
    for module in _kernel_builds():
        monkeypatch.setattr(functional, "_kernels", module)
        saved = module._tuning()["stream_min_bytes"]
        try:
            for fast in (True, False):
                module._tuning(pool_fast_paths=fast)
                for shape in shapes:
                    x = special_values(rng, shape, dtype)
                    for k, s, p, ceil in _STREAM_POOLS:
                        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
                        y, idx = fastconv.max_pool2d(x, **kw)
                        g = randn(rng, y.shape, dtype)
                        results = []
                        for threshold in (-1, 0):
                            module._tuning(stream_min_bytes=threshold)
                            results.append([fastconv.max_pool2d_grad(g, idx, shape)] + [
                                fastconv.avg_pool2d_grad(g, shape, count_include_pad=inc, **kw)
                                for inc in (True, False)])
                        where = f"{module.__name__}, fast {fast}, {shape}, {kw}"
                        for in_place, streamed in zip(*results):
                            np.testing.assert_array_equal(streamed, in_place, err_msg=where)
                        if shape[2] < 100:
                            assert_close(results[1][0], ref.max_pool2d_grad(g, idx, shape),
                                         dtype)
                            assert_close(results[1][1], ref.avg_pool2d_grad(g, shape, **kw),
                                         dtype)
                # a bad index still raises, the other planes streamed
                y, idx = fastconv.max_pool2d(x, 2, 2)
                idx[0, 0, 1, 1] = shape[2] * shape[3]
                with pytest.raises(ValueError, match="indices"):
                    fastconv.max_pool2d_grad(y, idx, x.shape)
        finally:
            module._tuning(stream_min_bytes=saved, pool_fast_paths=True)


def test_stream_threshold_is_a_quarter_of_the_l3():
    """Pool gradients stream out from a quarter of the L3 the OS reports
    (8 MiB when it reports none), in both builds; show_config says so."""
    from fastconv import _config, _cpu
    l3 = _cpu.l3_cache_bytes()
    assert isinstance(l3, int) and l3 >= 0
    expected = l3 // 4 if l3 else 8 << 20
    for module in _kernel_builds():
        assert module._default_stream_min_bytes() == expected
        assert module._tuning()["stream_min_bytes"] == expected
    line = _config.config()["pool_grad_streaming"]
    assert line == f"NCHW gradients of {expected / 2**20:g} MiB or more"


def test_stream_threshold_without_a_reported_l3(monkeypatch):
    """No L3 reported (other C libraries, some VMs): 8 MiB; show_config
    words the two special thresholds."""
    from fastconv import _config
    for module in _kernel_builds():
        monkeypatch.setattr(module, "l3_cache_bytes", lambda: 0)
        assert module._default_stream_min_bytes() == 8 << 20
        monkeypatch.setattr(module, "l3_cache_bytes", lambda: 32 << 20)
        assert module._default_stream_min_bytes() == 8 << 20
        monkeypatch.setattr(module, "l3_cache_bytes", lambda: 480 << 20)
        assert module._default_stream_min_bytes() == 120 << 20
    from fastconv._simd import kernels
    saved = kernels._tuning()["stream_min_bytes"]
    try:
        for threshold, words in ((-1, "never"), (0, "every NCHW gradient"),
                                 (8 << 20, "NCHW gradients of 8 MiB or more")):
            kernels._tuning(stream_min_bytes=threshold)
            assert _config.config()["pool_grad_streaming"] == words
    finally:
        kernels._tuning(stream_min_bytes=saved)


def test_streamed_max_gradient_without_scratch_writes_in_place(n_threads):
    """When a thread's scratch plane cannot be allocated, the max-pool
    gradient writes its planes in place instead (the same values, no error);
    the average-pool gradient, which needs workspace anyway, raises
    MemoryError as it always did."""
    from fastconv._simd import kernels
    rng = np.random.default_rng(2)
    x = randn(rng, (2, 3, 14, 15), np.float64)
    y, idx = fastconv.max_pool2d(x, 3, 2, 1)
    expected = fastconv.max_pool2d_grad(y, idx, x.shape)
    saved = kernels._tuning()["stream_min_bytes"]
    kernels._tuning(stream_min_bytes=0, fail_allocations=True)
    try:
        np.testing.assert_array_equal(fastconv.max_pool2d_grad(y, idx, x.shape), expected)
        with pytest.raises(MemoryError):
            fastconv.avg_pool2d_grad(y, x.shape, 3, 2, 1)
    finally:
        kernels._tuning(stream_min_bytes=saved, fail_allocations=False)


# ---------------------------------------------------------------------------
# 2. named edge cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ceil_mode", [False, True])
def test_batch_zero_gives_empty_outputs_of_right_shape(n_threads, ceil_mode):
    """N = 0: every function returns empty arrays of the right shape and dtype."""
    x = np.zeros((0, 3, 7, 6), dtype=np.float32)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)
    out_shape = ref.avg_pool2d(x, **kw).shape
    assert out_shape[0] == 0 and out_shape[1] == 3
    y, idx = fastconv.max_pool2d(x, **kw)
    assert y.shape == out_shape and idx.shape == out_shape
    assert y.dtype == np.float32 and idx.dtype == np.int64
    a = fastconv.avg_pool2d(x, **kw)
    assert a.shape == out_shape and a.dtype == np.float32
    g = np.zeros(out_shape, dtype=np.float32)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    assert dx.shape == x.shape and dx.dtype == np.float32
    dx = fastconv.avg_pool2d_grad(g, x.shape, **kw)
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_kernel_equal_to_input_is_global_pooling(n_threads, rng):
    """A kernel covering the whole plane gives one output: the global max / mean."""
    x = randn(rng, (2, 3, 5, 7))
    y, idx = fastconv.max_pool2d(x, (5, 7))
    assert y.shape == idx.shape == (2, 3, 1, 1)
    planes = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(y[..., 0, 0], planes.max(-1))
    np.testing.assert_array_equal(idx[..., 0, 0], planes.argmax(-1))
    a = fastconv.avg_pool2d(x, (5, 7))
    assert_close(a[..., 0, 0], planes.mean(-1), np.float64)
    g = randn(rng, (2, 3, 1, 1))
    dx = fastconv.avg_pool2d_grad(g, x.shape, (5, 7))
    assert_close(dx, np.broadcast_to(g / 35.0, x.shape), np.float64)


def test_ceil_mode_drops_window_starting_in_right_padding(n_threads):
    """H=5, k=3, s=3, p=1, ceil_mode: ceil((5+2-3)/3)+1 = 3, but the third window
    would start at 6-1 = 5 >= H, i.e. inside the right padding, so PyTorch drops it."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y, idx = fastconv.max_pool2d(x, 3, stride=3, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 2, 2)
    # windows rows [-1, 2) -> {0, 1} and [2, 5) -> {2, 3, 4}
    np.testing.assert_array_equal(y[0, 0], [[6.0, 9.0], [21.0, 24.0]])
    np.testing.assert_array_equal(idx[0, 0], [[6, 9], [21, 24]])
    for include in (True, False):
        a = fastconv.avg_pool2d(x, 3, stride=3, padding=1, ceil_mode=True,
                                count_include_pad=include)
        assert a.shape == (1, 1, 2, 2)
        assert_close(a, ref.avg_pool2d(x, 3, stride=3, padding=1, ceil_mode=True,
                                       count_include_pad=include), np.float64)
    # the unclipped count: 4 windows in the padded 7x7 would need out = 3
    assert fastconv.max_pool2d(x, 3, stride=3, padding=1, ceil_mode=False)[0].shape == \
        (1, 1, 2, 2)


def test_ceil_mode_drop_rule_h6_k2_s4_p1(n_threads):
    """H=6, k=2, s=4, p=1, ceil_mode: ceil(6/4)+1 = 3, but the third window starts at
    8-1 = 7 >= H so only 2 outputs remain (rows {0} and {3, 4})."""
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    for ceil_mode in (False, True):
        y, idx = fastconv.max_pool2d(x, 2, stride=4, padding=1, ceil_mode=ceil_mode)
        assert y.shape == (1, 1, 2, 2)
        np.testing.assert_array_equal(y[0, 0], [[0.0, 4.0], [24.0, 28.0]])
        np.testing.assert_array_equal(idx[0, 0], [[0, 4], [24, 28]])
        a = fastconv.avg_pool2d(x, 2, stride=4, padding=1, ceil_mode=ceil_mode,
                                count_include_pad=True)
        # divisor 4 everywhere (padding counts)
        np.testing.assert_allclose(a[0, 0], [[0 / 4, (3 + 4) / 4],
                                             [(18 + 24) / 4, (21 + 22 + 27 + 28) / 4]])
        a = fastconv.avg_pool2d(x, 2, stride=4, padding=1, ceil_mode=ceil_mode,
                                count_include_pad=False)
        np.testing.assert_allclose(a[0, 0], [[0.0, 3.5], [21.0, 24.5]])
        g = np.ones((1, 1, 2, 2))
        dx = fastconv.avg_pool2d_grad(g, x.shape, 2, stride=4, padding=1,
                                      ceil_mode=ceil_mode)
        assert_close(dx, ref.avg_pool2d_grad(g, x.shape, 2, stride=4, padding=1,
                                             ceil_mode=ceil_mode), np.float64)


@pytest.mark.parametrize("include", [True, False])
def test_ceil_mode_last_window_divisor_clipped(n_threads, include):
    """H=W=5, k=2, s=2, ceil_mode: 3 outputs per dim; the last window [4, 6) hangs past
    H + pad = 5, so even with count_include_pad its divisor counts only 1 row/column."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    a = fastconv.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=include)
    assert a.shape == (1, 1, 3, 3)
    p = x[0, 0]
    expected = np.array([
        [p[0:2, 0:2].mean(), p[0:2, 2:4].mean(), p[0:2, 4].mean()],
        [p[2:4, 0:2].mean(), p[2:4, 2:4].mean(), p[2:4, 4].mean()],
        [p[4, 0:2].mean(), p[4, 2:4].mean(), p[4, 4]],
    ])
    assert_close(a[0, 0], expected, np.float64)
    g = np.ones((1, 1, 3, 3))
    dx = fastconv.avg_pool2d_grad(g, x.shape, 2, stride=2, ceil_mode=True,
                                  count_include_pad=include)
    # every input element is in exactly one window; its share is 1/divisor
    exp_dx = np.full((5, 5), 0.25)
    exp_dx[4, :4] = exp_dx[:4, 4] = 0.5
    exp_dx[4, 4] = 1.0
    assert_close(dx[0, 0], exp_dx, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ceil_mode_with_padding_divisor_counts_padding_not_overhang(n_threads, dtype):
    """H=6, k=3, s=2, p=1, ceil_mode, count_include_pad: the last window [5, 8) is
    clipped at H + pad = 7: its divisor counts the padding row but not the overhang."""
    x = np.arange(36, dtype=dtype).reshape(1, 1, 6, 6)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    for include in (True, False):
        a = fastconv.avg_pool2d(x, count_include_pad=include, **kw)
        assert_close(a, ref.avg_pool2d(x, count_include_pad=include, **kw), dtype)
    a = fastconv.avg_pool2d(x, count_include_pad=True, **kw)
    # bottom-right window: rows {5, pad}, cols {5, pad} -> divisor 2*2 = 4
    assert a.shape == (1, 1, 4, 4)
    assert_close(a[0, 0, 3, 3], np.float64(35.0 / 4), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_windows_of_only_minus_inf(n_threads, dtype):
    """A window holding only -inf returns -inf and the index of its first in-bounds
    element (padding included: padding is -inf too but never an index)."""
    x = np.full((1, 2, 4, 4), -np.inf, dtype=dtype)
    x[0, 1, 3, 3] = 1.0
    for padding in (0, 1):
        y, idx = fastconv.max_pool2d(x, 2, stride=2, padding=padding)
        y_ref, idx_ref = ref.max_pool2d(x, 2, stride=2, padding=padding)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        assert np.all(np.isneginf(y[0, 0]))
    y, idx = fastconv.max_pool2d(x, 2, stride=2)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    y, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1)
    # windows start at -1 -> first in-bounds element is row/col 0
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(idx[0, 1], [[0, 1], [4, 15]])
    g = np.ones(idx.shape, dtype=dtype)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    assert_close(dx, ref.max_pool2d_grad(g, idx, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_window_gives_nan_and_index_of_last_nan(n_threads, dtype):
    """PyTorch's rule ``val > maxval or isnan(val)``: any NaN makes the output NaN and
    the reported index is that of the LAST NaN in row-major window order."""
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 0, 0] = 5.0          # window (0, 0): a number before and after the NaNs
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = 7.0
    x[0, 0, 2, 3] = np.nan       # window (1, 1): single NaN, then a larger number
    x[0, 0, 3, 2] = np.inf
    x[0, 0, 0, 2] = 3.0          # window (0, 1): no NaN
    y, idx = fastconv.max_pool2d(x, 2)
    y_ref, idx_ref = ref.max_pool2d(x, 2)
    np.testing.assert_array_equal(y, y_ref)        # equal_nan by default for NaN
    np.testing.assert_array_equal(idx, idx_ref)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 11
    assert y[0, 0, 0, 1] == 3.0 and idx[0, 0, 0, 1] == 2
    assert y[0, 0, 1, 0] == 0.0 and idx[0, 0, 1, 0] == 8
    # overlapping windows: the NaN propagates to every window containing it
    y3, idx3 = fastconv.max_pool2d(x, 3, stride=1, padding=1)
    y3_ref, idx3_ref = ref.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(y3, y3_ref)
    np.testing.assert_array_equal(idx3, idx3_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_through_avg_pool(n_threads, dtype):
    """A NaN makes the mean of every window containing it NaN, and nothing else."""
    x = np.ones((1, 1, 5, 5), dtype=dtype)
    x[0, 0, 2, 2] = np.nan
    a = fastconv.avg_pool2d(x, 2, stride=2, ceil_mode=True)
    a_ref = ref.avg_pool2d(x, 2, stride=2, ceil_mode=True)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(a_ref))
    assert np.isnan(a[0, 0, 1, 1]) and np.isnan(a).sum() == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_plus_inf_wins_and_first_inf_is_reported(n_threads, dtype):
    """+inf beats every finite number; tied +infs report the first one."""
    x = np.zeros((1, 1, 3, 3), dtype=dtype)
    x[0, 0, 1, 2] = np.inf
    x[0, 0, 2, 0] = np.inf
    x[0, 0, 0, 0] = 1e30 if dtype == np.float32 else 1e300
    y, idx = fastconv.max_pool2d(x, 3)
    assert y[0, 0, 0, 0] == np.inf and idx[0, 0, 0, 0] == 5
    y, idx = fastconv.max_pool2d(x, 2, stride=1)
    y_ref, idx_ref = ref.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    a = fastconv.avg_pool2d(x, 3)
    assert a[0, 0, 0, 0] == np.inf


def _pool_out(size, k, s, p, ceil_mode):
    num = size + 2 * p - k
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(x, k, s, p, pad_value, ceil_mode=False):
    """All pooling windows as a (N, C, Ho, Wo, kh, kw) view of the padded input
    (extra bottom/right padding for ceil_mode overhang)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    ho, wo = _pool_out(h, kh, sh, ph, ceil_mode), _pool_out(w, kw, sw, pw, ceil_mode)
    extra_h = max(0, (ho - 1) * sh + kh - (h + 2 * ph))
    extra_w = max(0, (wo - 1) * sw + kw - (w + 2 * pw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)),
                constant_values=pad_value)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return win[:, :, ::sh, ::sw][:, :, :ho, :wo]


def _numpy_max_pool(x, k, s, p, ceil_mode=False):
    """Vectorized max pooling with first-maximum indices (no NaN support)."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    win = _windows(x, k, s, p, -np.inf, ceil_mode)
    n, c, ho, wo = win.shape[:4]
    flat = win.reshape(n, c, ho, wo, kh * kw)
    a = flat.argmax(-1)
    y = np.take_along_axis(flat, a[..., None], -1)[..., 0]
    rows = np.arange(ho)[:, None] * sh - ph + a // kw
    cols = np.arange(wo)[None, :] * sw - pw + a % kw
    return y, rows * x.shape[3] + cols


def _numpy_avg_pool(x, k, s, p, include):
    """Vectorized average pooling (floor mode: windows never pass H + pad)."""
    (kh, kw) = k
    total = _windows(x, k, s, p, 0.0).sum(axis=(-1, -2))
    if include:
        return total / (kh * kw)
    count = _windows(np.ones_like(x), k, s, p, 0.0).sum(axis=(-1, -2))
    return total / count


def _numpy_avg_pool_grad(g, shape, k, s, p, include):
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    ho, wo = g.shape[2:]
    if include:
        share = g / (kh * kw)
    else:
        share = g / _windows(np.ones(shape), k, s, p, 0.0).sum(axis=(-1, -2))
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for u in range(kh):
        for v in range(kw):
            dxp[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw] += share
    return dxp[:, :, ph:ph + h, pw:pw + w]


def _numpy_max_pool_grad(g, idx, shape):
    n, c, h, w = shape
    dx = np.zeros((n * c, h * w))
    rows = np.repeat(np.arange(n * c), idx[0, 0].size)
    np.add.at(dx, (rows, idx.reshape(-1)), g.reshape(-1))
    return dx.reshape(shape)


LARGE_CASES = [
    pytest.param((2, 2), (2, 2), (0, 0), False, id="2x2s2"),
    pytest.param((3, 3), (2, 2), (0, 0), False, id="3x3s2"),
    pytest.param((3, 3), (2, 2), (1, 1), False, id="3x3s2p1"),
    pytest.param((3, 3), (2, 2), (0, 0), True, id="3x3s2ceil"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, ceil_mode", LARGE_CASES)
def test_large_plane_max_pool_against_vectorized_numpy(n_threads, rng, dtype, k, s, p,
                                                       ceil_mode):
    """4x8x56x56 max pooling and its gradient against a sliding-window NumPy version."""
    x = randn(rng, (4, 8, 56, 56), dtype)
    y, idx = fastconv.max_pool2d(x, k, stride=s, padding=p, ceil_mode=ceil_mode)
    y_np, idx_np = _numpy_max_pool(x, k, s, p, ceil_mode)
    assert y.shape == y_np.shape
    np.testing.assert_array_equal(y, y_np)
    np.testing.assert_array_equal(idx, idx_np)
    g = randn(rng, y.shape, dtype)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    assert_close(dx, _numpy_max_pool_grad(g.astype(np.float64), idx_np, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("k, s, p, ceil_mode", LARGE_CASES[:3])
def test_large_plane_avg_pool_against_vectorized_numpy(n_threads, rng, dtype, k, s, p,
                                                       ceil_mode, include):
    """4x8x56x56 average pooling and its gradient against a sliding-window NumPy version."""
    x = randn(rng, (4, 8, 56, 56), dtype)
    y = fastconv.avg_pool2d(x, k, stride=s, padding=p, count_include_pad=include)
    assert_close(y, _numpy_avg_pool(x.astype(np.float64), k, s, p, include), dtype)
    g = randn(rng, y.shape, dtype)
    dx = fastconv.avg_pool2d_grad(g, x.shape, k, stride=s, padding=p,
                                  count_include_pad=include)
    assert_close(dx, _numpy_avg_pool_grad(g.astype(np.float64), x.shape, k, s, p, include),
                 dtype)


# ---------------------------------------------------------------------------
# 3. max_pool2d_grad: indices
# ---------------------------------------------------------------------------

def test_max_pool2d_grad_routes_to_indices(n_threads):
    """Each grad_out element lands at its flat index in its own plane."""
    shape = (2, 2, 3, 4)
    g = np.arange(1.0, 1 + 2 * 2 * 2).reshape(2, 2, 1, 2)
    idx = np.array([[[[0, 11]], [[5, 5]]], [[[7, 3]], [[11, 0]]]])
    dx = fastconv.max_pool2d_grad(g, idx, shape)
    expected = np.zeros((2, 2, 12))
    expected[0, 0, 0] = 1
    expected[0, 0, 11] = 2
    expected[0, 1, 5] = 3 + 4          # same index twice accumulates
    expected[1, 0, 7] = 5
    expected[1, 0, 3] = 6
    expected[1, 1, 11] = 7
    expected[1, 1, 0] = 8
    np.testing.assert_array_equal(dx, expected.reshape(shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_grad_accumulates_over_overlapping_windows(n_threads, dtype):
    """3x3 stride 1: a single dominant element wins every window containing it, and
    its gradient is the sum of those windows' grad_out."""
    x = np.zeros((1, 1, 5, 5), dtype=dtype)
    x[0, 0, 2, 2] = 10.0
    y, idx = fastconv.max_pool2d(x, 3, stride=1)
    assert np.all(idx == 12) and np.all(y == 10.0)
    g = np.arange(1, 10, dtype=dtype).reshape(1, 1, 3, 3)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    expected = np.zeros((1, 1, 5, 5))
    expected[0, 0, 2, 2] = 45.0
    np.testing.assert_array_equal(dx, expected)
    # with padding, windows overlap at the border too
    y, idx = fastconv.max_pool2d(x, 3, stride=1, padding=1)
    g = np.ones(idx.shape, dtype=dtype)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    assert_close(dx, ref.max_pool2d_grad(g, idx, x.shape), dtype)
    assert dx.sum() == g.sum()


INDEX_CONVERSIONS = [
    pytest.param(lambda i: i.astype(np.int32), id="int32"),
    pytest.param(lambda i: i.astype(np.int16), id="int16"),
    pytest.param(lambda i: i.astype(np.uint8), id="uint8"),
    pytest.param(lambda i: i.astype(np.uint16), id="uint16"),
    pytest.param(lambda i: i.astype(np.uint32), id="uint32"),
    pytest.param(lambda i: i.astype(np.uint64), id="uint64"),
    pytest.param(lambda i: i.astype(">i8"), id="big-endian-int64"),
    pytest.param(lambda i: i.tolist(), id="list"),
    pytest.param(np.asfortranarray, id="fortran"),
    pytest.param(lambda i: i[::-1, :, ::-1].copy()[::-1, :, ::-1], id="negative-strides"),
]


@pytest.mark.parametrize("convert", INDEX_CONVERSIONS)
def test_max_pool2d_grad_accepts_any_integer_indices(n_threads, rng, convert):
    """Indices as int32 / unsigned / big-endian arrays, lists or odd layouts give the
    same gradient as the int64 indices max_pool2d returns."""
    x = distinct(rng, (2, 3, 6, 7))
    _, idx = fastconv.max_pool2d(x, 3, stride=1, padding=1)
    assert idx.max() < 200
    g = randn(rng, idx.shape)
    expected = fastconv.max_pool2d_grad(g, idx, x.shape)
    np.testing.assert_array_equal(expected, ref.max_pool2d_grad(g, idx, x.shape))
    dx = fastconv.max_pool2d_grad(g, convert(idx), x.shape)
    np.testing.assert_array_equal(dx, expected)


BAD_INDEX_VALUES = [
    pytest.param(np.int64, -1, id="minus-one"),
    pytest.param(np.int64, 42, id="equal-to-H*W"),
    pytest.param(np.int64, 43, id="H*W+1"),
    pytest.param(np.int64, 42 * 5, id="next-plane"),
    pytest.param(np.int64, 2**40, id="huge"),
    pytest.param(np.int64, np.iinfo(np.int64).max, id="int64-max"),
    pytest.param(np.int64, np.iinfo(np.int64).min, id="int64-min"),
    pytest.param(np.int32, -7, id="int32-negative"),
    pytest.param(np.uint8, 200, id="uint8-too-large"),
    pytest.param(np.uint64, 2**63, id="uint64-2**63"),
    pytest.param(np.uint64, 2**64 - 1, id="uint64-max"),
    pytest.param(np.uint64, 2**64 - 42, id="uint64-wraps-to-minus-42"),
    pytest.param(np.uint32, 2**32 - 1, id="uint32-max"),
    pytest.param(">u8", 2**63 + 5, id="big-endian-uint64-above-int64-max"),
    pytest.param(">i8", -3, id="big-endian-int64-negative"),
]


@pytest.mark.parametrize("dtype, bad", BAD_INDEX_VALUES)
@pytest.mark.parametrize("where", ["first", "last"])
def test_max_pool2d_grad_rejects_out_of_range_indices(n_threads, rng, dtype, bad, where):
    """An index outside [0, H*W) raises ValueError naming `indices`; the process survives
    and a following valid call still gives the right answer."""
    shape = (2, 3, 6, 7)                # H*W = 42
    x = distinct(rng, shape)
    _, idx = fastconv.max_pool2d(x, 2, stride=2)
    g = randn(rng, idx.shape)
    bad_idx = idx.astype(dtype)
    pos = (0, 0, 0, 0) if where == "first" else (1, 2, 2, 2)
    bad_idx[pos] = bad
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_grad(g, bad_idx, shape)
    dx = fastconv.max_pool2d_grad(g, idx, shape)
    np.testing.assert_array_equal(dx, ref.max_pool2d_grad(g, idx, shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos", [(0, 0, 0, 0), (0, 1, 0, 19), (1, 0, 2, 13), (1, 1, 2, 19)])
def test_max_pool2d_grad_index_outside_its_2x2_block(n_threads, rng, dtype, pos):
    """2x2/stride-2 indices are written once per 2x2 block (AVX2 kernel);
    one index elsewhere in the plane -- first block, a row's overlapping
    last vector, the last row -- must still be routed there (the plane
    falls back to the scatter), and an out-of-range one still raises."""
    shape = (2, 2, 7, 41)               # out 3 x 20: whole vectors + a re-run tail
    x = distinct(rng, shape).astype(dtype)
    _, idx = fastconv.max_pool2d(x, 2, stride=2)
    g = randn(rng, idx.shape, dtype)
    np.testing.assert_array_equal(fastconv.max_pool2d_grad(g, idx, shape),
                                  ref.max_pool2d_grad(g, idx, shape))
    for moved in (0, 7 * 41 - 1, idx[pos] + 2, idx[pos] + 41 * 2):
        odd = idx.copy()
        odd[pos] = moved % (7 * 41)
        np.testing.assert_array_equal(fastconv.max_pool2d_grad(g, odd, shape),
                                      ref.max_pool2d_grad(g, odd, shape))
    odd = idx.copy()
    odd[pos] = 7 * 41
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_grad(g, odd, shape)


def test_max_pool2d_grad_all_indices_out_of_range(n_threads, rng):
    """Every index out of range (both signs, in every plane) still only raises."""
    shape = (3, 4, 5, 5)
    g = randn(rng, (3, 4, 3, 3))
    for fill in (-(2**62), 25, 2**62, -1):
        idx = np.full(g.shape, fill, dtype=np.int64)
        with pytest.raises(ValueError, match="indices"):
            fastconv.max_pool2d_grad(g, idx, shape)
    idx = np.zeros(g.shape, dtype=np.int64)
    np.testing.assert_array_equal(fastconv.max_pool2d_grad(g, idx, shape),
                                  ref.max_pool2d_grad(g, idx, shape))


def test_max_pool2d_grad_into_empty_plane_raises(n_threads):
    """A non-empty grad_out cannot point into an input plane of size 0."""
    g = np.ones((1, 1, 1, 1))
    idx = np.zeros((1, 1, 1, 1), dtype=np.int64)
    for shape in [(1, 1, 0, 0), (1, 1, 0, 3), (1, 1, 4, 0)]:
        with pytest.raises(ValueError, match="indices"):
            fastconv.max_pool2d_grad(g, idx, shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_grad_of_empty_grad_out_is_zero(n_threads, dtype):
    """No output elements: the gradient is all zeros (not uninitialized memory)."""
    for _ in range(3):   # reuse freed (dirty) memory for the result
        junk = np.full((3, 2, 9, 9), 7.0, dtype)
        del junk
        g = np.ones((3, 2, 0, 4), dtype)
        dx = fastconv.max_pool2d_grad(g, np.zeros(g.shape, np.int64), (3, 2, 9, 9))
        np.testing.assert_array_equal(dx, np.zeros((3, 2, 9, 9), dtype))


@pytest.mark.parametrize("bad_shape", [(1, 2, 3, 3), (1, 2, 2, 4), (2, 1, 3, 4), (2, 2, 12),
                                       (24,), (1, 2, 2, 3, 4)])
def test_max_pool2d_grad_rejects_wrong_index_shape(bad_shape):
    """indices must have grad_out's shape exactly (no broadcasting or reshaping)."""
    g = np.ones((2, 2, 3, 4))
    idx = np.zeros(bad_shape, dtype=np.int64)
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_grad(g, idx, (2, 2, 6, 8))


def test_max_pool2d_grad_rejects_mismatched_input_shape():
    """input_shape must agree with grad_out on N and C."""
    g = np.ones((2, 2, 3, 4))
    idx = np.zeros(g.shape, dtype=np.int64)
    for shape in [(2, 3, 6, 8), (1, 2, 6, 8)]:
        with pytest.raises(ValueError):
            fastconv.max_pool2d_grad(g, idx, shape)


@pytest.mark.parametrize("make", [
    pytest.param(lambda s: np.zeros(s, dtype=np.float64), id="float64"),
    pytest.param(lambda s: np.zeros(s, dtype=np.float32), id="float32"),
    pytest.param(lambda s: np.zeros(s, dtype=np.float16), id="float16"),
    pytest.param(lambda s: np.zeros(s).tolist(), id="float-list"),
    pytest.param(lambda s: np.zeros(s, dtype=complex), id="complex"),
])
def test_max_pool2d_grad_rejects_float_indices(make):
    """Non-integer indices raise TypeError (even when the values are whole numbers)."""
    g = np.ones((1, 1, 2, 2))
    with pytest.raises(TypeError):
        fastconv.max_pool2d_grad(g, make(g.shape), (1, 1, 4, 4))


# ---------------------------------------------------------------------------
# 4. finite differences
# ---------------------------------------------------------------------------



FD_CASES = [
    pytest.param((1, 2, 5, 4), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                 id="k3s2p1-ceil"),
    pytest.param((2, 1, 4, 5), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
                 id="k2x3-s1x2-p1"),
    pytest.param((1, 1, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True),
                 id="k2s2-ceil-clipped"),
    pytest.param((1, 2, 4, 4), dict(kernel_size=3, stride=1), id="k3s1-overlap"),
    pytest.param((1, 1, 6, 3), dict(kernel_size=(4, 2), stride=(3, 1), padding=(2, 1),
                                    ceil_mode=True), id="k4x2-s3x1-p2x1-ceil"),
    pytest.param((1, 1, 7, 7), dict(kernel_size=2, stride=3), id="k2s3-gaps"),
]


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("shape, kw", FD_CASES)
def test_avg_pool2d_grad_finite_differences(n_threads, rng, shape, kw, include):
    """avg_pool2d_grad is the derivative of <avg_pool2d(x), g> (float64 central FD)."""
    x = randn(rng, shape)
    g = randn(rng, fastconv.avg_pool2d(x, count_include_pad=include, **kw).shape)

    def loss(a):
        return float(np.sum(fastconv.avg_pool2d(a, count_include_pad=include, **kw) * g))

    num = numgrad(loss, x, 1e-6)
    dx = fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **kw)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape, kw", FD_CASES)
def test_max_pool2d_grad_finite_differences(n_threads, rng, shape, kw):
    """max_pool2d_grad is the derivative of <max_pool2d(x), g> on distinct inputs
    (gaps of 0.25 >> eps, so the argmax is stable under the perturbation)."""
    x = distinct(rng, shape)
    y, idx = fastconv.max_pool2d(x, **kw)
    g = randn(rng, y.shape)

    def loss(a):
        return float(np.sum(fastconv.max_pool2d(a, **kw)[0] * g))

    num = numgrad(loss, x, 1e-4)
    dx = fastconv.max_pool2d_grad(g, idx, shape)
    np.testing.assert_allclose(dx, num, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------
# 5. awkward but valid inputs
# ---------------------------------------------------------------------------

def _variants(base):
    """(name, awkward array-like equal to ``base``, dtype fastconv computes in,
    dtype of the result).  ``base`` is a float64/float32 C-contiguous array."""
    dt = base.dtype
    big = np.zeros(base.shape[:2] + (2 * base.shape[2], 3 * base.shape[3]), dtype=dt)
    big[:, :, ::2, ::3] = base
    rev = base[::-1, :, ::-1, ::-1].copy()
    ro = base.copy()
    ro.flags.writeable = False
    return [
        ("fortran", np.asfortranarray(base), dt, dt),
        ("strided", big[:, :, ::2, ::3], dt, dt),
        ("negative-strides", rev[::-1, :, ::-1, ::-1], dt, dt),
        ("channels-last", base.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2), dt, dt),
        ("read-only", ro, dt, dt),
        ("big-endian", base.astype(dt.newbyteorder(">")), dt, dt),
        ("big-endian-fortran", np.asfortranarray(base.astype(dt.newbyteorder(">"))), dt, dt),
        ("list", base.tolist(), np.float64, np.float64),
    ]


VARIANT_NAMES = [v[0] for v in _variants(np.zeros((1, 1, 1, 1)))]


def _check_new_result(out, source, dtype):
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.dtype(dtype)
    assert out.flags.c_contiguous and out.flags.writeable
    if isinstance(source, np.ndarray):
        assert not np.shares_memory(out, source)


def _get_variant(base, name):
    return next(v for v in _variants(base) if v[0] == name)[1:]


POOL_KW = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_awkward_inputs_forward(n_threads, rng, dtype, name):
    """Fortran, strided, negative-stride, read-only, big-endian and list inputs give the
    same numbers as the C-contiguous array; results are new C-contiguous arrays."""
    base = distinct(rng, (2, 3, 7, 8), dtype)
    arr, compute, result = _get_variant(base, name)
    before = np.array(arr, copy=True)
    contig = np.ascontiguousarray(base, dtype=compute)

    y, idx = fastconv.max_pool2d(arr, **POOL_KW)
    y0, idx0 = fastconv.max_pool2d(contig, **POOL_KW)
    _check_new_result(y, arr, result)
    _check_new_result(idx, arr, np.int64)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)

    for include in (True, False):
        a = fastconv.avg_pool2d(arr, count_include_pad=include, **POOL_KW)
        _check_new_result(a, arr, result)
        np.testing.assert_array_equal(
            a, fastconv.avg_pool2d(contig, count_include_pad=include, **POOL_KW))
    np.testing.assert_array_equal(np.asarray(arr), before)   # input untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_awkward_grad_out(n_threads, rng, dtype, name):
    """Awkward grad_out arrays give the same gradients as the C-contiguous one."""
    shape = (2, 3, 7, 8)
    x = distinct(rng, shape, dtype)
    _, idx = fastconv.max_pool2d(x, **POOL_KW)
    base = randn(rng, idx.shape, dtype)
    g, compute, result = _get_variant(base, name)
    contig = np.ascontiguousarray(base, dtype=compute)

    dx = fastconv.max_pool2d_grad(g, idx, shape)
    _check_new_result(dx, g, result)
    np.testing.assert_array_equal(dx, fastconv.max_pool2d_grad(contig, idx, shape))
    for include in (True, False):
        dx = fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **POOL_KW)
        _check_new_result(dx, g, result)
        np.testing.assert_array_equal(
            dx, fastconv.avg_pool2d_grad(contig, shape, count_include_pad=include, **POOL_KW))


@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_inputs_compute_in_float64(n_threads, rng, int_dtype):
    """Integer and boolean inputs give float64 results equal to the float64 path."""
    x = rng.integers(0, 100, size=(2, 2, 6, 5)).astype(int_dtype)
    xf = x.astype(np.float64)
    y, idx = fastconv.max_pool2d(x, **POOL_KW)
    y0, idx0 = fastconv.max_pool2d(xf, **POOL_KW)
    _check_new_result(y, x, np.float64)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)
    a = fastconv.avg_pool2d(x, **POOL_KW)
    _check_new_result(a, x, np.float64)
    np.testing.assert_array_equal(a, fastconv.avg_pool2d(xf, **POOL_KW))
    assert_close(a, ref.avg_pool2d(x, **POOL_KW), np.float64)
    gi = rng.integers(-3, 4, size=y.shape)
    dx = fastconv.max_pool2d_grad(gi, idx, x.shape)
    _check_new_result(dx, gi, np.float64)
    np.testing.assert_array_equal(dx, fastconv.max_pool2d_grad(gi.astype(float), idx,
                                                                x.shape))
    dx = fastconv.avg_pool2d_grad(gi, x.shape, **POOL_KW)
    _check_new_result(dx, gi, np.float64)
    np.testing.assert_array_equal(dx, fastconv.avg_pool2d_grad(gi.astype(float), x.shape,
                                                               **POOL_KW))


def test_float16_inputs_give_float16_results(n_threads, rng):
    """float16 is computed in float32 and returned as float16."""
    x = randn(rng, (2, 3, 7, 8), np.float16)
    x32 = x.astype(np.float32)
    y, idx = fastconv.max_pool2d(x, **POOL_KW)
    assert y.dtype == np.float16 and idx.dtype == np.int64
    y32, idx32 = fastconv.max_pool2d(x32, **POOL_KW)
    np.testing.assert_array_equal(y, y32.astype(np.float16))
    np.testing.assert_array_equal(idx, idx32)
    y_ref, idx_ref = ref.max_pool2d(x, **POOL_KW)
    np.testing.assert_array_equal(y, y_ref)
    a = fastconv.avg_pool2d(x, **POOL_KW)
    assert a.dtype == np.float16
    np.testing.assert_array_equal(a, fastconv.avg_pool2d(x32, **POOL_KW).astype(np.float16))
    g = randn(rng, y.shape, np.float16)
    g32 = g.astype(np.float32)
    dx = fastconv.max_pool2d_grad(g, idx, x.shape)
    assert dx.dtype == np.float16 and dx.flags.c_contiguous
    np.testing.assert_array_equal(
        dx, fastconv.max_pool2d_grad(g32, idx, x.shape).astype(np.float16))
    dx = fastconv.avg_pool2d_grad(g, x.shape, **POOL_KW)
    assert dx.dtype == np.float16 and dx.flags.c_contiguous
    np.testing.assert_array_equal(
        dx, fastconv.avg_pool2d_grad(g32, x.shape, **POOL_KW).astype(np.float16))


def test_nested_list_input_matches_array(n_threads, rng):
    """Plain nested Python lists are accepted (as float64)."""
    x = distinct(rng, (1, 2, 4, 5))
    y, idx = fastconv.max_pool2d(x.tolist(), 2, stride=1)
    y0, idx0 = fastconv.max_pool2d(x, 2, stride=1)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)
    g = randn(rng, y.shape)
    np.testing.assert_array_equal(
        fastconv.max_pool2d_grad(g.tolist(), idx.tolist(), list(x.shape)),
        fastconv.max_pool2d_grad(g, idx, x.shape))
    np.testing.assert_array_equal(
        fastconv.avg_pool2d_grad(g.tolist(), list(x.shape), 2, stride=1),
        fastconv.avg_pool2d_grad(g, x.shape, 2, stride=1))


def test_stride_none_equals_kernel_size(n_threads, rng):
    """stride=None defaults to the kernel size (rectangular kernel)."""
    x = randn(rng, (1, 2, 9, 10))
    for f in (lambda **k: fastconv.max_pool2d(x, (3, 2), **k)[0],
              lambda **k: fastconv.max_pool2d(x, (3, 2), **k)[1],
              lambda **k: fastconv.avg_pool2d(x, (3, 2), **k)):
        np.testing.assert_array_equal(f(stride=None), f(stride=(3, 2)))
        np.testing.assert_array_equal(f(), f(stride=(3, 2)))


# ---------------------------------------------------------------------------
# 6. PyTorch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@HYP_TORCH
@given(geo=pool_geometries(min_n=1), seed=seeds)
def test_max_pool2d_matches_torch(n_threads, dtype, geo, seed):
    """Values, indices and the autograd gradient equal PyTorch's."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape, dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, return_indices=True, **_torch_pool_kwargs(kw))
    y, idx = fastconv.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    g = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(g))
    dx = fastconv.max_pool2d_grad(g, idx, shape)
    assert_close(dx, xt.grad.numpy().astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYP_TORCH
@given(geo=pool_geometries(min_n=1), seed=seeds)
def test_max_pool2d_ties_match_torch(n_threads, dtype, geo, seed):
    """On heavily tied inputs the chosen index is PyTorch's."""
    torch = pytest.importorskip("torch")
    shape, kw = geo
    x = many_ties(np.random.default_rng(seed), shape, dtype)
    yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True,
                                            **_torch_pool_kwargs(kw))
    y, idx = fastconv.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@HYP_TORCH
@given(geo=pool_geometries(min_n=1), seed=seeds, include=st.booleans())
def test_avg_pool2d_matches_torch(n_threads, dtype, geo, seed, include):
    """Values and the autograd gradient equal PyTorch's (both count_include_pad)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape, kw = geo
    rng = np.random.default_rng(seed)
    x = randn(rng, shape, dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.avg_pool2d(xt, count_include_pad=include, **_torch_pool_kwargs(kw))
    y = fastconv.avg_pool2d(x, count_include_pad=include, **kw)
    assert_close(y, yt.detach().numpy().astype(np.float64), dtype)
    g = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(g))
    dx = fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **kw)
    assert_close(dx, xt.grad.numpy().astype(np.float64), dtype)


def test_nan_rule_matches_torch(n_threads):
    """PyTorch's CPU kernel also reports the last NaN of a window."""
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = 7.0
    x[0, 0, 3, 3] = np.nan
    x[0, 0, 2, 2] = np.inf
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kw)
        y, idx = fastconv.max_pool2d(x, **kw)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(idx, it.numpy())


# ---------------------------------------------------------------------------
# 7. determinism across thread counts
# ---------------------------------------------------------------------------

def _all_four(x, g_max, g_avg, kw):
    y, idx = fastconv.max_pool2d(x, **kw)
    a = fastconv.avg_pool2d(x, count_include_pad=False, **kw)
    dmax = fastconv.max_pool2d_grad(g_max, idx, x.shape)
    davg = fastconv.avg_pool2d_grad(g_avg, x.shape, count_include_pad=False, **kw)
    return y, idx, a, dmax, davg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=(3, 4), stride=(2, 1), padding=(1, 2),
                                     ceil_mode=True)], ids=["3x3s1p1", "3x4-ceil"])
def test_thread_count_does_not_change_results(rng, dtype, kw, monkeypatch):
    """1, 2 and 3 threads give bitwise identical results for all four functions."""
    monkeypatch.setattr(_threads, "SMALL_WORK", 0)   # small cases too run threaded
    x = many_ties(rng, (3, 5, 37, 41), dtype) + randn(rng, (3, 5, 37, 41), dtype) * 0.01
    out_shape = ref.avg_pool2d(np.zeros((1, 1, 37, 41)), **kw).shape[2:]
    g_max = randn(rng, (3, 5) + out_shape, dtype)
    g_avg = randn(rng, (3, 5) + out_shape, dtype)
    results = {}
    try:
        for t in (1, 2, 3):
            fastconv.set_num_threads(t)
            results[t] = _all_four(x, g_max, g_avg, kw)
    finally:
        fastconv.set_num_threads(None)
    for t in (2, 3):
        for a, b in zip(results[1], results[t]):
            assert a.dtype == b.dtype
            assert np.array_equal(a, b)


# ---------------------------------------------------------------------------
# 8. argument checks
# ---------------------------------------------------------------------------

def test_padding_larger_than_half_kernel_raises():
    """padding > kernel_size // 2 is refused, as in PyTorch and the oracle."""
    x = np.zeros((1, 1, 6, 6))
    with pytest.raises(ValueError):
        fastconv.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError):
        fastconv.avg_pool2d(x, (4, 2), padding=(1, 2))
    with pytest.raises(ValueError):
        fastconv.avg_pool2d_grad(np.zeros((1, 1, 2, 2)), x.shape, 3, padding=2)


def test_kernel_larger_than_input_raises_in_floor_mode():
    """Without ceil_mode a kernel larger than the padded input gives no output."""
    x = np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError):
        ref.max_pool2d(x, 5, stride=2, padding=1)
    with pytest.raises(ValueError):
        fastconv.max_pool2d(x, 5, stride=2, padding=1)
    with pytest.raises(ValueError):
        fastconv.avg_pool2d(x, 5, stride=2, padding=1)


def test_avg_pool2d_grad_rejects_wrong_grad_out_shape():
    """grad_out must have the output shape the geometry gives."""
    with pytest.raises(ValueError, match="grad_out"):
        fastconv.avg_pool2d_grad(np.zeros((1, 1, 2, 2)), (1, 1, 6, 6), 2)


# ---------------------------------------------------------------------------
# 9. known bugs
# ---------------------------------------------------------------------------

CEIL_KERNEL_TOO_BIG = [
    # (input shape, kwargs): H + 2p < k, but in ceil_mode PyTorch and the oracle give
    # one window (it starts inside the leading padding).
    ((1, 1, 2, 2), dict(kernel_size=5, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 1, 6), dict(kernel_size=(4, 2), stride=(3, 2), padding=(1, 0),
                        ceil_mode=True)),
    ((2, 1, 3, 3), dict(kernel_size=5, stride=4, padding=0, ceil_mode=True)),
]


@pytest.mark.parametrize("func", ["max_pool2d", "avg_pool2d", "avg_pool2d_grad"])
@pytest.mark.parametrize("shape, kw", CEIL_KERNEL_TOO_BIG)
def test_ceil_mode_kernel_larger_than_padded_input(rng, func, shape, kw):
    """Regression: in ceil_mode a kernel slightly larger than the padded input still
    gives one window (PyTorch floors (H+2p-k+s-1)/s); it used to be rejected."""
    x = distinct(rng, shape)
    if func == "max_pool2d":
        y_ref, idx_ref = ref.max_pool2d(x, **kw)
        y, idx = fastconv.max_pool2d(x, **kw)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
    elif func == "avg_pool2d":
        for include in (True, False):
            assert_close(fastconv.avg_pool2d(x, count_include_pad=include, **kw),
                         ref.avg_pool2d(x, count_include_pad=include, **kw), np.float64)
    else:
        g = randn(rng, ref.avg_pool2d(x, **kw).shape)
        for include in (True, False):
            assert_close(fastconv.avg_pool2d_grad(g, shape, count_include_pad=include, **kw),
                         ref.avg_pool2d_grad(g, shape, count_include_pad=include, **kw),
                         np.float64)


def test_ceil_mode_kernel_larger_than_padded_input_oracle_agrees_with_torch(rng):
    """Guard for the test above: the oracle's answer really is PyTorch's."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape, kw in CEIL_KERNEL_TOO_BIG:
        x = distinct(rng, shape)
        yt, it = F.max_pool2d(torch.tensor(x), return_indices=True, **kw)
        y_ref, idx_ref = ref.max_pool2d(x, **kw)
        np.testing.assert_array_equal(y_ref, yt.numpy())
        np.testing.assert_array_equal(idx_ref, it.numpy())
        for include in (True, False):
            at = F.avg_pool2d(torch.tensor(x), count_include_pad=include, **kw)
            assert_close(ref.avg_pool2d(x, count_include_pad=include, **kw),
                         at.numpy(), np.float64)


@pytest.fixture
def elementwise_max_pool():
    """Force the element-wise max-pool loop (normally only for planes whose
    flat indices a float32 lane cannot hold exactly, > 2**24 elements)."""
    from fastconv._simd import kernels as _kernels
    _kernels._tuning(rowwise_max_plane=0)
    yield
    _kernels._tuning(rowwise_max_plane=-1)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_elementwise_max_pool_matches_oracle(elementwise_max_pool, dtype, data):
    """The fallback for huge planes follows the same rules (ties, NaN, -inf)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    shape = (2, 3, data.draw(st.integers(k[0], 9)), data.draw(st.integers(k[1], 9)))
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    ceil = data.draw(st.booleans())
    y_ref, i_ref = ref.max_pool2d(x, k, s, p, ceil)
    y, i = fastconv.max_pool2d(x.astype(dtype), k, s, p, ceil)
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    np.testing.assert_array_equal(i, i_ref)


@pytest.fixture(params=["staged", "rows"])
def small_planes(request):
    """NCHW pools of narrow outputs (fewer columns than an AVX2 vector) stage
    whole blocks of planes channels last (``SMALL_PLANE_MAX``); "rows"
    switches that off, for the row loops."""
    from fastconv._simd import kernels as _kernels
    saved = _kernels._tuning()["small_plane_max"]
    _kernels._tuning(small_plane_max=saved if request.param == "staged" else 0)
    yield request.param
    _kernels._tuning(small_plane_max=saved)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_small_planes_match_oracle(small_planes, n_threads, dtype, data):
    """Enough planes of narrow outputs for the channels-last staging (blocks
    of 16 float32 / 8 float64 planes, the rest row by row): values, indices
    (ties, NaN, -inf), means and the average-pool gradient as the oracles
    give them, both ways."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = (data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2)))
    h = data.draw(st.integers(max(1, kh - 2 * p[0]), 9))
    w = data.draw(st.integers(max(1, kw - 2 * p[1]), 9))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(6, 20)), h, w)
    ceil = data.draw(st.booleans())
    include = data.draw(st.booleans())
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    y_ref, i_ref = ref.max_pool2d(x, (kh, kw), s, p, ceil)
    y, i = fastconv.max_pool2d(x.astype(dtype), (kh, kw), s, p, ceil)
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    np.testing.assert_array_equal(i, i_ref)
    xf = np.nan_to_num(x, neginf=-1.5)
    assert_close(fastconv.avg_pool2d(xf.astype(dtype), (kh, kw), s, p, ceil, include),
                 ref.avg_pool2d(xf, (kh, kw), s, p, ceil, include), dtype)
    g = rng.standard_normal(y_ref.shape)
    assert_close(fastconv.avg_pool2d_grad(g.astype(dtype), shape, (kh, kw), s, p, ceil, include),
                 ref.avg_pool2d_grad(g, shape, (kh, kw), s, p, ceil, include), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_staged_small_planes_agree_bitwise_with_rows(rng, dtype):
    """The channels-last staging gives the row loops' bits (the demo's and
    CIFAR-style shapes; 70 planes: whole blocks and a remainder)."""
    from fastconv._simd import kernels as _kernels
    saved = _kernels._tuning()["small_plane_max"]
    for shape, k, s, p in [((2, 35, 8, 8), 2, 2, 0), ((2, 35, 4, 4), 3, 2, 1),
                           ((2, 35, 7, 9), 3, 2, 0), ((2, 35, 16, 16), 3, 2, 1),
                           ((2, 35, 2, 2), 2, 2, 0), ((2, 35, 5, 3), 2, 1, 1)]:
        x = rng.standard_normal(shape).astype(dtype)
        x[0, 3, 0, 0] = np.nan
        results = []
        for limit in (saved, 0):
            _kernels._tuning(small_plane_max=limit)
            try:
                y, idx = fastconv.max_pool2d(x, k, s, p)
                results.append((y, idx, fastconv.avg_pool2d(x, k, s, p, count_include_pad=False),
                                fastconv.avg_pool2d_grad(y, shape, k, s, p,
                                                         count_include_pad=False)))
            finally:
                _kernels._tuning(small_plane_max=saved)
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# 10. the fast path (functional.POOL_FAST): the commonest calls skip the full
#     checks; every result and every error must be the full path's
# ---------------------------------------------------------------------------

def _pool_calls(x, kw, include, layout, rng):
    """The four pool functions on ``x`` (each gradient of a seeded random
    ``grad_out``); an exception stands in for a call's result."""
    def call(f, *args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            return exc
    out = {"max": call(fastconv.max_pool2d, x, layout=layout, **kw),
           "avg": call(fastconv.avg_pool2d, x, count_include_pad=include, layout=layout, **kw)}
    if not isinstance(out["max"], Exception):
        y, idx = out["max"]
        g = randn(rng, y.shape, x.dtype)
        out["max_grad"] = call(fastconv.max_pool2d_grad, g, idx, x.shape, layout=layout)
        out["avg_grad"] = call(fastconv.avg_pool2d_grad, g, x.shape, count_include_pad=include,
                               layout=layout, **kw)
    return out


def _assert_same_results(fast, full):
    assert fast.keys() == full.keys()
    for name in fast:
        a, b = fast[name], full[name]
        if isinstance(b, Exception):
            assert type(a) is type(b) and str(a) == str(b), name
            continue
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert u.dtype == v.dtype and u.shape == v.shape and u.flags.c_contiguous, name
            np.testing.assert_array_equal(u, v, err_msg=name)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 5), stride=st.one_of(st.none(), st.integers(1, 5)),
       pad=st.integers(0, 3), h=st.integers(0, 11), w=st.integers(0, 11),
       n=st.integers(0, 2), ceil_mode=st.booleans(), include=st.booleans(), seed=seeds)
def test_fast_path_gives_the_full_paths_results_and_errors(n_threads, monkeypatch, layout,
                                                           dtype, k, stride, pad, h, w, n,
                                                           ceil_mode, include, seed):
    """Plain-int window arguments on C-order arrays: valid geometries take the
    fast path, invalid ones (padding over half the kernel, empty planes, a
    kernel over the padded input) fall through to the full checks; either
    way the results are the full path's bit for bit, and so are the
    messages."""
    from fastconv import functional
    shape = (n, 3, h, w) if layout == "NCHW" else (n, h, w, 3)
    rng = np.random.default_rng(seed)
    x = many_ties(rng, shape, dtype) - 1
    x[rng.random(shape) < 0.05] = np.nan
    kw = dict(kernel_size=k, stride=stride, padding=pad, ceil_mode=ceil_mode)
    fast = _pool_calls(x, kw, include, layout, np.random.default_rng(seed))
    monkeypatch.setattr(functional, "POOL_FAST", False)
    full = _pool_calls(x, kw, include, layout, np.random.default_rng(seed))
    _assert_same_results(fast, full)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_commonest_calls_take_the_fast_path(monkeypatch, rng, layout, dtype):
    """The calls a network makes (an ndarray in C order, int arguments, a
    ``.shape`` tuple) never reach the full checks -- read-only inputs too,
    since the kernels only read them."""
    from fastconv import functional

    def full_path(*args, **kwargs):
        raise AssertionError("the full checks ran")
    monkeypatch.setattr(functional, "_pool_geometry", full_path)
    monkeypatch.setattr(functional, "as_array", full_path)
    shape = (2, 3, 9, 8) if layout == "NCHW" else (2, 9, 8, 3)
    x = randn(rng, shape, dtype)
    x.flags.writeable = False
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        y, idx = fastconv.max_pool2d(x, layout=layout, **kw)
        fastconv.max_pool2d_grad(np.ones_like(y), idx, x.shape, layout=layout)
        a = fastconv.avg_pool2d(x, count_include_pad=False, layout=layout, **kw)
        fastconv.avg_pool2d_grad(np.ones_like(a), x.shape, layout=layout, **kw)


FALLBACKS = {
    # each changes one thing of a fast call; the full path must take it
    "tuple kernel": lambda x, kw: (x, dict(kw, kernel_size=(2, 2))),
    "tuple stride": lambda x, kw: (x, dict(kw, stride=(2, 2))),
    "numpy int padding": lambda x, kw: (x, dict(kw, padding=np.int64(0))),
    "numpy bool ceil_mode": lambda x, kw: (x, dict(kw, ceil_mode=np.bool_(False))),
    "Fortran order": lambda x, kw: (np.asfortranarray(x), kw),
    "negative strides": lambda x, kw: (x[:, :, ::-1], kw),
    "big-endian": lambda x, kw: (x.astype(x.dtype.newbyteorder(">")), kw),
    "float16": lambda x, kw: (x.astype(np.float16), kw),
    "integers": lambda x, kw: (np.round(x).astype(np.int32), kw),
    "nested lists": lambda x, kw: (x.tolist(), kw),
}


@pytest.mark.parametrize("change", sorted(FALLBACKS))
def test_other_calls_take_the_full_path_and_agree(monkeypatch, rng, change):
    """Anything off the fast path's narrow case goes through the full checks
    (counted), and gives what it gave before the fast path existed."""
    from fastconv import functional
    x, kw = FALLBACKS[change](randn(rng, (2, 3, 8, 7), np.float32),
                              dict(kernel_size=2, stride=None, padding=0, ceil_mode=False))
    geometry = functional._pool_geometry
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return geometry(*args, **kwargs)
    monkeypatch.setattr(functional, "_pool_geometry", counted)
    y, idx = fastconv.max_pool2d(x, **kw)
    a = fastconv.avg_pool2d(x, **kw)
    assert calls == ["max_pool2d", "avg_pool2d"]
    monkeypatch.setattr(functional, "POOL_FAST", False)
    y_full, idx_full = fastconv.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, y_full)
    np.testing.assert_array_equal(idx, idx_full)
    np.testing.assert_array_equal(a, fastconv.avg_pool2d(x, **kw))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_gradients_off_the_fast_path_agree(monkeypatch, rng, layout):
    """Gradient calls whose grad_out, indices or input_shape are not the
    fast path's kind (int32 or Fortran-order indices, a list or NumPy-int
    shape, float16 or Fortran-order grad_out) take the full path; same
    results."""
    from fastconv import functional
    shape = (2, 3, 8, 6) if layout == "NCHW" else (2, 8, 6, 3)
    x = randn(rng, shape, np.float64)
    y, idx = fastconv.max_pool2d(x, 2, layout=layout)
    g = randn(rng, y.shape, np.float64)
    variants = [
        (g, idx.astype(np.int32), shape),
        (g, np.asfortranarray(idx), shape),
        (g, idx, list(shape)),
        (g, idx, tuple(np.int64(s) for s in shape)),
        (g.astype(np.float16), idx, shape),
        (np.asfortranarray(g), idx, shape),
    ]
    results = []
    for g_v, idx_v, shape_v in variants:
        results.append((fastconv.max_pool2d_grad(g_v, idx_v, shape_v, layout=layout),
                        fastconv.avg_pool2d_grad(g_v, shape_v, 2, layout=layout)))
    monkeypatch.setattr(functional, "POOL_FAST", False)
    for (g_v, idx_v, shape_v), (dx_max, dx_avg) in zip(variants, results):
        np.testing.assert_array_equal(
            dx_max, fastconv.max_pool2d_grad(g_v, idx_v, shape_v, layout=layout))
        np.testing.assert_array_equal(
            dx_avg, fastconv.avg_pool2d_grad(g_v, shape_v, 2, layout=layout))
        assert dx_max.dtype == dx_avg.dtype == g_v.dtype


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fast", [True, False])
def test_fast_path_errors_are_the_full_paths(monkeypatch, layout, fast):
    """Calls of the fast path's kind that must fail fail as the full path
    does: an index outside its plane (found by the kernel), a grad_out of
    the wrong shape, input_shape disagreeing on N or C, a negative or
    oversized input_shape entry."""
    from fastconv import functional
    monkeypatch.setattr(functional, "POOL_FAST", fast)
    shape = (1, 2, 4, 4) if layout == "NCHW" else (1, 4, 4, 2)
    g = np.ones((1, 2, 2, 2) if layout == "NCHW" else (1, 2, 2, 2))
    bad = np.zeros(g.shape, np.int64)
    bad.flat[3] = 16
    with pytest.raises(ValueError, match=r"max_pool2d_grad: indices: .*\(input_shape "):
        fastconv.max_pool2d_grad(g, bad, shape, layout=layout)
    with pytest.raises(ValueError, match="avg_pool2d_grad: grad_out has shape"):
        fastconv.avg_pool2d_grad(g, shape, 3, layout=layout)
    other_c = (1, 3, 4, 4) if layout == "NCHW" else (1, 4, 4, 3)
    with pytest.raises(ValueError, match="must agree on N and C"):
        fastconv.max_pool2d_grad(g, bad * 0, other_c, layout=layout)
    with pytest.raises(ValueError, match="negative"):
        fastconv.max_pool2d_grad(g, bad * 0, (1, 2, -4, 4), layout=layout)
    with pytest.raises(ValueError):
        fastconv.max_pool2d_grad(g, bad * 0, (1, 2, 2**61, 2**61), layout=layout)


def test_fast_path_leaves_outputs_too_large_to_the_full_checks():
    """Padding can make a pool's output larger than its input: an input that
    claims a size near the addressable limit (a strided view of one
    element) must get the full path's size message, not an allocation
    error (found by a review's fuzzing)."""
    from numpy.lib.stride_tricks import as_strided
    x = as_strided(np.zeros(1, np.float32), shape=(1, 1, 2**59 - 1, 1), strides=(4, 4, 4, 4))
    for pool in (fastconv.max_pool2d, fastconv.avg_pool2d):
        with pytest.raises(ValueError, match="the output of shape"):
            pool(x, 2, 1, 1)
