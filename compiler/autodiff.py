"""Reverse-mode automatic differentiation as a graph transformation.

`grad(g, loss, wrt)` appends to g the nodes that compute d loss / d w for every w in wrt, using one VJP
rule per primitive (each op's `vjp` in the registry, defined below). The gradient nodes are ordinary,
shape-checked graph nodes, so they are printed, interpreted and compiled like the forward pass. Only
nodes on a path from a differentiated node to the loss are visited; broadcasting is undone by summing
back to each operand's shape; a scan is differentiated by a reverse scan (backpropagation through time)."""
from __future__ import annotations

import math

import numpy as np

from .dims import Dim, product
from .graph import FLOATS, Graph, TType
from .ops import OPS, _per_axis, attach, window_geometry


class Emitter:
    """Adds shape-checked nodes to a graph on behalf of a VJP rule."""

    def __init__(self, g: Graph, span=None, name: str = "grad"):
        self.g, self.span, self.name = g, span, name

    def __call__(self, op: str, *ins: int, **attrs) -> int:
        spec = OPS[op]
        full = {k: d for k, (_, d) in spec.attrs.items() if d is not ...}
        full.update(attrs)
        t = spec.shape([self.g.type(i) for i in ins], full)
        return self.g.add(op, list(ins), full, t, self.span, f"{self.name}/{op}")

    def const(self, value, dtype: str) -> int:
        v = np.asarray(value, dtype={"f32": np.float32, "f64": np.float64}.get(dtype, np.float64))
        return self.g.add("constant", [], {"value": v, "dtype": dtype},
                          TType(tuple(Dim.const(d) for d in v.shape), dtype), self.span, f"{self.name}/const")

    def size(self, d: Dim, dtype: str) -> int:
        """A size as a number: a constant when known, read at run time when symbolic."""
        if d.is_const:
            return self.const(float(d.value), dtype)
        return self("dim_value", dim=d, dtype=dtype)

    def zeros(self, t: TType) -> int:
        return self("fill", shape=t.shape, value=0.0, dtype=t.dtype)

    def type(self, n: int) -> TType:
        return self.g.type(n)


def unbroadcast(e: Emitter, g: int, shape: tuple) -> int:
    """Sum a cotangent of a broadcast result back to an operand's shape."""
    gs = e.type(g).shape
    lead = len(gs) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == Dim.const(1) and gs[lead + i] != d]
    if not axes:
        return g
    s = e("sum", g, axis=axes, keepdims=True)
    if lead or e.type(s).shape != tuple(shape):
        s = e("reshape", s, shape=tuple(shape))
    return s


def relevant_nodes(g: Graph, loss: int, wrt) -> set:
    """Float nodes that depend on some w in wrt and that the loss depends on."""
    succ = {n: [] for n in g.nodes()}
    for n in g.nodes():
        for i in g.node(n)["inputs"]:
            succ[i].append(n)
    down, stack = set(), list(wrt)
    while stack:
        n = stack.pop()
        if n not in down:
            down.add(n)
            stack += succ[n]
    up, stack = set(), [loss]
    while stack:
        n = stack.pop()
        if n not in up:
            up.add(n)
            stack += g.node(n)["inputs"]
    return {n for n in down & up if _differentiable(g, n)}


def _differentiable(g, n):
    t = g.type(n)
    if isinstance(t, list):
        return True
    return t.dtype in FLOATS and g.node(n)["op"] != "stop_gradient"


def grad(g: Graph, loss: int, wrt: list[int], seed: int | None = None, truncate: int | None = None) -> dict[int, int]:
    """Append the gradient of `loss` (a scalar, or seeded by the cotangent node `seed`) with respect to
    each node in wrt; returns {w: its gradient node}. A w that the loss does not depend on gets zeros.

    truncate: truncated backpropagation through time. Every scan's steps are cut into chunks of this many
    steps (counted from the first position), and no gradient flows through the carry from one chunk into
    the one before it; within a chunk it is exact."""
    if seed is None:
        seed = Emitter(g, g.node(loss)["span"])("fill", shape=(), value=1.0, dtype=g.type(loss).dtype)
    return vjp_graph(g, [(loss, seed)], wrt, truncate)


