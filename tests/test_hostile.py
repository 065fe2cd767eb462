"""Nothing a user did not write is trusted (issue 22): a runs root is data, never code; kinds come from the project
of the environment; every sweep name and cell key, whatever its source, stays inside the runs root; a process is
acted on only while it is the one launched; damaged files are named in one line. One fixture per failure mode,
end to end where the harm is end to end."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from waiting import wait_for

from nfjobs import commands as launch
from nfjobs import results
from nfjobs.backends import local
from nfjobs.store import manifest as manifests
from nfjobs.store import rows as stored
from nfjobs.store import snapshot
from nfjobs.store.layout import run_dir

ROOT = Path(__file__).parent.parent
PY = f"py{sys.version_info[0]}{sys.version_info[1]}"


def tree(folder: Path) -> set[str]:
    """Every path under `folder` (what a refused command must leave as it was)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_line_exit_2(capsys, *argv: str) -> str:
    """Run a launch.py command in this process: it must exit 2 with exactly one line on stderr; returns it."""
    with pytest.raises(SystemExit) as exc:
        launch.main(list(argv))
    captured = capsys.readouterr()
    assert exc.value.code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0] + captured.out


def sleeper() -> subprocess.Popen:
    """A live process that is no cell's job (the bystander a stale job id may name)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


# ------------------------------------------------------------------------------------ 2. a runs root is not code
def _copy_of_this_project(dest: Path) -> None:
    for rel in snapshot.source_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(snapshot.CODE_ROOT / rel, dest / rel)


def _plant_wrong_content(copy: Path, marker: Path) -> None:
    """Every file, but worker.py does something else (the folder's content does not hash to its name)."""
    worker = copy / "nfjobs" / "worker.py"
    worker.write_text(f"open({str(marker)!r}, 'w').write('planted')\n" + worker.read_text())


def _plant_extra_module(copy: Path, marker: Path) -> None:
    """The exact files, plus a module beside them that shadows an installed package jobs import."""
    (copy / "polars").mkdir()
    (copy / "polars" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('planted')\n")


def _plant_extension_module(copy: Path, marker: Path) -> None:
    """The exact files, plus a file named like an extension module, which Python would load before worker.py."""
    (copy / "nfjobs" / f"worker.cpython-{sys.version_info[0]}{sys.version_info[1]}-x86_64-linux-gnu.so").write_bytes(b"")


@pytest.mark.parametrize("plant", [_plant_wrong_content, _plant_extra_module, _plant_extension_module],
                         ids=["wrong-content", "extra-module", "extension-module"])
def test_a_planted_code_copy_is_not_imported_by_a_launch(plant, tmp_path, run_launch):
    runs, marker = tmp_path / "runs", tmp_path / "planted-code-ran"
    digest = snapshot.code_hash()
    planted = runs / "_code" / digest
    _copy_of_this_project(planted)
    plant(planted, marker)
    assert not snapshot.verified(planted)
    sweep = tmp_path / "tiny.toml"
    sweep.write_text('kind = "toy"\nhead.width = [1, 2]\n')
    assert run_launch("--sweep", sweep) == 0
    assert not marker.exists()
    df = results.load(sweep, runs).collect()
    assert df.height == 4 and set(df["status"]) == {"ok"} and set(df["run.code_hash"]) == {digest}
    copies = [p for p in (runs / "_code").iterdir() if p != planted]
    assert len(copies) == 1 and copies[0].name.startswith(f"{digest}-") and snapshot.verified(copies[0])


def test_a_copy_someone_else_can_write_or_holding_a_link_is_not_verified(tmp_path):
    project = tmp_path / "project"
    (project / "nfjobs").mkdir(parents=True)
    (project / "nfjobs" / "__init__.py").write_text("")
    (project / "nfjobs" / "kern.py").write_text("A = 1\n")
    copy, _ = snapshot.freeze(tmp_path / "runs", project)
    assert snapshot.verified(copy) and snapshot.freeze(tmp_path / "runs", project)[0] == copy  # reused
    (copy / "nfjobs" / "kern.py").chmod(0o664)  # a group member could rewrite it in place
    assert not snapshot.verified(copy)
    again, _ = snapshot.freeze(tmp_path / "runs", project)
    assert again != copy and snapshot.verified(again)
    (again / "nfjobs" / "kern.py").unlink()
    (again / "nfjobs" / "kern.py").symlink_to(project / "nfjobs" / "kern.py")  # same bytes today, anything later
    assert not snapshot.verified(again)


KERNEL = "import numba\n\n\n@numba.njit(cache=True)\ndef bump(x):\n    return x + 1\n"
"""A cached numba kernel: its index is `kern.bump-4.<py>.nbi` (first line of its decorator)."""


def _project_with_kernel(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "nfjobs").mkdir(parents=True)
    (project / "nfjobs" / "__init__.py").write_text("")
    (project / "nfjobs" / "kern.py").write_text(KERNEL)
    (project / "nfjobs" / "other.py").write_text("A = 1\n")
    return project


def _plant_index(copy: Path, name: str) -> None:
    cache = copy / "nfjobs" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / name).write_bytes(b"planted index: numba would unpickle this")
    (cache / name.replace(".nbi", ".1.nbc")).write_bytes(b"planted code")


def _carried(copy: Path) -> list[str]:
    return sorted(p.name for p in (copy / "nfjobs").glob("__pycache__/*.nb[ic]"))


def test_a_kernel_cache_from_an_unverified_copy_is_never_carried(tmp_path):
    project, runs = _project_with_kernel(tmp_path), tmp_path / "runs"
    planted = runs / "_code" / "0123456789abcdef"  # any name: its content does not hash to it
    shutil.copytree(project, planted)
    _plant_index(planted, f"kern.bump-4.{PY}.nbi")
    new, _ = snapshot.freeze(runs, project)
    assert _carried(new) == []


def test_a_kernel_cache_whose_source_has_no_such_kernel_is_never_carried(tmp_path):
    project, runs = _project_with_kernel(tmp_path), tmp_path / "runs"
    first, _ = snapshot.freeze(runs, project)
    _plant_index(first, f"kern.evil-1.{PY}.nbi")  # kern.py has no kernel `evil` at line 1
    _plant_index(first, f"other.bump-4.{PY}.nbi")  # other.py has no kernel at all
    _plant_index(first, f"kern.bump-4.{PY}.nbi")  # the one numba would write for kern.py: carried (the control)
    assert snapshot.verified(first)  # its own caches do not change what it is
    (project / "nfjobs" / "other.py").write_text("A = 2\n")  # a new copy, same kernel
    new, _ = snapshot.freeze(runs, project)
    assert new != first
    assert _carried(new) == [f"kern.bump-4.{PY}.1.nbc", f"kern.bump-4.{PY}.nbi"]


# ------------------------------------------------------------------- 3. kinds come from the environment's project
def _hostile_folder(tmp_path: Path, marker: Path) -> Path:
    """A downloaded folder: a pyproject.toml declaring a kind whose module would leave `marker`, and a sweep."""
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[tool.nfjobs.kinds]\nevil = "evilkind"\n')
    (folder / "evilkind.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nConfig = run = None\n")
    (folder / "evil.toml").write_text('kind = "evil"\n')
    return folder


def test_a_folder_the_user_stands_in_declares_no_kind(tmp_path):
    marker = tmp_path / "imported"
    folder = _hostile_folder(tmp_path, marker)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    for argv in (["--sweep", "evil.toml", "--dry-run"], ["kinds"]):
        proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *argv], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120)
        assert not marker.exists(), argv
        if argv[0] == "kinds":
            assert proc.returncode == 0 and "evil" not in proc.stdout, proc.stdout + proc.stderr
        else:
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert "evil.toml: kind: unknown job kind 'evil'" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["evil.toml", "evilkind.py", "pyproject.toml"]


