"""Layer objects with ``forward``/``backward``: the textbook's building blocks.

Every layer has

* ``forward(x)`` -- computes and caches what ``backward`` needs;
* ``backward(dout)`` -- returns ``dx`` and stores parameter gradients in
  ``grads`` (overwritten by each call, as in the textbook, not accumulated);
* ``params`` and ``grads`` -- dicts of arrays keyed ``"weight"``/``"bias"``
  (empty for layers without parameters).  Optimizers update ``params`` in
  place, so the arrays keep their identity.

Conv2D and the pools call the fastconv kernels (never ``fastconv.reference``);
weights have PyTorch's shapes, so a PyTorch ``state_dict`` (converted to
NumPy arrays) loads into a matching :class:`Sequential` unchanged.

Conv2D, MaxPool2D and AvgPool2D take ``layout="NHWC"`` for channels-last
activations ``(N, H, W, C)``; such a Conv2D keeps its weight as
``(kh, kw, C_in/groups, C_out)`` in ``params``.  State dicts
(:meth:`Sequential.state_dict`, ``load_state_dict``, ``save``/``load``) are
always in PyTorch's layout, whatever the layers' layout: a channels-last
Conv2D's weight goes out and comes in as ``(C_out, C_in/groups, kh, kw)``,
transposed on the way.  (A Flatten of channels-last maps orders their
features ``(H, W, C)``, not PyTorch's ``(C, H, W)``; a Linear after it needs
its weight's columns permuted accordingly.)

The loss layers (:class:`SoftmaxCrossEntropy`, :class:`MSELoss`) take the
target in ``forward(pred, target)`` and return a scalar; their ``backward``
returns the gradient with respect to ``pred``.  The graph nodes :class:`Mul`
and :class:`Add` take two inputs and return two gradients.
"""

from collections.abc import Mapping

import numpy as np

from fastconv import functional as F
from fastconv._simd import kernels as _kernels
from fastconv._threads import threads_for
from fastconv._validation import conv_padding, int_pair, output_array

__all__ = [
    "Layer",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Linear",
    "Flatten",
    "Dropout",
    "SoftmaxCrossEntropy",
    "MSELoss",
    "Mul",
    "Add",
    "Sequential",
]


def _rng(rng):
    """A numpy Generator from None (fresh entropy), a seed, or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _as_float(x):
    """``x`` as an array; integers and booleans become float64."""
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype.kind not in "fc" else x


def _snapshot(x, dtype=None):
    """A private copy of an input that backward will need, so that a caller
    reusing (overwriting) its batch buffer cannot corrupt the gradients."""
    return np.array(x, dtype=dtype, copy=True)


def _matmul(a, b, trans_a=False, trans_b=False):
    """``op(a) @ op(b)`` (``op(a) = a.T`` with ``trans_a``, likewise ``b``)
    for the Linear layer, through fastconv's GEMM in fastconv's own threads
    (``gemm_split``).  NumPy's ``@`` would wake its BLAS's thread pool even
    for the demo's 128 x 10 products, and those workers keep spinning while
    the next conv and pool kernels want the cores: the demo trained in
    2.8-3.2 s that way, 1.0 s this way, the same accuracy (2 cores).
    Dtypes other than float32/float64 after promotion keep NumPy's ``@``."""
    dtype = np.result_type(a, b)
    if dtype != np.float32 and dtype != np.float64:
        return (a.T if trans_a else a) @ (b.T if trans_b else b)
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    m, k = a.shape[::-1] if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    c = output_array((m, n), dtype)
    _kernels.gemm_split(a, b, c, trans_a, trans_b, threads_for(m * n * k))
    return c


def _float_dtype(dtype, name):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _init_weight(rng, shape, fan_in, fan_out, init, dtype, name):
    """He (``sqrt(2/fan_in)``, for ReLU nets) or Xavier/Glorot
    (``sqrt(2/(fan_in+fan_out))``) normal initialization, drawn in float64
    and cast, so float32 and float64 layers with the same seed agree."""
    if init == "he":
        std = np.sqrt(2.0 / fan_in)
    elif init == "xavier":
        std = np.sqrt(2.0 / (fan_in + fan_out))
    else:
        raise ValueError(f"{name}: init must be 'he' or 'xavier', got {init!r}")
    return (rng.standard_normal(shape) * std).astype(dtype)


