"""Every VJP rule against float64 central differences, through the reference interpreter."""
import numpy as np
import pytest

from compiler.autodiff import Emitter, grad
from compiler.check import check
from runtime.interpreter import run

rng = np.random.default_rng(1)


def gradient_check(src, feeds, params=None, eps=1e-6, training=False, frozen=()):
    r = check("g.dln", text=src, training=training)
    assert r.ok, [f"{d.span}: {d.message}" for d in r.diags]
    g = r.graph
    params = params or {}
    out = dict(g.outputs)["output"]
    # A scalar: the output weighted by fixed random numbers, so every element's gradient counts.
    e = Emitter(g)
    weights = rng.normal(size=[int(d.value) for d in g.type(out).shape])
    dtype = g.type(out).dtype
    loss = e("sum", e("mul", out, e.const(weights, dtype)))
    g.outputs.append(("loss", loss))
    wrt = [n for n in g.inputs if g.type(n).dtype in ("f32", "f64") and g.node(n)["name"] not in frozen]
    wrt += [g.params[k] for k in params]
    grads = grad(g, loss, wrt)
    for w, gn in grads.items():
        g.outputs.append((f"grad:{w}", gn))
    # Everything runs in float64, f32 graphs (the standard library) included.
    values = run(g, feeds, params, outputs=["loss"] + [f"grad:{w}" for w in wrt], float_dtype=np.float64, seed=3)

    def f(feeds2, params2):
        return float(run(g, feeds2, params2, outputs=["loss"], float_dtype=np.float64, seed=3)["loss"])

    for w in wrt:
        name = g.node(w)["name"]
        is_param = name in params
        base = params[name] if is_param else feeds[name]
        num = np.zeros_like(base, dtype=np.float64)
        for i in np.ndindex(base.shape):
            hi, lo = base.copy(), base.copy()
            hi[i] += eps
            lo[i] -= eps
            if is_param:
                num[i] = (f(feeds, {**params, name: hi}) - f(feeds, {**params, name: lo})) / (2 * eps)
            else:
                num[i] = (f({**feeds, name: hi}, params) - f({**feeds, name: lo}, params)) / (2 * eps)
        got = values[f"grad:{w}"]
        scale = np.maximum(1.0, np.abs(num))
        err = np.max(np.abs(got - num) / scale) if num.size else 0.0
        assert err < 1e-6, f"{name}: relative error {err:.2e}\n{got}\n{num}"


def model(sig, body):
    return f"model m({sig}) {{\n    return {body}\n}}\n"


X = rng.normal(size=(3, 4))
Y = rng.normal(size=(3, 4))
ROW = rng.normal(size=(4,))
POS = rng.uniform(0.5, 2.0, size=(3, 4))

ELEMENTWISE = [
    ("x + y", {}), ("x - y", {}), ("x * y", {}), ("x / p", {}), ("p ** y", {}), ("x ** 3.0", {}),
    ("-x", {}), ("exp(x)", {}), ("log(p)", {}), ("log1p(p)", {}), ("sqrt(p)", {}), ("tanh(x)", {}),
    ("sigmoid(x)", {}), ("atan(x)", {}), ("sin(x)", {}), ("cos(x)", {}), ("erf(x)", {}), ("abs(x)", {}),
    ("maximum(x, y)", {}), ("minimum(x, y)", {}), ("select(x > y, x * 2.0, y)", {}),
    ("x + r", {}), ("x * r", {}), ("r / p", {}),  # broadcasting: the gradient of r sums over rows
    ("cast(x, f32)", {}), ("stop_gradient(y) * x", {}),
]


@pytest.mark.parametrize("expr,_", ELEMENTWISE, ids=[e for e, _ in ELEMENTWISE])
def test_elementwise_and_broadcasting(expr, _):
    src = model("x: f64[3, 4], y: f64[3, 4], p: f64[3, 4], r: f64[4]", expr if "cast" not in expr else "cast(" + expr + ", f64)")
    # stop_gradient(y): y gets no gradient by definition, so it is left out of the comparison
    gradient_check(src, {"x": X, "y": Y, "p": POS, "r": ROW}, frozen=("y",) if "stop_gradient" in expr else ())


