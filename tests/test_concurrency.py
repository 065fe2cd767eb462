"""No cell runs twice at once: one launch per sweep (a second one is refused, naming the first), one process per
cell (a claim on its run directory), and a launch that cannot reach Slurm records nothing."""

import os
import subprocess
import sys
from pathlib import Path

from kinds.toy import RUNS_LOG
from waiting import wait_for

from nfjobs import results
from nfjobs.store.layout import run_dir

ROOT = Path(__file__).parent.parent


def _sweep(tmp_path: Path, gate: Path) -> Path:
    path = tmp_path / "twice.toml"
    path.write_text(f'kind = "toy"\nhead.width = [1, 2, 3]\ngate = "{gate}"\n')
    return path


def _launch(path: Path, tmp_path: Path, *extra: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"),
           "--log-root", str(tmp_path / "logs"), "--max-parallel", "3", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _runs_per_cell(path: Path, runs: Path) -> dict[str, int]:
    keys = results.cell_states(path, runs)["key"].to_list()
    counts = {}
    for key in keys:
        log = run_dir(runs, key) / RUNS_LOG
        counts[key] = len(log.read_text().split()) if log.exists() else 0
    return counts


def test_two_launches_of_one_sweep_started_together_run_each_cell_once(tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    path = _sweep(tmp_path, gate)
    first, second = _launch(path, tmp_path), _launch(path, tmp_path)  # the same instant, as near as can be
    # one of them is refused at once (it never gets the sweep's lock); the other waits on the gate
    wait_for(lambda: first.poll() is not None or second.poll() is not None, 120, "one launch to be refused")
    refused, running = (first, second) if first.poll() is not None else (second, first)
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "is being launched by pid" in err and "nothing was submitted" in err
    gate.touch()
    out, err = running.communicate(timeout=300)
    assert running.returncode == 0, out + err
    counts = _runs_per_cell(path, runs)
    assert len(counts) == 3 and set(counts.values()) == {1}, counts
    df = results.load(path, runs).collect()
    assert df.height == 6 and set(df["status"]) == {"ok"}  # two rows (train, val) per cell, once


def test_a_launch_after_the_first_has_started_is_refused_and_a_relaunch_after_it_skips_every_cell(tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    path = _sweep(tmp_path, gate)
    first = _launch(path, tmp_path)
    wait_for(lambda: len(list(runs.glob("toy-*/" + RUNS_LOG))) == 3, 120, "all three cells to start")
    second = _launch(path, tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and f"pid {first.pid}" in err, out + err
    gate.touch()
    assert first.wait(timeout=300) == 0
    third = _launch(path, tmp_path)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0 and "nothing to do" in out, out + err
    assert set(_runs_per_cell(path, runs).values()) == {1}


def test_a_cell_claimed_by_a_live_process_is_not_run_again(tmp_path):
    """Two workers handed the same cell (two submissions, a requeue racing a straggler) never both run it."""
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    code = ("import sys; from kinds.toy import Config; from nfjobs.identity import cell_key; "
            "from nfjobs.worker import CellSpec, run_cell; "
            f"cfg = Config(gate={str(gate)!r}); "
            f"rows = run_cell(CellSpec('toy', cfg, cell_key('toy', cfg), 's', 'g', {str(runs)!r}, {{}})); "
            "print('ROWS', len(rows))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list(runs.glob("toy-*/" + RUNS_LOG))) == 1, 120, "the first worker to start the cell")
    second = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0 and "ROWS 0" in second.stdout, second.stderr
    assert "is being run by another process" in second.stderr
    gate.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "ROWS 2" in out, err
    (log,) = runs.glob("toy-*/" + RUNS_LOG)
    assert len(log.read_text().split()) == 1


def test_without_slurm_a_slurm_launch_is_one_line_exit_2_and_records_nothing(tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    path = _sweep(tmp_path, gate)
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no sbatch, squeue or sacct on it
    proc = _launch(path, tmp_path, "--slurm-acct", "acct", env={**os.environ, "PATH": str(empty)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "Slurm is not available here" in err and "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir())  # no manifest, no code copy, no run directory
