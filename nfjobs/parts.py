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
from typing import Any

from nfjobs.store import rows
from nfjobs.store.files import atomic_write_bytes


def n_parts(config: Any) -> int:
    """How many tasks the cell runs as (1 for kinds without a `parts` field)."""
    return max(1, int(getattr(config, "parts", 1) or 1))


def task_specs(spec: Any) -> list[Any]:
    """The tasks of one cell's spec: the spec itself, or one copy per part (`part = 0 .. N-1`)."""
    n = n_parts(spec.config)
    return [spec] if n == 1 else [dataclasses.replace(spec, part=i) for i in range(n)]


def finish(module: Any, config: Any, ctx: Any, part_rows: list[dict[str, Any]]):
    """Record this part as done; if it is the last, return (held lock, the cell's rows from `finalise`), else
    (None, None). The caller writes the rows, then closes the lock."""
    files = ctx.files
    text = json.dumps(part_rows, default=str, sort_keys=True)
    atomic_write_bytes(files.part_marker(ctx.part, ctx.parts), text.encode())
    lock = open(files.parts_lock, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when the process dies
    try:
        paths = [files.part_marker(i, ctx.parts) for i in range(ctx.parts)]
        if not all(p.exists() for p in paths) or rows.is_ok(ctx.runs_root, ctx.key):
            lock.close()
            return None, None
        return lock, module.finalise(config, ctx, [json.loads(p.read_text()) for p in paths])
    except BaseException:
        lock.close()
        raise
