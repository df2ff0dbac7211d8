"""The cpu target against the reference interpreter: every primitive (values and gradients), zoo models
(forward, gradients and three optimizer steps), the structure of the schedule, the compile cache, the
safety of generated source, and the absence of allocation per step.

Compiling costs seconds, so each test compiles one module that covers many cases, and a test session shares
one numba cache (tests/conftest.py)."""
import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compiler.autodiff import Emitter, grad
from compiler.check import check
from compiler.codegen import Unsupported
from compiler.dims import Dim
from compiler.graph import Graph, TType
from compiler.ops import INTERNAL, OPS
from compiler.schedule import item_reads, plan_memory
from runtime import compiled, interpreter
from runtime.initializers import init_params
from runtime.interpreter import RunError
from runtime.optim import build_step

ROOT = Path(__file__).resolve().parent.parent
B = Dim.sym("B")


def _primitive_graph():
    """One graph whose outputs apply every primitive (gradients add scatter_add, max_pool_grad and
    conv_transpose), on inputs with a symbolic batch size."""
    g = Graph("primitives")

    def inp(name, shape, dt="f32"):
        g.inputs.append(g.add("input", [], {"name": name}, TType(shape, dt), None, name))
        return g.inputs[-1]
    x = inp("x", (B, Dim.const(6)))
    y = inp("y", (B, Dim.const(6)))
    img = inp("img", (B, Dim.const(2), Dim.const(7), Dim.const(7)))
    seq = inp("seq", (B, Dim.const(5), Dim.const(4)))
    idx = inp("idx", (B, Dim.const(3)), "i64")
    e = Emitter(g, None, "t")
    outs = {}
    pos = e("add", e("abs", x), e.const(0.5, "f32"))
    for op in ["exp", "tanh", "sigmoid", "atan", "sin", "cos", "erf", "floor", "neg", "abs", "sign"]:
        outs[op] = e(op, x)
    outs["log"], outs["sqrt"], outs["log1p"] = e("log", pos), e("sqrt", pos), e("log1p", pos)
    for op in ["add", "sub", "mul", "maximum", "minimum"]:
        outs[op] = e(op, x, y)
    outs["div"] = e("div", x, pos)
    outs["div_by_zero"] = e("div", x, e.const(0.0, "f32"))  # inf and -inf, as NumPy (not an exception)
    outs["pow"] = e("pow", pos, y)
    outs["bcast"] = e("add", x, e.const(np.arange(6, dtype=np.float32), "f32"))
    for op in ["eq", "ne", "lt", "le", "gt", "ge"]:
        outs[op] = e("cast", e(op, e("floor", x), e("floor", y)), dtype="f32")
    gt, lt = e("gt", x, y), e("lt", x, e.const(0.0, "f32"))
    outs["and"] = e("cast", e("and", gt, lt), dtype="f32")
    outs["or"] = e("cast", e("or", gt, e("not", lt)), dtype="f32")
    outs["select"] = e("select", gt, x, y)
    for op in ["sum", "mean", "max", "min"]:
        outs[op] = e(op, x, axis=[1])
        outs[op + "_all"] = e(op, x, axis=None)
        outs[op + "_keep0"] = e(op, seq, axis=[0], keepdims=True)
    outs["argmax"] = e("argmax", x, axis=1)
    outs["argmin"] = e("argmin", seq, axis=1)
    w = e.const(np.linspace(-1, 1, 30, dtype=np.float32).reshape(6, 5), "f32")
    outs["matmul"] = e("matmul", x, w)
    outs["matmul_t"] = e("matmul", x, e("transpose", e.const(np.ones((5, 6), np.float32) * 0.1, "f32"), perm=[1, 0]))
    outs["bmm"] = e("matmul", seq, e("transpose", seq, perm=[0, 2, 1]))
    outs["matmul_3x2"] = e("matmul", seq, e.const(np.ones((4, 3), np.float32), "f32"))
    k = e.const(np.linspace(-1, 1, 3 * 2 * 3 * 3, dtype=np.float32).reshape(3, 2, 3, 3), "f32")
    outs["conv"] = e("conv", img, k, stride=[2, 2], pad=[1, 1])
    outs["conv_dil"] = e("conv", img, k, dilation=[2, 2], round="floor")
    outs["conv1d"] = e("conv", seq, e.const(np.ones((3, 5, 2), np.float32), "f32"))
    outs["conv_t"] = e("conv_transpose", img, e.const(np.ones((2, 3, 2, 2), np.float32), "f32"), stride=[2, 2])
    outs["max_pool"] = e("max_pool", img, k=[2, 2], round="ceil")
    outs["avg_pool"] = e("avg_pool", img, k=[3, 3], stride=[2, 2], pad=[1, 1])
    # windows that reach past the padded input: fewer elements count, rows and columns alike
    outs["avg_pool_ceil"] = e("avg_pool", img, k=[3, 2], stride=[2, 3], pad=[1, 0], round="ceil")
    outs["max_pool_pad"] = e("max_pool", img, k=[3, 3], stride=[2, 1], pad=[1, 1])
    for op in ("max_pool", "avg_pool"):  # 2x2 windows at stride 2 (kernels._pool2x2), odd sizes floored
        outs[op + "_2x2"] = e(op, img, k=[2, 2], stride=[2, 2], round="floor")
    outs["reshape"] = e("reshape", seq, shape=(B, Dim.const(20)))
    outs["transpose"] = e("transpose", seq, perm=[2, 0, 1])
    outs["broadcast_to"] = e("broadcast_to", e.const(np.arange(4, dtype=np.float32), "f32"), shape=(B, Dim.const(4)))
    outs["slice"] = e("slice", seq, axis=1, start=1, stop=5, step=2)
    outs["concat"] = e("concat", x, y, x, axis=1)
    outs["pad"] = e("pad", img, pads=[(0, 0), (1, 0), (2, 1)], value=-1.0)
    outs["gather"] = e("gather", e.const(np.arange(24, dtype=np.float32).reshape(6, 4), "f32"), idx)
    outs["one_hot"] = e("one_hot", idx, depth=Dim.const(6))
    outs["cast_i"] = e("cast", e("cast", e("mul", x, e.const(3.0, "f32")), dtype="i64"), dtype="f32")
    outs["stop_gradient"] = e("stop_gradient", x)
    outs["fill"] = e("fill", shape=(B, Dim.const(2)), value=2.5)
    outs["iota"] = e("iota", shape=(B, Dim.const(3)), axis=1, dtype="f32")
    outs["dim_value"] = e("dim_value", dim=B)
    outs["rand_uniform"] = e("rand_uniform", shape=(B, Dim.const(6)), low=-1.0, high=2.0)
    outs["rand_normal"] = e("rand_normal", shape=(B, Dim.const(3), Dim.const(2)), mean=1.0, std=0.5)
    outs["scatter_add"] = e("scatter_add", e("fill", shape=(Dim.const(6), Dim.const(2)), value=0.0), idx,
                            e("fill", shape=(B, Dim.const(3), Dim.const(2)), value=1.0))
    # indices from -3 to 7 into an axis of 5 (gather) or 6 (scatter_add): outside ones are rows of zeros
    far = e("sub", e("mul", idx, e.const(2, "i64")), e.const(3, "i64"))
    outs["gather_outside"] = e("gather", e("sum", seq, axis=[0]), far, outside="zero")
    outs["gather_outside_axis1"] = e("gather", e("sum", seq, axis=[0]), far, axis=1, outside="zero")
    # a scalar index inside and one outside: their gradients are scatter_adds of scalars
    row = e("sum", seq, axis=[0, 1])
    outs["gather_scalar"] = e("gather", row, e("cast", e("dim_value", dim=B), dtype="i64"), outside="zero")
    outs["gather_scalar_outside"] = e("gather", row, e("sub", e.const(0, "i64"), e("cast", e("dim_value", dim=B),
                                                                                      dtype="i64")), outside="zero")
    outs["scatter_add_outside"] = e("scatter_add", e.const(np.ones((6, 2), np.float32), "f32"), far,
                                    e("reshape", x, shape=(B, Dim.const(3), Dim.const(2))), outside="zero")
    g.outputs = list(outs.items())
    return g, [x, y, img, seq]


def _feeds(n=3, seed=0):
    r = np.random.default_rng(seed)
    return {"x": r.standard_normal((n, 6)).astype(np.float32), "y": r.standard_normal((n, 6)).astype(np.float32),
            "img": r.standard_normal((n, 2, 7, 7)).astype(np.float32),
            "seq": r.standard_normal((n, 5, 4)).astype(np.float32), "idx": r.integers(0, 6, (n, 3))}


