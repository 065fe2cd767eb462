"""Seeds 002 and 003 from a `seeds_h200` launch: PSNR-vs-time plots, reconstruction grids and a markdown table.

    uv run python bench/seed_results.py --runs-root runs --out docs/results/seeds_h200 [--sweep seeds_h200]

Reads result rows (`nfjobs.results.load`) and metrics records (`nfjobs.results.load_metrics`), never log text.
Writes into `--out`:
- `ginr_psnr_vs_time.png`: val PSNR (the first `curve_images` val images) against wall-clock seconds, one line per
  GINR train cell (labelled by its sweep group, a group of several cells by what varies in it: `ginr lr 4e-3`);
  `jepa_psnr_vs_time.png` the same for JEPA at obs_frac 0.1; `lr_psnr_vs_time.png` the lr check's cells;
- `recon_<label>.png`: each train cell's labelled reconstruction grid, and `ginr_variants.png` all GINR grids
  stacked under their labels;
- `results.md`: GINR val PSNR per variant (whole val split, at the end), JEPA recon PSNR at obs_frac 0.1 / 0.5, its
  JEPA loss and collapse monitor (emb_std, z_std) per epoch, the linear probe's accuracy, the lr check (the GINR
  cells that differ from `ginr_default` in `optim.lr` only: `ginr_default` and the `ginr_lr` group) and every
  cell that did not end `ok`.
"""

import argparse
import shutil
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfjobs import results, typed  # noqa: E402
from nfjobs.reports import plots  # noqa: E402
from nfjobs.jobs import train  # noqa: E402
from nfjobs.store.layout import run_dir
from nfjobs.reports import tables as reporting

GRID = "reconstructions.png"
DEFAULT = "ginr_default"
"""The GINR group the ablations and the lr check are compared with."""


def _val(rows: pl.DataFrame, model: str) -> pl.DataFrame:
    """Final rows (whole val split) of the `ok` train cells of one family."""
    if "model" not in rows.columns:
        return pl.DataFrame()
    return rows.filter(pl.col("kind") == "train", pl.col("model") == model, pl.col("status") == "ok",
                       pl.col("split") == "val")


def _cols(df: pl.DataFrame, wanted: list[str]) -> pl.DataFrame:
    """`df` restricted to the wanted columns it has, in that order (a family without a log leaves it out)."""
    return df.select([c for c in wanted if c in df.columns])


def ginr_table(rows: pl.DataFrame) -> pl.DataFrame:
    val = _val(rows, "ginr")
    if val.is_empty():
        return val
    return _cols(val.sort("group"), ["group", "psnr", "epoch", "batch_size", "optim.lr", "train_psnr", "train_alpha",
                                     "train_s", "wall_s", "gpu_peak_gib", "backend", "key"])


