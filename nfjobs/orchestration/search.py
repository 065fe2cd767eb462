"""Adaptive search: Optuna chooses the points of a `[search]` sweep's distributions, round after round. Each
round's trials are launched as one batch of ordinary content-keyed cells (one array on Slurm) and told their
final metric from their result rows before the next round is asked for.

The study lives in the runs root (`store.study`), so a killed launcher loses nothing. At the next launch, trials
that ran are told from their rows; a trial that was asked but whose cell has no result (it never started, or was
killed) runs again in the next round as the same trial (same point, same cell key), so the budget counts it
once. A launch after the last trial has ended does nothing.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nfjobs import results, typed
from nfjobs.backends import slurm
from nfjobs.errors import UserError
from nfjobs.identity import flat_config
from nfjobs.orchestration import launching
from nfjobs.store import locks, rows, states, study
from nfjobs.sweep import Cell, Distribution, Search, SweepError, kind_info

KEY = "key"
"""The trial's user attribute naming its cell key."""
ROUND = "round"
"""The trial's user attribute numbering the round it was first launched in (1, 2, ...)."""
ROUNDS = "rounds"
"""The study's user attribute counting the rounds launched, over every launch of the search."""


class MetricMissing(UserError):
    """A finished trial's rows have no column named by `[search] metric`: every other trial would fail alike."""


@dataclass(frozen=True)
class Outcome:
    """What a search launch did: the rounds it launched, the cells they ran and where their logs are."""

    rounds: int
    cells: list[Cell]
    log_dir: Path


def open_study(search: Search, runs_root: Path) -> Any:
    """The sweep's study (created on first use) with the search's sampler and pruner."""
    optuna = study.optuna()
    sampler = (optuna.samplers.TPESampler(seed=search.seed) if search.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=search.seed))
    found = study.open_study(runs_root, search.sweep, create=dict(direction=search.direction, sampler=sampler,
                                                                  pruner=study.pruner(search.pruner)))
    found.set_user_attr("metric", search.metric)  # what `status` and `report` show beside the trials
    found.set_user_attr("space", {k: d.kind for k, d in search.space.items()})
    return found


def run(search: Search, build: Callable[[list[dict[str, Any]]], list[Cell]], runs_root: Path, log_root: Path,
        flags: dict[str, Any], mode: launching.Mode, *, cells_per_job: int = 1, say=print) -> Outcome:
    """Run the search to its end, holding the sweep's launch lock throughout: tell what earlier launches left
    untold, then launch rounds of `per_round` trials (cells `build(points)` makes) until `trials` have ended."""
    if mode == "slurm":
        slurm.check_available()
    ran: list[Cell] = []
    rounds = 0
    log_dir = Path(log_root) / search.sweep
    with locks.launch_lock(runs_root, [search.sweep]):
        found = open_study(search, runs_root)
        tell_ended(found, search, runs_root)
        while batch := _next_round(found, search):
            rounds += 1
            number = found.user_attrs.get(ROUNDS, 0) + 1
            found.set_user_attr(ROUNDS, number)
            for t in batch:  # Optuna's public API sets user attributes only on the trial it just asked for
                if ROUND not in t.user_attrs:
                    found._storage.set_trial_user_attr(t._trial_id, ROUND, number)
            batch, cells = _buildable(found, batch, build, search, say)
            if not batch:
                continue
            keys = _keys(cells, search)
            trials: dict[str, study.TrialRef] = {}
            for t in batch:
                key = keys[_values(_point(t.params, search.space), search)]
                if KEY not in t.user_attrs:
                    found._storage.set_trial_user_attr(t._trial_id, KEY, key)
                trials.setdefault(key, study.TrialRef(str(runs_root), search.sweep, t._trial_id, search.pruner,
                                                      search.intermediate or search.metric))
            say(f"round {number}: trials {', '.join(str(t.number) for t in batch)} ({len(cells)} cells)")
            done = launching.launch_held(cells, runs_root, log_root, flags, mode, cells_per_job=cells_per_job,
                                         announce=lambda plan: None, trials=trials)
            if done.jobs:
                slurm.wait(done.jobs, runs_root)
            _wait_for_results(done.plan.in_flight, runs_root, say)
            ran += done.plan.to_run
            log_dir = done.log_dir
            tell_ended(found, search, runs_root)
    return Outcome(rounds, ran, log_dir)


def _buildable(found: Any, batch: list[Any], build: Callable[[list[dict[str, Any]]], list[Cell]], search: Search,
               say) -> tuple[list[Any], list[Cell]]:
    """The trials of `batch` whose points make valid cells, and the cells. A point a config refuses (a rule
    between two fields, say) is told FAIL, with the reason said, so the search goes on without it."""
    try:
        return batch, build([_point(t.params, search.space) for t in batch])
    except SweepError as first:
        kept: list[Any] = []
        for trial in batch:
            try:
                build([_point(trial.params, search.space)])
                kept.append(trial)
            except SweepError as err:
                say(f"trial {trial.number}: its point makes no valid cell; told failed: {err.problems[0]}")
                found.tell(trial.number, state=study.optuna().trial.TrialState.FAIL, skip_if_finished=True)
        if not kept:  # more likely the file than the points (edited since the search began): stop, do not burn trials
            raise SweepError(["no trial of this round makes a valid cell; the search stopped (launch again once "
                              "the sweep is fixed)", *first.problems])
        return kept, build([_point(t.params, search.space) for t in kept])


