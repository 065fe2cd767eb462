"""Random affine views with a known coordinate map `T(p) = A p + t` from view A to view B."""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nfjobs.nf.config import NceConfig
from nfjobs.nf.fields import grid


def sample_affine(
    batch: int, cfg: NceConfig, device: torch.device | str
) -> tuple[Float[Tensor, "B 2 2"], Float[Tensor, "B 2"]]:
    """Rotation (±`max_angle_deg`) times isotropic scale, and a translation, per image."""
    angle = (torch.rand(batch, device=device) * 2 - 1) * math.radians(cfg.max_angle_deg)
    scale = cfg.scale_min + torch.rand(batch, device=device) * (cfg.scale_max - cfg.scale_min)
    t = (torch.rand(batch, 2, device=device) * 2 - 1) * cfg.max_translate
    c, s = angle.cos() * scale, angle.sin() * scale
    a = torch.stack([c, -s, s, c], dim=-1).view(batch, 2, 2)
    return a, t


def map_coords(coords: Float[Tensor, "B N 2"], a: Float[Tensor, "B 2 2"], t: Float[Tensor, "B 2"]) -> Float[Tensor, "B N 2"]:
    """`T(p) = A p + t` for every coordinate."""
    return coords @ a.transpose(1, 2) + t.unsqueeze(1)


def warp(images: Float[Tensor, "B C H W"], a: Float[Tensor, "B 2 2"], t: Float[Tensor, "B 2"]) -> Float[Tensor, "B C H W"]:
    """View B of `images`: `B(p) = A_img(T⁻¹(p))`, so the content at `x` in view A sits at `T(x)` in view B."""
    b, _, h, w = images.shape
    # A is rotation × isotropic scale, so A⁻¹ = Aᵀ / det(A).
    a_inv = a.transpose(1, 2) / torch.linalg.det(a)[:, None, None]
    p = grid(h, w, images.device).expand(b, -1, -1)
    src = (p - t.unsqueeze(1)) @ a_inv.transpose(1, 2)
    xy = src.flip(-1).view(b, h, w, 2).to(images.dtype)
    return F.grid_sample(images, xy, mode="bilinear", padding_mode="border", align_corners=True)
