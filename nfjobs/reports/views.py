"""The one results model the seed tables are views of: a sweep's rows with its axes (`results.load`,
`results.swept`, `results.axes`), summarised per value of the axes, pooled over seeds only (`tables.report`).

A view names its label columns (`representation`, `scorer`, ...: result columns a reader knows); the table groups
by them and by every axis of the rows' groups, so no axis is ever averaged over, and shows beside the labels only
the axes the labels do not already tell apart.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from nfjobs import results
from nfjobs.reports import plots, tables


@dataclass(frozen=True)
class Sweep:
    """A launched sweep's result rows, each with its cell's axis values (`tables.with_axes`), and its axes per
    group (`results.GroupAxes`)."""

    name: str
    runs_root: Path
    rows: pl.DataFrame
    axes: dict[str, Any]


def load(target: str | Path, runs_root: str | Path = "runs") -> Sweep:
    """The rows and axes of a launched sweep (its name or .toml); NoSuchSweep for one never launched here."""
    name = results.sweep_name(target)
    rows = tables.with_axes(results.load(name, runs_root, warn=False).collect(), results.swept(name, runs_root))
    return Sweep(name, Path(runs_root), rows, results.axes(name, runs_root))


def summary(rows: pl.DataFrame, axes: dict[str, Any], metric: str, labels: Iterable[str] = (),
            also: Iterable[str] = (), level: float = 0.95) -> pl.DataFrame:
    """One line per value of `labels` and the axes of the rows' groups (pooled over seeds only): the labels, the
    axes they do not tell apart, `metric`'s mean (named `metric`), `std`, `n` (seeds) and its bootstrap interval,
    then the mean of each `also` column the rows have. From each cell's final rows (`tables.final_rows`).
    Empty when no ok row carries `metric`."""
    if metric not in rows.columns:
        return pl.DataFrame()
    final, _ = tables.final_rows(rows, metric)
    if final.is_empty():
        return pl.DataFrame()
    labels = [c for c in labels if c in final.columns]
    axes_by = [c for c in tables.by_axes(final, axes, metric) if c not in labels]
    by = [*labels, *axes_by]
    table = tables.report(final, by, metric, level=level)
    also = [c for c in also if c in final.columns and c not in by and final.schema[c].is_numeric()]
    if also:
        means = final.group_by(by).agg(pl.col(c).cast(pl.Float64).mean() for c in also)
        table = table.join(means, on=by, how="left", nulls_equal=True)
    shown = [*labels, *distinguishing(table, labels, axes_by)]
    pct = int(round(level * 100))
    return table.select(*shown, pl.col("mean").alias(metric), "std", "n", f"ci{pct}_low", f"ci{pct}_high",
                        *also).sort(shown, nulls_last=True)


def distinguishing(table: pl.DataFrame, labels: list[str], candidates: list[str]) -> list[str]:
    """The fewest of `candidates` (in their order; `group` last) that, beside `labels`, tell the lines of `table`
    apart."""
    def distinct(cols: list[str]) -> int:
        return table.select(cols).unique().height if cols else 1

    kept: list[str] = []
    for c in sorted(candidates, key=lambda c: c == "group"):
        if distinct([*labels, *kept]) == table.height:
            break
        if distinct([*labels, *kept, c]) > distinct([*labels, *kept]):
            kept.append(c)
    return [c for c in candidates if c in kept]


def short_names(axes: list[str]) -> dict[str, str]:
    """Each axis by its last part (`activations.context` -> `context`) where that names one axis only."""
    tails = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: t if tails.count(t) == 1 else a for a, t in zip(axes, tails)}


def label(values: dict[str, Any], axes: list[str], key: str) -> str:
    """A cell's name in a legend: its axis values (`decoder=lainr, lr=0.001`), else its key."""
    names = short_names(axes)
    parts = [f"{names[a]}={plots.value_label(values.get(a))}" for a in axes]
    return ", ".join(parts) if parts else key


def cell_labels(rows: pl.DataFrame, axes: dict[str, Any]) -> dict[str, str]:
    """A legend name per cell key of `rows`: its group, then its axis values where the group has axes."""
    out = {}
    for row in rows.unique("key", keep="first", maintain_order=True).iter_rows(named=True):
        names = list(getattr(axes.get(row.get("group")), "axes", ()))
        values = label(row, names, "") if names else ""
        out[row["key"]] = f"{row.get('group')}: {values}" if values else str(row.get("group"))
    return out
