"""The op registry: the closed set of primitives. One entry per op holds all of its rules.

This issue fills in each entry's surface signature (how a .dln call binds to it), its shape and dtype
rule and its FLOP count; later stages add the NumPy implementation, the VJP rule and the code emitters to
the same entries."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .dims import Dim, product, shape_str
from .graph import FLOATS, INTS, TType


class ShapeError(Exception):
    def __init__(self, code: str, message: str, help: str | None = None, operand: int | None = None):
        super().__init__(message)
        self.code, self.message, self.help, self.operand = code, message, help, operand


@dataclass
class Op:
    name: str
    kind: str  # elementwise, broadcast, reduce, contract, window, movement, source, random, opaque
    arity: int | None  # tensor operands; None: a list of tensors (concat)
    attrs: dict = field(default_factory=dict)  # surface attribute -> (type, default); `...` = required
    shape: Callable = None  # (list[TType], attrs) -> TType
    flops: Callable = None  # (list[TType], TType, attrs) -> Dim
    doc: str = ""
    tensor_args: tuple = ("x",)  # names of the tensor operands, for keyword calls and messages
    impl: Callable = None  # NumPy reference semantics: (list[ndarray], attrs, Ctx) -> ndarray
    vjp: Callable = None  # reverse-mode rule: (Emitter, node, cotangent) -> cotangent per input (None: none)


OPS: dict[str, Op] = {}


def op(name, kind, arity=1, attrs=None, doc="", tensor_args=None, flops=None):
    def register(fn):
        OPS[name] = Op(name, kind, arity, attrs or {}, fn, flops, doc,
                       tensor_args or (("x",) if arity == 1 else ("xs",) if arity is None else tuple("abc"[:arity])))
        return fn
    return register


def numel(t: TType) -> Dim:
    return product(t.shape)


def _ew_flops(ins, out, attrs):
    return numel(out)


def _zero_flops(ins, out, attrs):
    return Dim.const(0)


# ---- helpers shared by the rules
def need_float(t: TType, what: str, operand=0):
    if t.dtype not in FLOATS:
        raise ShapeError("E0203", f"{what} needs a float tensor, got {t}", "convert with `cast(x, f32)`", operand)


def norm_axis(axis: int, rank: int, what="axis") -> int:
    if not -rank <= axis < max(rank, 1) or (rank == 0 and axis not in (0, -1)):
        raise ShapeError("E0208", f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank if rank else 0


def broadcast_shapes(shapes) -> tuple:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dim = None
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if dim is None or dim == Dim.const(1):
                dim = d
            elif d == Dim.const(1) or d == dim:
                continue
            else:
                text = " and ".join(shape_str(x) for x in shapes)
                raise ShapeError("E0204", f"cannot broadcast shapes {text}: dimension {dim} does not match {d}",
                                 "dimensions are aligned from the right and must be equal or 1")
        out.append(dim)
    return tuple(out)


def same_dtype(ts, what):
    dts = {t.dtype for t in ts}
    if len(dts) > 1:
        raise ShapeError("E0203", f"`{what}` operands have different dtypes: {', '.join(str(t) for t in ts)}",
                         "convert one operand with `cast(x, dtype)`")
    return ts[0].dtype


# ---- elementwise
_UNARY_FLOAT = ["exp", "log", "log1p", "sqrt", "tanh", "sigmoid", "atan", "sin", "cos", "erf", "floor"]
_UNARY_NUM = ["neg", "abs", "sign"]


def _unary_rule(name, floats_only):
    def rule(ins, attrs):
        if floats_only:
            need_float(ins[0], f"`{name}`")
        elif ins[0].dtype == "bool":
            raise ShapeError("E0203", f"`{name}` needs a numeric tensor, got {ins[0]}")
        return ins[0]
    return rule


for _n in _UNARY_FLOAT:
    op(_n, "elementwise", flops=_ew_flops, doc=f"elementwise {_n}")(_unary_rule(_n, True))
for _n in _UNARY_NUM:
    op(_n, "elementwise", flops=_ew_flops, doc=f"elementwise {_n}")(_unary_rule(_n, False))


@op("not", "elementwise", doc="logical not of a bool tensor")
def _not(ins, attrs):
    if ins[0].dtype != "bool":
        raise ShapeError("E0203", f"`not` needs a bool tensor, got {ins[0]}")
    return ins[0]


def _binary_rule(name, result=None, need=None):
    def rule(ins, attrs):
        dt = same_dtype(ins, name)
        if need == "num" and dt == "bool":
            raise ShapeError("E0203", f"`{name}` needs numeric tensors, got {ins[0]} and {ins[1]}")
        if need == "bool" and dt != "bool":
            raise ShapeError("E0203", f"`{name}` needs bool tensors, got {ins[0]} and {ins[1]}")
        if need == "float":
            need_float(ins[0], f"`{name}`")
        return TType(broadcast_shapes([ins[0].shape, ins[1].shape]), result or dt)
    return rule


for _n in ["add", "sub", "mul", "div", "maximum", "minimum"]:
    op(_n, "broadcast", 2, flops=_ew_flops, doc=f"elementwise {_n} with NumPy broadcasting")(_binary_rule(_n, need="num"))
op("pow", "broadcast", 2, flops=_ew_flops, doc="elementwise power")(_binary_rule("pow", need="float"))
for _n in ["eq", "ne", "lt", "le", "gt", "ge"]:
    op(_n, "broadcast", 2, flops=_ew_flops, doc=f"comparison {_n}, giving bool")(_binary_rule(_n, result="bool"))
for _n in ["and", "or"]:
    op(_n, "broadcast", 2, doc=f"logical {_n}")(_binary_rule(_n, need="bool"))


@op("select", "broadcast", 3, tensor_args=("cond", "a", "b"), flops=_ew_flops,
    doc="select(cond, a, b): a where cond is true, else b")
def _select(ins, attrs):
    if ins[0].dtype != "bool":
        raise ShapeError("E0203", f"`select` needs a bool condition, got {ins[0]}", operand=0)
    dt = same_dtype(ins[1:], "select")
    return TType(broadcast_shapes([t.shape for t in ins]), dt)


# ---- reductions
def _axes(attrs, rank):
    ax = attrs.get("axis")
    if ax is None:
        return list(range(rank))
    ax = [ax] if isinstance(ax, int) else list(ax)
    out = [norm_axis(a, rank) for a in ax]
    if len(set(out)) != len(out):
        raise ShapeError("E0208", f"axis {ax} names an axis twice")
    return sorted(out)


def _reduce_shape(t: TType, axes, keep):
    return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(t.shape) if keep or i not in axes)


def _reduce_rule(name, out_dtype=None):
    def rule(ins, attrs):
        t = ins[0]
        if name in ("sum", "mean", "max", "min") and t.dtype == "bool":
            raise ShapeError("E0203", f"`{name}` needs a numeric tensor, got {t}", "convert with `cast(x, f32)`")
        if name == "mean":
            need_float(t, "`mean`")
        axes = _axes(attrs, t.rank)
        return TType(_reduce_shape(t, axes, attrs["keepdims"]), out_dtype or t.dtype)
    return rule


for _n in ["sum", "mean", "max", "min"]:
    op(_n, "reduce", attrs={"axis": ("axes", None), "keepdims": ("bool", False)},
       flops=lambda ins, out, attrs: numel(ins[0]), doc=f"{_n} over axes (all axes when none are given)")(_reduce_rule(_n))
for _n in ["argmax", "argmin"]:
    op(_n, "reduce", attrs={"axis": ("int", -1), "keepdims": ("bool", False)},
       flops=lambda ins, out, attrs: numel(ins[0]), doc=f"index of the {_n[3:]} along an axis (i64)")(_reduce_rule(_n, "i64"))


# ---- contraction
def _matmul_flops(ins, out, attrs):
    a = ins[0]
    k = a.shape[-1]
    return 2 * numel(out) * k


@op("matmul", "contract", 2, flops=_matmul_flops, doc="matrix product with NumPy's rules (batched, broadcast)")
def _matmul(ins, attrs):
    a, b = ins
    dt = same_dtype(ins, "@")
    if dt == "bool":
        raise ShapeError("E0203", f"`@` needs numeric tensors, got {a} and {b}")
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("E0202", f"`@` needs tensors of rank 1 or more, got {a} and {b}", "use `*` for scaling")
    sa = a.shape if a.rank > 1 else (Dim.const(1),) + a.shape
    sb = b.shape if b.rank > 1 else b.shape + (Dim.const(1),)
    if sa[-1] != sb[-2]:
        raise ShapeError("E0205", f"matmul contraction mismatch: {a} @ {b}: {sa[-1]} != {sb[-2]}",
                         "the last dimension of the left operand must equal the second-to-last of the right one")
    batch = broadcast_shapes([sa[:-2], sb[:-2]])
    out = batch + (sa[-2],) * (a.rank > 1) + (sb[-1],) * (b.rank > 1)
    return TType(out, dt)


# ---- windows: convolution and pooling
def _per_axis(v, n, what):
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise ShapeError("E0209", f"`{what}` has {len(v)} values for {n} spatial dimensions")
    return v


def window_size(size: Dim, k, stride, pad, dilation, rnd, axis_name) -> Dim:
    """The course's formula (W - F + 2P) / S + 1, with dilation; exact unless round says floor or ceil."""
    span = dilation * (k - 1) + 1
    num = size + 2 * pad - span
    q = num / stride
    if rnd == "floor":
        q = q.floor()
    elif rnd == "ceil":
        q = q.ceil()
    out = q + 1
    if out.is_const:
        v = out.value
        if v.denominator != 1:
            raise ShapeError("E0206", f"output {axis_name} (W - F + 2P) / S + 1 = ({size} - {span} + 2*{pad}) / {stride} + 1 = {float(v):g} is not an integer",
                             "change padding or stride so that it divides exactly, or pass round=\"floor\"")
        if v <= 0:
            raise ShapeError("E0206", f"output {axis_name} (W - F + 2P) / S + 1 = ({size} - {span} + 2*{pad}) / {stride} + 1 = {v} is not positive",
                             "the window is larger than the padded input: use a smaller kernel or more padding")
    return out


