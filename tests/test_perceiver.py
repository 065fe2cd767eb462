"""The cascaded Perceiver-IO neural field: shapes, size at the seed configuration, objectives."""

from dataclasses import replace

import pytest
import torch

from nfjobs.jobs.train import Config
from nfjobs.models import perceiver
from nfjobs.models.perceiver_config import PerceiverConfig
from nfjobs.nf.config import NceConfig

TINY = PerceiverConfig(fourier_size=8, latent_dims=(16, 24), num_latents=8, cross_heads=2, cross_dim_head=8,
                       self_heads=2, self_dim_head=8, ff_mult=2, processor_depth=1)


def tiny_cfg(**kw) -> Config:
    kw = {"perceiver": TINY, "nce": NceConfig(n_anchors=16, n_candidates=32, proj_dim=8, ramp_steps=4), **kw}
    return Config(**kw)


def test_seed_configuration_has_35m_parameters_and_the_seed_layout():
    model = perceiver.build(Config())
    n = sum(p.numel() for p in model.parameters())
    assert 34.5e6 < n < 35.5e6
    assert [b.latents.shape for b in model.encoder] == [(256, 256), (256, 384), (256, 512)]
    assert model.encoder[0].cross.to_kv.in_features == 3 + 192 and len(model.processor) == 4


def test_encode_decode_shapes_and_image_convenience():
    torch.manual_seed(0)
    model = perceiver.build(tiny_cfg())
    images = torch.rand(3, 3, 8, 8)
    coords, rgb = perceiver.context(images, 0.5)
    assert coords.shape == (3, 64, 2) and rgb.shape == (3, 64, 3)  # at least 64 points
    latents = model.encode(coords, rgb)
    assert latents.shape == (3, 8, 24)
    out, hidden = model.decode(torch.rand(3, 10, 2) * 2 - 1, latents)
    assert out.shape == (3, 10, 3) and hidden.shape == (3, 10, 16)
    torch.testing.assert_close(model.encode_images(images), model.encode(*perceiver.context(images, 1.0)))
    assert perceiver.reconstruct(model, images, 0.2).shape == images.shape


@pytest.mark.parametrize("context_frac, nce_weight", [(1.0, 0.0), (0.2, 0.0), (1.0, 0.1), (0.2, 0.1)])
def test_every_objective_gives_a_finite_loss_and_gradients(context_frac, nce_weight):
    torch.manual_seed(0)
    cfg = tiny_cfg(context_frac=context_frac, nce_weight=nce_weight, jitter=True)
    model = perceiver.build(cfg)
    loss, logs = perceiver.training_loss(model, torch.rand(2, 3, 16, 16), torch.tensor(10), cfg)
    loss.backward()
    assert torch.isfinite(loss) and ("nce" in logs) == (nce_weight > 0)
    assert model.encoder[0].cross.to_q.weight.grad.abs().sum() > 0
    assert (model.nce_head.weight.grad is not None) == (nce_weight > 0)


def test_nce_weight_ramps_in_from_zero():
    torch.manual_seed(0)
    cfg = tiny_cfg(nce_weight=0.1)
    model = perceiver.build(cfg)
    images = torch.rand(2, 3, 8, 8)
    torch.manual_seed(1)
    loss0, logs0 = perceiver.training_loss(model, images, torch.tensor(0), cfg)
    torch.manual_seed(1)
    loss2, logs2 = perceiver.training_loss(model, images, torch.tensor(2), cfg)
    torch.testing.assert_close(loss0, logs0["recon"])
    torch.testing.assert_close(loss2, logs2["recon"] + 0.05 * logs2["nce"])


def test_fixed_latents_are_buffers_and_learnable_ones_parameters():
    fixed = perceiver.build(tiny_cfg(perceiver=replace(TINY, learn_latents=False)))
    learned = perceiver.build(tiny_cfg())
    assert "encoder.0.latents" not in dict(fixed.named_parameters())
    assert "encoder.0.latents" in dict(learned.named_parameters())
    learned.load_state_dict(fixed.state_dict())  # same keys either way


def test_evaluate_reports_every_context_fraction_and_the_training_one():
    torch.manual_seed(0)
    cfg = tiny_cfg(context_frac=0.3, eval_batch_size=4)
    rows = perceiver.evaluate(perceiver.build(cfg), torch.rand(6, 3, 8, 8), cfg)
    assert [r["eval_context_frac"] for r in rows] == [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert all(0 < r["psnr"] < 60 and r["split"] == "val" for r in rows)
