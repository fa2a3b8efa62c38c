"""fastconv's functional API: validate, normalize, allocate, call a kernel.

Semantics follow PyTorch's ``torch.nn.functional.conv2d``, ``max_pool2d`` and
``avg_pool2d`` (NCHW layout, cross-correlation, weight
``(C_out, C_in/groups, kh, kw)``), so weights move between the two
unchanged.  ``fastconv.reference`` holds the textbook loop versions of the
same eight functions; they are the specification these must match.

Every function takes ``layout="NCHW"`` (the default) or ``layout="NHWC"``
(channels last, the TensorFlow convention): arrays are then
``(N, H, W, C)``, conv weights ``(kh, kw, C_in/groups, C_out)``, and
``input_shape`` / ``weight_shape`` are given in that layout too.  Only the
memory layout differs (max-pool indices are the flat in-plane ``h*W + w``
in both); NHWC runs native channels-last kernels, not transposes.

Dtypes: float32 and float64 are computed as they are; integers and booleans
become float64; float16 is computed in float32 and returned as float16.
Inputs of different dtypes are promoted as NumPy would.  Every result is a
new C-contiguous array.  Any memory layout is accepted (Fortran order,
strided and negative-stride views, read-only and big-endian arrays).
"""

import math
import os
from collections import namedtuple

import numpy as np

from fastconv._simd import kernels as _kernels
from fastconv._threads import threads_for
from fastconv._validation import (
    MAX_BYTES,
    as_array,
    boolean,
    check_alloc,
    check_ndim,
    contiguous,
    conv_output_size,
    conv_padding,
    dtypes,
    int_pair,
    int_value,
    output_array,
    pool_output_size,
    shape4,
)

__all__ = [
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_grad_bias",
    "max_pool2d",
    "max_pool2d_grad",
    "avg_pool2d",
    "avg_pool2d_grad",
]

_NCHW = "(N, C, H, W)"
_OIHW = "(C_out, C_in/groups, kh, kw)"

# How each 4-D argument reads in each layout (for messages): the input, the
# conv weight, a conv output and a pooling output.
_AXES = {
    "NCHW": dict(x=_NCHW, w=_OIHW, y="(N, C_out, Ho, Wo)", pool="(N, C, Ho, Wo)"),
    "NHWC": dict(x="(N, H, W, C)", w="(kh, kw, C_in/groups, C_out)", y="(N, Ho, Wo, C_out)",
                 pool="(N, Ho, Wo, C)"),
}


def _check_layout(layout, fn):
    """The layout string, checked: only the exact strings "NCHW" and "NHWC"
    (the oracles' rule)."""
    if not isinstance(layout, str) or layout not in _AXES:
        raise ValueError(f"{fn}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def _to_nchw(shape, layout):
    """A 4-D array shape given in ``layout``, in ``(N, C, H, W)`` order."""
    if layout == "NHWC":
        n, h, w, c = shape
        return (n, c, h, w)
    return tuple(shape)


def _from_nchw(shape, layout):
    """An ``(N, C, H, W)``-ordered shape, in ``layout``'s order."""
    if layout == "NHWC":
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)


def _weight_to_oihw(shape, layout):
    """A weight shape given in ``layout``, in ``(C_out, C_in/groups, kh, kw)`` order."""
    if layout == "NHWC":
        kh, kw, cg, o = shape
        return (o, cg, kh, kw)
    return tuple(shape)


def _layout_note(layout, **names):
    """What the shapes in a message mean, for the non-default layout: e.g.
    `` (layout NHWC: x is (N, H, W, C))``; empty for NCHW (whose messages
    are unchanged)."""
    if layout == "NCHW":
        return ""
    parts = ", ".join(f"{name} is {_AXES[layout][kind]}" for name, kind in names.items())
    return f" (layout {layout}: {parts})"

# Normalized convolution geometry shared by forward and both gradients.
_ConvGeometry = namedtuple(
    "_ConvGeometry", "stride dilation pad_top pad_bottom pad_left pad_right groups out_h out_w")


def _conv_geometry(fn, x_shape, w_shape, stride, padding, dilation, groups,
                   x_name="x", w_name="weight", layout="NCHW"):
    """Check that an input shape and a weight shape make a valid conv2d.

    Both shapes are given in ``layout``; messages show them as given."""
    groups = int_value(groups, "groups", fn, 1)
    stride = int_pair(stride, "stride", fn, 1)
    dilation = int_pair(dilation, "dilation", fn, 1)
    x_given, w_given = tuple(x_shape), tuple(w_shape)
    n, c, h, w = _to_nchw(x_given, layout)
    c_out, cg, kh, kw = _weight_to_oihw(w_given, layout)
    def note():     # (built for a message only)
        return _layout_note(layout, **{x_name: "x", w_name: "w"})
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: {w_name} {w_given} must have a kernel of at least "
                         f"1x1 (layout {_AXES[layout]['w']})")
    if c % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the input channels C={c} "
                         f"of {x_name} {x_given}{note()}")
    if c_out % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the output channels "
                         f"C_out={c_out} of {w_name} {w_given}{note()}")
    if cg * groups != c:
        raise ValueError(f"{fn}: {w_name} {w_given} expects C_in/groups={cg}, i.e. "
                         f"{cg * groups} input channels with groups={groups}, but "
                         f"{x_name} {x_given} has C={c}{note()}")
    top, bottom, left, right = conv_padding(padding, (kh, kw), dilation, stride, fn)
    out_h = conv_output_size(h, top, bottom, kh, stride[0], dilation[0])
    out_w = conv_output_size(w, left, right, kw, stride[1], dilation[1])
    if out_h < 1 or out_w < 1:
        eff = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        raise ValueError(f"{fn}: the (dilated) kernel {eff[0]}x{eff[1]} of {w_name} "
                         f"{w_given} is larger than the padded input "
                         f"{h + top + bottom}x{w + left + right} of {x_name} {x_given}{note()}")
    return _ConvGeometry(stride, dilation, top, bottom, left, right, groups, out_h, out_w)


def _kernel_args(geo, macs):
    # macs: multiply-adds of the call (output size x one filter's size)
    return (geo.stride[0], geo.stride[1], geo.pad_top, geo.pad_left,
            geo.dilation[0], geo.dilation[1], geo.groups, threads_for(macs))


def _finite(w, n_threads):
    """No inf or NaN in the C-contiguous array `w` (in parallel, no
    temporary: the input gradient asks it of every weight array)."""
    return _kernels.all_finite(w.reshape(-1), n_threads)


