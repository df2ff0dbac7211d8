"""The shape stage as a function of the graph alone: re-run every node's shape rule from its inputs' types.

The elaborator already infers each type as it makes a node (it needs them to size parameters); `infer`
re-derives them all from the graph, optionally with dimensions bound to sizes, so that (1) the recorded
types are checked to follow from the rules, and (2) a graph with symbolic sizes can be specialised to
concrete ones (`--bind B=32`), finding sizes that only fail then (a convolution that does not divide)."""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph, TType
from .ops import OPS, ShapeError


@dataclass
class ShapeProblem:
    node: int
    name: str
    code: str
    message: str
    span: object


def infer(g: Graph, bindings: dict | None = None) -> tuple[dict, list[ShapeProblem]]:
    """Types of every node of g (and of its scan bodies, keyed by (graph name, node)) under bindings."""
    bindings = bindings or {}
    types: dict = {}
    problems: list[ShapeProblem] = []
    _infer(g, bindings, types, problems, {})
    return types, problems


def _infer(g: Graph, bindings, types, problems, leaf_types):
    local: dict[int, object] = {}
    for n in g.nodes():
        d = g.node(n)
        op = d["op"]
        if op in ("input", "param", "state", "constant", "capture") or op in ("fill", "iota", "rand_uniform", "rand_normal"):
            t = leaf_types.get(n, d["type"])
            if op in ("fill", "iota", "rand_uniform", "rand_normal"):
                attrs = dict(d["attrs"])
                attrs["shape"] = tuple(x.subs(bindings) for x in attrs["shape"])
                try:
                    t = OPS[op].shape([], attrs)
                except ShapeError as e:
                    problems.append(ShapeProblem(n, d["name"], e.code, e.message, d["span"]))
            local[n] = t.subs(bindings) if isinstance(t, TType) else t
        elif op == "scan":
            body: Graph = d["attrs"]["body"]
            a = d["attrs"]
            ins = [local[i] for i in d["inputs"]]
            n_seq, n_car = a["n_seqs"], a["n_carries"]
            ax = a["axis"]
            leaf = {}
            for k, t in enumerate(ins[:n_seq]):
                leaf[body.inputs[k]] = TType(t.shape[:ax] + t.shape[ax + 1:], t.dtype)
            for k, t in enumerate(ins[n_seq:n_seq + n_car]):
                leaf[body.inputs[n_seq + k]] = t
            caps = ins[n_seq + n_car + (1 if a["has_lengths"] else 0):]
            for cap_node, outer in zip(body.captures.values(), caps):
                leaf[cap_node] = outer
            inner = _infer(body, bindings, types, problems, leaf)
            steps = ins[0].shape[ax]
            outs = [inner[x] for _, x in body.outputs]
            carries, yields = outs[:n_car], outs[n_car:]
            local[n] = [TType(y.shape[:ax] + (steps,) + y.shape[ax:], y.dtype) for y in yields] + carries
        elif op == "tuple_get":
            local[n] = local[d["inputs"][0]][d["attrs"]["index"]]
        else:
            attrs = dict(d["attrs"])
            for k in ("shape",):
                if k in attrs and isinstance(attrs[k], tuple):
                    attrs[k] = tuple(x.subs(bindings) for x in attrs[k])
            try:
                local[n] = OPS[op].shape([local[i] for i in d["inputs"]], attrs)
            except ShapeError as e:
                problems.append(ShapeProblem(n, d["name"], e.code, e.message, d["span"]))
                local[n] = d["type"]
        types[(g.name, n)] = local[n]
    return local
