"""`dlc compile`: each --emit stage, the output folder and its manifest, never overwriting silently, and
bad command lines as located diagnostics. Everything here but one slow test skips Numba's compile
(--emit or --no-warm), so it runs in seconds."""
import json
import re

import numba
import numpy as np
import pytest

from compiler import __version__
from dsl.diagnostics import display_path

NO_TRAIN = "model m(x: f32[B, 4]) -> (y: f32[B, 3]) {\n    y = dense(x, 3)\n    return y\n}\n"


def _total_params(dlc, *argv) -> int:
    rc, out, err = dlc("check", *argv)
    assert rc == 0, err
    return int(re.search(r"Total params: ([\d,]+)", out).group(1).replace(",", ""))


def _clean(err: str):
    assert "Traceback" not in err and "E0900" not in err, err


# ---- --emit: one stage on standard output, no files


def test_emit_ast(dlc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = dlc("compile", "mlp", "--emit", "ast")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Module path=zoo/mlp.dln")
    assert any(re.match(r"\s+Const name='h1'\s+@9:1$", x) for x in lines)
    assert any(re.match(r"\s+BlockDef kind='model' name='mlp' .*@14:1$", x) for x in lines)
    assert "Setting name='optimizer'" in out and "TargetDecl name='label'" in out
    rc, out, err = dlc("compile", "char_rnn", "--emit", "ast")
    assert rc == 0, err
    assert "label='rnn'" in out and "Setting name='truncate'" in out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_emit_graph(dlc):
    rc, out, err = dlc("compile", "mlp", "--emit", "graph")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "%0 = input(name=x) : f32[B, 64]  # x"
    assert "matmul(%0, %1) : f32[B, 512]  # dense/matmul" in out and lines[-1].startswith("return logits=%")
    assert "rand_uniform" not in out  # the forward (inference) graph: dropout is the identity
    rc, out, err = dlc("compile", "char_rnn", "--emit", "graph")
    assert rc == 0, err
    scan = next(i for i, x in enumerate(out.splitlines()) if "= scan(" in x)
    assert out.splitlines()[scan + 1].startswith("    %")  # the body, indented under it


def test_emit_shapes_is_the_check_table(dlc):
    rc, out, err = dlc("compile", "mlp", "--emit", "shapes", "--set", "h1=128")
    rc2, out2, _ = dlc("check", "mlp", "--set", "h1=128")
    assert rc == rc2 == 0, err
    assert out == out2 and f"Total params: {64 * 128 + 128 + 128 * 256 + 256 + 256 * 10 + 10:,}" in out


def test_emit_grad(dlc, write):
    rc, out, err = dlc("compile", "mlp", "--emit", "grad")
    assert rc == 0, err
    assert "rand_uniform" in out and "# grad/" in out  # the training graph, differentiated
    ret = out.splitlines()[-1]
    assert ret.startswith("return ") and "new:dense/W=%" in ret and "new:dense/W:m=%" in ret  # adam's slots
    rc, out, err = dlc("compile", "char_rnn", "--emit", "grad")
    assert rc == 0, err
    assert out.count("= scan(") >= 2  # the forward scan and backpropagation through time
    assert "new:rnn/Wh:accum" in out  # adagrad
    rc, out, err = dlc("compile", "gan", "--emit", "grad")  # alternating phases: one step each
    assert rc == 0, err
    assert out.startswith("# train_step_0\n") and "\n# train_step_1\n" in out
    rc, out, err = dlc("compile", write(NO_TRAIN), "--emit", "grad")
    assert rc == 1 and "no train section" in err and "--emit graph" in err
    _clean(err)


def test_emit_schedule(dlc, write):
    rc, out, err = dlc("compile", "mlp", "--emit", "schedule")
    assert rc == 0, err
    assert out.startswith("[0] matmul") and "fused over [B, 512]" in out
    assert "reading operand 1 transposed" in out  # a gradient matmul: the training step
    assert re.search(r"^updated in place: .*dense/W", out, re.M)
    rc, out, err = dlc("compile", "char_rnn", "--emit", "schedule")
    assert rc == 0, err
    assert re.search(r"^\[\d+\] scan: .*\n    \[0\] ", out, re.M)  # a scan item and its body's items
    rc, out, err = dlc("compile", write(NO_TRAIN), "--emit", "schedule")  # no train section: predict
    assert rc == 0, err
    assert "matmul" in out and "transposed" not in out and out.rstrip().endswith("updated in place: -")
    rc, out, err = dlc("compile", "lenet5", "--emit", "schedule")  # each convolution names its kernel
    assert rc == 0, err
    # c1: one channel in, 25 taps; c3: 6 channels in, 150 taps, 16 out; each with its bias and tanh
    assert re.search(r"^\[0\] conv by conv2d_direct with an epilogue over \[B, 6, 28, 28\]: %\d+ conv, %\d+ add, %\d+ tanh ",
                     out, re.M)
    assert re.search(r"^\[\d+\] conv by conv2d_direct with an epilogue over \[B, 16, 10, 10\]: ", out, re.M)
    assert "conv by conv2d_wide_filter" in out and "conv by conv2d_direct_filter: " in out
    assert "conv_transpose by conv_transpose2d_depthwise: " in out
    rc, out, err = dlc("compile", "vgg16", "--emit", "schedule")  # 16 channels in, 32 out: columns pay
    assert rc == 0, err
    assert re.search(r"^\[\d+\] conv by conv2d_wide \(a GEMM per min\(B, \d+\) images\) with an epilogue over "
                     r"\[B, 32, 16, 16\]", out, re.M)


def test_emit_py_is_the_module_the_model_compiles(dlc, tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    rc, out, err = dlc("compile", "mlp", "--emit", "py")
    assert rc == 0, err
    assert out.startswith("# Generated by dlc from mlp.")
    for fn in ("predict", "eval_step", "train_step"):
        assert re.search(rf"^def {fn}\(", out, re.M)
    compile(out, "mlp.py", "exec")  # valid Python
    assert not (tmp_path / "cache").exists()  # generated, not written to the cache or imported
    from runtime.model import Model
    assert out == Model("mlp", target="cpu").compiled().source
    rc, out, err = dlc("compile", "char_rnn", "--emit", "py", "--set", "hidden=16")
    assert rc == 0, err
    assert out == Model("char_rnn", {"hidden": 16}, target="cpu").compiled().source


# ---- the output folder


def test_folder_and_manifest(dlc, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = dlc("compile", "mlp", "-o", out, "--no-warm")
    assert rc == 0, err
    assert f"wrote {out / 'mlp.py'}" in stdout and f"wrote {out / 'manifest.json'}" in stdout
    assert "--no-warm" in stdout and re.search(r"in \d+\.\d+ s", stdout)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mlp.py"]
    source = (out / "mlp.py").read_text()
    m = json.loads((out / "manifest.json").read_text())
    from runtime.compiled import cache_key
    assert m["model"] == "mlp" and m["source"].endswith("mlp.dln") and m["target"] == "cpu"
    assert (m["dlc"], m["numba"], m["numpy"]) == (__version__, numba.__version__, np.__version__)
    assert m["cache_key"] == cache_key(source) and m["module"] == "mlp.py"
    assert list(m["functions"]) == ["predict", "eval_step", "train_step"]
    pred, ev, tr = (m["functions"][k] for k in ("predict", "eval_step", "train_step"))
    assert pred["inputs"] == [{"name": "x", "role": "input", "dtype": "f32", "shape": ["B", "64"]}]
    assert pred["outputs"] == [{"name": "logits", "dtype": "f32", "shape": ["B", "10"]}]
    assert [(i["name"], i["role"], i["dtype"], i["shape"]) for i in ev["inputs"]] == [
        ("x", "input", "f32", ["B", "64"]), ("label", "target", "i64", ["B"])]
    assert {"name": "loss", "dtype": "f32", "shape": []} in ev["outputs"]
    assert [i["name"] for i in tr["inputs"]] == ["x", "label", "lr", "step"]
    assert {i["role"] for i in tr["inputs"][2:]} == {"hyper"}
    # the parameters are what `dlc check` counts, with their shapes
    params = [p for p in pred["persistent"] if p["kind"] in ("param", "state")]
    assert sum(p["size"] for p in params) == _total_params(dlc, "mlp")
    assert {"key": "dense/W", "kind": "param", "dtype": "f32", "shape": ["64", "512"], "size": 64 * 512} in params
    assert pred["updates"] == [] and ev["persistent"] == pred["persistent"]
    # the training step updates every parameter and adam's two slots per parameter
    slots = [p for p in tr["persistent"] if p["kind"] == "slot"]
    assert len(slots) == 2 * len(params) and sum(p["size"] for p in slots) == 2 * _total_params(dlc, "mlp")
    assert sorted(tr["updates"]) == sorted(p["key"] for p in tr["persistent"])
    assert not any(o["name"].startswith("new:") for o in tr["outputs"])
    # the one constant: the loss's seed of -1 for the mean's gradient, folded from a fill
    assert [(c["dtype"], c["shape"]) for c in m["constants"]] == [("f32", ["1"])]


def test_folder_with_set_scan_and_constants(dlc, tmp_path):
    rc, _, err = dlc("compile", "char_rnn", "-o", tmp_path / "c", "--set", "hidden=32", "--no-warm")
    assert rc == 0, err
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["sets"] == {"hidden": 32}
    tr = m["functions"]["train_step"]
    assert tr["inputs"][:2] == [{"name": "chars", "role": "input", "dtype": "i64", "shape": ["B", "T"]},
                                {"name": "next_chars", "role": "target", "dtype": "i64", "shape": ["B", "T"]}]
    params = [p for p in m["functions"]["predict"]["persistent"] if p["kind"] == "param"]
    assert sum(p["size"] for p in params) == _total_params(dlc, "char_rnn", "--set", "hidden=32")
    assert {p["key"] for p in tr["persistent"] if p["kind"] == "slot"} == {p["key"] + ":accum" for p in params}
    # lenet5's average pooling keeps constant weights: listed once, apart from the parameters
    rc, _, err = dlc("compile", "lenet5", "-o", tmp_path / "l", "--no-warm")
    assert rc == 0, err
    m = json.loads((tmp_path / "l" / "manifest.json").read_text())
    assert m["constants"] and all(c["key"].startswith("const:") for c in m["constants"])
    assert not any(p["key"].startswith("const:") for f in m["functions"].values() for p in f["persistent"])


def test_never_overwrites_without_force(dlc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = dlc("compile", "mlp", "--no-warm")  # default folder: build/NAME
    assert rc == 0, err
    built = tmp_path / "build" / "mlp"
    assert (built / "mlp.py").is_file() and (built / "manifest.json").is_file()
    (built / "notes.txt").write_text("mine")
    (built / "mlp.py").write_text("# edited")
    rc, out, err = dlc("compile", "mlp", "--no-warm")
    assert rc == 1 and "already exists" in err and "--force" in err
    assert (built / "mlp.py").read_text() == "# edited"
    rc, out, err = dlc("compile", "mlp", "--no-warm", "--force")
    assert rc == 0, err
    assert (built / "mlp.py").read_text().startswith("# Generated by dlc")
    assert (built / "notes.txt").read_text() == "mine"  # replaces its own files, nothing else
    assert not [p for p in built.iterdir() if p.name.startswith(".")]  # no temporary files left
    (tmp_path / "afile").write_text("x")
    rc, out, err = dlc("compile", "mlp", "-o", "afile", "--no-warm", "--force")
    assert rc == 1 and "not a folder" in err and (tmp_path / "afile").read_text() == "x"
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --force
    rc, out, err = dlc("compile", "mlp", "-o", "empty", "--no-warm")
    assert rc == 0, err


# ---- bad command lines: located diagnostics, exit 1, no traceback, nothing written


@pytest.mark.parametrize("argv, code, where", [
    (["--set", "h1=1.2.3"], "E0131", "<command line>:1:26:"),
    (["--set=h1=1.2.3"], "E0131", "<command line>:1:26:"),
    (["--set", "h1"], "E0131", "<command line>:1:23:"),
    (["--set", "hh1=12"], "E0130", "<command line>:1:23:"),
    (["--set", "h1=0"], "E0210", "zoo/mlp.dln:15:14:"),
    (["--with", "mask"], "E0132", "<command line>:1:24:"),
])
def test_bad_options(dlc, tmp_path, monkeypatch, argv, code, where):
    monkeypatch.chdir(tmp_path)
    for emit in ([], ["--emit", "py"]):
        rc, out, err = dlc("compile", "mlp", *argv, *emit)
        assert rc == 1 and f"error[{code}]" in err and where in err and "^" in err, err
        _clean(err)
        assert out == "" and not (tmp_path / "build").exists()


def test_missing_or_broken_model(dlc, write, tmp_path):
    rc, out, err = dlc("compile", "mlpx", "-o", tmp_path / "o")
    assert rc == 1 and "error[E0133]" in err and "did you mean `mlp`?" in err
    _clean(err)
    rc, out, err = dlc("compile", tmp_path / "nope.dln", "--emit", "ast")
    assert rc == 1 and "error[E0133]" in err and "nope.dln` does not exist" in err
    p = write("model m(x: f32[B, 4]) -> (y: f32[B, 4]) {\n    return dens(x, 4)\n}\n")
    for argv in (["-o", tmp_path / "o"], ["--emit", "py"]):
        rc, out, err = dlc("compile", p, *argv)
        assert rc == 1 and "error[E0102]" in err and f"{display_path(str(p))}:2:12:" in err, err
        _clean(err)
    rc, out, err = dlc("compile", p, "--emit", "ast")  # it parses: the AST is there to look at
    assert rc == 0 and "Name id='dens'" in out
    p = write("model m(x: f32[B, 4]) -> (y: f32[B, 4]) {\n    return x +\n}\n", "syntax.dln")
    rc, out, err = dlc("compile", p, "--emit", "ast")
    assert rc == 1 and f"{display_path(str(p))}:3:1:" in err  # paths as diagnostics show them (cwd-relative)
    _clean(err)
    assert not (tmp_path / "o").exists()


def test_flag_errors(dlc, tmp_path):
    rc, out, err = dlc("compile", "mlp", "--emit", "py", "-o", tmp_path / "x")
    assert rc == 1 and "--emit prints to standard output" in err and not (tmp_path / "x").exists()
    rc, out, err = dlc("compile", "mlp", "--target", "gpu")
    assert rc == 2 and "invalid choice: 'gpu'" in err
    rc, out, err = dlc("compile", "mlp", "--emit", "llvm")
    assert rc == 2 and "invalid choice: 'llvm'" in err
    rc, out, err = dlc("compile", "--help")
    assert rc == 0 and "--no-warm" in out and "--emit" in out and "manifest.json" in out


def test_bad_compile_jobs(dlc, tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_COMPILE_JOBS", "0")
    rc, out, err = dlc("compile", "xor", "-o", tmp_path / "x")
    assert rc == 1 and not (tmp_path / "x").exists()
    assert err == "error: DLC_COMPILE_JOBS should be a whole number of processes, 1 or more, not `0`\n"


# ---- the one test that compiles with Numba


@pytest.mark.slow
def test_warm_cache(dlc, tmp_path):
    import os
    from pathlib import Path
    rc, out, err = dlc("compile", "mlp", "-o", tmp_path / "out")
    assert rc == 0, err
    assert re.search(r"compiled predict, eval_step, train_step for cpu in [\d.]+ s \(generating [\d.]+ s, "
                     r"Numba [\d.]+ s\); cached as ", out)
    key = json.loads((tmp_path / "out" / "manifest.json").read_text())["cache_key"]
    index = {f.name.split(".")[1].split("-")[0] for f in Path(os.environ["NUMBA_CACHE_DIR"]).rglob(f"m_{key}.*.nbi")}
    assert {"predict", "eval_step", "train_step"} <= index  # Numba's machine code is on disk for the next run


def test_what_the_cpu_target_cannot_compile_is_a_located_diagnostic(dlc, write, tmp_path):
    """A scan whose carries swap values: `dlc compile` says where, and that the reference interpreter runs
    it; nothing is written."""
    p = write("model m(x: f32[B, T, 2]) -> (y: f32[B, T, 2]) {\n"
              "    ys, a, b = scan xt in x along 1 with a = x[:, 0, :], b = x[:, 1, :] {\n"
              "        t = a\n        a = b\n        b = t\n        yield a + xt\n    }\n    return ys\n}\n")
    rc, out, err = dlc("compile", p, "-o", tmp_path / "out", "--no-warm")
    _clean(err)
    assert rc == 1 and out == ""
    assert f"error: {display_path(str(p))}:2:" in err and "carries swap values" in err, err
    assert "help: the reference interpreter runs it" in err
    assert not (tmp_path / "out").exists()
