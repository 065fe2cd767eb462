"""Scorers: shapes, determinism, what each learns, and save/load by key."""

import pytest
import torch

from nfjobs.scoring import scorers


def blobs(n: int = 300, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, d) * 10
    return centres[torch.arange(n) % 3] + 0.1 * torch.randn(n, d, generator=g), centres


def test_random_unit_vectors_are_seeded():
    x = torch.randn(50, 8)
    a, b, c = (scorers.make("random", 16, seed=s) for s in (1, 1, 2))
    for s in (a, b, c):
        s.train(x)
    assert a(x).shape == (50, 16)
    torch.testing.assert_close(a.directions.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_kmeans_finds_blobs_and_scores_negative_distance():
    x, centres = blobs()
    km = scorers.make("kmeans", 3, seed=0, n_iter=10)
    km.train(x)
    found = torch.cdist(centres, km.centres).min(1).values
    assert found.max() < 0.1
    torch.testing.assert_close(km(x[:7]), -torch.cdist(x[:7], km.centres), atol=1e-3, rtol=0)


def test_pca_is_centred_projection_on_top_components():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7
    pca = scorers.make("pca", 2)
    pca.train(x)
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(2), atol=1e-5, rtol=0)
    assert pca.components[0, 0].abs() > 0.99 and pca.components[1, 1].abs() > 0.99
    assert pca(x).mean(0).abs().max() < 1e-3
    with pytest.raises(ValueError, match="at most"):
        scorers.make("pca", 7).train(x)


def test_sae_codes_are_sparse_nonnegative_and_reconstruct():
    x, _ = blobs(600, 5)
    sae = scorers.make("sae", 8, seed=0, l1=1e-2, lr=1e-2, steps=300, batch=256)
    sae.train(x)
    codes = sae(x)
    assert codes.shape == (600, 8) and (codes >= 0).all()
    recon = codes @ sae.w_dec + sae.b_dec + sae.mean
    assert (recon - x).square().sum(1).mean() < 0.1 * (x - x.mean(0)).square().sum(1).mean()
    assert (codes > 0).float().sum(1).mean() < 8


@pytest.mark.parametrize("name", sorted(scorers.SCORERS))
def test_save_and_load_give_the_same_scores(name, tmp_path):
    x, _ = blobs(200, 5)
    options = {"sae": {"steps": 20}, "kmeans": {"n_iter": 2}}.get(name, {})
    scorer = scorers.make(name, 4, seed=3, **options)
    scorer.train(x)
    assert isinstance(scorer, scorers.Scorer) and scorer.n_prototypes == 4
    scorers.save(scorer, tmp_path / "s.pt")
    again = scorers.load(tmp_path / "s.pt")
    torch.testing.assert_close(again(x), scorer(x))
