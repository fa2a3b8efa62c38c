"""The public API contract of fastconv.

Names and signatures (parameter names, order, kinds and defaults), the version
string, ``show_config``, the thread-count controls, GIL release and thread
safety of the kernels, and the rules every result obeys (a new C-contiguous
array, with the documented dtype).
"""

import importlib.metadata
import inspect
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv

_EMPTY = inspect.Parameter.empty

# name -> [(parameter, default)], in order; _EMPTY marks a required parameter
EXPECTED_SIGNATURES = {
    "conv2d": [("x", _EMPTY), ("weight", _EMPTY), ("bias", None), ("stride", 1),
               ("padding", 0), ("dilation", 1), ("groups", 1), ("layout", "NCHW")],
    "conv2d_grad_input": [("grad_out", _EMPTY), ("weight", _EMPTY), ("input_shape", _EMPTY),
                          ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
                          ("layout", "NCHW")],
    "conv2d_grad_weight": [("x", _EMPTY), ("grad_out", _EMPTY), ("weight_shape", _EMPTY),
                           ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
                           ("layout", "NCHW")],
    "conv2d_grad_bias": [("grad_out", _EMPTY), ("layout", "NCHW")],
    "max_pool2d": [("x", _EMPTY), ("kernel_size", _EMPTY), ("stride", None), ("padding", 0),
                   ("ceil_mode", False), ("layout", "NCHW")],
    "max_pool2d_grad": [("grad_out", _EMPTY), ("indices", _EMPTY), ("input_shape", _EMPTY),
                        ("layout", "NCHW")],
    "avg_pool2d": [("x", _EMPTY), ("kernel_size", _EMPTY), ("stride", None), ("padding", 0),
                   ("ceil_mode", False), ("count_include_pad", True), ("layout", "NCHW")],
    "avg_pool2d_grad": [("grad_out", _EMPTY), ("input_shape", _EMPTY), ("kernel_size", _EMPTY),
                        ("stride", None), ("padding", 0), ("ceil_mode", False),
                        ("count_include_pad", True), ("layout", "NCHW")],
    "set_num_threads": [("n", _EMPTY)],
    "get_num_threads": [],
}
KERNELS = [name for name in EXPECTED_SIGNATURES if not name.endswith("num_threads")]


# ---------------------------------------------------------------------------
# 1. Names and signatures
# ---------------------------------------------------------------------------

def test_public_names_exist():
    for name in list(EXPECTED_SIGNATURES) + ["show_config", "reference", "__version__"]:
        assert hasattr(fastconv, name), name
        assert name in fastconv.__all__, name
    for name in fastconv.__all__:
        assert hasattr(fastconv, name), f"__all__ lists missing {name}"
    assert inspect.ismodule(fastconv.reference)


@pytest.mark.parametrize("name", list(EXPECTED_SIGNATURES))
def test_signature(name):
    fn = getattr(fastconv, name)
    assert callable(fn)
    params = list(inspect.signature(fn).parameters.values())
    got = [(p.name, p.default) for p in params]
    assert got == EXPECTED_SIGNATURES[name]
    for p in params:
        # every parameter can be passed positionally and by keyword
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (name, p)
        if p.default is not _EMPTY:
            assert type(p.default) is type(dict(EXPECTED_SIGNATURES[name])[p.name]), p


@pytest.mark.parametrize("name", KERNELS)
def test_reference_has_the_same_signatures(name):
    assert (inspect.signature(getattr(fastconv.reference, name))
            == inspect.signature(getattr(fastconv, name)))


def test_show_config_signature():
    params = list(inspect.signature(fastconv.show_config).parameters.values())
    # show_config() must be callable without arguments
    assert all(p.default is not _EMPTY for p in params)


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_are_documented(name):
    doc = getattr(fastconv, name).__doc__
    assert doc and doc.strip()


