"""The compiled CPU target at run time: build a module of step functions from graphs, keep it in a
content-addressed cache, and call it with storage that is allocated once.

    compile_graphs(title, entries)   graphs -> generated source -> imported module (cached) -> Compiled
    Compiled.call(name, feeds, ...)  one step: the only Python work is binding arrays and reading outputs
    run(g, feeds, params, ...)       interpreter.run's signature on the compiled target (for tests)

The cache: the source goes to `<DLC_CACHE_DIR>/cpu/m_<key>.py`, key = sha256 of the source, the versions of
dlc, numba and numpy, and the hand-written kernels. The module is registered in sys.modules under a name
derived from the key before it runs, which is what lets numba's `cache=True` find its machine code in the
next process. A file whose text is not the source is rewritten; numba cache files that fail to load are
deleted and compiled again; files are written to a temporary name and renamed, so two processes building
the same model at once each see a whole file."""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import marshal
import os
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from compiler import __version__
from compiler.codegen import STORE, ModuleGen, Program
from compiler.dims import Dim
from compiler.graph import Graph, canonical_bytes
from compiler.passes import optimize
from compiler.schedule import plan_memory, schedule
from dsl.loader import cache_dir, cache_name, write_atomic

from .interpreter import RunError, bind_signature
from . import kernels as _kernels
from .kernels import GRAIN, _find_openblas, link_gemm

_NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
_MASK = (1 << 64) - 1
_LOADED: dict[str, object] = {}


def _defer_numpy_f2py():
    """numba's CPU target imports scipy.linalg for BLAS, and scipy (1.17) star-imports numpy, which
    imports numpy.f2py, Fortran wrapping dlc never uses: 0.07 s of every process's start (a warm start
    takes about 0.6 s). Register it as a lazily executed module instead: `import numpy.f2py` still works,
    and it runs on first attribute access."""
    if "numpy.f2py" in sys.modules:
        return
    spec = importlib.util.find_spec("numpy.f2py")
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["numpy.f2py"] = mod
    spec.loader.exec_module(mod)
    np.f2py = mod  # else numpy's module __getattr__ imports it again, by attribute, and recurses


_defer_numpy_f2py()


def cache_key(source: str) -> str:
    import numba
    kernels = Path(__file__).with_name("kernels.py").read_bytes()
    return cache_name(source.encode(), __version__.encode(), numba.__version__.encode(), np.__version__.encode(),
                      hashlib.sha256(kernels).digest())


def module_path(source: str) -> Path:
    return _module_file(cache_key(source))


def _module_file(key: str) -> Path:
    return cache_dir() / "cpu" / f"m_{key}.py"


def load_module(source: str):
    """The module of this source: imported once per process, written to the cache once per machine."""
    key = cache_key(source)
    if key in _LOADED:
        return _LOADED[key]
    path = _module_file(key)
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != source:  # missing, truncated or tampered with: write it again
        write_atomic(path, source)
    name = f"dlc_generated_{key}"
    mod = _import(name, path)
    _LOADED[key] = mod
    return mod


def _guard_cache(fn, path: Path, refresh: bool) -> None:
    """Make a dispatcher's load from numba's cache survive damage: numba raises on an index it cannot
    unpickle, where this deletes the cache files of the module at path and lets numba compile again.
    Checked when numba reads the index, not beforehand: reading every index of a module first took 7 ms
    of a warm start.

    refresh=False also loads without refreshing the target context first: numba refreshes it to be
    ready to compile, which imports all of its lowering (numba.np.arraymath, linalg, listobj, ...), 0.17 s
    of LeNet-5's 0.64 s warm start, where loaded machine code needs only numba's runtime (NRT). On a
    miss numba compiles, and its compiler refreshes the context itself. Left as numba's own where its
    cache is not the one this was written against."""
    cache = getattr(fn, "_cache", None)
    load = getattr(cache, "load_overload", None)
    if load is None:
        return
    fast = not refresh and hasattr(cache, "_load_overload") and hasattr(cache, "_guard_against_spurious_io_errors")

    def load_overload(sig, target_context):
        try:
            if not fast:
                return load(sig, target_context)
            from numba.core.runtime import nrt
            nrt.rtsys.initialize(target_context)
            with cache._guard_against_spurious_io_errors():
                return cache._load_overload(sig, target_context)
            return None  # the guard swallowed an error: numba compiles
        except Exception:  # any damage at all: the files are only a cache
            purge_numba_cache(path)
            return None

    cache.load_overload = load_overload


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # before it runs: numba's cache locates functions through their module
    exec(_code(path), mod.__dict__)
    mod.__dlc_path__ = path
    for fn in vars(mod).values():
        if getattr(fn, "__module__", None) == name:  # not runtime/kernels.py's, which it imports
            _guard_cache(fn, path, refresh=False)
    return mod


