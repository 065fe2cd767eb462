"""NF+JEPA at tiny size on CPU: sampling, target-encoder grad check, EMA, collapse monitor, learning, evaluation."""

from dataclasses import dataclass, replace

import pytest
import torch

from nfjobs.models import jepa
from nfjobs.models.jepa_config import JepaConfig

TINY = JepaConfig(dim=16, depth=1, ff_dim=32, n_freqs=4, pred_depth=1, transformer_heads=2, recon_hidden=32,
                  d_state=4, mamba_backend="pure", ema_ramp_steps=10)


@dataclass(frozen=True)
class Cfg:
    """The fields of the train job's Config that a family reads."""

    jepa: JepaConfig = TINY
    context_frac: float = 1.0
    jitter: bool = False
    nce_weight: float = 0.0
    eval_batch_size: int = 3


def _images(b=4, seed=0):
    return torch.rand(b, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_context_and_target_are_disjoint_sorted_and_sized():
    ctx, tgt = jepa.split_indices(3, 64, 6, 13, "cpu")
    assert ctx.shape == (3, 6) and tgt.shape == (3, 13)
    for c, t in zip(ctx.tolist(), tgt.tolist()):
        assert c == sorted(c) and t == sorted(t) and not set(c) & set(t)
    coords, values = jepa.observe(_images(2), 0.1)
    assert coords.shape == (2, 6, 2) and values.shape == (2, 6, 3)


@pytest.mark.parametrize("backend", ["pure", "transformer"])
def test_shapes_and_backend(backend):
    model = jepa.build(Cfg(replace(TINY, mamba_backend=backend)))
    latents = model.encode(*jepa.observe(_images(), 0.2))
    rgb, hidden = model.decode(torch.rand(4, 7, 2), latents)
    assert latents.shape == (4, 13, 16) and rgb.shape == (4, 7, 3) and hidden.shape[:2] == (4, 7)
    assert model.backend == backend


def test_target_encoder_gets_no_gradients():
    torch.manual_seed(0)
    cfg = Cfg()
    model = jepa.build(cfg)
    loss, _ = jepa.training_loss(model, _images(), 0, cfg)
    loss.backward()
    assert jepa.target_grad_problems(model) == []
    assert all(p.grad is not None for p in model.context_encoder.parameters())
    # the check does catch a target encoder that backprop could train
    next(model.target_encoder.parameters()).requires_grad_(True)
    assert jepa.target_grad_problems(model)


def test_optimiser_over_all_parameters_leaves_target_to_ema():
    torch.manual_seed(0)
    cfg = Cfg()
    model = jepa.build(cfg)
    before = [p.clone() for p in model.target_encoder.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loss, _ = jepa.training_loss(model, _images(), 0, cfg)
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.target_encoder.parameters()))
    jepa.after_step(model, 0, cfg)  # momentum 0.996: target moves 0.4 % of the way to the context encoder
    for t, b, c in zip(model.target_encoder.parameters(), before, model.context_encoder.parameters()):
        torch.testing.assert_close(t, 0.996 * b + 0.004 * c)


def test_momentum_schedule():
    jc = replace(TINY, ema_momentum=0.99, ema_momentum_end=1.0, ema_ramp_steps=100)
    assert jepa.ema_momentum(0, jc).item() == pytest.approx(0.99)
    assert jepa.ema_momentum(torch.tensor(50), jc).item() == pytest.approx(0.995)
    assert jepa.ema_momentum(500, jc).item() == 1.0


def test_collapse_monitor():
    torch.manual_seed(0)
    assert jepa.embedding_std(torch.ones(4, 10, 32) * 3.0) < 1e-3
    assert jepa.embedding_std(torch.randn(4, 100, 32)) == pytest.approx(1.0, abs=0.1)
    _, logs = jepa.training_loss(jepa.build(Cfg()), _images(), 0, Cfg())
    assert {"jepa", "recon_mse", "psnr", "emb_std", "z_std", "target_std", "ema_momentum"} <= set(logs)


@pytest.mark.parametrize("variant", [
    dict(),
    dict(mamba_backend="transformer", pred_mode="pool", loss="cosine", recon_decoder="global"),
    dict(mamba_backend="transformer", recon_weight=0.0),
])
def test_a_few_steps_reduce_the_losses(variant):
    torch.manual_seed(0)
    cfg = Cfg(replace(TINY, **variant))
    model = jepa.build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = _images()
    history = []
    for step in range(15):
        loss, logs = jepa.training_loss(model, images, step, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        jepa.after_step(model, step, cfg)
        history.append((logs["jepa"].item(), logs["recon_mse"].item()))
    first, last = torch.tensor(history[:3]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert (last < first).all(), history


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_recon_gradient_reaches_the_encoder_only_when_weighted(weight, monkeypatch):
    monkeypatch.setattr(jepa, "jepa_loss", lambda pred, target, kind: 0.0 * pred.sum())  # recon loss alone
    cfg = Cfg(replace(TINY, recon_weight=weight))
    model = jepa.build(cfg)
    loss, _ = jepa.training_loss(model, _images(), 0, cfg)
    loss.backward()
    encoder_grad = sum(p.grad.abs().sum() for p in model.context_encoder.parameters() if p.grad is not None)
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert (encoder_grad > 0) == (weight > 0)


def test_reconstruct_and_unused_train_options():
    out = jepa.reconstruct(jepa.build(Cfg()), _images(2), 0.2)
    assert out.shape == (2, 3, 8, 8) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="obs_frac"):
        jepa.build(replace(Cfg(), context_frac=0.2))


def test_evaluate_rows():
    cfg = Cfg()
    rows = jepa.evaluate(jepa.build(cfg), _images(5), cfg)
    assert [r["eval_context_frac"] for r in rows] == [0.01, 0.05, 0.1, 0.2, 0.5]
    assert all(r["target_grad_ok"] and r["backend"] == "pure" and 0 < r["psnr"] < 60 for r in rows)
