"""The standard library (zoo/std): every block elaborates, in both modes, with the parameter counts of
the frameworks students compare against."""
import re
from pathlib import Path

import pytest

from compiler.check import check
from compiler.report import instance_params, param_totals

ZOO = Path(__file__).resolve().parent.parent / "zoo"

# Together with the zoo models these elaborate every block of the standard library.
STD_SMOKE = [
    """model m(x: f32[B, 4, 5]) -> f32[B, 4, 5] {
    a = binary_step(x) + relu(x) + relu6(x) + leaky_relu(x, alpha=0.2) + prelu(x) + prelu(x, per_feature=true)
    b = rrelu(x) + elu(x) + selu(x) + softplus(x) + softsign(x) + silu(x) + gelu(x) + gelu(x, approximate=true)
    return a + b + softmax(x, axis=1) + log_softmax(x) + identity(x)
}""",
    """model m(x: f32[B, 1, 28, 28], s: f32[B, 3, L]) -> f32[B, 10] {
    y = x |> conv2d(6, k=5, pad=2, act=relu) |> max_pool2d(2) |> conv2d(16, k=5) |> avg_pool2d(2)
    z = conv2d(y, 16, k=3, stride=2, round="floor") |> conv2d_transpose(8, k=3, stride=2, output_pad=1)
    u = upsample(y, factor=2) |> separable_conv2d(8, pad=1)
    g = global_avg_pool2d(u) + global_max_pool2d(u)
    e = sobel_x(x) + sobel_y(x) + prewitt_x(x) + prewitt_y(x) + laplacian(x) + sharpen(x) + box_blur(x)
        + gaussian_blur(x) + filter2d(x, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    q = s |> conv1d(8, k=3, pad=1) |> max_pool1d(2, round="floor") |> conv1d(4, k=3, dilation=2, groups=2, round="ceil")
        |> avg_pool1d(1)
    q2 = global_avg_pool1d(q) + global_max_pool1d(q)
    return y |> flatten |> dense(10)
}""",
    """model m(x: f32[B, 3, 8, 8], ids: i64[B, T]) -> f32[B, T, 16] {
    y = x |> conv2d(4, pad=1) |> batchnorm |> relu |> dropout(0.2)
    h = embedding(ids, 100, 16) |> sinusoidal_positions |> learned_positions(max_len=64) |> layernorm |> rmsnorm
    return h
}""",
    """model m(x: f32[B, T, 10], lens: i64[B]) -> f32[B, 32] {
    a = simple_rnn(x, 20)
    b = lstm(x, 20)
    d = bidirectional(x, lstm(hidden=16, lengths=lens))
    e = stacked(x, gru(hidden=8), 3)
    g, gh, gc = lstm(x, 7, return_state=true, lengths=lens)
    k, kh = gru(x, 32, reverse=true, return_state=true)
    return kh
}""",
    """model m(x: f32[B, T, 32], enc: f32[B, S, 24]) -> f32[B, T, 32] {
    ctx, w = additive_attention(x, enc, 16)
    a = scaled_dot_attention(x, x, x, causal=true)
    z = cross_attention(x, enc, heads=8)
    y = multi_head_attention(x, 4, causal=true)
    return x |> transformer_block(4, causal=true)
}""",
    """model m(z: f32[B, 5], y: i64[B], r: f32[B, 5]) -> f32[] {
    p = softmax(z)
    return cross_entropy(z, y) + softmax_cross_entropy(z, y) + sparse_categorical_crossentropy(z, y)
        + nll_loss(log_softmax(z), y) + categorical_crossentropy(p, r) + binary_crossentropy(sigmoid(z), r)
        + bce_with_logits(z, r) + mse(z, r) + mae(z, r) + huber(z, r, delta=2.0) + hinge(z, r)
        + kl_divergence(p, r) + poisson(exp(z), r)
}""",
]


