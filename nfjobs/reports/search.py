"""What a search found, from its study (`results.search_trials`): its rounds (for `status`), its best trial and
every trial's metric and drawn values (for `report`), and the page's section with the two search plots."""

import html
from pathlib import Path
from typing import Any, Callable

import polars as pl

from nfjobs import results
from nfjobs.reports import plots
from nfjobs.store import study


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def trials_or_note(target: str | Path, runs_root: str | Path) -> Any:
    """The sweep's search trials (`results.search_trials`); a one-line note instead when its study needs Optuna
    and this environment has none (status and report still show the cells); None without a search."""
    try:
        return results.search_trials(target, runs_root)
    except study.SearchUnavailable:
        return f"search: its study is not shown: reading it needs Optuna, {study.INSTALL}"


def headline(found: Any) -> str:
    """One line: what is optimised and how far the search has got."""
    counts = found.trials["state"].value_counts(sort=True).rows()
    rounds = found.trials["round"].max() if found.trials.height else 0
    return (f"search: {found.direction} {found.metric} over {', '.join(f'{k} ({d})' for k, d in found.space.items())}:"
            f" {found.trials.height} trials in {rounds or 0} round(s): " + ", ".join(f"{n} {s}" for s, n in counts))


def best_line(found: Any) -> str:
    best = found.best()
    if best is None:
        return "best: no trial has completed yet"
    params = ", ".join(f"{k}={_value(best[k])}" for k in found.space)
    return (f"best: trial {best['trial']} (round {best['round']}), {found.metric} = {best['value']:.6g} at {params}; "
            f"cell {best['key']}")


def rounds(found: Any) -> list[str]:
    """Per round: its trials and how they ended (`status`)."""
    lines = []
    for (number,), trials in found.trials.sort("trial").group_by("round", maintain_order=True):
        counts = trials["state"].value_counts(sort=True).rows()
        numbers = trials["trial"].to_list()
        lines.append(f"  round {number}: trials {', '.join(map(str, numbers))}: "
                     + ", ".join(f"{n} {s}" for s, n in counts))
    return lines


def table(found: Any) -> pl.DataFrame:
    """Every trial by number: round, state, metric, best so far, and each searched key's value."""
    trials = found.trials.sort("trial")
    best = pl.col("value").cum_min() if found.direction == "minimize" else pl.col("value").cum_max()
    return trials.with_columns(best.forward_fill().alias("best so far")).select(
        "trial", "round", "state", pl.col("value").alias(found.metric), "best so far", *found.space, "key")


def page_section(name: str, runs_root: Path, out: Path, figure: Callable[..., str],
                 html_table: Callable[[pl.DataFrame], str]) -> str:
    """The HTML page's search section ("" for a sweep without a search): its two plots drawn with `figure` and
    its trials table drawn with `html_table` (the page's own writers)."""
    found = trials_or_note(name, runs_root)
    if found is None or isinstance(found, str):
        return f"<p>{html.escape(found)}</p>" if found else ""
    figures = ""
    if found.best() is not None:
        figures = (figure(out, "search_progress", plots.search_progress, found.trials, found.metric, found.direction,
                          caption="each complete trial's metric and the best so far")
                   + figure(out, "search_values", plots.search_values, found.trials, found.space, found.metric,
                            caption="the metric against each searched key's value; later trials darker"))
    return (f"<h2>Search</h2><p>{html.escape(headline(found))}</p><p>{html.escape(best_line(found))}</p>{figures}"
            + html_table(table(found)))
