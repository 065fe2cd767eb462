"""Slurm: submitting cells as job arrays (submitit, imported lazily), waiting on them, asking their states."""

import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nfjobs.config import SlurmConfig
from nfjobs.plan import specs
from nfjobs.runner import CellTask
from nfjobs.sweep import Cell

CODE_ROOT = Path(__file__).resolve().parent.parent
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


def max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (`scontrol show config`), or `default` if it cannot be read."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else default


def slurm_parameters(slurm: SlurmConfig) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a SlurmConfig."""
    params: dict[str, Any] = {
        "timeout_min": max(1, int(round(slurm.n_hours * 60))),
        "slurm_account": slurm.account,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_signal_delay_s": slurm.signal_delay_s,
        "nodes": 1,
        "tasks_per_node": 1,
    }
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


class SubmissionError(Exception):
    pass


def submit_slurm(cells: Sequence[Cell], runs_root: Path, log_dir: Path, typed_flags: dict[str, Any]) -> dict[str, Any]:
    """Submit cells as job arrays (chunks below MaxArraySize; one array per stage and resource set). Later
    stages wait for earlier ones (`afterany`: a failed upstream cell gives its dependants a clear failed row
    instead of leaving them queued forever). Resources: SlurmConfig defaults < the sweep's [slurm] table <
    `typed_flags` (SlurmConfig fields the user typed). Returns {key: submitit job}."""
    import submitit

    chunk = max(1, max_array_size() - 1)
    by_key = dict(zip((c.key for c in cells), specs(cells, runs_root)))
    jobs: dict[str, Any] = {}
    previous_ids: list[str] = []
    for stage in sorted({c.stage for c in cells}):
        stage_cells = [c for c in cells if c.stage == stage]
        by_resources: dict[tuple, list[Cell]] = collections.defaultdict(list)
        for c in stage_cells:
            by_resources[tuple(sorted(c.slurm.items()))].append(c)
        stage_ids: list[str] = []
        for resources, group in by_resources.items():
            cfg = SlurmConfig(**{**dict(resources), **typed_flags})
            params = slurm_parameters(cfg)
            # jobs start in the submitting directory; make the code importable from anywhere
            params["slurm_setup"] = [f"export PYTHONPATH={CODE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"]
            if previous_ids:
                extra = dict(params.get("slurm_additional_parameters", {}))
                extra["dependency"] = "afterany:" + ":".join(previous_ids)
                params["slurm_additional_parameters"] = extra
            executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster="slurm",
                                             slurm_max_num_timeout=cfg.max_requeues)
            executor.update_parameters(**params)
            for start in range(0, len(group), chunk):
                part = group[start:start + chunk]
                try:
                    with executor.batch():
                        submitted = [executor.submit(CellTask(), by_key[c.key]) for c in part]
                except Exception as err:  # sbatch's own words are the useful part
                    raise SubmissionError(f"sbatch refused the job array: {err}") from err
                jobs.update({c.key: j for c, j in zip(part, submitted)})
                stage_ids.extend(sorted({j.job_id.split("_")[0] for j in submitted}))
        previous_ids = stage_ids
    return jobs


def wait(jobs: dict[str, Any], poll_s: float = 5.0) -> dict[str, str]:
    """Block until every job has ended, with one live status line; returns {key: final state}."""
    done: dict[str, str] = {}
    tty = sys.stderr.isatty()
    while len(done) < len(jobs):
        counts: collections.Counter[str] = collections.Counter()
        for key, job in jobs.items():
            if key in done:
                counts[done[key]] += 1
                continue
            if job.done():
                done[key] = job.state
            counts[done.get(key) or job.state] += 1
        line = f"{len(done)}/{len(jobs)} ended | " + ", ".join(f"{s.lower()} {n}" for s, n in sorted(counts.items()))
        print(("\r" if tty else "") + line + (" " * 8 if tty else ""), end="" if tty else "\n",
              file=sys.stderr, flush=True)
        if len(done) < len(jobs):
            time.sleep(poll_s)
    if tty:
        print(file=sys.stderr)
    return done


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Current Slurm state of each `jobid` or `jobid_task` (squeue for live jobs, sacct for ended ones)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states: dict[str, str] = {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, state = line.partition("|")
            states[job] = state.split()[0] if state else ""
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, state = line.partition("|")
            states[job] = state
    except (OSError, subprocess.SubprocessError):
        pass
    return {j: states.get(j, "") for j in job_ids}

