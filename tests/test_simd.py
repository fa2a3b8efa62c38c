"""Runtime SIMD dispatch (fastconv._simd): the baseline and AVX2 builds of the
kernels must return bitwise identical results, and FASTCONV_SIMD must choose."""

import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _simd, functional
from helpers import every_kernel_output

needs_avx2 = pytest.mark.skipif("avx2" not in _simd.available(),
                                reason="no AVX2 build or no AVX2/FMA on this CPU")


@needs_avx2
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_baseline_and_avx2_builds_agree_bitwise(monkeypatch, dtype):
    from fastconv import _kernels, _kernels_avx2

    results = []
    for module in (_kernels, _kernels_avx2):
        monkeypatch.setattr(functional, "_kernels", module)
        results.append(every_kernel_output(np.random.default_rng(3), dtype))
    for base, avx2 in zip(*results):
        np.testing.assert_array_equal(base, avx2)


def _level_in_subprocess(value):
    code = "from fastconv import _simd; print(_simd.level)"
    env = dict(__import__("os").environ, FASTCONV_SIMD=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_environment_forces_the_baseline():
    proc = _level_in_subprocess("baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "baseline"


def test_environment_forces_avx2_without_the_avx512_rows():
    if "avx2" not in _simd.available():
        pytest.skip("no AVX2 build or no AVX2/FMA on this CPU")
    proc = _level_in_subprocess("avx2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "avx2"


def test_auto_picks_the_best_available():
    proc = _level_in_subprocess("auto")
    assert proc.stdout.strip() == _simd.available()[-1]


def test_bad_value_is_refused():
    proc = _level_in_subprocess("avx9000")
    assert proc.returncode != 0
    assert "FASTCONV_SIMD must be auto, baseline, avx2 or avx512" in proc.stderr


def test_show_config_reports_the_level(capsys):
    fastconv.show_config()
    assert f"simd: {_simd.level}" in capsys.readouterr().out


needs_avx512 = pytest.mark.skipif("avx512" not in _simd.available(),
                                  reason="no AVX2 build or no AVX-512F on this CPU")


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 3])
def test_avx512_max_rows_agree_bitwise_with_avx2_rows(monkeypatch, dtype, k):
    """The AVX-512 max-pool rows (whole planes, _pool_avx2.h) give the AVX2
    rows' values and indices bit for bit: rows narrower than one vector to
    several with every remainder, vertical strides 1-3, several planes per
    thread (the prefetch runs into the next plane), ties, NaN and infinities;
    the gradient from those indices is the same too.  Runs the AVX2 build
    whatever FASTCONV_SIMD chose."""
    from fastconv import _kernels_avx2
    monkeypatch.setattr(functional, "_kernels", _kernels_avx2)
    rng = np.random.default_rng(k)
    saved = _kernels_avx2._tuning()["max_pool_avx512"]
    assert _kernels_avx2._tuning(max_pool_avx512=True)["max_pool_avx512"]
    try:
        for width in list(range(k, 40)) + [56, 57, 112, 113]:
            for stride_h in (1, 2, 3):
                shape = (2, 3, 3 * k + 4, width)
                x = rng.integers(-2, 3, size=shape).astype(np.float64)
                x[rng.random(shape) < 0.04] = np.nan
                x[rng.random(shape) < 0.04] = -np.inf
                x[rng.random(shape) < 0.02] = np.inf
                x = x.astype(dtype)
                results = []
                for on in (True, False):
                    _kernels_avx2._tuning(max_pool_avx512=on)
                    y, idx = fastconv.max_pool2d(x, k, (stride_h, 2))
                    g = np.arange(y.size, dtype=dtype).reshape(y.shape) - 3
                    results.append((y, idx, fastconv.max_pool2d_grad(g, idx, shape)))
                for a, b in zip(*results):
                    np.testing.assert_array_equal(a, b, err_msg=f"width {width}, "
                                                                f"stride_h {stride_h}")
    finally:
        _kernels_avx2._tuning(max_pool_avx512=saved)


@needs_avx2
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nhwc_pixel_pools_agree_bitwise_across_builds(monkeypatch, dtype):
    """The channels-last pixel kernels (_pool_avx2.h: fc_max_px, fc_avg_px,
    fc_avg_gather_px; several channel vectors side by side, the max with
    AVX-512 where the CPU has it) give the baseline build's bits, and the
    NCHW kernels' (the same sums in the same order), for every channel
    count from below one vector to past four AVX-512 vectors (each
    remainder, the last vector re-run), 2x2 and 3x3 windows with strides 1
    and 2, padding (clipped windows at the edges), ties, NaN and
    infinities; max values and indices also equal the oracle's."""
    from fastconv import _kernels, _kernels_avx2, reference as ref
    rng = np.random.default_rng(8)
    saved = _kernels_avx2._tuning()["max_pool_avx512"]
    levels = [(_kernels, None), (_kernels_avx2, False)]
    if "avx512" in _simd.available():
        levels.append((_kernels_avx2, True))
    try:
        for ch in list(range(1, 41)) + [63, 64, 65, 70, 97, 129]:
            shape = (2, 7, 6, ch)
            x = rng.integers(-2, 3, size=shape).astype(np.float64)
            x[rng.random(shape) < 0.04] = np.nan
            x[rng.random(shape) < 0.04] = -np.inf
            x[rng.random(shape) < 0.02] = np.inf
            x = x.astype(dtype)
            finite = rng.standard_normal(shape).astype(dtype)   # sums whose order shows
            for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1)]:
                out_shape = fastconv.avg_pool2d(finite, k, s, p, layout="NHWC").shape
                g = rng.standard_normal(out_shape).astype(dtype)

                def nhwc_results():
                    return (*fastconv.max_pool2d(x, k, s, p, layout="NHWC"),
                            fastconv.avg_pool2d(finite, k, s, p, layout="NHWC"),
                            fastconv.avg_pool2d_grad(g, shape, k, s, p, layout="NHWC"))

                results = []
                for module, avx512 in levels:
                    monkeypatch.setattr(functional, "_kernels", module)
                    if avx512 is not None:
                        _kernels_avx2._tuning(max_pool_avx512=avx512)
                    results.append(nhwc_results())
                y, idx = fastconv.max_pool2d(_nchw(x), k, s, p)
                results.append((_nhwc(y), _nhwc(idx),
                                _nhwc(fastconv.avg_pool2d(_nchw(finite), k, s, p)),
                                _nhwc(fastconv.avg_pool2d_grad(_nchw(g), _nchw(x).shape,
                                                               k, s, p))))
                results.append((*ref.max_pool2d(x, k, s, p, layout="NHWC"), *results[0][2:]))
                for other in results[1:]:
                    for name, got, want in zip(("max", "indices", "avg", "avg grad"), other,
                                               results[0]):
                        np.testing.assert_array_equal(got, want,
                                                      err_msg=f"{name}, ch {ch}, k {k}, s {s}")
    finally:
        _kernels_avx2._tuning(max_pool_avx512=saved)


