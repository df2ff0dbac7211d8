"""The reference interpreter: runs any typed graph with NumPy, op by op, through each registry entry's
`impl`. It is the definition of what a graph computes; every compiled backend is tested against it.

Sizes: the symbolic dimensions of the graph (B, T, ...) get their values from the shapes of the inputs.
Dtypes: a graph runs in its own dtypes, or with every float promoted to float64 (`float_dtype=np.float64`)
for gradient checks. Random numbers: counter-based, a pure function of (seed, step, node, element), so a
backend that draws element i of node n at step s gets the same number in any order."""
from __future__ import annotations


import numpy as np

from compiler.dims import Dim
from compiler.graph import Graph
from compiler.ops import OPS

_NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
_MASK = (1 << 64) - 1


class RunError(Exception):
    """Bad feeds (a missing input, a shape that contradicts the model) or a failing op, with the node."""


def _mix(z: int) -> int:
    """splitmix64's finaliser on a Python int: a bijection of 64-bit values that scrambles every bit."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def counter_uniform(key: int, n: int) -> np.ndarray:
    """n uniform numbers in [0, 1) for counters 0..n-1 under key (53 random bits each)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (_mix_array(z) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class Ctx:
    def __init__(self, bindings: dict, float_dtype=None, seed: int = 0, step: int = 0, path: tuple = ()):
        self.bindings = bindings
        self.float_dtype = float_dtype
        self.seed, self.step, self.path = seed, step, path
        self.op, self.node, self.out_shape, self.key = None, None, None, None

    def dim(self, d):
        if d is None or isinstance(d, int):
            return d
        v = Dim.of(d).subs(self.bindings)
        if not v.is_int:
            raise RunError(f"size {d} is {v} with these inputs, not an integer")
        return int(v.value)

    def dtype(self, name: str):
        if self.float_dtype is not None and name in ("f32", "f64"):
            return self.float_dtype
        return _NP[name]

    def uniform(self, shape, stream: int = 0) -> np.ndarray:
        key = _mix(self.seed)
        for part in (self.step, *self.path, self.key, stream):
            key = _mix(key ^ (part & _MASK))
        n = int(np.prod(shape)) if shape else 1
        return counter_uniform(key, n).reshape(shape)

    def inner(self, t: int, scan_node: int) -> Ctx:
        """The context of step t of a scan body: its random numbers differ from step to step."""
        return Ctx(self.bindings, self.float_dtype, self.seed, self.step, self.path + (scan_node, t))


def bind_inputs(g: Graph, feeds: dict) -> dict:
    """Values of the graph's symbolic dimensions, from the shapes of the fed inputs."""
    return bind_signature(g.input_signature(), feeds)


def bind_signature(signature: tuple, feeds: dict) -> dict:
    """bind_inputs by the graph's input_signature (compiler/graph.py)."""
    consts, fed = signature
    bindings = dict(consts)
    for name, t in fed:
        if name not in feeds:
            continue
        shape = np.shape(feeds[name])
        if len(shape) != t.rank:
            raise RunError(f"input `{name}` should be {t}, got an array of shape {shape}")
        for d, size in zip(t.shape, shape):
            d = d.subs(bindings)
            sym = d.bare_symbol()
            if sym is not None:
                bindings[sym] = size
            elif d.is_const and int(d.value) != size:
                raise RunError(f"input `{name}` should be {t}, got an array of shape {shape}")
    return bindings


def run(g: Graph, feeds: dict, params: dict | None = None, *, seed: int = 0, step: int = 0, float_dtype=None,
        outputs=None, all_values: bool = False) -> dict:
    """Evaluate the graph. feeds: input (and target) name -> array; params: scoped name -> array.

    Returns {output name: array} for the graph's outputs (or the names in `outputs`); with all_values,
    the value of every node too, under its node id."""
    params = params or {}
    bindings = bind_inputs(g, feeds)
    ctx = Ctx(bindings, float_dtype, seed, step)
    env: dict = {}
    for n in g.nodes():
        d = g.node(n)
        if d["op"] == "input":
            name = d["name"]
            if name not in feeds:
                continue  # a target not needed for these outputs
            env[n] = np.asarray(feeds[name], dtype=ctx.dtype(d["type"].dtype))
        elif d["op"] in ("param", "state"):
            name = d["name"]
            if name not in params:
                raise RunError(f"no value for parameter `{name}`")
            env[n] = np.asarray(params[name], dtype=ctx.dtype(d["type"].dtype))
            if env[n].shape != tuple(ctx.dim(x) for x in d["type"].shape):
                raise RunError(f"parameter `{name}` should be {d['type']}, got shape {env[n].shape}")
    table = dict(g.outputs)
    wanted = outputs or [name for name, _ in g.outputs if name in ("output",) or not name.startswith("loss")]
    for name in wanted:
        if name not in table:
            raise RunError(f"the model has no output `{name}`; its outputs: {', '.join(table)}")
    with np.errstate(all="ignore"):  # a non-finite value is the caller's to find and report, not a warning
        evaluate(g, env, ctx, _needed_cached(g, tuple(table[name] for name in wanted)))
    out = {name: env[table[name]] for name in wanted}
    if all_values:
        out.update(env)
    return out


def _needed_cached(g: Graph, targets: tuple) -> set:
    # Every training step asks for the same outputs of the same graph: walk it once, not once a step.
    # The graph's size is part of the key because passes and autodiff may still be appending to it.
    cache = g.__dict__.setdefault("_needed", {})
    key = (len(g), targets)
    if key not in cache:
        cache[key] = g.ancestors(targets)
    return cache[key]


def evaluate(g: Graph, env: dict, ctx: Ctx, only: set | None = None) -> dict:
    """Fill env (node -> value) for the nodes of g (those in `only`, when given) whose value is not given."""
    for n in g.nodes():
        if n in env or (only is not None and n not in only):
            continue
        d = g.node(n)
        op = d["op"]
        ins = []
        for i in d["inputs"]:
            if i not in env:
                raise RunError(f"`{d['name']}` needs `{g.node(i)['name']}`, which has no value (a missing input?)")
            ins.append(env[i])
        if op in ("input", "param", "state", "capture"):
            continue  # not fed: only a problem if something needs it (caught above)
        if op == "scan":
            env[n] = _scan(g, n, ins, ctx)
        elif op == "tuple_get":
            env[n] = ins[0][d["attrs"]["index"]]
        else:
            ctx.op, ctx.node = op, n
            ctx.key = d["attrs"].get("key", n)  # random ops keep the key they were made with through passes
            t = d["type"]
            ctx.out_shape = tuple(ctx.dim(x) for x in t.shape)
            try:
                v = OPS[op].impl(ins, d["attrs"], ctx)
            except (IndexError, ValueError) as e:
                raise RunError(f"`{d['name']}` ({op}) failed: {e}") from None
            env[n] = np.asarray(v)
    return env


def _scan(g: Graph, n: int, ins, ctx: Ctx):
    d = g.node(n)
    a = d["attrs"]
    body: Graph = a["body"]
    ns, nc = a["n_seqs"], a["n_carries"]
    seqs = [np.moveaxis(s, a["axis"], 0) for s in ins[:ns]]
    carries = list(ins[ns:ns + nc])
    k0 = ns + nc
    lengths = ins[k0] if a["has_lengths"] else None
    caps = ins[k0 + (1 if a["has_lengths"] else 0):]
    T = seqs[0].shape[0]
    cap_nodes = list(body.captures.values())
    yields = None
    batch = np.arange(seqs[0].shape[1]) if lengths is not None else None
    for k in range(T):
        if lengths is None:
            pos = T - 1 - k if a["reverse"] else k
            xt = [s[pos] for s in seqs]
        else:
            pos = (lengths - 1 - k) if a["reverse"] else np.full_like(lengths, k)
            valid = k < lengths
            xt = [s[np.clip(pos, 0, T - 1), batch] for s in seqs]
        env = {body.inputs[i]: x for i, x in enumerate(xt)}
        env.update({body.inputs[ns + i]: c for i, c in enumerate(carries)})
        env.update(dict(zip(cap_nodes, caps)))
        # Random numbers inside the body are keyed by position, so the reverse scan that recomputes a step
        # for its gradient draws what the forward step drew (with lengths, reversed scans key by step).
        where = pos if lengths is None else (k if not a["reverse"] else -1 - k)
        evaluate(body, env, ctx.inner(where, a.get("key", n)))
        outs = [env[x] for _, x in body.outputs]
        new, ys = outs[:nc], outs[nc:]
        if yields is None:
            yields = [np.zeros((T,) + y.shape, dtype=y.dtype) for y in ys]
        if lengths is None:
            carries = new
            for buf, y in zip(yields, ys):
                buf[pos] = y
        else:
            carries = [np.where(valid.reshape((-1,) + (1,) * (c.ndim - 1)), c_new, c) for c, c_new in zip(carries, new)]
            for buf, y in zip(yields, ys):
                y = np.where(valid.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0)
                buf[np.clip(pos, 0, T - 1)[valid], batch[valid]] = y[valid]
    yields = yields or []
    return [np.moveaxis(y, 0, a["axis"]) for y in yields] + carries
