"""Reliability properties (issue 6) that the other modules do not already test:

1. bitwise determinism across thread counts and SIMD builds, in separate
   processes (``OMP_NUM_THREADS=1`` against ``=2`` and ``=3``);
2. resident memory stays flat over thousands of calls of every kernel;
3. float32 results stay within 1e-5 (relative to the largest magnitude) of
   float64 on every case of the speed suite;
4. a kernel whose workspace allocation fails raises MemoryError (and works
   again afterwards);
5. the fuzz target runs clean on a small budget.

Thread safety and GIL release are in test_api.py; hostile sizes and bad
input in test_validation.py; NaN/inf rules in test_conv.py / test_pool.py.
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _bench
from fastconv._openmp import openmp_enabled
from helpers import needs_mkl

# Every kernel path (helpers.every_kernel_output), hashed, in a fresh process.
_DIGEST_SCRIPT = r"""
import hashlib, sys
import numpy as np
import fastconv
from fastconv import _threads
sys.path.insert(0, sys.argv[1])
from helpers import every_kernel_output
_threads.SMALL_WORK = 0          # even small calls use every thread
digest = hashlib.sha256()
for dtype in (np.float32, np.float64):
    for a in every_kernel_output(np.random.default_rng(2024), dtype):
        digest.update(np.ascontiguousarray(a).tobytes())
print(fastconv.get_num_threads(), digest.hexdigest())
"""


def _digest(**env):
    full = dict(os.environ, **env)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT, tests_dir], env=full,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    threads, digest = proc.stdout.split()
    return int(threads), digest


@pytest.mark.skipif(not openmp_enabled(), reason="serial build: one thread only")
def test_thread_counts_and_simd_builds_give_identical_bytes():
    one = _digest(OMP_NUM_THREADS="1")
    two = _digest(OMP_NUM_THREADS="2")
    three = _digest(OMP_NUM_THREADS="3")
    base = _digest(OMP_NUM_THREADS="2", FASTCONV_SIMD="baseline")
    assert (one[0], two[0], three[0]) == (1, 2, 3)
    assert one[1] == two[1] == three[1] == base[1]


@pytest.mark.skipif(not openmp_enabled(), reason="serial build: one thread only")
@needs_mkl
def test_thread_counts_give_identical_bytes_on_mkl():
    """The same with the GEMMs on oneMKL (FASTCONV_BLAS=mkl): the work split
    and the summation order never depend on the thread count, whatever the
    BLAS."""
    runs = [_digest(OMP_NUM_THREADS=str(n), FASTCONV_BLAS="mkl") for n in (1, 2, 3)]
    assert [threads for threads, _ in runs] == [1, 2, 3]
    assert runs[0][1] == runs[1][1] == runs[2][1]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer keeps freed memory in quarantine")
def test_memory_stays_flat_over_thousands_of_calls():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    wd = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1, groups=2)
    m, idx = fastconv.max_pool2d(x, 3, 2, 1)
    a = fastconv.avg_pool2d(x, 3, 2, 1)
    calls = [
        lambda: fastconv.conv2d(x, w, padding=1, groups=2),
        lambda: fastconv.conv2d(x, wd, padding=1, groups=4),
        lambda: fastconv.conv2d_grad_input(y, w, x.shape, padding=1, groups=2),
        lambda: fastconv.conv2d_grad_weight(x, y, w.shape, padding=1, groups=2),
        lambda: fastconv.conv2d_grad_bias(y),
        lambda: fastconv.max_pool2d(x, 3, 2, 1),
        lambda: fastconv.max_pool2d_grad(m, idx, x.shape),
        lambda: fastconv.avg_pool2d(x, 3, 2, 1),
        lambda: fastconv.avg_pool2d_grad(a, x.shape, 3, 2, 1),
    ]
    for call in calls:            # warm up caches, thread pools, allocator arenas
        for _ in range(200):
            call()
    before = _rss_bytes()
    for call in calls:
        for _ in range(2000):
            call()
    growth = _rss_bytes() - before
    # 18,000 calls: a leak of even 1 KB per call would show as 18 MB
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"


def _rel(a, b):
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("case", _bench.CONV_SUITE, ids=lambda c: c.name)
def test_float32_stays_close_to_float64_on_the_suite(case):
    x32, w32, b32, g32 = _bench.conv_arrays(case, np.dtype(np.float32))
    x64, w64, b64, g64 = (a.astype(np.float64) for a in (x32, w32, b32, g32))
    kw = dict(stride=case.stride, padding=case.pad, groups=case.groups)
    assert _rel(fastconv.conv2d(x32, w32, b32, **kw), fastconv.conv2d(x64, w64, b64, **kw)) < 1e-5
    assert _rel(fastconv.conv2d_grad_input(g32, w32, x32.shape, **kw),
                fastconv.conv2d_grad_input(g64, w64, x64.shape, **kw)) < 1e-5
    assert _rel(fastconv.conv2d_grad_weight(x32, g32, w32.shape, **kw),
                fastconv.conv2d_grad_weight(x64, g64, w64.shape, **kw)) < 1e-5
    assert _rel(fastconv.conv2d_grad_bias(g32), fastconv.conv2d_grad_bias(g64)) < 1e-5


@pytest.mark.parametrize("case", _bench.POOL_SUITE, ids=lambda c: c.name)
def test_float32_pools_stay_close_to_float64(case):
    x32 = _bench.pool_arrays(case, np.dtype(np.float32))
    x64 = x32.astype(np.float64)
    pool = fastconv.max_pool2d if case.kind == "max" else fastconv.avg_pool2d
    y32, y64 = pool(x32, case.k, case.stride), pool(x64, case.k, case.stride)
    if case.kind == "max":
        np.testing.assert_array_equal(y32[1], y64[1])        # same winners
        np.testing.assert_array_equal(y32[0], y64[0].astype(np.float32))
        return
    assert _rel(y32, y64) < 1e-5
    g32 = np.sin(y32)
    assert _rel(fastconv.avg_pool2d_grad(g32, x32.shape, case.k, case.stride),
                fastconv.avg_pool2d_grad(g32.astype(np.float64), x64.shape, case.k,
                                         case.stride)) < 1e-5


def test_fuzz_target_runs_clean_on_a_small_budget():
    """The on-demand fuzz target (fuzz/fuzz_api.py), 3000 seeded random inputs,
    so that it cannot rot; longer runs are in the README's development notes."""
    import runpy
    from pathlib import Path

    target = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_api.py"
    if not target.exists():
        pytest.skip("fuzz/ not available (tests run outside the source tree)")
    fuzz = runpy.run_path(str(target))
    rng = np.random.default_rng(12345)
    for _ in range(3000):
        fuzz["check"](rng.bytes(int(rng.integers(0, 96))))


