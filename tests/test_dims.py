from compiler.dims import Dim, solve

H, W, B = Dim.sym("H"), Dim.sym("W"), Dim.sym("B")


def test_normalisation_makes_spellings_equal():
    assert (H + 2 * 2 - 5) / 1 + 1 == H
    assert (H - 3) / 2 + 1 == (H - 1) / 2
    assert H * W == W * H
    assert 784 * B / B == Dim.const(784)


def test_text():
    assert str((H - 3) / 2 + 1) == "(H - 1)/2"
    assert str(64 * B * H + 3) == "64*B*H + 3"
    assert str(-H) == "-H"


def test_substitution_and_exactness():
    e = (H - 3) / 2 + 1
    assert e.subs({"H": 9}) == Dim.const(4)
    assert not e.subs({"H": 8}).is_int
    assert (H // 2).subs({"H": 7}) == Dim.const(3)
    assert ((H % 4) + 1).subs({"H": 10}) == Dim.const(3)


def test_solve_linear():
    assert solve(Dim.sym("N") * 2 + 1, Dim.const(11), {"N"}) == ("N", Dim.const(5))
    assert solve(Dim.sym("N") * Dim.sym("N"), Dim.const(9), {"N"}) is None


def test_symbols():
    assert ((H + W) / 2).symbols() == {"H", "W"}
    assert Dim.sym("T").bare_symbol() == "T" and (2 * H).bare_symbol() is None


def test_a_pickled_dim_works_in_another_process():
    """The generated-code cache pickles Dims: one unpickled in a new process (other string hashes, no atoms
    made yet) must hash like its equal made there and evaluate its atoms (min, floor, division)."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path
    from compiler.dims import dmin
    dims = [dmin(B, 36), (H - 5) // 2 + 1, H / W + 1, H * W]
    script = (f"import pickle, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
              "from compiler.dims import Dim, dmin\n"
              "a, b, c, d = pickle.loads(sys.stdin.buffer.read())\n"
              "B, H, W = Dim.sym('B'), Dim.sym('H'), Dim.sym('W')\n"
              "print(a.subs({'B': 64}), a.subs({'B': 8}), b.subs({'H': 11}), c.subs({'H': 12, 'W': 4}),\n"
              "      len({d, H * W}), hash(a) == hash(dmin(B, 36)))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(dims), capture_output=True,
                             env={"PYTHONHASHSEED": seed}, check=True)
        assert out.stdout.decode().split() == ["36", "8", "4", "4", "1", "True"]
