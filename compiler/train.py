"""The `train` section: targets become graph inputs, the loss a scalar node of the model's graph, and the
rest (optimizer, schedule, regularizers, clipping, metrics, ...) checked against compiler.schema."""
from __future__ import annotations

from dsl import ast as A
from dsl.diagnostics import Diagnostic, Note, suggest

from . import schema
from .build import POISON, ElabError, TVal, _PoisonSeen, _num, kind_of
from .graph import FLOATS, Instance


def elaborate_train(el, train: A.Train, frame, g):
    cfg = {"targets": {}, "settings": {}, "phases": []}
    g.train = cfg
    g.n_forward = len(g)
    # The loss and its helpers are not layers of the model: keep them out of the summary.
    frame.block, frame.row = None, None
    frame.group = g.train_root = Instance("train", "train", train.span)
    _items(el, train.items, frame, g, cfg["settings"], cfg, phase=None)


def _items(el, items, frame, g, out, cfg, phase):
    seen = {}
    for it in items:
        try:
            if isinstance(it, A.TargetDecl):
                if phase is not None:
                    raise ElabError("E0301", "targets are declared at the top of the train section, not in a step", it.span)
                if it.name in frame.env or it.name in cfg["targets"]:
                    raise ElabError("E0107", f"`{it.name}` is already defined", it.span)
                t = el._type_from_decl(it.type, frame, model_sig=True)
                nid = g.add("input", [], {"name": it.name, "role": "target"}, t, it.span, it.name)
                cfg["targets"][it.name] = nid
                frame.env[it.name] = TVal(nid, t, g, it.span)
            elif isinstance(it, A.Let):
                if it.name in frame.env or it.name in cfg["targets"]:
                    raise ElabError("E0107", f"`{it.name}` is already defined", it.span)
                frame.env[it.name] = el.eval(it.value, frame)
            elif isinstance(it, A.Phase):
                if phase is not None:
                    raise ElabError("E0301", "`step` phases do not nest", it.span)
                repeat = 1
                if it.repeat is not None:
                    repeat = _num(el.eval(it.repeat, frame))
                    if not isinstance(repeat, int) or repeat < 1:
                        raise ElabError("E0302", "a step's repeat count must be a positive integer", it.repeat.span)
                if any(p["name"] == it.name for p in cfg["phases"]):
                    raise ElabError("E0107", f"step `{it.name}` is defined twice", it.span)
                ph = {"name": it.name, "repeat": repeat, "settings": {}}
                cfg["phases"].append(ph)
                _items(el, it.items, frame, g, ph["settings"], cfg, phase=ph)
            else:
                _setting(el, it, frame, g, out, phase, seen)
        except ElabError as e:
            el.report(e.diag)
        except _PoisonSeen:
            pass
    if phase is None and "loss" not in seen and not cfg["phases"]:
        el.report(Diagnostic("E0302", "the train section has no `loss`", items[0].span if items else None,
                             help="for example `loss = cross_entropy(logits, y)` with `target y: i64[B]`"))


