"""CPU code generation: schedules become the Python source of one module of Numba functions.

Each item of a schedule becomes one call. Fused items become generated `@njit` kernels: a loop nest over
the item's shape that computes every member at one index (a reduction's loop keeps its axes innermost
and accumulates in float64). Kernels are named by a hash of their text, so structurally equal items
(the twelve layers of a transformer) share one kernel; the text depends on ranks, broadcast patterns
and attributes, never on sizes, which are arguments. Matmuls call BLAS's gemm (runtime/kernels.py);
convolution and pooling call runtime/kernels.py; a scan is a loop in the step function.

A step function takes the inputs, the persistent storage (parameters, states, optimizer slots, constants:
one flat array per dtype, P_*), one scratch arena per dtype (A_*), the sizes of this call (D), the arena
offsets (O), the persistent offsets (Q), the table T (a row of offsets and sizes per call: a call passes
where its row starts), K (the addresses of the kernels it calls: runtime/kernels.py run), the seed and
step of the random numbers, and its thread's place in a team (tid of nt threads, and S, their barrier:
runtime/compiled.py's Team); it allocates nothing.
Every thread of a team runs the whole function. A call with work (a fused loop, a product, a window op,
a copy) gives each thread a share; any other runs in thread 0 alone; a barrier stands wherever a thread
may next read or overwrite what another wrote.

Nothing the user wrote reaches the source but numbers: names and spans only appear in comments, which are
reduced to printable ASCII on one line (the strings are the names of dlc's kernels)."""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
from dataclasses import dataclass, field, replace

import numpy as np

from .dims import Dim, product
from .graph import Graph
from .ops import _per_axis, window_geometry
from .schedule import CONV_KERNEL, ELEMENTWISE, Item, Schedule, conv_plan

STORE = ("f32", "f64", "i32", "i64", "bool")
NP_NAME = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32", "i64": "np.int64", "bool": "np.bool_"}


class Unsupported(Exception):
    """The graph uses something this target cannot compile (the reference interpreter can run it). Code
    generation puts the .dln location of the item in the message (located)."""

    def __init__(self, message: str, located: bool = False):
        super().__init__(message)
        self.located = located