def _positive_int(value, what, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: {what} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: {what} must be >= 1, got {value}")
    return int(value)


def _pool_output_shape(name, input_shape, kernel_size, stride, padding, ceil_mode,
                       layout="NCHW"):
    """``(N, C, Ho, Wo)`` (``(N, Ho, Wo, C)`` for NHWC) of a pooling layer
    (checked as the functions check)."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"{name}: the input must be 4-D {F._AXES[layout]['x']}, "
                         f"got shape {input_shape}")
    geo = F._pool_geometry(name, input_shape, kernel_size, stride, padding, ceil_mode,
                           layout=layout)
    return F._pool_out_shape(input_shape, geo, layout)


def _check_pool(name, kernel_size, stride, padding, ceil_mode):
    """Check pooling hyper-parameters on a plane the kernel just fits."""
    kh, kw = int_pair(kernel_size, "kernel_size", name, 1)
    _pool_output_shape(name, (1, 1, kh, kw), kernel_size, stride, padding, ceil_mode)


class Layer:
    """Base class: no parameters, identity in both directions.

    Subclasses override :meth:`forward` and :meth:`backward`, and may
    override :meth:`describe` (output shape, MACs) for model summaries.
    """

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout

    def __call__(self, *args):
        return self.forward(*args)

    def train(self, mode=True):
        """Switch training behaviour (Dropout) on or off; returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Same as ``train(False)``."""
        return self.train(False)

    def describe(self, input_shape):
        """``(output_shape, macs)`` for an input of ``input_shape``."""
        return tuple(input_shape), 0

    # State dicts are in PyTorch's layout; a layer whose parameter is stored
    # otherwise (a channels-last Conv2D) converts it on the way out and in.
    def _param_to_state(self, name, value):
        """Parameter ``name`` as a state dict holds it."""
        return value

    def _param_from_state(self, name, value):
        """A state dict's ``value`` for parameter ``name``, in this layer's layout."""
        return value

    def __repr__(self):
        return f"{type(self).__name__}()"

    def _cached(self, attr):
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value


class Conv2D(Layer):
    """2-D convolution layer (PyTorch's ``nn.Conv2d`` semantics).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation, groups
        As in :func:`fastconv.conv2d` (``padding`` may be ``'valid'`` or
        ``'same'``).
    bias : bool, default True
    dtype : float32 or float64, default float32
        Parameters, outputs and gradients are in this dtype; inputs are cast.
    rng : None, int or numpy.random.Generator
        Seed for the weights; None draws fresh entropy.
    init : {'he', 'xavier'}, default 'he'
        Weight initialization (normal); the bias starts at zero.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of the activations (``(N, C, H, W)`` or
        ``(N, H, W, C)``) and of the weight.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(out_channels, in_channels/groups, kh, kw)``
        (NHWC: ``(kh, kw, in_channels/groups, out_channels)``) and ``"bias"``
        of shape ``(out_channels,)`` (if ``bias``).

    Notes
    -----
    A channels-last layer draws its weight exactly as the NCHW layer with the
    same ``rng`` and stores it transposed, so the two compute the same
    function.  :class:`Sequential` state dicts hold the weight in PyTorch's
    ``(C_out, C_in/groups, kh, kw)`` in both layouts.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, rng=None, *, init="he", layout="NCHW"):
        super().__init__()
        name = "Conv2D"
        self.layout = F._check_layout(layout, name)
        self.in_channels = _positive_int(in_channels, "in_channels", name)
        self.out_channels = _positive_int(out_channels, "out_channels", name)
        self.groups = _positive_int(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels {in_channels} and out_channels "
                             f"{out_channels} must both be divisible by groups {groups}")
        self.kernel_size = int_pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.dtype = _float_dtype(dtype, name)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        fan_in = shape[1] * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        weight = _init_weight(_rng(rng), shape, fan_in, fan_out, init, self.dtype, name)
        # drawn in NCHW order in both layouts: a seeded NHWC layer is the
        # seeded NCHW layer, transposed
        self.params["weight"] = self._param_from_state("weight", weight)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        # check stride/padding/dilation now rather than at the first forward
        conv_padding(padding, self.kernel_size, int_pair(dilation, "dilation", name, 1),
                     int_pair(stride, "stride", name, 1), name)
        self._x = None

    def _geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, layout=self.layout)

    def forward(self, x):
        self._x = x = _snapshot(x, self.dtype)
        return F.conv2d(x, self.params["weight"], self.params.get("bias"), **self._geometry())

    def backward(self, dout):
        x = self._cached("_x")
        w = self.params["weight"]
        dout = np.asarray(dout, dtype=self.dtype)
        self.grads["weight"] = F.conv2d_grad_weight(x, dout, w.shape, **self._geometry())
        if "bias" in self.params:
            self.grads["bias"] = F.conv2d_grad_bias(dout, layout=self.layout)
        return F.conv2d_grad_input(dout, w, x.shape, **self._geometry())

    def describe(self, input_shape):
        from fastconv.cost import _conv_cost

        g = self._geometry()
        cost = _conv_cost(input_shape, self.params["weight"].shape, g["stride"], g["padding"],
                          g["dilation"], g["groups"], "bias" in self.params, self.layout,
                          "conv2d_cost")
        return cost.output_shape, cost.macs

    def _param_to_state(self, name, value):
        # (kh, kw, C_in/g, C_out) -> PyTorch's (C_out, C_in/g, kh, kw)
        if name == "weight" and self.layout == "NHWC":
            return np.ascontiguousarray(np.asarray(value).transpose(3, 2, 0, 1))
        return value

    def _param_from_state(self, name, value):
        # PyTorch's (C_out, C_in/g, kh, kw) -> (kh, kw, C_in/g, C_out)
        if name == "weight" and self.layout == "NHWC":
            return np.ascontiguousarray(np.asarray(value).transpose(2, 3, 1, 0))
        return value

    def __repr__(self):
        layout = "" if self.layout == "NCHW" else f", layout={self.layout!r}"
        return (f"Conv2D({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={'bias' in self.params}, dtype={self.dtype.name}{layout})")