def test_stop_gradient_blocks_the_gradient():
    r = check("g.dln", text=model("x: f64[3]", "sum(stop_gradient(x) * x)"))
    g = r.graph
    (gx,) = grad(g, dict(g.outputs)["output"], g.inputs).values()
    g.outputs.append(("gx", gx))
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(run(g, {"x": x}, outputs=["gx"])["gx"], x)  # d/dx of c*x with c = x held fixed


STRUCTURAL = [
    ("sum(x, axis=1)", "f64[3, 4]"), ("mean(x, axis=[0, 1], keepdims=true)", "f64[3, 4]"),
    ("max(x, axis=1)", "f64[3, 4]"), ("min(x, axis=0, keepdims=true)", "f64[3, 4]"),
    ("x @ transpose(x)", "f64[3, 4]"), ("transpose(x, perm=[1, 0])", "f64[3, 4]"),
    ("reshape(x, [2, 6])", "f64[3, 4]"), ("x[1:3, ::2]", "f64[3, 4]"), ("x[:, -1]", "f64[3, 4]"),
    ("concat([x, x * 2.0], axis=1)", "f64[3, 4]"), ("pad(x, pads=[[1, 0], [0, 2]])", "f64[3, 4]"),
    ("broadcast_to(sum(x, axis=0, keepdims=true), [5, 4])", "f64[3, 4]"),
]


@pytest.mark.parametrize("expr,t", STRUCTURAL, ids=[e for e, _ in STRUCTURAL])
def test_reductions_and_movement(expr, t):
    gradient_check(model(f"x: {t}", expr), {"x": X})


def test_matmul_batched_and_vectors():
    a, b, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5)), rng.normal(size=(4,))
    gradient_check(model("a: f64[2, 3, 4], b: f64[4, 5]", "a @ b"), {"a": a, "b": b})
    gradient_check(model("a: f64[2, 3, 4], v: f64[4]", "a @ v"), {"a": a, "v": v})
    gradient_check(model("v: f64[4], b: f64[4, 5]", "v @ b"), {"v": v, "b": b})


def test_gather_embedding():
    table, ids = rng.normal(size=(6, 3)), np.array([[1, 5, 1], [0, 2, 2]])
    gradient_check(model("t: f64[6, 3], i: i64[2, 3]", "gather(t, i) * 2.0"), {"t": table, "i": ids})
    outside = np.array([[1, 6, 1], [-1, 2, 2]])
    gradient_check(model("t: f64[6, 3], i: i64[2, 3]", 'gather(t, i, outside="zero") * 2.0'),
                   {"t": table, "i": outside})


def test_one_hot_product():
    """one_hot(i) @ W: W's gradient is a scatter_add of the output's (autodiff's rule for this product,
    which the CPU target runs as a gather), indices outside the depth included."""
    w, ids = rng.normal(size=(6, 4)), np.array([[1, 5, 1], [0, 7, -2]])
    gradient_check(model("w: f64[6, 4], i: i64[2, 3]", "one_hot(i, depth=6, dtype=f64) @ w"), {"w": w, "i": ids})
    gradient_check(model("w: f64[6, 4], i: i64[3]", "one_hot(i, depth=6, dtype=f64) @ w"), {"w": w, "i": ids[1]})


@pytest.mark.parametrize("attrs", ["", "stride=2, pad=1, round=\"floor\"", "pad=2, dilation=2", "groups=2, pad=1"])
def test_conv(attrs):
    x, w = rng.normal(size=(2, 4, 6, 6)), rng.normal(size=(3 if "groups" not in attrs else 4, 4 if "groups" not in attrs else 2, 3, 3))
    gradient_check(model(f"x: f64[2, 4, 6, 6], w: f64{list(w.shape)}".replace("f64[", "f64[", 1), f"conv(x, w, {attrs})"),
                   {"x": x, "w": w})


