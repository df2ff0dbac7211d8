"""Shape rules, table-driven: every primitive on good and bad inputs, symbolic and concrete."""
import pytest

from compiler.dims import Dim
from compiler.graph import TType
from compiler.ops import OPS, ShapeError


def T(spec, dtype="f32"):
    dims = []
    for d in spec.split(",") if spec else []:
        d = d.strip()
        dims.append(Dim.const(int(d)) if d.lstrip("-").isdigit() else Dim.sym(d))
    return TType(tuple(dims), dtype)


def S(t: TType) -> str:
    return ",".join(str(d) for d in t.shape)


D = {"axis": None, "keepdims": False}
W = {"stride": 1, "pad": 0, "dilation": 1, "round": "exact", "groups": 1}

# (op, inputs, attrs, expected shape "a,b" | error code, expected dtype or None)
OK = [
    ("exp", [T("B,3")], {}, "B,3", "f32"),
    ("neg", [T("B,3", "i64")], {}, "B,3", "i64"),
    ("add", [T("B,3"), T("3")], {}, "B,3", "f32"),
    ("mul", [T("B,1,5"), T("4,1")], {}, "B,4,5", "f32"),
    ("sub", [T(""), T("2,2")], {}, "2,2", "f32"),
    ("lt", [T("B,3"), T("B,3")], {}, "B,3", "bool"),
    ("select", [T("B,3", "bool"), T("B,3"), T("")], {}, "B,3", "f32"),
    ("sum", [T("B,3,4")], dict(D, axis=1), "B,4", "f32"),
    ("sum", [T("B,3,4")], dict(D, axis=[1, 2], keepdims=True), "B,1,1", "f32"),
    ("mean", [T("B,3")], D, "", "f32"),
    ("argmax", [T("B,10")], {"axis": -1, "keepdims": False}, "B", "i64"),
    ("matmul", [T("B,3"), T("3,5")], {}, "B,5", "f32"),
    ("matmul", [T("B,H,T,D"), T("B,H,D,T")], {}, "B,H,T,T", "f32"),
    ("matmul", [T("3"), T("3,4")], {}, "4", "f32"),
    ("matmul", [T("2,3"), T("3")], {}, "2", "f32"),
    ("conv", [T("N,1,28,28"), T("6,1,5,5")], dict(W, pad=2), "N,6,28,28", "f32"),
    ("conv", [T("N,3,6,6"), T("8,3,3,3")], W, "N,8,4,4", "f32"),  # the course's 6x6 * 3x3 = 4x4
    ("conv", [T("N,3,224,224"), T("64,3,7,7")], dict(W, stride=2, pad=3, round="floor"), "N,64,112,112", "f32"),
    ("conv", [T("N,3,L"), T("4,3,3")], dict(W, pad=1), "N,4,L", "f32"),
    ("conv", [T("N,8,9,9"), T("8,2,3,3")], dict(W, groups=4), "N,8,7,7", "f32"),
    ("conv", [T("N,1,H,W"), T("2,1,3,3")], W, "N,2,H - 2,W - 2", "f32"),
    ("conv_transpose", [T("N,8,7,7"), T("8,4,4,4")], {"stride": 2, "pad": 1, "output_pad": 0, "dilation": 1, "groups": 1}, "N,4,14,14", "f32"),
    ("max_pool", [T("N,6,28,28")], {"k": 2, "stride": None, "pad": 0, "round": "exact"}, "N,6,14,14", "f32"),
    ("avg_pool", [T("N,6,5,5")], {"k": 3, "stride": 2, "pad": 0, "round": "exact"}, "N,6,2,2", "f32"),
    ("max_pool", [T("N,6,7,7")], {"k": 2, "stride": 2, "pad": 0, "round": "ceil"}, "N,6,4,4", "f32"),
    ("reshape", [T("B,4,5")], {"shape": (Dim.sym("B"), Dim.const(-1))}, "B,20", "f32"),
    ("transpose", [T("B,3,4")], {"perm": None}, "B,4,3", "f32"),
    ("transpose", [T("B,3,4")], {"perm": [2, 0, 1]}, "4,B,3", "f32"),
    ("broadcast_to", [T("1,3")], {"shape": (Dim.sym("B"), Dim.const(3))}, "B,3", "f32"),
    ("slice", [T("B,10")], {"axis": 1, "start": 2, "stop": 7, "step": 1}, "B,5", "f32"),
    ("slice", [T("B,10")], {"axis": 1, "start": 0, "stop": None, "step": 3}, "B,4", "f32"),
    ("slice", [T("B,T")], {"axis": 1, "start": -1, "stop": None, "step": 1}, "B,1", "f32"),
    ("concat", [T("B,3"), T("B,4")], {"axis": 1}, "B,7", "f32"),
    ("concat", [T("B,H"), T("B,H")], {"axis": -1}, "B,2*H", "f32"),
    ("pad", [T("B,3")], {"pads": [(0, 0), (1, 2)], "value": 0.0}, "B,6", "f32"),
    ("gather", [T("V,D"), T("B,T", "i64")], {"axis": 0}, "B,T,D", "f32"),
    ("one_hot", [T("B", "i64")], {"depth": 10, "dtype": "f32"}, "B,10", "f32"),
    ("scatter_add", [T("V,D"), T("B,T", "i64"), T("B,T,D")], {"axis": 0}, "V,D", "f32"),
    ("conv_transpose", [T("N,8,5,5"), T("8,2,3,3")], {"stride": 1, "pad": 0, "output_pad": 0, "dilation": 1, "groups": 4}, "N,8,7,7", "f32"),
    ("cast", [T("B,3", "i64")], {"dtype": "f32"}, "B,3", "f32"),
    ("stop_gradient", [T("B,3")], {}, "B,3", "f32"),
    ("fill", [], {"shape": (Dim.sym("B"), Dim.const(4)), "value": 0.0, "dtype": "f32"}, "B,4", "f32"),
    ("iota", [], {"shape": (Dim.sym("T"), Dim.sym("T")), "axis": 1, "dtype": "i64"}, "T,T", "i64"),
    ("rand_uniform", [], {"shape": (Dim.const(2), Dim.const(3)), "low": 0.0, "high": 1.0, "dtype": "f32"}, "2,3", "f32"),
]

