"""Seed 004's table and chart, a view of the score summary rows (`views`): per scorer, prototypes and training
images, test mAP (mean over seeds, n, interval), its 5% and 95% AP quantiles and the constant predictor's mAP.

`launch.py tables --sweep prototypes --out DIR` writes `DIR/traits_summary.md`, `DIR/traits_map_vs_train_images.png`
(all scorers) and `DIR/traits_map_<scorer>.png` (one per scorer).
"""

from pathlib import Path
from typing import Any

import polars as pl

from nfjobs.reports import plots, views
from nfjobs.reports.tables import to_markdown

LABELS = {"scorer": "Scorer", "n_prototypes": "Prototypes", "n_train_images": "Train"}
SCORED = {"representation": "Representation", "layer": "Layer"}
"""What a score cell read (its summary row names the cache's); the table splits by them where they vary."""
METRICS = {"map": "mAP", "ap_q05": "5%", "ap_q95": "95%", "constant_map": "Constant mAP"}


def table(rows: pl.DataFrame, axes: dict[str, Any]) -> pl.DataFrame:
    """One line per scorer × prototypes × training images (pooled over seeds only), per representation and layer
    first where the rows score more than one, and any axis of the score groups those do not tell apart; from
    `score` summary rows (`results.load(...)`). Prototypes are what the scorer offered (`prototypes`: an `sae`
    cell's width, not the unused `n_prototypes`). Empty without summary rows."""
    if "row_type" not in rows.columns:
        return pl.DataFrame()
    summary = rows.filter(pl.col("row_type") == "summary")
    if "prototypes" in summary.columns:
        summary = summary.with_columns(n_prototypes=pl.coalesce("prototypes", "n_prototypes"))
    scored = [c for c in SCORED if c in summary.columns and summary[c].n_unique() > 1]
    found = views.summary(summary, axes, "map", [*scored, *LABELS], also=("ap_q05", "ap_q95", "constant_map"))
    return found.rename({**SCORED, **LABELS, **METRICS}, strict=False)


def write(sweep: views.Sweep, out: Path) -> list[Path]:
    """`traits_summary.md` and the mAP charts under `out`; nothing without score summary rows. Returns the files
    written."""
    found = table(sweep.rows, sweep.axes)
    if found.is_empty():
        return []
    written = [out / "traits_map_vs_train_images.png"]
    plots.map_vs_train_images(found, written[0], f"{sweep.name}: test mAP vs training images")
    for scorer in found["Scorer"].unique().sort().to_list():
        written.append(out / f"traits_map_{scorer}.png")
        plots.map_vs_train_images(found.filter(pl.col("Scorer") == scorer), written[-1],
                                  f"{scorer}: test mAP vs training images (one line per prototype count)")
    md = out / "traits_summary.md"
    md.write_text(f"# {sweep.name}: trait discovery (seed 004)\n\n"
                  "Test mAP: mean over seeds, `n` seeds, bootstrap interval (empty for one seed); 5% / 95%: the "
                  "per-trait AP quantiles; Constant mAP: a constant scorer's, the floor to beat.\n\n"
                  "![mAP vs training images](traits_map_vs_train_images.png)\n\n" + to_markdown(found) + "\n")
    return [md, *written]