def _close(got, want, rtol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])  # inf, -inf and nan where the reference has them
    got, want = np.where(finite, got, 0), np.where(finite, want, 0)
    # relative to the largest value, with a floor: a gradient that is zero in exact arithmetic (an attention
    # key's bias under softmax) is rounding noise in both, and noise over noise says nothing
    scale = max(np.abs(want).max(), 1e-6) if want.size else 1.0
    err = np.abs(got - want).max() / scale if want.size else 0.0
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def _team(monkeypatch, size):
    """Every step function runs in a team of size threads that splits every item it can, however small
    (a grain of 1: the tests' shapes are far under the real one)."""
    monkeypatch.setenv("DLC_NUM_THREADS", str(size))
    monkeypatch.setattr(compiled, "TEAM_WORK", 0)
    monkeypatch.setattr(compiled, "GRAIN", 1)


@pytest.mark.parametrize("fd,rtol,threads", [(np.float64, 1e-10, 1), (None, 1e-5, 1), (np.float64, 1e-10, 2)],
                         ids=["f64", "f32", "f64-2-threads"])
def test_every_primitive_matches_the_reference(fd, rtol, threads, monkeypatch):
    if threads > 1:
        _team(monkeypatch, threads)
    g, _ = _primitive_graph()
    used = {g.node(n)["op"] for n in g.nodes()}
    missing = set(OPS) - used - (INTERNAL - {"constant", "dim_value"}) - {"max_pool_grad", "conv_transpose"} - {"scatter_add"}
    assert not missing, f"primitives without a backend test: {sorted(missing)}"
    feeds = _feeds()
    want = interpreter.run(g, feeds, seed=3, step=2, float_dtype=fd, outputs=[n for n, _ in g.outputs])
    got = _run_twice(g, feeds, fd, seed=3, step=2)
    for name, _ in g.outputs:
        try:
            _close(got[name], want[name], rtol)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def _run_twice(g, feeds, fd, **kw):
    """compiled.run, but the second call's outputs: a function's first call runs in this thread alone
    (it compiles), the next in the team, if there is one."""
    names = [n for n, _ in g.outputs]
    c = compiled.compile_graphs(g.name, [compiled.Entry("step", g, names, {})], "f64" if fd else "f32")
    c.call("step", feeds, **kw)
    return {k: np.array(v) for k, v in c.call("step", feeds, **kw)[1].items()}


@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_of_every_differentiable_primitive_match_the_reference(threads, monkeypatch):
    if threads > 1:
        _team(monkeypatch, threads)
    g, wrt = _primitive_graph()
    e = Emitter(g, None, "loss")
    total = e.const(0.0, "f32")
    r = np.random.default_rng(1)
    for name, n in list(g.outputs):
        if g.type(n).dtype == "f32" and all(d.is_const for d in g.type(n).shape[1:]) and name not in ("rand_uniform", "rand_normal", "dim_value", "fill", "iota",
                                                     "argmax", "argmin", "scatter_add"):
            shape = g.type(n).shape
            shape = shape[1:] if shape and not shape[0].is_const else shape  # broadcast over the batch
            weights = e.const(r.standard_normal([int(d.value) for d in shape]).astype(np.float32), "f32")
            total = e("add", total, e("sum", e("mul", n, weights), axis=None))
    grads = grad(g, total, wrt)
    g.outputs = [("loss", total)] + [(f"grad:{g.node(w)['name']}", grads[w]) for w in wrt]
    ops = {g.node(n)["op"] for n in g.nodes()}
    assert {"max_pool_grad", "conv_transpose", "scatter_add"} <= ops | {"scatter_add"}
    feeds = _feeds()
    want = interpreter.run(g, feeds, float_dtype=np.float64, outputs=[n for n, _ in g.outputs])
    got = _run_twice(g, feeds, np.float64)
    for name, _ in g.outputs:
        _close(got[name], want[name], 1e-10)


# conv and conv_transpose choose a column layout by shape (compiler/schedule.py's conv_plan): along the
# output or along the filter (a filter wider than the output, as in a filter's gradient), the wide layouts
# of stride 1 (whole padded rows, with and without padding, grouped and dilated), a GEMM per chunk of
# images or straight into the output, a depthwise transposed convolution without a GEMM (avg_pool's
# gradient), and the direct kernels for few taps or few filters (odd and even counts of channels and
# filter columns)
_CONVS = [  # (x shape, w shape, attrs, transposed, layout)
    ((7, 4, 9, 8), (17, 4, 3, 3), dict(stride=[1, 1], pad=[1, 1]), False, "CONV_WIDE"),
    ((9, 4, 9, 8), (6, 2, 3, 2), dict(stride=[2, 1], pad=[0, 1], dilation=[1, 2], groups=2), False, "CONV_ALONG_OUTPUT"),
    ((3, 7, 10, 10), (5, 7, 8, 9), dict(stride=[1, 1], pad=[2, 1], round="floor"), False, "CONV_DIRECT_FILTER"),
    ((3, 7, 10, 10), (9, 7, 8, 9), dict(stride=[1, 1], pad=[2, 1], round="floor"), False, "CONV_WIDE_FILTER"),
    ((3, 3, 12, 12), (4, 3, 7, 6), dict(stride=[1, 1], dilation=[1, 2]), False, "CONV_ALONG_FILTER"),
    ((3, 4, 8, 8), (4, 2, 3, 7), dict(stride=[1, 1], pad=[1, 0], dilation=[2, 1], groups=2), False, "CONV_ALONG_FILTER"),
    ((5, 4, 7, 9), (6, 2, 3, 3), dict(stride=[1, 1], pad=[1, 2], dilation=[2, 1], groups=2), False, "CONV_WIDE"),
    ((3, 4, 11, 11), (5, 4, 6, 7), dict(stride=[2, 2], pad=[1, 1], round="floor"), False, "CONV_WIDE_FILTER"),
    # fewer images than a team of 3: the threads share each chunk, or split the filters (a first
    # layer's filter gradient)
    ((2, 5, 9, 9), (9, 5, 7, 7), dict(stride=[1, 1], pad=[1, 1]), False, "CONV_WIDE_FILTER"),
    ((2, 5, 9, 9), (3, 5, 7, 7), dict(stride=[1, 1], pad=[1, 1]), False, "CONV_DIRECT_FILTER"),
    ((6, 3, 8, 8), (4, 3, 3, 3), dict(stride=[1, 1]), False, "CONV_DIRECT"),
    ((5, 2, 7, 6), (3, 2, 2, 4), dict(stride=[1, 1], pad=[1, 2]), False, "CONV_DIRECT"),
    # blocks of 4 channels and one, of 4 vectors and one, and a last vector past the output rows
    ((3, 5, 11, 13), (14, 5, 3, 4), dict(stride=[1, 1], pad=[2, 1]), False, "CONV_DIRECT"),
    ((3, 9, 5, 4), (256, 9, 2, 2), dict(stride=[1, 1]), False, "CONV_WIDE"),  # 256 channels: the other GEMM order
    ((7, 3, 5, 6), (3, 2, 3, 3), dict(stride=[2, 2], pad=[1, 0]), True, "CONV_T_GEMM"),
    ((7, 4, 5, 6), (4, 3, 2, 3), dict(stride=[1, 2], dilation=[2, 1], groups=2), True, "CONV_T_GEMM"),
    ((7, 3, 4, 4), (3, 1, 2, 2), dict(stride=[2, 2], groups=3, output_pad=[1, 0]), True, "CONV_T_DEPTHWISE"),
    ((5, 4, 6, 5), (4, 3, 3, 2), dict(stride=[1, 1], pad=[1, 0], dilation=[1, 2], groups=2), True, "CONV_T_WIDE"),
    ((4, 3, 5, 6), (3, 2, 3, 3), dict(stride=[1, 1], pad=[1, 1], dilation=[2, 2], output_pad=[1, 0]), True, "CONV_T_WIDE"),
]