def _finish(out, result_dtype):
    return out if out.dtype == result_dtype else out.astype(result_dtype)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    ``y[n, o, p, q] = b[o] + sum_{c, u, v} w[o, c, u, v] *
    x_pad[n, g(o)*C/groups + c, p*sh + u*dh, q*sw + v*dw]``; in NHWC the same
    sum reads ``y[n, p, q, o] = b[o] + sum_{c, u, v} w[u, v, c, o] *
    x_pad[n, p*sh + u*dh, q*sw + v*dw, g(o)*C/groups + c]``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W), or (N, H, W, C_in) for NHWC
        Input batch.
    weight : array_like, shape (C_out, C_in/groups, kh, kw)
        Filters; ``(kh, kw, C_in/groups, C_out)`` for NHWC.
    bias : array_like, shape (C_out,), optional
        Added to every output position of each channel.
    stride : int or (int, int), default 1
    padding : int, (int, int), 'valid' or 'same', default 0
        Zeros added on each side.  ``'same'`` (stride 1 only) keeps the
        spatial size, putting the extra row/column of an even kernel at the
        bottom/right, as PyTorch does.
    dilation : int or (int, int), default 1
        Spacing between kernel taps.
    groups : int, default 1
        Input and output channels are split into this many groups, each
        convolved separately (``groups == C_in`` is depthwise).
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `x`, `weight` and the result.

    Returns
    -------
    y : ndarray, shape (N, C_out, Ho, Wo), or (N, Ho, Wo, C_out) for NHWC
        ``Ho = (H + pad_top + pad_bottom - dh*(kh-1) - 1) // sh + 1``, likewise
        ``Wo``.

    Raises
    ------
    TypeError
        Non-numeric arrays or non-integer hyper-parameters.
    ValueError
        Wrong ranks, channel/group mismatches, out-of-range hyper-parameters,
        a kernel larger than the padded input, sizes too large to address, or
        a `layout` other than 'NCHW' and 'NHWC'.

    Notes
    -----
    Lowered to GEMM.  3x3 stride-1 layers with at least 32 input and
    output channels and 48x48 outputs are evaluated by Winograd's
    F(2x2, 3x3) instead (2.25x fewer multiply-adds; rounding comparable to
    the GEMM's; ``FASTCONV_WINOGRAD=0`` turns it off).  Values that are not
    finite always give the textbook sum's infinities and NaNs.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    >>> fastconv.conv2d(x.reshape(1, 4, 4, 1), np.ones((2, 2, 1, 1)), stride=2,
    ...                 layout="NHWC")[0, :, :, 0]
    array([[10., 18.],
           [42., 50.]])
    """
    fn = "conv2d"
    layout = _check_layout(layout, fn)
    axes = _AXES[layout]
    nhwc = layout == "NHWC"
    x = as_array(x, "x", fn)
    weight = as_array(weight, "weight", fn)
    check_ndim(x, 4, "x", fn, axes["x"])
    check_ndim(weight, 4, "weight", fn, axes["w"])
    c_out = weight.shape[3] if nhwc else weight.shape[0]
    arrays = [x, weight]
    if bias is not None:
        bias = as_array(bias, "bias", fn)
        if bias.shape != (c_out,):
            raise ValueError(f"{fn}: bias must have shape (C_out,) = ({c_out},) "
                             f"for weight {weight.shape}, got {bias.shape}"
                             + _layout_note(layout, weight="w"))
        arrays.append(bias)
    geo = _conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation, groups,
                         layout=layout)
    compute, result = dtypes(*arrays)
    out_shape = _from_nchw((x.shape[0], c_out, geo.out_h, geo.out_w), layout)
    check_alloc(out_shape, compute, "the output", fn)
    out = output_array(out_shape, compute)
    if out.size == 0:
        return _finish(out, result)
    if x.size == 0 or weight.size == 0:
        # no input channels or an empty plane: the padded input is all
        # zeros, so only the bias remains
        if bias is None:
            out[...] = 0
        else:
            b = contiguous(bias, compute)
            out[...] = b if nhwc else b[:, None, None]
        return _finish(out, result)
    b = contiguous(bias, compute) if bias is not None else np.empty(0, dtype=compute)
    w = contiguous(weight, compute)
    args = _kernel_args(geo, out.size * (weight.size // c_out))
    w_oihw, itemsize = _weight_to_oihw(weight.shape, layout), np.dtype(compute).itemsize
    phase = _winograd_phases(x.shape, w_oihw, geo, itemsize, layout)
    if ((phase is not None or _winograd(w_oihw, geo, x.shape[0], itemsize, layout))
            and _finite(w, args[-1])):
        x = contiguous(x, compute)
        b_or_none = b if bias is not None else None
        if (_phases_correlate(x, w, b_or_none, out, phase, args[-1], layout=layout)
                if phase is not None else
                _winograd_correlate(x, w, b_or_none, out, geo.pad_top, geo.pad_left, args[-1],
                                    layout=layout)):
            return _finish(out, result)
        # an output was not finite: recomputed as the textbook sums it
    # The direct depthwise loops skip zero padding; a non-finite weight times
    # that padding is NaN in the textbook sum, so such weights take the GEMM.
    if nhwc:
        depthwise = _depthwise_nhwc(weight.shape, x.shape[3], geo) and _finite(w, args[-1])
        kernel = _kernels.depthwise_forward_nhwc if depthwise else _kernels.conv2d_forward_nhwc
    else:
        depthwise = _depthwise(weight.shape, geo) and _finite(w, args[-1])
        kernel = _kernels.depthwise_forward if depthwise else _kernels.conv2d_forward
    kernel(contiguous(x, compute), w, b, bias is not None, out, *args)
    return _finish(out, result)


# Winograd (_winograd.pxi) takes the 3x3 stride-1 correlations -- the
# forward and the input gradient by F(2x2, 3x3), the filter gradient by
# F(3x3, 2x2) -- with at least _WINOGRAD_MIN_CHANNELS input and output
# channels (_WINOGRAD_FEW_CHANNELS for NHWC and NCHW's filter gradient) and
# output planes of at least _WINOGRAD_MIN_PLANE positions: 2.25x fewer
# multiply-adds, for transforms that cost about what packing the patches
# does.  Measured against the GEMM kernels (in-process A/B, 2 threads,
# Xeon), NCHW: vgg3x3 forward 1.69x / 1.22x (float32 / float64), input
# gradient 1.70x / 1.25x, filter gradient 1.07x / 1.14x; big 1.48x /
# 1.36x, 1.42x / 1.38x, 1.20x / 1.23x; 32 channels of 56x56 1.18-1.47x.
# NHWC: vgg3x3 2.02x / 2.14x, 2.02x / 2.06x, 1.79x / 1.66x; big 1.42x /
# 1.82x, 1.96x / 1.83x, 1.30x / 1.62x; 16 and 24 channels 1.30-2.44x.
# (The NCHW figures predate its channels-last stages, 2026-12-05, which
# made its forward 1.0-1.46x and its filter gradient 1.1-1.8x faster in
# float32.)
#
# Smaller planes (ResNet's 28x28 to 7x7, CIFAR's 16x16 and 8x8) take it
# where the batch has enough tiles (2x2 output blocks) to pay for the
# filters' transforms U (16 x C_out x C_in; the filter gradient's sums M
# are U's size).  NCHW, since its stages (forward / input gradient / filter
# gradient against the GEMM kernels, 2 threads, float32 then float64):
#   8x512x7x7 (128 tiles)     1.12 / 1.38 / 1.28x   0.81 / 1.05 / 0.76x
#   16x512x7x7 (256 tiles)    1.46 / 1.65 / 1.51x   1.23 / 1.43 / 1.00x
#   4x512x7x7 (64 tiles)      0.87 / 1.14 / 1.02x   0.81 / 1.07 / 0.47x
#   4x256x14x14 (196 tiles)   1.50 / 1.61 / 1.69x   1.48 / 1.55 / 1.77x
#   2x256x7x7 (32 tiles)      0.99 / 1.24 / 0.96x   0.94 / 1.15 / 0.95x
#   2x128x14x14 (98 tiles)    1.16 / 1.24 / 2.37x   1.04 / 1.18 / 1.65x
#   32x32x16x16, 32x32x8x8    1.25-1.47x            1.28-1.58x
#   8x32x28x28                0.98 / 0.98 / 1.66x   1.19 / 1.21 / 1.30x
#   16 channels, 16x16-56x56  0.75-0.96 / .. / 1.12-1.47x, 0.90-1.24 / ..
#                             / 1.21-1.62x
# So NCHW wants U's bytes over _WINOGRAD_BYTES_PER_TILE in tiles, and at
# least _WINOGRAD_MIN_TILES (_WINOGRAD_MIN_TILES_GW for the filter
# gradient).  NHWC, whose GEMM kernels are faster on these shapes (its
# filter gradient 0.63-0.85x for 512 channels or 128 tiles), keeps the
# rule measured before: at least _WINOGRAD_MIN_TILES tiles,
# _WINOGRAD_MANY_TILES where U is over _WINOGRAD_SMALL_SUMS_BYTES (its
# float64 32 MiB are fresh pages on every call), and for the filter
# gradient _WINOGRAD_MANY_TILES and M within that budget.  Tests lower
# _WINOGRAD_MIN_CHANNELS and _WINOGRAD_MIN_PLANE to reach small shapes;
# _WINOGRAD_MIN_CHANNELS = None turns Winograd off, as FASTCONV_WINOGRAD=0
# in the environment at import does (the GEMM kernels' sums everywhere).
_WINOGRAD_MIN_CHANNELS = None if os.environ.get("FASTCONV_WINOGRAD") == "0" else 32
_WINOGRAD_FEW_CHANNELS = 16
_WINOGRAD_MIN_PLANE = 48 * 48
_WINOGRAD_MIN_TILES = 64
_WINOGRAD_MIN_TILES_GW = 32
_WINOGRAD_BYTES_PER_TILE = 128 << 10
_WINOGRAD_MANY_TILES = 256
_WINOGRAD_SMALL_SUMS_BYTES = 8 << 20
# Tiles of a work item: the N (forward, input gradient) or K (filter
# gradient) of its sixteen GEMMs.
_WINOGRAD_BLOCK_TILES = 128
# The filter gradient's workspace is its sums M (16 x C_out x C_in, 16/9 of
# the weight) plus one block's transforms; layers with a larger M (float64
# beyond about 1000 channels) keep the GEMM kernels, whose workspace is per
# thread.  Winograd against the GEMM kernels above the earlier 16 MiB bound
# (2 threads, 3 alternating rounds, NCHW / NHWC): float64 384-768 channels
# of 48x48-64x64 (M 18-72 MiB) 1.39-2.17x / 1.38-2.48x faster, float32
# 640-768 channels (M 25-36 MiB) 1.68-1.90x / 1.41-1.43x; 16 MiB had been
# the budget of the per-work-item copies of M, which the larger M no longer
# take (see conv2d_grad_weight_winograd).
_WINOGRAD_MAX_SUMS_BYTES = 128 << 20


def winograd_config():
    """Where Winograd is used, for ``show_config``."""
    if _WINOGRAD_MIN_CHANNELS is None:
        return "off"
    return (f"3x3 stride 1, >= {_WINOGRAD_MIN_CHANNELS} channels (NHWC and the NCHW "
            f"filter gradient >= {_WINOGRAD_FEW_CHANNELS}), >= {_WINOGRAD_MIN_PLANE} output "
            f"positions, or smaller planes with enough 2x2 tiles in the batch (NCHW: >= "
            f"{_WINOGRAD_MIN_TILES}, filter gradient {_WINOGRAD_MIN_TILES_GW}, and one per "
            f"{_WINOGRAD_BYTES_PER_TILE >> 10} KiB of transformed filters; NHWC: >= "
            f"{_WINOGRAD_MIN_TILES}, >= {_WINOGRAD_MANY_TILES} for the filter gradient and "
            f"for transforms over {_WINOGRAD_SMALL_SUMS_BYTES >> 20} MiB); work items of "
            f"{_WINOGRAD_BLOCK_TILES} tiles, NCHW {_WINOGRAD_BLOCK_TILES // 2} for 64 "
            f"channels or fewer in float64 and in the filter gradient; dilated layers "
            f"(dilation <= {_PHASES_MAX_DILATION}) on their phase images, by the same rules, "
            f"where the phase outputs fill >= {_PHASES_MIN_FILL:.0%} of their tiles and "
            f"have >= {_PHASES_MIN_PLANE['NCHW']} positions (NHWC "
            f"{_PHASES_MIN_PLANE['NHWC']})")


def _winograd(w_shape, geo, n_img, itemsize, layout="NCHW", grad_weight=False):
    """Whether a convolution of `n_img` images with filters `w_shape`
    (C_out, C_in, kh, kw), geometry `geo` (that of the forward, for all
    three passes) and `itemsize`-byte values takes the Winograd kernels for
    its forward and input gradient, or with `grad_weight` its filter
    gradient (whose sums M stay within _WINOGRAD_MAX_SUMS_BYTES on any
    plane).  A function of the shape only."""
    c_out, c_in, kh, kw = w_shape
    if not (_WINOGRAD_MIN_CHANNELS is not None and (kh, kw) == (3, 3) and geo.groups == 1
            and geo.stride == (1, 1) and geo.dilation == (1, 1)):
        return False
    few = layout == "NHWC" or grad_weight
    if min(c_out, c_in) < (min(_WINOGRAD_MIN_CHANNELS, _WINOGRAD_FEW_CHANNELS) if few
                           else _WINOGRAD_MIN_CHANNELS):
        return False
    sums_bytes = 16 * c_out * c_in * itemsize       # U, and the filter gradient's M
    if grad_weight and sums_bytes > _WINOGRAD_MAX_SUMS_BYTES:
        return False
    if geo.out_h * geo.out_w >= _WINOGRAD_MIN_PLANE:
        return True
    tiles = n_img * ((geo.out_h + 1) // 2) * ((geo.out_w + 1) // 2)
    if layout == "NCHW":
        least = _WINOGRAD_MIN_TILES_GW if grad_weight else _WINOGRAD_MIN_TILES
        return tiles >= max(least, sums_bytes // _WINOGRAD_BYTES_PER_TILE)
    big = sums_bytes > _WINOGRAD_SMALL_SUMS_BYTES
    if grad_weight:
        return tiles >= _WINOGRAD_MANY_TILES and not big
    return tiles >= (_WINOGRAD_MANY_TILES if big else _WINOGRAD_MIN_TILES)


def _winograd_block_tiles(c_in, c_out, itemsize, layout, grad_weight=False):
    """Tiles per Winograd work item: _WINOGRAD_BLOCK_TILES, or half as many
    in NCHW for 64 channels or fewer in float64 and in the filter gradient,
    whose stages and transforms of 128 tiles overflowed L2 there (2
    threads, 8x64x56x56, 64 against 128 tiles: float64 forward 1.07x, filter
    gradient 1.08x, float32 filter gradient 1.07x; 32x64x8x8 float64
    forward 1.20x).  A function of the shape only."""
    if layout == "NCHW" and max(c_in, c_out) <= 64 and (itemsize == 8 or grad_weight):
        return max(1, _WINOGRAD_BLOCK_TILES // 2)
    return _WINOGRAD_BLOCK_TILES


def _winograd_correlate(x, w, b, out, pad_top, pad_left, n_threads, rotate_swap=False,
                        layout="NCHW"):
    """``out = conv2d(x, w) + b`` (3x3, stride 1, leading paddings given,
    `b` None for no bias) by Winograd F(2x2, 3x3), or with `rotate_swap`
    the correlation with the rotated filters, in and out channels swapped
    (the input gradient's); `w` is the forward's weight in `layout`.  False,
    with `out` incomplete, if an output was not finite (the transforms would
    not give the textbook's inf/NaN)."""
    nhwc = layout == "NHWC"
    c_in, c_out = (x.shape[3], out.shape[3]) if nhwc else (x.shape[1], out.shape[1])
    # U[xi] as the kernels' GEMMs take it: correlation input x output channels
    u = np.empty((16, c_in, c_out), dtype=out.dtype)
    (_kernels.winograd_filters_nhwc if nhwc else _kernels.winograd_filters)(
        w, u, rotate_swap, n_threads)
    kernel = _kernels.conv2d_winograd_nhwc if nhwc else _kernels.conv2d_winograd
    return kernel(x, u, np.empty(0, dtype=out.dtype) if b is None else b, b is not None, out,
                  pad_top, pad_left, _winograd_block_tiles(c_in, c_out, out.itemsize, layout),
                  n_threads)


# A dilated 3x3 correlation with stride 1 reads, for the outputs of one
# row and column phase (rows p, p + dh, ...; columns q, q + dw, ...), only
# the inputs of one phase: it is dh*dw undilated correlations of the phase
# images, which Winograd takes stacked along the batch (_phases.pxi splits
# and merges them, each phase image led by zeros up to a common padding
# where the phases' paddings differ).  The GEMM kernels would pack the
# dilated patches instead.  8x64x56x56, 64 filters, dilation 2 ("same"
# padding), 2 threads: fwd / input gradient / filter gradient 5.65 / 5.75 /
# 7.17 ms by GEMM, float32 (13.4 / 12.5 / 12.1 float64), against
# Winograd's 4.21 / 4.24 / 3.85 (7.77 / 7.21 / 8.86) on the phases before
# their split and merge (0.17-0.45 ms each, at copy speed).
#
# Large dilations make small phase planes, on which the 2x2 tiles run over
# odd edges and each image's borders cost more: against the GEMM kernels
# (2 threads, 'same' padding, forward / input gradient / filter gradient,
# float32 and float64, 4x64x48x48 and 2x256x33x33), phase planes of 3x3
# and 5x5 lost in NCHW (0.49-0.88x) and with 256 channels in NHWC
# (0.79-0.89x; 64 channels 0.87-1.32x), 4x4 lost in NCHW (0.84-1.03x)
# and won in NHWC (1.43-1.75x), 6x6 won from 256 channels (NCHW
# 1.27-1.40x, NHWC 1.28-1.55x) and tied with 64 in NCHW (float32
# 0.91-1.01x, float64 1.00-1.24x), 7x7 to 12x12 won (NCHW 0.95-1.41x,
# NHWC 1.07-1.72x).  So the phase outputs must fill at least
# _PHASES_MIN_FILL of their tiles and have _PHASES_MIN_PLANE positions.
_Phases = namedtuple("_Phases", "geo in_hw x_rows x_cols y_rows y_cols")
_PHASES_MAX_DILATION = 64       # _phases.pxi's MAX_PHASES
_PHASES_MIN_FILL = 0.75
_PHASES_MIN_PLANE = {"NCHW": 36, "NHWC": 16}


def _phase_axis(n_in, n_out, pad, d):
    """One axis of a dilated 3x3 correlation (input and output lengths,
    leading padding, dilation) split into its d phases: the phases' common
    padding, the phase images' input length, and the axis maps of the
    input and of the output (see _phases.pxi)."""
    # output phase p reads input phase (p - pad) mod d, led by
    # -floor((p - pad) / d) zeros of padding
    lead = [-((p - pad) // d) for p in range(d)]
    common = min(lead)
    x_map = np.array([((p - pad) % d, lead[p] - common, -(-(n_in - (p - pad) % d) // d))
                      for p in range(d)], dtype=np.intp)
    y_map = np.array([(p, 0, -(-(n_out - p) // d)) for p in range(d)], dtype=np.intp)
    return common, int((x_map[:, 1] + x_map[:, 2]).max()), x_map, y_map


def _winograd_phases(x_shape, w_oihw, geo, itemsize, layout="NCHW", grad_weight=False):
    """A dilated convolution `geo` of an input `x_shape` (in `layout`) with
    filters `w_oihw` split into phase images (_Phases: the undilated
    geometry of a phase, the phase images' input plane, the axis maps) when
    those take Winograd, else None.  A function of the shapes only."""
    dh, dw = geo.dilation
    if ((dh, dw) == (1, 1) or max(dh, dw) > _PHASES_MAX_DILATION or geo.stride != (1, 1)
            or geo.groups != 1):
        return None
    n, _, h, w = _to_nchw(x_shape, layout)
    top, in_h, x_rows, y_rows = _phase_axis(h, geo.out_h, geo.pad_top, dh)
    left, in_w, x_cols, y_cols = _phase_axis(w, geo.out_w, geo.pad_left, dw)
    out_h, out_w = -(-geo.out_h // dh), -(-geo.out_w // dw)
    tiles = ((out_h + 1) // 2) * ((out_w + 1) // 2)
    if out_h * out_w < max(_PHASES_MIN_FILL * 4 * tiles, _PHASES_MIN_PLANE[layout]):
        return None
    # (trailing paddings as the phase images' sizes make them; negative:
    # rows no output reads)
    phase = geo._replace(dilation=(1, 1), pad_top=top, pad_bottom=out_h + 2 - top - in_h,
                         pad_left=left, pad_right=out_w + 2 - left - in_w, out_h=out_h,
                         out_w=out_w)
    if not _winograd(w_oihw, phase, n * dh * dw, itemsize, layout, grad_weight):
        return None
    return _Phases(phase, (in_h, in_w), x_rows, x_cols, y_rows, y_cols)


def _phase_array(full_shape, plane, rows, cols, layout, dtype):
    """A new array for the phase images (planes `plane`, one per axis map
    entry pair and image) of an array of `full_shape` in `layout`."""
    n = full_shape[0] * len(rows) * len(cols)
    return output_array((n, *plane, full_shape[3]) if layout == "NHWC"
                        else (n, full_shape[1], *plane), dtype)


def _phase_split(a, plane, rows, cols, layout, n_threads):
    """The phase images (planes `plane`) of the C-contiguous `a` by the
    axis maps `rows` and `cols`, stacked along the batch: image
    (p*dw + q)*N + n from a[n] (see _phases.pxi)."""
    phases = _phase_array(a.shape, plane, rows, cols, layout, a.dtype)
    _kernels.phase_split(a, phases, rows, cols, layout == "NHWC", n_threads)
    return phases


def _phases_correlate(a, w, b, out, phases, n_threads, rotate_swap=False, layout="NCHW"):
    """`out` (the forward's output, or with `rotate_swap` the input
    gradient) of a dilated convolution by Winograd on the phase images
    `phases` (_winograd_phases) of `a` (x, or dY): False, with `out`
    incomplete, as _winograd_correlate."""
    geo = phases.geo
    x_maps, y_maps = (phases.x_rows, phases.x_cols), (phases.y_rows, phases.y_cols)
    y_plane = (geo.out_h, geo.out_w)
    if rotate_swap:
        a_maps, a_plane, out_maps, out_plane = y_maps, y_plane, x_maps, phases.in_hw
        pads = (2 - geo.pad_top, 2 - geo.pad_left)
    else:
        a_maps, a_plane, out_maps, out_plane = x_maps, phases.in_hw, y_maps, y_plane
        pads = (geo.pad_top, geo.pad_left)
    a_phases = _phase_split(a, a_plane, *a_maps, layout, n_threads)
    out_phases = _phase_array(out.shape, out_plane, *out_maps, layout, out.dtype)
    if not _winograd_correlate(a_phases, w, b, out_phases, *pads, n_threads, rotate_swap,
                               layout):
        return False
    _kernels.phase_merge(out_phases, out, *out_maps, layout == "NHWC", n_threads)
    return True


def _winograd_grad_weight(x, g, dw, pad_top, pad_left, n_threads, layout="NCHW"):
    """``dw = conv2d_grad_weight(x, g)`` (3x3, stride 1, leading paddings
    given) by Winograd F(3x3, 2x2); False, with `dw` incomplete, if a value
    was not finite."""
    if layout == "NHWC":
        kh, kw, c_in, c_out = dw.shape
        # the kernel's sums are (C_in, C_out, 3, 3)
        sums = np.empty((c_in, c_out, kh, kw), dtype=dw.dtype)
        if not _kernels.conv2d_grad_weight_winograd_nhwc(
                x, g, sums, pad_top, pad_left,
                _winograd_block_tiles(c_in, c_out, dw.itemsize, layout, True), n_threads):
            return False
        dw[...] = sums.transpose(2, 3, 0, 1)
        return True
    c_out, c_in = dw.shape[:2]
    return _kernels.conv2d_grad_weight_winograd(
        x, g, dw, pad_top, pad_left,
        _winograd_block_tiles(c_in, c_out, dw.itemsize, layout, True), n_threads)


def _depthwise(w_shape, geo):
    """One input channel per group (depthwise, any channel multiplier): the
    GEMMs would be single rows, so direct per-plane loops are used."""
    return w_shape[1] == 1 and geo.groups > 1


def _depthwise_nhwc(w_shape, c_in, geo):
    """The NHWC direct loops: depthwise with channel multiplier 1 only
    (weight ``(kh, kw, 1, C)`` with ``groups == C_in == C_out > 1``); other
    grouped convolutions take the GEMM kernels."""
    return w_shape[2] == 1 and geo.groups > 1 and geo.groups == c_in == w_shape[3]


# Tests set this to "gather" or "scatter" to force one input-gradient order.
_FORCE_GRAD_INPUT_METHOD = None


def _grad_input_method(n, c_in, h, w, w_shape, geo, layout="NCHW"):
    """Pick the cheaper of the two evaluations of the input gradient.

    Both compute the full correlation of the dilated, padded sensitivity map
    with the rotated filters (SPEC.md), in either layout (the shapes are
    given here in NCHW order; NHWC has the same pair of kernels).  "gather"
    (the phase-split correlation, one dot product per input position)
    multiplies the zero border of the full correlation; "scatter" (each
    sensitivity into its window, i.e. W^T @ dY then col2im) skips every zero
    but runs its GEMM with only C_out/groups as the inner dimension.  The model: multiply-adds
    divided by a GEMM efficiency that grows with the GEMM's short side, plus
    a cost per element packed or scattered.  Shape-only, so the choice (and
    the result's bits) never depends on the thread count.

    The efficiency ``s / (s + E)`` of a short side ``s``: E = 16 in NHWC;
    4 in NCHW, whose gather GEMMs keep their speed down to 32 rows (the own
    GEMM, float32 32 x 1024 x 320: 157 GFLOP/s against 177 for 64 rows).
    With 16, 16 x 32 x 32 x 32 -> 64 (5x5, padding 2) took the scatter:
    input gradient 7.5 ms against the gather's 5.6 in float32, 14.8 against
    13.5 in float64 (2 threads); in NHWC the scatter stays faster (7.7
    against 10.2 ms in float32), as it picks.  The other layers measured
    (the suite, CIFAR-style 3x3 layers, 1x1/3x3/7x7/11x11 strided ones)
    pick the same either way.
    """
    if _FORCE_GRAD_INPUT_METHOD is not None:
        return _FORCE_GRAD_INPUT_METHOD
    c_out, cg, kh, kw = w_shape
    g = geo.groups
    og = c_out // g
    sh, sw = geo.stride
    if (kh, kw, sh, sw, geo.pad_top, geo.pad_left) == (1, 1, 1, 1, 0, 0):
        return "gather"                       # plain GEMM, nothing to pack
    taps = kh * kw
    out_pos = geo.out_h * geo.out_w

    shortfall = 4.0 if layout == "NCHW" else 16.0

    def eff(short_side):
        return short_side / (short_side + shortfall)

    gather_taps = n * g * og * h * w * taps / (sh * sw)   # packed dY elements
    gather = gather_taps * cg / eff(cg) + 4.0 * gather_taps
    if sh * sw > 1:
        gather *= 1.3     # measured: the per-phase GEMMs and the strided write-back
    scatter_cols = n * g * cg * taps * out_pos            # col2im elements
    scatter = scatter_cols * og / eff(og) + 4.0 * scatter_cols
    return "scatter" if scatter < 0.9 * gather else "gather"


def _check_grad_out(fn, grad_out, expected, describe):
    """Refuse a grad_out not of the ``expected`` shape; ``describe()`` gives
    (what produced that shape, layout note) for the message, built only
    then (formatting shapes costs more than the check, on every call)."""
    if grad_out.shape != expected:
        how, note = describe()
        raise ValueError(f"{fn}: grad_out has shape {grad_out.shape} but {how} gives an "
                         f"output of shape {expected}{note}")


def conv2d_grad_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1,
                      groups=1, layout="NCHW"):
    """Gradient of :func:`conv2d` with respect to its input.

    Computed as the textbook derives it: the sensitivity map ``grad_out`` is
    dilated by the stride (zeros inserted between rows and columns), padded
    for a full correlation and correlated with the 180-degree-rotated,
    in/out-swapped filters; cropping the forward padding gives ``dx``.  The
    kernel splits this into ``sh*sw`` stride phases so that it never
    multiplies an inserted zero, which gives exactly that map.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, Ho, Wo), or (N, Ho, Wo, C_out) for NHWC
        Sensitivity map ``dE/dy``.
    weight : array_like, shape (C_out, C_in/groups, kh, kw)
        ``(kh, kw, C_in/groups, C_out)`` for NHWC.
    input_shape : sequence of 4 ints
        ``(N, C_in, H, W)`` of the forward input, ``(N, H, W, C_in)`` for
        NHWC (needed because several input sizes give the same output size
        when the stride is > 1).
    stride, padding, dilation, groups
        As in :func:`conv2d`.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `grad_out`, `weight`, `input_shape` and the result.

    Returns
    -------
    dx : ndarray, shape `input_shape`
        Rows/columns no window reached (the stride remainder) are zero.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`, and when `grad_out` does not have the output shape
        that `input_shape` and the hyper-parameters give.

    Notes
    -----
    Where :func:`conv2d` takes Winograd (see its Notes) and the padding is
    at most 2, the same full correlation is evaluated by F(2x2, 3x3).
    """
    fn = "conv2d_grad_input"
    layout = _check_layout(layout, fn)
    axes = _AXES[layout]
    grad_out = as_array(grad_out, "grad_out", fn)
    weight = as_array(weight, "weight", fn)
    check_ndim(grad_out, 4, "grad_out", fn, axes["y"])
    check_ndim(weight, 4, "weight", fn, axes["w"])
    input_shape = shape4(input_shape, "input_shape", fn)
    geo = _conv_geometry(fn, input_shape, weight.shape, stride, padding, dilation, groups,
                         x_name="input_shape", layout=layout)
    c_out = _weight_to_oihw(weight.shape, layout)[0]
    expected = _from_nchw((input_shape[0], c_out, geo.out_h, geo.out_w), layout)
    _check_grad_out(fn, grad_out, expected, lambda: (
        f"input_shape {input_shape} with weight {weight.shape}",
        _layout_note(layout, grad_out="y", input_shape="x", weight="w")))
    compute, result = dtypes(grad_out, weight)
    check_alloc(input_shape, compute, "input_shape", fn)
    if not (math.prod(input_shape) and grad_out.size and weight.size):
        return _finish(np.zeros(input_shape, dtype=compute), result)
    g, w = contiguous(grad_out, compute), contiguous(weight, compute)
    args = _kernel_args(geo, grad_out.size * (weight.size // c_out))
    # Each evaluation with whether it writes every element of dX, and so
    # may be given uninitialized memory: the scatter kernels clear what
    # they add into; the gather writes every position whose stride phase
    # has filter taps (with stride 1, or a kernel that spans the stride,
    # all of them); the NHWC depthwise loops write every pixel, the
    # strided NCHW ones only where taps land (all of dX with a column
    # stride of 2).
    w_oihw, itemsize = _weight_to_oihw(weight.shape, layout), np.dtype(compute).itemsize
    gather_writes_all = _gather_writes_all(w_oihw[2:], geo)
    finite_w = _finite(w, args[-1])
    if finite_w and _FORCE_GRAD_INPUT_METHOD is None:
        phase = _winograd_phases(input_shape, w_oihw, geo, itemsize, layout)
        if phase is not None and phase.geo.pad_top <= 2 and phase.geo.pad_left <= 2:
            # a dilation's phases, each by the full correlation below
            dx = output_array(input_shape, compute)
            if _phases_correlate(g, w, None, dx, phase, args[-1], rotate_swap=True,
                                 layout=layout):
                return _finish(dx, result)
        elif (_winograd(w_oihw, geo, input_shape[0], itemsize, layout)
                and geo.pad_top <= 2 and geo.pad_left <= 2):
            # the full correlation itself: dY padded by 2 less the forward
            # padding, with the rotated filters, in and out channels swapped
            dx = output_array(input_shape, compute)
            if _winograd_correlate(g, w, None, dx, 2 - geo.pad_top, 2 - geo.pad_left,
                                   args[-1], rotate_swap=True, layout=layout):
                return _finish(dx, result)
    if layout == "NHWC":
        # As below: only the gather order multiplies the zero border of the
        # full correlation (the direct depthwise loops and the scatter order
        # skip it), so an inf/NaN weight always takes the gather GEMM.
        if not finite_w:
            kernel, writes_all = _kernels.conv2d_grad_input_nhwc, gather_writes_all
        elif _depthwise_nhwc(weight.shape, input_shape[3], geo):
            kernel, writes_all = _kernels.depthwise_grad_input_nhwc, True
        elif _grad_input_method(*_to_nchw(input_shape, layout), w_oihw, geo,
                                layout) == "gather":
            kernel, writes_all = _kernels.conv2d_grad_input_nhwc, gather_writes_all
        else:
            kernel, writes_all = _kernels.conv2d_grad_input_scatter_nhwc, True
        dx = _grad_input_buffer(input_shape, compute, writes_all)
        kernel(g, w, dx, *args)
        return _finish(dx, result)
    # Only the gather order multiplies the zero border of the full
    # correlation, as the textbook does; with an inf/NaN weight that is
    # visible (0 * inf = NaN), so such weights always take it.
    if not finite_w:
        kernel, writes_all = _kernels.conv2d_grad_input, gather_writes_all
    elif _depthwise(weight.shape, geo) and geo.stride == (1, 1) \
            and weight.shape[0] == geo.groups:
        # The textbook form literally: correlate dY, zero-padded by
        # dilation*(k-1) (less the forward padding: the crop), with the
        # 180-degree-rotated filters -- a depthwise forward pass.
        _, _, kh, kw = weight.shape
        dh, dw = geo.dilation
        dx = _grad_input_buffer(input_shape, compute, writes_all=True)
        _kernels.depthwise_forward(g, np.ascontiguousarray(w[:, :, ::-1, ::-1]),
                                   np.empty(0, dtype=compute), False, dx, 1, 1,
                                   dh * (kh - 1) - geo.pad_top,
                                   dw * (kw - 1) - geo.pad_left, dh, dw, geo.groups,
                                   args[-1])
        return _finish(dx, result)
    elif _depthwise(weight.shape, geo):
        # it adds into a zeroed dX, but with a column stride of 2 writes it whole
        kernel, writes_all = _kernels.depthwise_grad_input, geo.stride[1] == 2
    elif _grad_input_method(*input_shape, weight.shape, geo) == "gather":
        kernel, writes_all = _kernels.conv2d_grad_input, gather_writes_all
    else:
        kernel, writes_all = _kernels.conv2d_grad_input_scatter, True
    dx = _grad_input_buffer(input_shape, compute, writes_all)
    kernel(g, w, dx, *args)
    return _finish(dx, result)


def _gather_writes_all(kernel_hw, geo):
    """Whether the gather input gradient writes every element of ``dX``
    (so that it may be given uninitialized memory): when along both axes
    the filter taps reach every stride phase."""
    return all(_taps_reach_every_phase(k, s, d)
               for k, s, d in zip(kernel_hw, geo.stride, geo.dilation))


def _taps_reach_every_phase(k, stride, dilation):
    """Whether along one axis every input row gets a gradient term: the
    taps ``u*dilation`` of a k-tap filter meet every residue mod `stride`
    (always with stride 1; never when the filter is shorter than the
    stride, e.g. a 1x1 filter with stride 2).  The residues repeat after
    `stride` taps, so at most that many are looked at."""
    return k >= stride and len({u * dilation % stride for u in range(stride)}) == stride


# The stride-1 NCHW filter gradient takes the direct kernel
# (_kernels.conv2d_grad_weight_direct: dot products of shifted planes, no
# im2col; AVX-512 CPUs) where each group has few filters -- GEMMs with so
# few rows run far below their speed -- and enough (channel, tap) rows, on
# planes of at least _DIRECT_GW_MIN_PLANE positions.  Measured against the
# GEMM kernel (2 threads, Xeon, five alternating A/B runs; float32 /
# float64): 32x16x32x32 -> 16 3x3 1.19-1.28x / 1.60x; ResNeXt's 8x128x28x28
# 3x3 in 32 groups (4 filters each) 1.37-1.48x / 1.30x; 8x64x56x56 -> 64 in
# 2 groups (32 filters each, float32 only) 1.11-1.16x.  With more filters
# per group the GEMMs mostly win (64: 0.75-0.89x; the 5x5 and single-image
# layers of the zoo 1.00-1.03x), with fewer rows too (32x3x32x32 -> 16:
# 0.69x / 0.87x; LeNet's 64x1x28x28 -> 20 5x5: 0.68x).
_DIRECT_GW_MAX_FILTERS = 16
_DIRECT_GW_MAX_FILTERS_F32 = 32
_DIRECT_GW_MIN_ROWS = 32
_DIRECT_GW_MIN_ROWS_F32 = 128
_DIRECT_GW_MIN_PLANE = 64


def direct_grad_weight_config():
    """Where the direct filter gradient is used, for ``show_config``."""
    if not _kernels.direct_grad_weight_available():
        return "off (needs AVX-512)"
    return (f"on, AVX-512: stride-1 NCHW filter gradients with <= "
            f"{_DIRECT_GW_MAX_FILTERS} filters and >= {_DIRECT_GW_MIN_ROWS} input "
            f"channels x taps per group (float32 also <= {_DIRECT_GW_MAX_FILTERS_F32} "
            f"and >= {_DIRECT_GW_MIN_ROWS_F32}), >= {_DIRECT_GW_MIN_PLANE} positions")


def _direct_grad_weight(w_shape, geo, dtype):
    """Whether the NCHW filter gradient for filters `w_shape` (C_out,
    C_in/groups, kh, kw) and geometry `geo` takes the direct kernel."""
    c_out, cg, kh, kw = w_shape
    filters, rows = c_out // geo.groups, cg * kh * kw
    return (geo.stride == (1, 1) and geo.out_h * geo.out_w >= _DIRECT_GW_MIN_PLANE
            and ((filters <= _DIRECT_GW_MAX_FILTERS and rows >= _DIRECT_GW_MIN_ROWS)
                 or (dtype.itemsize == 4 and filters <= _DIRECT_GW_MAX_FILTERS_F32
                     and rows >= _DIRECT_GW_MIN_ROWS_F32)))


def _grad_input_buffer(shape, dtype, writes_all):
    """The input gradient's output array: uninitialized when the kernel
    writes every element (a zero fill is a serial pass over the whole
    array: 12 % of the pw1x1 float64 input gradient), zeros otherwise."""
    return output_array(shape, dtype, zero=not writes_all)


def conv2d_grad_weight(x, grad_out, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                       layout="NCHW"):
    """Gradient of :func:`conv2d` with respect to its filters.

    ``dw[o, c, u, v] = sum_{n, p, q} grad_out[n, o, p, q] *
    x_pad[n, g(o)*C/groups + c, p*sh + u*dh, q*sw + v*dw]`` -- for one
    channel, stride 1 and no padding, ``correlate2d(x, grad_out, 'valid')``
    (NHWC: ``dw[u, v, c, o] = sum grad_out[n, p, q, o] *
    x_pad[n, p*sh + u*dh, q*sw + v*dw, g(o)*C/groups + c]``).
    The sum is taken in an order that does not depend on the thread count,
    so the result is bitwise reproducible.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W), or (N, H, W, C_in) for NHWC
        The forward input.
    grad_out : array_like, shape (N, C_out, Ho, Wo), or (N, Ho, Wo, C_out) for NHWC
        Sensitivity map ``dE/dy``.
    weight_shape : sequence of 4 ints
        ``(C_out, C_in/groups, kh, kw)``, or ``(kh, kw, C_in/groups, C_out)``
        for NHWC.
    stride, padding, dilation, groups
        As in :func:`conv2d`.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `x`, `grad_out`, `weight_shape` and the result.

    Returns
    -------
    dw : ndarray, shape `weight_shape`

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`, and when the shapes of `x`, `grad_out` and
        `weight_shape` disagree.

    Notes
    -----
    Where :func:`conv2d` takes Winograd (see its Notes), the sums over the
    positions are evaluated by F(3x3, 2x2), in a fixed order (the same bits
    for any thread count), unless ``16 * C_out * C_in`` partial sums would
    exceed 128 MiB.  On AVX-512 CPUs, stride-1 layers with few filters per
    group (at most 16 with at least 32 input channels x taps, or in float32
    at most 32 with at least 128) on output planes of at least 64
    positions sum each weight as one dot product of the padded input plane
    and the sensitivity map, without im2col, also in a fixed order.
    """
    fn = "conv2d_grad_weight"
    layout = _check_layout(layout, fn)
    axes = _AXES[layout]
    x = as_array(x, "x", fn)
    grad_out = as_array(grad_out, "grad_out", fn)
    check_ndim(x, 4, "x", fn, axes["x"])
    check_ndim(grad_out, 4, "grad_out", fn, axes["y"])
    weight_shape = shape4(weight_shape, "weight_shape", fn)
    geo = _conv_geometry(fn, x.shape, weight_shape, stride, padding, dilation, groups,
                         w_name="weight_shape", layout=layout)
    c_out = _weight_to_oihw(weight_shape, layout)[0]
    expected = _from_nchw((x.shape[0], c_out, geo.out_h, geo.out_w), layout)
    _check_grad_out(fn, grad_out, expected, lambda: (
        f"x {x.shape} with weight_shape {weight_shape}",
        _layout_note(layout, grad_out="y", x="x", weight_shape="w")))
    compute, result = dtypes(x, grad_out)
    check_alloc(weight_shape, compute, "weight_shape", fn)
    dw = output_array(weight_shape, compute)
    if dw.size == 0:
        return _finish(dw, result)
    if x.size == 0 or grad_out.size == 0:
        dw[...] = 0
        return _finish(dw, result)
    g = contiguous(grad_out, compute)
    args = _kernel_args(geo, grad_out.size * (dw.size // c_out))
    nhwc = layout == "NHWC"
    depthwise = (_depthwise_nhwc(weight_shape, x.shape[3], geo) if nhwc
                 else _depthwise(weight_shape, geo))
    w_oihw, itemsize = _weight_to_oihw(weight_shape, layout), np.dtype(compute).itemsize
    phase = _winograd_phases(x.shape, w_oihw, geo, itemsize, layout, grad_weight=True)
    if phase is not None:
        # the sum over a dilation's phases of their undilated gradients
        x = contiguous(x, compute)
        pg = phase.geo
        if _winograd_grad_weight(
                _phase_split(x, phase.in_hw, phase.x_rows, phase.x_cols, layout, args[-1]),
                _phase_split(g, (pg.out_h, pg.out_w), phase.y_rows, phase.y_cols, layout,
                             args[-1]),
                dw, pg.pad_top, pg.pad_left, args[-1], layout):
            return _finish(dw, result)
        # a value was not finite: recomputed as the textbook sums it
    elif not depthwise and _winograd(w_oihw, geo, x.shape[0], itemsize, layout,
                                     grad_weight=True):
        x = contiguous(x, compute)
        if _winograd_grad_weight(x, g, dw, geo.pad_top, geo.pad_left, args[-1], layout):
            return _finish(dw, result)
        # a value was not finite: recomputed as the textbook sums it
    # The depthwise kernels give a non-finite sensitivity the textbook's
    # NaNs themselves: their loops multiply it by the zero padding too.
    if nhwc:
        kernel = (_kernels.depthwise_grad_weight_nhwc if depthwise
                  else _kernels.conv2d_grad_weight_nhwc)
    else:
        if not depthwise and _direct_grad_weight(weight_shape, geo, compute):
            x = contiguous(x, compute)
            if _kernels.conv2d_grad_weight_direct(x, g, dw, *args[2:]):
                return _finish(dw, result)
            # declined (no AVX-512, a plane too large to pad, a value not
            # finite): the GEMM kernel's sums
        kernel = _kernels.depthwise_grad_weight if depthwise else _kernels.conv2d_grad_weight
    kernel(contiguous(x, compute), g, dw, *args)
    return _finish(dw, result)


def conv2d_grad_bias(grad_out, layout="NCHW"):
    """Gradient of :func:`conv2d` with respect to its bias.

    ``db[o] = sum_{n, p, q} grad_out[n, o, p, q]`` (NHWC:
    ``grad_out[n, p, q, o]``), accumulated in float64 in a fixed order.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, Ho, Wo), or (N, Ho, Wo, C_out) for NHWC
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `grad_out`.

    Returns
    -------
    db : ndarray, shape (C_out,)
    """
    fn = "conv2d_grad_bias"
    layout = _check_layout(layout, fn)
    grad_out = as_array(grad_out, "grad_out", fn)
    check_ndim(grad_out, 4, "grad_out", fn, _AXES[layout]["y"])
    compute, result = dtypes(grad_out)
    db = np.zeros(_to_nchw(grad_out.shape, layout)[1], dtype=compute)
    if grad_out.size:
        kernel = (_kernels.conv2d_grad_bias_nhwc if layout == "NHWC"
                  else _kernels.conv2d_grad_bias)
        kernel(contiguous(grad_out, compute), db, threads_for(grad_out.size))
    return _finish(db, result)


# --- pooling -----------------------------------------------------------------

_PoolGeometry = namedtuple("_PoolGeometry", "kernel stride padding out_h out_w")

# The pools' commonest call checked in one pass.  A pool's kernel streams
# megabytes through the caches, so the Python around it runs cold: the full
# checks below cost 20-27 us per call there (about 10 us warm), 6-8 % of a
# float32 fwd+bwd.  An ndarray of native float32 or float64 in C order with
# plain int window arguments (and a tuple ``input_shape``) that passes every
# check skips them: the fast path only supplies the kernel's arguments, and
# both paths share the allocation and the kernel call.  Any other call, and
# every call that would raise, takes the full checks, which give the same
# results and all the messages.  Measured (2 threads, 8x64x56x56, fwd+bwd,
# alternating rounds): 2x2 max pool 0.498 -> 0.455 ms in float32, 0.781 ->
# 0.764 ms in float64; 2x2 average 0.378 -> 0.325, 0.645 -> 0.593.  Tests
# turn it off (POOL_FAST = False) to compare both paths.
POOL_FAST = True
_FAST_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)


def _fast_array(a):
    """Whether ``a`` is what the pool kernels take as it is: a 4-D ndarray
    of native float32 or float64 (the dtype objects themselves: any other,
    byte-swapped or with metadata, takes the full path) in C order."""
    return (type(a) is np.ndarray and a.ndim == 4
            and (a.dtype is _FAST_FLOATS[0] or a.dtype is _FAST_FLOATS[1])
            and a.flags.c_contiguous)


def _fast_shape(shape, layout):
    """``(n, c, h, w)`` of an ``input_shape`` that is a tuple of four plain
    ints in range, in a valid layout, with non-empty planes; else None."""
    if type(shape) is not tuple or len(shape) != 4 or type(layout) is not str:
        return None
    if layout == "NCHW":
        n, c, h, w = shape
    elif layout == "NHWC":
        n, h, w, c = shape
    else:
        return None
    if (type(n) is not int or type(c) is not int or type(h) is not int or type(w) is not int
            or n < 0 or c < 0 or h < 1 or w < 1 or n * c * h * w * 8 >= MAX_BYTES):
        return None
    return n, c, h, w


def _fast_pool(shape, kernel_size, stride, padding, ceil_mode, layout):
    """``(window arguments as _pool_args gives them, output shape)`` of a
    pool over an input of ``shape`` (in ``layout``) whose square int window
    arguments pass every check of ``_pool_geometry``; else None."""
    dims = _fast_shape(shape, layout)
    k = kernel_size
    s = k if stride is None else stride
    if (dims is None or type(k) is not int or type(s) is not int or type(padding) is not int
            or type(ceil_mode) is not bool or not 1 <= k < MAX_BYTES
            or not 1 <= s < MAX_BYTES or padding < 0 or 2 * padding > k):
        return None
    n, c, h, w = dims
    out_h = pool_output_size(h, k, s, padding, ceil_mode)
    out_w = pool_output_size(w, k, s, padding, ceil_mode)
    if out_h < 1 or out_w < 1 or n * c * out_h * out_w * 8 >= MAX_BYTES:
        return None     # (padding can make the output the larger: check_alloc's message)
    return ((k, k, s, s, padding, padding),
            (n, c, out_h, out_w) if layout == "NCHW" else (n, out_h, out_w, c))


def _pool_geometry(fn, x_shape, kernel_size, stride, padding, ceil_mode, x_name="x",
                   layout="NCHW"):
    """Check pooling arguments for an input of ``x_shape`` (given in ``layout``)."""
    kernel = int_pair(kernel_size, "kernel_size", fn, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel         # PyTorch: an empty stride means kernel_size
    else:
        stride = int_pair(stride, "stride", fn, 1)
    padding = int_pair(padding, "padding", fn, 0)
    ceil_mode = boolean(ceil_mode, "ceil_mode", fn)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{fn}: padding {padding} must be at most half of kernel_size "
                         f"{kernel}")
    _, _, h, w = _to_nchw(x_shape, layout)
    def note():     # (built for a message only)
        return _layout_note(layout, **{x_name: "x"})
    if h == 0 or w == 0:
        raise ValueError(f"{fn}: the input planes of {x_name} {tuple(x_shape)} are empty; "
                         f"a pooling window needs at least one real element{note()}")
    out_h = pool_output_size(h, kernel[0], stride[0], padding[0], ceil_mode)
    out_w = pool_output_size(w, kernel[1], stride[1], padding[1], ceil_mode)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{fn}: kernel_size {kernel} is larger than the padded input "
                         f"{h + 2 * padding[0]}x{w + 2 * padding[1]} of {x_name} "
                         f"{tuple(x_shape)}{note()}")
    return _PoolGeometry(kernel, stride, padding, out_h, out_w)


def _pool_out_shape(x_shape, geo, layout):
    """The pooling output shape for an input of ``x_shape``, both in ``layout``."""
    n, c, _, _ = _to_nchw(x_shape, layout)
    return _from_nchw((n, c, geo.out_h, geo.out_w), layout)


def _pool_args(geo):
    return (geo.kernel[0], geo.kernel[1], geo.stride[0], geo.stride[1],
            geo.padding[0], geo.padding[1])


def _pool_input(fn, x, kernel_size, stride, padding, ceil_mode, layout, out_dtype=None):
    """A pool forward's arguments, by the fast path or the full checks:
    ``(x, layout, window arguments, output shape, compute dtype, result
    dtype)``.  ``out_dtype``: the largest output's dtype for the size check
    (max pools: their int64 indices), the compute dtype by default."""
    fast = POOL_FAST and _fast_array(x) and _fast_pool(x.shape, kernel_size, stride, padding,
                                                       ceil_mode, layout)
    if fast:
        return x, layout, fast[0], fast[1], x.dtype, x.dtype
    layout = _check_layout(layout, fn)
    x = as_array(x, "x", fn)
    check_ndim(x, 4, "x", fn, _AXES[layout]["x"])
    geo = _pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode, layout=layout)
    compute, result = dtypes(x)
    out_shape = _pool_out_shape(x.shape, geo, layout)
    check_alloc(out_shape, compute if out_dtype is None else out_dtype, "the output", fn)
    return x, layout, _pool_args(geo), out_shape, compute, result


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, layout="NCHW"):
    """2-D max pooling with argmax indices, as
    ``torch.nn.functional.max_pool2d(..., return_indices=True)``.

    Padding counts as ``-inf``.  Ties go to the *first* maximum in row-major
    window order (the textbook loop ``mask = window == max`` would send the
    gradient to every tied maximum; fastconv, like PyTorch, picks one).  A
    NaN in a window makes the output NaN.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), or (N, H, W, C) for NHWC
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to `kernel_size`.
    padding : int or (int, int), default 0
        At most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up, keeping only windows that start inside the
        input or its leading padding.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `x` and of both results.

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    indices : ndarray of int64, shape of `y`
        Flat index ``h*W + w`` of each maximum within its input plane (the
        same numbers in both layouts, as PyTorch gives for channels_last).
    """
    x, layout, window, out_shape, compute, result = _pool_input(
        "max_pool2d", x, kernel_size, stride, padding, ceil_mode, layout, np.int64)
    y = output_array(out_shape, compute)
    indices = output_array(out_shape, np.int64)
    if y.size:
        kernel = (_kernels.max_pool2d_forward_nhwc if layout == "NHWC"
                  else _kernels.max_pool2d_forward)
        kernel(contiguous(x, compute), y, indices, *window,
               threads_for(y.size * window[0] * window[1]))
    return _finish(y, result), indices


def max_pool2d_grad(grad_out, indices, input_shape, layout="NCHW"):
    """Gradient of :func:`max_pool2d` with respect to its input.

    Each ``grad_out[n, c, p, q]`` is added to ``dx[n, c]`` at flat position
    ``indices[n, c, p, q]`` (NHWC: ``grad_out[n, p, q, c]`` to the plane
    ``dx[n, :, :, c]`` at ``indices[n, p, q, c]``); overlapping windows
    accumulate.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    indices : array_like of integers, shape of `grad_out`
        As returned by :func:`max_pool2d`; each must lie in ``[0, H*W)``.
    input_shape : sequence of 4 ints
        ``(N, C, H, W)`` of the forward input, ``(N, H, W, C)`` for NHWC.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `grad_out`, `indices`, `input_shape` and the result.

    Returns
    -------
    dx : ndarray, shape `input_shape`

    Raises
    ------
    ValueError
        Shapes that disagree, or an index outside its input plane (nothing
        is written out of bounds).
    """
    fn = "max_pool2d_grad"
    fast = (POOL_FAST and _fast_array(grad_out) and grad_out.size and type(indices) is np.ndarray
            and indices.dtype is _INT64 and indices.shape == grad_out.shape
            and indices.flags.c_contiguous and _fast_shape(input_shape, layout))
    if fast and fast[:2] == _to_nchw(grad_out.shape, layout)[:2]:
        idx = indices
        compute = result = grad_out.dtype
    else:
        layout = _check_layout(layout, fn)
        grad_out = as_array(grad_out, "grad_out", fn)
        check_ndim(grad_out, 4, "grad_out", fn, _AXES[layout]["pool"])
        try:
            idx = np.asarray(indices)
        except Exception as exc:
            raise TypeError(f"{fn}: indices must be an integer array ({exc})") from None
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{fn}: indices must hold integers, got dtype {idx.dtype}")
        if idx.shape != grad_out.shape:
            raise ValueError(f"{fn}: indices has shape {idx.shape} but grad_out has shape "
                             f"{grad_out.shape}; they must match")
        input_shape = shape4(input_shape, "input_shape", fn)
        if _to_nchw(input_shape, layout)[:2] != _to_nchw(grad_out.shape, layout)[:2]:
            raise ValueError(f"{fn}: input_shape {input_shape} and grad_out {grad_out.shape} "
                             "must agree on N and C"
                             + _layout_note(layout, input_shape="x", grad_out="pool"))
        compute, result = dtypes(grad_out)
        check_alloc(input_shape, compute, "input_shape", fn)
    # the kernel writes every element (zero-filling the planes it scatters
    # into in parallel, cache-hot), so no zeros here
    dx = output_array(input_shape, compute, zero=not grad_out.size)
    if grad_out.size:
        if dx.size == 0:
            raise ValueError(f"{fn}: indices point into an empty input plane "
                             f"(input_shape {input_shape})")
        if idx.dtype == np.uint64 and idx.size and idx.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{fn}: indices: every index must lie in [0, H*W) of its "
                             "input plane")
        kernel = (_kernels.max_pool2d_backward_nhwc if layout == "NHWC"
                  else _kernels.max_pool2d_backward)
        try:
            kernel(contiguous(grad_out, compute), contiguous(idx, np.int64), dx,
                   threads_for(grad_out.size))
        except ValueError as exc:  # an out-of-range index, found (not written) by the kernel
            raise ValueError(f"{fn}: {exc} (input_shape {input_shape})") from None
    return _finish(dx, result)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, layout="NCHW"):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Each output is the window sum divided by the window area measured within
    the padded input (``count_include_pad=True``) or by the number of real
    input elements in the window (``False``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), or (N, H, W, C) for NHWC
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d`.
    count_include_pad : bool, default True
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `x` and the result.

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    """
    x, layout, window, out_shape, compute, result = _pool_input(
        "avg_pool2d", x, kernel_size, stride, padding, ceil_mode, layout)
    include = (count_include_pad if type(count_include_pad) is bool
               else boolean(count_include_pad, "count_include_pad", "avg_pool2d"))
    y = output_array(out_shape, compute)
    if y.size:
        kernel = (_kernels.avg_pool2d_forward_nhwc if layout == "NHWC"
                  else _kernels.avg_pool2d_forward)
        kernel(contiguous(x, compute), y, *window, include,
               threads_for(y.size * window[0] * window[1]))
    return _finish(y, result)


def avg_pool2d_grad(grad_out, input_shape, kernel_size, stride=None, padding=0,
                    ceil_mode=False, count_include_pad=True, layout="NCHW"):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Each ``grad_out`` element is divided by its window's divisor and added
    to every input element of the window.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, Ho, Wo), or (N, Ho, Wo, C) for NHWC
    input_shape : sequence of 4 ints
        ``(N, C, H, W)`` of the forward input, ``(N, H, W, C)`` for NHWC.
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As in :func:`avg_pool2d`.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Memory layout of `grad_out`, `input_shape` and the result.

    Returns
    -------
    dx : ndarray, shape `input_shape`
    """
    fast = (POOL_FAST and type(count_include_pad) is bool and _fast_array(grad_out)
            and grad_out.size
            and _fast_pool(input_shape, kernel_size, stride, padding, ceil_mode, layout))
    if fast and fast[1] == grad_out.shape:
        window = fast[0]
        include = count_include_pad
        compute = result = grad_out.dtype
    else:
        fn = "avg_pool2d_grad"
        layout = _check_layout(layout, fn)
        grad_out = as_array(grad_out, "grad_out", fn)
        check_ndim(grad_out, 4, "grad_out", fn, _AXES[layout]["pool"])
        input_shape = shape4(input_shape, "input_shape", fn)
        geo = _pool_geometry(fn, input_shape, kernel_size, stride, padding, ceil_mode,
                             x_name="input_shape", layout=layout)
        include = boolean(count_include_pad, "count_include_pad", fn)
        _check_grad_out(fn, grad_out, _pool_out_shape(input_shape, geo, layout), lambda: (
            f"input_shape {input_shape} with kernel_size {geo.kernel}",
            _layout_note(layout, grad_out="pool", input_shape="x")))
        compute, result = dtypes(grad_out)
        check_alloc(input_shape, compute, "input_shape", fn)
        window = _pool_args(geo)
    # the kernel writes every element once (in parallel, cache-hot)
    dx = output_array(input_shape, compute, zero=not grad_out.size)
    if grad_out.size:
        kernel = (_kernels.avg_pool2d_backward_nhwc if layout == "NHWC"
                  else _kernels.avg_pool2d_backward)
        kernel(contiguous(grad_out, compute), dx, *window, include,
               threads_for(grad_out.size * window[0] * window[1]))
    return _finish(dx, result)
