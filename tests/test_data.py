"""runtime.data: every spec's shapes and dtypes, seeded splits, file formats and their errors, and the checks
of a dataset against a model's inputs and targets."""
import numpy as np
import pytest

from runtime.data import BUILTIN_NAMES, DataError, Dataset, check_against, fit_to, load

# spec -> (x per example, x dtype, y per example or None, y dtype, classes, train size, test size)
GENERATED = [
    ("xor", (2,), "float32", (1,), "float32", None, 4, 4),
    ("spirals", (2,), "float32", (), "int64", 2, 320, 80),
    ("spirals?n=600&noise=0.2", (2,), "float32", (), "int64", 2, 480, 120),
    ("sine", (1,), "float32", (1,), "float32", None, 400, 100),
    ("sine?n=11", (1,), "float32", (1,), "float32", None, 9, 2),
    ("sine_seq", (50, 1), "float32", (50, 1), "float32", None, 205, 51),
    ("sine_seq?length=7&n=20", (7, 1), "float32", (7, 1), "float32", None, 16, 4),
    ("copy", (21,), "int64", (21,), "int64", 10, 800, 200),
    ("copy?length=20&symbols=8", (41,), "int64", (41,), "int64", 10, 800, 200),
    ("copy?symbols=3&length=4&n=10", (9,), "int64", (9,), "int64", 5, 8, 2),
    ("adding", (50, 2), "float32", (1,), "float32", None, 800, 200),
    ("adding?length=10", (10, 2), "float32", (1,), "float32", None, 800, 200),
]

# name -> (examples in scikit-learn's copy, features, classes)
SKLEARN = {"sklearn:digits": (1797, 64, 10), "sklearn:iris": (150, 4, 3),
           "sklearn:breast_cancer": (569, 30, 2), "sklearn:wine": (178, 13, 3)}


def _shapes(ds: Dataset, x, xdt, y, ydt, classes, ntr, nte):
    assert ds.x_train.shape == (ntr, *x) and ds.x_test.shape == (nte, *x)
    assert ds.x_train.dtype == xdt and ds.x_test.dtype == xdt
    assert ds.y_train.shape == (ntr, *y) and ds.y_test.shape == (nte, *y)
    assert ds.y_train.dtype == ydt and ds.y_test.dtype == ydt
    assert ds.classes == classes
    assert str(ntr) in ds.description and str(nte) in ds.description and "\n" not in ds.description


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_test", "y_test"))


@pytest.mark.parametrize("spec, x, xdt, y, ydt, classes, ntr, nte", GENERATED)
def test_generated_shapes(spec, x, xdt, y, ydt, classes, ntr, nte):
    ds = load(spec)
    _shapes(ds, x, xdt, y, ydt, classes, ntr, nte)
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert np.all(np.isfinite(a))
    if classes is not None:
        for y_ in (ds.y_train, ds.y_test):
            assert y_.min() >= 0 and y_.max() < classes


@pytest.mark.parametrize("spec", [g[0] for g in GENERATED if g[0] != "xor"])
def test_generated_determinism(spec):
    assert _same(load(spec, seed=3), load(spec, seed=3))
    assert not _same(load(spec, seed=3), load(spec, seed=4))
    ds = load(spec, seed=3)
    # Train and test are separate draws, not one array seen twice.
    assert not np.array_equal(ds.x_train[:len(ds.x_test)], ds.x_test)


def test_xor_points():
    ds = load("xor")
    assert np.array_equal(ds.y_train[:, 0], np.logical_xor(ds.x_train[:, 0], ds.x_train[:, 1]))
    assert _same(ds, Dataset("xor", ds.x_test, ds.y_test, ds.x_train, ds.y_train, "", None))


