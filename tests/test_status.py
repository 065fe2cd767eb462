"""One truth for cell state (result files + the scheduler), and the status / logs / cancel commands, locally.

Cells here run as real processes recorded in the manifest as `local:<pid>:<start time>`, as local dispatch records them;
tests/test_slurm.py runs the same commands against the real Slurm."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from waiting import wait_for

from nfjobs import commands as launch
from nfjobs import results
from nfjobs.backends import local
from nfjobs.jobs.smoke import Config as SmokeConfig
from nfjobs.identity import cell_key
from nfjobs.store.layout import run_dir
from nfjobs.store import rows as stored
from nfjobs.store import manifest as manifests

ROOT = Path(__file__).parent.parent


def manifest(runs: Path, cells: dict[str, str], jobs: dict[str, str], logs: dict | None = None) -> None:
    """A sweep `s` manifest: cell key -> group, key -> job id, key -> {stdout, stderr}."""
    manifests.write(runs, {
        "sweep": "s", "cells": {k: {"kind": "smoke", "group": g, "stage": 0, "source": "s.toml"} for k, g in cells.items()},
        "jobs": jobs, **({"logs": logs} if logs is not None else {}),
    })


def smoke_cell(runs: Path, steps: int, log_dir: Path) -> tuple[str, subprocess.Popen]:
    """A real smoke cell running in its own process (stdout / stderr to log_dir)."""
    key = cell_key("smoke", SmokeConfig(steps=steps, step_seconds=0.1))
    code = "import sys; from nfjobs.commands.single import run_single; sys.exit(run_single('smoke', sys.argv[1:]))"
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--steps", str(steps), "--step-seconds", "0.1", "--runs-root", str(runs),
         "--sweep", "s"], cwd=ROOT, stdout=open(log_dir / "out", "w"), stderr=open(log_dir / "err", "w"))
    return key, proc


def write_result(runs: Path, key: str, status: str, error: str = "") -> None:
    stored.write_rows(run_dir(runs, key).result, [{"sweep": "s", "key": key, "status": status, "error": error}])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cell_states_combine_result_files_and_processes(tmp_path):
    runs = tmp_path / "runs"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_result(runs, "a-ok", "ok")
        write_result(runs, "b-failed", "failed", "Traceback (most recent call last):\n  ...\nValueError: lr too big\n")
        write_result(runs, "c-blocked", "blocked", "upstream a failed")
        write_result(runs, "g-cancelled", "cancelled", "cancelled by `launch.py cancel` (job local:1)")
        gone = dead_pid()
        manifest(runs, {k: "grp" for k in ("a-ok", "b-failed", "c-blocked", "d-live", "e-died", "f-never", "g-cancelled")},
                 {"a-ok": "local:1", "d-live": local.job_id(sleeper.pid), "e-died": local.job_id(gone)},
                 {"d-live": {"stdout": "/x/out", "stderr": "/x/err"}})
        df = results.cell_states(tmp_path / "s.toml", runs, log_root=tmp_path / "logs")
    finally:
        sleeper.kill()
    got = {r["key"]: (r["state"], r["error"]) for r in df.iter_rows(named=True)}
    assert got["a-ok"] == ("ok", "")
    assert got["b-failed"] == ("failed", "ValueError: lr too big")
    assert got["c-blocked"] == ("blocked", "upstream a failed")
    assert got["d-live"] == ("running", "")
    assert got["e-died"][0] == "failed" and local.job_id(gone) in got["e-died"][1] and "without writing a result" in got["e-died"][1]
    assert got["f-never"] == ("not run", "")
    assert got["g-cancelled"][0] == "cancelled"
    assert set(df["state"]) <= set(results.CELL_STATES)
    logs = dict(zip(df["key"], df["log"]))
    assert logs["d-live"] == "/x/err"  # from the manifest
    assert logs["e-died"] == str(tmp_path / "logs" / "s" / str(gone) / f"{gone}_0_log.err")  # submitit's layout
    assert logs["f-never"] == ""


def test_an_unknown_sweep_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no launched sweep named 'nope'"):
        results.cell_states("nope", tmp_path)
    with pytest.raises(SystemExit) as exc:
        launch.main(["status", "--sweep", "nope", "--runs-root", str(tmp_path)])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_status_shows_counts_first_then_failures_with_their_error_and_log(tmp_path, capsys):
    runs = tmp_path / "runs"
    for i in range(3):
        write_result(runs, f"ok-{i}", "ok")
    write_result(runs, "bad-1", "failed", "Traceback ...\nRuntimeError: out of memory")
    manifest(runs, {"ok-0": "g", "ok-1": "g", "ok-2": "g", "bad-1": "g", "new-1": "h"}, {},
             {"bad-1": {"stdout": "/l/bad.out", "stderr": "/l/bad.err"}})
    args = ["status", "--sweep", "s", "--runs-root", str(runs)]
    assert launch.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "s: 5 cells | ok 3, failed 1, not run 1"
    text = "\n".join(lines)
    assert "bad-1" in text and "RuntimeError: out of memory" in text and "log: /l/bad.err" in text
    assert "ok-0" not in text and "new-1" not in text  # counts only for the rest

    assert launch.main([*args, "--all"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("ok-0", "new-1", "bad-1"))
    assert launch.main([*args, "--cell", "new"]) == 0
    out = capsys.readouterr().out
    assert "new-1" in out and "bad-1" not in out.split("\n", 1)[1]
    assert launch.main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["key"]: r["state"] for r in rows} == {"ok-0": "ok", "ok-1": "ok", "ok-2": "ok", "bad-1": "failed",
                                                    "new-1": "not run"}
    assert launch.main([*args, "--failed", "--json"]) == 0
    assert [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()] == ["bad-1"]


def test_cancel_stops_a_local_cell_and_leaves_it_one_cancelled_result(tmp_path, capsys):
    runs = tmp_path / "runs"
    key, proc = smoke_cell(runs, steps=600, log_dir=tmp_path / "logs")
    write_result(runs, "done-1", "ok")
    manifest(runs, {key: "long", "done-1": "quick"}, {key: local.job_id(proc.pid), "done-1": "local:1"})
    wait_for(lambda: (runs / key / "checkpoint.pt").exists(), 120, "the cell to start stepping", poll_s=0.2)
    assert results.cell_states("s", runs).filter(pl.col("key") == key)["state"][0] == "running"

    assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs)]) == 0
    assert f"cancelled 1 cell(s): {key}" in capsys.readouterr().out
    assert proc.wait(timeout=30) is not None  # the process is gone
    rows = pl.read_parquet(run_dir(runs, key).result)
    assert rows["status"].to_list() == ["cancelled"] and local.job_id(proc.pid) in rows["error"][0]
    states = dict(results.cell_states("s", runs).select("key", "state").iter_rows())
    assert states == {key: "cancelled", "done-1": "ok"}
    assert stored.status(runs, key) != "ok"  # so a relaunch runs it again
    assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs)]) == 0
    assert "cancelled 0 cell(s)" in capsys.readouterr().out


def test_cancel_failed_only_and_by_cell_leave_the_other_cells_running(tmp_path, capsys):
    runs = tmp_path / "runs"
    # they outlive the test however slow the machine is (killed at its end): "fresh" must still run at the end
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)]
    try:
        write_result(runs, "retrying", "failed", "RuntimeError: first try failed")
        manifest(runs, {"retrying": "g", "fresh": "g", "other": "g"},
                 {k: local.job_id(p.pid) for k, p in zip(("retrying", "fresh", "other"), sleepers)})
        assert results.cell_states("s", runs).filter(pl.col("key") == "retrying")["state"][0] == "running"
        assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs), "--failed-only"]) == 0
        assert "cancelled 1 cell(s): retrying" in capsys.readouterr().out
        assert sleepers[0].wait(timeout=30) is not None and sleepers[1].poll() is None
        assert stored.outcome(runs, "retrying")[0] == "failed"  # it has a result: no cancelled row over it
        assert launch.main(["cancel", "--sweep", "s", "--runs-root", str(runs), "--cell", "oth"]) == 0
        assert sleepers[2].wait(timeout=30) is not None and sleepers[1].poll() is None
        assert dict(results.cell_states("s", runs).select("key", "state").iter_rows()) == {
            "retrying": "failed", "fresh": "running", "other": "cancelled"}
    finally:
        for p in sleepers:
            p.kill()


def test_logs_prints_a_cells_stdout_and_stderr_and_follows_it_until_it_ends(tmp_path, capsys):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()
    code = ("import sys, time\nfor i in range(8):\n    print(f'step {i}', flush=True)\n    time.sleep(0.3)\n"
            "print('bye', file=sys.stderr)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=open(logs / "c_0_log.out", "w"), stderr=open(logs / "c_0_log.err", "w"))
    manifest(runs, {"cell-abc": "g", "cell-xyz": "g"}, {"cell-abc": local.job_id(proc.pid)},
             {"cell-abc": {"stdout": str(logs / "c_0_log.out"), "stderr": str(logs / "c_0_log.err")}})
    assert launch.main(["logs", "cell-a", "-f", "--runs-root", str(runs)]) == 0  # a unique prefix is enough
    out = capsys.readouterr().out
    # It returned only once the cell was ending: `bye`, the last thing written 2.4 s in, was printed. (Not
    # `proc.poll()`: an exiting process has no command line before its parent can reap it, so it reads as ended
    # a moment before `poll` says so: that flaked in CI.)
    assert all(f"step {i}" in out for i in range(8)) and "bye" in out
    assert proc.wait(timeout=10) == 0
    assert f"==> {logs / 'c_0_log.out'} <==" in out

    assert launch.main(["logs", "cell-abc", "--runs-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.index("step 7") < out.index("bye")  # stdout, then stderr
    with pytest.raises(SystemExit) as exc:
        launch.main(["logs", "cell-", "--runs-root", str(runs)])
    assert exc.value.code == 2 and "matches several cells" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launch.main(["logs", "cell-xyz", "--runs-root", str(runs)])
    assert "has no job and no log" in capsys.readouterr().err
