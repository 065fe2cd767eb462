"""Running cells on this machine: `debug` (this process, in order) or `local` (subprocesses, bounded).

submitit is imported lazily, only when cells are actually dispatched to subprocesses.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nfjobs.config import SlurmConfig
from nfjobs.plan import specs
from nfjobs.runner import CellTask, run_cell
from nfjobs.sweep import Cell


# ---------------------------------------------------------------------------------------------- debug
def run_debug(cells: Sequence[Cell], runs_root: Path) -> None:
    """In this process, one after another; the first exception propagates with its full traceback."""
    for spec in specs(cells, runs_root):
        print(f"[debug] {spec.kind} {spec.key} ({spec.group})", file=sys.stderr, flush=True)
        run_cell(spec)


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
    by_key = dict(zip((c.key for c in cells), specs(cells, runs_root)))
    waiting = list(cells)  # file order is the priority: long upstream cells first, as the sweep lists them
    running: dict[str, tuple[Any, list[int]]] = {}
    states: dict[str, str] = {}
    while waiting or running:
        for cell in [c for c in waiting if all(d in states for d in c.deps if d in by_key)]:
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
            running[cell.key] = (executor.submit(CellTask(), by_key[cell.key]), assigned)
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

