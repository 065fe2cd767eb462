"""Seed 000's representation comparison, a view of the probe rows (`views`): one table and one bar chart.

`launch.py tables --sweep representations --out DIR` writes `DIR/representations_summary.md` (accuracy per
representation × context × probe, pooled over seeds only, wide and long) and `DIR/representations_accuracy.png`
(`plots.probe_accuracy`). A TDSM head trained with its field is its own probe, `tdsm_gap+finetune` or
`tdsm_gap+two_stage`, beside the frozen `tdsm_gap`.
"""

from pathlib import Path
from typing import Any

import polars as pl

from nfjobs.reports import plots, views
from nfjobs.reports.tables import to_markdown

LABELS = ("representation", "context", "probe")


def summary(rows: pl.DataFrame, axes: dict[str, Any]) -> pl.DataFrame:
    """Val accuracy (mean, std, n seeds, interval) and mean train time per representation, context, probe
    (`probe+mode` for a TDSM mode other than frozen; rows from before the modes count as frozen) and any axis
    of the probe groups those do not tell apart. Empty without probe rows."""
    if not {"kind", "probe", "accuracy"} <= set(rows.columns):
        return pl.DataFrame()
    probes = rows.filter(pl.col("kind") == "probe")
    mode = pl.col("tdsm_mode").fill_null("frozen") if "tdsm_mode" in probes.columns else pl.lit("frozen")
    probes = probes.with_columns(pl.when(mode == "frozen").then("probe")
                                 .otherwise(pl.concat_str("probe", pl.lit("+"), mode)).alias("probe"))
    return views.summary(probes, axes, "accuracy", LABELS, also=("train_s",))


def wide(table: pl.DataFrame) -> pl.DataFrame:
    """One row per representation (and distinguishing axis), one column per `context/probe`: mean accuracy."""
    index = [c for c in table.columns[:table.columns.index("accuracy")] if c not in ("context", "probe")]
    return (table.with_columns(pl.format("{}/{}", "context", "probe").alias("column"))
            .pivot(on="column", index=index, values="accuracy", sort_columns=True)
            .sort(index, nulls_last=True))


def write(sweep: views.Sweep, out: Path) -> list[Path]:
    """`representations_summary.md` and `representations_accuracy.png` under `out`; nothing without probe rows.
    Returns the files written."""
    table = summary(sweep.rows, sweep.axes)
    if table.is_empty():
        return []
    md, png = out / "representations_summary.md", out / "representations_accuracy.png"
    md.write_text(f"# {sweep.name}: probe accuracy (val) per representation (seed 000)\n\n"
                  "Mean over seeds; `n` seeds; interval: bootstrap of the mean (empty for one seed).\n\n"
                  f"{to_markdown(wide(table))}\n\n{to_markdown(table)}\n")
    plots.probe_accuracy(table, png, f"{sweep.name}: probe accuracy (val)")
    return [md, png]
