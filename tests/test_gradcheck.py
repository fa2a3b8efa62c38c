"""Tests of fastconv.gradcheck itself: it passes right backwards, catches wrong ones."""

import numpy as np
import pytest

import fastconv
from fastconv.layers import Conv2D, Layer, Linear


class _WrongLinear(Linear):
    """A Linear whose weight gradient is off by 1 % (a subtle bug)."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["weight"] = self.grads["weight"] * 1.01
        return dx


class _WrongSquare(Layer):
    def forward(self, x):
        self._x = x
        return x ** 2

    def backward(self, dout):
        return dout * self._x        # should be 2 * x


def test_functional_api_passes(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    geo = dict(stride=(2, 1), padding=1, dilation=(1, 2))

    def backward(g, x, w):
        return (fastconv.conv2d_grad_input(g, w, x.shape, **geo),
                fastconv.conv2d_grad_weight(x, g, w.shape, **geo))

    worst, errors = fastconv.gradcheck(lambda x, w: fastconv.conv2d(x, w, **geo), (x, w),
                                       backward=backward, details=True)
    assert worst < 1e-5 and set(errors) == {"input0", "input1"}


def test_catches_wrong_gradients(rng):
    assert fastconv.gradcheck(_WrongSquare(), rng.standard_normal(5)) > 0.3
    errs = fastconv.gradcheck(_WrongLinear(3, 2, dtype=np.float64, rng=0),
                              rng.standard_normal((4, 3)), details=True)[1]
    assert errs["input0"] < 1e-6
    assert errs["weight"] > 5e-3


def test_max_elements_samples(rng):
    layer = Conv2D(2, 2, 3, dtype=np.float64, rng=0)
    worst = fastconv.gradcheck(layer, rng.standard_normal((1, 2, 5, 5)), max_elements=5)
    assert worst < 1e-5


def test_rejects_float32_parameters_and_bare_functions(rng):
    with pytest.raises(TypeError, match="dtype=np.float64"):
        fastconv.gradcheck(Linear(3, 2), rng.standard_normal((2, 3)))
    with pytest.raises(TypeError, match="backward"):
        fastconv.gradcheck(np.sin, rng.standard_normal(3))
    with pytest.raises(TypeError, match="layer or a callable"):
        fastconv.gradcheck(3, rng.standard_normal(3))


def test_nan_gradients_are_not_hidden(rng):
    class NaNBias(Linear):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["bias"] = self.grads["bias"] * np.nan
            return dx

    assert np.isnan(fastconv.gradcheck(NaNBias(3, 2, dtype=np.float64, rng=0),
                                       rng.standard_normal((4, 3))))


def test_plain_function_needs_a_gradient_per_input(rng):
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    with pytest.raises(ValueError, match="1 gradients for 2"):
        fastconv.gradcheck(lambda a, b: a * b, (x, y), backward=lambda g, a, b: g * b)


def test_stochastic_forward_is_refused(rng):
    from fastconv.layers import Dropout

    with pytest.raises(ValueError, match="eval"):
        fastconv.gradcheck(Dropout(0.5, rng=0), rng.standard_normal((4, 4)))
    with pytest.raises(TypeError, match="dtype=np.float64"):
        fastconv.gradcheck(Linear(3, 2), rng.standard_normal((2, 3)), params=False)


def test_nan_output_is_not_mistaken_for_a_random_forward():
    """A deterministic forward whose output holds a NaN is checked, not refused
    as stochastic (NaN != NaN); its NaN gradient error is reported."""
    from fastconv.layers import ReLU

    x = np.array([1.0, np.nan, -2.0, 3.0])
    assert np.isnan(fastconv.gradcheck(ReLU(), x))
