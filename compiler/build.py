"""Elaboration: AST to graph. Blocks are inlined, `repeat`/`for` unrolled with scoped names, `scan` bodies
become subgraphs, parameters become named leaf nodes, and every op's shape rule runs as its node is made.

Shapes are inferred here, not in a later pass, because the language needs them while elaborating: a dense
layer's weight shape [I, units] takes I from its input. `shapes.infer` re-derives every type afterwards
with concrete bindings (`--bind B=32`).

Errors are collected, not raised: a failed statement poisons the names it assigns, and every later use of
a poisoned value is silent, so one mistake gives one diagnostic."""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np

from dsl import ast as A
from dsl.diagnostics import Diagnostic, DiagnosticError, Note, Span, suggest
from dsl.loader import Program, zoo_dir

from . import schema
from .dims import Dim, shape_str, solve
from .graph import DTYPES, INTS, Graph, Instance, TType
from .ops import BINARY_OPERATORS, INTERNAL, OPS, Op, ShapeError


# ---- values of the elaborator
class _Poison:
    def __repr__(self):
        return "<error>"


POISON = _Poison()


@dataclass
class TVal:
    node: int
    type: TType
    graph: Graph
    span: Span | None


@dataclass
class DType:
    name: str


@dataclass
class DimPack:
    dims: tuple


@dataclass
class LayerVal:
    """A block or op used as a value (`act = relu`, `cell = lstm(hidden=64)`), with bound keywords."""
    target: object  # A.BlockDef, Op or InstVal
    kwargs: dict
    span: Span | None


@dataclass
class InitVal:
    name: str
    kwargs: dict


@dataclass
class InstVal:
    """A named call of a block: `enc.W` reads its parameters, `enc(x2)` applies it again with its weights."""
    scope: str
    block: A.BlockDef
    attrs: dict  # the attribute values it was called with
    members: dict = field(default_factory=dict)  # parameter or child name -> TVal or InstVal


@dataclass
class ModuleNS:
    module: A.Module


class ElabError(Exception):
    def __init__(self, code, message, span, notes=None, help=None):
        super().__init__(message)
        self.diag = Diagnostic(code, message, span, list(notes or []), help)


class _Return(Exception):
    pass


_BUILTIN_FUNCS = {"range", "len", "prod", "min", "max", "int", "float", "abs", "split", "zeros", "ones", "full", "stack",
                  "ceil", "floor_div", "unsqueeze"}
_MATH = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "tanh": math.tanh, "sin": math.sin, "cos": math.cos,
         "atan": math.atan, "log1p": math.log1p, "erf": math.erf, "floor": math.floor, "abs": abs,
         "sigmoid": lambda v: 1 / (1 + math.exp(-v)), "neg": lambda v: -v, "sign": lambda v: (v > 0) - (v < 0)}


MAX_UNROLL = 100_000  # copies made by one repeat/for/range: beyond this a model is a mistake, not a network
MAX_NODES = 5_000_000

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge}


def _is_num(v):
    return isinstance(v, (int, float, Dim)) and not isinstance(v, bool)


