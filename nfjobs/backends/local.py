"""The local backend: cells in subprocesses of this machine (submitit's local executor), bounded, GPUs handed
out as Slurm would. A job is identified by its process id and the process's start time, so a pid reused by
another program is never taken for it (`local:<pid>:<start>`)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from nfjobs.backends.base import JobState, environ, packs, submit_pack, threads_env, with_ranks
from nfjobs.config import SlurmConfig
from nfjobs.store import rows
from nfjobs.worker import CellSpec, run_cell

PREFIX = "local:"


# ---------------------------------------------------------------------------------------------- identity
def is_local(job_id: str) -> bool:
    return job_id.startswith(PREFIX)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None if it is gone or
    has exited (a zombie its parent has not reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def job_id(pid: int) -> str:
    """The id recorded for the local process `pid` (started just now)."""
    return f"{PREFIX}{pid}:{_start_time(pid) or ''}"


def pid_of(job: str) -> int | None:
    """The pid a local job id names, or None if it is not one."""
    pid = job[len(PREFIX):].split(":", 1)[0] if is_local(job) else ""
    return int(pid) if pid.isdigit() else None


def alive(job: str) -> bool:
    """The process a local job id names is still the one that was launched (same pid, same start time)."""
    pid = pid_of(job)
    if pid is None:
        return False
    recorded = job[len(PREFIX):].partition(":")[2]
    now = _start_time(pid)
    return now is not None and bool(recorded) and now == recorded


def states(job_ids: Sequence[str]) -> dict[str, JobState]:
    return {j: ("running" if alive(j) else "ended") for j in job_ids}


def cancel(job_ids: Sequence[str], grace_s: float = 10.0) -> None:
    """SIGINT (the cell stops as if interrupted: no result) to each live process, then SIGKILL after `grace_s`."""
    live = [j for j in job_ids if alive(j)]
    for j in live:
        _signal(j, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline and any(alive(j) for j in live):
        time.sleep(0.2)
    for j in live:
        _signal(j, signal.SIGKILL)


def _signal(job: str, sig: int) -> None:
    if alive(job):  # checked again just before: never a process that took over the pid meanwhile
        try:
            os.kill(pid_of(job), sig)
        except ProcessLookupError:
            pass


def log_folder(job: str) -> str:
    """submitit's log folder name of a local job (its pid)."""
    return str(pid_of(job) or "")


# ---------------------------------------------------------------------------------------------- running
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


def run(cells: Sequence[Any], specs: dict[str, CellSpec], runs_root: Path, log_dir: Path, flags: dict[str, Any],
        cells_per_job: int, env: dict[str, str], on_start: Callable[[list[Any], str, dict[str, str]], None]
        ) -> dict[str, str]:
    """Each pack of cells (one cell unless `cells_per_job` > 1) in its own subprocess, at most `max_parallel` at
    once, with `env` (the frozen code copy's import path). A pack starts as soon as the cells it reads have
    ended; a cell whose upstream did not end `ok` is `blocked` (written here, by the same rule the worker
    applies, without starting a process). Resources as on Slurm (defaults < [slurm] tables < `flags`), GPUs too:
    a cell asking for `gpus_per_node` GPUs waits until that many of this machine's are free and has them to
    itself (or shares each with at most `cells_per_gpu - 1` others), a cell asking for none sees no GPU, and on
    a machine without GPUs every cell runs on the CPU; its torch gets `cpus_per_task` threads, at most this
    machine's cores / `max_parallel` (`threads_env`), shared by its ranks: a cell of `nodes` x `tasks_per_node`
    ranks runs as that many processes here (`nfjobs.ranks.spawn`), rank i on the i-th of its GPUs. `on_start(pack, job id, log paths)` is called as each
    pack starts. Prints each cell's result as it ends; blocks until all have ended; returns {key: outcome}."""
    import submitit

    resources = {c.key: SlurmConfig(**{**c.slurm, **flags}) for c in cells}
    limit = flags.get("max_parallel") or max((r.max_parallel for r in resources.values()), default=0) or 2
    cores_each = max(1, (os.cpu_count() or 1) // limit)  # per running pack: the cores are never oversubscribed
    gpus = visible_gpus() if any(r.gpus_per_node for r in resources.values()) else []
    share = max((r.cells_per_gpu for r in resources.values()), default=1)
    slots = {g: share for g in gpus}  # free places per GPU
    waiting = packs(cells, cells_per_job)  # file order is the priority: long upstream cells first
    running: dict[int, tuple[Any, list[Any], list[int]]] = {}
    ended: dict[str, str] = {}

    def finish(pack: list[Any]) -> None:
        for c in pack:
            ended[c.key] = rows.describe(rows.outcome(runs_root, c.key))
            print(f"[local] {len(ended)}/{len(cells)} {c.key} ({c.group}): {ended[c.key]}", file=sys.stderr, flush=True)

    blocked: dict[int, bool] = {}  # per ready pack, decided once: its inputs' results no longer change
    while waiting or running:
        for pack in [p for p in waiting if all(d in ended for c in p for d in specs[c.key].deps)]:
            if id(pack) not in blocked:
                blocked[id(pack)] = all(rows.upstream_blocker(runs_root, specs[c.key].deps) for c in pack)
            if blocked[id(pack)]:
                for c in pack:
                    run_cell(specs[c.key])  # writes the `blocked` row; starts nothing
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
            with environ({**env, **threads_env(min(res.cpus_per_task, cores_each))}):
                job = submit_pack(executor, [with_ranks(specs[c.key], res) for c in pack])
            running[id(job)] = (job, pack, assigned)
            waiting.remove(pack)
            on_start(pack, job_id(int(job.job_id)), {"stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
        time.sleep(0.2)
        for ident, (job, pack, assigned) in list(running.items()):
            if job.done():
                for g in assigned:
                    slots[g] += 1
                del running[ident]
                finish(pack)
    return ended
