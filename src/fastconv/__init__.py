"""fastconv: fast, textbook-exact conv2d and pooling kernels for NumPy.

The public functions follow PyTorch's NCHW semantics, or channels last with
``layout="NHWC"`` (see ``functional``);
``fastconv.reference`` holds the slow textbook loops they are tested against.
``fastconv.layers`` (with ``fastconv.optim``) builds small trainable networks
on the kernels; ``conv2d_cost`` and ``gradcheck`` count and check them.
"""

from fastconv._version import __version__
from fastconv._threads import get_num_threads, set_num_threads
from fastconv._config import show_config
from fastconv.functional import (
    avg_pool2d,
    avg_pool2d_grad,
    conv2d,
    conv2d_grad_bias,
    conv2d_grad_input,
    conv2d_grad_weight,
    max_pool2d,
    max_pool2d_grad,
)
from fastconv import reference
from fastconv.signal import convolve2d, correlate2d
from fastconv.cost import conv2d_cost
from fastconv._gradcheck import gradcheck
from fastconv import layers, optim

__all__ = [
    "__version__",
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_grad_bias",
    "max_pool2d",
    "max_pool2d_grad",
    "avg_pool2d",
    "avg_pool2d_grad",
    "reference",
    "correlate2d",
    "convolve2d",
    "conv2d_cost",
    "gradcheck",
    "layers",
    "optim",
    "get_num_threads",
    "set_num_threads",
    "show_config",
]
