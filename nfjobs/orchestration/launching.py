"""One launch: plan the cells, then, holding the sweeps' launch lock, run them on a backend and record them."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from nfjobs.backends import debug, local, slurm
from nfjobs.orchestration import plan as planning
from nfjobs.store import locks, manifest, rows, snapshot
from nfjobs.store.study import TrialRef
from nfjobs.sweep import Cell

Mode = Literal["debug", "local", "slurm"]


@dataclass(frozen=True)
class Outcome:
    """What a launch did: its plan, and the Slurm jobs it submitted (none for debug and local launches, which
    return when their cells have ended)."""

    plan: planning.Plan
    jobs: dict[str, Any]
    log_dir: Path


def mode_of(flags: dict[str, Any], debug_flag: bool) -> Mode:
    return "debug" if debug_flag else "slurm" if flags.get("account") else "local"


def dry_run(cells: Sequence[Cell], runs_root: Path, force: bool) -> planning.Plan:
    """The plan, without taking the lock or writing anything."""
    return planning.plan(cells, runs_root, force=force, in_flight=planning.live_jobs(cells, runs_root))


def launch(cells: Sequence[Cell], runs_root: Path, log_root: Path, flags: dict[str, Any], mode: Mode, *,
           force: bool = False, cells_per_job: int = 1, announce=print) -> Outcome:
    """Run (debug, local) or submit (slurm) every cell without an `ok` result that is not already queued or
    running, holding each sweep's launch lock meanwhile (a second launch of the sweep is refused, naming this
    one). `announce(plan)` is called once the plan is known, before anything runs."""
    if mode == "slurm":
        slurm.check_available()
    with locks.launch_lock(runs_root, sorted({c.sweep for c in cells})):
        return launch_held(cells, runs_root, log_root, flags, mode, force=force, cells_per_job=cells_per_job,
                           announce=announce)


def launch_held(cells: Sequence[Cell], runs_root: Path, log_root: Path, flags: dict[str, Any], mode: Mode, *,
                force: bool = False, cells_per_job: int = 1, announce=print,
                trials: dict[str, TrialRef] | None = None) -> Outcome:
    """`launch` for a caller that already holds the sweeps' launch lock (a search, round after round); `trials`
    names the search trial each cell runs as (its pruner)."""
    if mode == "debug":
        debug.check(cells, flags)  # before anything is written
    log_dir = Path(log_root) / "+".join(sorted({c.sweep for c in cells}))
    p = planning.plan(cells, runs_root, force=force, in_flight=planning.live_jobs(cells, runs_root))
    announce(p)
    manifest.record(runs_root, cells, axes=True)
    if not p.to_run:
        return Outcome(p, {}, log_dir)
    if force:
        for c in p.to_run:
            rows.forget(runs_root, c.key)
    if mode == "debug":
        debug.run(p.to_run, planning.specs(p.to_run, runs_root, trials=trials), flags)
        return Outcome(p, {}, log_dir)
    code_dir, code_hash = snapshot.freeze(runs_root)  # what every job imports, whatever the tree becomes
    specs = planning.specs(p.to_run, runs_root, code_hash, trials=trials)
    env = snapshot.job_env(code_dir)
    if mode == "local":
        def started(pack: list[Cell], job: str, logs: dict[str, str]) -> None:
            manifest.record(runs_root, pack, {c.key: job for c in pack}, {c.key: logs for c in pack})

        local.run(p.to_run, specs, runs_root, log_dir, flags, cells_per_job, env, started)
        return Outcome(p, {}, log_dir)
    jobs = slurm.submit(p.to_run, specs, log_dir, flags, cells_per_job, env)
    manifest.record(runs_root, p.to_run, {k: j.job_id for k, j in jobs.items()},
                    {k: slurm.job_logs(j) for k, j in jobs.items()})
    return Outcome(p, jobs, log_dir)
