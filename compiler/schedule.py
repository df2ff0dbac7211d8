"""From a typed graph to a schedule: which nodes run together in one kernel (fusion) and where every value
lives (memory planning). Two named stages, each printable:

    fuse(g)                  the graph as a list of items in execution order (`Schedule.pretty()`)
    plan_memory(s, sizes)    offsets of every scratch buffer in one arena per dtype (`Plan.pretty()`)

Fusion rules, by the op kinds of the registry:
  - elementwise and broadcast ops of one output shape join one loop nest (a `fused` item), up to MAX_GROUP
    nodes; sources computed from the index (fill, iota, random numbers, one_hot) join as well, and so do
    reads through an index map (transpose, broadcast_to, slice, gather, pad), whose operand must be stored;
  - a reduction absorbs the group that computes its operand (the group's loop becomes the reduction's);
  - a matmul or a convolution takes as its epilogue a group over its output's shape that reads the output
    elementwise (a bias and an activation): each thread runs it over its block of the output (rows,
    columns or images) right after making it;
  - a transpose that swaps the last two axes and feeds only matmuls is never copied: the matmul reads it
    transposed (BLAS does both layouts);
  - reshape and tuple_get are views of their operand's storage; every other op is an item of its own.
The pass walks nodes in id order (a topological order) and closes an open group as soon as anything
outside it needs one of its values, so the items it emits are always in a valid order.

Memory: inputs are the caller's arrays; parameters, states and constants live in persistent storage; every
other stored value gets a scratch buffer whose lifetime is [item that writes it, last item that reads it].
Buffers whose lifetimes do not overlap share memory; the arena is allocated once per set of sizes and
reused every step. An optimizer update that reads a parameter elementwise, after everything else that
reads it, writes the new value in place."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dims import Dim, dmin, product
from .graph import Graph
from .ops import window_geometry

MAX_GROUP = 32
ALIGN = 16  # elements: every buffer starts on a 64-byte line

ELEMENTWISE = {"exp", "log", "log1p", "sqrt", "tanh", "sigmoid", "atan", "sin", "cos", "erf", "floor", "neg",
               "abs", "sign", "not", "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt",
               "le", "gt", "ge", "and", "or", "select", "cast", "stop_gradient"}
SOURCES = {"fill", "iota", "dim_value", "rand_uniform", "rand_normal"}
INDEX_READS = {"transpose", "broadcast_to", "slice", "gather", "one_hot", "pad"}  # operands must be stored
REDUCTIONS = {"sum", "mean", "max", "min", "argmax", "argmin"}
VIEWS = {"reshape"}
LEAVES = {"input", "param", "state", "capture", "constant"}


@dataclass(eq=False)
class Item:
    kind: str  # "fused", "scan" or the op of a single-op item (matmul, conv, ...)
    nodes: list  # the graph nodes it computes, in order (for fused: members, then the reduction)
    domain: tuple = ()  # fused: the shape its loops run over
    tail: int | None = None  # fused: the reduction that ends it
    stored: list = field(default_factory=list)  # nodes whose values it writes to storage
    transposed: dict = field(default_factory=dict)  # matmul: operand index -> the node read transposed
    body: Schedule | None = None  # scan: the body's schedule
    check_loss: bool = False  # stop the step here when the loss (its stored value) is not finite
    workspace: int | None = None  # index of its scratch buffer (im2col columns), if it needs one
    plan: tuple | None = None  # conv and conv_transpose: conv_plan's answer, worked out once
    epilogue: int = 0  # matmul, conv: where in nodes the elementwise loop over its output begins (0: none)


@dataclass
class Buffer:
    node: int
    graph: Graph
    dtype: str
    size: Dim  # elements
    start: int = 0  # timeline positions (items of nested scans included)
    end: int = 0


@dataclass(eq=False)
class Schedule:
    graph: Graph
    items: list
    storage: dict  # node -> ("input", name) | ("persist", key) | ("scratch", buffer index) | ("view", node)
    #                | ("outer", node of the enclosing graph) | ("inline", None): a scalar constant
    buffers: list = field(default_factory=list)  # shared by a schedule and its scan bodies
    updates: dict = field(default_factory=dict)  # persistent key -> node of its new value
    inplace: set = field(default_factory=set)  # persistent keys updated in place by their writer item
    parent: Schedule | None = None  # the schedule of the graph that holds this scan body

    def root(self, n: int) -> tuple:
        """The storage a node's value finally lives in, through views and into enclosing graphs."""
        sched, s = self, self.storage[n]
        while s[0] in ("view", "outer") and s[1] is not None:
            if s[0] == "outer":
                sched = sched.parent
            s = sched.storage[s[1]]
        return s

    def pretty(self, indent: str = "") -> str:
        g = self.graph
        lines = []
        for k, it in enumerate(self.items):
            names = ", ".join(f"%{n} {g.node(n)['op']}" for n in it.nodes)
            extra = f" over {_shape(it.domain)}" if it.kind == "fused" else ""
            if it.transposed:
                extra += " reading " + ", ".join(f"operand {i} transposed" for i in it.transposed)
            plan = conv_plan(g, it)
            if plan is not None:
                extra += f" by {CONV_KERNEL[plan[2]]}"
                if plan[2] not in (CONV_T_DEPTHWISE, CONV_DIRECT, CONV_DIRECT_FILTER):
                    extra += f" (a GEMM per {plan[0]} images)"
            if it.epilogue:
                extra += f" with an epilogue over {_shape(it.domain)}"
            stored = ", ".join(f"%{n}" for n in it.stored)
            lines.append(f"{indent}[{k}] {it.kind}{extra}: {names}  -> {stored or '-'}")
            if it.body is not None:
                lines.append(it.body.pretty(indent + "    "))
        if not indent:
            inplace = ", ".join(sorted(self.inplace))
            lines.append(f"updated in place: {inplace or '-'}")
        return "\n".join(lines)


