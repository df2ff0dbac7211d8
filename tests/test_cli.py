"""The command line as a user types it."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_check_lenet5_summary(dlc):
    rc, out, err = dlc("check", "lenet5")
    assert rc == 0, err
    assert "Total params: 61,706" in out
    assert "Trainable params: 61,706" in out and "Non-trainable params: 0" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in ("c1", "s2", "c3", "f5", "output")}
    assert "f32[B, 6, 28, 28]" in rows["c1"] and rows["c1"].rstrip().endswith("156")
    assert "f32[B, 6, 14, 14]" in rows["s2"]
    assert "f32[B, 16, 10, 10]" in rows["c3"] and rows["c3"].rstrip().endswith("2,416")
    assert rows["f5"].rstrip().endswith("48,120") and rows["output"].rstrip().endswith("850")
    assert re.search(r"Forward FLOPs per example: [\d,]+", out)


def test_check_with_bind_shows_sizes(dlc):
    rc, out, err = dlc("check", "lenet5", "--bind", "B=32")
    assert rc == 0 and "f32[32, 6, 28, 28]" in out and "FLOPs per batch" in out


def test_check_with_set(dlc):
    rc, out, err = dlc("check", "mlp", "--set", "h1=256", "--set", "h2=32")
    assert rc == 0, err
    assert f"Total params: {64 * 256 + 256 + 256 * 32 + 32 + 32 * 10 + 10:,}" in out


def test_depth_shows_nested_layers(dlc):
    rc, out1, _ = dlc("check", "gpt")
    rc, out2, _ = dlc("check", "gpt", "--depth", "3")
    assert rc == 0 and len(out2.splitlines()) > len(out1.splitlines())


def test_graph_dot(dlc, tmp_path):
    out = tmp_path / "lenet.dot"
    rc, stdout, err = dlc("graph", "lenet5", "-o", out)
    assert rc == 0, err
    text = out.read_text()
    assert text.startswith('digraph "lenet5"') and "cluster" in text and "conv" in text
    # never overwritten silently
    rc, stdout, err = dlc("graph", "lenet5", "-o", out)
    assert rc == 1 and "already exists" in err and out.read_text() == text
    rc, stdout, err = dlc("graph", "lenet5", "-o", out, "--force")
    assert rc == 0


def test_graph_svg_without_graphviz(dlc, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on this PATH
    rc, out, err = dlc("graph", "lenet5", "-o", tmp_path / "g.svg")
    assert rc == 1 and "Graphviz" in err and "-o" in err and not (tmp_path / "g.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_svg_with_graphviz(dlc, tmp_path):
    rc, out, err = dlc("graph", "lenet5", "-o", tmp_path / "g.svg")
    assert rc == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_graph_of_a_broken_model_writes_nothing(dlc, write, tmp_path):
    p = write("model m(x: f32[B, 4]) -> f32[B, 4] {\n    return dens(x, 4)\n}\n")
    rc, out, err = dlc("graph", p, "-o", tmp_path / "g.dot")
    assert rc == 1 and "E0102" in err and not (tmp_path / "g.dot").exists()


def test_explain(dlc):
    rc, out, err = dlc("explain", "E0206")
    assert rc == 0 and "(W - F + 2P) / S + 1" in out
    rc, out, err = dlc("explain")
    assert rc == 0 and out.count("\nE0") >= 25
    rc, out, err = dlc("explain", "E9999")
    assert rc == 1 and "no error code" in err


def test_every_code_in_use_is_explained():
    from dsl.diagnostics import CODES
    used = set()
    for p in list((ROOT / "compiler").glob("*.py")) + list((ROOT / "dsl").glob("*.py")):
        used |= set(re.findall(r'"(E\d{4})"', p.read_text()))
    assert used <= set(CODES), used - set(CODES)


def test_version_and_help(dlc):
    from compiler import __version__
    rc, out, err = dlc("--version")
    assert rc == 0 and out.strip() == f"dlc {__version__}"
    rc, out, err = dlc("--help")
    assert rc == 0 and all(c in out for c in ("check", "graph", "explain"))
    for cmd in ("check", "graph", "explain"):
        rc, out, err = dlc(cmd, "--help")
        assert rc == 0 and "usage: dlc " + cmd in out


def test_no_command_prints_help(dlc):
    rc, out, err = dlc()
    assert rc == 2 and "usage" in out


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    """The real process: exit codes and streams as a shell sees them."""
    exe = shutil.which("dlc")
    cmd = [exe] if exe else [sys.executable, "-m", "dlc"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # when dlc is not installed, run it from the checkout
    r = subprocess.run(cmd + ["check", "lenet5"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "61,706" in r.stdout
    bad = tmp_path / "bad.dln"
    bad.write_text("model m(x: f32[B, 4]) -> f32[B, 4] {\n    return x @ x\n}\n")
    r = subprocess.run(cmd + ["check", str(bad)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "error[E0205]" in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
