"""Where cells run: `debug` (this process, in order), `local` (subprocesses of this machine) and `slurm` (job
arrays), behind one interface for what the launcher asks of a job after it was started: its state, in one
vocabulary (`JobState`), and cancelling it. Which backend a job belongs to is read from its id
(`local:<pid>:<start>` or a Slurm `<array>_<task>`)."""

from typing import Iterable

from nfjobs.backends import local, slurm
from nfjobs.backends.base import LIVE_JOB_STATES, JobState

__all__ = ["JobState", "LIVE_JOB_STATES", "job_states", "cancel_jobs"]


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The state of each job id (`unknown` where its scheduler no longer knows it, or there is none)."""
    ids = [j for j in job_ids if j]
    found = local.states([j for j in ids if local.is_local(j)])
    found.update(slurm.states([j for j in ids if not local.is_local(j)]))
    return found


def cancel_jobs(job_ids: Iterable[str], grace_s: float = 10.0) -> None:
    """Cancel jobs: Slurm's with scancel; local processes with SIGINT, then SIGKILL after `grace_s` (only a
    process whose identity, pid and start time, still matches the one launched)."""
    ids = [j for j in job_ids if j]
    slurm.cancel([j for j in ids if not local.is_local(j)])
    local.cancel([j for j in ids if local.is_local(j)], grace_s)
