"""Summaries of result rows: a metric's mean, spread and bootstrap interval per group, what was left out, and
markdown tables."""

from typing import Any, Iterable

import numpy as np
import polars as pl

from nfjobs.store import states

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
        df = df.filter(pl.col("status") == states.OK)
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
    status = pl.col("status") if "status" in df.columns else pl.lit(states.OK)
    reason = (pl.when(status != states.OK).then(status)
              .when(pl.col(metric).is_null()).then(pl.lit(f"missing {metric}")).otherwise(None)).alias("reason")
    out = df.with_columns(reason).filter(pl.col("reason").is_not_null())
    if ident:  # a cell with some rows kept (e.g. a train split without the metric) is not excluded
        kept = set(df.filter((status == states.OK) & pl.col(metric).is_not_null())[ident].to_list())
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


# ---------------------------------------------------------------------------------------- grouped by the axes
ROW_DIMS = ("split", "cached_split", "row_type", "eval_context_frac", "epoch", "trait", "n_train_images")
"""Columns that tell one row of a cell from another (never pooled: a cell's rows are different measurements)."""
HEADLINE = ("psnr", "accuracy", "map", "fvu", "mse", "train_loss", "loss")
"""The metrics a cell's summary shows first, where its rows have them."""
NOT_METRICS = {"sweep", "key", "kind", "group", "status", "error", "seed", *ROW_DIMS}


def _as_text(df: pl.DataFrame) -> pl.DataFrame:
    """List columns as text (a list-typed config value is one value of an axis)."""
    nested = [c for c, t in df.schema.items() if t.is_nested()]
    return df.with_columns(pl.col(c).cast(pl.List(pl.String), strict=False).list.join(", ") for c in nested
                           ) if nested else df


def with_axes(rows: pl.DataFrame, swept: pl.DataFrame) -> pl.DataFrame:
    """`rows` with every axis of `swept` (`results.swept`) as a column: referenced cells' axes joined by key;
    list values as text; null-typed columns (an empty list everywhere) as text."""
    rows = _as_text(rows)
    rows = rows.with_columns(pl.col(c).cast(pl.String) for c, t in rows.schema.items() if t == pl.Null)
    extra = [c for c in swept.columns if c not in rows.columns and c not in ("group", "kind")]
    if "key" in rows.columns and extra:
        rows = rows.join(swept.select("key", *extra), on="key", how="left")
    return rows


def final_rows(rows: pl.DataFrame, metric: str, where: Iterable[str] = ()) -> tuple[pl.DataFrame, list[str]]:
    """The rows that carry a cell's final `metric`: `split = "val"` where a cell also has per-epoch curve rows,
    each cell's last `epoch` where it has one row per epoch (unless `where` names those columns). Returns the rows
    and what was chosen, one note each."""
    notes = []
    rows = rows.filter(pl.col(metric).is_not_null())
    if "status" in rows.columns:
        rows = rows.filter(pl.col("status") == states.OK)
    named = set(where)
    if "split" in rows.columns and "split" not in named and rows["split"].n_unique() > 1 \
            and (rows["split"] == "val").any():
        rows = rows.filter(pl.col("split") == "val")
        notes.append("split=val: the final evaluation on the whole validation split (--where split=... for another)")
    if "epoch" in rows.columns and "epoch" not in named and "key" in rows.columns \
            and rows.group_by("key").agg(pl.col("epoch").n_unique() > 1).to_series(1).any():
        rows = rows.filter(pl.col("epoch") == pl.col("epoch").max().over("key"))
        notes.append("each cell's last epoch (--where epoch=N for another)")
    return rows, notes


def row_dims(rows: pl.DataFrame) -> list[str]:
    """The columns that vary between the rows of one cell (the measurements a cell makes: `eval_context_frac`)."""
    if "key" not in rows.columns or rows.is_empty():
        return []
    known = [c for c in ROW_DIMS if c in rows.columns]
    other = [c for c, t in rows.schema.items() if t in (pl.String, pl.Boolean) and c not in NOT_METRICS
             and not c.startswith("run.")]
    varying = rows.group_by("key").agg(pl.col(c).n_unique().alias(c) for c in [*known, *other])
    return [c for c in [*known, *other] if (varying[c] > 1).any()]


