"""Job kinds: one module each, with a frozen `Config` dataclass and `run(cfg, ctx) -> list[dict]`.

A job module may also define:
- `check(cfg) -> list[tuple[str, str]]`: fast pre-submission checks (no torch, no GPU) returning
  `(dotted key, message)` pairs, e.g. a dataset root that does not exist;
- `depends_on(cfg) -> list[str]`: every reference the cell reads, as written in its config (a cell key or a run
  directory). The launcher resolves each one before anything runs (a cell of the same launch, or a finished run
  directory under the runs root) and then calls `check` with the references replaced by their run directories.

Modules must not import torch at import time: the launcher imports them to validate sweeps.

Kinds are declared, never imported on demand: the built-in ones below, then (in this order) the entry-point
group `nfjobs.kinds` of installed packages, the `[tool.nfjobs.kinds]` table of the project whose environment runs
the launcher (the `pyproject.toml` beside the environment, `<project>/.venv`; never the folder the user stands
in: a folder unpacked inside a project declares nothing), and `register()` calls. A sweep naming anything else
is an unknown kind; nothing undeclared is imported. A declared module is imported only when its file lies in that
project or in the environment's installed packages (found without importing anything), and never a `__main__`.
"""

import difflib
import functools
import importlib
import importlib.metadata
import os
import re
import site
import sys
import sysconfig
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


def project_file() -> Path | None:
    """The pyproject.toml of the project whose environment runs this process: the folder holding the environment
    (`sys.prefix`, uv's `<project>/.venv`), when it has one. Not the working directory's: what a user stands in
    (a downloaded folder, an unpacked archive) declares no code to run."""
    env = Path(sys.prefix).resolve()
    path = env.parent / "pyproject.toml"
    return path if env != Path(sys.base_prefix).resolve() and path.is_file() else None


def _allowed_roots() -> list[Path]:
    """Where a declared kind's module may live: the project of the environment, the environment's installed
    packages (site-packages) and the folders its `.pth` files add (editable installs)."""
    roots = []
    project = project_file()
    if project is not None:
        roots.append(project.parent)
    paths = sysconfig.get_paths()
    packages = {Path(paths[k]) for k in ("purelib", "platlib") if k in paths} | {Path(p) for p in site.getsitepackages()}
    for folder in packages:
        roots.append(folder)
        for pth in sorted(folder.glob("*.pth")) if folder.is_dir() else []:
            try:
                lines = pth.read_text(errors="replace").splitlines()
            except OSError:
                continue
            roots += [Path(ln.strip()) if os.path.isabs(ln.strip()) else folder / ln.strip()
                      for ln in lines if ln.strip() and not ln.startswith(("#", "import ", "import\t"))]
    return [r.resolve() for r in roots if r.is_dir()]


def module_file(module: str) -> Path | None:
    """The file `import module` would load, found without importing anything (not even its parent packages):
    the top-level name through the import system's finders (which run no module code), the rest on disk."""
    import importlib.util

    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.has_location and spec.origin else None
    folders = [Path(d) for d in spec.submodule_search_locations or []]
    for part in parts[1:-1]:
        folders = [d / part for d in folders if (d / part).is_dir()]
    for folder in folders:
        last = parts[-1]
        for candidate in (folder / last / "__init__.py", folder / f"{last}.py"):
            if candidate.is_file():
                return candidate
        extension = sorted(folder.glob(f"{last}.*.so"))
        if extension:
            return extension[0]
    return None


def _import_problem(d: "Declared") -> str | None:
    """Why the declared module of a kind must not be imported (None: it may be)."""
    if d.origin == "built-in":
        return None
    if "__main__" in d.module.split("."):
        return f"module {d.module!r} is a program's `__main__`, not a job kind module"
    path = module_file(d.module)
    if path is None:
        return f"module {d.module!r} was not found"
    path = path.resolve()
    if not any(path.is_relative_to(root) for root in _allowed_roots()):
        project = project_file()
        return (f"module {d.module!r} is {path}, outside the project of this environment "
                f"({project.parent if project else 'none'}) and its installed packages")
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
def _installed(search_path: tuple[str, ...]) -> dict[str, Declared]:
    """Kinds declared by installed packages' entry points and the project's pyproject.toml, read once per
    process and search path (a launch asks for every cell's kind; a new path entry may hold new distributions)."""
    out: dict[str, Declared] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        if ep.name in KINDS or not NAME.fullmatch(ep.name) or not MODULE.fullmatch(module):
            continue  # a built-in name or a malformed declaration never shadows or imports anything
        package = ep.dist.name if ep.dist is not None else "?"
        out[ep.name] = Declared(ep.name, module, f"entry point ({package})")
    path = project_file()
    if path is not None:
        out.update({d.name: d for d in _from_pyproject(path)})
    return out


def declared() -> dict[str, Declared]:
    """Every job kind that can be run here, by name."""
    out = {name: Declared(name, module, "built-in") for name, module in KINDS.items()}
    out.update(_installed(tuple(sys.path)))
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
    problem = _import_problem(kinds[kind])
    if problem:
        raise UnknownKind(f"job kind {kind!r} (declared in {kinds[kind].origin}): {problem}; not imported")
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
        lines.append(f"{d.name:<10} {d.module:<28} {_first_doc_line(d):<70}  [{d.origin}]")
    return "\n".join(lines)


def _first_doc_line(d: "Declared | str") -> str:
    import ast

    if isinstance(d, str):
        d = Declared(d, d, "register()")
    problem = _import_problem(d)
    if problem:
        return f"(refused: {problem})"
    path = module_file(d.module)
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) if path and path.suffix == ".py" else ""
    except (ValueError, OSError, SyntaxError, RecursionError):
        return "(module not readable)"
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""
