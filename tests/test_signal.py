"""Tests of fastconv.correlate2d / convolve2d: against their textbook oracles
(fastconv.reference), against scipy.signal when it is installed, and the
commutativity of the full convolution."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference as ref
from helpers import DTYPES, assert_close

HYP = settings(max_examples=80, deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ["full", "valid", "same"]
shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))


def _valid_ok(s1, s2):
    return (s1[0] >= s2[0] and s1[1] >= s2[1]) or (s2[0] >= s1[0] and s2[1] >= s1[1])


def _pair(seed, s1, s2, dtype):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(s1).astype(dtype), rng.standard_normal(s2).astype(dtype))


@pytest.mark.parametrize("fn", ["correlate2d", "convolve2d"])
@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(s1=shapes, s2=shapes, mode=st.sampled_from(MODES), seed=st.integers(0, 2**32 - 1))
def test_matches_the_oracle(fn, dtype, s1, s2, mode, seed):
    if mode == "valid" and not _valid_ok(s1, s2):
        return
    a, b = _pair(seed, s1, s2, dtype)
    got = getattr(fastconv, fn)(a, b, mode)
    want = getattr(ref, fn)(a, b, mode)
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    assert_close(got, want, dtype)


@pytest.mark.parametrize("fn", ["correlate2d", "convolve2d"])
@pytest.mark.parametrize("dtype", DTYPES)
@HYP
@given(s1=shapes, s2=shapes, mode=st.sampled_from(MODES), seed=st.integers(0, 2**32 - 1))
def test_matches_scipy(fn, dtype, s1, s2, mode, seed):
    signal = pytest.importorskip("scipy.signal")
    if mode == "valid" and not _valid_ok(s1, s2):
        with pytest.raises(ValueError):
            getattr(signal, fn)(np.ones(s1), np.ones(s2), mode)
        with pytest.raises(ValueError, match="at least as large"):
            getattr(fastconv, fn)(np.ones(s1), np.ones(s2), mode)
        return
    a, b = _pair(seed, s1, s2, dtype)
    want = getattr(signal, fn)(a, b, mode)
    got = getattr(fastconv, fn)(a, b, mode)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert_close(got, want.astype(np.float64), dtype)


@pytest.mark.parametrize("shape", [(300, 257), (64, 1024)])
@pytest.mark.parametrize("k", [(3, 3), (4, 6), (7, 2)])
@pytest.mark.parametrize("mode", MODES)
def test_large_images_match_scipy(shape, k, mode):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape), rng.standard_normal(k)
    for fn in ("correlate2d", "convolve2d"):
        assert_close(getattr(fastconv, fn)(a, b, mode), getattr(signal, fn)(a, b, mode),
                     np.float64)


@HYP
@given(s1=shapes, s2=shapes, seed=st.integers(0, 2**32 - 1))
def test_full_convolution_is_commutative(s1, s2, seed):
    rng = np.random.default_rng(seed)
    # small integers: every product and sum is exact, so the two orders agree bit for bit
    a = rng.integers(-9, 10, s1).astype(np.float64)
    b = rng.integers(-9, 10, s2).astype(np.float64)
    np.testing.assert_array_equal(fastconv.convolve2d(a, b, "full"),
                                  fastconv.convolve2d(b, a, "full"))
    x, y = rng.standard_normal(s1), rng.standard_normal(s2)
    assert_close(fastconv.convolve2d(x, y), fastconv.convolve2d(y, x), np.float64)


def test_textbook_identity_filter_gradient():
    """SPEC: dE/dw = correlate2d(o, delta, 'valid') = convolve2d(rot180(delta), o, 'valid')."""
    from helpers import SPEC_DELTA, SPEC_DW, SPEC_O

    np.testing.assert_array_equal(np.round(fastconv.correlate2d(SPEC_O, SPEC_DELTA, "valid"), 6),
                                  SPEC_DW)
    np.testing.assert_allclose(fastconv.convolve2d(SPEC_DELTA[::-1, ::-1], SPEC_O, "valid"),
                               fastconv.correlate2d(SPEC_O, SPEC_DELTA, "valid"), rtol=1e-14)


def test_dtypes_and_lists():
    assert fastconv.correlate2d([[1, 2], [3, 4]], [[1]]).dtype == np.float64
    assert fastconv.convolve2d(np.ones((3, 3), np.float32), np.ones((2, 2), np.float32)).dtype \
        == np.float32
    np.testing.assert_array_equal(fastconv.convolve2d([[1, 2]], [[1, 1]]), [[1, 3, 2]])


@pytest.mark.parametrize("args, exc, match", [
    ((np.ones(3), np.ones((2, 2))), ValueError, "in1 must be 2-D"),
    ((np.ones((2, 2)), np.ones((2, 2, 1))), ValueError, "in2 must be 2-D"),
    ((np.ones((0, 2)), np.ones((2, 2))), ValueError, "empty"),
    ((np.ones((2, 2)), np.ones((2, 2)), "wide"), ValueError, "mode"),
    ((np.ones((2, 5)), np.ones((5, 2)), "valid"), ValueError, "at least as large"),
    ((np.ones((2, 2), complex), np.ones((2, 2))), TypeError, "real numbers"),
])
def test_bad_input(args, exc, match):
    for fn in (fastconv.correlate2d, fastconv.convolve2d):
        with pytest.raises(exc, match=match):
            fn(*args)