def _gemm_cases():
    from runtime.kernels import TILE_CHUNK, TILE_VECTORS, VECTOR_BYTES
    wide = TILE_VECTORS * VECTOR_BYTES // 4  # float32 columns of a full register block
    return [  # (ta, tb, m, n, k): register blocks, the rows and columns they leave, and what BLAS keeps
        (0, 0, 8, wide, 16), (1, 0, 8, wide, 16), (0, 0, 13, 2 * wide + VECTOR_BYTES // 4 + 3, 9),
        (1, 0, 6, wide + 5, 7), (0, 0, 3, VECTOR_BYTES // 8, 5), (0, 0, 5, 7, 4), (0, 0, 5, wide, 0),
        (0, 1, 9, 7, 2 * VECTOR_BYTES + 3), (0, 1, 8, 4, VECTOR_BYTES // 8), (0, 1, 9, wide + 1, 6),
        (0, 1, 5, 6, VECTOR_BYTES // 4 + 1),
        (1, 1, 4, 20, 3), (0, 1, 3, 5, 4000),
        (0, 0, 6, wide + VECTOR_BYTES // 4, 2 * TILE_CHUNK + 3), (1, 0, 5, wide, TILE_CHUNK)]  # k in chunks


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb,m,n,k", _gemm_cases())
def test_gemm_matches_numpy(ta, tb, m, n, k, dt):
    """Every path of kernels.gemm (register blocks, their leftover rows and columns, BLAS) on operands at
    offsets in larger arrays with row strides wider than the rows: the block of c equals the float64
    product, and nothing around it is written; the same before link_gemm, by BLAS alone."""
    from numba import njit

    from runtime import kernels
    from runtime.kernels import gemm

    @njit
    def product(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc):
        gemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc)
    rng = np.random.default_rng(m * 1000 + n + k)
    ar, ac = (k, m) if ta else (m, k)
    br, bc = (n, k) if tb else (k, n)
    lda, ldb, ldc = ac + 3, bc + 2, n + 5
    a, b = rng.standard_normal(7 + ar * lda).astype(dt), rng.standard_normal(2 + br * ldb).astype(dt)
    A = a[7:7 + ar * lda].reshape(ar, lda)[:, :ac].astype(np.float64)
    B = b[2:2 + br * ldb].reshape(br, ldb)[:, :bc].astype(np.float64)
    want = (A.T if ta else A) @ (B.T if tb else B)
    slot = kernels._GEMM_DTYPES.index(kernels.types.float32 if dt == np.float32 else kernels.types.float64)
    kernels.link_gemm(dt)
    linked = kernels._GEMM_TABLE[slot]
    for address in (linked, None):
        kernels._GEMM_TABLE[slot] = address
        try:
            c = np.full(4 + m * ldc + 3, 7.0, dt)
            product(ta, tb, m, n, k, a, 7, lda, b, 2, ldb, c, 4, ldc)
        finally:
            kernels._GEMM_TABLE[slot] = linked
        block = c[4:4 + m * ldc].reshape(m, ldc)
        eps = 1e-6 if dt == np.float32 else 1e-14  # a sum of k products of unit normals is about sqrt(k)
        np.testing.assert_allclose(block[:, :n], want, rtol=10 * eps, atol=eps * max(k, 1) ** 0.5)
        assert (block[:, n:] == 7).all() and (c[:4] == 7).all() and (c[4 + m * ldc:] == 7).all()


@pytest.mark.parametrize("chunk,images,threads", [(1 << 20, None, 1), (1, 1, 1), (3700, "partial", 1), (3700, "partial", 3)],
                         ids=["whole-batch", "one-image", "small-chunks", "small-chunks-3-threads"])
def test_convolution_paths_match_the_reference(chunk, images, threads, monkeypatch):
    """Threads split the images, each in chunks of its own workspace."""
    from compiler import schedule
    monkeypatch.setattr(schedule, "CONV_CHUNK", chunk)
    if threads > 1:
        _team(monkeypatch, threads)
    g = Graph(f"convs{chunk}")
    e = Emitter(g, None, "t")
    r = np.random.default_rng(5)
    feeds = {}
    for q, (xs, ws, attrs, transposed, _) in enumerate(_CONVS):
        name = f"x{q}"
        g.inputs.append(g.add("input", [], {"name": name}, TType(tuple(Dim.const(d) for d in xs), "f32"), None, name))
        feeds[name] = r.standard_normal(xs).astype(np.float32)
        w = e.const(r.standard_normal(ws).astype(np.float32), "f32")
        g.outputs.append((f"conv{q}", e("conv_transpose" if transposed else "conv", g.inputs[-1], w, **attrs)))
    kinds = [g.node(n)["op"] for _, n in g.outputs]
    plans = [schedule.conv_plan(g, schedule.Item(k, [n])) for k, (_, n) in zip(kinds, g.outputs)]
    assert [p[2] for p in plans] == [getattr(schedule, c[4]) for c in _CONVS]
    nbs = [int(p[0].value) for p in plans]
    batch = [c[0][0] for c in _CONVS]
    if images is None:  # every image in one GEMM
        assert nbs == batch
    elif images == 1:
        whole = ("CONV_T_DEPTHWISE", "CONV_DIRECT", "CONV_DIRECT_FILTER")  # one image at a time, no chunks
        assert nbs == [b if c[4] in whole else 1 for b, c in zip(batch, _CONVS)]
    else:  # at least one layout of each kind ends on a partial chunk
        partial = {c[4] for nb, b, c in zip(nbs, batch, _CONVS) if 1 < nb < b and b % nb}
        assert partial >= {"CONV_WIDE", "CONV_ALONG_OUTPUT", "CONV_T_GEMM", "CONV_T_WIDE"}, (nbs, partial)
    want = interpreter.run(g, feeds, float_dtype=np.float64, outputs=[n for n, _ in g.outputs])
    got = _run_twice(g, feeds, np.float64)
    for name, _ in g.outputs:
        try:
            _close(got[name], want[name], 1e-10)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


def _zoo_step(name, sets, optimizer=None, phase=None):
    """The training step of a zoo model (of its phase-th phase, if given), its initial values and feeds."""
    r = check(name, {k: (None, v) for k, v in sets.items()}, training=True)
    assert r.ok, r.diags
    g = r.graph
    settings = dict(g.train["settings"])
    ph = None if phase is None else dict(g.train["phases"][phase])
    if optimizer:
        settings["optimizer"] = optimizer
        if ph is not None:
            ph["settings"] = {**ph["settings"], "optimizer": optimizer}
    step = build_step(g, settings, ph)
    params = init_params(g, 0)
    slots = {k: np.zeros([int(d.value) for d in step.graph.type(n).shape], np.float32) for k, n in step.slots.items()}
    rng = np.random.default_rng(0)
    feeds = {}
    for n in g.inputs + list(g.train["targets"].values()):
        d = g.node(n)
        t = d["type"]
        shape = [int(x.value) if x.is_const else 3 for x in t.shape]
        if t.dtype.startswith("i"):
            feeds[d["name"]] = rng.integers(0, 2, shape)  # token ids, labels, BERT's two segments
        else:
            feeds[d["name"]] = np.abs(rng.standard_normal(shape)).astype(np.float32) / 3
    outs = step.outputs + [o for o, _ in g.outputs if not o.startswith(("loss", "new:")) and o in dict(step.graph.outputs)]
    return step, {**params, **slots}, feeds, outs


MOMENTUM = {"name": "momentum", "args": {"lr": 0.01, "momentum": 0.9}}
# gpt's attention key bias has a gradient that is zero in exact arithmetic (softmax ignores a constant per
# row): both sides hold rounding noise there, which Adam scales up to a full step. Momentum does not.
ZOO = [("mlp", {}, None), ("lenet5", {}, None), ("char_rnn", {"vocab": 11}, None), ("vae", {}, None),
       ("gpt", {"layers": 1, "d_model": 16, "heads": 2, "vocab": 13, "context": 6}, MOMENTUM)]


@pytest.mark.slow
@pytest.mark.parametrize("name,sets,f64_optimizer", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_training_steps_match_the_reference(name, sets, f64_optimizer):
    """Forward outputs, the loss, and three steps of the model's own optimizer in float64 (relative 1e-10);
    three plain sgd steps in float32 (relative 1e-5: Adam divides tiny gradients by their own size, which
    turns last-bit differences of float32 sums into visible ones)."""
    _check_zoo_steps(name, sets, [(np.float64, f64_optimizer, 1e-10), (None, {"name": "sgd", "args": {"lr": 0.01}}, 1e-5)])


ZOO_MODELS = sorted(p.stem for p in (ROOT / "zoo").glob("*.dln"))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ZOO_MODELS if n not in {z[0] for z in ZOO}])
def test_every_zoo_model_steps_as_the_reference(name):
    """Every other zoo model (each phase of a GAN's): forward outputs, the loss, the gradients (the first
    step's momentum slots are the gradients) and three momentum steps in float64, relative 1e-10. Each step
    starts both sides from the compiled side's state: deep batch-normalized networks at a batch of 3
    amplify state that differs in the last bits (each side's rounding) a hundredfold per step (resnet50:
    1e-12, 2e-10, 4e-8 when each side keeps its own state; 1e-12 at every step from the same state).
    Momentum, not the models' Adam: an attention key's bias has a gradient that is zero in exact
    arithmetic, and Adam makes full steps of either side's rounding noise there."""
    graph = check(name, training=True).graph
    for phase in range(len(graph.train.get("phases") or [])) or [None]:
        step, values, feeds, outs = _zoo_step(name, {}, MOMENTUM, phase)
        updates = {o[len("new:"):]: o for o in step.outputs[1:]}
        c = compiled.compile_graphs(name, [compiled.Entry("train_step", step.graph, outs, updates, step.outputs[0])],
                                    "f64")
        mine = {k: v.astype(np.float64) for k, v in values.items()}
        c.sync(mine)
        for t in range(1, 4):
            hyper = {"lr": np.float32(0.01), "step": np.float32(t)}
            state = {k: v.copy() for k, v in mine.items()}
            want = interpreter.run(step.graph, {**feeds, **hyper}, state, seed=0, step=t, float_dtype=np.float64,
                                   outputs=outs)
            ok, got = c.call("train_step", {**feeds, **hyper}, seed=0, step=t)
            assert ok
            for o in outs:
                try:
                    _close(got[o], want[o], 1e-10)
                except AssertionError as e:
                    raise AssertionError(f"{name} phase {phase} step {t} {o}: {e}") from None


@pytest.mark.slow
@pytest.mark.parametrize("name,sets,f64_optimizer", [z for z in ZOO if z[0] in ("char_rnn", "gpt", "lenet5")],
                         ids=["lenet5", "char_rnn", "gpt"])
def test_a_team_of_threads_steps_as_the_reference(name, sets, f64_optimizer, monkeypatch):
    """Three threads split every item that splits (a scan's steps, batched and transposed products,
    reductions) and meet between them: the steps are the reference's, in float64."""
    _team(monkeypatch, 3)
    calls = []
    run = compiled.Team.run
    monkeypatch.setattr(compiled.Team, "run", lambda self, fn, args: calls.append(self.size) or run(self, fn, args))
    _check_zoo_steps(name, sets, [(np.float64, f64_optimizer, 1e-10)])
    assert calls == [3, 3], calls  # the first call runs alone (it compiles)


def test_a_thread_failing_before_the_update_updates_nothing(monkeypatch):
    """A barrier where a thread failed lets the others go on, but for the one before the first write of
    persistent storage: an index out of range in the last thread's share of a gather raises, and the
    parameter the step updates keeps its value."""
    _team(monkeypatch, 2)
    g = Graph("guard")
    w = g.add("param", [], {"name": "w"}, TType((Dim.const(5), Dim.const(4)), "f32"), None, "w")
    idx = g.add("input", [], {"name": "idx"}, TType((B,), "i64"), None, "idx")
    g.inputs = [idx]
    e = Emitter(g, None, "t")
    total = e("sum", e("gather", w, idx))
    g.outputs = [("total", total), ("new:w", e("sub", w, total))]
    c = compiled.compile_graphs("guard", [compiled.Entry("step", g, ["total", "new:w"], {"w": "new:w"}, "total")])
    values = {"w": np.arange(20, dtype=np.float32).reshape(5, 4) / 100}
    c.sync(values)
    assert c.call("step", {"idx": np.array([1, 2, 3, 4])})[0]  # alone: the first call
    assert c.call("step", {"idx": np.array([4, 3, 2, 1])})[0]
    before = values["w"].copy()
    with pytest.raises(RunError, match="index out of range"):
        c.call("step", {"idx": np.array([0, 1, 2, 9])})
    np.testing.assert_array_equal(values["w"], before)
    assert c.call("step", {"idx": np.array([0, 1, 2, 3])})[0]
    np.testing.assert_allclose(values["w"], before - before[:4].sum(), rtol=1e-6)


def test_kernels_from_an_image_compute_and_raise_as_numba_loaded_them(monkeypatch, tmp_path):
    """A step function's first call takes K from its kernel image, written from numba's cache where there is
    none: other copies of the same machine code as numba's dispatchers load, with the same results, and a
    kernel's raise still raises."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # no image from an earlier run
    g = Graph("image")
    table = g.add("input", [], {"name": "table"}, TType((Dim.const(5), Dim.const(4)), "f32"), None, "table")
    idx = g.add("input", [], {"name": "idx"}, TType((B,), "i64"), None, "idx")
    g.inputs = [table, idx]
    e = Emitter(g, None, "t")
    rows = e("exp", e("gather", table, idx))
    g.outputs = [("rows", rows), ("total", e("sum", rows))]
    entries = [compiled.Entry("step", g, ["rows", "total"], {}, "total")]
    feeds = {"table": np.arange(20, dtype=np.float32).reshape(5, 4) / 10, "idx": np.array([1, 2, 3, 4])}
    with monkeypatch.context() as m:
        m.setattr(compiled, "_image_path", lambda *a: None)
        by_numba = compiled.compile_graphs("image", entries)
        want = by_numba.call("step", feeds)[1]["rows"].copy()
    path = by_numba.module.__dlc_path__
    assert not list(path.parent.glob(f"{path.stem}.step.*.kimg"))
    imaged = compiled.compile_graphs("image", entries)
    assert imaged.module is by_numba.module
    np.testing.assert_array_equal(imaged.call("step", feeds)[1]["rows"], want)
    assert len(list(path.parent.glob(f"{path.stem}.step.*.kimg"))) == 1
    K1, K2 = by_numba._kernels["step"], imaged._kernels["step"]
    assert all(k in compiled._IMAGED.values() for k in K2) and not set(K1) & set(K2)
    with pytest.raises(RunError, match="index out of range"):
        imaged.call("step", {**feeds, "idx": np.array([0, 1, 2, 9])})


def test_a_failing_thread_stops_the_team(monkeypatch):
    """An index out of range in the last thread's share raises in the caller, where no thread is left
    waiting at a barrier; a loss that is not finite stops every thread before the update; then the
    team runs the next call."""
    _team(monkeypatch, 2)
    g = Graph("team")
    table = g.add("input", [], {"name": "table"}, TType((Dim.const(5), Dim.const(4)), "f32"), None, "table")
    idx = g.add("input", [], {"name": "idx"}, TType((B,), "i64"), None, "idx")
    g.inputs = [table, idx]
    e = Emitter(g, None, "t")
    rows = e("gather", table, idx)
    total = e("sum", rows)
    g.outputs = [("rows", rows), ("total", total)]
    c = compiled.compile_graphs("team", [compiled.Entry("step", g, ["rows", "total"], {}, "total")])
    table_v = np.arange(20, dtype=np.float32).reshape(5, 4)
    assert c.call("step", {"table": table_v, "idx": np.array([1, 2, 3, 4])})[0]  # alone: the first call
    ok, outs = c.call("step", {"table": table_v, "idx": np.array([4, 3, 2, 1])})
    assert ok and outs["total"] == table_v[1:].sum()
    with pytest.raises(RunError, match="index out of range"):
        c.call("step", {"table": table_v, "idx": np.array([0, 1, 2, 9])})
    with pytest.raises(RunError, match="index out of range"):  # both threads fail
        c.call("step", {"table": table_v, "idx": np.array([9, 9, 9, 9])})
    assert compiled._TEAMS[2]._errors == []  # none left over to be raised by a later call
    ok, _ = c.call("step", {"table": np.full((5, 4), np.nan, np.float32), "idx": np.array([0, 1, 2, 3])})
    assert not ok
    ok, outs = c.call("step", {"table": table_v, "idx": np.array([0, 0, 0, 0])})
    assert ok and outs["total"] == table_v[0].sum() * 4


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="needs two CPUs")
def test_a_teams_worker_keeps_off_the_callers_cpu(monkeypatch):
    """Wherever the scheduler put the calling thread, the worker runs the call on the process's other
    CPUs (woken on its waker's CPU, it spun against the caller on one core), and follows the caller."""
    cpus = sorted(os.sched_getaffinity(0))
    team = compiled.Team(2)
    seen = {}

    def fn(tid, nt, S):
        seen[tid] = os.sched_getaffinity(0)
        return True

    for caller in (cpus[-1], cpus[0], cpus[0]):
        monkeypatch.setattr(compiled, "_this_cpu", lambda: caller)
        assert team.run(fn, ()) and team._join() is None
        assert seen[1] == set(cpus) - {caller}, (caller, seen)
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's own thread is not bound


def test_products_without_scipys_openblas_library(tmp_path):
    """Where scipy's OpenBLAS library is not found on disk, gemm's symbols point into scipy.linalg's
    cython_blas (the same Fortran signature), and steps run in one thread (no way to keep BLAS's own
    threads out of the team's way)."""
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               DLC_NUM_THREADS="2")
    script = textwrap.dedent(f"""
        import importlib.util, sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "scipy" else find(name, *a)
        from runtime import compiled
        print("library", compiled._find_openblas(), "team", compiled.team_for(1 << 40))
        from numba import njit
        from runtime.kernels import gemm
        @njit
        def product(a, b, c, ta, tb, m, n, k):
            gemm(ta, tb, m, n, k, a, 0, m if ta else k, b, 0, k if tb else n, c, 0, n)
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            a, b = rng.standard_normal((5, 3)).astype(dt), rng.standard_normal((4, 3)).astype(dt)
            c = np.zeros(20, dt)
            product(a.ravel(), b.ravel(), c, 0, 1, 5, 4, 3)
            print(dt.__name__, np.abs(c.reshape(5, 4) - a @ b.T).max() < 1e-5)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["library", "None", "team", "None", "float32", "True", "float64", "True"], out.stdout


def test_a_forked_process_runs_its_own_team(monkeypatch):
    """A step whose team (and arena) was set up before a fork runs in the child with the child's own
    threads: the parent's are not there to meet at its barriers."""
    import multiprocessing
    _team(monkeypatch, 2)
    g = Graph("fork")
    x = g.add("input", [], {"name": "x"}, TType((B, Dim.const(8)), "f32"), None, "x")
    g.inputs = [x]
    e = Emitter(g, None, "t")
    g.outputs = [("y", e("tanh", e("mul", x, x)))]
    c = compiled.compile_graphs("fork", [compiled.Entry("step", g, ["y"], {})])
    feeds = {"x": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)}
    for _ in range(2):  # alone, then in the team
        want = np.array(c.call("step", feeds)[1]["y"])

    def child(queue):
        queue.put(np.array(c.call("step", feeds)[1]["y"]))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(queue,), daemon=True)
    p.start()
    try:
        got = queue.get(timeout=30)  # a child waiting for its parent's threads never answers
    finally:
        p.kill()
        p.join()
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(compiled._blas_threads() is None, reason="needs a BLAS whose threads can be set")
def test_blas_runs_single_threaded_wherever_a_team_will(monkeypatch):
    """A step that runs in a team runs BLAS single-threaded, in the team and in its first call, which runs
    alone (BLAS's threads woken there spin on the team's CPUs: LeNet-5's next steps took 40-80 ms, not
    1.5); BLAS's own setting is back afterwards."""
    from contextlib import contextmanager
    get, put = compiled._blas_threads()
    seen = []
    real = compiled.one_blas_thread

    @contextmanager
    def watched():
        with real():
            seen.append(get())
            yield
    monkeypatch.setattr(compiled, "one_blas_thread", watched)
    _team(monkeypatch, 2)
    g = Graph("blas_threads")
    x = g.add("input", [], {"name": "x"}, TType((Dim.const(8), Dim.const(8)), "f32"), None, "x")
    g.inputs = [x]
    g.outputs = [("y", Emitter(g, None, "t")("matmul", x, x))]
    c = compiled.compile_graphs("blas_threads", [compiled.Entry("step", g, ["y"], {})])
    before = get()
    put(2)
    try:
        for _ in range(2):  # alone, then in the team
            c.call("step", {"x": np.eye(8, dtype=np.float32)})
        assert seen == [1, 1] and get() == 2
    finally:
        put(before)


def test_a_team_meets_correctly_after_a_failure():
    """A thread that fails leaves the others inside a barrier they had counted themselves into; the next
    call starts with a clean count (else its first barrier lets one thread through alone)."""
    import threading

    from numba import njit

    from runtime.kernels import barrier

    @njit(nogil=True)
    def fail(out, tid, nt, S):
        if tid == nt - 1:
            raise IndexError("thread failed")
        barrier(S, nt)
        return True

    @njit(nogil=True)
    def count(out, tid, nt, S):  # each thread adds 1 to its part, then checks everyone's
        for r in range(200):
            n = out.size
            for i in range(n * tid // nt, n * (tid + 1) // nt):
                out[i] += 1
            if barrier(S, nt):
                return False
            for i in range(n):
                if out[i] != r + 1:
                    return False
            if barrier(S, nt):
                return False
        return True

    team = compiled.Team(2)
    out = np.zeros(64, np.int64)
    for _ in range(3):
        with pytest.raises(IndexError, match="thread failed"):
            team.run(fail, (out,))
        out[:] = 0
        result = []
        runner = threading.Thread(target=lambda: result.append(team.run(count, (out,))), daemon=True)
        runner.start()
        runner.join(60)
        assert result == [True], "the team's threads did not meet at each barrier together"


def _check_zoo_steps(name, sets, cases):
    for fd, opt, rtol in cases:
        step, values, feeds, outs = _zoo_step(name, sets, opt)
        updates = {o[len("new:"):]: o for o in step.outputs[1:]}
        c = compiled.compile_graphs(name, [compiled.Entry("train_step", step.graph, outs, updates, step.outputs[0])],
                                    "f64" if fd else "f32")
        ref = {k: v.copy() for k, v in values.items()}
        mine = {k: v.copy() for k, v in values.items()}
        c.sync(mine)
        for t in range(1, 4):
            hyper = {"lr": np.float32(0.01), "step": np.float32(t)}
            want = interpreter.run(step.graph, {**feeds, **hyper}, ref, seed=0, step=t, float_dtype=fd, outputs=outs)
            ok, got = c.call("train_step", {**feeds, **hyper}, seed=0, step=t)
            assert ok
            for o in outs:
                try:
                    _close(got[o], want[o], rtol)
                except AssertionError as e:
                    raise AssertionError(f"{name} step {t} {o} ({'f64' if fd else 'f32'}): {e}") from None
            for o in step.outputs[1:]:
                ref[o[len("new:"):]] = want[o]


@pytest.mark.parametrize("threads", [1, 3])
def test_epilogues_match_the_reference(threads, monkeypatch):
    """A bias and an activation after a product or a convolution run in its kernel over each thread's
    block: a product's rows (5 x 7 @ 7 x 3), its columns (2 x 9 @ 9 x 11) or its first batch axis
    (4 x 3 x 6 @ 6 x 5), a convolution's images; a loop that reads the product through an index map
    stays a loop of its own."""
    if threads > 1:
        _team(monkeypatch, threads)
    g = Graph(f"epilogues{threads}")
    e = Emitter(g, None, "t")
    r = np.random.default_rng(3)
    feeds, outs = {}, []

    def inp(name, shape):
        n = g.add("input", [], {"name": name}, TType(tuple(Dim.const(d) for d in shape), "f64"), None, name)
        g.inputs.append(n)
        feeds[name] = r.standard_normal(shape)
        return n
    for k, (act, sa, sb) in enumerate([("tanh", (5, 7), (7, 3)), ("relu", (2, 9), (9, 11)), ("sigmoid", (4, 3, 6), (6, 5))]):
        y = e("add", e("matmul", inp(f"a{k}", sa), inp(f"b{k}", sb)), inp(f"bias{k}", (sb[-1],)))
        y = e("maximum", y, e.const(0.0, "f64")) if act == "relu" else e(act, y)
        outs.append((f"y{k}", y))
    p = e("matmul", inp("p", (4, 4)), inp("q", (4, 4)))
    outs.append(("t", e("add", e("transpose", p, perm=[1, 0]), p)))
    # a product read with its second operand transposed, and an epilogue that reads another value second
    v = e("matmul", inp("c", (3, 2)), inp("d", (2, 5)))
    outs.append(("u", e("sub", e("matmul", inp("h", (3, 4)), e("transpose", inp("w", (5, 4)), perm=[1, 0])), v)))
    hosts = ["matmul"] * 4
    for q, (xs, ws, attrs, transposed, layout) in enumerate(_CONVS):  # every layout, its images split
        y = e("conv_transpose" if transposed else "conv", inp(f"x{q}", xs), inp(f"w{q}", ws), **attrs)
        y = e("tanh", e("add", y, inp(f"c{q}", (int(g.type(y).shape[1].value), 1, 1))))
        outs.append((f"conv{q}", y))
        if layout not in ("CONV_WIDE_FILTER", "CONV_DIRECT_FILTER"):  # threads may share an image there
            hosts.append("conv_transpose" if transposed else "conv")
    g.outputs = outs
    s = compiled.schedule_entry(compiled.Entry("step", g, [n for n, _ in outs], {}), "f64")
    assert [it.kind for it in s.items if it.epilogue] == hosts
    host = next(it for it in s.items if it.epilogue and it.transposed)
    assert v in item_reads(s, host)  # the epilogue's operand keeps its buffer until then
    c = compiled.compile_graphs(g.name, [compiled.Entry("step", g, [n for n, _ in outs], {})], "f64")
    want = interpreter.run(g, feeds, {}, float_dtype=np.float64)
    for _ in range(2):  # alone, then in the team
        got = c.call("step", feeds)[1]
        for name, _ in outs:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_mlp_schedule_structure():
    """Fusion groups of an MLP's training step, in-place updates, and an arena smaller than its buffers."""
    step, values, feeds, outs = _zoo_step("mlp", {})
    updates = {o[len("new:"):]: o for o in step.outputs[1:]}
    s = compiled.schedule_entry(compiled.Entry("train_step", step.graph, outs, updates, step.outputs[0]))
    g = s.graph
    kinds = [it.kind for it in s.items]
    assert kinds.count("matmul") == 3 * 3 - 1  # forward 3, backward 2 per layer but the first (no input grad)
    # bias and relu (and dropout) in one loop, the epilogue of the forward matmuls of the hidden layers
    epilogues = [[g.node(n)["op"] for n in it.nodes[it.epilogue:]] for it in s.items if it.epilogue]
    assert len(epilogues) == 2 and all(ops[:2] == ["add", "maximum"] for ops in epilogues), epilogues
    assert all(it.kind == "matmul" and it.epilogue == 1 for it in s.items if it.epilogue)
    # Adam: each parameter's slots and weight updated by one fused loop, in place
    assert sorted(s.inplace) == sorted(updates)
    assert all(it.kind != "transpose" for it in s.items)  # transposes of matmul operands became BLAS flags
    bindings = interpreter.bind_inputs(g, {**feeds, "lr": 0, "step": 0})
    plan = plan_memory(s.buffers, lambda b: int(b.size.subs(bindings).value))
    assert plan.sizes["f32"] < plan.total["f32"]


def test_a_second_process_loads_the_compiled_step_from_the_cache(tmp_path):
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from runtime.model import Model
        import runtime.compiled as rc
        made = []
        generate = rc.generate
        rc.generate = lambda *a: made.append(1) or generate(*a)
        m = Model("xor", target="cpu")
        print(m.predict(np.array([[0, 1]], np.float32)).ravel()[0])
        print("generated", len(made))  # the passes, the scheduler and codegen, or their output from the cache
        f = m.compiled().module.predict
        print("hits", sum(f.stats.cache_hits.values()), "misses", sum(f.stats.cache_misses.values()))
        print("lowering", "numba.np.arraymath" in sys.modules)  # imported to compile, not to load
        print("parser", "lark" in sys.modules)  # every .dln file is in the parse cache the second time
        print("blas glue", "scipy.linalg" in sys.modules or "numba.np.linalg" in sys.modules)  # kernels.gemm
        kernels = {{name for name, _ in m.compiled().programs["predict"].calls}}
        print("kernels loaded", sum(bool(getattr(m.compiled().module, k).signatures) for k in kernels),
              "of", len(kernels))  # through numba's dispatchers, or else from the kernel image
        deferred = "numpy.f2py.crackfortran" not in sys.modules  # runtime/compiled.py kept it from loading
        import numpy.f2py
        print("f2py", deferred, numpy.f2py.get_include().endswith("src"))  # and it still works when used
    """)
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    # compiled here, or by a compile process (compile_parallel) and loaded from the cache
    assert "hits 0 misses 1" in first.stdout or "hits 1 misses 0" in first.stdout
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert "hits 1" in second.stdout and "misses 0" in second.stdout
    assert "generated 1" in first.stdout and "generated 0" in second.stdout
    assert "lowering True" in first.stdout and "lowering False" in second.stdout
    assert "parser True" in first.stdout and "parser False" in second.stdout
    assert "blas glue False" in second.stdout
    loaded = [line.split() for out in (first, second) for line in out.stdout.splitlines() if "kernels loaded" in line]
    assert loaded[1][2] == "0" and loaded[1][4] != "0", loaded  # made by the first from numba's cache
    assert "f2py True True" in first.stdout and "f2py True True" in second.stdout
    assert first.stdout.split()[0] == second.stdout.split()[0]
    # a corrupted entry (the module file and numba's index) is rebuilt, with the same result
    for f in (tmp_path / "dlc").rglob("m_*.py"):
        f.write_text("garbage(")
    for f in (tmp_path / "numba").rglob("*.nbi"):  # the generated module's and runtime/kernels.py's
        f.write_bytes(b"\x80garbage")
    codes = list((tmp_path / "dlc").rglob("m_*.code"))  # the compiled module, checked by its own hash
    assert len(codes) == 1
    data = bytearray(codes[0].read_bytes())
    data[-10] ^= 1
    codes[0].write_bytes(bytes(data))
    pickles = list((tmp_path / "dlc").rglob("g_*.pickle"))
    assert len(pickles) == 1
    data = bytearray(pickles[0].read_bytes())
    data[len(data) // 2] ^= 1  # one bit: it might still unpickle, to something else
    pickles[0].write_bytes(bytes(data))
    images = list((tmp_path / "dlc").rglob("*.kimg"))
    assert len(images) == 1
    data = bytearray(images[0].read_bytes())
    data[len(data) // 2] ^= 1
    images[0].write_bytes(bytes(data))
    third = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    assert third.stdout.split()[0] == first.stdout.split()[0]
    assert "generated 1" in third.stdout
    fourth = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert "generated 0" in fourth.stdout and "misses 0" in fourth.stdout
    assert "kernels loaded 0" in fourth.stdout and "kernels loaded 0" not in third.stdout  # rewritten by the third
    assert fourth.stdout.split()[0] == first.stdout.split()[0]
    # a moved cache folder: the compiled module code named the old path, through which numba finds its cache
    (tmp_path / "dlc").rename(tmp_path / "moved")
    moved = subprocess.run([sys.executable, "-c", script], env=dict(env, DLC_CACHE_DIR=str(tmp_path / "moved")),
                           capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.split()[0] == first.stdout.split()[0] and "generated 0" in moved.stdout


def test_read_only_inputs_run_the_compiled_step_as_it_is():
    """numba types a read-only array (a memory-mapped data set, a frozen batch) apart from a writable one:
    passed as it is, the step would compile a second time, seconds in the middle of training."""
    from runtime.model import Model
    m = Model("xor", target="cpu")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    t = np.array([[0], [1], [1], [0]], np.float32)
    first = m.train_on_batch({"x": x, "t": t}, 0.1)["loss"]
    x.flags.writeable = t.flags.writeable = False
    m.train_on_batch({"x": x, "t": t}, 0.1)
    m.predict(x)
    assert len(m.compiled().module.train_step.signatures) == 1
    assert len(m.compiled().module.predict.signatures) == 1
    assert np.isfinite(first)


def test_generated_code_is_kept_by_its_entries(tmp_path, monkeypatch):
    """generate_cached keys its file by the entries written out whole: other sizes make another file, the
    same entries find the first one's output (the same source and functions)."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    made = []
    generate = compiled.generate
    monkeypatch.setattr(compiled, "generate", lambda *a: made.append(1) or generate(*a))
    from runtime.model import Model
    small, wide = Model("mlp", target="cpu"), Model("mlp", target="cpu", sets={"h1": 48})
    gen, source = compiled.generate_cached("mlp", small.entries())
    assert made == [1] and len(list(tmp_path.rglob("g_*.pickle"))) == 1
    again, same = compiled.generate_cached("mlp", Model("mlp", target="cpu").entries())
    assert made == [1] and same == source and list(again.programs) == list(gen.programs)
    # a loaded program keeps its graph and schedule pickled (a step needs neither) until they are read
    prog = again.programs["train_step"]
    assert "graph" not in vars(prog) and "schedule" not in vars(prog)
    assert prog.schedule.graph is prog.graph and prog.graph.outputs == gen.programs["train_step"].graph.outputs
    assert [b.size for b in prog.schedule.buffers] == [b.size for b in prog.buffers]
    compiled.generate_cached("mlp", wide.entries())
    assert made == [1, 1] and len(list(tmp_path.rglob("g_*.pickle"))) == 2
    compiled.generate_cached("mlp", small.entries(), "f64")
    assert made == [1, 1, 1] and len(list(tmp_path.rglob("g_*.pickle"))) == 3


def test_generated_code_keys_are_the_same_in_every_process(tmp_path):
    """The key of generate_cached's file depends only on the entries' content: the same in a process that
    parsed the files and in one that read them from the parse cache, under other string hashes (recurrent,
    attention, phased, sampling and convolutional models); other sizes give another key."""
    script = textwrap.dedent(f"""
        import hashlib, sys
        sys.path.insert(0, {str(ROOT)!r})
        from compiler.graph import canonical_bytes
        from runtime.model import Model
        for name, sets in (("char_lstm", {{}}), ("bert", {{}}), ("gan", {{}}), ("vae", {{}}), ("lenet5", {{}}),
                           ("seq2seq_attention", {{}}), ("lenet5", {{"classes": 7}})):
            entries = Model(name, target="cpu", sets=sets).entries()
            key = canonical_bytes([(e.name, e.graph, e.outputs, e.updates, e.loss) for e in entries])
            print(name, hashlib.sha256(key).hexdigest())
    """)
    outs = []
    for seed in ("1", "2", "3"):  # the first parses every file, the others read the parse cache
        env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path), PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        outs.append(out.stdout.split())
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 14
    assert outs[0][-1] != outs[0][-3]  # lenet5 with 7 classes


def test_a_cold_step_finds_every_callee_compiled_by_another_process(tmp_path):
    """compile_parallel works out each callee's signature from the generated calls, whatever the calls pass
    (a scan's loop counter and keys, masking noise's random key, arrays, rows of T): with a compile process
    that claims every unit (this one claims none), this process compiles nothing (a wrong signature would
    have it compile the kernel again when it looks up its address), and a step function compiles nothing
    while it compiles but what it calls directly (the key mixer and the threads' barrier). Given several
    step functions, it compiles those too. Compiles are logged in every process by a sitecustomize module
    on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        from numba.core import event
        outer = []  # the compiles this one is inside of
        class Compiles(event.Listener):
            def on_start(self, ev):
                name = ev.data["dispatcher"].py_func.__name__
                with open(os.environ["COMPILE_LOG"], "a") as f:
                    print(os.getpid(), name, *outer, file=f)
                outer.append(name)
            def on_end(self, ev):
                outer.pop()
        event.register("numba:compile", Compiles())
    """))
    log = tmp_path / "compiles.log"
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               DLC_COMPILE_JOBS="2", COMPILE_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        import runtime.compiled as rc
        from runtime.model import Model
        print("pid", os.getpid())
        rc._compile_claimed = lambda module, units, steps, *_: print("units", len(units) - len(steps) - 1,
                                                                     len(steps) + 1)
        m = Model("char_rnn", target="cpu", sets={{"vocab": 5, "hidden": 4}})
        chars = np.array([[1, 2, 3], [4, 0, 1]])
        print("loss", m.train_on_batch({{"chars": chars, "next_chars": chars}}, 0.1)["loss"])
        m = Model("ae_denoising", target="cpu")
        print("loss", m.train_on_batch({{"x": np.ones((2, 64), np.float32)}}, 0.1)["loss"])
        from compiler.cli import _warm  # `dlc compile`: all step functions at once, the other process too
        m = Model("mlp_multiclass", target="cpu")
        _warm(m.compiled(), m)
        print("functions", *sorted(m.compiled().programs))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    units = [x.split()[1:] for x in lines if x.startswith("units")]
    assert [(int(c) > 1, int(o)) for c, o in units] == [(True, 2), (True, 2), (True, 4)], out.stdout
    assert all(np.isfinite(float(x.split()[1])) for x in lines if x.startswith("loss"))
    assert lines[-1] == "functions eval_step predict train_step", out.stdout
    compiles = [line.split() for line in log.read_text().splitlines()]  # pid, name, the compiles it is in
    assert [c for c in compiles if c[0] == lines[0].split()[1]] == [], out.stdout
    steps = ("train_step", "eval_step", "predict")
    assert sorted(c[1] for c in compiles if c[1] in steps) == ["eval_step", "predict"] + ["train_step"] * 3
    inside = {c[1] for c in compiles if set(c[2:]) & set(steps)}
    assert inside <= {"barrier", "mix"}, inside


def test_a_step_function_links_its_callees_as_they_were_optimized(tmp_path):
    """numba optimizes a function's final module, callees linked in, once more; a step function skips
    that (its callees were optimized in their own modules), only while dlc compiles it: a user's function
    of the same name compiled afterwards is optimized as numba does."""
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               DLC_COMPILE_JOBS="1")
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from numba import njit
        from numba.core.codegen import CPUCodeLibrary
        from runtime.model import Model
        optimized = []
        numbas = CPUCodeLibrary._optimize_final_module
        def spy(self):
            optimized.append(self.name)
            numbas(self)
        CPUCodeLibrary._optimize_final_module = spy
        m = Model("xor", target="cpu")
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        print("loss", m.train_on_batch({{"x": x, "t": np.array([[0], [1], [1], [0]], np.float32)}}, 0.1)["loss"])
        print("step", "train_step" in optimized, "kernels", sum(n.startswith("k_") for n in optimized))
        @njit
        def train_step(a):
            return a + 1
        train_step(1)
        print("user", "train_step" in optimized)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].startswith("step False kernels ") and int(lines[1].split()[-1]) > 2, out.stdout
    assert lines[2] == "user True", out.stdout


