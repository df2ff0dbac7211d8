"""`dlc train`, `dlc eval` and `dlc predict`: the runtime driven from the command line, with a progress bar,
history files, checkpoints and a learning-curve plot. A run never overwrites an output folder without
--force, and bad data stops it before anything is written."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsl.diagnostics import render_all
from dsl.loader import write_atomic


def _fail(message, help_=None, where=None) -> int:
    text = f"error: {where + ': ' if where else ''}{message}"
    print(text, file=sys.stderr)
    if help_:
        print(f"help: {help_}", file=sys.stderr)
    return 1


def _load_model(args):
    """The model, with --set and --with applied; raises ModelError with located diagnostics."""
    from runtime.model import Model, ModelError
    from .cli import command_line_sets
    sets, sources, diags = command_line_sets(args.set, getattr(args, "argv", []))
    if diags:
        raise ModelError(diags, sources)
    overrides = {"optimizer": args.optimizer} if getattr(args, "optimizer", None) else {}
    return Model(args.model, seed=args.seed, present=getattr(args, "present", ()), train=overrides,
                 located_sets=sets, sources=sources, target=getattr(args, "target", None))


def _dataset(args, model):
    from runtime.data import DataError, check_against, load
    spec = args.data or model.settings.get("data")
    if not spec:
        raise DataError("no data given", help="pass --data SPEC (e.g. sklearn:digits, xor, a .npz or .csv file), "
                        "or set `data = \"...\"` in the model's train section")
    ds = load(spec, seed=args.seed)
    g = model.infer
    shapes = [tuple(int(d.value) if d.is_const else None for d in g.type(n).shape[1:]) for n in g.inputs]
    targets = (g.train or {}).get("targets", {})
    tt = g.type(next(iter(targets.values()))) if targets else None
    classes = None
    if tt is not None and tt.dtype.startswith("i"):
        # Integer targets are class ids where the loss one-hot encodes them: that depth is the class count.
        target = next(iter(targets.values()))
        depths = {g.node(n)["attrs"]["depth"] for n in g.nodes() if g.node(n)["op"] == "one_hot"
                  and g.node(n)["inputs"] == (target,)}
        if len(depths) == 1 and next(iter(depths)).is_const:
            classes = int(next(iter(depths)).value)
    check_against(ds, shapes, tuple(int(d.value) if d.is_const else None for d in tt.shape[1:]) if tt else None,
                  tt.dtype if tt else None, classes)
    return ds, shapes, tt


def _fit_arrays(model, ds, shapes, tt, split):
    from runtime.data import fit_to
    from runtime.data import DataError
    x = getattr(ds, f"x_{split}")
    y = getattr(ds, f"y_{split}") if tt is not None else None  # a model without targets trains on inputs alone
    if len(shapes) > 1:
        # A data set gives one array of features: it can feed a model with one input only.
        names = ", ".join(model.input_names)
        raise DataError(f"the model takes {len(shapes)} inputs ({names}) but a data set gives one array of features",
                        help="train it from Python with model.fit({name: array, ...}, targets)")
    x = fit_to(x, shapes[0]) if shapes and None not in shapes[0] else x
    x = x.astype(np.float32) if model.infer.type(model.infer.inputs[0]).dtype.startswith("f") else x.astype(np.int64)
    if y is not None and tt is not None:
        want = tuple(int(d.value) if d.is_const else None for d in tt.shape[1:])
        if None not in want:
            y = fit_to(y, want)
        y = y.astype(np.int64) if tt.dtype.startswith("i") else y.astype(np.float32)
    return x, y


def _plot(out: Path, history: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no learning-curve plot (pip install 'dlc[plot]')"
    keys = [k for k in history if not k.startswith("val_") and k != "lr"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, k in zip(axes[0], keys):
        epochs = range(1, len(history[k]) + 1)
        ax.plot(epochs, history[k], label=f"training {k}")
        if f"val_{k}" in history:
            ax.plot(epochs, history[f"val_{k}"], label=f"validation {k}")
        ax.set_xlabel("epoch")
        ax.set_title(k)
        ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".dlc-", suffix=".png", dir=out)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out / "curve.png")
    return None


def cmd_train(args, argv) -> int:
    from runtime.data import DataError
    from runtime.interpreter import RunError
    from runtime.model import ModelError, TrainingError, higher_is_better
    try:
        model = _load_model(args)
    except ModelError as e:
        render_all(e.diagnostics, e.sources)
        return 1
    except ValueError as e:
        return _fail(str(e))
    train = model.infer.train or {}
    if not train.get("settings", {}).get("loss") and not train.get("phases"):
        return _fail(f"`{args.model}` has no train section: nothing says what to minimise",
                     "add `} train { target y: ...  loss = ... }` after the model")
    try:
        ds, shapes, tt = _dataset(args, model)
        x, y = _fit_arrays(model, ds, shapes, tt, "train")
        xv, yv = _fit_arrays(model, ds, shapes, tt, "test")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)  # a DataError reads `where: message` and its help line
        return 1
    out = Path(args.out or f"runs/{model.infer.name}")
    history_rows, start = [], 0
    if args.resume:
        try:
            model.load_weights(out / "last.npz")
            start = model.load_training_state(out / "train_state.npz")
            history_rows = json.loads((out / "history.json").read_text())[:start]
            if model.fit_state.get("stopper") and (out / "best.npz").exists():
                with np.load(out / "best.npz", allow_pickle=False) as f:
                    model.fit_state["best_params"] = {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError) as e:
            return _fail(f"cannot resume from `{out}`: {e}", "it needs the last.npz, train_state.npz and "
                         "history.json of an earlier `dlc train` run")
    elif out.exists():
        if not args.force:
            return _fail(f"`{out}` already exists", "pass --force to replace it, --resume to continue it, "
                         "or choose another --out")
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or model.settings.get("epochs", 10)
    monitor = (model.settings.get("early_stopping") or {}).get("args", {}).get("monitor", "val_loss")
    state = {"best": None, "t0": time.time(), "bar": None}
    if history_rows:  # resuming: the best so far is in the history
        vals = [r.get(monitor, r.get("loss")) for r in history_rows]
        state["best"] = max(vals) if higher_is_better(monitor) else min(vals)
    bar_factory = _progress()
    batch = args.batch_size or model.settings.get("batch_size", 32)
    steps_per_epoch = max(1, -(-len(x) // batch))

    def on_batch(epoch, t, loss):
        if state["bar"] is None:
            state["bar"] = bar_factory(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}")
        state["bar"].update(1)
        state["bar"].set_postfix(loss=f"{loss:.4f}")

    def on_epoch(m, epoch, logs):
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
        ck = out / "checkpoints" / f"epoch-{epoch + 1:03d}.npz"
        m.save_weights(ck)
        shutil.copyfile(ck, out / ".last.npz")
        m.save_training_state(out / "train_state.npz")
        os.replace(out / ".last.npz", out / "last.npz")
        value = logs.get(monitor, logs.get("loss"))
        best = state["best"]
        if best is None or (value > best if higher_is_better(monitor) else value < best):
            state["best"] = value
            shutil.copyfile(ck, out / ".best.npz")
            os.replace(out / ".best.npz", out / "best.npz")
        history_rows.append({"epoch": epoch + 1, **logs})
        write_atomic(out / "history.json", json.dumps(history_rows, indent=1))
        keys = list(history_rows[0])
        with open(out / ".history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(history_rows)
        os.replace(out / ".history.csv", out / "history.csv")
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
        print(f"epoch {epoch + 1}/{epochs}  {shown}  ({time.time() - state['t0']:.1f} s)", flush=True)
        state["t0"] = time.time()

    print(f"training {model.infer.name} on {ds.description}; writing to {out}/", flush=True)
    try:
        history = model.fit(x, y, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            validation_data=(xv, yv), callbacks=[on_epoch], on_batch=on_batch, initial_epoch=start)
    except KeyboardInterrupt:
        if state["bar"] is not None:
            state["bar"].close()
        print(f"\ninterrupted: the last complete epoch's weights are in {out}/last.npz", file=sys.stderr)
        return 130
    except (TrainingError, RunError, ValueError) as e:  # a diverging loss, or inputs the model cannot take
        if state["bar"] is not None:
            state["bar"].close()
        return _fail(str(e), f"the last good weights are in {out}/last.npz" if (out / "last.npz").exists() else None)
    full = {k: [r[k] for r in history_rows if k in r] for k in (history_rows[0] if history_rows else {}) if k != "epoch"}
    note = _plot(out, full or history.history)
    if note:
        print(f"note: {note}")
    model.load_weights(out / "best.npz")
    final = model.evaluate(xv, yv)
    print("best checkpoint on the held-out split: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
    return 0


def _progress():
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda **kw: _NoBar()
    return lambda **kw: tqdm(leave=False, file=sys.stderr, disable=not sys.stderr.isatty(), **kw)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _saved_model_and_data(args):
    """The model with its saved weights and the held-out split of the data, or an exit status."""
    from runtime.data import DataError
    from runtime.model import ModelError
    try:
        model = _load_model(args)
        model.load_weights(args.weights)
        ds, shapes, tt = _dataset(args, model)
        return model, *_fit_arrays(model, ds, shapes, tt, "test")
    except ModelError as e:
        render_all(e.diagnostics, e.sources)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)  # a DataError reads `where: message` and its help line
    except (ValueError, OSError) as e:
        _fail(str(e))
    return None


def cmd_eval(args, argv) -> int:
    loaded = _saved_model_and_data(args)
    if loaded is None:
        return 1
    model, xv, yv = loaded
    from runtime.interpreter import RunError
    try:
        logs = model.evaluate(xv, yv)
    except (RunError, ValueError) as e:
        return _fail(str(e))
    print("  ".join(f"{k} {v:.4f}" for k, v in logs.items()))
    return 0


def cmd_predict(args, argv) -> int:
    loaded = _saved_model_and_data(args)
    if loaded is None:
        return 1
    model, x, _ = loaded
    from runtime.interpreter import RunError
    try:
        pred = model.predict(x)
    except (RunError, ValueError) as e:
        return _fail(str(e))
    if args.output:
        outp = Path(args.output)
        if outp.exists() and not args.force:
            return _fail(f"`{outp}` already exists", "pass --force to replace it")
        np.save(outp, pred if not isinstance(pred, dict) else next(iter(pred.values())))
        print(f"wrote {outp}")
    else:
        np.savetxt(sys.stdout, np.asarray(pred if not isinstance(pred, dict) else next(iter(pred.values()))).reshape(len(x), -1), fmt="%.6g")
    return 0
