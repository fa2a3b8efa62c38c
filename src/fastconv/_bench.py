"""Speed suite shared by ``python -m fastconv bench`` and ``bench/``.

Implementations compared on each layer of the suite:

* ``fastconv``  -- the package's kernels;
* ``numpy``     -- a plain NumPy im2col + matmul baseline (whole batch);
* ``torch``     -- PyTorch's CPU kernels, when torch is installed;
* ``oracle``    -- ``fastconv.reference`` (only on tiny cases; far too slow
  for the suite itself).

Times are the best of several rounds with every implementation run in the
same process, interleaved round by round (``best_times``), so only same-run
ratios are meaningful on a shared machine.
"""

import time
from collections import namedtuple

import numpy as np

import fastconv

ConvCase = namedtuple("ConvCase", "name n c_in hw c_out k stride pad groups dilation",
                      defaults=(1,))
PoolCase = namedtuple("PoolCase", "name kind n c hw k stride")

CONV_SUITE = [
    ConvCase("lenet1", 64, 1, 28, 20, 5, 1, 0, 1),
    ConvCase("lenet2", 64, 20, 12, 50, 5, 1, 0, 1),
    ConvCase("vgg3x3", 8, 64, 56, 64, 3, 1, 1, 1),
    ConvCase("res_s2", 8, 128, 28, 256, 3, 2, 1, 1),
    ConvCase("pw1x1", 8, 256, 14, 64, 1, 1, 0, 1),
    ConvCase("dw3x3", 8, 128, 28, 128, 3, 1, 1, 128),
    ConvCase("big", 1, 256, 100, 256, 3, 1, 1, 1),
]

POOL_SUITE = [
    PoolCase(f"{kind}{k}x{k}s2", kind, 8, 64, 56, k, 2)
    for kind in ("max", "avg") for k in (2, 3)
]


# Layers of well-known networks beyond the suite (``python -m fastconv bench
# --zoo``, bench/test_bench_zoo.py): what a user's own model is made of, the
# layers fastconv is slow on included.  Batch sizes keep each near a second
# of the whole run.
LAYER_ZOO = [
    ConvCase("resnet_stem_7x7s2", 4, 3, 224, 64, 7, 2, 3, 1),
    ConvCase("resnet_3x3_128", 8, 128, 28, 128, 3, 1, 1, 1),
    ConvCase("resnet_3x3_256", 8, 256, 14, 256, 3, 1, 1, 1),
    ConvCase("resnet_3x3_512", 8, 512, 7, 512, 3, 1, 1, 1),
    ConvCase("resnet_down_3x3s2", 8, 64, 56, 128, 3, 2, 1, 1),
    ConvCase("resnet_down_1x1s2", 8, 256, 14, 512, 1, 2, 0, 1),
    ConvCase("resnext_3x3_g32", 8, 128, 28, 128, 3, 1, 1, 32),
    ConvCase("mobilenet_dw_3x3s2", 8, 64, 56, 64, 3, 2, 1, 64),
    ConvCase("mobilenet_pw_1x1", 8, 32, 112, 64, 1, 1, 0, 1),
    ConvCase("cifar_3x3_16", 32, 16, 32, 16, 3, 1, 1, 1),
    ConvCase("cifar_3x3_64", 32, 64, 8, 64, 3, 1, 1, 1),
    ConvCase("alexnet_11x11s4", 4, 3, 227, 96, 11, 4, 0, 1),
    ConvCase("conv_5x5", 16, 32, 32, 64, 5, 1, 2, 1),
    ConvCase("dilated_3x3_d2", 8, 64, 56, 64, 3, 1, 2, 1, 2),
    # an odd plane, as DeepLab's 33x33 feature maps (output stride 16)
    ConvCase("deeplab_3x3_d2", 4, 256, 33, 256, 3, 1, 2, 1, 2),
    ConvCase("one_image_3x3", 1, 64, 56, 64, 3, 1, 1, 1),
]


def conv_out(case):
    return (case.hw + 2 * case.pad - case.dilation * (case.k - 1) - 1) // case.stride + 1


