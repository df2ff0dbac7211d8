"""Diagnostics in the style of rustc: `path:line:col: error[E0xx]: message`, the source line, a caret
under the span, `note:` lines and a `help:` line. Error codes are stable; `dlc explain E0xx` prints the
longer text kept in CODES."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    source: str  # key into Sources: a path, "<command line>", "<string>"
    start: int  # character offsets, end exclusive
    end: int
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self):
        return f"{self.source}:{self.line}:{self.col}"


@dataclass
class Note:
    text: str
    span: Span | None = None


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None
    notes: list[Note] = field(default_factory=list)
    help: str | None = None
    severity: str = "error"

    def key(self):
        return (self.code, self.message, self.span)


class DiagnosticError(Exception):
    """Carries one or more diagnostics out of a stage that cannot go on."""

    def __init__(self, diagnostics):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics))


class Sources:
    """Every text the front end has read, so that any span can be shown with its line."""

    def __init__(self):
        self.texts: dict[str, str] = {}

    def add(self, name: str, text: str) -> str:
        self.texts[name] = text
        return name

    def line(self, span: Span) -> str | None:
        text = self.texts.get(span.source)
        if text is None:
            return None
        lines = text.split("\n")
        return lines[span.line - 1] if 0 < span.line <= len(lines) else None


# Folders shown by a short name (the zoo, wherever dlc is installed, is shown as `zoo/...`).
ALIASES: dict[str, str] = {}


def display_path(source: str) -> str:
    if source.startswith("<"):
        return source
    for folder, alias in ALIASES.items():
        if source.startswith(folder + os.sep):
            return alias + source[len(folder):]
    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return source if rel.startswith(".." + os.sep + "..") else rel


def render(diag: Diagnostic, sources: Sources, color: bool = False) -> str:
    def paint(text, code):
        return f"\033[{code}m{text}\033[0m" if color else text

    sev = paint(f"{diag.severity}[{diag.code}]", "1;31" if diag.severity == "error" else "1;33")
    where = f"{display_path(diag.span.source)}:{diag.span.line}:{diag.span.col}: " if diag.span else ""
    out = [f"{where}{sev}: {paint(diag.message, '1')}"]
    if diag.span:
        out += _excerpt(diag.span, sources, paint)
    for note in diag.notes:
        loc = f"{display_path(note.span.source)}:{note.span.line}:{note.span.col}: " if note.span else ""
        out.append(f"{paint('note', '1;36')}: {loc}{note.text}")
    if diag.help:
        out.append(f"{paint('help', '1;32')}: {diag.help}")
    return "\n".join(out)


def _excerpt(span: Span, sources: Sources, paint) -> list[str]:
    line = sources.line(span)
    if line is None:
        return []
    line = line.replace("\t", " ")
    gutter = " " * len(str(span.line))
    start = span.col - 1
    # A span that runs onto later lines is underlined to the end of its first line.
    width = max(1, min(span.end - span.start, len(line) - start))
    return [
        f" {span.line} | {line}",
        f" {gutter} | {' ' * start}{paint('^' * width, '1;31')}",
    ]


def render_all(diags, sources: Sources, stream=None) -> int:
    stream = stream or sys.stderr
    color = hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
    seen, errors = set(), 0
    for d in diags:
        if d.key() in seen:
            continue
        seen.add(d.key())
        errors += d.severity == "error"
        print(render(d, sources, color), file=stream)
        print(file=stream)
    if errors:
        print(f"error: {errors} error{'s' if errors != 1 else ''} found", file=stream)
    return errors


# Stable error codes. Each entry: short title, then a longer explanation with an example for `dlc explain`.
CODES: dict[str, tuple[str, str]] = {
    "E0001": ("syntax error", """The parser met a token it did not expect. The message says what it expected instead.

    block f(x: f32[N]) -> f32[N] {
        y = x +         # error: expected an expression after `+`
        return y
    }
"""),
    "E0002": ("unexpected character", """A character that cannot start any token of the language, for example `$` or a
