"""`scan`: a loop over one axis of its sequences with a fixed-shape carry. The body becomes a subgraph
(not unrolled) whose inputs are one slice of each sequence, the carries, and captures of outer values
(parameters included); its outputs are the new carries and the yielded values.

Semantics (the reference interpreter implements exactly this): step t reads element t of each sequence
along `axis` (from the end when `reverse`); yielded values are stacked along `axis` at the index of the
step that made them, so a reversed scan's outputs line up with its inputs. With `lengths` (an integer
tensor [N], N the batch size, the first axis of every carry), example b runs only its steps t < lengths[b]
(t = lengths[b]-1 down to 0 when reversed): its carry stops changing and its later yields are zero."""
from __future__ import annotations

from dataclasses import replace

from dsl import ast as A
from dsl.diagnostics import Note

from .build import POISON, ElabError, Frame, TVal, _PoisonSeen, _Return, _num, kind_of
from .graph import INTS, Graph, TType
from .ops import ShapeError, norm_axis


def elaborate_scan(el, e: A.Scan, frame: Frame):
    if not e.seqs:
        raise ElabError("E0211", "a scan needs at least one sequence", e.span)
    seqs = []
    length = None
    # `scan a in x, b in y along 1`: a trailing `along` applies to every sequence that names none.
    given = [s.axis for s in e.seqs if s.axis is not None]
    for s in e.seqs:
        v = el.eval(s.value, frame)
        if v is POISON:
            raise _PoisonSeen()
        if not isinstance(v, TVal):
            raise ElabError("E0211", f"scan sequence `{s.name}` must be a tensor, got {kind_of(v)}", s.value.span)
        axis_expr = s.axis if s.axis is not None else (given[-1] if given else None)
        axis = 0 if axis_expr is None else _num(el.eval(axis_expr, frame))
        if not isinstance(axis, int):
            raise ElabError("E0211", "the scan axis must be an integer", axis_expr.span)
        try:
            axis = norm_axis(axis, v.type.rank)
        except ShapeError as ex:
            raise ElabError(ex.code, f"scan sequence `{s.name}`: {ex.message}", s.span)
        n = v.type.shape[axis]
        if length is None:
            length = (n, s, v)
        elif n != length[0]:
            raise ElabError("E0211", f"scan sequences differ in length: `{length[1].name}` has {length[0]} steps, "
                            f"`{s.name}` has {n}", s.span, [Note(f"`{length[1].name}` is {length[2].type}", length[1].span)])
        seqs.append((s, v, axis))
    axis = seqs[0][2]
    if any(a != axis for _, _, a in seqs):
        raise ElabError("E0211", "all sequences of a scan must be scanned along the same axis", e.span)
    carries = []
    for c in e.carries:
        v = el.eval(c.init, frame)
        if v is POISON:
            raise _PoisonSeen()
        if not isinstance(v, TVal):
            raise ElabError("E0211", f"the initial carry `{c.name}` must be a tensor, got {kind_of(v)}", c.init.span,
                            help="for example `zeros([B, H])`")
        carries.append((c, v))
    reverse = False
    if e.reverse is not None:
        reverse = el.eval(e.reverse, frame)
        if not isinstance(reverse, bool):
            raise ElabError("E0211", f"`reverse` must be true or false, got {kind_of(reverse)}", e.reverse.span)
    lengths = None
    if e.lengths is not None:
        lengths = el.eval(e.lengths, frame)
        if lengths is POISON:
            raise _PoisonSeen()
    if lengths is not None:  # `lengths none` (an optional argument left out) means every step runs
        if not isinstance(lengths, TVal) or lengths.type.dtype not in INTS or lengths.type.rank != 1:
            raise ElabError("E0211", f"scan lengths must be an integer tensor [N], got {kind_of(lengths)}", e.lengths.span)
        for c, v in carries:
            if v.type.rank == 0 or v.type.shape[0] != lengths.type.shape[0]:
                raise ElabError("E0211", f"with lengths {lengths.type}, carry `{c.name}` ({v.type}) must have the batch "
                                f"size {lengths.type.shape[0]} as its first axis", c.span)

    g = frame.graph
    sub = Graph(f"{frame.scope}/scan" if frame.scope else "scan", parent=g)
    sub.captures, sub.capture_list = {}, []
    env = dict(frame.env)
    for s, v, ax in seqs:
        t = TType(v.type.shape[:ax] + v.type.shape[ax + 1:], v.type.dtype)
        nid = sub.add("input", [], {"name": s.name, "role": "sequence"}, t, s.span, s.name)
        sub.inputs.append(nid)
        env[s.name] = TVal(nid, t, sub, s.span)
    for c, v in carries:
        nid = sub.add("input", [], {"name": c.name, "role": "carry"}, v.type, c.span, c.name)
        sub.inputs.append(nid)
        env[c.name] = TVal(nid, v.type, sub, c.span)
    body = replace(frame, env=env, graph=sub, scan_yields=[], returned=None, row=None)
    el.stack.append(body)
    try:
        el.exec_body(e.body, body)
    except _Return:
        pass
    finally:
        el.stack.pop()
    frame.members.update(body.members)
    frame.instances.update(body.instances)

    if len(body.scan_yields) > 1:
        raise ElabError("E0211", "a scan body must `yield` once per step", body.scan_yields[1][1])
    yields = body.scan_yields[0][0] if body.scan_yields else []
    types = []
    for c, v in carries:
        new = body.env.get(c.name)
        if new is POISON or any(y is POISON for y in yields):
            raise _PoisonSeen()
        if not isinstance(new, TVal) or new.type != v.type:
            raise ElabError("E0211", f"the carry `{c.name}` changes from {v.type} to {kind_of(new)} in one step", c.span,
                            [Note("it is assigned here", new.span)] if isinstance(new, TVal) and new.span else [],
                            help="a carry keeps its shape and dtype across steps")
        sub.outputs.append((f"carry:{c.name}", el._local(new, sub)))
    ytypes = []
    for i, y in enumerate(yields):
        if not isinstance(y, TVal):
            raise ElabError("E0211", f"a scan yields tensors, not {kind_of(y)}", body.scan_yields[0][1])
        if axis > y.type.rank:
            raise ElabError("E0211", f"yielded value {i} ({y.type}) has too few axes to stack along axis {axis}",
                            body.scan_yields[0][1])
        sub.outputs.append((f"yield{i}", el._local(y, sub)))
        ytypes.append(TType(y.type.shape[:axis] + (length[0],) + y.type.shape[axis:], y.type.dtype))
    types = ytypes + [v.type for _, v in carries]
    inputs = [el._local(v, g) for _, v, _ in seqs] + [el._local(v, g) for _, v in carries]
    if lengths is not None:
        inputs.append(el._local(lengths, g))
    inputs += sub.capture_list
    scope = el._node_scope(frame)
    nid = g.add("scan", inputs, {"body": sub, "axis": axis, "reverse": reverse, "n_seqs": len(seqs),
                                 "n_carries": len(carries), "n_yields": len(yields), "has_lengths": lengths is not None},
                types, e.span, f"{scope}scan")
    results = []
    for i, t in enumerate(types):
        gid = g.add("tuple_get", [nid], {"index": i}, t, e.span, f"{scope}scan.{i}")
        results.append(TVal(gid, t, g, e.span))
    row = frame.row
    if row is not None:  # a scan written in the model body: a row of the summary
        if not row.outputs:
            (frame.group or frame.inst).children.append(row)
        row.kind = f"{row.kind}, scan" if row.kind and "scan" not in row.kind else "scan"
        row.outputs = [r.node for r in results]
    return results[0] if len(results) == 1 else tuple(results)
