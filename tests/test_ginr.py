"""Mamba-GINR at tiny size on CPU: shapes, LP interleaving, spatial bias, learning, evaluation rows."""

from dataclasses import dataclass, replace

import pytest
import torch

from nfjobs.models import ginr
from nfjobs.models.ginr_config import GinrConfig

TINY = GinrConfig(image_size=8, dim=16, pos_emb_dim=8, num_lp=16, depth=1, ff_dim=32, feature_dim=16, head_dim=8,
                  d_state=4, transformer_heads=2, simple_hidden=32, simple_freqs=4, mamba_backend="pure")


@dataclass(frozen=True)
class Cfg:
    """The fields of the train job's Config that a family reads."""

    ginr: GinrConfig = TINY
    context_frac: float = 1.0
    jitter: bool = False
    nce_weight: float = 0.0
    eval_batch_size: int = 3


def _images(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g)


@pytest.mark.parametrize("decoder", ["lainr", "simple"])
@pytest.mark.parametrize("backend", ["pure", "transformer"])
def test_shapes_and_backend(decoder, backend):
    torch.manual_seed(0)
    model = ginr.build(Cfg(replace(TINY, decoder=decoder, mamba_backend=backend)))
    latents = model.encode(_images())
    rgb, hidden = model.decode(torch.rand(4, 5, 2), latents)
    assert latents.shape == (4, 16, 16) and rgb.shape == (4, 5, 3) and hidden.shape[:2] == (4, 5)
    assert model.backend == backend


def test_wrong_image_size_and_unused_train_options_are_clear_errors():
    with pytest.raises(ValueError, match="image_size"):
        ginr.build(Cfg()).encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="context_frac"):
        ginr.build(replace(Cfg(), context_frac=0.2))


