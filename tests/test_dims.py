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
