"""The representation comparison as one table and one bar chart, from the probe rows of a sweep.

    uv run python -m nfjobs.probes.report --sweep representations --runs-root runs --out runs/representations

writes `<out>/summary.md` (accuracy per representation × context × probe, mean over seeds) and
`<out>/accuracy.png` (grouped bars, drawn with PIL: matplotlib is not a dependency). A TDSM head trained with its
field is its own probe, `tdsm_gap+finetune` or `tdsm_gap+two_stage`, beside the frozen `tdsm_gap`.
"""

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(66, 110, 180), (221, 132, 82), (85, 168, 104), (196, 78, 82), (129, 114, 179), (147, 120, 96),
           (218, 139, 195), (140, 140, 140)]


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


def bar_chart(table: pl.DataFrame, path: Path, title: str = "val accuracy") -> None:
    """Grouped bars: one group per (context, probe), one bar per representation, accuracy on [0, 1]."""
    reps = sorted(table["representation"].unique())
    groups = table.select("context", "probe").unique().sort("context", "probe").rows()
    acc = {(r, c, p): a for r, c, p, a in table.select("representation", "context", "probe", "accuracy").rows()}
    bar, gap, left, top, plot_h = 14, 18, 50, 40, 300
    width = left + len(groups) * (len(reps) * bar + gap) + 20
    legend_h = 16 * len(reps) + 10
    img = Image.new("RGB", (max(width, 360), top + plot_h + 70 + legend_h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((left, 10), title, fill="black", font=font)
    for tick in range(0, 11, 2):
        y = top + plot_h - tick / 10 * plot_h
        d.line([(left - 4, y), (width - 20, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{tick / 10:.1f}", fill="black", font=font)
    x = left + gap // 2
    for context, probe in groups:
        for i, rep in enumerate(reps):
            a = acc.get((rep, context, probe))
            if a is not None:
                d.rectangle([x, top + plot_h - a * plot_h, x + bar - 2, top + plot_h], fill=PALETTE[i % len(PALETTE)])
            x += bar
        d.text((x - len(reps) * bar, top + plot_h + 6), f"{probe}", fill="black", font=font)
        d.text((x - len(reps) * bar, top + plot_h + 20), f"{context}", fill=(90, 90, 90), font=font)
        x += gap
    for i, rep in enumerate(reps):
        y = top + plot_h + 50 + 16 * i
        d.rectangle([left, y, left + 10, y + 10], fill=PALETTE[i % len(PALETTE)])
        d.text((left + 16, y - 1), rep, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@dataclass(frozen=True)
class Args:
    sweep: str
    """Sweep name or file (as for `launch.py report`)."""
    runs_root: str = "runs"
    out: str = "runs/representations"
    """Folder for summary.md and accuracy.png."""


def main(args: Args) -> None:
    from nfjobs.results import load, to_markdown

    table = summary(load(args.sweep, args.runs_root))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"{to_markdown(wide(table))}\n\n{to_markdown(table)}\n"
    (out / "summary.md").write_text(text)
    bar_chart(table, out / "accuracy.png")
    print(text)
    print(f"wrote {out / 'summary.md'} and {out / 'accuracy.png'}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
