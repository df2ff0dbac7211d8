"""Every zoo model on the cpu target against the reference interpreter, in float64: the forward pass
(`predict`) and, for models up to --max-params trainable parameters, three training steps of the model's
own train section, each side keeping its own state. Run by hand (about 4 minutes for the whole zoo);
CI checks every zoo model's training step in tests/test_backend.py (three momentum steps, each from the
same state on both sides, and five models with their own optimizers as here):

    python tests/bench/check_zoo_cpu.py [--models NAME ...] [--max-params N] [--team N]

With --team N, every call after a function's first runs in a team of N threads that splits every item
it can, however small (runtime/compiled.py's Team, with a grain of 1).

Prints one line per model: its parameter count, the largest relative difference of any output, and the
time the cpu target took to compile."""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from compiler.check import check  # noqa: E402
from runtime import compiled, interpreter  # noqa: E402
from runtime.initializers import init_params  # noqa: E402
from runtime.optim import build_step  # noqa: E402


def feeds_for(g, names, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in names:
        d = g.node(n)
        t = d["type"]
        shape = [int(x.subs({"B": batch, "N": batch}).value) if x.subs({"B": batch, "N": batch}).is_const else 3
                 for x in t.shape]
        if t.dtype.startswith("i"):
            out[d["name"]] = rng.integers(0, 2, shape)
        else:
            out[d["name"]] = (np.abs(rng.standard_normal(shape)) / 3).astype(np.float32)
    return out


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    fin = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), fin):
        return float("inf")
    if not fin.any():
        return 0.0
    return float(np.abs(a[fin] - b[fin]).max() / max(np.abs(b[fin]).max(), 1e-6))


def check_model(name: str, max_params: int, max_forward: int) -> str:
    r = check(name)
    if not r.ok:
        return "does not check"
    g = r.graph
    count = sum(int(np.prod([int(d.value) for d in g.type(n).shape])) for n in g.params.values()
                if g.node(n)["op"] == "param")
    if count > max_forward:
        return f"{name:20s} {count:>12,} params  skipped (over --max-forward)"
    params = init_params(g, 0)
    feeds = feeds_for(g, g.inputs)
    outs = [n for n, _ in g.outputs if not n.startswith("loss")]
    t0 = time.time()
    c = compiled.compile_graphs(g.name, [compiled.Entry("step", g, outs, {})], "f64")
    c.sync({k: np.array(v) for k, v in params.items()})
    c.call("step", feeds)  # the first call runs alone (it compiles); the second in the team, if any
    got = {k: np.array(v) for k, v in c.call("step", feeds)[1].items()}
    t_compile = time.time() - t0
    want = interpreter.run(g, feeds, params, outputs=outs, float_dtype=np.float64)
    worst = max(rel(got[o], want[o]) for o in outs)
    line = f"{name:20s} {count:>12,} params  forward {worst:.1e}"
    rt = check(name, training=True)
    if rt.graph is None or rt.graph.train is None or count > max_params:
        return line + f"  (compile {t_compile:.1f} s)"
    gt = rt.graph
    phases = gt.train.get("phases") or [None]
    worst_t = 0.0
    for phase in phases:
        gt = check(name, training=True).graph
        step = build_step(gt, gt.train["settings"], phase)
        sg = step.graph
        values = {**init_params(gt, 0), **{k: np.zeros([int(d.value) for d in sg.type(n).shape], np.float32)
                                            for k, n in step.slots.items()}}
        f = feeds_for(gt, gt.inputs + list(gt.train["targets"].values()))
        upd = {o[len("new:"):]: o for o in step.outputs[1:]}
        c = compiled.compile_graphs(name, [compiled.Entry("train_step", sg, step.outputs, upd, step.outputs[0])], "f64")
        ref = {k: v.copy() for k, v in values.items()}
        mine = {k: v.copy() for k, v in values.items()}
        c.sync(mine)
        for t in range(1, 4):
            hyper = {"lr": np.float32(0.01), "step": np.float32(t)}
            want = interpreter.run(sg, {**f, **hyper}, ref, seed=0, step=t, float_dtype=np.float64,
                                   outputs=step.outputs)
            ok, got = c.call("train_step", {**f, **hyper}, seed=0, step=t)
            worst_t = max(worst_t, max(rel(got[o], want[o]) for o in step.outputs))
            for o in step.outputs[1:]:
                ref[o[len("new:"):]] = want[o]
    return line + f"  3 training steps {worst_t:.1e}  (compile {time.time() - t0:.1f} s)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--max-params", type=int, default=2_000_000, help="train only models up to this size")
    ap.add_argument("--max-forward", type=int, default=30_000_000, help="skip models over this size")
    ap.add_argument("--team", type=int, default=0, help="threads that split every item (default: as configured)")
    args = ap.parse_args()
    if args.team:
        import os
        os.environ["DLC_NUM_THREADS"] = str(args.team)
        compiled.TEAM_WORK, compiled.GRAIN = 0, 1
    names = args.models or sorted(p.stem for p in (ROOT / "zoo").glob("*.dln"))
    for name in names:
        try:
            print(check_model(name, args.max_params, args.max_forward), flush=True)
        except Exception as e:  # report and go on: this is a survey
            print(f"{name:20s} FAILED: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3)


if __name__ == "__main__":
    main()
