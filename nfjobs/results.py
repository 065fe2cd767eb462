"""Result files: one parquet per cell, written atomically; loading them as one polars LazyFrame; reports.

Columns of a result file: `sweep`, `key`, `kind`, `status` (`ok` | `failed` | `blocked`), `error`, every config field as a
dotted column (`optim.lr`), the job's metric columns, and provenance under `run.` (`run.git_commit`,
`run.host`, `run.slurm_job_id`, `run.gpu`, `run.start`, `run.end`, ...).
"""

import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import polars as pl

from nfjobs.context import atomic_write_bytes, run_dir_for

RESULT_FILE = "result.parquet"
MANIFEST_DIR = "_sweeps"


def result_path(runs_root: Path | str, key: str) -> Path:
    return run_dir_for(runs_root, key) / RESULT_FILE


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to `path` atomically (temp file + rename): readers never see a partial file."""
    df = pl.DataFrame(rows, infer_schema_length=None, strict=False)
    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


def cell_status(runs_root: Path | str, key: str) -> str | None:
    """`ok` / `failed` / `blocked` from the cell's result file, or None when it has none (or it is unreadable)."""
    outcome = cell_outcome(runs_root, key)
    return outcome[0] if outcome else None


def cell_outcome(runs_root: Path | str, key: str) -> tuple[str, str] | None:
    """(status, last line of its error) from the cell's result file: `("ok", "")`, `("failed", "RuntimeError: x")`,
    `("blocked", "upstream KEY failed")`; None when the cell has no (readable) result."""
    path = result_path(runs_root, key)
    if not path.exists():
        return None
    try:
        schema = pl.read_parquet_schema(path)
        df = pl.read_parquet(path, columns=[c for c in ("status", "error") if c in schema])
    except Exception:
        return None
    bad = df.filter(pl.col("status") != "ok")
    if bad.is_empty():
        return "ok", ""
    error = bad["error"][0] if "error" in bad.columns else ""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return bad["status"][0], lines[-1].strip() if lines else ""


def describe(outcome: tuple[str, str] | None) -> str:
    """One cell's outcome as people read it: `ok`, `failed: RuntimeError: x`, `blocked: upstream K failed`."""
    if outcome is None:
        return "no result"
    status, error = outcome
    return f"{status}: {error}" if error else status


def launch_of(runs_root: Path | str, key: str) -> str | None:
    """The `run.launch_id` of the cell's result (which launch wrote it), or None without a result."""
    try:
        return pl.read_parquet(result_path(runs_root, key), columns=["run.launch_id"])["run.launch_id"][0]
    except Exception:
        return None


def upstream_blocker(runs_root: Path | str, deps: Iterable[str]) -> tuple[str, str] | None:
    """The one rule for `blocked`: the first cell in `deps` without an `ok` result, as (key, why), or None when
    every upstream cell finished ok. Local and Slurm runs both ask this when a cell's inputs have ended."""
    for key in deps:
        status = cell_status(runs_root, key)
        if status != "ok":
            return key, status or "has no result (cancelled or killed)"
    return None


# ---------------------------------------------------------------------------------------------- manifests
def manifest_path(runs_root: Path | str, sweep: str) -> Path:
    return Path(runs_root) / MANIFEST_DIR / f"{sweep}.json"


def read_manifest(runs_root: Path | str, sweep: str) -> dict[str, Any]:
    path = manifest_path(runs_root, sweep)
    manifest = json.loads(path.read_text()) if path.exists() else {"sweep": sweep, "cells": {}, "jobs": {}}
    manifest.setdefault("logs", {})
    return manifest


