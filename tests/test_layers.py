"""Tests of fastconv.layers and fastconv.optim.

1. every layer's backward against finite differences (``fastconv.gradcheck``);
2. a conv -> ReLU -> pool -> flatten -> linear -> softmax-xent chain against
   hand-derived numbers, the textbook oracles, and PyTorch autograd;
3. the SPEC's graph-node worked example (apples and oranges);
4. Sequential: params/grads views, save/load round trip, PyTorch state dicts;
5. optimizers against PyTorch's update rules, and a short training run;
6. bad arguments;
7. regressions found in review (masked logits, soft targets, input aliasing, dtypes).
"""

import math

import numpy as np
import pytest

import fastconv
from fastconv import reference as ref
from fastconv.layers import (Add, AvgPool2D, Conv2D, Dropout, Flatten, Linear, MaxPool2D,
                             MSELoss, Mul, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh)
from fastconv.optim import SGD, Adam

GRAD_TOL = 1e-5     # finite differences in float64 (see fastconv.gradcheck)


def _distinct(rng, shape, step=0.05):
    """Pairwise-distinct values away from 0: no ReLU kinks, no tied maxima."""
    size = int(np.prod(shape))
    vals = (rng.permutation(size) - size / 2 + 0.5) * step
    return vals.reshape(shape)


# ---------------------------------------------------------------------------
# 1. finite differences
# ---------------------------------------------------------------------------