def test_conv1d_and_transpose():
    x, w = rng.normal(size=(2, 3, 7)), rng.normal(size=(4, 3, 3))
    gradient_check(model("x: f64[2, 3, 7], w: f64[4, 3, 3]", "conv(x, w, stride=2)"), {"x": x, "w": w})
    x, w = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(3, 2, 3, 3))
    gradient_check(model("x: f64[2, 3, 4, 4], w: f64[3, 2, 3, 3]", "conv_transpose(x, w, stride=2, pad=1, output_pad=1)"),
                   {"x": x, "w": w})


@pytest.mark.parametrize("call", ["max_pool(x, k=2)", "avg_pool(x, k=2)", "avg_pool(x, k=3, stride=2, pad=1)",
                                  "max_pool(x, k=3, stride=2, pad=1)", "avg_pool(x, k=2, round=\"ceil\")",
                                  "max_pool(x, k=2, stride=1)"])
def test_pooling(call):
    gradient_check(model("x: f64[2, 2, 5, 5]" if "ceil" in call or "pad" in call or "stride=1" in call else "x: f64[2, 2, 4, 4]", call),
                   {"x": rng.normal(size=(2, 2, 5, 5) if "ceil" in call or "pad" in call or "stride=1" in call else (2, 2, 4, 4))})


LAYERS = [
    ("batchnorm(x)", "f32[4, 3, 5]", True), ("batchnorm(x)", "f32[4, 3, 5]", False), ("layernorm(x)", "f32[4, 3, 5]", False),
    ("softmax(x)", "f32[4, 3, 5]", False), ("log_softmax(x, axis=1)", "f32[4, 3, 5]", False),
    ("dense(x, 2, act=relu)", "f32[4, 3, 5]", False), ("elu(x) + selu(x) + softplus(x) + gelu(x)", "f32[4, 3, 5]", False),
    ("leaky_relu(x, alpha=0.2) + prelu(x)", "f32[4, 3, 5]", False), ("dropout(x, 0.5)", "f32[4, 3, 5]", True),
    ("conv1d(x, 2, k=3, pad=1, act=tanh) |> max_pool1d(2, round=\"floor\")", "f32[4, 3, 5]", False),
    ("multi_head_attention(x, 1, causal=true)", "f32[2, 3, 4]", False),
    ("sinusoidal_positions(x) |> layernorm", "f32[2, 3, 4]", False),
]


@pytest.mark.parametrize("call,t,training", LAYERS, ids=[f"{c}-{tr}" for c, _, tr in LAYERS])
def test_std_layers(call, t, training):
    """Standard blocks, parameters included, in float64 (the library itself is written in f32)."""
    src = model(f"x: {t}", call)
    r = check("g.dln", text=src, training=training)
    assert r.ok, [d.message for d in r.diags]
    from runtime.initializers import init_params
    params = {k: v.astype(np.float64) + rng.normal(scale=0.1, size=v.shape) for k, v in init_params(r.graph, 0).items()
              if r.graph.node(r.graph.params[k])["op"] == "param"}
    params.update({k: np.abs(rng.normal(size=v.shape)) + 0.5 for k, v in init_params(r.graph, 0).items()
                   if r.graph.node(r.graph.params[k])["op"] == "state"})
    shape = [int(v) for v in t[4:-1].split(", ")]
    gradient_check(src, {"x": rng.normal(size=shape)}, params, training=training)


def test_softmax_cross_entropy_loss():
    logits, labels = rng.normal(size=(5, 4)), np.array([0, 3, 1, 1, 2])
    gradient_check("model m(z: f32[B, 4], y: i64[B]) {\n    return sparse_categorical_crossentropy(z, y)\n}\n",
                   {"z": logits, "y": labels})


RNN = """model m(x: f32[2, 6, 3], w: f32[3, 3], u: f32[3, 3], n: i64[2]) {{
    ys, h = scan xt in x along 1 with h = zeros([2, 3]) {opts} {{
        h = tanh(xt @ w + h @ u)
        yield h * h
    }}
    return sum(ys, axis=1) + h
}}
"""


