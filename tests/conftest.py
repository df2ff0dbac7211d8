import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Compiled artifacts of a test run never land in the user's cache, and are gone after it.
_TMP = tempfile.mkdtemp(prefix="dlc-tests-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_TMP, "numba"))
os.environ.setdefault("DLC_CACHE_DIR", os.path.join(_TMP, "dlc"))
# The semantics tests (training, data, CLI) run on the reference interpreter, which needs no compile time;
# the compiled target is tested against it in test_backend.py and by the cpu end-to-end runs there.
os.environ.setdefault("DLC_TARGET", "reference")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture
def dlc(capsys):
    """Run the CLI in-process: returns (exit status, stdout, stderr)."""
    from compiler.cli import main

    def run(*argv):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run


@pytest.fixture
def write(tmp_path):
    def w(text, name="model.dln"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p
    return w