LAYER_CASES = {
    "conv": lambda: (Conv2D(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64, rng=1),
                     (2, 4, 7, 6)),
    "conv_dilated_nobias": lambda: (Conv2D(2, 3, (2, 3), dilation=(2, 1), bias=False,
                                           dtype=np.float64, rng=2), (1, 2, 6, 7)),
    "conv_same": lambda: (Conv2D(1, 2, 4, padding="same", dtype=np.float64, rng=3),
                          (2, 1, 5, 5)),
    "linear": lambda: (Linear(5, 3, dtype=np.float64, rng=4), (4, 5)),
    "maxpool": lambda: (MaxPool2D(3, 2, 1, ceil_mode=True), (2, 2, 7, 6)),
    "avgpool": lambda: (AvgPool2D(3, 2, 1, count_include_pad=False), (2, 2, 7, 6)),
    "relu": lambda: (ReLU(), (3, 4)),
    "sigmoid": lambda: (Sigmoid(), (3, 4)),
    "tanh": lambda: (Tanh(), (3, 4)),
    "flatten": lambda: (Flatten(), (2, 3, 2, 2)),
    "dropout_eval": lambda: (Dropout(0.5, rng=0).eval(), (3, 4)),
    "sequential": lambda: (Sequential(Conv2D(1, 2, 3, padding=1, dtype=np.float64, rng=5),
                                      Tanh(), AvgPool2D(2), Flatten(),
                                      Linear(8, 3, dtype=np.float64, rng=6)), (2, 1, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer_backward_passes_gradcheck(name, rng):
    layer, shape = LAYER_CASES[name]()
    x = _distinct(rng, shape)
    worst, errors = fastconv.gradcheck(layer, x, details=True)
    assert worst < GRAD_TOL, errors
    assert "input0" in errors
    for key in layer.params:
        assert key in errors


def test_loss_layers_pass_gradcheck(rng):
    z = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    assert fastconv.gradcheck(SoftmaxCrossEntropy(), (z, labels)) < GRAD_TOL
    soft = rng.dirichlet(np.ones(4), size=5)        # probability rows as targets
    assert fastconv.gradcheck(SoftmaxCrossEntropy(), (z, soft)) < GRAD_TOL
    assert fastconv.gradcheck(MSELoss(), (z, rng.standard_normal(z.shape))) < GRAD_TOL


def test_graph_nodes_pass_gradcheck(rng):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    worst, errors = fastconv.gradcheck(Mul(), (x, y), details=True)
    assert worst < GRAD_TOL and set(errors) == {"input0", "input1"}
    assert fastconv.gradcheck(Add(), (x, y)) < GRAD_TOL


def test_dropout_backward_uses_the_forward_mask(rng):
    drop = Dropout(0.3, rng=7)
    x = rng.standard_normal((50, 40))
    y = drop.forward(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(g), np.where(kept, g / 0.7, 0))
    drop.eval()
    assert drop.forward(x) is x or np.array_equal(drop.forward(x), x)


# ---------------------------------------------------------------------------
# 2. the conv -> ReLU -> pool -> flatten -> linear -> softmax-xent chain
# ---------------------------------------------------------------------------

def _chain(w_conv, b_conv, w_lin, b_lin, pool=2):
    conv = Conv2D(w_conv.shape[1], w_conv.shape[0], w_conv.shape[2:], dtype=np.float64)
    lin = Linear(w_lin.shape[1], w_lin.shape[0], dtype=np.float64)
    model = Sequential(conv, ReLU(), MaxPool2D(pool), Flatten(), lin)
    model.load_state_dict({"0.weight": w_conv, "0.bias": b_conv,
                           "4.weight": w_lin, "4.bias": b_lin})
    return model


def test_chain_matches_hand_derived_values():
    """A 3x3 image, one 2x2 filter of ones, a 2x2 pool, a 1->2 linear layer.

    conv: [[8, 12], [20, 24]]; ReLU keeps it; the pool picks 24 at (1, 1);
    logits z = [0.1, 0.05]·24 = [2.4, 1.2]; label 1.  With s = sigmoid(1.2) =
    softmax(z)[0]: loss = -log(1 - s) = log(1 + e^1.2), dz = softmax - onehot =
    [s, -s], dW_lin = 24·dz, df = 0.1 s - 0.05 s,
    which reaches the conv output at (1, 1) only: dW_conv = df·x[1:3, 1:3],
    db_conv = df, dx = df on the window x[1:3, 1:3] and 0 elsewhere.
    """
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    model = _chain(np.ones((1, 1, 2, 2)), np.zeros(1), np.array([[0.1], [0.05]]), np.zeros(2))
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), np.array([1]))
    dx = model.backward(loss_fn.backward())
    s = 1 / (1 + math.exp(-1.2))
    df = 0.1 * s - 0.05 * s
    assert abs(loss - math.log(1 + math.exp(1.2))) < 1e-15
    np.testing.assert_allclose(model.grads["4.weight"], [[24 * s], [-24 * s]], rtol=1e-14)
    np.testing.assert_allclose(model.grads["4.bias"], [s, -s], rtol=1e-14)
    np.testing.assert_allclose(model.grads["0.weight"][0, 0], df * np.array([[4, 5], [7, 8]]),
                               rtol=1e-13)
    np.testing.assert_allclose(model.grads["0.bias"], [df], rtol=1e-13)
    expected_dx = np.zeros((3, 3))
    expected_dx[1:, 1:] = df
    np.testing.assert_allclose(dx[0, 0], expected_dx, rtol=1e-13, atol=1e-300)


def _oracle_chain(x, labels, w_conv, b_conv, w_lin, b_lin, pad):
    """The same chain from the textbook oracles and plain NumPy formulas."""
    y1 = ref.conv2d(x, w_conv, b_conv, padding=pad)
    r = np.maximum(y1, 0)
    p, idx = ref.max_pool2d(r, 2)
    f = p.reshape(len(x), -1)
    z = f @ w_lin.T + b_lin
    e = np.exp(z - z.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.mean(np.log(soft[np.arange(n), labels]))
    dz = soft.copy()
    dz[np.arange(n), labels] -= 1
    dz /= n
    df = dz @ w_lin
    dr = ref.max_pool2d_grad(df.reshape(p.shape), idx, r.shape)
    dy1 = dr * (y1 > 0)
    return loss, {
        "0.weight": ref.conv2d_grad_weight(x, dy1, w_conv.shape, padding=pad),
        "0.bias": ref.conv2d_grad_bias(dy1),
        "4.weight": dz.T @ f,
        "4.bias": dz.sum(axis=0),
        "x": ref.conv2d_grad_input(dy1, w_conv, x.shape, padding=pad),
    }


def _chain_problem(rng):
    x = _distinct(rng, (3, 2, 6, 6), step=0.01)
    w_conv = rng.standard_normal((4, 2, 3, 3))
    b_conv = rng.standard_normal(4) * 0.1
    w_lin = rng.standard_normal((5, 4 * 3 * 3))
    b_lin = rng.standard_normal(5)
    labels = np.array([4, 0, 2])
    return x, labels, w_conv, b_conv, w_lin, b_lin


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_chain_matches_oracles_to_1e9(rng):
    x, labels, w_conv, b_conv, w_lin, b_lin = _chain_problem(rng)
    model = Sequential(Conv2D(2, 4, 3, padding=1, dtype=np.float64), ReLU(), MaxPool2D(2),
                       Flatten(), Linear(36, 5, dtype=np.float64))
    model.load_state_dict({"0.weight": w_conv, "0.bias": b_conv,
                           "4.weight": w_lin, "4.bias": b_lin})
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), labels)
    dx = model.backward(loss_fn.backward())
    ref_loss, ref_grads = _oracle_chain(x, labels, w_conv, b_conv, w_lin, b_lin, pad=1)
    assert abs(loss - ref_loss) <= 1e-9 * abs(ref_loss)
    assert _rel(dx, ref_grads.pop("x")) <= 1e-9
    for key, expected in ref_grads.items():
        assert _rel(model.grads[key], expected) <= 1e-9, key


