"""Graph passes, each a function from a graph to a new graph that computes the same outputs:

    fold_constants  ops whose operands are all constants become constants (evaluated by the op's own impl)
    simplify        movement ops that leave their operand unchanged (a slice of a whole axis, a reshape or
                    broadcast to its own shape, a cast to its own dtype, an identity transpose) are dropped
    cse             nodes with the same op, attributes and operands are merged (random ops never are)
    push_slices     slices of a sum become sums of slices, so the sum is not stored
    join_pads       a sum of zero paddings side by side along one axis becomes a concatenation
    share_saved_scans  a forward scan that backpropagation reruns to save its carries runs once
    dce             nodes that no output, state update or train setting needs are dropped
    optimize        all seven in that order

The input graph is left unchanged; `Graph.pretty()` prints any of the results. Every pass keeps the
graph's interface (inputs, parameters, outputs, state updates) and each random op's key, so a graph
draws the same random numbers before and after."""
from __future__ import annotations

import numpy as np

from .dims import Dim
from .graph import Graph, TType
from .ops import OPS

_LEAVES = ("input", "param", "state", "capture")
_IMPURE = ("rand_uniform", "rand_normal", "dim_value")  # random, or sized at run time
_FOLD_SOURCES = 1 << 16  # elements: fill and iota of a fixed shape up to this size become constants


def _rebuild(g: Graph, order: list[int], alias: dict[int, int], replace: dict[int, dict] | None = None,
             body_pass=None, rewrite=None) -> Graph:
    """A new graph of the nodes in `order`, operands redirected through alias, ids renumbered.
    body_pass maps each scan body to a new one; rewrite(out, d, inputs) may add nodes to the new graph
    for node d (operands already renumbered) and return the one that stands for it, or None."""
    from .autodiff import copy_graph
    out = Graph(g.name, parent=g.parent)
    new: dict[int, int] = {}

    def m(n):
        while n in alias:
            n = alias[n]
        return new[n]

    for n in order:
        d = dict(g.node(n))
        if replace and n in replace:
            d.update(replace[n])
        attrs = d["attrs"]
        if d["op"] == "scan":  # the body's record of outer captures follows the renumbering
            body = copy_graph(attrs["body"] if body_pass is None else body_pass(attrs["body"]))
            body.capture_list = [m(c) for c in attrs["body"].capture_list]
            attrs = dict(attrs, body=body)
        ins = [m(i) for i in d["inputs"]]
        got = rewrite(out, d, ins) if rewrite is not None else None
        new[n] = got if got is not None else out.add(d["op"], ins, attrs, d["type"], d["span"], d["name"])
    out.inputs = [m(n) for n in g.inputs]
    out.optional_inputs = list(g.optional_inputs)
    out.outputs = [(k, m(n)) for k, n in g.outputs]
    out.params = {k: m(n) for k, n in g.params.items()}
    out.state_updates = [(k, m(n)) for k, n in g.state_updates]
    out.dims, out.consts, out.root = dict(g.dims), dict(g.consts), g.root
    if hasattr(g, "captures"):
        out.captures = {o: m(c) for o, c in g.captures.items()}
        out.capture_list = list(g.capture_list)
    if g.train is not None:
        out.train = {"targets": {k: m(n) for k, n in g.train["targets"].items()}, "phases": g.train["phases"],
                     "settings": {k: (m(v) if k == "loss" else v) for k, v in g.train["settings"].items()}}
    return out


def dce(g: Graph) -> Graph:
    roots = [n for _, n in g.outputs] + [n for _, n in g.state_updates]
    if g.train is not None and "loss" in g.train["settings"]:
        roots.append(g.train["settings"]["loss"])
    live = g.ancestors(roots)
    keep = [n for n in g.nodes() if n in live or g.node(n)["op"] in _LEAVES]  # the interface stays
    return g if len(keep) == len(g) else _rebuild(g, keep, {})


