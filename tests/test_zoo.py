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


@pytest.mark.parametrize("name,expected", [("lenet5", 61_706), ("xor", 9), ("mlp", 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
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
