"""The H200 runs of seeds 002/003 (`seeds_h200.toml`, `seeds_h200_lr.toml`) and `bench/seed_results.py`: the stated
recipe rules hold in the files, and a tiny copy of the sweep runs end to end on the CPU into the results folder."""

import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import launch
from data_fixtures import write_cifar
from nfjobs import results, sweep

ROOT = Path(__file__).parent.parent
SEEDS = ROOT / "configs" / "sweeps" / "seeds_h200.toml"
LR = ROOT / "configs" / "sweeps" / "seeds_h200_lr.toml"
RECIPE = {"ginr": (16, 5e-4), "jepa": (128, 5e-4)}
"""The seeds' recipes: (batch, lr) of seed 003 (GINR) and seed 002 (JEPA)."""
N_TRAIN = 45_000


def _cells(path: Path, tmp_path: Path) -> list[sweep.Cell]:
    write_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    return sweep.expand([path], [sweep.Override("data.root", str(tmp_path / "data"))])


def test_the_seed_sweep_states_its_rules(tmp_path):
    cells = _cells(SEEDS, tmp_path)
    train = [c for c in cells if c.kind == "train"]
    assert {c.group for c in train} == {"jepa_default", "ginr_default", "ginr_faithful_bias", "ginr_no_jitter",
                                        "ginr_simple_decoder"}
    assert len({c.config.epochs for c in train}) == 1  # the ablations at the same budget as the default
    for c in train:
        cfg = c.config
        assert cfg.data.name == "cifar10" and cfg.data.val_frac == 0.1 and cfg.data.n_train == 0  # last 5,000 held out
        batch, lr = RECIPE[cfg.model]
        assert cfg.optim.lr == pytest.approx(lr * math.sqrt(cfg.batch_size / batch))  # sqrt scaling
        assert cfg.optim.warmup_steps == N_TRAIN // cfg.batch_size  # one epoch
        assert cfg.compile and cfg.precision == "bf16" and cfg.curve_images > 0
        assert getattr(cfg, cfg.model).mamba_backend == "auto"
        if cfg.model == "jepa":  # the EMA momentum reaches 1 at the end of the run
            assert cfg.jepa.ema_ramp_steps == cfg.epochs * (N_TRAIN // cfg.batch_size)
    default = next(c.config.ginr for c in train if c.group == "ginr_default")
    changed = {c.group: {k for k in vars(default) if getattr(c.config.ginr, k) != getattr(default, k)}
               for c in train if c.config.model == "ginr"}
    assert changed == {"ginr_default": set(), "ginr_no_jitter": {"jitter_std"}, "ginr_simple_decoder": {"decoder"},
                       "ginr_faithful_bias": {"spatial_bias", "alpha", "alpha_learnable"}}
    probe = next(c for c in cells if c.kind == "probe")
    cache = next(c for c in cells if c.kind == "cache")
    assert probe.deps == (cache.key,) and cache.config.context_frac == 0.1
    assert cache.deps == (next(c.key for c in train if c.group == "jepa_default"),)


def test_the_lr_check_compares_unscaled_sqrt_and_linear_scaling(tmp_path):
    cells = _cells(LR, tmp_path)
    batch, lr = RECIPE["ginr"]
    ratio = cells[0].config.batch_size / batch
    assert sorted(c.config.optim.lr for c in cells) == pytest.approx([lr, lr * math.sqrt(ratio), lr * ratio])
    main = next(c.config for c in _cells(SEEDS, tmp_path / "b") if c.group == "ginr_default")
    for c in cells:  # the default GINR of the main sweep but for lr, budget and warm-up
        assert c.config.ginr == main.ginr and c.config.batch_size == main.batch_size
    assert main.optim.lr in {c.config.optim.lr for c in cells}


def _edit(text: str, old: str, new: str, count: int) -> str:
    assert text.count(old) == count, old
    return text.replace(old, new)


@pytest.mark.slow
def test_a_tiny_copy_runs_end_to_end_and_seed_results_writes_the_results_folder(tmp_path):
    """The shipped file with toy model sizes and the pure scan (the full-size GINR takes minutes per step on a CPU)."""
    tiny_ginr = ('ginr = { patch_size = 4, dim = 32, pos_emb_dim = 8, num_lp = 16, depth = 1, ff_dim = 64, '
                 'feature_dim = 16, head_dim = 8, d_state = 4, simple_hidden = 32, simple_freqs = 4, '
                 'mamba_backend = "pure"')
    text = _edit(SEEDS.read_text(), 'ginr = { mamba_backend = "auto"', tiny_ginr, 4)
    text = _edit(text, 'jepa = { ema_ramp_steps = 435, mamba_backend = "auto"',
                 'jepa = { ema_ramp_steps = 3, dim = 16, depth = 1, ff_dim = 32, n_freqs = 4, pred_depth = 1, '
                 'transformer_heads = 2, recon_hidden = 32, d_state = 4, mamba_backend = "pure"', 1)
    (tmp_path / "sw").mkdir()
    path = tmp_path / "sw" / "seeds_h200.toml"  # same stem: the same sweep name as the shipped file
    path.write_text(text)
    lr_path = tmp_path / "sw" / "seeds_h200_lr.toml"
    lr_path.write_text(_edit(LR.read_text(), 'ginr = { mamba_backend = "auto"', tiny_ginr, 1))
    write_cifar(tmp_path / "data", n_per_batch=8, n_test=2)  # 40 images: 36 train, the last 4 val
    runs = tmp_path / "runs"
    assert launch.main(["--sweep", str(path), str(lr_path), "--debug", "--runs-root", str(runs), "--log-root", str(tmp_path / "logs"),
                        "--data.root", str(tmp_path / "data"), "--epochs", "2", "--batch-size", "12",
                        "--curve-images", "4", "--eval-batch-size", "12", "--precision", "auto"]) == 0
    df = results.load(path, runs).collect()
    assert df["key"].n_unique() == 7 and set(df["status"]) == {"ok"}
    probe = df.filter(pl.col("kind") == "probe")
    assert probe["n_train"].to_list() == [36] and probe["n_val"].to_list() == [4]
    jepa = df.filter(pl.col("model") == "jepa", pl.col("split") == "val")
    assert {0.1, 0.5} <= set(jepa["eval_context_frac"])
    for col in ("psnr", "train_jepa", "train_emb_std", "train_z_std"):
        assert jepa[col].is_finite().all(), col

    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "seed_results.py"), "--runs-root", str(runs),
                           "--out", str(out), "--lr-sweep", "seeds_h200_lr"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for name in ("ginr_psnr_vs_time.png", "jepa_psnr_vs_time.png", "ginr_variants.png", "recon_ginr_default.png",
                 "recon_ginr_faithful_bias.png", "recon_ginr_no_jitter.png", "recon_ginr_simple_decoder.png",
                 "recon_jepa_default.png", "lr_psnr_vs_time.png"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "results.md").read_text()
    ginr = df.filter(pl.col("model") == "ginr", pl.col("split") == "val").sort("group")
    for group, psnr in ginr.select("group", "psnr").rows():  # the table holds the rows' numbers, not others
        assert f"| {group} | {psnr:.4f} |" in md
    psnr01 = jepa.filter(pl.col("eval_context_frac") == 0.1)["psnr"][0]
    assert f"| jepa_default | {psnr01:.4f} |" in md
    assert f"| {probe['accuracy'][0]:.4f} |" in md and "Cells that did not end ok\n\n(none)" in md
    lrs = results.load(lr_path, runs).collect().filter(pl.col("split") == "val").sort("optim.lr")
    assert len(lrs) == 3
    for lr, psnr in lrs.select("optim.lr", "psnr").rows():
        assert f"| {lr:.4f} | {psnr:.4f} |" in md