def by_axes(rows: pl.DataFrame, axes: dict[str, Any], metric: str, pool: Iterable[str] = ()) -> list[str]:
    """What a table of `metric` groups by: the axes of the groups whose rows carry it (`axes`: group ->
    `results.GroupAxes`), `group` where several do, then the columns a cell's rows differ by; less `pool`."""
    pool = set(pool)
    groups = [g for g in (rows["group"].unique(maintain_order=True).to_list() if "group" in rows.columns else [])]
    by = ["group"] if len(groups) > 1 else []
    for g in groups:
        by += [a for a in getattr(axes.get(g), "axes", ()) if a in rows.columns and a not in by]
    by += [c for c in row_dims(rows) if c not in by]
    return [c for c in by if c not in pool]


def varied_but_pooled(rows: pl.DataFrame, axes: dict[str, Any], by: Iterable[str]) -> list[str]:
    """The axes of the rows' groups that `by` leaves out and whose values differ in `rows`: what a table over
    `by` averages over."""
    by = set(by)
    groups = rows["group"].unique().to_list() if "group" in rows.columns else []
    names = dict.fromkeys(a for g in groups for a in getattr(axes.get(g), "axes", ()))
    return [a for a in names if a not in by and a in rows.columns and rows[a].n_unique() > 1]


def _config_fields(rows: pl.DataFrame) -> set[str]:
    """The result columns that are config fields of the rows' kinds (from each kind's Config defaults)."""
    from nfjobs.kinds import load_kind
    from nfjobs.store.rows import config_columns

    out: set[str] = set()
    for kind in rows["kind"].drop_nulls().unique().to_list() if "kind" in rows.columns else []:
        try:
            out |= set(config_columns(load_kind(kind).Config()))
        except Exception:  # noqa: BLE001 - a kind not loadable here: its config columns stay unknown
            pass
    return out


def cell_table(rows: pl.DataFrame, cells: pl.DataFrame, axes: list[str], max_metrics: int = 8) -> pl.DataFrame:
    """One row per cell of `cells` (`key`, `state`, and its axis values): its axes, state, final headline
    metrics (`psnr@1.0` per evaluation context where a cell has several), wall time (`wall_s`) and
    `gpu_hours` (wall time × the GPUs its ranks were given, `run.gpus` × `run.world_size`; empty for rows from
    before `run.gpus`)."""
    out = cells.select(["key", *[a for a in axes if a in cells.columns], "state"])
    if rows.is_empty() or "key" not in rows.columns:
        return out
    mine = rows.filter(pl.col("key").is_in(cells["key"].implode()))
    mine = mine.select([c for c in mine.columns if mine[c].null_count() < mine.height])
    config = set(axes) | _config_fields(mine)
    numeric = [c for c, t in mine.schema.items() if t.is_numeric() and t != pl.Boolean and c not in NOT_METRICS
               and not c.startswith("run.") and c not in config]
    head = [m for m in HEADLINE if m in numeric] or numeric[:3]
    if "row_type" in mine.columns and (mine["row_type"] == "summary").any():
        mine = mine.filter(pl.col("row_type") == "summary")
    for i, m in enumerate(head[:max_metrics]):
        final, _ = final_rows(mine, m)
        dims = [d for d in row_dims(final) if d != "key"]
        if dims and final.height and (i > 0 or len(head) > 1) and i > 0:
            varies = final.group_by("key").agg(pl.col(m).n_unique() > 1).to_series(1).any()
            if varies:
                continue  # one measurement per row dimension: only the headline metric is spread out
            wide = final.group_by("key").agg(pl.col(m).first())
        elif dims and final.height:
            wide = final.with_columns(pl.concat_str([pl.lit(f"{m}@"), *[pl.col(d).cast(pl.String) for d in dims]],
                                                    separator="").alias("_col"))
            wide = wide.pivot(on="_col", index="key", values=m, aggregate_function="first", sort_columns=True)
            shared = [c for c in wide.columns if c != "key" and wide[c].drop_nulls().len() > 1]
            if wide.height > 1 and shared:  # a value one cell alone has (a searched context_frac): on its page
                wide = wide.select(["key", *shared])
        else:
            wide = final.group_by("key").agg(pl.col(m).first())
        out = out.join(wide, on="key", how="left")
    if "run.seconds" in mine.columns:
        out = out.join(mine.group_by("key").agg(pl.col("run.seconds").max().alias("wall_s")), on="key", how="left")
    if "wall_s" in out.columns and "run.gpus" in mine.columns:
        ranks = pl.col("run.world_size").fill_null(1) if "run.world_size" in mine.columns else pl.lit(1)
        gpus = mine.group_by("key").agg((pl.col("run.gpus") * ranks).max().alias("_gpus"))  # one GPU set per rank
        out = out.join(gpus, on="key", how="left").with_columns(
            (pl.col("wall_s") * pl.col("_gpus") / 3600).alias("gpu_hours")).drop("_gpus")
    return out