def const_key(value, dtype: str) -> str:
    """Constants are stored by content: the graphs of one module (predict, train steps) number their nodes
    differently, and equal tables are stored once."""
    import hashlib
    v = np.ascontiguousarray(value)
    h = hashlib.sha1(f"{dtype}{v.dtype.str}{v.shape}".encode() + v.tobytes()).hexdigest()[:16]
    return f"const:{h}"


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _is_last_two_swap(perm) -> bool:
    r = len(perm)
    return r >= 2 and list(perm) == list(range(r - 2)) + [r - 1, r - 2]


def fuse(g: Graph, roots=None, loss: int | None = None, buffers: list | None = None,
         updates: dict | None = None) -> Schedule:
    """Group the nodes that the roots (default: the graph's outputs) need into items."""
    roots = [n for _, n in g.outputs] if roots is None else list(roots)
    live = g.ancestors(roots)
    uses: dict[int, list] = {n: [] for n in live}
    for n in sorted(live):
        for i in g.node(n)["inputs"]:
            uses[i].append(n)
    # Transposes of the last two axes that only matmuls read: the matmul reads the operand transposed.
    folded = {n for n in live if g.node(n)["op"] == "transpose" and _is_last_two_swap(g.node(n)["attrs"]["perm"])
              and uses[n] and all(g.node(u)["op"] == "matmul" and g.type(g.node(n)["inputs"][0]).rank >= 2
                                  for u in uses[n]) and n not in roots}
    s = Schedule(g, [], {}, buffers if buffers is not None else [], dict(updates or {}))
    open_groups: list[Item] = []
    group_of: dict[int, Item] = {}

    def close(it: Item):
        open_groups.remove(it)
        s.items.append(it)

    def materialize(n):
        it = group_of.get(n)
        if it is not None and it in open_groups:
            close(it)

    for n in sorted(live):
        d = g.node(n)
        op = d["op"]
        if n in folded:
            continue
        if op in ("input", "param", "state", "capture"):
            s.storage[n] = {"input": ("input", d["name"]), "capture": ("outer", None)}.get(
                op, ("persist", d["name"]))
            continue
        if op == "constant":
            # a scalar is a literal in the loops that read it, but gather and scatter_add read their index
            # (and scatter_add its updates) from storage
            inline = not d["type"].shape and not any(g.node(u)["op"] in ("gather", "scatter_add")
                                                     for u in g.nx.successors(n))
            s.storage[n] = ("inline", None) if inline else ("persist", const_key(d["attrs"]["value"], d["type"].dtype))
            continue
        ins = list(d["inputs"])
        if op in VIEWS:
            materialize(ins[0])
            s.storage[n] = ("view", ins[0])
            continue
        if op in ELEMENTWISE or op in SOURCES or op in INDEX_READS:
            dom = d["type"].shape
            # Open groups of this shape that hold an operand merge, and the node joins them: they are
            # still open, so nothing outside has read them, and what they read is already stored.
            joinable = []
            if op not in INDEX_READS:
                for o in ins:
                    it = group_of.get(o)
                    if (it is not None and it in open_groups and it.domain == dom and it.tail is None
                            and it not in joinable):
                        joinable.append(it)
            target = None
            for it in joinable:
                if target is None:
                    target = it
                elif len(target.nodes) + len(it.nodes) < MAX_GROUP:
                    target.nodes = sorted(target.nodes + it.nodes)
                    for m in it.nodes:
                        group_of[m] = target
                    open_groups.remove(it)
            if target is not None and len(target.nodes) >= MAX_GROUP:
                close(target)
                target = None
            for o in ins:
                it = group_of.get(o)
                if it is not None and it in open_groups and it is not target:
                    close(it)
            if target is None:
                target = Item("fused", [], dom)
                open_groups.append(target)
            target.nodes.append(n)
            group_of[n] = target
        elif op in REDUCTIONS:
            src = ins[0]
            it = group_of.get(src)
            if not (it in open_groups and it.domain == g.type(src).shape):
                materialize(src)
                it = Item("fused", [], g.type(src).shape)
                open_groups.append(it)
            it.nodes.append(n)
            it.tail = n
            group_of[n] = it
            close(it)
        elif op == "scan":
            for o in ins:
                materialize(o)
            s.items.append(Item("scan", [n]))
            group_of[n] = s.items[-1]
        elif op == "tuple_get":  # the scan writes each output that is read into the tuple_get's buffer
            it = group_of[ins[0]]
            same = [u for u in it.stored if g.node(u)["attrs"]["index"] == d["attrs"]["index"]]
            if same:
                s.storage[n] = ("view", same[0])
            else:
                it.stored.append(n)
                s.storage[n] = ("scratch", None)
        else:
            for o in ins:
                materialize(o)
            it = Item(op, [n])
            if op == "matmul":
                for k, o in enumerate(ins):
                    if o in folded:
                        it.transposed[k] = g.node(o)["inputs"][0]
                        materialize(it.transposed[k])
            s.items.append(it)
            group_of[n] = it
        if n == loss and n in group_of:
            materialize(n)
            group_of[n].check_loss = True
    for it in list(open_groups):
        close(it)
    s.items = _epilogues(s, s.items, set((updates or {}).values()) | (set(roots) if g.parent is not None else set()))

    # What each item must store: values read by another item, and the roots.
    read_outside = set(roots)
    for it in s.items:
        for i in item_reads(s, it):
            read_outside.add(i)
    for n in live:  # views read their operand's storage
        if s.storage.get(n, ("",))[0] == "view":
            read_outside.add(g.node(n)["inputs"][0])
    for it in s.items:
        if it.kind != "scan":  # a matmul's product is stored, its epilogue's values as a group's are
            it.stored = [n for k, n in enumerate(it.nodes)
                         if n in read_outside or (it.kind != "fused" and k < (it.epilogue or len(it.nodes)))]
        for n in it.stored:
            s.storage.setdefault(n, ("scratch", None))
    for it in s.items:
        if it.kind == "scan":
            _fuse_body(s, it)
    return s


