"""TDSM decoding: the batched (B·K) variant equals the per-token loop; reductions, heads and training modes."""

import pytest
import torch

from nfjobs.probes import tdsm as T
from tests.toy_field import ToyField

H = W = 6


def grid():
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    return torch.stack([ys, xs], -1).reshape(-1, 2)


@pytest.fixture
def field():
    torch.manual_seed(0)
    return ToyField(n_freq=8, n_latents=8, latent_dim=12, hidden=16).eval()


def test_token_subset():
    assert T.token_subset(8, every=3) == [0, 3, 6]
    assert T.token_subset(8, tokens=[7, 1]) == [7, 1]
    with pytest.raises(ValueError, match="outside"):
        T.token_subset(8, tokens=[8])


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("tokens", [list(range(8)), [6, 2, 3]])
def test_batched_equals_loop(field, chunk, tokens):
    latents = field.encode(torch.rand(3, 10, 2) * 2 - 1, torch.rand(3, 10, 3))
    q = grid()
    with torch.no_grad():
        loop = T.decode_tokens_loop(field.decode, q, latents, tokens)
        batched = T.decode_tokens_batched(field.decode, q, latents, tokens, chunk)
    assert loop.shape == (3, len(tokens), H * W, 3)
    torch.testing.assert_close(batched, loop, rtol=1e-5, atol=1e-5)


def test_component_is_single_token_decode(field):
    latents = field.encode(torch.rand(2, 10, 2) * 2 - 1, torch.rand(2, 10, 3))
    q = grid()
    maps = T.tdsm(field.decode, q, latents, (H, W), [4], "rgb", chunk=3)
    alone = field.decode(q.expand(2, -1, -1), latents[:, 4:5])[0].reshape(2, H, W, 3)
    torch.testing.assert_close(maps, alone)


def test_reductions():
    comp = torch.randn(2, 4, H * W, 3)
    mean, l2, rgb = (T.reduce_components(comp, how, (H, W)) for how in ("mean", "l2", "rgb"))
    assert mean.shape == l2.shape == (2, H, W, 4) and rgb.shape == (2, H, W, 12)
    torch.testing.assert_close(mean[1, 2, 3, 1], comp[1, 1, 2 * W + 3].mean())
    torch.testing.assert_close(l2[0, 0, 1, 3], comp[0, 3, 1].norm())
    torch.testing.assert_close(rgb[0, 5, 5, 3 * 2 + 1], comp[0, 2, H * W - 1, 1])


@pytest.mark.parametrize("head", ["gap", "gmp", "cnn", "attn"])
@pytest.mark.parametrize("how,c", [("mean", 1), ("rgb", 3)])
def test_heads(head, how, c):
    k = 4
    m = T.make_head(head, (H, W), k, k * c, n_classes=5)
    assert m(torch.randn(3, H, W, k * c)).shape == (3, 5)


@pytest.mark.parametrize("mode", ["frozen", "finetune", pytest.param("two_stage", marks=pytest.mark.slow)])
def test_training_modes(field, mode):
    torch.manual_seed(0)
    ctx, labels = (torch.rand(16, 10, 2) * 2 - 1, torch.rand(16, 10, 3)), torch.randint(0, 3, (16,))
    tokens = T.token_subset(8, every=2)
    clf = T.TDSMClassifier(field, grid(), (H, W), tokens, "mean",
                           T.make_head("gap", (H, W), 4, 4, 3), chunk=8)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    res = T.fit_tdsm(clf, ctx, labels, ctx, labels, mode=mode, epochs=2, head_epochs=1, head_lr=1e-2,
                     field_lr=1e-2, batch_size=8)
    moved = {n for n, p in clf.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("head.") for n in moved)
    assert any(n.startswith("field.") for n in moved) == (mode != "frozen")
    assert 0 <= res.accuracy <= 1 and 0 <= res.train_accuracy <= 1 and res.train_s > 0
    assert all(p.requires_grad for p in clf.field.parameters())
