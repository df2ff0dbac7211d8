"""Text to AST: the Lark LALR parser over grammar.lark, syntax errors turned into diagnostics.

When a file has a syntax error, every top-level item (use, const, block, model) is parsed again on its own,
so that independent syntax errors in different items are all reported in one run."""
from __future__ import annotations

import re
from functools import lru_cache

import lark
from lark import Lark, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast as A
from .diagnostics import Diagnostic, DiagnosticError, Span
from .loader import grammar_path  # noqa: F401 (where the grammar is: the loader keys parsed files by it)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    opts = dict(parser="lalr", propagate_positions=True, maybe_placeholders=True)
    try:
        # Lark keeps the analysed grammar in a temporary file keyed by the grammar's hash: 10x faster start.
        return Lark(grammar_path().read_text(), cache=True, **opts)
    except Exception:  # an unreadable or unwritable cache must never stop the compiler
        return Lark(grammar_path().read_text(), **opts)


def _span(source: str, obj) -> Span:
    if isinstance(obj, lark.Token):
        return Span(source, obj.start_pos, obj.end_pos, obj.line, obj.column)
    return Span(source, obj.start_pos, obj.end_pos, obj.line, obj.column)


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "0": "\0"}


class _ToAst(Transformer):
    def __init__(self, source: str):
        super().__init__(visit_tokens=False)
        self.source = source
        self.errors: list[Diagnostic] = []

    def sp(self, meta):
        return _span(self.source, meta)

    def tok(self, t):
        return _span(self.source, t)

    # ---- literals
    def _string(self, token) -> str:
        raw, out, i = str(token)[1:-1], [], 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                esc = raw[i + 1]
                if esc not in _ESCAPES:
                    self.errors.append(Diagnostic("E0004", f"unknown escape sequence `\\{esc}` in string", self.tok(token),
                                                  help='the escapes are \\n \\t \\" \\\\ and \\0'))
                out.append(_ESCAPES.get(esc, esc))
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out)

    @v_args(meta=True)
    def name(self, meta, c):
        return A.Name(self.sp(meta), str(c[0]))

    @v_args(meta=True)
    def int_lit(self, meta, c):
        return A.Num(self.sp(meta), int(str(c[0]).replace("_", "")))

    @v_args(meta=True)
    def float_lit(self, meta, c):
        return A.Num(self.sp(meta), float(str(c[0]).replace("_", "")))

    @v_args(meta=True)
    def str_lit(self, meta, c):
        return A.Str(self.sp(meta), self._string(c[0]))

    @v_args(meta=True)
    def true_lit(self, meta, c):
        return A.Bool(self.sp(meta), True)

    @v_args(meta=True)
    def false_lit(self, meta, c):
        return A.Bool(self.sp(meta), False)

    @v_args(meta=True)
    def tuple_lit(self, meta, c):
        return A.TupleLit(self.sp(meta), [x for x in c if x is not None])

    @v_args(meta=True)
    def list_lit(self, meta, c):
        return A.ListLit(self.sp(meta), [x for x in c if x is not None])

    # ---- operators
    @v_args(meta=True)
    def binop(self, meta, c):
        return A.BinOp(self.sp(meta), str(c[1].children[0]), c[0], c[2])

    compare = binop

    @v_args(meta=True)
    def pow_op(self, meta, c):
        return A.BinOp(self.sp(meta), "**", c[0], c[1])

    @v_args(meta=True)
    def or_op(self, meta, c):
        return A.BinOp(self.sp(meta), "or", c[0], c[1])

    @v_args(meta=True)
    def and_op(self, meta, c):
        return A.BinOp(self.sp(meta), "and", c[0], c[1])

    @v_args(meta=True)
    def not_op(self, meta, c):
        return A.Unary(self.sp(meta), "not", c[0])

    @v_args(meta=True)
    def unary(self, meta, c):
        return A.Unary(self.sp(meta), str(c[0].children[0]), c[1])

    # ---- calls and postfix
    @v_args(meta=True)
    def call(self, meta, c):
        args = c[1] if c[1] is not None else []
        return A.Call(self.sp(meta), c[0], args)

    def args(self, c):
        out = []
        for a in c:
            if a is None:
                continue
            out.append(a if isinstance(a, A.Arg) else A.Arg(a.span, a))
        return out

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return A.Arg(self.sp(meta), c[1], name=str(c[0]))

    @v_args(meta=True)
    def splat(self, meta, c):
        return A.Arg(self.sp(meta), c[0], splat=True)

    @v_args(meta=True)
    def labeled(self, meta, c):
        target, label = c[0], str(c[1])
        if isinstance(target, A.Call):
            target.label = label
            target.span = self.sp(meta)
            return target
        # `x |> relu as r`, `repeat 3 as layer`: the label travels on a call with no arguments yet.
        return A.Call(self.sp(meta), target, [], label=label, piped=None)

    @v_args(meta=True)
    def pipe(self, meta, c):
        value, stage = c
        if isinstance(stage, A.Call) and stage.piped is not True:
            stage.args.insert(0, A.Arg(value.span, value))
            stage.piped = True
            stage.span = self.sp(meta)
            return stage
        return A.Call(self.sp(meta), stage, [A.Arg(value.span, value)], piped=True)

    @v_args(meta=True)
    def index(self, meta, c):
        return A.Index(self.sp(meta), c[0], c[1])

    def subscripts(self, c):
        return [x for x in c if x is not None]

    @v_args(meta=True)
    def slice(self, meta, c):
        lo, hi, step = (c + [None, None, None])[:3]
        return A.Slice(self.sp(meta), lo, hi, step)

    @v_args(meta=True)
    def ellipsis(self, meta, c):
        return A.EllipsisLit(self.sp(meta))

    @v_args(meta=True)
    def member(self, meta, c):
        return A.Member(self.sp(meta), c[0], str(c[1]))

    # ---- scan
    @v_args(meta=True)
    def scan(self, meta, c):
        seqs = [x for x in c if isinstance(x, A.ScanSeq)]
        carries = [x for x in c if isinstance(x, A.Carry)]
        reverse = next((x[1] for x in c if isinstance(x, tuple) and x[0] == "reverse"), None)
        lengths = next((x[1] for x in c if isinstance(x, tuple) and x[0] == "lengths"), None)
        return A.Scan(self.sp(meta), seqs, carries, reverse, lengths, c[-1])

    @v_args(meta=True)
    def scan_reverse(self, meta, c):
        # `reverse` alone means reverse = true.
        return ("reverse", c[0] if c[0] is not None else A.Bool(self.sp(meta), True))

    def scan_lengths(self, c):
        return ("lengths", c[0])

    @v_args(meta=True)
    def scan_seq(self, meta, c):
        return A.ScanSeq(self.sp(meta), str(c[0]), c[1], c[2])

    @v_args(meta=True)
    def carry(self, meta, c):
        return A.Carry(self.sp(meta), str(c[0]), c[1])

    # ---- types
    @v_args(meta=True)
    def tensor_type(self, meta, c):
        return A.TensorType(self.sp(meta), str(c[0]), c[1] or [])

    def dims(self, c):
        return [x for x in c if x is not None]

    @v_args(meta=True)
    def variadic_dim(self, meta, c):
        return A.VariadicDim(self.sp(meta), str(c[0]))

    @v_args(meta=True)
    def scalar_type(self, meta, c):
        return A.AttrType(self.sp(meta), str(c[0]))

    @v_args(meta=True)
    def list_type(self, meta, c):
        return A.AttrType(self.sp(meta), "list", c[0])

    # ---- statements
    def body(self, c):
        return [s for s in c if s is not None]

    def empty(self, c):
        return None

    def targets(self, c):
        return c

    @v_args(meta=True)
    def target(self, meta, c):
        return (str(c[0]), self.sp(meta))

    def exprs(self, c):
        return c

    @v_args(meta=True)
    def assign(self, meta, c):
        values = c[1:]
        if len(values) == 1:
            return A.Assign(self.sp(meta), c[0], values[0])
        span = Span(self.source, values[0].span.start, values[-1].span.end, values[0].span.line, values[0].span.col)
        return A.Assign(self.sp(meta), c[0], A.TupleLit(span, values))

    def _decl(self, kind, meta, c):
        name, dtype, dims, init = c
        ttype = A.TensorType(self.sp(meta), str(dtype) if dtype else None, dims or [])
        return A.ParamDecl(self.sp(meta), kind, str(name), ttype, init)

    @v_args(meta=True)
    def param_decl(self, meta, c):
        return self._decl("param", meta, c)

    @v_args(meta=True)
    def state_decl(self, meta, c):
        return self._decl("state", meta, c)

    @v_args(meta=True)
    def update_stmt(self, meta, c):
        return A.Update(self.sp(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return A.Return(self.sp(meta), c[0])

    @v_args(meta=True)
    def yield_stmt(self, meta, c):
        return A.Yield(self.sp(meta), c[0])

    @v_args(meta=True)
    def require_stmt(self, meta, c):
        msg = None
        if c[1] is not None:
            msg = A.Str(self.tok(c[1]), self._string(c[1]))
        return A.Require(self.sp(meta), c[0], msg)

    @v_args(meta=True)
    def if_stmt(self, meta, c):
        orelse = c[2]
        if isinstance(orelse, A.If):
            orelse = [orelse]
        return A.If(self.sp(meta), c[0], c[1], orelse or [])

    @staticmethod
    def _unlabel(expr):
        # `for x in xs as name {` and `repeat n as name {`: the grammar attaches the label to the expression.
        if isinstance(expr, A.Call) and expr.label is not None:
            label = expr.label
            if expr.piped is None:  # label-only wrapper around a non-call
                return expr.func, label
            expr.label = None
            return expr, label
        return expr, None

    @v_args(meta=True)
    def for_stmt(self, meta, c):
        it, label = self._unlabel(c[1])
        return A.For(self.sp(meta), c[0], it, c[2], label)

    @v_args(meta=True)
    def repeat_stmt(self, meta, c):
        count, label = self._unlabel(c[0])
        return A.Repeat(self.sp(meta), count, c[1], label)

    # ---- items
    @v_args(meta=True)
    def use_item(self, meta, c):
        ref, alias = c
        is_file, module = ref
        return A.Use(self.sp(meta), module, is_file, str(alias) if alias else None)

    def std_ref(self, c):
        return (False, ".".join(str(x) for x in c))

    def file_ref(self, c):
        return (True, self._string(c[0]))

    @v_args(meta=True)
    def const_item(self, meta, c):
        return A.Const(self.sp(meta), str(c[0]), c[1])

    def params(self, c):
        return [p for p in c if p is not None]

    @v_args(meta=True)
    def param(self, meta, c):
        return A.ParamSig(self.sp(meta), str(c[0]), c[1], c[2])

    def single_return(self, c):
        return [A.Ret(c[0].span, None, c[0])]

    def multi_return(self, c):
        return [r for r in c if r is not None]

    @v_args(meta=True)
    def ret(self, meta, c):
        return A.Ret(self.sp(meta), str(c[0]) if c[0] else None, c[1])

    def _def(self, kind, meta, c):
        name = c[0]
        train = c[4] if kind == "model" else None
        return A.BlockDef(self.sp(meta), kind, str(name), self.tok(name), c[1] or [], c[2], c[3], train,
                          module=self.source)

    @v_args(meta=True)
    def block_item(self, meta, c):
        return self._def("block", meta, c)

    @v_args(meta=True)
    def model_item(self, meta, c):
        return self._def("model", meta, c)

    @v_args(meta=True)
    def train(self, meta, c):
        return A.Train(self.sp(meta), [x for x in c if x is not None])

    @v_args(meta=True)
    def setting(self, meta, c):
        return A.Setting(self.sp(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def let_item(self, meta, c):
        return A.Let(self.sp(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def target_decl(self, meta, c):
        return A.TargetDecl(self.sp(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def phase(self, meta, c):
        return A.Phase(self.sp(meta), str(c[0]), c[1], [x for x in c[2:] if x is not None])

    def start(self, c):
        return [x for x in c if x is not None]


# ---- syntax errors in words
_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "DTYPE": "a dtype (f32, f64, i32, i64, bool)",
    "ATTR_TYPE": "a type", "$END": "end of file",
}
_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "TRUE", "FALSE", "SCAN", "MINUS", "PLUS", "NOT"}


_CLOSERS = {"RPAR", "RSQB", "RBRACE"}


def _describe_expected(expected) -> str:
    expected = set(expected)
    words = []
    if expected & _CLOSERS:
        # `f(x` then `}`: the closer is the useful word, not the operators that could extend `x`.
        expected = (expected & _CLOSERS) | (expected & {"COMMA"})
    if len(expected & _EXPR_START) >= 4:
        words.append("an expression")
        expected -= _EXPR_START
    terms = {t.name: t for t in _lark().terminals}
    for name in sorted(expected):
        if name in _WORDS:
            words.append(_WORDS[name])
        elif name in terms and isinstance(terms[name].pattern, lark.lexer.PatternStr):
            words.append(f"`{terms[name].pattern.value}`")
        elif name.startswith("__") or name.endswith("_OP"):
            words.append("an operator")
        else:
            words.append(name.lower())
    words = list(dict.fromkeys(words))
    if not words:
        return "something else"
    if len(words) > 8:
        words = words[:8] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _token_words(tok) -> str:
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    return f"`{text}`" if len(text) < 30 else f"`{text[:27]}...`"


def _syntax_diag(e: UnexpectedInput, source: str, text: str) -> Diagnostic:
    if isinstance(e, UnexpectedToken) and e.token.type == "$END" or isinstance(e, UnexpectedEOF):
        pos = len(text.rstrip())
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        span = Span(source, pos, pos + 1, line, col)  # just past the last character
        expected = getattr(e, "expected", None) or getattr(e, "accepts", None) or []
        opens = text.count("{") - text.count("}")
        help_ = "a `}` is missing" if opens > 0 else ("a `)` is missing" if text.count("(") > text.count(")") else None)
        return Diagnostic("E0003", f"unexpected end of file; expected {_describe_expected(expected)}", span, help=help_)
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        span = Span(source, e.pos_in_stream, e.pos_in_stream + 1, e.line, e.column)
        help_ = None
        if ch == "'":
            help_ = 'strings use double quotes: "..."'
        elif ch == "\"":
            help_ = "this string is not closed on its line"
        elif ch in "{}" and e.allowed:
            return Diagnostic("E0001", f"unexpected `{ch}`; expected {_describe_expected(e.allowed)}", span)
        return Diagnostic("E0002", f"unexpected character `{ch}`", span, help=help_)
    tok = e.token
    span = Span(source, tok.start_pos, tok.end_pos, tok.line, tok.column)
    expected = e.accepts or e.expected
    help_ = None
    prev = re.findall(r"[A-Za-z_]\w*", text[max(0, tok.start_pos - 40):tok.start_pos])
    if (tok.type == "NAME" and str(tok) in _FOREIGN) or (prev and prev[-1] in _FOREIGN):
        help_ = "layers are declared with `block NAME(...) { ... }`, variables with a plain `name = ...`"
    elif tok.type in {"EQUAL"} and "COLON" not in expected:
        help_ = "keyword arguments are written `name=value` inside a call"
    return Diagnostic("E0001", f"unexpected {_token_words(tok)}; expected {_describe_expected(expected)}", span,
                      help=help_)


_FOREIGN = {"def", "function", "fn", "let", "var", "class", "layer"}
_ITEM_START = re.compile(r"^(use|const|block|model)\b", re.M)


def parse(text: str, source: str) -> A.Module:
    """Parse one file. Raises DiagnosticError with every syntax error found."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as first:
        raise DiagnosticError(_recover(text, source, first)) from None
    tx = _ToAst(source)
    items = tx.transform(tree)
    if tx.errors:
        raise DiagnosticError(tx.errors)
    mod = A.Module(Span(source, 0, len(text), 1, 1), source, [], [], [])
    for it in items:
        if isinstance(it, A.Use):
            mod.uses.append(it)
        elif isinstance(it, A.Const):
            mod.consts.append(it)
        else:
            mod.blocks.append(it)
    return mod


def _recover(text: str, source: str, first: UnexpectedInput) -> list[Diagnostic]:
    """Parse each top-level item alone (the rest blanked out, so positions stay) to find every broken one."""
    diags = [_syntax_diag(first, source, text)]
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    if len(starts) < 2:
        return diags
    bounds = list(zip(starts, starts[1:] + [len(text)]))
    for lo, hi in bounds:
        masked = re.sub(r"[^\n]", " ", text[:lo]) + text[lo:hi] + re.sub(r"[^\n]", " ", text[hi:])
        try:
            _lark().parse(masked)
        except UnexpectedInput as e:
            d = _syntax_diag(e, source, masked)
            if all(d.span != x.span for x in diags):
                diags.append(d)
    diags.sort(key=lambda d: d.span.start if d.span else 0)
    return diags