def _setting(el, it: A.Setting, frame, g, out, phase, seen):
    name = it.name
    allowed = schema.PHASE_SETTINGS if phase is not None else [k for k in schema.TRAIN_SETTINGS if k != "updates"]
    if name not in allowed:
        h = suggest(name, allowed)
        where = "a `step`" if phase is not None else "the train section"
        raise ElabError("E0301", f"unknown setting `{name}` in {where}", it.span,
                        help=f"did you mean `{h}`?" if h else f"settings: {', '.join(allowed)}")
    if name in seen:
        raise ElabError("E0107", f"`{name}` is set twice", it.span, [Note("first set here", seen[name])])
    seen[name] = it.span
    kind, table = schema.TRAIN_SETTINGS[name]
    if kind == "expr":
        v = el.eval(it.value, frame)
        if v is POISON:
            raise _PoisonSeen()
        if not isinstance(v, TVal):
            raise ElabError("E0302", f"the loss must be a tensor, got {kind_of(v)}", it.value.span)
        if v.type.rank != 0 or v.type.dtype not in FLOATS:
            raise ElabError("E0302", f"the loss must be a float scalar, got {v.type}", it.value.span,
                            help="reduce it, e.g. `mean(...)`; the std losses already return a scalar")
        out[name] = v.node
        g.outputs.append((f"loss:{phase['name']}" if phase else "loss", v.node))
    elif kind == "call":
        out[name] = _call(el, it.value, frame, table, name)
    elif kind == "calls":
        vals = it.value.items if isinstance(it.value, A.ListLit) else [it.value]
        out[name] = [_call(el, x, frame, table, name) for x in vals]
    elif kind == "names":
        vals = it.value.items if isinstance(it.value, A.ListLit) else [it.value]
        names = []
        for x in vals:
            if not isinstance(x, A.Name) or (x.id not in frame.instances and x.id not in frame.members):
                what = x.id if isinstance(x, A.Name) else "this"
                raise ElabError("E0110", f"`{what}` is not a layer of the model", x.span,
                                help=f"layers: {', '.join(sorted(frame.instances)) or 'none'}")
            names.append(frame.instances.get(x.id, frame.members.get(x.id)).scope
                         if hasattr(frame.instances.get(x.id, frame.members.get(x.id)), "scope") else x.id)
        out[name] = names
    else:
        v = el.eval(it.value, frame)
        ok = {"int": lambda v: isinstance(_num(v), int) and not isinstance(v, bool) and _num(v) >= 0,
              "posint": lambda v: isinstance(_num(v), int) and not isinstance(v, bool) and _num(v) > 0,
              "float": lambda v: _num(v) is not None and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str) and (table is None or v in table),
              "bool": lambda v: isinstance(v, bool)}[kind](v)
        if not ok:
            want = {"int": "a non-negative integer", "posint": "a positive integer", "float": "a number",
                    "bool": "true or false",
                    "str": "one of " + ", ".join(f'"{c}"' for c in table) if table else "a string"}[kind]
            raise ElabError("E0302", f"`{name}` must be {want}, got {kind_of(v)}", it.value.span)
        out[name] = _num(v) if kind in ("int", "posint", "float") else v


def _call(el, expr, frame, table, setting):
    if isinstance(expr, A.Name):
        name, args = expr.id, []
    elif isinstance(expr, A.Call) and isinstance(expr.func, A.Name):
        name, args = expr.func.id, expr.args
    else:
        raise ElabError("E0302", f"`{setting}` takes a name or a call such as `{next(iter(table))}(...)`", expr.span)
    if name not in table:
        h = suggest(name, list(table))
        raise ElabError("E0302", f"unknown {setting} `{name}`", expr.span,
                        help=(f"did you mean `{h}`? " if h else "") + f"choices: {', '.join(table)}")
    spec = table[name]
    kwargs = {}
    keys = list(spec)
    for i, a in enumerate(args):
        if a.splat:
            raise ElabError("E0302", "`*` is not allowed here", a.span)
        key = a.name if a.name is not None else (keys[i] if i < len(keys) else None)
        if key is None:
            raise ElabError("E0103", f"`{name}` takes at most {len(keys)} positional arguments", a.span)
        if key not in spec:
            h = suggest(key, keys)
            raise ElabError("E0104", f"`{name}` has no argument `{key}`", a.span,
                            help=(f"did you mean `{h}`? " if h else "") + f"it takes: {', '.join(keys) or 'nothing'}")
        if key in kwargs:
            raise ElabError("E0106", f"argument `{key}` is given twice", a.span)
        v = el.eval(a.value, frame)
        if isinstance(v, TVal):
            raise ElabError("E0302", f"`{key}` of `{name}` must be a compile-time value", a.span)
        d = spec[key]
        if isinstance(d, (int, float)) and not isinstance(d, bool) and _num(v) is None:
            raise ElabError("E0302", f"`{key}` of `{name}` must be a number, got {kind_of(v)}", a.span)
        if isinstance(d, bool) and not isinstance(v, bool):
            raise ElabError("E0302", f"`{key}` of `{name}` must be true or false, got {kind_of(v)}", a.span)
        kwargs[key] = _num(v) if _num(v) is not None and not isinstance(v, bool) else v
    for k, d in spec.items():
        if d is ... and k not in kwargs:
            raise ElabError("E0105", f"`{name}` needs the argument `{k}`", expr.span)
    full = {k: d for k, d in spec.items() if d is not ...}
    full.update(kwargs)
    return {"name": name, "args": full}
