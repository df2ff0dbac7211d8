"""Symbolic dimensions: polynomials with rational coefficients over named sizes.

`(H + 2*p - k) / s + 1` with p=2, k=5, s=1 normalises to `H`, so two spellings of one size compare equal.
Division by a constant stays exact (a fraction), so a convolution that does not divide evenly is caught as
soon as H is known. What is not a polynomial (floor, ceil, mod, division by a symbol, max) becomes an
opaque atom that is evaluated again when its symbols get values."""
from __future__ import annotations

import math
from fractions import Fraction

_ATOMS: dict[str, tuple] = {}  # atom name -> (op, Dim, Dim); names are deterministic text


class Dim:
    __slots__ = ("terms", "_hash")

    def __init__(self, terms):
        # terms: {monomial (sorted tuple of atom names): Fraction}; no zero coefficients
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._hash = None

    # ---- construction
    @staticmethod
    def const(v) -> Dim:
        return Dim({(): Fraction(v)})

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim({(name,): Fraction(1)})

    @staticmethod
    def of(v) -> Dim:
        if isinstance(v, Dim):
            return v
        if isinstance(v, bool):
            raise TypeError("a bool is not a dimension")
        if isinstance(v, (int, Fraction)):
            return Dim.const(v)
        if isinstance(v, float) and v.is_integer():
            return Dim.const(int(v))
        raise TypeError(f"not a dimension: {v!r}")

    # ---- queries
    @property
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    @property
    def value(self) -> Fraction:
        assert self.is_const
        return self.terms.get((), Fraction(0))

    @property
    def is_int(self) -> bool:
        return self.is_const and self.value.denominator == 1

    def __int__(self):
        return int(self.value)

    def symbols(self) -> set[str]:
        out = set()
        for m in self.terms:
            for a in m:
                if a in _ATOMS:
                    _, x, y = _ATOMS[a]
                    out |= x.symbols() | y.symbols()
                else:
                    out.add(a)
        return out

    def bare_symbol(self) -> str | None:
        if len(self.terms) == 1:
            (m, c), = self.terms.items()
            if c == 1 and len(m) == 1 and m[0] not in _ATOMS:
                return m[0]
        return None

    def __eq__(self, other):
        if isinstance(other, (int, Fraction)) and not isinstance(other, bool):
            other = Dim.const(other)
        return isinstance(other, Dim) and self.terms == other.terms

    def __hash__(self):
        if self._hash is None:
            self._hash = hash(frozenset(self.terms.items()))
        return self._hash

    def __reduce__(self):
        # Pickled (the generated-code cache) without the cached hash, which differs between processes
        # (strings hash by a per-process seed), and with the definitions of the atoms it names, which the
        # unpickling process may not have made yet.
        return _unpickle, (self.terms, self.atoms())

    def atoms(self) -> dict:
        """The atoms this names (min, floor, division, ...): text -> (op, Dim, Dim)."""
        return {a: _ATOMS[a] for m in self.terms for a in m if a in _ATOMS}

    # ---- arithmetic
    def __add__(self, o):
        o = Dim.of(o)
        t = dict(self.terms)
        for m, c in o.terms.items():
            t[m] = t.get(m, 0) + c
        return Dim(t)

    __radd__ = __add__

    def __neg__(self):
        return Dim({m: -c for m, c in self.terms.items()})

    def __sub__(self, o):
        return self + (-Dim.of(o))

    def __rsub__(self, o):
        return Dim.of(o) - self

    def __mul__(self, o):
        o = Dim.of(o)
        t: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return Dim(t)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Dim.of(o)
        if o.is_const:
            if o.value == 0:
                raise ZeroDivisionError("division of a dimension by zero")
            return Dim({m: c / o.value for m, c in self.terms.items()})
        if self == o:
            return Dim.const(1)
        if len(o.terms) == 1:  # by a monomial: exact when every term contains it, e.g. 784*B / B
            (m, c), = o.terms.items()
            out = {}
            for m1, c1 in self.terms.items():
                rest = list(m1)
                for a in m:
                    if a not in rest:
                        return _atom("div", self, o)
                    rest.remove(a)
                out[tuple(rest)] = c1 / c
            return Dim(out)
        return _atom("div", self, o)

    def __rtruediv__(self, o):
        return Dim.of(o) / self

    def __floordiv__(self, o):
        o = Dim.of(o)
        if self.is_const and o.is_const:
            if o.value == 0:
                raise ZeroDivisionError("division of a dimension by zero")
            return Dim.const(math.floor(self.value / o.value))
        q = self / o
        if all(c.denominator == 1 for c in q.terms.values()) and "div" not in str(q):
            return q
        return _atom("floor", q, Dim.const(0))

    def __mod__(self, o):
        o = Dim.of(o)
        if self.is_const and o.is_const:
            if o.value == 0:
                raise ZeroDivisionError("modulo of a dimension by zero")
            return Dim.const(self.value % o.value)
        return _atom("mod", self, o)

    def ceil(self):
        if self.is_const:
            return Dim.const(math.ceil(self.value))
        return _atom("ceil", self, Dim.const(0))

    def floor(self):
        if self.is_const:
            return Dim.const(math.floor(self.value))
        if all(c.denominator == 1 for c in self.terms.values()):
            return self
        return _atom("floor", self, Dim.const(0))

    def subs(self, bindings: dict) -> Dim:
        """Replace symbols by the Dims (or ints) in bindings, and evaluate atoms that became constant."""
        if not bindings or not self.terms:
            return self
        out = Dim({})
        for m, c in self.terms.items():
            term = Dim.const(c)
            for a in m:
                if a in _ATOMS:
                    op, x, y = _ATOMS[a]
                    term = term * _apply(op, x.subs(bindings), y.subs(bindings))
                elif a in bindings:
                    term = term * Dim.of(bindings[a])
                else:
                    term = term * Dim.sym(a)
            out = out + term
        return out

    # ---- text
    def __repr__(self):
        return f"Dim({self})"

    def __str__(self):
        if not self.terms:
            return "0"
        den = 1
        for c in self.terms.values():
            den = den * c.denominator // math.gcd(den, c.denominator)
        parts = []
        # Highest degree first, constants last: `H*W + 2*H + 1`.
        for m in sorted(self.terms, key=lambda m: (-len(m), m)):
            c = self.terms[m] * den
            mono = "*".join(m)
            mag = abs(c)
            text = mono if mag == 1 and mono else (f"{mag}*{mono}" if mono else f"{mag}")
            parts.append(("-" if c < 0 else "+", text))
        s = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, text in parts[1:]:
            s += f" {sign} {text}"
        if den != 1:
            s = f"({s})/{den}" if len(parts) > 1 or parts[0][0] == "-" else f"{s}/{den}"
        return s