def _blocks_used(inst):
    out = {inst.kind}
    for c in inst.children:
        out |= _blocks_used(c)
    return out


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("i", range(len(STD_SMOKE)))
def test_std_smoke_model(i, training):
    r = check(f"smoke{i}.dln", text=STD_SMOKE[i], training=training)
    assert r.ok, [f"{d.span}: {d.code} {d.message}" for d in r.diags]
    assert not [d for d in r.diags if d.severity == "warning"], [d.message for d in r.diags]


def test_every_std_block_is_elaborated_by_a_test():
    blocks = set()
    for p in (ZOO / "std").glob("*.dln"):
        blocks |= set(re.findall(r"^block\s+(\w+)", p.read_text(), re.M))
    used = set()
    graphs = [check(p.stem, training=True).graph for p in ZOO.glob("*.dln")]
    graphs += [check("smoke.dln", text=src, training=True).graph for src in STD_SMOKE]
    for g in graphs:
        used |= _blocks_used(g.root)
        if g.train_root is not None:
            used |= _blocks_used(g.train_root)
    assert not blocks - used, f"std blocks never elaborated by a test: {sorted(blocks - used)}"


def params_of(src, name):
    r = check("p.dln", text=src)
    assert r.ok, [d.message for d in r.diags]
    inst = next(c for c in r.graph.root.children if c.name == name)
    return int(instance_params(r.graph, inst).value), r


@pytest.mark.parametrize("call,inp,expected", [
    ("dense(x, 7)", "f32[B, 5]", 5 * 7 + 7),
    ("conv2d(x, 6, k=5)", "f32[B, 1, 28, 28]", 6 * 25 + 6),
    ("conv1d(x, 4, k=3)", "f32[B, 3, 10]", 4 * 3 * 3 + 4),
    ("conv2d_transpose(x, 4, k=4, stride=2, pad=1)", "f32[B, 8, 7, 7]", 8 * 4 * 16 + 4),
    ("separable_conv2d(x, 8, pad=1)", "f32[B, 4, 6, 6]", 4 * 9 + 4 * 8 + 8),
    ("simple_rnn(x, 16)", "f32[B, T, 10]", 10 * 16 + 16 * 16 + 16),
    ("lstm(x, 16)", "f32[B, T, 10]", 4 * (10 * 16 + 16 * 16 + 16)),
    ("gru(x, 16)", "f32[B, T, 10]", 3 * (10 * 16 + 16 * 16 + 16)),
    ("bidirectional(x, lstm(hidden=16))", "f32[B, T, 10]", 2 * 4 * (10 * 16 + 16 * 16 + 16)),
    ("multi_head_attention(x, 4)", "f32[B, T, 32]", 4 * (32 * 32 + 32)),
    ("layernorm(x)", "f32[B, T, 32]", 2 * 32),
    ("prelu(x)", "f32[B, 8]", 1),
    ("embedding(x, 100, 16)", "i64[B, T]", 1600),
])
def test_layer_parameter_counts(call, inp, expected):
    n, _ = params_of(f"model m(x: {inp}) {{\n    out = {call} as layer\n    return out\n}}\n", "layer")
    assert n == expected


def test_batchnorm_state_is_not_trainable_and_updates_in_training():
    src = "model m(x: f32[B, 3, 8, 8]) {\n    return batchnorm(x)\n}\n"
    r = check("bn.dln", text=src)
    tr, st = param_totals(r.graph)
    assert (int(tr.value), int(st.value)) == (6, 6)
    assert r.graph.state_updates == []
    r = check("bn.dln", text=src, training=True)
    assert [name for name, _ in r.graph.state_updates] == ["batchnorm/running_mean", "batchnorm/running_var"]


def test_dropout_is_identity_in_inference():
    src = "model m(x: f32[B, 8]) {\n    return dropout(x, 0.5)\n}\n"
    infer_ops = {check("d.dln", text=src).graph.node(n)["op"] for n in check("d.dln", text=src).graph.nodes()}
    g = check("d.dln", text=src, training=True).graph
    train_ops = {g.node(n)["op"] for n in g.nodes()}
    assert "rand_uniform" in train_ops and "rand_uniform" not in infer_ops