def comment(text: str) -> str:
    """Text made safe for a `#` comment: printable ASCII, one line."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def where_from(span) -> str:
    """A span for a comment: zoo files by their zoo path, the user's by file name, so that the generated
    source (and its cache key) does not depend on where the checkout or the working folder is."""
    if span is None:
        return "(generated)"
    from dsl.diagnostics import display_path
    shown = display_path(span.source)
    if not shown.startswith("zoo"):
        shown = os.path.basename(span.source)
    return f"{shown}:{span.line}:{span.col}"


def literal(value, dtype: str) -> str:
    if dtype == "bool":
        return "True" if bool(value) else "False"
    if dtype in ("i32", "i64"):
        return f"{NP_NAME[dtype]}({int(value)})"
    v = float(value)
    text = "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf") if math.isinf(v) else repr(v)
    return f"{NP_NAME[dtype]}({text})"


@dataclass
class Output:
    kind: str  # input, persist, scratch, inline
    arg: object  # input name, persistent key, buffer index, or the constant's value
    dtype: str  # storage dtype
    shape: tuple  # of Dim


@dataclass
class Program:
    """What the runner needs to call one generated function."""
    name: str
    graph: Graph
    inputs: list  # input names, in argument order
    dims: list  # Dim per D entry
    buffers: list  # per O entry: its Buffer without its graph (what memory planning needs)
    outputs: dict  # output name -> Output
    updates: dict  # persistent key -> output name of its new value (already written in place)
    schedule: Schedule  # no default: Program.__getattr__ loads it (a class attribute would hide it)
    table: list = field(default_factory=list)  # the int table T: ("D" | "O" | "Q", index) per entry
    rows: list = field(default_factory=list)  # where each call's row of T starts (the call passes it)
    labels: list = field(default_factory=list)  # per call: what it computes (for profiles)
    # per call, K's order: (function, [(argument expression, dtype)]), dtype None for the step function's own
    # arguments; enough to compile every callee and find its address (runtime/compiled.py kernel_addresses)
    calls: list = field(default_factory=list)
    input_dtypes: list = field(default_factory=list)  # storage dtype of each input
    # per call that splits across threads: its work as a Dim (runtime/kernels.py's share weighs it against
    # GRAIN); the runner starts a team of threads only when these add up (see runtime/compiled.py)
    shared_work: list = field(default_factory=list)
    workspaces: list = field(default_factory=list)  # buffers (O entries) that hold one workspace per thread
    prof: object = None  # seconds per call, when the module was generated with profile=True
    signature: tuple = None  # the inputs' names and types (Graph.input_signature)

    # A warm start unpickles its Programs from the cache (runtime/compiled.py generate_cached), and needs
    # neither the graph nor the schedule: the encoder's were 0.8 of 0.9 MB, 0.03 s of its start. They stay
    # pickled until something (dlc compile --emit, a memory plan's report) reads them.
    def __getstate__(self):
        state = dict(self.__dict__)
        if "_heavy" not in state:
            state["_heavy"] = pickle.dumps((state.pop("graph"), state.pop("schedule")), pickle.HIGHEST_PROTOCOL)
        return state

    def __getattr__(self, name):
        heavy = self.__dict__.get("_heavy")
        if name in ("graph", "schedule") and heavy is not None:
            self.graph, self.schedule = pickle.loads(heavy)
            del self.__dict__["_heavy"]
            return self.__dict__[name]
        raise AttributeError(name)


@dataclass
class Persistent:
    dtype: str
    shape: tuple
    value: object = None  # constants: their value


class ModuleGen:
    """One generated module: kernels shared by all of its step functions."""

    def __init__(self, title: str, float_dtype: str = "f32", profile: bool = False):
        self.title = title
        self.profile = profile  # time every call into PROF (objmode clock reads: for finding hot spots)
        self.float_dtype = float_dtype  # "f64": every float computed in float64 (gradient checks)
        self.kernels: dict[str, str] = {}  # kernel text -> name
        self.kernel_notes: dict[str, str] = {}
        self.functions: list[str] = []
        self.programs: dict[str, Program] = {}
        self.persist: dict[str, Persistent] = {}

    def store(self, dtype: str) -> str:
        return self.float_dtype if dtype in ("f32", "f64") and self.float_dtype == "f64" else dtype

    def np(self, dtype: str) -> str:
        return NP_NAME[self.store(dtype)]

    def kernel(self, lines: list[str], params: list[str], note: str) -> str:
        text = "\n".join(lines)
        key = f"({', '.join(params)}):\n{text}"
        name = self.kernels.get(key)
        if name is None:
            name = "k_" + hashlib.sha1(key.encode()).hexdigest()[:10]
            self.kernels[key] = name
            self.kernel_notes[name] = note
        return name

    def add(self, name: str, s: Schedule, inputs: list[str], loss_check: bool = False) -> Program:
        f = _Function(self, name, s, inputs)
        src = f.generate()
        self.functions.append(src)
        self.programs[name] = f.program
        return f.program

    def source(self) -> str:
        out = [f"# Generated by dlc from {comment(os.path.basename(self.title))}. Do not edit: `dlc compile` writes it again.",
               "import math", "", "import numpy as np", "from numba import njit", "",
               "from runtime.kernels import (avg_pool2d, avg_pool2x2, conv2d, conv2d_direct, conv2d_direct_filter,",
               "                             conv2d_wide, conv2d_wide_filter, conv_transpose2d,",
               "                             conv_transpose2d_depthwise, conv_transpose2d_wide, copy, fill,",
               "                             max_pool2d, max_pool2x2, max_pool_grad2d, mix, node_key, normal,",
               "                             scan_carry_lengths, scan_extract, scan_extract_lengths,",
               "                             scan_insert, scan_insert_lengths, sum_run, uniform, erf32, exp32,",
               "                             sigmoid32, tanh32, barrier, gemm, run, share)", ""]
        if self.profile:
            out += ["from runtime.kernels import monotonic_ns", ""]
        for key, name in sorted(self.kernels.items(), key=lambda kv: kv[1]):
            params, body = key.split(":\n", 1)
            out += ["", "@njit(cache=True, no_cpython_wrapper=True, error_model=\"numpy\")", f"def {name}{params}:", f"    # first used by {comment(self.kernel_notes[name])}"]
            out += ["    " + line for line in body.split("\n")]
            out.append("")
        for src in self.functions:
            out += ["", src]
        return "\n".join(out) + "\n"


def _carry_order(bs: Schedule, body: Graph, ns: int, nc: int) -> list:
    """The carries a scan step writes back, in an order where none is overwritten before another's new
    value, which may be its old value (`h2 = h1`), is read from it. Carries that swap (`t = a; a = b;
    b = t`) have no such order: they are refused rather than computed wrong."""
    old = {bs.root(body.inputs[ns + j]): j for j in range(nc)}
    write = [i for i in range(nc) if bs.root(body.outputs[i][1]) != bs.root(body.inputs[ns + i])]
    # i reads carry j's buffer: i before j
    before = {i: old.get(bs.root(body.outputs[i][1])) for i in write}
    order, left = [], list(write)
    while left:
        ready = [i for i in left if not any(before[k] == i for k in left if k != i)]
        if not ready:
            raise Unsupported("the cpu target cannot compile a scan whose carries swap values (each new "
                              "carry is another's old one); compute one of them, as in `a = b * 1.0`")
        order.append(ready[0])
        left.remove(ready[0])
    return order


def horner(pairs) -> str:
    """The C-order flat index of a multi-index: pairs of (index, size of that axis), unit axes left out."""
    if not pairs:
        return "0"
    expr = pairs[0][0]
    for idx, size in pairs[1:]:
        expr = f"({expr}) * {size} + {idx}"
    return expr


def _unit(d) -> bool:
    return Dim.of(d) == Dim.const(1)


_TABLE = re.compile(r"^(D|O|Q)\[(\d+)\]$")


class _Kernel:
    """The parameters of one kernel being written, and what its call passes. An array operand is an array
    parameter plus its offset; offsets and sizes travel in the call's row of the int table T (`r` is the
    row's start), because numba compiles each argument expression of the step function at a cost of
    milliseconds. Loop counters and random keys of the step function are passed as they are."""

    def __init__(self):
        self.arrays: list[tuple[str, str]] = []  # (parameter, array the call passes)
        self.slots: list[tuple[str, tuple]] = []  # (parameter, table entry ("D"|"O"|"Q", index))
        self.extras: list[tuple[str, str, str]] = []  # (parameter, expression the call passes, its dtype)
        self.keys: dict = {}
        self.storage: dict = {}  # (array, offset) -> parameter
        self.count = 0

    def _name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count - 1}"

    def array(self, ref, key=None) -> str:
        if key is not None and key in self.keys:
            return self.keys[key]
        # One parameter per storage: a value written in place over an operand (a scan's carry) is then
        # read and written through one address expression, which LLVM can vectorize without a runtime
        # overlap check (that check fails for in-place updates and falls back to the scalar loop).
        name = self.storage.get(ref)
        if name is not None:
            if key is not None:
                self.keys[key] = name
            return name
        name = self.storage[ref] = self._name("a")
        self.arrays.append((name, ref[0]))
        self.scalar(ref[1], name=name + "o")
        if key is not None:
            self.keys[key] = name
        return name

    def scalar(self, arg, key=None, prefix="n", name=None, dtype="i64") -> str:
        if key is not None and key in self.keys:
            return self.keys[key]
        name = name or self._name(prefix)
        m = _TABLE.match(arg)
        if m:
            self.slots.append((name, (m.group(1), int(m.group(2)))))
        else:
            self.extras.append((name, arg, dtype))
        if key is not None:
            self.keys[key] = name
        return name

    def threaded(self, named: bool):
        """Pass the calling thread's place in its team (tid, nt, S) last, once; named: as the generated
        kernel's parameters (a runtime/kernels.py function's are its own)."""
        if not any(e == "tid" for _, e, _ in self.extras):
            self.extras += [(name if named else "", name, dt) for name, dt in (("tid", "i64"), ("nt", "i64"), ("S", None))]

    @property
    def params(self) -> list[str]:
        return [a for a, _ in self.arrays] + ["T", "r"] + [e for e, _, _ in self.extras]

    def header(self) -> list[str]:
        # unsigned: numba then knows an index cannot be negative, drops its wraparound check, and LLVM can
        # vectorize the loop (3x on a tanh loop)
        return [f"{name} = np.uint64(T[r + {j}])" if j else f"{name} = np.uint64(T[r])"
                for j, (name, _) in enumerate(self.slots)]


class _Function:
    def __init__(self, mod: ModuleGen, name: str, s: Schedule, inputs: list[str]):
        self.mod, self.name, self.s = mod, name, s
        self.inputs = inputs
        self.dims: list[Dim] = []
        self.dim_ix: dict = {}
        self.body: list[str] = []
        self.note = "(step)"
        self.program = Program(name, s.graph, inputs, self.dims, [], {}, {}, s,
                               signature=s.graph.input_signature())
        # what the threads may not have seen yet: None (all met at a barrier), "serial" (thread 0 wrote),
        # "shared" (every thread wrote its part), "loop" (either: a loop's head or end)
        self.pending = None
        self.guarded = False  # the threads met before the first write of persistent storage (guard)
        self.last_call = None  # the function the last call called

    # ---- where values live
    def D(self, d) -> str:
        """A size as an entry of the call's size table. Constants too: a literal argument would make
        numba compile the kernel once per value."""
        d = Dim.of(d)
        if d not in self.dim_ix:
            self.dim_ix[d] = len(self.dims)
            self.dims.append(d)
        return f"D[{self.dim_ix[d]}]"

    def ref(self, s: Schedule, n: int) -> tuple[str, str]:
        """(flat array, offset) of a stored value."""
        kind, arg = s.root(n)
        if kind == "input":
            return f"x{self.inputs.index(arg)}", self.D(0)
        if kind == "persist":
            node = self._persist_node(s, n)
            return self.persist_ref(arg, node[0], node[1])
        if kind == "scratch":
            return f"A_{self.mod.store(self.s.buffers[arg].dtype)}", f"O[{arg}]"
        raise AssertionError(f"no storage for %{n}: {kind}")

    def _persist_node(self, s: Schedule, n: int):
        sched, st = s, s.storage[n]
        while st[0] in ("view", "outer") and st[1] is not None:
            if st[0] == "outer":
                sched = sched.parent
            n = st[1]
            st = sched.storage[n]
        return sched.graph, n

    def persist_ref(self, key: str, g: Graph, n: int) -> tuple[str, str]:
        d = g.node(n)
        t = d["type"]
        mod = self.mod
        if key not in mod.persist:
            value = np.asarray(d["attrs"]["value"]) if d["op"] == "constant" else None
            mod.persist[key] = Persistent(mod.store(t.dtype), t.shape, value)
        return f"P_{mod.persist[key].dtype}", f"Q[{list(mod.persist).index(key)}]"

    def at(self, ref) -> str:
        return f"{ref[0]}[{ref[1]}]"

    def inline(self, s: Schedule, n: int) -> str | None:
        if s.storage[n][0] != "inline":
            return None
        d = s.graph.node(n)
        return literal(np.asarray(d["attrs"]["value"]).reshape(()), d["type"].dtype if d["type"].dtype not in
                       ("f32", "f64") else self.mod.store(d["type"].dtype))

    # ---- the function
    def generate(self) -> str:
        s = self.s
        g = s.graph
        self.emit_items(s, "    ", "rk")
        for name in self.inputs:
            n = next(n for n, (kind, arg) in s.storage.items() if kind == "input" and arg == name)
            self.program.input_dtypes.append(self.mod.store(g.type(n).dtype))
        self.program.buffers = [replace(b, graph=None) for b in self.s.buffers]
        for name, n in g.outputs:
            root = s.root(n)
            t = g.type(n)
            dt = self.mod.store(t.dtype)
            if root[0] == "inline":
                root = ("inline", np.asarray(g.node(n)["attrs"]["value"]))
            self.program.outputs[name] = Output(root[0], root[1], dt, t.shape)
        for key, n in s.updates.items():
            self.program.updates[key] = f"new:{key}"
            if s.root(n) != ("persist", key):
                self.guard("    ")
                node = next(m for m, (k_, a) in s.storage.items() if k_ == "persist" and a == key)
                self.body.append(f"    # new {comment(key)}")
                size = product(g.type(n).shape)
                self.lib("    ", "copy", [self.persist_ref(key, g, node), self.ref(s, n)], ints=[self.D(size)], work=size)
        args = [f"x{i}" for i in range(len(self.inputs))] + [f"P_{d}" for d in STORE] + [f"A_{d}" for d in STORE]
        prof = ", PROF" if self.mod.profile else ""
        # nogil: a team's threads run the function at once
        head = ["@njit(cache=True, error_model=\"numpy\", nogil=True)",
                f"def {self.name}({', '.join(args)}, D, O, Q, T, K, seed, step{prof}, tid, nt, S):",
                f"    # {comment(self.name)}: inputs " + comment(", ".join(self.inputs) or "none"),
                "    rk = mix(mix(seed) ^ step)"]
        if self.mod.profile:
            head += ["    last_ = monotonic_ns()"]
        self.meet("    ")  # the caller reads every thread's results once its own call returns
        return "\n".join(head + self.body + ["    return True", ""])

    def emit_items(self, s: Schedule, ind: str, rk: str):
        g = s.graph
        for it in s.items:
            first = g.node(it.nodes[0])
            where = where_from(first["span"])
            ops = ", ".join(g.node(n)["op"] for n in it.nodes)
            self.body.append(f"{ind}# {comment(where)} {comment(first['name'])}: {comment(ops)}")
            note = f"{where} {first['name']}"
            self.note = f"{note} ({ops})"
            if any(n in s.storage and s.root(n)[0] == "persist" for n in it.nodes):
                self.guard(ind)
            try:
                self.emit_item(s, it, ind, note, rk)
            except Unsupported as e:
                if e.located or first["span"] is None:
                    raise
                from dsl.diagnostics import display_path
                span = first["span"]
                raise Unsupported(f"{display_path(span.source)}:{span.line}:{span.col}: {e}", located=True) from None
            if it.check_loss:
                loss = it.tail if it.tail is not None else it.nodes[-1]
                self.meet(ind)
                self.body.append(f"{ind}if not np.isfinite({self.at(self.ref(s, loss))}):")
                self.body.append(f"{ind}    return False")

    def emit_item(self, s: Schedule, it, ind: str, note: str, rk: str):
        if it.kind == "fused":
            k = _Fused(self, s, it, rk)
            self.kernel_call(ind, k.build(), k.k, note, k.work)
        elif it.kind == "scan":
            self.emit_scan(s, it, ind, rk)
        elif it.kind == "matmul":
            self.emit_matmul(s, it, ind, note, rk)
        elif it.kind in ("conv", "conv_transpose", "max_pool", "avg_pool", "max_pool_grad"):
            self.emit_window(s, it, ind, note, rk)
        elif it.kind in ("concat", "scatter_add"):
            getattr(self, "emit_" + it.kind)(s, it, ind, note)
        else:
            raise Unsupported(f"the cpu target cannot compile `{it.kind}` yet")

    def meet(self, ind):
        """A barrier, where the threads may not have seen each other's writes. Where a thread failed (raised),
        the others leave their barriers and go on to the end, but for the one before anything persistent is
        written (guard): each return of a numba function releases every array it holds, and a return at
        every barrier made the encoder's train_step take 6 s to compile instead of 3.3-4.8."""
        if self.pending is not None:
            self.body.append(f"{ind}barrier(S, nt)")
            self.pending = None

    def guard(self, ind):
        """Before the first write of persistent storage (parameters, optimizer slots, states): the threads
        meet, and return where one failed, so that a step that raised in one thread updates nothing. The
        writes that follow raise nothing (elementwise updates, copies)."""
        if not self.guarded:
            self.guarded = ind == "    "  # in a loop (a scan), each write meets: the loop may not run
            self.body += [f"{ind}if barrier(S, nt):", f"{ind}    return False"]
            self.pending = None

    def call(self, ind, name, k: _Kernel, work=None):
        """A call: its table entries become one row of T. With work (a Dim), every thread calls it and
        does its share (the kernel takes tid and nt); without, thread 0 alone. Consecutive moves of a scan's
        slices (an extract after an extract, an insert after an insert) need no barrier between: each
        copies between a value the scan reads or writes outside its body and a body input or yield, and all
        of those live through the whole scan (schedule.assign_buffers), so no two share space. The char
        LSTM's step meets at 450 fewer barriers (of about 1250): 1.5% of its time."""
        moves = name in ("scan_extract", "scan_insert") and name == self.last_call and self.pending == "shared"
        if not moves and (self.pending in ("shared", "loop") or (work is not None and self.pending == "serial")):
            self.meet(ind)
        self.last_call = name
        row = len(self.program.rows)
        self.program.rows.append(len(self.program.table))
        self.program.table += [entry for _, entry in k.slots]
        # the row's start as a constant: read from an array, 0.4 s of the encoder's train_step compile
        args = [(arr, None) for _, arr in k.arrays] + [("T", None), (str(self.program.rows[row]), "i64")]
        args += [(e, dt) for _, e, dt in k.extras]
        # K[row]: the address of name's machine code for these arguments (runtime/kernels.py run)
        text = f"run(\"{name}\", K[{row}], {', '.join(a for a, _ in args)})"
        if work is None:
            self.body += [f"{ind}if tid == 0:", f"{ind}    {text}"]
            self.pending = "serial"
        else:
            self.body.append(f"{ind}{text}")
            self.program.shared_work.append(work)
            self.pending = "shared"
        self.program.calls.append((name, args))
        self.program.labels.append(f"{self.note} [{name}]")
        if self.mod.profile:
            self.body += [f"{ind}now_ = monotonic_ns()", f"{ind}PROF[{row}] += (now_ - last_) * 1e-9",
                          f"{ind}last_ = now_"]

    def kernel_call(self, ind, lines, k: _Kernel, note, work=None):
        self.call(ind, self.mod.kernel(k.header() + lines, k.params, note), k, work)

    def share(self, k: _Kernel, n: str, work) -> str:
        """The line that gives this thread its part [lo, hi) of range(n), for a kernel of this work."""
        k.threaded(named=True)
        return f"lo, hi = share({n}, {k.scalar(self.D(work), key='work')}, tid, nt, S)"

    def lib(self, ind, name, refs=(), arrays=(), ints=(), extras=(), work=None):
        """A call of a runtime/kernels.py function: arrays, then T and the row of offsets and ints, then the
        extras; with work, (tid, nt, S) last: the function takes its share."""
        k = _Kernel()
        for ref in refs:
            k.arrays.append(("", ref[0]))
            k.scalar(ref[1], name="")
        for arr in arrays:
            k.arrays.append(("", arr))
        for v in ints:
            k.scalar(v, name="")
        for e, dtype in extras:
            k.extras.append(("", e, dtype))
        if work is not None:
            k.threaded(named=False)
        self.call(ind, name, k, work)

    # ---- matmul: BLAS on 2-d views made inside the kernel
    def emit_matmul(self, s: Schedule, it, ind: str, note: str, rk: str):
        g = s.graph
        n = it.nodes[0]
        a, b = g.node(n)["inputs"]
        ta, tb = 0 in it.transposed, 1 in it.transposed
        A_, B_, out = g.type(a), g.type(b), g.type(n)
        k = _Kernel()
        o = k.array(self.ref(s, n))
        pa = k.array(self.ref(s, it.transposed.get(0, a)))
        pb = k.array(self.ref(s, it.transposed.get(1, b)))
        sa = A_.shape if A_.rank > 1 else (Dim.const(1),) + A_.shape
        sb = B_.shape if B_.rank > 1 else B_.shape + (Dim.const(1),)
        M, K, N = (k.scalar(self.D(d), key=("size", self.D(d))) for d in (sa[-2], sa[-1], sb[-1]))
        nb = max(len(sa), len(sb)) - 2
        full = list(out.shape[:nb])
        bs = [k.scalar(self.D(d)) for d in full]
        iv = [f"i{j}" for j in range(nb)]

        def batch_index(shape):
            off = nb - (len(shape) - 2)
            return horner([(iv[j + off], bs[j + off]) for j in range(len(shape) - 2) if not _unit(shape[j])])
        float_out = self.mod.store(out.dtype) in ("f32", "f64")
        work = product(list(out.shape) + [sa[-1]]) // 8 if float_out else None  # threads split the batch or rows
        lines = [("    " * j) + f"for i{j} in range({bs[j]}):" for j in range(nb)]
        if work is not None and nb:
            lines = [self.share(k, bs[0], work), "for i0 in range(lo, hi):"] + lines[1:]
        ind2 = "    " * nb
        lines += [ind2 + f"ao = {pa}o + ({batch_index(sa)}) * {M} * {K}",
                  ind2 + f"bo = {pb}o + ({batch_index(sb)}) * {K} * {N}",
                  ind2 + f"oo = {o}o + ({horner([(iv[j], bs[j]) for j in range(nb) if not _unit(full[j])])}) * {M} * {N}"]
        lda, ldb = (M if ta else K), (K if tb else N)

        def epilogue(axis, depth):  # the loop after the product, over this thread's block of it
            return ["    " * depth + x for x in self.epilogue(s, it, k, rk, axis)]
        if float_out and not nb:
            # a thread's block of the longer side: rows of the product (rows of a, or its columns when
            # transposed) or columns (of b, or its rows). Each thread packs all of the other operand.
            tt = f"{int(ta)}, {int(tb)}"
            lines += [f"if {M} >= {N}:", "    " + self.share(k, M, work), "    if hi > lo:",
                      f"        gemm({tt}, hi - lo, {N}, {K}, {pa}, ao + lo{'' if ta else f' * {K}'}, {lda}, "
                      f"{pb}, bo, {ldb}, {o}, oo + lo * {N}, {N})", *epilogue(0, 2),
                      "else:", "    " + self.share(k, N, work), "    if hi > lo:",
                      f"        gemm({tt}, {M}, hi - lo, {K}, {pa}, ao, {lda}, "
                      f"{pb}, bo + lo{f' * {K}' if tb else ''}, {ldb}, {o}, oo + lo, {N})", *epilogue(1, 2)]
        elif float_out:
            lines.append(ind2 + f"gemm({int(ta)}, {int(tb)}, {M}, {N}, {K}, {pa}, ao, {lda}, {pb}, bo, {ldb}, {o}, oo, {N})")
            lines += epilogue(0, 0)  # over this thread's part of the first batch axis
        else:  # integers: plain loops (BLAS has none)
            ai = f"ao + k * {M} + i" if ta else f"ao + i * {K} + k"
            bi = f"bo + j * {K} + k" if tb else f"bo + k * {N} + j"
            lines += [ind2 + f"for i in range({M}):", ind2 + f"    for j in range({N}):", ind2 + "        acc = 0",
                      ind2 + f"        for k in range({K}):", ind2 + f"            acc += {pa}[{ai}] * {pb}[{bi}]",
                      ind2 + f"        {o}[oo + i * {N} + j] = acc"]
        self.kernel_call(ind, lines, k, note, work)

    def epilogue(self, s: Schedule, it, k: _Kernel, rk: str, axis: int) -> list[str]:
        """The lines of an item's epilogue (schedule.Item.epilogue) in its kernel k, over the range
        [lo, hi) of one axis: the part of the output that this thread made."""
        if not it.epilogue:
            return []
        tail = it.nodes[it.epilogue:]
        fz = _Fused(self, s, Item("fused", tail, it.domain, stored=[m for m in it.stored if m in tail]), rk)
        fz.k = k
        return fz.build(part=(axis, "lo", "hi"))

    # ---- windows: runtime/kernels.py on 2-d (a 1-d op runs with height 1)
    def emit_window(self, s: Schedule, it, ind: str, note: str, rk: str):
        g = s.graph
        n = it.nodes[0]
        d = g.node(n)
        a = d["attrs"]
        ins = list(d["inputs"])
        nsp = g.type(ins[0]).rank - 2
        if nsp not in (1, 2):
            raise Unsupported(f"the cpu target runs 1-d and 2-d `{it.kind}`, not {nsp}-d")

        def dims4(node):
            sh = g.type(node).shape
            sh = sh if nsp == 2 else (sh[0], sh[1], Dim.const(1), sh[2])
            return [self.D(x) for x in sh]

        def two(vals, fill):
            return ([fill] + list(vals)) if nsp == 1 else list(vals)
        refs = lambda nodes: [self.ref(s, node) for node in nodes]  # noqa: E731
        if it.kind in ("conv", "conv_transpose"):
            stride = two(_per_axis(a["stride"], nsp, "stride"), 1)
            pad = two(_per_axis(a["pad"], nsp, "pad"), 0)
            dil = two(_per_axis(a.get("dilation", 1), nsp, "dilation"), 1)
            ints = dims4(ins[0]) + dims4(ins[1]) + dims4(n) + [self.D(v) for v in stride + pad + dil]
            ws = (f"A_{self.mod.store(g.type(n).dtype)}", f"O[{it.workspace}]")
            images, size, layout = conv_plan(g, it)
            self.program.workspaces.append(it.workspace)  # one per thread: threads split the images
            # multiply-adds / 8, as a product's
            work = product(list(g.type(ins[0] if it.kind == "conv_transpose" else n).shape) +
                           list(g.type(ins[1]).shape[1:])) // 8
            ints += [self.D(a.get("groups", 1)), self.D(images), self.D(layout), self.D(size), self.D(work)]
            self.lib(ind, CONV_KERNEL[layout], refs([ins[0], ins[1], n]) + [ws], ints=ints, work=work)
            if it.epilogue:
                # its own kernel (a kernel calling the convolution would compile all of it again, a second
                # of a cold start each), over the images that share gave this thread in the convolution,
                # so with no barrier between
                k = _Kernel()
                images = k.scalar(self.D(g.type(n).shape[0]), key=("size", self.D(g.type(n).shape[0])))
                lines = [self.share(k, images, work)] + self.epilogue(s, it, k, rk, 0)
                self.pending = None
                self.kernel_call(ind, lines, k, note, work)
            return
        kk = _per_axis(a["k"], nsp, "k")
        stride, pad, _ = window_geometry(kk, dict(a, dilation=1), nsp)
        geo = [self.D(v) for v in two(kk, 1) + two(stride, 1) + two(pad, 0)]
        work = product(list(g.type(ins[0]).shape))  # threads split the images
        if it.kind == "max_pool_grad":
            self.lib(ind, "max_pool_grad2d", refs(ins + [n]), ints=dims4(ins[0]) + dims4(ins[1]) + geo + [self.D(work)],
                     work=work)
        else:
            # windows known to be 2x2 at stride 2 inside the input get a kernel of their own (LeNet's, VGG's)
            hw, ohw = g.type(ins[0]).shape[2:], g.type(n).shape[2:]
            two_by_two = (nsp == 2 and [int(v) for v in list(kk) + list(stride)] == [2] * 4 and not any(pad)
                          and all(d.is_const for d in list(hw) + list(ohw))
                          and all(2 * int(o) <= int(i) for o, i in zip(ohw, hw)))
            self.lib(ind, it.kind + ("2x2" if two_by_two else "2d"), refs([ins[0], n]),
                     ints=dims4(ins[0]) + dims4(n) + geo + [self.D(work)], work=work)

    # ---- movement items, by flat index arithmetic
    def _shape_params(self, k: _Kernel, shape, tag):
        return [k.scalar(self.D(d), key=(tag, q)) for q, d in enumerate(shape)]

    def emit_concat(self, s: Schedule, it, ind: str, note: str):
        g = s.graph
        n = it.nodes[0]
        ins = list(g.node(n)["inputs"])
        ax = g.node(n)["attrs"]["axis"]
        out = g.type(n)
        r = out.rank
        k = _Kernel()
        o = k.array(self.ref(s, n))
        osz = self._shape_params(k, out.shape, "o")
        lines = ["off = np.uint64(0)"]
        for j, i in enumerate(ins):
            src = k.array(self.ref(s, i))
            isz = [osz[q] if q != ax else k.scalar(self.D(g.type(i).shape[ax])) for q in range(r)]
            lines += ["    " * q + f"for i{q} in range({isz[q]}):" for q in range(r)]
            oi = horner([(f"off + i{q}" if q == ax else f"i{q}", osz[q]) for q in range(r)])
            si = horner([(f"i{q}", isz[q]) for q in range(r)])
            lines.append("    " * r + f"{o}[{o}o + {oi}] = {src}[{src}o + {si}]")
            lines.append(f"off += {isz[ax]}")
        self.kernel_call(ind, lines, k, note)

    def emit_scatter_add(self, s: Schedule, it, ind: str, note: str):
        g = s.graph
        n = it.nodes[0]
        base, idx, upd = g.node(n)["inputs"]
        ax = g.node(n)["attrs"]["axis"]
        ri, ru = g.type(idx).rank, g.type(upd).rank
        k = _Kernel()
        o = k.array(self.ref(s, n))
        b = k.array(self.ref(s, base))
        ix = k.array(self.ref(s, idx))
        u = k.array(self.ref(s, upd))
        osz = self._shape_params(k, g.type(n).shape, "o")
        usz = self._shape_params(k, g.type(upd).shape, "u")
        lines = [f"for i in range({' * '.join(osz) or '1'}):", f"    {o}[{o}o + i] = {b}[{b}o + i]"]
        loops = [f"for i{q} in range({usz[q]}):" for q in range(ru)]
        # Threads split an axis of the output other than the scattered one, the last (an embedding's
        # columns) or else the first, so two never add into one element; each copies its own part first.
        work = product(g.type(upd).shape)
        if ax + ri < ru:
            last = osz[-1]
            lines = [self.share(k, last, work), f"for i in range({' * '.join(osz[:-1]) or '1'}):",
                     "    for c in range(lo, hi):", f"        {o}[{o}o + i * {last} + c] = {b}[{b}o + i * {last} + c]"]
            loops[-1] = f"for i{ru - 1} in range(lo, hi):"
        elif ax > 0:
            rest = " * ".join(osz[1:])
            lines = [self.share(k, osz[0], work), f"for i in range(lo * {rest}, hi * {rest}):",
                     f"    {o}[{o}o + i] = {b}[{b}o + i]"]
            loops[0] = "for i0 in range(lo, hi):"
        else:
            work = None
        # the index is read, and checked, once for the row it adds (the loops past the indexed axes
        # inside): LLVM cannot move the load out of a loop that stores into another array
        picked = ax + ri
        lines += ["    " * q + x for q, x in enumerate(loops[:picked])]
        jj = horner([(f"i{q}", usz[q]) for q in range(ax, picked)])
        oi = horner([(f"i{q}", osz[q]) for q in range(ax)] + [("np.uint64(j)", osz[ax])]
                    + [(f"i{q}", osz[q - ri + 1]) for q in range(picked, ru)])
        add = f"{o}[{o}o + {oi}] += {u}[{u}o + {horner([(f'i{q}', usz[q]) for q in range(ru)])}]"
        ind2 = "    " * picked
        lines.append(ind2 + f"j = {ix}[{ix}o + {jj}]")
        if g.node(n)["attrs"]["outside"] == "zero":  # an index outside adds nothing
            lines.append(ind2 + f"if j >= 0 and j < {osz[ax]}:")
            ind2 += "    "
        else:
            lines += [ind2 + f"if j < 0 or j >= {osz[ax]}:", ind2 + "    raise IndexError('scatter_add index out of range')"]
        lines += [ind2 + "    " * (q - picked) + x for q, x in enumerate(loops) if q >= picked]
        lines.append(ind2 + "    " * (ru - picked) + add)
        self.kernel_call(ind, lines, k, note, work)

    # ---- scan: a loop in the step function
    def emit_scan(self, s: Schedule, it, ind: str, rk: str):
        g = s.graph
        n = it.nodes[0]
        d = g.node(n)
        a = d["attrs"]
        body: Graph = a["body"]
        bs = it.body
        ns, nc = a["n_seqs"], a["n_carries"]
        ins = list(d["inputs"])
        seqs, inits = ins[:ns], ins[ns:ns + nc]
        lengths = ins[ns + nc] if a["has_lengths"] else None
        axis, reverse = a["axis"], a["reverse"]
        ny = len(d["type"]) - nc
        outs = {g.node(u)["attrs"]["index"]: u for u in it.stored}
        seq_shape = g.type(seqs[0]).shape
        T = self.D(seq_shape[axis])
        pre = lambda sh: self.D(product(sh[:axis]))  # noqa: E731
        post = lambda sh: self.D(product(sh[axis + 1:]))  # noqa: E731
        tag = f"{n}_{len(self.body)}"
        k, body_rk = f"k{tag}", f"rk{tag}"
        carries = [self.ref(bs, body.inputs[ns + i]) for i in range(nc)]
        for i, c in enumerate(inits):
            size = product(g.type(c).shape)
            lit = self.inline(s, c)
            if lit is not None:
                self.lib(ind, "fill", [carries[i]], ints=[self.D(size)], extras=[(lit, self.mod.store(g.type(c).dtype))],
                         work=size)
            else:
                self.lib(ind, "copy", [carries[i], self.ref(s, c)], ints=[self.D(size)], work=size)
        lens = self.ref(s, lengths) if lengths is not None else None
        if lengths is not None:
            for j in range(ny):
                if j in outs:
                    dt = self.mod.store(g.type(outs[j]).dtype)
                    size = product(g.type(outs[j]).shape)
                    self.lib(ind, "fill", [self.ref(s, outs[j])], ints=[self.D(size)], extras=[(literal(0, dt), dt)],
                             work=size)
        self.body.append(f"{ind}for {k} in range({T}):")
        self.pending = "loop"  # the first call of an iteration meets the end of the last one
        ind2 = ind + "    "
        if lengths is None:
            self.body.append(f"{ind2}pos = {T} - 1 - {k}" if reverse else f"{ind2}pos = {k}")
            where = "pos"
        else:
            where = f"-1 - {k}" if reverse else k
        self.body.append(f"{ind2}{body_rk} = mix(mix({rk} ^ np.uint64({int(a.get('key', n))})) ^ np.uint64({where}))")
        batch = self.D(g.type(lengths).shape[0]) if lengths is not None else None
        rev = self.D(1 if reverse else 0)

        def move(kind, dst, src, shape):
            geo = [pre(shape), T, post(shape)]
            if lengths is None:
                self.lib(ind2, f"scan_{kind}", [dst, src], ints=geo, extras=[("pos", "i64")],
                         work=product(list(shape[:axis]) + list(shape[axis + 1:])))
            else:
                self.lib(ind2, f"scan_{kind}_lengths", [dst, src, lens], ints=geo + [batch, rev], extras=[(k, "i64")])
        for i, sq in enumerate(seqs):
            move("extract", self.ref(bs, body.inputs[i]), self.ref(s, sq), g.type(sq).shape)
        self.emit_items(bs, ind2, body_rk)
        for j in range(ny):
            if j in outs:
                y = body.outputs[nc + j][1]
                move("insert", self.ref(s, outs[j]), self.ref(bs, y), g.type(outs[j]).shape)
        # after the yields: a yield may be the step's old carry (BPTT saves them)
        for i in _carry_order(bs, body, ns, nc):
            new = body.outputs[i][1]
            size = product(body.type(new).shape)
            if lengths is None:
                self.lib(ind2, "copy", [carries[i], self.ref(bs, new)], ints=[self.D(size)], work=size)
            else:
                self.lib(ind2, "scan_carry_lengths", [carries[i], self.ref(bs, new), lens], ints=[self.D(size), batch],
                         extras=[(k, "i64")])
        self.pending = "loop"


