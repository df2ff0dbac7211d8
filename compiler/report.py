"""What `dlc check` and `dlc graph` print: the summary table (scoped name, block or op, output shape,
parameters), parameter totals, forward FLOPs per example, and the graph as Graphviz DOT."""
from __future__ import annotations

from .dims import Dim, product
from .graph import Graph, Instance, TType
from .ops import OPS


def _count(g: Graph, nodes) -> Dim:
    total = Dim.const(0)
    for n in nodes:
        total = total + product(g.type(n).shape)
    return total


def param_totals(g: Graph) -> tuple[Dim, Dim]:
    train = [n for n in g.params.values() if g.node(n)["op"] == "param"]
    state = [n for n in g.params.values() if g.node(n)["op"] == "state"]
    return _count(g, train), _count(g, state)


def instance_params(g: Graph, inst: Instance) -> Dim:
    nodes, stack = [], [inst]
    while stack:
        i = stack.pop()
        nodes += i.params
        stack += i.children
    return _count(g, nodes)


def flops(g: Graph) -> Dim:
    """Forward FLOPs of the whole graph (a multiply-add counts 2); scan bodies count once per step."""
    total = Dim.const(0)
    for n in range(g.n_forward if g.n_forward is not None else len(g)):
        d = g.node(n)
        op = OPS[d["op"]]
        if d["op"] == "scan":
            steps = g.type(d["inputs"][0]).shape[d["attrs"]["axis"]]  # the first sequence's length
            total = total + flops(d["attrs"]["body"]) * steps
        elif op.flops is not None and not isinstance(d["type"], list):
            ins = [g.type(i) for i in d["inputs"]]
            total = total + op.flops(ins, d["type"], d["attrs"])
    return total


def batch_symbol(g: Graph) -> str | None:
    for n in g.inputs:
        t = g.type(n)
        if t.shape:
            s = t.shape[0].bare_symbol()
            if s:
                return s
    return None


def human(d: Dim) -> str:
    if d.is_const:
        v = d.value
        if v.denominator == 1:
            return f"{int(v):,}"
        return f"{float(v):,.1f}"
    return str(d)


def _si(d: Dim) -> str:
    if not d.is_const:
        return ""
    v = float(d.value)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= scale:
            return f" ({v / scale:.2f} {unit})"
    return ""


def _out_text(g: Graph, inst: Instance, bind) -> str:
    types = []
    for n in inst.outputs:
        t = (inst.graph or g).type(n)
        types.append(str(t.subs(bind)) if isinstance(t, TType) else " ".join(str(x.subs(bind)) for x in t))
    return ", ".join(types)


def summary(g: Graph, bind: dict | None = None, depth: int = 1, path: str = "") -> str:
    bind = bind or {}
    rows = [("Layer (scope)", "Block / op", "Output shape", "Param #")]
    for n in g.inputs:
        rows.append((g.node(n)["name"], "input", str(g.type(n).subs(bind)), "0"))

    def walk(inst: Instance, level: int):
        for c in inst.children:
            # Nested rows show their name below the parent's: `0/decoder_layer` under `layer`, then `attn`.
            name = c.name[len(inst.name) + 1:] if level > 1 and c.name.startswith(inst.name + "/") else c.name
            rows.append(("  " * (level - 1) + name, c.kind, _out_text(g, c, bind),
                         human(instance_params(g, c).subs(bind))))
            if level < depth:
                walk(c, level + 1)

    walk(g.root, 1)
    rows = [tuple(c if len(c) <= 60 else c[:57] + "..." for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "-" * (sum(widths) + 6)
    out = [f"Model: {g.name}" + (f"   ({path})" if path else ""), line]
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            out.append(line)
    out.append(line)
    tr, st = param_totals(g)
    tr, st = tr.subs(bind), st.subs(bind)
    out.append(f"Total params: {human(tr + st)}{_si(tr + st)}")
    out.append(f"Trainable params: {human(tr)}")
    out.append(f"Non-trainable params: {human(st)}")
    f = flops(g).subs(bind)
    b = batch_symbol(g)
    if b and b not in bind:
        f = f.subs({b: 1})
        out.append(f"Forward FLOPs per example: {human(f)}{_si(f)}")
    else:
        out.append(f"Forward FLOPs per batch: {human(f)}{_si(f)}")
    absent = [n for n in g.optional_inputs if n not in {g.node(i)["name"] for i in g.inputs}]
    if absent:
        out.append(f"Optional inputs left out: {', '.join(absent)} (include them with --with NAME)")
    if g.dims:
        free = [k for k, (v, _) in g.dims.items() if not v.is_const and k not in bind]
        if free:
            out.append(f"Symbolic dimensions: {', '.join(free)} (give sizes with --bind NAME=N)")
    return "\n".join(out)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(g: Graph) -> str:
    """Graphviz DOT: one box per op, parameters as ellipses, a cluster per top-level layer."""
    lines = [f'digraph "{_esc(g.name)}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    clusters: dict[str, list[str]] = {}
    for n in g.nodes():
        d = g.node(n)
        t = d["type"]
        ttext = " ".join(str(x) for x in t) if isinstance(t, list) else str(t)
        if d["op"] in ("param", "state"):
            attr = f'shape=ellipse, style=filled, fillcolor="{"#ffe9b3" if d["op"] == "param" else "#e0e0e0"}"'
            label = f"{d['name']}\\n{_esc(ttext)}"
        elif d["op"] == "input":
            attr, label = 'shape=invhouse, style=filled, fillcolor="#c9e7ff"', f"{_esc(d['name'])}\\n{_esc(ttext)}"
        elif d["op"] == "constant":
            attr, label = "shape=plaintext", f"const {_esc(ttext)}"
        else:
            attr, label = "", f"{d['op']}\\n{_esc(ttext)}"
        stmt = f'  n{n} [label="{label}"{", " + attr if attr else ""}];'
        top = d["name"].split("/")[0] if "/" in d["name"] else ""
        clusters.setdefault(top, []).append(stmt)
    for i, (name, stmts) in enumerate(clusters.items()):
        if name:
            lines.append(f"  subgraph cluster_{i} {{")
            lines.append(f'    label="{_esc(name)}"; style=rounded; color="#999999";')
            lines += ["  " + s for s in stmts]
            lines.append("  }")
        else:
            lines += stmts
    for u, v, k in g.nx.edges(keys=True):
        lines.append(f"  n{u} -> n{v};")
    for name, n in g.outputs:
        lines.append(f'  out_{_ident(name)} [label="{_esc(name)}", shape=house, style=filled, fillcolor="#c9ffd1"];')
        lines.append(f"  n{n} -> out_{_ident(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
