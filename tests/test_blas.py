"""The GEMM behind every kernel (``_blas.pyx``): the library it wraps and
fastconv's own AVX-512 GEMM (``_gemm_avx512.h``) in front of it.

The own GEMM is checked here against NumPy's ``@`` in both dtypes on every
shape class its blocking has (row panels of 8, column panels of three, two
and one vectors and their ragged ends, K blocks of 128 and their
remainders, M blocks of 256, leading dimensions above the row length), forced onto small shapes too, and through the
convolution kernels elsewhere (it is on by default where the CPU has
AVX-512F).
"""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import _blas, _cpu

from helpers import _mkl_installed

needs_avx512 = pytest.mark.skipif(not _cpu.has_avx512f(),
                                  reason="the own GEMM needs AVX-512F")


@pytest.fixture
def own_every_shape():
    """The own GEMM on for every product (where the CPU has it)."""
    previous = _blas._set_own_gemm(True, every_shape=True)
    yield
    _blas._set_own_gemm(*previous)


@pytest.fixture
def blas_only():
    previous = _blas._set_own_gemm(False)
    yield
    _blas._set_own_gemm(*previous)


def _operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def _expected(a, b, c0, trans_a, trans_b, alpha, beta):
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    prod = (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
    return alpha * prod + (beta * c0.astype(np.float64) if beta != 0 else 0.0)


def _check(m, n, k, trans_a, trans_b, alpha, beta, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a, b = _operands(rng, m, n, k, trans_a, trans_b, dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    _blas._gemm_serial(trans_a, trans_b, a, b, c, alpha, beta)
    want = _expected(a, b, c0, trans_a, trans_b, alpha, beta)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    scale = max(1.0, np.sqrt(k)) * max(1.0, abs(alpha)) + abs(beta)
    np.testing.assert_allclose(c, want, rtol=0, atol=tol * scale,
                               err_msg=f"{m}x{n}x{k} ta={trans_a} tb={trans_b}")


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [
    (8, 24, 8),        # one full float64 tile, one 8-step of k
    (8, 48, 16),       # one full float32 tile
    (1, 1, 1),         # everything ragged
    (7, 25, 9),        # row tail, a 1-column panel (float64), k tail
    (9, 16, 15),       # 2-vector float64 panel, 1-vector float32 one
    (17, 40, 129),     # 24 + 16 columns, a K block plus one
    (15, 47, 17),      # float32: a 3-vector panel with a ragged last vector
    (130, 23, 257),    # 16 row panels plus 2 rows, 3 K blocks
    (260, 30, 140),    # an M block (256 rows) plus 4, 2 K blocks
    # more than one M block and at most 4 panels of columns: op(B)'s K
    # block packed once for all of them (FC_GEMM_B_PANELS)
    (800, 64, 200),    # a 5x5 filter gradient's: 48 + 16 / 3 x 24 + 16 columns
    (520, 192, 130),   # float32: exactly 4 panels; float64: 8, packed per panel
    (513, 97, 5),      # float32: 3 panels, a 1-column one; float64: 5
    (64, 196, 256),    # pw1x1's forward
    (33, 200, 3),      # k below one transpose block
])
def test_own_gemm_edges_match_numpy(own_every_shape, m, n, k, trans_a, trans_b, dtype):
    for alpha, beta in ((1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)):
        _check(m, n, k, trans_a, trans_b, alpha, beta, dtype)


@needs_avx512
@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 150), n=st.integers(1, 100), k=st.integers(1, 300),
       trans_a=st.booleans(), trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, -0.5]), beta=st.sampled_from([0.0, 1.0, 0.5]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_own_gemm_matches_numpy(m, n, k, trans_a, trans_b, alpha, beta, dtype, seed):
    previous = _blas._set_own_gemm(True, every_shape=True)
    try:
        _check(m, n, k, trans_a, trans_b, alpha, beta, dtype, seed)
    finally:
        _blas._set_own_gemm(*previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(5, 7, 3), (64, 128, 64), (40, 33, 0), (0, 5, 4)])