def test_a_compile_process_that_fails_only_costs_time(tmp_path):
    """A compile process that dies at once (/bin/false) or cannot start leaves its share to this one:
    the same losses as compiling in one process."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from runtime.model import Model
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        for name, exe in (("xor", "/bin/false"), ("perceptron", "/nonexistent/python")):
            sys.executable = exe
            m = Model(name, target="cpu", sets={{"inputs": 2}} if name == "perceptron" else {{}})
            y = np.zeros((4,) + tuple(int(d.value) for d in m.infer.type(m.infer.train["targets"][m.target_names[0]]).shape[1:]))
            print(name, m.train_on_batch({{"x": x, m.target_names[0]: y.astype(np.float32)}}, 0.1)["loss"])
    """)
    losses = []
    for jobs in ("2", "1"):
        env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / jobs / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / jobs / "nb"),
                   DLC_COMPILE_JOBS=jobs)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        losses.append(out.stdout.split())
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_compile_jobs_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DLC_COMPILE_JOBS", "3")
    assert compiled.compile_jobs() == 3
    monkeypatch.setenv("DLC_COMPILE_JOBS", "two")
    with pytest.raises(RunError, match="DLC_COMPILE_JOBS should be a whole number of processes, 1 or more, not `two`"):
        compiled.compile_jobs()
    monkeypatch.delenv("DLC_COMPILE_JOBS")
    assert 1 <= compiled.compile_jobs() <= 4