def test_sine_is_sine_plus_noise():
    ds = load("sine?noise=0")
    assert np.allclose(ds.y_train, np.sin(ds.x_train), atol=1e-6)
    assert ds.x_train.min() >= -np.pi and ds.x_train.max() <= np.pi
    noisy = load("sine?noise=0.1")
    resid = noisy.y_train - np.sin(noisy.x_train)
    assert 0.05 < resid.std() < 0.2


def test_sine_seq_targets_are_next_values():
    ds = load("sine_seq?length=30&n=40")
    assert np.array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    clean = load("sine_seq?length=30&n=40&noise=0")
    assert np.all(np.abs(clean.x_train) <= 1.0 + 1e-6)


def test_copy_task():
    k, length = 5, 6
    ds = load(f"copy?length={length}&symbols={k}&n=50")
    x, y = ds.x_train, ds.y_train
    assert np.array_equal(y[:, length + 1:], x[:, :length])
    assert np.all(x[:, length] == k + 1) and np.all(x[:, length + 1:] == 0) and np.all(y[:, :length + 1] == 0)
    assert x[:, :length].min() >= 1 and x[:, :length].max() <= k


def test_adding_problem():
    t = 12
    ds = load(f"adding?length={t}&n=100")
    x, y = ds.x_train, ds.y_train
    marks = x[:, :, 1]
    assert np.all(marks.sum(axis=1) == 2)
    assert np.all(marks[:, :t // 2].sum(axis=1) == 1)
    assert np.allclose(y[:, 0], (x[:, :, 0] * marks).sum(axis=1), atol=1e-6)


def test_spirals_classes_are_two_arms():
    ds = load("spirals?noise=0&n=200")
    r = np.hypot(ds.x_train[:, 0], ds.x_train[:, 1])
    angle = np.arctan2(ds.x_train[:, 1], ds.x_train[:, 0])
    # Without noise the class is a function of the point: the arm at this radius, or the one rotated by pi.
    arm0 = np.cos(angle - 3 * np.pi * r) > 0.99
    assert np.array_equal(arm0, ds.y_train == 0)
    assert 0.3 < ds.y_train.mean() < 0.7


@pytest.mark.parametrize("spec", sorted(SKLEARN))
def test_sklearn_shapes_and_split(spec):
    pytest.importorskip("sklearn")
    n, f, classes = SKLEARN[spec]
    nte = round(n / 5 + 1e-9)
    ds = load(spec)
    _shapes(ds, (f,), "float32", (), "int64", classes, n - nte, nte)
    assert _same(ds, load(spec)) and not _same(ds, load(spec, seed=1))
    # Stratified: each class is held out in proportion, within one example.
    everything = np.concatenate([ds.y_train, ds.y_test])
    for c in range(classes):
        share = (everything == c).sum() / n
        assert abs((ds.y_test == c).sum() - share * nte) < 1
    if spec == "sklearn:digits":
        assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    else:
        # Standardised with the train split's statistics, so only the train split is exactly centred.
        assert np.allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
        assert np.allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
        assert not np.allclose(ds.x_test.mean(axis=0), 0, atol=1e-5)


def test_sklearn_split_is_a_partition():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    raw = load_digits()
    ds = load("sklearn:digits", seed=7)
    # Pixels / 16 is exact in float32, so every (row, label) pair must come back once, labels still attached.
    got = np.column_stack([np.concatenate([ds.x_train, ds.x_test]) * 16, np.concatenate([ds.y_train, ds.y_test])])
    want = np.column_stack([raw.data, raw.target])
    assert np.array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])


def test_sklearn_missing(monkeypatch):
    import builtins

    from runtime import data
    real = builtins.__import__

    def no_sklearn(name, *a, **k):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    data._sklearn_raw.cache_clear()
    try:
        with pytest.raises(DataError, match="needs scikit-learn") as e:
            load("sklearn:wine")
        assert "dlc[sklearn]" in e.value.help
    finally:
        data._sklearn_raw.cache_clear()