def test_gemm_matches_numpy_on_the_default_path(dtype, m, n, k):
    for ta in (False, True):
        for tb in (False, True):
            _check(m, n, k, ta, tb, 1.0, 0.5, dtype)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_gemm_beta_zero_never_reads_c(own_every_shape, dtype):
    """BLAS semantics: with beta == 0, NaN or Inf already in C is overwritten."""
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 37, 50, 70, False, False, dtype)
    c = np.full((37, 50), np.nan, dtype=dtype)
    c[::3] = np.inf
    _blas._gemm_serial(False, False, a, b, c, 1.0, 0.0)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=tol, atol=tol)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_gemm_propagates_nan_and_inf_like_numpy(own_every_shape, dtype):
    rng = np.random.default_rng(2)
    a, b = _operands(rng, 20, 30, 40, False, True, dtype)
    a[3, 5] = np.nan
    a[7, 1] = np.inf
    b[11, 2] = -np.inf
    c = np.zeros((20, 30), dtype=dtype)
    _blas._gemm_serial(False, True, a, b, c, 1.0, 0.0)
    with np.errstate(invalid="ignore"):
        want = a @ b.T
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(c), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(c), np.isneginf(want))
    finite = np.isfinite(want)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(c[finite], want[finite], rtol=tol, atol=tol)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_and_blas_paths_agree_on_the_suite_products(dtype):
    """Each path is checked against NumPy; here the two against each other on
    the products the conv suite makes (the own GEMM's rule takes them)."""
    shapes = [(64, 196, 256, False, False), (256, 196, 64, False, False),
              (64, 256, 196, False, True), (196, 1152, 256, True, False),
              (256, 128, 256, False, False), (64, 500, 50, True, False)]
    rng = np.random.default_rng(3)
    for m, n, k, ta, tb in shapes:
        a, b = _operands(rng, m, n, k, ta, tb, dtype)
        results = []
        for on in (True, False):
            previous = _blas._set_own_gemm(on)
            try:
                c = np.empty((m, n), dtype=dtype)
                _blas._gemm_serial(ta, tb, a, b, c, 1.0, 0.0)
                results.append(c)
            finally:
                _blas._set_own_gemm(*previous)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(results[0], results[1], rtol=0,
                                   atol=tol * np.sqrt(k) * np.abs(results[1]).max())


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_own_gemm_with_padded_rows(own_every_shape, trans_a, trans_b, dtype):
    """Operands and result as row slices of wider arrays (lda, ldb, ldc above
    the row length), as the kernels pass tiles of their planes; the padding
    is neither read into the result nor written."""
    rng = np.random.default_rng(5)
    for m, n, k, pad in ((9, 25, 17, 3), (64, 50, 130, 1), (33, 49, 8, 9)):
        a, b = _operands(rng, m, n, k, trans_a, trans_b, dtype)
        wide_a = np.full((a.shape[0], a.shape[1] + pad), np.nan, dtype=dtype)
        wide_b = np.full((b.shape[0], b.shape[1] + pad), np.inf, dtype=dtype)
        wide_c = np.full((m, n + pad), -7.0, dtype=dtype)
        wide_a[:, :a.shape[1]] = a
        wide_b[:, :b.shape[1]] = b
        c0 = rng.standard_normal((m, n)).astype(dtype)
        wide_c[:, :n] = c0
        _blas._gemm_serial(trans_a, trans_b, wide_a[:, :a.shape[1]],
                              wide_b[:, :b.shape[1]], wide_c[:, :n], 0.5, 1.0)
        want = _expected(a, b, c0, trans_a, trans_b, 0.5, 1.0)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(wide_c[:, :n], want, rtol=0, atol=tol * np.sqrt(k))
        assert np.all(wide_c[:, n:] == -7.0)


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_gemm_from_many_threads(own_every_shape, dtype):
    """Each thread has its own workspace (freed when the thread ends): many
    short-lived threads at once give the serial results, bit for bit."""
    rng = np.random.default_rng(4)
    jobs = [_operands(rng, 40 + i, 30 + 2 * i, 50 + 3 * i, i % 2 == 1, i % 3 == 0,
                      dtype) + (i % 2 == 1, i % 3 == 0) for i in range(12)]

    def run(job):
        a, b, ta, tb = job
        m = a.shape[1] if ta else a.shape[0]
        n = b.shape[0] if tb else b.shape[1]
        c = np.empty((m, n), dtype=a.dtype)
        _blas._gemm_serial(ta, tb, a, b, c, 1.0, 0.0)
        return c

    serial = [run(job) for job in jobs]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=6) as pool:
            concurrent = list(pool.map(run, jobs))
        for s, c in zip(serial, concurrent):
            assert np.array_equal(s, c)