@pytest.mark.parametrize("opts", ["", "reverse", "lengths n", "reverse lengths n"])
def test_bptt_through_a_scan(opts):
    """Backpropagation through time over 6 steps: sequence, recurrent weight, and the weights captured."""
    feeds = {"x": rng.normal(size=(2, 6, 3)), "w": rng.normal(size=(3, 3)) * 0.5,
             "u": rng.normal(size=(3, 3)) * 0.5, "n": np.array([6, 4])}
    gradient_check(RNN.format(opts=opts), feeds)


def test_lstm_layer_gradients():
    src = model("x: f32[2, 5, 3]", "lstm(x, 4)")
    r = check("g.dln", text=src)
    from runtime.initializers import init_params
    params = {k: v.astype(np.float64) for k, v in init_params(r.graph, 0).items()}
    gradient_check(src, {"x": rng.normal(size=(2, 5, 3))}, params)


def test_nested_scans():
    src = """model m(x: f32[2, 3, 4, 2]) {
    ys, s = scan row in x along 1 with s = zeros([2, 2]) {
        zs, t = scan v in row along 1 with t = s { t = tanh(t + v)
 yield t }
        s = t * 0.5 + sum(zs, axis=1)
        yield s
    }
    return ys
}
"""
    gradient_check(src, {"x": rng.normal(size=(2, 3, 4, 2))})


BACKPROP = """# Han and Kamber's backpropagation example: a 3-2-1 sigmoid network
model net(x: f32[B, 3]) -> (o: f32[B, 1]) {
    h = dense(x, 2, act=sigmoid) as hidden
    o = dense(h, 1, act=sigmoid) as output
    return o
} train {
    target t: f32[B, 1]
    loss = 0.5 * sum((t - o) ** 2)
    optimizer = sgd(lr=0.9)
}
"""


def test_course_backpropagation_example():
    """x = (1, 0, 1), target 1, learning rate 0.9: the printed outputs, errors and updated weights."""
    r = check("bp.dln", text=BACKPROP)
    g = r.graph
    params = {"hidden/W": np.array([[0.2, -0.3], [0.4, 0.1], [-0.5, 0.2]]), "hidden/b": np.array([-0.4, 0.2]),
              "output/W": np.array([[-0.3], [-0.2]]), "output/b": np.array([0.1])}
    loss = g.train["settings"]["loss"]
    grads = grad(g, loss, [g.params[k] for k in params])
    names = {g.params[k]: k for k in params}
    for w, gn in grads.items():
        g.outputs.append((f"grad:{names[w]}", gn))
    out = run(g, {"x": np.array([[1.0, 0, 1]]), "t": np.array([[1.0]])}, params, float_dtype=np.float64,
              outputs=["o"] + [f"grad:{k}" for k in params], all_values=True)
    # The book rounds every intermediate value to its printed decimals and computes on from the rounded
    # numbers (Err6 from O6 = 0.474), so exact arithmetic agrees within one unit of the last printed decimal.
    def agrees(got, printed, decimals):
        np.testing.assert_allclose(np.ravel(got), np.ravel(printed), rtol=0, atol=10.0 ** -decimals)

    hidden = next(v for n, v in out.items() if isinstance(n, int) and g.node(n)["name"] == "hidden/sigmoid")
    agrees(hidden, [0.332, 0.525], 3)
    agrees(out["o"], [0.474], 3)
    o6 = float(out["o"][0, 0])
    agrees(-float(out["grad:output/b"][0]), 0.1311, 4)  # Err6 = O6 (1 - O6) (T - O6): minus the gradient at unit 6
    agrees(-out["grad:hidden/b"], [-0.0087, -0.0065], 4)  # Err4, Err5
    new = {k: params[k] - 0.9 * out[f"grad:{k}"] for k in params}  # one step of gradient descent
    agrees(new["output/W"], [-0.261, -0.138], 3)
    agrees(new["hidden/W"], [[0.192, -0.306], [0.4, 0.1], [-0.508, 0.194]], 3)
    agrees(new["hidden/b"], [-0.408, 0.194], 3)
    agrees(new["output/b"], [0.218], 3)
    assert abs(o6 * (1 - o6) * (1 - o6) + float(out["grad:output/b"][0])) < 1e-12