# ------------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize("spec, message, hint", [
    ("spiral", "unknown dataset", "did you mean `spirals`"),
    ("digit", "unknown dataset", "did you mean `sklearn:digits`"),
    ("sklearn:digts", "unknown scikit-learn dataset", "did you mean `sklearn:digits`"),
    ("nonsense", "unknown dataset", "sine_seq"),
    ("copy?lenght=3", "has no option `lenght`", "did you mean `length`"),
    ("copy?length=0", "option `length` of `copy` must be an integer >= 1, got `0`", "symbols"),
    ("copy?length=abc", "must be an integer", "valid options"),
    ("copy?length=2.5", "must be an integer", "valid options"),
    ("adding?length=1", "must be an integer >= 2", "valid options"),
    ("spirals?n=1", "must be an integer >= 2", "valid options"),
    ("spirals?noise=-1", "must be a finite number >= 0", "noise"),
    ("sine?noise=nan", "must be a finite number >= 0", "noise"),
    ("copy?length", "needs a value", "valid options"),
    ("copy?length=3&length=4", "given twice", None),
    ("copy?&", "empty option", "valid options"),
    ("xor?n=3", "`xor` has no option `n`", "none"),
    ("sklearn:iris?n=3", "has no option `n`", "none"),
])
def test_bad_specs(spec, message, hint):
    with pytest.raises(DataError, match=message.replace("?", r"\?")) as e:
        load(spec)
    if hint is None:
        assert e.value.help is None
    else:
        assert hint in e.value.help


def test_unknown_spec_lists_builtins():
    with pytest.raises(DataError) as e:
        load("mnist")
    for name in BUILTIN_NAMES:
        assert name in e.value.help


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(DataError, match="seed"):
        load("xor", seed=seed)


def test_missing_and_unsupported_files(tmp_path):
    for spec in (tmp_path / "a.csv", tmp_path / "a.npz", tmp_path / "a.npy"):
        with pytest.raises(DataError, match="no such file") as e:
            load(str(spec))
        assert e.value.where == str(spec)
    with pytest.raises(DataError, match="no such file") as e:
        load(f"text:{tmp_path / 'a.txt'}")
    assert e.value.where == str(tmp_path / "a.txt")
    other = tmp_path / "a.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        load(str(other))


def test_error_text_shows_where_and_help():
    e = DataError("bad", where="f.csv:3", help="fix it")
    assert str(e) == "f.csv:3: bad\nhelp: fix it"
    assert (e.message, e.where, e.help) == ("bad", "f.csv:3", "fix it")
    assert str(DataError("bad")) == "bad"


# ------------------------------------------------------------------------------------------- text


def test_text_windows(tmp_path):
    p = tmp_path / "corpus.txt"
    text = "hello world, héllo wörld!\n" * 9  # 234 characters, non-ASCII included
    p.write_text(text, encoding="utf-8")
    t = 10
    ds = load(f"text:{p}?length={t}")
    n = (len(text) - 1) // t
    nte = round(n / 5)
    assert ds.vocab == sorted(set(text)) and ds.classes == len(ds.vocab)
    assert ds.x_train.shape == (n - nte, t) and ds.x_test.shape == (nte, t) and ds.x_train.dtype == np.int64
    # Windows in file order, stride T, targets one character on.
    decoded = "".join(ds.vocab[i] for i in np.concatenate([ds.x_train, ds.x_test]).ravel())
    assert decoded == text[:n * t]
    nxt = "".join(ds.vocab[i] for i in np.concatenate([ds.y_train, ds.y_test]).ravel())
    assert nxt == text[1:n * t + 1]
    assert load(f"text:{p}").x_train.shape[1] == 50


@pytest.mark.parametrize("content, message", [
    (b"", "empty text file"),
    (b"short", "too few for one window"),
    (b"abc\ndef\n\xff\xfe rest", "not UTF-8"),
])
def test_text_errors(tmp_path, content, message):
    p = tmp_path / "t.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        load(f"text:{p}?length=20")
    if message == "not UTF-8":
        assert e.value.where == f"{p}:3"


