"""Running cells wherever they land (this process, a local subprocess, a Slurm array task).

`CellTask` runs one cell or a pack of cells one after another and is a `submitit.helpers.Checkpointable`: when
Slurm warns of the time limit or preemption, the cell being run is requeued only if its kind can resume
(`CHECKPOINTABLE`); the requeued task skips the cells this launch already finished and resumes the current one
from the checkpoint it saved through `ctx.save_checkpoint`.
"""

import datetime as dt
import json
import os
import pickle
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from nfjobs import parts, ranks
from nfjobs.context import Context, Pruned
from nfjobs.errors import one_line
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
    world_size: int = 1
    """Ranks the cell runs as (`nodes` x `tasks_per_node`; see `nfjobs.ranks`)."""
    dist_timeout_s: int = 600
    """Seconds a rank waits for the others in set-up and in every collective before the cell fails."""
    trial: study.TrialRef | None = None
    """The search trial this cell runs as (its pruner is asked through `ctx.report`); None outside a search."""

    @property
    def run_dir(self) -> RunDir:
        return RunDir(Path(self.runs_root), self.key)


def runtime_provenance(place: ranks.Placement = ranks.Placement()) -> dict[str, Any]:
    """Where and with what the cell ran: host (and its ranks' hosts), Slurm ids, restarts, Python, GPU, versions
    of what it imported."""
    env = os.environ
    info: dict[str, Any] = {
        "run.host": socket.gethostname(),
        "run.world_size": place.world_size,
        "run.nodes": place.nodes,
        "run.hosts": ",".join(dict.fromkeys(place.hosts or (ranks.host_name(),))),
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
            info["run.gpus"] = torch.cuda.device_count()  # this process's: on Slurm, what it asked for; a rank's: one
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
    left to it: nothing is run or written, and [] is returned. A cell of several ranks runs here as one rank of
    a Slurm job of several tasks, or, elsewhere, as that many processes of this machine started by this one."""
    spec.run_dir.ensure()
    place = ranks.slurm_placement() if spec.world_size > 1 else None
    if place is not None:
        return _run_rank(spec, place, parent_claims=False)
    claim = locks.claim(spec.run_dir, spec.part, parts.n_parts(spec.config))
    if claim is None:
        print(f"[{spec.kind} {spec.key}] is being run by another process; not run again", file=sys.stderr, flush=True)
        return []
    try:
        return _run_ranks_here(spec) if spec.world_size > 1 else _run_claimed(spec, ranks.Placement())
    finally:
        claim.close()


def rank_main() -> None:
    """A rank process started by `_run_ranks_here`: its cell's spec on stdin, its place in the environment."""
    spec = pickle.load(sys.stdin.buffer)
    _run_rank(spec, ranks.env_placement(), parent_claims=True)


RANK_COMMAND = [sys.executable, "-c", "from nfjobs.worker import rank_main; rank_main()"]


def _run_ranks_here(spec: CellSpec) -> list[dict[str, Any]]:
    """The cell's ranks as processes of this machine, this one (holding the claim) their parent. A rank that
    died without writing the cell's result (a signal, the out-of-memory killer) fails the cell from here."""
    n = parts.n_parts(spec.config)
    spec.run_dir.rank_ended(spec.part, n).unlink(missing_ok=True)
    codes, failed = ranks.spawn(RANK_COMMAND, pickle.dumps(spec), spec.world_size)
    if failed is None:
        return []
    if ranks.first_to_end(spec.run_dir.rank_ended(spec.part, n), failed):
        error = (f"rank {failed} of {spec.world_size} ended with {ranks.exit_words(codes[failed])} before it "
                 f"wrote a result (killed? see its lines in the cell's log)")
        meta = {**spec.provenance, **runtime_provenance(ranks.Placement(world_size=spec.world_size)),
                "run.resumed": False, "run.resumed_from": ""}
        rows.write_rows(spec.run_dir.result, rows.build_rows(spec, states.FAILED, error, config=spec.config,
                                                             meta=meta))
    raise RuntimeError(f"cell {spec.key}: {rows.describe(rows.outcome(spec.runs_root, spec.key))}")


def _run_rank(spec: CellSpec, place: ranks.Placement, parent_claims: bool) -> list[dict[str, Any]]:
    """One rank of a cell of several. Rank 0 takes the claim (unless the parent that started the ranks holds
    it) and tells the others whether to run; every rank then runs the cell's kind."""
    claim = None
    if place.is_main and not parent_claims:
        claim = locks.claim(spec.run_dir, spec.part, parts.n_parts(spec.config))
        if claim is not None:  # a new attempt: whoever ends it first writes its result
            spec.run_dir.rank_ended(spec.part, parts.n_parts(spec.config)).unlink(missing_ok=True)
    try:
        return _run_claimed(spec, place, holds_claim=parent_claims or claim is not None)
    finally:
        ranks.leave()
        if claim is not None:
            claim.close()


def _run_claimed(spec: CellSpec, place: ranks.Placement, holds_claim: bool = True) -> list[dict[str, Any]]:
    """Run the cell's kind as this rank and write the cell's result where this rank is the one to write it: the
    only rank, rank 0 when the cell ends well, else the first rank to fail."""
    many = place.world_size > 1
    ctx = Context(key=spec.key, kind=spec.kind, runs_root=Path(spec.runs_root), part=spec.part,
                  parts=parts.n_parts(spec.config), rank=place.rank, world_size=place.world_size,
                  pruning=study.pruning_hook(spec.trial) if spec.trial is not None else None)
    start = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    failure: BaseException | None = None
    held = None  # the parts lock, held by the part that finalises until the cell's result is written
    agreed = False
    try:
        if many:
            joined = ranks.join(place, spec.dist_timeout_s, holds_claim)
            if joined is None:
                ctx.log("is being run by another process; not run again")
                return []
            place, agreed = joined, True
        if place.is_main:
            _write_config(spec)
        blocker = rows.upstream_blocker(spec.runs_root, spec.deps)
        if blocker is not None:
            metric_rows, status, error = [{}], states.BLOCKED, f"upstream {blocker[0]} {blocker[1]}"
            ctx.log(error)
        else:
            module = load_kind(spec.kind)
            if many and not getattr(module, "DISTRIBUTED", False):
                if not place.is_main:
                    return []
                ctx.log(f"kind {spec.kind!r} does not split its work over ranks: rank 0 runs it alone, "
                        f"the other {place.world_size - 1} end now")
            metric_rows = module.run(spec.config, ctx) or [{}]
            if spec.part is not None and place.is_main:
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
        if many:  # the error's last line, which progress lines and `status` show, names the rank
            error += (f"\nrank {place.rank} of {place.world_size} on {ranks.host_name()} failed: "
                      f"{one_line(f'{type(err).__name__}: {err}')}")
        failure = err
    finally:
        ctx.close()
    meta = {**spec.provenance, **runtime_provenance(place),
            "run.resumed": ctx.resumed_from is not None, "run.resumed_from": ctx.resumed_from or "",
            "run.start": start, "run.end": dt.datetime.now(dt.timezone.utc), "run.seconds": time.monotonic() - t0}
    fixed = rows.build_rows(spec, states.OK, config=spec.config, meta=meta)[0]
    clash = sorted({k for m in metric_rows for k in m if k in ("status", "error") or (k in fixed and m[k] != fixed[k])})
    if clash and failure is None:  # a job bug; keep the metrics visible rather than lose the run
        error = (f"job {spec.kind!r} returned metrics whose names clash with result columns {clash} "
                 f"(rename them); its rows were: {_metric_rows_repr(metric_rows)}")
        metric_rows, status, failure = [{}], states.FAILED, ValueError(error)
    # before the ranks agreed, only a rank 0 holding the claim may speak for the cell (another process may run it)
    speaks = agreed or (place.is_main and holds_claim)
    ended = spec.run_dir.rank_ended(spec.part, ctx.parts)
    if isinstance(failure, (KeyboardInterrupt, SystemExit)):
        if many and speaks:  # a requeue or a cancel: the ranks that lose this one then fail quietly, writing nothing
            ranks.first_to_end(ended, place.rank)
        raise failure  # interrupted, not failed: no result, so a relaunch (or the requeue) runs it again
    writes = not many or (speaks and (failure is not None or place.is_main) and ranks.first_to_end(ended, place.rank))
    result = rows.build_rows(spec, status, error, config=spec.config, meta=meta, metrics=metric_rows)
    try:
        if writes:
            rows.write_rows(spec.run_dir.result, result)
    finally:
        if held is not None:
            held.close()
    if failure is not None:
        raise failure
    return result if writes else []


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
