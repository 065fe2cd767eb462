"""Code frozen at submission: a content-addressed copy of the project's source that launched jobs import.

Editing the tree while cells queue, run or requeue changes nothing they run; rows record the copy's hash
(`run.code_hash`) beside the commit and dirty flag.
"""

import contextlib
import hashlib
import os
import shutil
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
    """Copy the source to `<runs_root>/_code/<hash>/` (reused when it exists) and return (that folder, hash)."""
    digest = code_hash(root)
    dest = RunsRoot(Path(runs_root).resolve()).code / digest
    if dest.exists() and not verified(dest):  # not what its name says: never import it, build a fresh copy
        dest = dest.with_name(f"{digest}-{os.getpid()}-{os.urandom(4).hex()}")
    if not dest.exists():
        tmp = dest.with_name(f".{digest}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel in source_files(root):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
        _carry_numba_caches(dest.parent, tmp)
        try:
            tmp.rename(dest)  # atomic: a concurrent launch either wins or finds the finished copy
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, digest


def verified(copy: Path) -> bool:
    """The copy holds exactly the files whose hash names it (the first 16 hex digits of its name)."""
    try:
        return copy.is_dir() and code_hash(copy) == copy.name[:16]
    except OSError:
        return False


def _carry_numba_caches(code_root: Path, new: Path) -> None:
    """Copy numba's on-disk cache of each kernel whose source file is unchanged, from the newest earlier copy
    that has one, into the new copy. numba keys its cache folder on the source file's path (`NUMBA_CACHE_DIR`
    too), so every new copy compiled the AP kernel again (~17 s a cell, BENCHMARKS.md). numba checks each entry
    before loading it (source bytes, bytecode, CPU, numba version): one that does not match is recompiled."""
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
            if (old / rel).read_bytes() != (new / rel).read_bytes():
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
