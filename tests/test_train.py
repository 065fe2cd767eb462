"""The `train` job kind: exact kill-and-resume, the four seed variants, outputs, light import."""

import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nfjobs.config import DataConfig, OptimConfig
from nfjobs.context import Context
from nfjobs.jobs import train
from nfjobs.models import trained
from nfjobs.models import perceiver
from nfjobs.models.perceiver_config import PerceiverConfig
from nfjobs.nf.config import NceConfig

ROOT = Path(__file__).parent.parent
TINY = train.Config(
    data=DataConfig(name="builtin", builtin_n=120, val_frac=0.2, augment=True),
    optim=OptimConfig(lr=1e-3, warmup_steps=2),
    perceiver=PerceiverConfig(fourier_size=8, latent_dims=(16, 24), num_latents=8, cross_heads=1, cross_dim_head=8,
                              self_heads=1, self_dim_head=8, ff_mult=1, processor_depth=1),
    nce=NceConfig(n_anchors=16, n_candidates=32, proj_dim=8, ramp_steps=3),
    epochs=3, batch_size=24, curve_images=8, eval_batch_size=24, compile=False,
)


class Crash(Exception):
    pass


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_loss_trajectory(tmp_path, monkeypatch):
    cfg = replace(TINY, context_frac=0.5, nce_weight=0.1, jitter=True)  # every random draw of a step in play
    rows_a = train.run(cfg, Context(key="a", kind="train", runs_root=tmp_path))
    losses_a = np.load(tmp_path / "a" / "train_loss.npy")
    assert len(losses_a) == 3 * 4

    real, calls = perceiver.training_loss, []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 6:  # mid epoch 2: epoch 1's checkpoint exists, epoch 2's work is lost
            raise Crash
        return real(*args)

    monkeypatch.setattr(perceiver, "training_loss", crashing)
    with pytest.raises(Crash):
        train.run(cfg, Context(key="b", kind="train", runs_root=tmp_path))
    monkeypatch.setattr(perceiver, "training_loss", real)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "model.pt").exists()

    rows_b = train.run(cfg, Context(key="b", kind="train", runs_root=tmp_path))  # a fresh process's view
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "train_loss.npy"), losses_a)
    drop = ("train_s", "wall_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_b] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows_a]


@pytest.mark.slow
def test_the_four_variants_of_the_tiny_sweep_run_and_the_finetune_starts_from_the_sparse_model(tmp_path):
    sweep = tomllib.loads((ROOT / "configs/sweeps/nf_variants_tiny.toml").read_text())
    shared = {k: v for k, v in sweep.items() if k != "group"}
    assert [g["name"] for g in sweep["group"]] == ["baseline", "sparse", "nce", "finetune"]
    results = {}
    for group in sweep["group"]:
        fields = {**shared, **{k: v for k, v in group.items() if k not in ("name", "kind")}}
        if fields.get("init_from") == "@sparse":
            fields["init_from"] = "sparse"
        cfg = trained.config_from_dict(train.Config, fields)
        assert train.depends_on(cfg) == ([cfg.init_from] if cfg.init_from else [])
        results[group["name"]] = train.run(cfg, Context(key=group["name"], kind="train", runs_root=tmp_path))

    for name, rows in results.items():
        final = [r for r in rows if r["split"] == "val"]
        assert [r["eval_context_frac"] for r in final] == [0.05, 0.1, 0.2, 0.5, 1.0]
        assert all(np.isfinite(r["psnr"]) and r["epoch"] == 1 for r in final)
        assert (tmp_path / name / "reconstructions.png").stat().st_size > 0
    model, cfg = trained.load_trained(tmp_path / "finetune")
    assert cfg.init_from == "sparse" and cfg.nce_weight == 0.1 and not model.training


def test_curve_rows_follow_every_epoch_and_init_from_a_missing_cell_fails_clearly(tmp_path):
    rows = train.run(replace(TINY, epochs=2, data=replace(TINY.data, augment=False)), Context("c", "train", tmp_path))
    assert sorted({r["epoch"] for r in rows if r["split"] == "val_curve"}) == [1, 2]
    assert "context_frac" not in rows[0]  # would clash with the config column
    for r in rows:  # the family's logs, epoch means, ride along as train_<name>: here the loss is the recon term
        assert r["train_recon"] == pytest.approx(r["train_loss"], rel=1e-4)
    last_curve = [r["train_recon"] for r in rows if r["split"] == "val_curve" and r["epoch"] == 2]
    assert {r["train_recon"] for r in rows if r["split"] == "val"} == set(last_curve)
    with pytest.raises(FileNotFoundError, match="no-such-cell"):
        train.run(replace(TINY, init_from="no-such-cell"), Context("d", "train", tmp_path))


def test_check_reports_a_missing_cifar_root_and_the_module_imports_without_torch():
    problems = train.check(replace(TINY, data=DataConfig(name="cifar10", root="/nonexistent")))
    assert problems and problems[0][0] == "data.root"
    code = "import sys, nfjobs.jobs.train, nfjobs.models; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_search_s_pruner_is_asked_after_every_epoch_and_stops_the_cell_with_its_checkpoint_kept(tmp_path):
    from nfjobs.context import Pruned

    asked = []
    ctx = Context("p", "train", tmp_path, pruning=lambda step, metrics: asked.append((step, metrics)) or True)
    with pytest.raises(Pruned, match="epoch 1"):
        train.run(replace(TINY, epochs=2, data=replace(TINY.data, augment=False)), ctx)
    [(step, metrics)] = asked
    assert step == 1 and {"train_loss", "curve_psnr@1.0"} <= set(metrics)
    assert (tmp_path / "p" / "checkpoint.pt").exists() and not (tmp_path / "p" / "model.pt").exists()