def _code(path: Path):
    """The compiled code of a generated module, kept next to it: compiling the source took 0.03 s of the
    encoder's warm start (Python writes no .pyc where PYTHONDONTWRITEBYTECODE is set, as on this
    project's machines, and a .pyc is checked by time stamps, where this is checked by content). The
    file holds the interpreter's magic number, the sha256 of the path and source and of the code: a stale,
    moved or damaged one is compiled and written again."""
    source = path.read_bytes()
    stored = path.with_name(f"{path.stem}.{sys.implementation.cache_tag}.code")
    # the code names its file, through which numba finds its cache: a moved cache folder compiles again
    want = importlib.util.MAGIC_NUMBER + hashlib.sha256(str(path).encode() + b"\0" + source).digest()
    try:
        data = stored.read_bytes()
        head, digest, body = data[:len(want)], data[len(want):len(want) + 32], data[len(want) + 32:]
        if head == want and hashlib.sha256(body).digest() == digest:
            return marshal.loads(body)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = compile(source, str(path), "exec", dont_inherit=True)
    body = marshal.dumps(code)
    try:
        write_atomic(stored, want + hashlib.sha256(body).digest() + body)
    except OSError:
        pass  # only a cache
    return code


def _numba_roots(path: Path) -> list:
    roots = [path.parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return [r for r in roots if r.is_dir()]


def purge_numba_cache(path: Path):
    """Delete numba's cache files of one generated module (wherever NUMBA_CACHE_DIR puts them)."""
    for root in _numba_roots(path):
        for f in root.rglob(f"{path.stem}.*"):
            if f.suffix in (".nbi", ".nbc"):
                f.unlink(missing_ok=True)


for _fn in vars(_kernels).values():  # a step function's kernels too: their cache may be damaged as well
    _guard_cache(_fn, Path(_kernels.__file__), refresh=False)


@dataclass
class Entry:
    """One step function to generate: a graph, the outputs it returns, the persistent values it updates."""
    name: str
    graph: Graph
    outputs: list  # output names
    updates: dict = field(default_factory=dict)  # persistent key -> output name of its new value
    loss: str | None = None  # output whose non-finite value stops the step before any update


def schedule_entry(e: Entry, float_dtype: str = "f32"):
    g = _with_outputs(e.graph, e.outputs)
    g = optimize(g, np.float64 if float_dtype == "f64" else None)
    table = dict(g.outputs)
    updates = {key: table[name] for key, name in e.updates.items()}
    return schedule(g, updates, table.get(e.loss) if e.loss else None)


def _with_outputs(g: Graph, names: list) -> Graph:
    import copy
    table = dict(g.outputs)
    out = copy.copy(g)
    out.outputs = [(n, table[n]) for n in names]
    out.state_updates = []  # what a step updates is in its outputs
    if out.train is not None:
        out.train = dict(out.train, settings={k: v for k, v in out.train["settings"].items() if k != "loss"})
    return out


def generate(title: str, entries: list, float_dtype: str = "f32", profile: bool = False) -> ModuleGen:
    gen = ModuleGen(title, float_dtype, profile)
    for e in entries:
        s = schedule_entry(e, float_dtype)
        inputs = [arg for _, (kind, arg) in sorted(s.storage.items()) if kind == "input"]
        gen.add(e.name, s, inputs)
    return gen


class Compiled:
    """A loaded module and its storage: persistent arrays shared by its functions, arenas per sizes."""

    def __init__(self, gen: ModuleGen, module, consts: dict):
        self.gen, self.module = gen, module
        self.programs: dict[str, Program] = gen.programs
        self.views: dict[str, np.ndarray] = {}
        offsets = []
        sizes = dict.fromkeys(STORE, 0)
        for key, p in gen.persist.items():
            shape = tuple(_int(d, consts) for d in p.shape)
            n = int(np.prod(shape)) if shape else 1
            offsets.append(sizes[p.dtype])
            sizes[p.dtype] += -(-n // 16) * 16
        self.P = {dt: np.zeros(max(sizes[dt], 1), dtype=_NP[dt]) for dt in STORE}
        for (key, p), off in zip(gen.persist.items(), offsets):
            shape = tuple(_int(d, consts) for d in p.shape)
            n = int(np.prod(shape)) if shape else 1
            view = self.P[p.dtype][off:off + n].reshape(shape)
            if p.value is not None:
                view[...] = p.value
            self.views[key] = view
        self.Q = np.array(offsets or [0], dtype=np.int64)
        self._P = [self.P[d] for d in STORE]
        if gen.profile:
            for prog in self.programs.values():
                prog.prof = np.zeros(max(len(prog.rows), 1))
        self.arenas: dict = {}
        self._by_shapes: dict = {}
        self._called: set = set()  # functions called at least once (see _first_call)
        self._kernels: dict[str, np.ndarray] = {}  # per function: K, its kernels' addresses (_first_call)

    def sync(self, values: dict):
        """Make the persistent storage hold values (name -> array), then let values hold its views, so
        the caller's dictionary sees every in-place update."""
        for key, v in values.items():
            view = self.views.get(key)
            if view is None or v is view:
                continue
            v = np.asarray(v)
            if v.shape != view.shape:
                raise RunError(f"`{key}` should have shape {view.shape}, got {v.shape}")
            view[...] = v
            values[key] = view

    def _layout(self, prog: Program, bindings: dict):
        key = (prog.name, tuple(sorted(bindings.items())))
        got = self.arenas.get(key)
        if got is None:
            D = np.array([_int(d, bindings) for d in prog.dims] or [0], dtype=np.int64)
            shared = sum(w for w in (_int(d, bindings) for d in prog.shared_work) if w >= GRAIN)
            team = team_for(shared) if not self.gen.profile else None
            bufs = prog.buffers
            per_thread = {id(bufs[i]) for i in prog.workspaces}
            copies = team.size if team is not None else 1
            plan = plan_memory(bufs, lambda b: _int(b.size, bindings) * (copies if id(b) in per_thread else 1),
                               lambda b: self.gen.store(b.dtype))
            A = {dt: np.zeros(max(plan.sizes.get(dt, 0), 1), dtype=_NP[dt]) for dt in STORE}
            O = np.array(plan.offsets or [0], dtype=np.int64)
            tables = {"D": D, "O": O, "Q": self.Q}
            T = np.array([tables[kind][i] for kind, i in prog.table] or [0], dtype=np.int64)
            got = self.arenas[key] = (D, O, A, plan, T, team)
        return got

    def call(self, name: str, feeds: dict, seed: int = 0, step: int = 0, outputs=None):
        """Run one function. Returns (finished, outputs): the named outputs (default all) as views of storage
        that the next call overwrites. finished is False when the loss was not finite (nothing was updated).
        Everything that depends only on the inputs' shapes is worked out once per set of shapes."""
        prog = self.programs[name]
        args, (O, A), specs, team = self._arguments(prog, feeds, seed, step)
        fn = getattr(self.module, name)
        try:
            if name not in self._called:
                ok = self._first_call(prog, fn, feeds, seed, step, team is not None)
            elif team is not None:
                if team.pid != os.getpid():  # a forked process: its parent's threads are not here
                    team = _team(team.size)
                ok = team.run(fn, args)
            else:
                ok = fn(*args, 0, 1, _ALONE)
        except IndexError as e:
            raise RunError(f"{name} failed: {e}") from None
        outs = {}
        for out_name in (outputs if outputs is not None else specs):
            kind, arg, dtype, shape, n = specs[out_name]
            if kind == "scratch":
                off = O[arg]
                outs[out_name] = A[dtype][off:off + n].reshape(shape)
            elif kind == "persist":
                outs[out_name] = self.views[arg].reshape(shape)
            elif kind == "input":
                outs[out_name] = np.asarray(feeds[arg]).reshape(shape)
            else:
                outs[out_name] = np.asarray(arg)
        return bool(ok), outs

    def _first_call(self, prog: Program, fn, feeds: dict, seed: int, step: int, teamed: bool):
        """A function's first call in this process: compile what numba's cache lacks (in parallel
        processes), the function itself, and its kernels, whose addresses become its K, and run it in this
        thread. Checked once per function, not on every step: a dispatcher's list of signatures is built
        at each access. A function that later runs in a team runs BLAS single-threaded here too: BLAS's
        threads woken by this call slowed LeNet-5's next two steps from 1.5 ms to 40-80 ms each."""
        args = (*self._arguments(prog, feeds, seed, step)[0], 0, 1, _ALONE)
        if not fn.signatures:  # not compiled in this process
            compile_parallel(self.module, [(prog, args)], self.gen.float_dtype)
        with linked_as_optimized([prog.name]):
            fn.compile(tuple(_typeof(a) for a in args))
        with _rare_gc():
            self._kernels[prog.name] = kernel_addresses(self.module, prog, args)
        self._called.add(prog.name)
        link_gemm(_NP[self.gen.float_dtype])  # what its matmuls and convolutions call
        args = (*self._arguments(prog, feeds, seed, step)[0], 0, 1, _ALONE)
        with one_blas_thread() if teamed else nullcontext():
            return fn(*args)

    def _arguments(self, prog: Program, feeds: dict, seed: int, step: int):
        """The step function's arguments for these feeds but the thread's (tid, nt, S), (O, A), the output
        specs and the team of threads that runs it (None: this thread alone)."""
        xs = []
        shapes = []
        for inp, dt in zip(prog.inputs, prog.input_dtypes):
            if inp not in feeds:
                raise RunError(f"no value for input `{inp}`")
            x = np.ascontiguousarray(feeds[inp], dtype=_NP[dt])
            if not x.flags.writeable:  # numba types a read-only array apart: the step would compile again
                x = x.copy()
            shapes.append(x.shape)
            xs.append(x.reshape(-1))  # every value is a flat array and an offset
        key = (prog.name, tuple(shapes))
        layout = self._by_shapes.get(key)
        if layout is None:
            bindings = bind_signature(prog.signature, feeds)
            layout = self._by_shapes[key] = (self._layout(prog, bindings), self._out_specs(prog, bindings))
        (D, O, A, _, T, team), specs = layout
        K = self._kernels.get(prog.name, _UNBOUND)
        args = (*xs, *self._P, A["f32"], A["f64"], A["i32"], A["i64"], A["bool"], D, O, self.Q, T, K,
                np.uint64(seed & _MASK), np.uint64(step & _MASK), *self._prof(prog))
        return args, (O, A), specs, team

    def compile(self, feeds: dict) -> None:
        """Compile several functions (name -> feeds of a call) at once, in parallel processes (see
        compile_parallel), without running them."""
        compile_parallel(self.module, [(self.programs[name], (*self._arguments(self.programs[name], f, 0, 0)[0],
                                                              0, 1, _ALONE))
                                       for name, f in feeds.items()], self.gen.float_dtype)

    def _prof(self, prog: Program) -> tuple:
        if not self.gen.profile:
            return ()
        return (prog.prof,)

    def profile(self, name: str) -> list:
        """With profile=True: (seconds, what) per call site of one function, summed over the calls so far,
        largest first."""
        prog = self.programs[name]
        return sorted(zip(prog.prof.tolist(), prog.labels), reverse=True)

    def _out_specs(self, prog: Program, bindings: dict) -> dict:
        specs = {}
        for out_name, o in prog.outputs.items():
            shape = tuple(_int(d, bindings) for d in o.shape)
            specs[out_name] = (o.kind, o.arg, o.dtype, shape, int(np.prod(shape)) if shape else 1)
        return specs

    def plan(self, name: str, feeds: dict):
        """The memory plan of one function for these inputs (arena sizes against the sum of buffers)."""
        prog = self.programs[name]
        return self._layout(prog, bind_signature(prog.signature, feeds))[3]


# ---- threads
_ALONE = np.zeros(4, dtype=np.int64)  # the S of a call in one thread: no barrier waits, nothing splits
TEAM_WORK = 1 << 20  # the least work (runtime/kernels.py's units) that splits across a team


def _count(var: str, what: str) -> int:
    """A count from the environment variable var, else the CPUs this process may run on."""
    text = os.environ.get(var, "").strip()
    if not text:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise RunError(f"{var} should be a whole number of {what}, 1 or more, not `{text}`")
    return n


def threads() -> int:
    """Threads a step function runs in: DLC_NUM_THREADS, else one per CPU this process may run on."""
    return _count("DLC_NUM_THREADS", "threads")


@lru_cache(maxsize=1)
def _blas_threads():
    """(get, set) of the number of threads of the BLAS that generated code calls (scipy's OpenBLAS, see
    runtime/kernels.py's gemm), or None when that BLAS is not one whose threads can be set."""
    found = _find_openblas()
    if found is None:
        return None
    dll, prefix = found
    get = getattr(dll, prefix + "openblas_get_num_threads", None)
    put = getattr(dll, prefix + "openblas_set_num_threads", None)
    if get is None or put is None:
        return None
    put.argtypes = [ctypes.c_int]
    return get, put


@contextmanager
def one_blas_thread():
    """BLAS single-threaded for a while (where _blas_threads can set it). Its threads, once woken, spin
    for about a tenth of a second waiting for more work, on the CPUs a team's threads need."""
    found = _blas_threads()
    if found is None:
        yield
        return
    get, put = found
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


class Team:
    """Threads that run a step function with the calling thread. Every thread runs the whole function:
    it takes its share of each item that splits (runtime/kernels.py share), thread 0 alone runs the
    others, and the threads meet at a barrier where one may read what another wrote, the last at the
    end, so the caller's call returns when all are done. BLAS runs single-threaded meanwhile, as each
    thread calls it for its own block: OpenBLAS's threads would spin against ours."""

    def __init__(self, size: int):
        self.size, self.pid = size, os.getpid()
        # S: threads at the barrier, the barrier's generation (only ever grows: a thread may still be
        # leaving the last barrier when the next call starts), a thread failed, the grain
        self.S = np.zeros(4, dtype=np.int64)
        self._go = [threading.Semaphore(0) for _ in range(size - 1)]
        self._idle = threading.Condition()
        self._posted = self._finished = 0
        self._job = None
        self._errors: list = []
        self._cpu = -1  # the CPU the calling thread ran on when it posted the job
        self._cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
        for t in range(1, size):
            threading.Thread(target=self._serve, args=(t,), daemon=True, name=f"dlc-thread-{t}").start()

    def _serve(self, tid: int):
        avoided = -1
        while True:
            self._go[tid - 1].acquire()
            if self._cpu != avoided:
                avoided = self._cpu
                _avoid_cpu(avoided, self._cpus)
            fn, args = self._job
            try:
                fn(*args, tid, self.size, self.S)
            except BaseException as e:  # noqa: BLE001 (raised again in the calling thread)
                self._errors.append(e)
                self.S[2] = 1  # the others leave their barriers
            with self._idle:
                self._finished += 1
                self._idle.notify_all()

    def run(self, fn, args: tuple):
        with _RUNNING, one_blas_thread():
            # threads that left a barrier because another failed had counted themselves in
            self.S[0], self.S[2], self.S[3] = 0, 0, GRAIN
            self._job = (fn, args)
            self._cpu = _this_cpu()
            self._posted += self.size - 1
            for go in self._go:
                go.release()
            try:
                ok = fn(*args, 0, self.size, self.S)
            except BaseException:
                self.S[2] = 1
                self._join()
                self._errors.clear()
                raise
            if self.S[2]:  # another thread failed
                self._join()
                error = self._errors[0]
                self._errors.clear()
                raise error
            return ok

    def _join(self):
        """Wait until every thread has left the function (after a failure: the next call may not start
        while one still waits at a barrier of this one)."""
        with self._idle:
            self._idle.wait_for(lambda: self._finished == self._posted)


@lru_cache(maxsize=1)
def _getcpu():
    libc = ctypes.CDLL(None) if hasattr(os, "sched_setaffinity") else None
    return getattr(libc, "sched_getcpu", None)


def _this_cpu() -> int:
    """The CPU the calling thread runs on, or -1 where that cannot be known."""
    get = _getcpu()
    return get() if get is not None else -1


def _avoid_cpu(cpu: int, cpus: frozenset):
    """Keep the calling thread (a team's worker) off the CPU the team's caller runs on, on the others
    of cpus (the process's). Linux wakes a thread on its waker's CPU when it can, and the caller's and
    the worker's hand-offs of the GIL woke each on the other's CPU: the two then spun against each
    other on one core, an MLP's step taking 2.4 ms instead of 1.3, for tens of steps after every
    pause. Only the worker is bound: the caller's thread is the user's."""
    others = cpus - {cpu}
    if cpu < 0 or not others or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, others)  # 0: the calling thread
    except (OSError, ValueError):  # only speed is at stake: the worker must not die (the team would hang)
        pass


_TEAMS: dict = {}
# One team runs at a time in a process: BLAS's thread count, which a run sets and restores, is global.
_RUNNING = threading.Lock()


def _team(n: int) -> Team:
    """This process's team of n threads (a forked process has none of its parent's threads)."""
    team = _TEAMS.get(n)
    if team is None or team.pid != os.getpid():
        team = _TEAMS[n] = Team(n)
    return team


def team_for(work: int):
    """The team for a call whose splitting items add up to work, or None to run it in this thread."""
    n = threads()
    if n < 2 or work < TEAM_WORK or _blas_threads() is None:
        return None
    return _team(n)


def compile_jobs() -> int:
    """Processes that compile step functions and their callees: DLC_COMPILE_JOBS, else one per CPU this process
    may run on, at most 4 (each is a Python process with numba loaded, about 0.1 GB)."""
    jobs = _count("DLC_COMPILE_JOBS", "processes")
    return jobs if os.environ.get("DLC_COMPILE_JOBS", "").strip() else min(jobs, 4)


def call_signatures(module, prog: Program, args: tuple) -> list:
    """Per call of prog's function (K's order): the kernel's name and the argument types it is called
    with, from the function's arguments args."""
    import inspect
    by_name = dict(zip(inspect.signature(getattr(module, prog.name).py_func).parameters, args))
    return [(callee, tuple(_typeof(by_name[e]) if dt is None else _nb_type(dt) for e, dt in call_args))
            for callee, call_args in prog.calls]


def kernel_addresses(module, prog: Program, args: tuple) -> np.ndarray:
    """K for prog's function (see kernels.run): the address of each call's kernel compiled for its argument
    types, from the function's kernel image (below) or else from numba, compiling each kernel or loading
    it from numba's cache where this process has not (and then writing the image). Where this process
    typed calls of a kernel (kernels.TYPED_RUNS), the types looked up must be among them: a kernel called
    with other types than it was compiled for would read its arguments wrongly."""
    from numba.core import types
    sigs = call_signatures(module, prog, args)
    for name, sig in sigs:
        typed = _kernels.TYPED_RUNS.get(name)
        if typed and sig not in typed:
            raise RuntimeError(f"internal error: {prog.name} calls {name} with {typed}, not {sig}")
    image = _image_path(module, prog, sigs)
    if image is not None:
        K = _load_image(image, len(sigs))
        if K is None and _write_image(image, module, sigs):  # compiled by compile_parallel's processes
            K = _load_image(image, len(sigs))
        if K is not None:
            return K
    K = np.zeros(max(len(sigs), 1), dtype=np.int64)
    found = {}
    for i, (name, sig) in enumerate(sigs):
        if (name, sig) not in found:
            fn = getattr(module, name)
            fn.compile(sig)
            cres = fn.overloads[sig]
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            if cres.signature.return_type != types.none or not address:
                raise RuntimeError(f"internal error: {name} {sig} returns {cres.signature.return_type}, "
                                   f"at address {address}")
            found[name, sig] = address
        K[i] = found[name, sig]
    if image is not None:
        _write_image(image, module, sigs)
    return K


# A kernel image holds the machine code of every kernel one step function calls, for the argument types it
# passes: loading it is adding a few object files to numba's JIT and looking up one address each (LeNet-5:
# 5 ms), where loading each kernel through its dispatcher from numba's cache took 70-80 ms of a 0.45 s warm
# start (per kernel: unpickling, parsing its bitcode for later linking, which calls by address never do,
# and numba's bookkeeping of a callable function). The object code is numba's own, read from its cache
# once, the first time a process finds no image. Only kernels whose code never reads their numba
# environment go in (only their Python wrappers do, which no call by address runs, and which an image
# leaves unset).
_IMAGE_FORMAT = b"dlc kernel image 1"
_IMAGED: dict[str, int] = {}  # a kernel's symbol -> its address, for those this process loaded from images


def _image_path(module, prog: Program, sigs: list) -> Path | None:
    path = getattr(module, "__dlc_path__", None)
    if path is None:
        return None
    import llvmlite
    from numba.core.registry import cpu_target
    # the machine the code was made for, as numba keys its own cache (the module's key has dlc's, numba's
    # and numpy's versions)
    machine = repr(cpu_target.target_context.codegen().magic_tuple())
    key = cache_name(_IMAGE_FORMAT, prog.name.encode(), repr(sigs).encode(), machine.encode(),
                     llvmlite.__version__.encode(), sys.version.encode())
    return path.with_name(f"{path.stem}.{prog.name}.{key[:20]}.kimg")


def _load_image(path: Path, calls: int) -> np.ndarray | None:
    """K from the image at path; None where there is none or it is damaged (numba's own way then)."""
    import pickle
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data[32:]).digest() != data[:32]:
        return None
    try:
        symbols, objects = pickle.loads(data[32:])
        if len(symbols) != calls or not all(s in objects or s in _IMAGED for s in symbols):
            return None
        import llvmlite.binding as ll
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target
        from numba.core.runtime import nrt
        ctx = cpu_target.target_context
        with global_compiler_lock:
            nrt.rtsys.initialize(ctx)  # the kernels' code calls numba's runtime
            engine = ctx.codegen()._engine._ee
            new = [s for s in objects if s not in _IMAGED]
            for s in new:
                engine.add_object_file(ll.ObjectFileRef.from_data(objects[s]))
            if new:
                engine.finalize_object()
            for s in new:
                address = engine.get_function_address(s)
                if not address:
                    return None
                _IMAGED[s] = address
    except Exception:  # written by another version of this code, or unreadable: only a cache
        return None
    return np.array([_IMAGED[s] for s in symbols] or [0], dtype=np.int64)