def test_chain_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x, labels, w_conv, b_conv, w_lin, b_lin = _chain_problem(rng)
    tnet = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(36, 5)).double()
    with torch.no_grad():
        for t, a in [(tnet[0].weight, w_conv), (tnet[0].bias, b_conv),
                     (tnet[4].weight, w_lin), (tnet[4].bias, b_lin)]:
            t.copy_(torch.from_numpy(a))
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tnet(tx), torch.tensor(labels))
    tloss.backward()
    # the PyTorch state dict, as NumPy arrays, loads unchanged
    model = Sequential(Conv2D(2, 4, 3, padding=1, dtype=np.float64), ReLU(), MaxPool2D(2),
                       Flatten(), Linear(36, 5, dtype=np.float64))
    model.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), labels)
    dx = model.backward(loss_fn.backward())
    assert abs(loss - tloss.item()) <= 1e-9 * abs(tloss.item())
    assert _rel(dx, tx.grad.numpy()) <= 1e-9
    for key, t in tnet.named_parameters():
        assert _rel(model.grads[key], t.grad.numpy()) <= 1e-9, key


# ---------------------------------------------------------------------------
# 3. SPEC's graph-node worked example
# ---------------------------------------------------------------------------

def test_apple_example():
    mul_apple, mul_tax = Mul(), Mul()
    price = mul_tax.forward(mul_apple.forward(100, 2), 1.1)
    assert price == pytest.approx(220)
    dapple_price, dtax = mul_tax.backward(1)
    dapple, dnum = mul_apple.backward(dapple_price)
    assert (dapple, dnum, dtax) == (pytest.approx(2.2), pytest.approx(110), pytest.approx(200))


def test_apple_orange_example_script():
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "apple_orange.py"
    if not script.exists():
        pytest.skip("examples/ not available (tests run outside the source tree)")
    main = runpy.run_path(str(script))["main"]
    price, dapple, dapple_num, dorange, dorange_num, dtax = main()
    assert price == pytest.approx(715)
    assert dapple == pytest.approx(2.2) and dapple_num == pytest.approx(110)
    assert dorange == pytest.approx(3.3) and dorange_num == pytest.approx(165)
    assert dtax == pytest.approx(650)


# ---------------------------------------------------------------------------
# 4. Sequential
# ---------------------------------------------------------------------------

