"""The Python API, Keras-like: load a `.dln` model (or a zoo model by name), then fit, evaluate, predict,
save and load weights. NumPy arrays in and out.

    import dlc
    m = dlc.load("mlp")
    history = m.fit(x_train, y_train, epochs=20, batch_size=32, validation_split=0.1)
    print(m.evaluate(x_test, y_test))

Execution runs compiled code (target="cpu", the default: runtime/compiled.py) or the reference interpreter
(target="reference"); the environment variable DLC_TARGET changes the default. On the cpu target the
arrays in `params` and `slots` are views of the compiled storage and change in place at every step. The `train` section of the file gives the defaults (optimizer, schedule, epochs, batch size,
metrics, ...); keyword arguments override them."""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

from compiler.check import check
from dsl.diagnostics import Sources, render

from . import interpreter
from .initializers import init_params
from .optim import Plateau, build_step, scheduled_lr


class ModelError(Exception):
    """The model does not compile: carries its diagnostics and the sources to show them with."""

    def __init__(self, diagnostics, sources: Sources):
        self.diagnostics, self.sources = diagnostics, sources
        super().__init__("\n\n".join(render(d, sources) for d in diagnostics))


TARGETS = ("cpu", "reference")


def default_target() -> str:
    return os.environ.get("DLC_TARGET", "cpu")


class TrainingError(Exception):
    """Training cannot go on: a loss that is not finite (with the epoch, step and first bad node)."""


@dataclass
class History:
    history: dict = field(default_factory=dict)
    epochs: int = 0
    stopped_early: bool = False
    best_epoch: int | None = None

    def add(self, logs: dict):
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        self.epochs += 1


def _checked(spec, sets, present, training, sources=None):
    sources = sources or Sources()
    r = check(spec, sets, present=present, training=training, sources=sources)
    if not r.ok:
        raise ModelError([d for d in r.diags if d.severity == "error"] or r.diags, sources)
    return r