def vjp_graph(g: Graph, seeds: list[tuple[int, int]], wrt: list[int], truncate: int | None = None) -> dict[int, int]:
    """Cotangents of the nodes in wrt, given cotangents (seeds) of some nodes of g, appended to g."""
    keep = set()
    for out, _ in seeds:
        keep |= relevant_nodes(g, out, wrt)
    cts: dict[int, list[int]] = {}
    for out, ct in seeds:
        cts.setdefault(out, []).append(ct)
    scan_cts: dict[int, dict[int, int]] = {}  # scan node -> {output index: cotangent}
    for n in sorted(keep, reverse=True):
        d = g.node(n)
        parts = cts.get(n)
        if d["op"] == "scan":
            outs = scan_cts.pop(n, {})
            if not outs:
                continue
            e = Emitter(g, d["span"], f"grad/{d['name']}")
            in_cts = _scan_vjp(e, n, outs, truncate)
        else:
            if not parts or n in wrt:
                continue
            cts.pop(n)
            e = Emitter(g, d["span"], f"grad/{d['name']}")
            ct = _sum(e, parts)
            if d["op"] == "tuple_get":
                scan_cts.setdefault(d["inputs"][0], {})[d["attrs"]["index"]] = ct
                continue
            if d["op"] in ("param", "state", "input", "capture", "constant"):
                continue
            rule = OPS[d["op"]].vjp
            if rule is None:
                raise NotImplementedError(f"no VJP rule for op `{d['op']}`")
            in_cts = rule(e, n, ct)
        for i, c in zip(d["inputs"], in_cts):
            if c is not None and i in keep:
                cts.setdefault(i, []).append(c)
    out = {}
    for w in wrt:
        parts = cts.get(w)
        e = Emitter(g, g.node(w)["span"], f"grad/{g.node(w)['name']}")
        out[w] = _sum(e, parts) if parts else e.zeros(g.type(w))
    return out


def copy_graph(b: Graph) -> Graph:
    """A copy of a scan body that can be extended without touching the original."""
    c = Graph(b.name, parent=b.parent)
    c.nx = b.nx.copy()
    c.inputs, c.outputs = list(b.inputs), list(b.outputs)
    c.captures, c.capture_list = dict(b.captures), list(b.capture_list)
    return c