def _write_image(path: Path, module, sigs: list) -> bool:
    """Write the image of these calls' kernels from numba's cache, where each is there, as numba would load
    it, returns nothing and leaves its environment alone (only its Python wrapper reads it). Whether it
    was written."""
    import pickle
    try:
        import llvmlite.binding as ll
        from numba.core import types
        from numba.core.registry import cpu_target
        codegen = cpu_target.target_context.codegen()
        found, objects = {}, {}
        for name, sig in dict.fromkeys(sigs):
            cache = getattr(module, name)._cache
            data = cache._cache_file.load(cache._index_key(sig, codegen))
            if data is None:
                return False
            (_, kind, (code, bitcode)), fndesc, _, signature, _, _, _, reload_init = data[:8]
            if kind != "object" or tuple(signature.args) != sig or signature.return_type != types.none \
                    or reload_init:
                return False
            if any("NumbaEnv" in str(f) for f in ll.parse_bitcode(bitcode).functions
                   if not f.is_declaration and not f.name.startswith("_ZN7cpython")):
                return False
            found[name, sig] = fndesc.llvm_func_name
            objects[fndesc.llvm_func_name] = code
        body = pickle.dumps(([found[c] for c in sigs], objects), protocol=pickle.HIGHEST_PROTOCOL)
        write_atomic(path, hashlib.sha256(body).digest() + body)
        return True
    except Exception:  # a numba whose cache is laid out otherwise, a full disk: no image, numba's way
        return False


