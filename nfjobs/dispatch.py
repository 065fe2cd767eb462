"""Running cells: `debug` (this process, in order), `local` (subprocesses, bounded) or `slurm` (job arrays).

submitit is imported lazily, only when cells are actually dispatched to `local` or `slurm`.
"""

import collections
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from nfjobs import parts, results
from nfjobs.config import SlurmConfig
from nfjobs.context import run_dir_for
from nfjobs.runner import CellSpec, CellTask, git_provenance, run_cell
from nfjobs.sweep import Cell

Mode = Literal["debug", "local", "slurm"]
CODE_ROOT = Path(__file__).resolve().parent.parent
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class Plan:
    """What a launch will do: the cells to run now, those already finished, those queued or running on Slurm."""

    to_run: list[Cell]
    done: list[Cell]
    in_flight: dict[str, str] = dataclasses.field(default_factory=dict)
    """Cell key -> Slurm job id of cells an earlier launch submitted that are still pending or running."""

    def summary(self) -> str:
        lines = []
        counts = collections.Counter(c.kind for c in self.to_run)
        done = collections.Counter(c.kind for c in self.done)
        for kind in sorted(counts.keys() | done.keys()):
            lines.append(f"  {kind:<10} {counts[kind]:>6} to run  {done[kind]:>6} done (skipped)")
        if self.in_flight:
            lines.append(f"  {len(self.in_flight)} cell(s) already queued or running on Slurm (skipped; "
                         f"scancel {' '.join(sorted(set(self.in_flight.values()))[:5])} ... to resubmit them)")
        return "\n".join(lines)


class DependencyError(Exception):
    pass


def live_jobs(cells: Sequence[Cell], runs_root: Path) -> dict[str, str]:
    """Cell key -> job id for cells of these sweeps that an earlier launch submitted and Slurm still holds."""
    jobs: dict[str, str] = {}
    for sweep in {c.sweep for c in cells}:
        jobs.update(results.read_manifest(runs_root, sweep)["jobs"])
    keys = {c.key for c in cells}
    jobs = {k: j for k, j in jobs.items() if k in keys}
    states = slurm_states(list(jobs.values()))
    return {k: j for k, j in jobs.items() if states.get(j) in LIVE_STATES}


def plan(cells: Sequence[Cell], runs_root: Path, force: bool = False,
         in_flight: dict[str, str] | None = None) -> Plan:
    """Split cells into those to run, those whose result already says `ok` (skipped unless `force`) and those
    still queued or running from an earlier launch (always skipped: never two jobs for one cell)."""
    in_flight = in_flight or {}
    to_run, done = [], []
    for cell in cells:
        if cell.key in in_flight:
            continue
        (to_run if force or results.cell_status(runs_root, cell.key) != "ok" else done).append(cell)
    launched = {c.key for c in to_run} | {c.key for c in done}
    problems = []
    for c in to_run:
        for d in c.deps:
            if d in in_flight:
                problems.append(f"{c.source}: group {c.group}: cell {c.key} needs cell {d}, which is still queued or "
                                f"running (job {in_flight[d]}); launch again when it has finished")
            elif d not in launched and results.cell_status(runs_root, d) != "ok":
                problems.append(f"{c.source}: group {c.group}: cell {c.key} needs cell {d}, which has no finished "
                                "result and is not part of this launch")
    if problems:
        raise DependencyError("\n".join(problems[:10]))
    return Plan(to_run, done, dict(in_flight))  # in file order, which puts every referenced cell first


def _specs(cells: Sequence[Cell], runs_root: Path) -> list[CellSpec]:
    prov = git_provenance()
    return [CellSpec(c.kind, c.config, c.key, c.sweep, c.group, str(runs_root), prov) for c in cells]


def _forget(cell: Cell, runs_root: Path) -> None:
    """--force: drop the old result and checkpoint so the cell starts from scratch."""
    run_dir = run_dir_for(runs_root, cell.key)
    for name in (results.RESULT_FILE, "checkpoint.pt"):
        (run_dir / name).unlink(missing_ok=True)
    parts.forget(run_dir)


def record(cells: Sequence[Cell], runs_root: Path, jobs: dict[str, str] | None = None) -> None:
    """Add the cells (and their job ids) to each sweep's manifest, so `status` and `results.load` find them."""
    by_sweep: dict[str, list[Cell]] = collections.defaultdict(list)
    for c in cells:
        by_sweep[c.sweep].append(c)
    for sweep, group in by_sweep.items():
        manifest = results.read_manifest(runs_root, sweep)
        for c in group:
            manifest["cells"][c.key] = {"kind": c.kind, "group": c.group, "stage": c.stage, "source": c.source}
            if jobs and c.key in jobs:
                manifest["jobs"][c.key] = jobs[c.key]
        results.write_manifest(runs_root, manifest)