class MaxPool2D(Layer):
    """Max pooling layer (:func:`fastconv.max_pool2d`); gradients go to the
    first maximum of each window.  ``layout="NHWC"`` pools channels-last
    activations ``(N, H, W, C)``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, *,
                 layout="NCHW"):
        super().__init__()
        self.layout = F._check_layout(layout, "MaxPool2D")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode = ceil_mode
        _check_pool("MaxPool2D", kernel_size, stride, padding, ceil_mode)
        self._indices = self._shape = None

    def forward(self, x):
        x = np.asarray(x)
        y, self._indices = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                        self.ceil_mode, layout=self.layout)
        self._shape = x.shape
        return y

    def backward(self, dout):
        return F.max_pool2d_grad(dout, self._cached("_indices"), self._shape,
                                 layout=self.layout)

    def describe(self, input_shape):
        return _pool_output_shape("MaxPool2D", input_shape, self.kernel_size, self.stride,
                                  self.padding, self.ceil_mode, self.layout), 0

    def __repr__(self):
        layout = "" if self.layout == "NCHW" else f", layout={self.layout!r}"
        return (f"MaxPool2D(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode}{layout})")


class AvgPool2D(Layer):
    """Average pooling layer (:func:`fastconv.avg_pool2d`); ``layout="NHWC"``
    pools channels-last activations ``(N, H, W, C)``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, *, layout="NCHW"):
        super().__init__()
        self.layout = F._check_layout(layout, "AvgPool2D")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        _check_pool("AvgPool2D", kernel_size, stride, padding, ceil_mode)
        self._shape = None

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad)

    def forward(self, x):
        x = np.asarray(x)
        self._shape = x.shape
        return F.avg_pool2d(x, *self._args(), layout=self.layout)

    def backward(self, dout):
        return F.avg_pool2d_grad(dout, self._cached("_shape"), *self._args(),
                                 layout=self.layout)

    def describe(self, input_shape):
        return _pool_output_shape("AvgPool2D", input_shape, self.kernel_size, self.stride,
                                  self.padding, self.ceil_mode, self.layout), 0

    def __repr__(self):
        layout = "" if self.layout == "NCHW" else f", layout={self.layout!r}"
        return (f"AvgPool2D(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode}, "
                f"count_include_pad={self.count_include_pad}{layout})")