def _small_net(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2D(1, 3, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
                      Flatten(), Linear(12, 4, dtype=dtype, rng=rng))


def test_params_are_the_layers_own_arrays():
    net = _small_net()
    assert list(net.params) == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert net.params["0.weight"] is net[0].params["weight"]
    assert "1.weight" not in net.params and len(net.params) == 4
    with pytest.raises(KeyError):
        net.params["9.weight"]


def test_initialization_is_seeded_and_typed():
    a, b, c = _small_net(1), _small_net(1), _small_net(2)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        assert a.params[key].dtype == np.float32
    assert not np.array_equal(a.params["0.weight"], c.params["0.weight"])
    w64 = _small_net(1, np.float64).params["0.weight"]
    assert w64.dtype == np.float64
    np.testing.assert_allclose(w64, a.params["0.weight"], rtol=1e-6)
    # He: std sqrt(2 / fan_in); Xavier: sqrt(2 / (fan_in + fan_out))
    big = Conv2D(64, 64, 3, rng=0).params["weight"]
    assert np.std(big) == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.05)
    assert np.all(Conv2D(64, 64, 3, rng=0).params["bias"] == 0)
    lin = Linear(400, 100, rng=0, init="xavier").params["weight"]
    assert np.std(lin) == pytest.approx(np.sqrt(2 / 500), rel=0.05)


def test_save_load_round_trip(tmp_path, rng):
    net = _small_net(0)
    path = tmp_path / "net.npz"
    net.save(path)
    other = _small_net(99)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert not np.array_equal(net.forward(x), other.forward(x))
    other.load(path)
    np.testing.assert_array_equal(net.forward(x), other.forward(x))
    with np.load(path) as data:
        assert sorted(data.files) == sorted(net.params)


def test_load_state_dict_checks_keys_and_shapes():
    net = _small_net()
    state = net.state_dict()
    with pytest.raises(KeyError, match="missing"):
        net.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    with pytest.raises(KeyError, match="unexpected"):
        net.load_state_dict(dict(state, extra=np.zeros(1)))
    with pytest.raises(ValueError, match=r"0.weight has shape \(3, 1, 2, 2\)"):
        net.load_state_dict(dict(state, **{"0.weight": np.zeros((3, 1, 2, 2))}))
    net.load_state_dict({"0.bias": np.ones(3)}, strict=False)
    assert np.all(net.params["0.bias"] == 1)


def test_summary_table():
    net = _small_net()
    s = net.summary((8, 1, 4, 4))
    assert [r[0] for r in s.rows] == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Linear"]
    assert s.rows[0][1:] == ((8, 3, 4, 4), 30, 8 * 3 * 4 * 4 * 9)
    assert s.rows[4][1:] == ((8, 4), 52, 8 * 12 * 4)
    assert s.total_params == 82
    assert s.total_macs == 8 * 3 * 16 * 9 + 8 * 48
    text = str(s)
    assert "total params: 82" in text and "Conv2D" in text


def test_describe_matches_forward_shapes(rng):
    net = Sequential(Conv2D(2, 4, 3, stride=2, padding=1, rng=0), MaxPool2D(3, 2, 1, True),
                     AvgPool2D(2, ceil_mode=True), Flatten())
    x = rng.standard_normal((3, 2, 13, 11)).astype(np.float32)
    assert net.describe(x.shape)[0] == net.forward(x).shape


# ---------------------------------------------------------------------------
# 5. optimizers and training
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: (SGD(lr=0.1), "SGD", dict(lr=0.1)),
    lambda: (SGD(lr=0.05, momentum=0.9, weight_decay=0.01), "SGD",
             dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    lambda: (Adam(lr=0.01), "Adam", dict(lr=0.01)),
    lambda: (Adam(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1), "Adam",
             dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
])
def test_optimizers_follow_torch(make, rng):
    torch = pytest.importorskip("torch")
    opt, tname, tkw = make()
    p0 = rng.standard_normal((3, 4))
    params = {"w": p0.copy()}
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = getattr(torch.optim, tname)([tp], **tkw)
    for _ in range(4):
        g = rng.standard_normal((3, 4))
        opt.update(params, {"w": g})
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_short_training_run_lowers_the_loss_deterministically():
    def run():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
        y = (x[:, 0, :3].sum(axis=(1, 2)) > x[:, 0, 3:].sum(axis=(1, 2))).astype(np.int64)
        net = Sequential(Conv2D(1, 4, 3, padding=1, rng=1), ReLU(), MaxPool2D(2), Flatten(),
                         Linear(36, 2, rng=2))
        loss_fn, opt = SoftmaxCrossEntropy(), Adam(lr=0.01)
        losses = []
        for _ in range(30):
            losses.append(loss_fn.forward(net.forward(x), y))
            net.backward(loss_fn.backward())
            opt.step(net)
        return losses
    losses = run()
    assert losses[-1] < 0.5 * losses[0]
    assert run() == losses


