"""The debug backend: cells in this process (the live source, not a frozen copy), one after another; the
first exception propagates with its full traceback."""

import contextlib
import os
import sys
from typing import Any, Iterator, Sequence

from nfjobs import parts
from nfjobs.backends.base import environ, threads_env
from nfjobs.config import SlurmConfig
from nfjobs.errors import UserError
from nfjobs.worker import CellSpec, run_cell


class RanksRefused(UserError):
    """`--debug` was asked to run a cell of several ranks (it runs cells in this one process)."""


def check(cells: Sequence[Any], flags: dict[str, Any]) -> None:
    """RanksRefused (one line) when a cell asks for more than one rank: they need processes of their own."""
    for cell in cells:
        n = SlurmConfig(**{**cell.slurm, **flags}).world_size
        if n > 1:
            raise RanksRefused(f"--debug runs each cell in this one process, but cell {cell.key} ({cell.group}) "
                               f"asks for {n} ranks (nodes x tasks_per_node); run without --debug to start them "
                               f"as {n} processes here; nothing was run")


def run(cells: Sequence[Any], specs: dict[str, CellSpec], flags: dict[str, Any]) -> None:
    """Each cell with the torch threads it would have here as a subprocess (`threads_env`: `cpus_per_task`, at
    most this machine's cores)."""
    cores = os.cpu_count() or 1
    for cell in cells:
        spec = specs[cell.key]
        print(f"[debug] {spec.kind} {spec.key} ({spec.group})", file=sys.stderr, flush=True)
        cpus = SlurmConfig(**{**cell.slurm, **flags}).cpus_per_task
        with _torch_threads(threads_env(min(cpus, cores))["OMP_NUM_THREADS"]):
            for task in parts.task_specs(spec):
                run_cell(task)


@contextlib.contextmanager
def _torch_threads(n: str) -> Iterator[None]:
    """OMP_NUM_THREADS = `n` for the duration of a cell run in this process, and torch's thread count with it
    (torch read the variable once, when it was imported), both restored after."""
    import torch

    saved = torch.get_num_threads()
    with environ({"OMP_NUM_THREADS": n}):
        if n.isdigit() and int(n) > 0:  # else the launcher's own setting, in a form only OpenMP reads
            torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(saved)