def _epilogues(s: Schedule, items: list, kept: set) -> list:
    """A fused loop over a matmul's or a convolution's output that reads the output elementwise (a bias
    and an activation) becomes its epilogue: each thread runs it over its own block of the output as soon
    as it is made, still in cache, with no barrier and no call between. The loop moves up to its host
    when nothing between them writes what it reads. Loops that write a value in place of an older one
    are left alone (kept: optimizer updates, a scan body's carries)."""
    g = s.graph

    def base(n):
        while s.storage.get(n, ("",))[0] == "view":
            n = s.storage[n][1]
        return n
    out = []
    for it in items:
        host = None
        if it.kind == "fused" and it.tail is None and not kept & set(it.nodes):
            members = set(it.nodes)
            reads = {base(i) for m in it.nodes for i in g.node(m)["inputs"] if i not in members}
            for mm in reversed(out):
                if mm.nodes[0] in reads and not mm.epilogue and not mm.check_loss and _takes_epilogue(g, mm, it):
                    host = mm
                if host is not None or reads & (set(mm.nodes) | set(mm.stored)):  # it reads what mm writes
                    break
        if host is None:
            out.append(it)
            continue
        host.epilogue = len(host.nodes)
        host.nodes += it.nodes
        host.domain = it.domain
        host.check_loss = it.check_loss
    return out


