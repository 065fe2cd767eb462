"""Acting on launched cells: finding and following their logs, cancelling them.

Cell states come from `results.cell_states` (result files + the scheduler); this module only acts on them.
"""

import datetime as dt
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, TextIO

import polars as pl

from nfjobs import results
from nfjobs.backends import cancel_jobs
from nfjobs.errors import UserError, one_line
from nfjobs.store import manifest, rows, states


class NotFound(UserError, LookupError):
    pass


def find_cell(key: str, runs_root: str | Path, sweep: str | None = None) -> tuple[str, str]:
    """(sweep name, full key) of the launched cell whose key is `key` or starts with it (unique prefix). Without
    `sweep`, every sweep under the runs root is searched; a damaged manifest there is skipped (named only when
    no cell matches), so one damaged sweep never stops a command about another."""
    names = [results.sweep_name(sweep)] if sweep else manifest.names(runs_root)
    hits, damaged = set(), []
    for name in names:
        try:
            cells = manifest.read(runs_root, name)["cells"]
        except manifest.ManifestError:
            if sweep:
                raise
            damaged.append(name)
            continue
        hits |= {(name, k) for k in cells if k.startswith(key)}
    exact = {(n, k) for n, k in hits if k == key}
    hits = exact or hits
    if not hits:
        where = f"sweep {names[0]!r}" if sweep else f"any sweep under {runs_root}"
        skipped = f" (skipped damaged manifests of: {', '.join(damaged[:5])})" if damaged else ""
        raise NotFound(f"no cell {one_line(repr(key))} in {where}{skipped}")
    if len({k for _, k in hits}) > 1:
        raise NotFound(f"{one_line(repr(key))} matches several cells: {', '.join(sorted({k for _, k in hits})[:5])}")
    return min(hits)


LOG_NAME = re.compile(r"[A-Za-z0-9_.:-]+_log\.(out|err)")
"""A log file as submitit names it (`<job>_<task>_log.out` / `.err`)."""


def log_files(key: str, runs_root: str | Path, sweep: str | None = None, log_root: str | Path = "logs") -> list[Path]:
    """The cell's stdout and stderr files (from the manifest, else where submitit puts them). A path the manifest
    names that is not a log file the launcher wrote (another name, a link) is refused in one line, never read."""
    name, key = find_cell(key, runs_root, sweep)
    found = manifest.read(runs_root, name)
    paths = found["logs"].get(key) or results.default_log_paths(found["jobs"].get(key, ""), name, log_root)
    files = [Path(paths[s]) for s in ("stdout", "stderr") if s in paths]
    for path in files:
        if not LOG_NAME.fullmatch(path.name) or path.is_symlink():
            raise NotFound(f"{manifest.RunsRoot(runs_root).manifest(name)}: logs.{key}: "
                           f"{one_line(str(path))[:200]} is not a log file the launcher wrote; not read")
    return files


def _read(path: Path, offset: int = 0) -> bytes | None:
    """The file's bytes from `offset`, never through a link (None if it is missing or a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        return f.read()


def print_logs(files: list[Path], out: TextIO | None = None) -> dict[Path, int]:
    """Each file's text under a header line; returns how far each was read."""
    out = out or sys.stdout
    offsets = {}
    for path in files:
        data = _read(path)
        text = data.decode(errors="replace") if data else ""
        print(f"==> {path} <==" + ("" if data is not None else " (not written yet)"), file=out)
        if text:
            print(text, end="" if text.endswith("\n") else "\n", file=out)
        offsets[path] = len(data or b"")
    return offsets


def follow(files: list[Path], offsets: dict[Path, int], still_live, poll_s: float = 1.0,
           out: TextIO | None = None) -> None:
    """Print what is appended to `files` until `still_live()` is false (then print the rest and return)."""
    out = out or sys.stdout
    last = None
    while True:
        live = still_live()
        for path in files:
            chunk = _read(path, offsets.get(path, 0))
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
    `cancelled` row, so no cell ends with zero results. Returns the rows acted on, with `ended`: `cancelled`, or
    `ok` for a cell that finished with an `ok` result before its job could be stopped (it was not cancelled)."""
    keys = set(keys)
    todo = found.filter(pl.col("state").is_in(states.LIVE) & (pl.col("job_id") != ""))
    if keys:
        todo = todo.filter(pl.col("key").is_in(list(keys)))
    if failed_only:
        todo = todo.filter(pl.Series([rows.status(runs_root, k) in (states.FAILED, states.BLOCKED)
                                      for k in todo["key"]], dtype=pl.Boolean))
    cancel_jobs(todo["job_id"].to_list(), grace_s)
    when = dt.datetime.now(dt.timezone.utc)
    ended = []
    for row in todo.iter_rows(named=True):
        now = rows.outcome(runs_root, row["key"])  # read after the kill wait: a cell may have finished meanwhile
        if now is None:
            cell = rows.CellId(sweep, row["key"], row["kind"], row["group"])
            rows.write_result(runs_root, row["key"], rows.build_rows(
                cell, states.CANCELLED, f"cancelled by `launch.py cancel` (job {row['job_id']})", meta={"run.end": when}))
        ended.append(states.OK if now is not None and now[0] == states.OK else states.CANCELLED)
    return todo.with_columns(pl.Series("ended", ended, dtype=pl.String))