def _scan_vjp(e: Emitter, n: int, out_cts: dict[int, int], truncate: int | None = None) -> list:
    """Backpropagation through time: a reverse scan over the steps, whose body recomputes one forward
    step from the carry saved before it and the matrix products saved with it (saving them costs a
    stacked copy; recomputing them would repeat the step's costliest work) and applies the body's VJP."""
    g = e.g
    d = g.node(n)
    a = d["attrs"]
    body: Graph = a["body"]
    ns, nc, ny = a["n_seqs"], a["n_carries"], a["n_yields"]
    ins = list(d["inputs"])
    seqs, inits = ins[:ns], ins[ns:ns + nc]
    lengths = ins[ns + nc] if a["has_lengths"] else None
    caps = ins[ns + nc + (1 if a["has_lengths"] else 0):]
    types = d["type"]  # yields stacked, then final carries
    ax = a["axis"]
    steps = g.type(seqs[0]).shape[ax]
    ctypes = [g.type(c) for c in inits]
    # 1. The backward body: inputs x_t, c_{t-1}, ct_y_t (sequences), ct_c, acc (carries); recompute; VJP.
    bb = copy_graph(body)
    x_in, c_in = bb.inputs[:ns], bb.inputs[ns:ns + nc]
    yt = [t for t in types[:ny]]
    ct_y_in = [bb.add("input", [], {"name": f"ct_y{j}", "role": "sequence"},
                      TType(t.shape[:ax] + t.shape[ax + 1:], t.dtype), d["span"], f"ct_y{j}") for j, t in enumerate(yt)]
    ct_c_in = [bb.add("input", [], {"name": f"ct_c{i}", "role": "carry"}, t, d["span"], f"ct_c{i}")
               for i, t in enumerate(ctypes)]
    cap_nodes = list(bb.captures.values())
    float_caps = [k for k, c in enumerate(cap_nodes) if g.type(caps[k]).dtype in FLOATS]
    be = Emitter(bb, d["span"], f"grad/{d['name']}")
    valid_in, mask = [], None
    if lengths is not None:
        # Steps past an example's length changed nothing forward: backward they pass the carry's cotangent
        # through and contribute nothing. The parameter accumulators have no batch axis, so instead of
        # `lengths` the reverse scan reads a per-step validity mask and zeroes those steps' seeds.
        valid_in = [bb.add("input", [], {"name": "valid", "role": "sequence"},
                           TType((g.type(lengths).shape[0],), "bool"), d["span"], "valid")]
        mask = valid_in[0]

    def masked(ct):
        if mask is None:
            return ct
        t = be.type(ct)
        m = be("reshape", mask, shape=(t.shape[0],) + (Dim.const(1),) * (t.rank - 1))
        return be("select", m, ct, be.const(0.0, t.dtype))

    cut_in = []
    if truncate:
        cut_in = [bb.add("input", [], {"name": "keep", "role": "sequence"}, TType((Dim.const(1),), "bool"),
                         d["span"], "keep")]
    outs = [x for _, x in body.outputs]
    seeds = [(outs[i], masked(ct_c_in[i])) for i in range(nc)] + [(outs[nc + j], masked(ct_y_in[j])) for j in range(ny)]
    float_x = [i for i in range(ns) if g.type(seqs[i]).dtype in FLOATS]
    wrt = [c_in[i] for i in range(nc)] + [cap_nodes[k] for k in float_caps] + [x_in[i] for i in float_x]
    gr = vjp_graph(bb, seeds, wrt, truncate)
    # A captured weight's cotangent that is one product x_t^T @ g_t per step, x_t a sequence's step or
    # the carry the step starts from (both stacked outside the loop), is not summed in the loop: the
    # reverse scan yields g_t, and one product over all steps follows it (the char LSTM's recurrent
    # weight: 50 products of 32 rows and a [128, 512] sum each step, against one of 1600 rows).
    hoisted = {k: src for k in float_caps if (src := _stacked_product(bb, gr[cap_nodes[k]], x_in, c_in)) and ax <= 1}
    summed = [k for k in float_caps if k not in hoisted]
    acc_in = [bb.add("input", [], {"name": f"acc{k}", "role": "carry"}, g.type(caps[k]), d["span"], f"acc{k}")
              for k in summed]
    new_acc = [be("add", acc_in[j], gr[cap_nodes[k]]) for j, k in enumerate(summed)]
    new_ct_c = [gr[c_in[i]] for i in range(nc)]
    if cut_in:  # at the first step of a chunk, nothing flows back into the chunk before
        keep = be("cast", cut_in[0], dtype=be.type(new_ct_c[0]).dtype) if new_ct_c else None
        new_ct_c = [be("mul", c, be("reshape", keep, shape=(Dim.const(1),) * be.type(c).rank)) for c in new_ct_c]
    if mask is not None:  # a skipped step hands the carry's cotangent on unchanged
        new_ct_c = [be("add", masked(c), be("sub", ct_c_in[i], masked(ct_c_in[i]))) for i, c in enumerate(new_ct_c)]
    bb.inputs = list(x_in) + list(c_in) + ct_y_in + valid_in + cut_in + ct_c_in + acc_in
    bb.outputs = ([(f"carry:ct_c{i}", new_ct_c[i]) for i in range(nc)] +
                  [(f"carry:acc{k}", v) for k, v in zip(summed, new_acc)] +
                  [(f"yield:ct_x{i}", gr[x_in[i]]) for i in float_x] +
                  [(f"yield:ct_rows{k}", hoisted[k][1]) for k in hoisted])
    # 2. The forward scan again, yielding also the carry each step starts from and the products (matmul
    # results) the backward body reads: those it then takes as sequences instead of recomputing them.
    residuals = [m for m in sorted(bb.ancestors([x for _, x in bb.outputs]))
                 if m < len(body) and bb.node(m)["op"] == "matmul"]
    fwd = copy_graph(body)
    carry_inputs = fwd.inputs[ns:ns + nc]
    fwd.outputs = (fwd.outputs + [(f"yield_carry{i}", c) for i, c in enumerate(carry_inputs)]
                   + [(f"yield_product{k}", m) for k, m in enumerate(residuals)])
    stacked = [TType(t.shape[:ax] + (steps,) + t.shape[ax:], t.dtype) for t in ctypes + [bb.type(m) for m in residuals]]
    fwd_types = types[:ny] + stacked + types[ny:]
    n_saved = nc + len(residuals)
    # `saves`: the forward's yields come first, then these (passes.share_saved_scans then runs only this)
    s2 = g.add("scan", ins, dict(a, body=fwd, n_yields=ny + n_saved, saves=n_saved), fwd_types, d["span"],
               f"{d['name']}.saved")
    saved = [g.add("tuple_get", [s2], {"index": ny + i}, stacked[i], d["span"], f"{d['name']}.saved.{i}")
             for i in range(n_saved)]
    for k, m in enumerate(residuals):  # the backward body's product becomes the saved one
        for src in list(bb.node(m)["inputs"]):
            bb.nx.remove_edge(src, m)
        bb.nx.nodes[m].update(op="input", inputs=(), attrs={"name": f"product{k}", "role": "sequence"})
    bb.inputs = list(x_in) + list(c_in) + residuals + bb.inputs[ns + nc:]
    # 3. The reverse scan.
    ct_ys = [out_cts.get(j) or e.zeros(types[j]) for j in range(ny)]
    ct_final = [out_cts.get(ny + i) or e.zeros(types[ny + i]) for i in range(nc)]
    zeros_acc = [e.zeros(g.type(caps[k])) for k in summed]
    valid = []
    if lengths is not None:
        if ax > 1:
            raise NotImplementedError("gradient of a scan with lengths along an axis past 1")
        lt = g.type(lengths)
        shape = (steps, lt.shape[0]) if ax == 0 else (lt.shape[0], steps)
        pos = e("iota", shape=shape, axis=ax, dtype=lt.dtype)
        lens = e("reshape", lengths, shape=(Dim.const(1), lt.shape[0]) if ax == 0 else (lt.shape[0], Dim.const(1)))
        valid = [e("lt", pos, lens)]
    keep = []
    if truncate:
        # keep[t] is false at the first position of each chunk: position t with t % truncate == 0, t > 0.
        shape = (steps, Dim.const(1)) if ax == 0 else (Dim.const(1), steps)
        pos = e("iota", shape=shape, axis=ax, dtype="i64")
        k = e.g.add("constant", [], {"value": np.asarray(truncate, np.int64), "dtype": "i64"}, TType((), "i64"),
                    e.span, f"{e.name}/const")
        boundary = e("eq", e("mul", e("cast", e("floor", e("div", e("cast", pos, dtype="f64"),
                                                           e.const(float(truncate), "f64"))), dtype="i64"), k), pos)
        keep = [e("not", e("and", boundary, e("gt", pos, _int_const(e, 0))))]
        if ax > 1:
            raise NotImplementedError("truncated BPTT along an axis past 1")
    # Forward went one way over the valid steps; backward goes the other way over every step, the mask
    # making the padding steps pass-throughs (so no `lengths` here).
    b_ins = seqs + saved + ct_ys + valid + keep + ct_final + zeros_acc + bb.capture_list
    rows_types = [_stacked(bb.type(hoisted[k][1]), ax, steps) for k in hoisted]
    b_types = ([g.type(seqs[i]) for i in float_x] + rows_types + ctypes + [g.type(caps[k]) for k in summed])
    back = g.add("scan", b_ins, {"body": bb, "axis": ax, "reverse": not a["reverse"], "key": a.get("key", n),
                                 "n_seqs": ns + n_saved + ny + len(valid) + len(keep),
                                 "n_carries": nc + len(summed), "n_yields": len(float_x) + len(hoisted),
                                 "has_lengths": False}, b_types, d["span"], f"grad/{d['name']}")
    res = [g.add("tuple_get", [back], {"index": i}, t, d["span"], f"grad/{d['name']}.{i}") for i, t in enumerate(b_types)]
    nx_, nh = len(float_x), len(hoisted)
    ct_x = dict(zip(float_x, res[:nx_]))
    ct_init = res[nx_ + nh:nx_ + nh + nc]
    ct_caps = dict(zip(summed, res[nx_ + nh + nc:]))
    for (k, (src, _)), rows in zip(hoisted.items(), res[nx_:nx_ + nh]):
        kind, i = src
        xs = seqs[i] if kind == "sequence" else saved[i]  # saved[i]: the carry each step started from
        ct_caps[k] = _product_over_steps(e, xs, rows)
    return ([ct_x.get(i) for i in range(ns)] + ct_init + ([None] if lengths is not None else []) +
            [ct_caps.get(k) for k in range(len(caps))])


