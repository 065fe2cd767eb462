"""What a launch will do: which cells run, which are done or still queued, and the sweep manifests that record them."""

import collections
import dataclasses
import datetime as dt
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nfjobs import results
from nfjobs.context import OUTPUTS_FILE, run_dir_for
from nfjobs.runner import CellSpec, git_provenance
from nfjobs.sweep import Cell


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
    from nfjobs.slurm import LIVE_STATES, slurm_states

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


def specs(cells: Sequence[Cell], runs_root: Path, code_hash: str = "") -> list[CellSpec]:
    """What each worker needs, with this launch's provenance (one launch id: a requeued pack knows what it did)."""
    from nfjobs.kinds import load_kind

    launch_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    prov = {**git_provenance(), "run.code_hash": code_hash, "run.launch_id": launch_id}
    in_launch = {c.key for c in cells}
    return [CellSpec(c.kind, c.config, c.key, c.sweep, c.group, str(runs_root), prov,
                     deps=tuple(d for d in c.deps if d in in_launch),
                     checkpointable=bool(getattr(load_kind(c.kind), "CHECKPOINTABLE", False)))
            for c in cells]


def forget(cell: Cell, runs_root: Path) -> None:
    """--force: delete everything the cell produced (its run directory: result, checkpoints, shards, models;
    and the shared files it recorded with `ctx.record_output`, inside the runs root only), so it reruns whole."""
    run_dir = run_dir_for(runs_root, cell.key)
    index = run_dir / OUTPUTS_FILE
    root = Path(runs_root).resolve()
    try:
        outputs = [Path(p).resolve() for p in json.loads(index.read_text())] if index.exists() else []
    except (OSError, ValueError, TypeError):
        outputs = []
    for path in outputs:
        if path.is_relative_to(root) and path != root and path.is_file():
            path.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def record(cells: Sequence[Cell], runs_root: Path, jobs: dict[str, str] | None = None,
           logs: dict[str, dict[str, str]] | None = None) -> None:
    """Add the cells (and their job ids: Slurm `ARRAY_TASK` or `local:<pid>`, and their stdout/stderr paths) to
    each sweep's manifest, so `status`, `logs` and `results.load` find them."""
    by_sweep: dict[str, list[Cell]] = collections.defaultdict(list)
    for c in cells:
        by_sweep[c.sweep].append(c)
    for sweep, group in by_sweep.items():
        manifest = results.read_manifest(runs_root, sweep)
        for c in group:
            manifest["cells"][c.key] = {"kind": c.kind, "group": c.group, "stage": c.stage, "source": c.source}
            if jobs and c.key in jobs:
                manifest["jobs"][c.key] = jobs[c.key]
            if logs and c.key in logs:
                manifest["logs"][c.key] = logs[c.key]
        results.write_manifest(runs_root, manifest)

