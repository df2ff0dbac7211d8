"""Datasets by name: what a `.dln` train section's `data = "..."` names, as NumPy arrays.

    from runtime.data import load
    ds = load("sklearn:digits", seed=0)     # ds.x_train float32[1438, 64], ds.y_train int64[1438], ...

Specs (options follow `?` like a URL query: `copy?length=20&symbols=8`):

| spec | x | y | classes |
| --- | --- | --- | --- |
| `sklearn:digits` | f32[N, 64], pixels / 16, in [0, 1] | i64[N] | 10 |
| `sklearn:iris`, `sklearn:breast_cancer`, `sklearn:wine` | f32[N, F], standardised with the train split's mean and std | i64[N] | 3, 2, 3 |
| `xor` | f32[4, 2], the four points | f32[4, 1] | None |
| `spirals?n=400&noise=0.05` | f32[N, 2], two interleaved spirals of radius 1 and 1.5 turns, Gaussian noise of std `noise` | i64[N] | 2 |
| `sine?n=500&noise=0.1` | f32[N, 1] uniform in [-pi, pi] | f32[N, 1] sin(x) + noise | None |
| `sine_seq?n=256&length=50&noise=0.05` | f32[N, T, 1] windows of sin(phase + 0.2 t) + noise, random phase | f32[N, T, 1] the next values | None |
| `copy?n=1000&length=10&symbols=8` | i64[N, 2L+1]: L symbols in 1..K, the delimiter K+1, L blanks (0) | i64[N, 2L+1]: L+1 blanks, then the L symbols | K+2 |
| `adding?n=1000&length=50` | f32[N, T, 2]: values uniform in [0, 1), a 0/1 marker on one position in each half | f32[N, 1] the sum of the two marked values | None |
| `text:PATH?length=50` | i64[N, T] windows of character ids, stride T | i64[N, T] the same windows one character on | len(vocab) |
| `PATH.npz` | arrays `x`/`y`, `X`/`Y` or `inputs`/`targets`; otherwise the first two arrays in the file; a file of one array is features only | | |
| `PATH.npy` | the array | None | None |
| `PATH.csv` | comma separated, an optional header row of non-numbers, the last column is the label | i64[N] class ids when every label is written as an integer, else f32[N] | |

`classes` is set exactly when y holds integer class ids (for files: the largest id + 1); float features are
float32, integer features int64 (token ids), integer labels int64 and must be >= 0.

Splits (the same seed always gives the same split):
- built-in scikit-learn sets and files: `np.random.default_rng(seed)` shuffles, and round(N / 5) examples
  (at least 1 once N >= 2; none when N == 1) are held out as the test set. With integer labels of one id per
  example the hold-out is stratified: each class gives its share (largest remainder), so class proportions
  match. Files without labels (`.npy`) split the same way.
- generated sets: `n` is the total; the train (n - round(n / 5)) and test (round(n / 5)) examples are separate
  draws from the generator, from two streams spawned off `default_rng(seed)`. `xor` has no split: train and
  test are the same four points.
- `text:PATH`: the last round(N / 5) windows (at least 1 once N >= 2) are the test set, in file order; not
  shuffled, since neighbouring windows continue each other and a shuffled hold-out would leak.

Every loader checks the arrays: no NaN or infinity (the error names the array and the first bad index), at
least one example, as many targets as examples. Errors are DataError, never a traceback."""
from __future__ import annotations

import csv
import difflib
import functools
import math
import os
from dataclasses import dataclass

import numpy as np

TEST_FRACTION = 0.2

SKLEARN_SETS = ("digits", "iris", "breast_cancer", "wine")
# name -> {option: (kind, default)}; kinds: "count" (int >= 1), "n" (int >= 2), "noise" (float >= 0)
GENERATED = {
    "xor": {},
    "spirals": {"n": ("n", 400), "noise": ("noise", 0.05)},
    "sine": {"n": ("n", 500), "noise": ("noise", 0.1)},
    "sine_seq": {"n": ("n", 256), "length": ("count", 50), "noise": ("noise", 0.05)},
    "copy": {"n": ("n", 1000), "length": ("count", 10), "symbols": ("count", 8)},
    "adding": {"n": ("n", 1000), "length": ("length2", 50)},
}
TEXT_OPTIONS = {"length": ("count", 50)}
BUILTIN_NAMES = tuple(f"sklearn:{n}" for n in SKLEARN_SETS) + tuple(GENERATED)
FILE_FORMS = ("text:PATH", "PATH.npz", "PATH.npy", "PATH.csv")


