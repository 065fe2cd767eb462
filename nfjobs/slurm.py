"""Slurm: submitting cells as job arrays (submitit, imported lazily), waiting on them, asking their states."""

import collections
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nfjobs.config import SlurmConfig
from nfjobs import parts
from nfjobs.sweep import Cell

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


def submit_slurm(cells: Sequence[Cell], runs_root: Path, log_dir: Path, typed_flags: dict[str, Any],
                 cells_per_job: int = 1, code_dir: Path | None = None, code_hash: str = "") -> dict[str, Any]:
    """Submit cells as job arrays: one array per (stage, resources, upstream cells), chunked below MaxArraySize,
    one task per pack of `cells_per_job` cells. Each array waits for exactly the array tasks it reads
    (`afterany:<array>_<task>`), so independent chains run in parallel; a cell whose upstream did not end `ok`
    starts, writes a `blocked` row and ends (nothing waits forever on a dependency that can never be met).
    Jobs import the code frozen in `code_dir`. Resources: SlurmConfig defaults < the sweep's [slurm] table <
    `typed_flags`. Returns {key: submitit job} (cells of one pack share their job)."""
    import submitit

    from nfjobs.local import packs, submit_pack, threads_env
    from nfjobs.plan import specs
    from nfjobs.snapshot import CODE_ROOT, job_env

    chunk = max(1, max_array_size() - 1)
    by_key = dict(zip((c.key for c in cells), specs(cells, runs_root, code_hash)))
    jobs: dict[str, Any] = {}
    arrays: dict[tuple, list[list[Cell]]] = collections.defaultdict(list)
    for pack in packs(cells, cells_per_job):  # packs share stage, resources and upstream cells
        c = pack[0]
        arrays[(c.stage, tuple(sorted(c.slurm.items())), by_key[c.key].deps)].append(pack)
    for (_, resources, deps), group in sorted(arrays.items(), key=lambda kv: kv[0][0]):
        cfg = SlurmConfig(**{**dict(resources), **typed_flags})
        params = slurm_parameters(cfg)
        env = job_env(code_dir or CODE_ROOT)  # without a frozen copy: the live tree, from any directory
        env.update(threads_env(cfg.cpus_per_task))
        params["slurm_setup"] = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]  # paths are data, not shell
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
                    submitted = [submit_pack(executor, [by_key[c.key] for c in pack]) for pack in part]
            except Exception as err:  # sbatch's own words are the useful part
                raise SubmissionError(f"sbatch refused the job array: {err}") from err
            jobs.update({c.key: j for pack, j in zip(part, submitted) for c in pack})
    return jobs


def wait(jobs: dict[str, Any], runs_root: Path, poll_s: float = 5.0) -> dict[str, str]:
    """Block until every job has ended, with one live status line that counts each ended cell by its result
    (`ok`, `failed`, `blocked`, `no result`), not by the scheduler's word; returns {key: outcome}."""
    from nfjobs import results

    done: dict[str, str] = {}
    tty = sys.stderr.isatty()
    while len(done) < len(jobs):
        counts: collections.Counter[str] = collections.Counter()
        for key, job in jobs.items():
            if key not in done and job.done():
                done[key] = results.describe(results.cell_outcome(runs_root, key))
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

