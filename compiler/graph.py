"""The graph IR: a networkx.MultiDiGraph whose nodes are primitive ops.

Node ids are integers given in creation order, which is a topological order. Each node holds: op, attrs,
ordered inputs, type (shape and dtype; a list of types for multi-output ops such as scan), source span
and a scoped name like `block1/conv2/W`. Edges are keyed by operand position, so `x * x` keeps both."""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field

import networkx as nx

from dsl.diagnostics import Span

from .dims import Dim, shape_str

DTYPES = ("f32", "f64", "i32", "i64", "bool")
FLOATS = ("f32", "f64")
INTS = ("i32", "i64")


@dataclass(frozen=True)
class TType:
    shape: tuple | None  # tuple of Dim; None when unknown after an earlier error
    dtype: str

    def __str__(self):
        return f"{self.dtype}{shape_str(self.shape) if self.shape is not None else '[?]'}"

    @property
    def rank(self):
        return len(self.shape)

    def subs(self, bindings) -> TType:
        if self.shape is None or not bindings:
            return self
        return TType(tuple(d.subs(bindings) for d in self.shape), self.dtype)


@dataclass
class Instance:
    """One call of a block (or a top-level op) in the model: a row of `dlc check`'s summary."""
    name: str  # scoped name, e.g. "encoder/layer0/attn"
    kind: str  # block or op name
    span: object
    outputs: list = field(default_factory=list)  # node ids
    children: list = field(default_factory=list)
    params: list = field(default_factory=list)  # param/state node ids created under it (tied ones excluded)
    graph: object = None  # the graph its outputs live in, when not the model's (inside a scan body)


class Graph:
    def __init__(self, name: str, parent: Graph | None = None):
        self.name = name
        self.parent = parent
        self.nx = nx.MultiDiGraph()
        self.inputs: list[int] = []
        self.optional_inputs: list[str] = []  # declared `= none`: absent unless elaborated as present
        self.outputs: list[tuple[str, int]] = []
        self.params: dict[str, int] = {}  # scoped name -> node (param and state)
        self.root = Instance(name, "model", None)
        self.dims: dict[str, tuple] = {}  # model-level dimension name -> (Dim value, Span where bound)
        self.train: dict | None = None
        self.state_updates: list[tuple[str, int]] = []  # (state's scoped name, node of its next value)
        self.train_root: Instance | None = None  # layers called by the train section (losses)
        self.n_forward: int | None = None  # nodes before this index are the model; the rest the train section
        self.consts: dict = {}

    def add(self, op: str, inputs, attrs, ttype, span=None, name: str = "") -> int:
        nid = self.nx.number_of_nodes()
        if op in ("rand_uniform", "rand_normal", "scan") and "key" not in attrs:
            # The random stream of a node (and of a scan's body) is keyed by the id it was made with, which
            # copies and later passes keep: a recomputed forward step draws the same numbers.
            attrs = dict(attrs, key=nid)
        self.nx.add_node(nid, op=op, attrs=attrs, inputs=tuple(inputs), type=ttype, span=span, name=name)
        for i, src in enumerate(inputs):
            self.nx.add_edge(src, nid, key=i)
        return nid

    def node(self, nid) -> dict:
        return self.nx.nodes[nid]

    def type(self, nid) -> TType:
        return self.nx.nodes[nid]["type"]

    def __len__(self):
        return self.nx.number_of_nodes()

    def nodes(self):
        return range(self.nx.number_of_nodes())

    def input_signature(self) -> tuple:
        """What binding the inputs' shapes needs of the graph (runtime/interpreter.py bind_signature): its
        constant dimensions, and the name and type of each input and target."""
        consts = {name: v for name, (v, _) in self.dims.items() if v.is_const}
        fed = [(self.node(n)["name"], self.type(n))
               for n in self.inputs + list((self.train or {}).get("targets", {}).values())]
        return consts, fed

    def ancestors(self, roots) -> set:
        """The roots and every node they depend on."""
        seen, stack = set(), list(roots)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.node(n)["inputs"])
        return seen

    def pretty(self) -> str:
        """The graph as text, one node a line: what `dlc compile --emit graph` prints."""
        lines = []
        for n in self.nodes():
            d = self.node(n)
            ins = ", ".join(f"%{i}" for i in d["inputs"])
            attrs = {k: v for k, v in d["attrs"].items() if k != "body"}
            attr_text = ", ".join(f"{k}={_attr_text(v)}" for k, v in attrs.items())
            t = d["type"]
            ttext = " ".join(str(x) for x in t) if isinstance(t, list) else str(t)
            name = f"  # {d['name']}" if d["name"] else ""
            lines.append(f"%{n} = {d['op']}({ins}{', ' if ins and attr_text else ''}{attr_text}) : {ttext}{name}")
            if "body" in d["attrs"]:
                lines += ["    " + x for x in d["attrs"]["body"].pretty().split("\n")]
        outs = ", ".join(f"{k}=%{v}" for k, v in self.outputs)
        lines.append(f"return {outs}")
        return "\n".join(lines)


def _attr_text(v):
    if isinstance(v, tuple) and v and isinstance(v[0], Dim):
        return shape_str(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def canonical_bytes(obj) -> bytes:
    """obj (graphs and the values in and around them) as bytes for a cache key: the same content built the
    same way gives the same bytes in any process, and different content different bytes. A plain pickle
    does not: it writes a value seen before as a reference to it, so equal strings that are one object in
    one process (parsed afresh) and two in another (unpickled from the parse cache) pickle differently.
    Dicts keep their order (equal dicts built in another order only miss the cache); a set would pickle in
    hash order, which differs between processes: the graphs hold none (a test keys models under three
    hash seeds). Raises on what pickle cannot take."""
    f = io.BytesIO()
    p = _Canonical(f, protocol=pickle.HIGHEST_PROTOCOL)
    p.fast = True  # no memo: every value written out in full
    p.dump(obj)
    return f.getvalue()


class _Canonical(pickle.Pickler):
    def reducer_override(self, obj):
        # Every value that is not a plain one comes here: the common ones get a short form (which also
        # spares pickle's own, slower reduction of dataclasses and fractions in Python).
        t = type(obj)
        if t is _FUNCTION:  # the short forms' own names, most of the calls
            return NotImplemented
        if t is Dim:  # terms sorted: H + W and W + H are one Dim
            return _dim, (tuple(sorted((m, c.numerator, c.denominator) for m, c in obj.terms.items())),
                          obj.atoms())
        if t is TType:
            return _ttype, (obj.shape, obj.dtype)
        if t is Span:
            return _span, (obj.source, obj.start, obj.end, obj.line, obj.col)
        if isinstance(obj, Graph):
            # its fields and nodes: not the networkx object, the parent graph (a scan body's) or the layer
            # tree, which code generation does not read and which would lead back to the graph
            nodes = [obj.nx.nodes[n] for n in obj.nodes()]
            return _graph, (obj.name, obj.inputs, obj.optional_inputs, obj.outputs, obj.params, obj.dims,
                            obj.train, obj.state_updates, obj.n_forward, obj.consts, nodes)
        return NotImplemented


# What canonical_bytes writes a Dim, TType, Span and Graph as: names only, never called.
def _dim(*content):
    raise NotImplementedError


_FUNCTION = type(_dim)


def _ttype(*content):
    raise NotImplementedError


def _span(*content):
    raise NotImplementedError


def _graph(*content):
    raise NotImplementedError
