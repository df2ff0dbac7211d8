"""Bad input gives a diagnostic with a code and a location, exit status 1, and never a traceback."""
import re

import pytest

MLP = """model m(x: f32[B, 4]) -> f32[B, 3] {
    h = dense(x, 8, act=relu)
    return dense(h, 3)
}
"""

# (id, files {name: text}, extra CLI args, expected code, expected "line:col" of the primary span)
CASES = [
    ("syntax-missing-operand", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    y = x +\n    return y\n}\n"}, [], "E0001", "3:5"),
    ("syntax-unclosed-call", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    return relu(x\n}\n"}, [], "E0001", "3:1"),
    ("unexpected-character", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    return x $ 2\n}\n"}, [], "E0002", "2:14"),
    ("unexpected-eof", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    return x\n"}, [], "E0003", "2:13"),
    ("bad-escape", {"m.dln": 'block f(x: f32[N]) -> f32[N] {\n    require true, "bad \\q"\n    return x\n}\nmodel m(x: f32[B]) -> f32[B] { return f(x) }\n'}, [], "E0004", "2:19"),
    ("unknown-name", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    return x * scale\n}\n"}, [], "E0101", "2:16"),
    ("unknown-layer", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dens(x, 3)\n}\n"}, [], "E0102", "2:12"),
    ("too-many-args", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, 3, relu, true, zeros, 7)\n}\n"}, [], "E0103", "2:12"),
    ("unknown-keyword", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, unitz=3)\n}\n"}, [], "E0104", "2:21"),
    ("missing-argument", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x)\n}\n"}, [], "E0105", "2:12"),
    ("argument-twice", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, 3, units=3)\n}\n"}, [], "E0106", "2:24"),
    ("duplicate-block", {"m.dln": "block f(x: f32[N]) -> f32[N] { return x }\nblock f(x: f32[N]) -> f32[N] { return x }\n"
                         "model m(x: f32[B]) -> f32[B] { return f(x) }\n"}, [], "E0107", "2:7"),
    ("duplicate-param", {"m.dln": "block f(x: f32[N]) -> f32[N] {\n    param w: [N]\n    param w: [N]\n    return x * w\n}\n"
                         "model m(x: f32[4]) -> f32[4] { return f(x) }\n"}, [], "E0107", "3:5"),
    ("duplicate-label", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    h = dense(x, 4) as fc\n    y = dense(h, 4) as fc\n    return y\n}\n"}, [], "E0107", "3:9"),
    ("attribute-type", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, 1.5)\n}\n"}, [], "E0108", "2:21"),
    ("tensor-for-attribute", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, x)\n}\n"}, [], "E0108", "2:21"),
    ("not-callable", {"m.dln": "const k = 3\nmodel m(x: f32[B, 4]) -> f32[B, 4] {\n    return k(x)\n}\n"}, [], "E0109", "3:12"),
    ("no-such-member", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    enc = dense(x, 4)\n    return x @ enc.V\n}\n"}, [], "E0110", "3:16"),
    ("yield-outside-scan", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    yield x\n    return x\n}\n"}, [], "E0111", "2:5"),
    ("wrong-return-count", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 4] {\n    a, b = x\n    return x\n}\n"}, [], "E0112", "2:5"),
    ("import-cycle", {"a.dln": 'use "b.dln"\nmodel m(x: f32[B]) -> f32[B] { return x }\n', "b.dln": 'use "a.dln"\n'}, [], "E0120", "1:1"),
    ("missing-import", {"m.dln": 'use "nowhere.dln"\n' + MLP}, [], "E0121", "1:1"),
    ("unknown-std-module", {"m.dln": "use std.nnn\n" + MLP}, [], "E0121", "1:1"),
    ("unknown-set", {"m.dln": "const width = 8\n" + MLP}, ["--set", "widht=16"], "E0130", ("arg", "widht=16")),
    ("bad-set-value", {"m.dln": "const width = 8\n" + MLP}, ["--set", "width=true"], "E0131", ("arg", "width=true")),
    ("malformed-set", {"m.dln": MLP}, ["--set", "width"], "E0131", ("arg", "width")),
    ("bad-bind-value", {"m.dln": MLP}, ["--bind", "B=-3"], "E0132", ("arg", "-3")),
    ("unknown-bind", {"m.dln": MLP}, ["--bind", "Q=3"], "E0132", ("arg", "Q=3")),
    ("dimension-conflict", {"m.dln": "block add2(a: f32[B, N], b: f32[B, N]) -> f32[B, N] { return a + b }\n"
                            "model m(x: f32[B, 3], y: f32[B, 4]) -> f32[B, 3] {\n    return add2(x, y)\n}\n"}, [], "E0201", "3:20"),
    ("rank-mismatch", {"m.dln": "block f(a: f32[B, N]) -> f32[B, N] { return a }\nmodel m(x: f32[B, 3, 2]) -> f32[B, 3] {\n    return f(x)\n}\n"}, [], "E0202", "3:14"),
    ("dtype-mismatch", {"m.dln": "model m(x: f32[B, 3], i: i64[B, 3]) -> f32[B, 3] {\n    return x + i\n}\n"}, [], "E0203", "2:12"),
    ("broadcast-failure", {"m.dln": "model m(x: f32[B, 3], y: f32[B, 4]) -> f32[B, 3] {\n    return x * y\n}\n"}, [], "E0204", "2:12"),
    ("matmul-mismatch", {"m.dln": "model m(x: f32[B, 3], w: f32[4, 5]) -> f32[B, 5] {\n    return x @ w\n}\n"}, [], "E0205", "2:12"),
    ("fractional-conv", {"m.dln": "model m(x: f32[B, 1, 6, 6], w: f32[2, 1, 3, 3]) -> f32[B, 2, 2, 2] {\n    return conv(x, w, stride=2)\n}\n"}, [], "E0206", "2:12"),
    ("non-positive-pool", {"m.dln": "model m(x: f32[B, 1, 2, 2]) -> f32[B, 1, 1, 1] {\n    return max_pool(x, k=3)\n}\n"}, [], "E0206", "2:12"),
    ("unbound-dimension", {"m.dln": "block f(a: f32[N]) -> f32[N] {\n    param w: [Q]\n    return a\n}\nmodel m(x: f32[4]) -> f32[4] { return f(x) }\n"}, [], "E0207", "2:15"),
    ("bad-axis", {"m.dln": "model m(x: f32[B, 3]) -> f32[B] {\n    return sum(x, axis=2)\n}\n"}, [], "E0208", "2:12"),
    ("bad-reshape", {"m.dln": "model m(x: f32[B, 6]) -> f32[B, 4] {\n    return reshape(x, [B, 4])\n}\n"}, [], "E0209", "2:12"),
    ("require-failed", {"m.dln": "block heads(x: f32[B, D], h: int) -> f32[B, D] {\n    require D % h == 0, \"D ({D}) must be divisible by h ({h})\"\n    return x\n}\n"
                        "model m(x: f32[B, 10]) -> f32[B, 10] {\n    return heads(x, 3)\n}\n"}, [], "E0210", "6:12"),
    ("scan-carry-changes", {"m.dln": "model m(x: f32[B, T, 4]) -> f32[B, 8] {\n    ys, h = scan xt in x along 1 with h = zeros([B, 4]) {\n"
                            "        h = concat([h, xt], axis=1)\n        yield h\n    }\n    return h\n}\n"}, [], "E0211", "2:39"),
    ("return-type-mismatch", {"m.dln": "model m(x: f32[B, 4]) -> f32[B, 3] {\n    return x\n}\n"}, [], "E0212", "1:26"),
    ("division-by-zero", {"m.dln": "const n = 4 / 0\n" + MLP}, [], "E0213", "1:11"),
    ("unknown-train-setting", {"m.dln": MLP.rstrip() + " train {\n    target y: i64[B]\n    loss = mean(dense(x, 3))\n    optimiser = adam\n}\n"}, [], "E0301", "7:5"),
    ("unknown-optimizer", {"m.dln": MLP.rstrip() + " train {\n    loss = mean(x)\n    optimizer = adamm(lr=0.1)\n}\n"}, [], "E0302", "6:17"),
    ("loss-not-scalar", {"m.dln": MLP.rstrip() + " train {\n    loss = x\n}\n"}, [], "E0302", "5:12"),
    ("no-model", {"m.dln": "block f(x: f32[N]) -> f32[N] { return x }\n"}, [], "E0133", None),
    ("unknown-zoo-model", {}, ["lenett5"], "E0133", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, dlc):
    name, files, extra, code, where = case
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    target = [str(tmp_path / next(iter(files)))] if files else []
    rc, out, err = dlc("check", *target, *extra)
    assert rc == 1, err
    assert "Traceback" not in err and "E0900" not in err, err
    assert f"error[{code}]" in err, err
    if isinstance(where, tuple):  # a flag: the caret points into the command line
        cmdline = " ".join(["dlc", "check", *target, *extra])
        where = f"1:{cmdline.rindex(where[1]) + 1}"
    if where is not None:
        first = next(line for line in err.splitlines() if f"error[{code}]" in line)
        assert re.search(rf":{where}: error\[{code}\]", first), first
    assert out == ""


