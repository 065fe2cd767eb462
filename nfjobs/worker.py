"""Running cells wherever they land (this process, a local subprocess, a Slurm array task).

`CellTask` runs one cell or a pack of cells one after another and is a `submitit.helpers.Checkpointable`: when
Slurm warns of the time limit or preemption, the cell being run is requeued only if its kind can resume
(`CHECKPOINTABLE`); the requeued task skips the cells this launch already finished and resumes the current one
from the checkpoint it saved through `ctx.save_checkpoint`.
"""

import datetime as dt
import json
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from nfjobs import parts
from nfjobs.context import Context, Pruned
from nfjobs.kinds import load_kind
from nfjobs.store import locks, rows, states, study
from nfjobs.store.files import atomic_write_bytes
from nfjobs.store.layout import RunDir

NOT_RESUMABLE = ("Interrupted by the time limit or preemption and not requeued: kind {kind!r} does not resume from "
                 "a checkpoint (or ran out of requeues); launch again to rerun it")


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
    deps: tuple[str, ...] = ()
    """Cells whose artefacts this one reads: it runs only if all of them ended `ok`, else it is `blocked`."""
    checkpointable: bool = False
    """The kind resumes from its checkpoint, so an interrupted run is requeued (else it fails, saying why)."""
    part: int | None = None
    """Which part of a cell split into `parts` tasks this is (None: the whole cell; see `nfjobs.parts`)."""
    trial: study.TrialRef | None = None
    """The search trial this cell runs as (its pruner is asked through `ctx.report`); None outside a search."""

    @property
    def run_dir(self) -> RunDir:
        return RunDir(Path(self.runs_root), self.key)


def runtime_provenance() -> dict[str, Any]:
    """Where and with what the cell ran: host, Slurm ids, restarts, Python, GPU, versions of what it imported."""
    env = os.environ
    info: dict[str, Any] = {
        "run.host": socket.gethostname(),
        "run.slurm_job_id": env.get("SLURM_JOB_ID", ""),
        "run.slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID", ""),
        "run.slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID", ""),
        "run.slurm_restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        "run.python": platform.python_version(),
        "run.gpu": "",
        "run.gpus": 0,
    }
    torch = sys.modules.get("torch")  # report versions of what the job actually used
    if torch is not None:
        info["run.torch"] = torch.__version__
        if torch.cuda.is_available():
            info["run.gpu"] = torch.cuda.get_device_name()
            info["run.gpus"] = torch.cuda.device_count()  # what the job was given: on Slurm, what it asked for
    for name in ("numpy", "polars", "submitit", "sklearn", "mambapy", "mamba_ssm"):
        mod = sys.modules.get(name)
        if mod is not None:
            info[f"run.{name}"] = getattr(mod, "__version__", "")
    return info


def _metric_rows_repr(found: list[dict[str, Any]], limit: int = 2000) -> str:
    text = repr(found)
    return text if len(text) <= limit else text[:limit] + " ..."


def _write_config(spec: CellSpec) -> None:
    """`<run dir>/config.json`: what this cell runs, readable while it runs (and if it never finishes)."""
    doc = {"kind": spec.kind, "key": spec.key, "sweep": spec.sweep, "group": spec.group, "deps": list(spec.deps),
           "config": rows.config_columns(spec.config), "provenance": spec.provenance}
    atomic_write_bytes(spec.run_dir.config, json.dumps(doc, indent=1, default=str).encode())


def run_cell(spec: CellSpec) -> list[dict[str, Any]]:
    """Run the cell and write its result file: status `ok`; `blocked` (not run) when a cell it reads did not end
    `ok`; or `failed` with the traceback, then re-raise. A cell (or part) another live process is running is
    left to it: nothing is run or written, and [] is returned."""
    spec.run_dir.ensure()
    claim = locks.claim(spec.run_dir, spec.part, parts.n_parts(spec.config))
    if claim is None:
        print(f"[{spec.kind} {spec.key}] is being run by another process; not run again", file=sys.stderr, flush=True)
        return []
    try:
        return _run_claimed(spec)
    finally:
        claim.close()