class DataError(Exception):
    """Bad data: message, and where (a path, 'path:LINE' for CSV rows, or an array name)."""

    def __init__(self, message: str, where: str | None = None, help: str | None = None):
        self.message, self.where, self.help = message, where, help
        text = f"{where}: {message}" if where else message
        super().__init__(text + (f"\nhelp: {help}" if help else ""))


@dataclass(repr=False)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    description: str  # one line: what it is, sizes, split
    classes: int | None  # number of classes for classification sets, else None
    vocab: list[str] | None = None  # for text:PATH, the characters in index order

    def __repr__(self):
        # The arrays themselves would flood a REPL; their types say what matters.
        parts = [f"{k}={_type(getattr(self, k))}" for k in ("x_train", "y_train", "x_test", "y_test")]
        return f"Dataset({self.name!r}, {', '.join(parts)}, classes={self.classes})"


def _type(a) -> str:
    return "None" if a is None else f"{a.dtype}{list(a.shape)}"


# ---------------------------------------------------------------------------------------------- load


def load(spec: str, seed: int = 0) -> Dataset:
    """The dataset a spec names (see the module docstring), split by `seed`."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("empty data spec", help=_known_help())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"the seed must be a non-negative integer, got {seed!r}")
    spec = spec.strip()
    seed = int(seed)
    if spec.startswith("text:"):
        path, opts = _split_options(spec[len("text:"):])
        if not path:
            raise DataError("`text:` needs the path of a text file: `text:PATH`")
        return _load_text(path, _options(f"text:{path}", opts, TEXT_OPTIONS), seed)
    if spec.startswith("sklearn:"):
        name, opts = _split_options(spec[len("sklearn:"):])
        if name not in SKLEARN_SETS:
            raise DataError(f"unknown scikit-learn dataset `{name}`",
                            help=_did_you_mean(name, [f"sklearn:{n}" for n in SKLEARN_SETS], "scikit-learn sets: "
                                               + ", ".join(f"sklearn:{n}" for n in SKLEARN_SETS)))
        _options(spec, opts, {})
        return _load_sklearn(name, seed)
    name, opts = _split_options(spec)
    if name in GENERATED:
        return _generate(name, _options(name, opts, GENERATED[name]), seed)
    ext = os.path.splitext(name)[1].lower()
    if ext in (".npz", ".npy", ".csv"):
        _options(name, opts, {})
        if not os.path.isfile(name):
            raise DataError("no such file", where=name,
                            help=None if os.path.isabs(name) else f"relative paths start at {os.getcwd()}")
        return {".npz": _load_npz, ".npy": _load_npy, ".csv": _load_csv}[ext](name, seed)
    if os.path.exists(spec):
        raise DataError("unsupported file type", where=spec,
                        help="data files are .npz, .npy or .csv; for a text corpus write `text:" + spec + "`")
    raise DataError(f"unknown dataset `{spec}`", help=_did_you_mean(name, BUILTIN_NAMES, _known_help()))


def _known_help() -> str:
    return "built-in: " + ", ".join(BUILTIN_NAMES) + "; files: " + ", ".join(FILE_FORMS)


def _did_you_mean(name: str, choices, rest: str) -> str:
    # Match the part after `sklearn:` too, so that `digit` finds `sklearn:digits`.
    full = {c.split(":")[-1]: c for c in choices}
    full.update({c: c for c in choices})
    close = difflib.get_close_matches(name.split(":")[-1], list(full), n=1, cutoff=0.6)
    return (f"did you mean `{full[close[0]]}`? " if close else "") + rest


def _split_options(spec: str) -> tuple[str, str | None]:
    # A file whose own name holds `?` is still reachable.
    if "?" not in spec or os.path.exists(spec):
        return spec, None
    head, _, query = spec.rpartition("?")
    return head, query


def _options(name: str, query: str | None, table: dict) -> dict:
    out = {k: default for k, (_, default) in table.items()}
    if query is None:
        return out
    valid = ", ".join(f"{k} (default {d})" for k, (_, d) in table.items()) or "none"
    seen = set()
    for item in query.split("&"):
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if key not in table:
            what = f"`{name}` has no option `{key}`" if key else f"empty option in `{name}?{query}`"
            raise DataError(what, help=_did_you_mean(key, table, f"valid options: {valid}"))
        if not eq or not raw:
            raise DataError(f"option `{key}` of `{name}` needs a value: `{key}=VALUE`",
                            help=f"valid options: {valid}")
        if key in seen:
            raise DataError(f"option `{key}` of `{name}` is given twice")
        seen.add(key)
        out[key] = _option_value(name, key, raw, table[key][0], valid)
    return out


def _option_value(name, key, raw, kind, valid):
    need = {"count": ("an integer >= 1", 1), "n": ("an integer >= 2", 2), "length2": ("an integer >= 2", 2),
            "noise": ("a finite number >= 0", None)}[kind]
    try:
        v = float(raw) if kind == "noise" else int(raw)
        ok = math.isfinite(v) and v >= 0 if kind == "noise" else v >= need[1]
    except ValueError:
        ok = False
    if not ok:
        raise DataError(f"option `{key}` of `{name}` must be {need[0]}, got `{raw}`",
                        help=f"valid options: {valid}")
    return v


# ------------------------------------------------------------------------------------------ checks


def _finite(a: np.ndarray, name: str, where: str | None, line_of=None):
    if a.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        val = a[idx]
        at = idx[0] if len(idx) == 1 else idx
        if line_of is not None:
            where = line_of(idx[0])
        raise DataError(f"`{name}` has {'NaN' if np.isnan(val) else 'infinity'} at index {at}", where=where,
                        help="remove or impute the missing values before training")


def _validate(x: np.ndarray, y: np.ndarray | None, where: str, names=("x", "y"), line_of=None):
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"`{names[0]}` has no examples", where=where)
    _finite(x, names[0], where, line_of)
    if y is not None:
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise DataError(f"`{names[0]}` has {x.shape[0]} examples but `{names[1]}` has "
                            f"{y.shape[0] if y.ndim else 'none (a scalar)'}", where=where,
                            help="features and targets need one row per example, in the same order")
        _finite(y, names[1], where, line_of)
        if y.dtype.kind == "i" and y.size and y.min() < 0:
            idx = tuple(int(i) for i in np.argwhere(y < 0)[0])
            raise DataError(f"`{names[1]}` holds the negative class id {y[idx]} at index "
                            f"{idx[0] if len(idx) == 1 else idx}", where=line_of(idx[0]) if line_of else where,
                            help="class ids run from 0 to classes - 1; store float targets as floats")


def _n_test(n: int) -> int:
    # round(n / 5) half up, and a test set of at least one whenever there is an example to spare.
    return 0 if n < 2 else max(1, (n + 2) // 5)


def _split(x, y, seed: int):
    """Train and test indices: a seeded shuffle, the hold-out stratified for one class id per example."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    k = _n_test(n)
    if y is not None and y.dtype.kind == "i" and y.size == n:
        labels = y.reshape(n)
        ids, counts = np.unique(labels, return_counts=True)
        share = counts * k / n
        quota = np.floor(share).astype(int)
        # Largest remainder: the leftover test slots go to the classes that rounding shorted most.
        for i in np.argsort(-(share - quota), kind="stable")[: k - quota.sum()]:
            quota[i] += 1
        test, train = [], []
        for c, q in zip(ids, quota):
            idx = rng.permutation(np.flatnonzero(labels == c))
            test.append(idx[:q])
            train.append(idx[q:])
        test, train = np.concatenate(test), np.concatenate(train)
        # Grouped by class as built; training reads batches in order, so mix them.
        return train[rng.permutation(len(train))], test[rng.permutation(len(test))]
    perm = rng.permutation(n)
    return perm[k:], perm[:k]