class ReLU(Layer):
    """``max(x, 0)``; backward passes ``dout`` where the input was > 0."""

    def forward(self, x):
        x = np.asarray(x)
        self._mask = x > 0
        self._dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        return np.maximum(x, 0)          # NaN stays NaN, as in PyTorch

    def backward(self, dout):
        mask = self._cached("_mask")
        return np.where(mask, dout, 0).astype(self._dtype, copy=False)


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``; backward ``dout * y * (1 - y)``."""

    def forward(self, x):
        x = _as_float(x)
        # exp of a non-positive argument only: no overflow warnings
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._y

    def backward(self, dout):
        y = self._cached("_y")
        return (dout * y * (1 - y)).astype(y.dtype, copy=False)


class Tanh(Layer):
    """``tanh(x)``; backward ``dout * (1 - y**2)``."""

    def forward(self, x):
        self._y = np.tanh(_as_float(x))
        return self._y

    def backward(self, dout):
        y = self._cached("_y")
        return (dout * (1 - y * y)).astype(y.dtype, copy=False)


class Linear(Layer):
    """Affine layer ``y = x @ weight.T + bias`` (PyTorch's ``nn.Linear``):
    inputs of shape ``(..., in_features)``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator
    init : {'he', 'xavier'}, default 'he'

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(out_features, in_features)`` (as PyTorch
        stores it) and ``"bias"`` of shape ``(out_features,)``.

    Notes
    -----
    The textbook's ``x·W + b`` uses ``W = weight.T``: ``dx = dout·Wᵀ``,
    ``dW = xᵀ·dout``, ``db = Σ_rows dout``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None, *,
                 init="he"):
        super().__init__()
        name = "Linear"
        self.in_features = _positive_int(in_features, "in_features", name)
        self.out_features = _positive_int(out_features, "out_features", name)
        self.dtype = _float_dtype(dtype, name)
        self.params["weight"] = _init_weight(_rng(rng), (self.out_features, self.in_features),
                                             self.in_features, self.out_features, init,
                                             self.dtype, name)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self._x = None

    def _check(self, shape):
        if len(shape) < 1 or shape[-1] != self.in_features:
            raise ValueError(f"Linear: input must have shape (..., {self.in_features}), got "
                             f"{tuple(shape)} (put a Flatten before it)")

    def forward(self, x):
        x = np.asarray(x)
        self._check(x.shape)
        self._shape = x.shape
        # (..., in) -> (M, in): leading dimensions are a batch, as in PyTorch
        self._x = x2 = _snapshot(x.reshape(-1, self.in_features), self.dtype)
        y = _matmul(x2, self.params["weight"], trans_b=True)
        if "bias" in self.params:
            y += self.params["bias"]
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dout):
        x = self._cached("_x")
        dout = np.asarray(dout, dtype=self.dtype).reshape(-1, self.out_features)
        self.grads["weight"] = _matmul(dout, x, trans_a=True)
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)
        return _matmul(dout, self.params["weight"]).reshape(self._shape)

    def describe(self, input_shape):
        self._check(input_shape)
        rows = int(np.prod(input_shape[:-1], dtype=object))
        return tuple(input_shape[:-1]) + (self.out_features,), (
            rows * self.in_features * self.out_features)

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, "
                f"bias={'bias' in self.params}, dtype={self.dtype.name})")


class Flatten(Layer):
    """``(N, ...) -> (N, prod(...))`` in C order, as ``torch.flatten(x, 1)``."""

    def forward(self, x):
        x = np.asarray(x)
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return np.asarray(dout).reshape(self._cached("_shape"))

    def describe(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:], dtype=np.int64))), 0