stray backslash. Names are letters, digits and `_`; strings use double quotes."""),
    "E0003": ("unexpected end of file", """The file ended inside a block, a call or a list: usually a missing `}` or `)`."""),
    "E0004": ("invalid literal", """A number or string literal that cannot be read, such as a string with an unknown
escape sequence."""),
    "E0101": ("unknown name", """A name is used that is not an argument, a local variable, a constant or a dimension
in scope.

    block f(x: f32[N]) -> f32[N] {
        return x * scale      # error: `scale` is not defined
    }

Pass it as an attribute (`block f(x: f32[N], scale: float)`) or declare `const scale = 2.0`."""),
    "E0102": ("unknown layer or op", """A call names neither a primitive op, a block of the standard library, nor a block
of this file or of a file it imports with `use`.

    h = dens(x, 64)        # error: did you mean `dense`?"""),
    "E0103": ("wrong number of arguments", """A call passes more positional arguments than the block or op declares, or
fewer tensors than it needs. `dlc` prints the signature."""),
    "E0104": ("unknown keyword argument", """A keyword argument that the called block or op does not declare.

    conv2d(x, 16, kernel=3)    # error: conv2d has no argument `kernel` (did you mean `k`?)"""),
    "E0105": ("missing argument", """A required argument (one without a default) was not given."""),
    "E0106": ("argument given twice", """The same argument was passed positionally and by keyword, or twice by keyword."""),
    "E0107": ("duplicate definition", """Two definitions share one name in the same scope: two blocks, two constants, two
parameters of a block, two arguments, or two calls labelled with the same `as` name. Parameter names must be
unique because they become the keys of the weight file."""),
    "E0108": ("wrong kind of value", """A value of the wrong kind: a tensor where a compile-time attribute (int, float,
bool, string) is needed, or the reverse, or an attribute of the wrong type.

    dense(x, units=1.5)     # error: `units` is an int"""),
    "E0109": ("not callable", """Only blocks, primitive ops, layer values (attributes of type `layer`) and named
instances (to reuse their weights) can be called."""),
    "E0110": ("no such member", """`a.b` looks up parameter or sub-layer `b` of the layer instance `a`, for example
`transpose(enc.W)` to tie a decoder to an encoder's weights. The instance has no member of that name."""),
    "E0111": ("misplaced statement", """A statement where it cannot stand: `yield` outside a `scan` body, `return` inside
a `scan` body, a block without `return`, or `update` of a name that is not a `state` of the block."""),
    "E0112": ("wrong number of values", """An assignment with several targets received a different number of values, or
a `return` gives a different number of values than the signature declares."""),
    "E0120": ("import cycle", """Files import each other in a cycle. The note lists the chain. Move the shared blocks
into a third file that both import."""),
    "E0121": ("import not found", """`use \"file.dln\"` names a file that does not exist (paths are relative to the
importing file), or `use std.x` names a module that the standard library does not have."""),
    "E0130": ("unknown constant in --set", """`--set NAME=VALUE` overrides a `const` of the model file. The name must be
one of its constants; `dlc check MODEL` lists them in the help line."""),
    "E0131": ("invalid --set value", """`--set NAME=VALUE` needs a value that is a number, `true`/`false` or a quoted
string, of the same kind as the constant's own value."""),
    "E0132": ("invalid --bind", """`--bind NAME=N` gives a symbolic dimension of the model's inputs (such as the batch
size `B`) a positive integer value. The name must be a dimension of the model's signature."""),
    "E0133": ("no such model", """The model file defines no `model`, or a zoo name was given that the zoo does not
have. `dlc check` accepts a path to a `.dln` file or the name of a zoo model such as `lenet5`."""),
    "E0201": ("dimension mismatch", """A dimension does not agree with the value it already has. A dimension name binds
once, at its first use, and must agree everywhere after.

    block f(x: f32[B, N], y: f32[B, N]) -> f32[B, N] { return x + y }
    f(a, b)   # a: f32[8, 3], b: f32[8, 4]  -> error: N is 3 (from x) but 4 (from y)"""),
    "E0202": ("rank mismatch", """A tensor has a different number of dimensions than required."""),
    "E0203": ("dtype mismatch", """Operands have different element types, or an op needs a float (or an integer)
tensor. Convert with `cast(x, f32)`."""),
    "E0204": ("cannot broadcast", """Elementwise ops broadcast like NumPy: shapes are aligned at the right, and each
pair of dimensions must be equal or one of them 1. Symbolic dimensions must be provably equal."""),
    "E0205": ("matmul contraction mismatch", """In `a @ b` the last dimension of `a` must equal the second-to-last of `b`
(for vectors: the only one)."""),
    "E0206": ("invalid output size", """A convolution or pooling gives a size that is not a positive integer. The
course's formula is (W - F + 2P) / S + 1; it must divide exactly. A 6x6 input with a 3x3 filter and stride 1
gives 4x4; with stride 2 it would give 2.5, an error. Change padding or stride, or pass `round=\"floor\"`
to drop the last partial window as most frameworks do."""),
    "E0207": ("unbound dimension", """A dimension name is used in a shape (of a parameter, a constant or a declared
output) but no input or earlier value gives it a size."""),
    "E0208": ("invalid axis", """An axis argument outside the tensor's rank, or repeated."""),
    "E0209": ("invalid shape", """A reshape whose element count does not match, a negative size, or a shape that is
not a list of dimensions."""),
    "E0210": ("requirement failed", """A block's `require` clause is false for these arguments. The message comes from
the block's author."""),
    "E0211": ("invalid scan", """A `scan` whose carry changes shape between steps, whose sequences disagree in length,
or whose body yields values of different shapes at different steps. A carry must keep its shape and dtype."""),
    "E0212": ("return type mismatch", """A block returns a value whose shape or dtype differs from its declared
output type."""),
    "E0213": ("invalid compile-time value", """A compile-time computation failed: division by zero, a non-integer
where an integer is needed, an index out of range."""),
    "E0301": ("unknown train setting", """The `train` section accepts: loss, target, optimizer, schedule, regularize,
clip, metrics, epochs, batch_size, early_stopping, updating, freeze, truncate, validation_split, data, seed,
`target` declarations, `let NAME = ...` local values and `step` phases. The message suggests the closest one."""),
    "E0302": ("invalid train setting", """A train setting has a value of the wrong kind: an unknown optimizer or
schedule, an unknown hyperparameter, or a loss that is not a scalar."""),
    "W0101": ("parameter hides a dimension", """A `param` or `state` has the name of a dimension of its block, e.g.
`param W` in a block whose input is `f32[N, C, H, W]`. Later uses of the name see the parameter, not the
size, which breaks a declared return type like `f32[N, K, H, W]`. Rename the parameter."""),
    "W0102": ("parameter size depends on the input", """A parameter's shape contains a symbolic dimension of the
input (such as the batch size or the sequence length), so the number of weights would change with the data.
This is almost always a normalisation or a dense layer applied over the wrong axis."""),
    "E0900": ("internal compiler error", """dlc failed on input it should have handled. This is a bug in dlc, not in your
model: please report it with the `.dln` file and the command line."""),
}


def suggest(name: str, candidates) -> str | None:
    """The closest candidate by edit distance, for 'did you mean' help lines."""
    best, best_d = None, None
    for c in candidates:
        d = _edit_distance(name, c)
        if best_d is None or d < best_d or (d == best_d and c < best):
            best, best_d = c, d
    if best is not None and best_d <= max(1, len(name) // 3):
        return best
    # `activation` for `act`, `lr_rate` for `lr`: an abbreviation or an extension of a candidate.
    prefixed = sorted(c for c in candidates if len(c) >= 2 and (name.startswith(c) or c.startswith(name)))
    return prefixed[0] if len(prefixed) == 1 else None


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
