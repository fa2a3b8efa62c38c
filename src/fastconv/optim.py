"""Optimizers that update parameter dicts in place.

``update(params, grads)`` changes every array in ``params`` in place from
the array under the same key in ``grads`` (the textbook's interface);
``step(model)`` is ``update(model.params, model.grads)``.  State (momentum,
Adam moments) is kept per key, so use one optimizer per model.
"""

import numpy as np

__all__ = ["SGD", "Adam"]


def _check_hyper(name, **values):
    for key, (value, low, high) in values.items():
        if not (np.isfinite(value) and low <= value < high):
            raise ValueError(f"{name}: {key} must lie in [{low}, {high}), got {value}")


class _Optimizer:
    def step(self, model):
        """Update ``model.params`` from ``model.grads``."""
        self.update(model.params, model.grads)

    def _pairs(self, params, grads):
        for key, p in params.items():
            if key not in grads:
                continue        # a layer that has not been through backward yet
            g = np.asarray(grads[key])
            if g.shape != p.shape:
                raise ValueError(f"{type(self).__name__}: gradient {key} has shape {g.shape}, "
                                 f"parameter {p.shape}")
            yield key, p, g


class SGD(_Optimizer):
    """Stochastic gradient descent with optional momentum and weight decay,
    as PyTorch's ``torch.optim.SGD``: ``g += weight_decay·p``;
    ``v = momentum·v + g`` (``v = g`` on the first step); ``p -= lr·v``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0
    weight_decay : float, default 0
    """

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0):
        _check_hyper("SGD", lr=(lr, 0, np.inf), momentum=(momentum, 0, np.inf),
                     weight_decay=(weight_decay, 0, np.inf))
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocity = {}

    def update(self, params, grads):
        """Update every ``params[k]`` in place from ``grads[k]``."""
        for key, p, g in self._pairs(params, grads):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity.get(key)
                v = g.copy() if v is None else self.momentum * v + g
                self.velocity[key] = v
                g = v
            p -= (self.lr * g).astype(p.dtype, copy=False)


class Adam(_Optimizer):
    """Adam (Kingma & Ba), as PyTorch's ``torch.optim.Adam`` (L2 weight decay
    added to the gradient, bias-corrected moments).

    Parameters
    ----------
    lr : float, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
    eps : float, default 1e-8
    weight_decay : float, default 0
    """

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        _check_hyper("Adam", lr=(lr, 0, np.inf), beta1=(beta1, 0, 1), beta2=(beta2, 0, 1),
                     eps=(eps, 0, np.inf), weight_decay=(weight_decay, 0, np.inf))
        self.lr, self.beta1, self.beta2 = float(lr), float(beta1), float(beta2)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m, self.v, self.t = {}, {}, {}

    def update(self, params, grads):
        """Update every ``params[k]`` in place from ``grads[k]``."""
        for key, p, g in self._pairs(params, grads):
            if self.weight_decay:
                g = g + self.weight_decay * p
            t = self.t.get(key, 0) + 1
            m = self.beta1 * self.m.get(key, 0) + (1 - self.beta1) * g
            v = self.beta2 * self.v.get(key, 0) + (1 - self.beta2) * (g * g)
            self.t[key], self.m[key], self.v[key] = t, m, v
            m_hat = m / (1 - self.beta1 ** t)
            v_hat = v / (1 - self.beta2 ** t)
            p -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype, copy=False)