class Dropout(Layer):
    """Inverted dropout (PyTorch's): in training, zero each element with
    probability ``p`` and scale the rest by ``1/(1-p)``; identity in eval.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    rng : None, int or numpy.random.Generator
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must lie in [0, 1], got {p}")
        self.p = float(p)
        self._rng = _rng(rng)
        self._mask = None

    def forward(self, x):
        x = _as_float(x)
        if not self.training or self.p == 0:
            self._mask = None
            return x
        if self.p == 1:
            self._mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            keep = self._rng.random(x.shape) >= self.p
            self._mask = (keep / (1 - self.p)).astype(x.dtype)
        return x * self._mask

    def backward(self, dout):
        if self._mask is None:
            return dout
        return (dout * self._mask).astype(np.asarray(dout).dtype, copy=False)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class SoftmaxCrossEntropy(Layer):
    """Softmax followed by the mean cross-entropy over the batch.

    ``forward(logits, labels)`` takes logits ``(N, K)`` and labels as class
    indices ``(N,)`` or target rows ``(N, K)`` (one-hot or probabilities, as
    PyTorch's ``cross_entropy``), and returns the mean loss (a Python float;
    NaN for an empty batch, as PyTorch).  ``backward(dout=1.0)`` returns
    ``dout * (softmax(logits) * sum(t) - t) / N``, i.e.
    ``(softmax - onehot) / N`` for class labels.  Logits of ``-inf`` mask
    their class.
    """

    def forward(self, logits, labels):
        z = _as_float(logits)
        if z.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy: logits must have shape (N, K), "
                             f"got {z.shape}")
        t = np.asarray(labels)
        n = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if t.ndim == 1:
            if t.shape[0] != n or t.dtype.kind not in "iu":
                raise ValueError(f"SoftmaxCrossEntropy: labels must be integer classes of "
                                 f"shape ({n},) or rows of shape {z.shape}, got "
                                 f"{t.dtype} {t.shape}")
            if t.size and (t.min() < 0 or t.max() >= z.shape[1]):
                raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {z.shape[1]})")
            target = np.zeros(z.shape, dtype=z.dtype)
            target[np.arange(n), t] = 1
            # gather, not onehot * log_p: a masked (-inf) logit elsewhere
            # would give 0 * -inf = NaN
            total = -log_p[np.arange(n), t].sum()
        elif t.shape == z.shape:
            target = t.astype(z.dtype, copy=False)
            total = -np.where(target != 0, target * log_p, 0).sum()
        else:
            raise ValueError(f"SoftmaxCrossEntropy: labels of shape {t.shape} do not match "
                             f"logits of shape {z.shape}")
        self._p = np.exp(log_p)
        self._t = target
        # PyTorch: the mean over an empty batch is NaN
        return float(total / n) if n else float("nan")

    @property
    def probabilities(self):
        """Softmax of the last forward's logits."""
        return self._cached("_p")

    def backward(self, dout=1.0):
        p = self._cached("_p")
        t = self._t
        # d/dz of -sum(t * log softmax(z)) is p * sum(t) - t (sum(t) = 1 for
        # class labels and probability rows)
        grad = p * t.sum(axis=1, keepdims=True) - t
        return (dout * grad / max(p.shape[0], 1)).astype(p.dtype, copy=False)


class MSELoss(Layer):
    """Mean squared error ``mean((pred - target)**2)`` (PyTorch's
    ``nn.MSELoss``); ``backward(dout=1.0)`` gives ``2 (pred - target) / size``."""

    def forward(self, pred, target):
        pred = _as_float(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: pred {pred.shape} and target {target.shape} must have "
                             "the same shape")
        self._diff = (pred - target.astype(np.float64)).astype(pred.dtype, copy=False)
        return float(np.mean(self._diff.astype(np.float64) ** 2)) if pred.size else float("nan")

    def backward(self, dout=1.0):
        diff = self._cached("_diff")
        return (dout * 2 * diff / max(diff.size, 1)).astype(diff.dtype, copy=False)


class Mul(Layer):
    """Multiplication node: ``forward(x, y) = x*y``; ``backward(dout) ->
    (dout*y, dout*x)``."""

    def forward(self, x, y):
        self._x = _snapshot(x) if isinstance(x, np.ndarray) else x
        self._y = _snapshot(y) if isinstance(y, np.ndarray) else y
        return x * y

    def backward(self, dout):
        x = self._cached("_x")
        return dout * self._y, dout * x