def _stacked(t: TType, ax: int, steps) -> TType:
    return TType(t.shape[:ax] + (steps,) + t.shape[ax:], t.dtype)


def _stacked_product(bb: Graph, ct: int, x_in: list, c_in: list):
    """((kind, index), g) when the cotangent ct is matmul(transpose(x), g) of 2-d values, x the body's
    sequence input `index` (kind "sequence") or its carry input (kind "carry"), else None."""
    d = bb.node(ct)
    if d["op"] != "matmul":
        return None
    lhs, rows = d["inputs"]
    t = bb.node(lhs)
    if t["op"] != "transpose" or t["attrs"].get("perm") not in (None, [1, 0], (1, 0)):
        return None
    x = t["inputs"][0]
    if bb.type(x).rank != 2 or bb.type(rows).rank != 2:
        return None
    if x in x_in:
        return ("sequence", x_in.index(x)), rows
    if x in c_in:
        return ("carry", c_in.index(x)), rows
    return None


def _product_over_steps(e: Emitter, xs: int, gs: int) -> int:
    """sum over steps t of x_t^T @ g_t, from x and g stacked along one of their first two axes: one
    product of their rows."""
    tx, tg = e.type(xs), e.type(gs)
    rows = product(tx.shape[:-1])
    flat_x = e("reshape", xs, shape=(rows, tx.shape[-1]))
    flat_g = e("reshape", gs, shape=(rows, tg.shape[-1]))
    return e("matmul", e("transpose", flat_x), flat_g)