def jepa_table(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per JEPA cell: recon PSNR at obs_frac 0.1 and 0.5 and the last epoch's JEPA loss / collapse monitor."""
    val = _val(rows, "jepa")
    if val.is_empty():
        return val
    wide = val.pivot(on="eval_context_frac", index="key", values="psnr", aggregate_function="first")
    wide = wide.rename({c: f"psnr@{c}" for c in wide.columns if c != "key"})
    last = val.unique("key", keep="first").join(wide, on="key")
    return _cols(last.sort("group"), ["group", "psnr@0.1", "psnr@0.5", "train_jepa", "train_emb_std", "train_z_std",
                                      "train_target_std", "train_ema_momentum", "epoch", "batch_size", "optim.lr",
                                      "train_s", "wall_s", "gpu_peak_gib", "backend", "target_grad_ok",
                                      "key"])


def jepa_epochs(runs_root: Path, rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Per JEPA cell (by group): its epoch records, JEPA loss, collapse monitor and curve PSNR."""
    out = {}
    for key, group in _cells(rows, "jepa"):
        m = results.load_metrics(runs_root, key, phase="epoch")
        if not m.is_empty():
            out[group] = _cols(m.sort("epoch"), ["epoch", "wall_s", "jepa", "emb_std", "z_std", "target_std",
                                                 "val_psnr@0.1", "val_psnr@0.5"])
    return out


def probe_table(rows: pl.DataFrame) -> pl.DataFrame:
    probes = rows.filter(pl.col("kind") == "probe", pl.col("status") == "ok") if "kind" in rows.columns else rows
    if probes.is_empty():
        return probes
    return _cols(probes.sort("group"), ["group", "probe", "context", "context_frac", "accuracy", "train_accuracy",
                                        "n_train", "n_val", "key"])


def not_ok(rows: pl.DataFrame) -> pl.DataFrame:
    bad = rows.filter(pl.col("status") != "ok") if "status" in rows.columns else rows.clear()
    if bad.is_empty():
        return bad
    return bad.unique("key").select("group", "kind", "status", pl.col("error").str.split("\n").list.last(), "key")


def _cells(rows: pl.DataFrame, model: str) -> list[tuple[str, str]]:
    """(key, group) of every train cell of one family, in group order."""
    if "model" not in rows.columns:
        return []
    cells = rows.filter(pl.col("kind") == "train", pl.col("model") == model).select("key", "group").unique()
    return sorted(cells.rows(), key=lambda r: (r[1], r[0]))


def _num(v) -> str:
    """A config value for a label: `4e-3`, `1.41e-3`, `128`."""
    if isinstance(v, float) and v != 0 and not 1e-2 <= abs(v) < 1e4:
        mantissa, exp = f"{v:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _labels(rows: pl.DataFrame, cells: list[tuple[str, str]]) -> dict[str, str]:
    """Label per cell key: its group name, or for a group of several cells (an axis) the family and the config
    values that vary in the group (`ginr lr 4e-3`)."""
    config = [c for c in typed.defaults_flat(train.Config) if c in rows.columns]
    labels = {}
    for key, group in cells:
        if [g for _, g in cells].count(group) == 1:
            labels[key] = group
            continue
        mine = rows.filter(pl.col("group") == group).unique("key", keep="first")
        varying = [c for c in config if len({repr(v) for v in mine[c].to_list()}) > 1]
        cell = mine.filter(pl.col("key") == key).row(0, named=True)
        labels[key] = " ".join([cell["model"], *(f"{c.rsplit('.', 1)[-1]} {_num(cell[c])}" for c in varying)])
    return labels


def curves(runs_root: Path, labels: dict[str, str]) -> dict[str, pl.DataFrame]:
    return {label: results.load_metrics(runs_root, key, phase="epoch") for key, label in labels.items()}


def grids(runs_root: Path, rows: pl.DataFrame, out: Path) -> list[Path]:
    """Copy every train cell's grid as `recon_<group>.png`; stack the GINR ones under their names."""
    from PIL import Image, ImageDraw, ImageFont

    written, ginr = [], []
    for model in ("ginr", "jepa"):
        for key, label in _labels(rows, _cells(rows, model)).items():
            src = run_dir(runs_root, key).path / GRID
            if not src.is_file():
                continue
            dst = out / f"recon_{label.replace(' ', '_')}.png"
            shutil.copyfile(src, dst)
            written.append(dst)
            if model == "ginr":
                ginr.append((label, Image.open(src).convert("RGB")))
    if ginr:
        font = ImageFont.load_default()
        width = max(im.width for _, im in ginr)
        stacked = Image.new("RGB", (width, sum(im.height + 18 for _, im in ginr)), "white")
        draw, y = ImageDraw.Draw(stacked), 0
        for label, im in ginr:
            draw.text((4, y + 3), label, fill="black", font=font)
            stacked.paste(im, (0, y + 18))
            y += im.height + 18
        stacked.save(out / "ginr_variants.png")
        written.append(out / "ginr_variants.png")
    return written


def lr_cells(rows: pl.DataFrame) -> pl.DataFrame:
    """Final val rows of the lr check: the GINR cells whose config equals `ginr_default`'s but for `optim.lr`."""
    val = _val(rows, "ginr")
    default = val.filter(pl.col("group") == DEFAULT) if not val.is_empty() else val
    if default.is_empty():
        return default
    same = [c for c in typed.defaults_flat(train.Config) if c in val.columns and c != "optim.lr"]
    ref = [repr(v) for v in default.select(same).row(0)]
    keys = [k for k, *config in val.select("key", *same).rows() if [repr(v) for v in config] == ref]
    return val.filter(pl.col("key").is_in(keys)).sort("optim.lr")


def lr_table(rows: pl.DataFrame) -> pl.DataFrame:
    cells = lr_cells(rows)
    if cells.is_empty():
        return cells
    cells = cells.with_columns(pl.col("optim.lr").map_elements(_num, return_dtype=pl.String).alias("lr"))
    return _cols(cells, ["lr", "group", "psnr", "train_psnr", "train_loss", "epoch", "batch_size",
                         "optim.warmup_steps", "train_s", "gpu_peak_gib", "key"])


def lr_labels(rows: pl.DataFrame) -> dict[str, str]:
    """`ginr lr 5e-4`, `ginr lr 1.41e-3 (ginr_default)`, ... per lr-check cell key."""
    return {key: f"ginr lr {_num(lr)}" + (f" ({group})" if group == DEFAULT else "")
            for key, group, lr in lr_cells(rows).select("key", "group", "optim.lr").rows()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--out", required=True, help="folder for the plots, grids and results.md")
    parser.add_argument("--sweep", default="seeds_h200", help="launched sweep (name or .toml)")
    a = parser.parse_args(argv)
    runs_root, out = Path(a.runs_root), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = results.load(a.sweep, runs_root).collect()
    if rows.is_empty():
        print(f"seed_results: no result rows for {a.sweep!r} under {runs_root}", file=sys.stderr)
        return 1

    plots.psnr_vs_wall(curves(runs_root, _labels(rows, _cells(rows, "ginr"))), out / "ginr_psnr_vs_time.png",
                       metric="val_psnr@1.0", title="Mamba-GINR: val PSNR while training")
    plots.psnr_vs_wall(curves(runs_root, _labels(rows, _cells(rows, "jepa"))), out / "jepa_psnr_vs_time.png",
                       metric="val_psnr@0.1", title="NF+JEPA: val PSNR from 10 % of the pixels while training")
    plots.psnr_vs_wall(curves(runs_root, lr_labels(rows)), out / "lr_psnr_vs_time.png", metric="val_psnr@1.0",
                       title="Mamba-GINR lr check: val PSNR while training")
    written = grids(runs_root, rows, out)

    md = lambda df: reporting.to_markdown(df) if not df.is_empty() else "(no rows)"  # noqa: E731
    parts = [f"# Seeds 002 and 003: `{a.sweep}` under `{runs_root}`", "",
             "## Mamba-GINR (seed 003): val PSNR (dB, whole val split) per variant, at the end", "",
             md(ginr_table(rows)), "",
             "## NF+JEPA (seed 002): recon PSNR (dB, val) from 10 % / 50 % of the pixels, last epoch's JEPA loss and "
             "collapse monitor", "", md(jepa_table(rows)), ""]
    for group, table in jepa_epochs(runs_root, rows).items():
        parts += [f"### {group}: per epoch (metrics.jsonl)", "", md(table), ""]
    parts += ["## Linear probe at obs_frac 0.1 (val accuracy)", "", md(probe_table(rows)), ""]
    parts += [f"## Learning-rate check: val PSNR (dB) of the GINR cells that differ from {DEFAULT} in optim.lr only",
              "", md(lr_table(rows)), ""]
    bad = not_ok(rows)
    parts += ["## Cells that did not end ok", "", md(bad) if not bad.is_empty() else "(none)", ""]
    parts += ["Files: " + ", ".join(sorted({p.name for p in written} | {"ginr_psnr_vs_time.png",
                                                                        "jepa_psnr_vs_time.png",
                                                                        "lr_psnr_vs_time.png"})), ""]
    (out / "results.md").write_text("\n".join(parts))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
