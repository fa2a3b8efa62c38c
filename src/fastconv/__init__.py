"""fastconv: fast, textbook-exact conv2d and pooling kernels for NumPy.

The public functions follow PyTorch's NCHW semantics (see ``functional``);
``fastconv.reference`` holds the slow textbook loops they are tested against.
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
    "get_num_threads",
    "set_num_threads",
    "show_config",
]