def test_threads_come_from_the_environment(monkeypatch):
    """DLC_NUM_THREADS sizes the team; a team starts only for enough work and more than one thread."""
    monkeypatch.setenv("DLC_NUM_THREADS", "3")
    assert compiled.threads() == 3
    assert compiled.team_for(compiled.TEAM_WORK).size == 3
    assert compiled.team_for(compiled.TEAM_WORK - 1) is None
    monkeypatch.setenv("DLC_NUM_THREADS", "1")
    assert compiled.team_for(1 << 40) is None
    monkeypatch.setenv("DLC_NUM_THREADS", "0")
    with pytest.raises(RunError, match="DLC_NUM_THREADS should be a whole number of threads, 1 or more, not `0`"):
        compiled.threads()
    monkeypatch.delenv("DLC_NUM_THREADS")
    assert compiled.threads() >= 1


def test_user_text_never_becomes_code(tmp_path):
    evil = "x'''\n__import__('os').system('echo pwned')\n\"\"\"\\"
    name = "m" + "".join(c for c in "q'\\\"__import__" if c.isalnum() or c == "_")
    d = tmp_path / ("evil'\n__import__('os')\\\"\"\"")
    d.mkdir()
    src = d / "model.dln"
    line = evil.replace(chr(10), " ")  # a .dln comment ends at its newline
    src.write_text(f"""# {line}
model {name}(x: f32[B, 2]) -> (y: f32[B, 1]) {{
    param w: [2, 1] = 0.5   # {line}
    y = x @ w
    return y
}} train {{
    loss = mean((y - target) * (y - target))
    target target: f32[B, 1]
    data = "{evil.replace(chr(10), ' ').replace('"', ' ').replace(chr(92), ' ')}"
}}
""")
    r = check(str(src), training=True)
    if not r.ok:  # the train section's exact spelling is not the point here: the forward model is
        src.write_text(src.read_text().split("} train {")[0] + "}\n")
        r = check(str(src))
    assert r.ok, r.diags
    g = r.graph
    outs = [n for n, _ in g.outputs if not n.startswith("loss")]
    source = compiled.generate(str(src), [compiled.Entry("predict", g, outs)]).source()
    tree = ast.parse(source)  # one valid module, whatever the names and paths held
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "__import__" not in names and "system" not in names
    # the kernel a run() calls is named by a string: a function the module defines or imports
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    defined |= {a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    runs = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run"]
    kernels = {n.args[0].value for n in runs}
    assert runs and kernels <= defined, kernels - defined
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert strings - kernels <= {"gather index out of range", "scatter_add index out of range", "numpy"}  # error_model
    for line in source.splitlines():
        if "__import__" in line:
            assert line.lstrip().startswith("#")
    got = compiled.run(g, {"x": np.ones((2, 2), np.float32)}, init_params(g, 0))
    np.testing.assert_allclose(got["y"], np.ones((2, 1)))


def test_no_allocation_per_step(tmp_path):
    """numba's runtime counts its allocations: a steady-state training step makes only the meminfo wrappers
    of its array arguments (as many as an empty function taking the same arrays), no data buffers."""
    env = dict(os.environ, NUMBA_NRT_STATS="1", DLC_CACHE_DIR=str(tmp_path / "dlc"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from numba import njit
        from numba.core.runtime import rtsys
        from runtime.model import Model
        m = Model("xor", target="cpu")
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        y = np.array([[0], [1], [1], [0]], np.float32)
        feeds = {{"x": x, m.target_names[0]: y}}
        m.train_on_batch(feeds, 0.1)
        c = m.compiled()
        args = {{**feeds, "lr": np.float32(0.1), "step": np.float32(2)}}
        c.call("train_step", args, step=2)
        before = rtsys.get_allocation_stats().alloc
        for t in range(3, 13):
            c.call("train_step", args, step=t)
        per_step = (rtsys.get_allocation_stats().alloc - before) / 10
        arrays = len(c.programs["train_step"].inputs) + 10 + 6  # inputs, P_* and A_*, D, O, Q, T, K, S
        print(per_step, arrays)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    per_step, arrays = out.stdout.split()
    assert float(per_step) <= float(arrays)


@pytest.mark.parametrize("body,ok", [
    ("h2 = h1\n        h1 = h1 * 0.5 + h2 + xt", True),  # a shift: h2's new value is h1's old one
    ("t = h1\n        h1 = h2 + xt\n        h2 = t", True),  # h2 takes h1's old value, h1 a new one
    ("t = h1\n        h1 = h2 * 1.0\n        h2 = t", True),  # the swap, one side computed
    ("t = h1\n        h1 = h2\n        h2 = t", False),  # the swap: refused, not computed wrong
])
def test_scan_carries_that_take_each_others_values(body, ok, tmp_path):
    """A scan step writes its new carries back over the old ones; a new carry that is another's old value
    is read before that one is overwritten (it was not: `h2 = h1` got h1's new value)."""
    src = tmp_path / "carries.dln"
    src.write_text(f"""model carries(x: f32[B, T, 2]) -> (y: f32[B, T, 2]) {{
    ys, h1, h2 = scan xt in x along 1 with h1 = x[:, 0, :], h2 = x[:, 1, :] * 3.0 {{
        {body}
        yield h1 * 2.0 + h2
    }}
    return ys
}}
""")
    r = check(str(src))
    assert r.ok, r.diags
    x = np.arange(16, dtype=np.float64).reshape(2, 4, 2) / 10
    if not ok:
        with pytest.raises(Unsupported, match=r"carries.dln:2:\d+: .*carries swap"):
            compiled.run(r.graph, {"x": x}, {}, float_dtype=np.float64)
        return
    want = interpreter.run(r.graph, {"x": x}, {}, float_dtype=np.float64)["y"]
    np.testing.assert_allclose(compiled.run(r.graph, {"x": x}, {}, float_dtype=np.float64)["y"], want, rtol=1e-12)


def test_a_step_function_calls_its_kernels_by_address(tmp_path):
    """A step function's machine code holds its own code, not its kernels' (numba would link a copy of each
    callee into it and generate all of it again): it calls each through K, and K holds the address of the
    kernel compiled for the arguments that call passes. Compiled in a fresh process, where numba keeps the
    code to inspect and every call is typed here (kernel_addresses checks the types against those)."""
    env = dict(os.environ, DLC_CACHE_DIR=str(tmp_path / "dlc"), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               DLC_COMPILE_JOBS="1")
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from runtime import compiled
        from runtime.model import Model
        m = Model("xor", target="cpu")
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        batch = {{"x": x, m.target_names[0]: np.array([[0], [1], [1], [0]], np.float32)}}
        m.train_on_batch(batch, 0.1)
        c = m.compiled()
        prog, fn = c.programs["train_step"], c.module.train_step
        callees = {{name for name, _ in prog.calls}}
        (ir,) = fn.inspect_llvm().values()
        defined = [line for line in ir.splitlines() if line.startswith("define ")]
        print("defined", len(defined), "callees", len(callees))
        print("kernels defined", [k for k in callees if any(f"{{len(k)}}{{k}}B" in d for d in defined)])
        args = (*c._arguments(prog, {{**batch, "lr": 0.1, "step": 1}}, 0, 1)[0], 0, 1, compiled._ALONE)
        K = c._kernels["train_step"]
        for (name, sig), address in zip(compiled.call_signatures(c.module, prog, args), K):
            cres = getattr(c.module, name).overloads[sig]
            assert address == cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name), name
        print("addresses", len(K) == len(prog.calls))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    defined, callees = int(lines[0].split()[1]), int(lines[0].split()[3])
    assert callees > 5 and 0 < defined < 10, lines[0]  # the function, its wrappers, barrier, mix
    assert lines[1:] == ["kernels defined []", "addresses True"], out.stdout


def test_kernel_addresses_refuse_a_kernel_typed_otherwise(monkeypatch):
    """Where this process typed a step function's call of a kernel, the address looked up must be for the
    same argument types: a kernel called with others would read its arguments wrongly."""
    from numba.core import types
    from runtime import kernels
    step, values, feeds, outs = _zoo_step("xor", {})
    c = compiled.compile_graphs("xor", [compiled.Entry("train_step", step.graph, outs)])
    prog = c.programs["train_step"]
    args = (*c._arguments(prog, {**feeds, "lr": np.float32(0.1), "step": np.float32(1)}, 0, 1)[0], 0, 1,
            compiled._ALONE)
    name, sig = compiled.call_signatures(c.module, prog, args)[0]
    other = sig[:-1] + (types.float64 if sig[-1] != types.float64 else types.int32,)
    monkeypatch.setattr(kernels, "TYPED_RUNS", {name: {other}})
    with pytest.raises(RuntimeError, match="internal error"):
        compiled.kernel_addresses(c.module, prog, args)
    monkeypatch.setattr(kernels, "TYPED_RUNS", {name: {sig}})
    assert compiled.kernel_addresses(c.module, prog, args)[0]


def test_profile_times_every_call():
    step, values, feeds, outs = _zoo_step("xor", {})
    updates = {o[len("new:"):]: o for o in step.outputs[1:]}
    c = compiled.compile_graphs("xor", [compiled.Entry("train_step", step.graph, outs, updates, step.outputs[0])],
                                profile=True)
    c.sync(dict(values))
    for t in (1, 2):
        c.call("train_step", {**feeds, "lr": np.float32(0.1), "step": np.float32(t)}, step=t)
    prof = c.profile("train_step")
    assert len(prof) == len(c.programs["train_step"].rows)
    assert all(sec > 0 for sec, _ in prof)
    assert any("matmul" in what for _, what in prof)


@pytest.mark.parametrize("name,reference", [
    ("exp32", np.exp), ("tanh32", np.tanh), ("sigmoid32", lambda x: 1 / (1 + np.exp(-x))),
    ("erf32", np.vectorize(__import__("math").erf))])
def test_vectorizable_float32_functions_are_accurate(name, reference):
    """The float32 functions that replace libm's in generated loops, over their whole range: within
    2e-7 relative of the float64 value (a few ulp), with infinities, overflow and NaN as NumPy's."""
    from numba import njit

    from runtime import kernels
    fn = getattr(kernels, name)

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    x = np.concatenate([np.linspace(-100, 100, 200001), np.linspace(-5, 5, 200001),
                        [0.0, 1e-30, -1e-30, 88.7, 88.8, -87.3, -104.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    got = np.empty_like(x)
    apply(x, got)
    with np.errstate(over="ignore"):
        want = reference(x.astype(np.float64))
    finite = np.isfinite(want) & (np.abs(want) < np.finfo(np.float32).max)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    over = ~finite & ~np.isnan(want)
    np.testing.assert_array_equal(got[over], np.where(want[over] > 0, np.inf, -np.inf))
    tiny = np.abs(want) < np.finfo(np.float32).tiny  # below float32's normal range: absolute
    rel = np.abs(got[finite] - want[finite]) / np.where(tiny[finite], 1.0, np.abs(want[finite]))
    assert rel.max() <= 2e-7, f"{name}: worst relative error {rel.max():.3g} at x = {x[finite][rel.argmax()]}"
    # exactly NumPy's float32 at the infinities, and where tanh saturates
    exact = np.isinf(x) | ((np.abs(x) >= 10) & (name == "tanh32"))
    np.testing.assert_array_equal(got[exact], want[exact].astype(np.float32))
    # and what they are for: LLVM inlines them into the loop (numba does not: that cost compile time at
    # every call site) and vectorizes it
    import re
    ir = apply.inspect_llvm(apply.signatures[0])
    assert not re.search(rf"call [^\n]*{name}", ir), f"{name} is still called"
    assert re.search(r"fmul[^\n]*<\d+ x float>", ir), f"the loop calling {name} is not vectorized"
