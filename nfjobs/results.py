"""Reading what sweeps produced: result rows as one polars LazyFrame, each cell's state, its metrics records.

    from nfjobs import results
    df = results.load("configs/sweeps/x.toml").collect()      # or a sweep name; runs_root="runs" by default
    results.cell_states("x")                                   # key, group, kind, state, error, job_id, log
    results.load_metrics("runs", key)                          # a cell's metrics.jsonl

Columns are explained in docs/columns.md; the files themselves in docs/architecture.md ("The runs root").
"""

import json
import sys
import tomllib
from pathlib import Path

import polars as pl

from nfjobs.backends import LIVE_JOB_STATES, job_states, local
from nfjobs.errors import UserError, one_line
from nfjobs.metrics import RECORD_FIELDS
from nfjobs.store import manifest, rows, states
from nfjobs.store.layout import RESULT, RunsRoot, is_safe_name, run_dir
from nfjobs.store.states import STATES as CELL_STATES  # noqa: F401  (the public name)


class NoSuchSweep(UserError, FileNotFoundError):
    """A sweep that was never launched under this runs root."""


def sweep_name(target: str | Path) -> str:
    """The sweep a target names: a sweep .toml (its [sweep] name, else its stem) or a sweep name; UserError
    (one line) for a name that could not name a sweep (a path separator, `..`, a control character)."""
    path = Path(target)
    name = str(target)
    if path.suffix == ".toml":
        name = path.stem
        if path.is_file():
            try:
                found = tomllib.loads(path.read_text()).get("sweep", {}).get("name", path.stem)
                name = found if isinstance(found, str) else name
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError, AttributeError, RecursionError):
                pass
    if not is_safe_name(name):
        raise UserError(f"--sweep {one_line(str(target))}: {one_line(repr(name))} is not a sweep name (letters, "
                        "digits, '_', '-' and '.', not starting with '-' or '.', at most 100 characters)")
    return name


def _require(runs_root: str | Path, name: str) -> None:
    if not manifest.exists(runs_root, name):
        raise NoSuchSweep(f"no launched sweep named {name!r} under {runs_root} "
                          f"(looked for {RunsRoot(runs_root).manifest(name)})")


def default_log_paths(job_id: str, sweep: str, log_root: str | Path = "logs") -> dict[str, str]:
    """Where submitit writes a job's stdout / stderr when the manifest does not say (older manifests)."""
    if not job_id:
        return {}
    jid = local.log_folder(job_id) if local.is_local(job_id) else job_id
    folder = Path(log_root) / sweep / jid
    return {"stdout": str(folder / f"{jid}_0_log.out"), "stderr": str(folder / f"{jid}_0_log.err")}


def cell_states(target: str | Path, runs_root: str | Path = "runs", log_root: str | Path = "logs") -> pl.DataFrame:
    """One row per cell of a launched sweep (name or .toml): `key`, `group`, `kind`, `state` (one of
    CELL_STATES), `error` (last error line), `job_id`, `log` (stderr path), from the result files (the truth for
    ended cells) and the scheduler (for the rest). NoSuchSweep for a sweep never launched here."""
    name = sweep_name(target)
    _require(runs_root, name)
    found = manifest.read(runs_root, name)
    jobs: dict[str, str] = found["jobs"]
    live = job_states(jobs.values())
    out = []
    for key, info in found["cells"].items():
        job = jobs.get(key, "")
        sched = live.get(job, "unknown")
        ended = rows.outcome(runs_root, key)
        if sched in LIVE_JOB_STATES and (ended is None or ended[0] != states.OK):
            state, error = sched, ended[1] if ended else ""  # live again: a requeued retry
        elif ended is not None:
            state, error = ended
        elif sched == "cancelled":
            state, error = states.CANCELLED, f"job {job} was cancelled before it wrote a result"
        elif sched == "ended":
            state, error = states.FAILED, f"job {job} ended without writing a result; see its log"
        else:
            state, error = states.NOT_RUN, ""
        log = found["logs"].get(key) or default_log_paths(job, name, log_root)
        out.append({"key": key, "group": info.get("group", ""), "kind": info.get("kind", ""), "state": state,
                    "error": error, "job_id": job, "log": log.get("stderr", "")})
    schema = {c: pl.String for c in ("key", "group", "kind", "state", "error", "job_id", "log")}
    return pl.DataFrame(out, schema=schema)


def result_files(target: str | Path, runs_root: str | Path = "runs") -> list[Path]:
    """Result files of a sweep (its name, or a sweep .toml), or of every run under a folder."""
    target_path = Path(target)
    if target_path.is_dir():
        return sorted(target_path.rglob(RESULT))
    name = sweep_name(target)
    _require(runs_root, name)
    keys = manifest.read(runs_root, name)["cells"]
    return [p for p in (run_dir(runs_root, k).result for k in keys) if p.exists()]


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


def load_metrics(runs_root: Path | str, key: str, phase: str | None = None) -> pl.DataFrame:
    """The metrics records of a cell's `metrics.jsonl` (see `nfjobs.metrics`): columns `step`, `wall_s`, `time`,
    `phase`, `attempt`, then one per metric name (null where a record lacks it); only `phase` when given.
    Empty (no columns) when the cell has no metrics file. Torn or foreign lines are skipped."""
    path = run_dir(runs_root, key).metrics
    out = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict) or "step" not in rec:
                continue
            if phase is None or rec.get("phase") == phase:
                out.append({**{k: rec.get(k) for k in RECORD_FIELDS}, **rec["metrics"]})
    if not out:
        return pl.DataFrame()
    return pl.DataFrame(out, infer_schema_length=None, strict=False)
