"""Every figure of the reports, drawn with matplotlib (no pyplot state: each call makes and saves its own figure).

- `probe_accuracy`: val accuracy per representation × probe × context (grouped bars, std over seeds as error bars);
- `psnr_vs_context`: final val PSNR against the evaluation context fraction, one line per trained field;
- `psnr_vs_wall`: val PSNR of the curve images against wall-clock seconds, from metrics.jsonl `epoch` records;
- `map_vs_train_images`: seed 004's mAP against training images, one line per scorer × prototypes, 5–95 % AP band.

- `curves`: one line per cell of a metrics.jsonl metric against step and against wall time, side by side (legend:
  the cell's axis values);
- `metric_bars`: a report table (`tables.report`) as bars with its interval, chance level dashed where known;
- `metric_vs`: a report table as lines of the metric against one column, one line per value of the others.

- `search_progress`: a search's metric against trial number, with the best so far;
- `search_values`: a search's metric against each searched key's drawn values, one panel per key.

Each takes a polars table (see its docstring), writes a PNG to `path` and returns the matplotlib Figure. Every
text is passed through `plain` first: a `$` in a label never starts matplotlib's mathtext.
"""

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl

COLORS = ["#426eb4", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def plain(text: Any) -> str:
    """`text` as matplotlib prints it verbatim (`$` escaped, so no mathtext)."""
    return re.sub(r"(?<!\\)\$", r"\\$", str(text))


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig, path: Path | str):
    for ax in fig.axes:  # every text drawn verbatim
        ax.set_title(plain(ax.get_title()))
        legend = ax.get_legend()
        for text in legend.get_texts() if legend else []:
            text.set_text(plain(text.get_text()))
        for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            tick.set_text(plain(tick.get_text()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return fig


def probe_accuracy(table: pl.DataFrame, path: Path | str, title: str = "Probe accuracy (val)"):
    """Grouped bars from `nfjobs.reports.probes.summary`: one group per (context, probe), one bar per representation
    (and the axes beside it: the columns before `accuracy`); error bars (std over seeds) where a bar has more than one seed."""
    names = [c for c in table.columns[:table.columns.index("accuracy")] if c not in ("context", "probe")]
    table = table.with_columns(pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in names],
                                             separator=", ").alias("_bar"))
    reps = sorted(table["_bar"].unique().to_list())
    groups = table.select("context", "probe").unique().sort("context", "probe").rows()
    by = {(r["_bar"], r["context"], r["probe"]): r for r in table.iter_rows(named=True)}
    width = 0.8 / max(len(reps), 1)
    fig, ax = _figure(max(6.0, 1.2 + 0.3 * len(groups) * max(len(reps), 1)), 4.5)
    for i, rep in enumerate(reps):
        xs, ys, errs = [], [], []
        for g, (context, probe) in enumerate(groups):
            row = by.get((rep, context, probe))
            if row is None:
                continue
            xs.append(g - 0.4 + width * (i + 0.5))
            ys.append(row["accuracy"])
            errs.append(row["std"] if (row.get("n") or 1) > 1 and row.get("std") is not None else 0.0)
        ax.bar(xs, ys, width * 0.95, yerr=errs if any(errs) else None, capsize=3, label=plain(rep),
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(range(len(groups)), [plain(f"{p}\n{c}") for c, p in groups], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title=", ".join(n.rsplit(".", 1)[-1] for n in names), title_fontsize=8, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def field_labels(rows: pl.DataFrame) -> pl.Series:
    """A trained field's name per train result row, by the rule of the caches (`perceiver-sparse-nce-ft`)."""
    from nfjobs.models.trained import field_name

    def name(r: dict) -> str:
        return field_name(SimpleNamespace(model=r.get("model") or "field", context_frac=r.get("context_frac") or 1.0,
                                          nce_weight=r.get("nce_weight") or 0.0, init_from=r.get("init_from") or ""))

    return pl.Series("field", [name(r) for r in rows.iter_rows(named=True)], dtype=pl.String)


def psnr_vs_context(rows: pl.DataFrame, path: Path | str, title: str = "Reconstruction PSNR (val)"):
    """Train result rows (`split = "val"`, `eval_context_frac`, `psnr`, config columns): mean PSNR per field and
    evaluation context fraction, std over seeds as error bars."""
    val = rows.filter(pl.col("split") == "val", pl.col("psnr").is_not_null())
    if "status" in val.columns:
        val = val.filter(pl.col("status") == "ok")
    val = val.with_columns(field_labels(val))
    table = (val.group_by("field", "eval_context_frac")
             .agg(pl.col("psnr").mean().alias("mean"), pl.col("psnr").std().alias("std"), pl.len().alias("n"))
             .sort("field", "eval_context_frac"))
    fig, ax = _figure()
    for i, (field,) in enumerate(table.select("field").unique(maintain_order=True).rows()):
        t = table.filter(pl.col("field") == field)
        err = t["std"].fill_null(0.0).to_list() if (t["n"] > 1).any() else None
        ax.errorbar(t["eval_context_frac"].to_list(), t["mean"].to_list(), yerr=err, marker="o", capsize=3,
                    label=plain(field), color=COLORS[i % len(COLORS)])
    ax.set_xscale("log")
    ax.set_xlabel("context fraction of the pixels (evaluation)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def psnr_vs_wall(curves: dict[str, pl.DataFrame], path: Path | str, metric: str = "curve_psnr@1.0",
                 title: str = "Val PSNR while training"):
    """One line per run: `metric` of its metrics.jsonl `epoch` records (`results.load_metrics(..., phase="epoch")`)
    against `wall_s`; runs without that metric are left out."""
    fig, ax = _figure()
    for i, (label, frame) in enumerate(sorted(curves.items())):
        if frame.is_empty() or metric not in frame.columns:
            continue
        f = frame.filter(pl.col(metric).is_not_null()).sort("wall_s")
        ax.plot(f["wall_s"].to_list(), f[metric].to_list(), marker=".", label=plain(label), color=COLORS[i % len(COLORS)])
    ax.set_xlabel("wall-clock seconds since the cell started")
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def map_vs_train_images(table: pl.DataFrame, path: Path | str, title: str = "Trait discovery (seed 004)"):
    """`nfjobs.reports.traits.table` output: mAP against training images, one line per scorer × prototype count
    (× representation / layer where the table has them), the band between the 5 % and 95 % per-trait AP
    quantiles, and the constant predictor's mAP dashed."""
    fig, ax = _figure()
    by = [c for c in ("Representation", "Layer") if c in table.columns] + ["Scorer", "Prototypes"]
    keys = table.select(by).unique().sort(by).rows()
    for i, key in enumerate(keys):
        t = table.filter(*(pl.col(c) == v for c, v in zip(by, key))).sort("Train")
        color = COLORS[i % len(COLORS)]
        x = t["Train"].to_list()
        label = ", ".join([*map(str, key[:-2]), f"{key[-2]}, {key[-1]} prototypes"])
        ax.plot(x, t["mAP"].to_list(), marker="o", color=color, label=plain(label))
        ax.fill_between(x, t["5%"].to_list(), t["95%"].to_list(), color=color, alpha=0.08, lw=0)
    if keys:
        const = table.group_by("Train").agg(pl.col("Constant mAP").mean()).sort("Train")
        ax.plot(const["Train"].to_list(), const["Constant mAP"].to_list(), "k--", lw=1, label="constant predictor")
    train = table["Train"].drop_nulls()
    if len(train) and train.min() > 0 and train.max() / train.min() >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()  # log minor labels (3x10^1, 4x10^1, ...) overlap; label the measured counts only
    ticks = sorted(set(train.to_list()))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("training images (prototype choice)")
    ax.set_ylabel("AP (band: 5–95 % of traits)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def curves(lines: dict[str, pl.DataFrame], metric: str, title: str, path: Path | str):
    """One line per label: `metric` of a cell's metrics.jsonl records against step (left) and against wall-clock
    seconds since the cell started (right), one legend for both."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.4), dpi=100, layout="constrained")
    by_step, by_wall = fig.subplots(1, 2, sharey=True)
    for i, (name, frame) in enumerate(sorted(lines.items())):
        for ax, x in ((by_step, "step"), (by_wall, "wall_s")):
            f = frame.sort(x)
            ax.plot(f[x].to_list(), f[metric].to_list(), marker="." if f.height < 30 else None,
                    label=plain(name), color=COLORS[i % len(COLORS)], lw=1.2)
    by_step.set_xlabel("step")
    by_wall.set_xlabel("wall-clock seconds since the cell started")
    by_step.set_ylabel(plain(metric))
    fig.suptitle(plain(title))
    for ax in (by_step, by_wall):
        ax.grid(alpha=0.3)
    if len(lines) <= 12:
        by_wall.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _row_label(row: dict, by: list[str]) -> str:
    return ", ".join(f"{c.rsplit('.', 1)[-1]}={value_label(row[c])}" for c in by) or "all"


def value_label(value: Any) -> str:
    """A value as a legend or table shows it: a float drawn by a search (`0.000890904464452652`) to 4 significant
    digits, anything else as written (`0.2`, `1e-05`, `lainr`)."""
    if isinstance(value, float) and len(repr(value)) > 8:
        return f"{value:.4g}"
    return str(value)


def metric_bars(table: pl.DataFrame, by: list[str], metric: str, title: str, chance: float | None, path: Path | str):
    """A `tables.report` table as horizontal bars (mean; its interval where it has one), one per row, labelled
    by its `by` values; `chance` dashed."""
    rows = list(table.iter_rows(named=True))
    fig, ax = _figure(7.0, max(1.8, 0.8 + 0.28 * len(rows)))
    ci = [c for c in table.columns if c.startswith("ci") and c.endswith("_low")]
    for i, r in enumerate(rows):
        lo = r[ci[0]] if ci else None
        hi = r[ci[0].replace("_low", "_high")] if ci else None
        err = [[r["mean"] - lo], [hi - r["mean"]]] if lo is not None and hi is not None else None
        ax.barh(i, r["mean"], xerr=err, capsize=3, color=COLORS[0], height=0.7)
    ax.set_yticks(range(len(rows)), [plain(_row_label(r, by)) for r in rows], fontsize=7)
    ax.invert_yaxis()
    if chance is not None:
        ax.axvline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:g})")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel(plain(f"{metric} (mean; bar: its interval over seeds where n > 1)"))
    ax.set_title(plain(title))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def metric_vs(table: pl.DataFrame, x: str, series: list[str], metric: str, title: str, path: Path | str):
    """A `tables.report` table as lines of the mean against `x`, one line per value of `series`."""
    fig, ax = _figure(7.0, 3.6)
    keys = table.select(series).unique(maintain_order=True).rows() if series else [()]
    for i, key in enumerate(keys):
        t = table.filter(*(pl.col(c) == v if v is not None else pl.col(c).is_null() for c, v in zip(series, key))) \
            if series else table
        t = t.sort(x)
        ax.plot(t[x].to_list(), t["mean"].to_list(), marker="o", color=COLORS[i % len(COLORS)],
                label=plain(_row_label(dict(zip(series, key)), series)))
    xs = table[x].drop_nulls()
    if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(plain(x))
    ax.set_ylabel(plain(metric))
    ax.set_title(plain(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def search_progress(trials: pl.DataFrame, metric: str, direction: str, path: Path | str):
    """A search's metric against trial number (`trial`, `value`, `state` columns): complete trials as dots, the
    best so far as a step line; pruned and failed trials as marks on the x axis."""
    fig, ax = _figure(7.0, 3.6)
    done = trials.filter(pl.col("state") == "complete").sort("trial")
    values = done["value"].to_list()
    best = [min(values[: i + 1]) if direction == "minimize" else max(values[: i + 1]) for i in range(len(values))]
    ax.plot(done["trial"].to_list(), values, "o", ms=4, color=COLORS[0], label="trial")
    ax.step(done["trial"].to_list(), best, where="post", color=COLORS[1], label="best so far")
    for i, state in enumerate(("pruned", "fail")):
        ended = trials.filter(pl.col("state") == state)["trial"].to_list()
        if ended:
            ax.plot(ended, [min(values, default=0)] * len(ended), "x", color=COLORS[3 + i], label=state)
    if values and min(values) > 0 and max(values) / min(values) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel(plain(metric))
    ax.set_title(plain(f"{metric} ({direction}) against trial number"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def search_values(trials: pl.DataFrame, space: dict[str, str], metric: str, path: Path | str):
    """One panel per searched key: the metric of each complete trial against the value it drew (a log axis for a
    loguniform key), later trials darker."""
    from matplotlib.figure import Figure

    keys = list(space)
    fig = Figure(figsize=(3.2 * max(len(keys), 1), 3.2), dpi=100, layout="constrained")
    done = trials.filter(pl.col("state") == "complete").sort("trial")
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, max(len(keys), 1), i + 1)
        xs = done[key].to_list()
        if space[key] == "choice":
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), [plain(x) for x in labels], fontsize=7)
        ax.scatter(xs, done["value"].to_list(), c=done["trial"].to_list(), cmap="viridis_r", s=14)
        if space[key] == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(plain(f"{key} ({space[key]})"))
        ax.set_ylabel(plain(metric) if i == 0 else "")
        ax.grid(alpha=0.3)
    return _save(fig, path)
