"""Cells split into parts: `parts = N` in a job's config runs the cell as N tasks (same key, same run directory),
task `i` doing the i-th share of the work (e.g. a disjoint range of cache shards), resumable on its own.

Each task that ends writes a marker (`<run_dir>/parts/<i>-of-<N>.json`, holding its rows). Then, under an
exclusive lock on the run directory, the task that finds every marker present and no `ok` result calls the job
module's `finalise(cfg, ctx, part_rows) -> rows` and writes the cell's one result before letting go of the lock,
so a cell gets exactly one result however its parts interleave. A failed part writes the cell's `failed` row and
no marker, so no other part can finalise; a relaunch runs all parts again and those already done end at once.
`parts` is a runtime field (it does not change what is computed, so not the cell key).
"""

import dataclasses
import fcntl
import json
import shutil
from pathlib import Path
from typing import Any

from nfjobs import results
from nfjobs.context import atomic_write_bytes

PARTS_DIR = "parts"


def n_parts(config: Any) -> int:
    """How many tasks the cell runs as (1 for kinds without a `parts` field)."""
    return max(1, int(getattr(config, "parts", 1) or 1))


def task_specs(spec: Any) -> list[Any]:
    """The tasks of one cell's spec: the spec itself, or one copy per part (`part = 0 .. N-1`)."""
    n = n_parts(spec.config)
    return [spec] if n == 1 else [dataclasses.replace(spec, part=i) for i in range(n)]


def marker(run_dir: Path, part: int, parts: int) -> Path:
    return Path(run_dir) / PARTS_DIR / f"{part}-of-{parts}.json"


def finish(module: Any, config: Any, ctx: Any, rows: list[dict[str, Any]]):
    """Record this part as done; if it is the last, return (held lock, the cell's rows from `finalise`), else
    (None, None). The caller writes the rows, then closes the lock."""
    text = json.dumps(rows, default=str, sort_keys=True)
    atomic_write_bytes(marker(ctx.run_dir, ctx.part, ctx.parts), text.encode())
    lock = open(Path(ctx.run_dir) / PARTS_DIR / ".lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when the process dies
    try:
        paths = [marker(ctx.run_dir, i, ctx.parts) for i in range(ctx.parts)]
        if not all(p.exists() for p in paths) or results.cell_status(ctx.runs_root, ctx.key) == "ok":
            lock.close()
            return None, None
        return lock, module.finalise(config, ctx, [json.loads(p.read_text()) for p in paths])
    except BaseException:
        lock.close()
        raise


def forget(run_dir: Path) -> None:
    """--force: drop the part markers, so the parts' work is checked and finalised again."""
    shutil.rmtree(Path(run_dir) / PARTS_DIR, ignore_errors=True)


@dataclasses.dataclass
class PartJobs:
    """The submitit jobs of one cell's parts, seen as one job (done when all are; the first bad state)."""

    jobs: list[Any]

    @property
    def job_id(self) -> str:
        """The last part's id: what the manifest records, so `status` and a relaunch see the cell as live while
        it is. A relaunch while an earlier part still runs would run that part twice; both write the same shards
        atomically and the lock still gives one result."""
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