def test_keyword_and_positional_calls_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 7, 7))
    w = rng.standard_normal((4, 1, 3, 3))
    b = rng.standard_normal(4)
    pos = fastconv.conv2d(x, w, b, 2, 1, 1, 2)
    kw = fastconv.conv2d(x=x, weight=w, bias=b, stride=2, padding=1, dilation=1, groups=2)
    np.testing.assert_array_equal(pos, kw)
    g = np.ones(pos.shape)
    np.testing.assert_array_equal(
        fastconv.conv2d_grad_input(g, w, x.shape, 2, 1, 1, 2),
        fastconv.conv2d_grad_input(grad_out=g, weight=w, input_shape=x.shape, stride=2,
                                   padding=1, dilation=1, groups=2))
    np.testing.assert_array_equal(
        fastconv.conv2d_grad_weight(x, g, w.shape, 2, 1, 1, 2),
        fastconv.conv2d_grad_weight(x=x, grad_out=g, weight_shape=w.shape, stride=2, padding=1,
                                    dilation=1, groups=2))
    y1, i1 = fastconv.max_pool2d(x, 3, 2, 1, True)
    y2, i2 = fastconv.max_pool2d(x=x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(
        fastconv.max_pool2d_grad(y1, i1, x.shape),
        fastconv.max_pool2d_grad(grad_out=y1, indices=i1, input_shape=x.shape))
    a1 = fastconv.avg_pool2d(x, 3, 2, 1, True, False)
    np.testing.assert_array_equal(
        a1, fastconv.avg_pool2d(x=x, kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                count_include_pad=False))
    np.testing.assert_array_equal(
        fastconv.avg_pool2d_grad(a1, x.shape, 3, 2, 1, True, False),
        fastconv.avg_pool2d_grad(grad_out=a1, input_shape=x.shape, kernel_size=3, stride=2,
                                 padding=1, ceil_mode=True, count_include_pad=False))


# ---------------------------------------------------------------------------
# 2. Version and configuration report
# ---------------------------------------------------------------------------

def test_version_matches_metadata():
    assert isinstance(fastconv.__version__, str)
    assert fastconv.__version__[0].isdigit()
    try:
        installed = importlib.metadata.version("fastconv")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastconv is not installed (an in-place build run with PYTHONPATH=src)")
    assert fastconv.__version__ == installed


def _config_lines(text):
    out = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def test_show_config_prints_version_openmp_threads_blas(capsys):
    fastconv.set_num_threads(None)
    try:
        assert fastconv.show_config() is None
    finally:
        fastconv.set_num_threads(None)
    out = capsys.readouterr().out
    lines = _config_lines(out)
    assert fastconv.__version__ in out
    assert lines.get("fastconv") == fastconv.__version__, out
    assert lines.get("openmp") in {"True", "False"}, out
    assert lines.get("threads") == str(fastconv.get_num_threads()), out
    assert lines.get("blas"), out
    assert lines.get("compiler") and lines["compiler"] != "unknown", out
    assert lines.get("openmp_runtime"), out
    if lines.get("openmp") == "True" and sys.platform.startswith("linux"):
        assert "OpenMP" in lines["openmp_runtime"] and "gomp" in lines["openmp_runtime"], out
    assert lines.get("simd") in {"baseline", "avx2", "avx512"}, out
    assert lines.get("l3_cache") == "not reported" or lines["l3_cache"].endswith(" MiB"), out
    assert lines.get("pool_grad_streaming"), out
    assert lines.get("direct_grad_weight", "").startswith(("on, AVX-512", "off")), out


def test_show_config_reports_set_threads(capsys):
    fastconv.set_num_threads(3)
    try:
        fastconv.show_config()
    finally:
        fastconv.set_num_threads(None)
    lines = _config_lines(capsys.readouterr().out)
    if lines["openmp"] == "True":
        assert lines["threads"] == "3"
    else:
        assert lines["threads"] == "1"


def test_show_config_to_file(capsys):
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    assert capsys.readouterr().out == ""
    lines = _config_lines(buf.getvalue())
    assert {"fastconv", "openmp", "threads", "blas"} <= set(lines)


# ---------------------------------------------------------------------------
# 3. Thread-count controls
# ---------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    yield
    fastconv.set_num_threads(None)


@pytest.mark.parametrize("n", [0, -1, -100])
def test_set_num_threads_rejects_non_positive(n, restore_threads):
    before = fastconv.get_num_threads()
    with pytest.raises(ValueError, match=r"\bn\b"):
        fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before


@pytest.mark.parametrize("n", [1.5, 2.0, "2", True, False, np.float64(2.0), [2], (2,),
                               np.bool_(True), 2 + 0j], ids=repr)
def test_set_num_threads_rejects_non_integers(n, restore_threads):
    before = fastconv.get_num_threads()
    with pytest.raises(TypeError, match=r"\bn\b"):
        fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before


def _openmp():
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    return _config_lines(buf.getvalue())["openmp"] == "True"


@pytest.mark.parametrize("n", [1, 2, 3, 7, np.int64(2), np.uint8(4), np.array(5)], ids=repr)
def test_get_num_threads_returns_the_set_value(n, restore_threads):
    assert fastconv.set_num_threads(n) is None
    got = fastconv.get_num_threads()
    assert type(got) is int
    assert got == (int(n) if _openmp() else 1)


def test_set_num_threads_none_resets(restore_threads):
    fastconv.set_num_threads(None)
    default = fastconv.get_num_threads()
    assert isinstance(default, int) and default >= 1
    fastconv.set_num_threads(default + 3)
    fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() == default


def test_results_do_not_depend_on_the_thread_count(restore_threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 17, 15))
    w = rng.standard_normal((6, 2, 3, 3))
    results = []
    for n in (1, 2, 3):
        fastconv.set_num_threads(n)
        results.append(_all_functions(x, w))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