@needs_avx2
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nhwc_depthwise_pixels_agree_bitwise_across_builds(monkeypatch, dtype):
    """The channels-last depthwise pixel (fc_dw_pixel in _depthwise_avx2.h:
    four channel vectors side by side) gives the baseline build's bits in
    the forward and the input gradient, for channel counts from below one
    vector to past four (each remainder), with strides, dilation and
    padding that clip taps at the edges; and stays close to the oracle."""
    from fastconv import _kernels, _kernels_avx2, reference as ref
    rng = np.random.default_rng(9)
    for ch in list(range(1, 36)) + [63, 64, 65, 129]:
        x = rng.standard_normal((2, 7, 8, ch)).astype(dtype)
        w = rng.standard_normal((3, 3, 1, ch)).astype(dtype)
        b = rng.standard_normal(ch).astype(dtype)
        for kw in (dict(padding=1), dict(stride=2, padding=1), dict(dilation=2, padding=2)):
            y = fastconv.conv2d(x, w, b, groups=ch, layout="NHWC", **kw)
            g = rng.standard_normal(y.shape).astype(dtype)
            results = []
            for module in (_kernels, _kernels_avx2):
                monkeypatch.setattr(functional, "_kernels", module)
                results.append((fastconv.conv2d(x, w, b, groups=ch, layout="NHWC", **kw),
                                fastconv.conv2d_grad_input(g, w, x.shape, groups=ch,
                                                           layout="NHWC", **kw)))
            for got, want in zip(*results):
                np.testing.assert_array_equal(got, want, err_msg=f"ch {ch}, {kw}")
            if dtype == np.float64:
                np.testing.assert_allclose(results[0][0], ref.conv2d(
                    x, w, b, groups=ch, layout="NHWC", **kw), rtol=1e-12, atol=1e-12)


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


