"""Running cells on this machine: `debug` (this process, in order) or `local` (subprocesses, bounded).

submitit is imported lazily, only when cells are actually dispatched to subprocesses.
"""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from nfjobs.config import SlurmConfig
from nfjobs.plan import specs
from nfjobs import parts
from nfjobs.runner import CellTask, run_cell
from nfjobs.sweep import Cell


# ---------------------------------------------------------------------------------------------- debug
def run_debug(cells: Sequence[Cell], runs_root: Path, typed_flags: dict[str, Any] | None = None) -> None:
    """In this process (the live source, not a frozen copy), one after another, each with the torch threads it
    would have here as a subprocess (`threads_env`: `cpus_per_task`, at most this machine's cores); the first
    exception propagates with its full traceback."""
    cores = os.cpu_count() or 1
    for cell, spec in zip(cells, specs(cells, runs_root)):
        print(f"[debug] {spec.kind} {spec.key} ({spec.group})", file=sys.stderr, flush=True)
        cpus = SlurmConfig(**{**cell.slurm, **(typed_flags or {})}).cpus_per_task
        with _torch_threads(threads_env(min(cpus, cores))["OMP_NUM_THREADS"]):
            for task in parts.task_specs(spec):
                run_cell(task)


@contextlib.contextmanager
def _torch_threads(n: str) -> Iterator[None]:
    """OMP_NUM_THREADS = `n` for the duration of a cell run in this process, and torch's thread count with it
    (torch read the variable once, when it was imported), both restored after."""
    import torch

    saved = torch.get_num_threads()
    with _environ({"OMP_NUM_THREADS": n}):
        if n.isdigit() and int(n) > 0:  # else the launcher's own setting, in a form only OpenMP reads
            torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(saved)


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


def threads_env(cpus: int) -> dict[str, str]:
    """Environment giving a cell's torch (OpenMP) `cpus` threads, the CPUs the cell was given, or the launcher's
    own OMP_NUM_THREADS where it sets one; the one rule for local subprocesses and Slurm jobs (without it torch
    starts a thread per core of the machine in every cell, however few CPUs the cell has)."""
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, cpus))}