_SUBPROCESS_CODE = textwrap.dedent("""
    import fastconv
    first = fastconv.get_num_threads()
    fastconv.set_num_threads(5)
    fastconv.set_num_threads(None)
    print(first, fastconv.get_num_threads())
""")


@pytest.mark.parametrize("env_value", ["1", "2", "3"])
def test_omp_num_threads_sets_the_default(env_value):
    if env_value != "1" and not _openmp():
        pytest.skip("built without OpenMP: always one thread")
    env = dict(os.environ, OMP_NUM_THREADS=env_value)
    res = subprocess.run([sys.executable, "-c", _SUBPROCESS_CODE], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    first, after_reset = res.stdout.split()
    assert first == env_value
    assert after_reset == env_value


# ---------------------------------------------------------------------------
# 4. GIL release and thread safety
# ---------------------------------------------------------------------------

def test_conv2d_releases_the_gil(restore_threads):
    """A pure-Python thread keeps running while a long conv2d runs.

    If the kernel held the GIL, the counting thread could only run in the
    few milliseconds of Python code around each call; with the GIL released
    it runs for (nearly) the whole kernel time.  Progress is compared with
    the counter's own free-running rate measured just before, so nothing
    here depends on how fast the machine is.
    """
    fastconv.set_num_threads(1)      # leave a core for the counting thread
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 48, 48))
    w = rng.standard_normal((64, 64, 3, 3))
    fastconv.conv2d(x[:1], w)        # warm-up (BLAS lookup, page faults)

    count = [0]
    stop = [False]

    def spin():
        while not stop[0]:
            count[0] += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        time.sleep(0.05)
        c0, t0 = count[0], time.perf_counter()
        time.sleep(0.15)                              # main thread idle: free-running rate
        rate = (count[0] - c0) / (time.perf_counter() - t0)

        c0, t0 = count[0], time.perf_counter()
        calls = 0
        while calls < 2 or time.perf_counter() - t0 < 0.4:
            fastconv.conv2d(x, w)
            calls += 1
        elapsed = time.perf_counter() - t0
        progress = count[0] - c0
    finally:
        stop[0] = True
        thread.join()
    assert rate > 0
    # With the GIL held the counter would advance by only a few switch
    # intervals (5 ms each) per call.
    assert progress > 0.3 * rate * elapsed, (progress, rate, elapsed, calls)


def _all_functions(x, w, b=None):
    """Every public kernel on one input; returns a list of arrays."""
    y = fastconv.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    g = np.cos(y)
    dx = fastconv.conv2d_grad_input(g, w, x.shape, stride=(2, 1), padding=1, dilation=(1, 2),
                                    groups=2)
    dw = fastconv.conv2d_grad_weight(x, g, w.shape, stride=(2, 1), padding=1, dilation=(1, 2),
                                     groups=2)
    db = fastconv.conv2d_grad_bias(g)
    m, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    dm = fastconv.max_pool2d_grad(np.sin(m), idx, x.shape)
    a = fastconv.avg_pool2d(x, (3, 2), stride=(2, 1), padding=1, ceil_mode=True,
                            count_include_pad=False)
    da = fastconv.avg_pool2d_grad(np.sin(a), x.shape, (3, 2), stride=(2, 1), padding=1,
                                  ceil_mode=True, count_include_pad=False)
    return [y, dx, dw, db, m, idx, dm, a, da]


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_calls_match_serial_calls(threads, restore_threads):
    fastconv.set_num_threads(threads)
    rng = np.random.default_rng(11)
    jobs = []
    for k in range(8):
        dtype = np.float32 if k % 2 else np.float64
        x = rng.standard_normal((2 + k % 3, 4, 20 + k, 19 + 2 * k)).astype(dtype)
        w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)
        jobs.append((x, w, b))
    serial = [_all_functions(*job) for job in jobs]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:   # 8 Python threads at once
            concurrent = list(pool.map(lambda job: _all_functions(*job), jobs))
        for got, expected in zip(concurrent, serial):
            for a, b in zip(got, expected):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