_GUARD_SCRIPT = r"""
import sys
import numpy as np
import fastconv
from fastconv import _simd
sys.path.insert(0, sys.argv[1])
from helpers import garbage_output_array, guarded_copy

kernels = _simd.kernels
assert _simd.level == _simd.available()[-1], (_simd.level, _simd.available())
settings = [dict(max_pool_avx512=on) for on in (True, False)]
if _simd.level == "avx512":
    assert kernels._tuning(max_pool_avx512=True)["max_pool_avx512"]
rng = np.random.default_rng(0)
for tuning in settings:
    kernels._tuning(**tuning)
    for dtype in (np.float32, np.float64):
        for k in (2, 3):
            for width in list(range(k, 40)) + [56, 57]:
                for stride_h in (1, 2):
                    shape = (1, 2, 2 * k + 3, width)
                    for side in ("after", "before"):
                        x = guarded_copy(rng.standard_normal(shape).astype(dtype), side)
                        y, idx = fastconv.max_pool2d(x, k, (stride_h, 2))
                        a = fastconv.avg_pool2d(x, k, (stride_h, 2))
                        fastconv.max_pool2d_grad(guarded_copy(y, side), guarded_copy(idx, side),
                                                 shape)
                        fastconv.avg_pool2d_grad(guarded_copy(a, side), shape, k, (stride_h, 2))
            # channels-last windows: vectors along C, the last one re-run
            for ch in (8, 9, 15, 16, 17, 33, 64, 70):
                shape = (1, 2 * k + 1, 5, ch)
                for side in ("after", "before"):
                    x = guarded_copy(rng.standard_normal(shape).astype(dtype), side)
                    y, idx = fastconv.max_pool2d(x, k, 2, 1, layout="NHWC")
                    a = fastconv.avg_pool2d(x, k, 2, 1, layout="NHWC")
                    fastconv.max_pool2d_grad(guarded_copy(y, side), guarded_copy(idx, side),
                                             shape, layout="NHWC")
                    fastconv.avg_pool2d_grad(guarded_copy(a, side), shape, k, 2, 1,
                                             layout="NHWC")
# large gradients stream their planes out (forced on here): written into
# results that end, or start, next to a no-access page, a store one element
# outside would fault
from fastconv import functional
kernels._tuning(stream_min_bytes=0)
for side in ("after", "before"):
    functional.output_array = (lambda shape, dtype, zero=False, side=side:
                               guarded_copy(garbage_output_array(shape, dtype, zero), side))
    for dtype in (np.float32, np.float64):
        for shape in ((2, 3, 5, 5), (1, 2, 7, 9), (2, 2, 12, 56), (1, 2, 11, 57)):
            x = rng.standard_normal(shape).astype(dtype)
            for k, s, p in ((2, 2, 0), (3, 2, 0), (3, 2, 1), (2, 1, 1)):
                y, idx = fastconv.max_pool2d(x, k, s, p)
                fastconv.max_pool2d_grad(y, idx, shape)
                fastconv.avg_pool2d_grad(y, shape, k, s, p)
print("ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="guard pages via mmap/mprotect (Linux)")
def test_pool_row_kernels_read_nothing_outside_their_arrays():
    """Every pooling kernel of the best SIMD level (AVX-512 rows on and off
    where the CPU has them) on inputs that end or start next to a no-access
    page, for rows of every width up to a few vectors: a read one element
    outside would fault (in a subprocess, so a fault fails this test instead
    of the run).  The streamed gradients write into results placed the same
    way."""
    import os
    env = dict(os.environ, FASTCONV_SIMD="auto")   # the best level this CPU runs
    proc = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT, os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode,
                                                                  proc.stderr[-2000:])