def _sum(e: Emitter, parts: list[int]) -> int:
    total = parts[0]
    for p in parts[1:]:
        total = e("add", total, p)
    return total


# ---- the VJP rules: one per primitive, attached to its registry entry
def vjp(*names):
    return attach("vjp", *names)


def _ins(e, n):
    return e.g.node(n)["inputs"]


def _attrs(e, n):
    return e.g.node(n)["attrs"]


def _bin(e, n, ga, gb):
    a, b = _ins(e, n)
    return [unbroadcast(e, ga, e.type(a).shape) if ga is not None else None,
            unbroadcast(e, gb, e.type(b).shape) if gb is not None else None]


@vjp("add")
def _(e, n, g):
    return _bin(e, n, g, g)


@vjp("sub")
def _(e, n, g):
    return _bin(e, n, g, e("neg", g))


@vjp("mul")
def _(e, n, g):
    a, b = _ins(e, n)
    return _bin(e, n, e("mul", g, b), e("mul", g, a))


@vjp("div")
def _(e, n, g):
    a, b = _ins(e, n)
    ga = e("div", g, b)
    return _bin(e, n, ga, e("neg", e("mul", ga, n)))  # -g a / b^2 = -(g / b) * (a / b)


@vjp("pow")
def _(e, n, g):
    a, b = _ins(e, n)
    one = e.const(1.0, e.type(a).dtype)
    ga = e("mul", g, e("mul", b, e("pow", a, e("sub", b, one))))
    gb = e("mul", g, e("mul", n, e("log", a)))
    return _bin(e, n, ga, gb)


@vjp("maximum", "minimum")
def _(e, n, g):
    a, b = _ins(e, n)
    pick_a = e("ge" if e.g.node(n)["op"] == "maximum" else "le", a, b)  # ties go to the first operand
    zero = e.const(0.0, e.type(g).dtype)
    return _bin(e, n, e("select", pick_a, g, zero), e("select", pick_a, zero, g))


@vjp("select")
def _(e, n, g):
    c, a, b = _ins(e, n)
    zero = e.const(0.0, e.type(g).dtype)
    return [None, unbroadcast(e, e("select", c, g, zero), e.type(a).shape),
            unbroadcast(e, e("select", c, zero, g), e.type(b).shape)]


def _unary(fn):
    def rule(e, n, g):
        (a,) = _ins(e, n)
        return [fn(e, a, n, g)]
    return rule


def _c(e, v, like):
    return e.const(v, e.type(like).dtype)