def test_many_distinct_codes():
    assert len(CASES) >= 25
    assert len({c[3] for c in CASES}) >= 25


def test_independent_errors_all_reported(write, dlc):
    p = write("model m(x: f32[B, 4]) -> f32[B, 3] {\n    a = dens(x, 3)\n    b = x * nope\n    c = reshape(x, [B, 3])\n"
              "    return dense(x, 3)\n}\n")
    rc, out, err = dlc("check", p)
    assert rc == 1
    for code, line in (("E0102", 2), ("E0101", 3), ("E0209", 4)):
        assert re.search(rf":{line}:\d+: error\[{code}\]", err), err
    assert "3 errors found" in err


def test_syntax_errors_in_several_items_all_reported(write, dlc):
    p = write("block f(x: f32[N]) -> f32[N] {\n    return x +\n}\nconst a = 3 $\nmodel m(x: f32[B]) -> f32[B] {\n    return f(x\n}\n")
    rc, out, err = dlc("check", p)
    assert rc == 1
    assert err.count("error[") == 3, err


def test_poisoned_value_gives_one_error(write, dlc):
    p = write("model m(x: f32[B, 4]) -> f32[B, 3] {\n    h = dens(x, 8)\n    h2 = dense(h, 8)\n    return dense(h2, 3)\n}\n")
    rc, out, err = dlc("check", p)
    assert err.count("error[") == 1, err