def _attr_key(v):
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, Graph):
        return ("graph", id(v))
    if isinstance(v, dict):
        return tuple(sorted((k, _attr_key(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_attr_key(x) for x in v)
    return v


def cse(g: Graph) -> Graph:
    alias: dict[int, int] = {}
    seen: dict = {}
    order = []
    for n in g.nodes():
        d = g.node(n)
        if d["op"] not in _LEAVES and d["op"] not in ("rand_uniform", "rand_normal"):
            ins = []
            for i in d["inputs"]:
                while i in alias:
                    i = alias[i]
                ins.append(i)
            key = (d["op"], tuple(ins), _attr_key(d["attrs"]))
            if key in seen:
                alias[n] = seen[key]
                continue
            seen[key] = n
        order.append(n)
    return _rebuild(g, order, alias) if alias else g


def _is_identity(g: Graph, d: dict) -> bool:
    op, a = d["op"], d["attrs"]
    if op not in ("slice", "transpose", "reshape", "broadcast_to", "cast") or g.type(d["inputs"][0]) != d["type"]:
        return False
    if op == "slice":  # the same length along the axis from 0 in steps of 1: all of it
        return Dim.of(a.get("start") or 0) == Dim.const(0) and a.get("step", 1) == 1
    if op == "transpose":
        return a.get("perm") is not None and list(a["perm"]) == list(range(len(a["perm"])))
    return True


def simplify(g: Graph) -> Graph:
    """Drops the movement ops that leave their operand as it is; their users read the operand. Autodiff
    crops a transposed convolution to the input's size whether or not it is larger (avg_pool's gradient),
    and such a slice would split the fused loop that reads it into a loop per row."""
    alias = {n: g.node(n)["inputs"][0] for n in g.nodes() if _is_identity(g, g.node(n))}
    if not alias:
        return g
    return _rebuild(g, [n for n in g.nodes() if n not in alias], alias)


def _anywhere(g: Graph, found) -> bool:
    """Whether found(g, node) holds for a node of g or of a scan body in it (the passes that rewrite
    bodies too skip rebuilding a graph they would not change: a rebuild costs 10-50 ms on a large model)."""
    for n in g.nodes():
        d = g.node(n)
        if found(g, n) or (d["op"] == "scan" and _anywhere(d["attrs"]["body"], found)):
            return True
    return False


def _zero_pad(g: Graph, v: int):
    """(parts, axis, before, after) when v is zero padding along one axis around parts side by side (the
    operands of a concat, or one tensor); else None."""
    d = g.node(v)
    if d["op"] != "pad" or d["attrs"].get("value", 0.0) != 0.0:
        return None
    padded = [(ax, lo, hi) for ax, (lo, hi) in enumerate(d["attrs"]["pads"]) if lo or hi]
    if len(padded) != 1:
        return None
    ax, lo, hi = padded[0]
    src = g.node(d["inputs"][0])
    parts = list(src["inputs"]) if src["op"] == "concat" and src["attrs"]["axis"] == ax else [d["inputs"][0]]
    return parts, ax, lo, hi


def _join_adjacent_pads(out: Graph, d: dict, ins: list):
    if d["op"] != "add" or any(out.type(i) != d["type"] for i in ins):
        return None
    x, y = (_zero_pad(out, i) for i in ins)
    if x is None or y is None or x[1] != y[1]:
        return None
    ax = x[1]
    size = d["type"].shape[ax]
    if size - Dim.const(y[3]) == Dim.const(x[2]):  # y's part sits just before x's
        x, y = y, x
    if size - Dim.const(x[3]) != Dim.const(y[2]):
        return None
    parts, lo, hi = x[0] + y[0], x[2], y[3]
    shape = list(d["type"].shape)
    shape[ax] = sum((out.type(p).shape[ax] for p in parts), Dim.const(0))
    joined = out.add("concat", parts, {"axis": ax}, TType(tuple(shape), d["type"].dtype), d["span"], d["name"])
    if not lo and not hi:
        return joined
    pads = [(0, 0)] * ax + [(lo, hi)]
    return out.add("pad", [joined], {"pads": pads, "value": 0.0}, d["type"], d["span"], d["name"])


def join_pads(g: Graph) -> Graph:
    """A sum of zero-padded tensors that sit side by side along one axis is their concatenation. The
    gradient of a split (one slice per gate of an LSTM) is such a sum, which would otherwise run as one
    loop that reads every pad with a bounds test per element."""
    def candidate(g, n):
        d = g.node(n)
        return d["op"] == "add" and all(g.node(i)["op"] == "pad" for i in d["inputs"])
    if not _anywhere(g, candidate):
        return g
    return _rebuild(g, list(g.nodes()), {}, body_pass=join_pads, rewrite=_join_adjacent_pads)


def push_slices(g: Graph) -> Graph:
    """A slice of a sum (or difference, product, quotient) of two same-shaped tensors, whose every use is a
    slice, is the sum of their slices: an LSTM's gates split x_t + h @ Wh, and pushing the split to the
    operands lets the gate loop read both directly instead of a stored sum."""
    def rewrite(out: Graph, d: dict, ins: list):
        if d["op"] != "slice":
            return None
        src = d["inputs"][0]
        if g.node(src)["op"] not in ("add", "sub", "mul", "div"):
            return None
        if any(g.node(u)["op"] != "slice" for u in g.nx.successors(src)):
            return None
        a, b = out.node(ins[0])["inputs"]
        if out.type(a) != out.type(ins[0]) or out.type(b) != out.type(ins[0]):
            return None
        parts = [out.add("slice", [v], d["attrs"], d["type"], d["span"], d["name"]) for v in (a, b)]
        op = out.node(ins[0])
        return out.add(op["op"], parts, op["attrs"], d["type"], op["span"], op["name"])

    def candidate(g, n):
        d = g.node(n)
        return d["op"] == "slice" and g.node(d["inputs"][0])["op"] in ("add", "sub", "mul", "div")
    if not _anywhere(g, candidate):
        return g
    return _rebuild(g, list(g.nodes()), {}, body_pass=push_slices, rewrite=rewrite)


def gather_one_hots(g: Graph) -> Graph:
    """A product of a one-hot encoding and a matrix picks the matrix's rows: one_hot(i) @ W is gather(W, i),
    with a row of zeros where i is outside, as one_hot gives. A character model's input projection is a
    copy of rows instead of a product with vocabulary-size times the work (the char LSTM's: 0.65 ->
    0.1 ms); autodiff gives its weight's gradient as the matching scatter_add. Equal for a finite W: the
    product would also multiply the other rows' inf or nan by zero, making nan everywhere."""
    def rewrite(out: Graph, d: dict, ins: list):
        if d["op"] != "matmul" or out.node(ins[0])["op"] != "one_hot" or out.type(ins[1]).rank != 2:
            return None
        (idx,) = out.node(ins[0])["inputs"]
        w = out.type(ins[1])
        if out.type(ins[0]).rank < 2 or out.type(idx).shape + w.shape[1:] != d["type"].shape:
            return None
        return out.add("gather", [ins[1], idx], {"axis": 0, "outside": "zero"}, d["type"], d["span"], d["name"])

    def candidate(g, n):
        d = g.node(n)
        return d["op"] == "matmul" and g.node(d["inputs"][0])["op"] == "one_hot"
    if not _anywhere(g, candidate):
        return g
    return _rebuild(g, list(g.nodes()), {}, body_pass=gather_one_hots, rewrite=rewrite)


def share_saved_scans(g: Graph) -> Graph:
    """Backpropagation through time reruns each scan to save the carry every step starts from (autodiff's
    `.saved` scan, which yields the forward's outputs first). The forward scan is then redundant: its
    users read the saved scan, which takes its place, and the sequence runs forward once per step."""
    forward = {}
    for n in g.nodes():
        d = g.node(n)
        if d["op"] == "scan" and not d["attrs"].get("saves"):
            forward[(d["attrs"]["key"], tuple(d["inputs"]))] = n
    alias: dict[int, int] = {}
    replace: dict[int, dict] = {}
    for n in g.nodes():
        d = g.node(n)
        a = d["attrs"]
        if d["op"] != "scan" or not a.get("saves"):
            continue
        orig = forward.get((a["key"], tuple(d["inputs"])))
        if orig is None or g.node(orig)["attrs"]["n_yields"] + a["saves"] != a["n_yields"]:
            continue
        ny = g.node(orig)["attrs"]["n_yields"]
        replace[orig] = {"attrs": a, "type": d["type"], "name": d["name"]}
        alias[n] = orig
        for u in g.nx.successors(orig):  # final carries come after the saved ones now
            ua = g.node(u)["attrs"]
            if ua["index"] >= ny:
                replace[u] = {"attrs": dict(ua, index=ua["index"] + a["saves"])}
    if not alias:
        return g
    return _rebuild(g, [n for n in g.nodes() if n not in alias], alias, replace)


def fold_constants(g: Graph, float_dtype=None) -> Graph:
    from runtime.interpreter import Ctx
    values: dict[int, np.ndarray] = {}
    replace: dict[int, dict] = {}
    sources: list[int] = []
    # float_dtype=float64 folds as a run with every float promoted does (the gradient checks); the default
    # folds in the declared dtypes, as a float32 run computes
    ctx = Ctx({}, float_dtype=float_dtype)
    for n in g.nodes():
        d = g.node(n)
        if d["op"] == "constant":
            values[n] = np.asarray(d["attrs"]["value"], dtype=ctx.dtype(d["attrs"]["dtype"]))
            continue
        if (d["op"] in _LEAVES or d["op"] in ("scan", "tuple_get") or not isinstance(d["type"], TType)
                or not all(x.is_const for x in d["type"].shape)):  # e.g. broadcast_to a run-time size
            continue
        if d["op"] in ("fill", "iota"):  # of a fixed shape, a constant that others may fold with (avg_pool's
            # gradient counts windows by convolving ones); large ones stay loops rather than arrays in memory
            if np.prod([int(x.value) for x in d["type"].shape]) > _FOLD_SOURCES:
                continue
            sources.append(n)
        elif d["op"] in _IMPURE or not d["inputs"] or not all(i in values for i in d["inputs"]):
            continue
        ctx.op, ctx.node, ctx.key = d["op"], n, n
        ctx.out_shape = tuple(int(x.value) for x in d["type"].shape)
        v = np.asarray(OPS[d["op"]].impl([values[i] for i in d["inputs"]], d["attrs"], ctx))
        values[n] = v
        replace[n] = {"op": "constant", "inputs": (), "attrs": {"value": v, "dtype": d["type"].dtype}}
    for n in sources:  # a fill that nothing folded with stays a loop: a constant would only cost storage
        if not any(u in replace for u in g.nx.successors(n)):
            del replace[n]
    if not replace:
        return g
    return _rebuild(g, list(g.nodes()), {}, replace)


def optimize(g: Graph, float_dtype=None) -> Graph:
    g = gather_one_hots(simplify(fold_constants(g, float_dtype)))
    return dce(share_saved_scans(join_pads(push_slices(cse(g)))))