def test_gemm_switch_is_reported_and_honoured():
    """blas_info() and show_config say whether the own GEMM is on;
    FASTCONV_GEMM=blas turns it off, and FASTCONV_BLAS=mkl (oneMKL) is
    never overridden."""
    code = textwrap.dedent("""
        from fastconv._blas import blas_info
        from fastconv._config import config
        print(blas_info()["own_gemm"], config()["own_gemm"])
    """)

    def own(env):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)
        assert proc.returncode == 0, proc.stderr
        flag, _, text = proc.stdout.strip().partition(" ")
        assert (flag == "True") == (text != "off"), proc.stdout
        return flag == "True"

    assert own({"FASTCONV_GEMM": ""}) == _cpu.has_avx512f()
    assert not own({"FASTCONV_GEMM": "blas"})
    assert not own({"FASTCONV_GEMM": " BLAS "})
    assert own({"FASTCONV_GEMM": "", "FASTCONV_BLAS": "builtin"}) == _cpu.has_avx512f()
    if _mkl_installed():
        assert not own({"FASTCONV_GEMM": "", "FASTCONV_BLAS": "mkl"})


def test_gemm_serial_rejects_mismatched_shapes_and_strided_rows():
    with pytest.raises(ValueError, match="shapes do not match"):
        _blas._gemm_serial(False, False, np.ones((3, 4)), np.ones((5, 2)),
                              np.empty((3, 2)), 1.0, 0.0)
    with pytest.raises(ValueError, match="contiguous rows"):
        _blas._gemm_serial(False, False, np.ones((3, 8))[:, ::2], np.ones((4, 2)),
                              np.empty((3, 2)), 1.0, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, k, n, threads", [(37, 19, 23, 2), (1, 5, 7, 3), (6, 0, 4, 2),
                                              (5, 3, 40, 2), (64, 64, 64, 1), (2, 9, 1, 4),
                                              (0, 3, 5, 2)])
def test_gemm_split_is_a_matmul(dtype, trans_a, trans_b, m, k, n, threads):
    """The Linear layer's and the benchmark's GEMM (the longer side of c in
    blocks over threads: rows, or columns when c is wider than tall)
    computes op(a) @ op(b) for every transpose, with fewer rows or columns
    than threads, an empty inner dimension and an empty result."""
    from fastconv._simd import kernels

    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = np.full((m, n), np.nan, dtype=dtype)
    kernels.gemm_split(a, b, c, trans_a, trans_b, threads)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [(600, 200, 96), (40, 300, 700), (130, 64, 129)])
def test_gemm_split_gives_the_same_bits_for_any_thread_count(dtype, trans_a, trans_b, shape):
    """Several blocks here (of rows, or of columns when c is wider than
    tall; some taken by the own GEMM and some by the BLAS, by shape): they
    depend on the shape only, and every one lands where it belongs."""
    from fastconv._simd import kernels

    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    results = []
    for threads in (1, 2, 3, 8):
        c = np.full((m, n), np.nan, dtype=dtype)
        kernels.gemm_split(a, b, c, trans_a, trans_b, threads)
        results.append(c)
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol)