# ---------------------------------------------------------------------------
# 6. bad arguments
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, exc, match", [
    (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: Conv2D(0, 4, 3), ValueError, "in_channels"),
    (lambda: Conv2D(2, 4, 0), ValueError, "kernel_size"),
    (lambda: Conv2D(2, 4, 3, stride=0), ValueError, "stride"),
    (lambda: Conv2D(2, 4, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: Conv2D(2.5, 4, 3), TypeError, "in_channels"),
    (lambda: Conv2D(2, 4, 3, init="uniform"), ValueError, "init"),
    (lambda: Linear(3, 0), ValueError, "out_features"),
    (lambda: MaxPool2D(2, padding=2), ValueError, "padding"),
    (lambda: AvgPool2D(0), ValueError, "kernel_size"),
    (lambda: Dropout(1.5), ValueError, "p must"),
    (lambda: SGD(lr=-1), ValueError, "lr"),
    (lambda: Adam(beta1=1.0), ValueError, "beta1"),
])
def test_bad_constructor_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_inputs_name_the_shapes(rng):
    with pytest.raises(ValueError, match=r"Linear: input must have shape \(\.\.\., 5\)"):
        Linear(5, 2).forward(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="C=3"):
        Conv2D(2, 4, 3).forward(np.zeros((1, 3, 5, 5)))
    loss = SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="do not match"):
        loss.forward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="same shape"):
        MSELoss().forward(np.zeros(3), np.zeros(4))
    with pytest.raises(RuntimeError, match="before forward"):
        Conv2D(1, 1, 1).backward(np.zeros((1, 1, 1, 1)))
    with pytest.raises(TypeError, match="not a layer"):
        Sequential(ReLU(), 3)


# ---------------------------------------------------------------------------
# 7. regressions (from review)
# ---------------------------------------------------------------------------

def test_cross_entropy_with_masked_logits_matches_torch():
    torch = pytest.importorskip("torch")
    z = np.array([[0.0, 1.0, -np.inf], [2.0, -np.inf, 0.5]])
    labels = np.array([1, 0])
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(z, labels)
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(labels))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-14)
    np.testing.assert_allclose(loss_fn.backward(), tz.grad.numpy(), rtol=1e-14, atol=1e-300)


def test_cross_entropy_soft_targets_not_summing_to_one(rng):
    torch = pytest.importorskip("torch")
    z, t = rng.standard_normal((3, 4)), rng.random((3, 4))
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(z, t)
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(t))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(loss_fn.backward(), tz.grad.numpy(), rtol=1e-12)
    assert fastconv.gradcheck(SoftmaxCrossEntropy(), (z, t)) < GRAD_TOL


def test_cross_entropy_empty_batch_is_nan_like_torch():
    assert math.isnan(SoftmaxCrossEntropy().forward(np.zeros((0, 3)), np.zeros(0, np.int64)))


def test_layers_keep_their_own_copy_of_the_input(rng):
    """Overwriting the caller's batch buffer between forward and backward
    must not change the gradients."""
    for layer, shape in [(Linear(3, 2, dtype=np.float64, rng=0), (4, 3)),
                         (Conv2D(1, 2, 2, dtype=np.float64, rng=0), (2, 1, 3, 3))]:
        x = rng.standard_normal(shape)
        g = np.ones(layer.forward(x).shape)
        layer.backward(g)
        expected = layer.grads["weight"].copy()
        layer.forward(x)
        x[...] = 5
        layer.backward(g)
        np.testing.assert_array_equal(layer.grads["weight"], expected)
    mul, a = Mul(), np.ones(3)
    mul.forward(a, np.full(3, 2.0))
    a[...] = 7
    np.testing.assert_array_equal(mul.backward(np.ones(3))[1], np.ones(3))


