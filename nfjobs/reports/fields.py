"""Seeds 002 and 003, views of the train rows (`views`): per model family (GINR: seed 003's ablations, JEPA: seed
002's sanity run), the final val PSNR per group and axis value, beside the family's training logs; JEPA's per-epoch
collapse monitor from metrics.jsonl; and val PSNR against wall time while training.

`launch.py tables --sweep seeds_h200 --out DIR` writes `DIR/fields_summary.md` and `DIR/fields_<model>_psnr_vs_time.png`
(where the cells scored curve images, `curve_images > 0`).
"""

from pathlib import Path
from typing import Any

import polars as pl

from nfjobs import results
from nfjobs.reports import plots, probes, views
from nfjobs.reports.tables import to_markdown

FAMILIES = {
    "ginr": ("Mamba-GINR (seed 003): val PSNR (dB, whole val split) per variant, at the end",
             ("train_psnr", "train_alpha", "train_s", "wall_s", "gpu_peak_gib")),
    "jepa": ("NF+JEPA (seed 002): recon PSNR (dB, whole val split) per evaluation context, the last epoch's JEPA "
             "loss and collapse monitor",
             ("train_jepa", "train_emb_std", "train_z_std", "train_target_std", "train_ema_momentum", "train_s",
              "wall_s", "gpu_peak_gib")),
}
"""Per model family: its table's title and the training logs beside its PSNR."""
CURVE = {"ginr": "curve_psnr@1.0", "jepa": "curve_psnr@0.1"}
"""The metrics.jsonl epoch metric each family's wall-time chart draws."""
EPOCHS = ("epoch", "wall_s", "train_jepa", "train_emb_std", "train_z_std", "train_target_std", "curve_psnr@0.1",
          "curve_psnr@0.5")
"""JEPA's per-epoch columns (metrics.jsonl `epoch` records)."""


def _train(rows: pl.DataFrame, model: str) -> pl.DataFrame:
    if not {"kind", "model"} <= set(rows.columns):
        return pl.DataFrame()
    return rows.filter(pl.col("kind") == "train", pl.col("model") == model)


def table(rows: pl.DataFrame, axes: dict[str, Any], model: str) -> pl.DataFrame:
    """Final val PSNR (mean over seeds, n, interval) of the `model` train cells per group, the axes the groups
    vary and the evaluation context, with the means of the family's training logs. Empty without such rows."""
    return views.summary(_train(rows, model), axes, "psnr", ("group",), also=FAMILIES[model][1])


def not_ok(rows: pl.DataFrame) -> pl.DataFrame:
    """One line per cell that did not end ok: group, kind, status, the error's last line, key."""
    if "status" not in rows.columns:
        return pl.DataFrame()
    bad = rows.filter(pl.col("status") != "ok").unique("key", keep="first", maintain_order=True)
    return bad.select("group", "kind", "status", pl.col("error").str.split("\n").list.last(), "key")


def _curves(sweep: views.Sweep, model: str) -> dict[str, pl.DataFrame]:
    cells = _train(sweep.rows, model)
    return {name: results.load_metrics(sweep.runs_root, key, phase="epoch")
            for key, name in views.cell_labels(cells, sweep.axes).items()} if not cells.is_empty() else {}


def write(sweep: views.Sweep, out: Path) -> list[Path]:
    """`fields_summary.md` and the wall-time charts under `out`; nothing without GINR or JEPA train rows.
    Returns the files written."""
    md = lambda df: to_markdown(df) if not df.is_empty() else "(no rows)"  # noqa: E731
    parts, written = [f"# {sweep.name}: Mamba-GINR and NF+JEPA (seeds 002 and 003)", ""], []
    for model, (title, _) in FAMILIES.items():
        found = table(sweep.rows, sweep.axes, model)
        if found.is_empty():
            continue
        parts += [f"## {title}", "", md(found), ""]
        curves = _curves(sweep, model)
        if any(CURVE[model] in c.columns for c in curves.values()):
            written.append(out / f"fields_{model}_psnr_vs_time.png")
            plots.psnr_vs_wall(curves, written[-1], CURVE[model], f"{model}: {CURVE[model]} while training")
            parts += [f"![{model}: {CURVE[model]} against wall time]({written[-1].name})", ""]
        if model == "jepa":
            for name, frame in sorted(curves.items()):
                if not frame.is_empty():
                    parts += [f"### {name}: per epoch (metrics.jsonl)", "",
                              md(frame.select(c for c in EPOCHS if c in frame.columns).sort("epoch")), ""]
            if not probes.summary(sweep.rows, sweep.axes).is_empty():
                parts += ["The probes' val accuracy: `representations_summary.md` beside this file.", ""]
    if len(parts) == 2:
        return []
    bad = not_ok(sweep.rows)
    parts += ["## Cells that did not end ok", "", md(bad) if not bad.is_empty() else "(none)", ""]
    (out / "fields_summary.md").write_text("\n".join(parts))
    return [out / "fields_summary.md", *written]