vjp("neg")(_unary(lambda e, a, y, g: e("neg", g)))
vjp("exp")(_unary(lambda e, a, y, g: e("mul", g, y)))
vjp("log")(_unary(lambda e, a, y, g: e("div", g, a)))
vjp("log1p")(_unary(lambda e, a, y, g: e("div", g, e("add", a, _c(e, 1.0, a)))))
vjp("sqrt")(_unary(lambda e, a, y, g: e("div", g, e("mul", y, _c(e, 2.0, a)))))
vjp("tanh")(_unary(lambda e, a, y, g: e("mul", g, e("sub", _c(e, 1.0, a), e("mul", y, y)))))
vjp("sigmoid")(_unary(lambda e, a, y, g: e("mul", g, e("mul", y, e("sub", _c(e, 1.0, a), y)))))
vjp("atan")(_unary(lambda e, a, y, g: e("div", g, e("add", _c(e, 1.0, a), e("mul", a, a)))))
vjp("sin")(_unary(lambda e, a, y, g: e("mul", g, e("cos", a))))
vjp("cos")(_unary(lambda e, a, y, g: e("neg", e("mul", g, e("sin", a)))))
vjp("erf")(_unary(lambda e, a, y, g: e("mul", g, e("mul", _c(e, 2 / math.sqrt(math.pi), a),
                                                    e("exp", e("neg", e("mul", a, a)))))))
vjp("abs")(_unary(lambda e, a, y, g: e("mul", g, e("sign", a))))
vjp("stop_gradient", "sign", "floor")(lambda e, n, g: [None])


@vjp("cast")
def _(e, n, g):
    (a,) = _ins(e, n)
    return [e("cast", g, dtype=e.type(a).dtype)]


def _keep_shape(e, x_type, attrs):
    axis = attrs.get("axis")
    rank = x_type.rank
    axes = range(rank) if axis is None else ([axis] if isinstance(axis, int) else axis)
    axes = {a % rank for a in axes} if rank else set()
    return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(x_type.shape)), axes


@vjp("sum", "mean")
def _(e, n, g):
    (a,) = _ins(e, n)
    t = e.type(a)
    kshape, axes = _keep_shape(e, t, _attrs(e, n))
    g = e("reshape", g, shape=kshape)
    if e.g.node(n)["op"] == "mean":
        count = Dim.const(1)
        for i in axes:
            count = count * t.shape[i]
        g = e("div", g, e.size(count, t.dtype))
    return [e("broadcast_to", g, shape=t.shape)]


@vjp("max", "min")
def _(e, n, g):
    (a,) = _ins(e, n)
    t = e.type(a)
    kshape, _ = _keep_shape(e, t, _attrs(e, n))
    hit = e("cast", e("eq", a, e("reshape", n, shape=kshape)), dtype=t.dtype)
    count = e("sum", hit, axis=_attrs(e, n)["axis"], keepdims=True)  # ties share the cotangent
    return [e("mul", hit, e("div", e("reshape", g, shape=kshape), count))]


@vjp("matmul")
def _(e, n, g):
    a, b = _ins(e, n)
    ta, tb = e.type(a), e.type(b)
    if e.g.node(a)["op"] == "one_hot" and tb.rank == 2 and ta.rank >= 2:
        # one_hot(i) @ W reads W's rows at i (passes.gather_one_hots): W's cotangent adds g's rows there,
        # not a product with K times the work; the one-hot, of integers, has none
        return [None, e("scatter_add", e.zeros(tb), e.g.node(a)["inputs"][0], g, axis=0, outside="zero")]
    # Lift vectors to matrices, as numpy does, and their cotangents back.
    a2 = a if ta.rank > 1 else e("reshape", a, shape=(Dim.const(1),) + ta.shape)
    b2 = b if tb.rank > 1 else e("reshape", b, shape=tb.shape + (Dim.const(1),))
    g2 = g
    if ta.rank == 1 or tb.rank == 1:
        g2 = e("reshape", g, shape=OPS["matmul"].shape([e.type(a2), e.type(b2)], {}).shape)
    ga = e("matmul", g2, e("transpose", b2))
    ga = unbroadcast(e, ga, e.type(a2).shape)
    sa = e.type(a2).shape
    if e.type(b2).rank == 2 and len(sa) > 2:
        # x [..., K] @ W [K, N]: W's cotangent is one product over all leading axes, not a batched
        # product summed afterwards
        rows = product(sa[:-1])
        flat_a = e("reshape", a2, shape=(rows, sa[-1]))
        flat_g = e("reshape", g2, shape=(rows, e.type(g2).shape[-1]))
        gb = e("matmul", e("transpose", flat_a), flat_g)
    else:
        gb = unbroadcast(e, e("matmul", e("transpose", a2), g2), e.type(b2).shape)
    if ta.rank == 1:
        ga = e("reshape", ga, shape=ta.shape)
    if tb.rank == 1:
        gb = e("reshape", gb, shape=tb.shape)
    return [ga, gb]


