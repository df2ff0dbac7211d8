"""AST of a .dln file. Every node carries the Span of the text it came from."""
from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Span


@dataclass
class Node:
    span: Span = field(repr=False, compare=False)


# ---- expressions
@dataclass
class Name(Node):
    id: str


@dataclass
class Num(Node):
    value: int | float


@dataclass
class Str(Node):
    value: str


@dataclass
class Bool(Node):
    value: bool


@dataclass
class TupleLit(Node):
    items: list


@dataclass
class ListLit(Node):
    items: list


@dataclass
class BinOp(Node):
    op: str  # + - * / // % @ ** == != < <= > >= and or
    left: Node
    right: Node


@dataclass
class Unary(Node):
    op: str  # - + not
    operand: Node


@dataclass
class Arg(Node):
    value: Node
    name: str | None = None  # keyword argument
    splat: bool = False  # *xs


@dataclass
class Call(Node):
    func: Node
    args: list
    label: str | None = None  # `as label`: the scope name of this call
    piped: bool = False  # first argument came from `x |> f(...)`


@dataclass
class Slice(Node):
    lo: Node | None
    hi: Node | None
    step: Node | None


@dataclass
class EllipsisLit(Node):
    pass


@dataclass
class Index(Node):
    value: Node
    subs: list


@dataclass
class Member(Node):
    value: Node
    name: str


@dataclass
class ScanSeq(Node):
    name: str
    value: Node
    axis: Node | None


@dataclass
class Carry(Node):
    name: str
    init: Node


@dataclass
class Scan(Node):
    seqs: list
    carries: list
    reverse: Node | None
    lengths: Node | None
    body: list


# ---- types
@dataclass
class VariadicDim(Node):
    name: str


@dataclass
class TensorType(Node):
    dtype: str | None  # None: the float dtype of the model
    dims: list  # expressions and VariadicDim


@dataclass
class AttrType(Node):
    name: str  # int float bool str layer init dim any f32..., or "list"
    elem: AttrType | None = None

    def __str__(self):
        return f"[{self.elem}]" if self.name == "list" else self.name


# ---- statements
@dataclass
class Assign(Node):
    targets: list  # of (name, Span)
    value: Node


@dataclass
class ParamDecl(Node):
    kind: str  # param (trainable) or state (non-trainable, e.g. running statistics)
    name: str
    type: TensorType
    init: Node | None


@dataclass
class Update(Node):
    """`update running_mean = ...`: the new value of a `state` after a training step."""
    name: str
    value: Node


@dataclass
class Return(Node):
    values: list


@dataclass
class Yield(Node):
    values: list


@dataclass
class Require(Node):
    cond: Node
    message: Str | None


@dataclass
class If(Node):
    cond: Node
    body: list
    orelse: list


@dataclass
class For(Node):
    targets: list  # of (name, Span)
    iter: Node
    body: list
    label: str | None


@dataclass
class Repeat(Node):
    count: Node
    body: list
    label: str | None


# ---- items
@dataclass
class Use(Node):
    module: str  # dotted std module or a file path
    is_file: bool
    alias: str | None


@dataclass
class Const(Node):
    name: str
    value: Node


@dataclass
class ParamSig(Node):
    name: str
    type: Node  # TensorType or AttrType
    default: Node | None


@dataclass
class Ret(Node):
    name: str | None
    type: TensorType


@dataclass
class Setting(Node):
    name: str
    value: Node


@dataclass
class Let(Node):
    """`let name = expr` in a train section: a local value for the settings after it."""
    name: str
    value: Node


@dataclass
class TargetDecl(Node):
    name: str
    type: TensorType


@dataclass
class Phase(Node):
    name: str
    repeat: Node | None
    items: list


@dataclass
class Train(Node):
    items: list


@dataclass
class BlockDef(Node):
    kind: str  # block or model
    name: str
    name_span: Span
    params: list
    returns: list | None  # list of Ret, None when undeclared
    body: list
    train: Train | None = None
    module: str = ""  # source it was defined in


@dataclass
class Module(Node):
    path: str
    uses: list
    consts: list
    blocks: list  # BlockDef, models included
