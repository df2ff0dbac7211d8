"""The front end as one call: load a model (file or zoo name), elaborate it, check every shape."""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from dsl.diagnostics import Diagnostic, DiagnosticError, Note, Sources, Span
from dsl.loader import load, resolve

from .build import Elaborator
from .graph import Graph


@dataclass
class Checked:
    graph: Graph | None
    diags: list = field(default_factory=list)
    sources: Sources = field(default_factory=Sources)
    path: str | None = None
    program: object = None

    @property
    def ok(self) -> bool:
        return self.graph is not None and not any(d.severity == "error" for d in self.diags)


def _located(values: dict | None) -> dict:
    return {k: v if isinstance(v, tuple) and len(v) == 2 and (v[0] is None or isinstance(v[0], Span)) else (None, v)
            for k, v in (values or {}).items()}


def check(spec: str, sets: dict | None = None, binds: dict | None = None, model: str | None = None,
          training: bool = False, text: str | None = None, sources: Sources | None = None,
          present=()) -> Checked:
    """Never raises for bad input: problems come back as diagnostics.

    sets: {const name: value, or (Span or None, value) to show a bad value where it was written};
    binds: {dimension name: int or (Span or None, int)}; present: optional model inputs (declared
    `= none`) to elaborate as given. With text, spec is only the name under which the text is reported."""
    sets, binds = _located(sets), _located(binds)
    sources = sources or Sources()
    out = Checked(None, [], sources)
    try:
        path = spec if text is not None else str(resolve(spec))
        out.path = path
        program = load(path, sources, text=text)
        out.program = program
        el = Elaborator(program, sets, training=training, binds=binds, present=present)
        graph = el.model(model)
        out.diags = el.diags
        out.graph = graph
    except DiagnosticError as e:
        out.diags = e.diagnostics
    except RecursionError:
        out.diags = [Diagnostic("E0213", "the model nests too deeply to elaborate", None)]
    except Exception:  # a bug in dlc: say so, with enough to report it
        out.diags = [Diagnostic("E0900", "internal compiler error: this is a bug in dlc, please report it", None,
                                [Note(line) for line in traceback.format_exc().strip().split("\n")[-6:]])]
    return out