@vjp("conv")
def _(e, n, g):
    x, w = _ins(e, n)
    a = _attrs(e, n)
    tx, tw = e.type(x), e.type(w)
    ns = tx.rank - 2
    stride, pad, dil = window_geometry(None, a, ns)
    groups = a["groups"]
    gshape = e.type(g).shape
    # dx: the transposed convolution of g with the same filter, padded out to x's size.
    opad = []
    for i in range(ns):
        full = (gshape[2 + i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (tw.shape[2 + i] - 1) + 1
        opad.append(int((tx.shape[2 + i] - full).value) if (tx.shape[2 + i] - full).is_const else 0)
    gx = e("conv_transpose", g, w, stride=stride, pad=pad, output_pad=opad, dilation=dil, groups=groups)
    if e.type(gx).shape != tx.shape:  # a symbolic size the output padding could not settle
        raise NotImplementedError("conv gradient needs concrete spatial sizes")
    # dw: correlate x with g, batch as the contracted axis: channels become the batch, stride <-> dilation.
    Cg, Kg = tx.shape[1] // groups if groups > 1 else tx.shape[1], gshape[1] // groups if groups > 1 else gshape[1]
    parts = []
    for gi in range(groups):
        xs = x if groups == 1 else e("slice", x, axis=1, start=Cg * gi, stop=Cg * (gi + 1))
        gs = g if groups == 1 else e("slice", g, axis=1, start=Kg * gi, stop=Kg * (gi + 1))
        parts.append(_correlate(e, gs, xs, stride, pad, dil, tw.shape[2:]))  # [K, C, *k]
    gw = parts[0] if groups == 1 else e("concat", *parts, axis=0)
    return [gx, gw]


@vjp("conv_transpose")
def _(e, n, g):
    x, w = _ins(e, n)
    a = _attrs(e, n)
    tx, tw = e.type(x), e.type(w)
    if a.get("groups", 1) != 1:
        raise NotImplementedError("gradient of a grouped conv_transpose")
    ns = tx.rank - 2
    stride, pad, dil = window_geometry(None, a, ns)
    gx = e("conv", g, w, stride=stride, pad=pad, dilation=dil, round="floor")  # w [C, K, *k] as conv's [out, in]
    if e.type(gx).shape != tx.shape:
        gx = _crop_to(e, gx, tx.shape)
    return [gx, _correlate(e, x, g, stride, pad, dil, tw.shape[2:])]  # [C, K, *k]


def _correlate(e, a, b, stride, pad, dil, kshape):
    """sum over the batch and positions of b[n, o, i*s + j*d - p] * a[n, c, i]: a filter's gradient, as a
    convolution with the batch as the contracted axis (channels become the batch; stride and dilation
    swap). Returns [C_a, C_b, *kshape]: the filter laid out [out, in] when a is the output's cotangent."""
    rank = e.type(a).rank
    perm = [1, 0] + list(range(2, rank))
    bt = e("transpose", b, perm=perm)  # [C_b, N, *S]
    at = e("transpose", a, perm=perm)  # [C_a, N, *O]
    corr = e("conv", bt, at, stride=dil, pad=pad, dilation=stride, round="floor")  # [C_b, C_a, *k']
    corr = _crop_to(e, corr, e.type(corr).shape[:2] + tuple(kshape))
    return e("transpose", corr, perm=perm)


def _crop_to(e, v, shape):
    for i, d in enumerate(shape):
        if e.type(v).shape[i] != d:
            v = e("slice", v, axis=i, start=0, stop=d)
    return v


@vjp("avg_pool")
def _(e, n, g):
    (x,) = _ins(e, n)
    a = _attrs(e, n)
    tx = e.type(x)
    ns = tx.rank - 2
    k = _per_axis(a["k"], ns, "k")
    stride, pad, _ = window_geometry(k, dict(a, dilation=1), ns)
    C = tx.shape[1]
    if not C.is_const or not all(d.is_const for d in tx.shape[2:]):
        raise NotImplementedError("avg_pool gradient needs known channel and spatial sizes")
    C = int(C.value)
    S = [int(d.value) for d in tx.shape[2:]]
    O = [int(d.value) for d in e.type(g).shape[2:]]
    one = (Dim.const(1), Dim.const(1))
    # Each window divides by its element count inside the padded input (forward semantics): recount them
    # by convolving a padded mask of ones with a box of ones.
    mask = e("pad", e("fill", shape=one + tx.shape[2:], value=1.0, dtype=tx.dtype),
             pads=[(0, 0), (0, 0)] + [(p, p) for p in pad], value=1.0)
    box = e.const(np.ones((1, 1) + tuple(k)), tx.dtype)
    count = e("conv", mask, box, stride=stride, round=a["round"])
    spread = e("div", g, count)
    # Then hand each window's share to every element of it: a depthwise transposed convolution.
    full = [(O[i] - 1) * stride[i] + k[i] for i in range(ns)]
    opad = [max(0, S[i] + 2 * pad[i] - full[i]) for i in range(ns)]
    gp = e("conv_transpose", spread, e.const(np.ones((C, 1) + tuple(k)), tx.dtype), stride=stride,
           output_pad=opad, groups=C)
    for i in range(ns):
        gp = e("slice", gp, axis=2 + i, start=pad[i], stop=pad[i] + S[i])
    return [gp]


@vjp("max_pool")
def _(e, n, g):
    (x,) = _ins(e, n)
    a = _attrs(e, n)
    return [e("max_pool_grad", x, n, g, k=a["k"], stride=a["stride"], pad=a["pad"], round=a["round"])]


@vjp("reshape")
def _(e, n, g):
    (x,) = _ins(e, n)
    return [e("reshape", g, shape=e.type(x).shape)]


@vjp("transpose")
def _(e, n, g):
    perm = _attrs(e, n)["perm"]
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return [e("transpose", g, perm=inv)]


@vjp("broadcast_to")
def _(e, n, g):
    (x,) = _ins(e, n)
    return [unbroadcast(e, g, e.type(x).shape)]


@vjp("slice")
def _(e, n, g):
    (x,) = _ins(e, n)
    a = _attrs(e, n)
    tx = e.type(x)
    ax = a["axis"]
    start, stop, step = Dim.of(a["start"]), a["stop"], a["step"]
    if step == 1:
        after = tx.shape[ax] - Dim.of(stop)
        if start.is_const and after.is_const:
            pads = [(0, 0)] * ax + [(int(start.value), int(after.value))]
            return [e("pad", g, pads=pads)]
    count = e.type(g).shape[ax]
    idx = e("iota", shape=(count,), axis=0, dtype="i64")
    pos = e("add", e("mul", idx, _int_const(e, step)), _int_size(e, start))
    return [e("scatter_add", e.zeros(tx), pos, g, axis=ax)]


def _int_const(e, v):
    return e.g.add("constant", [], {"value": np.asarray(v, dtype=np.int64), "dtype": "i64"}, TType((), "i64"),
                   e.span, f"{e.name}/const")


def _int_size(e, d: Dim):
    if d.is_const:
        return _int_const(e, int(d.value))
    return e("dim_value", dim=d, dtype="i64")


@vjp("concat")
def _(e, n, g):
    ins = _ins(e, n)
    ax = _attrs(e, n)["axis"]
    out, start = [], Dim.const(0)
    for i in ins:
        size = e.type(i).shape[ax]
        out.append(e("slice", g, axis=ax, start=start, stop=start + size))
        start = start + size
    return out


@vjp("pad")
def _(e, n, g):
    (x,) = _ins(e, n)
    v = g
    for ax, (lo, hi) in enumerate(_attrs(e, n)["pads"]):
        if lo or hi:
            v = e("slice", v, axis=ax, start=lo, stop=e.type(x).shape[ax] + lo)
    return [v]


@vjp("gather")
def _(e, n, g):
    table, idx = _ins(e, n)
    a = _attrs(e, n)
    return [e("scatter_add", e.zeros(e.type(table)), idx, g, axis=a["axis"], outside=a["outside"]), None]


@vjp("scatter_add")
def _(e, n, g):
    base, idx, upd = _ins(e, n)
    a = _attrs(e, n)
    return [g, None, e("gather", g, idx, axis=a["axis"], outside=a["outside"])]