def test_integer_inputs_compute_in_float():
    loss = MSELoss()
    assert loss.forward(np.array([1], np.uint8), np.array([3], np.uint8)) == 4.0
    np.testing.assert_array_equal(loss.backward(), [-4.0])
    assert Dropout(0.5, rng=0).forward(np.array([1, 2, 3])).dtype == np.float64


def test_dtypes_are_kept(rng):
    y32 = rng.standard_normal((2, 3)).astype(np.float32)
    for layer in (Sigmoid(), Tanh(), ReLU()):
        layer.forward(y32)
        assert layer.backward(np.ones((2, 3))).dtype == np.float32
    loss = MSELoss()
    loss.forward(y32, np.zeros((2, 3)))
    assert loss.backward().dtype == np.float32
    assert np.isnan(ReLU().forward(np.array([np.nan, -1.0, 2.0]))[0])


def test_linear_takes_leading_batch_dimensions(rng):
    torch = pytest.importorskip("torch")
    lin = Linear(4, 3, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 5, 4))
    tlin = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(lin.params["weight"]))
        tlin.bias.copy_(torch.tensor(lin.params["bias"]))
    np.testing.assert_allclose(lin.forward(x), tlin(torch.tensor(x)).detach().numpy(),
                               rtol=1e-13)
    assert fastconv.gradcheck(lin, x) < GRAD_TOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_products_match_numpy_on_awkward_operands(rng, dtype):
    """Linear's three products run on fastconv's GEMM (``layers._matmul``):
    strided inputs and gradients, a batch wider than the layer, an empty
    batch (its weight gradient is zeros) and a weight assigned in another
    dtype (promoted as NumPy's @ promotes) all give what NumPy gives."""
    lin = Linear(6, 40, dtype=dtype, rng=0)
    w = lin.params["weight"]
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for x in (rng.standard_normal((7, 12))[:, ::2], rng.standard_normal((90, 6)).T.copy().T,
              np.zeros((0, 6))):
        y = lin.forward(x)
        x2 = x.astype(dtype)
        np.testing.assert_allclose(y, x2 @ w.T + lin.params["bias"], **tol)
        g = rng.standard_normal((y.shape[1], y.shape[0])).astype(dtype).T
        dx = lin.backward(g)
        np.testing.assert_allclose(dx, g @ w, **tol)
        np.testing.assert_allclose(lin.grads["weight"], g.T @ x2, **tol)
        assert y.dtype == dx.dtype == lin.grads["weight"].dtype == dtype
    lin.params["weight"] = w.astype(np.float64)
    x = rng.standard_normal((3, 6))
    assert lin.forward(x).dtype == np.result_type(dtype, np.float64)


def test_sequential_rejects_a_layer_used_twice():
    relu = ReLU()
    with pytest.raises(ValueError, match="appears twice"):
        Sequential(relu, Flatten(), relu)


def test_failed_load_changes_nothing():
    net = _small_net()
    before = net.state_dict()
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    bad["4.bias"] = np.zeros(7)
    with pytest.raises(ValueError):
        net.load_state_dict(bad)
    for key, value in before.items():
        np.testing.assert_array_equal(net.params[key], value)
    with pytest.raises(KeyError):
        net.params["00.weight"]


def test_summary_checks_linear_input():
    net = Sequential(Flatten(), Linear(10, 2, rng=0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 10\)"):
        net.summary((1, 3, 2, 2))


def test_dropout_p_one_zeroes_everything(rng):
    drop = Dropout(1.0, rng=0)
    x = rng.standard_normal((3, 4))
    assert np.all(drop.forward(x) == 0)
    assert np.all(drop.backward(np.ones((3, 4))) == 0)
