"""Reference implementations ("oracles") of the fastconv kernels.

Everything here is plain, slow NumPy written straight from the textbook formulas in
``SPEC.md``.  These functions *are* the specification: the fast Cython kernels must
agree with them.  Semantics follow PyTorch (``F.conv2d``, ``F.max_pool2d`` with
``return_indices=True``, ``F.avg_pool2d`` and their autograd gradients) on NCHW data.

Conventions shared by every function:

* Arrays are ``(N, C, H, W)``; conv weights are ``(C_out, C_in // groups, kh, kw)``.
* With ``layout="NHWC"`` (channels last, the TensorFlow convention) arrays are
  ``(N, H, W, C)`` and conv weights ``(kh, kw, C_in // groups, C_out)``, and the
  ``input_shape`` / ``weight_shape`` arguments are given in that layout too.  Only
  the memory layout differs: every other rule (output sizes, padding, groups, the
  tie and NaN rules of max pooling, dtypes) is the NCHW one, and max-pool indices
  are still the flat in-plane index ``h*W + w`` (what PyTorch returns for a
  channels_last tensor).  The NHWC branches are the channels-last textbook loops,
  each looping over its result in the layout's axis order.
* ``stride``, ``dilation`` and ``kernel_size`` are an int or a pair ``(h, w)``;
  conv ``padding`` is an int, a pair, or ``"valid"`` / ``"same"``.
* Results have the floating dtype of the inputs (``np.result_type`` of the array
  arguments; float32 stays float32, float64 stays float64); integer or boolean
  inputs give float64.  Sums are accumulated in float64 and cast at the end.

This module deliberately imports nothing but NumPy and no other fastconv module.
"""

import numpy as np

__all__ = [
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_grad_bias",
    "max_pool2d",
    "max_pool2d_grad",
    "avg_pool2d",
    "avg_pool2d_grad",
    "correlate2d",
    "convolve2d",
]


# ---------------------------------------------------------------------------
# small private helpers
# ---------------------------------------------------------------------------

# How a 4-D shape reads in each layout (for error messages).
_ARRAY_AXES = {"NCHW": "(N, C, H, W)", "NHWC": "(N, H, W, C)"}
_WEIGHT_AXES = {"NCHW": "(C_out, C_in/groups, kh, kw)",
                "NHWC": "(kh, kw, C_in/groups, C_out)"}


def _check_layout(layout):
    if not isinstance(layout, str) or layout not in _ARRAY_AXES:
        raise ValueError("layout must be 'NCHW' or 'NHWC', got %r" % (layout,))
    return layout


def _to_nchw(shape, layout):
    """A 4-D array shape given in ``layout``, in ``(N, C, H, W)`` order."""
    if layout == "NHWC":
        n, h, w, c = shape
        return n, c, h, w
    return tuple(shape)


def _from_nchw(shape, layout):
    """An ``(N, C, H, W)``-ordered shape, in ``layout``'s order."""
    if layout == "NHWC":
        n, c, h, w = shape
        return n, h, w, c
    return tuple(shape)


def _weight_to_oihw(shape, layout):
    """A weight shape given in ``layout``, in ``(C_out, C_in/groups, kh, kw)`` order."""
    if layout == "NHWC":
        kh, kw, cg, o = shape
        return o, cg, kh, kw
    return tuple(shape)


def _pad_hw(a, top, bottom, left, right, layout):
    """Zero-pad the two spatial axes of a 4-D array in ``layout``."""
    hw = ((top, bottom), (left, right))
    if layout == "NHWC":
        return np.pad(a, ((0, 0),) + hw + ((0, 0),))
    return np.pad(a, ((0, 0), (0, 0)) + hw)


def _pair(value, name):
    """Turn an int or a length-2 sequence into a tuple of two Python ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError("%s must be an int or a pair of ints, got %r" % (name, value))
    return int(a), int(b)


def _out_dtype(*arrays):
    """Floating dtype of the result: the inputs' float dtype, float64 for ints."""
    dt = np.result_type(*arrays)
    if np.issubdtype(dt, np.floating):
        return dt
    return np.dtype(np.float64)


def _check_4d(shape, name, axes=_ARRAY_AXES["NCHW"]):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError("%s must be 4-D %s, got shape %r" % (name, axes, shape))
    return shape


