"""Training: each optimizer's first updates against its published formula, schedules, regularizers,
clipping, weights files, and learning on real data."""

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
    for seed in range(5):  # the file's defaults, from five random starts: every one reaches 100%
        m = Model("xor", seed=seed)
        m.fit(x, y)
        assert np.array_equal(m.predict(x).ravel() > 0.5, y.ravel() > 0.5), seed


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


def test_course_backpropagation_example_through_the_api(write):
    """Han and Kamber's 3-2-1 sigmoid network, x = (1, 0, 1), target 1, one step of gradient descent at
    learning rate 0.9: the printed updated weights, to their printed decimals (the book rounds its
    intermediate values, so exact arithmetic agrees within one unit of the last decimal)."""
    from tests.test_gradients import BACKPROP
    m = Model(str(write(BACKPROP)))
    m.params.update({"hidden/W": np.array([[0.2, -0.3], [0.4, 0.1], [-0.5, 0.2]], np.float32),
                     "hidden/b": np.array([-0.4, 0.2], np.float32), "output/W": np.array([[-0.3], [-0.2]], np.float32),
                     "output/b": np.array([0.1], np.float32)})
    out = m.predict(np.array([[1.0, 0.0, 1.0]], np.float32))
    assert abs(float(out[0, 0]) - 0.474) < 1e-3
    m.fit(np.array([[1.0, 0.0, 1.0]], np.float32), np.array([[1.0]], np.float32), epochs=1, batch_size=1)
    near = lambda got, want, d: np.testing.assert_allclose(np.ravel(got), np.ravel(want), rtol=0, atol=10.0 ** -d)  # noqa: E731
    near(m.params["output/W"], [-0.261, -0.138], 3)
    near(m.params["hidden/W"], [[0.192, -0.306], [0.4, 0.1], [-0.508, 0.194]], 3)
    near(m.params["hidden/b"], [-0.408, 0.194], 3)
    near(m.params["output/b"], [0.218], 3)


SMALL = """model s(x: f32[B, 4]) -> (y: f32[B, 2]) {
    h = dense(x, 8, act=relu) as body
    y = dense(h, 2) as head
    return y
} train {
    target t: i64[B]
    loss = sparse_categorical_crossentropy(y, t)
    optimizer = sgd(lr=0.1)
    EXTRA
}
"""


def _toy(n=64, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def test_freeze_keeps_a_layer(write):
    m = Model(str(write(SMALL.replace("EXTRA", "freeze = [body]"))))
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(*_toy(), epochs=2, batch_size=16)
    assert np.array_equal(m.params["body/W"], before["body/W"]) and not np.array_equal(m.params["head/W"], before["head/W"])


def test_case_and_epoch_updating(write):
    x, y = _toy(20)
    steps = {}
    for mode in ("case", "epoch", "batch"):
        m = Model(str(write(SMALL.replace("EXTRA", f'updating = "{mode}"\n    batch_size = 5'), name=f"{mode}.dln")))
        m.fit(x, y, epochs=2)
        steps[mode] = m.step_count
    assert steps == {"case": 40, "epoch": 2, "batch": 8}


def test_early_stopping_restores_the_best(write):
    m = Model(str(write(SMALL.replace("EXTRA", "early_stopping = early_stopping(monitor=\"val_loss\", patience=2)\n"
                                              "    optimizer = sgd(lr=5.0)").replace("    optimizer = sgd(lr=0.1)\n", ""))))
    x, y = _toy(64)
    h = m.fit(x, y, epochs=30, batch_size=8, validation_data=(x[:16], y[:16]))
    best = int(np.argmin(h.history["val_loss"]))
    assert h.stopped_early and h.best_epoch == best and h.epochs == best + 3
    assert abs(m.evaluate(x[:16], y[:16])["loss"] - h.history["val_loss"][best]) < 1e-5


def test_norm_clipping_and_max_norm(write):
    src = SMALL.replace("EXTRA", "clip = norm(0.001)\n    regularize = [max_norm(0.5)]")
    m = Model(str(write(src)))
    before = {k: v.copy() for k, v in m.params.items()}
    m.train_on_batch(dict(zip(["x", "t"], _toy(16))), lr=1.0)
    moved = sum(float(np.sum((m.params[k] - before[k]) ** 2)) for k in m.params if k.endswith("b"))
    assert np.linalg.norm(m.params["body/W"], axis=0).max() <= 0.5 + 1e-5
    assert moved <= 1e-6 + 1e-12  # biases moved by at most lr * 0.001 in norm


def test_batchnorm_running_statistics_update(write):
    src = """model b(x: f32[B, 3]) -> (y: f32[B, 3]) {
    y = batchnorm(x) as bn
    return y
} train {
    loss = mean(y * y)
    optimizer = sgd(lr=0.0)
}
"""
    m = Model(str(write(src)))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(256, 3)).astype(np.float32)
    m.fit({"x": x}, None, epochs=80, batch_size=256)  # momentum 0.1: 1 - 0.9^80 of the way there
    np.testing.assert_allclose(m.params["bn/running_mean"], x.mean(0), rtol=0.05)
    np.testing.assert_allclose(m.params["bn/running_var"], x.var(0, ddof=1), rtol=0.05)


def test_gan_phases_alternate():
    m = Model("gan", seed=0)
    g = m.infer
    feeds = {}
    for n in g.inputs:
        t = g.type(n)
        feeds[g.node(n)["name"]] = np.random.default_rng(1).uniform(size=[8] + [int(d.value) for d in t.shape[1:]]).astype(np.float32)
    before = {k: v.copy() for k, v in m.params.items()}
    m.train_on_batch(feeds, lr=0.01, phase_index=0)
    d_moved = {k for k in m.params if not np.array_equal(m.params[k], before[k])}
    assert d_moved and all(k.startswith("D/") for k in d_moved), d_moved
    before = {k: v.copy() for k, v in m.params.items()}
    m.train_on_batch(feeds, lr=0.01, phase_index=1)
    g_moved = {k for k in m.params if not np.array_equal(m.params[k], before[k])}
    assert g_moved and not any(k.startswith("D/") for k in g_moved), g_moved


def test_reduce_on_plateau():
    from runtime.optim import Plateau
    p = Plateau(factor=0.5, patience=2, monitor="val_loss", min_lr=0.01)
    lrs, lr = [], 0.1
    for v in [1.0, 0.9, 0.95, 0.92, 0.91, 0.95, 0.97, 0.99, 0.99, 0.99, 0.99]:
        lr = p.end_epoch({"val_loss": v}, lr)
        lrs.append(lr)
    # improves at epochs 1-2, then two epochs without improvement halve it, and so on, never below 0.01
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.01, 0.01]


def test_train_settings_overridden_from_the_api(write):
    m = Model(str(write(QUAD.replace("OPT", "sgd(lr=0.1)"))), train={"optimizer": {"name": "momentum", "args": {"lr": 0.1}}})
    assert m.settings["optimizer"] == {"name": "momentum", "args": {"lr": 0.1, "momentum": 0.9}}
    x = {"x": np.ones((1, 2), np.float32)}
    for want in reference("momentum", {"lr": 0.1, "momentum": 0.9}):
        m.train_on_batch(x, lr=0.1)
        np.testing.assert_allclose(m.params["w"], want, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown optimizer"):
        Model("xor", train={"optimizer": "adamm"})
    with pytest.raises(ValueError, match="unknown train setting"):
        Model("xor", train={"epoch": 3})
