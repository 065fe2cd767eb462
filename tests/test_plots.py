"""The report figures (nfjobs.reports.plots) and the labelled reconstruction grid: what is drawn, from small tables."""

import numpy as np
import polars as pl
import pytest
import torch
from matplotlib.container import BarContainer
from PIL import Image

from nfjobs.reports import plots
from nfjobs.reports.probes import summary


def probe_rows(seeds: int) -> pl.DataFrame:
    return pl.DataFrame([
        {"kind": "probe", "status": "ok", "representation": r, "context": c, "probe": p, "train_s": 1.0,
         "accuracy": a + 0.05 * s, "seed": s}
        for r, a in (("original", 0.3), ("perceiver", 0.6)) for c in ("full", "sparse") for p in ("linear", "knn")
        for s in range(seeds)
    ])


@pytest.mark.parametrize("seeds", [1, 3])
def test_probe_accuracy_groups_bars_and_shows_seed_spread(tmp_path, seeds):
    table = summary(probe_rows(seeds), {})
    fig = plots.probe_accuracy(table, tmp_path / "acc.png")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == ["original", "perceiver"]
    heights = sorted(round(p.get_height(), 6) for c in bars for p in c.patches)
    base = 0.05 * (seeds - 1) / 2  # mean over seeds
    assert heights == pytest.approx(sorted([0.3 + base] * 4 + [0.6 + base] * 4))
    assert all((c.errorbar is not None) == (seeds > 1) for c in bars)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["knn\nfull", "linear\nfull", "knn\nsparse", "linear\nsparse"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["original", "perceiver"]
    assert Image.open(tmp_path / "acc.png").size[0] >= 600


def test_psnr_vs_context_one_line_per_field_with_seed_error_bars(tmp_path):
    rows = pl.DataFrame([
        {"status": "ok", "split": s, "model": m, "context_frac": cf, "nce_weight": 0.0, "init_from": "",
         "eval_context_frac": f, "psnr": 20 + 10 * f + seed + (cf < 1), "seed": seed}
        for m, cf in (("perceiver", 1.0), ("perceiver", 0.2)) for f in (0.1, 0.5, 1.0) for seed in (0, 1)
        for s in ("val", "val_curve")
    ])
    fig = plots.psnr_vs_context(rows, tmp_path / "psnr.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["perceiver", "perceiver-sparse"]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0.1, 0.5, 1.0]
    assert list(line.get_ydata()) == pytest.approx([21.5, 25.5, 30.5])  # mean of seeds 0 and 1, val rows only
    assert ax.get_xscale() == "log" and (tmp_path / "psnr.png").stat().st_size > 1000


def test_psnr_vs_wall_reads_epoch_records(tmp_path):
    from nfjobs.context import Context
    from nfjobs.results import load_metrics

    for key, gain in (("a", 1.0), ("b", 2.0)):
        ctx = Context(key=key, kind="train", runs_root=tmp_path)
        for epoch in (1, 2, 3):
            ctx.log_metrics(epoch * 10, {"epoch": epoch, "curve_psnr@1.0": 10 + gain * epoch}, phase="epoch")
        ctx.close()
    curves = {k: load_metrics(tmp_path, k, phase="epoch") for k in ("a", "b")}
    curves["no metrics"] = load_metrics(tmp_path, "missing")
    fig = plots.psnr_vs_wall(curves, tmp_path / "wall.png")
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    assert list(lines[1].get_ydata()) == [12.0, 14.0, 16.0]
    assert list(lines[0].get_xdata()) == sorted(lines[0].get_xdata())


def test_map_vs_train_images_has_a_band_per_line_and_the_constant_predictor(tmp_path):
    from nfjobs.reports.traits import table

    rows = pl.DataFrame([
        {"status": "ok", "row_type": "summary", "scorer": sc, "n_prototypes": k, "n_train_images": n,
         "map": 0.2 + 0.01 * k + n / 1e4, "ap_q05": 0.05, "ap_q95": 0.6, "constant_map": 0.1}
        for sc in ("kmeans", "sae") for k in (8, 32) for n in (16, 160, 1600)
    ])
    fig = plots.map_vs_train_images(table(rows, {}), tmp_path / "map.png")
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["kmeans, 8 prototypes", "kmeans, 32 prototypes", "sae, 8 prototypes", "sae, 32 prototypes",
                      "constant predictor"]
    assert len(ax.collections) == 4  # one 5-95 % band per line
    assert list(ax.get_lines()[0].get_xdata()) == [16, 160, 1600] and ax.get_xscale() == "log"
    assert list(ax.get_lines()[-1].get_ydata()) == [0.1, 0.1, 0.1]
    layers = pl.concat([rows.with_columns(layer=pl.lit(name), map=pl.col("map") + shift)
                        for name, shift in (("layer2", 0.0), ("layer3", 0.3))])
    by_layer = table(layers, {})
    assert by_layer.columns[:2] == ["Layer", "Scorer"] and by_layer.height == 24  # never averaged over layers
    l2, l3 = (by_layer.filter(pl.col("Layer") == name)["mAP"].to_numpy() for name in ("layer2", "layer3"))
    assert np.allclose(l3 - l2, 0.3)
    labels = [ln.get_label() for ln in plots.map_vs_train_images(by_layer, tmp_path / "l.png").axes[0].get_lines()]
    assert labels[0] == "layer2, kmeans, 8 prototypes" and labels[4] == "layer3, kmeans, 8 prototypes"


def test_reconstruction_grid_has_labelled_rows(tmp_path):
    from nfjobs.nf.training import save_grid

    rows = [torch.full((2, 3, 4, 4), v) for v in (0.0, 0.5, 1.0)]
    save_grid(tmp_path / "plain.png", rows, scale=2)
    assert Image.open(tmp_path / "plain.png").size == (16, 24)
    save_grid(tmp_path / "grid.png", rows, scale=2, labels=["ground truth", "context 10%", "context 100%"],
              title="perceiver")
    img = Image.open(tmp_path / "grid.png").convert("RGB")
    w, h = img.size
    assert h == 24 + 20 and w > 16 + 40  # a title band and a label margin
    margin = w - 16
    assert img.getpixel((margin + 1, 20 + 1)) == (0, 0, 0) and img.getpixel((margin + 1, 20 + 17)) == (255, 255, 255)
    label_pixels = [img.getpixel((x, y)) for x in range(margin) for y in range(20, h)]
    assert min(sum(p) for p in label_pixels) < 200  # dark text was drawn beside the rows


def test_curves_are_drawn_against_step_and_against_wall_time(tmp_path):
    lines = {"lr=0.1": pl.DataFrame({"step": [10, 20, 30], "wall_s": [1.5, 2.5, 4.0], "loss": [3.0, 2.0, 1.5]})}
    fig = plots.curves(lines, "loss", "g: loss per step", tmp_path / "c.png")
    by_step, by_wall = fig.axes
    assert list(by_step.get_lines()[0].get_xdata()) == [10, 20, 30]
    assert list(by_wall.get_lines()[0].get_xdata()) == [1.5, 2.5, 4.0] and "wall-clock" in by_wall.get_xlabel()
    assert list(by_wall.get_lines()[0].get_ydata()) == [3.0, 2.0, 1.5]


def test_a_legend_shows_a_drawn_float_to_four_digits_and_a_written_value_as_written():
    from nfjobs.reports.plots import value_label

    assert value_label(0.000890904464452652) == "0.0008909" and value_label(0.550069769010154) == "0.5501"
    assert [value_label(v) for v in (0.2, 1.0, 1e-05, 3e-4, 64, "lainr")] == ["0.2", "1.0", "1e-05", "0.0003", "64",
                                                                               "lainr"]