def _takes_epilogue(g: Graph, host: Item, it: Item) -> bool:
    """Whether the loop it can run after host's kernel on each thread's block: host a matmul of matrices
    (threads split its rows, its columns or its first batch axis) or a convolution whose threads split
    the images (not a filter's gradient, for which they may work on one image together)."""
    product = host.nodes[0]
    t = g.type(product)
    if t.dtype not in ("f32", "f64") or tuple(it.domain) != tuple(t.shape):
        return False
    if host.kind == "matmul":
        if any(g.type(i).rank < 2 for i in g.node(product)["inputs"]):
            return False
    elif host.kind not in ("conv", "conv_transpose") or conv_plan(g, host)[2] in (CONV_WIDE_FILTER, CONV_DIRECT_FILTER):
        return False
    readers = [m for m in it.nodes if product in g.node(m)["inputs"]]
    return bool(readers) and all(g.node(m)["op"] in ELEMENTWISE for m in readers)


def _fuse_body(s: Schedule, it: Item):
    g = s.graph
    d = g.node(it.nodes[0])
    body: Graph = d["attrs"]["body"]
    roots = [n for _, n in body.outputs]
    bs = fuse(body, roots, buffers=s.buffers)
    bs.parent = s
    it.body = bs
    ns, nc = d["attrs"]["n_seqs"], d["attrs"]["n_carries"]
    # A carry lives in one buffer for the whole loop: the scan's carry output when something reads it.
    carry_out = {g.node(u)["attrs"]["index"]: u for u in it.stored}
    it.stored = list(carry_out.values())
    for i in range(nc):
        inp = body.inputs[ns + i]
        out = carry_out.get(len(d["type"]) - nc + i)
        bs.storage[inp] = ("outer", out) if out is not None else ("scratch", None)
    for i in range(ns):
        bs.storage[body.inputs[i]] = ("scratch", None)
    caps = list(d["inputs"])[ns + nc + (1 if d["attrs"]["has_lengths"] else 0):]
    for cap, outer in zip(body.captures.values(), caps):
        bs.storage[cap] = ("outer", outer)
    if not d["attrs"]["has_lengths"]:  # with lengths, finished examples keep their old carry
        for i in range(nc):
            _carry_in_place(bs, body.inputs[ns + i], body.outputs[i][1])


