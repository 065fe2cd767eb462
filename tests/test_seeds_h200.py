"""The H200 run of seeds 002/003 (`seeds_h200.toml`, the lr check its `ginr_lr` group) and `launch.py tables`:
the stated recipe rules hold in the file, its way to lengthen the run keeps them, and a tiny copy of the sweep runs
end to end on the CPU into the results folder."""

import math
import subprocess
from pathlib import Path

import polars as pl
import pytest

from data_fixtures import write_cifar
from nfjobs import results, sweep

ROOT = Path(__file__).parent.parent
SEEDS = ROOT / "configs" / "sweeps" / "seeds_h200.toml"
RECIPE = {"ginr": (16, 5e-4), "jepa": (128, 5e-4)}
"""The seeds' recipes: (batch, lr) of seed 003 (GINR) and seed 002 (JEPA)."""
N_TRAIN = 45_000
ROUNDED = 5e-3
"""Relative tolerance of a scaled lr: the file writes it to three significant digits (5e-4 * sqrt(8) = 1.41e-3)."""


def _cells(path: Path, tmp_path: Path) -> list[sweep.Cell]:
    write_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    return sweep.expand([path], [sweep.Override("data.root", str(tmp_path / "data"))])


def _check_rules(cells: list[sweep.Cell]) -> None:
    """The rules the file's header states, on its expanded cells."""
    train = [c for c in cells if c.kind == "train"]
    assert sorted(c.group for c in train) == ["ginr_default", "ginr_faithful_bias", "ginr_lr", "ginr_lr",
                                              "ginr_no_jitter", "ginr_simple_decoder", "jepa_default"]
    ginr = [c for c in train if c.config.model == "ginr"]
    assert len({c.config.epochs for c in ginr}) == 1  # ablations and lr check at the default's budget
    assert len({(c.config.batch_size, c.config.optim.warmup_steps) for c in ginr}) == 1
    for c in train:
        cfg = c.config
        assert cfg.data.name == "cifar10" and cfg.data.val_frac == 0.1 and cfg.data.n_train == 0  # last 5,000 held out
        steps = N_TRAIN // cfg.batch_size
        assert 0 < cfg.optim.warmup_steps <= steps  # at most one epoch
        assert not cfg.compile and cfg.precision == "bf16" and cfg.curve_images > 0
        assert getattr(cfg, cfg.model).mamba_backend == "auto"
        batch, lr = RECIPE[cfg.model]
        if c.group != "ginr_lr":  # square-root scaling
            assert cfg.optim.lr == pytest.approx(lr * math.sqrt(cfg.batch_size / batch), rel=ROUNDED)
        if cfg.model == "jepa":  # the EMA momentum reaches 1 at the end of the run
            assert cfg.jepa.ema_ramp_steps == cfg.epochs * steps

    # the lr check: unscaled, square-root (= ginr_default) and linear, everything else as ginr_default
    default = next(c.config for c in ginr if c.group == "ginr_default")
    check = [c.config for c in ginr if c.group in ("ginr_default", "ginr_lr")]
    batch, lr = RECIPE["ginr"]
    ratio = default.batch_size / batch
    assert sorted(c.optim.lr for c in check) == pytest.approx([lr, lr * math.sqrt(ratio), lr * ratio], rel=ROUNDED)
    for cfg in check:
        assert cfg.ginr == default.ginr and cfg.optim.warmup_steps == default.optim.warmup_steps

    changed = {c.group: {k for k in vars(default.ginr) if getattr(c.config.ginr, k) != getattr(default.ginr, k)}
               for c in ginr}
    assert changed == {"ginr_default": set(), "ginr_no_jitter": {"jitter_std"}, "ginr_simple_decoder": {"decoder"},
                       "ginr_faithful_bias": {"spatial_bias", "alpha", "alpha_learnable"}, "ginr_lr": set()}
    probe = next(c for c in cells if c.kind == "probe")
    cache = next(c for c in cells if c.kind == "cache")
    assert probe.deps == (cache.key,) and cache.config.context_frac == 0.1
    assert cache.deps == (next(c.key for c in train if c.group == "jepa_default"),)


def test_the_seed_sweep_states_its_rules(tmp_path):
    _check_rules(_cells(SEEDS, tmp_path))


