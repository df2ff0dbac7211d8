"""On-demand benchmark: one training step (forward, backward, Adam) of dlc's compiled cpu target against
PyTorch eager, on five small models, float32. Not a test: pytest does not collect it (bench_*.py).

    /work/venv/bin/python tests/bench/bench_train_step.py                      # all five models
    /work/venv/bin/python tests/bench/bench_train_step.py --models mlp_digits lenet5 --steps 100

For every model it measures, each in its own subprocess:
  cold   fresh DLC_CACHE_DIR and NUMBA_CACHE_DIR: import time, and the time from Model() to the end of the
         first train step (front end, autodiff, code generation, Numba compile of everything);
  warm   the same cache folders again: import time (from process launch), Model() to the end of the first
         step, then the steady-state step time, both through Model.train_on_batch (what a user calls) and
         through Compiled.call("train_step", ...) directly (the compiled step without Model's Python work);
  torch  the same layer sizes, batch, loss and Adam in PyTorch eager, torch.set_num_threads(--threads).
The warm dlc worker and the torch worker stay alive and are driven in alternating rounds, so that a change
in the machine's load during the run hits both sides alike. The peak memory is each subprocess's maxrss.
Parameter counts: dlc's from `python -m dlc check MODEL --set ...`, PyTorch's from its module.

Run it on a quiet machine: on 2 cores, one busy process elsewhere slows a step several times over (BLAS and
OpenMP threads spin and wait for each other). The benchmark watches the CPU time of other processes (from
/proc/stat): it waits for quiet before each phase, measures a cold run or a timed round again when others
took more than --quiet percent of the CPUs meanwhile (for at most --wait-idle seconds per model), and shows
that load in the `other CPU%` column and under Problems."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LR = 1e-3
ADAM_EPS = 1e-7  # dlc's (Keras') Adam default; PyTorch's is 1e-8. Set alike on both sides.
TAG = "@@BENCH "

# name -> the dlc model (zoo name and --set values), the batch and the PyTorch twin (built in torch_model)
MODELS = {
    "mlp_digits": dict(title="MLP 64-128-64-10", zoo="mlp", sets={"h1": 128, "h2": 64, "rate": 0.0}, batch=32),
    "mlp_784": dict(title="MLP 784-256-256-10", zoo="mlp",
                    sets={"inputs": 784, "h1": 256, "h2": 256, "rate": 0.0}, batch=128),
    "lenet5": dict(title="LeNet-5 1x28x28", zoo="lenet5", sets={}, batch=64),
    "char_lstm": dict(title="char LSTM V65 H128 T50", zoo="char_lstm", sets={"vocab": 65, "hidden": 128},
                      batch=32, steps=50),
    # zoo/bert.dln at this size: token + segment + learned position embeddings, layernorm, 2 post-norm
    # encoder layers (MHA + GELU FFN), the pooler, and the logits read through the tied token table
    # (mlm_head=false: no extra head). Vocabulary 65, as the char LSTM.
    "transformer": dict(title="2-layer encoder d64 h4 ff128 T32", zoo="bert",
                        sets={"layers": 2, "d_model": 64, "heads": 4, "ffn": 128, "vocab": 65, "max_len": 32,
                              "dropout_rate": 0.0, "mlm_head": False}, batch=32, steps=32),
}


# ------------------------------------------------------------------------------------------- data

def make_batches(name: str, n: int = 4, seed: int = 0) -> list:
    """n batches of random data (the same in both workers), keyed by the dlc model's input/target names."""
    import numpy as np
    rng = np.random.default_rng(seed)
    spec = MODELS[name]
    B = spec["batch"]
    out = []
    for _ in range(n):
        if name == "mlp_digits":
            b = {"x": rng.uniform(0, 1, (B, 64)).astype(np.float32), "label": rng.integers(0, 10, B)}
        elif name == "mlp_784":
            b = {"x": rng.uniform(0, 1, (B, 784)).astype(np.float32), "label": rng.integers(0, 10, B)}
        elif name == "lenet5":
            b = {"x": rng.uniform(0, 1, (B, 1, 28, 28)).astype(np.float32), "label": rng.integers(0, 10, B)}
        elif name == "char_lstm":
            text = rng.integers(0, 65, (B, spec["steps"] + 1))
            b = {"chars": text[:, :-1].copy(), "next_chars": text[:, 1:].copy()}
        elif name == "transformer":
            T = spec["steps"]
            b = {"tokens": rng.integers(0, 65, (B, T)), "segments": rng.integers(0, 2, (B, T)),
                 "masked_tokens": rng.integers(0, 65, (B, T))}
        else:
            raise KeyError(name)
        out.append({k: (v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in b.items()})
    return out


# ------------------------------------------------------------------------------------------- PyTorch twins

def torch_model(name: str):
    """(module, loss(batch of tensors) -> scalar tensor, clip max-norm or None) of the PyTorch twin."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    ce = nn.CrossEntropyLoss()
    if name in ("mlp_digits", "mlp_784"):
        i, h1, h2 = (64, 128, 64) if name == "mlp_digits" else (784, 256, 256)
        net = nn.Sequential(nn.Linear(i, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 10))
        return net, lambda b: ce(net(b["x"]), b["label"]), None
    if name == "lenet5":
        net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
                            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                            nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
        return net, lambda b: ce(net(b["x"]), b["label"]), None
    if name == "char_lstm":
        V, H = 65, 128

        class CharLSTM(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.LSTM(V, H, batch_first=True)
                # dlc's LSTM has one bias (Keras' count); freeze PyTorch's second one at zero
                with torch.no_grad():
                    self.rnn.bias_hh_l0.zero_()
                self.rnn.bias_hh_l0.requires_grad_(False)
                self.readout = nn.Linear(H, V)

            def forward(self, chars):
                hs, _ = self.rnn(F.one_hot(chars, V).float())
                return self.readout(hs)

        net = CharLSTM()
        # the zoo model's train section clips the global gradient norm at 5 (kept on both sides)
        return net, lambda b: ce(net(b["chars"]).reshape(-1, V), b["next_chars"].reshape(-1)), 5.0
    if name == "transformer":
        V, D, heads, ffn, L, max_len = 65, 64, 4, 128, 2, 32

        class Encoder(nn.Module):  # zoo/bert.dln with mlm_head=false, dropout 0
            def __init__(self):
                super().__init__()
                self.tok = nn.Embedding(V, D)
                self.seg = nn.Embedding(2, D)
                self.pos = nn.Parameter(torch.randn(max_len, D) * 0.02)
                self.norm = nn.LayerNorm(D, eps=1e-12)
                self.layers = nn.ModuleList(
                    nn.TransformerEncoderLayer(D, heads, ffn, dropout=0.0, activation="gelu",
                                               layer_norm_eps=1e-12, batch_first=True) for _ in range(L))
                self.pooler = nn.Linear(D, D)
                for table in (self.tok.weight, self.seg.weight):  # as bert.dln: N(0, 0.02) truncated
                    nn.init.trunc_normal_(table, std=0.02)

            def forward(self, tokens, segments):
                h = self.tok(tokens) + self.seg(segments) + self.pos[:tokens.shape[1]]
                h = self.norm(h)
                for layer in self.layers:
                    h = layer(h)
                pooled = torch.tanh(self.pooler(h[:, 0]))  # computed, as dlc's step returns it; not in the loss
                return h, pooled, h @ self.tok.weight.t()

        net = Encoder()

        def loss(b):
            _, _, logits = net(b["tokens"], b["segments"])
            return ce(logits.reshape(-1, V), b["masked_tokens"].reshape(-1))
        return net, loss, None
    raise KeyError(name)


# ------------------------------------------------------------------------------------------- workers

def _emit(**kw):
    sys.stdout.write(TAG + json.dumps(kw) + "\n")
    sys.stdout.flush()


def _maxrss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _serve(steppers: dict):
    """Answer `run K` with K steps of every stepper (alternating per step), `quit` with the peak memory."""
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            _emit(event="bye", maxrss_mb=_maxrss_mb())
            return
        k = int(cmd[1])
        times = {key: [] for key in steppers}
        for _ in range(k):
            for key, fn in steppers.items():
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        _emit(event="times", times=times)


def worker_dlc(name: str, cold: bool):
    t_launch = float(os.environ["BENCH_T0"])
    t_start = time.time()
    sys.path.insert(0, str(ROOT))
    from runtime.model import Model  # numba is imported later, by the first compile
    t_import = time.time()
    import warnings

    import numpy as np
    spec = MODELS[name]
    batches = make_batches(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        m = Model(spec["zoo"], sets=spec["sets"], target="cpu", train={"optimizer": "adam"})
        t1 = time.perf_counter()
        names = m.input_names + m.target_names
        if sorted(names) != sorted(batches[0]):
            raise SystemExit(f"the dlc model's inputs and targets are {names}, the benchmark feeds {sorted(batches[0])}")
        res = m.train_on_batch(batches[0], lr=LR)
        t2 = time.perf_counter()
    if m.target != "cpu" or m._compiled is None:
        raise SystemExit("dlc did not compile the model for the cpu target (it fell back to the reference "
                         "interpreter): " + "; ".join(str(w.message) for w in caught))
    _emit(event="ready", python_start_s=t_start - t_launch, import_s=t_import - t_launch,
          import_model_s=t_import - t_start, model_init_s=t1 - t0, first_step_s=t2 - t0,
          launch_to_first_step_s=time.time() - t_launch, loss0=res["loss"],
          warnings=[str(w.message) for w in caught])
    if cold:
        _emit(event="bye", maxrss_mb=_maxrss_mb())
        return
    c = m.compiled()
    fn = "train_step"
    base = [{**b, "lr": np.float32(LR)} for b in batches]
    state = {"i": 0}

    def api():
        state["i"] += 1
        m.train_on_batch(batches[state["i"] % len(batches)], lr=LR)

    def raw():
        # the compiled step alone: what train_on_batch calls, without its dictionary and loss handling
        state["i"] += 1
        k = m.step_count + 1
        feeds = dict(base[state["i"] % len(base)])
        feeds["step"] = np.float32(k)
        ok, _ = c.call(fn, feeds, seed=m.seed, step=k)
        m.step_count = k
        if not ok:
            raise SystemExit(f"the loss is not finite at step {k}")

    _serve({"api": api, "raw": raw})


def worker_torch(name: str, threads: int):
    t_launch = float(os.environ["BENCH_T0"])
    t_start = time.time()
    import torch
    t_import = time.time()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batches = [{k: torch.from_numpy(v) for k, v in b.items()} for b in make_batches(name)]
    t0 = time.perf_counter()
    net, loss_fn, clip = torch_model(name)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR, eps=ADAM_EPS)
    state = {"i": 0}

    def step():
        b = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(b)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return loss.item()

    loss0 = step()
    t1 = time.perf_counter()
    _emit(event="ready", python_start_s=t_start - t_launch, import_s=t_import - t_launch,
          first_step_s=t1 - t0, launch_to_first_step_s=time.time() - t_launch, loss0=loss0,
          params=sum(p.numel() for p in params), threads=torch.get_num_threads(),
          interop_threads=torch.get_num_interop_threads())
    _serve({"torch": step})


# ------------------------------------------------------------------------------------------- driver

class WorkerFailed(Exception):
    pass


class Worker:
    """A worker subprocess spoken to through lines on stdin/stdout; stderr goes to a file for errors."""

    def __init__(self, kind: str, name: str, env: dict, args=()):
        self.err = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--models", name, *args]
        env = {**env, "BENCH_T0": repr(time.time())}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env=env, cwd=str(ROOT), text=True, bufsize=1)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        self.proc.wait()
        self.err.seek(0)
        text = self.err.read().strip()
        raise WorkerFailed(f"exit status {self.proc.returncode}: " + _tail(text))

    def run(self, k: int) -> dict:
        self.proc.stdin.write(f"run {k}\n")
        self.proc.stdin.flush()
        return self.read()["times"]

    def quit(self) -> dict:
        try:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except OSError:  # it has exited already (a cold run says goodbye without being asked)
                pass
            return self.read()
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def _tail(text: str, lines: int = 12) -> str:
    """The end of a traceback or diagnostic: its last lines, the error line first."""
    rows = [r for r in text.splitlines() if r.strip()]
    return "\n".join(rows[-lines:]) if rows else "(no output on stderr)"


def _cpu_total() -> tuple[float, float]:
    """(all CPU time, busy CPU time) of the machine since boot, in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    hz = os.sysconf("SC_CLK_TCK")
    return sum(v) / hz, (sum(v) - v[3] - v[4]) / hz  # idle and iowait are not busy


def _cpu_ours(pids) -> float:
    """CPU seconds used by this process, its finished children and the live workers `pids` (with theirs)."""
    t = os.times()
    used = t.user + t.system + t.children_user + t.children_system
    hz = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime of all its threads, then of its children that have exited (dlc's compile processes)
            used += sum(int(x) for x in fields[11:15]) / hz
        except (OSError, IndexError, ValueError):
            pass
    return used


class OtherLoad:
    """The share of all CPUs (percent) used by processes other than the benchmark's over a window: a
    colleague's test run on a 2-core machine is enough to make the step times meaningless."""

    def __init__(self, pids=()):
        self.start(pids)

    def start(self, pids=()):
        try:
            self.t0, self.ours0 = _cpu_total(), _cpu_ours(pids)
        except OSError:
            self.t0 = None
        return self

    def stop(self, pids=()) -> float:
        if self.t0 is None:
            return float("nan")
        (total1, busy1), ours1 = _cpu_total(), _cpu_ours(pids)
        total, busy = total1 - self.t0[0], busy1 - self.t0[1]
        if total <= 0:
            return float("nan")
        return max(0.0, 100.0 * (busy - (ours1 - self.ours0)) / total)


def background_cpu(seconds: float = 0.5) -> float:
    """The load of other processes over a short window, in percent of all CPUs."""
    m = OtherLoad()
    time.sleep(seconds)
    return m.stop()


def wait_for_quiet(limit: float, budget: dict, log) -> float:
    """Wait (at most budget["left"] seconds in all) until others use less than `limit` percent; the load seen."""
    load = background_cpu()
    if load > limit and budget["left"] > 0:
        log(f"other processes use {load:.0f}% of the CPUs; waiting up to {budget['left']:.0f} s for quiet")
        t = time.perf_counter()
        while load > limit and time.perf_counter() - t < budget["left"]:
            time.sleep(1.5)
            load = background_cpu()
        budget["left"] -= time.perf_counter() - t
    return load


def dlc_params(name: str) -> tuple[int | None, str]:
    spec = MODELS[name]
    cmd = [sys.executable, "-m", "dlc", "check", spec["zoo"]]
    for k, v in spec["sets"].items():
        cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    r = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, check=False)
    shown = "dlc check " + " ".join(cmd[4:])
    for line in r.stdout.splitlines():
        if line.startswith("Trainable params:"):
            return int(line.split(":")[1].split("(")[0].replace(",", "").strip()), shown
    return None, shown + f" failed ({r.returncode}): " + _tail(r.stdout + r.stderr, 4)


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "DLC_NUM_THREADS"):
        env[var] = str(threads)
    env.pop("DLC_TARGET", None)
    return env


