"""Acting on launched cells: finding and following their logs, cancelling them.

Cell states come from `results.cell_states` (result files + the scheduler); this module only acts on them.
"""

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Iterable, TextIO

import polars as pl

from nfjobs import results
from nfjobs.backends import cancel_jobs
from nfjobs.errors import UserError
from nfjobs.store import manifest, rows, states


class NotFound(UserError, LookupError):
    pass


def find_cell(key: str, runs_root: str | Path, sweep: str | None = None) -> tuple[str, str]:
    """(sweep name, full key) of the launched cell whose key is `key` or starts with it (unique prefix)."""
    names = [results.sweep_name(sweep)] if sweep else manifest.names(runs_root)
    hits = {(name, k) for name in names for k in manifest.read(runs_root, name)["cells"] if k.startswith(key)}
    exact = {(n, k) for n, k in hits if k == key}
    hits = exact or hits
    if not hits:
        where = f"sweep {names[0]!r}" if sweep else f"any sweep under {runs_root}"
        raise NotFound(f"no cell {key!r} in {where}")
    if len({k for _, k in hits}) > 1:
        raise NotFound(f"{key!r} matches several cells: {', '.join(sorted({k for _, k in hits})[:5])}")
    return min(hits)


def log_files(key: str, runs_root: str | Path, sweep: str | None = None, log_root: str | Path = "logs") -> list[Path]:
    """The cell's stdout and stderr files (from the manifest, else where submitit puts them)."""
    name, key = find_cell(key, runs_root, sweep)
    found = manifest.read(runs_root, name)
    paths = found["logs"].get(key) or results.default_log_paths(found["jobs"].get(key, ""), name, log_root)
    return [Path(paths[s]) for s in ("stdout", "stderr") if s in paths]


def print_logs(files: list[Path], out: TextIO | None = None) -> dict[Path, int]:
    """Each file's text under a header line; returns how far each was read."""
    out = out or sys.stdout
    offsets = {}
    for path in files:
        text = path.read_text(errors="replace") if path.exists() else ""
        print(f"==> {path} <==" + ("" if path.exists() else " (not written yet)"), file=out)
        if text:
            print(text, end="" if text.endswith("\n") else "\n", file=out)
        offsets[path] = len(text.encode())
    return offsets


def follow(files: list[Path], offsets: dict[Path, int], still_live, poll_s: float = 1.0,
           out: TextIO | None = None) -> None:
    """Print what is appended to `files` until `still_live()` is false (then print the rest and return)."""
    out = out or sys.stdout
    last = None
    while True:
        live = still_live()
        for path in files:
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
            if chunk:
                if last != path and len(files) > 1:
                    print(f"==> {path} <==", file=out)
                last = path
                offsets[path] = offsets.get(path, 0) + len(chunk)
                out.write(chunk.decode(errors="replace"))
                out.flush()
        if not live:
            return
        time.sleep(poll_s)


def cancel(found: pl.DataFrame, runs_root: str | Path, sweep: str, keys: Iterable[str] = (),
           failed_only: bool = False, grace_s: float = 10.0) -> pl.DataFrame:
    """Cancel the queued / running cells of `found` (`results.cell_states`) (those in `keys`, if any; with `failed_only`, only those
    whose result already says failed or blocked: retries that will not help). Slurm jobs get `scancel`, local
    processes SIGINT (then SIGKILL after `grace_s`). Each cancelled cell left without a result gets a
    `cancelled` row, so no cell ends with zero results. Returns the cancelled rows of `states`."""
    keys = set(keys)
    todo = found.filter(pl.col("state").is_in(states.LIVE) & (pl.col("job_id") != ""))
    if keys:
        todo = todo.filter(pl.col("key").is_in(list(keys)))
    if failed_only:
        todo = todo.filter(pl.Series([rows.status(runs_root, k) in (states.FAILED, states.BLOCKED)
                                      for k in todo["key"]], dtype=pl.Boolean))
    cancel_jobs(todo["job_id"].to_list(), grace_s)
    when = dt.datetime.now(dt.timezone.utc)
    for row in todo.iter_rows(named=True):
        if rows.outcome(runs_root, row["key"]) is None:
            cell = rows.CellId(sweep, row["key"], row["kind"], row["group"])
            rows.write_result(runs_root, row["key"], rows.build_rows(
                cell, states.CANCELLED, f"cancelled by `launch.py cancel` (job {row['job_id']})", meta={"run.end": when}))
    return todo