def _carry_in_place(bs: Schedule, old: int, new: int):
    """Let a step write a carry's new value over the old one (no copy at the end of the step), when the
    loop that computes it reads the old value only elementwise, nothing after it reads the old value, and
    the old value is not also yielded (BPTT yields the carry a step started from)."""
    g = bs.graph
    outputs = [n for _, n in g.outputs]
    if old in outputs or outputs.count(new) != 1 or bs.storage.get(new, ("",))[0] != "scratch":
        return
    writer = next((k for k, it in enumerate(bs.items) if new in it.stored), None)
    if writer is None:
        return
    it = bs.items[writer]
    if it.kind != "fused" or it.tail is not None or tuple(it.domain) != tuple(g.type(old).shape):
        return
    if not all(g.node(m)["op"] in ELEMENTWISE and tuple(g.type(m).shape) == tuple(it.domain)
               for m in it.nodes if old in g.node(m)["inputs"]):
        return
    views = {n for n, (kind, arg) in bs.storage.items() if kind == "view" and arg == old}
    for k, other in enumerate(bs.items):
        if k > writer and ({old} | views) & set(item_reads(bs, other)):
            return
    bs.storage[new] = ("view", old)


# ---- memory planning
def assign_buffers(s: Schedule, pos: list | None = None) -> int:
    """Give every scratch value a Buffer with its lifetime on one timeline (scan bodies nested inside their
    scan's span); returns the next free position. Fills s.buffers and rewrites ("scratch", None)."""
    g = s.graph
    first = pos[0] if pos else 0
    t = first
    where: dict[int, int] = {}  # node -> position of the item that writes it
    last: dict[int, int] = {}
    item_pos = []
    for it in s.items:
        start = t
        if it.body is not None:
            t = assign_buffers(it.body, [t + 1])
        end = t
        item_pos.append((start, end))
        for n in it.stored:
            where[n] = start
        for n in item_reads(s, it):
            last[n] = max(last.get(n, start), end)
        t += 1
    for _, n in g.outputs:
        last[n] = t
    for it, (start, _) in zip(s.items, item_pos):
        plan = conv_plan(g, it)
        if plan is not None:
            size = plan[1]
            b = Buffer(-1, g, g.type(it.nodes[0]).dtype, size, start, start)
            s.buffers.append(b)
            it.workspace = len(s.buffers) - 1
    for n, (kind, arg) in list(s.storage.items()):
        if kind == "scratch" and arg is None:
            t_ = s.graph.type(n)
            b = Buffer(n, g, t_.dtype, product(t_.shape) if t_.shape else Dim.const(1))
            b.start = where.get(n, first)
            b.end = max(last.get(n, b.start), b.start)
            s.buffers.append(b)
            s.storage[n] = ("scratch", len(s.buffers) - 1)
    # Views keep their base alive; a scan's values read by its body live until the scan ends.
    for n, (kind, arg) in s.storage.items():
        if kind == "view":
            root = s.root(n)
            if root[0] == "scratch" and root[1] is not None:  # None: the enclosing graph's, placed later
                b = s.buffers[root[1]]
                b.end = max(b.end, last.get(n, b.end))
    for it, (start, end) in zip(s.items, item_pos):
        if it.body is not None:
            for n, (kind, arg) in it.body.storage.items():
                if kind == "outer" and arg is not None:
                    root = s.root(arg)
                    if root[0] == "scratch":
                        b = s.buffers[root[1]]
                        b.start, b.end = min(b.start, start), max(b.end, end)
                elif kind == "scratch" and arg is not None and g.node(it.nodes[0])["attrs"]["body"].node(n)["op"] == "input":
                    b = s.buffers[arg]
                    b.start, b.end = min(b.start, start), max(b.end, end)
    return t


# im2col workspace, in elements, that one GEMM of a convolution may fill: several images per GEMM call
# pay BLAS's fixed cost once, and the bound keeps large images from needing a huge scratch buffer.
CONV_CHUNK = 1 << 20