@contextlib.contextmanager
def _environ(overrides: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def packs(cells: Sequence[Cell], cells_per_job: int) -> list[list[Cell]]:
    """Cells run together in one task: up to `cells_per_job` of one stage and the same resources reading the
    same upstream cells of this launch (so a pack starts when exactly its inputs have ended), in file order. A
    cell split into parts (`nfjobs.parts`) is never packed: each of its parts is a task of its own."""
    in_launch = {c.key for c in cells}
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        deps = tuple(sorted(d for d in c.deps if d in in_launch))
        alone = c.key if parts.n_parts(c.config) > 1 else ""
        groups.setdefault((c.stage, tuple(sorted(c.slurm.items())), deps, alone), []).append(c)
    n = max(1, cells_per_job)
    out = [g[i:i + n] for g in groups.values() for i in range(0, len(g), n)]
    order = {c.key: i for i, c in enumerate(cells)}
    return sorted(out, key=lambda p: order[p[0].key])


def submit_pack(executor: Any, pack: list[Any]) -> Any:
    """Submit one task for a pack of cell specs, or one per part for a cell split into parts (seen as one job)."""
    tasks = parts.task_specs(pack[0]) if len(pack) == 1 else pack
    if len(tasks) == 1 or len(pack) > 1:
        return executor.submit(CellTask(), pack)
    return parts.PartJobs([executor.submit(CellTask(), [t]) for t in tasks])


def run_local(cells: Sequence[Cell], runs_root: Path, log_dir: Path, typed_flags: dict[str, Any],
              cells_per_job: int = 1, code_dir: Path | None = None, code_hash: str = "") -> dict[str, str]:
    """Each pack of cells (one cell unless `cells_per_job` > 1) in its own subprocess (submitit's local
    executor), at most `max_parallel` at once, importing the code frozen in `code_dir`. A pack starts as soon
    as the cells it reads have ended; a cell whose upstream did not end `ok` is `blocked` (written here, by the
    same rule the worker applies, without starting a process). Resources as on Slurm (defaults < [slurm] tables
    < `typed_flags`), GPUs too: a cell asking for `gpus_per_node` GPUs waits until that many of this machine's
    are free and has them to itself (or shares each with at most `cells_per_gpu - 1` others), a cell asking for
    none sees no GPU, and on a machine without GPUs every cell runs on the CPU; its torch gets `cpus_per_task`
    threads, at most this machine's cores / `max_parallel` (`threads_env`). Records each pack's pid and log
    paths in the manifest and prints each cell's result as it ends. Blocks until all have ended; returns
    {key: outcome}."""
    import submitit

    from nfjobs import plan, results
    from nfjobs.snapshot import job_env

    resources = {c.key: SlurmConfig(**{**c.slurm, **typed_flags}) for c in cells}
    limit = typed_flags.get("max_parallel") or max((r.max_parallel for r in resources.values()), default=0) or 2
    cores_each = max(1, (os.cpu_count() or 1) // limit)  # per running pack: the cores are never oversubscribed
    env = job_env(code_dir) if code_dir is not None else {}  # the subprocesses import the frozen copy
    gpus = visible_gpus() if any(r.gpus_per_node for r in resources.values()) else []
    share = max((r.cells_per_gpu for r in resources.values()), default=1)
    slots = {g: share for g in gpus}  # free places per GPU
    by_key = dict(zip((c.key for c in cells), plan.specs(cells, runs_root, code_hash)))
    waiting = packs(cells, cells_per_job)  # file order is the priority: long upstream cells first
    running: dict[int, tuple[Any, list[Cell], list[int]]] = {}
    ended: dict[str, str] = {}

    def finish(pack: list[Cell]) -> None:
        for c in pack:
            ended[c.key] = results.describe(results.cell_outcome(runs_root, c.key))
            print(f"[local] {len(ended)}/{len(cells)} {c.key} ({c.group}): {ended[c.key]}", file=sys.stderr, flush=True)

    blocked: dict[int, bool] = {}  # per ready pack, decided once: its inputs' results no longer change
    while waiting or running:
        for pack in [p for p in waiting if all(d in ended for c in p for d in by_key[c.key].deps)]:
            if id(pack) not in blocked:
                blocked[id(pack)] = all(results.upstream_blocker(runs_root, by_key[c.key].deps) for c in pack)
            if blocked[id(pack)]:
                for c in pack:
                    run_cell(by_key[c.key])  # writes the `blocked` row; starts nothing
                waiting.remove(pack)
                finish(pack)
                continue
            if len(running) >= limit:
                break
            res = resources[pack[0].key]
            wanted = min(res.gpus_per_node, len(gpus))
            free = sorted((g for g in gpus if slots[g]), key=lambda g: -slots[g])  # emptiest first
            if len(free) < wanted:
                continue  # a later cell that needs fewer GPUs may start meanwhile
            assigned = sorted(free[:wanted], key=gpus.index)
            for g in assigned:
                slots[g] -= 1
            executor = submitit.LocalExecutor(folder=log_dir / "%j", max_num_timeout=res.max_requeues)
            timeout = max(1, int(res.n_hours * 60)) * len(pack)
            executor.update_parameters(timeout_min=timeout, gpus_per_node=len(assigned), visible_gpus=tuple(assigned))
            with _environ({**env, **threads_env(min(res.cpus_per_task, cores_each))}):
                job = submit_pack(executor, [by_key[c.key] for c in pack])
            running[id(job)] = (job, pack, assigned)
            waiting.remove(pack)
            logs = {"stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
            plan.record(pack, runs_root, {c.key: f"local:{job.job_id}" for c in pack}, {c.key: logs for c in pack})
        time.sleep(0.2)
        for ident, (job, pack, assigned) in list(running.items()):
            if job.done():
                for g in assigned:
                    slots[g] += 1
                del running[ident]
                finish(pack)
    return ended