def test_truncated_bptt():
    """With truncate = 2 over 6 steps, the gradient equals that of the same scan whose carry is cut
    (stop_gradient) entering steps 2 and 4; and differs from full BPTT."""
    cut = """model m(x: f32[2, 6, 3], w: f32[3, 3], u: f32[3, 3]) {
    ys, h = scan xt in x along 1, p in cast(iota([2, 6], axis=1), f32) along 1 with h = zeros([2, 3]) {
        hc = select(broadcast_to(reshape((p == 2.0) or (p == 4.0), [2, 1]), [2, 3]), stop_gradient(h), h)
        h = tanh(xt @ w + hc @ u)
        yield h
    }
    return sum(ys * ys)
}
"""
    full = cut.replace("hc = select(broadcast_to(reshape((p == 2.0) or (p == 4.0), [2, 1]), [2, 3]), stop_gradient(h), h)", "hc = h")
    feeds = {"x": rng.normal(size=(2, 6, 3)), "w": rng.normal(size=(3, 3)) * 0.5, "u": rng.normal(size=(3, 3)) * 0.5}

    def grads(src, truncate):
        g = check("t.dln", text=src).graph
        out = dict(g.outputs)["output"]
        wrt = list(g.inputs)
        gr = grad(g, out, wrt, truncate=truncate)
        for w in wrt:
            g.outputs.append((f"g{w}", gr[w]))
        res = run(g, feeds, float_dtype=np.float64, outputs=[f"g{w}" for w in wrt])
        return [res[f"g{w}"] for w in wrt]

    for a, b in zip(grads(full, 2), grads(cut, None)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert not np.allclose(grads(full, 2)[2], grads(full, None)[2])


def test_scatter_add_gradients():
    base, ids, upd = rng.normal(size=(5, 3)), np.array([[0, 4], [4, 1]]), rng.normal(size=(2, 2, 3))
    gradient_check(model("b: f64[5, 3], i: i64[2, 2], u: f64[2, 2, 3]", "scatter_add(b, i, u) * 2.0"),
                   {"b": base, "i": ids, "u": upd})
    gradient_check(model("b: f64[5, 3], i: i64[2, 2], u: f64[2, 2, 3]", 'scatter_add(b, i, u, outside="zero") * 2.0'),
                   {"b": base, "i": np.array([[0, 5], [4, -1]]), "u": upd})


def test_every_differentiable_primitive_is_checked():
    """Each op with a VJP rule appears in some gradient check of this file (by its .dln spelling)."""
    import re
    from pathlib import Path
    from compiler.ops import OPS
    text = Path(__file__).read_text()
    spelled = {"add": "+", "sub": " - ", "mul": "*", "div": "/", "pow": "**", "neg": "-x", "matmul": "@", "slice": "x[1:3"}
    zero_or_structural = {"sign", "floor", "stop_gradient"}  # zero gradients, or checked via the `stop_gradient` test
    missing = []
    for name, op in OPS.items():
        if op.vjp is None or name in zero_or_structural:
            continue
        if name in ("max_pool_grad",):
            continue  # second-order: the gradient of max_pool's gradient is not needed for training
        if not re.search(rf"\b{name}\(", text) and spelled.get(name, "\0") not in text:
            missing.append(name)
    assert not missing, f"no gradient check uses {missing}"


def test_bptt_with_dropout_inside_the_scan():
    """The reverse scan recomputes each step with the same random numbers as the forward pass."""
    src = """model m(x: f32[2, 5, 3], w: f32[3, 3]) {
    ys, h = scan xt in x along 1 with h = zeros([2, 3]) {
        h = tanh(dropout(xt, 0.5) @ w + h)
        yield h
    }
    return ys
}
"""
    gradient_check(src, {"x": rng.normal(size=(2, 5, 3)), "w": rng.normal(size=(3, 3))}, training=True)
