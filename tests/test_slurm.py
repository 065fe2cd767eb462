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

from nfjobs import results

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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and results.load(path, tmp_path / "runs").collect().height < 2:
        time.sleep(1)
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (manifest.exists() and json.loads(manifest.read_text())["jobs"]):
        time.sleep(0.5)
    (job_id,) = manifest_jobs(tmp_path, "cancel").values()
    subprocess.run(["scancel", job_id.split("_")[0]], check=True)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 1, out + err
    assert "0 ok, 1 not ok" in out and "no result" in out
    status = subprocess.run([sys.executable, "launch.py", "status", "--sweep", str(path), "--runs-root",
                             str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "cancelled" in status.stdout


def test_a_job_that_hits_its_time_limit_is_requeued_and_resumes_from_its_checkpoint(sweep_file, tmp_path):
    # A 2-minute limit with the warning 60 s before it: slurmctld checks limits every 30 s, so each run is warned
    # 30-60 s in, checkpoints and is requeued (docs/slurm-notes.md). 80 s of work cannot fit in one run.
    path = sweep_file('kind = "smoke"\nsteps = 32\nstep_seconds = 2.5\n', "timeout.toml")
    proc = launch(path, tmp_path, "--wait", "--n-hours", str(2 / 60), "--signal-delay-s", "60",
                  "--max-requeues", "5", timeout=480)
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
    path = sweep_file('[[group]]\nname = "up"\nkind = "kinds.toy"\n'
                      '[[group]]\nkind = "kinds.toy"\nupstream = "@up"\nhead.width = [1, 2]\n', "stages.toml")
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "checkpoint.pt").exists():
        time.sleep(0.5)
    assert (run_dir / "checkpoint.pt").exists(), "the job never started"
    # what a preempting scheduler sends (Slurm's PreemptMode=REQUEUE with a grace signal): USR2 to the job
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and results.cell_status(tmp_path / "runs", run_dir.name) is None:
        time.sleep(1)
    df = results.load(path, tmp_path / "runs").collect()
    assert df.height == 1 and df["status"][0] == "ok"
    assert df["steps_done"][0] == 8 and df["starts"][0] == 2
    assert df["run.slurm_restarts"][0] >= 1


def test_cells_beyond_max_array_size_go_in_several_arrays(sweep_file, tmp_path, monkeypatch):
    import launch as launcher
    from nfjobs import dispatch

    monkeypatch.setattr(dispatch, "max_array_size", lambda: 3)  # indices 0..2: at most 2 cells per array here
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


def test_relaunching_while_cells_are_queued_or_running_does_not_submit_them_twice(sweep_file, tmp_path):
    path = sweep_file('kind = "smoke"\nsteps = 30\nstep_seconds = 1.0\nlabel = ["a", "b"]\n', "twice.toml")
    assert launch(path, tmp_path).returncode == 0
    first = manifest_jobs(tmp_path, "twice")
    again = launch(path, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 cell(s) already queued or running on Slurm" in again.stdout
    assert "nothing to do" in again.stdout
    assert manifest_jobs(tmp_path, "twice") == first
    subprocess.run(["scancel", next(iter(first.values())).split("_")[0]], check=True)


def launch_cmd(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A launch.py subcommand (status, logs, cancel) on this test's runs and logs."""
    cmd = [sys.executable, "launch.py", *args, "--runs-root", str(tmp_path / "runs")]
    if args[0] != "cancel":
        cmd += ["--log-root", str(tmp_path / "logs")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and long["job_id"] in subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split():
        time.sleep(1)
    rows = pl.read_parquet(results.result_path(tmp_path / "runs", long["key"]))
    assert rows["status"].to_list() == ["cancelled"]  # one result, saying what happened
    final = launch_cmd(tmp_path, "status", "--sweep", str(path)).stdout
    assert final.splitlines()[0] == "watch: 2 cells | failed 1, cancelled 1"
