"""Result files: one parquet per cell (`<run dir>/result.parquet`), written atomically, built by one row builder
whatever the outcome; reading a cell's outcome back.

Columns: `sweep`, `key`, `kind`, `group`, `status` (an `Outcome`), `error`, every config field as a dotted column
(`optim.lr`), the job's metric columns, and provenance under `run.` (docs/columns.md).
"""

import dataclasses
from dataclasses import dataclass
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from nfjobs import typed
from nfjobs.store import states
from nfjobs.store.files import atomic_write_bytes
from nfjobs.store.layout import CELL_KEY, RunDir, run_dir

RESERVED_COLUMNS = frozenset({"sweep", "key", "kind", "group", "status", "error"})
"""Columns the launcher writes; a job's metrics may not reuse these names."""


@dataclass(frozen=True)
class CellId:
    """What names a cell in its rows."""

    sweep: str
    key: str
    kind: str
    group: str


def config_columns(config: Any) -> dict[str, Any]:
    """A config as result columns: dotted keys, tuples as lists, paths as text."""
    flat = typed.flatten(dataclasses.asdict(config))
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in flat.items()}


def build_rows(cell: Any, status: str, error: str = "", *, config: Any = None, meta: dict[str, Any] | None = None,
               metrics: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The one row builder: a cell (anything with sweep, key, kind, group) ending with `status`, one row per
    metrics dict (one row without metrics), each carrying the config columns and `meta` (provenance)."""
    if status not in states.OUTCOMES:
        raise ValueError(f"status {status!r} is not one of {states.OUTCOMES}")
    fixed = {"sweep": cell.sweep, "key": cell.key, "kind": cell.kind, "group": cell.group,
             **(config_columns(config) if config is not None else {}), **(meta or {})}
    return [{**fixed, **m, "status": status, "error": error} for m in (metrics or [{}])]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to `path` atomically (temp file + rename): readers never see a partial file."""
    df = pl.DataFrame(rows, infer_schema_length=None, strict=False)
    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


def write_result(runs_root: Path | str, key: str, rows: list[dict[str, Any]]) -> None:
    write_rows(run_dir(runs_root, key).result, rows)


def outcome(runs_root: Path | str, key: str) -> tuple[str, str] | None:
    """(status, last line of its error) from the cell's result file: `("ok", "")`, `("failed", "RuntimeError: x")`,
    `("blocked", "upstream KEY failed")`; None when the cell has no (readable) result."""
    path = run_dir(runs_root, key).result
    if not path.exists():
        return None
    try:
        schema = pl.read_parquet_schema(path)
        df = pl.read_parquet(path, columns=[c for c in ("status", "error") if c in schema])
    except Exception:
        return None
    if "status" not in df.columns:
        return None
    bad = df.filter(pl.col("status") != states.OK)
    if bad.is_empty():
        return states.OK, ""
    error = bad["error"][0] if "error" in bad.columns else ""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return bad["status"][0], lines[-1].strip() if lines else ""


def status(runs_root: Path | str, key: str) -> str | None:
    """The cell's outcome (`ok`, `failed`, ...) from its result file, or None without a (readable) one."""
    found = outcome(runs_root, key)
    return found[0] if found else None


def is_ok(runs_root: Path | str, key: str) -> bool:
    return status(runs_root, key) == states.OK


def describe(found: tuple[str, str] | None) -> str:
    """One cell's outcome as people read it: `ok`, `failed: RuntimeError: x`, `blocked: upstream K failed`."""
    if found is None:
        return "no result"
    state, error = found
    return f"{state}: {error}" if error else state


def launch_of(runs_root: Path | str, key: str) -> str | None:
    """The `run.launch_id` of the cell's result (which launch wrote it), or None without a result."""
    try:
        return pl.read_parquet(run_dir(runs_root, key).result, columns=["run.launch_id"])["run.launch_id"][0]
    except Exception:
        return None


def upstream_blocker(runs_root: Path | str, deps: Iterable[str]) -> tuple[str, str] | None:
    """The one rule for `blocked`: the first cell in `deps` without an `ok` result, as (key, why), or None when
    every upstream cell finished ok. Local and Slurm runs both ask this when a cell's inputs have ended."""
    for key in deps:
        found = status(runs_root, key)
        if found != states.OK:
            return key, found or "has no result (cancelled or killed)"
    return None


def resolve_reference(runs_root: Path | str, ref: str) -> tuple[Path | None, str]:
    """The run directory a reference outside the launch names (a cell key, or the path of a run directory under
    `runs_root`) if it holds a finished (`ok`) cell; else None and what was found instead."""
    root = Path(runs_root).resolve()
    if CELL_KEY.fullmatch(ref):
        found = root / ref
    else:
        found = Path(ref).expanduser().resolve()
        if found.parent != root:
            return None, (f"{ref!r} is neither a cell of this launch nor a run directory of the runs root {root} "
                          "(references name a cell key, `@group`, or <runs root>/<cell key>)")
    if not found.is_dir():
        return None, f"{ref!r}: no cell of this launch has that key and {found} does not exist"
    state = status(root, found.name)
    if state != states.OK:
        return None, f"{ref!r}: {found} is not a finished cell (its result: {state or 'none yet'})"
    return found, ""


def forget(runs_root: Path | str, key: str) -> None:
    """`--force`: delete everything the cell produced (its run directory: result, checkpoints, shards, models;
    and the shared files it recorded with `ctx.record_output`, inside the runs root only), so it reruns whole."""
    rd: RunDir = run_dir(runs_root, key)
    root = Path(runs_root).resolve()
    try:
        outputs = [Path(p).resolve() for p in json.loads(rd.outputs.read_text())] if rd.outputs.exists() else []
    except (OSError, ValueError, TypeError):
        outputs = []
    for path in outputs:
        if path.is_relative_to(root) and path != root and path.is_file():
            path.unlink(missing_ok=True)
    shutil.rmtree(rd.path, ignore_errors=True)