def _from_split(name, x, y, seed, what, classes, prep=None) -> Dataset:
    tr, te = _split(x, y, seed)
    strat = y is not None and y.dtype.kind == "i" and y.size == x.shape[0]
    xtr, xte = (x[tr], x[te]) if prep is None else prep(x[tr], x[te])
    ds = Dataset(name, xtr, None if y is None else y[tr], xte, None if y is None else y[te], "", classes)
    ds.description = _describe(ds, what, f"shuffled{', stratified' if strat else ''}, seed {seed}")
    return ds


def _describe(ds: Dataset, what: str, rule: str) -> str:
    y = "no targets" if ds.y_train is None else f"y {ds.y_train.dtype}{_shape_str(ds.y_train.shape[1:])}"
    cls = f", {ds.classes} classes" if ds.classes is not None else ""
    return (f"{what}: x {ds.x_train.dtype}{_shape_str(ds.x_train.shape[1:])} per example, {y}{cls}; "
            f"{len(ds.x_train)} train / {len(ds.x_test)} test ({rule})")


# ----------------------------------------------------------------------------------------- sklearn


@functools.lru_cache(maxsize=None)
def _sklearn_raw(name: str):
    try:
        from sklearn import datasets
    except ImportError:
        raise DataError(f"`sklearn:{name}` needs scikit-learn", help="pip install 'dlc[sklearn]'") from None
    b = getattr(datasets, f"load_{name}")()
    return np.asarray(b.data, dtype=np.float64), np.asarray(b.target, dtype=np.int64)