class Add(Layer):
    """Addition node: ``forward(x, y) = x+y``; ``backward(dout) -> (dout, dout)``."""

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout, dout


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    ``params``/``grads`` are flat dicts keyed ``"<index>.<name>"``, the way
    PyTorch's ``nn.Sequential`` names its ``state_dict`` entries, and hold
    the layers' own arrays (so optimizers update the layers in place).

    Parameters
    ----------
    *layers : Layer
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "forward") and hasattr(layer, "backward")):
                raise TypeError(f"Sequential: item {i} ({layer!r}) is not a layer")
            if any(layer is other for other in layers[:i]):
                # its cached input and gradients would be overwritten by the
                # second use; share weights by loading them instead
                raise ValueError(f"Sequential: item {i} ({layer!r}) appears twice; "
                                 "use a separate layer object per position")
        self.layers = list(layers)
        self.params = _PrefixedDict(self.layers, "params")
        self.grads = _PrefixedDict(self.layers, "grads")

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def describe(self, input_shape):
        macs = 0
        for layer in self.layers:
            input_shape, m = layer.describe(input_shape)
            macs += m
        return input_shape, macs

    def summary(self, input_shape):
        """Per-layer table (output shape, parameters, MACs) for an input of
        ``input_shape``; see :func:`fastconv.cost.summary`."""
        from fastconv.cost import summary

        return summary(self, input_shape)

    # --- parameters in and out ------------------------------------------------

    def _layer_of(self, key):
        """``(layer, name)`` owning the flat parameter key ``"<index>.<name>"``."""
        index, _, name = str(key).partition(".")
        return self.layers[int(index)], name

    def _param_to_state(self, name, value):
        layer, rest = self._layer_of(name)
        return getattr(layer, "_param_to_state", lambda n, v: v)(rest, value)

    def _param_from_state(self, name, value):
        layer, rest = self._layer_of(name)
        return getattr(layer, "_param_from_state", lambda n, v: v)(rest, value)

    def state_dict(self):
        """Copies of all parameters, keyed like PyTorch's ``nn.Sequential``,
        in PyTorch's layout (a channels-last Conv2D's weight transposed to
        ``(C_out, C_in/groups, kh, kw)``)."""
        return {k: np.array(self._param_to_state(k, v), copy=True)
                for k, v in self.params.items()}

    def load_state_dict(self, state, strict=True):
        """Copy parameters in from a mapping of arrays (ours or a PyTorch
        ``state_dict`` converted with ``{k: v.numpy() for ...}``).

        Shapes must match exactly, in PyTorch's layout (what
        :meth:`state_dict` gives; a channels-last Conv2D transposes its
        weight as it loads it); values are cast to each layer's dtype.
        With ``strict`` (the default) the key sets must match too (PyTorch
        buffers such as BatchNorm statistics are not supported).
        """
        own = self.params
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"Sequential.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        updates = []
        for key, target in own.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            expected = np.shape(self._param_to_state(key, target))
            if value.shape != expected:
                raise ValueError(f"Sequential.load_state_dict: {key} has shape {value.shape}, "
                                 f"the model expects {expected}")
            updates.append((target, self._param_from_state(key, value)))
        for target, value in updates:       # all checked first: all or nothing
            target[...] = value
        return self

    def save(self, path):
        """Write all parameters to an ``.npz`` file (keys and layout as in
        ``state_dict``)."""
        with open(path, "wb") as fh:
            np.savez(fh, **self.state_dict())

    def load(self, path):
        """Load parameters written by :meth:`save` (strict); returns self."""
        with np.load(path, allow_pickle=False) as data:
            return self.load_state_dict({k: data[k] for k in data.files})

    def __repr__(self):
        inner = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class _PrefixedDict(Mapping):
    """A live, read-only view of the layers' ``params`` or ``grads`` as one
    flat mapping keyed ``"<index>.<name>"``."""

    def __init__(self, layers, attr):
        self._layers, self._attr = layers, attr

    def _items(self):
        for i, layer in enumerate(self._layers):
            for name, value in getattr(layer, self._attr, {}).items():
                yield f"{i}.{name}", value

    def __getitem__(self, key):
        index, _, name = str(key).partition(".")
        if index.isdigit() and str(int(index)) == index and int(index) < len(self._layers):
            values = getattr(self._layers[int(index)], self._attr, {})
            if name in values:
                return values[name]
        raise KeyError(key)

    def __iter__(self):
        return (k for k, _ in self._items())

    def __len__(self):
        return sum(1 for _ in self._items())

    def __repr__(self):
        return repr(dict(self._items()))