# How a convolution lays out its columns; each layout is its own runtime/kernels.py function (CONV_KERNEL),
# so that a model compiles only the ones it uses.
CONV_ALONG_OUTPUT = 0  # im2col copies runs along each output row
CONV_ALONG_FILTER = 1  # runs along each filter row: filters wider than their output (a filter's gradient)
CONV_WIDE = 2  # stride 1: each column row is one run over whole padded input rows
CONV_WIDE_FILTER = 3  # the same for filters wider than their output, when the dilation is 1
CONV_T_GEMM = 4  # conv_transpose: GEMM, then col2im adds runs along each input row
CONV_T_DEPTHWISE = 5  # one channel in and out per group: the taps are added directly, no GEMM
CONV_T_WIDE = 6  # stride 1: the input rows are widened to the output's, and col2im adds whole planes
CONV_DIRECT = 7  # stride 1, few taps (a first layer's few channels): the taps are added directly, no GEMM
CONV_DIRECT_FILTER = 8  # CONV_WIDE_FILTER's, for few output channels: dot products, no GEMM
CONV_KERNEL = {CONV_ALONG_OUTPUT: "conv2d", CONV_ALONG_FILTER: "conv2d", CONV_WIDE: "conv2d_wide",
               CONV_WIDE_FILTER: "conv2d_wide_filter", CONV_T_GEMM: "conv_transpose2d",
               CONV_T_DEPTHWISE: "conv_transpose2d_depthwise", CONV_T_WIDE: "conv_transpose2d_wide",
               CONV_DIRECT: "conv2d_direct", CONV_DIRECT_FILTER: "conv2d_direct_filter"}
# CONV_DIRECT for up to DIRECT_OUTPUTS output channels and DIRECT_TAPS taps per channel (input channels x
# filter positions); CONV_DIRECT_FILTER for up to DIRECT_FILTERS filters; else a GEMM's columns pay.
# Measured, single thread, CONV_DIRECT (register blocks of the input's own runs) against CONV_WIDE:
# LeNet-5's c1 (1 channel in, 6 out, 5x5, 28x28) 0.17 against 0.34 ms, its c3 (6 in, 16 out, 150 taps)
# 0.26 against 0.33; 3 in, 16 out, 3x3 at 32x32, 0.24 against 0.27; 16 in, 32 out (144 taps) even;
# 32 in, 64 out (288 taps) 2.5 against 1.8, 64 in and out 2.5 against 1.8. CONV_DIRECT_FILTER against
# CONV_WIDE_FILTER: c1's filter gradient (6 filters) 0.19 against 1.36 ms, c3's (16) 0.60 against 0.45.
DIRECT_OUTPUTS = 16
DIRECT_FILTERS = 8
DIRECT_TAPS = 150
# A wide layout computes the columns between rows too and throws them away; it pays while that is at
# most this share of the work (LeNet's c3: 14 columns for 10, and copies 14 times as long).
WIDE_WASTE = 2


def conv_plan(g: Graph, it: Item) -> tuple[Dim, Dim, int] | None:
    """(images per GEMM, workspace elements, layout) of a conv or conv_transpose item, for its kernel."""
    if it.kind not in ("conv", "conv_transpose"):
        return None
    if it.plan is None:
        it.plan = _conv_plan(g, it)
    return it.plan