def _kernel_calls(rng):
    from fastconv import functional

    x = rng.standard_normal((2, 4, 11, 10))
    w = rng.standard_normal((6, 2, 3, 3))
    wd = rng.standard_normal((4, 1, 3, 3))
    g = rng.standard_normal((2, 6, 6, 5))
    gd = rng.standard_normal((2, 4, 11, 10))
    ww = rng.standard_normal((3, 4, 3, 3))
    gw = rng.standard_normal((2, 3, 11, 10))

    def grad_input(method, position_major=-1):
        def call():
            functional._FORCE_GRAD_INPUT_METHOD = method
            functional._kernels._tuning(scatter_position_major=position_major)
            try:
                return fastconv.conv2d_grad_input(g, w, x.shape, stride=2, padding=1, groups=2)
            finally:
                functional._FORCE_GRAD_INPUT_METHOD = None
                functional._kernels._tuning(scatter_position_major=-1)
        return call

    def winograd(grad):
        def call():
            saved = functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE
            functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE = 1, 1
            try:
                if grad == "input":
                    return fastconv.conv2d_grad_input(gw, ww, x.shape, padding=1)
                if grad == "weight":
                    return fastconv.conv2d_grad_weight(x, gw, ww.shape, padding=1)
                if grad == "nhwc":
                    xn, wn = x.transpose(0, 2, 3, 1), ww.transpose(2, 3, 1, 0)
                    gn = gw.transpose(0, 2, 3, 1)
                    kw = dict(padding=1, layout="NHWC")
                    return (fastconv.conv2d(xn, wn, **kw),
                            fastconv.conv2d_grad_input(gn, wn, xn.shape, **kw),
                            fastconv.conv2d_grad_weight(xn, gn, wn.shape, **kw))
                return fastconv.conv2d(x, ww, padding=1)
            finally:
                functional._WINOGRAD_MIN_CHANNELS, functional._WINOGRAD_MIN_PLANE = saved
        return call

    # enough planes of narrow outputs for the pools' channels-last staging
    xs = rng.standard_normal((4, 8, 6, 6))
    return {
        "conv2d": lambda: fastconv.conv2d(x, w, stride=2, padding=1, groups=2),
        "winograd": winograd(None),
        "winograd_grad_input": winograd("input"),
        "winograd_grad_weight": winograd("weight"),
        "winograd_nhwc": winograd("nhwc"),
        "grad_weight": lambda: fastconv.conv2d_grad_weight(x, g, w.shape, stride=2, padding=1,
                                                           groups=2),
        "grad_input_gather": grad_input("gather"),
        "grad_input_scatter": grad_input("scatter", 0),
        "grad_input_scatter_position_major": grad_input("scatter", 1),
        "depthwise": lambda: fastconv.conv2d(x, wd, padding=1, groups=4),
        "depthwise_grad_weight": lambda: fastconv.conv2d_grad_weight(x, gd, wd.shape, padding=1,
                                                                     groups=4),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 3, 2, 1),
        "avg_pool2d_grad": lambda: fastconv.avg_pool2d_grad(g[:, :4], (2, 4, 11, 10), 3, 2, 1),
        "max_pool2d_small_planes": lambda: fastconv.max_pool2d(xs, 2),
        "avg_pool2d_small_planes": lambda: fastconv.avg_pool2d(xs, 3, 2, 1),
        "avg_pool2d_grad_small_planes": lambda: fastconv.avg_pool2d_grad(
            xs[:, :, :3, :3], xs.shape, 3, 2, 1),
    }


@pytest.mark.parametrize("name", list(_kernel_calls(np.random.default_rng(0))))
def test_failed_workspace_allocation_is_a_memory_error(name, n_threads):
    calls = _kernel_calls(np.random.default_rng(4))
    expected = calls[name]()
    from fastconv._simd import kernels

    kernels._tuning(fail_allocations=True)
    try:
        with pytest.raises(MemoryError):
            calls[name]()
    finally:
        kernels._tuning(fail_allocations=False)
    got = calls[name]()             # and the kernel works again afterwards
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        np.testing.assert_array_equal(a, b)