BAD = [
    ("exp", [T("B,3", "i64")], {}, "E0203"),
    ("add", [T("B,3"), T("B,4")], {}, "E0204"),
    ("add", [T("B,3"), T("T,3")], {}, "E0204"),  # not provably equal
    ("add", [T("B,3"), T("B,3", "f64")], {}, "E0203"),
    ("and", [T("B,3"), T("B,3")], {}, "E0203"),
    ("select", [T("B,3"), T("B,3"), T("B,3")], {}, "E0203"),
    ("sum", [T("B,3")], dict(D, axis=2), "E0208"),
    ("sum", [T("B,3")], dict(D, axis=[1, 1]), "E0208"),
    ("matmul", [T("B,3"), T("4,5")], {}, "E0205"),
    ("matmul", [T(""), T("4,5")], {}, "E0202"),
    ("conv", [T("N,3,6,6"), T("8,3,3,3")], dict(W, stride=2), "E0206"),
    ("conv", [T("N,3,2,2"), T("8,3,3,3")], W, "E0206"),
    ("conv", [T("N,4,6,6"), T("8,3,3,3")], W, "E0201"),
    ("conv", [T("N,6,6"), T("8,3,3,3")], W, "E0202"),
    ("max_pool", [T("N,6,5,5")], {"k": 2, "stride": None, "pad": 0, "round": "exact"}, "E0206"),
    ("max_pool", [T("N,6")], {"k": 2, "stride": None, "pad": 0, "round": "exact"}, "E0202"),
    ("reshape", [T("B,4,5")], {"shape": (Dim.sym("B"), Dim.const(3), Dim.const(-1))}, "E0209"),
    ("reshape", [T("2,6")], {"shape": (Dim.const(5), Dim.const(2))}, "E0209"),
    ("transpose", [T("B,3,4")], {"perm": [0, 1, 1]}, "E0208"),
    ("slice", [T("B,10")], {"axis": 1, "start": 8, "stop": 3, "step": 1}, "E0209"),
    ("concat", [T("B,3"), T("T,4")], {"axis": 1}, "E0201"),
    ("gather", [T("V,D"), T("B,T")], {"axis": 0}, "E0203"),
    ("one_hot", [T("B")], {"depth": 10, "dtype": "f32"}, "E0203"),
    ("scatter_add", [T("V,D"), T("B", "i64"), T("B,3")], {"axis": 0}, "E0201"),
    ("gather", [T("V,D"), T("B,T", "i64")], {"axis": 0, "outside": "clip"}, "E0108"),
    ("scatter_add", [T("V,D"), T("B", "i64"), T("B,D")], {"axis": 0, "outside": "wrap"}, "E0108"),
    ("fill", [], {"shape": (Dim.const(0), Dim.const(4)), "value": 0.0, "dtype": "f32"}, "E0209"),
    ("broadcast_to", [T("2,3")], {"shape": (Dim.const(4), Dim.const(3))}, "E0204"),
]


@pytest.mark.parametrize("op,ins,attrs,want,dtype", OK, ids=[f"{c[0]}-{i}" for i, c in enumerate(OK)])
def test_shape_rule(op, ins, attrs, want, dtype):
    out = OPS[op].shape(ins, dict(attrs))
    assert S(out) == want
    assert out.dtype == dtype


@pytest.mark.parametrize("op,ins,attrs,code", BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD)])
def test_shape_rule_rejects(op, ins, attrs, code):
    with pytest.raises(ShapeError) as e:
        OPS[op].shape(ins, dict(attrs))
    assert e.value.code == code


def test_every_callable_op_is_covered():
    from compiler.ops import INTERNAL
    covered = {c[0] for c in OK} | {c[0] for c in BAD}
    callable_ops = {n for n in OPS if n not in INTERNAL}
    missing = callable_ops - covered - {"log", "log1p", "sqrt", "tanh", "sigmoid", "atan", "sin", "cos", "erf", "floor",
                                        "abs", "sign", "not", "div", "pow", "maximum", "minimum", "eq", "ne", "le", "gt",
                                        "ge", "or", "max", "min", "argmin", "rand_normal"}
    assert not missing, f"no shape test for {sorted(missing)}"


def test_every_op_has_rules():
    for name, op in OPS.items():
        assert op.doc, name
        assert op.flops is not None or op.kind in ("broadcast",) or name in ("not",), name