_SKLEARN_WHAT = {
    "digits": "scikit-learn digits, 8x8 images of handwritten digits, pixels / 16",
    "iris": "scikit-learn iris, 4 flower measurements, standardised",
    "breast_cancer": "scikit-learn breast cancer (Wisconsin), 30 features, 0 = malignant, standardised",
    "wine": "scikit-learn wine, 13 chemical measurements, standardised",
}


def _load_sklearn(name: str, seed: int) -> Dataset:
    x, y = _sklearn_raw(name)

    def prep(xtr, xte):
        if name == "digits":
            return (xtr / 16.0).astype(np.float32), (xte / 16.0).astype(np.float32)
        # Train statistics only: the test set must not leak into the preprocessing.
        mean, std = xtr.mean(axis=0), xtr.std(axis=0)
        std[std == 0] = 1.0
        return ((xtr - mean) / std).astype(np.float32), ((xte - mean) / std).astype(np.float32)

    return _from_split(f"sklearn:{name}", x, y, seed, _SKLEARN_WHAT[name], int(y.max()) + 1, prep)


# --------------------------------------------------------------------------------------- generated


def _generate(name: str, opt: dict, seed: int) -> Dataset:
    if name == "xor":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
        y = np.array([[0], [1], [1], [0]], dtype=np.float32)
        ds = Dataset("xor", x, y, x.copy(), y.copy(), "", None)
        ds.description = _describe(ds, "XOR, the four points", "no split: test is the same four points")
        return ds
    n = opt["n"]
    k = _n_test(n)
    rng_train, rng_test = np.random.default_rng(seed).spawn(2)
    make = globals()[f"_gen_{name}"]
    (xtr, ytr, classes, what), (xte, yte, _, _) = make(rng_train, n - k, opt), make(rng_test, k, opt)
    for a, nm in ((xtr, "x_train"), (ytr, "y_train"), (xte, "x_test"), (yte, "y_test")):
        _finite(a, nm, name)  # generators are checked like files: a bug here should not surface as a NaN loss
    ds = Dataset(name, xtr, ytr, xte, yte, "", classes)
    opts = "&".join(f"{key}={v}" for key, v in opt.items())
    ds.description = _describe(ds, what + f" ({opts})", f"test drawn separately, seed {seed}")
    return ds


def _gen_spirals(rng, m, opt):
    y = rng.integers(0, 2, m)
    r = rng.uniform(0.0, 1.0, m)
    theta = 3 * np.pi * r + np.pi * y  # one and a half turns; the second arm is the first rotated by pi
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1) + rng.normal(0.0, opt["noise"], (m, 2))
    return x.astype(np.float32), y.astype(np.int64), 2, "two interleaved spirals"


def _gen_sine(rng, m, opt):
    x = rng.uniform(-np.pi, np.pi, (m, 1))
    y = np.sin(x) + rng.normal(0.0, opt["noise"], (m, 1))
    return x.astype(np.float32), y.astype(np.float32), None, "noisy sine regression"


def _gen_sine_seq(rng, m, opt):
    t = opt["length"]
    phase = rng.uniform(0.0, 2 * np.pi, (m, 1))
    wave = np.sin(phase + 0.2 * np.arange(t + 1)) + rng.normal(0.0, opt["noise"], (m, t + 1))
    x, y = wave[:, :-1, None], wave[:, 1:, None]
    return x.astype(np.float32), y.astype(np.float32), None, "noisy sine sequences, predict the next value"


