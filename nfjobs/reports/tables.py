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


