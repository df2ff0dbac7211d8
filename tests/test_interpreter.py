"""The reference interpreter: each op against an independent NumPy (or hand) computation, scans against
Python loops, the course's worked examples, and the counter-based random numbers."""
import itertools

import numpy as np
import pytest

from compiler.check import check
from compiler.ops import OPS
from runtime.initializers import fans, init_params, initial_value
from runtime.interpreter import RunError, counter_uniform, run

rng = np.random.default_rng(0)


def model(write, src, **kw):
    r = check(str(write(src)), **kw)
    assert r.ok, [d.message for d in r.diags]
    return r.graph


def run1(write, sig, body, feeds, params=None, **kw):
    g = model(write, f"model m({sig}) {{\n    return {body}\n}}\n")
    return run(g, feeds, params or {}, **kw)["output"]


def naive_conv2d(x, w, stride=1, pad=0, dilation=1, groups=1):
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho = (H + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((N, K, Ho, Wo))
    Kg = K // groups
    for n, k, i, j in itertools.product(range(N), range(K), range(Ho), range(Wo)):
        g = k // Kg
        for c, a, b in itertools.product(range(Cg), range(kh), range(kw)):
            out[n, k, i, j] += xp[n, g * Cg + c, i * stride + a * dilation, j * stride + b * dilation] * w[k, c, a, b]
    return out


@pytest.mark.parametrize("stride,pad,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2)])
def test_conv_matches_direct_loops(write, stride, pad, dilation, groups):
    x = rng.normal(size=(2, 4, 7, 7))
    w = rng.normal(size=(6, 4 // groups, 3, 3))
    got = run1(write, "x: f64[2, 4, 7, 7], w: f64[6, %d, 3, 3]" % (4 // groups),
               f"conv(x, w, stride={stride}, pad={pad}, dilation={dilation}, groups={groups}, round=\"floor\")",
               {"x": x, "w": w})
    np.testing.assert_allclose(got, naive_conv2d(x, w, stride, pad, dilation, groups), rtol=1e-12)


def test_course_conv_example(write):
    # The notes: a 6x6 input and a 3x3 filter with stride 1 give a 4x4 map.
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    w = np.array([[[[1.0, 0, -1], [1, 0, -1], [1, 0, -1]]]])
    got = run1(write, "x: f64[1, 1, 6, 6], w: f64[1, 1, 3, 3]", "conv(x, w)", {"x": x, "w": w})
    assert got.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(got, naive_conv2d(x, w))
    assert np.all(got == -6.0)  # a vertical-edge filter on a ramp that grows by 1 to the right


def test_conv_transpose_is_the_adjoint_of_conv(write):
    # <conv(x, w), y> == <x, conv_transpose(y, w')> with w' = w seen as [C, K, k, k]
    x, y = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 5, 4, 4))
    w = rng.normal(size=(5, 3, 3, 3))
    cx = run1(write, "x: f64[2, 3, 8, 8], w: f64[5, 3, 3, 3]", "conv(x, w, stride=2, pad=1, round=\"floor\")", {"x": x, "w": w})
    ty = run1(write, "y: f64[2, 5, 4, 4], w: f64[5, 3, 3, 3]", "conv_transpose(y, w, stride=2, pad=1, output_pad=1)",
              {"y": y, "w": w})
    assert ty.shape == x.shape
    np.testing.assert_allclose(np.sum(cx * y), np.sum(x * ty), rtol=1e-10)


def test_pooling(write):
    x = rng.normal(size=(2, 3, 6, 6))
    mx = run1(write, "x: f64[2, 3, 6, 6]", "max_pool(x, k=2)", {"x": x})
    np.testing.assert_array_equal(mx, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    av = run1(write, "x: f64[2, 3, 6, 6]", "avg_pool(x, k=3, stride=3)", {"x": x})
    np.testing.assert_allclose(av, x.reshape(2, 3, 2, 3, 2, 3).mean(axis=(3, 5)))
    # ceil mode: a 5-wide input, windows of 2 at stride 2 -> 3 outputs, the last over one element
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    got = run1(write, "x: f64[1, 1, 1, 5]", "max_pool(x, k=[1, 2], stride=[1, 2], round=\"ceil\")", {"x": x})
    np.testing.assert_array_equal(got.ravel(), [1, 3, 4])
    got = run1(write, "x: f64[1, 1, 1, 5]", "avg_pool(x, k=[1, 2], stride=[1, 2], round=\"ceil\")", {"x": x})
    np.testing.assert_array_equal(got.ravel(), [0.5, 2.5, 4])


EW = [
    ("exp(x)", np.exp), ("log(abs(x) + 1.0)", lambda x: np.log(np.abs(x) + 1)), ("tanh(x)", np.tanh),
    ("sigmoid(x)", lambda x: 1 / (1 + np.exp(-x))), ("atan(x)", np.arctan), ("sqrt(abs(x))", lambda x: np.sqrt(np.abs(x))),
    ("erf(x)", None), ("x * x - x / 2.0", lambda x: x * x - x / 2), ("maximum(x, 0.0)", lambda x: np.maximum(x, 0)),
    ("select(x > 0.0, x, 0.1 * x)", lambda x: np.where(x > 0, x, 0.1 * x)), ("abs(x) ** 1.5", lambda x: np.abs(x) ** 1.5),
    ("sum(x, axis=1)", lambda x: x.sum(1)), ("mean(x, axis=[0, 1], keepdims=true)", lambda x: x.mean((0, 1), keepdims=True)),
    ("max(x, axis=0)", lambda x: x.max(0)), ("cast(argmax(x, axis=-1), f64)", lambda x: x.argmax(-1).astype(float)),
    ("transpose(x)", lambda x: x.T), ("reshape(x, [-1])", lambda x: x.ravel()), ("x[1:3, ::2]", lambda x: x[1:3, ::2]),
    ("x[:, -1]", lambda x: x[:, -1]), ("concat([x, x * 2.0], axis=1)", lambda x: np.concatenate([x, 2 * x], 1)),
    ("pad(x, pads=[[1, 0], [0, 2]])", lambda x: np.pad(x, ((1, 0), (0, 2)))),
    ("broadcast_to(sum(x, axis=0, keepdims=true), [4, 5])", lambda x: np.broadcast_to(x.sum(0, keepdims=True), (4, 5))),
    ("x @ transpose(x)", lambda x: x @ x.T), ("stop_gradient(x)", lambda x: x),
]


@pytest.mark.parametrize("expr,ref", EW, ids=[e for e, _ in EW])
def test_ops_forward(write, expr, ref):
    from scipy.special import erf
    ref = ref or erf
    x = rng.normal(size=(4, 5))
    got = run1(write, "x: f64[4, 5]", expr, {"x": x})
    np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-15)


def test_gather_one_hot_iota(write):
    table = rng.normal(size=(10, 3))
    ids = np.array([[1, 9], [0, 0]])
    got = run1(write, "t: f64[10, 3], i: i64[2, 2]", "gather(t, i)", {"t": table, "i": ids})
    np.testing.assert_array_equal(got, table[ids])
    got = run1(write, "i: i64[2, 2]", "one_hot(i, depth=10)", {"i": ids})
    np.testing.assert_array_equal(got, np.eye(10)[ids])
    got = run1(write, "x: f64[B, 3]", "iota([B, 3], axis=0)", {"x": np.zeros((4, 3))})
    np.testing.assert_array_equal(got, np.repeat(np.arange(4)[:, None], 3, 1))
    with pytest.raises(RunError, match="out of range"):
        run1(write, "t: f64[10, 3], i: i64[2, 2]", "gather(t, i)", {"t": table, "i": ids + 5})


def test_indices_outside_read_and_add_zeros(write):
    """outside="zero": an index outside the axis is a row of zeros, as one_hot(i) @ table gives (the CPU
    target's rewrite of that product); scatter_add then adds nothing there. By default both refuse."""
    table = rng.normal(size=(10, 3))
    ids = np.array([[1, 10], [-1, 9]])
    hot = (ids[..., None] == np.arange(10)).astype(float)
    got = run1(write, "t: f64[10, 3], i: i64[2, 2]", 'gather(t, i, outside="zero")', {"t": table, "i": ids})
    np.testing.assert_array_equal(got, hot @ table)
    got = run1(write, "t: f64[3, 10], i: i64[2, 2]", 'gather(t, i, axis=1, outside="zero")', {"t": table.T, "i": ids})
    np.testing.assert_array_equal(got, np.moveaxis(hot @ table, 2, 0))
    base, upd = rng.normal(size=(10, 3)), rng.normal(size=(2, 2, 3))
    got = run1(write, "b: f64[10, 3], i: i64[2, 2], u: f64[2, 2, 3]", 'scatter_add(b, i, u, outside="zero")',
               {"b": base, "i": ids, "u": upd})
    np.testing.assert_allclose(got, base + hot.reshape(4, 10).T @ upd.reshape(4, 3), rtol=1e-12)
    empty = OPS["gather"].impl([np.zeros((0, 3)), ids], {"axis": 0, "outside": "zero"}, None)
    np.testing.assert_array_equal(empty, np.zeros((2, 2, 3)))  # every index is outside an empty table
    with pytest.raises(RunError, match="out of range"):  # negative indices too: not Python's from-the-end
        run1(write, "b: f64[10, 3], i: i64[2, 2], u: f64[2, 2, 3]", "scatter_add(b, i, u)",
             {"b": base, "i": np.array([[1, 2], [-1, 3]]), "u": upd})


def test_sizes_come_from_inputs(write):
    got = run1(write, "x: f64[B, N]", "sum(x) / B", {"x": np.ones((4, 3))})
    assert got == 3.0
    with pytest.raises(RunError, match="should be"):
        run1(write, "x: f64[B, 3]", "x", {"x": np.ones((4, 2))})


SCAN = ("model m(x: f64[B, T, 3], n: i64[B]) -> (ys: f64[B, T, 3], h: f64[B, 3]) {{\n"
        "    ys, h = scan xt in x along 1 with h = zeros([B, 3], f64) {rev} {lens} {{\n"
        "        h = tanh(0.5 * h + xt)\n        yield h\n    }}\n    return ys, h\n}}\n")


def loop(x, order):
    h = np.zeros(x.shape[0:1] + x.shape[2:])
    ys = np.zeros_like(x)
    for t in order:
        h = np.tanh(0.5 * h + x[:, t])
        ys[:, t] = h
    return ys, h


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_a_loop(write, reverse):
    x = rng.normal(size=(2, 5, 3))
    g = model(write, SCAN.format(rev="reverse" if reverse else "", lens=""))
    out = run(g, {"x": x, "n": np.array([5, 5])})
    ys, h = loop(x, range(4, -1, -1) if reverse else range(5))
    np.testing.assert_allclose(out["ys"], ys)
    np.testing.assert_allclose(out["h"], h)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths(write, reverse):
    x = rng.normal(size=(2, 5, 3))
    n = np.array([5, 3])
    g = model(write, SCAN.format(rev="reverse" if reverse else "", lens="lengths n"))
    out = run(g, {"x": x, "n": n})
    for b in range(2):
        order = range(n[b] - 1, -1, -1) if reverse else range(n[b])
        ys, h = loop(x[b:b + 1, :n[b]], order)
        np.testing.assert_allclose(out["h"][b], h[0])
        np.testing.assert_allclose(out["ys"][b, :n[b]], ys[0])
        assert np.all(out["ys"][b, n[b]:] == 0)


def test_counter_based_random_numbers(write):
    u = counter_uniform(12345, 100_000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(counter_uniform(12345, 10), u[:10])  # element i does not depend on n
    g = model(write, "model m(x: f64[B, 4]) {\n    return rand_normal([B, 4]), rand_uniform([B, 4])\n}\n")
    a = run(g, {"x": np.zeros((1000, 4))}, seed=1, step=3)
    b = run(g, {"x": np.zeros((1000, 4))}, seed=1, step=3)
    c = run(g, {"x": np.zeros((1000, 4))}, seed=1, step=4)
    np.testing.assert_array_equal(a["output0"], b["output0"])
    assert not np.array_equal(a["output0"], c["output0"])
    assert abs(a["output0"].mean()) < 0.05 and abs(a["output0"].std() - 1) < 0.05
    assert not np.array_equal(a["output1"], run(g, {"x": np.zeros((1000, 4))}, seed=2, step=3)["output1"])


def test_course_xor_with_relu(write):
    g = check("xor", {"hidden": (None, 2)}).graph
    p = {"hidden_layer/W": [[1, 1], [1, 1]], "hidden_layer/b": [0, -1], "output/W": [[1], [-2]], "output/b": [0]}
    out = run(g, {"x": [[0, 0], [0, 1], [1, 0], [1, 1]]}, p)
    np.testing.assert_array_equal(out["y"].ravel(), [0, 1, 1, 0])


def test_float64_policy(write):
    g = check("mlp").graph
    params = init_params(g, seed=0)
    x = rng.normal(size=(3, 64)).astype(np.float32)
    lo = run(g, {"x": x}, params)["logits"]
    hi = run(g, {"x": x}, params, float_dtype=np.float64)["logits"]
    assert lo.dtype == np.float32 and hi.dtype == np.float64
    np.testing.assert_allclose(lo, hi, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5", "mlp", "char_lstm", "gpt", "xor"])
def test_zoo_forward_runs(name):
    g = check(name).graph
    params = init_params(g, seed=0)
    feeds = {}
    for n in g.inputs:
        t = g.type(n)
        shape = [2 if not d.is_const else int(d.value) for d in t.shape]
        feeds[g.node(n)["name"]] = rng.normal(size=shape) if t.dtype.startswith("f") else rng.integers(0, 60, shape)
    for v in run(g, feeds, params).values():
        assert np.all(np.isfinite(v))


def test_initializers():
    assert fans((64, 10)) == (64, 10) and fans((6, 1, 5, 5)) == (25, 150)
    w = initial_value("w", (400, 300), "glorot_uniform", {}, seed=0)
    assert abs(w.std() - np.sqrt(2 / 700)) < 0.002 and np.abs(w).max() <= np.sqrt(6 / 700)
    w = initial_value("w", (400, 300), "he_normal", {}, seed=0)
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.003
    q = initial_value("q", (32, 32), "orthogonal", {}, seed=0)
    np.testing.assert_allclose(q @ q.T, np.eye(32), atol=1e-5)
    a, b = initial_value("a", (3,), "normal", {}, seed=0), initial_value("b", (3,), "normal", {}, seed=0)
    assert not np.array_equal(a, b)  # each parameter draws its own numbers
    np.testing.assert_array_equal(a, initial_value("a", (3,), "normal", {}, seed=0))


def test_course_hmm_forward_and_viterbi():
    """The notes' HMM: A = [[0.7, 0.3], [0.4, 0.6]], B = [[0.1, 0.4, 0.5], [0.7, 0.2, 0.1]], pi = [0.6, 0.4],
    observations v2 v3 v1 v2. The forward procedure gives P = 0.0098344 (hand computation:
    alpha = [0.24, 0.08], [0.1, 0.012], [0.00748, 0.02604], [0.0062608, 0.0035736])."""
    g = check("hmm").graph
    params = {"start": np.log([0.6, 0.4]), "transition": np.log([[0.7, 0.3], [0.4, 0.6]]),
              "emission": np.log([[0.1, 0.4, 0.5], [0.7, 0.2, 0.1]])}
    out = run(g, {"obs": np.array([[1, 2, 0, 1]])}, params, float_dtype=np.float64)
    np.testing.assert_allclose(np.exp(out["log_likelihood"]), [0.0098344], rtol=1e-12)
    # Viterbi against brute force over all 2^4 state paths
    A, B, pi, obs = np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([[0.1, 0.4, 0.5], [0.7, 0.2, 0.1]]), np.array([0.6, 0.4]), [1, 2, 0, 1]
    best = max(itertools.product(range(2), repeat=4),
               key=lambda s: pi[s[0]] * B[s[0], obs[0]] * np.prod([A[s[t - 1], s[t]] * B[s[t], obs[t]] for t in range(1, 4)]))
    np.testing.assert_array_equal(out["best_path"][0], best)