def test_set_num_threads_from_another_thread_is_safe(restore_threads):
    """Changing the thread count while kernels run must not corrupt results."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 4, 24, 24))
    w = rng.standard_normal((6, 2, 3, 3))
    expected = _all_functions(x, w)
    stop = threading.Event()

    def flip():
        n = 0
        while not stop.is_set():
            fastconv.set_num_threads(1 + n % 3)
            n += 1
            time.sleep(0.0005)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        for _ in range(5):
            for a, b in zip(_all_functions(x, w), expected):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    finally:
        stop.set()
        flipper.join()


# ---------------------------------------------------------------------------
# 5. Results: new C-contiguous arrays with the documented dtype
# ---------------------------------------------------------------------------

def _make_inputs(dtype, layout):
    """Valid inputs for every function in ``dtype`` and the given memory layout."""
    rng = np.random.default_rng(5)

    def arr(shape):
        a = rng.standard_normal(shape) * 3
        if np.dtype(dtype).kind in "iu":
            a = np.abs(a)
        if np.dtype(dtype).kind == "b":
            a = a > 0
        a = a.astype(dtype)
        if layout == "F":
            a = np.asfortranarray(a)
        elif layout == "reversed":
            a = a[..., ::-1].copy()[..., ::-1]
        elif layout == "strided":
            big = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)
            big[..., ::2] = a
            a = big[..., ::2]
        return a

    x = arr((2, 4, 9, 8))
    w = arr((6, 2, 3, 3))
    b = arr((6,))
    g = arr((2, 6, 5, 6))          # conv2d output for _call_all's conv_kw
    pg = arr((2, 4, 5, 4))         # pooling output for _call_all's pool_kw
    return x, w, b, g, pg


def _call_all(x, w, b, g, pg):
    conv_kw = dict(stride=(2, 1), padding=(1, 0), groups=2)
    pool_kw = dict(kernel_size=3, stride=2, padding=1)
    assert fastconv.conv2d(np.zeros((2, 4, 9, 8)), np.zeros((6, 2, 3, 3)),
                           **conv_kw).shape == g.shape
    assert fastconv.avg_pool2d(np.zeros((2, 4, 9, 8)), **pool_kw).shape == pg.shape
    _, idx = fastconv.max_pool2d(np.random.default_rng(1).standard_normal(x.shape), **pool_kw)
    return {
        "conv2d": (fastconv.conv2d(x, w, b, **conv_kw), (x, w, b)),
        "conv2d_grad_input": (fastconv.conv2d_grad_input(g, w, x.shape, **conv_kw), (g, w)),
        "conv2d_grad_weight": (fastconv.conv2d_grad_weight(x, g, w.shape, **conv_kw), (x, g)),
        "conv2d_grad_bias": (fastconv.conv2d_grad_bias(g), (g,)),
        "max_pool2d": (fastconv.max_pool2d(x, **pool_kw)[0], (x,)),
        "max_pool2d_indices": (fastconv.max_pool2d(x, **pool_kw)[1], (x,)),
        "max_pool2d_grad": (fastconv.max_pool2d_grad(pg, idx, x.shape), (pg, idx)),
        "avg_pool2d": (fastconv.avg_pool2d(x, **pool_kw), (x,)),
        "avg_pool2d_grad": (fastconv.avg_pool2d_grad(pg, x.shape, **pool_kw), (pg,)),
    }


DTYPE_RULES = [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.float16, np.float16),
    (np.int64, np.float64),
    (np.int32, np.float64),
    (np.int8, np.float64),
    (np.uint8, np.float64),
    (np.uint64, np.float64),
    (np.bool_, np.float64),
    (">f8", np.float64),           # big-endian in, native out
    (">f4", np.float32),
]


@pytest.mark.parametrize("dtype, expected", DTYPE_RULES, ids=[np.dtype(d).str for d, _ in
                                                              DTYPE_RULES])
def test_result_dtypes(dtype, expected):
    results = _call_all(*_make_inputs(dtype, "C"))
    for name, (out, _) in results.items():
        if name == "max_pool2d_indices":
            assert out.dtype == np.int64, name
            continue
        assert out.dtype == np.dtype(expected), (name, out.dtype)
        assert out.dtype.isnative, name


@pytest.mark.parametrize("layout", ["C", "F", "reversed", "strided"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
def test_results_are_new_c_contiguous_arrays(dtype, layout):
    inputs = _make_inputs(dtype, layout)
    snapshot = [a.copy() for a in inputs]
    for name, (out, used) in _call_all(*inputs).items():
        assert isinstance(out, np.ndarray) and type(out) is np.ndarray, name
        assert out.flags.c_contiguous, name
        assert out.flags.writeable, name
        for arr in used:
            assert not np.shares_memory(out, arr), name
    for before, after in zip(snapshot, inputs):
        np.testing.assert_array_equal(before, after)       # inputs untouched


def test_float16_is_computed_in_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 10, 10)).astype(np.float16)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float16)
    y16 = fastconv.conv2d(x, w)
    y32 = fastconv.conv2d(x.astype(np.float32), w.astype(np.float32))
    assert y16.dtype == np.float16
    np.testing.assert_array_equal(y16, y32.astype(np.float16))


def test_mixed_dtypes_promote_like_numpy():
    x32 = np.ones((1, 2, 5, 5), np.float32)
    w64 = np.ones((3, 2, 3, 3), np.float64)
    wi = np.ones((3, 2, 3, 3), np.int32)
    assert fastconv.conv2d(x32, w64).dtype == np.float64
    assert fastconv.conv2d(x32, wi).dtype == np.float64           # int -> float64
    assert fastconv.conv2d(x32, w64.astype(np.float16)).dtype == np.float32
    assert fastconv.conv2d(x32, w64.astype(np.float32), np.ones(3)).dtype == np.float64


def test_results_are_fresh_on_every_call():
    x = np.ones((1, 1, 4, 4))
    w = np.ones((1, 1, 1, 1))
    a = fastconv.conv2d(x, w)
    b = fastconv.conv2d(x, w)
    assert not np.shares_memory(a, b)
    a[...] = 7
    np.testing.assert_array_equal(b, np.ones((1, 1, 4, 4)))
    # a 1x1 kernel with no padding must not hand back (a view of) the input
    assert not np.shares_memory(a, x)
    p = fastconv.avg_pool2d(x, 1)
    assert not np.shares_memory(p, x)
    m, i = fastconv.max_pool2d(x, 1)
    assert not np.shares_memory(m, x) and not np.shares_memory(m, i)


def test_threadpoolctl_limits_fastconv():
    """threadpoolctl's OpenMP limit reaches fastconv's default thread count
    (fastconv asks omp_get_max_threads() when no count was set)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _openmp_enabled():
        pytest.skip("built without OpenMP")
    fastconv.set_num_threads(None)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
        x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
        w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
        y1 = fastconv.conv2d(x, w)
    np.testing.assert_array_equal(y1, fastconv.conv2d(x, w))