def _gen_copy(rng, m, opt):
    length, k = opt["length"], opt["symbols"]
    sym = rng.integers(1, k + 1, (m, length))
    blank = np.zeros((m, length), dtype=np.int64)
    delim = np.full((m, 1), k + 1, dtype=np.int64)
    x = np.concatenate([sym, delim, blank], axis=1)
    y = np.concatenate([blank, np.zeros((m, 1), dtype=np.int64), sym], axis=1)
    return x.astype(np.int64), y.astype(np.int64), k + 2, "copy task, 0 = blank, 1..K symbols, K+1 delimiter"


def _gen_adding(rng, m, opt):
    t = opt["length"]
    values = rng.uniform(0.0, 1.0, (m, t))
    half = t // 2
    first, second = rng.integers(0, half, m), rng.integers(half, t, m)
    marks = np.zeros((m, t))
    rows = np.arange(m)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = (values[rows, first] + values[rows, second])[:, None]
    x = np.stack([values, marks], axis=2)
    return x.astype(np.float32), y.astype(np.float32), None, "adding problem, one mark in each half"


# -------------------------------------------------------------------------------------------- text


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError("no such file" if not os.path.exists(path) else "not a file", where=path,
                        help=None if os.path.isabs(path) else f"relative paths start at {os.getcwd()}")
    with open(path, "rb") as f:
        return f.read()


def _decode(raw: bytes, path: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})", where=f"{path}:{line}",
                        help="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
    # A byte-order mark is not part of the text, and would become a vocabulary entry.
    return text[1:] if text.startswith("\ufeff") else text


def _load_text(path: str, opt: dict, seed: int) -> Dataset:
    text = _decode(_read_bytes(path), path)
    if not text:
        raise DataError("empty text file", where=path)
    t = opt["length"]
    n = (len(text) - 1) // t
    if n < 1:
        raise DataError(f"{len(text)} characters are too few for one window of {t} (needs {t + 1})", where=path,
                        help=f"use a longer text or a shorter window: `text:{path}?length={max(1, len(text) - 1)}`")
    vocab = sorted(set(text))
    lut = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lut[c] for c in text[:n * t + 1]), dtype=np.int64, count=n * t + 1)
    x, y = ids[:-1].reshape(n, t), ids[1:].reshape(n, t)
    k = _n_test(n)
    ds = Dataset(f"text:{path}", x[:n - k], y[:n - k], x[n - k:], y[n - k:], "", len(vocab), vocab)
    ds.description = _describe(ds, f"characters of {path}, {len(text)} characters, {len(vocab)} distinct",
                               "the last windows, in order")
    return ds


# ------------------------------------------------------------------------------------------- files


def _f32(a: np.ndarray, name: str, where: str, line_of=None) -> np.ndarray:
    # A finite float64 past float32's range would only become infinity in the cast: say so instead.
    if a.dtype.itemsize > 4 and a.dtype.kind == "f":
        _finite(a, name, where, line_of)
        big = np.abs(a) > np.finfo(np.float32).max
        if big.any():
            idx = tuple(int(i) for i in np.argwhere(big)[0])
            raise DataError(f"`{name}` has {a[idx]:g} at index {idx[0] if len(idx) == 1 else idx}, beyond "
                            f"float32's range", where=line_of(idx[0]) if line_of else where,
                            help="rescale the data")
    return a.astype(np.float32)


def _as_features(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.dtype.kind in "fb":
        return _f32(a, name, where)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)  # token ids stay integers
    raise DataError(f"`{name}` has dtype {a.dtype}; features must be numbers", where=where)


