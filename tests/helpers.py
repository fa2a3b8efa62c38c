"""Assertions and data makers shared by the test modules."""

import numpy as np
import pytest

# SPEC.md's worked filter-gradient example: input o, sensitivity map delta and
# the expected 2x2 filter gradient (to 6 decimals).
SPEC_O = np.array([[0.51, 0.9, 0.88, 0.84, 0.05],
                   [0.4, 0.62, 0.22, 0.59, 0.1],
                   [0.11, 0.2, 0.74, 0.33, 0.14],
                   [0.47, 0.01, 0.85, 0.7, 0.09],
                   [0.76, 0.19, 0.72, 0.17, 0.57]])
SPEC_DELTA = np.array([[0, 0, 0.0686, 0],
                       [0, 0.0364, 0, 0],
                       [0, 0.0467, 0, 0],
                       [0, 0, 0, -0.0681]])
SPEC_DW = np.array([[0.044606, 0.094061],
                    [0.011262, 0.068288]])

# Relative tolerances the kernels must meet against the float64 oracles.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype=None):
    """Compare a kernel result with an oracle result.

    The error is measured relative to the largest magnitude of the expected
    array (elementwise relative error is meaningless for sums that cancel).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    dtype = np.dtype(dtype or actual.dtype)
    if dtype in RTOL:
        assert actual.dtype == dtype, (actual.dtype, dtype)
    rtol = RTOL.get(dtype, 1e-10)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN positions differ"
    infinite = np.isinf(expected)
    assert np.array_equal(actual[infinite], expected[infinite]), "infinities differ"
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    err = float(np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]), initial=0.0))
    assert err <= rtol * scale, f"max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


def garbage_output_array(shape, dtype, zero=False):
    """``fastconv._validation.output_array``, except that uninitialized
    arrays come filled with garbage: NaN for floats, -1 for integers.  Tests
    patch it into ``fastconv.functional`` to check that a kernel trusted
    with uninitialized memory writes every element."""
    from fastconv._validation import output_array
    out = output_array(shape, dtype, zero)
    if not zero:
        out.fill(np.nan if out.dtype.kind == "f" else -1)
    return out


def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def numgrad(f, a, eps=1e-6):
    """Central finite-difference gradient of the scalar function ``f`` at ``a``
    (float64), one coordinate at a time."""
    a = np.array(a, dtype=np.float64)
    grad = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        fp = f(a)
        a.flat[i] = old - eps
        fm = f(a)
        a.flat[i] = old
        grad.flat[i] = (fp - fm) / (2 * eps)
    return grad


def every_kernel_output(rng, dtype):
    """Outputs of every kernel path on one random problem: grouped, depthwise,
    strided-dilated depthwise, 1x1 and 'same' convolutions (the gather and both
    scatter input gradients), and max/avg pools through the stride-2 and the general loops.
    Used to compare builds, thread counts and processes bit for bit."""
    import fastconv
    from fastconv import functional

    out = []
    x = rng.standard_normal((3, 8, 17, 13)).astype(dtype)
    for w_shape, kw in [((12, 4, 3, 3), dict(stride=2, padding=1, groups=2)),
                        ((8, 1, 3, 3), dict(padding=1, groups=8)),
                        ((8, 1, 5, 3), dict(stride=(2, 1), dilation=2, groups=8)),
                        # 3x3 depthwise with column stride 1 (_depthwise_avx2.h):
                        # channel multiplier 2 and dilation, and row stride 2
                        ((16, 1, 3, 3), dict(padding=2, dilation=2, groups=8)),
                        ((8, 1, 3, 3), dict(stride=(2, 1), padding=(0, 1), groups=8)),
                        ((6, 8, 1, 1), {}),
                        ((4, 8, 5, 2), dict(dilation=(2, 1), padding="same"))]:
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        y = fastconv.conv2d(x, w, b, **kw)
        g = rng.standard_normal(y.shape).astype(dtype)
        try:
            for method, position_major in (("gather", -1), ("scatter", 0), ("scatter", 1)):
                functional._FORCE_GRAD_INPUT_METHOD = method
                functional._kernels._tuning(scatter_position_major=position_major)
                out.append(fastconv.conv2d_grad_input(g, w, x.shape, **kw))
        finally:
            functional._FORCE_GRAD_INPUT_METHOD = None
            functional._kernels._tuning(scatter_position_major=-1)
        out += [y, fastconv.conv2d_grad_weight(x, g, w.shape, **kw), fastconv.conv2d_grad_bias(g)]
    for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 3, 1), (4, 3, 2)]:
        m, idx = fastconv.max_pool2d(x, k, s, p, ceil_mode=True)
        a = fastconv.avg_pool2d(x, k, s, p, ceil_mode=True)
        out += [m, idx, fastconv.max_pool2d_grad(np.sin(m), idx, x.shape), a,
                fastconv.avg_pool2d_grad(np.sin(a), x.shape, k, s, p, True)]
    # rows wide enough for the AVX2 stride-2 row kernels (_pool_avx2.h)
    x = rng.standard_normal((2, 3, 19, 41)).astype(dtype)
    for k, p in [(2, 0), (3, 0), (3, 1), (2, 1)]:
        m, idx = fastconv.max_pool2d(x, k, 2, p)
        a = fastconv.avg_pool2d(x, k, 2, p)
        out += [m, idx, fastconv.max_pool2d_grad(np.sin(m), idx, x.shape), a,
                fastconv.avg_pool2d_grad(np.sin(a), x.shape, k, 2, p)]
    # ... and for the stride-2 patch gather and col2im scatter (_rows_avx2.h):
    # 20- and 21-wide rows
    for pad in (0, 1):
        w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
        y = fastconv.conv2d(x, w, stride=2, padding=pad)
        g = rng.standard_normal(y.shape).astype(dtype)
        out += [y, fastconv.conv2d_grad_weight(x, g, w.shape, stride=2, padding=pad)]
        try:
            functional._FORCE_GRAD_INPUT_METHOD = "scatter"
            out.append(fastconv.conv2d_grad_input(g, w, x.shape, stride=2, padding=pad))
        finally:
            functional._FORCE_GRAD_INPUT_METHOD = None
    # Winograd, forward and both gradients, in blocks that cut
    # tile rows and images (the thresholds lowered to reach this size)
    x = rng.standard_normal((3, 5, 9, 12)).astype(dtype)
    w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    saved = (functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE,
             functional._WINOGRAD_BLOCK_TILES)
    try:
        functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE = 1, 1
        functional._WINOGRAD_BLOCK_TILES = 7
        for pad, layout in ((1, "NCHW"), ((0, 2), "NCHW"), ((2, 1), "NHWC")):
            xl, wl = x, w
            if layout == "NHWC":
                xl, wl = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
            kw = dict(padding=pad, layout=layout)
            y = fastconv.conv2d(xl, wl, b, **kw)
            out += [y, fastconv.conv2d_grad_input(np.sin(y), wl, xl.shape, **kw),
                    fastconv.conv2d_grad_weight(xl, np.sin(y), wl.shape, **kw)]
    finally:
        (functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE,
         functional._WINOGRAD_BLOCK_TILES) = saved
    return out


def guarded_copy(a, side="after"):
    """A copy of ``a`` (C-contiguous) whose data ends at (``side="after"``)
    or starts at (``"before"``) a page boundary next to a no-access page:
    a kernel that reads one element past the array's end (or before its
    start) faults there instead of reading a neighbour's bytes.  Linux /
    POSIX only (mmap + mprotect); the array keeps its mapping alive."""
    import ctypes
    import mmap

    a = np.ascontiguousarray(a)
    page = mmap.PAGESIZE
    data_pages = max(1, -(-a.nbytes // page))
    buf = mmap.mmap(-1, (data_pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    guard, offset = ((base + data_pages * page, data_pages * page - a.nbytes) if side == "after"
                     else (base, page))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mprotect(ctypes.c_void_p(guard), ctypes.c_size_t(page), 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    return out


def _mkl_installed():
    from fastconv._blas import _mkl_libraries
    return bool(_mkl_libraries())


# Tests of the opt-in oneMKL backend (FASTCONV_BLAS=mkl) run where it is installed.
needs_mkl = pytest.mark.skipif(not _mkl_installed(),
                               reason="no oneMKL installed (pip install mkl==2026.2.1)")