def bench_model(name: str, a, tmp: Path) -> dict:
    r = {"model": name, "title": MODELS[name]["title"], "batch": MODELS[name]["batch"], "errors": [],
         "other_cpu": {}}
    log = lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)
    budget = {"left": a.wait_idle}
    r["dlc_params"], r["dlc_check"] = dlc_params(name)

    env = thread_env(a.threads)
    # dlc's modules with bytecode, as pip installs them (it compiles them whatever PYTHONDONTWRITEBYTECODE
    # says), kept apart from the checkout; torch's came with its install
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    for attempt in range(3):  # again, with fresh caches, when another process took CPU meanwhile
        cache = tmp / f"{name}-{attempt}"
        env["DLC_CACHE_DIR"] = str(cache / "dlc")
        env["NUMBA_CACHE_DIR"] = str(cache / "numba")
        wait_for_quiet(a.quiet, budget, log)
        log("cold compile (fresh caches)" + (f", attempt {attempt + 1}" if attempt else ""))
        load = OtherLoad()
        w = Worker("dlc-cold", name, env)
        try:
            r["cold"] = w.read()
            r["cold"].update(w.quit())
        except WorkerFailed as e:
            r["errors"].append(f"dlc cold run: {e}")
            w.close()
            break
        r["other_cpu"]["cold"] = load.stop()
        if r["other_cpu"]["cold"] <= a.quiet or budget["left"] <= 0:
            break
        log(f"other processes used {r['other_cpu']['cold']:.0f}% of the CPUs during the cold run")

    wait_for_quiet(a.quiet, budget, log)
    workers = {}
    log("warm start (same caches) and PyTorch start")
    load = OtherLoad()
    try:
        workers["dlc"] = Worker("dlc", name, env)
        r["warm"] = workers["dlc"].read()
    except WorkerFailed as e:
        r["errors"].append(f"dlc warm run: {e}")
        workers.pop("dlc").close()
    try:
        workers["torch"] = Worker("torch", name, thread_env(a.threads), ["--threads", str(a.threads)])
        r["torch"] = workers["torch"].read()
    except WorkerFailed as e:
        r["errors"].append(f"torch: {e}")
        workers.pop("torch").close()
    pids = [w.proc.pid for w in workers.values()]
    r["other_cpu"]["start"] = load.stop(pids)

    times: dict[str, list] = {}
    loads, dropped = [], 0
    try:
        for w in workers.values():
            w.run(a.warmup)
        rounds = max(1, min(a.rounds, a.steps))
        done, spent = 0, 0.0  # spent: seconds of accepted rounds (waiting for quiet does not count)
        while done < a.steps:
            k = min(a.steps - done, -(-a.steps // rounds))
            t_round = time.perf_counter()
            load = OtherLoad(pids)
            got = {}
            for w in workers.values():
                time.sleep(a.settle)  # let the other worker's spinning threads (OpenMP, OpenBLAS) go to sleep
                got.update(w.run(k))
            other = load.stop(pids)
            if other > a.quiet and budget["left"] > 0:  # measured beside someone else's work: again
                dropped += 1
                log(f"other processes used {other:.0f}% of the CPUs during a round; measuring it again")
                wait_for_quiet(a.quiet, budget, log)
                continue
            loads.append(other)
            for key, ts in got.items():
                times.setdefault(key, []).extend(ts)
            done += k
            spent += time.perf_counter() - t_round
            if spent > a.max_seconds and done < a.steps:
                r["errors"].append(f"stopped after {done} of {a.steps} steps (--max-seconds {a.max_seconds:g})")
                break
        for key, w in workers.items():
            r.setdefault("maxrss", {})[key] = w.quit()["maxrss_mb"]
    except WorkerFailed as e:
        r["errors"].append(f"during the timed steps: {e}")
    finally:
        for w in workers.values():
            w.close()
    r["other_cpu"]["timed"] = max(loads) if loads else float("nan")
    r["rounds_dropped"] = dropped
    for phase, v in r["other_cpu"].items():
        if v > a.quiet:
            r["errors"].append(f"other processes used {v:.0f}% of the CPUs during the {phase} measurement: "
                               "its numbers are not reliable")
    r["times"] = times
    r["steps"] = len(next(iter(times.values()), []))
    return r


# ------------------------------------------------------------------------------------------- report

def _q(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def _ms(xs) -> str:
    if not xs:
        return "-"
    med = statistics.median(xs) * 1e3
    spread = (_q(xs, 0.75) - _q(xs, 0.25)) * 1e3 / 2
    return f"{_num(med)} ±{100 * spread / med:.0f}%" if med else _num(med)


def _num(v, unit="") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}") + unit


def _ratio(a, b) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "-"


def _table(head: list, rows: list) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def report(results: list, a) -> str:
    out = []
    rows = []
    for r in results:
        t = r.get("times", {})
        tp = r.get("torch", {}).get("params")
        mismatch = "" if r["dlc_params"] is None or tp is None or r["dlc_params"] == tp else " !"
        rows.append([r["model"], r["batch"], f"{r['dlc_params']:,}" if r["dlc_params"] else "-",
                     (f"{tp:,}" if tp else "-") + mismatch, _ms(t.get("api")), _ms(t.get("raw")),
                     _ms(t.get("torch")), _ratio(t.get("api"), t.get("torch")), _ratio(t.get("raw"), t.get("torch")),
                     r["steps"], "/".join(f"{r['other_cpu'].get(k, float('nan')):.0f}" for k in ("cold", "start", "timed"))])
    out.append(f"Training step, median over the timed steps (± half the interquartile range), threads={a.threads}")
    out.append(_table(["model", "batch", "params dlc", "params torch", "dlc ms", "dlc raw ms", "torch ms",
                       "dlc/torch", "raw/torch", "steps", "other CPU%"], rows))
    out.append("  dlc = Model.train_on_batch; dlc raw = Compiled.call('train_step') alone; torch = PyTorch eager "
               "(zero_grad, forward, backward, [clip], Adam.step, loss.item()).\n"
               "  other CPU% = share of all CPUs used by other processes during the cold run / the warm starts / "
               "the worst accepted timed round")

    rows = []
    for r in results:
        c, w, tt, mr = r.get("cold", {}), r.get("warm", {}), r.get("torch", {}), r.get("maxrss", {})
        rows.append([r["model"], _num(c.get("import_s")), _num(c.get("first_step_s")), _num(c.get("maxrss_mb")),
                     _num(w.get("import_s")), _num(w.get("first_step_s")), _num(w.get("launch_to_first_step_s")),
                     _num(mr.get("dlc")), _num(tt.get("import_s")), _num(tt.get("first_step_s")),
                     _num(mr.get("torch"))])
    out.append("")
    out.append("Start-up (seconds) and peak memory (maxrss, MB) of each subprocess")
    out.append(_table(["model", "cold import", "cold Model()->1st step", "cold RSS",
                       "warm import", "warm Model()->1st step", "warm launch->1st step", "warm RSS",
                       "torch import", "torch 1st step", "torch RSS"], rows))
    out.append("  import = process launch to `from runtime.model import Model` (or `import torch`) done; numba is "
               "imported by the first compile, inside Model()->1st step. RSS of the warm dlc and torch workers is "
               "taken after all timed steps.")

    rows = [[r["model"], r["title"], _num(r.get("cold", {}).get("loss0")), _num(r.get("torch", {}).get("loss0")),
             r["dlc_check"]] for r in results]
    out.append("")
    out.append("Configurations (loss of the first step on the same random batch: dlc / torch; different initial weights)")
    out.append(_table(["model", "what", "loss@1 dlc", "loss@1 torch", "dlc configuration"], rows))
    errs = [(r["model"], e) for r in results for e in r["errors"]]
    warns = [(r["model"], f"warning: {x}") for r in results for x in r.get("warm", {}).get("warnings", [])]
    if errs or warns:
        out.append("")
        out.append("Problems")
        for model, e in errs + warns:
            out.append(f"  [{model}] " + e.replace("\n", "\n      "))
    return "\n".join(out)


def header(a) -> str:
    from importlib import metadata

    def ver(p):
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return "not installed"
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(ROOT), capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "compiler", "runtime", "dsl", "zoo"], cwd=str(ROOT),
                           capture_output=True, text=True, check=False).stdout.strip()
    sys.path.insert(0, str(ROOT))
    from compiler import __version__
    from runtime.kernels import VECTOR_BYTES
    from llvmlite import binding
    return "\n".join([
        f"dlc train-step benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"machine: {cpu}, {os.cpu_count()} logical CPUs ({usable} usable), {platform.system()} {platform.release()}",
        (f"python {platform.python_version()}, numpy {ver('numpy')}, numba {ver('numba')}, "
         f"llvmlite {ver('llvmlite')}, scipy {ver('scipy')}, torch {ver('torch')}"),
        f"dlc {__version__} at {git.stdout.strip() or '?'}" + (" (uncommitted changes in compiler/runtime/dsl/zoo)" if dirty else ""),
        # both set how fast the matmuls are: dlc's register blocks, and the kernels OpenBLAS picks
        (f"dlc gemm: {VECTOR_BYTES}-byte vectors (LLVM cpu {binding.get_host_cpu_name()}); "
         f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(not set: OpenBLAS picks by the CPU)')}"),
        *(["PYTHONDONTWRITEBYTECODE is set here; dlc's workers write and read bytecode under the benchmark's "
           "temporary folder (PYTHONPYCACHEPREFIX), as an installed dlc has it: `pip install` compiles every module"]
          if os.environ.get("PYTHONDONTWRITEBYTECODE") else []),
        (f"threads {a.threads} (torch.set_num_threads; OPENBLAS/OMP/MKL/NUMBA/DLC_NUM_THREADS for both), Adam lr {LR} "
         f"eps {ADAM_EPS}, float32, {a.warmup} warm-up + {a.steps} timed steps in {a.rounds} alternating rounds"),
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="NAME",
                   help=f"a subset of: {' '.join(MODELS)}")
    p.add_argument("--steps", type=int, default=50, help="timed steps per side (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after the first (default 5)")
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch and for BLAS (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="alternating dlc/torch rounds the steps are split into")
    p.add_argument("--settle", type=float, default=0.5,
                   help="pause in seconds before each round of a worker, so that the other's threads stop "
                        "spinning (default 0.5)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop a model's timed rounds after this many seconds of measuring (default 60)")
    p.add_argument("--wait-idle", type=float, default=30.0, metavar="S",
                   help="per model, wait up to S seconds in all for other processes to go quiet, and measure a "
                        "cold run or a round again when they took more than --quiet (default 30; 0: never wait)")
    p.add_argument("--quiet", type=float, default=10.0, metavar="PCT",
                   help="the load of other processes, in percent of all CPUs, below which the machine counts "
                        "as quiet (default 10)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement to PATH")
    p.add_argument("--keep-cache", action="store_true", help="keep the temporary cache folders (their path is printed)")
    p.add_argument("--worker", choices=["dlc", "dlc-cold", "torch"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        name = a.models[0]
        if a.worker == "torch":
            worker_torch(name, a.threads)
        else:
            worker_dlc(name, cold=a.worker == "dlc-cold")
        return 0

    head = header(a)
    print(head, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="dlc-bench-"))
    t0 = time.perf_counter()
    results = []
    try:
        for name in a.models:
            results.append(bench_model(name, a, tmp))
    finally:
        if a.keep_cache:
            print(f"caches kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results, a))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": head, "results": results}, indent=1))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
