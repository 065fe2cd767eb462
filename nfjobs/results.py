"""Result files: one parquet per cell, written atomically; loading them as one polars LazyFrame; reports.

Columns of a result file: `sweep`, `key`, `kind`, `status` (`ok` | `failed` | `blocked` | `cancelled`), `error`, every config field as a
dotted column (`optim.lr`), the job's metric columns, and provenance under `run.` (`run.git_commit`,
`run.host`, `run.slurm_job_id`, `run.gpu`, `run.start`, `run.end`, ...).
"""

import io
import json
import os
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
    if "status" not in df.columns:
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


# ---------------------------------------------------------------------------------------------- cell states
CELL_STATES = ("ok", "failed", "blocked", "cancelled", "running", "pending", "requeued", "not run")
"""Every state a cell can be in, as `cell_states` and `launch.py status` report it."""
_SCHEDULER_STATES = {"PENDING": "pending", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued",
                     "REQUEUE_FED": "requeued", "RUNNING": "running", "CONFIGURING": "running",
                     "COMPLETING": "running", "RESIZING": "running", "SUSPENDED": "running", "STOPPED": "running"}


def sweep_name(target: str | Path) -> str:
    """The sweep a target names: a sweep .toml (its [sweep] name, else its stem) or a sweep name."""
    path = Path(target)
    if path.suffix != ".toml":
        return str(target)
    if path.exists():
        import tomllib

        try:
            return tomllib.loads(path.read_text()).get("sweep", {}).get("name", path.stem)
        except (tomllib.TOMLDecodeError, OSError, AttributeError):
            pass
    return path.stem


def pid_alive(pid: int) -> bool:
    """A live process with this pid that is a Python process (a reused pid of another program is not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal check


def scheduler_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Scheduler state of each job id: Slurm's (`RUNNING`, `CANCELLED`, ...; "" if Slurm no longer knows it) for
    `123` / `123_4`, and `RUNNING` or `ENDED` for a local process `local:<pid>`."""
    from nfjobs.slurm import slurm_states

    ids = [j for j in job_ids if j]
    states = {j: ("RUNNING" if j[6:].isdigit() and pid_alive(int(j[6:])) else "ENDED")
              for j in ids if j.startswith("local:")}
    states.update(slurm_states([j for j in ids if not j.startswith("local:")]))
    return states


def default_log_paths(job_id: str, sweep: str, log_root: str | Path = "logs") -> dict[str, str]:
    """Where submitit writes a job's stdout / stderr when the manifest does not say (older manifests)."""
    if not job_id:
        return {}
    jid = job_id.removeprefix("local:")
    folder = Path(log_root) / sweep / jid
    return {"stdout": str(folder / f"{jid}_0_log.out"), "stderr": str(folder / f"{jid}_0_log.err")}


def cell_states(target: str | Path, runs_root: str | Path = "runs", log_root: str | Path = "logs") -> pl.DataFrame:
    """One row per cell of a launched sweep (name or .toml): `key`, `group`, `kind`, `state` (one of
    CELL_STATES), `error` (last error line), `job_id`, `log` (stderr path), from the result files (the truth for
    ended cells) and the scheduler (for the rest). Raises FileNotFoundError for a sweep never launched here."""
    name = sweep_name(target)
    if not manifest_path(runs_root, name).exists():
        raise FileNotFoundError(f"no launched sweep named {name!r} under {runs_root} "
                                f"(looked for {manifest_path(runs_root, name)})")
    manifest = read_manifest(runs_root, name)
    jobs: dict[str, str] = manifest.get("jobs", {})
    logs: dict[str, dict[str, str]] = manifest.get("logs", {})
    live = scheduler_states(jobs.values())
    rows = []
    for key, info in manifest["cells"].items():
        job = jobs.get(key, "")
        sched = live.get(job, "")
        outcome = cell_outcome(runs_root, key)
        if sched in _SCHEDULER_STATES and (outcome is None or outcome[0] != "ok"):
            state, error = _SCHEDULER_STATES[sched], outcome[1] if outcome else ""  # live again: a requeued retry
        elif outcome is not None:
            state, error = outcome
        elif sched == "CANCELLED" or sched.startswith("CANCELLED"):
            state, error = "cancelled", f"job {job} was cancelled before it wrote a result"
        elif job and (sched or job.startswith("local:")):
            state, error = "failed", f"job {job} ended ({sched or 'ENDED'}) without writing a result; see its log"
        else:
            state, error = "not run", ""
        log = logs.get(key) or default_log_paths(job, name, log_root)
        rows.append({"key": key, "group": info.get("group", ""), "kind": info.get("kind", ""), "state": state,
                     "error": error, "job_id": job, "log": log.get("stderr", "")})
    schema = {c: pl.String for c in ("key", "group", "kind", "state", "error", "job_id", "log")}
    return pl.DataFrame(rows, schema=schema)


# ---------------------------------------------------------------------------------------------- loading
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
    """Percentile bootstrap confidence interval of the mean; (nan, nan) from fewer than two values (one value
    says nothing about spread, so it gets no interval)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def report(frame: pl.LazyFrame | pl.DataFrame, by: Iterable[str], metric: str, *, level: float = 0.95,
           only_ok: bool = True) -> pl.DataFrame:
    """Mean, std, count and a bootstrap CI of `metric` per group of the `by` columns (std and CI null where a
    group has fewer than two values). `exclusions` says which rows this leaves out and why."""
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
        pl.Series(f"ci{pct}_low", [c[0] for c in cis]).fill_nan(None),
        pl.Series(f"ci{pct}_high", [c[1] for c in cis]).fill_nan(None),
    )


def exclusions(frame: pl.LazyFrame | pl.DataFrame, metric: str) -> dict[str, int]:
    """Cells (by `key`, else rows) that `report` leaves out, by reason: their status (`failed`, `blocked`,
    `cancelled`) or `missing <metric>` for finished cells without that metric."""
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    ident = "key" if "key" in df.columns else None
    status = pl.col("status") if "status" in df.columns else pl.lit("ok")
    reason = (pl.when(status != "ok").then(status)
              .when(pl.col(metric).is_null()).then(pl.lit(f"missing {metric}")).otherwise(None)).alias("reason")
    out = df.with_columns(reason).filter(pl.col("reason").is_not_null())
    if ident:  # a cell with some rows kept (e.g. a train split without the metric) is not excluded
        kept = set(df.filter((status == "ok") & pl.col(metric).is_not_null())[ident].to_list())
        out = out.filter(~pl.col(ident).is_in(list(kept))).unique([ident, "reason"])
    counts = out.group_by("reason").len().sort("reason")
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))


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