def test_patch_centres_and_reconstruct():
    centres = ginr.patch_centres(8, 2)
    assert centres.shape == (16, 2) and torch.allclose(centres[0], torch.tensor([1 / 14, 1 / 14]))
    out = ginr.reconstruct(ginr.build(Cfg()), _images(2), 0.1)
    assert out.shape == (2, 3, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_lp_tokens_interleave_equidistantly():
    order, lp_pos = ginr.interleave_order(n_patches=16, num_lp=16)
    assert sorted(order.tolist()) == list(range(32))
    assert order[lp_pos].tolist() == list(range(16, 32))  # LPs in order at their slots
    patch_slots = torch.ones(32, dtype=torch.bool)
    patch_slots[lp_pos] = False
    assert order[patch_slots].tolist() == list(range(16))  # patches keep raster order
    assert lp_pos[0] == 0 and lp_pos[-1] == 31 and (lp_pos.diff() >= 2).all()


@pytest.mark.parametrize("num_lp", [16, 5])
def test_token_cells_are_where_the_2d_bias_places_each_latent(num_lp):
    model = ginr.build(Cfg(replace(TINY, num_lp=num_lp)))
    assert model.token_grid == (4, 4) and model.token_cells.shape == (num_lp,)
    centres = ginr.patch_centres(8, 2)
    torch.testing.assert_close(model.decoder.bias.token_pos, centres[model.token_cells])
    if num_lp == 16:  # one LP per patch: latent k belongs to patch k, the square grid in raster order
        assert model.token_cells.tolist() == list(range(16))
    full = ginr.MambaGinr(GinrConfig(mamba_backend="pure", depth=1), "pure")  # CIFAR-10 size: 16x16 of 2x2
    assert full.token_grid == (16, 16) and full.token_cells.tolist() == list(range(256))


def _bias(mode, alpha=256.0):
    model = ginr.build(Cfg(replace(TINY, spatial_bias=mode, alpha=alpha)))
    return model.decoder.bias


def test_2d_bias_peaks_at_the_nearest_token_and_is_local():
    bias = _bias("2d")
    q = bias.token_pos[[5, 10]].unsqueeze(0)  # queries exactly at tokens 5 and 10
    b = bias(q)[0, 0]  # (Q, N)
    assert b.argmax(-1).tolist() == [5, 10]
    assert torch.allclose(b.max(-1).values, torch.zeros(2))
    # one token spacing (1/4 on a 4×4 patch grid) costs α/16 nats
    spacing = (bias.token_pos[1] - bias.token_pos[0]).norm()
    assert torch.isclose(b[0, 4], -256.0 * spacing**2) or torch.isclose(b[0, 6], -256.0 * spacing**2)


def test_faithful_bias_uses_raster_index():
    bias = _bias("faithful_1d", alpha=10.0)
    same_patch = torch.tensor([[[0.30, 0.30], [0.45, 0.45]]])  # both in patch (1, 1) of the 4×4 grid
    b = bias(same_patch)[0, 0]
    assert torch.equal(b[0], b[1])
    # as in the reference, t = 5/16 sits half a token before token 5's (5 + ½)/16: tokens 4 and 5 tie
    assert torch.isclose(b[0, 4], b[0, 5]) and b[0].argmax() in (4, 5)


def test_faithful_bias_is_nearly_flat_at_full_size_unlike_2d():
    """32×32 images, 2×2 patches, 256 LPs: the reference's α=10 barely separates vertical neighbours."""
    grid, n = 16, 256
    token_pos = ginr.patch_centres(32, 2)
    faithful = ginr.SpatialBias("faithful_1d", 10.0, False, token_pos, (grid, grid))
    corrected = ginr.SpatialBias("2d", 256.0, False, token_pos, (grid, grid))
    q = token_pos[[100]].unsqueeze(0)  # centre of patch (6, 4)
    below = 100 + grid  # the token of the patch one row down
    f, c = faithful(q)[0, 0, 0], corrected(q)[0, 0, 0]
    assert (f[100] - f[below]).abs() < 0.05 and (f.max() - f.min()) <= 10.0
    spacing = 2 / 31  # unit-square distance of vertically adjacent patch centres
    assert torch.isclose(c[100] - c[below], torch.tensor(256.0 * spacing**2)) and c.shape == (n,)


def test_alpha_learnable_or_fixed():
    learn = ginr.build(Cfg(replace(TINY, alpha_learnable=True)))
    fixed = ginr.build(Cfg(replace(TINY, alpha_learnable=False)))
    assert "decoder.bias.log_alpha" in dict(learn.named_parameters())
    assert "decoder.bias.log_alpha" not in dict(fixed.named_parameters())
    assert torch.isclose(fixed.decoder.bias.alpha, torch.tensor(256.0))


def test_strong_2d_bias_makes_decoding_local():
    torch.manual_seed(0)
    model = ginr.build(Cfg(replace(TINY, alpha=1e4)))
    latents = torch.randn(1, 16, 16)
    q = model.decoder.bias.token_pos[[0]].unsqueeze(0) * 2 - 1  # query at token 0's patch centre, in [-1, 1]
    base = model.decode(q, latents)[0]
    far, near = latents.clone(), latents.clone()
    far[0, 15] += 5.0
    near[0, 0] += 5.0
    assert (model.decode(q, far)[0] - base).abs().max() < 1e-4
    assert (model.decode(q, near)[0] - base).abs().max() > 1e-3


@pytest.mark.parametrize("variant", [
    dict(),
    dict(decoder="simple", jitter_std=0.0),
    dict(spatial_bias="faithful_1d", alpha=10.0, alpha_learnable=False, jitter_std=0.0, encoder_final_norm=False),
])
def test_a_few_steps_reduce_the_loss(variant):
    torch.manual_seed(0)
    cfg = Cfg(replace(TINY, **variant))
    model = ginr.build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = _images()
    first = ginr.evaluate(model, images, cfg)[0]["mse"]
    for step in range(12):
        loss, logs = ginr.training_loss(model, images, step, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) >= {"mse", "psnr"}
    assert ginr.evaluate(model, images, cfg)[0]["mse"] < 0.7 * first


def test_evaluate_rows():
    cfg = Cfg()
    rows = ginr.evaluate(ginr.build(cfg), _images(5), cfg)
    assert len(rows) == 1 and rows[0]["backend"] == "pure" and rows[0]["eval_context_frac"] == 1.0
    assert 0 < rows[0]["psnr"] < 60


def test_the_reconstruction_grid_has_one_row_from_the_whole_image(tmp_path):
    """GINR ignores the context fraction: the train job's grid shows its reconstruction once, labelled so, not
    copies of it under "context 10 %", "20 %", "100 %" (a context-dependent family keeps a row per fraction)."""
    from PIL import Image

    from nfjobs.config import DataConfig, OptimConfig
    from nfjobs.context import Context
    from nfjobs.jobs import train
    from nfjobs.models import perceiver

    assert train.grid_rows(ginr) == ((1.0,), ["ground truth", "from the whole image"])
    assert train.grid_rows(perceiver) == (train.GRID_FRACS, ["ground truth", "context 10%", "context 20%",
                                                             "context 100%"])
    cfg = train.Config(model="ginr", ginr=replace(TINY, image_size=32, patch_size=4), epochs=1, batch_size=8,
                       data=DataConfig(name="builtin", builtin_n=20, val_frac=0.2), optim=OptimConfig(warmup_steps=1),
                       curve_images=4, eval_batch_size=4, compile=False)
    train.run(cfg, Context(key="g", kind="train", runs_root=tmp_path))
    width, height = Image.open(tmp_path / "g" / "reconstructions.png").size
    assert height == 20 + 2 * 32 * 4  # title band + ground truth + one reconstruction, 4x enlarged
    assert width > 4 * 32 * 4  # the 4 val images beside a label margin