class Model:
    def __init__(self, spec: str, sets: dict | None = None, seed: int = 0, present=(), target: str | None = None,
                 train: dict | None = None, located_sets: dict | None = None, sources: Sources | None = None):
        """train: settings that replace the train section's, e.g. {"optimizer": "momentum", "epochs": 5} or
        {"optimizer": {"name": "adam", "args": {"lr": 0.01}}}; a bare name takes the published defaults."""
        target = target or default_target()
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}: the targets are {', '.join(TARGETS)}")
        self.target = target
        self._compiled = None
        self.spec = spec
        # located_sets: {name: (Span, value)} from a command line, so that a bad --set is shown in place
        self.sets = located_sets if located_sets is not None else {k: (None, v) for k, v in (sets or {}).items()}
        self.present = tuple(present)
        self.seed = seed
        self.infer = _checked(spec, self.sets, present, training=False, sources=sources).graph
        self.path = spec
        g = self.infer
        self.overrides = _normalise_overrides(train or {})
        self.settings = {**(g.train or {}).get("settings", {}), **self.overrides}
        self.input_names = [g.node(n)["name"] for n in g.inputs]
        self.target_names = list((g.train or {}).get("targets", {}))
        self.output_names = [n for n, _ in g.outputs if not n.startswith("loss")]
        self.params = init_params(g, seed)
        self.slots: dict[str, np.ndarray] = {}
        self._steps: dict = {}
        self.step_count = 0
        self.fit_state: dict | None = None  # where fit stands after each epoch, for resuming

    # ---- feeding
    def _feeds(self, x, names, what) -> dict:
        if x is None:
            return {}
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"{what} {missing} missing; the model's {what}s are {names}")
            return {n: np.asarray(x[n]) for n in names}
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(names):
            raise ValueError(f"the model has {len(names)} {what}(s) {names}, got {len(xs)} array(s)")
        return {n: np.asarray(v) for n, v in zip(names, xs)}

    def _n(self, feeds):
        sizes = {len(v) for v in feeds.values()}
        if len(sizes) != 1:
            raise ValueError(f"inputs and targets have different numbers of examples: {sorted(sizes)}")
        n = sizes.pop()
        if n == 0:
            raise ValueError("no examples to run on")
        return n

    # ---- inference
    def predict(self, x, batch_size: int = 256):
        feeds = self._feeds(x, self.input_names, "input")
        n = self._n(feeds)
        outs = {k: [] for k in self.output_names}
        for i in range(0, n, batch_size):
            batch = {k: v[i:i + batch_size] for k, v in feeds.items()}
            res = self._run("predict", batch, self.output_names)
            for k in self.output_names:
                outs[k].append(np.array(res[k]))
        outs = {k: np.concatenate(v) for k, v in outs.items()}
        return outs[self.output_names[0]] if len(outs) == 1 else outs

    def evaluate(self, x, y, batch_size: int = 256) -> dict:
        feeds = {**self._feeds(x, self.input_names, "input"), **self._feeds(y, self.target_names, "target")}
        n = self._n(feeds)
        losses, preds = [], []
        loss_name = "loss" if "loss" in dict(self.infer.outputs) else None
        for i in range(0, n, batch_size):
            batch = {k: v[i:i + batch_size] for k, v in feeds.items()}
            wanted = self.output_names[:1] + ([loss_name] if loss_name else [])
            res = self._run("eval_step", batch, wanted)
            if loss_name:
                losses.append((float(res[loss_name]), len(next(iter(batch.values())))))
            preds.append(np.array(res[self.output_names[0]]))
        logs = {}
        if losses:
            logs["loss"] = sum(l * k for l, k in losses) / sum(k for _, k in losses)
        logs.update(self._metrics(feeds[self.target_names[0]] if self.target_names else None, np.concatenate(preds)))
        return logs

    def _run(self, fn: str, batch: dict, wanted: list) -> dict:
        """Inference on one batch, on this model's target."""
        c = self.compiled()
        if c is None:
            return interpreter.run(self.infer, batch, self.params, seed=self.seed, outputs=wanted)
        c.sync(self.params)
        _, res = c.call(fn, batch, seed=self.seed, outputs=wanted)
        return res

    def compiled(self):
        """The compiled module of this model (predict, eval_step and a train step per phase), built on first
        use; None on the reference target."""
        if self.target != "cpu":
            return None
        if self._compiled is None:
            from compiler.codegen import Unsupported

            from .compiled import compile_graphs
            entries = self.entries()
            try:
                self._compiled = compile_graphs(str(self.path), entries)
            except Unsupported as e:
                warnings.warn(f"{e}; running {self.path} on the reference interpreter", stacklevel=2)
                self.target = "reference"
                return None
        return self._compiled

    def entries(self) -> list:
        """The functions the cpu target compiles: predict, eval_step when the model has a loss,
        and a train step per phase (one `train_step` without phases)."""
        from .compiled import Entry
        g = self.infer
        entries = [Entry("predict", g, self.output_names)]
        if "loss" in dict(g.outputs):
            entries.append(Entry("eval_step", g, self.output_names[:1] + ["loss"]))
        for pi in self.phase_indices():
            step = self._step(pi)
            outs = step.outputs + [o for o in self.output_names if o in dict(step.graph.outputs)]
            updates = {o[len("new:"):]: o for o in step.outputs[1:]}
            entries.append(Entry(_train_fn(pi), step.graph, outs, updates, step.outputs[0]))
        return entries

    def phase_indices(self) -> list:
        """[None] for one plain training step, the phase numbers of a phased one, [] without a train section."""
        if self.infer.train is None:
            return []
        phases = self.infer.train.get("phases") or []
        return list(range(len(phases))) if phases else [None]

    def _metrics(self, y_true, y_pred) -> dict:
        specs = self.settings.get("metrics") or []
        if not specs or y_true is None:
            return {}
        from . import metrics
        out = {}
        names = [m["name"] for m in specs]
        for m in specs:
            # top_k(k=1) and top_k(k=5) in one list keep apart by their arguments
            key = m["name"] if names.count(m["name"]) == 1 else m["name"] + "(" + ",".join(
                f"{k}={v}" for k, v in m["args"].items()) + ")"
            out[key] = float(metrics.compute(m["name"], y_true, y_pred, **m["args"]))
        return out

    # ---- training
    def _step(self, phase_index):
        if phase_index not in self._steps:
            g = _checked(self.spec, self.sets, self.present, training=True).graph
            phases = g.train.get("phases") or []
            phase = phases[phase_index] if phase_index is not None else None
            step = build_step(g, {**g.train["settings"], **self.overrides}, phase)
            for key, node in step.slots.items():
                self.slots.setdefault(key, np.zeros(tuple(int(d.value) for d in g.type(node).shape),
                                                    dtype=np.float32))
            self._steps[phase_index] = step
        return self._steps[phase_index]

    def train_on_batch(self, feeds: dict, lr: float, phase_index=None) -> dict:
        step = self._step(phase_index)
        self.step_count += 1
        hyper = {"lr": np.float32(lr), "step": np.float32(self.step_count)}
        c = self.compiled()
        if c is not None:
            c.sync(self.params)
            c.sync(self.slots)
            wanted = step.outputs[:1] + [k for k in self.output_names if k in c.programs[_train_fn(phase_index)].outputs]
            ok, res = c.call(_train_fn(phase_index), {**feeds, **hyper}, seed=self.seed, step=self.step_count,
                             outputs=wanted)
            if not ok:  # stopped at the loss: nothing was updated, so the reference can find the culprit
                raise TrainingError(self._first_nonfinite(step, {**feeds, **hyper}, {**self.params, **self.slots}))
            out = {"loss": float(res[step.outputs[0]])}
            out.update({k: np.array(res[k]) for k in self.output_names if k in res})
            return out
        values = {**self.params, **self.slots}
        out_names = step.outputs + [n for n in self.output_names if n in dict(step.graph.outputs)]
        res = interpreter.run(step.graph, {**feeds, **hyper}, values, seed=self.seed, step=self.step_count,
                              outputs=out_names)
        loss = float(res[step.outputs[0]])
        if not math.isfinite(loss):
            raise TrainingError(self._first_nonfinite(step, {**feeds, **hyper}, values))
        for name in step.outputs[1:]:
            key = name[len("new:"):]
            if key in self.params:
                self.params[key] = res[name]
            else:
                self.slots[key] = res[name]
        res["loss"] = loss
        return res

    def _first_nonfinite(self, step, feeds, values) -> str:
        res = interpreter.run(step.graph, feeds, values, seed=self.seed, step=self.step_count,
                              outputs=step.outputs[:1], all_values=True)
        for n in sorted(k for k in res if isinstance(k, int)):
            v = res[n]
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                d = step.graph.node(n)
                where = f" ({d['span']})" if d["span"] is not None else ""
                return f"the first non-finite value is `{d['name']}` ({d['op']}){where}"
        return "no single node is to blame"

    def fit(self, x, y, epochs: int | None = None, batch_size: int | None = None, validation_data=None,
            validation_split: float | None = None, shuffle: bool | None = None, seed: int | None = None,
            callbacks=(), lr: float | None = None, verbose: bool = False, on_batch=None,
            initial_epoch: int = 0) -> History:
        """Train. With initial_epoch > 0 the run continues one that stopped after that many epochs: the
        parameters, optimizer slots and `fit_state` (see resume_state) must be those it saved."""
        s = self.settings
        epochs = epochs if epochs is not None else s.get("epochs", 10)
        seed = self.seed if seed is None else seed
        shuffle = s.get("shuffle", True) if shuffle is None else shuffle
        feeds = {**self._feeds(x, self.input_names, "input"), **self._feeds(y, self.target_names, "target")}
        n = self._n(feeds)
        split = validation_split if validation_split is not None else s.get("validation_split")
        if validation_data is None and split:
            cut = n - int(round(n * split))
            validation_data = ({k: v[cut:] for k, v in feeds.items() if k in self.input_names},
                               {k: v[cut:] for k, v in feeds.items() if k in self.target_names})
            feeds = {k: v[:cut] for k, v in feeds.items()}
            n = cut
        mode = s.get("updating", "batch")
        batch_size = 1 if mode == "case" else n if mode == "epoch" else (batch_size or s.get("batch_size", 32))
        opt = s.get("optimizer") or {"name": "sgd", "args": {"lr": 0.01}}
        lr0 = lr if lr is not None else opt["args"]["lr"]
        schedule = s.get("schedule")
        plateau = Plateau(**schedule["args"]) if schedule and schedule["name"] == "plateau" else None
        stop = s.get("early_stopping")
        stopper = _EarlyStopping(**stop["args"]) if stop else None
        phases = (self.infer.train or {}).get("phases") or []
        history = History()
        t = 0
        saved = self.fit_state if initial_epoch else None
        if saved:
            t, lr0 = saved["batches"], saved["lr0"]
            if plateau is not None:
                plateau.__dict__.update(saved["plateau"])
            if stopper is not None:
                stopper.__dict__.update(saved["stopper"])
                stopper.best_params = saved.get("best_params")
        c = self.compiled()
        if c is not None and n and initial_epoch < epochs:
            # the step functions this run calls, compiled at once in parallel processes (sizes do not
            # matter to the machine code: any batch will do)
            batch = {k: v[:batch_size] for k, v in feeds.items()}
            hyper = {"lr": np.float32(lr0), "step": np.float32(1)}
            calls = {_train_fn(pi): {**batch, **hyper} for pi in (range(len(phases)) if phases else [None])}
            if validation_data is not None and "eval_step" in c.programs:
                calls["eval_step"] = batch
            c.compile(calls)
        for epoch in range(initial_epoch, epochs):
            # Each epoch's order depends on (seed, epoch) alone, so a resumed run shuffles as the first did.
            order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
            losses, preds = [], []
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                batch = {k: v[idx] for k, v in feeds.items()}
                lr_t = scheduled_lr(lr0, schedule, t)
                try:
                    if phases:  # alternating updates: each phase `repeat` times, in order
                        for pi, ph in enumerate(phases):
                            for _ in range(ph["repeat"]):
                                res = self.train_on_batch(batch, lr_t, pi)
                    else:
                        res = self.train_on_batch(batch, lr_t)
                except TrainingError as e:
                    raise TrainingError(f"the loss is not finite at epoch {epoch + 1}, step {t + 1}: {e}") from None
                losses.append((res["loss"], len(idx)))
                if self.output_names and self.output_names[0] in res:
                    preds.append((idx, res[self.output_names[0]]))
                t += 1
                if on_batch is not None:
                    on_batch(epoch, t, res["loss"])
            logs = {"loss": sum(l * k for l, k in losses) / sum(k for _, k in losses)}
            if preds and self.target_names:
                idx = np.concatenate([i for i, _ in preds])
                logs.update(self._metrics(feeds[self.target_names[0]][idx], np.concatenate([p for _, p in preds])))
            if validation_data is not None:
                vx, vy = validation_data
                logs.update({f"val_{k}": v for k, v in self.evaluate(vx, vy).items()})
            logs["lr"] = lr0 if not schedule or schedule["name"] in ("constant", "plateau") else scheduled_lr(lr0, schedule, t)
            history.add(logs)
            if plateau is not None:
                lr0 = plateau.end_epoch(logs, lr0)
            halt = False
            if stopper is not None:
                if stopper.update(self, epoch, logs):
                    history.stopped_early = True
                    halt = True
                history.best_epoch = stopper.best_epoch
            # Set before the callbacks run, so that a checkpoint written by one resumes after this epoch.
            self.fit_state = {"epoch": epoch + 1, "batches": t, "lr0": lr0,
                              "plateau": dict(plateau.__dict__) if plateau else {},
                              "stopper": {k: v for k, v in stopper.__dict__.items() if k != "best_params"} if stopper else {}}
            for cb in callbacks:
                halt = bool(cb(self, epoch, logs)) or halt
            if halt:
                break
        if stopper is not None and stopper.restore_best and stopper.best_params is not None:
            self.params = stopper.best_params
        return history

    # ---- weights
    def save_weights(self, path: str) -> None:
        """All parameters and states, keyed by scoped name, as .npz; written atomically."""
        _save_npz(path, self.params)

    def load_weights(self, path: str) -> None:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            loaded = {k: f[k] for k in f.files}
        missing = sorted(set(self.params) - set(loaded))
        extra = sorted(set(loaded) - set(self.params))
        if missing or extra:
            raise ValueError(f"{path}: weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in loaded.items():
            if v.shape != self.params[k].shape:
                raise ValueError(f"{path}: `{k}` has shape {v.shape}, the model needs {self.params[k].shape}")
        self.params = {k: v.astype(self.params[k].dtype) for k, v in loaded.items()}

    def save_training_state(self, path: str) -> None:
        """What resuming needs besides the weights: optimizer slots, counters, schedule and early-stopping
        state. Slots go in an .npz, the rest in its `state` entry as JSON text."""
        import json
        state = dict(self.fit_state or {}, step_count=self.step_count)
        _save_npz(path, {"state": np.asarray(json.dumps(state)), **{f"slot:{k}": v for k, v in self.slots.items()}})

    def load_training_state(self, path: str) -> int:
        """Restore what save_training_state wrote; returns the number of epochs already done."""
        import json
        with np.load(os.fspath(path), allow_pickle=False) as f:
            state = json.loads(str(f["state"]))
            self.slots = {k[len("slot:"):]: f[k] for k in f.files if k.startswith("slot:")}
        self.step_count = state.pop("step_count")
        self.fit_state = state
        return state.get("epoch", 0)

    def summary(self, depth: int = 1) -> str:
        from compiler.report import summary
        return summary(self.infer, depth=depth)


def _save_npz(path, arrays: dict) -> None:
    """Write arrays as .npz atomically: a crash leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".dlc-", suffix=".npz", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _normalise_overrides(train: dict) -> dict:
    from compiler import schema
    out = {}
    for key, value in train.items():
        kind, table = schema.TRAIN_SETTINGS.get(key, (None, None))
        if kind is None:
            raise ValueError(f"unknown train setting {key!r}; settings: {', '.join(schema.TRAIN_SETTINGS)}")
        if kind in ("call", "calls"):
            items = value if kind == "calls" and isinstance(value, list) else [value]
            norm = []
            for v in items:
                name, args = (v, {}) if isinstance(v, str) else (v["name"], dict(v.get("args", {})))
                if name not in table:
                    raise ValueError(f"unknown {key} {name!r}; choices: {', '.join(table)}")
                spec = table[name]
                bad = set(args) - set(spec)
                if bad:
                    raise ValueError(f"{key} {name!r} has no argument {sorted(bad)}; it takes {', '.join(spec)}")
                missing = [k for k, d in spec.items() if d is ... and k not in args]
                if missing:
                    raise ValueError(f"{key} {name!r} needs {missing}")
                norm.append({"name": name, "args": {**{k: d for k, d in spec.items() if d is not ...}, **args}})
            out[key] = norm if kind == "calls" else norm[0]
        else:
            out[key] = value
    return out


def _train_fn(phase_index) -> str:
    return "train_step" if phase_index is None else f"train_step_{phase_index}"


def higher_is_better(monitor: str) -> bool:
    """Whether a larger value of the monitored quantity is better (accuracies, AUC, ...) or a smaller one."""
    return "acc" in monitor or monitor.endswith(("auc", "precision", "recall"))


class _EarlyStopping:
    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        self.monitor, self.patience, self.min_delta, self.restore_best = monitor, patience, min_delta, restore_best
        self.best, self.wait, self.best_epoch, self.best_params = math.inf, 0, None, None

    def update(self, model, epoch, logs) -> bool:
        value = logs.get(self.monitor, logs.get("loss"))
        score = -value if higher_is_better(self.monitor) else value
        if score < self.best - self.min_delta:
            self.best, self.wait, self.best_epoch = score, 0, epoch
            self.best_params = {k: v.copy() for k, v in model.params.items()}
            return False
        self.wait += 1
        return self.wait >= self.patience


def load(spec: str, sets: dict | None = None, seed: int = 0, present=(), target: str | None = None) -> Model:
    """A model from a .dln path or a zoo name; raises ModelError with diagnostics when it does not compile."""
    return Model(spec, sets, seed, present, target=target)
