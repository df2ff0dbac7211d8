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
        commands = {"check": cmd_check, "graph": cmd_graph, "explain": cmd_explain, "train": train_cli.cmd_train,
                    "eval": train_cli.cmd_eval, "predict": train_cli.cmd_predict}
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