def _wait_for_results(in_flight: dict[str, str], runs_root: Path, say, poll_s: float = 5.0) -> None:
    """Trials an earlier (killed) launch left queued or running: wait for their results before telling them."""
    if in_flight:
        say(f"waiting for {len(in_flight)} trial cell(s) an earlier launch started (jobs "
            f"{', '.join(sorted(set(in_flight.values()))[:5])})")
    while any(rows.status(runs_root, key) is None for key in in_flight):
        time.sleep(poll_s)


def _next_round(found: Any, search: Search) -> list[Any]:
    """The trials to launch now: those asked earlier whose cells have no result yet, then new ones up to
    `per_round`, never past `trials` in all."""
    running = (study.optuna().trial.TrialState.RUNNING,)
    waiting = len(found.get_trials(deepcopy=False, states=running))
    for _ in range(max(0, min(search.per_round - waiting, search.trials - len(found.get_trials(deepcopy=False))))):
        trial = found.ask()
        for key, dist in search.space.items():
            _suggest(trial, key, dist)
    return found.get_trials(deepcopy=False, states=running)[: search.per_round]


def _suggest(trial: Any, key: str, dist: Distribution) -> None:
    lo, hi = dist.corners
    if dist.kind == "uniform":
        trial.suggest_float(key, lo, hi)
    elif dist.kind == "loguniform":
        trial.suggest_float(key, lo, hi, log=True)
    elif dist.kind == "intuniform":
        trial.suggest_int(key, lo, hi)
    else:
        trial.suggest_categorical(key, _choices(dist))


def _choices(dist: Distribution) -> list[Any]:
    """A choice's items as Optuna takes them: as they are if plain (numbers, strings, booleans), else as JSON."""
    plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in dist.values)
    return list(dist.values) if plain else [json.dumps(v) for v in dist.values]


def _point(params: dict[str, Any], space: dict[str, Distribution]) -> dict[str, Any]:
    """A trial's params as config values (a choice given to Optuna as JSON is read back)."""
    out = {}
    for key, dist in space.items():
        value = params[key]
        out[key] = json.loads(value) if dist.kind == "choice" and _choices(dist) != list(dist.values) else value
    return out


def _values(point: dict[str, Any], search: Search) -> tuple:
    leaves = kind_info(search.kind).leaves
    return tuple(json.dumps(typed.coerce(point[k], leaves[k]), default=str) for k in search.space)


def _keys(cells: Sequence[Cell], search: Search) -> dict[tuple, str]:
    """Cell key per point (its values at the searched keys)."""
    out = {}
    for cell in cells:
        flat = flat_config(cell.config)
        out[tuple(json.dumps(flat[k], default=str) for k in search.space)] = cell.key
    return out


def tell_ended(found: Any, search: Search, runs_root: Path) -> None:
    """Tell the study every asked trial whose cell has ended: its final metric (`ok`), pruned, or failed."""
    optuna = study.optuna()
    state = optuna.trial.TrialState
    for trial in found.get_trials(deepcopy=False, states=(state.RUNNING,)):
        key = trial.user_attrs.get(KEY)
        ended = rows.status(runs_root, key) if key else None
        if ended is None:
            continue
        if ended == states.PRUNED:
            found.tell(trial.number, state=state.PRUNED, skip_if_finished=True)
        elif ended == states.OK:
            value = final_value(runs_root, key, search)
            if value is None or not math.isfinite(value):
                found.tell(trial.number, state=state.FAIL, skip_if_finished=True)
            else:
                found.tell(trial.number, value, skip_if_finished=True)
        else:
            found.tell(trial.number, state=state.FAIL, skip_if_finished=True)


def final_value(runs_root: Path, key: str, search: Search) -> float | None:
    """The searched metric of an `ok` cell: from the last of its rows matching `where` that has it."""
    import polars as pl

    df = results.cell_rows(runs_root, key)
    if search.metric not in df.columns:
        config = kind_info(search.kind).leaves
        metrics = [c for c, t in df.schema.items() if t.is_numeric() and c not in config and not c.startswith("run.")]
        raise MetricMissing(f"{search.source}: search.metric: cell {key}'s rows have no column {search.metric!r}; "
                            f"its metrics: {', '.join(metrics[:20])}. The search stopped; fix the metric and launch "
                            "again to go on")
    for column, value in search.where.items():
        if column not in df.columns:
            return None
        text = str(value).lower() if isinstance(value, bool) else str(value)  # polars writes booleans lower-case
        df = df.filter(pl.col(column).cast(pl.String) == text)
    found = df[search.metric].drop_nulls()
    return float(found[-1]) if len(found) else None
