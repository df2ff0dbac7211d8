"""The parser: every construct of the language becomes the right AST, with spans."""
import pytest

from dsl import ast as A
from dsl.diagnostics import DiagnosticError
from dsl.parser import parse

SRC = '''use std.nn
use "blocks.dln" as b
const classes = 10   # comment
const eps = 1e-5

block dense2(x: f32[*S, I], units: int, act: layer = relu, sizes: [int] = [1, 2]) -> f32[*S, units] {
    param W: [I, units] = normal(std=0.02)
    state m: f64[units] = zeros
    y = x @ W
    if units > 3 { y = -y } else if units == 2 { y = y } else { y = y * 2 }
    require units > 0, "units must be positive, got {units}"
    for (c, k) in [(64, 3), (128, 3)] as stage { y = y }
    repeat 3 as layer { y = y }
    return act(y)
}

model m(x: f32[B, T, 8], lens: i64[B]) -> (y: f32[B, T, 16], f32[B]) {
    h = x |> dense2(16) as d1
          |> relu
    hs, hT = scan xt in h along 1, m in h along 1 with s = zeros([B, 16]), c = s reverse lengths lens {
        s = tanh(xt + s)
        yield s
    }
    z = h[:, -1, 0:3] + h[..., ::2] ** -2
    w = transpose(d1.W)
    q = not a and b or c == d
    return hs, sum(hT, axis=1)
} train {
    target t: i64[B]
    loss = cross_entropy(y, t)
    optimizer = adam(lr=1e-3)
    step disc repeat 2 { loss = mean(x); updates = [d1] }
}
'''


@pytest.fixture(scope="module")
def mod():
    return parse(SRC, "t.dln")


def test_items(mod):
    assert [u.module for u in mod.uses] == ["std.nn", "blocks.dln"]
    assert mod.uses[1].is_file and mod.uses[1].alias == "b"
    assert [c.name for c in mod.consts] == ["classes", "eps"]
    assert mod.consts[1].value.value == 1e-5
    assert [(b.kind, b.name) for b in mod.blocks] == [("block", "dense2"), ("model", "m")]


def test_signature(mod):
    b = mod.blocks[0]
    x, units, act, sizes = b.params
    assert isinstance(x.type, A.TensorType) and isinstance(x.type.dims[0], A.VariadicDim)
    assert units.type.name == "int" and act.default.id == "relu"
    assert sizes.type.name == "list" and sizes.type.elem.name == "int"
    assert b.returns[0].type.dtype == "f32"


def test_statements(mod):
    body = mod.blocks[0].body
    kinds = [type(s).__name__ for s in body]
    assert kinds == ["ParamDecl", "ParamDecl", "Assign", "If", "Require", "For", "Repeat", "Return"]
    assert body[1].kind == "state" and body[1].type.dtype == "f64"
    assert body[0].init.func.id == "normal"
    assert isinstance(body[3].orelse[0], A.If)
    assert body[5].label == "stage" and [n for n, _ in body[5].targets] == ["c", "k"]
    assert body[6].label == "layer" and body[6].count.value == 3
    assert body[4].message.value.startswith("units must")


def test_pipe_and_label(mod):
    h = mod.blocks[1].body[0].value
    assert isinstance(h, A.Call) and h.func.id == "relu" and h.piped
    inner = h.args[0].value
    assert inner.func.id == "dense2" and inner.label == "d1" and inner.args[0].value.id == "x"


def test_scan(mod):
    s = mod.blocks[1].body[1].value
    assert isinstance(s, A.Scan)
    assert [q.name for q in s.seqs] == ["xt", "m"] and [c.name for c in s.carries] == ["s", "c"]
    assert s.reverse.value is True and s.lengths.id == "lens"
    assert isinstance(s.body[-1], A.Yield)


def test_indexing_and_operators(mod):
    z = mod.blocks[1].body[2].value
    assert z.op == "+"
    assert isinstance(z.left, A.Index) and isinstance(z.left.subs[2], A.Slice)
    assert isinstance(z.right.left.subs[0], A.EllipsisLit) and z.right.op == "**"
    q = mod.blocks[1].body[4].value
    assert q.op == "or" and q.left.op == "and" and q.left.left.op == "not"


