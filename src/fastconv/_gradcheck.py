"""Finite-difference check of analytic gradients (float64, central differences)."""

import numpy as np

__all__ = ["gradcheck"]


def _is_layer(obj):
    return hasattr(obj, "forward") and hasattr(obj, "backward")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _rel_errors(analytic, numeric, atol):
    """Element-wise ``|a - n| / max(|a|, |n|, floor)``, the floor being
    ``max(atol, 1e-3 * max|n|)``: entries far below the tensor's scale (where
    finite differences carry only rounding noise) are judged against that
    scale instead of against themselves."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradcheck: analytic gradient has shape {a.shape}, "
                         f"expected {n.shape}")
    if n.size == 0:
        return 0.0
    floor = max(atol, 1e-3 * float(np.max(np.abs(n))))
    denom = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    return float(np.max(np.abs(a - n) / denom))


def gradcheck(fn_or_layer, inputs, *, backward=None, eps=1e-6, atol=1e-10, seed=0,
              params=True, max_elements=None, details=False):
    """Compare an analytic backward with float64 central finite differences.

    The scalar checked is ``L = sum(out * g)`` for a fixed random ``g`` (so
    every output element contributes), or the output itself when it is a
    scalar (loss layers); its analytic gradient is ``backward(g)``.

    Parameters
    ----------
    fn_or_layer : layer or callable
        A layer (``forward(*inputs)`` / ``backward(dout)``, returning the
        gradient of the first input or a tuple of one per floating input;
        parameters in ``params`` and ``grads`` are checked too), a loss layer
        (scalar ``forward(pred, target)``, ``backward()``; only ``pred`` is
        checked), or a plain function ``fn(*inputs)`` together with
        ``backward``.
    inputs : array or tuple of arrays
        Floating inputs are copied to float64 and checked; integer inputs
        (labels) are passed through unchecked.
    backward : callable, optional
        For a plain function: ``backward(g, *inputs)`` returning the gradient
        of each floating input (a tuple, or one array for one input).
    eps : float, default 1e-6
        Finite-difference step.
    atol : float, default 1e-10
        Smallest denominator of the relative error.
    seed : int, default 0
        Seed of ``g`` and of the element sample.
    params : bool, default True
        Also check a layer's parameter gradients (parameters must be float64:
        build the layer with ``dtype=np.float64``).
    max_elements : int, optional
        Check at most this many randomly chosen elements per tensor.
    details : bool, default False
        Return ``(worst, {name: error})`` instead of ``worst``.

    Returns
    -------
    float
        The worst element-wise relative error ``|a - n| / max(|a|, |n|, floor)``
        over all checked tensors (floor: ``atol`` or 1e-3 of the tensor's
        largest numerical gradient, whichever is larger).  Values near 1e-8
        or below mean the backward is right; kinks (ReLU at 0, tied maxima)
        break finite differences, so test inputs should avoid them.
    """
    rng = np.random.default_rng(seed)
    if _is_layer(fn_or_layer):
        layer = fn_or_layer
        forward = layer.forward
    elif callable(fn_or_layer):
        if backward is None:
            raise TypeError("gradcheck: a plain function needs backward=(g, *inputs) -> grads")
        layer, forward = None, fn_or_layer
    else:
        raise TypeError(f"gradcheck: expected a layer or a callable, got {fn_or_layer!r}")

    xs = [np.array(x, dtype=np.float64) if np.asarray(x).dtype.kind in "fc" else np.asarray(x)
          for x in _as_tuple(inputs)]
    checked = [i for i, x in enumerate(xs) if x.dtype == np.float64]
    param_items = []
    if layer is not None:
        for name, p in layer.params.items():
            if p.dtype != np.float64:    # the layer would compute in float32 anyway
                raise TypeError(f"gradcheck: parameter {name} is {p.dtype}; build the layer "
                                "with dtype=np.float64")
            if params:
                param_items.append((name, p))

    out = forward(*xs)
    scalar = np.ndim(out) == 0
    g = None if scalar else rng.standard_normal(np.shape(out))

    def objective():
        value = forward(*xs)
        return float(value) if scalar else float(np.sum(np.asarray(value) * g))

    first, second = objective(), objective()
    if first != second and not (np.isnan(first) and np.isnan(second)):
        raise ValueError("gradcheck: forward gives different results for the same input "
                         "(a Dropout in training mode? call .eval() first)")

    if layer is not None:
        grads = layer.backward() if scalar else layer.backward(g)
    else:
        grads = backward(g, *xs)
    grads = _as_tuple(grads)
    if len(grads) == 1 and layer is not None:
        checked = checked[:1]   # one gradient: the first input's (a loss's prediction)
    analytic = {}
    for k, i in enumerate(checked):
        if k >= len(grads):
            raise ValueError(f"gradcheck: backward returned {len(grads)} gradients for "
                             f"{len(checked)} floating inputs")
        analytic[f"input{i}"] = np.array(grads[k], dtype=np.float64)
    for name, _ in param_items:
        analytic[name] = np.array(layer.grads[name], dtype=np.float64)

    targets = [(f"input{i}", xs[i]) for i in checked] + param_items
    errors = {}
    for name, arr in targets:
        flat = arr.reshape(-1)      # a view: arrays here are contiguous
        if not np.shares_memory(flat, arr):
            raise ValueError(f"gradcheck: {name} must be contiguous")
        idx = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            idx = np.sort(rng.choice(flat.size, size=max_elements, replace=False))
        numeric = np.empty(idx.size)
        for k, j in enumerate(idx):
            old = flat[j]
            flat[j] = old + eps
            plus = objective()
            flat[j] = old - eps
            minus = objective()
            flat[j] = old
            numeric[k] = (plus - minus) / (2 * eps)
        errors[name] = _rel_errors(analytic[name].reshape(-1)[idx], numeric, atol)
    # np.max, not max(): a NaN error must not hide behind a smaller one
    worst = float(np.max(list(errors.values()))) if errors else 0.0
    return (worst, errors) if details else worst
