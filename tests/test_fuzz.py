"""Random and mutated .dln text never makes the front end raise: only diagnostics come out."""
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.check import check
from dsl.diagnostics import render

# DLC_FUZZ_SCALE=20 runs twenty times the examples, for a deeper search than CI's.
SCALE = int(os.environ.get("DLC_FUZZ_SCALE", "1"))
ZOO = Path(__file__).resolve().parent.parent / "zoo"
SEEDS = sorted(ZOO.glob("*.dln")) + sorted((ZOO / "std").glob("*.dln"))
TOKENS = ["model", "block", "param", "state", "scan", "in", "along", "with", "reverse", "lengths", "yield", "return",
          "require", "if", "else", "for", "repeat", "as", "use", "const", "train", "target", "step", "(", ")", "[", "]",
          "{", "}", ",", ":", "=", "->", "|>", "+", "-", "*", "/", "//", "%", "**", "@", "==", "<", "and", "not", "...",
          "x", "y", "B", "T", "N", "H", "W", "dense", "conv", "relu", "sum", "reshape", "zeros", "f32", "i64", "int",
          "layer", "0", "1", "3", "-1", "2.5", "1e9", '"s {x}"', "\n", " ", "#c\n", "*S", "std.nn", "true", "training"]


def _front_end_is_total(text):
    r = check("fuzz.dln", text=text)
    assert not any(d.code == "E0900" for d in r.diags), [d.notes for d in r.diags if d.code == "E0900"]
    for d in r.diags:
        render(d, r.sources)  # rendering any diagnostic works too


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_random_token_soup(text):
    _front_end_is_total(text)


@settings(max_examples=150 * SCALE, deadline=None)
@given(st.text(max_size=200))
def test_random_characters(text):
    _front_end_is_total(text)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_zoo_files(path, data):
    text = path.read_text()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 40)))
        kind = data.draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        tok = data.draw(st.sampled_from(TOKENS))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + f" {tok} " + text[i:]
        elif kind == "replace":
            text = text[:i] + tok + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    _front_end_is_total(text)
