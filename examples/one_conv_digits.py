"""The one-conv-layer network: 3x3 conv with 8 filters -> ReLU -> 2x2 max pool
-> softmax classifier, trained on scikit-learn's 8x8 digits.

Run ``python examples/one_conv_digits.py [epochs]`` (needs
``pip install "fastconv[demo]"``).  Prints the test accuracy per epoch.
"""

import sys

import numpy as np

from fastconv.demo import accuracy, load_digits_split
from fastconv.layers import (Conv2D, Flatten, Linear, MaxPool2D, ReLU, Sequential,
                             SoftmaxCrossEntropy)
from fastconv.optim import SGD


def main(epochs=10, seed=0, out=print):
    (x, y), (x_test, y_test) = load_digits_split(seed=seed)
    rng = np.random.default_rng(seed)
    model = Sequential(
        Conv2D(1, 8, 3, padding=1, rng=rng),   # 8 filters, 8x8 maps
        ReLU(),
        MaxPool2D(2),                          # -> 8 x 4 x 4
        Flatten(),
        Linear(8 * 4 * 4, 10, rng=rng),        # softmax over these logits
    )
    out(str(model.summary((1, 1, 8, 8))))
    loss_fn, opt = SoftmaxCrossEntropy(), SGD(lr=0.1, momentum=0.9)
    acc = accuracy(model, x_test, y_test)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        for lo in range(0, len(x), 32):
            batch = order[lo:lo + 32]
            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            model.backward(loss_fn.backward())
            opt.step(model)
        acc = accuracy(model, x_test, y_test)
        out(f"epoch {epoch}: last batch loss {loss:.4f}, test accuracy {100 * acc:.1f}%")
    return acc


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
