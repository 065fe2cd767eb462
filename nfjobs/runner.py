"""Running one cell wherever it lands (this process, a local subprocess, a Slurm array task).

`CellTask` is a `submitit.helpers.Checkpointable`: when Slurm warns of the time limit or preemption, submitit
requeues the same call, and the job resumes from the checkpoint it saved through `ctx.save_checkpoint`.
"""

import dataclasses
import datetime as dt
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfjobs import typed
from nfjobs.context import Context
from nfjobs.jobs import load_kind
from nfjobs.results import result_path, write_rows

RESERVED_COLUMNS = {"sweep", "key", "kind", "group", "status", "error"}


@dataclass(frozen=True)
class CellSpec:
    """Everything a worker needs to run one cell (picklable, no open handles)."""

    kind: str
    config: Any
    key: str
    sweep: str
    group: str
    runs_root: str
    provenance: dict[str, Any]


def git_provenance(cwd: str | Path = ".") -> dict[str, Any]:
    """Commit and dirty flag of the code being launched (computed once, at launch)."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", None
    return {"run.git_commit": commit, "run.git_dirty": dirty}


def _runtime_provenance() -> dict[str, Any]:
    env = os.environ
    info: dict[str, Any] = {
        "run.host": socket.gethostname(),
        "run.slurm_job_id": env.get("SLURM_JOB_ID", ""),
        "run.slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID", ""),
        "run.slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID", ""),
        "run.slurm_restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        "run.python": platform.python_version(),
        "run.gpu": "",
    }
    torch = sys.modules.get("torch")  # report versions of what the job actually used
    if torch is not None:
        info["run.torch"] = torch.__version__
        if torch.cuda.is_available():
            info["run.gpu"] = torch.cuda.get_device_name()
    for name in ("numpy", "polars", "submitit", "sklearn", "mambapy", "mamba_ssm"):
        mod = sys.modules.get(name)
        if mod is not None:
            info[f"run.{name}"] = getattr(mod, "__version__", "")
    return info


def config_columns(config: Any) -> dict[str, Any]:
    flat = typed.flatten(dataclasses.asdict(config))
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in flat.items()}


def metric_rows_repr(rows: list[dict[str, Any]], limit: int = 2000) -> str:
    text = repr(rows)
    return text if len(text) <= limit else text[:limit] + " ..."


def run_cell(spec: CellSpec) -> list[dict[str, Any]]:
    """Run the cell and write its result file (status `ok`, or `failed` with the traceback, then re-raise)."""
    ctx = Context(key=spec.key, kind=spec.kind, runs_root=Path(spec.runs_root))
    start = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    base = {"sweep": spec.sweep, "key": spec.key, "kind": spec.kind, "group": spec.group}
    cfg_cols = config_columns(spec.config)
    try:
        module = load_kind(spec.kind)
        metric_rows = module.run(spec.config, ctx) or [{}]
        status, error = "ok", ""
        metrics_given = metric_rows
    except BaseException as err:  # noqa: BLE001 - record, then re-raise (KeyboardInterrupt included)
        metric_rows, status, error = [{}], "failed", "".join(traceback.format_exception(err))
        failure = err
    else:
        failure = None
    finally:
        ctx.close()
    timing = {"run.start": start, "run.end": dt.datetime.now(dt.timezone.utc), "run.seconds": time.monotonic() - t0}
    meta = {**spec.provenance, **_runtime_provenance(), **timing}
    fixed = {**base, **cfg_cols, **meta}
    clash = sorted({k for m in metric_rows for k in m if (k in fixed and m[k] != fixed[k]) or k in ("status", "error")})
    if clash and failure is None:  # a job bug; keep the metrics visible in the error rather than lose the run
        status, metric_rows = "failed", [{}]
        error = (f"job {spec.kind!r} returned metrics whose names clash with result columns {clash} "
                 f"(rename them); its rows were: {metric_rows_repr(metrics_given)}")
        failure = ValueError(error)
    rows = [{**fixed, **metrics, "status": status, "error": error} for metrics in metric_rows]
    if isinstance(failure, (KeyboardInterrupt, SystemExit)):
        raise failure  # interrupted, not failed: no result, so a relaunch runs it again
    write_rows(result_path(spec.runs_root, spec.key), rows)
    if failure is not None:
        raise failure
    return rows


try:
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; keep the runner importable without it
    Checkpointable = object  # type: ignore[misc,assignment]


class CellTask(Checkpointable):
    """The callable submitit pickles: runs one cell; requeued (same arguments) on timeout or preemption."""

    def __call__(self, spec: CellSpec) -> str:
        rows = run_cell(spec)
        return rows[0]["status"]
