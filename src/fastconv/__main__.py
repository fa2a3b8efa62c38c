"""Command line: ``python -m fastconv [demo|selfcheck|bench|config]``.

* ``demo``: train a small CNN on scikit-learn's 8x8 digits (see
  ``fastconv.demo``; ``python -m fastconv demo --help`` for its options).
* ``selfcheck`` (default): show the configuration, check every kernel
  against its textbook oracle on a few small cases, and time a few layers
  against a plain NumPy im2col baseline (and PyTorch if installed).
* ``bench``: the full speed suite as a table (see ``fastconv._bench``);
  ``FASTCONV_BLAS=mkl`` in the environment runs its GEMMs on Intel oneMKL
  (``pip install mkl==2026.2.1``) instead of NumPy's OpenBLAS.  ``bench
  --zoo`` times layers of well-known networks (ResNet, MobileNet, CIFAR
  nets, AlexNet, ...) against PyTorch instead.
* ``config``: the configuration only.
"""

import argparse
import sys

import numpy as np

import fastconv
from fastconv import reference as ref


def _max_rel_err(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def _selfcheck_cases(rng):
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    geo = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    y = ref.conv2d(x, w, b, **geo)
    g = rng.standard_normal(y.shape)
    pool = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    ym, idx = ref.max_pool2d(x, **pool)
    ya = ref.avg_pool2d(x, **pool)
    return [
        ("conv2d", lambda m: m.conv2d(x, w, b, **geo)),
        ("conv2d_grad_input", lambda m: m.conv2d_grad_input(g, w, x.shape, **geo)),
        ("conv2d_grad_weight", lambda m: m.conv2d_grad_weight(x, g, w.shape, **geo)),
        ("conv2d_grad_bias", lambda m: m.conv2d_grad_bias(g)),
        ("max_pool2d", lambda m: np.concatenate([a.ravel() for a in m.max_pool2d(x, **pool)])),
        ("max_pool2d_grad", lambda m: m.max_pool2d_grad(ym, idx, x.shape)),
        ("avg_pool2d", lambda m: m.avg_pool2d(x, **pool)),
        ("avg_pool2d_grad", lambda m: m.avg_pool2d_grad(ya, x.shape, **pool)),
    ]


def selfcheck(out=print):
    """Check each kernel against its oracle and time a few layers.

    Returns
    -------
    int
        0 if every kernel matched its oracle, 1 otherwise.
    """
    from fastconv import _bench

    fastconv.show_config()
    out("\nkernels against the textbook oracles (float64, stride 2, padding 1, dilation (1,2), "
        "groups 2; pools 3x3/2, padding 1, ceil_mode):")
    failures = 0
    for name, call in _selfcheck_cases(np.random.default_rng(0)):
        err = _max_rel_err(call(fastconv), call(ref))
        ok = err < 1e-10
        failures += not ok
        out(f"  {name:<20} max relative error {err:.1e}  {'ok' if ok else 'FAILED'}")
    out("\nspeed (a few layers of the suite; `python -m fastconv bench` runs all):")
    _bench.run_suite(dtypes=("float32",), repeat=3, cases={"lenet2", "vgg3x3", "pw1x1",
                                                            "max2x2s2"}, out=out)
    out("\nselfcheck " + ("passed" if not failures else f"FAILED ({failures} kernels)"))
    return 1 if failures else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "demo" in argv:      # the demo has its own options (demo --help)
        from fastconv import demo

        at = argv.index("demo")
        return demo.main(argv[:at] + argv[at + 1:])
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="selfcheck",
                        choices=["demo", "selfcheck", "bench", "config"])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastconv (and torch); default: get_num_threads()")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both",
                        help="bench: dtypes to run (default both)")
    parser.add_argument("--repeat", type=int, default=5, help="bench: timing repeats")
    parser.add_argument("--markdown", action="store_true",
                        help="bench: also print the fwd+bwd rows as a Markdown table")
    parser.add_argument("--zoo", action="store_true",
                        help="bench: time layers of well-known networks against PyTorch "
                             "instead of the suite")
    args = parser.parse_args(argv)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    if args.command == "config":
        fastconv.show_config()
        return 0
    if args.command == "bench":
        from fastconv import _bench

        dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
        if args.zoo:
            _bench.run_layer_zoo(dtypes=dtypes, threads=args.threads, repeat=args.repeat)
            return 0
        rows = _bench.run_suite(dtypes=dtypes, threads=args.threads, repeat=args.repeat)
        print("\ncorrelate2d(image, kernel, 'same') against scipy.signal:")
        _bench.run_signal_suite(dtypes=dtypes, repeat=args.repeat)
        print("\nthe suite's fwd+bwd with channels-last (NHWC) operands:")
        _bench.run_layout_suite(dtypes=dtypes, repeat=args.repeat)
        if args.markdown:
            print("\n" + _bench.markdown_table(rows))
        return 0
    return selfcheck()


if __name__ == "__main__":
    sys.exit(main())
