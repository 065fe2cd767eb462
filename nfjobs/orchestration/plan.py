"""What a launch will do: which cells run, which are done or still queued or running."""

import collections
import dataclasses
import datetime as dt
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nfjobs.backends import LIVE_JOB_STATES, job_states, local
from nfjobs.errors import UserError
from nfjobs.kinds import load_kind
from nfjobs.store import manifest, rows, states
from nfjobs.store.study import TrialRef
from nfjobs.sweep import Cell
from nfjobs.worker import CellSpec


@dataclass(frozen=True)
class Plan:
    """What a launch will do: the cells to run now, those already finished, those queued or running."""

    to_run: list[Cell]
    done: list[Cell]
    in_flight: dict[str, str] = dataclasses.field(default_factory=dict)
    """Cell key -> job id of cells an earlier launch started that are still pending or running."""
    stopping: frozenset[str] = frozenset()
    """Those of `in_flight` that `launch.py cancel` already cancelled: their jobs are still ending (Slurm's
    COMPLETING), nothing more to stop; they run again at a launch after that."""

    def summary(self) -> str:
        lines = []
        counts = collections.Counter(c.kind for c in self.to_run)
        done = collections.Counter(c.kind for c in self.done)
        for kind in sorted(counts.keys() | done.keys()):
            lines.append(f"  {kind:<10} {counts[kind]:>6} to run  {done[kind]:>6} done (skipped)")
        live = {k: j for k, j in self.in_flight.items() if k not in self.stopping}
        if live:
            slurm = sorted({j.split("_")[0] for j in live.values() if not local.is_local(j)})
            how = (f"scancel {' '.join(slurm[:5])}{' ...' if len(slurm) > 5 else ''}, or `launch.py cancel`,"
                   if slurm else "`launch.py cancel`")
            where = " on Slurm" if slurm else ""
            lines.append(f"  {len(live)} cell(s) already queued or running{where} (skipped; {how} to stop them)")
        if self.stopping:
            lines.append(f"  {len(self.stopping)} cell(s) cancelled, their jobs still ending (skipped; launch again "
                         "once they have ended to run them)")
        return "\n".join(lines)


class DependencyError(UserError):
    pass


def live_jobs(cells: Sequence[Cell], runs_root: Path) -> dict[str, str]:
    """Cell key -> job id for cells of these sweeps that an earlier launch started and that still run."""
    jobs: dict[str, str] = {}
    for sweep in {c.sweep for c in cells}:
        jobs.update(manifest.read(runs_root, sweep)["jobs"])
    keys = {c.key for c in cells}
    jobs = {k: j for k, j in jobs.items() if k in keys}
    found = job_states(jobs.values())
    return {k: j for k, j in jobs.items() if found.get(j) in LIVE_JOB_STATES}


def plan(cells: Sequence[Cell], runs_root: Path, force: bool = False,
         in_flight: dict[str, str] | None = None) -> Plan:
    """Split cells into those to run, those whose result already says `ok` (skipped unless `force`) and those
    still queued or running from an earlier launch (always skipped: never two jobs for one cell)."""
    in_flight = in_flight or {}
    to_run, done = [], []
    for cell in cells:
        if cell.key in in_flight:
            continue
        (to_run if force or not rows.is_ok(runs_root, cell.key) else done).append(cell)
    launched = {c.key for c in to_run} | {c.key for c in done}
    problems = []
    for c in to_run:
        for d in c.deps:
            if d in in_flight:
                problems.append(f"{c.source}: group {c.group}: cell {c.key} needs cell {d}, which is still queued or "
                                f"running (job {in_flight[d]}); launch again when it has finished")
            elif d not in launched and not rows.is_ok(runs_root, d):
                problems.append(f"{c.source}: group {c.group}: cell {c.key} needs cell {d}, which has no finished "
                                "result and is not part of this launch")
    if problems:
        raise DependencyError("nothing was submitted.\n" + "\n".join(problems[:10]))
    stopping = frozenset(k for k, job in in_flight.items() if _cancelled_job(runs_root, k, job))
    return Plan(to_run, done, dict(in_flight), stopping)  # in file order, which puts every referenced cell first


def _cancelled_job(runs_root: Path, key: str, job: str) -> bool:
    """The cell's result is the `cancelled` row `launch.py cancel` wrote for this very job."""
    found = rows.outcome(runs_root, key)
    return found is not None and found[0] == states.CANCELLED and f"(job {job})" in found[1]


def git_provenance(cwd: str | Path = ".") -> dict[str, Any]:
    """Commit and dirty flag of the code being launched (computed once, at launch)."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", None
    return {"run.git_commit": commit, "run.git_dirty": dirty}


def specs(cells: Sequence[Cell], runs_root: Path, code_hash: str = "",
          trials: dict[str, TrialRef] | None = None) -> dict[str, CellSpec]:
    """What each worker needs, by key, with this launch's provenance (one launch id: a requeued pack knows what
    it did) and, in a search, the trial each cell runs as."""
    launch_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    prov = {**git_provenance(), "run.code_hash": code_hash, "run.launch_id": launch_id}
    in_launch = {c.key for c in cells}
    return {c.key: CellSpec(c.kind, c.config, c.key, c.sweep, c.group, str(runs_root), prov,
                            deps=tuple(d for d in c.deps if d in in_launch),
                            checkpointable=bool(getattr(load_kind(c.kind), "CHECKPOINTABLE", False)),
                            trial=(trials or {}).get(c.key))
            for c in cells}
