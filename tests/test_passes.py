"""Graph passes: each one's structural effect, and that the optimized graph computes exactly what the
original does (reference interpreter, same feeds, parameters and seed)."""
import numpy as np
import pytest

from compiler.check import check
from compiler.autodiff import Emitter, grad
from compiler.passes import cse, dce, fold_constants, join_pads, optimize, simplify
from runtime.initializers import init_params
from runtime.interpreter import run

rng = np.random.default_rng(0)


def ops(g):
    return [g.node(n)["op"] for n in g.nodes()]


def test_cse_merges_duplicate_subgraphs():
    g = check("c.dln", text="model m(x: f32[B, 4]) {\n    return exp(x * 2.0) + exp(x * 2.0)\n}\n").graph
    o = cse(g)
    assert ops(g).count("exp") == 2 and ops(o).count("exp") == 1 and ops(o).count("mul") == 1
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(g, {"x": x})["output"], run(o, {"x": x})["output"])


def test_cse_keeps_random_draws_apart():
    g = check("r.dln", text="model m(x: f32[B, 4]) {\n    return rand_uniform([B, 4]) - rand_uniform([B, 4])\n}\n").graph
    o = cse(g)
    assert ops(o).count("rand_uniform") == 2
    x = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(run(g, {"x": x}, seed=5)["output"], run(o, {"x": x}, seed=5)["output"])


def test_dce_drops_unused_nodes_but_keeps_the_interface():
    g = check("d.dln", text="model m(x: f32[B, 4], unused: f32[B, 2]) {\n    a = tanh(x) * 3.0\n    return x + 1.0\n}\n").graph
    o = dce(g)
    assert "tanh" in ops(g) and "tanh" not in ops(o)
    assert [o.node(n)["name"] for n in o.inputs] == ["x", "unused"]


def test_simplify_drops_movement_that_changes_nothing():
    g = check("s.dln", text="model m(x: f32[B, 4, 4]) {\n    return x * 2.0\n}\n").graph
    e = Emitter(g)
    y = dict(g.outputs)["output"]
    same = e("cast", e("transpose", e("reshape", e("slice", y, axis=2, start=0, stop=4), shape=g.type(y).shape),
                       perm=[0, 1, 2]), dtype="f32")
    g.outputs += [("same", same), ("cut", e("slice", y, axis=2, start=1, stop=4)),
                  ("swapped", e("transpose", y, perm=[0, 2, 1]))]  # same type as y, other values
    o = simplify(g)
    assert [ops(o).count(op) for op in ("slice", "transpose", "reshape", "cast")] == [1, 1, 0, 0]
    assert dict(o.outputs)["same"] == dict(o.outputs)["output"]
    x = rng.normal(size=(3, 4, 4)).astype(np.float32)
    want, got = run(g, {"x": x}), run(o, {"x": x})
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("sig,call,slices", [("x: f64[2, 2, 4, 4]", "avg_pool(x, k=2)", 0),
                                             ("x: f64[2, 2, 5, 5]", "avg_pool(x, k=3, stride=2, pad=1)", 2)])
def test_avg_pool_gradient_is_cropped_only_where_it_is_larger(sig, call, slices):
    """Autodiff crops the gradient's transposed convolution to x; where the crop is all of it, simplify
    drops it, so the fused loop that reads it is not split into one loop per row."""
    g = check("p.dln", text=f"model m({sig}) {{\n    return {call}\n}}\n").graph
    x, y, e = g.inputs[0], dict(g.outputs)["output"], Emitter(g)
    g.outputs = [("grad", grad(g, e("sum", e("mul", y, y)), [x])[x])]  # depends on x: nothing folds away
    assert ops(g).count("slice") == 2
    assert ops(optimize(g)).count("slice") == slices


def test_constant_folding():
    g = check("f.dln", text="model m(x: f32[B, 4]) {\n    return x * (exp([1.0, 2.0, 3.0, 4.0]) + 1.0)\n}\n").graph
    o = fold_constants(g)
    assert "exp" in ops(g) and "exp" not in ops(o)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(g, {"x": x})["output"], run(o, {"x": x})["output"])
    # folded for a run with every float promoted to float64, the constant is as exact as that run's
    o64 = fold_constants(g, np.float64)
    np.testing.assert_array_equal(run(g, {"x": x}, float_dtype=np.float64)["output"],
                                  run(o64, {"x": x}, float_dtype=np.float64)["output"])
    assert not np.array_equal(run(o, {"x": x}, float_dtype=np.float64)["output"],
                              run(g, {"x": x}, float_dtype=np.float64)["output"])  # float32 folding is not


