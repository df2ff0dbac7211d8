"""The `dlc` command line."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dsl.diagnostics import CODES, Diagnostic, Sources, Span, render_all

from . import __version__

CMDLINE = "<command line>"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a wrong flag: usage, the problem, exit 2 (argparse's convention), no traceback
        self.print_usage(sys.stderr)
        print(f"error: {message}\nhelp: `{self.prog} --help` lists the options", file=sys.stderr)
        sys.exit(2)


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"`{text}` is not a number") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return v
    parse.__name__ = kind.__name__
    return parse


EMIT_STAGES = ("ast", "graph", "shapes", "grad", "schedule", "py")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dlc", description="dlc: a compiler for deep-learning models written in .dln",
                epilog="Run `dlc COMMAND --help` for the options of a command.")
    p.add_argument("--version", action="version", version=f"dlc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def model_args(sp):
        sp.add_argument("model", metavar="MODEL", help="a .dln file, or the name of a zoo model such as lenet5")
        sp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a `const` of the model file (repeatable)")
        sp.add_argument("--bind", action="append", default=[], metavar="DIM=N",
                        help="give a symbolic dimension of the inputs a size, e.g. --bind B=32 (repeatable)")
        sp.add_argument("--model", dest="model_name", metavar="NAME", help="which model, when the file has several")
        sp.add_argument("--training", action="store_true", help="elaborate the training graph (dropout, batch statistics)")
        sp.add_argument("--with", dest="present", action="append", default=[], metavar="INPUT",
                        help="elaborate with an optional input (declared `= none`) given (repeatable)")

    c = sub.add_parser("check", help="parse and shape-check a model; print its layers, parameters and FLOPs",
                       description="Parse and shape-check MODEL and print a summary: each layer's scoped name, "
                                   "block or op, output shape and parameter count, then the totals and the "
                                   "forward FLOPs per example. Exit status 1 when there are errors.")
    model_args(c)
    c.add_argument("--depth", type=int, default=1, metavar="N", help="show nested layers down to depth N (default 1)")
    g = sub.add_parser("graph", help="write the model's graph as Graphviz DOT (or SVG/PNG when `dot` is installed)",
                       description="Write MODEL's computation graph. The format follows the extension of -o: "
                                   ".dot (no dependency), .svg or .png (need Graphviz's `dot` program).")
    model_args(g)
    g.add_argument("-o", "--output", required=True, metavar="FILE", help="output file: .dot, .svg or .png")
    g.add_argument("--force", action="store_true", help="replace FILE if it exists")
    def run_args(sp, weights):
        sp.add_argument("model", metavar="MODEL", help="a .dln file, or the name of a zoo model such as mlp")
        sp.add_argument("--data", metavar="SPEC", help="sklearn:digits, xor, spirals, sine, copy, adding, text:PATH, "
                                                       "or a .npz/.npy/.csv file (default: the train section's `data`)")
        sp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a `const`")
        sp.add_argument("--with", dest="present", action="append", default=[], metavar="INPUT",
                        help="include an optional input")
        sp.add_argument("--seed", type=int, default=0, help="seed for initial weights, shuffling and random ops")
        sp.add_argument("--target", choices=["cpu", "reference"], default=None,
                        help="cpu: compiled (the default, or $DLC_TARGET); reference: the NumPy interpreter")
        if weights:
            sp.add_argument("--weights", required=True, metavar="FILE", help="a .npz weights file (e.g. best.npz)")
    t = sub.add_parser("train", help="train a model; writes history, checkpoints and a learning curve",
                       description="Train MODEL with its train section (overridable here), printing a progress bar "
                                   "and a line per epoch, and writing OUT/history.csv, OUT/history.json, "
                                   "OUT/checkpoints/epoch-N.npz, OUT/best.npz, OUT/last.npz and OUT/curve.png.")
    run_args(t, False)
    t.add_argument("--epochs", type=_positive(int), metavar="N")
    t.add_argument("--batch-size", type=_positive(int), metavar="N")
    t.add_argument("--lr", type=_positive(float), metavar="X", help="learning rate (overrides the optimizer's)")
    from .schema import OPTIMIZERS
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), help="replace the train section's optimizer "
                   "(with its published default hyperparameters; --lr sets the learning rate)")
    t.add_argument("--out", metavar="DIR", help="output folder (default runs/MODEL)")
    t.add_argument("--force", action="store_true", help="replace DIR if it exists")
    t.add_argument("--resume", action="store_true", help="continue the run in DIR from its last complete epoch")
    ev = sub.add_parser("eval", help="evaluate weights on the held-out split of a dataset")
    run_args(ev, True)
    pr = sub.add_parser("predict", help="run a model on data and print or save its predictions")
    run_args(pr, True)
    pr.add_argument("-o", "--output", metavar="FILE", help="write predictions to a .npy file")
    pr.add_argument("--force", action="store_true", help="replace FILE if it exists")
    k = sub.add_parser("compile", help="compile a model: its generated module and a manifest, the cache warmed",
                       description="Compile MODEL for TARGET. Writes OUT/NAME.py (the generated module of Numba "
                                   "functions: predict, eval_step and a train step per phase) and OUT/manifest.json "
                                   "(versions, cache key, each function's inputs, outputs and parameters), then "
                                   "runs each function once on zeros so that Numba compiles it into the cache "
                                   "and the model's first step starts at once. With --emit, prints one stage of "
                                   "the compiler instead and writes nothing.")
    k.add_argument("model", metavar="MODEL", help="a .dln file, or the name of a zoo model such as mlp")
    k.add_argument("-o", "--output", metavar="OUT",
                   help="output folder (default build/NAME, NAME the model file's name without .dln)")
    k.add_argument("--target", choices=("cpu",), default="cpu", help="what to compile for (default: cpu, Numba)")
    k.add_argument("--emit", choices=EMIT_STAGES,
                   help="print one stage to standard output instead of writing files: ast (the parsed file, "
                        "before --set), graph (the forward graph), shapes (the summary table), grad (the "
                        "training step after autodiff and the optimizer), schedule (the fused items and "
                        "buffers of the training step, or of predict without a train section), py (the "
                        "generated module, not compiled)")
    k.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a `const` of the model file (repeatable)")
    k.add_argument("--with", dest="present", action="append", default=[], metavar="INPUT",
                   help="compile with an optional input (declared `= none`) given (repeatable)")
    k.add_argument("--force", action="store_true",
                   help="write into OUT even when it is not empty (replaces NAME.py and manifest.json there, "
                        "nothing else)")
    k.add_argument("--no-warm", action="store_true",
                   help="write the files without compiling with Numba (the model's first call compiles then)")
    e = sub.add_parser("explain", help="explain an error code, e.g. `dlc explain E0201`",
                       description="Print the longer explanation, with an example, of an error code.")
    e.add_argument("code", metavar="CODE", nargs="?", help="an error code such as E0201; without it, list them all")
    return p


def _locate(argv):
    """The command line as one text, and the Span of each argument in it, for diagnostics about flags."""
    text, spans = "dlc", []
    for a in argv:
        text += " "
        spans.append(len(text))
        text += a
    return text, spans


def _parse_assignments(flag, values, argv, cmd_spans, diags, kind):
    out = {}
    for value in values:
        # find this value's position on the command line for the caret
        idx = next((i for i, a in enumerate(argv) if a == value or a == f"{flag}={value}"), None)
        start = cmd_spans[idx] + (len(flag) + 1 if idx is not None and argv[idx].startswith(flag + "=") else 0) if idx is not None else 0
        span = Span(CMDLINE, start, start + len(value), 1, start + 1)
        name, eq, raw = value.partition("=")
        code = "E0131" if kind == "set" else "E0132"
        if not eq or not name.strip().isidentifier():
            diags.append(Diagnostic(code, f"`{flag} {value}` is not of the form NAME=VALUE", span,
                                    help=f"for example `{flag} {'layers=12' if kind == 'set' else 'B=32'}`"))
            continue
        name = name.strip()
        vspan = Span(CMDLINE, start + len(name) + 1, start + len(value), 1, start + len(name) + 2)
        if kind == "bind":
            try:
                n = int(raw.replace("_", ""))
            except ValueError:
                n = None
            if n is None or n <= 0:
                diags.append(Diagnostic("E0132", f"`{flag} {value}`: a dimension size must be a positive integer, not `{raw}`", vspan))
                continue
            out[name] = (span, n)
        else:
            v = _literal(raw)
            if v is None:
                diags.append(Diagnostic("E0131", f"`{flag} {value}`: `{raw}` is not a number, true/false or a string", vspan,
                                        help='quote strings: --set act=\'"relu"\''))
                continue
            out[name] = (span, v)
    return out


def _literal(raw: str):
    raw = raw.strip()
    if not raw:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        pass
    try:
        f = float(raw)
        return f if f == f and abs(f) != float("inf") else None
    except ValueError:
        pass
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    if raw.replace("_", "").replace("-", "").isalnum():
        return raw
    return None


def _front(args, argv, sources: Sources, training=False):
    from .check import check
    cmd_text, cmd_spans = _locate(argv)
    sources.add(CMDLINE, cmd_text)
    diags: list[Diagnostic] = []
    sets = _parse_assignments("--set", args.set, argv, cmd_spans, diags, "set")
    binds = _parse_assignments("--bind", args.bind, argv, cmd_spans, diags, "bind")
    if diags:
        return None, diags
    r = check(args.model, sets, binds, model=args.model_name, training=training or args.training, sources=sources,
              present=args.present)
    if r.graph is not None:
        unknown = sorted(set(args.present) - set(r.graph.optional_inputs))
        if unknown:
            opt = ", ".join(r.graph.optional_inputs) or "none"
            r.diags.append(Diagnostic("E0132", f"`--with {unknown[0]}`: the model has no optional input `{unknown[0]}`",
                                      None, help=f"its optional inputs: {opt}"))
    return r, r.diags


def cmd_check(args, argv) -> int:
    from .report import summary
    sources = Sources()
    r, diags = _front(args, argv, sources)
    if r is None or not r.ok:
        render_all(diags, sources)
        return 1
    bind = {k: v for k, (_, v) in _parse_assignments("--bind", args.bind, argv, _locate(argv)[1], [], "bind").items()}
    print(summary(r.graph, bind, depth=max(1, args.depth), path=_short(r.path)))
    render_all(diags, sources)  # warnings, if any
    return 0


def _short(path):
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def cmd_graph(args, argv) -> int:
    from .report import to_dot
    out = Path(args.output)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("dot", "gv", "svg", "png", "pdf"):
        print(f"error: cannot tell the format from `{out}`: use .dot, .svg, .png or .pdf", file=sys.stderr)
        return 1
    if fmt not in ("dot", "gv") and shutil.which("dot") is None:
        print(f"error: writing .{fmt} needs Graphviz's `dot` program, which is not installed\n"
              f"help: install Graphviz (`apt install graphviz`, `brew install graphviz`), "
              f"or write DOT text with `-o {out.with_suffix('.dot')}`", file=sys.stderr)
        return 1
    if out.exists() and not args.force:
        print(f"error: `{out}` already exists\nhelp: pass --force to replace it", file=sys.stderr)
        return 1
    if not out.parent.is_dir():
        print(f"error: the folder `{out.parent}` does not exist", file=sys.stderr)
        return 1
    sources = Sources()
    r, diags = _front(args, argv, sources)
    if r is None or not r.ok:
        render_all(diags, sources)
        return 1
    dot = to_dot(r.graph)
    fd, tmp = tempfile.mkstemp(prefix=".dlc-", suffix="." + fmt, dir=out.parent)
    os.close(fd)
    try:
        if fmt in ("dot", "gv"):
            Path(tmp).write_text(dot)
        else:
            proc = subprocess.run(["dot", f"-T{fmt}", "-o", tmp], input=dot.encode(), capture_output=True)
            if proc.returncode != 0:
                print(f"error: Graphviz failed: {proc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
                return 1
        os.replace(tmp, out)  # atomic: a failed run leaves any earlier file intact
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {out} ({len(r.graph)} nodes)")
    return 0


# ---- dlc compile

def _fail(message, help_=None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if help_:
        print(f"help: {help_}", file=sys.stderr)
    return 1


def _flag_span(argv, spans, flag, value):
    """Where `flag value` (or `flag=value`) is on the command line, for a diagnostic about it."""
    for i, a in enumerate(argv):
        if a == f"{flag}={value}":
            start = spans[i] + len(flag) + 1
            return Span(CMDLINE, start, start + len(value), 1, start + 1)
        if a == value and i > 0 and argv[i - 1] == flag:
            return Span(CMDLINE, spans[i], spans[i] + len(value), 1, spans[i] + 1)
    return None


def command_line_sets(values, argv) -> tuple:
    """--set NAME=VALUE flags as {name: (Span, value)}, the sources that show those spans, and the
    diagnostics of bad ones."""
    sources = Sources()
    text, spans = _locate(argv)
    sources.add(CMDLINE, text)
    diags: list[Diagnostic] = []
    sets = _parse_assignments("--set", values, argv, spans, diags, "set")
    return sets, sources, diags


def cmd_compile(args, argv) -> int:
    from dsl.loader import resolve
    from dsl.diagnostics import DiagnosticError
    if args.emit and args.output:
        return _fail("--emit prints to standard output and writes no files, so it takes no -o",
                     f"redirect it: `dlc compile {args.model} --emit {args.emit} > FILE`")
    sets, sources, diags = command_line_sets(args.set, argv)
    if diags:
        render_all(diags, sources)
        return 1
    if args.emit == "ast":
        return _emit_ast(args.model, sources)
    from runtime.model import Model, ModelError
    try:
        path = resolve(args.model)
        model = Model(args.model, present=args.present, target=args.target, located_sets=sets, sources=sources)
    except DiagnosticError as e:
        render_all(e.diagnostics, sources)
        return 1
    except ModelError as e:
        render_all(e.diagnostics, e.sources)
        return 1
    unknown = sorted(set(args.present) - set(model.infer.optional_inputs))
    if unknown:
        opt = ", ".join(model.infer.optional_inputs) or "none"
        render_all([Diagnostic("E0132", f"`--with {unknown[0]}`: the model has no optional input `{unknown[0]}`",
                               _flag_span(argv, _locate(argv)[1], "--with", unknown[0]),
                               help=f"its optional inputs: {opt}")],
                   sources)
        return 1
    from compiler.codegen import Unsupported
    try:
        if args.emit:
            return _emit(args, model, path)
        return _compile_to_folder(args, model, path, sets)
    except Unsupported as e:
        return _fail(f"{e}", f"the reference interpreter runs it: dlc.load({args.model!r}, target=\"reference\")")


def _sections(parts) -> str:
    """Texts under `# name` headers when there are several, the text alone when there is one."""
    if len(parts) == 1:
        return parts[0][1]
    return "\n\n".join(f"# {name}\n{text}" for name, text in parts)


def _emit(args, model, path) -> int:
    from runtime.compiled import generate, schedule_entry
    from runtime.model import _train_fn
    stage = args.emit
    if stage == "graph":
        text = model.infer.pretty()
    elif stage == "shapes":
        from .report import summary
        text = summary(model.infer, path=_short(str(path)))
    elif stage == "grad":
        if not model.phase_indices():
            return _fail(f"`{args.model}` has no train section, so no training step to differentiate",
                         "`--emit graph` prints the forward graph")
        text = _sections([(_train_fn(pi), model._step(pi).graph.pretty()) for pi in model.phase_indices()])
    elif stage == "schedule":
        entries = model.entries()
        shown = [e for e in entries if e.name.startswith("train_step")] or entries[:1]
        text = _sections([(e.name, schedule_entry(e).pretty()) for e in shown])
    else:  # py: the source Model.compiled() imports, byte for byte, generated without importing or compiling it
        sys.stdout.write(generate(str(model.path), model.entries()).source())
        return 0
    print(text)
    return 0


def _emit_ast(spec, sources) -> int:
    from dsl.diagnostics import DiagnosticError
    from dsl.loader import load, resolve
    try:
        program = load(resolve(spec), sources)
    except DiagnosticError as e:
        render_all(e.diagnostics, sources)
        return 1
    print("\n".join(_ast_lines(program.main, "")))
    return 0


def _ast_lines(node, indent: str, label: str = "") -> list:
    """An AST node as an indented tree: its kind, its plain fields and its position, then its children."""
    import dataclasses

    from dsl import ast as A
    from dsl.diagnostics import display_path
    head = indent + (f"{label}: " if label else "")
    if not isinstance(node, A.Node):
        return [head + repr(node)]
    plain, children = [], []
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if f.name == "span" or isinstance(v, Span):
            continue
        if isinstance(v, A.Node) or (isinstance(v, list) and any(isinstance(x, A.Node) for x in v)):
            children.append((f.name, v))
        elif v is None or v is False or v == "" or v == []:
            continue  # unset optional fields
        elif isinstance(v, list):  # assignment targets: (name, Span) pairs
            plain.append(f"{f.name}=[{', '.join(x[0] if isinstance(x, tuple) else repr(x) for x in v)}]")
        elif f.name in ("path", "module") and isinstance(v, str) and v.endswith(".dln"):
            plain.append(f"{f.name}={display_path(v)}")
        else:
            plain.append(f"{f.name}={v!r}")
    where = f"  @{node.span.line}:{node.span.col}" if node.span is not None else ""
    lines = [head + " ".join([type(node).__name__] + plain) + where]
    for name, v in children:
        if isinstance(v, list):
            lines.append(f"{indent}  {name}:")
            for x in v:
                lines += _ast_lines(x, indent + "    ")
        else:
            lines += _ast_lines(v, indent + "  ", name)
    return lines


def _compile_to_folder(args, model, path, sets) -> int:
    import time

    import numba
    import numpy as np

    from runtime.compiled import cache_key, compile_graphs, module_path
    name = path.stem
    out = Path(args.output or os.path.join("build", name))
    if out.exists() and not out.is_dir():
        return _fail(f"`{out}` exists and is not a folder", "choose another folder with -o")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        return _fail(f"`{out}` already exists and is not empty",
                     f"pass --force to write {name}.py and manifest.json into it, or choose another folder with -o")
    t0 = time.perf_counter()
    entries = model.entries()
    c = compile_graphs(str(model.path), entries)  # what Model.compiled() builds: same entries, same title
    t_gen = time.perf_counter() - t0
    manifest = {
        "model": model.infer.name,
        "source": str(path),
        "sets": {k: v for k, (_, v) in sets.items()},
        "with": list(args.present),
        "target": args.target,
        "float_dtype": c.gen.float_dtype,
        "dlc": __version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "cache_key": cache_key(c.source),
        "cache_module": str(module_path(c.source)),
        "module": f"{name}.py",
        "functions": {},
        "constants": [],
    }
    for fn, prog in c.programs.items():
        manifest["functions"][fn] = _describe(prog, c.gen.persist)
    manifest["constants"] = [{"key": k, "dtype": p.dtype, "shape": [str(d) for d in p.shape]}
                             for k, p in c.gen.persist.items() if p.value is not None]
    t_warm = None
    if not args.no_warm:
        from runtime.compiled import compile_jobs
        from runtime.interpreter import RunError
        try:
            compile_jobs()
        except RunError as e:  # the environment's mistake, not the model's: no advice about --no-warm
            return _fail(str(e))
        t1 = time.perf_counter()
        try:
            _warm(c, model)
        except (RunError, ValueError) as e:
            return _fail(f"warming the cache failed: {e}", "--no-warm writes the files without it")
        t_warm = time.perf_counter() - t1
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in ((f"{name}.py", c.source), ("manifest.json", _json(manifest) + "\n")):
        tmp = out / f".{fname}.{os.getpid()}.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, out / fname)  # a whole file or the old one, never half of one
        finally:
            tmp.unlink(missing_ok=True)
        print(f"wrote {out / fname}")
    fns = ", ".join(c.programs)
    if t_warm is None:
        print(f"generated {fns} in {t_gen:.2f} s; not compiled (--no-warm): the first call of each compiles it")
    else:
        print(f"compiled {fns} for {args.target} in {t_gen + t_warm:.2f} s "
              f"(generating {t_gen:.2f} s, Numba {t_warm:.2f} s); cached as {module_path(c.source)}")
    return 0


def _json(v, indent: str = "") -> str:
    """JSON with one line per flat record (an input, an output, a parameter) rather than one per value."""
    import json

    def scalar(x):
        return not isinstance(x, (dict, list))

    def row(x):  # a scalar, or a list of scalars such as a shape
        return scalar(x) or (isinstance(x, list) and all(map(scalar, x)))

    if row(v) or (isinstance(v, dict) and all(map(row, v.values()))) or not v:
        return json.dumps(v)
    inner = indent + "  "
    if isinstance(v, dict):
        items = [f"{inner}{json.dumps(k)}: {_json(x, inner)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(inner + _json(x, inner) for x in v) + f"\n{indent}]"


def _persistent_keys(s, found: dict) -> dict:
    """Persistent key -> (graph, node) of every parameter, state, slot and constant a schedule reads or writes,
    its scan bodies included, in order of first use."""
    for n, (kind, arg) in s.storage.items():
        if kind == "persist" and arg not in found:
            found[arg] = (s.graph, n)
    for it in s.items:
        if it.body is not None:
            _persistent_keys(it.body, found)
    return found


def _describe(prog, persist: dict) -> dict:
    """One generated function for the manifest: inputs, outputs, what it keeps between calls."""
    from .dims import product
    s = prog.schedule
    g = s.graph
    input_node = {arg: n for n, (kind, arg) in s.storage.items() if kind == "input"}
    targets = set((g.train or {}).get("targets", {}))

    def role(name, n):
        if g.node(n)["attrs"].get("role") == "hyper":
            return "hyper"
        return "target" if name in targets else "input"

    inputs = []
    for name in prog.inputs:
        n = input_node[name]
        t = g.type(n)
        inputs.append({"name": name, "role": role(name, n), "dtype": t.dtype, "shape": [str(d) for d in t.shape]})
    outputs = [{"name": k, "dtype": o.dtype, "shape": [str(d) for d in o.shape]}
               for k, o in prog.outputs.items() if k not in prog.updates.values()]
    persistent = []
    for key, (pg, n) in _persistent_keys(s, {}).items():
        p = persist[key]
        if p.value is not None:
            continue  # a constant: listed once, with the module's constants
        d = pg.node(n)
        kind = "param" if d["op"] == "param" else "slot" if d["attrs"].get("slot") else "state"
        size = product(p.shape)
        persistent.append({"key": key, "kind": kind, "dtype": p.dtype, "shape": [str(x) for x in p.shape],
                           "size": int(size.value) if size.is_int else str(size)})
    return {"inputs": inputs, "outputs": outputs, "persistent": persistent, "updates": sorted(prog.updates)}


def _warm(c, model) -> None:
    """Run every function of c once on constant inputs (symbolic sizes 2), so that Numba compiles it into its cache.
    Machine code depends on ranks and dtypes, never on sizes, so any sizes do. c owns its storage: the
    model's parameters are copied in, nothing the caller holds changes."""
    import numpy as np

    from runtime.interpreter import RunError
    c.sync({k: np.array(v) for k, v in model.params.items()})
    calls = {}
    for fn, prog in c.programs.items():
        s = prog.schedule
        g = s.graph
        consts = {k: v for k, (v, _) in g.dims.items() if v.is_const}
        input_node = {arg: n for n, (kind, arg) in s.storage.items() if kind == "input"}
        feeds = {}
        for name in prog.inputs:
            t = g.type(input_node[name])
            shape = []
            for d in t.shape:
                d = d.subs(consts)
                d = d.subs({sym: 2 for sym in d.symbols()})
                if not d.is_int or d.value < 1:
                    raise RunError(f"input `{name}` of {fn} has no size when its dimensions are 2: {t}")
                shape.append(int(d.value))
            dtype = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "bool": "bool"}[t.dtype]
            # Integers are 1: a valid index into any axis of size 2 and a valid sequence length (0 is not:
            # the last step of a length-0 sequence is out of range); the step count starts at 1 (Adam divides
            # by 1 - b^t); other floats are 0.
            fill = np.ones if name == "step" or t.dtype.startswith("i") else np.zeros
            feeds[name] = fill(shape, dtype=dtype)
        calls[fn] = feeds
    c.compile(calls)  # all at once, in parallel processes
    for fn, feeds in calls.items():
        c.call(fn, feeds, seed=0, step=1)


def cmd_explain(args, argv) -> int:
    if args.code is None:
        for code, (title, _) in CODES.items():
            print(f"{code}  {title}")
        return 0
    code = args.code.upper()
    if code.isdigit():
        code = f"E{int(code):04d}"
    if code not in CODES:
        print(f"error: no error code `{args.code}`\nhelp: `dlc explain` lists them", file=sys.stderr)
        return 1
    title, text = CODES[code]
    print(f"{code}: {title}\n\n{text.rstrip()}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = argv  # for diagnostics that point into the command line
    try:
        from . import train_cli
        commands = {"check": cmd_check, "graph": cmd_graph, "compile": cmd_compile, "explain": cmd_explain,
                    "train": train_cli.cmd_train, "eval": train_cli.cmd_eval, "predict": train_cli.cmd_predict}
        return commands[args.command](args, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        import traceback
        traceback.print_exc()
        print("error[E0900]: internal compiler error: this is a bug in dlc, not in your model.\n"
              "help: please report it with the .dln file and the command line above", file=sys.stderr)
        return 70


def run():
    sys.exit(main())