def _conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups,
                   layout="NCHW"):
    """Validate conv arguments; return everything the loops need.

    ``input_shape`` and ``weight_shape`` are given in ``layout``; they are read in
    NCHW order for the checks, and the messages about their compatibility show
    them as given.  Returns the sizes, whatever the layout:
    ``(N, C, H, W, O, Cg, kh, kw, sh, sw, dh, dw, (pt, pb, pl, pr), Ho, Wo, g)``.
    ``padding="same"`` uses PyTorch's rule: total padding ``d*(k-1)`` per dim, the
    smaller half on top/left and the extra one on bottom/right (only with stride 1).
    """
    input_shape = _check_4d(input_shape, "input", _ARRAY_AXES[layout])
    weight_shape = _check_4d(weight_shape, "weight", _WEIGHT_AXES[layout])
    shapes = "input %s = %r, weight %s = %r" % (_ARRAY_AXES[layout], input_shape,
                                                _WEIGHT_AXES[layout], weight_shape)
    N, C, H, W = _to_nchw(input_shape, layout)
    O, Cg, kh, kw = _weight_to_oihw(weight_shape, layout)
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    groups = int(groups)
    if sh <= 0 or sw <= 0:
        raise ValueError("stride must be positive")
    if dh <= 0 or dw <= 0:
        raise ValueError("dilation must be positive")
    if kh <= 0 or kw <= 0:
        raise ValueError("kernel size must be positive (%s)" % shapes)
    if groups <= 0 or C % groups or O % groups:
        raise ValueError("groups=%d must divide in_channels=%d and out_channels=%d (%s)"
                         % (groups, C, O, shapes))
    if Cg != C // groups:
        raise ValueError("weight has %d input channels per group, expected %d (%s)"
                         % (Cg, C // groups, shapes))
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if sh != 1 or sw != 1:
                raise ValueError("padding='same' is not supported for strided convolutions")
            total_h, total_w = dh * (kh - 1), dw * (kw - 1)
            pt, pl = total_h // 2, total_w // 2
            pb, pr = total_h - pt, total_w - pl
        else:
            raise ValueError("padding string must be 'valid' or 'same', got %r" % padding)
    else:
        ph, pw = _pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError("padding must be non-negative")
        pt = pb = ph
        pl = pr = pw
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if Ho <= 0 or Wo <= 0:
        raise ValueError("kernel (with dilation) is larger than the padded input (%s)"
                         % shapes)
    return N, C, H, W, O, Cg, kh, kw, sh, sw, dh, dw, (pt, pb, pl, pr), Ho, Wo, groups


def _pool_out_size(size, k, s, p, ceil_mode):
    """PyTorch's pooling_output_shape (dilation 1)."""
    num = size + 2 * p - k
    if ceil_mode:
        out = -(-num // s) + 1          # ceil division
        # the last window must start inside the image or the left padding
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = num // s + 1
    return out


def _pool_geometry(input_shape, kernel_size, stride, padding, ceil_mode, layout="NCHW"):
    """Validate pooling arguments (``input_shape`` given in ``layout``); return the
    sizes ``(N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)``, whatever the layout."""
    N, C, H, W = _to_nchw(_check_4d(input_shape, "input", _ARRAY_AXES[layout]), layout)
    kh, kw = _pair(kernel_size, "kernel_size")
    if stride is None or (not isinstance(stride, (int, np.integer)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if H == 0 or W == 0:
        # a window must hold at least one real element (PyTorch refuses too)
        raise ValueError("input planes must not be empty, got %dx%d" % (H, W))
    if kh <= 0 or kw <= 0:
        raise ValueError("kernel_size must be positive")
    if sh <= 0 or sw <= 0:
        raise ValueError("stride must be positive")
    if ph < 0 or pw < 0:
        raise ValueError("padding must be non-negative")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError("padding should be at most half of kernel size, got padding=(%d, %d)"
                         " for kernel_size=(%d, %d)" % (ph, pw, kh, kw))
    Ho = _pool_out_size(H, kh, sh, ph, ceil_mode)
    Wo = _pool_out_size(W, kw, sw, pw, ceil_mode)
    if Ho <= 0 or Wo <= 0:
        raise ValueError("output size is too small (input %dx%d, kernel %dx%d)"
                         % (H, W, kh, kw))
    return N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------

def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           layout="NCHW"):
    """2-D cross-correlation, exactly as PyTorch's ``F.conv2d`` defines it.

    With ``x̃`` the zero-padded input and ``Cg = C / groups``, ``Og = O / groups``::

        Ho = floor((H + pt + pb - dh*(kh-1) - 1) / sh) + 1      (likewise Wo)
        y[n, o, p, q] = b[o] + sum_{c' < Cg} sum_u sum_v
                        w[o, c', u, v] * x̃[n, G(o)*Cg + c', p*sh + u*dh, q*sw + v*dw]

    where ``G(o) = o // Og`` is the group of output channel ``o``.  In NHWC the
    same sum reads, channels last::

        y[n, p, q, o] = b[o] + sum_{c' < Cg} sum_u sum_v
                        w[u, v, c', o] * x̃[n, p*sh + u*dh, q*sw + v*dw, G(o)*Cg + c']

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), or (N, H, W, C) for NHWC
        Input.
    weight : ndarray, shape (O, C // groups, kh, kw), or (kh, kw, C // groups, O) for NHWC
        Filters.
    bias : ndarray, shape (O,), optional
        Added to every output position of channel ``o``.
    stride, dilation : int or (int, int)
        Step between windows / between kernel taps.
    padding : int, (int, int), "valid" or "same"
        Zero padding on each side.  ``"valid"`` is 0.  ``"same"`` (stride 1 only) pads
        ``d*(k-1)`` in total per dim, ``floor`` of half on top/left and the rest on
        bottom/right, so the output has the input's spatial size.
    groups : int
        Number of channel groups.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``x``, ``weight`` and the result.

    Returns
    -------
    y : ndarray, shape (N, O, Ho, Wo), or (N, Ho, Wo, O) for NHWC
    """
    layout = _check_layout(layout)
    x = np.asarray(x)
    weight = np.asarray(weight)
    arrays = [x, weight] + ([] if bias is None else [np.asarray(bias)])
    dtype = _out_dtype(*arrays)
    (N, C, H, W, O, Cg, kh, kw, sh, sw, dh, dw, (pt, pb, pl, pr), Ho, Wo,
     groups) = _conv_geometry(x.shape, weight.shape, stride, padding, dilation, groups,
                              layout)
    Og = O // groups
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64)
        if b.shape != (O,):
            raise ValueError("bias must have shape (%d,), got %r" % (O, b.shape))
    else:
        b = np.zeros(O, dtype=np.float64)

    xpad = _pad_hw(x.astype(np.float64), pt, pb, pl, pr, layout)
    w = weight.astype(np.float64)
    ext_h = dh * (kh - 1) + 1          # extent of a dilated window
    ext_w = dw * (kw - 1) + 1
    if layout == "NCHW":
        y = np.zeros((N, O, Ho, Wo), dtype=np.float64)
        for n in range(N):
            for o in range(O):
                g = o // Og
                c0 = g * Cg
                for p in range(Ho):
                    for q in range(Wo):
                        window = xpad[n, c0:c0 + Cg,
                                      p * sh:p * sh + ext_h:dh,
                                      q * sw:q * sw + ext_w:dw]
                        y[n, o, p, q] = b[o] + np.sum(w[o] * window)
    else:
        y = np.zeros((N, Ho, Wo, O), dtype=np.float64)
        for n in range(N):
            for p in range(Ho):
                for q in range(Wo):
                    for o in range(O):
                        g = o // Og
                        c0 = g * Cg
                        window = xpad[n,
                                      p * sh:p * sh + ext_h:dh,
                                      q * sw:q * sw + ext_w:dw,
                                      c0:c0 + Cg]
                        y[n, p, q, o] = b[o] + np.sum(w[:, :, :, o] * window)
    return y.astype(dtype)


def conv2d_grad_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1,
                      groups=1, layout="NCHW"):
    """Gradient of :func:`conv2d` w.r.t. its input, computed the textbook way.

    With ``δ = grad_out`` (the sensitivity map) this is::

        dx̃[n, G*Cg + c', i, j] = sum_{o in group G} sum_u sum_v
                                  rot180(w)[o, c', u, v] * δ̂[n, o, i + u*dh, j + v*dw]
        dx = dx̃[:, :, pt:pt+H, pl:pl+W]

    (in NHWC: ``dx̃[n, i, j, G*Cg + c'] = sum rot180(w)[u, v, c', o] *
    δ̂[n, i + u*dh, j + v*dw, o]`` and ``dx = dx̃[:, pt:pt+H, pl:pl+W, :]``),
    where ``δ̂`` is built in four literal steps (SPEC.md):

    1. *dilate* δ by the stride: ``sh-1`` zero rows between rows and ``sw-1`` zero
       columns between columns (size ``(Ho-1)*sh+1 x (Wo-1)*sw+1``), then append
       zero rows/columns for the stride remainder (rows of ``x̃`` no window starts
       early enough to reach fully), giving the size ``Hp - dh*(kh-1)`` of a stride-1
       valid correlation over the padded input ``Hp = H + pt + pb``;
    2. *pad* it by ``dh*(kh-1)`` rows and ``dw*(kw-1)`` columns on each side
       (a "full" correlation);
    3. *rotate* each filter by 180 degrees and swap its in/out channel roles within
       its group;
    4. *correlate* with the filter's dilation -> ``dx̃`` of shape ``Hp x Wp``, and crop
       the padding.

    Equivalently ``dx̃[n, c, r, s] = sum_{o,p,q,u,v : p*sh+u*dh=r, q*sw+v*dw=s}
    δ[n,o,p,q] * w[o, c', u, v]`` — the adjoint of the forward map.

    Parameters
    ----------
    grad_out : ndarray, shape (N, O, Ho, Wo), or (N, Ho, Wo, O) for NHWC
        ``∂E/∂y``.
    weight : ndarray, shape (O, C // groups, kh, kw), or (kh, kw, C // groups, O) for NHWC
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input, or ``(N, H, W, C)`` for NHWC.
    stride, padding, dilation, groups :
        As in :func:`conv2d`.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``grad_out``, ``weight``, ``input_shape`` and the result.

    Returns
    -------
    dx : ndarray, shape input_shape
    """
    layout = _check_layout(layout)
    grad_out = np.asarray(grad_out)
    weight = np.asarray(weight)
    dtype = _out_dtype(grad_out, weight)
    (N, C, H, W, O, Cg, kh, kw, sh, sw, dh, dw, (pt, pb, pl, pr), Ho, Wo,
     groups) = _conv_geometry(input_shape, weight.shape, stride, padding, dilation, groups,
                              layout)
    expected = _from_nchw((N, O, Ho, Wo), layout)
    if grad_out.shape != expected:
        raise ValueError("grad_out must have shape %r, got %r" % (expected, grad_out.shape))
    Og = O // groups
    Hp, Wp = H + pt + pb, W + pl + pr
    nchw = layout == "NCHW"

    # 1. dilate the sensitivity map by the stride ...
    delta = grad_out.astype(np.float64)
    Hd, Wd = (Ho - 1) * sh + 1, (Wo - 1) * sw + 1
    if nchw:
        dil = np.zeros((N, O, Hd, Wd), dtype=np.float64)
        dil[:, :, ::sh, ::sw] = delta
    else:
        dil = np.zeros((N, Hd, Wd, O), dtype=np.float64)
        dil[:, ::sh, ::sw, :] = delta
    #    ... and append zero rows/columns for the stride remainder
    rem_h = (Hp - dh * (kh - 1)) - Hd
    rem_w = (Wp - dw * (kw - 1)) - Wd
    dil = _pad_hw(dil, 0, rem_h, 0, rem_w, layout)
    # 2. pad by the dilated kernel extent minus one on each side ("full" correlation)
    fh, fw = dh * (kh - 1), dw * (kw - 1)
    full = _pad_hw(dil, fh, fh, fw, fw, layout)
    # 3. rotate every filter by 180 degrees and swap in/out channels within each group:
    #    NCHW  w_t[G*Cg + c', o_local]       = rot180(w[G*Og + o_local, c'])
    #    NHWC  w_t[:, :, o_local, G*Cg + c'] = rot180(w[:, :, c', G*Og + o_local])
    w = weight.astype(np.float64)
    w_t = np.zeros((C, Og, kh, kw) if nchw else (kh, kw, Og, C), dtype=np.float64)
    for g in range(groups):
        for c_local in range(Cg):
            for o_local in range(Og):
                c, o = g * Cg + c_local, g * Og + o_local
                if nchw:
                    w_t[c, o_local] = np.rot90(w[o, c_local], 2)
                else:
                    w_t[:, :, o_local, c] = np.rot90(w[:, :, c_local, o], 2)
    # 4. correlate (with the filter's dilation) -> gradient w.r.t. the padded input
    ext_h, ext_w = fh + 1, fw + 1
    if nchw:
        dxpad = np.zeros((N, C, Hp, Wp), dtype=np.float64)
        for n in range(N):
            for c in range(C):
                g = c // Cg
                o0 = g * Og
                for i in range(Hp):
                    for j in range(Wp):
                        window = full[n, o0:o0 + Og, i:i + ext_h:dh, j:j + ext_w:dw]
                        dxpad[n, c, i, j] = np.sum(w_t[c] * window)
        # crop the padding
        dx = dxpad[:, :, pt:pt + H, pl:pl + W]
    else:
        dxpad = np.zeros((N, Hp, Wp, C), dtype=np.float64)
        for n in range(N):
            for i in range(Hp):
                for j in range(Wp):
                    for c in range(C):
                        g = c // Cg
                        o0 = g * Og
                        window = full[n, i:i + ext_h:dh, j:j + ext_w:dw, o0:o0 + Og]
                        dxpad[n, i, j, c] = np.sum(w_t[:, :, :, c] * window)
        # crop the padding
        dx = dxpad[:, pt:pt + H, pl:pl + W, :]
    return dx.astype(dtype)


def conv2d_grad_weight(x, grad_out, weight_shape, stride=1, padding=0, dilation=1,
                       groups=1, layout="NCHW"):
    """Gradient of :func:`conv2d` w.r.t. its filters.

    With ``δ = grad_out`` and ``x̃`` the zero-padded input::

        dw[o, c', u, v] = sum_n sum_p sum_q
                          δ[n, o, p, q] * x̃[n, G(o)*Cg + c', p*sh + u*dh, q*sw + v*dw]

    (in NHWC: ``dw[u, v, c', o] = sum δ[n, p, q, o] *
    x̃[n, p*sh + u*dh, q*sw + v*dw, G(o)*Cg + c']``), i.e. the input correlated
    with the sensitivity map (for one channel, stride 1, no padding:
    ``correlate2d(x, δ, 'valid')``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), or (N, H, W, C) for NHWC
        The forward input.
    grad_out : ndarray, shape (N, O, Ho, Wo), or (N, Ho, Wo, O) for NHWC
        ``∂E/∂y``.
    weight_shape : tuple of 4 ints
        ``(O, C // groups, kh, kw)``, or ``(kh, kw, C // groups, O)`` for NHWC.
    stride, padding, dilation, groups :
        As in :func:`conv2d`.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``x``, ``grad_out``, ``weight_shape`` and the result.

    Returns
    -------
    dw : ndarray, shape weight_shape
    """
    layout = _check_layout(layout)
    x = np.asarray(x)
    grad_out = np.asarray(grad_out)
    dtype = _out_dtype(x, grad_out)
    (N, C, H, W, O, Cg, kh, kw, sh, sw, dh, dw, (pt, pb, pl, pr), Ho, Wo,
     groups) = _conv_geometry(x.shape, weight_shape, stride, padding, dilation, groups,
                              layout)
    expected = _from_nchw((N, O, Ho, Wo), layout)
    if grad_out.shape != expected:
        raise ValueError("grad_out must have shape %r, got %r" % (expected, grad_out.shape))
    Og = O // groups
    xpad = _pad_hw(x.astype(np.float64), pt, pb, pl, pr, layout)
    delta = grad_out.astype(np.float64)
    span_h = (Ho - 1) * sh + 1
    span_w = (Wo - 1) * sw + 1
    if layout == "NCHW":
        dwt = np.zeros((O, Cg, kh, kw), dtype=np.float64)
        for o in range(O):
            c0 = (o // Og) * Cg
            for c_local in range(Cg):
                for u in range(kh):
                    for v in range(kw):
                        # x̃[n, c, p*sh + u*dh, q*sw + v*dw] for all n, p, q
                        patch = xpad[:, c0 + c_local,
                                     u * dh:u * dh + span_h:sh,
                                     v * dw:v * dw + span_w:sw]
                        dwt[o, c_local, u, v] = np.sum(delta[:, o] * patch)
    else:
        dwt = np.zeros((kh, kw, Cg, O), dtype=np.float64)
        for u in range(kh):
            for v in range(kw):
                for c_local in range(Cg):
                    for o in range(O):
                        c0 = (o // Og) * Cg
                        # x̃[n, p*sh + u*dh, q*sw + v*dw, c] for all n, p, q
                        patch = xpad[:,
                                     u * dh:u * dh + span_h:sh,
                                     v * dw:v * dw + span_w:sw,
                                     c0 + c_local]
                        dwt[u, v, c_local, o] = np.sum(delta[:, :, :, o] * patch)
    return dwt.astype(dtype)


def conv2d_grad_bias(grad_out, layout="NCHW"):
    """Gradient of :func:`conv2d` w.r.t. its bias.

    ::

        db[o] = sum_n sum_p sum_q δ[n, o, p, q]          (NHWC: δ[n, p, q, o])

    Parameters
    ----------
    grad_out : ndarray, shape (N, O, Ho, Wo), or (N, Ho, Wo, O) for NHWC
    layout : {"NCHW", "NHWC"}
        Memory layout of ``grad_out``.

    Returns
    -------
    db : ndarray, shape (O,)
    """
    layout = _check_layout(layout)
    grad_out = np.asarray(grad_out)
    dtype = _out_dtype(grad_out)
    N, O, Ho, Wo = _to_nchw(_check_4d(grad_out.shape, "grad_out", _ARRAY_AXES[layout]),
                            layout)
    delta = grad_out.astype(np.float64)
    db = np.zeros(O, dtype=np.float64)
    for o in range(O):
        if layout == "NCHW":
            db[o] = np.sum(delta[:, o])
        else:
            db[o] = np.sum(delta[:, :, :, o])
    return db.astype(dtype)


# ---------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------

def _max_window(plane, p, q, sh, sw, ph, pw, kh, kw):
    """The scan of :func:`max_pool2d` over window ``(p, q)`` of one ``H x W`` input
    plane (``x[n, c]`` in NCHW, ``x[n, :, :, c]`` in NHWC): ``(maxval, h*W + w)``."""
    H, W = plane.shape
    hstart, wstart = p * sh - ph, q * sw - pw
    hend, wend = min(hstart + kh, H), min(wstart + kw, W)
    hstart, wstart = max(hstart, 0), max(wstart, 0)
    maxval = -np.inf
    maxindex = hstart * W + wstart
    for h in range(hstart, hend):
        for w in range(wstart, wend):
            val = plane[h, w]
            if val > maxval or np.isnan(val):
                maxval = val
                maxindex = h * W + w
    return maxval, maxindex


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, layout="NCHW"):
    """2-D max pooling with argmax indices, as PyTorch's
    ``F.max_pool2d(..., return_indices=True)`` computes it on CPU.

    Output size (PyTorch's rule, per dim)::

        out = floor_or_ceil((H + 2p - k) / s) + 1
        if ceil_mode and (out - 1)*s >= H + p: out -= 1

    For each window ``hstart = p_out*s - p``, ``hend = min(hstart + k, H)``, with
    ``hstart`` clipped to 0 (padding counts as -inf, so only real elements are
    scanned)::

        maxval, index = -inf, first in-bounds element of the window
        for (h, w) in window, row-major:
            if x[h, w] > maxval or isnan(x[h, w]):
                maxval, index = x[h, w], h*W + w
        y = maxval

    Consequences: ties go to the *first* maximum in row-major order; a NaN wins over
    every number, and when a window holds several NaNs the *last* one is reported;
    a window of all ``-inf`` reports its first in-bounds element.  In NHWC each
    channel's plane ``x[n, :, :, c]`` is scanned the same way.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), or (N, H, W, C) for NHWC
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit ``-inf`` padding; at most ``kernel_size // 2`` per dim.
    ceil_mode : bool
        Use ceil instead of floor in the output-size formula.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``x`` and both results.

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    indices : ndarray of int64, shape of ``y``
        Flat index ``h*W + w`` of the chosen element within its input plane (the
        same number in both layouts).
    """
    layout = _check_layout(layout)
    x = np.asarray(x)
    dtype = _out_dtype(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, ceil_mode, layout)
    xf = x.astype(np.float64)      # exact for float32/float16 inputs
    geom = (sh, sw, ph, pw, kh, kw)
    out_shape = _from_nchw((N, C, Ho, Wo), layout)
    y = np.zeros(out_shape, dtype=np.float64)
    indices = np.zeros(out_shape, dtype=np.int64)
    if layout == "NCHW":
        for n in range(N):
            for c in range(C):
                plane = xf[n, c]
                for p in range(Ho):
                    for q in range(Wo):
                        y[n, c, p, q], indices[n, c, p, q] = _max_window(plane, p, q, *geom)
    else:
        for n in range(N):
            for p in range(Ho):
                for q in range(Wo):
                    for c in range(C):
                        plane = xf[n, :, :, c]
                        y[n, p, q, c], indices[n, p, q, c] = _max_window(plane, p, q, *geom)
    return y.astype(dtype), indices


def _plane_index(index, H, W):
    """A max-pool index as a Python int, checked to lie in an ``H x W`` plane."""
    idx = int(index)
    if not 0 <= idx < H * W:
        raise ValueError("index %d out of range for a %dx%d plane" % (idx, H, W))
    return idx


def max_pool2d_grad(grad_out, indices, input_shape, layout="NCHW"):
    """Gradient of :func:`max_pool2d` w.r.t. its input.

    Each ``δ[n, c, p, q]`` is routed to the element that won its window::

        dx[n, c].flat[indices[n, c, p, q]] += δ[n, c, p, q]

    (in NHWC: ``dx[n, :, :, c].flat[indices[n, p, q, c]] += δ[n, p, q, c]``;
    overlapping windows accumulate).  Note on ties: the textbook loop
    ``mask = (window == window.max()); dx[window] += δ * mask`` sends the gradient to
    *every* tied maximum.  fastconv, like PyTorch, sends it only to the *first*
    maximum in row-major window order (the one recorded in ``indices``); this oracle
    follows the fastconv/PyTorch convention.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    indices : ndarray of ints, shape of ``grad_out``
        As returned by :func:`max_pool2d` (flat in-plane ``h*W + w`` in both layouts).
    input_shape : tuple of 4 ints
        ``(N, C, H, W)``, or ``(N, H, W, C)`` for NHWC.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``grad_out``, ``indices``, ``input_shape`` and the result.

    Returns
    -------
    dx : ndarray, shape input_shape
    """
    layout = _check_layout(layout)
    grad_out = np.asarray(grad_out)
    indices = np.asarray(indices)
    dtype = _out_dtype(grad_out)
    input_shape = _check_4d(input_shape, "input_shape", _ARRAY_AXES[layout])
    N, C, H, W = _to_nchw(input_shape, layout)
    if grad_out.ndim != 4 or _to_nchw(grad_out.shape, layout)[:2] != (N, C):
        raise ValueError("grad_out shape %r does not match input_shape %r"
                         % (grad_out.shape, input_shape))
    if indices.shape != grad_out.shape:
        raise ValueError("indices must have the shape of grad_out")
    Ho, Wo = _to_nchw(grad_out.shape, layout)[2:]
    delta = grad_out.astype(np.float64)
    if layout == "NCHW":
        dx = np.zeros((N, C, H * W), dtype=np.float64)
        for n in range(N):
            for c in range(C):
                for p in range(Ho):
                    for q in range(Wo):
                        idx = _plane_index(indices[n, c, p, q], H, W)
                        dx[n, c, idx] += delta[n, c, p, q]
        dx = dx.reshape(N, C, H, W)
    else:
        dx = np.zeros((N, H * W, C), dtype=np.float64)
        for n in range(N):
            for p in range(Ho):
                for q in range(Wo):
                    for c in range(C):
                        idx = _plane_index(indices[n, p, q, c], H, W)
                        dx[n, idx, c] += delta[n, p, q, c]
        dx = dx.reshape(N, H, W, C)
    return dx.astype(dtype)


# ---------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------

def _avg_window(p, q, sh, sw, ph, pw, kh, kw, H, W, count_include_pad):
    """PyTorch's CPU avg-pool window: clipped bounds and divisor."""
    hstart, wstart = p * sh - ph, q * sw - pw
    hend, wend = min(hstart + kh, H + ph), min(wstart + kw, W + pw)
    pool_size = (hend - hstart) * (wend - wstart)
    hstart, wstart = max(hstart, 0), max(wstart, 0)
    hend, wend = min(hend, H), min(wend, W)
    if count_include_pad:
        divisor = pool_size
    else:
        divisor = (hend - hstart) * (wend - wstart)
    return hstart, hend, wstart, wend, divisor


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, layout="NCHW"):
    """2-D average pooling, as PyTorch's ``F.avg_pool2d`` computes it on CPU.

    Output size as in :func:`max_pool2d`.  For each window::

        hstart = p*s - pad;  hend = min(hstart + k, H + pad)      (likewise w)
        pool_size = (hend - hstart) * (wend - wstart)
        clip hstart, wstart to >= 0 and hend, wend to <= H, W
        divisor = pool_size if count_include_pad
                  else (hend - hstart) * (wend - wstart)
        y = sum(x[hstart:hend, wstart:wend]) / divisor

    So with ``count_include_pad=True`` zero padding is counted but the part of a
    ``ceil_mode`` window that hangs past ``H + pad`` is not.  (An empty window would
    give 0; valid arguments never produce one.)

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), or (N, H, W, C) for NHWC
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding; at most ``kernel_size // 2`` per dim.
    ceil_mode : bool
    count_include_pad : bool
    layout : {"NCHW", "NHWC"}
        Memory layout of ``x`` and the result.

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    """
    layout = _check_layout(layout)
    x = np.asarray(x)
    dtype = _out_dtype(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, ceil_mode, layout)
    xf = x.astype(np.float64)
    y = np.zeros(_from_nchw((N, C, Ho, Wo), layout), dtype=np.float64)
    if layout == "NCHW":
        for n in range(N):
            for c in range(C):
                for p in range(Ho):
                    for q in range(Wo):
                        hs, he, ws, we, divisor = _avg_window(
                            p, q, sh, sw, ph, pw, kh, kw, H, W, count_include_pad)
                        if hs >= he or ws >= we:
                            y[n, c, p, q] = 0.0
                            continue
                        y[n, c, p, q] = np.sum(xf[n, c, hs:he, ws:we]) / divisor
    else:
        for n in range(N):
            for p in range(Ho):
                for q in range(Wo):
                    hs, he, ws, we, divisor = _avg_window(
                        p, q, sh, sw, ph, pw, kh, kw, H, W, count_include_pad)
                    if hs >= he or ws >= we:
                        continue            # y[n, p, q, :] stays 0.0
                    for c in range(C):
                        y[n, p, q, c] = np.sum(xf[n, hs:he, ws:we, c]) / divisor
    return y.astype(dtype)


def avg_pool2d_grad(grad_out, input_shape, kernel_size, stride=None, padding=0,
                    ceil_mode=False, count_include_pad=True, layout="NCHW"):
    """Gradient of :func:`avg_pool2d` w.r.t. its input.

    Each ``δ[n, c, p, q]`` is spread evenly over the (clipped) window, with the same
    window bounds and divisor as the forward pass::

        dx[n, c, hstart:hend, wstart:wend] += δ[n, c, p, q] / divisor
        (NHWC: dx[n, hstart:hend, wstart:wend, c] += δ[n, p, q, c] / divisor)

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    input_shape : tuple of 4 ints
        ``(N, C, H, W)``, or ``(N, H, W, C)`` for NHWC.
    kernel_size, stride, padding, ceil_mode, count_include_pad :
        As in :func:`avg_pool2d`.
    layout : {"NCHW", "NHWC"}
        Memory layout of ``grad_out``, ``input_shape`` and the result.

    Returns
    -------
    dx : ndarray, shape input_shape
    """
    layout = _check_layout(layout)
    grad_out = np.asarray(grad_out)
    dtype = _out_dtype(grad_out)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geometry(
        input_shape, kernel_size, stride, padding, ceil_mode, layout)
    expected = _from_nchw((N, C, Ho, Wo), layout)
    if grad_out.shape != expected:
        raise ValueError("grad_out must have shape %r, got %r" % (expected, grad_out.shape))
    delta = grad_out.astype(np.float64)
    dx = np.zeros(_from_nchw((N, C, H, W), layout), dtype=np.float64)
    if layout == "NCHW":
        for n in range(N):
            for c in range(C):
                for p in range(Ho):
                    for q in range(Wo):
                        hs, he, ws, we, divisor = _avg_window(
                            p, q, sh, sw, ph, pw, kh, kw, H, W, count_include_pad)
                        if hs >= he or ws >= we:
                            continue
                        dx[n, c, hs:he, ws:we] += delta[n, c, p, q] / divisor
    else:
        for n in range(N):
            for p in range(Ho):
                for q in range(Wo):
                    hs, he, ws, we, divisor = _avg_window(
                        p, q, sh, sw, ph, pw, kh, kw, H, W, count_include_pad)
                    if hs >= he or ws >= we:
                        continue
                    for c in range(C):
                        dx[n, hs:he, ws:we, c] += delta[n, p, q, c] / divisor
    return dx.astype(dtype)


# ---------------------------------------------------------------------------
# single-channel correlation and convolution (scipy.signal semantics)
# ---------------------------------------------------------------------------

def _full_correlation(a, b):
    """``full[i, j] = sum_{k,l} a[i + k - (M2-1), j + l - (N2-1)] * b[k, l]``,
    zero outside ``a``: the textbook loop over every output and every tap."""
    M1, N1 = a.shape
    M2, N2 = b.shape
    out = np.zeros((M1 + M2 - 1, N1 + N2 - 1), dtype=np.float64)
    for i in range(M1 + M2 - 1):
        for j in range(N1 + N2 - 1):
            total = 0.0
            for k in range(M2):
                for m in range(N2):
                    r, c = i + k - (M2 - 1), j + m - (N2 - 1)
                    if 0 <= r < M1 and 0 <= c < N1:
                        total += a[r, c] * b[k, m]
            out[i, j] = total
    return out


def _crop(full, mode, a_shape, b_shape, start):
    """The 'valid' / 'same' window of a 'full' result; ``start`` gives the
    'same' offset of each axis from the kernel size."""
    if mode == "full":
        return full
    if mode == "valid":
        rows, cols = a_shape[0] - b_shape[0] + 1, a_shape[1] - b_shape[1] + 1
        return full[b_shape[0] - 1:b_shape[0] - 1 + rows, b_shape[1] - 1:b_shape[1] - 1 + cols]
    r0, c0 = start(b_shape[0]), start(b_shape[1])
    return full[r0:r0 + a_shape[0], c0:c0 + a_shape[1]]


def _signal_inputs(in1, in2, mode):
    a, b = np.asarray(in1), np.asarray(in2)
    if a.ndim != 2 or b.ndim != 2 or a.size == 0 or b.size == 0:
        raise ValueError("in1 and in2 must be non-empty 2-D arrays")
    if mode not in ("full", "valid", "same"):
        raise ValueError("mode must be 'full', 'valid' or 'same'")
    swap = False
    if mode == "valid":
        a_ge = a.shape[0] >= b.shape[0] and a.shape[1] >= b.shape[1]
        b_ge = b.shape[0] >= a.shape[0] and b.shape[1] >= a.shape[1]
        if not (a_ge or b_ge):
            raise ValueError("in 'valid' mode one input must be at least as large as the "
                             "other in every dimension")
        swap = not a_ge
    return a, b, swap, _out_dtype(a, b)


def correlate2d(in1, in2, mode="full"):
    """``scipy.signal.correlate2d(in1, in2, mode)`` with zero fill.

    'full': every overlap; 'valid': windows inside ``in1`` (if ``in2`` is the
    larger array in every dimension, SciPy swaps the inputs and reverses the
    result); 'same': the shape of ``in1``, the 'full' result from offset
    ``M2 // 2`` (likewise for columns).
    """
    a, b, swap, dtype = _signal_inputs(in1, in2, mode)
    if swap:
        full = _full_correlation(b.astype(np.float64), a.astype(np.float64))
        return _crop(full, mode, b.shape, a.shape, None)[::-1, ::-1].astype(dtype)
    full = _full_correlation(a.astype(np.float64), b.astype(np.float64))
    return _crop(full, mode, a.shape, b.shape, lambda m: m // 2).astype(dtype)


def convolve2d(in1, in2, mode="full"):
    """``scipy.signal.convolve2d(in1, in2, mode)`` with zero fill: the
    correlation with ``in2`` rotated by 180°.  'same' takes the 'full' result
    from offset ``(M2 - 1) // 2``; in 'valid' mode a larger ``in2`` trades
    places with ``in1`` (the convolution is commutative)."""
    a, b, swap, dtype = _signal_inputs(in1, in2, mode)
    if swap:
        a, b = b, a
    full = _full_correlation(a.astype(np.float64), b[::-1, ::-1].astype(np.float64))
    return _crop(full, mode, a.shape, b.shape, lambda m: (m - 1) // 2).astype(dtype)