_UNBOUND = np.zeros(1, dtype=np.int64)  # K before a function's first call (its type is all that counts)


def _typeof(value):
    from numba import typeof
    return typeof(value)


def _nb_type(dtype: str):
    from numba.core import types
    return {"f32": types.float32, "f64": types.float64, "i32": types.int32, "i64": types.int64,
            "bool": types.boolean, "u64": types.uint64}[dtype]


def compile_parallel(module, steps: list, float_dtype: str = "f32") -> None:
    """Compile step functions (a list of (Program, arguments)) not yet in numba's cache, in this process
    and in compile_jobs() - 1 others at once, with their kernels and the machine code that their gemm
    calls for float_dtype (kernels.link_gemm). Calling a step function afterwards finds it and its kernels
    compiled here or in numba's cache, which the other processes fill.

    Compiling is most of a cold start (LeNet-5: 11 s in one process). Each process takes the next unit
    nobody has claimed (a file created exclusively), the longest first. A step function calls its
    kernels by address (kernels.run), so it does not wait for them. It only saves time: whatever is
    missing afterwards numba compiles as before, so a process that fails or a signature worked out
    differently changes nothing but the time."""
    jobs = compile_jobs()
    steps = [(prog, args) for prog, args in steps if not _cached(getattr(module, prog.name))]
    if jobs < 2 or not steps:
        return
    import inspect
    import pickle
    import shutil
    import subprocess
    import tempfile

    units: dict[str, list] = {}
    for prog, args in steps:
        for name, sig in call_signatures(module, prog, args):
            sigs = units.setdefault(name, [])
            if sig not in sigs and sig not in getattr(module, name).signatures:
                sigs.append(sig)
    # Longest first, so that no process is left compiling a long one while the others wait: the step
    # functions (LeNet-5's train_step 1.2-1.7 s, the encoder's 3.2-3.7) and gemm's machine code (1 s),
    # then the hand-written kernels (convolutions, pools: 0.7-2 s each), then generated kernels by the
    # length of their text (0.05-0.5 s).
    def cost(unit):
        py = getattr(module, unit[0]).py_func
        generated = py.__module__ == module.__name__
        return (not generated, len(inspect.getsource(py)) if generated else 0)
    callees = sorted((u for u in units.items() if u[1]), key=cost, reverse=True)
    own = [(prog.name, [tuple(_typeof(a) for a in args)]) for prog, args in steps] + [(_GEMM_UNIT, [float_dtype])]
    order = own + callees
    claims = Path(tempfile.mkdtemp(prefix="dlc-compile-"))
    procs = []
    try:
        job = claims / "job.pickle"
        job.write_bytes(pickle.dumps((module.__name__, str(module.__dlc_path__), order, [p.name for p, _ in steps])))
        root = str(Path(__file__).resolve().parent.parent)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from runtime.compiled import compile_worker; compile_worker(sys.argv[2])")
        for _ in range(min(jobs, len(order)) - 1):
            try:
                procs.append(subprocess.Popen([sys.executable, "-P", "-c", code, root, str(job)],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            except OSError:  # no Python to start (an embedding application): this process does it all
                break
        try:
            alive = lambda: all(p.poll() is None for p in procs)  # noqa: E731
            _compile_claimed(module, order, [p.name for p, _ in steps], claims)
            # The others' work is in the cache once every unit is done; a process then only exits, which
            # takes numba a few tenths of a second, so it is stopped instead of waited for.
            _wait_done(claims, [str(i) for i in range(len(order))], alive)
        except Exception:  # calling the step function reports it, as it would without this
            pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(claims, ignore_errors=True)


_GEMM_UNIT = "<gemm>"  # compile_parallel's unit for kernels.link_gemm (not a name in the module)


def _compile_claimed(module, units: list, step_names: list, claims: Path) -> None:
    """Claim and compile units (name, signatures) in order (step functions linked_as_optimized), each
    without garbage collection: collections walked the process's objects again and again while numba
    compiled, 0.4 s of LeNet-5's cold start, and a unit's garbage is collected when it is done."""
    def claim(name):
        try:
            os.close(os.open(claims / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except (FileExistsError, FileNotFoundError):  # taken, or the parent is done and removed the folder
            return False
    for i, (name, sigs) in enumerate(units):
        if claim(str(i)):
            with _no_gc(), linked_as_optimized([name]) if name in step_names else nullcontext():
                for sig in sigs:
                    if name == _GEMM_UNIT:
                        link_gemm(_NP[sig])
                    else:
                        getattr(module, name).compile(sig)
            (claims / f"{i}.done").touch()


_LINKING = threading.local()  # .names: the step functions this thread is compiling (numba's library names)


@contextmanager
def linked_as_optimized(names: list):
    """While numba compiles these step functions, link their callees' code into them as it is.

    numba optimizes every function's final module, its callees' code linked in, with the whole O3 pipeline
    again, so that callees can be inlined. A step function's own code is optimized function by function
    before that, as every function's is, and its kernels are called by address (kernels.run): optimizing
    the whole again took the encoder's train_step 0.8 s longer to compile (6.6-7.3 s against 5.5-6.6 s;
    when its kernels were linked in too, half of its compile) and made no step faster (LeNet-5, MLP, LSTM
    and encoder measured). Where numba's library is not the one this was written against, it compiles
    as numba does."""
    try:
        from numba.core.codegen import CPUCodeLibrary
    except ImportError:
        yield
        return
    original = getattr(CPUCodeLibrary, "_optimize_final_module", None)
    if original is not None and not hasattr(original, "dlc_original"):
        def _optimize_final_module(self):
            # numba compiles in the thread that calls, under its lock: another thread's functions of the
            # same name are not these
            if self.name not in getattr(_LINKING, "names", ()):
                original(self)
        _optimize_final_module.dlc_original = original
        CPUCodeLibrary._optimize_final_module = _optimize_final_module
    before = getattr(_LINKING, "names", frozenset())
    _LINKING.names = before | set(names)
    try:
        yield
    finally:
        _LINKING.names = before


def _wait_done(claims: Path, names: list, others_alive) -> None:
    """Wait until every unit named is done, while the processes that may hold them are alive."""
    import time
    while not all((claims / f"{n}.done").exists() for n in names) and others_alive():
        time.sleep(0.005)


def compile_worker(job: str) -> None:
    """One of compile_parallel's other processes: import the generated module under its name and path (so
    that numba's cache entries are the ones the parent looks for) and compile what it claims."""
    import pickle
    name, path, units, step_names = pickle.loads(Path(job).read_bytes())
    _compile_claimed(_import(name, Path(path)), units, step_names, Path(job).parent)


def _cached(fn) -> bool:
    """Whether numba's cache holds machine code of fn (an index file exists: every call of a step function
    has the same types, all arrays flat). True when that cannot be told, which keeps the plain path."""
    try:
        cache = fn._cache
        return (Path(cache.cache_path) / f"{cache._impl.filename_base}.nbi").exists()
    except AttributeError:
        return True


def _int(d, bindings) -> int:
    v = Dim.of(d).subs(bindings)
    if not v.is_int:
        raise RunError(f"size {d} is {v} with these inputs, not an integer")
    return int(v.value)


@lru_cache(maxsize=1)
def _code_stamp() -> bytes:
    """What generated code depends on besides its graphs: all of dlc's own code (the passes, the scheduler,
    code generation and what they import), so that a change to any of it makes new entries."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted(q for d in ("compiler", "dsl", "runtime") for q in (root / d).glob("*.py")):
        h.update(f"{p.parent.name}/{p.name}".encode())
        h.update(p.read_bytes())
    return h.digest()


@contextmanager
def _no_gc():
    """No garbage collection meanwhile: loading many small objects (unpickling a ModuleGen) set off
    collections that walked every object the front end had made, 0.03 of 0.04 s."""
    import gc
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def _rare_gc():
    """Garbage collection 100 times rarer meanwhile: loading a step function's kernels from numba's cache
    (unpickling, rebuilding) set off collections that walked every object the process had, 0.1 s of
    LeNet-5's warm start; compiling them where they are not cached, memory stays bounded."""
    import gc
    before = gc.get_threshold()
    gc.set_threshold(before[0] * 100, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def generate_cached(title: str, entries: list, float_dtype: str = "f32", profile: bool = False):
    """generate() and its source, kept under the cache folder so that a new process skips the passes, the
    scheduler and code generation (the benchmark's encoder 0.15 s, ResNet-50 0.76 s, against 0.04 and
    0.38 s to key the entries and load the result). The key is the entries themselves, written out whole
    (canonical_bytes): every graph with its attributes, shapes, constants and spans, so that equal keys
    are equal inputs; with the title, the options and dlc's code. The file starts with the sha256 of the
    rest: a damaged one is generated and written again. Entries that cannot be pickled are generated
    every time."""
    import pickle
    try:
        stamp = canonical_bytes([(e.name, e.graph, e.outputs, e.updates, e.loss) for e in entries])
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        gen = generate(title, entries, float_dtype, profile)
        return gen, gen.source()
    key = cache_name(_code_stamp(), title.encode(), float_dtype.encode(), str(profile).encode(),
                     np.__version__.encode(), sys.version.encode(), stamp)
    path = cache_dir() / "cpu" / f"g_{key}.pickle"
    try:
        data = path.read_bytes()
        if hashlib.sha256(data[32:]).digest() == data[:32]:  # else damaged: a flipped bit would unpickle
            with _no_gc():
                gen, source = pickle.loads(data[32:])
            if isinstance(gen, ModuleGen) and isinstance(source, str):
                return gen, source
    except Exception:  # missing, or written by another version: generate again
        pass
    gen = generate(title, entries, float_dtype, profile)
    source = gen.source()
    try:
        data = pickle.dumps((gen, source), protocol=pickle.HIGHEST_PROTOCOL)
        write_atomic(path, hashlib.sha256(data).digest() + data)
    except (OSError, pickle.PicklingError, TypeError, AttributeError, RecursionError):
        pass  # only a cache: the next process generates again
    return gen, source


def compile_graphs(title: str, entries: list, float_dtype: str = "f32", profile: bool = False) -> Compiled:
    gen, source = generate_cached(title, entries, float_dtype, profile)
    module = load_module(source)
    consts = {}
    for e in entries:
        consts.update({k: v for k, (v, _) in e.graph.dims.items() if v.is_const})
    c = Compiled(gen, module, consts)
    c.source = source
    return c


def run(g: Graph, feeds: dict, params: dict | None = None, *, seed: int = 0, step: int = 0, float_dtype=None,
        outputs=None, updates: dict | None = None) -> dict:
    """interpreter.run on the compiled target: compile (cached), run once, return copies of the outputs."""
    names = outputs or [name for name, _ in g.outputs]
    fd = "f64" if float_dtype is not None and np.dtype(float_dtype) == np.float64 else "f32"
    c = compile_graphs(g.name, [Entry("step", g, names, updates or {})], fd)
    values = {k: np.array(v) for k, v in (params or {}).items()}
    c.sync(values)
    _, outs = c.call("step", feeds, seed, step)
    return {k: np.array(v) for k, v in outs.items()}