def _dist(site: Path, name: str, entry_points: str) -> None:
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[nfjobs.kinds]\n{entry_points}\n")


def test_the_kinds_command_imports_nothing_not_even_parent_packages(tmp_path):
    marker, site = tmp_path / "imported", tmp_path / "site"
    (site / "markpkg").mkdir(parents=True)
    (site / "markpkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (site / "markpkg" / "kind.py").write_text('"""A kind in a package whose __init__ has effects."""\n')
    _dist(site, "markkinds", "marked = markpkg.kind")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "kinds"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("marked ")]
    assert "refused" in line and "outside the project" in line  # not the project's, not installed
    toy = next(ln for ln in proc.stdout.splitlines() if ln.startswith("toy "))
    assert "A deterministic job kind" in toy  # read from the source file, as before


@pytest.mark.parametrize(("module", "words"), [
    ("pytest.__main__", "is a program's `__main__`"),  # installed, but a program: it would run inside the launcher
    ("json.tool", "outside the project of this environment"),  # importable, but the standard library's
    ("no_such_module_anywhere", "was not found"),
])
def test_a_declared_kind_outside_the_project_or_a_main_is_refused_in_one_line(module, words, tmp_path):
    from nfjobs.kinds import UnknownKind, load_kind, register, unregister

    register("declared", module)
    try:
        with pytest.raises(UnknownKind) as info:
            load_kind("declared")
    finally:
        unregister("declared")
    msg = str(info.value)
    assert words in msg and "\n" not in msg and "not imported" in msg
    assert module not in sys.modules


def test_the_test_kind_from_tests_plugin_still_loads():
    from nfjobs.kinds import load_kind, module_file

    assert module_file("tests.kinds.toy") == ROOT / "tests" / "kinds" / "toy.py"
    assert load_kind("toy").RUNS_LOG == "toy_runs.log"
