"""What every backend shares: the job-state vocabulary, and how cells are packed into tasks."""

import contextlib
import dataclasses
import os
from typing import Any, Iterator, Literal, Sequence

from nfjobs import parts
from nfjobs.config import SlurmConfig
from nfjobs.worker import CellSpec, CellTask

JobState = Literal["pending", "running", "requeued", "cancelled", "ended", "unknown"]
"""A job as its scheduler sees it: still to run, running, requeued, cancelled, ended otherwise (its result file
says how), or unknown (the scheduler has forgotten it, or there is no scheduler here)."""
LIVE_JOB_STATES: tuple[JobState, ...] = ("pending", "running", "requeued")


def packs(cells: Sequence[Any], cells_per_job: int) -> list[list[Any]]:
    """Cells run together in one task: up to `cells_per_job` of one stage and the same resources reading the
    same upstream cells of this launch (so a pack starts when exactly its inputs have ended), in file order. A
    cell split into parts (`nfjobs.parts`) is never packed: each of its parts is a task of its own."""
    in_launch = {c.key for c in cells}
    groups: dict[tuple, list[Any]] = {}
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
    return PartJobs([executor.submit(CellTask(), [t]) for t in tasks])


@dataclasses.dataclass
class PartJobs:
    """The submitit jobs of one cell's parts, seen as one job (done when all are; the first bad state)."""

    jobs: list[Any]

    @property
    def job_id(self) -> str:
        """The last part's id: what the manifest records, so `status` and a relaunch see the cell as live while
        it is (the cell claim keeps a part that is still running from running twice)."""
        return self.jobs[-1].job_id

    @property
    def paths(self) -> Any:
        """The first part's log paths (the manifest records one stdout/stderr pair per cell)."""
        return self.jobs[0].paths

    def done(self) -> bool:
        return all(j.done() for j in self.jobs)

    @property
    def state(self) -> str:
        states = [j.state for j in self.jobs]
        return next((s for s in states if s != "COMPLETED"), "COMPLETED")


def with_ranks(spec: CellSpec, resources: SlurmConfig) -> CellSpec:
    """The spec with the ranks its resources ask for (`nodes` x `tasks_per_node`) and their timeout."""
    return dataclasses.replace(spec, world_size=resources.world_size, dist_timeout_s=resources.dist_timeout_s)


def threads_env(cpus: int) -> dict[str, str]:
    """Environment giving a cell's torch (OpenMP) `cpus` threads, the CPUs the cell was given, or the launcher's
    own OMP_NUM_THREADS where it sets one; the one rule for local subprocesses and Slurm jobs (without it torch
    starts a thread per core of the machine in every cell, however few CPUs the cell has)."""
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, cpus))}


@contextlib.contextmanager
def environ(overrides: dict[str, str]) -> Iterator[None]:
    """These environment variables for the duration of the block, restored after."""
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
