"""The seed-004 table from score-job result rows: prototypes, train images, mAP, 5% and 95% AP quantiles,
and the constant-predictor mAP beside every line."""

import polars as pl

COLUMNS = {"n_prototypes": "Prototypes", "n_train_images": "Train", "map": "mAP", "ap_q05": "5%",
           "ap_q95": "95%", "constant_map": "Constant mAP"}
SCORED = {"representation": "Representation", "layer": "Layer"}
"""What a score cell read (its summary row names the cache's); the table splits by them where they vary."""


def table(rows: pl.DataFrame) -> pl.DataFrame:
    """One line per scorer x prototypes x training images (mean over seeds/cells), from `score` result rows, and
    per representation and layer first where the rows score more than one (never averaged together).

    `rows` needs `row_type`, `scorer`, `n_prototypes` and the summary metrics (`results.load(...)` gives them).
    Prototypes are what the scorer offered (`prototypes`: an `sae` cell's width, not the unused `n_prototypes`).
    """
    summary = rows.filter(pl.col("row_type") == "summary")
    if "status" in summary.columns:
        summary = summary.filter(pl.col("status") == "ok")
    if "prototypes" in summary.columns:
        summary = summary.with_columns(n_prototypes=pl.coalesce("prototypes", "n_prototypes"))
    keys = [c for c in SCORED if c in summary.columns and summary[c].n_unique() > 1]
    keys += ["scorer", "n_prototypes", "n_train_images"]
    return (
        summary.group_by(keys)
        .agg(pl.col("map", "ap_q05", "ap_q95", "constant_map").mean(), pl.len().alias("cells"))
        .sort(keys)
        .rename({**COLUMNS, **SCORED, "scorer": "Scorer"}, strict=False)
    )


def markdown(df: pl.DataFrame) -> str:
    """`df` as a markdown table, all rows."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80):
        return str(df)
