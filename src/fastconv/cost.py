"""Cost model: multiply-adds, parameters and feature-map sizes of layers.

``conv2d_cost`` counts what ``../SPEC.md`` defines (MACs ``N·O·Ho·Wo·(C/g)·kh·kw``,
parameters ``O·(C/g)·kh·kw`` (+ ``O`` with bias), output elements ``N·O·Ho·Wo``);
``summary`` tabulates a :class:`~fastconv.layers.Sequential` layer by layer,
like torchinfo.  All counts are exact Python integers.
"""

from dataclasses import dataclass

import numpy as np

from fastconv import functional as F
from fastconv._validation import boolean, shape4

__all__ = ["ConvCost", "conv2d_cost", "Summary", "summary"]


@dataclass(frozen=True)
class ConvCost:
    """Cost of one conv2d call (see :func:`conv2d_cost`).

    Attributes
    ----------
    macs : int
        Multiply-accumulates ``N·O·Ho·Wo·(C/g)·kh·kw`` (the bias adds are not
        counted).
    params : int
        Weights ``O·(C/g)·kh·kw``, plus ``O`` with a bias.
    output_elements : int
        ``N·O·Ho·Wo``.
    output_shape : tuple of int
        ``(N, O, Ho, Wo)``, or ``(N, Ho, Wo, O)`` in NHWC.
    input_elements : int
        ``N·C·H·W``.
    """

    macs: int
    params: int
    output_elements: int
    output_shape: tuple
    input_elements: int

    @property
    def flops(self):
        """Floating-point operations, ``2·macs``."""
        return 2 * self.macs

    def activation_bytes(self, itemsize=4):
        """Bytes of the output feature map at ``itemsize`` bytes per element."""
        return self.output_elements * int(itemsize)


def conv2d_cost(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                bias=False, layout="NCHW"):
    """Multiply-adds, parameters and output size of a conv2d layer.

    Parameters
    ----------
    input_shape : sequence of 4 ints
        ``(N, C, H, W)``, or ``(N, H, W, C)`` for NHWC.
    weight_shape : sequence of 4 ints
        ``(O, C/groups, kh, kw)``, or ``(kh, kw, C/groups, O)`` for NHWC.
    stride, padding, dilation, groups
        As in :func:`fastconv.conv2d`; the same checks apply.
    bias : bool, default False
        Count ``O`` bias parameters.
    layout : {'NCHW', 'NHWC'}, default 'NCHW'
        Layout of both shapes and of ``output_shape``; the counts do not
        depend on it.

    Returns
    -------
    ConvCost

    Examples
    --------
    The SPEC's worked example: a 3x3 conv from 256 to 256 channels on a
    100x100 map.

    >>> c = conv2d_cost((1, 256, 100, 100), (256, 256, 3, 3), padding=1)
    >>> c.macs, c.output_elements
    (5898240000, 2560000)
    """
    fn = "conv2d_cost"
    return _conv_cost(input_shape, weight_shape, stride, padding, dilation, groups, bias,
                      F._check_layout(layout, fn), fn)


def _conv_cost(input_shape, weight_shape, stride, padding, dilation, groups, bias, layout,
               fn):
    """:func:`conv2d_cost` with both shapes (and the output shape) in ``layout``
    (``"NHWC"``: ``(N, H, W, C)`` and ``(kh, kw, C/groups, O)``); the
    layer summaries use it for channels-last :class:`~fastconv.layers.Conv2D`."""
    input_shape = shape4(input_shape, "input_shape", fn)
    weight_shape = shape4(weight_shape, "weight_shape", fn)
    bias = boolean(bias, "bias", fn)
    geo = F._conv_geometry(fn, input_shape, weight_shape, stride, padding, dilation, groups,
                           x_name="input_shape", w_name="weight_shape", layout=layout)
    n, c, h, w = F._to_nchw(input_shape, layout)
    o, cg, kh, kw = F._weight_to_oihw(weight_shape, layout)
    outputs = n * o * geo.out_h * geo.out_w
    return ConvCost(macs=outputs * cg * kh * kw,
                    params=o * cg * kh * kw + (o if bias else 0),
                    output_elements=outputs,
                    output_shape=F._from_nchw((n, o, geo.out_h, geo.out_w), layout),
                    input_elements=n * c * h * w)


@dataclass(frozen=True)
class Summary:
    """Per-layer rows of a model summary; ``str()`` gives the table.

    Attributes
    ----------
    rows : list of (name, output_shape, params, macs)
    input_shape : tuple
    total_params, total_macs, total_activations : int
        Totals; activations are the output elements of every layer.
    """

    rows: list
    input_shape: tuple
    total_params: int
    total_macs: int
    total_activations: int

    def __str__(self):
        head = ("#", "layer", "output shape", "params", "MACs")
        lines = [(str(i), name, str(tuple(shape)), f"{p:,}", f"{m:,}")
                 for i, (name, shape, p, m) in enumerate(self.rows)]
        widths = [max(len(r[k]) for r in lines + [head]) for k in range(5)]
        fmt = lambda r: "  ".join(  # noqa: E731
            r[k].ljust(widths[k]) if k < 3 else r[k].rjust(widths[k]) for k in range(5))
        rule = "-" * len(fmt(head))
        out = [f"input {tuple(self.input_shape)}", rule, fmt(head), rule]
        out += [fmt(r) for r in lines]
        out += [rule, f"total params: {self.total_params:,}",
                f"total MACs: {self.total_macs:,}",
                f"activations (output elements of all layers): {self.total_activations:,}"]
        return "\n".join(out)


def summary(model, input_shape):
    """Tabulate a model layer by layer: output shape, parameters, MACs.

    Parameters
    ----------
    model : Sequential (or any layer with ``layers``) or a single layer
    input_shape : sequence of ints
        Including the batch dimension.

    Returns
    -------
    Summary
    """
    layers = getattr(model, "layers", [model])
    shape = tuple(int(d) for d in input_shape)
    rows = []
    for layer in layers:
        shape, macs = layer.describe(shape)
        params = sum(int(np.size(v)) for v in layer.params.values())
        rows.append((type(layer).__name__, tuple(int(d) for d in shape), params, int(macs)))
    return Summary(rows=rows, input_shape=tuple(int(d) for d in input_shape),
                   total_params=sum(r[2] for r in rows), total_macs=sum(r[3] for r in rows),
                   total_activations=sum(int(np.prod(r[1], dtype=object)) for r in rows))
