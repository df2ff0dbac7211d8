"""A non-editable install into a fresh virtual environment works from any directory: the grammar and the
zoo travel inside the wheel."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_install_runs_from_elsewhere(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dlc = venv / "bin" / "dlc"
    r = subprocess.run([str(dlc), "check", "lenet5"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "Total params: 61,706" in r.stdout
    model = elsewhere / "tiny.dln"
    model.write_text("model tiny(x: f32[B, 4]) -> f32[B, 2] {\n    return dense(x, 2)\n}\n")
    r = subprocess.run([str(dlc), "check", "tiny.dln"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "Total params: 10" in r.stdout, r.stderr
    # the installed package does not read the source tree
    r = subprocess.run([str(py), "-c", "import dsl.parser as p; print(p.grammar_path())"], cwd=elsewhere,
                       capture_output=True, text=True, env=env)
    assert str(venv) in r.stdout, r.stdout + r.stderr
