"""Seed 002's linear probe at obs_frac 0.1 through cache → probe: a JEPA field's sparse cache holds its context
tokens from round(0.1 · HW) seeded pixels in raster order, and the tiny sweep ends in finite probe accuracies."""

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from nfjobs import results
from nfjobs.activations import open_cache
from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.data import load_split
from nfjobs.jobs import cache
from nfjobs.jobs.train import Config as TrainConfig
from nfjobs.models import load_family
from nfjobs.models.ginr_config import GinrConfig
from nfjobs.models.jepa_config import JepaConfig
from nfjobs.nf import fields

ROOT = Path(__file__).parent.parent
DATA = DataConfig(builtin_n=40, val_frac=0.25)  # 30 train, 10 val images of 32×32
JEPA = JepaConfig(dim=16, depth=1, ff_dim=32, n_freqs=4, pred_depth=1, transformer_heads=2, recon_hidden=32,
                  d_state=4, mamba_backend="pure")
GINR = GinrConfig(patch_size=4, dim=32, pos_emb_dim=8, num_lp=16, depth=1, ff_dim=64, feature_dim=16, head_dim=8,
                  d_state=4, mamba_backend="pure")


def _train_dir(runs: Path, cfg: TrainConfig) -> Path:
    """A train run dir holding a freshly initialised `model.pt` of `cfg`, as the train job writes it."""
    torch.manual_seed(0)
    run_dir = runs / f"train-{cfg.model}"
    run_dir.mkdir(parents=True)
    model = load_family(cfg.model).build(cfg)
    torch.save({"config": dataclasses.asdict(cfg), "model": model.state_dict()}, run_dir / "model.pt")
    return run_dir


def _cache(runs: Path, key: str, checkpoint: Path, frac: float) -> Path:
    cfg = cache.Config(data=DATA, source="nf", checkpoint=str(checkpoint), context="sparse", context_frac=frac,
                       dtype="float32", shard_size=8, batch_size=5)
    ctx = Context(key=key, kind="cache", runs_root=runs)
    cache.run(cfg, ctx)
    return ctx.run_dir


@pytest.mark.parametrize("frac,n_points", [(0.1, 102), (0.05, 51)])  # 0.05: no 64-point minimum for JEPA
def test_jepa_sparse_cache_is_context_tokens_of_frac_pixels(tmp_path, frac, n_points):
    runs = tmp_path / "runs"
    run_dir = _train_dir(runs, TrainConfig(model="jepa", data=DATA, jepa=JEPA))
    val = open_cache(_cache(runs, "c", run_dir, frac) / "val")
    assert (val.n_images, val.n_tokens, val.d) == (10, n_points, JEPA.dim)
    assert abs(val.n_tokens / 1024 - frac) < 0.001 and val.meta["context_frac"] == frac
    assert val.meta["label"] == "jepa" and open_cache(run_dir.parent / "c" / "train").n_images == 30

    # the tokens are the context encoder's on the cache's seeded pixels, handed over in raster order
    model, _ = cache.load_field(run_dir, "cpu")
    idx = torch.from_numpy(cache.sparse_indices(range(10), 1024, n_points, seed=0, split="val")).sort(dim=1).values
    images = torch.from_numpy(load_split(DATA, "val").images).permute(0, 3, 1, 2).float() / 255  # (10, 3, 32, 32)
    coords, rgb = fields.grid(32, 32).expand(10, -1, -1), fields.pixels(images)  # (10, 1024, 2), (10, 1024, 3)
    with torch.no_grad():
        expected = model.encode(fields.gather(coords, idx), fields.gather(rgb, idx))  # (10, n_points, dim)
    np.testing.assert_allclose(val.load_all(), expected.numpy(), atol=1e-5)


def test_ginr_refuses_sparse_context(tmp_path):
    runs = tmp_path / "runs"
    run_dir = _train_dir(runs, TrainConfig(model="ginr", data=DATA, ginr=GINR))
    with pytest.raises(ValueError, match="encodes whole images"):
        _cache(runs, "g", run_dir, 0.1)


def test_tiny_sweep_ends_in_linear_probes(tmp_path, run_launch):
    path = ROOT / "configs" / "sweeps" / "jepa_tiny.toml"
    runs = tmp_path / "runs"
    assert run_launch("--sweep", path, "--debug") == 0
    df = results.load(path, runs).collect()
    assert set(df["status"]) == {"ok"}
    probes = df.filter(pl.col("kind") == "probe")
    assert probes.height == df.filter(pl.col("kind") == "train")["key"].n_unique() == 2
    assert set(probes["probe"]) == {"linear"} and set(probes["context"]) == {"sparse"}
    assert (probes["context_frac"] == 0.1).all() and (probes["n_tokens"] == 102).all()
    assert probes["accuracy"].is_finite().all()