def test_text_bad_option(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("x" * 100)
    with pytest.raises(DataError, match="no option `stride`"):
        load(f"text:{p}?stride=3")


# -------------------------------------------------------------------------------------------- CSV


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_csv_classes_with_header(tmp_path):
    rows = "".join(f"{i}.5,{-i},{i % 3}\n" for i in range(20))
    p = _csv(tmp_path, "a,b,label\n" + rows)
    ds = load(p)
    assert ds.x_train.shape == (16, 2) and ds.x_test.shape == (4, 2)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.classes == 3
    # Every row lands in exactly one split, labels still beside their features.
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(x[:, 0]) == [i + 0.5 for i in range(20)]
    assert np.array_equal(y, (-x[:, 1]).astype(int) % 3)
    assert _same(ds, load(p)) and not _same(ds, load(p, seed=1))


def test_csv_regression_without_header(tmp_path):
    p = _csv(tmp_path, "1,2,0.5\n3,4,1\n\n5,6,2\n7,8,3\n9,10,4\n")
    ds = load(p)
    assert ds.y_train.dtype == np.float32 and ds.classes is None
    assert len(ds.x_train) + len(ds.x_test) == 5 and len(ds.x_test) == 1


@pytest.mark.parametrize("text, line, message", [
    ("a,b,c\n1,2,3\n4,5\n", 3, "row has 2 columns, the header \\(line 1\\) has 3"),
    ("1,2,3\n\n4,5,6,7\n", 3, "row has 4 columns, line 1 has 3"),
    ("a,b,c\n1,2,3\n4,x,6\n", 3, "`x`, not a number, in column 2"),
    ("1,2,3\n4,,6\n", 2, "an empty cell in column 2"),
    ("1,2,cat\n", 1, "in column 3"),
    ("1,2,3\n4,nan,6\n", 2, "`x` has NaN at index \\(1, 1\\)"),
    ("1,2,3\n4,5,inf\n", 2, "`y` has infinity at index 1"),
    ("1,2,3\n4,1e39,6\n", 2, "`x` has 1e\\+39 at index \\(1, 1\\), beyond float32's range"),
    ("1,2,3\n4,5,-1\n", 2, "negative class id -1"),
    ("1\n2\n", 1, "one column"),
])
def test_csv_errors(tmp_path, text, line, message):
    p = _csv(tmp_path, text)
    with pytest.raises(DataError, match=message) as e:
        load(p)
    assert e.value.where == f"{p}:{line}"


@pytest.mark.parametrize("text, message", [("", "empty file"), ("\n\n", "empty file"), ("a,b\n", "no data rows")])
def test_csv_empty(tmp_path, text, message):
    p = _csv(tmp_path, text)
    with pytest.raises(DataError, match=message) as e:
        load(p)
    assert e.value.where == p


def test_csv_float_labels_are_not_class_ids(tmp_path):
    # `-1.0` is written as a float: regression targets, so no negative-class-id error.
    ds = load(_csv(tmp_path, "1,2,-1.0\n3,4,1\n"))
    assert ds.y_train.dtype == np.float32


# -------------------------------------------------------------------------------------- npz / npy


@pytest.mark.parametrize("names", [("x", "y"), ("X", "Y"), ("inputs", "targets"), ("features", "labels")])
def test_npz_names(tmp_path, names):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3, 2)), rng.integers(0, 4, 30)
    extra = {"zzz": np.zeros(7)}
    p = tmp_path / "d.npz"
    if names[0] == "features":
        np.savez(p, **{names[0]: x, names[1]: y}, **extra)  # no known names: the first two arrays
    else:
        np.savez(p, **extra, **{names[0]: x, names[1]: y})  # a known pair wins over file order
    ds = load(str(p))
    assert ds.x_train.shape == (24, 3, 2) and ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.classes == int(y.max()) + 1
    got = np.concatenate([ds.x_train, ds.x_test])
    assert np.allclose(np.sort(got.ravel()), np.sort(x.astype(np.float32).ravel()))


