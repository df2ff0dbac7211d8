"""The training step as a graph: loss (with regularizers), gradients (compiler.autodiff), clipping and the
optimizer's update, built into the model's training graph so one evaluation does a whole step.

The learning rate and the step count are graph inputs (`lr`, `step`), never constants, so a schedule can
change them without rebuilding; optimizer slots (momentum, Adam's moments) are `state` nodes.

Update rules, with g the gradient, eta the learning rate, t the 1-based step (published forms):
  gd, sgd     w <- w - eta g
  momentum    v <- mu v - eta g;  w <- w + v                                   (Polyak 1964; Sutskever 2013)
  nesterov    v <- mu v - eta g;  w <- w + mu v - eta g                        (Sutskever et al. 2013, as Keras)
  adagrad     G <- G + g^2;  w <- w - eta g / (sqrt(G) + eps)                   (Duchi et al. 2011)
  rmsprop     s <- rho s + (1 - rho) g^2;  w <- w - eta g / (sqrt(s) + eps)     (Hinton 2012)
  adam        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
              w <- w - eta (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)     (Kingma and Ba 2015)
Regularizers add to the loss: l1 rate * sum|w|, l2 rate * sum w^2 (over weights of rank >= 2, not biases);
max_norm rescales each weight's columns (norm over `axis`) to at most `max` after the update.
Clipping: by value, each gradient element into [-limit, limit]; by norm, all gradients scaled by
min(1, max / global_norm)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


from compiler.autodiff import Emitter, grad
from compiler.graph import Graph, TType

SLOTS = {"gd": [], "sgd": [], "momentum": ["velocity"], "nesterov": ["velocity"], "adagrad": ["accum"],
         "rmsprop": ["mean_square"], "adam": ["m", "v"]}


@dataclass
class Step:
    """A training graph and where to find things in it."""
    graph: Graph
    loss: int
    params: list[str]  # the parameters this step updates
    slots: dict = field(default_factory=dict)  # slot key "name:slot" -> state node
    outputs: list = field(default_factory=list)  # names of the graph outputs the runtime reads back


def trained_params(g: Graph, settings: dict, phase: dict | None = None) -> list[str]:
    names = [n for n, nid in g.params.items() if g.node(nid)["op"] == "param"]
    scopes = (phase or {}).get("settings", {}).get("updates")
    if scopes:
        names = [n for n in names if any(n == s or n.startswith(s + "/") for s in scopes)]
    frozen = settings.get("freeze") or []
    return [n for n in names if not any(n == s or n.startswith(s + "/") for s in frozen)]


def build_step(g: Graph, settings: dict, phase: dict | None = None) -> Step:
    """Extend the training graph g with one optimizer step; returns where its pieces are."""
    ps = dict(settings)
    if phase is not None:
        ps.update(phase["settings"])
    loss = ps["loss"]
    e = Emitter(g, g.node(loss)["span"], "train")
    dtype = g.type(loss).dtype
    names = trained_params(g, settings, phase)
    weights = [g.params[n] for n in names]
    total = loss
    for reg in settings.get("regularize") or []:
        total = e("add", total, _penalty(e, g, reg, weights, dtype))
    grads = grad(g, total, weights, truncate=ps.get("truncate"))
    gs = [grads[w] for w in weights]
    clip = ps.get("clip")
    if clip:
        gs = _clip(e, clip, gs, dtype)
    opt = ps.get("optimizer") or {"name": "sgd", "args": {"lr": 0.01}}
    lr = g.add("input", [], {"name": "lr", "role": "hyper"}, TType((), dtype), None, "lr")
    t = g.add("input", [], {"name": "step", "role": "hyper"}, TType((), dtype), None, "step")
    step = Step(g, total, names)
    g.outputs.append(("loss:total", total))  # the loss with its regularizers: what the step minimises
    step.outputs.append("loss:total")
    for name, w, gw in zip(names, weights, gs):
        slots = {}
        for s in SLOTS[opt["name"]]:
            sid = g.add("state", [], {"init": "zeros", "init_args": {}, "trainable": False, "slot": s},
                        g.type(w), None, f"{name}:{s}")
            slots[s] = sid
            step.slots[f"{name}:{s}"] = sid
        new_w, new_slots = _update(e, opt["name"], opt["args"], w, gw, slots, lr, t, dtype)
        for reg in settings.get("regularize") or []:
            if reg["name"] == "max_norm" and g.type(w).rank >= 2:
                new_w = _max_norm(e, new_w, reg["args"], dtype)
        g.outputs.append((f"new:{name}", new_w))
        step.outputs.append(f"new:{name}")
        for s, v in new_slots.items():
            g.outputs.append((f"new:{name}:{s}", v))
            step.outputs.append(f"new:{name}:{s}")
    for name, node in g.state_updates:
        g.outputs.append((f"new:{name}", node))
        step.outputs.append(f"new:{name}")
    return step


def _c(e, v, dtype):
    return e.const(float(v), dtype)


def _penalty(e, g, reg, weights, dtype):
    a = reg["args"]
    total = _c(e, 0.0, dtype)
    if reg["name"] == "max_norm":
        return total
    for w in weights:
        if g.type(w).rank < 2:  # biases and scales are not penalised
            continue
        if reg["name"] in ("l1", "l1_l2"):
            rate = a["rate"] if reg["name"] == "l1" else a["l1"]
            total = e("add", total, e("mul", _c(e, rate, dtype), e("sum", e("abs", w))))
        if reg["name"] in ("l2", "l1_l2"):
            rate = a["rate"] if reg["name"] == "l2" else a["l2"]
            total = e("add", total, e("mul", _c(e, rate, dtype), e("sum", e("mul", w, w))))
    return total


def _clip(e, clip, gs, dtype):
    a = clip["args"]
    if clip["name"] == "value":
        lo, hi = _c(e, -a["limit"], dtype), _c(e, a["limit"], dtype)
        return [e("minimum", e("maximum", gw, lo), hi) for gw in gs]
    sq = _c(e, 0.0, dtype)
    for gw in gs:
        sq = e("add", sq, e("sum", e("mul", gw, gw)))
    norm = e("sqrt", sq)
    scale = e("minimum", _c(e, 1.0, dtype), e("div", _c(e, a["max"], dtype), e("add", norm, _c(e, 1e-12, dtype))))
    return [e("mul", gw, scale) for gw in gs]


def _update(e, name, a, w, gw, slots, lr, t, dtype):
    c = lambda v: _c(e, v, dtype)  # noqa: E731
    step_ = e("mul", lr, gw)
    if name in ("gd", "sgd"):
        return e("sub", w, step_), {}
    if name in ("momentum", "nesterov"):
        v = e("sub", e("mul", c(a["momentum"]), slots["velocity"]), step_)
        if name == "momentum":
            return e("add", w, v), {"velocity": v}
        return e("sub", e("add", w, e("mul", c(a["momentum"]), v)), step_), {"velocity": v}
    if name == "adagrad":
        acc = e("add", slots["accum"], e("mul", gw, gw))
        return e("sub", w, e("div", step_, e("add", e("sqrt", acc), c(a["eps"])))), {"accum": acc}
    if name == "rmsprop":
        ms = e("add", e("mul", c(a["rho"]), slots["mean_square"]), e("mul", c(1 - a["rho"]), e("mul", gw, gw)))
        return e("sub", w, e("div", step_, e("add", e("sqrt", ms), c(a["eps"])))), {"mean_square": ms}
    if name == "adam":
        b1, b2 = a["beta1"], a["beta2"]
        m = e("add", e("mul", c(b1), slots["m"]), e("mul", c(1 - b1), gw))
        v = e("add", e("mul", c(b2), slots["v"]), e("mul", c(1 - b2), e("mul", gw, gw)))
        mhat = e("div", m, e("sub", c(1.0), e("pow", c(b1), t)))
        vhat = e("div", v, e("sub", c(1.0), e("pow", c(b2), t)))
        upd = e("div", e("mul", lr, mhat), e("add", e("sqrt", vhat), c(a["eps"])))
        return e("sub", w, upd), {"m": m, "v": v}
    raise ValueError(f"unknown optimizer {name!r}")


def _max_norm(e, w, a, dtype):
    axis = a.get("axis", 0)
    norm = e("sqrt", e("sum", e("mul", w, w), axis=axis, keepdims=True))
    scale = e("minimum", _c(e, 1.0, dtype), e("div", _c(e, a["max"], dtype), e("add", norm, _c(e, 1e-7, dtype))))
    return e("mul", w, scale)


# ---- learning-rate schedules (per step t from 0, or per epoch for plateau), published forms
def scheduled_lr(lr0: float, schedule: dict | None, t: int) -> float:
    if not schedule or schedule["name"] in ("constant", "plateau"):
        return lr0
    a = schedule["args"]
    if schedule["name"] == "power":  # eta0 / (1 + t/s)^c
        return lr0 / (1 + t / a["decay_steps"]) ** a["power"]
    if schedule["name"] == "exponential":  # eta0 * r^(t/s)
        return lr0 * a["rate"] ** (t / a["decay_steps"])
    if schedule["name"] == "piecewise":  # values[i] while t < boundaries[i]
        for b, v in zip(a["boundaries"], a["values"]):
            if t < b:
                return float(v)
        return float(a["values"][len(a["boundaries"])] if len(a["values"]) > len(a["boundaries"]) else a["values"][-1])
    raise ValueError(f"unknown schedule {schedule['name']!r}")


class Plateau:
    """Reduce on plateau: multiply the learning rate by `factor` when the monitored value has not improved
    for `patience` epochs, not below `min_lr`."""

    def __init__(self, factor=0.5, patience=5, monitor="val_loss", min_lr=0.0):
        self.factor, self.patience, self.monitor, self.min_lr = factor, patience, monitor, min_lr
        self.best, self.wait, self.scale = math.inf, 0, 1.0

    def end_epoch(self, logs: dict, lr: float) -> float:
        value = logs.get(self.monitor, logs.get("loss"))
        if value is None:
            return lr
        if value < self.best - 1e-12:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.wait = 0
                return max(self.min_lr, lr * self.factor)
        return lr