@pytest.mark.parametrize("name", ["mlp", "lenet5", "char_lstm", "gpt", "vae", "resnet18"])
@pytest.mark.parametrize("training", [False, True])
def test_optimized_zoo_models_compute_the_same(name, training):
    g = check(name, training=training).graph
    o = optimize(g)
    assert len(o) <= len(g)
    params = init_params(g, seed=0)
    feeds = {}
    for n in g.inputs:
        t = g.type(n)
        shape = [2 if not d.is_const else int(d.value) for d in t.shape]
        feeds[g.node(n)["name"]] = rng.normal(size=shape).astype(np.float32) if t.dtype.startswith("f") else rng.integers(0, 10, shape)
    a = run(g, feeds, params, seed=7, step=2)
    b = run(o, feeds, params, seed=7, step=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_optimized_training_step_updates_the_same():
    from runtime.model import Model
    from runtime.optim import build_step
    m = Model("mlp", seed=0)
    g = check("mlp", training=True).graph
    step = build_step(g, g.train["settings"])
    o = optimize(step.graph)
    feeds = {"x": rng.normal(size=(8, 64)).astype(np.float32), "label": rng.integers(0, 10, 8),
             "lr": np.float32(0.001), "step": np.float32(1)}
    values = dict(m.params)
    values.update({k: np.zeros(tuple(int(d.value) for d in g.type(n).shape), np.float32) for k, n in step.slots.items()})
    a = run(step.graph, feeds, values, seed=1, step=1, outputs=step.outputs)
    b = run(o, feeds, values, seed=1, step=1, outputs=step.outputs)
    assert len(o) < len(step.graph)
    for k in step.outputs:
        np.testing.assert_array_equal(a[k], b[k])


def _small_lstm_step():
    from runtime.optim import build_step
    g = check("char_lstm", {"vocab": (None, 7), "hidden": (None, 5)}, training=True).graph
    return g, build_step(g, g.train["settings"])


def _same_lstm_step(g, step, o, chars=None):
    """The rewritten training step o updates exactly as the original does (reference interpreter)."""
    values = dict(init_params(g, seed=0))
    values.update({k: np.full(tuple(int(d.value) for d in g.type(n).shape), 0.1, np.float32) for k, n in step.slots.items()})
    chars = rng.integers(0, 7, (3, 6)) if chars is None else chars
    feeds = {"chars": chars, "next_chars": rng.integers(0, 7, chars.shape), "lr": np.float32(0.01),
             "step": np.float32(2)}
    a = run(step.graph, feeds, values, seed=1, step=2, outputs=step.outputs)
    b = run(o, feeds, values, seed=1, step=2, outputs=step.outputs)
    for k in step.outputs:
        np.testing.assert_array_equal(a[k], b[k])


def test_backpropagation_through_time_runs_the_forward_scan_once():
    """autodiff reruns a scan to save its carries; share_saved_scans lets that rerun replace the forward."""
    from compiler.passes import share_saved_scans
    g, step = _small_lstm_step()
    o = share_saved_scans(step.graph)

    def scans(graph):
        return sorted(graph.node(n)["name"] for n in graph.ancestors([n for _, n in graph.outputs])
                      if graph.node(n)["op"] == "scan")
    assert scans(step.graph) == ["grad/rnn/scan", "rnn/scan", "rnn/scan.saved"]
    assert scans(o) == ["grad/rnn/scan", "rnn/scan.saved"]
    _same_lstm_step(g, step, o)


def test_a_pass_with_nothing_to_change_returns_the_graph_itself():
    """Rebuilding a graph costs 10-50 ms on a large model, at every start: a pass that would change
    nothing hands back its input (the rewriting ones above show they still rewrite, in scan bodies too)."""
    from compiler.passes import gather_one_hots, push_slices, share_saved_scans
    g = check("n.dln", text="model m(x: f32[B, 4]) {\n    return relu(dense(x, 3))\n}\n").graph
    for p in (fold_constants, simplify, gather_one_hots, cse, push_slices, join_pads, share_saved_scans, dce, optimize):
        assert p(g) is g, p.__name__


def test_join_pads_turns_the_gradient_of_a_split_into_a_concatenation():
    """An LSTM's gates are one split; the gradient of each slice is a zero pad, and their sum is the
    concatenation of the four gate gradients (inside the backward scan's body)."""
    g, step = _small_lstm_step()
    o = join_pads(step.graph)

    def body_ops(graph):
        (back,) = [n for n in graph.nodes() if graph.node(n)["name"] == "grad/rnn/scan"]
        body = graph.node(back)["attrs"]["body"]
        return [body.node(n)["op"] for n in body.ancestors([x for _, x in body.outputs])]
    assert body_ops(step.graph).count("pad") == 4 and "concat" not in body_ops(step.graph)
    assert "pad" not in body_ops(o) and body_ops(o).count("concat") == 1
    _same_lstm_step(g, step, o)


def test_a_one_hot_product_becomes_a_gather():
    """one_hot(chars) @ Wx in a char LSTM's step reads Wx's rows, with chars outside the vocabulary as
    rows of zeros (as the product gives), and autodiff's gradient of Wx is a scatter_add, not a product."""
    from compiler.passes import gather_one_hots
    g, step = _small_lstm_step()
    o = gather_one_hots(step.graph)

    def one_hot_products(graph):
        return [n for n in graph.nodes() if graph.node(n)["op"] == "matmul"
                and graph.node(graph.node(n)["inputs"][0])["op"] == "one_hot"]
    assert len(one_hot_products(step.graph)) == 1 and not one_hot_products(o)
    assert [o.node(n)["attrs"] for n in o.nodes() if o.node(n)["op"] == "gather"] == [{"axis": 0, "outside": "zero"}]
    assert [step.graph.node(n)["name"] for n in step.graph.nodes()
            if step.graph.node(n)["op"] == "scatter_add"] == ["grad/rnn/matmul/scatter_add"]
    _same_lstm_step(g, step, o, chars=np.array([[0, 6, 7], [-1, 3, 2]]))  # 7 and -1: outside the vocabulary
    _same_lstm_step(g, step, o)


def test_join_pads_leaves_overlapping_or_gapped_pads_alone():
    text = ("model m(x: f32[B, 4], y: f32[B, 4]) {\n    return (pad(x, [[0, 0], [0, 4]]) + pad(y, [[0, 0], [4, 0]]),"
            " pad(x, [[0, 0], [0, 4]]) + pad(y, [[0, 0], [3, 1]]), pad(x, [[0, 0], [0, 5]]) + pad(y, [[0, 0], [5, 0]]))\n}\n")
    g = check("p.dln", text=text).graph
    o = join_pads(g)
    assert ops(o).count("concat") == 1
    feeds = {"x": rng.normal(size=(2, 4)).astype(np.float32), "y": rng.normal(size=(2, 4)).astype(np.float32)}
    a, b = run(g, feeds), run(o, feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_push_slices_lets_the_gate_loop_read_the_sum_operands():
    """An LSTM's gates are slices of x_t + h @ Wh: after push_slices nothing in the scan body computes
    the whole sum, and the model computes the same."""
    from compiler.passes import push_slices
    g = check("char_lstm", {"vocab": (None, 7), "hidden": (None, 5)}).graph
    o = push_slices(g)

    def live_adds(graph):
        (scan,) = [n for n in graph.nodes() if graph.node(n)["op"] == "scan"]
        body = graph.node(scan)["attrs"]["body"]
        return [tuple(body.type(n).shape) for n in body.ancestors([x for _, x in body.outputs])
                if body.node(n)["op"] == "add"]
    assert any(s[-1] == 20 for s in live_adds(g)) and not any(s[-1] == 20 for s in live_adds(o))
    params = init_params(g, seed=0)
    feeds = {"chars": rng.integers(0, 7, (3, 6))}
    a, b = run(g, feeds, params), run(o, feeds, params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
