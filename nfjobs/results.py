"""Reading what sweeps produced: result rows as one polars LazyFrame, each cell's state, its metrics records.

    from nfjobs import results
    df = results.load("configs/sweeps/x.toml").collect()      # or a sweep name; runs_root="runs" by default
    results.cell_states("x")                                   # key, group, kind, state, error, job_id, log
    results.load_metrics("runs", key)                          # a cell's metrics.jsonl
    results.axes("x")                                          # per group: the config fields it varied
    results.swept("x")                                         # key, group, kind, each cell's value of every axis
    results.search_trials("x").trials                          # a [search] sweep's trials: round, state, value, ...

Columns are explained in docs/columns.md; the files themselves in docs/architecture.md ("The runs root").
"""

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nfjobs.backends import LIVE_JOB_STATES, job_states, local
from nfjobs.errors import UserError, one_line
from nfjobs.metrics import RECORD_FIELDS
from nfjobs.store import manifest, rows, states, study
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


def cell_rows(runs_root: Path | str, key: str) -> pl.DataFrame:
    """One cell's result rows (empty without a readable result file)."""
    try:
        return pl.read_parquet(run_dir(runs_root, key).result)
    except Exception:  # missing or torn: no rows
        return pl.DataFrame()


@dataclass(frozen=True)
class SearchTrials:
    """A search's study as a table: one row per trial (`trial`, `round`, `state`: Optuna's trial state, lower
    case (`complete`, `pruned`, `fail`, `running`), `value`, `key`: its cell, and the value of every searched key,
    e.g. `optim.lr`), with what it optimises."""

    metric: str
    direction: str
    space: dict[str, str]
    """Searched dotted key -> its distribution's kind (`loguniform`, ...)."""
    trials: pl.DataFrame

    def best(self) -> dict[str, Any] | None:
        """The best complete trial's row, or None before one has completed."""
        done = self.trials.filter(pl.col("state") == "complete")
        if done.is_empty():
            return None
        return done.sort("value", descending=self.direction == "maximize").row(0, named=True)


def search_trials(target: str | Path, runs_root: str | Path = "runs") -> SearchTrials | None:
    """The trials of a launched sweep's search, or None when the sweep has no search (SearchUnavailable, one
    line, when it has one but Optuna is not installed here)."""
    name = sweep_name(target)
    if not RunsRoot(runs_root).study(name).exists():
        return None
    found = study.open_study(runs_root, name)
    space = found.user_attrs.get("space", {})
    out = [{"trial": t.number, "round": t.user_attrs.get("round"), "state": t.state.name.lower(),
            "value": t.value, "key": t.user_attrs.get("key", ""), **{k: t.params.get(k) for k in space}}
           for t in found.get_trials(deepcopy=False)]
    schema = {"trial": pl.Int64, "round": pl.Int64, "state": pl.String, "value": pl.Float64, "key": pl.String}
    return SearchTrials(found.user_attrs.get("metric", ""), found.direction.name.lower(), space,
                        pl.DataFrame(out, schema_overrides=schema, strict=False) if out else pl.DataFrame(schema=schema))


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


@dataclass(frozen=True)
class GroupAxes:
    """What one group of a sweep varied: its `axes` (dotted config fields; a reference as `<field>.<axis>` of the
    cells it reads) and whether it repeats cells over seeds (`seeded`: its rows are pooled over `seed`)."""

    group: str
    kind: str
    axes: tuple[str, ...]
    seeded: bool


def _axes_and_values(target: str | Path, runs_root: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    name = sweep_name(target)
    _require(runs_root, name)
    found = manifest.read(runs_root, name)
    groups = found.get("groups", {})
    if groups and all("values" in info for info in found["cells"].values()):
        return groups, {k: info["values"] for k, info in found["cells"].items()}
    return _axes_from_rows(load(name, runs_root, warn=False).collect(), found["cells"])


def _axes_from_rows(found: pl.DataFrame, cells: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The axes of a manifest that predates them, from the config columns of the result rows (cells without
    rows are left out of the computation and get no values)."""
    from nfjobs.kinds import load_kind

    if found.is_empty() or "key" not in found.columns:
        return {}, {}
    fields: dict[str, list[str]] = {}
    members = []
    for row in found.unique("key", keep="first", maintain_order=True).iter_rows(named=True):
        kind = row.get("kind") or cells.get(row["key"], {}).get("kind", "")
        if kind not in fields:
            try:
                fields[kind] = list(rows.config_columns(load_kind(kind).Config()))
            except Exception:  # noqa: BLE001 - a kind not installed here: no config columns known
                fields[kind] = []
        group = row.get("group") or cells.get(row["key"], {}).get("group", "")
        members.append((row["key"], group, kind, {f: row.get(f) for f in fields[kind] if f in row}))
    return manifest.axes_of(members)


def axes(target: str | Path, runs_root: str | Path = "runs") -> dict[str, GroupAxes]:
    """Per group of a launched sweep: the config fields its cells vary (`GroupAxes`), as the launch recorded
    them; for a manifest from before axes were recorded, computed from the result rows' config columns."""
    groups, _ = _axes_and_values(target, runs_root)
    return {g: GroupAxes(g, str(info.get("kind", "")), tuple(info.get("axes", ())), bool(info.get("seeded")))
            for g, info in groups.items()}


def _text(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def swept(target: str | Path, runs_root: str | Path = "runs") -> pl.DataFrame:
    """One row per cell: `key`, `group`, `kind`, then every axis of every group (null where a cell's group does
    not vary it); list values as JSON text."""
    name = sweep_name(target)
    groups, values = _axes_and_values(target, runs_root)
    cells = manifest.read(runs_root, name)["cells"]
    names = list(dict.fromkeys(a for info in groups.values() for a in info.get("axes", [])))
    out = [{"key": k, "group": info.get("group", ""), "kind": info.get("kind", ""),
            **{a: _text(values.get(k, {}).get(a)) for a in names}} for k, info in cells.items()]
    schema = {"key": pl.String, "group": pl.String, "kind": pl.String}
    if not out:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(out, infer_schema_length=None, strict=False).cast(schema)
