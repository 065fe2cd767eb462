"""Job kinds: one module each, with a frozen `Config` dataclass and `run(cfg, ctx) -> list[dict]`.

A job module may also define:
- `check(cfg) -> list[tuple[str, str]]`: fast pre-submission checks (no torch, no GPU) returning
  `(dotted key, message)` pairs, e.g. a dataset root that does not exist;
- `depends_on(cfg) -> list[str]`: every reference the cell reads, as written in its config (a cell key or a run
  directory). The launcher resolves each one before anything runs (a cell of the same launch, or a finished run
  directory under the runs root) and then calls `check` with the references replaced by their run directories.

Modules must not import torch at import time: the launcher imports them to validate sweeps.

Kinds are declared, never imported on demand: the built-in ones below, then (in this order) the entry-point
group `nfjobs.kinds` of installed packages, the `[tool.nfjobs.kinds]` table of the nearest `pyproject.toml` above
the working directory, and `register()` calls. A sweep naming anything else is an unknown kind; nothing
undeclared is imported.
"""

import difflib
import functools
import importlib
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from nfjobs.errors import UserError

KINDS: dict[str, str] = {
    "train": "nfjobs.jobs.train",
    "cache": "nfjobs.jobs.cache",
    "probe": "nfjobs.jobs.probe",
    "score": "nfjobs.jobs.score",
    "sae": "nfjobs.jobs.sae",
    "smoke": "nfjobs.jobs.smoke",
}
"""Built-in job kinds and their modules."""
ENTRY_POINT_GROUP = "nfjobs.kinds"
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A job kind's name (it prefixes every cell key of the kind)."""
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class UnknownKind(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Declared:
    name: str
    module: str
    origin: str
    """Where it was declared: `built-in`, `entry point (package)`, a pyproject.toml path, `register()`."""


_REGISTERED: dict[str, Declared] = {}


def register(name: str, module: str, origin: str = "register()") -> None:
    """Declare the job kind `name`, implemented by the module `module` (imported only when a sweep uses it)."""
    if not NAME.fullmatch(name):
        raise UnknownKind(f"job kind name {name!r}: expected lower-case letters, digits and '_' (at most 40)")
    if not MODULE.fullmatch(module):
        raise UnknownKind(f"job kind {name!r}: {module!r} is not a dotted module path")
    if name in KINDS:
        raise UnknownKind(f"job kind {name!r} is built in ({KINDS[name]}); declare yours under another name")
    _REGISTERED[name] = Declared(name, module, origin)


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def project_file(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above `start` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d / "pyproject.toml"
    return None


def _from_pyproject(path: Path) -> list[Declared]:
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("nfjobs", {}).get("kinds", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UnknownKind(f"{path}: cannot read [tool.nfjobs.kinds]: {err}") from None
    if not isinstance(table, dict):
        raise UnknownKind(f"{path}: tool.nfjobs.kinds: expected a table of name = \"module.path\"")
    out = []
    for name, module in table.items():
        if not (isinstance(module, str) and NAME.fullmatch(name) and MODULE.fullmatch(module)) or name in KINDS:
            raise UnknownKind(f"{path}: tool.nfjobs.kinds.{name}: expected a new kind name (lower-case letters, "
                              f"digits, '_'; not a built-in) = \"dotted.module\", got {module!r}")
        out.append(Declared(name, module, str(path)))
    return out


@functools.cache
def _installed(cwd: Path, search_path: tuple[str, ...]) -> dict[str, Declared]:
    """Kinds declared by installed packages' entry points and the project's pyproject.toml, read once per
    working directory and import path (a launch asks for every cell's kind)."""
    out: dict[str, Declared] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        if ep.name in KINDS or not NAME.fullmatch(ep.name) or not MODULE.fullmatch(module):
            continue  # a built-in name or a malformed declaration never shadows or imports anything
        package = ep.dist.name if ep.dist is not None else "?"
        out[ep.name] = Declared(ep.name, module, f"entry point ({package})")
    path = project_file(cwd)
    if path is not None:
        out.update({d.name: d for d in _from_pyproject(path)})
    return out


def declared() -> dict[str, Declared]:
    """Every job kind that can be run here, by name."""
    out = {name: Declared(name, module, "built-in") for name, module in KINDS.items()}
    out.update(_installed(Path.cwd(), tuple(sys.path)))
    out.update(_REGISTERED)
    return out


def load_kind(kind: str) -> ModuleType:
    """The module implementing the declared job kind `kind`; UnknownKind (one line) for anything else."""
    kinds = declared()
    if kind not in kinds:
        close = difflib.get_close_matches(kind, kinds, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownKind(f"unknown job kind {kind!r}; valid kinds: {', '.join(sorted(kinds))}.{hint} "
                          "(declare your own in [tool.nfjobs.kinds] of pyproject.toml: `uv run launch.py kinds`)")
    module_name = kinds[kind].module
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a declared kind that does not import: one line, not its traceback
        first = str(err).splitlines()[0] if str(err) else ""
        raise UnknownKind(f"job kind {kind!r}: module {module_name!r} (declared in {kinds[kind].origin}) failed "
                          f"to import: {type(err).__name__}: {first}") from None
    for attr in ("Config", "run"):
        if not hasattr(module, attr):
            raise UnknownKind(f"job kind {kind!r}: module {module_name!r} has no `{attr}`")
    return module


def describe_kinds() -> str:
    """One line per declared kind: name, module, where it was declared and the first line of its doc (the doc is
    read from the source without importing it)."""
    lines = []
    for d in sorted(declared().values(), key=lambda d: (d.origin != "built-in", d.name)):
        lines.append(f"{d.name:<10} {d.module:<28} {_first_doc_line(d.module):<70}  [{d.origin}]")
    return "\n".join(lines)


def _first_doc_line(module: str) -> str:
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
        doc = ast.get_docstring(ast.parse(source)) or ""
    except (ImportError, ValueError, OSError, SyntaxError):
        return "(module not found)"
    return doc.strip().splitlines()[0] if doc.strip() else ""
