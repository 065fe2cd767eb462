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


# ------------------------------------------------------------------ 1. names walk out of the runs root: refused
def _bait(tmp_path: Path, victim: subprocess.Popen) -> tuple[Path, Path]:
    """A runs root at tmp/a/b/runs, and outside it what a name walking out of it would reach: a manifest naming a
    bystander process as a cell's job and a private file as its log (`tmp/a/b/runs/_sweeps/../../x.json` is
    tmp/a/b/x.json; `../../../../x` reaches tmp/x.json)."""
    runs = tmp_path / "a" / "b" / "runs"
    (runs / "_sweeps").mkdir(parents=True)
    secret = tmp_path / "secret_0_log.out"
    secret.write_text("PRIVATE-CONTENT\n")
    for where, name in ((tmp_path / "a" / "b" / "x.json", "../../x"), (tmp_path / "x.json", "../../../../x")):
        where.write_text(json.dumps({
            "sweep": name, "cells": {"toy-aaaaaaaaaaaa": {"kind": "toy", "group": "g", "stage": 0, "source": "x"}},
            "jobs": {"toy-aaaaaaaaaaaa": local.job_id(victim.pid)},
            "logs": {"toy-aaaaaaaaaaaa": {"stdout": str(secret), "stderr": str(secret)}}}))
    return runs, secret


TRAVERSALS = ["../../x", "../../../../x", "..", "x/../../x", "/etc", "x\n"]


@pytest.mark.parametrize("name", TRAVERSALS, ids=repr)
@pytest.mark.parametrize("source", ["flag", "sweep-file"])
@pytest.mark.parametrize("command", ["status", "logs", "cancel", "report"])
def test_a_sweep_name_outside_the_runs_root_is_refused_by_every_command(command, source, name, tmp_path, capsys):
    victim = sleeper()
    try:
        runs, secret = _bait(tmp_path, victim)
        target = name
        if source == "sweep-file":
            target = str(tmp_path / "downloaded.toml")
            Path(target).write_text(f'[sweep]\nname = {json.dumps(name)}\n\n[[group]]\nkind = "toy"\n')
        before = tree(tmp_path)
        argv = {"status": ["status", "--sweep", target, "--log-root", str(tmp_path / "logs")],
                "logs": ["logs", "toy-aaaa", "--sweep", target, "--log-root", str(tmp_path / "logs")],
                "cancel": ["cancel", "--sweep", target],
                "report": ["report", "--sweep", target, "--metric", "metric"]}[command]
        out = one_line_exit_2(capsys, *argv, "--runs-root", str(runs))
        assert "is not a sweep name" in out and "PRIVATE-CONTENT" not in out
        assert tree(tmp_path) == before  # nothing written, inside the runs root or out of it
        time.sleep(0.2)
        assert victim.poll() is None  # no signal reached the bystander
    finally:
        victim.kill()


@pytest.mark.parametrize("key", ["../../x", "../../../../x", "toy-aaaa/../../x", "/etc/passwd"], ids=repr)
def test_logs_of_a_key_outside_the_runs_root_is_refused(key, tmp_path, capsys):
    victim = sleeper()
    try:
        runs, secret = _bait(tmp_path, victim)
        manifests.write(runs, manifests.empty("s"))  # a sweep under the runs root, without that cell
        before = tree(tmp_path)
        out = one_line_exit_2(capsys, "logs", key, "--runs-root", str(runs), "--log-root", str(tmp_path / "logs"))
        assert "no cell" in out and "PRIVATE-CONTENT" not in out
        assert tree(tmp_path) == before
    finally:
        victim.kill()


def test_a_manifest_naming_a_path_as_a_job_or_an_outside_file_as_a_log_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE-CONTENT\n")
    cell = {"kind": "toy", "group": "g", "stage": 0, "source": "x"}
    path = runs / "_sweeps" / "s.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"sweep": "s", "cells": {"toy-aaaaaaaaaaaa": cell},
                                "jobs": {"toy-aaaaaaaaaaaa": "../../../etc/passwd"}}))
    out = one_line_exit_2(capsys, "status", "--sweep", "s", "--runs-root", str(runs))
    assert f"{path}: jobs.toy-aaaaaaaaaaaa: expected a job id" in out
    path.write_text(json.dumps({"sweep": "s", "cells": {"toy-aaaaaaaaaaaa": cell}, "jobs": {},
                                "logs": {"toy-aaaaaaaaaaaa": {"stdout": str(secret)}}}))
    out = one_line_exit_2(capsys, "logs", "toy-aaaa", "--runs-root", str(runs))
    assert f"logs.toy-aaaaaaaaaaaa: {secret} is not a log file the launcher wrote" in out
    assert "PRIVATE-CONTENT" not in out


