"""Tests of fastconv.conv2d_cost and model summaries (fastconv.cost)."""

import numpy as np
import pytest

import fastconv
from fastconv.cost import conv2d_cost


def test_spec_worked_example_3x3():
    c = fastconv.conv2d_cost((1, 256, 100, 100), (256, 256, 3, 3), padding=1)
    assert c.macs == 5_898_240_000
    assert c.output_elements == 2_560_000
    assert c.output_shape == (1, 256, 100, 100)
    assert c.params == 256 * 256 * 9
    assert c.flops == 2 * c.macs
    assert all(isinstance(v, int) for v in (c.macs, c.params, c.output_elements))


def test_spec_worked_example_bottleneck():
    a = conv2d_cost((1, 256, 100, 100), (64, 256, 1, 1))
    b = conv2d_cost(a.output_shape, (256, 64, 3, 3), padding=1)
    assert a.macs + b.macs == 1_638_400_000
    assert a.output_elements + b.output_elements == 3_200_000


def test_groups_bias_stride_dilation():
    c = conv2d_cost((2, 8, 11, 9), (6, 4, 3, 2), stride=(2, 1), padding=(1, 0),
                    dilation=(1, 2), groups=2, bias=True)
    ho, wo = (11 + 2 - 3) // 2 + 1, (9 - 2 - 1) // 1 + 1
    assert c.output_shape == (2, 6, ho, wo)
    assert c.macs == 2 * 6 * ho * wo * 4 * 3 * 2
    assert c.params == 6 * 4 * 3 * 2 + 6
    assert c.input_elements == 2 * 8 * 11 * 9
    assert c.activation_bytes(8) == 8 * c.output_elements


def test_matches_the_kernel_output_shape(rng):
    x = rng.standard_normal((2, 4, 9, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    kw = dict(stride=2, padding="valid", dilation=(2, 1), groups=2)
    assert conv2d_cost(x.shape, w.shape, **kw).output_shape == fastconv.conv2d(x, w, **kw).shape


def test_nhwc_shapes_count_the_same(rng):
    """layout="NHWC" takes and returns channels-last shapes; the counts are
    those of the same layer in NCHW, and the output shape is the kernel's."""
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=True)
    nchw = conv2d_cost((2, 8, 11, 9), (6, 4, 3, 2), **kw)
    nhwc = conv2d_cost((2, 11, 9, 8), (3, 2, 4, 6), layout="NHWC", **kw)
    assert (nhwc.macs, nhwc.params, nhwc.output_elements, nhwc.input_elements) == (
        nchw.macs, nchw.params, nchw.output_elements, nchw.input_elements)
    n, o, ho, wo = nchw.output_shape
    assert nhwc.output_shape == (n, ho, wo, o)
    x = rng.standard_normal((2, 11, 9, 8))
    w = rng.standard_normal((3, 2, 4, 6))
    kw.pop("bias")
    assert nhwc.output_shape == fastconv.conv2d(x, w, layout="NHWC", **kw).shape
    with pytest.raises(ValueError, match="layout"):
        conv2d_cost((2, 8, 11, 9), (6, 4, 3, 2), layout="nhwc")


def test_huge_layers_count_exactly():
    c = conv2d_cost((10**4, 4096, 1000, 1000), (4096, 4096, 1, 1))
    assert c.macs == 10**4 * 4096 * 10**6 * 4096     # beyond int64: Python ints


@pytest.mark.parametrize("args, match", [
    (((1, 3, 5, 5), (4, 2, 3, 3)), "C_in/groups=2"),
    (((1, 3, 2, 2), (4, 3, 3, 3)), "larger than the padded input"),
    (((1, 3, 5), (4, 3, 3, 3)), "input_shape"),
    (((1, 4, 5, 5), (4, 2, 3, 3), 1, 0, 1, 3), "groups=3"),
])
def test_bad_shapes_raise(args, match):
    with pytest.raises(ValueError, match=match):
        conv2d_cost(*args)
