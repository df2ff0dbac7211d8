"""Built-in functions of .dln that are not primitive ops: compile-time helpers (range, len, min, max, int,
float) and conveniences that expand into primitives (zeros, ones, full, split, stack, unsqueeze)."""
from __future__ import annotations

from .dims import Dim, dmax, dmin

from .build import DimPack, DType, ElabError, TVal, _num, kind_of


def call_builtin(el, name, pos, kw, e, frame):
    args = [el.arg_value(item, frame) for item in pos]
    kwargs = {k: el.arg_value(item, frame) for k, item in kw.items()}

    def need(n_min, n_max, names=()):
        if not n_min <= len(args) <= n_max:
            raise ElabError("E0103", f"`{name}` takes {n_min if n_min == n_max else f'{n_min} to {n_max}'} arguments, got {len(args)}", e.span)
        for k in kwargs:
            if k not in names:
                raise ElabError("E0104", f"`{name}` has no argument `{k}`", kw[k][1],
                                help=f"it takes: {', '.join(names)}" if names else None)

    def integer(v, what):
        n = _num(v)
        if not isinstance(n, int):
            raise ElabError("E0108", f"`{name}` needs an integer {what}, got {kind_of(v)}", e.span)
        return n

    if name in ("max", "min"):
        if args and isinstance(args[0], TVal):
            from .ops import OPS
            from .build import LayerVal
            # The arguments are already evaluated: pass their values, or calls in them would run twice.
            pos = [(v, item[1]) for v, item in zip(args, pos)]
            kw = {k: (kwargs[k], item[1]) for k, item in kw.items()}
            return el._call_op(OPS[name], LayerVal(OPS[name], {}, e.span), pos, kw, e, frame)
        need(1, 8)
        vals = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        if not vals:
            raise ElabError("E0213", f"`{name}` of an empty list", e.span)
        if any(isinstance(v, Dim) and not v.is_const for v in vals):
            out = Dim.of(vals[0])
            for v in vals[1:]:
                out = (dmax if name == "max" else dmin)(out, Dim.of(v))
            return out
        nums = [_num(v) for v in vals]
        if any(n is None for n in nums):
            raise ElabError("E0108", f"`{name}` of compile-time numbers, or of one tensor along an axis", e.span)
        return max(nums) if name == "max" else min(nums)
    if name == "range":
        need(1, 3)
        nums = [integer(a, "bound") for a in args]
        if len(nums) == 3 and nums[2] == 0:
            raise ElabError("E0213", "range step must not be zero", e.span)
        from .build import MAX_UNROLL
        if len(range(*nums)) > MAX_UNROLL:
            raise ElabError("E0213", f"`range` of more than {MAX_UNROLL:,} numbers", e.span)
        return list(range(*nums))
    if name == "prod":  # the product of a list of sizes: prod(S) elements in a [*S] shape
        need(1, 1)
        v = args[0]
        if isinstance(v, DimPack):
            v = list(v.dims)
        if not isinstance(v, (list, tuple)):
            raise ElabError("E0108", f"`prod` of a list of sizes, not {kind_of(v)}", e.span)
        out = Dim.const(1)
        for x in v:
            out = out * Dim.of(_dimlike(x, e))
        return int(out.value) if out.is_int else out
    if name == "len":
        need(1, 1)
        v = args[0]
        if isinstance(v, DimPack):
            return len(v.dims)
        if isinstance(v, (list, tuple, str)):
            return len(v)
        if isinstance(v, TVal):
            raise ElabError("E0108", "`len` of a tensor: name its dimensions in the block signature instead", e.span)
        raise ElabError("E0108", f"`len` of {kind_of(v)}", e.span)
    if name in ("int", "float"):
        need(1, 1)
        n = _num(args[0])
        if n is None:
            raise ElabError("E0108", f"`{name}` converts a compile-time number, got {kind_of(args[0])}", e.span)
        if name == "int" and isinstance(n, float) and not n.is_integer():
            raise ElabError("E0213", f"`int({n})` is not an integer", e.span)
        return int(n) if name == "int" else float(n)
    if name == "abs":
        need(1, 1)
        n = _num(args[0])
        if n is None:
            raise ElabError("E0108", "`abs` of a compile-time number", e.span)
        return abs(n)
    if name == "ceil":
        need(1, 1)
        v = args[0]
        if isinstance(v, Dim):
            r = v.ceil()
            return int(r.value) if r.is_const else r
        n = _num(v)
        if n is None:
            raise ElabError("E0108", "`ceil` of a compile-time number", e.span)
        import math
        return math.ceil(n)
    if name == "floor_div":
        need(2, 2)
        a, b = Dim.of(_dimlike(args[0], e)), Dim.of(_dimlike(args[1], e))
        try:
            r = a // b
        except ZeroDivisionError:
            raise ElabError("E0213", "division by zero", e.span)
        return int(r.value) if r.is_const else r
    if name in ("zeros", "ones", "full"):
        if name == "full":
            need(2, 3, ("dtype",))
        else:
            need(1, 2, ("dtype",))
        shape = el._coerce_op_attr(_fake(name), "shape", "shape", args[0], e.span)
        value = 0.0 if name == "zeros" else 1.0 if name == "ones" else _num(args[1])
        if value is None:
            raise ElabError("E0108", "`full` needs a number to fill with", e.span)
        dt = kwargs.get("dtype", args[2 if name == "full" else 1] if len(args) > (2 if name == "full" else 1) else DType("f32"))
        dt = el._coerce_op_attr(_fake(name), "dtype", "dtype", dt, e.span)
        return el.apply_op("fill", [], {"shape": shape, "value": float(value), "dtype": dt}, e.span, frame, label=e.label)
    if name == "split":
        need(2, 3, ("axis",))
        x = args[0]
        if not isinstance(x, TVal):
            raise ElabError("E0108", f"`split` needs a tensor, got {kind_of(x)}", e.span)
        n = integer(args[1], "count")
        axis = integer(kwargs.get("axis", args[2] if len(args) > 2 else -1), "axis")
        from .ops import norm_axis, ShapeError
        try:
            ax = norm_axis(axis, x.type.rank)
        except ShapeError as ex:
            raise ElabError(ex.code, ex.message, e.span)
        size = x.type.shape[ax]
        if n <= 0:
            raise ElabError("E0213", "split count must be positive", e.span)
        part = size / n
        if part.is_const and part.value.denominator != 1:
            raise ElabError("E0209", f"cannot split an axis of size {size} into {n} equal parts", e.span)
        return tuple(el.apply_op("slice", [x], {"axis": ax, "start": part * i, "stop": part * (i + 1), "step": 1}, e.span, frame)
                     for i in range(n))
    if name == "unsqueeze":
        need(2, 2)
        x = args[0]
        if not isinstance(x, TVal):
            raise ElabError("E0108", f"`unsqueeze` needs a tensor, got {kind_of(x)}", e.span)
        axis = integer(args[1], "axis")
        r = x.type.rank + 1
        if not -r <= axis < r:
            raise ElabError("E0208", f"axis {axis} is out of range for the result of rank {r}", e.span)
        axis %= r
        shape = list(x.type.shape[:axis]) + [Dim.const(1)] + list(x.type.shape[axis:])
        return el.apply_op("reshape", [x], {"shape": tuple(shape)}, e.span, frame)
    if name == "stack":
        need(1, 2, ("axis",))
        xs = args[0]
        if not isinstance(xs, (list, tuple)) or not xs or not all(isinstance(x, TVal) for x in xs):
            raise ElabError("E0108", "`stack` needs a non-empty list of tensors", e.span)
        axis = integer(kwargs.get("axis", args[1] if len(args) > 1 else 0), "axis")
        r = xs[0].type.rank + 1
        if not -r <= axis < r:
            raise ElabError("E0208", f"axis {axis} is out of range for the result of rank {r}", e.span)
        axis %= r
        parts = [el.apply_op("reshape", [x], {"shape": tuple(list(x.type.shape[:axis]) + [Dim.const(1)] + list(x.type.shape[axis:]))},
                             e.span, frame) for x in xs]
        return el.apply_op("concat", parts, {"axis": axis}, e.span, frame)
    raise ElabError("E0900", f"internal: builtin {name} has no implementation", e.span)


def _dimlike(v, e):
    if isinstance(v, Dim):
        return v
    n = _num(v)
    if not isinstance(n, int):
        raise ElabError("E0108", f"expected an integer, got {kind_of(v)}", e.span)
    return n


class _fake:
    def __init__(self, name):
        self.name = name
