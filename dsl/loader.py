"""Finding and loading .dln files: zoo names, `use` imports (standard library and relative files), cycles."""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import ast as A
from .diagnostics import Diagnostic, DiagnosticError, Note, Sources, suggest

_HERE = Path(__file__).resolve().parent


def zoo_dir() -> Path:
    # A source checkout keeps the zoo at the repository root; a wheel carries it inside `dlc/`.
    for candidate in (_HERE.parent / "zoo", _HERE.parent / "dlc" / "zoo"):
        if (candidate / "std").is_dir():
            return candidate
    raise FileNotFoundError("the zoo folder is missing from this installation of dlc")


def _register_alias():
    try:
        from .diagnostics import ALIASES
        ALIASES[str(zoo_dir().resolve())] = "zoo"
    except FileNotFoundError:
        pass


_register_alias()


def zoo_models() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.dln"))


def std_modules() -> list[str]:
    return sorted(p.stem for p in (zoo_dir() / "std").glob("*.dln"))


@dataclass
class Program:
    main: A.Module
    modules: list  # every module, dependencies first, the standard library first of all
    sources: Sources
    aliases: dict = field(default_factory=dict)  # (importing path, alias) -> Module


def resolve(spec: str) -> Path:
    """A path to a .dln file, or the name of a zoo model."""
    p = Path(spec)
    if p.is_file():
        return p.resolve()
    if p.suffix != ".dln" and os.sep not in spec and "/" not in spec:
        z = zoo_dir() / f"{spec}.dln"
        if z.is_file():
            return z
        hint = suggest(spec, zoo_models())
        raise DiagnosticError(Diagnostic("E0133", f"no file `{spec}` and no zoo model of that name", None,
                                         help=f"did you mean `{hint}`?" if hint else
                                         f"zoo models: {', '.join(zoo_models())}"))
    what = "is a directory, not a .dln file" if p.is_dir() else "does not exist"
    raise DiagnosticError(Diagnostic("E0133", f"`{spec}` {what}", None))


def cache_dir() -> Path:
    """Where dlc keeps what it can rebuild (parsed files, generated modules): DLC_CACHE_DIR, or the
    platform's user cache folder."""
    env = os.environ.get("DLC_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dlc"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "dlc" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlc"


def write_atomic(path: Path, data: str | bytes):
    """Write a whole file or nothing: a reader (or a second process) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_name(*parts: bytes) -> str:
    """The name of a cache entry keyed by parts: 32 hex digits of their sha256, each part preceded by its
    length, so that no two lists of parts run together into the same bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


def grammar_path() -> Path:
    # In a source checkout the grammar lives at the repository root; a wheel carries it inside `dlc/`.
    for candidate in (_HERE.parent / "grammar.lark", _HERE.parent / "dlc" / "grammar.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("grammar.lark is missing from this installation of dlc")


def parse(text: str, key: str) -> A.Module:
    """dsl.parser.parse, imported on first use: a process whose files are all in the parse cache never
    imports Lark (0.02-0.03 s of a warm start)."""
    from .parser import parse
    return parse(text, key)


@lru_cache(maxsize=1)
def _parser_stamp() -> bytes:
    """What a parsed file depends on besides its text: the grammar and the code that builds the AST."""
    h = hashlib.sha256()
    for p in (grammar_path(), _HERE / "parser.py", _HERE / "ast.py"):
        h.update(p.read_bytes())
    return h.digest()


def _parse_cached(text: str, key: str) -> A.Module:
    """Parsing takes most of the front end's time in a new process (0.14 s for a model and the standard
    library, against 0.014 s to unpickle them), so a file's AST is kept under the cache folder, keyed by
    its path (spans name it), its text and the parser. Syntax errors are not cached."""
    path = cache_dir() / "ast" / f"{cache_name(key.encode(), text.encode(), _parser_stamp())}.pickle"
    try:
        with open(path, "rb") as f:
            mod = pickle.load(f)
        if isinstance(mod, A.Module):
            return mod
    except Exception:  # missing, truncated or written by another version: parse again
        pass
    mod = parse(text, key)
    try:
        write_atomic(path, pickle.dumps(mod, protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError, RecursionError):  # only a cache: a read-only folder or an AST
        pass  # too deep to pickle slows the next start, nothing more
    return mod


_PARSED: dict = {}  # (path, mtime, size) -> Module; the standard library is parsed once per process


def _read(path: Path, sources: Sources, span) -> A.Module:
    key = str(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DiagnosticError(Diagnostic("E0121", f"cannot read `{path}`: {getattr(e, 'strerror', None) or e}", span))
    sources.add(key, text)
    cache_key = (key, st.st_mtime_ns, st.st_size)
    if cache_key not in _PARSED:
        _PARSED[cache_key] = _parse_cached(text, key)
    return _PARSED[cache_key]


def load(path: Path | str, sources: Sources | None = None, text: str | None = None) -> Program:
    """Parse a file and everything it imports. Raises DiagnosticError with every error found."""
    sources = sources or Sources()
    diags: list[Diagnostic] = []
    order: list[A.Module] = []
    done: dict[str, A.Module] = {}
    aliases: dict = {}

    def visit(p: Path, stack: list, span, text=None):
        key = str(p)
        if key in done:
            return done[key]
        if key in [s for s, _ in stack]:
            chain = [s for s, _ in stack][[s for s, _ in stack].index(key):] + [key]
            names = " -> ".join(os.path.basename(c) for c in chain)
            diags.append(Diagnostic("E0120", f"import cycle: {names}", span,
                                    [Note("imported here", sp) for _, sp in stack[1:] if sp is not None][:4],
                                    help="move the blocks both files need into a third file that both `use`"))
            return None
        try:
            if text is not None:
                sources.add(key, text)
                mod = parse(text, key)
            else:
                mod = _read(p, sources, span)
        except DiagnosticError as e:
            diags.extend(e.diagnostics)
            return None
        stack.append((key, span))
        for u in mod.uses:
            target = _use_target(u, p)
            if target is None:
                continue
            if isinstance(target, Diagnostic):
                diags.append(target)
                continue
            dep = visit(target, stack, u.span)
            if dep is not None and u.alias:
                aliases[(key, u.alias)] = dep
        stack.pop()
        done[key] = mod
        order.append(mod)
        return mod

    std_dir = zoo_dir() / "std"
    for name in std_modules():
        visit((std_dir / f"{name}.dln").resolve(), [], None)
    main = visit(Path(path).resolve() if text is None else Path(path), [], None, text)
    if diags:
        raise DiagnosticError(diags)
    return Program(main, order, sources, aliases)


def _use_target(u: A.Use, importer: Path):
    if u.is_file:
        target = (importer.parent / u.module).resolve()
        if not target.is_file():
            return Diagnostic("E0121", f"imported file `{u.module}` not found", u.span,
                              [Note(f"looked for {target}")], help="paths are relative to the importing file")
        return target
    parts = u.module.split(".")
    if parts[0] != "std" or len(parts) != 2:
        return Diagnostic("E0121", f"unknown module `{u.module}`", u.span,
                          help='standard modules are `std.NAME`; files are imported with `use "path.dln"`')
    if parts[1] not in std_modules():
        hint = suggest(parts[1], std_modules())
        return Diagnostic("E0121", f"the standard library has no module `{parts[1]}`", u.span,
                          help=f"did you mean `std.{hint}`?" if hint else f"modules: {', '.join(std_modules())}")
    # The standard library is always loaded; `use std.x` documents the dependency.
    return (zoo_dir() / "std" / f"{parts[1]}.dln").resolve()