def _openmp_enabled():
    from fastconv._openmp import openmp_enabled
    return openmp_enabled()


def test_bench_markdown_table_lists_fwd_bwd_rows():
    from fastconv import _bench

    rows = [dict(case="lenet1", dtype="float32", direction="fwd", gflops=10.0,
                 fastconv_s=1e-3, numpy_s=2e-3),
            dict(case="lenet1", dtype="float32", direction="fwd+bwd", gflops=20.0,
                 fastconv_s=2e-3, numpy_s=4e-3, torch_s=3e-3),
            dict(case="max2x2s2", dtype="float64", direction="fwd+bwd", gflops=None,
                 fastconv_s=1e-3, numpy_s=5e-3)]
    lines = _bench.markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[2] == ("| lenet1 | float32 | fwd+bwd | 2.000 | 20.0 | 4.000 | 3.000 | 2.00x "
                        "| 1.50x |")
    assert lines[3].endswith("| 5.00x | - |")


@pytest.mark.parametrize("impl", ["own", "blas", "torch"])
def test_bench_gemm_impls_compute_the_product_and_restore_the_switch(impl):
    """bench/test_bench_gemm.py's implementations: each computes op(a) @ op(b)
    (or is None where it cannot run), and restore() puts the own GEMM's
    switch back as it was."""
    from fastconv import _bench, _blas

    before = _blas.blas_info()["own_gemm"]
    for case in _bench.GEMM_SUITE[:2] + [_bench.GEMM_SUITE[4]]:
        a, b, c = _bench.gemm_arrays(case, np.float64)
        fn, restore = _bench.gemm_impl(impl, case, a, b, c)
        if fn is None:
            continue
        try:
            fn()
        finally:
            restore()
        want = (a.T if case.trans_a else a) @ (b.T if case.trans_b else b)
        np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-10)
        assert _blas.blas_info()["own_gemm"] == before


