"""Neural-field ops: coordinates, sampling, sparse context, affine views, Soft-InfoNCE."""

import math

import pytest
import torch

from nfjobs.nf import fields
from nfjobs.nf.config import NceConfig
from nfjobs.nf.nce import soft_infonce, soft_targets
from nfjobs.nf.views import map_coords, sample_affine, warp


def smooth_images(b=2, h=16, w=16):
    y, x = fields.grid(h, w).unbind(-1)
    base = torch.stack([torch.sin(2 * x + 1), torch.cos(3 * y), torch.sin(x * y + 0.5)])
    return (0.5 + 0.4 * base.view(3, h, w)).expand(b, -1, -1, -1).contiguous()


def test_grid_is_raster_order_and_sampling_at_it_returns_the_pixels():
    g = fields.grid(4, 5)
    assert g.shape == (20, 2) and g[0].tolist() == [-1, -1] and g[1, 0] == -1 and g[5, 0] > -1
    images = torch.rand(3, 3, 4, 5)
    at_grid = fields.sample(images, g.expand(3, -1, -1))
    torch.testing.assert_close(at_grid, fields.pixels(images))


@pytest.mark.parametrize("frac, expected", [(0.2, 204), (0.01, 64), (1.0, 1024), (0.05, 64)])
def test_sparse_context_counts(frac, expected):
    assert fields.n_context(1024, frac) == expected


def test_sparse_subsets_are_distinct_positions_per_image_and_seeded():
    idx = fields.subset_indices(4, 1024, 204, "cpu", torch.Generator().manual_seed(0))
    assert idx.shape == (4, 204)
    assert all(len(set(row.tolist())) == 204 for row in idx)
    assert not torch.equal(idx[0], idx[1])
    assert torch.equal(idx, fields.subset_indices(4, 1024, 204, "cpu", torch.Generator().manual_seed(0)))
    values = torch.arange(4 * 1024 * 2.0).view(4, 1024, 2)
    picked = fields.gather(values, idx)
    assert picked.shape == (4, 204, 2) and torch.equal(picked[2, 7], values[2, idx[2, 7]])


def test_jitter_stays_within_half_a_pixel():
    g = fields.grid(8, 8).expand(2, -1, -1)
    j = fields.jitter(g, 8, 8)
    assert (j - g).abs().max() <= 1 / 7 + 1e-6 and j.abs().max() <= 1


def test_gaussian_fourier_features_shape_and_range():
    gff = fields.GaussianFourierFeatures(2, 12, 15.0)
    out = gff(torch.rand(3, 7, 2))
    assert out.shape == (3, 7, 24) and gff.out_dim == 24
    torch.testing.assert_close(out[..., :12] ** 2 + out[..., 12:] ** 2, torch.ones(3, 7, 12))


def test_warp_moves_content_at_x_to_T_of_x():
    torch.manual_seed(0)
    images = smooth_images()
    a, t = sample_affine(2, NceConfig(), "cpu")
    view = warp(images, a, t)
    x = torch.rand(2, 50, 2) * 1.0 - 0.5  # interior points stay inside after the map
    torch.testing.assert_close(fields.sample(view, map_coords(x, a, t)), fields.sample(images, x), atol=0.02, rtol=0)


def test_identity_view_is_the_image_and_affine_params_respect_their_ranges():
    images = smooth_images()
    torch.testing.assert_close(warp(images, torch.eye(2).expand(2, 2, 2), torch.zeros(2, 2)), images, atol=1e-5, rtol=0)
    cfg = NceConfig(max_angle_deg=12, scale_min=0.85, scale_max=1.0, max_translate=0.1)
    a, t = sample_affine(500, cfg, "cpu")
    scale = torch.linalg.det(a).sqrt()
    angle = torch.atan2(a[:, 1, 0], a[:, 0, 0])
    assert scale.min() >= 0.85 - 1e-6 and scale.max() <= 1 + 1e-6
    assert angle.abs().max() <= math.radians(12) + 1e-6 and t.abs().max() <= 0.1


def test_soft_targets_are_a_distribution_peaked_at_the_mapped_anchor():
    cand = torch.rand(1, 64, 2) * 2 - 1
    w = soft_targets(cand[:, :5], cand, sigma=0.08)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 5))
    assert torch.equal(w.argmax(-1)[0], torch.arange(5))


def test_soft_infonce_rewards_embeddings_that_follow_the_correspondence():
    torch.manual_seed(0)
    a, t = sample_affine(2, NceConfig(), "cpu")
    anchors = torch.rand(2, 32, 2) * 2 - 1
    cand = torch.rand(2, 128, 2) * 2 - 1
    embed = fields.GaussianFourierFeatures(2, 32, 3.0)
    # An embedding of view-B coordinates: anchors embedded at T(x) match candidates near T(x).
    phi_a = torch.nn.functional.normalize(embed(map_coords(anchors, a, t)), dim=-1)
    phi_b = torch.nn.functional.normalize(embed(cand), dim=-1)
    good = soft_infonce(phi_a, phi_b, map_coords(anchors, a, t), cand)
    shuffled = soft_infonce(phi_a[:, torch.randperm(32)], phi_b, map_coords(anchors, a, t), cand)
    uniform = soft_infonce(torch.zeros_like(phi_a), phi_b, map_coords(anchors, a, t), cand)
    assert good < uniform < shuffled
    torch.testing.assert_close(uniform, torch.tensor(math.log(128)), atol=1e-3, rtol=0)