def _run_claimed(spec: CellSpec) -> list[dict[str, Any]]:
    ctx = Context(key=spec.key, kind=spec.kind, runs_root=Path(spec.runs_root), part=spec.part,
                  parts=parts.n_parts(spec.config),
                  pruning=study.pruning_hook(spec.trial) if spec.trial is not None else None)
    start = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    _write_config(spec)
    blocker = rows.upstream_blocker(spec.runs_root, spec.deps)
    failure: BaseException | None = None
    held = None  # the parts lock, held by the part that finalises until the cell's result is written
    if blocker is not None:
        metric_rows, status, error = [{}], states.BLOCKED, f"upstream {blocker[0]} {blocker[1]}"
        ctx.log(error)
    else:
        try:
            module = load_kind(spec.kind)
            metric_rows = module.run(spec.config, ctx) or [{}]
            if spec.part is not None:
                held, metric_rows = parts.finish(module, spec.config, ctx, metric_rows)
                if held is None:
                    return []  # another part writes the result
            status, error = states.OK, ""
        except Pruned as err:  # the search's decision, not a failure: the checkpoint stays for a later look
            metric_rows, status, error = [{}], states.PRUNED, f"pruned by the search: {err}"
        except BaseException as err:  # noqa: BLE001 - record, then re-raise (KeyboardInterrupt included)
            metric_rows, status, error = [{}], states.FAILED, "".join(traceback.format_exception(err))
            if type(err).__name__ == "UncompletedJobError":  # submitit: interrupted and not requeued
                error += "\n" + NOT_RESUMABLE.format(kind=spec.kind)
            failure = err
        finally:
            ctx.close()
    meta = {**spec.provenance, **runtime_provenance(),
            "run.resumed": ctx.resumed_from is not None, "run.resumed_from": ctx.resumed_from or "",
            "run.start": start, "run.end": dt.datetime.now(dt.timezone.utc), "run.seconds": time.monotonic() - t0}
    fixed = rows.build_rows(spec, states.OK, config=spec.config, meta=meta)[0]
    clash = sorted({k for m in metric_rows for k in m if k in ("status", "error") or (k in fixed and m[k] != fixed[k])})
    if clash and failure is None:  # a job bug; keep the metrics visible rather than lose the run
        error = (f"job {spec.kind!r} returned metrics whose names clash with result columns {clash} "
                 f"(rename them); its rows were: {_metric_rows_repr(metric_rows)}")
        metric_rows, status, failure = [{}], states.FAILED, ValueError(error)
    if isinstance(failure, (KeyboardInterrupt, SystemExit)):
        raise failure  # interrupted, not failed: no result, so a relaunch (or the requeue) runs it again
    result = rows.build_rows(spec, status, error, config=spec.config, meta=meta, metrics=metric_rows)
    try:
        rows.write_rows(spec.run_dir.result, result)
    finally:
        if held is not None:
            held.close()
    if failure is not None:
        raise failure
    return result


def finished_in_this_launch(spec: CellSpec) -> bool:
    """The cell already has a result written by this launch (an earlier attempt of a requeued packed task)."""
    launch = spec.provenance.get("run.launch_id")
    return bool(launch) and rows.launch_of(spec.runs_root, spec.key) == launch


class CellTask(Checkpointable):
    """The callable submitit pickles: runs its cells one after another (one, or a pack of small ones sharing
    one interpreter and one torch import), each writing its own result. On timeout or preemption it is requeued
    with the same cells; the new attempt skips those this launch finished."""

    def __call__(self, specs: list[CellSpec]) -> list[str]:
        failed = []
        for spec in specs:
            if finished_in_this_launch(spec):
                continue
            try:
                run_cell(spec)
            except Exception:
                if len(specs) == 1:
                    raise
                print(f"[{spec.kind} {spec.key}] failed:", file=sys.stderr, flush=True)
                traceback.print_exc()  # the pack's log keeps every cell's traceback
                failed.append(spec.key)  # recorded in its result; the pack goes on with the next cell
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(specs)} packed cells failed: {', '.join(failed)}")
        return [rows.status(s.runs_root, s.key) or "" for s in specs]

    def checkpoint(self, specs: list[CellSpec]) -> Any:
        """Requeue when the cell being run can resume, or when cells of the pack are still to run; a cell that
        cannot resume gets a failed row saying so instead of silently starting again from scratch."""
        remaining = [s for s in specs if not finished_in_this_launch(s)]
        if remaining and not remaining[0].checkpointable:
            if len(remaining) == 1:
                return None  # submitit raises UncompletedJobError in the cell; run_cell records why
            spec = remaining[0]
            meta = {**spec.provenance, **runtime_provenance(), "run.resumed": False, "run.resumed_from": ""}
            rows.write_rows(spec.run_dir.result, rows.build_rows(
                spec, states.FAILED, NOT_RESUMABLE.format(kind=spec.kind), config=spec.config, meta=meta))
        return super().checkpoint(specs)