def _num(v):
    """A compile-time number as int or float (constant Dims included), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, Dim) and v.is_const:
        return int(v.value) if v.value.denominator == 1 else float(v.value)
    return None


def kind_of(v) -> str:
    if isinstance(v, TVal):
        return f"a tensor {v.type}"
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "an int"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, Dim):
        return f"the dimension {v}"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, LayerVal):
        return "a layer"
    if isinstance(v, InstVal):
        return f"the layer instance `{v.scope}`"
    if isinstance(v, DimPack):
        return "a list of dimensions"
    if isinstance(v, InitVal):
        return "an initializer"
    return type(v).__name__


@dataclass
class Frame:
    block: A.BlockDef | None
    scope: str  # scoped name prefix of this instance ("" for the model)
    env: dict
    graph: Graph
    inst: Instance
    call_span: Span | None
    module: str
    reuse: InstVal | None = None
    members: dict = field(default_factory=dict)
    used: set = field(default_factory=set)
    prefix: str = ""  # loop iteration scope inside this frame, e.g. "layers/3/"
    group: Instance | None = None  # summary parent for instances made now (a loop's row)
    returned: list | None = None
    scan_yields: list | None = None  # inside a scan body
    is_std: bool = False
    instances: dict = field(default_factory=dict)  # names usable for `enc.W` and `enc(x2)`
    row: Instance | None = None  # the summary row of the model-level statement being elaborated
    loop_names: set | None = None  # variables defined before the outermost loop being unrolled
    dim_sources: dict = field(default_factory=dict)  # dimension name -> (argument, value) that bound it


class Elaborator:
    def __init__(self, program: Program, sets: dict | None = None, training: bool = False,
                 binds: dict | None = None, present=()):
        self.present = set(present)  # optional model inputs (declared `= none`) that are given
        self.program = program
        self.training = training
        self.sets = dict(sets or {})
        self.binds = dict(binds or {})
        self.diags: list[Diagnostic] = []
        self.stack: list[Frame] = []
        self.std_dir = str(zoo_dir() / "std")
        self.blocks: dict[str, dict[str, A.BlockDef]] = {}  # module path -> visible blocks
        self.consts: dict[str, dict] = {}
        self.root: Graph | None = None
        self._prepare()

    # ---- namespaces and constants
    def _prepare(self):
        std_blocks: dict[str, A.BlockDef] = {}
        for mod in self.program.modules:
            if mod.path.startswith(self.std_dir):
                for b in mod.blocks:
                    if b.name in std_blocks:
                        self.diags.append(Diagnostic("E0107", f"block `{b.name}` is defined twice in the standard library",
                                                     b.name_span, [Note("first defined here", std_blocks[b.name].name_span)]))
                    std_blocks[b.name] = b
        by_path = {m.path: m for m in self.program.modules}
        for mod in self.program.modules:
            visible = dict(std_blocks)
            for u in mod.uses:  # blocks of imported files (not aliased) are visible by name
                if u.is_file and not u.alias:
                    dep = self._dep(mod, u, by_path)
                    if dep is not None:
                        visible.update({b.name: b for b in dep.blocks})
            own: dict[str, A.BlockDef] = {}
            for b in mod.blocks:
                if b.name in own:
                    self.diags.append(Diagnostic("E0107", f"`{b.name}` is defined twice", b.name_span,
                                                 [Note("first defined here", own[b.name].name_span)],
                                                 help="rename one of them"))
                    continue
                if b.name in OPS or b.name in _BUILTIN_FUNCS:
                    self.diags.append(Diagnostic("E0107", f"`{b.name}` is the name of a built-in op", b.name_span,
                                                 help="choose another name for this block"))
                own[b.name] = b
            visible.update(own)
            self.blocks[mod.path] = visible
        for mod in self.program.modules:
            self.consts[mod.path] = self._eval_consts(mod, mod is self.program.main)
        unknown = set(self.sets) - {c.name for c in self.program.main.consts}
        for name in sorted(unknown):
            span, _ = self.sets[name]
            consts = [c.name for c in self.program.main.consts]
            hint = suggest(name, consts)
            self.diags.append(Diagnostic("E0130", f"`--set {name}`: the model has no constant `{name}`", span,
                                         help=f"did you mean `{hint}`?" if hint else
                                         (f"its constants are: {', '.join(consts)}" if consts else "it declares no constants")))

    def _dep(self, mod, u, by_path):
        from pathlib import Path
        return by_path.get(str((Path(mod.path).parent / u.module).resolve()))

    def _eval_consts(self, mod, is_main):
        out: dict = {}
        frame = Frame(None, "", out, None, Instance("", "consts", None), None, mod.path)
        for c in mod.consts:
            if c.name in out:
                self.diags.append(Diagnostic("E0107", f"constant `{c.name}` is defined twice", c.span))
                continue
            try:
                if is_main and c.name in self.sets:
                    span, value = self.sets[c.name]
                    default = self.eval(c.value, frame)
                    if _kind_name(value) != _kind_name(default) and not (_is_num(value) and _is_num(default)
                                                                          and isinstance(default, float)):
                        raise ElabError("E0131", f"`--set {c.name}` gives {kind_of(value)} but `{c.name}` is {kind_of(default)}",
                                        span, [Note(f"`{c.name}` is declared here", c.span)])
                    out[c.name] = float(value) if isinstance(default, float) else value
                else:
                    v = self.eval(c.value, frame)
                    if isinstance(v, TVal):
                        raise ElabError("E0108", "a constant must be a compile-time value, not a tensor", c.value.span)
                    out[c.name] = v
            except ElabError as e:
                self.diags.append(e.diag)
                out[c.name] = POISON
            except _PoisonSeen:
                out[c.name] = POISON
        return out

    # ---- entry point
    def model(self, name: str | None = None) -> Graph:
        models = [b for b in self.program.main.blocks if b.kind == "model"]
        if not models:
            raise DiagnosticError(self.diags + [Diagnostic("E0133", f"`{self.program.main.path}` defines no model",
                                                           None, help="declare one with `model NAME(x: f32[B, ...]) -> ... { ... }`")])
        if name is None:
            m = models[-1]
        else:
            found = [b for b in models if b.name == name]
            if not found:
                raise DiagnosticError(Diagnostic("E0133", f"no model `{name}` in this file", None,
                                                 help=f"models: {', '.join(b.name for b in models)}"))
            m = found[0]
        g = Graph(m.name)
        self.root = g
        g.consts = {k: v for k, v in self.consts[self.program.main.path].items()}
        frame = Frame(m, "", {}, g, g.root, m.span, m.module)
        self.stack.append(frame)
        for p in m.params:
            try:
                self._model_param(p, frame, g)
            except ElabError as ex:
                self.report(ex.diag)
                frame.env[p.name] = POISON
            except _PoisonSeen:
                frame.env[p.name] = POISON
        unknown_binds = set(self.binds) - set(g.dims)
        for name in sorted(unknown_binds):
            span, _ = self.binds[name]
            hint = suggest(name, list(g.dims))
            self.diags.append(Diagnostic("E0132", f"`--bind {name}`: `{name}` is not a dimension of the model's inputs", span,
                                         help=f"did you mean `{hint}`?" if hint else
                                         (f"its dimensions are: {', '.join(g.dims)}" if g.dims else "its inputs have no symbolic dimensions")))
        self._body_and_train(m, frame, g)
        self.stack.pop()
        return g

    def _model_param(self, p, frame, g):
        optional = isinstance(p.default, A.Name) and p.default.id == "none"
        if isinstance(p.type, A.TensorType) and optional and p.name not in self.present:
            frame.env[p.name] = None  # an optional input left out: `if lengths == none` is true
            g.optional_inputs.append(p.name)
        elif isinstance(p.type, A.TensorType):
            if optional:
                g.optional_inputs.append(p.name)
            t = self._type_from_decl(p.type, frame, model_sig=True)
            nid = g.add("input", [], {"name": p.name}, t, p.span, p.name)
            g.inputs.append(nid)
            frame.env[p.name] = TVal(nid, t, g, p.span)
        elif p.default is None:
            raise ElabError("E0105", f"model attribute `{p.name}` needs a default value", p.span,
                            help="model attributes are set with `--set`; declare a `const` instead")
        else:
            frame.env[p.name] = self._coerce_attr(self.eval(p.default, frame), p.type, p.default.span)

    def _body_and_train(self, m, frame, g):
        try:
            self.exec_body(m.body, frame)
        except _Return:
            pass
        except _PoisonSeen:
            frame.returned = frame.returned or [POISON] * len(m.returns or [1])
        rets = frame.returned
        if rets is None:
            self.diags.append(Diagnostic("E0111", f"model `{m.name}` has no `return`", m.name_span,
                                         help="end the model body with `return OUTPUT`"))
            rets = []
        self._guard(lambda: self._check_returns(m, frame, rets, g), m.span)
        if m.train is not None:
            from .train import elaborate_train
            elaborate_train(self, m.train, frame, g)

    # ---- types
    def _type_from_decl(self, tt: A.TensorType, frame: Frame, model_sig=False) -> TType:
        """A declared tensor type evaluated in frame; in a model signature unknown names become symbols."""
        dims = []
        for d in tt.dims:
            if isinstance(d, A.VariadicDim):
                raise ElabError("E0209", "a model input cannot have a variadic shape", d.span)
            v = self.eval_dim(d, frame, free=model_sig)
            dims.append(v)
        return TType(tuple(dims), tt.dtype or "f32")

    def eval_dim(self, expr, frame: Frame, free=False, unbound=None) -> Dim:
        """A dimension expression. With free, unknown names become symbols (bound in the model's graph)."""
        if isinstance(expr, A.Name) and expr.id not in frame.env and expr.id not in self._consts(frame):
            if unbound is not None:
                unbound.add(expr.id)
                return Dim.sym(expr.id)
            if free:
                g = self.root
                if expr.id not in g.dims:
                    if expr.id in self.binds:
                        span, value = self.binds[expr.id]
                        g.dims[expr.id] = (Dim.const(value), expr.span)
                    else:
                        g.dims[expr.id] = (Dim.sym(expr.id), expr.span)
                frame.env[expr.id] = g.dims[expr.id][0]
                return g.dims[expr.id][0]
            raise ElabError("E0207", f"dimension `{expr.id}` is not bound", expr.span,
                            help="a dimension gets its size from an input's shape or from an attribute")
        if isinstance(expr, A.BinOp) and expr.op in "+-*/%//" and expr.op in ("+", "-", "*", "/", "//", "%"):
            a = self.eval_dim(expr.left, frame, free, unbound)
            b = self.eval_dim(expr.right, frame, free, unbound)
            return self._dim_arith(expr.op, a, b, expr.span)
        if isinstance(expr, A.Unary) and expr.op == "-":
            return -self.eval_dim(expr.operand, frame, free, unbound)
        v = self.eval(expr, frame)
        return self._to_dim(v, expr.span)

    def _to_dim(self, v, span) -> Dim:
        if isinstance(v, Dim):
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return Dim.const(v)
        if isinstance(v, float) and v.is_integer():
            return Dim.const(int(v))
        if v is POISON:
            raise _PoisonSeen()
        raise ElabError("E0108", f"a dimension must be an integer, not {kind_of(v)}", span)

    def _dim_arith(self, op, a: Dim, b: Dim, span) -> Dim:
        try:
            return _ARITH[op](a, b)
        except ZeroDivisionError:
            raise ElabError("E0213", "division by zero in a dimension", span)

    def _consts(self, frame: Frame) -> dict:
        return self.consts.get(frame.module, {})

    def _unify(self, decl: A.TensorType, actual: TVal, env_frame: Frame, arg_name: str, call_span, block_name):
        """Match an argument against a declared tensor type, binding the block's dimension names."""
        t = actual.type
        if decl.dtype is not None and t.dtype != decl.dtype:
            raise ElabError("E0203", f"argument `{arg_name}` of `{block_name}` must be {decl.dtype}, got {t}",
                            call_span, [Note(f"`{arg_name}` is declared {self._decl_text(decl)}", decl.span)],
                            help=f"convert it with `cast({arg_name}, {decl.dtype})`" if t.dtype in DTYPES else None)
        if t.shape is None:
            raise _PoisonSeen()
        variadic = [i for i, d in enumerate(decl.dims) if isinstance(d, A.VariadicDim)]
        fixed = len(decl.dims) - len(variadic)
        if (not variadic and t.rank != fixed) or (variadic and t.rank < fixed):
            want = f"{fixed}" if not variadic else f"at least {fixed}"
            raise ElabError("E0202", f"argument `{arg_name}` of `{block_name}` must have rank {want}, got {t}", call_span,
                            [Note(f"`{arg_name}` is declared {self._decl_text(decl)}", decl.span),
                             *self._origin_notes(actual)])
        pairs = []
        if variadic:
            v = variadic[0]
            tail = len(decl.dims) - v - 1
            pack = t.shape[v:t.rank - tail]
            name = decl.dims[v].name
            if name in env_frame.env:
                have = env_frame.env[name]
                if isinstance(have, DimPack) and have.dims != tuple(pack):
                    raise ElabError("E0201", f"argument `{arg_name}` of `{block_name}` has leading dimensions {shape_str(pack)}, "
                                    f"but `*{name}` is already {shape_str(have.dims)}", call_span,
                                    [Note(f"`{arg_name}` is declared {self._decl_text(decl)}", decl.span)])
            else:
                env_frame.env[name] = DimPack(tuple(pack))
            pairs = list(zip(decl.dims[:v], t.shape[:v])) + list(zip(decl.dims[v + 1:], t.shape[t.rank - tail:]))
        else:
            pairs = list(zip(decl.dims, t.shape))
        pending = []
        for expr, have in pairs:
            unbound: set = set()
            want = self.eval_dim(expr, env_frame, unbound=unbound)
            name = want.bare_symbol()
            if unbound and name in unbound:
                env_frame.env[name] = have
                env_frame.dim_sources[name] = (arg_name, actual)
            elif unbound:
                pending.append((expr, have))
            elif want != have:
                raise self._dim_mismatch(arg_name, decl, actual, want, have, expr, env_frame, call_span, block_name)
        for expr, have in pending:
            unbound = set()
            want = self.eval_dim(expr, env_frame, unbound=unbound)
            sol = solve(want, have, unbound)
            if sol is None:
                raise ElabError("E0207", f"cannot infer {', '.join(sorted(unbound))} from dimension {have} of `{arg_name}`",
                                call_span, [Note(f"declared {self._decl_text(decl)}", decl.span)],
                                help="bind each dimension name by itself in some argument's shape")
            name, value = sol
            if value.is_const and (value.value.denominator != 1 or value.value <= 0):
                raise ElabError("E0201", f"dimension {have} of `{arg_name}` does not fit `{self._expr_text(expr)}` "
                                f"({name} would be {float(value.value):g})", call_span,
                                [Note(f"declared {self._decl_text(decl)}", decl.span)])
            env_frame.env[name] = value

    def _dim_mismatch(self, arg_name, decl, actual, want, have, expr, env_frame, call_span, block_name):
        notes = [Note(f"`{arg_name}` is declared {self._decl_text(decl)}", decl.span)]
        src = env_frame.dim_sources
        if isinstance(expr, A.Name) and expr.id in src:
            other, val = src[expr.id]
            notes.append(Note(f"`{expr.id}` = {want} was bound by argument `{other}` ({val.type})", None))
        notes += self._origin_notes(actual)
        dname = self._expr_text(expr)
        return ElabError("E0201", f"dimension mismatch in argument `{arg_name}` of `{block_name}`: "
                         f"`{dname}` is {want} but the argument has {have} ({actual.type})", call_span, notes)

    def _origin_notes(self, v: TVal):
        if v.span is None:
            return []
        return [Note(f"this value, {v.type}, comes from here", v.span)]

    @staticmethod
    def _expr_text(expr) -> str:
        if isinstance(expr, A.Name):
            return expr.id
        if isinstance(expr, A.Num):
            return str(expr.value)
        if isinstance(expr, A.BinOp):
            return f"{Elaborator._expr_text(expr.left)} {expr.op} {Elaborator._expr_text(expr.right)}"
        if isinstance(expr, A.Unary):
            return f"-{Elaborator._expr_text(expr.operand)}"
        if isinstance(expr, A.Bool):
            return "true" if expr.value else "false"
        if isinstance(expr, A.Str):
            return '"' + expr.value + '"'
        if isinstance(expr, A.Call) and isinstance(expr.func, A.Name):
            return f"{expr.func.id}(...)"
        return "..."

    def _decl_text(self, tt: A.TensorType) -> str:
        parts = [f"*{d.name}" if isinstance(d, A.VariadicDim) else self._expr_text(d) for d in tt.dims]
        return f"{tt.dtype or 'f32'}[{', '.join(parts)}]"

    # ---- statements
    def exec_body(self, stmts, frame: Frame):
        for s in stmts:
            self.exec_stmt(s, frame)

    def _guard(self, fn, span):
        try:
            return fn()
        except ElabError as e:
            self.report(e.diag)
        except _PoisonSeen:
            pass
        return POISON

    def report(self, diag: Diagnostic):
        # An error inside a standard-library block is shown at the user's call, with a note into the library.
        std = [f for f in self.stack if f.is_std]
        if std and diag.span is not None and diag.span.source.startswith(self.std_dir):
            outer = std[0]
            # The library's own lines say little to its user: keep one note pointing inside it.
            diag.notes = [n for n in diag.notes if n.span is None or not n.span.source.startswith(self.std_dir)]
            diag.notes.append(Note(f"inside the standard block `{outer.block.name}`", diag.span))
            diag.span = outer.call_span
        self.diags.append(diag)

    def exec_stmt(self, s, frame: Frame):
        if frame.block is not None and frame.block.kind == "model" and frame.scan_yields is None:
            name = s.targets[0][0] if isinstance(s, A.Assign) else type(s).__name__.lower()
            frame.row = Instance(f"{frame.prefix}{name}", "", s.span)
        try:
            self._exec(s, frame)
            row = frame.row
            if row is not None and row.outputs and isinstance(s, A.Assign) and not getattr(row, "labeled", False):
                value = frame.env.get(s.targets[0][0])
                if not (isinstance(value, TVal) and value.node in row.outputs):
                    # The ops fed a layer that made the value: the row is named after its first op instead.
                    row.name = f"{frame.prefix}{row.kind.split(', ')[0]}"
        except (_Return, KeyboardInterrupt):
            raise
        except ElabError as e:
            self.report(e.diag)
            self._poison_targets(s, frame)
            if isinstance(s, A.Require):
                raise _PoisonSeen()  # what follows assumed it held: the block's results are poisoned
        except _PoisonSeen:
            self._poison_targets(s, frame)
        except RecursionError:
            self.report(Diagnostic("E0213", "blocks call each other too deeply (recursion without end?)", s.span))
            self._poison_targets(s, frame)

    def _poison_targets(self, s, frame):
        if isinstance(s, A.Assign):
            for name, _ in s.targets:
                frame.env[name] = POISON
        elif isinstance(s, A.ParamDecl):
            frame.env[s.name] = POISON

    def _exec(self, s, frame: Frame):
        if isinstance(s, A.Assign):
            # A fresh variable names the call that makes it (`enc = dense(x, 64)` has weights enc/W);
            # `h = dense(h, 64)` updates a variable, so the call keeps its block's name.
            # Inside loops freshness is judged against the variables before the loop, so every iteration
            # names its calls alike.
            known = frame.loop_names if frame.loop_names is not None else frame.env
            hint = s.targets[0][0] if len(s.targets) == 1 and s.targets[0][0] not in known else None
            v = self.eval(s.value, frame, name_hint=hint)
            if len(s.targets) == 1:
                frame.env[s.targets[0][0]] = v
                return
            if v is POISON:
                raise _PoisonSeen()
            if not isinstance(v, (tuple, list)) or len(v) != len(s.targets):
                n = len(v) if isinstance(v, (tuple, list)) else 1
                raise ElabError("E0112", f"{len(s.targets)} names to assign but the right-hand side gives {n} value{'s' * (n != 1)}",
                                s.span)
            for (name, _), x in zip(s.targets, v):
                frame.env[name] = x
        elif isinstance(s, A.ParamDecl):
            self._param(s, frame)
        elif isinstance(s, A.Update):
            self._update(s, frame)
        elif isinstance(s, A.Return):
            if frame.scan_yields is not None:
                raise ElabError("E0111", "`return` inside a scan body", s.span, help="a scan body ends with `yield`")
            frame.returned = [POISON] * len(s.values)  # present even if its values fail
            frame.returned = [self.eval(v, frame) for v in s.values]
            raise _Return()
        elif isinstance(s, A.Yield):
            if frame.scan_yields is None:
                raise ElabError("E0111", "`yield` outside a scan body", s.span, help="blocks give their result with `return`")
            vals = [self.eval(v, frame) for v in s.values]
            frame.scan_yields.append((vals, s.span))
        elif isinstance(s, A.Require):
            self._require(s, frame)
        elif isinstance(s, A.If):
            c = self.eval(s.cond, frame)
            if c is POISON:
                raise _PoisonSeen()
            if not isinstance(c, bool):
                raise ElabError("E0108", f"an `if` condition must be a compile-time bool, got {kind_of(c)}", s.cond.span,
                                help="for a choice per element of a tensor use `select(cond, a, b)`")
            self.exec_body(s.body if c else s.orelse, frame)
        elif isinstance(s, A.Repeat):
            n = self.eval(s.count, frame)
            n = _num(n) if n is not POISON else None
            if not isinstance(n, int) or n < 0:
                raise ElabError("E0108", "`repeat` needs a non-negative integer count", s.count.span)
            if n > MAX_UNROLL:
                raise ElabError("E0213", f"`repeat {n}` would unroll more than {MAX_UNROLL:,} copies", s.count.span,
                                help="for a loop over time or tokens, use `scan`, which is not unrolled")
            self._loop(frame, s, s.label or "repeat", [((), i) for i in range(n)], f"repeat {n}")
        elif isinstance(s, A.For):
            it = self.eval(s.iter, frame)
            if it is POISON:
                raise _PoisonSeen()
            if isinstance(it, DimPack):
                it = list(it.dims)
            if not isinstance(it, (list, tuple)):
                raise ElabError("E0108", f"`for` iterates over a compile-time list, got {kind_of(it)}", s.iter.span)
            items = []
            for i, x in enumerate(it):
                names = [n for n, _ in s.targets]
                if len(names) == 1:
                    items.append(((names[0], x),))
                else:
                    if not isinstance(x, (tuple, list)) or len(x) != len(names):
                        raise ElabError("E0112", f"item {i} of the list does not have {len(names)} values to unpack",
                                        s.iter.span)
                    items.append(tuple(zip(names, x)))
            self._loop(frame, s, s.label or "for", [(binds, i) for i, binds in enumerate(items)], f"for ×{len(items)}")
        else:
            raise ElabError("E0900", f"internal: unknown statement {type(s).__name__}", s.span)

    def _loop(self, frame: Frame, s, label, iterations, kind):
        base = self._child_name(frame, label, explicit=False)
        group = Instance(f"{frame.scope}/{base}" if frame.scope else base, kind, s.span)
        (frame.group or frame.inst).children.append(group)
        saved = frame.prefix, frame.group, frame.loop_names
        frame.group = group
        if frame.loop_names is None:
            frame.loop_names = set(frame.env)
        try:
            for binds, i in iterations:
                for name, v in binds:
                    frame.env[name] = v
                frame.prefix = f"{base}/{i}/"
                self.exec_body(s.body, frame)
        finally:
            frame.prefix, frame.group, frame.loop_names = saved
        if not group.children:  # a loop that made no layer is no row of the summary
            (frame.group or frame.inst).children.remove(group)

    def _require(self, s: A.Require, frame: Frame):
        c = self.eval(s.cond, frame)
        if c is POISON:
            raise _PoisonSeen()
        if not isinstance(c, bool):
            if isinstance(c, _Undecided):
                return  # depends on a symbolic size: checked once it is bound
            raise ElabError("E0108", f"`require` needs a compile-time condition, got {kind_of(c)}", s.cond.span)
        if c:
            return
        msg = self._format(s.message, frame) if s.message else "requirement failed"
        notes = []
        caller = frame.call_span
        if caller is not None and frame.block is not None and frame.block.kind == "block":
            notes.append(Note(f"required by `{frame.block.name}`", s.span))
            span = caller
        else:
            span = s.span
        raise ElabError("E0210", msg, span, notes)

    def _format(self, msg: A.Str, frame):
        text, out, i = msg.value, [], 0
        while i < len(text):
            if text.startswith("{{", i) or text.startswith("}}", i):
                out.append(text[i])
                i += 2
            elif text[i] == "{":
                j = text.find("}", i)
                if j < 0:
                    out.append(text[i:])
                    break
                src = text[i + 1:j]
                try:
                    from dsl.parser import parse
                    mod = parse(f"const __v = {src}", msg.span.source)
                    v = self.eval(mod.consts[0].value, frame)
                    out.append(self._show(v))
                except (DiagnosticError, ElabError, _PoisonSeen):
                    out.append("{" + src + "}")
                i = j + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    @staticmethod
    def _show(v):
        if isinstance(v, TVal):
            return str(v.type)
        if isinstance(v, DimPack):
            return shape_str(v.dims)
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    # ---- parameters
    def _param(self, s: A.ParamDecl, frame: Frame):
        name = s.name
        if name in frame.members:
            raise ElabError("E0107", f"parameter `{name}` is declared twice in this block", s.span)
        if frame.reuse is not None:
            shared = frame.reuse.members.get(name)
            if shared is None:
                raise ElabError("E0900", f"internal: shared instance has no parameter {name}", s.span)
            frame.members[name] = shared
            frame.env[name] = shared
            return
        shape = []
        for d in s.type.dims:
            if isinstance(d, A.VariadicDim):
                pack = frame.env.get(d.name)
                if not isinstance(pack, DimPack):
                    raise ElabError("E0207", f"`*{d.name}` is not a bound list of dimensions", d.span)
                shape += list(pack.dims)
            else:
                shape.append(self.eval_dim(d, frame))
        for d in shape:
            if d.is_const and (d.value <= 0 or d.value.denominator != 1):
                raise ElabError("E0209", f"parameter `{name}` would have shape {shape_str(shape)}", s.span,
                                help="every size must be a positive integer")
        if isinstance(frame.env.get(name), Dim):
            self.report(Diagnostic("W0101", f"parameter `{name}` hides the dimension `{name}` of this block", s.span,
                                   help="later uses of the name (a return type, say) see the parameter; rename one",
                                   severity="warning"))
        free = sorted(set().union(*(d.symbols() for d in shape)) if shape else set())
        if free:
            self.report(Diagnostic("W0102", f"parameter `{name}` has a size that depends on the input's "
                                   f"{', '.join(free)}: {shape_str(shape)}", s.span,
                                   help="weights usually have fixed sizes; is an axis wrong?", severity="warning"))
        init = self._init(s.init, frame, s.kind) if s.init is not None else InitVal("zeros" if s.kind == "state" else "glorot_uniform", {})
        dtype = s.type.dtype or "f32"
        scoped = f"{frame.scope}{'/' if frame.scope else ''}{frame.prefix}{name}"
        g = self.root
        if scoped in g.params:
            raise ElabError("E0107", f"two parameters are both named `{scoped}`", s.span,
                            [Note("the other one", g.node(g.params[scoped])["span"])],
                            help="label one of the calls with `as NAME`")
        nid = g.add(s.kind, [], {"init": init.name, "init_args": init.kwargs, "trainable": s.kind == "param"},
                    TType(tuple(shape), dtype), s.span, scoped)
        g.params[scoped] = nid
        v = TVal(nid, TType(tuple(shape), dtype), g, s.span)
        frame.members[name] = v
        frame.env[name] = v
        if frame.block is not None and frame.block.kind == "model" and frame.scan_yields is None:
            # A weight declared in the model body is a row of its own in the summary.
            (frame.group or frame.inst).children.append(Instance(scoped, s.kind, s.span, [nid], params=[nid]))
        else:
            frame.inst.params.append(nid)

    def _update(self, s: A.Update, frame: Frame):
        cur = frame.members.get(s.name)
        if not isinstance(cur, TVal) or self.root.node(cur.node)["op"] != "state":
            raise ElabError("E0111", f"`update` assigns a `state` of this block, and `{s.name}` is not one", s.span,
                            help=f"declare it with `state {s.name}: [...] = zeros`")
        if frame.scan_yields is not None:
            raise ElabError("E0111", "`update` inside a scan body", s.span, help="update a state once per step, after the scan")
        v = self.eval(s.value, frame)
        if v is POISON:
            raise _PoisonSeen()
        if not isinstance(v, TVal) or v.type != cur.type:
            raise ElabError("E0212", f"`update {s.name}` gives {kind_of(v)}, but the state is {cur.type}", s.span)
        # Read by the training step: the state's value for the next step. Eval graphs ignore it.
        self.root.state_updates.append((self.root.node(cur.node)["name"], self._local(v, self.root)))

    def _init(self, expr, frame: Frame, kind) -> InitVal:
        v = self.eval(expr, frame, want="init")
        if isinstance(v, InitVal):
            return v
        n = _num(v)
        if n is not None:
            return InitVal("constant", {"value": float(n)})
        if v is POISON:
            raise _PoisonSeen()
        raise ElabError("E0108", f"an initializer is expected here, got {kind_of(v)}", expr.span,
                        help=f"initializers: {', '.join(schema.INITIALIZERS)}")

    # ---- expressions
    def eval(self, e, frame: Frame, name_hint=None, want=None):
        m = getattr(self, "_e_" + type(e).__name__)
        return m(e, frame, name_hint, want)

    def _e_Num(self, e, frame, hint, want):
        return e.value

    def _e_Str(self, e, frame, hint, want):
        return e.value

    def _e_Bool(self, e, frame, hint, want):
        return e.value

    def _e_TupleLit(self, e, frame, hint, want):
        return tuple(self._items(e.items, frame))

    def _e_ListLit(self, e, frame, hint, want):
        return list(self._items(e.items, frame))

    def _items(self, items, frame):
        out = []
        for x in items:
            v = self.eval(x.value if isinstance(x, A.Arg) else x, frame)
            if v is POISON:
                raise _PoisonSeen()
            if isinstance(x, A.Arg):  # `[N, *S]` splices a list or a dimension pack
                if isinstance(v, DimPack):
                    v = list(v.dims)
                if not isinstance(v, (list, tuple)):
                    raise ElabError("E0108", f"`*` spreads a list, not {kind_of(v)}", x.span)
                out += list(v)
            else:
                out.append(v)
        return out

    def _e_EllipsisLit(self, e, frame, hint, want):
        raise ElabError("E0001", "`...` is only allowed inside `[ ]` indexing", e.span)

    def _e_Slice(self, e, frame, hint, want):
        raise ElabError("E0001", "`a:b` is only allowed inside `[ ]` indexing", e.span)

    def _e_Name(self, e, frame, hint, want):
        n = e.id
        if n in frame.env:
            v = frame.env[n]
            if v is POISON:
                raise _PoisonSeen()
            return v
        if n == "training":
            return self.training
        if n == "none":
            return None
        consts = self._consts(frame)
        if n in consts:
            if consts[n] is POISON:
                raise _PoisonSeen()
            return consts[n]
        if n in DTYPES:
            return DType(n)
        if want == "init" and n in schema.INITIALIZERS:
            self._check_kwargs(n, {}, schema.INITIALIZERS[n], e.span, "initializer")
            return InitVal(n, {})
        callee = self._callee(n, frame)
        if callee is not None:
            return LayerVal(callee, {}, e.span)
        if (frame.module, n) in self.program.aliases:
            return ModuleNS(self.program.aliases[(frame.module, n)])
        cands = list(frame.env) + list(consts) + list(self.blocks.get(frame.module, {}))
        hint_ = suggest(n, cands)
        if want == "init":
            raise ElabError("E0101", f"unknown initializer `{n}`", e.span,
                            help=f"initializers: {', '.join(schema.INITIALIZERS)}")
        raise ElabError("E0101", f"unknown name `{n}`", e.span, help=f"did you mean `{hint_}`?" if hint_ else None)

    def _callee(self, n, frame):
        b = self.blocks.get(frame.module, {}).get(n)
        if b is not None:
            return b
        if n in ("max", "min"):  # max(a, b) of numbers, or the reduction of a tensor
            return n
        if n in OPS and n not in INTERNAL:
            return OPS[n]
        if n in _BUILTIN_FUNCS:
            return n
        return None

    def _e_Member(self, e, frame, hint, want):
        if isinstance(e.value, A.Name) and e.value.id in frame.instances:
            base = frame.instances[e.value.id]
        else:
            base = self.eval(e.value, frame)
        if isinstance(base, InstVal):
            if e.name in base.members:
                return base.members[e.name]
            have = ", ".join(sorted(base.members)) or "none"
            raise ElabError("E0110", f"`{base.scope}` has no parameter or layer `{e.name}`", e.span,
                            help=f"its members are: {have}")
        if isinstance(base, ModuleNS):
            for b in base.module.blocks:
                if b.name == e.name:
                    return LayerVal(b, {}, e.span)
            raise ElabError("E0102", f"module `{base.module.path}` has no block `{e.name}`", e.span)
        if isinstance(base, TVal):
            raise ElabError("E0110", f"`.{e.name}` on a tensor: only a named layer instance has members", e.span,
                            help="name the call that made it, e.g. `enc = dense(x, 64)`, then use `enc.W`")
        raise ElabError("E0110", f"{kind_of(base)} has no members", e.span)

    def _e_Unary(self, e, frame, hint, want):
        v = self.eval(e.operand, frame)
        if e.op == "not":
            if isinstance(v, bool):
                return not v
            if isinstance(v, _Undecided):
                return v
            if isinstance(v, TVal):
                return self.apply_op("not", [v], {}, e.span, frame)
            raise ElabError("E0108", f"`not` needs a bool, got {kind_of(v)}", e.span)
        if e.op == "+":
            return v
        if isinstance(v, (int, float, Dim)) and not isinstance(v, bool):
            return -v
        if isinstance(v, TVal):
            return self.apply_op("neg", [v], {}, e.span, frame)
        raise ElabError("E0108", f"cannot negate {kind_of(v)}", e.span)

    def _e_BinOp(self, e, frame, hint, want):
        a = self.eval(e.left, frame)
        if e.op in ("and", "or") and isinstance(a, bool):
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.eval(e.right, frame)
            if isinstance(b, (bool, _Undecided)):
                return b
            raise ElabError("E0108", f"`{e.op}` needs two bools, got {kind_of(b)}", e.right.span)
        b = self.eval(e.right, frame)
        if (a is None or b is None) and e.op in ("==", "!="):  # `if lengths == none`: was it given?
            return (a is b) == (e.op == "==")
        if isinstance(a, TVal) or isinstance(b, TVal):
            if e.op == "//" or e.op == "%":
                raise ElabError("E0108", f"`{e.op}` is for compile-time integers; tensors have `floor(a / b)`", e.span)
            a, b = self._tensorize(a, b, e)
            return self.apply_op(BINARY_OPERATORS[e.op], [a, b], {}, e.span, frame)
        return self._fold(e.op, a, b, e)

    def _tensorize(self, a, b, e):
        """Mixing a tensor and a compile-time number: the number becomes a rank-0 constant of the tensor's dtype."""
        ref = a if isinstance(a, TVal) else b
        out = []
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, TVal):
                out.append(v)
                continue
            arr = literal_array(v)
            if arr is not None and arr.ndim > 0:
                out.append(self.constant(arr, ref.type.dtype, side.span))
                continue
            n = _num(v) if not isinstance(v, bool) else v
            if n is None and isinstance(v, Dim):  # a symbolic size used as a number: read at run time
                if ref.type.dtype == "bool":
                    raise ElabError("E0203", "cannot combine a bool tensor with a size", side.span)
                out.append(self.apply_op("dim_value", [], {"dim": v, "dtype": ref.type.dtype}, side.span, self.stack[-1]))
                continue
            if n is None:
                raise ElabError("E0108", f"cannot combine a tensor with {kind_of(v)}", side.span)
            if isinstance(n, float) and not n.is_integer() and ref.type.dtype in INTS:
                raise ElabError("E0203", f"cannot combine the {ref.type.dtype} tensor with the float {n}", side.span,
                                help="convert the tensor with `cast(x, f32)`")
            out.append(self.constant(np.asarray(n), ref.type.dtype, side.span))
        return out

    def constant(self, value, dtype, span) -> TVal:
        g = self._graph()
        value = np.asarray(value, dtype={"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64,
                                         "bool": np.bool_}[dtype])
        t = TType(tuple(Dim.const(d) for d in value.shape), dtype)
        nid = g.add("constant", [], {"value": value, "dtype": dtype}, t, span, "const")
        return TVal(nid, t, g, span)

    def _graph(self) -> Graph:
        return self.stack[-1].graph

    def _fold(self, op, a, b, e):
        if a is POISON or b is POISON:
            raise _PoisonSeen()
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and op == "+":
            return type(a)(list(a) + list(b))
        if isinstance(a, str) and isinstance(b, str) and op in ("+", "==", "!="):
            return a + b if op == "+" else (a == b) == (op == "==")
        if op in ("==", "!=") and (isinstance(a, (bool, str)) or isinstance(b, (bool, str))):
            return (a == b) == (op == "==")
        if not (_is_num(a) and _is_num(b)):
            raise ElabError("E0108", f"`{op}` cannot combine {kind_of(a)} and {kind_of(b)}", e.span)
        if isinstance(a, Dim) or isinstance(b, Dim):
            if isinstance(a, float) or isinstance(b, float):
                na, nb = _num(a), _num(b)
                if na is None or nb is None:
                    raise ElabError("E0213", "a symbolic dimension cannot be combined with a float here", e.span)
                a, b = na, nb
            else:
                da, db = Dim.of(a), Dim.of(b)
                if op in ("+", "-", "*", "/", "//", "%"):
                    r = self._dim_arith(op, da, db, e.span)
                    return int(r.value) if r.is_int else (float(r.value) if r.is_const else r)
                if op == "**":
                    if db.is_int and 0 <= db.value <= 64:
                        r = Dim.const(1)
                        for _ in range(int(db.value)):
                            r = r * da
                        return int(r.value) if r.is_int else r
                    raise ElabError("E0213", "a dimension can only be raised to a non-negative integer power", e.span)
                diff = da - db
                if not diff.is_const:
                    return _Undecided()
                a, b = float(diff.value), 0
        if op == "**" and isinstance(b, (int, float)) and abs(b) > 1024 and isinstance(a, int) and abs(a) > 1:
            raise ElabError("E0213", "number too large", e.span)  # 10 ** 10 ** 10 would never finish
        try:
            if op == "/" and isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
                return a // b  # exact integer division stays an int, so it can be a size
            if op in _ARITH:
                return _ARITH[op](a, b)
            return _COMPARE[op](a, b)
        except ZeroDivisionError:
            raise ElabError("E0213", "division by zero", e.span)
        except OverflowError:
            raise ElabError("E0213", "number too large", e.span)
        except KeyError:
            raise ElabError("E0108", f"`{op}` is not defined for numbers", e.span)

    def _e_Index(self, e, frame, hint, want):
        v = self.eval(e.value, frame)
        if isinstance(v, TVal):
            return self._index_tensor(v, e, frame)
        if isinstance(v, DimPack):
            v = list(v.dims)
        if isinstance(v, (list, tuple, str)):
            if len(e.subs) != 1 or isinstance(e.subs[0], (A.Slice, A.EllipsisLit)):
                raise ElabError("E0108", "a list takes one integer index", e.span)
            i = _num(self.eval(e.subs[0], frame))
            if not isinstance(i, int) or not -len(v) <= i < len(v):
                raise ElabError("E0213", f"index {i} is out of range for a list of {len(v)}", e.subs[0].span)
            return v[i]
        raise ElabError("E0108", f"cannot index {kind_of(v)}", e.span)

    def _index_tensor(self, v: TVal, e, frame):
        subs = e.subs
        ell = [i for i, s in enumerate(subs) if isinstance(s, A.EllipsisLit)]
        if len(ell) > 1:
            raise ElabError("E0208", "at most one `...` in an index", e.span)
        rank = v.type.rank
        n_real = len(subs) - len(ell)
        if n_real > rank:
            raise ElabError("E0208", f"{n_real} indices for a tensor of rank {rank} ({v.type})", e.span)
        if ell:
            k = ell[0]
            subs = subs[:k] + [None] * (rank - n_real) + subs[k + 1:]
        drop = []
        for axis, s in enumerate(subs):
            if s is None:
                continue
            if isinstance(s, A.Slice):
                lo = self._idx(s.lo, frame, 0)
                hi = self._idx(s.hi, frame, None)
                step = _num(self._idx(s.step, frame, 1))
                if lo == 0 and hi is None and step == 1:
                    continue
                v = self.apply_op("slice", [v], {"axis": axis, "start": lo, "stop": hi, "step": step}, s.span, frame)
            else:
                i = self._idx(s, frame, None)
                if isinstance(i, TVal):
                    raise ElabError("E0108", "tensor indices select with `gather(x, indices, axis=...)`", s.span)
                stop = i + 1 if not (isinstance(i, int) and i == -1) else None
                v = self.apply_op("slice", [v], {"axis": axis, "start": i, "stop": stop, "step": 1}, s.span, frame)
                drop.append(axis)
        if drop:
            shape = [d for i, d in enumerate(v.type.shape) if i not in drop]
            v = self.apply_op("reshape", [v], {"shape": shape}, e.span, frame)
        return v

    def _idx(self, expr, frame, default):
        if expr is None:
            return default
        v = self.eval(expr, frame)
        if isinstance(v, TVal):
            return v
        n = _num(v)
        if isinstance(n, int):
            return n
        if isinstance(v, Dim):
            return v
        raise ElabError("E0108", f"an index must be an integer, got {kind_of(v)}", expr.span)

    def _e_Scan(self, e, frame, hint, want):
        from .scan import elaborate_scan
        return elaborate_scan(self, e, frame)

    # ---- calls
    def _e_Call(self, e, frame, hint, want):
        if isinstance(e.func, A.Scan) and not e.args:  # `scan ... { } as name`: a label for the summary
            v = self.eval(e.func, frame)
            if frame.row is not None and e.label:
                frame.row.name = f"{frame.prefix}{e.label}"
                frame.row.labeled = True
            return v
        callee_v = self._resolve_callee(e.func, frame, want)
        if want in ("init", "layer") and not e.piped:
            # `normal(std=0.02)` as an initializer, `lstm(hidden=64)` as a layer value: not called yet.
            if isinstance(callee_v, InitVal):
                kwargs = self._kwargs_only(e, frame, "initializer")
                self._check_kwargs(callee_v.name, kwargs, schema.INITIALIZERS[callee_v.name], e.span, "initializer")
                return InitVal(callee_v.name, kwargs)
            if want == "layer" and isinstance(callee_v, LayerVal):
                kwargs = dict(callee_v.kwargs)
                kwargs.update(self._kwargs_only(e, frame, "layer value"))
                return LayerVal(callee_v.target, kwargs, e.span)
        return self.call(callee_v, e, frame, hint)

    def _kwargs_only(self, e, frame, what):
        out = {}
        for a in e.args:
            if a.name is None:
                raise ElabError("E0103", f"a partially applied {what} takes keyword arguments only", a.span,
                                help="write e.g. `normal(std=0.02)` or `lstm(hidden=64)`")
            out[a.name] = self.eval(a.value, frame)
        return out

    def _resolve_callee(self, func, frame, want=None):
        if isinstance(func, A.Name):
            n = func.id
            if n in frame.instances:
                return LayerVal(frame.instances[n], {}, func.span)
            if n in frame.env:
                v = frame.env[n]
                if v is POISON:
                    raise _PoisonSeen()
                if isinstance(v, (LayerVal, InstVal)):
                    return v if isinstance(v, LayerVal) else LayerVal(v, {}, func.span)
                if isinstance(v, InitVal):
                    return v
                raise ElabError("E0109", f"`{n}` is {kind_of(v)}, not something to call", func.span)
            if want == "init" and n in schema.INITIALIZERS:
                return InitVal(n, {})
            c = self._callee(n, frame)
            if c is None and n in self._consts(frame):
                raise ElabError("E0109", f"`{n}` is a constant ({kind_of(self._consts(frame)[n])}), not something to call",
                                func.span)
            if c is None:
                names = list(self.blocks.get(frame.module, {})) + [o for o in OPS if o not in INTERNAL] + list(_BUILTIN_FUNCS)
                h = suggest(n, names)
                if want == "init":
                    raise ElabError("E0101", f"unknown initializer `{n}`", func.span,
                                    help=f"initializers: {', '.join(schema.INITIALIZERS)}")
                raise ElabError("E0102", f"unknown layer or op `{n}`", func.span,
                                help=f"did you mean `{h}`?" if h else "define it with `block " + n + "(...) { ... }`")
            return LayerVal(c, {}, func.span)
        v = self.eval(func, frame)
        if isinstance(v, InstVal):
            return LayerVal(v, {}, func.span)
        if isinstance(v, LayerVal):
            return v
        raise ElabError("E0109", f"{kind_of(v)} is not something to call", func.span)

    def call(self, lv: LayerVal, e: A.Call, frame: Frame, hint=None):
        target = lv.target
        pos, kw = [], {}
        for a in e.args:
            if a.splat:
                v = self.eval(a.value, frame)
                if isinstance(v, DimPack):
                    v = list(v.dims)
                if not isinstance(v, (list, tuple)):
                    raise ElabError("E0108", f"`*` spreads a list, not {kind_of(v)}", a.span)
                pos += [(x, a.span) for x in v]
            elif a.name is None:
                if kw:
                    raise ElabError("E0103", "a positional argument after keyword arguments", a.span)
                pos.append((a, a.span))
            else:
                if a.name in kw:
                    raise ElabError("E0106", f"argument `{a.name}` is given twice", a.span)
                kw[a.name] = (a, a.span)
        if isinstance(target, str):
            from .builtins import call_builtin
            return call_builtin(self, target, pos, kw, e, frame)
        if isinstance(target, Op):
            return self._call_op(target, lv, pos, kw, e, frame)
        if isinstance(target, InstVal):
            return self._call_block(target.block, lv, pos, kw, e, frame, hint, reuse=target)
        return self._call_block(target, lv, pos, kw, e, frame, hint)

    def _all_args(self, items: dict, frame) -> dict:
        """Evaluate every argument even when one fails, so independent mistakes in one call all show."""
        out, failed = {}, None
        for key, (item, want) in items.items():
            try:
                out[key] = (self.arg_value(item, frame, want=want), item[1])
            except ElabError as ex:
                failed = failed or ex
                if isinstance(item[0], A.Arg):
                    self.report(ex.diag)
                    failed = True
            except _PoisonSeen:
                failed = failed or True
        if isinstance(failed, ElabError):
            raise failed
        if failed:
            raise _PoisonSeen()
        return out

    def arg_value(self, item, frame, want=None):
        a, span = item
        if isinstance(a, A.Arg):
            v = self.eval(a.value, frame, want=want)
        else:
            v = a
        if v is POISON:
            raise _PoisonSeen()
        return v

    # ---- ops
    def _call_op(self, op: Op, lv, pos, kw, e, frame):
        args = {**lv.kwargs}
        names = list(op.tensor_args if op.arity is not None else []) + list(op.attrs)
        if op.arity is None:  # concat([a, b], 1) or concat(a, b, axis=1): the tensors, then the attributes
            values = [self.arg_value(item, frame) for item in pos]
            if values and isinstance(values[0], (list, tuple)):
                tensors, rest = list(values[0]), values[1:]
            else:
                k = next((i for i, v in enumerate(values) if not isinstance(v, TVal)), len(values))
                tensors, rest = values[:k], values[k:]
            pos_attrs = list(zip(list(op.attrs), rest))
        else:
            if len(pos) > len(names):
                raise ElabError("E0103", f"`{op.name}` takes at most {len(names)} positional arguments, got {len(pos)}",
                                e.span, help=f"signature: {self.op_signature(op)}")
            values = list(self._all_args({i: (item, None) for i, item in enumerate(pos)}, frame).values())
            values = [v for v, _ in values]
            tensors = values[:op.arity]
            pos_attrs = list(zip(names[op.arity:], values[op.arity:]))
            for name, item in list(kw.items()):
                if name in op.tensor_args[:op.arity]:
                    i = op.tensor_args.index(name)
                    if i < len(tensors):
                        raise ElabError("E0106", f"argument `{name}` of `{op.name}` is given twice", item[1])
                    tensors += [None] * (i + 1 - len(tensors))
                    tensors[i] = self.arg_value(item, frame)
                    del kw[name]
        for name, v in pos_attrs:
            args[name] = v
        for name, item in kw.items():
            if name not in op.attrs:
                h = suggest(name, list(op.attrs) + list(op.tensor_args))
                raise ElabError("E0104", f"`{op.name}` has no argument `{name}`", item[1],
                                help=(f"did you mean `{h}`? " if h else "") + f"signature: {self.op_signature(op)}")
            if name in dict(pos_attrs):
                raise ElabError("E0106", f"argument `{name}` of `{op.name}` is given twice", item[1])
            args[name] = self.arg_value(item, frame)
        if op.arity is not None and (len(tensors) < op.arity or any(t is None for t in tensors)):
            missing = op.tensor_args[len([t for t in tensors if t is not None])]
            raise ElabError("E0105", f"`{op.name}` needs {op.arity} tensor argument{'s' * (op.arity > 1)}; `{missing}` is missing",
                            e.span, help=f"signature: {self.op_signature(op)}")
        # Compile-time arguments to math functions fold: `sqrt(d_k)` is a number.
        if op.arity == 1 and op.name in _MATH and _num(tensors[0]) is not None and not args:
            try:
                return _MATH[op.name](_num(tensors[0]))
            except (ValueError, OverflowError) as ex:
                raise ElabError("E0213", f"`{op.name}({_num(tensors[0])})`: {ex}", e.span)
        tvals = []
        for i, t in enumerate(tensors):
            if isinstance(t, TVal):
                tvals.append(t)
            elif literal_array(t) is not None:
                # A literal takes the dtype of the other (non-condition) operands: select(c, x, 0.0) is f32.
                arr = literal_array(t)
                ref = next((x for x in tensors if isinstance(x, TVal) and x.type.dtype != "bool"), None)
                if arr.dtype.kind == "b":
                    dtype = "bool"
                elif ref is not None:
                    dtype = ref.type.dtype
                else:
                    dtype = "i64" if arr.dtype.kind == "i" else "f32"
                tvals.append(self.constant(arr, dtype, e.span))
            else:
                an = op.tensor_args[min(i, len(op.tensor_args) - 1)]
                raise ElabError("E0108", f"argument `{an}` of `{op.name}` must be a tensor, got {kind_of(t)}", e.span)
        attrs = {}
        for name, (ty, default) in op.attrs.items():
            if name in args:
                attrs[name] = self._coerce_op_attr(op, name, ty, args[name], e.span)
            elif default is ...:
                raise ElabError("E0105", f"`{op.name}` needs the argument `{name}`", e.span,
                                help=f"signature: {self.op_signature(op)}")
            else:
                attrs[name] = default
        return self.apply_op(op.name, tvals, attrs, e.span, frame, label=e.label)

    def op_signature(self, op: Op) -> str:
        parts = list(op.tensor_args) if op.arity != 0 else []
        if op.arity is None:
            parts = ["*tensors"]
        for k, (ty, d) in op.attrs.items():
            parts.append(k if d is ... else f"{k}={d!r}" if not isinstance(d, str) else f'{k}="{d}"')
        return f"{op.name}({', '.join(parts)})"

    def _coerce_op_attr(self, op, name, ty, v, span):
        def bad(what):
            return ElabError("E0108", f"argument `{name}` of `{op.name}` must be {what}, got {kind_of(v)}", span)
        if ty == "int":
            n = _num(v)
            if not isinstance(n, int):
                raise bad("an integer")
            return n
        if ty == "float":
            n = _num(v)
            if n is None:
                raise bad("a number")
            return float(n)
        if ty == "bool":
            if not isinstance(v, bool):
                raise bad("true or false")
            return v
        if ty == "str":
            if not isinstance(v, str):
                raise bad("a string")
            return v
        if ty == "dim":
            if v is None:
                return None
            if isinstance(v, Dim):
                return v
            n = _num(v)
            if not isinstance(n, int):
                raise bad("an integer")
            return Dim.const(n)
        if ty == "dtype":
            if isinstance(v, DType):
                return v.name
            if isinstance(v, str) and v in DTYPES:
                return v
            raise bad("a dtype (f32, f64, i32, i64, bool)")
        if ty in ("axes", "ints"):
            if v is None:
                return None
            if isinstance(v, DimPack):
                v = list(v.dims)
            items = v if isinstance(v, (list, tuple)) else [v]
            out = [_num(x) for x in items]
            if not all(isinstance(x, int) for x in out):
                raise bad("an integer or a list of integers")
            return out[0] if not isinstance(v, (list, tuple)) and ty == "axes" else (out if isinstance(v, (list, tuple)) else out[0])
        if ty == "shape":
            if isinstance(v, DimPack):
                v = list(v.dims)
            if not isinstance(v, (list, tuple)):
                raise bad("a list of dimensions")
            out = []
            for x in v:
                if isinstance(x, DimPack):
                    out += list(x.dims)
                elif isinstance(x, Dim):
                    out.append(x)
                elif isinstance(_num(x), int):
                    out.append(Dim.const(_num(x)))
                else:
                    raise ElabError("E0209", f"a shape holds integer sizes, not {kind_of(x)}", span)
            return tuple(out)
        if ty == "pads":
            if not isinstance(v, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 and
                                                           all(isinstance(_num(q), int) for q in p) for p in v):
                raise bad("a list of [before, after] pairs")
            return [(_num(p[0]), _num(p[1])) for p in v]
        return v

    def apply_op(self, name, tvals, attrs, span, frame, label=None) -> TVal:
        g = frame.graph if frame is not None else self._graph()
        ins = []
        for t in tvals:
            if t is POISON:
                raise _PoisonSeen()
            ins.append(t.type)
        attrs = dict(attrs)
        try:
            out = OPS[name].shape(ins, attrs)
        except ShapeError as ex:
            notes = []
            for i, t in enumerate(tvals):
                if ex.operand in (None, i) and t.span is not None and t.span != span:
                    what = OPS[name].tensor_args[i] if i < len(OPS[name].tensor_args) else f"operand {i + 1}"
                    notes.append(Note(f"`{what}` is {t.type}, from here", t.span))
            raise ElabError(ex.code, ex.message, span, notes[:3], ex.help)
        if len(self.root) > MAX_NODES:
            raise ElabError("E0213", f"the model has grown past {MAX_NODES:,} ops", span,
                            help="look for a `repeat` or `for` with a larger count than intended")
        inputs = [self._local(t, g) for t in tvals]
        scope = self._node_scope(frame)
        nid = g.add(name, inputs, attrs, out, span, f"{scope}{label or name}")
        v = TVal(nid, out, g, span)
        row = frame.row if frame is not None else None
        if row is not None:
            # Ops written directly in the model body: one summary row per statement.
            if not row.outputs:
                (frame.group or frame.inst).children.append(row)
            if name not in row.kind.split(", "):
                row.kind = f"{row.kind}, {name}" if row.kind else name
            row.outputs = [nid]
        return v

    def _node_scope(self, frame):
        if frame is None:
            return ""
        s = f"{frame.scope}/" if frame.scope else ""
        return s + frame.prefix

    def _local(self, v: TVal, g: Graph) -> int:
        """The node for v in graph g: itself, or a capture of it when g is a scan body inside v's graph."""
        if v.graph is g:
            return v.node
        if g.parent is None:
            raise ElabError("E0900", "internal: a value escaped its scan body", v.span)
        outer = self._local(v, g.parent)
        if outer not in g.captures:
            cap = g.add("capture", [], {"index": len(g.capture_list)}, v.type, v.span, g.parent.node(outer)["name"])
            g.captures[outer] = cap
            g.capture_list.append(outer)
        return g.captures[outer]

    # ---- blocks
    def _child_name(self, frame: Frame, base: str, explicit: bool, span=None) -> str:
        name = f"{frame.prefix}{base}"
        if name in frame.used:
            if explicit:
                raise ElabError("E0107", f"two calls are labelled `{base}` in this scope", span,
                                help="labels name the weights of a call and must be unique")
            k = 1
            while f"{name}_{k}" in frame.used:
                k += 1
            name = f"{name}_{k}"
        frame.used.add(name)
        return name

    def _call_block(self, b: A.BlockDef, lv: LayerVal, pos, kw, e, frame: Frame, hint, reuse: InstVal | None = None):
        if b.kind == "model":
            raise ElabError("E0109", f"`{b.name}` is a model; only blocks can be called", e.span,
                            help=f"declare it with `block {b.name}(...)` to use it inside another model")
        if len(self.stack) > 200:
            raise ElabError("E0213", f"blocks nest more than 200 deep at `{b.name}` (a block that calls itself?)", e.span)
        # Bind arguments in declaration order; defaults may use earlier arguments.
        params = b.params
        names = [p.name for p in params]
        if len(pos) > len(params):
            raise ElabError("E0103", f"`{b.name}` takes {len(params)} argument{'s' * (len(params) != 1)} but {len(pos)} were given",
                            e.span, [Note(f"`{b.name}` is defined here", b.name_span)],
                            help=f"signature: {self.block_signature(b)}")
        raw = {}
        for p, item in zip(params, pos):
            raw[p.name] = item
        for name, item in kw.items():
            if name not in names:
                h = suggest(name, names)
                raise ElabError("E0104", f"`{b.name}` has no argument `{name}`", item[1],
                                [Note(f"`{b.name}` is defined here", b.name_span)],
                                help=(f"did you mean `{h}`? " if h else "") + f"signature: {self.block_signature(b)}")
            if name in raw:
                raise ElabError("E0106", f"argument `{name}` of `{b.name}` is given twice", item[1])
            raw[name] = item
        def want_of(p):
            if isinstance(p.type, A.AttrType) and p.type.name in ("layer", "init"):
                return p.type.name
            return None
        # Arguments are elaborated before this call is named, so `x |> dense |> dense` numbers them in order.
        pre = self._all_args({p.name: (raw[p.name], want_of(p)) for p in params if p.name in raw}, frame)
        is_std = b.module.startswith(self.std_dir)
        if reuse is not None:
            scope = reuse.scope
            local = self._child_name(frame, scope.rsplit("/", 1)[-1] + "#shared", explicit=False)
        else:
            base = e.label or (hint if hint and not e.piped else None) or b.name
            local = self._child_name(frame, base, explicit=e.label is not None, span=e.span)
            scope = f"{frame.scope}/{local}" if frame.scope else local
            if frame.reuse is not None:
                shared = frame.reuse.members.get(local)
                if isinstance(shared, InstVal):
                    reuse = shared
        inst = Instance(scope if reuse is None else f"{scope} (shared)", b.name, e.span)
        callee = Frame(b, scope, {}, frame.graph, inst, e.span, b.module, reuse=reuse, is_std=is_std)
        callee.scan_yields = None
        given = dict(lv.kwargs) if reuse is None else dict(reuse.attrs)
        for p in params:
            if p.name in pre:
                v, span = pre[p.name]
            elif p.name in given:
                v, span = given[p.name], e.span
            elif p.default is not None:
                v = self.eval(p.default, callee, want=want_of(p))
                span = p.default.span
            else:
                raise ElabError("E0105", f"`{b.name}` needs the argument `{p.name}`", e.span,
                                [Note(f"`{b.name}` is defined here", b.name_span)],
                                help=f"signature: {self.block_signature(b)}")
            if isinstance(p.type, A.TensorType) and v is None and isinstance(p.default, A.Name) and p.default.id == "none":
                pass  # an optional tensor argument, declared `= none`, left out (or passed on as none)
            elif isinstance(p.type, A.TensorType):
                if not isinstance(v, TVal):
                    arr = literal_array(v)
                    if arr is None:
                        raise ElabError("E0108", f"argument `{p.name}` of `{b.name}` must be a tensor, got {kind_of(v)}",
                                        span, [Note(f"`{p.name}` is declared here", p.span)])
                    v = self.constant(arr, p.type.dtype or "f32", span)
                self._unify(p.type, v, callee, p.name, span, b.name)
            else:
                v = self._coerce_attr(v, p.type, span, p.name, b.name)
            callee.env[p.name] = v
        attrs = {p.name: callee.env[p.name] for p in params if not isinstance(p.type, A.TensorType)}
        # Appended after the arguments were elaborated, so `x |> a |> b` lists a before b.
        (frame.group or frame.inst).children.append(inst)
        self.stack.append(callee)
        try:
            try:
                self.exec_body(b.body, callee)
            except _Return:
                pass
        finally:
            self.stack.pop()
        rets = callee.returned
        if rets is None:
            raise ElabError("E0111", f"block `{b.name}` ended without `return`", b.name_span)
        self._check_returns(b, callee, rets, frame.graph, call_span=e.span)
        # The caller sees the call as the origin of its results, not a line inside the block.
        outs = [TVal(r.node, r.type, r.graph, e.span) if isinstance(r, TVal) else r for r in rets]
        inst.outputs = [r.node for r in outs if isinstance(r, TVal)]
        inst.graph = frame.graph
        if reuse is None:
            iv = InstVal(scope, b, attrs, callee.members)
            frame.members[local] = iv
            # `enc = dense(x, 64)` makes `enc` both the output tensor and, for `enc.W` and `enc(x2)`, the instance.
            if e.label:
                frame.instances[e.label] = iv
            elif hint and not e.piped:
                frame.instances[hint] = iv
        if any(r is POISON for r in outs):
            raise _PoisonSeen()
        return outs[0] if len(outs) == 1 else tuple(outs)

    def block_signature(self, b: A.BlockDef) -> str:
        parts = []
        for p in b.params:
            t = self._decl_text(p.type) if isinstance(p.type, A.TensorType) else str(p.type)
            d = f" = {self._expr_text(p.default)}" if p.default is not None else ""
            parts.append(f"{p.name}: {t}{d}")
        return f"{b.name}({', '.join(parts)})"

    def _coerce_attr(self, v, ty: A.AttrType, span, pname="value", bname=""):
        where = f"argument `{pname}` of `{bname}`" if bname else f"`{pname}`"
        name = ty.name
        if name in ("f32", "f64"):
            name = "float"
        elif name in ("i32", "i64"):
            name = "int"
        if name == "any":
            return v
        if name == "int" or name == "dim":
            if isinstance(v, Dim) and (v.is_int or not v.is_const):
                return int(v.value) if v.is_const else v
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if isinstance(v, float) and v.is_integer() and name == "dim":
                return int(v)
            raise ElabError("E0108", f"{where} must be an integer, got {kind_of(v)}", span)
        if name == "float":
            n = _num(v)
            if n is None:
                raise ElabError("E0108", f"{where} must be a number, got {kind_of(v)}", span)
            return float(n)
        if name == "bool":
            if not isinstance(v, bool):
                raise ElabError("E0108", f"{where} must be true or false, got {kind_of(v)}", span)
            return v
        if name == "str":
            if not isinstance(v, str):
                raise ElabError("E0108", f"{where} must be a string, got {kind_of(v)}", span)
            return v
        if name == "layer":
            if isinstance(v, InstVal):
                return LayerVal(v, {}, span)
            if not isinstance(v, LayerVal):
                raise ElabError("E0108", f"{where} must be a layer (a block or op name, like `relu` or `lstm(hidden=64)`), got {kind_of(v)}", span)
            return v
        if name == "init":
            if isinstance(v, InitVal):
                return v
            n = _num(v)
            if n is not None:
                return InitVal("constant", {"value": float(n)})
            raise ElabError("E0108", f"{where} must be an initializer, got {kind_of(v)}", span)
        if name == "list":
            if isinstance(v, DimPack):
                v = list(v.dims)
            if not isinstance(v, (list, tuple)):
                raise ElabError("E0108", f"{where} must be a list, got {kind_of(v)}", span)
            return [self._coerce_attr(x, ty.elem, span, pname, bname) for x in v]
        raise ElabError("E0900", f"internal: unknown attribute type {name}", span)

    def _check_kwargs(self, name, kwargs, table, span, what):
        for k in kwargs:
            if k not in table:
                h = suggest(k, list(table))
                raise ElabError("E0104", f"{what} `{name}` has no argument `{k}`", span,
                                help=(f"did you mean `{h}`? " if h else "") + f"it takes: {', '.join(table) or 'nothing'}")
        for k, d in table.items():
            if d is ... and k not in kwargs:
                raise ElabError("E0105", f"{what} `{name}` needs the argument `{k}`", span)

    def _check_returns(self, b: A.BlockDef, frame: Frame, rets, g, call_span=None):
        if b.returns is None:
            if b.kind == "model":  # undeclared outputs are named by position
                for i, r in enumerate(rets):
                    if isinstance(r, TVal):
                        g.outputs.append(("output" if len(rets) == 1 else f"output{i}", r.node))
            return
        if len(rets) != len(b.returns):
            raise ElabError("E0112", f"`{b.name}` declares {len(b.returns)} output{'s' * (len(b.returns) != 1)} but returns {len(rets)}",
                            b.name_span)
        for i, (r, decl) in enumerate(zip(rets, b.returns)):
            name = decl.name or ("output" if len(rets) == 1 else f"output{i}")
            if r is POISON:
                continue
            if not isinstance(r, TVal):
                self.report(Diagnostic("E0212", f"`{b.name}` must return a tensor for `{name}`, got {kind_of(r)}", decl.span))
                continue
            try:
                want = self._ret_type(decl.type, frame)
            except ElabError as ex:
                self.report(ex.diag)
                continue
            except _PoisonSeen:
                continue
            if want.dtype != r.type.dtype or len(want.shape) != len(r.type.shape) or any(
                    a != c for a, c in zip(want.shape, r.type.shape)):
                d = Diagnostic("E0212", f"`{b.name}` returns {r.type} for `{name}` but declares {want}", decl.span,
                               self._origin_notes(r))
                if call_span is not None and b.module.startswith(self.std_dir):
                    d.notes.append(Note("called here", call_span))
                self.report(d)
            if b.kind == "model":
                g.outputs.append((name, r.node))

    def _ret_type(self, tt: A.TensorType, frame: Frame) -> TType:
        dims = []
        for d in tt.dims:
            if isinstance(d, A.VariadicDim):
                pack = frame.env.get(d.name)
                if not isinstance(pack, DimPack):
                    raise ElabError("E0207", f"`*{d.name}` is not bound", d.span)
                dims += list(pack.dims)
            else:
                dims.append(self.eval_dim(d, frame))
        return TType(tuple(dims), tt.dtype or "f32")


class _PoisonSeen(Exception):
    """A value that is already wrong was used: its error has been reported, so say nothing more."""


class _Undecided:
    """A comparison of symbolic sizes that cannot be decided until they are bound."""

    def __bool__(self):
        raise _PoisonSeen()


def literal_array(v):
    """A number, bool, or rectangular nested list of them as an array (a constant tensor); else None."""
    if isinstance(v, (bool, int, float, Dim)):
        n = v if isinstance(v, bool) else _num(v)
        return None if n is None else np.asarray(n)
    if not isinstance(v, (list, tuple)) or not v:
        return None
    items = [literal_array(x) for x in v]
    if any(x is None for x in items) or len({x.shape for x in items}) != 1:
        return None
    return np.stack(items)


def _kind_name(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    return type(v).__name__