def _as_targets(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        return _f32(a, name, where)
    raise DataError(f"`{name}` has dtype {a.dtype}; targets must be numbers", where=where)


def _classes(y):
    return int(y.max()) + 1 if y is not None and y.dtype.kind == "i" else None


_NPZ_PAIRS = (("x", "y"), ("X", "Y"), ("inputs", "targets"))


def _open_npz(path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a damaged file
        raise DataError(f"cannot read the file: {e}", where=path) from None


def _array(f, key, path):
    try:
        return f[key]
    except ValueError as e:  # object arrays need pickle, which we refuse: a data file should not run code
        raise DataError(f"array `{key}` cannot be loaded without pickle ({e})", where=path) from None


def _load_npz(path: str, seed: int) -> Dataset:
    f = _open_npz(path)
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError("not an .npz archive (a single array? name it .npy)", where=path)
    with f:
        names = list(f.files)
        if not names:
            raise DataError("the archive holds no arrays", where=path)
        pair = next((p for p in _NPZ_PAIRS if p[0] in names and p[1] in names), None)
        if pair is None:
            pair = (names[0], None) if len(names) == 1 else (names[0], names[1])
        x = _as_features(_array(f, pair[0], path), pair[0], path)
        y = None if pair[1] is None else _as_targets(_array(f, pair[1], path), pair[1], path)
    _validate(x, y, path, names=(pair[0], pair[1] or "y"))
    what = f"{path}, arrays `{pair[0]}`" + (f" and `{pair[1]}`" if pair[1] else "")
    return _from_split(path, x, y, seed, what, _classes(y))


def _load_npy(path: str, seed: int) -> Dataset:
    a = _open_npz(path)
    if not isinstance(a, np.ndarray):
        a.close()
        raise DataError("not an .npy array (an archive? name it .npz)", where=path)
    x = _as_features(a, "x", path)
    _validate(x, None, path)
    return _from_split(path, x, None, seed, f"{path}, features only", None)


def _load_csv(path: str, seed: int) -> Dataset:
    text = _decode(_read_bytes(path), path)
    header = width = None
    feats, labels_i, lines, ints = [], [], [], True
    # One row per physical line (numbers never hold newlines), so LINE is the editor's line number.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        cells = [c.strip() for c in next(csv.reader([raw.rstrip("\r")]), [])]
        if all(c == "" for c in cells):
            continue
        if width is None:
            width = len(cells)
            if not any(_is_number(c) for c in cells):
                header = lineno
                continue
        if len(cells) != width:
            first = f"the header (line {header})" if header else f"line {lines[0]}"
            raise DataError(f"row has {len(cells)} columns, {first} has {width}", where=f"{path}:{lineno}",
                            help="every row needs the same columns: the features, then the label")
        if width < 2:
            raise DataError("a row of one column; a CSV needs feature columns and a label column last",
                            where=f"{path}:{lineno}")
        try:
            feats.append([float(c) for c in cells])
        except ValueError:
            col = next(i for i, c in enumerate(cells) if not _is_number(c))
            what = "an empty cell" if cells[col] == "" else f"`{cells[col]}`, not a number,"
            hint = "; map class names to ids 0..K-1" if col == width - 1 else ""
            raise DataError(f"{what} in column {col + 1}", where=f"{path}:{lineno}",
                            help="every cell after the header row is a number" + hint) from None
        if ints:
            try:
                labels_i.append(int(cells[-1]))
            except ValueError:
                ints = False  # one label written as a float makes the column regression targets
        lines.append(lineno)
    if not feats:
        raise DataError("no data rows under the header" if header else "empty file", where=path)
    data = np.array(feats, dtype=np.float64)
    y = np.array(labels_i, dtype=np.int64) if ints else data[:, -1]
    line_of = lambda i: f"{path}:{lines[i]}"  # noqa: E731
    x, y = _f32(data[:, :-1], "x", path, line_of), y if ints else _f32(y, "y", path, line_of)
    _validate(x, y, path, line_of=line_of)
    return _from_split(path, x, y, seed, f"{path}, {len(feats)} rows", _classes(y))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ model checks


_INT_DTYPES = {"i32", "i64", "int32", "int64", "bool"}
_FLOAT_DTYPES = {"f32", "f64", "float32", "float64"}


def _fits(per_example: tuple, shape: tuple) -> tuple | None:
    """The shape examples of `per_example` take to match `shape` (None = any size), or None if they cannot."""
    shape = tuple(shape)
    if len(per_example) == len(shape) and all(s is None or s == p for s, p in zip(shape, per_example)):
        return per_example
    total = math.prod(per_example)
    known = math.prod(s for s in shape if s is not None)
    unknown = sum(s is None for s in shape)
    if unknown == 0:
        return shape if known == total else None
    if unknown == 1 and known and total % known == 0:
        return tuple(total // known if s is None else s for s in shape)
    return None  # several free sizes and a different rank: no single reading


def _shape_str(shape) -> str:
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


def fit_to(x: np.ndarray, shape: tuple) -> np.ndarray:
    """`x` [N, ...] as [N, *shape] when each example has the same number of elements (one None in `shape`
    takes what is left; several must already match); digits [N, 64] feed f32[B, 1, 8, 8] or f32[B, 8, 8]."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise DataError("a scalar is not a batch of examples", where="x")
    target = _fits(x.shape[1:], shape)
    if target is None:
        raise DataError(f"examples of shape {_shape_str(x.shape[1:])} ({math.prod(x.shape[1:])} values) do not "
                        f"fit the per-example shape {_shape_str(shape)}", where="x",
                        help="the model's input size and the dataset's features must agree (--set the size)")
    return x if x.shape[1:] == target else x.reshape((x.shape[0], *target))


def check_against(ds: Dataset, input_shapes: list[tuple], target_shape: tuple | None, target_dtype: str | None,
                  classes: int | None) -> None:
    """DataError unless `ds` can feed a model with these per-example shapes (no batch axis; None = any size).

    The features must fit one of `input_shapes` (fit_to's rule; a model with several inputs, as a GAN's
    noise and data, is fed in the one they fit). Targets are checked when the model has one: their shape,
    integer class ids in [0, classes) for an integer target, float targets for a float one. Integer labels
    of 0 and 1 may feed a float target: binary classification with a sigmoid output, as in the zoo's
    perceptron and mlp_binary on sklearn:breast_cancer."""
    per = ds.x_train.shape[1:]
    shapes = [tuple(s) for s in input_shapes]
    if shapes and not any(_fits(per, s) is not None for s in shapes):
        want = " or ".join(_shape_str(s) for s in shapes)
        raise DataError(f"`{ds.name}` has {math.prod(per)} features per example ({_shape_str(per)}); the model "
                        f"takes {want}", where="x_train",
                        help="set the model's input size to the data's (e.g. --set inputs=N), or pick other data")
    if target_shape is None and target_dtype is None:
        return  # no target: an autoencoder or a GAN learns from x alone
    if ds.y_train is None:
        raise DataError(f"`{ds.name}` has no targets but the model trains against one", where="y_train")
    ys = [("y_train", ds.y_train), ("y_test", ds.y_test)]
    if target_shape is not None and _fits(ds.y_train.shape[1:], tuple(target_shape)) is None:
        raise DataError(f"targets of shape {_shape_str(ds.y_train.shape[1:])} per example do not fit the "
                        f"model's target {_shape_str(target_shape)}", where="y_train")
    is_int = ds.y_train.dtype.kind in "iub"
    if target_dtype in _INT_DTYPES:
        if not is_int:
            raise DataError(f"`{ds.name}` has float targets but the model's target is {target_dtype} class ids",
                            where="y_train", help="use a float target (f32) and a regression loss, or integer data")
        limit = 2 if target_dtype == "bool" else classes
        if limit is not None:
            for name, y in ys:
                if y is None or not y.size:
                    continue
                bad = np.flatnonzero(((y < 0) | (y >= limit)).reshape(-1))
                if bad.size:
                    i = np.unravel_index(bad[0], y.shape)
                    at = i[0] if len(i) == 1 else tuple(int(v) for v in i)
                    raise DataError(f"label {y[i]} at index {at} is outside [0, {limit})", where=name,
                                    help=f"the data has {ds.classes or int(y.max()) + 1} classes: set the model's "
                                         f"number of classes to match (e.g. --set classes=N)")
    elif target_dtype in _FLOAT_DTYPES:
        if is_int:
            values = np.unique(np.concatenate([y.reshape(-1) for _, y in ys if y is not None]))
            if not np.isin(values, (0, 1)).all():
                raise DataError(f"`{ds.name}` has integer class ids ({ds.classes or values.max() + 1} classes) but "
                                f"the model's target is {target_dtype}", where="y_train",
                                help="make the target i64[B] with a cross-entropy loss, or one-hot encode the labels")
    elif target_dtype is not None:
        raise DataError(f"unknown target dtype `{target_dtype}`", where="y_train",
                        help="one of " + ", ".join(sorted(_INT_DTYPES | _FLOAT_DTYPES)))