def write_manifest(runs_root: Path | str, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write_bytes(manifest_path(runs_root, manifest["sweep"]), data)


# ---------------------------------------------------------------------------------------------- loading
def sweep_name(target: str | Path) -> str:
    """The sweep a target names: a sweep .toml's [sweep] name (else its stem), or the name itself."""
    path = Path(target)
    if path.suffix != ".toml":
        return str(target)
    if path.exists():
        import tomllib

        return tomllib.loads(path.read_text()).get("sweep", {}).get("name", path.stem)
    return path.stem


def result_files(target: str | Path, runs_root: str | Path = "runs") -> list[Path]:
    """Result files of a sweep (its name, or a sweep .toml whose name is its stem / [sweep] name), or of every
    run under a folder."""
    target_path = Path(target)
    if target_path.is_dir():
        return sorted(target_path.rglob(RESULT_FILE))
    name = sweep_name(target)
    manifest = manifest_path(runs_root, name)
    if not manifest.exists():
        raise FileNotFoundError(f"no sweep named {name!r} under {runs_root} (looked for {manifest})")
    keys = json.loads(manifest.read_text())["cells"]
    return [p for p in (result_path(runs_root, k) for k in keys) if p.exists()]


def load(target: str | Path, runs_root: str | Path = "runs", *, warn: bool = True) -> pl.LazyFrame:
    """All result rows of a sweep or a folder as one LazyFrame; unreadable files are skipped and reported."""
    frames, bad = [], []
    for path in result_files(target, runs_root):
        try:
            pl.read_parquet_schema(path)
            frames.append(pl.scan_parquet(path))
        except Exception as err:  # a torn copy, a foreign file: report it, keep the rest
            bad.append(f"{path}: {type(err).__name__}: {err}")
    if bad and warn:
        print(f"nfjobs.results: skipped {len(bad)} unreadable result file(s):\n  " + "\n  ".join(bad), file=sys.stderr)
    if not frames:
        return pl.LazyFrame()
    return pl.concat(frames, how="diagonal_relaxed")


# ---------------------------------------------------------------------------------------------- reports
def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def report(frame: pl.LazyFrame | pl.DataFrame, by: Iterable[str], metric: str, *, level: float = 0.95,
           only_ok: bool = True) -> pl.DataFrame:
    """Mean, std, count and a bootstrap CI of `metric` per group of the `by` columns."""
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    by = list(by)
    missing = [c for c in [*by, metric] if c not in df.columns]
    if missing:
        raise KeyError(f"columns not in the results: {missing}; available: {sorted(df.columns)}")
    if only_ok and "status" in df.columns:
        df = df.filter(pl.col("status") == "ok")
    df = df.filter(pl.col(metric).is_not_null())
    grouped = df.group_by(by, maintain_order=True).agg(
        pl.col(metric).mean().alias("mean"),
        pl.col(metric).std().alias("std"),
        pl.col(metric).count().alias("n"),
        pl.col(metric).alias("_values"),
    ).sort(by)
    cis = [bootstrap_ci(np.asarray(v), level) for v in grouped["_values"].to_list()]
    pct = int(round(level * 100))
    return grouped.drop("_values").with_columns(
        pl.Series(f"ci{pct}_low", [c[0] for c in cis]), pl.Series(f"ci{pct}_high", [c[1] for c in cis])
    )


def to_markdown(df: pl.DataFrame, float_digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (missing values as empty cells)."""
    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.{float_digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{float_digits}f}"
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join([head, rule, *body])


# ---------------------------------------------------------------------------------------------- metrics
def load_metrics(runs_root: Path | str, key: str, phase: str | None = None) -> pl.DataFrame:
    """The metrics records of a cell's `metrics.jsonl` (see `nfjobs.metrics`): columns `step`, `wall_s`, `time`,
    `phase`, `attempt`, then one per metric name (null where a record lacks it); only `phase` when given.
    Empty (no columns) when the cell has no metrics file. Torn or foreign lines are skipped."""
    from nfjobs.metrics import METRICS_FILE, RECORD_FIELDS

    path = run_dir_for(runs_root, key) / METRICS_FILE
    rows = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict) or "step" not in rec:
                continue
            if phase is None or rec.get("phase") == phase:
                rows.append({**{k: rec.get(k) for k in RECORD_FIELDS}, **rec["metrics"]})
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, infer_schema_length=None, strict=False)