def test_train_section(mod):
    tr = mod.blocks[1].train
    kinds = [type(i).__name__ for i in tr.items]
    assert kinds == ["TargetDecl", "Setting", "Setting", "Phase"]
    assert tr.items[3].repeat.value == 2 and [s.name for s in tr.items[3].items] == ["loss", "updates"]


def test_spans_point_at_source(mod):
    w = mod.blocks[1].body[3].value
    assert SRC[w.span.start:w.span.end] == "transpose(d1.W)"
    line = SRC.split("\n")[w.span.line - 1]
    assert line[w.span.col - 1:].startswith("transpose")


def test_keywords_are_reserved():
    with pytest.raises(DiagnosticError) as e:
        parse("model m(x: f32[B]) -> f32[B] {\n    y = x +\n    return y\n}\n", "k.dln")
    d = e.value.diagnostics[0]
    assert d.code == "E0001" and (d.span.line, d.span.col) == (3, 5) and "expected an expression" in d.message


def test_expected_tokens_in_words():
    with pytest.raises(DiagnosticError) as e:
        parse("model m(x: f32[B]) -> f32[B] {\n    return relu(x\n}\n", "k.dln")
    assert "expected `,` or `)`" in e.value.diagnostics[0].message
    with pytest.raises(DiagnosticError) as e:
        parse("model m(x: f32[B]) -> f32[B] {\n    def f(): pass\n}\n", "k.dln")
    assert "block NAME" in (e.value.diagnostics[0].help or "")


def test_numbers_and_strings():
    m = parse('const a = 61_706\nconst b = .5\nconst c = "tab\\tquote\\""\n', "n.dln")
    assert [c.value.value for c in m.consts] == [61706, 0.5, 'tab\tquote"']


def test_parsed_files_are_cached_on_disk_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    """A new process unpickles a file's AST instead of parsing it; a damaged entry is parsed again, and a
    file with a syntax error is never cached."""
    from dsl import loader
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(loader, "_PARSED", {})  # as in a new process
    model = tmp_path / "m.dln"
    model.write_text("model m(x: f32[B, 4]) {\n    return relu(x)\n}\n")
    program = loader.load(model)
    first = program.main
    entries = list((tmp_path / "cache" / "ast").glob("*.pickle"))
    assert len(entries) == len(program.modules) > 1  # the model and the standard library it reads
    calls = []
    monkeypatch.setattr(loader, "parse", lambda *a: calls.append(a) or pytest.fail("parsed again"))
    monkeypatch.setattr(loader, "_PARSED", {})
    assert loader.load(model).main == first and not calls
    mine = [p for p in entries if loader.pickle.loads(p.read_bytes()).path == str(model)]
    assert len(mine) == 1
    mine[0].write_bytes(b"\x80\x05not a pickle")
    monkeypatch.setattr(loader, "parse", parse)
    monkeypatch.setattr(loader, "_PARSED", {})
    assert loader.load(model).main == first
    bad = tmp_path / "bad.dln"
    bad.write_text("model m(x: f32[B, 4]) {\n    return relu(x\n}\n")
    before = set((tmp_path / "cache" / "ast").glob("*.pickle"))
    with pytest.raises(DiagnosticError):
        loader.load(bad)
    assert set((tmp_path / "cache" / "ast").glob("*.pickle")) == before


def test_a_file_the_cache_cannot_hold_still_loads(tmp_path, monkeypatch):
    """Pickling fails for an AST nested past the recursion limit: the file loads, uncached."""
    from dsl import loader

    def too_deep(*a, **k):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(loader, "_PARSED", {})
    monkeypatch.setattr(loader.pickle, "dumps", too_deep)
    model = tmp_path / "m.dln"
    model.write_text("model m(x: f32[B, 4]) {\n    return relu(x)\n}\n")
    assert [b.name for b in loader.load(model).main.blocks] == ["m"]
    assert not list((tmp_path / "cache").rglob("*.pickle"))