# ---------------------------------------------------------- 4. a pid another process took over is not the job
@pytest.mark.parametrize("stale", ["wrong-start-time", "old-format"])
def test_a_reused_pid_is_neither_running_nor_signalled(stale, tmp_path, capsys):
    runs = tmp_path / "runs"
    victims = [sleeper(), sleeper()]
    try:
        ids = [f"local:{v.pid}:1" if stale == "wrong-start-time" else f"local:{v.pid}" for v in victims]
        assert all(not local.alive(j) for j in ids) and all(v.poll() is None for v in victims)
        stored.write_rows(run_dir(runs, "toy-bbbbbbbbbbbb").result,
                          [{"sweep": "s", "key": "toy-bbbbbbbbbbbb", "status": "failed", "error": "E: x"}])
        manifests.write(runs, {"sweep": "s", "cells": {
            k: {"kind": "toy", "group": "g", "stage": 0, "source": "s.toml"} for k in ("toy-aaaaaaaaaaaa", "toy-bbbbbbbbbbbb")},
            "jobs": {"toy-aaaaaaaaaaaa": ids[0], "toy-bbbbbbbbbbbb": ids[1]}})
        found = dict(results.cell_states("s", runs).select("key", "state").iter_rows())
        assert found == {"toy-aaaaaaaaaaaa": "failed", "toy-bbbbbbbbbbbb": "failed"}  # ended, not running
        assert launch.main(["status", "--sweep", "s", "--runs-root", str(runs)]) == 0
        assert capsys.readouterr().out.startswith("s: 2 cells | failed 2\n")
        for flags in (["--failed-only"], []):
            assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs), *flags]) == 0
            assert "cancelled 0 cell(s)" in capsys.readouterr().out
        time.sleep(0.3)
        assert all(v.poll() is None for v in victims)  # neither was signalled
        assert not run_dir(runs, "toy-aaaaaaaaaaaa").result.exists()  # and no cancelled row was written
    finally:
        for v in victims:
            v.kill()


# ------------------------------------------------------------------------------- 5. integrity
@pytest.mark.parametrize("bad", [
    b'{"event": "attempt", "attempt": "two"}\n',  # a non-numeric attempt
    b'{"step": 1, "wall_s": "slow", "metrics": {}}\n',  # a non-numeric wall time
    b'{"step": 1, "wall_s": null, "metrics": {}}\n',
    b'[1, 2]\n', b'"text"\n', b'not json at all\n', b'\xff\xfe\n',  # not a record, not JSON, not UTF-8
    b'[' * 100_000 + b'\n',  # nested deeper than the parser recurses
    b'{"event": "attempt", "attempt": 1, "ti',  # torn by a kill
], ids=["attempt-text", "wall-text", "wall-null", "list", "string", "not-json", "not-utf8", "deep", "torn"])
def test_a_damaged_metrics_line_does_not_fail_a_relaunched_cell(bad, tmp_path, sweep_file, run_launch):
    path = sweep_file('kind = "toy"\nhead.width = 3\n')
    assert run_launch("--sweep", path, "--debug") == 0
    (key,) = results.cell_states(path, tmp_path / "runs")["key"].to_list()
    metrics = run_dir(tmp_path / "runs", key).metrics
    metrics.write_bytes(metrics.read_bytes() + bad)
    stored.write_rows(run_dir(tmp_path / "runs", key).result,  # as if it had failed: a relaunch runs it again
                      [{"sweep": "s", "key": key, "status": "failed", "error": "E: x"}])
    assert run_launch("--sweep", path, "--debug") == 0
    assert stored.status(tmp_path / "runs", key) == "ok"
    records = [json.loads(ln) for ln in metrics.read_bytes().splitlines()[-2:]]
    assert records[0]["event"] == "attempt" and records[0]["attempt"] >= 2 and records[1]["phase"] == "toy"