class _Fused:
    """One fused item as a kernel: loops over its shape, each member one local per index."""

    def __init__(self, f: _Function, s: Schedule, it, rk: str):
        self.f, self.s, self.it, self.g, self.rk = f, s, it, s.graph, rk
        self.k = _Kernel()
        self.members = it.nodes if it.tail is None else it.nodes[:-1]
        self.mset = set(self.members)
        self.local = {m: f"t{q}" for q, m in enumerate(self.members)}  # by position: equal items, equal text
        self.dom = tuple(it.domain)
        self.r = len(self.dom)
        self.work = None  # set when threads split the outer loop

    def flat_ok(self) -> bool:
        """Every member elementwise and every operand of the item's own shape: one flat loop."""
        if self.it.tail is not None:
            return False
        for m in self.members:
            op = self.g.node(m)["op"]
            if op not in ELEMENTWISE and op not in ("fill", "dim_value", "rand_uniform", "rand_normal"):
                return False
            for o in self.g.node(m)["inputs"]:
                if o not in self.mset and self.s.storage[o][0] != "inline":
                    sh = self.g.type(o).shape
                    if sh and tuple(sh) != self.dom:
                        return False
        return True

    def merge_axes(self, alone: int | None = None) -> list | None:
        """Adjacent axes that every operand either spans both of or broadcasts along both of are one
        axis: a bias over [N, C, H, W] runs over [N, C, H*W], so the inner loop is long enough to
        vectorize. Only for loops of elementwise members (an index read or a reduction names its axes).
        The axis alone (an epilogue's part) stays an axis of its own."""
        if self.it.tail is not None or self.r < 2:
            return None
        if any(self.g.node(m)["op"] not in ELEMENTWISE | {"fill", "dim_value", "rand_uniform", "rand_normal",
                                                           "broadcast_to"} for m in self.members):
            return None
        spans = []
        for m in self.members:
            for o in self.g.node(m)["inputs"]:
                if o not in self.mset and self.s.storage[o][0] != "inline":
                    sh = tuple(self.g.type(o).shape)
                    sh = (Dim.const(1),) * (self.r - len(sh)) + sh
                    spans.append([not _unit(d) for d in sh])
        groups = [[0]]
        for q in range(1, self.r):
            if alone not in (q, q - 1) and all(sp[q] == sp[q - 1] for sp in spans):
                groups[-1].append(q)
            else:
                groups.append([q])
        if len(groups) == self.r:
            return None
        self.dom = tuple(product([self.dom[q] for q in grp]) for grp in groups)
        self.r = len(groups)
        return groups

    def merged(self, shape) -> tuple:
        """An operand's shape on the merged axes."""
        if self.groups is None:
            return tuple(shape)
        full = (Dim.const(1),) * (sum(len(grp) for grp in self.groups) - len(shape)) + tuple(shape)
        return tuple(product([full[q] for q in grp]) for grp in self.groups)

    def build(self, part: tuple | None = None):
        """The kernel's lines; part (axis, lo, hi): over that range of one axis only, the part of the
        output this thread made (an epilogue of a matmul or a convolution), else threads split the outer
        axis."""
        g, f, k = self.g, self.f, self.k
        it = self.it
        stored = [n for n in it.stored if n != it.tail]
        outs = [k.array(f.ref(self.s, n)) for n in stored]
        tail_out = k.array(f.ref(self.s, it.tail)) if it.tail is not None else None
        self.flat = part is None and self.flat_ok()
        self.groups = None if self.flat else self.merge_axes(None if part is None else part[0])
        if part is not None and self.groups is not None:  # the part's axis, counted in merged axes
            part = (next(q for q, grp in enumerate(self.groups) if part[0] in grp),) + part[1:]
        if self.flat:
            self.size = k.scalar(f.D(product(self.dom)))
            self.iv, self.n = ["i"], [self.size]
        else:
            self.n = [k.scalar(f.D(d), key=("size", f.D(d))) for d in self.dom]  # an epilogue's are its host's
            self.iv = [f"i{q}" for q in range(self.r)]
        placed = [line if isinstance(line, tuple) else (len(self.iv), line)
                  for m in self.members for line in self.member(m)]
        full = self.index(self.dom)
        stores = [f"{o}[{o}o + {full}] = {self.local[n]}" for o, n in zip(outs, stored)]
        lines = []
        if it.tail is None:
            loops = [f"for i in range({self.size}):"] if self.flat else \
                [f"for i{q} in range({self.n[q]}):" for q in range(self.r)]
            if part is not None:
                axis, lo, hi = part
                loops[axis] = f"for i{axis} in range({lo}, {hi}):"
            elif self.r:  # every index is written once: threads split the outer loop
                self.work = product(list(self.dom)) * len(self.members)
                lines.append(f.share(k, self.n[0], self.work))
                loops[0] = f"for {self.iv[0]} in range(lo, hi):"
            # a statement that reads only the outer indices runs in the loop of the last of them: LLVM
            # cannot move a load out of a loop that stores through another array that might overlap it
            for q in range(len(loops) + 1):
                lines += ["    " * q + x for depth, x in placed if depth == q]
                if q < len(loops):
                    lines.append("    " * q + loops[q])
            lines += ["    " * len(loops) + x for x in stores]
            return lines
        stmts = [x for _, x in placed]
        # a reduction: the kept axes outside, the reduced axes inside, a float64 accumulator
        d = g.node(it.tail)
        op = d["op"]
        src = d["inputs"][0]
        rank = self.r
        if op in ("argmax", "argmin"):
            axes = [d["attrs"]["axis"] % rank] if rank else []
        else:
            ax = d["attrs"].get("axis")
            axes = list(range(rank)) if ax is None else sorted(a % rank for a in ([ax] if isinstance(ax, int) else ax))
        kept = [q for q in range(rank) if q not in axes]
        is_float = f.mod.store(g.type(src).dtype) in ("f32", "f64")
        if (op in ("sum", "mean", "max", "min") and kept and axes == list(range(len(axes)))
                and not _unit(self.dom[-1])):
            return lines + self.leading_reduction(op, axes, kept, stmts + stores, tail_out, src, is_float, d)
        for depth, q in enumerate(kept):
            lines.append("    " * depth + f"for i{q} in range({self.n[q]}):")
        if kept:  # each kept index is one result: threads split the outer one
            self.work = product(list(self.dom)) * len(self.members)
            lines[-len(kept):-len(kept) + 1 or None] = [f.share(k, self.n[kept[0]], self.work),
                                                        f"for i{kept[0]} in range(lo, hi):"]
        ind = "    " * len(kept)
        init = {"sum": "0.0" if is_float else "0", "mean": "0.0",
                "max": "-np.inf" if is_float else "-9223372036854775807 - 1",
                "min": "np.inf" if is_float else "9223372036854775807"}
        loops = [ind + "    " * depth + f"for i{q} in range({self.n[q]}):" for depth, q in enumerate(axes)]
        ind2 = ind + "    " * len(axes)
        # A float sum is a chain LLVM must not reorder, so a loop that accumulates runs scalar, and every
        # member with it (softmax's exp). When the summed value is stored anyway, the members run in one
        # vectorizable loop and a second loop sums what it stored.
        split = op in ("sum", "mean") and src in stored
        if split:
            lines += loops + [ind2 + x for x in stmts + stores]
        if op in ("argmax", "argmin"):
            lines += [ind + "best = np.int64(-1)", ind + f"bv = {init['max' if op == 'argmax' else 'min']}"]
        else:
            lines.append(ind + f"acc = {init[op]}")
        lines += loops
        if split:
            o = outs[stored.index(src)]
            v = f"{o}[{o}o + {full}]"
            last = self.r - 1
            if is_float and axes and axes[-1] == last and not _unit(self.dom[last]):
                # the innermost reduced axis is one contiguous run of what was stored: sum it vectorized
                lines.pop()
                outer = horner([(self.iv[j], self.n[j]) for j in range(last) if not _unit(self.dom[j])])
                v = f"sum_run({o}, {o}o + ({outer}) * {self.n[last]}, {self.n[last]})"
                ind2 = ind2[:-4]
        else:
            lines += [ind2 + x for x in stmts + stores]
            v = self.local[src] if src in self.mset else self.leaf(src)
        if op in ("sum", "mean"):
            lines.append(ind2 + f"acc += {v}")
        elif op in ("max", "min"):
            lines.append(ind2 + f"acc = np.{'maximum' if op == 'max' else 'minimum'}(acc, {v})")
        else:
            cmp = ">" if op == "argmax" else "<"
            lines += [ind2 + f"if best < 0 or {v} {cmp} bv:", ind2 + f"    bv = {v}", ind2 + f"    best = np.int64(i{axes[0]})"]
        oi = horner([(f"i{q}", self.n[q]) for q in kept if not _unit(self.dom[q])])
        T = f.mod.np(d["type"].dtype)
        target = f"{tail_out}[{tail_out}o + {oi}]"
        if op == "mean":
            lines.append(ind + f"{target} = {T}(acc / ({' * '.join(self.n[q] for q in axes) or '1'}))")
        elif op in ("argmax", "argmin"):
            lines.append(ind + f"{target} = best")
        else:
            lines.append(ind + f"{target} = {T}(acc)")
        return lines

    def leading_reduction(self, op, axes, kept, body, out, src, is_float, d) -> list[str]:
        """A reduction over leading axes (a bias gradient: sum over the batch) walks its input in memory
        order and accumulates into the output in its own dtype, as NumPy does along a non-inner axis; the
        inner loop then runs over contiguous memory."""
        f = self.f
        T = f.mod.np(d["type"].dtype)
        size = " * ".join(self.n[q] for q in kept)
        init = {"sum": "0", "mean": "0", "max": "-np.inf" if is_float else "-9223372036854775807 - 1",
                "min": "np.inf" if is_float else "9223372036854775807"}[op]
        lines = [f"for j in range({size}):", f"    {out}[{out}o + j] = {init}"]
        for depth, q in enumerate(axes + kept):
            lines.append("    " * depth + f"for i{q} in range({self.n[q]}):")
        ind = "    " * (len(axes) + len(kept))
        lines += [ind + x for x in body]
        v = self.local[src] if src in self.mset else self.leaf(src)
        target = f"{out}[{out}o + {horner([(f'i{q}', self.n[q]) for q in kept if not _unit(self.dom[q])])}]"
        if op in ("sum", "mean"):
            lines.append(ind + f"{target} += {v}")
        else:
            lines.append(ind + f"{target} = np.{'maximum' if op == 'max' else 'minimum'}({target}, {v})")
        if op == "mean":
            count = " * ".join(self.n[q] for q in axes)
            lines += [f"for j in range({size}):", f"    {out}[{out}o + j] = {T}({out}[{out}o + j] / ({count}))"]
        return lines

    def index(self, shape) -> str:
        """The flat index, at the current point of the domain, of a value of this shape (broadcast)."""
        if not shape:
            return "0"
        if self.flat:
            return "i"
        off = self.r - len(shape)
        return horner([(self.iv[j + off], self.n[j + off]) for j in range(len(shape)) if not _unit(shape[j])])

    def flat_index(self) -> str:
        """The element's position in C order: the counter of a random stream."""
        return self.index(self.dom) if self.r else "0"

    def leaf(self, o: int) -> str:
        lit = self.f.inline(self.s, o)
        if lit is not None:
            return lit
        a = self.k.array(self.f.ref(self.s, o), key=o)
        return f"{a}[{a}o + {self.index(self.merged(self.g.type(o).shape))}]"

    def operand(self, o: int) -> str:
        return self.local[o] if o in self.mset else self.leaf(o)

    def member(self, m: int) -> list[str]:
        g, f, k = self.g, self.f, self.k
        d = g.node(m)
        op, a = d["op"], d["attrs"]
        ins = list(d["inputs"])
        T = f.mod.np(d["type"].dtype)
        x = [self.operand(o) for o in ins] if op not in ("transpose", "slice", "gather", "one_hot", "pad") else []
        t = self.local[m]
        e, j = "e" + t[1:], "j" + t[1:]
        if op in _FAST32 and f.mod.store(d["type"].dtype) == "f32":
            return [f"{t} = {_FAST32[op]}({x[0]})"]
        if op in _UNARY:
            return [f"{t} = {T}({_UNARY[op].format(*x)})"]
        if op == "sigmoid":
            return [f"{e} = np.exp(-abs({x[0]}))",
                    f"{t} = {T}(1.0) / ({T}(1.0) + {e}) if {x[0]} >= 0 else {e} / ({T}(1.0) + {e})"]
        if op in _BINARY:
            return [f"{t} = {T}({_BINARY[op].format(*x)})"]
        if op == "select":
            return [f"{t} = {x[1]} if {x[0]} else {x[2]}"]
        if op in ("cast", "stop_gradient", "broadcast_to"):
            return [f"{t} = {T}({x[0]})"]
        if op == "fill":
            return [f"{t} = {literal(a['value'], f.mod.store(d['type'].dtype))}"]
        if op == "iota":
            return [f"{t} = {T}({self.iv[a['axis']]})"]
        if op == "dim_value":
            return [f"{t} = {T}({k.scalar(f.D(a['dim']), prefix='s')})"]
        if op in ("rand_uniform", "rand_normal"):
            rk = k.scalar(self.rk, key="rk", prefix="rk", dtype="u64")
            node = k.scalar(f.D(int(a.get("key", m))), prefix="key")
            keys = [f"node_key({rk}, np.uint64({node}), np.uint64({stream}))" for stream in (0, 1)]
            if op == "rand_uniform":
                lo, hi = float(a["low"]), float(a["high"])
                return [f"{t} = {T}({lo!r} + {hi - lo!r} * uniform({keys[0]}, {self.flat_index()}))"]
            return [f"{t} = {T}({float(a['mean'])!r} + {float(a['std'])!r} * normal({keys[0]}, {keys[1]}, "
                    f"{self.flat_index()}))"]
        src = k.array(f.ref(self.s, ins[0]), key=ins[0])
        if op == "transpose":
            perm = a["perm"]
            inv = {p: q for q, p in enumerate(perm)}  # source axis p is output axis inv[p]
            sh = g.type(ins[0]).shape
            idx = horner([(self.iv[inv[p]], self.n[inv[p]]) for p in range(self.r) if not _unit(sh[p])])
            return [f"{t} = {src}[{src}o + {idx}]"]
        if op == "slice":
            ax = a["axis"]
            start = k.scalar(f.D(a["start"]))
            size = k.scalar(f.D(g.type(ins[0]).shape[ax]))
            pos = f"{start} + np.uint64({a['step']}) * {self.iv[ax]}" if a["step"] != 1 else f"{start} + {self.iv[ax]}"
            sh = g.type(ins[0]).shape
            idx = horner([(pos if q == ax else self.iv[q], size if q == ax else self.n[q])
                          for q in range(self.r) if q == ax or not _unit(sh[q])])
            return [f"{t} = {src}[{src}o + {idx}]"]
        if op == "pad":  # inside the source: its element; in the border: the pad value
            sh = g.type(ins[0]).shape
            pads = list(a["pads"]) + [(0, 0)] * (self.r - len(a["pads"]))
            sizes = [k.scalar(f.D(sh[q])) if int(pads[q][0]) or int(pads[q][1]) else self.n[q] for q in range(self.r)]
            # unsigned: a position before the source wraps to a huge value, so `< size` alone says inside
            pos = [f"({self.iv[q]} - np.uint64({int(pads[q][0])}))" if int(pads[q][0]) else self.iv[q]
                   for q in range(self.r)]
            inside = " and ".join(f"{pos[q]} < {sizes[q]}" for q in range(self.r)
                                  if int(pads[q][0]) or int(pads[q][1])) or "True"
            idx = horner([(pos[q], sizes[q]) for q in range(self.r) if not _unit(sh[q])])
            value = literal(a["value"], f.mod.store(d["type"].dtype))
            return [f"{t} = {src}[{src}o + {idx}] if {inside} else {value}"]
        if op == "gather":
            ix = k.array(f.ref(self.s, ins[1]), key=ins[1])
            ax = a["axis"]
            ri = g.type(ins[1]).rank
            rows = k.scalar(f.D(g.type(ins[0]).shape[ax]))
            mid = horner([(self.iv[q], self.n[q]) for q in range(ax, ax + ri) if not _unit(self.dom[q])])
            sh = g.type(ins[0]).shape
            pairs = [(self.iv[q], self.n[q]) for q in range(ax) if not _unit(sh[q])] + [(f"np.uint64({j})", rows)]
            pairs += [(self.iv[q + ri - 1], self.n[q + ri - 1]) for q in range(ax + 1, len(sh)) if not _unit(sh[q])]
            # the index and its check, at the depth of the last loop whose index picks it
            depth = max([q + 1 for q in range(ax, ax + ri) if not _unit(self.dom[q])], default=0)
            if a["outside"] == "zero":  # a row of zeros: one_hot(i) @ table
                zero = literal(0, f.mod.store(d["type"].dtype))
                return [(depth, f"{j} = {ix}[{ix}o + {mid}]"), (depth, f"{e} = {j} >= 0 and {j} < {rows}"),
                        f"{t} = {src}[{src}o + {horner(pairs)}] if {e} else {zero}"]
            return [(depth, f"{j} = {ix}[{ix}o + {mid}]"),
                    (depth, f"if {j} < 0 or {j} >= {rows}:"),
                    (depth, "    raise IndexError('gather index out of range')"),
                    f"{t} = {src}[{src}o + {horner(pairs)}]"]
        if op == "one_hot":
            sh = g.type(ins[0]).shape
            idx = horner([(self.iv[q], self.n[q]) for q in range(self.r - 1) if not _unit(sh[q])])
            return [f"{t} = {T}({src}[{src}o + {idx}] == {self.iv[-1]})"]
        raise Unsupported(f"the cpu target cannot fuse `{op}`")


_FAST32 = {"exp": "exp32", "tanh": "tanh32", "sigmoid": "sigmoid32", "erf": "erf32"}  # vectorizable (runtime/kernels.py)
_UNARY = {"exp": "np.exp({0})", "log": "np.log({0})", "log1p": "np.log1p({0})", "sqrt": "np.sqrt({0})",
          "tanh": "np.tanh({0})", "atan": "np.arctan({0})", "sin": "np.sin({0})", "cos": "np.cos({0})",
          "erf": "math.erf({0})", "floor": "np.floor({0})", "neg": "-{0}", "abs": "abs({0})",
          "sign": "np.sign({0})", "not": "not {0}"}
_BINARY = {"add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "{0} ** {1}",
           "maximum": "np.maximum({0}, {1})", "minimum": "np.minimum({0}, {1})", "eq": "{0} == {1}",
           "ne": "{0} != {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}",
           "and": "{0} and {1}", "or": "{0} or {1}"}