def _unpickle(terms: dict, atoms: dict) -> Dim:
    for text, definition in atoms.items():
        _ATOMS.setdefault(text, definition)
    return Dim(terms)


def _apply(op, x: Dim, y: Dim) -> Dim:
    if op == "div":
        return x / y
    if op == "floor":
        return x.floor()
    if op == "ceil":
        return x.ceil()
    if op == "mod":
        return x % y
    if op == "max":
        return dmax(x, y)
    if op == "min":
        return dmin(x, y)
    raise ValueError(op)


def _atom(op, x: Dim, y: Dim) -> Dim:
    text = {"div": f"({x})/({y})", "floor": f"floor({x})", "ceil": f"ceil({x})", "mod": f"({x}) % ({y})",
            "max": f"max({x}, {y})", "min": f"min({x}, {y})"}[op]
    _ATOMS.setdefault(text, (op, x, y))
    return Dim({(text,): Fraction(1)})


def dmax(x, y) -> Dim:
    x, y = Dim.of(x), Dim.of(y)
    if x.is_const and y.is_const:
        return x if x.value >= y.value else y
    return x if x == y else _atom("max", x, y)


def dmin(x, y) -> Dim:
    x, y = Dim.of(x), Dim.of(y)
    if x.is_const and y.is_const:
        return x if x.value <= y.value else y
    return x if x == y else _atom("min", x, y)


def solve(expr: Dim, value: Dim, unbound: set[str]) -> tuple[str, Dim] | None:
    """If expr is a*s + rest with s the only unbound symbol, linear, return (s, (value - rest)/a)."""
    free = expr.symbols() & unbound
    if len(free) != 1:
        return None
    (s,) = free
    a = expr.terms.get((s,))
    if a is None:
        return None
    rest = Dim({m: c for m, c in expr.terms.items() if m != (s,)})
    if s in rest.symbols():
        return None
    return s, (value - rest) / Dim.const(a)


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def product(dims) -> Dim:
    out = Dim.const(1)
    for d in dims:
        out = out * d
    return out