def test_a_deeply_nested_manifest_is_one_line_naming_it_and_other_sweeps_still_work(tmp_path, capsys):
    runs = tmp_path / "runs"
    manifests.write(runs, {"sweep": "good", "cells": {"toy-cccccccccccc": {"kind": "toy", "group": "g", "stage": 0,
                                                                             "source": "x"}}, "jobs": {}})
    bad = runs / "_sweeps" / "deep.json"
    bad.write_text('{"sweep": "deep", "cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for argv in (["status", "--sweep", "deep"], ["cancel", "--sweep", "deep"]):
        out = one_line_exit_2(capsys, *argv, "--runs-root", str(runs))
        assert f"{bad}: damaged sweep manifest" in out
    assert launch.main(["status", "--sweep", "good", "--runs-root", str(runs)]) == 0
    out = one_line_exit_2(capsys, "logs", "toy-cccc", "--runs-root", str(runs))  # found, past the damaged one
    assert "has no job and no log" in out


def test_a_deeply_nested_sweep_file_given_to_status_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    out = one_line_exit_2(capsys, "status", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"))
    assert "no launched sweep named 'deep'" in out


FINISH_ON_SIGINT = """
import signal, sys, time
from nfjobs.store import rows
def done(*_):
    rows.write_rows(rows.run_dir(sys.argv[1], sys.argv[2]).result, [{"sweep": "s", "key": sys.argv[2], "status": "ok"}])
    sys.exit(0)
signal.signal(signal.SIGINT, done)
open(sys.argv[3], "w").close()
time.sleep(600)
"""


def test_cancel_reports_a_cell_that_finished_ok_during_the_kill_wait_as_finished(tmp_path, capsys):
    runs, ready = tmp_path / "runs", tmp_path / "ready"
    keys = ("toy-dddddddddddd", "toy-eeeeeeeeeeee")
    finisher = subprocess.Popen([sys.executable, "-c", FINISH_ON_SIGINT, str(runs), keys[0], str(ready)], cwd=ROOT)
    stopper = sleeper()
    try:
        wait_for(ready.exists, 60, "the finishing cell to start")
        manifests.write(runs, {"sweep": "s", "cells": {k: {"kind": "toy", "group": "g", "stage": 0, "source": "s"}
                                                       for k in keys},
                               "jobs": {keys[0]: local.job_id(finisher.pid), keys[1]: local.job_id(stopper.pid)}})
        assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs)]) == 0
        out = capsys.readouterr().out
        assert f"cancelled 1 cell(s): {keys[1]}" in out
        assert f"1 cell(s) finished ok before they could be stopped (kept, not cancelled): {keys[0]}" in out
        assert stored.status(runs, keys[0]) == "ok" and stored.status(runs, keys[1]) == "cancelled"
    finally:
        finisher.kill()
        stopper.kill()


def test_a_relaunch_while_cancelled_jobs_are_still_ending_does_not_advise_scancel(tmp_path, monkeypatch):
    from nfjobs.orchestration import plan as planning
    from nfjobs.sweep import expand

    path = tmp_path / "s.toml"
    path.write_text('kind = "toy"\nhead.width = [1, 2]\n')
    runs = tmp_path / "runs"
    cells = expand([path], runs_root=runs)
    cancelled, live = cells
    stored.write_rows(run_dir(runs, cancelled.key).result, [{"sweep": "s", "key": cancelled.key, "status": "cancelled",
                                                             "error": "cancelled by `launch.py cancel` (job 41_0)"}])
    manifests.record(runs, cells, {cancelled.key: "41_0", live.key: "42_0"})
    monkeypatch.setattr(planning, "job_states", lambda ids: {j: "running" for j in ids})  # both still COMPLETING
    summary = planning.plan(cells, runs, in_flight=planning.live_jobs(cells, runs)).summary()
    assert "scancel 42," in summary and "41" not in summary
    assert "1 cell(s) already queued or running" in summary
    assert "1 cell(s) cancelled, their jobs still ending" in summary