def test_bench_pool_bytes_counts_the_unavoidable_traffic():
    """The bandwidth lines of the bench: x read and dx written, y written and
    read back, plus the int64 indices both ways for a max pool."""
    from fastconv import _bench

    max2 = _bench.PoolCase("m", "max", 8, 64, 56, 2, 2)
    avg3 = _bench.PoolCase("a", "avg", 8, 64, 56, 3, 2)
    n_in = 8 * 64 * 56 * 56
    assert _bench.pool_bytes(max2, "float64") == 2 * n_in * 8 + 8 * 64 * 28 * 28 * (16 + 16)
    assert _bench.pool_bytes(avg3, "float32") == 2 * n_in * 4 + 8 * 64 * 27 * 27 * 8
    assert _bench.copy_gbs(1 << 20, 2, repeat=1) > 0


def test_bench_big_forward_and_gemm_are_timed_together(monkeypatch):
    """The big-layer line's two GFLOP/s come from one alternating timing."""
    from fastconv import _bench

    calls = []
    real = _bench.best_times
    monkeypatch.setattr(_bench, "best_times",
                        lambda fns, *a, **k: calls.append(sorted(fns)) or real(fns, *a, **k))
    monkeypatch.setattr(_bench, "SETTLE_S", 0)
    case = _bench.ConvCase("tiny", 1, 2, 8, 3, 3, 1, 1, 1)
    conv, gemm, how = _bench.big_forward_vs_gemm(case, "float64", repeat=1, n=32)
    assert conv > 0 and gemm > 0 and how
    assert calls == [["fastconv", "gemm"]]


def test_bench_times_implementations_interleaved(monkeypatch):
    """best_times runs one batch of every implementation per round, in turn,
    so that a load spike on a shared machine hits all sides of a ratio, and
    pauses after the batches named in settle_after."""
    from fastconv import _bench

    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    monkeypatch.setattr(_bench.time, "sleep", lambda s: log.append(f"sleep {s}"))
    monkeypatch.setattr(_bench, "SETTLE_S", 0.25)
    times = _bench.best_times(fns, repeat=3, min_time=0, settle_after=("b",))
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())
    # warm-ups, then three rounds
    assert log == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "sleep 0.25", "c"] * 3
    assert _bench.best_time(lambda: None, repeat=2) >= 0


def test_type_stubs_cover_the_public_api():
    """``__init__.pyi`` (shipped with py.typed) declares every public name."""
    from pathlib import Path

    pkg = Path(fastconv.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "__init__.pyi").read_text()
    for name in fastconv.__all__:
        assert (f"def {name}(" in stub or f"import {name} as {name}" in stub
                or f"{name}: " in stub), name


def test_float32_with_bool_or_small_int_arrays_stays_float32():
    """Fuzz finding: a bool bias made the result float64 while the oracle (NumPy
    promotion of the arrays as given) keeps float32."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((1, 3, 1, 4)).astype(np.float32)[..., ::-1]
    for b in (np.array([True]), np.array([3], np.int8)):
        kw = dict(stride=(2, 2), dilation=(2, 2), padding=2)
        y = fastconv.conv2d(x, w, b, **kw)
        expected = fastconv.reference.conv2d(x, w, b, **kw)
        assert y.dtype == expected.dtype == np.float32
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert fastconv.conv2d(x, w.astype(np.int64), padding=2).dtype == np.float64   # as NumPy
    assert fastconv.conv2d(x.astype(np.int32), w.astype(np.int32), padding=2).dtype == np.float64


def test_bench_names_the_blas_and_warns_of_a_forced_openblas_core(monkeypatch):
    """The bench's BLAS line, and its note when OPENBLAS_CORETYPE pins
    OpenBLAS's kernel family (numbers then are not OpenBLAS's best here)."""
    from fastconv import _bench
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert _bench.blas_note().startswith("BLAS: ")
    assert "OPENBLAS_CORETYPE" not in _bench.blas_note()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    note = _bench.blas_note()
    assert "OPENBLAS_CORETYPE=Haswell is set" in note
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in note
