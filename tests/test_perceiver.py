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


def plain_attend(attn, x, context):
    q = attn.to_q(attn.norm(x)).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    k, v = attn.to_kv(attn.norm_context(context)).unflatten(-1, (2, attn.heads, -1)).permute(2, 0, 3, 1, 4)
    w = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    return attn.to_out((w @ v).transpose(1, 2).flatten(2))


def plain_forward(model, coords, rgb, queries):
    """The field as plainly written (each block: its own context LayerNorm → Linear, latents expanded over the
    batch, queries projected per item, softmax attention even over one key): what the fused paths must equal."""

    def latent_block(block, x):
        a = block.attn
        q, k, v = a.to_qkv(a.norm(x)).unflatten(-1, (3, a.heads, -1)).permute(2, 0, 3, 1, 4)
        x = x + a.to_out(((q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v).transpose(1, 2).flatten(2))
        return x + block.ff(x)

    context = torch.cat([rgb * 2 - 1, model.gff(coords)], dim=-1)
    lat = None
    for block in model.encoder:
        x = block.latents.expand(len(context), -1, -1)
        x = x + plain_attend(block.cross, x, context)
        lat = latent_block(block.latent, x if lat is None else x + block.proj(lat))
    for block in model.processor:
        lat = latent_block(block, lat)
    q = model.gff(queries)
    hidden = q + plain_attend(model.decoder_attn, q, lat)
    hidden = hidden + model.decoder_ff(hidden)
    return model.to_rgb(hidden) * 0.5 + 0.5, lat


@pytest.mark.parametrize("shared_queries", [True, False])
def test_fused_paths_compute_the_plain_function_and_gradients(shared_queries):
    """Folded context LayerNorms, latent and shared-query projections computed once: same outputs and grads."""
    torch.manual_seed(0)
    model = perceiver.build(tiny_cfg(perceiver=replace(TINY, fourier_size=7)))  # context width 17: padded to 24
    for p in model.parameters():  # non-trivial LayerNorm affines, so the fold is exercised
        p.data.add_(torch.randn_like(p) * 0.1)
    images = torch.rand(3, 3, 8, 8)
    coords, rgb = perceiver.context(images, 0.5)
    grid = torch.rand(20, 2) * 2 - 1
    queries = grid.expand(3, -1, -1) if shared_queries else torch.rand(3, 20, 2) * 2 - 1
    grads = []
    for fn in (lambda: plain_forward(model, coords, rgb, queries),
               lambda: (model.decode(queries, lat := model.encode(coords, rgb))[0], lat)):
        model.zero_grad()
        rgb_out, lat = fn()
        (rgb_out.square().mean() + lat.mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if len(grads) == 1:
            ref = (rgb_out.detach(), lat.detach())
    torch.testing.assert_close((rgb_out, lat), ref, rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and "encoder.0.cross.norm_context.weight" in grads[1]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_single_latent_token_decodes_like_softmax_attention_over_it():
    """TDSM decodes one token at a time: the shortcut (softmax over one key is 1) must equal attention."""
    torch.manual_seed(0)
    model = perceiver.build(tiny_cfg())
    lat = torch.randn(4, 1, 24)
    q = model.gff(torch.rand(4, 10, 2) * 2 - 1)
    torch.testing.assert_close(model.decoder_attn(q, lat), plain_attend(model.decoder_attn, q, lat))