def test_npz_single_array_and_npy(tmp_path):
    x = np.arange(50, dtype=np.float64).reshape(10, 5)
    np.savez(tmp_path / "one.npz", data=x)
    np.save(tmp_path / "f.npy", x)
    for p in ("one.npz", "f.npy"):
        ds = load(str(tmp_path / p))
        assert ds.y_train is None and ds.y_test is None and ds.classes is None
        assert ds.x_train.shape == (8, 5) and ds.x_test.shape == (2, 5) and ds.x_train.dtype == np.float32
        assert sorted(np.concatenate([ds.x_train, ds.x_test])[:, 0]) == list(range(0, 50, 5))


def test_npz_token_ids_stay_integers(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.ones((5, 7), dtype=np.int32), y=np.ones((5, 7), dtype=np.int32))
    ds = load(str(tmp_path / "t.npz"))
    assert ds.x_train.dtype == np.int64 and ds.y_train.shape[1:] == (7,)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.array([[1.0, np.nan], [0.0, 0.0]]), "y": np.array([0, 1])}, "`x` has NaN at index \\(0, 1\\)"),
    ({"x": np.ones((3, 2)), "y": np.array([0.0, 1.0, -np.inf])}, "`y` has infinity at index 2"),
    ({"x": np.ones((3, 2)), "y": np.array([0, 1])}, "`x` has 3 examples but `y` has 2"),
    ({"x": np.ones((0, 2)), "y": np.ones(0)}, "`x` has no examples"),
    ({"inputs": np.ones((3, 2)), "targets": np.array([0, -2, 1])}, "`targets` holds the negative class id -2"),
    ({"x": np.array(["a", "b"]), "y": np.ones(2)}, "features must be numbers"),
    ({"x": np.ones((2, 2)), "y": np.array([1.0, -1e300])}, "`y` has -1e\\+300 at index 1, beyond float32"),
])
def test_npz_errors(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load(str(p))
    assert e.value.where == str(p)


def test_npy_and_npz_confused(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones(3))
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npz").read_bytes())
    with pytest.raises(DataError, match="not an .npy array"):
        load(str(tmp_path / "a.npy"))
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load(str(tmp_path / "b.npz"))


def test_tiny_files_split(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((1, 3)))
    np.save(tmp_path / "two.npy", np.ones((2, 3)))
    one, two = load(str(tmp_path / "one.npy")), load(str(tmp_path / "two.npy"))
    assert (len(one.x_train), len(one.x_test)) == (1, 0)
    assert (len(two.x_train), len(two.x_test)) == (1, 1)


# ------------------------------------------------------------------------------ fit_to / check_against


@pytest.mark.parametrize("x, shape, out", [
    ((5, 64), (1, 8, 8), (5, 1, 8, 8)),
    ((5, 64), (8, 8), (5, 8, 8)),
    ((5, 64), (None, 8), (5, 8, 8)),
    ((5, 1, 8, 8), (64,), (5, 64)),
    ((5, 10, 3), (None, 3), (5, 10, 3)),
    ((5, 10, 3), (None, None), (5, 10, 3)),
    ((5,), (1,), (5, 1)),
    ((5, 64), (63,), None),
    ((5, 64), (None, 7), None),
    ((5, 64), (None, None), None),
    ((5, 10, 3), (None, 4), None),
])
def test_fit_to(x, shape, out):
    a = np.arange(np.prod(x)).reshape(x)
    if out is None:
        with pytest.raises(DataError, match="do not fit"):
            fit_to(a, shape)
    else:
        b = fit_to(a, shape)
        assert b.shape == out and np.array_equal(b.ravel(), a.ravel())


def _ds(x, y, classes=None):
    return Dataset("t", x, y, x[:2], None if y is None else y[:2], "", classes)


def test_check_against_accepts():
    x = np.zeros((10, 64), np.float32)
    labels = np.arange(10, dtype=np.int64) % 10
    check_against(_ds(x, labels, 10), [(1, 8, 8)], (), "i64", 10)
    check_against(_ds(x, labels, 10), [(None, 8)], (), "i64", None)
    # A GAN: noise and data inputs, no target; the data fits the second.
    check_against(_ds(x, None), [(16,), (64,)], None, None, None)
    # 0/1 labels feed a sigmoid unit's float target (the zoo's perceptron on breast_cancer).
    check_against(_ds(x, labels % 2, 2), [(64,)], (1,), "f32", None)
    check_against(_ds(x, np.zeros((10, 1), np.float32)), [(64,)], (1,), "f32", None)
    tokens = np.zeros((10, 25), np.int64)
    check_against(_ds(tokens, tokens, 65), [(None,)], (None,), "i64", 65)


@pytest.mark.parametrize("ds, args, message, where", [
    (_ds(np.zeros((4, 30), np.float32), np.zeros(4, np.int64)), ([(64,)], (), "i64", 2),
     "30 features per example", "x_train"),
    (_ds(np.zeros((4, 64), np.float32), np.zeros(4, np.int64)), ([(16,), (1, 28, 28)], (), "i64", 2),
     "takes \\[16\\] or \\[1, 28, 28\\]", "x_train"),
    (_ds(np.zeros((4, 2), np.float32), np.array([0, 1, 2, 1])), ([(2,)], (), "i64", 2),
     "label 2 at index 2 is outside \\[0, 2\\)", "y_train"),
    (_ds(np.zeros((4, 2), np.float32), np.array([0, 1, 1, 1]) * np.array([1, 1, 1, -1])), ([(2,)], (), "i64", 2),
     "label -1 at index 3", "y_train"),
    (_ds(np.zeros((4, 2), np.float32), np.zeros(4, np.float32)), ([(2,)], (), "i64", 2),
     "float targets but the model's target is i64", "y_train"),
    (_ds(np.zeros((4, 2), np.float32), np.array([0, 1, 2, 0])), ([(2,)], (1,), "f32", None),
     "integer class ids", "y_train"),
    (_ds(np.zeros((4, 2), np.float32), None), ([(2,)], (1,), "f32", None), "no targets", "y_train"),
    (_ds(np.zeros((4, 2), np.float32), np.zeros((4, 3), np.float32)), ([(2,)], (1,), "f32", None),
     "do not fit the model's target \\[1\\]", "y_train"),
])
def test_check_against_rejects(ds, args, message, where):
    with pytest.raises(DataError, match=message) as e:
        check_against(ds, *args)
    assert e.value.where == where


def test_check_against_test_split_labels():
    x = np.zeros((4, 2), np.float32)
    ds = Dataset("t", x, np.array([0, 1, 0, 1]), x, np.array([0, 3, 0, 0]), "", 4)
    with pytest.raises(DataError, match="label 3 at index 1") as e:
        check_against(ds, [(2,)], (), "i64", 2)
    assert e.value.where == "y_test"


def test_zoo_datasets_fit_their_models():
    pytest.importorskip("sklearn")
    # The specs the zoo names, against the per-example shapes its models declare.
    digits = load("sklearn:digits")
    check_against(digits, [(64,)], (), "i64", 10)
    check_against(digits, [(1, 8, 8)], (), "i64", 10)
    assert fit_to(digits.x_train, (8, 8)).shape == (len(digits.x_train), 8, 8)
    check_against(load("sklearn:breast_cancer"), [(30,)], (1,), "f32", None)
    check_against(load("sklearn:iris"), [(4,)], (), "i64", 3)
    check_against(load("xor"), [(2,)], (1,), "f32", None)
    check_against(load("sine"), [(1,)], (1,), "f32", None)
    with pytest.raises(DataError, match="outside"):
        check_against(digits, [(64,)], (), "i64", 9)
