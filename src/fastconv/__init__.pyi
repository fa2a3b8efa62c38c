# Type stubs for fastconv's public top-level API (see functional.py for the
# documentation of each function).
from types import ModuleType
from typing import Any, Callable, Literal, Sequence, TextIO, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv import layers as layers
from fastconv import optim as optim
from fastconv import reference as reference
from fastconv.cost import ConvCost

__version__: str

_Pair = int | Sequence[int]
_Padding = int | Sequence[int] | Literal["valid", "same"]
_Shape4 = Sequence[int]
# "NCHW" (default): (N, C, H, W) arrays, (C_out, C_in/groups, kh, kw) weights;
# "NHWC": (N, H, W, C) arrays, (kh, kw, C_in/groups, C_out) weights.
_Layout = Literal["NCHW", "NHWC"]

def conv2d(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = ..., stride: _Pair = ...,
           padding: _Padding = ..., dilation: _Pair = ..., groups: int = ...,
           layout: _Layout = ...) -> NDArray[Any]: ...
def conv2d_grad_input(grad_out: ArrayLike, weight: ArrayLike, input_shape: _Shape4,
                      stride: _Pair = ..., padding: _Padding = ..., dilation: _Pair = ...,
                      groups: int = ..., layout: _Layout = ...) -> NDArray[Any]: ...
def conv2d_grad_weight(x: ArrayLike, grad_out: ArrayLike, weight_shape: _Shape4,
                       stride: _Pair = ..., padding: _Padding = ..., dilation: _Pair = ...,
                       groups: int = ..., layout: _Layout = ...) -> NDArray[Any]: ...
def conv2d_grad_bias(grad_out: ArrayLike, layout: _Layout = ...) -> NDArray[Any]: ...
def max_pool2d(x: ArrayLike, kernel_size: _Pair, stride: _Pair | None = ...,
               padding: _Pair = ..., ceil_mode: bool = ..., layout: _Layout = ...
               ) -> tuple[NDArray[Any], NDArray[np.int64]]: ...
def max_pool2d_grad(grad_out: ArrayLike, indices: ArrayLike, input_shape: _Shape4,
                    layout: _Layout = ...) -> NDArray[Any]: ...
def avg_pool2d(x: ArrayLike, kernel_size: _Pair, stride: _Pair | None = ...,
               padding: _Pair = ..., ceil_mode: bool = ...,
               count_include_pad: bool = ..., layout: _Layout = ...) -> NDArray[Any]: ...
def avg_pool2d_grad(grad_out: ArrayLike, input_shape: _Shape4, kernel_size: _Pair,
                    stride: _Pair | None = ..., padding: _Pair = ..., ceil_mode: bool = ...,
                    count_include_pad: bool = ..., layout: _Layout = ...) -> NDArray[Any]: ...

def correlate2d(in1: ArrayLike, in2: ArrayLike,
                mode: Literal["full", "valid", "same"] = ...) -> NDArray[Any]: ...
def convolve2d(in1: ArrayLike, in2: ArrayLike,
               mode: Literal["full", "valid", "same"] = ...) -> NDArray[Any]: ...

def set_num_threads(n: int | None) -> None: ...
def get_num_threads() -> int: ...
def show_config(file: TextIO | None = ...) -> None: ...

def conv2d_cost(input_shape: _Shape4, weight_shape: _Shape4, stride: _Pair = ...,
                padding: _Padding = ..., dilation: _Pair = ..., groups: int = ...,
                bias: bool = ..., layout: _Layout = ...) -> ConvCost: ...

@overload
def gradcheck(fn_or_layer: Any, inputs: Any, *, backward: Callable[..., Any] | None = ...,
              eps: float = ..., atol: float = ..., seed: int = ..., params: bool = ...,
              max_elements: int | None = ..., details: Literal[False] = ...) -> float: ...
@overload
def gradcheck(fn_or_layer: Any, inputs: Any, *, backward: Callable[..., Any] | None = ...,
              eps: float = ..., atol: float = ..., seed: int = ..., params: bool = ...,
              max_elements: int | None = ..., details: Literal[True]
              ) -> tuple[float, dict[str, float]]: ...