# ---------------------------------------------------------------------------------------------- debug
def run_debug(cells: Sequence[Cell], runs_root: Path) -> None:
    """In this process, one after another; the first exception propagates with its full traceback."""
    for spec in _specs(cells, runs_root):
        print(f"[debug] {spec.kind} {spec.key} ({spec.group})", file=sys.stderr, flush=True)
        for task in parts.task_specs(spec):
            run_cell(task)


# ---------------------------------------------------------------------------------------------- local
def visible_gpus() -> list[int]:
    """GPU indices this machine offers to subprocesses: CUDA_VISIBLE_DEVICES if it lists indices, else one per
    `nvidia-smi -L` line; [] without GPUs (torch is not imported for this: the launcher starts fast)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        if all(x.isdigit() for x in ids):
            return [int(x) for x in ids]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(line.startswith("GPU ") for line in out.splitlines())))


def run_local(cells: Sequence[Cell], runs_root: Path, log_dir: Path, typed_flags: dict[str, Any]) -> dict[str, str]:
    """Each cell in its own subprocess (submitit's local executor), at most `max_parallel` at once. A cell starts
    as soon as the cells it reads have ended (as on Slurm, a failed upstream cell lets its dependants run and fail
    clearly), not when its whole stage has. Resources as on Slurm (defaults < [slurm] tables < `typed_flags`),
    GPUs too: a cell asking for `gpus_per_node` GPUs waits until that many of this machine's are free and has
    them to itself (or shares each with at most `cells_per_gpu - 1` others), a cell asking for none sees no GPU,
    and on a machine without GPUs every cell runs on the CPU. Blocks until all have ended; returns
    {key: final state}."""
    import submitit

    resources = {c.key: SlurmConfig(**{**c.slurm, **typed_flags}) for c in cells}
    limit = typed_flags.get("max_parallel") or max((r.max_parallel for r in resources.values()), default=0) or 2
    # share the cores instead of oversubscribing them (torch would start one thread per core in every cell)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // limit)))
    gpus = visible_gpus() if any(r.gpus_per_node for r in resources.values()) else []
    share = max((r.cells_per_gpu for r in resources.values()), default=1)
    slots = {g: share for g in gpus}  # free places per GPU
    specs = dict(zip((c.key for c in cells), _specs(cells, runs_root)))
    waiting = list(cells)  # file order is the priority: long upstream cells first, as the sweep lists them
    running: dict[str, tuple[Any, list[int]]] = {}
    states: dict[str, str] = {}
    while waiting or running:
        for cell in [c for c in waiting if all(d in states for d in c.deps if d in specs)]:
            if len(running) >= limit:
                break
            res = resources[cell.key]
            wanted = min(res.gpus_per_node, len(gpus))
            free = sorted((g for g in gpus if slots[g]), key=lambda g: -slots[g])  # emptiest first
            if len(free) < wanted:
                continue  # a later cell that needs fewer GPUs may start meanwhile
            assigned = sorted(free[:wanted], key=gpus.index)
            for g in assigned:
                slots[g] -= 1
            executor = submitit.LocalExecutor(folder=log_dir / "%j", max_num_timeout=res.max_requeues)
            executor.update_parameters(timeout_min=max(1, int(res.n_hours * 60)), gpus_per_node=len(assigned),
                                       visible_gpus=tuple(assigned))
            tasks = [executor.submit(CellTask(), t) for t in parts.task_specs(specs[cell.key])]
            running[cell.key] = (tasks[0] if len(tasks) == 1 else parts.PartJobs(tasks), assigned)
            waiting.remove(cell)
        time.sleep(0.2)
        for key, (job, assigned) in list(running.items()):
            if job.done():
                states[key] = job.state
                for g in assigned:
                    slots[g] += 1
                del running[key]
                _print_state(key, states[key], len(states), len(cells))
    return states


def _print_state(key: str, state: str, n_done: int, n_total: int) -> None:
    print(f"[local] {n_done}/{n_total} {key}: {state}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- slurm
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
    specs = dict(zip((c.key for c in cells), _specs(cells, runs_root)))
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
            step = max(1, chunk // max(parts.n_parts(c.config) for c in group))  # tasks, not cells, fill an array
            for start in range(0, len(group), step):
                part = group[start:start + step]
                try:
                    with executor.batch():
                        submitted = [[executor.submit(CellTask(), t) for t in parts.task_specs(specs[c.key])]
                                     for c in part]
                except Exception as err:  # sbatch's own words are the useful part
                    raise SubmissionError(f"sbatch refused the job array: {err}") from err
                jobs.update({c.key: j[0] if len(j) == 1 else parts.PartJobs(j) for c, j in zip(part, submitted)})
                stage_ids.extend(sorted({t.job_id.split("_")[0] for j in submitted for t in j}))
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

