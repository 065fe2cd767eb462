"""Code frozen at submission: a content-addressed copy of the project's source that launched jobs import.

Editing the tree while cells queue, run or requeue changes nothing they run; rows record the copy's hash
(`run.code_hash`) beside the commit and dirty flag.
"""

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from nfjobs.store.layout import RunsRoot

CODE_ROOT = Path(__file__).resolve().parents[2]


def source_files(root: Path = CODE_ROOT) -> list[Path]:
    """The code a job can import: the `nfjobs` package and the entry scripts beside it (relative paths)."""
    files = [p for p in (root / "nfjobs").rglob("*.py") if "__pycache__" not in p.parts]
    files += [p for p in root.glob("*.py")]
    return sorted(p.relative_to(root) for p in files)


def code_hash(root: Path = CODE_ROOT) -> str:
    digest = hashlib.sha256()
    for rel in source_files(root):
        digest.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def freeze(runs_root: Path | str, root: Path = CODE_ROOT) -> tuple[Path, str]:
    """Copy the source to `<runs_root>/_code/<hash>/` (reused when it is `verified`) and return (that folder,
    hash). A folder of that name that is not verified (other content, extra files, files someone else can
    change) is never imported: the copy is then built under a fresh name `<hash>-<pid>-<random>`."""
    digest = code_hash(root)
    code_root = RunsRoot(Path(runs_root).resolve()).code
    dest = code_root / digest
    if verified(dest):
        return dest, digest
    code_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".tmp", dir=code_root))  # new, ours, unguessable
    try:
        for rel in source_files(root):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)  # with its mtime: numba's cache entries check it
        _carry_numba_caches(code_root, tmp)
        _restrict(tmp)
        try:
            tmp.rename(dest)  # atomic: a concurrent launch either wins or finds the finished copy
            return dest, digest
        except OSError:
            pass
        if verified(dest):  # a concurrent launch built the same copy meanwhile
            return dest, digest
        fresh = code_root / f"{digest}-{os.getpid()}-{os.urandom(4).hex()}"
        tmp.rename(fresh)
        return fresh, digest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _restrict(folder: Path) -> None:
    """Only its owner may change what a copy holds (a copy anyone else could write is never verified)."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        path.chmod(stat.S_IMODE(mode) & ~0o022 | (0o755 if stat.S_ISDIR(mode) else 0o644))


def _trusted(path: Path, st: os.stat_result) -> bool:
    """A file or folder of a copy that only this user can have written: a real file or folder (no link), owned by
    this user, writable by nobody else."""
    return (not stat.S_ISLNK(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022
            and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)))


def verified(copy: Path) -> bool:
    """The copy can be imported: it holds exactly the source files whose hash names it (the first 16 hex digits
    of its name) and nothing else that Python would import (no extra module, package, extension module or
    `.pth`; only `__pycache__` folders besides), and every file and folder in it is this user's, writable by no
    one else, and not a link. A runs root is data: anyone who can write to it could plant code in a copy."""
    try:
        if not _trusted(copy, copy.lstat()) or not stat.S_ISDIR(copy.lstat().st_mode):
            return False
        sources = {str(rel) for rel in source_files(copy)}
        for folder, dirs, files in os.walk(copy):
            here = Path(folder)
            rel_dir = here.relative_to(copy)
            in_cache = "__pycache__" in rel_dir.parts
            if rel_dir.parts and rel_dir.parts[0] not in ("nfjobs", "__pycache__"):
                return False  # a package beside nfjobs: it would shadow an installed one
            for name in [*dirs, *files]:
                if not _trusted(here / name, (here / name).lstat()):
                    return False
            for name in files:
                if not in_cache and str(rel_dir / name) not in sources:
                    return False  # an extension module, a .pth, a module the project does not have
        return code_hash(copy) == copy.name[:16]
    except (OSError, ValueError):
        return False


KERNEL_CACHE = re.compile(r"(?P<module>[^.]+)\.(?P<qualname>.+)-(?P<line>[0-9]+)\.py[0-9]+[a-z]*\.nbi")
"""numba's index of a cached kernel: `<module file stem>.<qualname>-<first line>.py<version><abiflags>.nbi`."""


def _declares_kernel(source: bytes, index_name: str) -> bool:
    """`source` defines, decorated, the function an index file is named after, at the line the name says (its
    `co_firstlineno`, the first decorator's line): an index for anything else is not numba's for this file."""
    import ast

    found = KERNEL_CACHE.fullmatch(index_name)
    if not found:
        return False
    name, line = found["qualname"].split(".")[-1], int(found["line"])
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
               and node.decorator_list and min(d.lineno for d in node.decorator_list) == line
               for node in ast.walk(tree))


def _carry_numba_caches(code_root: Path, new: Path) -> None:
    """Copy numba's on-disk cache of each kernel whose source file is unchanged, from the newest earlier copy
    that has one, into the new copy. numba keys its cache folder on the source file's path (`NUMBA_CACHE_DIR`
    too), so every new copy compiled the AP kernel again (~17 s a cell, BENCHMARKS.md). numba checks each entry
    before loading it (source bytes, bytecode, CPU, numba version): one that does not match is recompiled.
    But numba unpickles an index to check it: only indexes of `verified` copies (this user's, unchanged) are
    carried, and only one named after a kernel its source file defines."""
    indexes = []
    for index in code_root.glob("[!.]*/**/__pycache__/*.nbi"):  # not the unfinished copies (.<hash>.<pid>.tmp)
        with contextlib.suppress(OSError):
            indexes.append((index.stat().st_mtime, index))
    carried = set()
    checked: dict[Path, bool] = {}
    for _, index in sorted(indexes, reverse=True):
        old = code_root / index.relative_to(code_root).parts[0]
        if old not in checked:
            checked[old] = verified(old)
        if not checked[old]:
            continue  # an unverified folder's caches are data from anyone: never carried
        rel = index.parent.parent.relative_to(old) / f"{index.name.split('.')[0]}.py"
        if (rel, index.name) in carried or not (new / rel).is_file():
            continue
        try:
            source = (new / rel).read_bytes()
            if (old / rel).read_bytes() != source or not _declares_kernel(source, index.name):
                continue
            cache = (new / rel).parent / "__pycache__"
            cache.mkdir(exist_ok=True)
            for f in [index, *index.parent.glob(f"{index.name[:-len('.nbi')]}.*.nbc")]:
                shutil.copy2(f, cache / f.name)
        except OSError:  # an earlier copy being removed: compile instead
            continue
        carried.add((rel, index.name))


def job_env(code_dir: Path) -> dict[str, str]:
    """Environment that makes a Python process import the frozen copy first (and not its working directory)."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{code_dir}{os.pathsep}{path}" if path else str(code_dir), "PYTHONSAFEPATH": "1"}
