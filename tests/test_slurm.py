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