def conv_macs(case):
    """Multiply-accumulates of one forward pass (SPEC.md's cost model)."""
    ho = conv_out(case)
    return case.n * case.c_out * ho * ho * (case.c_in // case.groups) * case.k * case.k


def conv_arrays(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    ho = conv_out(case)
    x = rng.standard_normal((case.n, case.c_in, case.hw, case.hw)).astype(dtype)
    w = rng.standard_normal((case.c_out, case.c_in // case.groups, case.k, case.k)).astype(dtype)
    b = rng.standard_normal(case.c_out).astype(dtype)
    g = rng.standard_normal((case.n, case.c_out, ho, ho)).astype(dtype)
    return x, w, b, g


# --- implementations: each returns (forward, forward+backward) callables -----

def fastconv_conv(case, x, w, b, g):
    kw = dict(stride=case.stride, padding=case.pad, dilation=case.dilation,
              groups=case.groups)

    def fwd():
        return fastconv.conv2d(x, w, b, **kw)

    def fwd_bwd():
        fastconv.conv2d(x, w, b, **kw)
        fastconv.conv2d_grad_input(g, w, x.shape, **kw)
        fastconv.conv2d_grad_weight(x, g, w.shape, **kw)
        fastconv.conv2d_grad_bias(g)

    return fwd, fwd_bwd


def _im2col(x, k, stride, pad):
    """Whole-batch patch matrix (N, C*k*k, Ho*Wo) -- the textbook lowering."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :ho, :wo]        # N C Ho Wo k k
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, ho * wo), ho, wo


def _col2im(cols, x_shape, k, stride, pad, ho, wo):
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    cols = cols.reshape(n, c, k, k, ho, wo)
    for u in range(k):
        for v in range(k):
            dxp[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride] += cols[:, :, u, v]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def numpy_conv(case, x, w, b, g):
    """Plain NumPy im2col baseline (groups == 1, no dilation)."""
    if case.groups != 1 or case.dilation != 1:
        return None
    k, s, p = case.k, case.stride, case.pad
    wm = w.reshape(case.c_out, -1)

    def fwd():
        cols, ho, wo = _im2col(x, k, s, p)
        return (np.matmul(wm, cols) + b[:, None]).reshape(case.n, case.c_out, ho, wo)

    def fwd_bwd():
        cols, ho, wo = _im2col(x, k, s, p)
        np.matmul(wm, cols) + b[:, None]
        gm = g.reshape(case.n, case.c_out, -1)
        np.einsum("nop,nkp->ok", gm, cols, optimize=True)        # grad weight
        _col2im(np.matmul(wm.T, gm), x.shape, k, s, p, ho, wo)   # grad input
        gm.sum(axis=(0, 2))                                       # grad bias

    return fwd, fwd_bwd


def torch_conv(case, x, w, b, g):
    try:
        import torch
    except ImportError:
        return None
    tx = torch.from_numpy(x)
    tw = torch.from_numpy(w)
    tb = torch.from_numpy(b)
    tg = torch.from_numpy(g)
    kw = dict(stride=case.stride, padding=case.pad, dilation=case.dilation,
              groups=case.groups)
    conv = torch.nn.functional.conv2d

    def fwd():
        with torch.no_grad():
            return conv(tx, tw, tb, **kw)

    def fwd_bwd():
        xr = tx.detach().requires_grad_(True)
        wr = tw.detach().requires_grad_(True)
        br = tb.detach().requires_grad_(True)
        conv(xr, wr, br, **kw).backward(tg)

    return fwd, fwd_bwd


CONV_IMPLS = {"fastconv": fastconv_conv, "numpy": numpy_conv, "torch": torch_conv}


def pool_arrays(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((case.n, case.c, case.hw, case.hw)).astype(dtype)


def fastconv_pool(case, x):
    if case.kind == "max":
        y, idx = fastconv.max_pool2d(x, case.k, case.stride)

        def run():
            yy, ii = fastconv.max_pool2d(x, case.k, case.stride)
            fastconv.max_pool2d_grad(yy, ii, x.shape)
    else:
        y = fastconv.avg_pool2d(x, case.k, case.stride)

        def run():
            yy = fastconv.avg_pool2d(x, case.k, case.stride)
            fastconv.avg_pool2d_grad(yy, x.shape, case.k, case.stride)
    return run


def numpy_pool(case, x):
    """Vectorized NumPy pooling over sliding windows (forward only + scatter)."""
    k, s = case.k, case.stride

    def run():
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        if case.kind == "max":
            y = win.max(axis=(4, 5))
        else:
            y = win.mean(axis=(4, 5))
        dx = np.zeros_like(x)
        ho, wo = y.shape[2:]
        for u in range(k):
            for v in range(k):
                if case.kind == "max":
                    mask = win[..., u, v] == y
                    dx[:, :, u:u + s * ho:s, v:v + s * wo:s] += y * mask
                else:
                    dx[:, :, u:u + s * ho:s, v:v + s * wo:s] += y / (k * k)
    return run


def torch_pool(case, x):
    try:
        import torch
    except ImportError:
        return None
    tx = torch.from_numpy(x)
    f = torch.nn.functional

    def run():
        xr = tx.detach().requires_grad_(True)
        if case.kind == "max":
            y = f.max_pool2d(xr, case.k, case.stride)
        else:
            y = f.avg_pool2d(xr, case.k, case.stride)
        y.backward(y.detach())
    return run


POOL_IMPLS = {"fastconv": fastconv_pool, "numpy": numpy_pool, "torch": torch_pool}


# --- single-channel correlation (fastconv.correlate2d vs scipy.signal) --------

SignalCase = namedtuple("SignalCase", "name size k")

SIGNAL_SUITE = [
    SignalCase("corr256k3", 256, 3),
    SignalCase("corr512k5", 512, 5),
    SignalCase("corr1024k3", 1024, 3),
    SignalCase("corr1024k7", 1024, 7),
]


def signal_arrays(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((case.size, case.size)).astype(dtype),
            rng.standard_normal((case.k, case.k)).astype(dtype))


def signal_impl(name, a, b):
    """``correlate2d(a, b, 'same')`` by fastconv or SciPy (None if missing)."""
    if name == "fastconv":
        return lambda: fastconv.correlate2d(a, b, "same")
    try:
        from scipy import signal
    except ImportError:
        return None
    return lambda: signal.correlate2d(a, b, "same")


# --- the GEMM behind the kernels ---------------------------------------------

GemmCase = namedtuple("GemmCase", "name m n k trans_a trans_b")

# single-threaded products the conv suite makes (one per kernel call site;
# _blas.pyx's _own_gemm_fits sends them to the own GEMM on AVX-512 CPUs)
GEMM_SUITE = [
    GemmCase("pw1x1_fwd", 64, 196, 256, False, False),
    GemmCase("pw1x1_gi", 256, 196, 64, False, False),
    GemmCase("pw1x1_gw", 64, 256, 196, False, True),
    GemmCase("res_s2_fwd", 256, 784, 1152, False, False),
    GemmCase("res_s2_gi", 196, 1152, 256, True, False),
    GemmCase("big_winograd", 256, 128, 256, False, False),
    GemmCase("big_winograd_gw", 256, 256, 128, False, True),
    GemmCase("lenet2_gi", 64, 500, 50, True, False),
]


def gemm_arrays(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((case.k, case.m) if case.trans_a else (case.m, case.k))
    b = rng.standard_normal((case.n, case.k) if case.trans_b else (case.k, case.n))
    return a.astype(dtype), b.astype(dtype), np.empty((case.m, case.n), dtype=dtype)


def gemm_impl(name, case, a, b, c):
    """One single-threaded product ``c = op(a) @ op(b)``: ``own`` (fastconv's
    AVX-512 GEMM, None without AVX-512F), ``blas`` (the library fastconv
    wraps), or ``torch`` (``torch.mm``, oneMKL inside; None without torch).
    Returns (callable, restore) -- call restore() when done timing."""
    from fastconv import _blas, _cpu

    if name == "torch":
        try:
            import torch
        except ImportError:
            return None, None
        ta = torch.from_numpy(a).T if case.trans_a else torch.from_numpy(a)
        tb = torch.from_numpy(b).T if case.trans_b else torch.from_numpy(b)
        tc = torch.from_numpy(c)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return (lambda: torch.mm(ta, tb, out=tc)), (lambda: torch.set_num_threads(threads))
    if name == "own" and not _cpu.has_avx512f():
        return None, None
    previous = _blas._set_own_gemm(name == "own", every_shape=name == "own")

    def run():
        _blas._gemm_serial(case.trans_a, case.trans_b, a, b, c, 1.0, 0.0)
    return run, (lambda: _blas._set_own_gemm(*previous))


def run_signal_suite(dtypes=("float32", "float64"), repeat=5, out=print):
    """Time correlate2d against SciPy on the SIGNAL_SUITE; returns row dicts."""
    rows = []
    out(f"{'case':<12}{'dtype':<9}{'fastconv ms':>12}{'GFLOP/s':>9}{'scipy ms':>10}"
        f"{'vs scipy':>10}")
    for dtype in dtypes:
        for case in SIGNAL_SUITE:
            a, b = signal_arrays(case, np.dtype(dtype))
            t = best_times({name: fn for name in ("fastconv", "scipy")
                            if (fn := signal_impl(name, a, b)) is not None}, repeat)
            gflops = 2 * case.size ** 2 * case.k ** 2 / t["fastconv"] / 1e9
            rows.append(dict(case=case.name, dtype=dtype, gflops=gflops,
                             **{f"{k}_s": v for k, v in t.items()}))
            ratio = f"{t['scipy'] / t['fastconv']:.2f}x" if "scipy" in t else "-"
            out(f"{case.name:<12}{dtype:<9}{_fmt_ms(t['fastconv']):>12}{gflops:>9.1f}"
                f"{_fmt_ms(t.get('scipy')):>10}{ratio:>10}")
    return rows


# --- channels-last: the same layers in NHWC against NCHW -------------------

LAYOUTS = ("NCHW", "NHWC")


def to_nhwc(a):
    """A C-contiguous NHWC copy of an NCHW array."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def conv_layout_impl(name, case, dtype):
    """fwd+bwd of a suite layer with the operands stored in one layout:
    ``"NCHW"`` / ``"NHWC"`` (fastconv) or ``"torch-NHWC"`` (PyTorch on
    channels_last tensors).  None when the implementation is missing."""
    x, w, b, g = conv_arrays(case, dtype)
    kw = dict(stride=case.stride, padding=case.pad, groups=case.groups)
    if name.startswith("torch"):
        try:
            import torch
        except ImportError:
            return None
        cl = torch.channels_last
        tx = torch.from_numpy(x).contiguous(memory_format=cl)
        tw = torch.from_numpy(w).contiguous(memory_format=cl)
        tb, tg = torch.from_numpy(b), torch.from_numpy(g).contiguous(memory_format=cl)
        conv = torch.nn.functional.conv2d

        def torch_run():
            xr = tx.detach().requires_grad_(True)
            wr = tw.detach().requires_grad_(True)
            br = tb.detach().requires_grad_(True)
            conv(xr, wr, br, **kw).backward(tg)
        return torch_run
    if name == "NHWC":
        x, g = to_nhwc(x), to_nhwc(g)
        w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))

    def run():
        fastconv.conv2d(x, w, b, layout=name, **kw)
        fastconv.conv2d_grad_input(g, w, x.shape, layout=name, **kw)
        fastconv.conv2d_grad_weight(x, g, w.shape, layout=name, **kw)
        fastconv.conv2d_grad_bias(g, layout=name)
    return run


def pool_layout_impl(name, case, dtype):
    """fwd+bwd of a pooling case in one layout (as conv_layout_impl)."""
    x = pool_arrays(case, dtype)
    if name.startswith("torch"):
        try:
            import torch
        except ImportError:
            return None
        tx = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        f = torch.nn.functional
        pool = f.max_pool2d if case.kind == "max" else f.avg_pool2d

        def torch_run():
            xr = tx.detach().requires_grad_(True)
            y = pool(xr, case.k, case.stride)
            y.backward(y.detach())
        return torch_run
    if name == "NHWC":
        x = to_nhwc(x)

    def run():
        if case.kind == "max":
            y, idx = fastconv.max_pool2d(x, case.k, case.stride, layout=name)
            fastconv.max_pool2d_grad(y, idx, x.shape, layout=name)
        else:
            y = fastconv.avg_pool2d(x, case.k, case.stride, layout=name)
            fastconv.avg_pool2d_grad(y, x.shape, case.k, case.stride, layout=name)
    return run


def run_layout_suite(dtypes=("float32", "float64"), repeat=5, cases=None, out=print):
    """Time fwd+bwd of every suite case in NCHW and in NHWC (and PyTorch on
    channels_last tensors); returns row dicts."""
    rows = []
    out(f"{'case':<10}{'dtype':<9}{'NCHW ms':>10}{'NHWC ms':>10}{'NHWC speedup':>14}"
        f"{'torch-NHWC ms':>15}{'vs torch':>10}")
    suite = [(c, conv_layout_impl) for c in CONV_SUITE] + [(c, pool_layout_impl)
                                                          for c in POOL_SUITE]
    for dtype in dtypes:
        for case, make in suite:
            if cases is not None and case.name not in cases:
                continue
            t = best_times({name: fn for name in LAYOUTS + ("torch-NHWC",)
                            if (fn := make(name, case, np.dtype(dtype))) is not None}, repeat)
            rows.append(dict(case=case.name, dtype=dtype,
                             **{f"{k}_s": v for k, v in t.items()}))
            vs_torch = (f"{t['torch-NHWC'] / t['NHWC']:.2f}x" if "torch-NHWC" in t else "-")
            out(f"{case.name:<10}{dtype:<9}{_fmt_ms(t['NCHW']):>10}{_fmt_ms(t['NHWC']):>10}"
                f"{t['NCHW'] / t['NHWC']:>13.2f}x{_fmt_ms(t.get('torch-NHWC')):>15}"
                f"{vs_torch:>10}")
    return rows


# --- timing and the table ---------------------------------------------------

# Pause after an interleaved batch that used multithreaded BLAS (best_times).
SETTLE_S = 0.15


def best_time(fn, repeat=5, min_time=0.05):
    """Best wall time of one call, over `repeat` batches of >= `min_time` s."""
    return best_times({"fn": fn}, repeat, min_time)["fn"]


def best_times(fns, repeat=5, min_time=0.05, settle_after=()):
    """Best wall time of one call of each callable in the dict `fns`, over
    `repeat` rounds; each round times one batch (>= `min_time` s) of every
    callable in turn.  Interleaving the implementations gives each the same
    share of a shared machine's quiet and busy spells, so a load spike
    cannot fall on one side of a ratio only.  After a batch of a name in
    `settle_after` the process sleeps SETTLE_S seconds: a multithreaded
    OpenBLAS call (the NumPy baseline's matmuls) leaves its idle workers
    spinning for about 0.1 s, and PyTorch timed straight after them ran
    its convolutions up to 2x slower.  (fastconv's kernels call BLAS single-
    threaded, so they leave no such spinning.)"""
    calls = {}
    for name, fn in fns.items():
        fn()                                    # warm up (allocations, caches)
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        calls[name] = max(1, int(min_time / max(once, 1e-7))) if once < min_time else 1
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls[name])
            if name in settle_after and len(fns) > 1:
                time.sleep(SETTLE_S)
    return best


def set_threads(n):
    fastconv.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def blas_note():
    """One line naming the BLAS (and OpenBLAS's kernel family) the GEMMs run
    on, one more when fastconv's own GEMM takes the mid-sized products, and
    a warning when ``OPENBLAS_CORETYPE`` forces the kernel family: some
    machines set it (e.g. to Haswell) for old OpenBLAS builds, and on
    an AVX-512 CPU that halves a current OpenBLAS's GEMM speed, and so the
    convolutions' (PyTorch's oneDNN is not affected)."""
    import os
    from fastconv._blas import blas_info

    info = blas_info()
    line = f"BLAS: {info['name']}" + (f" ({info['config']})" if info["config"] else "")
    if info["own_gemm"]:
        line += ("\nGEMM: fastconv's own AVX-512 kernel for the mid-sized products, "
                 "the BLAS for the rest (FASTCONV_GEMM=blas: the BLAS for all)")
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if forced:
        line += (f"\nnote: OPENBLAS_CORETYPE={forced} is set, so OpenBLAS runs its {forced} "
                 "kernels whatever this CPU supports; for its own choice run "
                 "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m fastconv bench`")
    return line


def run_suite(dtypes=("float32", "float64"), threads=None, repeat=5, cases=None,
              out=print):
    """Time the suite and print a table of times, GFLOP/s and ratios.

    Returns a list of row dicts (one per case, dtype and direction).
    """
    threads = threads or fastconv.get_num_threads()
    set_threads(threads)
    rows = []
    conv_cases = [c for c in CONV_SUITE if cases is None or c.name in cases]
    pool_cases = [c for c in POOL_SUITE if cases is None or c.name in cases]
    out(f"fastconv {fastconv.__version__} | threads={threads} | best of {repeat} "
        "interleaved rounds | "
        "ratio = other's time / fastconv's time (>1: fastconv faster)")
    out(blas_note())
    header = (f"{'case':<10}{'dtype':<9}{'pass':<9}{'fastconv ms':>12}{'GFLOP/s':>9}"
              f"{'numpy ms':>10}{'torch ms':>10}{'vs numpy':>10}{'vs torch':>10}")
    out(header)
    out("-" * len(header))
    for dtype in dtypes:
        for case in conv_cases:
            arrays = conv_arrays(case, np.dtype(dtype))
            impls = {name: make(case, *arrays) for name, make in CONV_IMPLS.items()}
            for direction, index, flop_mult in (("fwd", 0, 2), ("fwd+bwd", 1, 6)):
                t = best_times({name: pair[index] for name, pair in impls.items()
                                if pair is not None}, repeat, settle_after=("numpy",))
                gflops = flop_mult * conv_macs(case) / t["fastconv"] / 1e9
                rows.append(dict(case=case.name, dtype=dtype, direction=direction,
                                 gflops=gflops, **{f"{k}_s": v for k, v in t.items()}))
                out(_row(case.name, dtype, direction, t, gflops))
        for case in pool_cases:
            x = pool_arrays(case, np.dtype(dtype))
            t = best_times({name: fn for name, make in POOL_IMPLS.items()
                            if (fn := make(case, x)) is not None}, repeat,
                           settle_after=("numpy",))
            rows.append(dict(case=case.name, dtype=dtype, direction="fwd+bwd", gflops=None,
                             **{f"{k}_s": v for k, v in t.items()}))
            out(_row(case.name, dtype, "fwd+bwd", t, None))
    _summary(rows, out)
    if pool_cases:
        _pool_traffic(rows, pool_cases, threads, repeat, out)
    big = next((c for c in conv_cases if c.name == "big"), None)
    if big is not None:
        for dtype in dtypes:
            conv, gemm, how = big_forward_vs_gemm(big, dtype, repeat)
            out(f"big {dtype} forward: {conv:.1f} GFLOP/s = {100 * conv / gemm:.0f}% of a "
                f"2048^3 GEMM through the same BLAS ({gemm:.1f} GFLOP/s, {how}, "
                f"timed in alternation with it)" + _winograd_note(big, dtype))
    return rows


def run_layer_zoo(dtypes=("float32", "float64"), threads=None, repeat=5, cases=None,
                  out=print):
    """Time the LAYER_ZOO against PyTorch (forward, and forward + the three
    gradients) and print a table; returns a list of row dicts."""
    threads = threads or fastconv.get_num_threads()
    set_threads(threads)
    impls = {"fastconv": fastconv_conv, "torch": torch_conv}
    out(f"layers of well-known networks | threads={threads} | best of {repeat} interleaved "
        "rounds | ratio = PyTorch's time / fastconv's (>1: fastconv faster)")
    header = (f"{'layer':<20}{'dtype':<9}{'fwd ms':>9}{'torch':>9}{'ratio':>8}"
              f"{'fwd+bwd ms':>12}{'torch':>9}{'ratio':>8}{'GFLOP/s':>9}")
    out(header)
    out("-" * len(header))
    rows = []
    for dtype in dtypes:
        for case in LAYER_ZOO:
            if cases is not None and case.name not in cases:
                continue
            arrays = conv_arrays(case, np.dtype(dtype))
            pairs = {name: pair for name, make in impls.items()
                     if (pair := make(case, *arrays)) is not None}
            t = best_times({f"{name} {direction}": pair[index]
                            for name, pair in pairs.items()
                            for index, direction in enumerate(("fwd", "fwd+bwd"))}, repeat)
            row = dict(case=case.name, dtype=dtype,
                       gflops=6 * conv_macs(case) / t["fastconv fwd+bwd"] / 1e9,
                       **{f"{k.replace(' ', '_')}_s": v for k, v in t.items()})
            rows.append(row)
            cells = []
            for direction in ("fwd", "fwd+bwd"):
                mine, theirs = t[f"fastconv {direction}"], t.get(f"torch {direction}")
                cells += [_fmt_ms(mine), _fmt_ms(theirs),
                          f"{theirs / mine:.2f}x" if theirs is not None else "-"]
            out(f"{case.name:<20}{dtype:<9}{cells[0]:>9}{cells[1]:>9}{cells[2]:>8}"
                f"{cells[3]:>12}{cells[4]:>9}{cells[5]:>8}{row['gflops']:>9.1f}")
    for dtype in dtypes:
        ratios = [r["torch_fwd+bwd_s"] / r["fastconv_fwd+bwd_s"] for r in rows
                  if r["dtype"] == dtype and "torch_fwd+bwd_s" in r]
        if ratios:
            out(f"zoo {dtype} fwd+bwd vs torch: geometric mean "
                f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x, worst {min(ratios):.2f}x")
    return rows


def _winograd_note(case, dtype):
    """For a layer whose forward takes Winograd: its GFLOP/s count the
    textbook's multiply-adds, 2.25x what Winograd performs."""
    from fastconv import functional
    w_shape = (case.c_out, case.c_in // case.groups, case.k, case.k)
    geo = functional._conv_geometry("conv2d", (case.n, case.c_in, case.hw, case.hw), w_shape,
                                    case.stride, case.pad, 1, case.groups)
    if not functional._winograd(w_shape, geo, case.n, np.dtype(dtype).itemsize):
        return ""
    return ("; Winograd F(2x2, 3x3): GFLOP/s of the textbook's multiply-adds, "
            "2.25x those it performs")


def pool_bytes(case, dtype):
    """Fewest bytes a pooling fwd+bwd can move: read x, write y (and the int64
    indices), read grad_out (and the indices), write dx."""
    size = np.dtype(dtype).itemsize
    n_in = case.n * case.c * case.hw * case.hw
    out_hw = (case.hw - case.k) // case.stride + 1
    n_out = case.n * case.c * out_hw * out_hw
    per_out = 2 * size + (16 if case.kind == "max" else 0)
    return 2 * n_in * size + n_out * per_out


def copy_gbs(nbytes, threads, repeat=5):
    """GB/s (bytes read + written) of `threads` Python threads each copying
    its share of an `nbytes` array with NumPy (which drops the GIL): a
    same-run measure of the memory bandwidth the pools compete for."""
    from concurrent.futures import ThreadPoolExecutor
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), threads)
    spans = [(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]
    with ThreadPoolExecutor(threads) as pool:
        def run():
            list(pool.map(lambda s: np.copyto(dst[s[0]:s[1]], src[s[0]:s[1]]), spans))
        return 2 * src.nbytes / best_time(run, repeat) / 1e9


def _pool_traffic(rows, pool_cases, threads, repeat, out):
    out("pool fwd+bwd memory traffic (fewest bytes each must move / time):")
    largest = 0
    for r in rows:
        case = next((c for c in pool_cases if c.name == r["case"]), None)
        if case is None:
            continue
        nbytes = pool_bytes(case, r["dtype"])
        largest = max(largest, nbytes)
        line = (f"  {case.name:<10}{r['dtype']:<9}{nbytes / 1e6:6.1f} MB  fastconv "
                f"{nbytes / r['fastconv_s'] / 1e9:5.1f} GB/s")
        if "torch_s" in r:
            line += f"  torch {nbytes / r['torch_s'] / 1e9:5.1f} GB/s"
        out(line)
    out(f"  NumPy copy of {largest / 2e6:.1f} MB in {threads} threads (same run): "
        f"{copy_gbs(largest // 2, threads, repeat):.1f} GB/s read + write")


def markdown_table(rows):
    """The rows of :func:`run_suite` as a Markdown table (fwd+bwd rows and the
    big layer's forward), as quoted in the README."""
    lines = ["| case | dtype | pass | fastconv ms | GFLOP/s | NumPy im2col ms | PyTorch ms "
             "| vs NumPy | vs PyTorch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["direction"] != "fwd+bwd" and r["case"] != "big":
            continue
        f = r["fastconv_s"]
        cells = [r["case"], r["dtype"], r["direction"], _fmt_ms(f),
                 f"{r['gflops']:.1f}" if r["gflops"] is not None else "-",
                 _fmt_ms(r.get("numpy_s")), _fmt_ms(r.get("torch_s")),
                 f"{r['numpy_s'] / f:.2f}x" if "numpy_s" in r else "-",
                 f"{r['torch_s'] / f:.2f}x" if "torch_s" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_gemm(a, b):
    """The square-GEMM callable the big forward is measured against, and its
    name: "NumPy matmul" (NumPy's OpenBLAS, its own threads) unless fastconv
    runs on a oneMKL that NumPy's matmul does not use (``FASTCONV_BLAS=mkl``,
    loaded single-threaded); then that BLAS in row blocks over fastconv's
    threads (``gemm_split`` in ``_kernels.pyx``), as the kernels run it."""
    from fastconv._blas import blas_info
    from fastconv._simd import kernels

    if not blas_info()["name"].startswith("libmkl"):
        return (lambda: a @ b), "NumPy matmul"
    c = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    threads = fastconv.get_num_threads()
    how = f"row blocks on {threads} threads"
    return (lambda: kernels.gemm_split(a, b, c, False, False, threads)), how


def big_forward_vs_gemm(case, dtype, repeat=5, n=2048):
    """GFLOP/s of `case`'s fastconv forward and of an n^3 product through
    the same BLAS (``reference_gemm``), timed in alternating rounds: this
    machine's speed drifts by up to 2x over minutes, so a GEMM timed after
    the suite is no reference for a forward timed during it.  The process
    settles after each GEMM batch, whose BLAS workers spin (see best_times).
    Returns (forward GFLOP/s, GEMM GFLOP/s, how the GEMM ran)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    fwd = fastconv_conv(case, *conv_arrays(case, np.dtype(dtype)))[0]
    gemm, how = reference_gemm(a, b)
    t = best_times({"fastconv": fwd, "gemm": gemm}, repeat, settle_after=("gemm",))
    return 2 * conv_macs(case) / t["fastconv"] / 1e9, 2 * n**3 / t["gemm"] / 1e9, how


def _fmt_ms(t):
    return f"{t * 1e3:.3f}" if t is not None else "-"


def _row(name, dtype, direction, t, gflops):
    f = t["fastconv"]
    ratio = {k: (f"{t[k] / f:.2f}x" if k in t else "-") for k in ("numpy", "torch")}
    gf = f"{gflops:.1f}" if gflops is not None else "-"
    return (f"{name:<10}{dtype:<9}{direction:<9}{_fmt_ms(f):>12}{gf:>9}"
            f"{_fmt_ms(t.get('numpy')):>10}{_fmt_ms(t.get('torch')):>10}"
            f"{ratio['numpy']:>10}{ratio['torch']:>10}")


def _summary(rows, out):
    groups = {}
    for r in rows:
        if r["direction"] != "fwd+bwd" or "torch_s" not in r:
            continue
        kind = "pool" if r["gflops"] is None else "conv"
        groups.setdefault((kind, r["dtype"]), []).append(r["torch_s"] / r["fastconv_s"])
    for (kind, dtype), ratios in sorted(groups.items()):
        gm = float(np.exp(np.mean(np.log(ratios))))
        out(f"{kind} {dtype} fwd+bwd vs torch: geometric mean {gm:.2f}x, "
            f"worst {min(ratios):.2f}x")