def test_error_in_std_block_points_at_user_call(write, dlc):
    p = write("model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dense(x, 0)\n}\n")
    rc, out, err = dlc("check", p)
    assert rc == 1
    assert re.search(r"model.dln:2:12: error\[E0210\]", err), err
    assert "note:" in err and "std" in err


def test_dimension_mismatch_notes_origin(write, dlc):
    p = write("model m(x: f32[B, 4]) -> f32[B, 3] {\n    h = dense(x, 8)\n    return h @ x\n}\n")
    rc, out, err = dlc("check", p)
    assert "error[E0205]" in err and "f32[B, 8]" in err and "f32[B, 4]" in err
    assert "note:" in err and ":2:" in err  # where the left operand came from


def test_caret_under_span(write, dlc):
    p = write("model m(x: f32[B, 4]) -> f32[B, 3] {\n    return dens(x, 3)\n}\n")
    rc, out, err = dlc("check", p)
    lines = err.splitlines()
    i = next(k for k, l in enumerate(lines) if "return dens(x, 3)" in l)
    caret = lines[i + 1]
    assert caret.index("^") == lines[i].index("dens") and caret.count("^") == 4
    assert "help: did you mean `dense`?" in err


def test_bad_flag_is_a_usage_error(dlc):
    rc, out, err = dlc("check", "lenet5", "--bogus")
    assert rc == 2 and "unrecognized arguments: --bogus" in err and "Traceback" not in err


def test_missing_file(dlc, tmp_path):
    rc, out, err = dlc("check", tmp_path / "nope.dln")
    assert rc == 1 and "error[E0133]" in err and "does not exist" in err
