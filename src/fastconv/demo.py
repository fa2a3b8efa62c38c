"""The demo: train a LeNet-style CNN on scikit-learn's 8x8 handwritten digits.

``python -m fastconv demo`` (needs ``pip install "fastconv[demo]"``, which
brings scikit-learn and its bundled digits; nothing is downloaded).

The network is conv(1->16, 3x3, pad 1) -> ReLU -> max-pool 2 -> conv(16->32,
3x3, pad 1) -> ReLU -> max-pool 2 -> flatten -> linear(128->10), trained with
Adam on softmax cross-entropy, on a stratified 80/20 train/test split of the
1,797 images.  Seeds fix the split, the initial weights and the batch order,
so a run is repeatable.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import fastconv
from fastconv.layers import (Conv2D, Flatten, Linear, MaxPool2D, ReLU, Sequential,
                             SoftmaxCrossEntropy)
from fastconv.optim import Adam

__all__ = ["load_digits_split", "lenet", "train", "accuracy", "main"]

_NEEDS_DEMO = ("the demo needs scikit-learn's bundled digits: "
               "pip install \"fastconv[demo]\" (or pip install scikit-learn)")


def load_digits_split(test_fraction=0.2, seed=0, dtype=np.float32):
    """scikit-learn's 8x8 digits as NCHW images in [0, 1], split per class.

    Parameters
    ----------
    test_fraction : float, default 0.2
    seed : int, default 0
        Seed of the (stratified) split.
    dtype : float32 or float64

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images of shape ``(n, 1, 8, 8)`` and int64 labels 0-9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ModuleNotFoundError(_NEEDS_DEMO) from None
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    digits = load_digits()
    x = (digits.images / 16.0).astype(dtype)[:, None, :, :]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[:int(round(test_fraction * len(members)))]] = True
    return (x[~test], y[~test]), (x[test], y[test])


def lenet(seed=0, dtype=np.float32):
    """The demo's LeNet-style network for 1x8x8 inputs and 10 classes."""
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 16, 3, padding=1, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Linear(32 * 2 * 2, 10, dtype=dtype, rng=rng),
    )


def accuracy(model, x, y, batch_size=512):
    """Fraction of ``x`` that ``model`` classifies as ``y`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model.forward(x[start:start + batch_size])
        correct += int(np.sum(np.argmax(logits, axis=1) == y[start:start + batch_size]))
    model.train(was_training)
    return correct / max(len(x), 1)


class _Progress:
    """One line per epoch; on a terminal, redrawn after every batch."""

    def __init__(self, epochs, batches, stream, width=24):
        self.epochs, self.batches, self.stream, self.width = epochs, batches, stream, width
        self.live = hasattr(stream, "isatty") and stream.isatty()

    def _bar(self, done):
        filled = int(self.width * done / max(self.batches, 1))
        return "#" * filled + "." * (self.width - filled)

    def batch(self, epoch, done, loss):
        if self.live:
            self.stream.write(f"\repoch {epoch:>3}/{self.epochs} [{self._bar(done)}] "
                              f"loss {loss:.4f}")
            self.stream.flush()

    def epoch(self, epoch, loss, train_acc, test_acc, seconds):
        self.stream.write(f"{chr(13) if self.live else ''}epoch {epoch:>3}/{self.epochs} "
                          f"[{self._bar(self.batches)}] loss {loss:.4f}  "
                          f"train {100 * train_acc:5.1f}%  test {100 * test_acc:5.1f}%  "
                          f"{seconds:5.1f}s\n")
        self.stream.flush()


def train(model, train_data, test_data, epochs=15, batch_size=32, lr=0.005, seed=0,
          progress=None):
    """Train ``model`` with Adam on softmax cross-entropy.

    Parameters
    ----------
    model : Sequential
    train_data, test_data : (x, y)
    epochs, batch_size : int
    lr : float
        Adam's learning rate.
    seed : int
        Seed of the batch order.
    progress : _Progress, optional

    Returns
    -------
    dict
        ``loss`` (mean training loss per epoch), ``train_accuracy`` and
        ``test_accuracy`` (per epoch).
    """
    (x, y), (x_test, y_test) = train_data, test_data
    loss_fn = SoftmaxCrossEntropy()
    opt = Adam(lr=lr)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "train_accuracy": [], "test_accuracy": []}
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        total, seen = 0.0, 0
        for b, lo in enumerate(range(0, len(x), batch_size), 1):
            batch = order[lo:lo + batch_size]
            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            model.backward(loss_fn.backward())
            opt.step(model)
            total += loss * len(batch)
            seen += len(batch)
            if progress is not None:
                progress.batch(epoch, b, total / seen)
        history["loss"].append(total / max(seen, 1))
        history["train_accuracy"].append(accuracy(model, x, y))
        history["test_accuracy"].append(accuracy(model, x_test, y_test))
        if progress is not None:
            progress.epoch(epoch, history["loss"][-1], history["train_accuracy"][-1],
                           history["test_accuracy"][-1], time.perf_counter() - start)
    return history


def _plot(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, history["loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(epochs, 100 * np.array(history["train_accuracy"]), marker="o", label="train")
    ax2.plot(epochs, 100 * np.array(history["test_accuracy"]), marker="o", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not (value > 0 and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value
    return parse


def _seed(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv=None, stdout=None, stderr=None):
    """``python -m fastconv demo [--epochs N] [--json] [--plot FILE.png] ...``.

    Returns the exit status: 0 on success, 2 when a dependency is missing.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m fastconv demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=_positive(int), default=15)
    parser.add_argument("--batch-size", type=_positive(int), default=32)
    parser.add_argument("--lr", type=_positive(float), default=0.005, help="Adam learning rate")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the split, the weights and the batch order")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="fastconv threads (default: get_num_threads())")
    parser.add_argument("--json", action="store_true",
                        help="print one final JSON line (test_accuracy, seconds, epochs, ...)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="save loss/accuracy curves (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            stderr.write("fastconv demo: --plot needs matplotlib (pip install matplotlib)\n")
            return 2
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            parser.error(f"--plot: folder {folder} does not exist")
    if args.threads is not None:
        try:
            fastconv.set_num_threads(args.threads)
        except ValueError as exc:
            parser.error(f"--threads: {exc}")
    try:
        train_data, test_data = load_digits_split(seed=args.seed)
    except ModuleNotFoundError as exc:
        stderr.write(f"fastconv demo: {exc}\n")
        return 2
    model = lenet(seed=args.seed)
    progress = _Progress(args.epochs, -(-len(train_data[0]) // args.batch_size), stderr)
    stderr.write(f"fastconv {fastconv.__version__} demo: LeNet-style CNN on the 8x8 digits, "
                 f"{len(train_data[0])} training / {len(test_data[0])} test images, "
                 f"{fastconv.get_num_threads()} threads\n")
    start = time.perf_counter()
    history = train(model, train_data, test_data, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)
    seconds = time.perf_counter() - start
    result = {
        "test_accuracy": history["test_accuracy"][-1],
        "train_accuracy": history["train_accuracy"][-1],
        "final_loss": history["loss"][-1],
        "seconds": round(seconds, 3),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "threads": fastconv.get_num_threads(),
        "train_samples": len(train_data[0]),
        "test_samples": len(test_data[0]),
    }
    stderr.write(f"test accuracy {100 * result['test_accuracy']:.2f}% after {args.epochs} "
                 f"epochs in {seconds:.1f} s\n")
    if args.plot:
        _plot(history, args.plot)
        stderr.write(f"curves saved to {args.plot}\n")
    if args.json:
        stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
