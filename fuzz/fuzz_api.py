"""Fuzz target for fastconv's validating layer (the eight public functions).

Each input (a byte string) is decoded into a call: which function, array
shapes (including zero-sized, huge-but-unallocated broadcast views and odd
layouts), dtypes, and hyper-parameters of every type (ints, huge ints,
negative, tuples of the wrong length, strings, floats, None, bools).

A finding is any of:
  * an exception other than ValueError / TypeError / MemoryError;
  * a crash (the fuzzer reports it);
  * a result that disagrees with the textbook oracle (checked on small calls).

Run it coverage-guided with atheris (``pip install atheris``):

    python fuzz/fuzz_api.py -atheris_runs=200000

or, without atheris, on seeded random byte strings:

    python fuzz/fuzz_api.py --random 20000 [--seed 0]

Every finding becomes a regression test in tests/.
"""

import os
import sys

import numpy as np

import fastconv
from fastconv import reference as ref

EXPECTED = (ValueError, TypeError, MemoryError)
FUNCTIONS = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias",
             "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad"]
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.bool_, np.complex64, object]


class Draw:
    """Decode a byte string into choices (runs out gracefully: zeros)."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, lo, hi):
        span = hi - lo + 1
        value = 0
        for _ in range(1 + (span > 256)):
            value = value * 256 + self.byte()
        return lo + value % span

    def pick(self, options):
        return options[self.int(0, len(options) - 1)]

    def hyper(self, small=(0, 5)):
        """A hyper-parameter: mostly valid small ints, sometimes anything."""
        kind = self.int(0, 15)
        if kind < 9:
            return self.int(*small)
        if kind == 9:
            return (self.int(*small), self.int(*small))
        return self.pick([-1, 2**31, 2**62, 2**64, 1.5, None, True, "same", "valid", "bogus",
                          (1, 2, 3), (), [2], np.int64(2), np.array([1, 1])])

    def shape(self, ndim=4):
        dims = []
        for _ in range(ndim if self.int(0, 9) else self.int(0, 5)):
            dims.append(self.pick([0, 1, 1, 2, 3, 4, 5, 7, 9, 2**33]))
        return tuple(dims)

    def array(self, shape=None):
        shape = self.shape() if shape is None else shape
        try:
            return self._array(shape)
        except (ValueError, MemoryError):      # beyond what NumPy can build
            return self._array(tuple(min(d, 8) for d in shape))

    def _array(self, shape):
        dtype = self.pick(DTYPES) if self.int(0, 4) == 0 else self.pick([np.float32, np.float64])
        size = 1
        for d in shape:
            size *= d
        if size > 2**60:        # beyond what NumPy can index even as a view
            shape = tuple(1 if d > 2**20 else d for d in shape[:-1]) + shape[-1:]
            size = int(np.prod(shape, dtype=object))
        if size > 10**6 or max(shape, default=0) > 10**6:   # huge: a zero-stride view
            return np.broadcast_to(np.ones((), dtype=dtype), shape)
        rng = np.random.default_rng(self.byte())
        arr = rng.standard_normal(size).reshape(shape)
        if dtype is object:
            return arr.astype(object)
        arr = arr.astype(dtype)
        layout = self.int(0, 3)
        if layout == 1 and arr.ndim:
            arr = np.asfortranarray(arr)
        elif layout == 2 and arr.ndim and arr.shape[-1] > 1:
            arr = arr[..., ::-1]
        elif layout == 3 and arr.ndim:
            arr = np.repeat(arr, 2, axis=-1)[..., ::2]
        return arr


def _conv_problem(d):
    """A coherent conv2d geometry (valid most of the time)."""
    g = d.pick([1, 1, 1, 2, 3])
    cg, og = d.int(1, 3), d.int(1, 3)
    kh, kw = d.int(1, 4), d.int(1, 4)
    x_shape = (d.int(0, 3), cg * g, d.int(1, 10), d.int(1, 10))
    w_shape = (og * g, cg, kh, kw)
    hyper = dict(stride=(d.int(1, 3), d.int(1, 3)), dilation=(d.int(1, 2), d.int(1, 2)),
                 padding=d.pick([0, 1, 2, (1, 0), "same", "valid"]), groups=g)
    try:
        y_shape = fastconv.conv2d_cost(x_shape, w_shape, **hyper).output_shape
    except EXPECTED:
        y_shape = d.shape()
    return x_shape, w_shape, y_shape, hyper


def _pool_problem(d):
    kh, kw = d.int(1, 4), d.int(1, 4)
    x_shape = (d.int(0, 3), d.int(1, 3), d.int(1, 10), d.int(1, 10))
    hyper = dict(kernel_size=(kh, kw), stride=d.pick([None, 1, 2, 3, (2, 1)]),
                 padding=(d.int(0, kh // 2), d.int(0, kw // 2)), ceil_mode=bool(d.int(0, 1)))
    try:
        y_shape = fastconv.avg_pool2d(np.zeros(x_shape), **hyper).shape
    except EXPECTED:
        y_shape = d.shape()
    return x_shape, y_shape, hyper


def _corrupt(d, args, kwargs):
    """Now and then, replace one argument by something hostile."""
    if d.int(0, 3):
        return args, kwargs
    slot = d.int(0, len(args) + len(kwargs) - 1)
    if slot < len(args):
        args = list(args)
        args[slot] = d.pick([d.array(), d.shape(), d.hyper(), None, "x", [[1.0]]])
        return tuple(args), kwargs
    kwargs = dict(kwargs)
    kwargs[list(kwargs)[slot - len(args)]] = d.hyper()
    return args, kwargs


def _to_nhwc(shape):
    """An NCHW-ordered 4-D shape in NHWC order (other shapes unchanged)."""
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def _weight_to_nhwc(shape):
    """An (C_out, C_in/g, kh, kw) weight shape as (kh, kw, C_in/g, C_out)."""
    return (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape


def _call(d):
    name, args, hyper = _call_nchw(d)
    if d.int(0, 1):
        return name, args, hyper
    # the same problem in channels-last layout
    hyper = dict(hyper, layout="NHWC")
    args = list(args)
    for i, a in enumerate(args):
        weight = name in ("conv2d", "conv2d_grad_input") and i == 1
        weight = weight or (name == "conv2d_grad_weight" and i == 2)
        if isinstance(a, np.ndarray) and a.ndim == 4:
            args[i] = np.ascontiguousarray(a.transpose((2, 3, 1, 0) if weight else (0, 2, 3, 1)))
        elif isinstance(a, tuple) and len(a) == 4:
            args[i] = _weight_to_nhwc(a) if weight else _to_nhwc(a)
    return name, tuple(args), hyper


def _call_nchw(d):
    name = d.pick(FUNCTIONS)
    if name.startswith("conv2d") and name != "conv2d_grad_bias":
        x_shape, w_shape, y_shape, hyper = _conv_problem(d)
        if name == "conv2d":
            bias = d.array((w_shape[0],)) if d.int(0, 1) else None
            args = (d.array(x_shape), d.array(w_shape), bias)
        elif name == "conv2d_grad_input":
            args = (d.array(y_shape), d.array(w_shape), x_shape)
        else:
            args = (d.array(x_shape), d.array(y_shape), w_shape)
    elif name == "conv2d_grad_bias":
        args, hyper = (d.array(),), {}
    elif name in ("max_pool2d", "avg_pool2d"):
        x_shape, _, hyper = _pool_problem(d)
        if name == "avg_pool2d":
            hyper["count_include_pad"] = bool(d.int(0, 1))
        args = (d.array(x_shape),)
    elif name == "max_pool2d_grad":
        x_shape, y_shape, pool = _pool_problem(d)
        x = d.array(x_shape)
        try:
            _, idx = fastconv.max_pool2d(x, **pool)
        except EXPECTED:
            idx = np.broadcast_to(np.int64(d.int(-2, 40)), y_shape)
        if d.int(0, 7) == 0 and 0 < idx.size <= 10**6:
            idx = idx.copy()
            idx.flat[d.int(0, idx.size - 1)] = d.pick([-1, 10**6, 2**62, x_shape[2] * x_shape[3]])
        args, hyper = (d.array(idx.shape), idx, x_shape), {}
    else:
        x_shape, y_shape, hyper = _pool_problem(d)
        hyper["count_include_pad"] = bool(d.int(0, 1))
        args = (d.array(y_shape), x_shape)
    args, hyper = _corrupt(d, args, hyper)
    return name, args, hyper


def _small(args):
    """Cheap enough for the Python-loop oracles (zero-sized arrays with a
    huge dimension still loop over it)."""
    return all(not isinstance(a, np.ndarray) or (a.size <= 4000 and max(a.shape, default=0)
                                                 <= 4000) for a in args)


def check(data):
    """Run one decoded call; raise AssertionError (or anything unexpected) on
    a finding."""
    try:
        name, args, kwargs = _call(Draw(data))
    except (ValueError, MemoryError, IndexError):
        return      # the decoder asked NumPy for an array it cannot make: not a test
    try:
        result = getattr(fastconv, name)(*args, **kwargs)
    except EXPECTED:
        return
    if not _small(args):
        return
    try:
        expected = getattr(ref, name)(*args, **kwargs)
    except MemoryError:
        return      # the oracle materializes the padded input; fastconv does not
    except EXPECTED as exc:
        if "too big" in str(exc):
            return  # likewise (NumPy's size limit)
        raise AssertionError(f"{name} accepted arguments its oracle refuses: {exc}")
    got = result if isinstance(result, tuple) else (result,)
    want = expected if isinstance(expected, tuple) else (expected,)
    for g, w in zip(got, want):
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g64.shape == w64.shape, (name, g64.shape, w64.shape)
        tol = 1e-2 if np.asarray(g).dtype in (np.float16, np.float32) else 1e-9
        scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isinf(w64), 0, w64)), initial=0)))
        same_nan = np.array_equal(np.isnan(g64), np.isnan(w64))
        err = np.nanmax(np.abs(np.where(np.isinf(w64), 0, g64 - w64)), initial=0)
        assert same_nan and err <= tol * scale, (name, err)


def _random_mode(count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        data = rng.bytes(int(rng.integers(0, 96)))
        try:
            check(data)
        except Exception:
            print(f"finding at iteration {i}: input {data.hex()}", file=sys.stderr)
            raise
    print(f"fuzz_api: {count} random inputs, no finding")


def main(argv):
    if "--random" in argv:
        count = int(argv[argv.index("--random") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        _random_mode(count, seed)
        return 0
    import atheris

    atheris.instrument_all()        # coverage of fastconv's Python validating layer
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main(sys.argv))