def _conv_plan(g: Graph, it: Item) -> tuple[Dim, Dim, int]:
    node = g.node(it.nodes[0])
    (x, w), out = (g.type(i) for i in node["inputs"]), g.type(it.nodes[0])
    a = node["attrs"]
    groups = a.get("groups", 1)
    geo = _conv_geometry(x, w, out, a)
    if it.kind == "conv":
        cg, kg = x.shape[1] / groups, w.shape[0] / groups
        rows, positions = cg * product(w.shape[2:]), product(out.shape[2:])
        per_image, fixed, layout = (rows + kg) * positions, Dim.const(0), CONV_ALONG_OUTPUT
        if geo is not None:
            (H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw) = geo
            Hp, Wp = H + 2 * ph, W + 2 * pw
            padded = x.shape[1] * Hp * Wp if ph or pw else 0
            if kw > OW:
                layout = CONV_ALONG_FILTER
                if (dh, dw) == (1, 1) and groups == 1 and Wp <= WIDE_WASTE * kw and (OH - 1) * sh + kh <= Hp:
                    layout = CONV_WIDE_FILTER
                    run = kh * Wp  # columns [(image, u, v), (c, run)], the filter widened to [K, (c, run)]
                    per_image = OH * OW * (cg * run + kg) + padded
                    fixed = w.shape[0] * cg * run
                    if sh == sw == 1 and kg.is_const and kg.value <= DIRECT_FILTERS:
                        # the padded planes, Wp + 20 zeros, the widened filters of one input channel
                        layout, per_image = CONV_DIRECT_FILTER, Dim.const(0)
                        fixed = x.shape[1] * Hp * Wp + Wp + 20 + kg * (run + 16)
            elif ((sh, sw, dh, dw) == (1, 1, 1, 1) and groups == 1 and rows.is_const and rows.value <= DIRECT_TAPS
                  and kg.is_const and kg.value <= DIRECT_OUTPUTS):
                layout = CONV_DIRECT  # the image's padded planes, kw + 16 zeros, K channels' wide rows
                per_image, fixed = Dim.const(0), x.shape[1] * Hp * Wp + kw + 16 + kg * (OH * Wp + 16)
            elif (sh, sw) == (1, 1) and Wp <= WIDE_WASTE * OW and OH + dh * (kh - 1) <= Hp:
                layout = CONV_WIDE
                per_image = (rows + kg) * OH * Wp + padded
    else:
        cg, kg = x.shape[1] / groups, w.shape[1]
        rows, positions = kg * product(w.shape[2:]), product(x.shape[2:])
        per_image, fixed, layout = (rows + cg) * positions, Dim.const(0), CONV_T_GEMM
        if cg == Dim.const(1) and kg == Dim.const(1):
            per_image, layout = Dim.const(0), CONV_T_DEPTHWISE
        elif geo is not None:
            (H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw) = geo
            Hb, Wb = max(H + dh * (kh - 1), OH + ph), max(W + dw * (kw - 1), OW + pw)
            if (sh, sw) == (1, 1) and Wb <= WIDE_WASTE * W:
                layout = CONV_T_WIDE
                per_image = (rows + cg) * H * Wb + out.shape[1] * Hb * Wb
    images = Dim.const(1)
    if per_image.is_const and per_image.value > 0:
        images = dmin(x.shape[0], Dim.const(max(1, CONV_CHUNK // int(per_image.value))))
    elif per_image.is_const:
        images = x.shape[0]
    return images, images * per_image + fixed, layout


def _conv_geometry(x, w, out, a) -> tuple[int, ...] | None:
    """(H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw) of a 1-d or 2-d convolution with known spatial
    sizes (a 1-d one as height 1), or None."""
    ns = x.rank - 2
    dims = [x.shape[2:], w.shape[2:], out.shape[2:]]
    if ns not in (1, 2) or not all(d.is_const for ds in dims for d in ds):
        return None
    stride, pad, dil = window_geometry(None, a, ns)
    if ns == 1:
        dims, stride, pad, dil = [(Dim.const(1),) + tuple(ds) for ds in dims], (1,) + tuple(stride), (0,) + tuple(pad), (1,) + tuple(dil)
    (H, W), (kh, kw), (OH, OW) = ([int(d.value) for d in ds] for ds in dims)
    return (H, W, kh, kw, OH, OW, *stride, *pad, *dil)


def item_reads(s: Schedule, it: Item) -> list[int]:
    """The stored values an item reads (through views: their bases are kept alive separately)."""
    g = s.graph
    members = set(it.nodes)
    out = []
    for n in it.nodes:
        for k, i in enumerate(g.node(n)["inputs"]):
            if n == it.nodes[0] and k in it.transposed:  # a matmul's operand read transposed (not its epilogue's)
                i = it.transposed[k]
            if i not in members:
                out.append(i)
    return out


@dataclass
class Plan:
    offsets: list  # buffer index -> element offset in its dtype's arena
    sizes: dict  # dtype -> arena elements
    total: dict  # dtype -> sum of all buffer sizes (what allocating each value separately would take)

    def pretty(self) -> str:
        return "\n".join(f"{dt}: arena {self.sizes[dt]:,} elements; separately {self.total[dt]:,}"
                         for dt in sorted(self.sizes))


def plan_memory(buffers: list, size_of, dtype_of=lambda b: b.dtype) -> Plan:
    """Pack buffers into one arena per dtype: largest first, each at the lowest aligned offset that no
    buffer alive at the same time occupies. size_of(buffer) gives its concrete size in elements;
    dtype_of(buffer) the arena it goes to."""
    sizes = [int(size_of(b)) for b in buffers]
    kinds = [dtype_of(b) for b in buffers]
    order = sorted(range(len(buffers)), key=lambda i: (-sizes[i], buffers[i].start, i))
    offsets = [0] * len(buffers)
    placed: dict[str, list] = {}
    arena: dict[str, int] = {}
    total: dict[str, int] = {}
    for i in order:
        b, dt = buffers[i], kinds[i]
        total[dt] = total.get(dt, 0) + sizes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in placed.get(dt, [])
                      if not (buffers[j].end < b.start or b.end < buffers[j].start))
        off = 0
        for lo, hi in busy:
            if off + sizes[i] <= lo:
                break
            off = max(off, -(-hi // ALIGN) * ALIGN)
        offsets[i] = off
        placed.setdefault(dt, []).append(i)
        arena[dt] = max(arena.get(dt, 0), off + sizes[i])
    return Plan(offsets, arena, total)


def inplace_updates(s: Schedule) -> None:
    """Let an update item write a parameter's (or state's, or slot's) new value over the old one when that
    is safe: it reads the old value only elementwise at the index it writes, nothing later reads the old
    value, and it runs after the loss check (so a step with a non-finite loss changes nothing)."""
    g = s.graph
    persist_node = {s.storage[n][1]: n for n in s.storage if s.storage[n][0] == "persist"}
    item_of = {}
    for k, it in enumerate(s.items):
        for n in it.stored:
            item_of[n] = k
    check = next((k for k, it in enumerate(s.items) if it.check_loss), -1)
    out_names: dict = {}  # a value that is also an output under another name keeps its own buffer
    for name, m in g.outputs:
        out_names.setdefault(m, set()).add(name)
    last_read: dict = {}
    for k, it in enumerate(s.items):
        for n in item_reads(s, it) + _body_outer_reads(it):
            root = s.root(n)
            if root[0] == "persist":
                last_read[root[1]] = k
    for key, n in s.updates.items():
        p = persist_node.get(key)
        k = item_of.get(n)
        if p is None or k is None or k <= check:
            continue
        it = s.items[k]
        if it.kind != "fused" or it.tail is not None or it.domain != g.type(p).shape:
            continue
        direct = all(g.node(m)["op"] in ELEMENTWISE and g.type(m).shape == it.domain
                     for m in it.nodes if p in g.node(m)["inputs"])
        if (direct and last_read.get(key, -1) <= k and s.storage[n][0] == "scratch"
                and out_names.get(n, set()) <= {f"new:{key}"}):
            s.storage[n] = ("persist", key)
            s.inplace.add(key)


def _body_outer_reads(it: Item) -> list:
    if it.body is None:
        return []
    out = [arg for kind, arg in it.body.storage.values() if kind == "outer" and arg is not None]
    for sub in it.body.items:
        out += _body_outer_reads(sub)
    return out


def schedule(g: Graph, updates: dict | None = None, loss: int | None = None) -> Schedule:
    """fuse, then in-place updates and buffer lifetimes: the whole scheduling stage."""
    roots = [n for _, n in g.outputs]
    s = fuse(g, roots, loss=loss, updates=updates)
    inplace_updates(s)
    assign_buffers(s)
    return s