_WINDOW_ATTRS = {"stride": ("ints", 1), "pad": ("ints", 0), "dilation": ("ints", 1), "round": ("str", "exact")}


def _axis_name(i, n):
    return {1: ["length"], 2: ["height", "width"], 3: ["depth", "height", "width"]}.get(n, [f"spatial axis {i}"] * n)[i]


def _check_round(attrs):
    if attrs.get("round", "exact") not in ("exact", "floor", "ceil"):
        raise ShapeError("E0108", f"round must be \"exact\", \"floor\" or \"ceil\", not {attrs['round']!r}")


def _conv_flops(ins, out, attrs):
    w = ins[1]
    return 2 * numel(out) * product(w.shape[1:])


@op("conv", "contract", 2, tensor_args=("x", "w"), flops=_conv_flops,
    attrs=dict(_WINDOW_ATTRS, groups=("int", 1)),
    doc="N-d convolution (cross-correlation): x [N, C, *S], w [K, C/groups, *k] -> [N, K, *S']")
def _conv(ins, attrs):
    x, w = ins
    dt = same_dtype(ins, "conv")
    need_float(x, "`conv`")
    if x.rank < 3:
        raise ShapeError("E0202", f"`conv` input must be [N, C, spatial...], got {x}", operand=0)
    if w.rank != x.rank:
        raise ShapeError("E0202", f"`conv` filter {w} must have the rank of the input {x}", operand=1)
    _check_round(attrs)
    n = x.rank - 2
    groups = attrs["groups"]
    if groups < 1:
        raise ShapeError("E0209", "groups must be positive")
    if x.shape[1] != w.shape[1] * groups:
        raise ShapeError("E0201", f"`conv` input has {x.shape[1]} channels but the filter expects {w.shape[1] * groups}",
                         "the filter is [filters, in_channels, kh, kw]")
    stride, pad, dil = (_per_axis(attrs[a], n, a) for a in ("stride", "pad", "dilation"))
    spatial = tuple(window_size(x.shape[2 + i], w.shape[2 + i], stride[i], pad[i], dil[i], attrs["round"],
                                _axis_name(i, n)) for i in range(n))
    return TType((x.shape[0], w.shape[0]) + spatial, dt)


