"""The representation comparison as one table and one bar chart, from the probe rows of a sweep.

    uv run python -m nfjobs.reports.probes --sweep representations --runs-root runs --out runs/representations

writes `<out>/summary.md` (accuracy per representation × context × probe, mean over seeds) and
`<out>/accuracy.png` (grouped bars with std over seeds, `nfjobs.reports.plots.probe_accuracy`). A TDSM head trained with its
field is its own probe, `tdsm_gap+finetune` or `tdsm_gap+two_stage`, beside the frozen `tdsm_gap`.
"""

from dataclasses import dataclass
from pathlib import Path

import polars as pl


def summary(rows: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Mean (and count) of val accuracy and train time per representation, context mode and probe (`probe+mode`
    for a TDSM mode other than frozen; rows from before the modes count as frozen)."""
    rows = rows.lazy()
    mode = pl.col("tdsm_mode").fill_null("frozen") if "tdsm_mode" in rows.collect_schema() else pl.lit("frozen")
    return (
        rows
        .filter(pl.col("kind") == "probe", pl.col("status") == "ok")
        .with_columns(pl.when(mode == "frozen").then("probe").otherwise(pl.concat_str("probe", pl.lit("+"), mode))
                      .alias("probe"))  # not pl.format: it panics after a filter in polars 2.1
        .group_by("representation", "context", "probe")
        .agg(pl.col("accuracy").mean(), pl.col("accuracy").std().alias("accuracy_std"),
             pl.col("train_s").mean(), pl.len().alias("n_seeds"))
        .sort("representation", "context", "probe")
        .collect()
    )


def wide(table: pl.DataFrame) -> pl.DataFrame:
    """One row per representation, one column per `context/probe`."""
    return (table.with_columns(pl.format("{}/{}", "context", "probe").alias("column"))
            .pivot(on="column", index="representation", values="accuracy", sort_columns=True)
            .sort("representation"))


@dataclass(frozen=True)
class Args:
    sweep: str
    """Sweep name or file (as for `launch.py report`)."""
    runs_root: str = "runs"
    out: str = "runs/representations"
    """Folder for summary.md and accuracy.png."""


def main(args: Args) -> None:
    from nfjobs.reports.plots import probe_accuracy
    from nfjobs.reports.tables import to_markdown
    from nfjobs.results import load

    table = summary(load(args.sweep, args.runs_root))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"{to_markdown(wide(table))}\n\n{to_markdown(table)}\n"
    (out / "summary.md").write_text(text)
    probe_accuracy(table, out / "accuracy.png")
    print(text)
    print(f"wrote {out / 'summary.md'} and {out / 'accuracy.png'}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
