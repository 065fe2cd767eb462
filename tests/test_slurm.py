"""launch.py against a real Slurm cluster (start one with `bash scripts/dev-slurm.sh up`).

Skipped with a reason where there is none; CI sets NFJOBS_REQUIRE_SLURM=1, which turns the skip into a failure.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from waiting import SECOND_LANE, open_gate_when, wait_for

from nfjobs import results, sweep
from nfjobs.store.layout import run_dir
from nfjobs.store import rows as stored

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
ACCOUNT = os.environ.get("NFJOBS_TEST_SLURM_ACCOUNT", "ci")
PARTITION = os.environ.get("NFJOBS_TEST_SLURM_PARTITION", "cpu")


def launch(sweep: Path, tmp_path: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "launch.py", "--sweep", str(sweep), "--runs-root", str(tmp_path / "runs"),
           "--log-root", str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION,
           "--cpus-per-task", "1", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def manifest_jobs(tmp_path: Path, sweep: str) -> dict[str, str]:
    return json.loads((tmp_path / "runs" / "_sweeps" / f"{sweep}.json").read_text())["jobs"]


def in_queue(job_id: str) -> bool:
    """Whether squeue still lists the job (pending, running or completing)."""
    return job_id in subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()


def test_an_array_sweep_returns_one_result_per_cell(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nsteps = [1, 2]\nlabel = ["a", "b", "c"]\n', "array.toml")
    proc = launch(path, tmp_path, "--wait", "--max-parallel", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = manifest_jobs(tmp_path, "array")
    assert len(jobs) == 6 and len({j.split("_")[0] for j in jobs.values()}) == 1  # one array of 6 tasks
    df = results.load(path, tmp_path / "runs").collect()
    assert df.height == 6 and set(df["status"]) == {"ok"}
    assert sorted(df["run.slurm_array_task_id"].to_list()) == [str(i) for i in range(6)]
    script = next((tmp_path / "logs" / "array").glob("*/*_submission.sh")).read_text()
    assert "--array=0-5%4" in script and "--gpus-per-node" not in script and "--account=" + ACCOUNT in script


def test_fire_and_forget_prints_job_ids_and_the_status_command(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nlabel = ["x", "y"]\n', "forget.toml")
    proc = launch(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "submitted 2 cells as job array(s)" in proc.stdout and "launch.py status --sweep" in proc.stdout
    wait_for(lambda: results.load(path, tmp_path / "runs").collect().height == 2, 240, "both results")
    status = subprocess.run([sys.executable, "launch.py", "status", "--sweep", str(path), "--runs-root",
                             str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "2 cells | ok 2" in status.stdout


def test_a_cell_that_raises_gives_a_failed_row_with_the_traceback(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nfail_at_step = [-1, 1]\n', "fails.toml")
    proc = launch(path, tmp_path, "--wait")
    assert proc.returncode == 1
    assert "1 ok, 1 not ok" in proc.stdout
    df = results.load(path, tmp_path / "runs").collect().sort("fail_at_step")
    assert df["status"].to_list() == ["ok", "failed"]
    assert "RuntimeError: smoke job failing on purpose at step 1" in df["error"][1]
    assert "Traceback" in df["error"][1]


def test_a_cancelled_job_is_reported_not_hung_on(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nsteps = 300\nstep_seconds = 1.0\n', "cancel.toml")
    waiter = subprocess.Popen(
        [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
         str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION, "--cpus-per-task", "1",
         "--wait"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "runs" / "_sweeps" / "cancel.json"
    wait_for(lambda: manifest.exists() and json.loads(manifest.read_text())["jobs"], 120, "the submission")
    (job_id,) = manifest_jobs(tmp_path, "cancel").values()
    subprocess.run(["scancel", job_id.split("_")[0]], check=True)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 1, out + err
    assert "0 ok, 1 not ok" in out and "no result" in out
    # sacct says CANCELLED at once, but the job stays in squeue (COMPLETING, its process alive) for KillWait
    # seconds: until then status honestly says running
    wait_for(lambda: not in_queue(job_id), 120, "the cancelled job to leave the queue")
    status = subprocess.run([sys.executable, "launch.py", "status", "--sweep", str(path), "--runs-root",
                             str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "cancelled" in status.stdout


@pytest.mark.xdist_group(SECOND_LANE)
def test_a_job_that_hits_its_time_limit_is_requeued_and_resumes_from_its_checkpoint(sweep_file, tmp_path):
    # A 2-minute limit with the warning 60 s before it: slurmctld checks limits every 30 s, so each run is warned
    # 30-60 s in, checkpoints and is requeued (docs/slurm-notes.md). 80 s of work cannot fit in one run.
    path = sweep_file('kind = "smoke"\nsteps = 32\nstep_seconds = 2.5\n', "timeout.toml")
    proc = launch(path, tmp_path, "--wait", "--n-hours", str(2 / 60), "--signal-delay-s", "60",
                  "--max-requeues", "5", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = results.load(path, tmp_path / "runs").collect()
    assert df.height == 1 and df["status"][0] == "ok"
    assert df["steps_done"][0] == 32
    assert df["starts"][0] >= 2  # it started more than once and resumed: the step counter survived
    assert df["run.slurm_restarts"][0] >= 1


def test_an_unknown_account_gives_slurms_error_and_submits_nothing(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\n', "badacct.toml")
    proc = subprocess.run(
        [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"),
         "--slurm-acct", "no-such-account", "--log-root", str(tmp_path / "logs")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sbatch refused the job array" in proc.stderr
    assert "account" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert not manifest_jobs(tmp_path, "badacct")


def test_a_two_stage_sweep_waits_for_its_first_stage(sweep_file, tmp_path):
    path = sweep_file('[[group]]\nname = "up"\nkind = "toy"\n'
                      '[[group]]\nkind = "toy"\nupstream = "@up"\nhead.width = [1, 2]\n', "stages.toml")
    proc = launch(path, tmp_path, "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = results.load(path, tmp_path / "runs").collect()
    down = df.filter(pl.col("upstream") != "")
    assert down.height == 4 and down["upstream_ok"].cast(pl.String).to_list() == ["true"] * 4


def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nsteps = 8\nstep_seconds = 2.0\n', "preempt.toml")
    proc = launch(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    ((key, job_id),) = manifest_jobs(tmp_path, "preempt").items()
    run_dir = tmp_path / "runs" / key
    wait_for(lambda: (run_dir / "checkpoint.pt").exists(), 240, "the job to start")
    # what a preempting scheduler sends (Slurm's PreemptMode=REQUEUE with a grace signal): USR2 to the job
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: stored.status(tmp_path / "runs", run_dir.name) is not None, 240, "the requeued run")
    df = results.load(path, tmp_path / "runs").collect()
    assert df.height == 1 and df["status"][0] == "ok"
    assert df["steps_done"][0] == 8 and df["starts"][0] == 2
    assert df["run.slurm_restarts"][0] >= 1


def test_cells_beyond_max_array_size_go_in_several_arrays(sweep_file, tmp_path, monkeypatch):
    from nfjobs import commands as launcher
    from nfjobs.backends import slurm

    monkeypatch.setattr(slurm, "max_array_size", lambda: 3)  # indices 0..2: at most 2 cells per array here
    path = sweep_file('kind = "smoke"\nlabel = ["a", "b", "c", "d", "e"]\n', "chunks.toml")
    rc = launcher.main(["--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
                        str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION,
                        "--cpus-per-task", "1", "--wait"])
    assert rc == 0
    arrays = {j.split("_")[0] for j in manifest_jobs(tmp_path, "chunks").values()}
    assert len(arrays) == 3
    assert results.load(path, tmp_path / "runs").collect().height == 5


def test_gpu_requests_reach_sbatch(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\n', "gpus.toml")
    proc = subprocess.run(
        [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
         str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", "gpu", "--gpus-per-node", "2",
         "--cpus-per-task", "1", "--wait"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = results.load(path, tmp_path / "runs").collect()
    assert len(df["gpus"][0].split(",")) == 2  # Slurm bound two (fake) GPUs: CUDA_VISIBLE_DEVICES has both
    script = next((tmp_path / "logs" / "gpus").glob("*/*_submission.sh")).read_text()
    assert "--gpus-per-node=2" in script and "--partition=gpu" in script


def test_a_job_runs_torch_on_its_cpus_per_task_threads(sweep_file, tmp_path, monkeypatch):
    """The dev cluster pins no CPUs: without OMP_NUM_THREADS torch would start a thread per core of the node."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    path = sweep_file('kind = "toy"\nreport_threads = true\n', "threads.toml")
    proc = subprocess.run(
        [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
         str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION, "--cpus-per-task", "1",
         "--wait"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = results.load(path, tmp_path / "runs").collect().row(0, named=True)
    assert (row["omp_threads"], row["torch_threads"]) == ("1", 1)  # not the node's 8 (nor this machine's cores)
    script = next((tmp_path / "logs" / "threads").glob("*/*_submission.sh")).read_text()
    assert "--cpus-per-task=1" in script and "export OMP_NUM_THREADS=1" in script


def test_relaunching_while_cells_are_queued_or_running_does_not_submit_them_twice(sweep_file, tmp_path):
    # 10 minutes: still queued or running when the second launch looks, however slow it starts (the teardown
    # cancels them)
    path = sweep_file('kind = "smoke"\nsteps = 600\nstep_seconds = 1.0\nlabel = ["a", "b"]\n', "twice.toml")
    assert launch(path, tmp_path).returncode == 0
    first = manifest_jobs(tmp_path, "twice")
    again = launch(path, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 cell(s) already queued or running on Slurm (skipped" in again.stdout
    assert "nothing to do" in again.stdout
    assert manifest_jobs(tmp_path, "twice") == first



def test_two_launches_of_one_sweep_started_at_the_same_instant_run_each_cell_once(sweep_file, tmp_path):
    """Issue 22: both used to submit every cell (the manifest kept only the last array, cancel missed the other).
    Now one is refused by the sweep's launch lock or finds the cells already queued; each cell runs once."""
    from kinds.toy import RUNS_LOG

    path = sweep_file('kind = "toy"\nhead.width = [1, 2, 3]\nsleep_s = 5.0\n', "same.toml")
    cmd = [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
           str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION, "--cpus-per-task", "1",
           "--wait"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    ends = [p.communicate(timeout=600) for p in procs]
    said = [out + err for out, err in ends]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 2]), said
    other = said[[p.returncode for p in procs].index(2)] if codes == [0, 2] else min(said, key=lambda t: "submitted" in t)
    assert ("is being launched by" in other and "nothing was submitted" in other) or \
        ("3 cell(s) already queued or running" in other and "nothing to do" in other), said
    assert sum("submitted 3 cells" in t for t in said) == 1, said
    keys = results.cell_states(path, tmp_path / "runs")["key"].to_list()
    assert len(keys) == 3
    for key in keys:
        assert len((run_dir(tmp_path / "runs", key) / RUNS_LOG).read_text().split()) == 1, key  # ran once
        assert stored.outcome(tmp_path / "runs", key) == ("ok", "")
    df = results.load(path, tmp_path / "runs").collect()
    assert df.height == 6 and df["key"].n_unique() == 3  # one result (two rows: train, val) per cell

# ---------------------------------------------------------------------------------------------- the job contract
def rows_by_group(path: Path, tmp_path: Path) -> dict[str, dict]:
    df = results.load(path, tmp_path / "runs").collect()
    return {g: df.filter(pl.col("group") == g).row(0, named=True) for g in df["group"].unique().to_list()}


def test_independent_chains_run_in_parallel_each_cell_waiting_only_for_what_it_reads(sweep_file, tmp_path):
    gate = tmp_path / "gate"
    path = sweep_file(
        f'[[group]]\nname = "train_a"\nkind = "toy"\nhead.width = 1\ngate = "{gate}"\n'
        '[[group]]\nname = "train_b"\nkind = "toy"\nhead.width = 2\n'
        '[[group]]\nname = "cache_a"\nkind = "toy"\nupstream = "@train_a"\n'
        '[[group]]\nname = "cache_b"\nkind = "toy"\nupstream = "@train_b"\n'
        '[[group]]\nname = "probe_b"\nkind = "toy"\nupstream = "@cache_b"\n', "chains.toml")
    (probe_b,) = [c.key for c in sweep.expand([path]) if c.group == "probe_b"]
    # train_a ends only once chain B has run to its end (not after a fixed time, which a loaded machine can outlast)
    open_gate_when(gate, lambda: stored.status(tmp_path / "runs", probe_b) is not None, 240)
    proc = launch(path, tmp_path, "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_group(path, tmp_path)
    assert all(r["status"] == "ok" for r in rows.values())
    assert all(str(rows[g]["upstream_ok"]).lower() == "true" for g in ("cache_a", "cache_b", "probe_b"))
    assert rows["probe_b"]["run.end"] < rows["cache_a"]["run.start"]  # chain B did not wait for chain A's training
    assert rows["cache_a"]["run.start"] >= rows["train_a"]["run.end"]
    manifest = json.loads((tmp_path / "runs" / "_sweeps" / "chains.json").read_text())
    for key in manifest["cells"]:
        assert Path(manifest["logs"][key]["stdout"]).exists() and manifest["jobs"][key]
        assert json.loads((tmp_path / "runs" / key / "config.json").read_text())["key"] == key
    script = Path(manifest["logs"][rows["probe_b"]["key"]]["stdout"]).parent.glob("*_submission.sh")
    assert f"afterany:{manifest['jobs'][rows['cache_b']['key']]}" in next(script).read_text()


def test_an_upstream_failure_blocks_its_dependants_without_leaving_them_pending(sweep_file, tmp_path):
    path = sweep_file('[[group]]\nname = "up"\nkind = "toy"\nfail = true\n'
                      '[[group]]\nname = "mid"\nkind = "toy"\nupstream = "@up"\n'
                      '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@mid"\n', "blocked.toml")
    proc = launch(path, tmp_path, "--wait")
    assert proc.returncode == 1
    rows = rows_by_group(path, tmp_path)
    assert [rows[g]["status"] for g in ("up", "mid", "down")] == ["failed", "blocked", "blocked"]
    assert rows["mid"]["error"] == f"upstream {rows['up']['key']} failed"
    assert rows["down"]["error"] == f"upstream {rows['mid']['key']} blocked"
    assert "Traceback" not in rows["mid"]["error"] + rows["down"]["error"]
    assert "blocked 2" in proc.stderr and f"{rows['mid']['key']} (mid): blocked: upstream" in proc.stdout
    arrays = {j.split("_")[0] for j in manifest_jobs(tmp_path, "blocked").values()}
    # nothing waits forever on a dependency that can never be met (the last job may be COMPLETING a moment)
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", ",".join(arrays)], capture_output=True,
                                        text=True).stdout.strip(), 60, "every job to leave the queue")


def test_a_preempted_cell_whose_kind_cannot_resume_is_not_requeued_and_says_why(sweep_file, tmp_path):
    path = sweep_file('kind = "toy"\nsleep_s = 40.0\n', "noresume.toml")
    assert launch(path, tmp_path).returncode == 0
    ((key, job_id),) = manifest_jobs(tmp_path, "noresume").items()
    wait_for(lambda: (tmp_path / "runs" / key / "config.json").exists(), 120, "the cell to start")
    time.sleep(2)  # submitit installs its signal handlers before the cell starts; give it a moment anyway
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: stored.status(tmp_path / "runs", key) is not None, 120, "a result")
    row = results.load(path, tmp_path / "runs").collect().row(0, named=True)
    assert row["status"] == "failed" and "not requeued" in row["error"] and "'toy'" in row["error"]
    assert row["run.slurm_restarts"] == 0 and row["run.seconds"] < 30


@pytest.mark.xdist_group(SECOND_LANE)
def test_a_packed_task_runs_ten_cells_each_with_its_own_result_and_resumes_at_the_first_unfinished(sweep_file,
                                                                                                   tmp_path):
    labels = ", ".join(f'"c{i}"' for i in range(10))
    path = sweep_file(f'kind = "smoke"\nsteps = 2\nstep_seconds = 1.0\nlabel = [{labels}]\n', "packed.toml")
    assert launch(path, tmp_path, "--cells-per-job", "10").returncode == 0
    jobs = manifest_jobs(tmp_path, "packed")
    assert len(jobs) == 10 and len(set(jobs.values())) == 1  # one array task for all ten
    runs = tmp_path / "runs"
    wait_for(lambda: sum(stored.status(runs, k) is not None for k in jobs) >= 3, 180, "three cells")
    subprocess.run(["scancel", "--signal=USR2", next(iter(jobs.values()))], check=True)  # preempt mid-pack
    wait_for(lambda: all(stored.status(runs, k) is not None for k in jobs), 240, "all ten results")
    df = results.load(path, runs).collect()
    assert df.height == 10 and set(df["status"]) == {"ok"}
    assert set(df["run.slurm_restarts"]) == {0, 1}  # the early cells ran once; the requeue did only the rest
    assert df.filter(pl.col("run.slurm_restarts") == 1)["starts"].max() <= 2
    assert df["run.launch_id"].n_unique() == 1


def test_force_rebuilds_a_caches_shards(sweep_file, tmp_path):
    path = sweep_file('kind = "cache"\nsource = "original"\ndata.builtin_n = 24\nshard_size = 8\n', "force.toml")
    assert launch(path, tmp_path, "--wait").returncode == 0
    (key,) = manifest_jobs(tmp_path, "force")
    shard = tmp_path / "runs" / key / "train" / "shards" / "acts_00000.npy"
    first = shard.stat().st_mtime_ns
    (tmp_path / "runs" / key / "stray.txt").write_text("left by the earlier run")
    proc = launch(path, tmp_path, "--wait", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shard.stat().st_mtime_ns > first and not (tmp_path / "runs" / key / "stray.txt").exists()


def test_a_source_edit_after_launch_does_not_reach_a_queued_cell(sweep_file, tmp_path):
    from nfjobs.store import snapshot

    project = tmp_path / "project"
    for rel in snapshot.source_files():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes((ROOT / rel).read_bytes())
    path = sweep_file('kind = "smoke"\nsteps = 2\n', "frozen.toml")
    cmd = [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
           str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", PARTITION, "--cpus-per-task", "1",
           "--sbatch", "begin=now+10"]  # queued for 10 s: the edit lands while it waits
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    smoke = project / "nfjobs" / "jobs" / "smoke.py"
    smoke.write_text(smoke.read_text().replace('"steps_done": state["step"]', '"steps_done": -1'))
    (key,) = manifest_jobs(tmp_path, "frozen")
    assert subprocess.run(["squeue", "-h", "-j", manifest_jobs(tmp_path, "frozen")[key]], capture_output=True,
                          text=True).stdout.strip(), "the cell should still be queued when the tree changes"
    wait_for(lambda: stored.status(tmp_path / "runs", key) is not None, 120, "the result")
    row = results.load(path, tmp_path / "runs").collect().row(0, named=True)
    assert row["steps_done"] == 2 and row["status"] == "ok"
    assert (tmp_path / "runs" / "_code" / row["run.code_hash"] / "nfjobs" / "jobs" / "smoke.py").exists()
    assert row["run.code_hash"] != snapshot.code_hash(project)  # the tree moved on; the job ran the launch's copy


@pytest.mark.xdist_group(SECOND_LANE)
def test_a_relaunch_that_resumes_a_cell_says_so_in_its_row(sweep_file, tmp_path):
    # 20 s of steps: submitit ignores scancel's SIGTERM, so the job steps on for KillWait (5 s) until SIGKILL;
    # it must still be far from its end then, on a loaded machine too
    path = sweep_file('kind = "smoke"\nsteps = 40\nstep_seconds = 0.5\n', "resume.toml")
    assert launch(path, tmp_path).returncode == 0
    ((key, job_id),) = manifest_jobs(tmp_path, "resume").items()
    wait_for(lambda: (tmp_path / "runs" / key / "checkpoint.pt").exists(), 120, "a checkpoint")
    subprocess.run(["scancel", job_id], check=True)  # cancelled: no result, a checkpoint
    wait_for(lambda: not in_queue(job_id), 120, "the cancelled job to leave the queue")
    assert stored.status(tmp_path / "runs", key) is None
    proc = launch(path, tmp_path, "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = results.load(path, tmp_path / "runs").collect().row(0, named=True)
    assert row["run.resumed"] is True and row["run.resumed_from"].startswith("step ")
    assert int(row["run.resumed_from"].split()[1]) >= 1 and row["starts"] == 2 and row["run.slurm_restarts"] == 0

@pytest.mark.xdist_group(SECOND_LANE)
def test_a_cache_in_four_parts_runs_four_tasks_gives_one_result_and_a_lost_part_resumes_alone(sweep_file, tmp_path):
    import hashlib

    path = sweep_file('[[group]]\nname = "c"\nkind = "cache"\nparts = 4\nshard_size = 2\nbatch_size = 2\n'
                      'dtype = "float32"\ndata.builtin_n = 40\ndata.val_frac = 0.25\n', "parts.toml")
    proc = launch(path, tmp_path, "--wait", "--max-parallel", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = results.load(path, tmp_path / "runs").collect()
    cached = df.filter(pl.col("kind") == "cache")
    assert df.height == 2 and cached["parts"].to_list() == [4, 4] and set(df["status"]) == {"ok"}
    task_dirs = [d.name for d in (tmp_path / "logs" / "parts").iterdir()]
    cache_array = cached["run.slurm_array_job_id"][0]
    assert sorted(d for d in task_dirs if d.startswith(cache_array + "_")) == [f"{cache_array}_{i}" for i in range(4)]

    run_dir = tmp_path / "runs" / cached["key"][0]
    shards = sorted(run_dir.glob("*/shards/*.npy"))
    before = {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in shards}
    lost = run_dir / "train" / "shards" / "acts_00010.npy"  # the last shard of part 2 (shards 7..10 of 15)
    lost.unlink()  # as if part 2 had been killed before writing it
    (run_dir / "parts" / "2-of-4.json").unlink()
    (run_dir / "result.parquet").unlink()
    (run_dir / "train" / "meta.json").write_text((run_dir / "train" / "meta.json").read_text()
                                                 .replace('"complete": true', '"complete": false'))
    proc = launch(path, tmp_path, "--wait", "--max-parallel", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in shards}
    assert after[lost][1] == before[lost][1] and after[lost][0] != before[lost][0]  # rewritten, same values
    assert all(after[p] == before[p] for p in shards if p != lost)  # no other shard touched
    again = results.load(path, tmp_path / "runs").collect().filter(pl.col("kind") == "cache")
    assert again.height == 2 and set(again["status"]) == {"ok"}
    assert json.loads((run_dir / "train" / "meta.json").read_text())["complete"]

@pytest.mark.parametrize("how", ["sweep", "flag"])
def test_an_sbatch_injection_through_extra_is_refused_and_nothing_is_submitted(sweep_file, tmp_path, how):
    marker = tmp_path / "injected"
    payload = f"comment=x\ntouch {marker}"
    if how == "sweep":
        path = sweep_file(f'kind = "smoke"\n[slurm]\nextra = ["comment=x\\ntouch {marker}"]\n', "inject.toml")
        proc = launch(path, tmp_path, "--wait")
    else:
        path = sweep_file('kind = "smoke"\n', "inject.toml")
        proc = launch(path, tmp_path, "--wait", "--sbatch", payload)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "control character" in proc.stderr and "Traceback" not in proc.stderr
    assert ("slurm.extra[0]" if how == "sweep" else "--sbatch") in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()
    time.sleep(2)
    assert not marker.exists()


def test_every_slurm_parameter_reaches_the_job_script_intact(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nlabel = ["a", "b"]\n'
                      '[slurm]\nn_hours = 0.25\nextra = ["comment=nfjobs-i12-check", "nice=7"]\n', "params.toml")
    proc = subprocess.run(
        [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--log-root",
         str(tmp_path / "logs"), "--slurm-acct", ACCOUNT, "--slurm-partition", "gpu", "--gpus-per-node", "1",
         "--cpus-per-task", "1", "--max-parallel", "1", "--wait"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (script,) = [p.read_text() for p in (tmp_path / "logs" / "params").glob("*/*_submission.sh")]
    lines = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    for want in (f"--account={ACCOUNT}", "--partition=gpu", "--time=15", "--gpus-per-node=1", "--cpus-per-task=1",
                 "--array=0-1%1", "--comment=nfjobs-i12-check", "--nice=7"):
        assert f"#SBATCH {want}" in lines, (want, lines)
    jobs = manifest_jobs(tmp_path, "params")
    array = next(iter(jobs.values())).split("_")[0]
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", array, "-o", "Partition,Account,Timelimit"],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.splitlines() and all(ln.split("|")[:3] == ["gpu", ACCOUNT, "00:15:00"] for ln in out.splitlines())
    assert results.load(path, tmp_path / "runs").collect()["status"].to_list() == ["ok", "ok"]

def launch_cmd(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A launch.py subcommand (status, logs, cancel) on this test's runs and logs."""
    cmd = [sys.executable, "launch.py", *args, "--runs-root", str(tmp_path / "runs")]
    if args[0] != "cancel":
        cmd += ["--log-root", str(tmp_path / "logs")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.xdist_group(SECOND_LANE)
def test_status_logs_and_cancel_on_slurm(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\n[[group]]\nname = "bad"\nsteps = 1\nfail_at_step = 0\n'
                      '[[group]]\nname = "long"\nsteps = 600\nstep_seconds = 1.0\n', "watch.toml")
    assert launch(path, tmp_path, "--max-parallel", "2").returncode == 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = dict(results.cell_states(path, tmp_path / "runs", tmp_path / "logs").select("group", "state").iter_rows())
        if states == {"bad": "failed", "long": "running"}:
            break
        time.sleep(1)
    assert states == {"bad": "failed", "long": "running"}
    df = results.cell_states(path, tmp_path / "runs", tmp_path / "logs")
    bad, long = (df.filter(pl.col("group") == g).row(0, named=True) for g in ("bad", "long"))

    status = launch_cmd(tmp_path, "status", "--sweep", str(path))
    lines = status.stdout.splitlines()
    assert lines[0] == "watch: 2 cells | failed 1, running 1", status.stdout + status.stderr
    assert "RuntimeError: smoke job failing on purpose at step 0" in status.stdout
    assert f"log: {bad['log']}" in status.stdout and Path(bad["log"]).exists()  # submitit's stderr of that task
    running = launch_cmd(tmp_path, "status", "--sweep", str(path), "--running").stdout
    assert long["key"] in running and bad["key"] not in running

    logs = launch_cmd(tmp_path, "logs", bad["key"])
    assert logs.returncode == 0 and "smoke job failing on purpose" in logs.stdout  # the traceback, from the log

    follower = subprocess.Popen([sys.executable, "launch.py", "logs", long["key"], "-f", "--runs-root",
                                 str(tmp_path / "runs"), "--log-root", str(tmp_path / "logs")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert follower.poll() is None  # following while the cell runs
    cancel = launch_cmd(tmp_path, "cancel", "--sweep", str(path))
    assert cancel.returncode == 0 and f"cancelled 1 cell(s): {long['key']}" in cancel.stdout, cancel.stderr
    out, _ = follower.communicate(timeout=120)  # ... and returns once the job has ended
    assert f"==> {long['log']} <==" in out
    wait_for(lambda: not in_queue(long["job_id"]), 120, "the cancelled job to leave the queue")
    rows = pl.read_parquet(run_dir(tmp_path / "runs", long["key"]).result)
    assert rows["status"].to_list() == ["cancelled"]  # one result, saying what happened
    final = launch_cmd(tmp_path, "status", "--sweep", str(path)).stdout
    assert final.splitlines()[0] == "watch: 2 cells | failed 1, cancelled 1"


RANKED_TRAIN = """kind = "train"
epochs = 6
batch_size = 8
curve_images = 2
eval_batch_size = 4
data.builtin_n = 800
data.val_frac = 0.2
optim.warmup_steps = 2
perceiver.fourier_size = 8
perceiver.latent_dims = [16, 24]
perceiver.num_latents = 8
perceiver.cross_heads = 1
perceiver.cross_dim_head = 8
perceiver.self_heads = 1
perceiver.self_dim_head = 8
perceiver.ff_mult = 1
perceiver.processor_depth = 1
"""


def test_a_two_task_train_cell_requeued_mid_epoch_resumes_and_ends_with_one_result(sweep_file, tmp_path):
    # 1 node x 2 tasks: Slurm starts both ranks (srun), DDP joins them; `scontrol requeue` kills both after epoch 1's
    # checkpoint, mid-training (submitit ignores the SIGTERM: the SIGKILL comes KillWait = 5 s later, and an epoch of
    # 80 steps takes 2-8 s here), and the whole job runs again from the last checkpoint
    path = sweep_file(RANKED_TRAIN, "ranks.toml")
    assert launch(path, tmp_path, "--tasks-per-node", "2").returncode == 0
    ((key, job_id),) = manifest_jobs(tmp_path, "ranks").items()
    runs = tmp_path / "runs"
    wait_for(lambda: (runs / key / "checkpoint.pt").exists(), 240, "epoch 1's checkpoint")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for(lambda: subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"],
                                    capture_output=True).returncode == 0, 60, "the requeued job to be pending")
    wait_for(lambda: stored.status(runs, key) is not None, 300, "the requeued run's result")
    df = results.load(path, runs).collect()
    assert set(df["status"]) == {"ok"} and df["key"].n_unique() == 1
    assert set(df["run.world_size"]) == {2} and set(df["run.nodes"]) == {1}
    assert df["run.slurm_restarts"][0] >= 1 and df["run.resumed"][0]
    assert df["run.resumed_from"][0] in [f"epoch {i}" for i in range(1, 6)]  # it was stopped before the end
    logs = sorted(p.name for p in (tmp_path / "logs" / "ranks").glob("*/*_log.err"))
    assert [name.rsplit("_", 2)[-2] for name in logs] == ["0", "1"]  # one log per rank
    (script,) = [p.read_text() for p in (tmp_path / "logs" / "ranks").glob("*/*_submission.sh")]
    assert "#SBATCH --nodes=1" in script and "#SBATCH --ntasks-per-node=2" in script and "--kill-on-bad-exit=1" in script


TWO_NODES = os.environ.get("NFJOBS_TEST_SLURM_TWO_NODES", "")
"""The slurm.conf of a cluster of two nodes (`bash scripts/dev-slurm-two-nodes.sh up`: two slurmd on this machine)."""


def test_a_two_node_cell_runs_one_rank_on_each_node(sweep_file, tmp_path):
    if not TWO_NODES:
        why = ("no two-node cluster (bash scripts/dev-slurm-two-nodes.sh up, then "
               "NFJOBS_TEST_SLURM_TWO_NODES=/tmp/nfjobs-slurm-two/slurm.conf)")
        if os.environ.get("NFJOBS_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here (NFJOBS_REQUIRE_SLURM=1) but there is {why}")
        pytest.skip(why)
    path = sweep_file('kind = "ranked"\n', "nodes.toml")
    runs = tmp_path / "two" / "runs"  # not tmp_path/runs: its job ids are the other cluster's, never to be scancelled
    cmd = [sys.executable, "launch.py", "--sweep", str(path), "--runs-root", str(runs), "--log-root",
           str(tmp_path / "logs"), "--slurm-acct", "ci", "--slurm-partition", "two", "--cpus-per-task", "1",
           "--nodes", "2", "--wait"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SLURM_CONF": TWO_NODES})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = results.load(path, runs).collect().row(0, named=True)
    nodes = row["run.hosts"].split(",")
    assert row["status"] == "ok" and row["rank_sum"] == 3.0  # 1 + 2: the all-reduce spanned both ranks
    assert row["run.world_size"] == 2 and row["run.nodes"] == 2 and len(set(nodes)) == 2
    assert row["master_addr"] == nodes[0]  # Slurm's first node, through TorchDistributedEnvironment


def test_a_search_on_slurm_submits_one_array_per_round_and_tells_the_study_each_trials_row(sweep_file, tmp_path):
    path = sweep_file('kind = "toy"\nx = { uniform = [-2.0, 2.0] }\noptim.lr = { loguniform = [1e-6, 1.0] }\n'
                      '[sweep]\nname = "slurmsearch"\nsample_seed = 0\n[search]\nmetric = "objective"\n'
                      'where = { split = "val" }\ntrials = 4\nper_round = 2\nsampler = "random"\n', "search.toml")
    proc = launch(path, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = manifest_jobs(tmp_path, "slurmsearch")
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs.values()}) == 2  # two rounds, an array each
    found = results.search_trials("slurmsearch", tmp_path / "runs")
    assert found.trials["state"].to_list() == ["complete"] * 4 and found.trials["round"].to_list() == [1, 1, 2, 2]
    df = results.load(path, tmp_path / "runs").filter(pl.col("split") == "val").collect()
    assert sorted(df["objective"].to_list()) == sorted(found.trials["value"].to_list())  # told from the rows
    assert set(df["key"]) == set(jobs) and df["run.slurm_job_id"].is_not_null().all()
    again = launch(path, tmp_path)  # a relaunch after the end submits nothing
    assert again.returncode == 0 and manifest_jobs(tmp_path, "slurmsearch") == jobs, again.stdout + again.stderr
