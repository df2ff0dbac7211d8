"""Training: each optimizer's first updates against its published formula, schedules, regularizers,
clipping, weights files, and learning on real data."""
import math

import numpy as np
import pytest

from runtime.model import Model, TrainingError
from runtime.optim import scheduled_lr

QUAD = """model q(x: f32[B, 2]) -> (y: f32[B, 2]) {
    param w: [2] = 1.0
    y = x * w
    return y
} train {
    loss = 0.5 * sum([1.0, 3.0] * w * w)
    optimizer = OPT
}
"""
A = np.array([1.0, 3.0])  # the loss 0.5 * sum(A w^2) has gradient A * w


def reference(name, a, steps=3):
    """The published update rules, written out directly."""
    w, lr = np.ones(2), a["lr"]
    v = np.zeros(2)
    m = np.zeros(2)
    out = []
    for t in range(1, steps + 1):
        g = A * w
        if name in ("sgd", "gd"):
            w = w - lr * g
        elif name == "momentum":
            v = a["momentum"] * v - lr * g
            w = w + v
        elif name == "nesterov":
            v = a["momentum"] * v - lr * g
            w = w + a["momentum"] * v - lr * g
        elif name == "adagrad":
            v = v + g * g
            w = w - lr * g / (np.sqrt(v) + a["eps"])
        elif name == "rmsprop":
            v = a["rho"] * v + (1 - a["rho"]) * g * g
            w = w - lr * g / (np.sqrt(v) + a["eps"])
        elif name == "adam":
            m = a["beta1"] * m + (1 - a["beta1"]) * g
            v = a["beta2"] * v + (1 - a["beta2"]) * g * g
            w = w - lr * (m / (1 - a["beta1"] ** t)) / (np.sqrt(v / (1 - a["beta2"] ** t)) + a["eps"])
        out.append(w.copy())
    return out


OPTIMIZERS = [
    ("sgd", {"lr": 0.1}), ("gd", {"lr": 0.1}), ("momentum", {"lr": 0.1, "momentum": 0.9}),
    ("nesterov", {"lr": 0.1, "momentum": 0.9}), ("adagrad", {"lr": 0.5, "eps": 1e-7}),
    ("rmsprop", {"lr": 0.01, "rho": 0.9, "eps": 1e-7}), ("adam", {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}),
]


@pytest.mark.parametrize("name,args", OPTIMIZERS, ids=[o for o, _ in OPTIMIZERS])
def test_first_three_updates(write, name, args):
    call = f"{name}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"
    m = Model(str(write(QUAD.replace("OPT", call))))
    x = {"x": np.ones((1, 2), np.float32)}
    for want in reference(name, args):
        m.train_on_batch(x, lr=args["lr"])
        np.testing.assert_allclose(m.params["w"], want, rtol=1e-5)


def test_schedules():
    assert scheduled_lr(0.1, {"name": "power", "args": {"decay_steps": 10, "power": 1.0}}, 20) == pytest.approx(0.1 / 3)
    assert scheduled_lr(0.1, {"name": "exponential", "args": {"decay_steps": 10, "rate": 0.1}}, 20) == pytest.approx(0.001)
    pw = {"name": "piecewise", "args": {"boundaries": [5, 10], "values": [0.1, 0.05, 0.01]}}
    assert [scheduled_lr(1.0, pw, t) for t in (0, 4, 5, 9, 10, 99)] == [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]


def test_l2_regularizer_and_value_clipping(write):
    src = QUAD.replace("OPT", "sgd(lr=0.1)\n    regularize = [l2(0.5)]\n    clip = value(0.25)")
    m = Model(str(write(src.replace("param w: [2] = 1.0", "param w: [2, 1] = 1.0").replace("x * w", "x @ w")
                       .replace("(y: f32[B, 2])", "(y: f32[B, 1])").replace("[1.0, 3.0] * w * w", "[[1.0], [3.0]] * w * w"))))
    m.train_on_batch({"x": np.ones((1, 2), np.float32)}, lr=0.1)
    # gradient A w + 2 * 0.5 * w = [2, 4], clipped to 0.25 each: w = 1 - 0.1 * 0.25
    np.testing.assert_allclose(m.params["w"].ravel(), [0.975, 0.975], rtol=1e-6)


def test_weights_round_trip(write, tmp_path):
    m = Model("mlp", seed=3)
    path = tmp_path / "w.npz"
    m.save_weights(path)
    m2 = Model("mlp", seed=4)
    assert not np.array_equal(m2.params["dense/W"], m.params["dense/W"])
    m2.load_weights(path)
    for k in m.params:
        np.testing.assert_array_equal(m2.params[k], m.params[k])
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(m.params)
    with pytest.raises(ValueError, match="do not match"):
        Model("lenet5").load_weights(path)


def test_nonfinite_loss_names_the_node(write):
    src = QUAD.replace("OPT", "sgd(lr=0.1)").replace("0.5 * sum([1.0, 3.0] * w * w)", "sum(log(w - 1.0))")
    m = Model(str(write(src)))
    with pytest.raises(TrainingError, match="non-finite value is `.*log"):
        m.fit({"x": np.ones((4, 2), np.float32)}, None, epochs=1, batch_size=4)


def test_xor_trains_from_random_starts():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    solved = 0
    for seed in range(5):
        m = Model("xor", seed=seed, sets={"hidden": 8})
        m.fit(x, y, epochs=300, batch_size=4)
        solved += np.array_equal(m.predict(x).ravel() > 0.5, y.ravel() > 0.5)
    assert solved >= 4


@pytest.mark.slow
def test_mlp_learns_digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, te = idx[:1437], idx[1437:]
    m = Model("mlp", seed=0)
    m.fit(x[tr], y[tr], epochs=15, batch_size=32)
    assert (m.predict(x[te]).argmax(1) == y[te]).mean() >= 0.97
