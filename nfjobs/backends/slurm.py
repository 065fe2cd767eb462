"""The Slurm backend: cells as job arrays through submitit (imported when submitting), their states from
squeue / sacct mapped onto `JobState` once, here, and scancel."""

import collections
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nfjobs import parts
from nfjobs.backends.base import JobState, packs, submit_pack, threads_env, with_ranks
from nfjobs.config import SlurmConfig
from nfjobs.errors import UserError, one_line
from nfjobs.store import rows
from nfjobs.worker import CellSpec

SLURM_STATES: dict[str, JobState] = {
    "PENDING": "pending", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued",
    "RUNNING": "running", "CONFIGURING": "running", "COMPLETING": "running", "RESIZING": "running",
    "SUSPENDED": "running", "STOPPED": "running", "CANCELLED": "cancelled",
}
"""Slurm's job states onto ours; every other state Slurm reports (COMPLETED, FAILED, TIMEOUT, ...) is `ended`."""


class SubmissionError(UserError):
    """Slurm is not there, or sbatch refused the job array: one line with Slurm's own words."""


def max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (`scontrol show config`), or `default` if it cannot be read."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else default


def parameters(slurm: SlurmConfig) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a SlurmConfig."""
    params: dict[str, Any] = {
        "timeout_min": max(1, int(round(slurm.n_hours * 60))),
        "slurm_account": slurm.account,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_signal_delay_s": slurm.signal_delay_s,
        "nodes": slurm.nodes,
        "tasks_per_node": slurm.tasks_per_node,
    }
    if slurm.world_size > 1:  # a rank that fails ends the job's other ranks too, rather than leaving them waiting
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    optional = {"slurm_partition": slurm.partition, "slurm_qos": slurm.qos, "slurm_constraint": slurm.constraint}
    params.update({k: v for k, v in optional.items() if v})
    if slurm.mem_gb:
        params["mem_gb"] = slurm.mem_gb
    if slurm.gpus_per_node:  # never `--gpus-per-node=0`: clusters without GPU gres reject it
        params["gpus_per_node"] = slurm.gpus_per_node
    if slurm.max_parallel:
        params["slurm_array_parallelism"] = slurm.max_parallel
    extra = dict(item.split("=", 1) for item in slurm.extra)
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def check_available() -> None:
    """SubmissionError (one line) when this machine cannot submit to Slurm."""
    missing = [c for c in ("sbatch", "squeue", "sacct") if shutil.which(c) is None]
    if missing:
        raise SubmissionError(f"--slurm-acct: Slurm is not available here ({', '.join(missing)} not on PATH); "
                              "nothing was submitted. Run without --slurm-acct to run the cells on this machine")


def submit(cells: Sequence[Any], specs: dict[str, CellSpec], log_dir: Path, flags: dict[str, Any],
           cells_per_job: int, env: dict[str, str]) -> dict[str, Any]:
    """Submit cells as job arrays: one array per (stage, resources, upstream cells), chunked below MaxArraySize,
    one task per pack of `cells_per_job` cells. Each array waits for exactly the array tasks it reads
    (`afterany:<array>_<task>`), so independent chains run in parallel; a cell whose upstream did not end `ok`
    starts, writes a `blocked` row and ends (nothing waits forever on a dependency that can never be met).
    Jobs run with `env` (the frozen code copy's import path). Resources: SlurmConfig defaults < the sweep's
    [slurm] table < `flags`. Returns {key: submitit job} (cells of one pack share their job)."""
    check_available()
    import submitit

    chunk = max(1, max_array_size() - 1)
    jobs: dict[str, Any] = {}
    arrays: dict[tuple, list[list[Any]]] = collections.defaultdict(list)
    for pack in packs(cells, cells_per_job):  # packs share stage, resources and upstream cells
        c = pack[0]
        arrays[(c.stage, tuple(sorted(c.slurm.items())), specs[c.key].deps)].append(pack)
    for (_, resources, deps), group in sorted(arrays.items(), key=lambda kv: kv[0][0]):
        cfg = SlurmConfig(**{**dict(resources), **flags})
        params = parameters(cfg)
        job_env = {**env, **threads_env(cfg.cpus_per_task)}
        params["slurm_setup"] = [f"export {k}={shlex.quote(v)}" for k, v in job_env.items()]  # paths are data, not shell
        params["timeout_min"] *= max(len(pack) for pack in group)  # a pack's limit: n_hours per cell it holds
        if deps:
            extra = dict(params.get("slurm_additional_parameters", {}))
            upstream = {task.job_id for d in deps for task in getattr(jobs[d], "jobs", [jobs[d]])}  # every part
            extra["dependency"] = "afterany:" + ":".join(sorted(upstream))
            params["slurm_additional_parameters"] = extra
        executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster="slurm",
                                         slurm_max_num_timeout=cfg.max_requeues)
        executor.update_parameters(**params)
        step = max(1, chunk // max(parts.n_parts(p[0].config) for p in group))  # tasks, not cells, fill an array
        for start in range(0, len(group), step):
            part = group[start:start + step]
            try:
                with executor.batch():
                    submitted = [submit_pack(executor, [with_ranks(specs[c.key], cfg) for c in pack]) for pack in part]
            except Exception as err:  # sbatch's own words are the useful part
                words = " ".join(str(err).split())[:400]
                raise SubmissionError(f"sbatch refused the job array: {one_line(words)}") from err
            jobs.update({c.key: j for pack, j in zip(part, submitted) for c in pack})
    return jobs


def wait(jobs: dict[str, Any], runs_root: Path, poll_s: float = 5.0) -> dict[str, str]:
    """Block until every job has ended, with one live status line that counts each ended cell by its result
    (`ok`, `failed`, `blocked`, `no result`), not by the scheduler's word; returns {key: outcome}."""
    done: dict[str, str] = {}
    tty = sys.stderr.isatty()
    while len(done) < len(jobs):
        counts: collections.Counter[str] = collections.Counter()
        for key, job in jobs.items():
            if key not in done and job.done():
                done[key] = rows.describe(rows.outcome(runs_root, key))
            counts[done[key].split(":")[0] if key in done else job.state.lower()] += 1
        line = f"{len(done)}/{len(jobs)} ended | " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
        print(("\r" if tty else "") + line + (" " * 8 if tty else ""), end="" if tty else "\n",
              file=sys.stderr, flush=True)
        if len(done) < len(jobs):
            time.sleep(poll_s)
    if tty:
        print(file=sys.stderr)
    return done


def job_logs(job: Any) -> dict[str, str]:
    """stdout/stderr paths of a submitit job (one array task)."""
    return {"stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}


def raw_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Slurm's own word for each `jobid` or `jobid_task` (squeue for live jobs, sacct for ended ones; "" when
    Slurm does not know it)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    found: dict[str, str] = {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, state = line.partition("|")
            found[job] = state.split()[0] if state else ""
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, state = line.partition("|")
            found[job] = state
    except (OSError, subprocess.SubprocessError):
        pass
    return {j: found.get(j, "") for j in job_ids}


def states(job_ids: Sequence[str]) -> dict[str, JobState]:
    """Each job's state in our words (`unknown` where Slurm does not know it, or there is no Slurm here)."""
    return {j: (SLURM_STATES.get(s, "ended") if s else "unknown") for j, s in raw_states(job_ids).items()} | \
        {j: "unknown" for j in job_ids if shutil.which("squeue") is None}


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True, text=True, timeout=60)