@op("conv_transpose", "contract", 2, tensor_args=("x", "w"),
    flops=lambda ins, out, attrs: 2 * numel(ins[0]) * product(ins[1].shape[1:]),
    attrs={"stride": ("ints", 1), "pad": ("ints", 0), "output_pad": ("ints", 0), "dilation": ("ints", 1),
           "groups": ("int", 1)},
    doc="transposed (fractionally strided) convolution: x [N, C, *S], w [C, K/groups, *k] -> [N, K, *S']")
def _conv_t(ins, attrs):
    x, w = ins
    dt = same_dtype(ins, "conv_transpose")
    need_float(x, "`conv_transpose`")
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError("E0202", f"`conv_transpose` needs x [N, C, spatial...] and w of the same rank, got {x} and {w}")
    if x.shape[1] != w.shape[0]:
        raise ShapeError("E0201", f"`conv_transpose` input has {x.shape[1]} channels but the filter expects {w.shape[0]}")
    groups = attrs.get("groups", 1)
    n = x.rank - 2
    stride, pad, opad, dil = (_per_axis(attrs[a], n, a) for a in ("stride", "pad", "output_pad", "dilation"))
    spatial = []
    for i in range(n):
        out = (x.shape[2 + i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (w.shape[2 + i] - 1) + opad[i] + 1
        if out.is_const and out.value <= 0:
            raise ShapeError("E0206", f"the {_axis_name(i, n)} of `conv_transpose` would be {out}")
        spatial.append(out)
    return TType((x.shape[0], w.shape[1] * groups) + tuple(spatial), dt)


def _pool_rule(name):
    def rule(ins, attrs):
        x = ins[0]
        need_float(x, f"`{name}`")
        if x.rank < 3:
            raise ShapeError("E0202", f"`{name}` input must be [N, C, spatial...], got {x}")
        _check_round(attrs)
        n = x.rank - 2
        k = _per_axis(attrs["k"], n, "k")
        stride = _per_axis(attrs["stride"] if attrs["stride"] is not None else k, n, "stride")
        pad = _per_axis(attrs["pad"], n, "pad")
        spatial = tuple(window_size(x.shape[2 + i], Dim.const(k[i]), stride[i], pad[i], 1, attrs["round"],
                                    _axis_name(i, n)) for i in range(n))
        return TType(x.shape[:2] + spatial, x.dtype)
    return rule


for _n in ["max_pool", "avg_pool"]:
    op(_n, "window", attrs={"k": ("ints", ...), "stride": ("ints", None), "pad": ("ints", 0), "round": ("str", "exact")},
       flops=lambda ins, out, attrs: numel(out) * product(Dim.const(k) for k in _per_axis(attrs["k"], out.rank - 2, "k")),
       doc=f"{_n.split('_')[0]} pooling over the spatial axes of [N, C, *S]; stride defaults to k")(_pool_rule(_n))


# ---- movement
@op("reshape", "movement", attrs={"shape": ("shape", ...)}, flops=_zero_flops,
    doc="reshape to a shape of the same size; one entry may be -1")
def _reshape(ins, attrs):
    x = ins[0]
    shape = list(attrs["shape"])
    holes = [i for i, d in enumerate(shape) if d == Dim.const(-1)]
    if len(holes) > 1:
        raise ShapeError("E0209", "reshape allows at most one -1")
    for d in shape:
        if d.is_const and d.value <= 0 and d != Dim.const(-1):
            raise ShapeError("E0209", f"reshape to a non-positive size {d}")
    total = numel(x)
    if holes:
        rest = product(d for i, d in enumerate(shape) if i not in holes)
        fill = total / rest
        if fill.is_const and (fill.value.denominator != 1 or fill.value <= 0):
            raise ShapeError("E0209", f"cannot reshape {x} to {shape_str(shape)}: {total} elements do not divide into {rest}")
        shape[holes[0]] = fill
    elif product(shape) != total:
        raise ShapeError("E0209", f"cannot reshape {x} ({total} elements) to {shape_str(shape)} ({product(shape)} elements)")
    attrs["shape"] = tuple(shape)
    return TType(tuple(shape), x.dtype)


@op("transpose", "movement", attrs={"perm": ("ints", None)}, flops=_zero_flops,
    doc="permute axes; without perm, swap the last two")
def _transpose(ins, attrs):
    x = ins[0]
    perm = attrs["perm"]
    if perm is None:
        if x.rank < 2:
            raise ShapeError("E0202", f"transpose without perm needs rank 2 or more, got {x}")
        perm = list(range(x.rank - 2)) + [x.rank - 1, x.rank - 2]
        attrs["perm"] = perm
    if sorted(norm_axis(p, x.rank) for p in perm) != list(range(x.rank)):
        raise ShapeError("E0208", f"perm {list(perm)} is not a permutation of the {x.rank} axes of {x}")
    attrs["perm"] = [norm_axis(p, x.rank) for p in perm]
    return TType(tuple(x.shape[p] for p in attrs["perm"]), x.dtype)


@op("broadcast_to", "movement", attrs={"shape": ("shape", ...)}, flops=_zero_flops, doc="broadcast to a shape")
def _broadcast_to(ins, attrs):
    x = ins[0]
    shape = tuple(attrs["shape"])
    out = broadcast_shapes([x.shape, shape])
    if out != shape:
        raise ShapeError("E0204", f"cannot broadcast {x} to {shape_str(shape)}")
    return TType(shape, x.dtype)


@op("slice", "movement", attrs={"axis": ("int", ...), "start": ("dim", 0), "stop": ("dim", None), "step": ("int", 1)},
    flops=_zero_flops, doc="elements start:stop:step along one axis")
def _slice(ins, attrs):
    x = ins[0]
    ax = norm_axis(attrs["axis"], x.rank)
    n = x.shape[ax]
    start = Dim.of(attrs["start"])
    stop = n if attrs["stop"] is None else Dim.of(attrs["stop"])
    step = attrs["step"]
    if step <= 0:
        raise ShapeError("E0209", "slice step must be positive")
    attrs["axis"] = ax
    if start.is_const and start.value < 0:
        start = n + start
    if stop.is_const and stop.value < 0:
        stop = n + stop
    if n.is_const and start.is_const and stop.is_const:
        lo, hi = max(0, int(start.value)), min(int(n.value), int(stop.value))
        if lo >= hi:
            raise ShapeError("E0209", f"slice {start}:{stop} of an axis of size {n} is empty")
        start, stop = Dim.const(lo), Dim.const(hi)
    attrs["start"], attrs["stop"] = start, stop
    size = ((stop - start) / step).ceil() if step != 1 else stop - start
    return TType(x.shape[:ax] + (size,) + x.shape[ax + 1:], x.dtype)


@op("concat", "movement", None, attrs={"axis": ("int", 0)}, flops=_zero_flops, tensor_args=("xs",),
    doc="join tensors along an axis")
def _concat(ins, attrs):
    if not ins:
        raise ShapeError("E0103", "concat needs at least one tensor")
    dt = same_dtype(ins, "concat")
    r = ins[0].rank
    ax = norm_axis(attrs["axis"], r)
    attrs["axis"] = ax
    total = Dim.const(0)
    for i, t in enumerate(ins):
        if t.rank != r:
            raise ShapeError("E0202", f"concat operand {i} has rank {t.rank}, operand 0 has rank {r}", operand=i)
        for j in range(r):
            if j != ax and t.shape[j] != ins[0].shape[j]:
                raise ShapeError("E0201", f"concat operand {i} is {t} but operand 0 is {ins[0]}: axis {j} differs",
                                 f"all axes but the concat axis ({ax}) must agree", operand=i)
        total = total + t.shape[ax]
    return TType(ins[0].shape[:ax] + (total,) + ins[0].shape[ax + 1:], dt)


@op("pad", "movement", attrs={"pads": ("pads", ...), "value": ("float", 0.0)}, flops=_zero_flops,
    doc="pad with a constant: pads is a list of [before, after] per axis (from the first axis)")
def _pad(ins, attrs):
    x = ins[0]
    pads = attrs["pads"]
    if len(pads) > x.rank:
        raise ShapeError("E0209", f"pad gives {len(pads)} axes for a tensor of rank {x.rank}")
    shape = list(x.shape)
    for i, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:
            raise ShapeError("E0209", "padding must not be negative")
        shape[i] = shape[i] + lo + hi
    return TType(tuple(shape), x.dtype)


def _check_outside(attrs):
    if attrs.get("outside", "error") not in ("error", "zero"):
        raise ShapeError("E0108", f"outside must be \"error\" or \"zero\", not {attrs['outside']!r}")


@op("gather", "movement", 2, attrs={"axis": ("int", 0), "outside": ("str", "error")}, tensor_args=("table", "indices"),
    flops=_zero_flops,
    doc="take entries of table along an axis at integer indices (embedding lookup); an index outside the "
        "axis is an error, or with outside=\"zero\" a row of zeros (as one_hot(i) @ table gives, for a "
        "finite table)")
def _gather(ins, attrs):
    t, idx = ins
    if idx.dtype not in INTS:
        raise ShapeError("E0203", f"gather indices must be integers, got {idx}", operand=1)
    _check_outside(attrs)
    ax = norm_axis(attrs["axis"], t.rank)
    attrs["axis"] = ax
    return TType(t.shape[:ax] + idx.shape + t.shape[ax + 1:], t.dtype)


@op("scatter_add", "movement", 3, attrs={"axis": ("int", 0), "outside": ("str", "error")},
    tensor_args=("base", "indices", "updates"), flops=lambda ins, out, attrs: numel(ins[2]),
    doc="base with updates added at integer indices along an axis: the adjoint of gather (duplicates add); "
        "an index outside the axis is an error, or with outside=\"zero\" adds nothing")
def _scatter_add(ins, attrs):
    base, idx, upd = ins
    if idx.dtype not in INTS:
        raise ShapeError("E0203", f"scatter_add indices must be integers, got {idx}", operand=1)
    _check_outside(attrs)
    ax = norm_axis(attrs["axis"], base.rank)
    attrs["axis"] = ax
    want = base.shape[:ax] + idx.shape + base.shape[ax + 1:]
    if upd.shape != want:
        raise ShapeError("E0201", f"scatter_add updates must be {shape_str(want)}, got {upd}", operand=2)
    return TType(base.shape, same_dtype([base, upd], "scatter_add"))


@op("max_pool_grad", "window", 3, tensor_args=("x", "out", "g"),
    attrs={"k": ("ints", ...), "stride": ("ints", None), "pad": ("ints", 0), "round": ("str", "exact")},
    flops=lambda ins, out, attrs: numel(ins[2]),
    doc="the gradient of max_pool: each window's cotangent goes to the first element that was its maximum")
def _max_pool_grad(ins, attrs):
    return ins[0]


@op("one_hot", "movement", attrs={"depth": ("dim", ...), "dtype": ("dtype", "f32")}, flops=_zero_flops,
    doc="one-hot encoding of integer indices: shape + [depth]")
def _one_hot(ins, attrs):
    if ins[0].dtype not in INTS:
        raise ShapeError("E0203", f"one_hot needs integer indices, got {ins[0]}")
    depth = Dim.of(attrs["depth"])
    if depth.is_const and depth.value <= 0:
        raise ShapeError("E0209", "one_hot depth must be positive")
    return TType(ins[0].shape + (depth,), attrs["dtype"])


@op("cast", "elementwise", attrs={"dtype": ("dtype", ...)}, flops=_zero_flops, doc="convert the element type")
def _cast(ins, attrs):
    return TType(ins[0].shape, attrs["dtype"])


@op("stop_gradient", "elementwise", flops=_zero_flops, doc="identity whose gradient is zero")
def _stop_gradient(ins, attrs):
    return ins[0]


# ---- sources (no tensor operands)
def _check_shape(shape):
    for d in shape:
        if d.is_const and (d.value <= 0 or d.value.denominator != 1):
            raise ShapeError("E0209", f"invalid size {d} in shape {shape_str(shape)}")
    return tuple(shape)


@op("fill", "source", 0, attrs={"shape": ("shape", ...), "value": ("float", 0.0), "dtype": ("dtype", "f32")},
    flops=_zero_flops, doc="a tensor of one value")
def _fill(ins, attrs):
    return TType(_check_shape(attrs["shape"]), attrs["dtype"])


@op("iota", "source", 0, attrs={"shape": ("shape", ...), "axis": ("int", 0), "dtype": ("dtype", "i64")},
    flops=_zero_flops, doc="the index along one axis, broadcast to a shape")
def _iota(ins, attrs):
    shape = _check_shape(attrs["shape"])
    attrs["axis"] = norm_axis(attrs["axis"], len(shape))
    return TType(shape, attrs["dtype"])


@op("constant", "source", 0, flops=_zero_flops, doc="a literal tensor written in the source")
def _constant(ins, attrs):
    return TType(tuple(Dim.const(d) for d in attrs["value"].shape), attrs["dtype"])


@op("rand_uniform", "random", 0, attrs={"shape": ("shape", ...), "low": ("float", 0.0), "high": ("float", 1.0),
                                         "dtype": ("dtype", "f32")},
    flops=_zero_flops, doc="uniform random numbers from the counter-based generator (seed, step, element)")
def _rand_uniform(ins, attrs):
    if attrs["dtype"] not in FLOATS:
        raise ShapeError("E0203", "random numbers are floats")
    return TType(_check_shape(attrs["shape"]), attrs["dtype"])


@op("rand_normal", "random", 0, attrs={"shape": ("shape", ...), "mean": ("float", 0.0), "std": ("float", 1.0),
                                        "dtype": ("dtype", "f32")},
    flops=_zero_flops, doc="normal random numbers from the counter-based generator (seed, step, element)")
def _rand_normal(ins, attrs):
    if attrs["dtype"] not in FLOATS:
        raise ShapeError("E0203", "random numbers are floats")
    return TType(_check_shape(attrs["shape"]), attrs["dtype"])


@op("dim_value", "source", 0, attrs={"dim": ("dim", ...), "dtype": ("dtype", "f32")}, flops=_zero_flops,
    doc="a size as a number at run time, e.g. the batch size B in sum(x) / B")
def _dim_value(ins, attrs):
    return TType((), attrs["dtype"])


# Leaves and structure: created by the elaborator, never called by name from .dln.
INTERNAL = {"input", "param", "state", "capture", "scan", "tuple_get", "constant", "dim_value", "max_pool_grad"}
for _n, _doc in [("input", "a model input or a train target"), ("param", "a trainable parameter"),
                 ("state", "a non-trainable parameter, such as batchnorm's running statistics"),
                 ("capture", "a value of the enclosing graph used inside a scan body"),
                 ("scan", "a loop over an axis with a fixed-shape carry; its body is a subgraph"),
                 ("tuple_get", "one output of a multi-output node")]:
    OPS[_n] = Op(_n, "source" if _n != "scan" else "opaque", 0, {}, None, _zero_flops, _doc, ())

# Operator spelling in .dln -> op
BINARY_OPERATORS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "@": "matmul", "==": "eq",
                    "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "and": "and", "or": "or"}


# ---- NumPy reference semantics: what each op means. The interpreter (runtime/interpreter.py) calls these;
# every compiled backend must agree with them. `ctx` evaluates symbolic sizes (`ctx.dim`), maps dtypes
# (`ctx.dtype`) and draws counter-based random numbers (`ctx.uniform`).
import numpy as _np  # noqa: E402


def attach(rule: str, *names):
    """Decorator: fn becomes the `rule` (impl, vjp, ...) of each named op's registry entry."""
    def register(fn):
        for n in names:
            setattr(OPS[n], rule, fn)
        return fn
    return register


def implements(*names):
    return attach("impl", *names)


def _stable_sigmoid(x):
    e = _np.exp(-_np.abs(x))
    return _np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _erf(x):
    from scipy import special  # imported when first needed: it costs a third of a second at start-up
    return special.erf(x)


_UNARY_IMPLS = {"exp": _np.exp, "log": _np.log, "log1p": _np.log1p, "sqrt": _np.sqrt, "tanh": _np.tanh,
                "sigmoid": _stable_sigmoid, "atan": _np.arctan, "sin": _np.sin, "cos": _np.cos, "erf": _erf,
                "floor": _np.floor, "neg": _np.negative, "abs": _np.abs, "sign": _np.sign, "not": _np.logical_not}
_BINARY_IMPLS = {"add": _np.add, "sub": _np.subtract, "mul": _np.multiply, "div": _np.divide, "pow": _np.power,
                 "maximum": _np.maximum, "minimum": _np.minimum, "eq": _np.equal, "ne": _np.not_equal,
                 "lt": _np.less, "le": _np.less_equal, "gt": _np.greater, "ge": _np.greater_equal,
                 "and": _np.logical_and, "or": _np.logical_or}
for _n, _f in _UNARY_IMPLS.items():
    OPS[_n].impl = (lambda f: lambda ins, attrs, ctx: f(ins[0]))(_f)
for _n, _f in _BINARY_IMPLS.items():
    OPS[_n].impl = (lambda f: lambda ins, attrs, ctx: f(ins[0], ins[1]))(_f)


@implements("select")
def _select_impl(ins, attrs, ctx):
    return _np.where(ins[0], ins[1], ins[2])


def _axes_of(attrs, rank):
    ax = attrs.get("axis")
    if ax is None:
        return tuple(range(rank))
    return tuple(a % rank for a in ([ax] if isinstance(ax, int) else ax))


@implements("sum", "mean", "max", "min")
def _reduce_impl(ins, attrs, ctx, _f={"sum": _np.sum, "mean": _np.mean, "max": _np.max, "min": _np.min}):
    x = ins[0]
    return _f[ctx.op](x, axis=_axes_of(attrs, x.ndim), keepdims=attrs["keepdims"]).astype(x.dtype, copy=False)


@implements("argmax", "argmin")
def _arg_impl(ins, attrs, ctx):
    f = _np.argmax if ctx.op == "argmax" else _np.argmin
    return f(ins[0], axis=attrs["axis"], keepdims=attrs["keepdims"]).astype(_np.int64)


@implements("matmul")
def _matmul_impl(ins, attrs, ctx):
    return _np.matmul(ins[0], ins[1])


def window_geometry(k, attrs, n):
    """Per-axis stride (k when not given), padding and dilation of a convolution or pooling node."""
    stride = _per_axis(attrs["stride"] if attrs.get("stride") is not None else k, n, "stride")
    pad = _per_axis(attrs.get("pad", 0), n, "pad")
    dil = _per_axis(attrs.get("dilation", 1), n, "dilation")
    return stride, pad, dil


def _windows(xp, k, stride, dil, out_sizes):
    """For every kernel offset, the strided view of the padded input that it multiplies."""
    n = len(k)
    for offset in _np.ndindex(*k):
        idx = [slice(None), slice(None)]
        for a in range(n):
            start = offset[a] * dil[a]
            idx.append(slice(start, start + (out_sizes[a] - 1) * stride[a] + 1, stride[a]))
        yield offset, xp[tuple(idx)]


def _pad_spatial(x, pad, out_sizes, k, stride, dil, value):
    # Right padding grows when round="ceil" lets the last window run past the input.
    widths = [(0, 0), (0, 0)]
    for a in range(len(k)):
        need = (out_sizes[a] - 1) * stride[a] + dil[a] * (k[a] - 1) + 1
        have = x.shape[2 + a] + 2 * pad[a]
        widths.append((pad[a], pad[a] + max(0, need - have)))
    return _np.pad(x, widths, constant_values=value)


@implements("conv")
def _conv_impl(ins, attrs, ctx):
    x, w = ins
    n = x.ndim - 2
    k = w.shape[2:]
    stride, pad, dil = window_geometry(k, attrs, n)
    out_sizes = ctx.out_shape[2:]
    xp = _pad_spatial(x, pad, out_sizes, k, stride, dil, 0)
    g = attrs["groups"]
    N, C = x.shape[:2]
    K = w.shape[0]
    Cg, Kg = C // g, K // g
    out = _np.zeros((N, K) + tuple(out_sizes), dtype=_np.result_type(x, w))
    for offset, view in _windows(xp, k, stride, dil, out_sizes):
        wk = w[(slice(None), slice(None)) + offset]  # [K, Cg]
        for gi in range(g):
            v = view[:, gi * Cg:(gi + 1) * Cg]  # [N, Cg, *out]
            out[:, gi * Kg:(gi + 1) * Kg] += _np.einsum("nc...,kc->nk...", v, wk[gi * Kg:(gi + 1) * Kg])
    return out


@implements("conv_transpose")
def _conv_t_impl(ins, attrs, ctx):
    x, w = ins  # x [N, C, *S], w [C, K, *k]: the gradient of conv with respect to its input
    n = x.ndim - 2
    k = w.shape[2:]
    stride = _per_axis(attrs["stride"], n, "stride")
    pad = _per_axis(attrs["pad"], n, "pad")
    dil = _per_axis(attrs["dilation"], n, "dilation")
    out_sizes = ctx.out_shape[2:]
    full = [(x.shape[2 + a] - 1) * stride[a] + dil[a] * (k[a] - 1) + 1 for a in range(n)]
    big = [max(full[a], out_sizes[a] + pad[a]) for a in range(n)]
    g = attrs.get("groups", 1)
    Cg, Kg = x.shape[1] // g, w.shape[1]
    out = _np.zeros((x.shape[0], Kg * g) + tuple(big), dtype=_np.result_type(x, w))
    for offset in _np.ndindex(*k):
        idx = [slice(None), slice(None)]
        for a in range(n):
            start = offset[a] * dil[a]
            idx.append(slice(start, start + (x.shape[2 + a] - 1) * stride[a] + 1, stride[a]))
        wk = w[(slice(None), slice(None)) + offset]  # [C, Kg]
        for gi in range(g):
            sel = (slice(None), slice(gi * Kg, (gi + 1) * Kg)) + tuple(idx[2:])
            out[sel] += _np.einsum("nc...,ck->nk...", x[:, gi * Cg:(gi + 1) * Cg], wk[gi * Cg:(gi + 1) * Cg])
    crop = (slice(None), slice(None)) + tuple(slice(pad[a], pad[a] + out_sizes[a]) for a in range(n))
    return out[crop]


@implements("max_pool", "avg_pool")
def _pool_impl(ins, attrs, ctx):
    x = ins[0]
    n = x.ndim - 2
    k = _per_axis(attrs["k"], n, "k")
    stride, pad, _ = window_geometry(k, dict(attrs, dilation=1), n)
    out_sizes = ctx.out_shape[2:]
    is_max = ctx.op == "max_pool"
    xp = _pad_spatial(x, pad, out_sizes, k, stride, [1] * n, -_np.inf if is_max else 0)
    if is_max:
        out = _np.full((x.shape[0], x.shape[1]) + tuple(out_sizes), -_np.inf, dtype=x.dtype)
        for _, view in _windows(xp, k, stride, [1] * n, out_sizes):
            out = _np.maximum(out, view)
        return out
    # Average over the window's part inside the padded input (PyTorch's count_include_pad=True); a window
    # that round="ceil" lets run past it divides by fewer.
    total = _np.zeros((x.shape[0], x.shape[1]) + tuple(out_sizes), dtype=x.dtype)
    inside = _np.zeros(tuple(out_sizes), dtype=x.dtype)
    region = _np.zeros((1, 1) + xp.shape[2:], dtype=x.dtype)
    region[(0, 0) + tuple(slice(0, x.shape[2 + a] + 2 * pad[a]) for a in range(n))] = 1
    for _, view in _windows(xp, k, stride, [1] * n, out_sizes):
        total += view
    for _, view in _windows(region, k, stride, [1] * n, out_sizes):
        inside += view[0, 0]
    return total / inside


@implements("reshape")
def _reshape_impl(ins, attrs, ctx):
    return ins[0].reshape(tuple(ctx.dim(d) for d in attrs["shape"]))


@implements("transpose")
def _transpose_impl(ins, attrs, ctx):
    return _np.transpose(ins[0], attrs["perm"])


@implements("broadcast_to")
def _broadcast_impl(ins, attrs, ctx):
    return _np.broadcast_to(ins[0], tuple(ctx.dim(d) for d in attrs["shape"])).copy()


@implements("slice")
def _slice_impl(ins, attrs, ctx):
    x = ins[0]
    idx = [slice(None)] * x.ndim
    idx[attrs["axis"]] = slice(ctx.dim(attrs["start"]), ctx.dim(attrs["stop"]), attrs["step"])
    return x[tuple(idx)]


@implements("concat")
def _concat_impl(ins, attrs, ctx):
    return _np.concatenate(ins, axis=attrs["axis"])


@implements("pad")
def _pad_impl(ins, attrs, ctx):
    x = ins[0]
    widths = list(attrs["pads"]) + [(0, 0)] * (x.ndim - len(attrs["pads"]))
    return _np.pad(x, widths, constant_values=attrs["value"])


@implements("gather")
def _gather_impl(ins, attrs, ctx):
    table, idx = ins
    ax = attrs["axis"]
    n = table.shape[ax]
    inside = (idx >= 0) & (idx < n)
    if attrs["outside"] == "zero":
        if n == 0:  # every index is outside
            return _np.zeros(table.shape[:ax] + idx.shape + table.shape[ax + 1:], table.dtype)
        out = _np.take(table, _np.where(inside, idx, 0), axis=ax)
        keep = inside.reshape((1,) * ax + idx.shape + (1,) * (table.ndim - ax - 1))
        return _np.where(keep, out, _np.zeros((), table.dtype))
    if not inside.all():
        raise IndexError(f"gather index out of range [0, {n}): min {idx.min()}, max {idx.max()}")
    return _np.take(table, idx, axis=ax)


@implements("one_hot")
def _one_hot_impl(ins, attrs, ctx):
    depth = ctx.dim(attrs["depth"])
    return (ins[0][..., None] == _np.arange(depth)).astype(ctx.dtype(attrs["dtype"]))


@implements("cast")
def _cast_impl(ins, attrs, ctx):
    return ins[0].astype(ctx.dtype(attrs["dtype"]))


@implements("stop_gradient")
def _stop_gradient_impl(ins, attrs, ctx):
    return ins[0]


@implements("fill")
def _fill_impl(ins, attrs, ctx):
    return _np.full(tuple(ctx.dim(d) for d in attrs["shape"]), attrs["value"], dtype=ctx.dtype(attrs["dtype"]))


@implements("iota")
def _iota_impl(ins, attrs, ctx):
    shape = tuple(ctx.dim(d) for d in attrs["shape"])
    ax = attrs["axis"]
    r = _np.arange(shape[ax]).reshape([-1 if a == ax else 1 for a in range(len(shape))])
    return _np.broadcast_to(r, shape).astype(ctx.dtype(attrs["dtype"]))


@implements("constant")
def _constant_impl(ins, attrs, ctx):
    return _np.asarray(attrs["value"], dtype=ctx.dtype(attrs["dtype"]))


@implements("rand_uniform")
def _rand_uniform_impl(ins, attrs, ctx):
    shape = tuple(ctx.dim(d) for d in attrs["shape"])
    u = ctx.uniform(shape)
    return (attrs["low"] + (attrs["high"] - attrs["low"]) * u).astype(ctx.dtype(attrs["dtype"]))


@implements("rand_normal")
def _rand_normal_impl(ins, attrs, ctx):
    shape = tuple(ctx.dim(d) for d in attrs["shape"])
    # Box-Muller on two independent uniform streams of the node's counter space.
    u1 = ctx.uniform(shape, stream=0)
    u2 = ctx.uniform(shape, stream=1)
    z = _np.sqrt(-2.0 * _np.log1p(-u1)) * _np.cos(2 * _np.pi * u2)
    return (attrs["mean"] + attrs["std"] * z).astype(ctx.dtype(attrs["dtype"]))


@implements("dim_value")
def _dim_value_impl(ins, attrs, ctx):
    return _np.asarray(ctx.dim(attrs["dim"]), dtype=ctx.dtype(attrs["dtype"]))


@implements("scatter_add")
def _scatter_add_impl(ins, attrs, ctx):
    base, idx, upd = ins
    out = base.copy()
    ax = attrs["axis"]
    flat_idx = idx.reshape(-1)
    moved = _np.moveaxis(upd.reshape(upd.shape[:ax] + (-1,) + upd.shape[ax + idx.ndim:]), ax, 0)
    target = _np.moveaxis(out, ax, 0)
    inside = (flat_idx >= 0) & (flat_idx < base.shape[ax])
    if not inside.all():
        if attrs["outside"] != "zero":
            raise IndexError(f"scatter_add index out of range [0, {base.shape[ax]}): min {flat_idx.min()}, "
                             f"max {flat_idx.max()}")
        flat_idx, moved = flat_idx[inside], moved[inside]
    _np.add.at(target, flat_idx, moved)
    return out


@implements("max_pool_grad")
def _max_pool_grad_impl(ins, attrs, ctx):
    x, out, g = ins
    n = x.ndim - 2
    k = _per_axis(attrs["k"], n, "k")
    stride, pad, _ = window_geometry(k, dict(attrs, dilation=1), n)
    out_sizes = out.shape[2:]
    xp = _pad_spatial(x, pad, out_sizes, k, stride, [1] * n, -_np.inf)
    gp = _np.zeros(xp.shape, dtype=g.dtype)
    taken = _np.zeros(out.shape, dtype=bool)
    for offset, view in _windows(xp, k, stride, [1] * n, out_sizes):
        hit = (view == out) & ~taken  # the first maximum of each window in scan order takes it all
        taken |= hit
        idx = [slice(None), slice(None)]
        for a in range(n):
            idx.append(slice(offset[a], offset[a] + (out_sizes[a] - 1) * stride[a] + 1, stride[a]))
        gp[tuple(idx)] += _np.where(hit, g, 0)
    crop = (slice(None), slice(None)) + tuple(slice(pad[a], pad[a] + x.shape[2 + a]) for a in range(n))
    return gp[crop]
