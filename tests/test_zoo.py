"""Every zoo model and every standard block parses and shape-checks, in both modes, with the parameter
counts their papers publish."""
import time
import tracemalloc
from pathlib import Path

import pytest

from compiler.check import check
from compiler.report import param_totals
from compiler.shapes import infer

ZOO = Path(__file__).resolve().parent.parent / "zoo"
MODELS = sorted(p.stem for p in ZOO.glob("*.dln"))


def total(r):
    assert r.ok, "\n".join(f"{d.span}: {d.code} {d.message}" for d in r.diags)
    tr, st = param_totals(r.graph)
    return int((tr + st).value)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("training", [False, True])
def test_zoo_model_checks(name, training):
    r = check(name, training=training)
    total(r)
    types, problems = infer(r.graph)
    assert not problems
    assert all(types[(r.graph.name, n)] == r.graph.type(n) for n in r.graph.nodes())


@pytest.mark.parametrize("name,expected", [("lenet5", 61_706), ("xor", 2 * 16 + 16 + 16 + 1), ("mlp", 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),
                                           ("char_lstm", 4 * (65 * 128 + 128 * 128 + 128) + 128 * 65 + 65)])
def test_parameter_counts(name, expected):
    assert total(check(name)) == expected


def gpt_sets(layers, d_model, heads, vocab, context):
    return {k: (None, v) for k, v in dict(layers=layers, d_model=d_model, heads=heads, vocab=vocab, context=context).items()}


def test_gpt3_small_is_125m():
    n = total(check("gpt", gpt_sets(12, 768, 12, 50257, 2048)))
    assert n == 125_226_240  # tied output layer, as in GPT-2/3


def test_gpt3_175b_without_allocating_weights():
    tracemalloc.start()
    t0 = time.perf_counter()
    r = check("gpt", gpt_sets(96, 12288, 96, 50257, 2048))
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = total(r)
    assert 174e9 < n < 176e9, n
    assert n == 174_604_259_328
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB: weights must not be allocated"
    print(f"GPT-3 175B checked in {elapsed:.2f} s, {n:,} parameters, peak {peak / 2**20:.1f} MiB")


def documented_lines():
    """Every `dlc check NAME --set ...` line in the zoo's file headers: the paper-size configurations."""
    import re
    import shlex
    out = []
    for p in sorted(ZOO.glob("*.dln")):
        for line in p.read_text().splitlines():
            m = re.search(r"dlc check (\w+)((?: --set [^\s`]+)+)", line)
            if line.startswith("#") and m:
                args = shlex.split(m.group(2))
                sets = dict(a.split("=", 1) for a in args if a != "--set")
                out.append((m.group(1), sets))
    return out


DOCUMENTED = documented_lines()


@pytest.mark.parametrize("name,sets", DOCUMENTED, ids=[f"{n}:{'+'.join(s)}" for n, s in DOCUMENTED])
def test_documented_configurations_check(name, sets):
    from compiler.cli import _literal
    r = check(name, {k: (None, _literal(v)) for k, v in sets.items()})
    total(r)


def trainable(name, **sets):
    r = check(name, {k: (None, v) for k, v in sets.items()})
    assert r.ok, "\n".join(f"{d.span}: {d.code} {d.message}" for d in r.diags)
    return int(param_totals(r.graph)[0].value)


IMAGENET = dict(size=224, classes=1000)


@pytest.mark.parametrize("name,sets,expected", [
    ("alexnet", dict(width=64, hidden=4096, **IMAGENET), 61_100_840),
    ("vgg16", dict(width=64, hidden=4096, **IMAGENET), 138_357_544),
    ("googlenet", IMAGENET, 6_624_904),
    ("resnet18", dict(width=64, **IMAGENET), 11_689_512),
    ("resnet34", dict(width=64, **IMAGENET), 21_797_672),
    ("resnet50", dict(width=64, **IMAGENET), 25_557_032),
    ("bert", dict(layers=12, d_model=768, heads=12, ffn=3072, vocab=30522, max_len=512, mlm_head=False), 109_482_240),
    ("gpt", dict(layers=12, d_model=768, heads=12, vocab=50257, context=2048), 125_226_240),
    ("xor", dict(hidden=2), 9),
    ("seq2seq", dict(layers=4, hidden=1000, embed=1000, src_vocab=160000, tgt_vocab=80000), 384_112_000),
])
def test_published_parameter_counts(name, sets, expected):
    """The faithful configurations give the counts their papers or reference implementations publish
    (trainable parameters: batchnorm running statistics are buffers in PyTorch, state here)."""
    assert trainable(name, **sets) == expected


@pytest.mark.parametrize("name", MODELS)
def test_optional_inputs_both_ways(name):
    r = check(name)
    for opt in r.graph.optional_inputs:
        r2 = check(name, present={opt})
        total(r2)
        assert opt in {r2.graph.node(n)["name"] for n in r2.graph.inputs}


@pytest.mark.parametrize("name", MODELS)
def test_every_zoo_file_names_its_source(name):
    head = (ZOO / f"{name}.dln").read_text().split("\n", 3)[:3]
    assert head[0].startswith("#") and len(" ".join(head)) > 60, f"{name}.dln needs a header naming its source"


def test_readme_lists_every_zoo_model():
    readme = (ZOO.parent / "README.md").read_text()
    table = readme[readme.index("## The zoo"):readme.index("## The language")]
    missing = [m for m in MODELS if f"`{m}`" not in table]
    assert not missing, f"README's zoo table lacks {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_graph_renders(name, tmp_path):
    import shutil
    import subprocess
    from compiler.report import to_dot
    dot = to_dot(check(name).graph)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    if shutil.which("dot"):
        r = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True)
        assert r.returncode == 0, r.stderr.decode()


def test_check_takes_plain_values_for_sets_and_binds():
    """Python callers may pass plain values; the located form is what the command line passes."""
    plain = check("mlp", {"h1": 32}, binds={"B": 4})
    located = check("mlp", {"h1": (None, 32)}, binds={"B": (None, 4)})
    assert total(plain) == total(located) == 64 * 32 + 32 + 32 * 256 + 256 + 256 * 10 + 10