def test_the_headers_way_to_lengthen_the_run_keeps_the_rules(tmp_path):
    """The header's sed command (run as written, into tmp_path) changes the epochs and JEPA's EMA ramp together."""
    lines = SEEDS.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("#   G="))
    command = []
    for line in lines[first:]:
        command.append(line.removeprefix("#").strip().removesuffix("\\"))
        if not line.endswith("\\"):
            break
    longer = tmp_path / "seeds_h200.toml"
    script = " ".join(command).replace("/tmp/seeds_h200.toml", str(longer))
    subprocess.run(["bash", "-c", script], cwd=ROOT, check=True)
    cells = _cells(longer, tmp_path)
    epochs = {c.config.model: c.config.epochs for c in cells if c.kind == "train"}
    assert epochs == {"ginr": 6, "jepa": 12}
    _check_rules(cells)


def _edit(text: str, old: str, new: str, count: int) -> str:
    assert text.count(old) == count, old
    return text.replace(old, new)


@pytest.mark.slow
def test_a_tiny_copy_runs_end_to_end_and_tables_writes_the_results_folder(tmp_path, run_launch):
    """The shipped file with toy model sizes and the pure scan (the full-size GINR takes minutes per step on a CPU)."""
    tiny_ginr = ('ginr = { patch_size = 4, dim = 32, pos_emb_dim = 8, num_lp = 16, depth = 1, ff_dim = 64, '
                 'feature_dim = 16, head_dim = 8, d_state = 4, simple_hidden = 32, simple_freqs = 4, '
                 'mamba_backend = "pure"')
    text = _edit(SEEDS.read_text(), 'ginr = { mamba_backend = "auto"', tiny_ginr, 5)
    text = _edit(text, 'jepa = { ema_ramp_steps = 522, mamba_backend = "auto"',
                 'jepa = { ema_ramp_steps = 3, dim = 16, depth = 1, ff_dim = 32, n_freqs = 4, pred_depth = 1, '
                 'transformer_heads = 2, recon_hidden = 32, d_state = 4, mamba_backend = "pure"', 1)
    (tmp_path / "sw").mkdir()
    path = tmp_path / "sw" / "seeds_h200.toml"  # same stem: the same sweep name as the shipped file
    path.write_text(text)
    write_cifar(tmp_path / "data", n_per_batch=8, n_test=2)  # 40 images: 36 train, the last 4 val
    runs = tmp_path / "runs"
    assert run_launch("--sweep", path, "--debug", "--data.root", tmp_path / "data", "--epochs", "2", "--batch-size",
                      "12", "--curve-images", "4", "--eval-batch-size", "12", "--precision", "auto") == 0
    df = results.load(path, runs).collect()
    assert df["key"].n_unique() == 9 and set(df["status"]) == {"ok"}
    probe = df.filter(pl.col("kind") == "probe")
    assert probe["n_train"].to_list() == [36] and probe["n_val"].to_list() == [4]
    jepa = df.filter(pl.col("model") == "jepa", pl.col("split") == "val")
    assert {0.1, 0.5} <= set(jepa["eval_context_frac"])
    for col in ("psnr", "train_jepa", "train_emb_std", "train_z_std"):
        assert jepa[col].is_finite().all(), col

    out = tmp_path / "results"
    assert run_launch("tables", "--sweep", path, "--out", out) == 0
    for name in ("fields_ginr_psnr_vs_time.png", "fields_jepa_psnr_vs_time.png", "representations_accuracy.png"):
        assert (out / name).stat().st_size > 1000, name
    lines = (out / "fields_summary.md").read_text().splitlines()
    val = df.filter(pl.col("split") == "val")
    ginr = val.filter(pl.col("model") == "ginr")
    assert ginr["key"].n_unique() == 6
    for group, psnr in ginr.select("group", "psnr").rows():  # the table holds the rows' numbers, not others
        assert any(ln.startswith(f"| {group} |") and f"| {psnr:.4f} |" in ln for ln in lines), (group, psnr)
    for psnr in jepa["psnr"]:
        assert any(ln.startswith("| jepa_default |") and f"| {psnr:.4f} |" in ln for ln in lines), psnr
    assert "### jepa_default: per epoch (metrics.jsonl)" in lines and lines[-1] == "(none)"
    assert f"| {probe['accuracy'][0]:.4f} |" in (out / "representations_summary.md").read_text()
