"""Coordinates, Gaussian Fourier features, bilinear sampling and sparse-context selection."""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


def grid(h: int, w: int, device: torch.device | str | None = None) -> Float[Tensor, "HW 2"]:
    """Pixel-centre coordinates `(y, x)` in [-1, 1], raster order."""
    ys = torch.linspace(-1.0, 1.0, h, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2)


def pixels(images: Float[Tensor, "B C H W"]) -> Float[Tensor, "B HW C"]:
    """The pixel values in the raster order of `grid`."""
    return images.flatten(2).transpose(1, 2)


def sample(images: Float[Tensor, "B C H W"], coords: Float[Tensor, "B N 2"]) -> Float[Tensor, "B N C"]:
    """Bilinear values of `images` at continuous `(y, x)` coordinates (border padding)."""
    xy = coords.flip(-1).unsqueeze(1).to(images.dtype)  # grid_sample wants (x, y)
    out = F.grid_sample(images, xy, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2).transpose(1, 2)


def jitter(coords: Float[Tensor, "B N 2"], h: int, w: int) -> Float[Tensor, "B N 2"]:
    """Coordinates moved uniformly within ±half a pixel (clamped to [-1, 1])."""
    half = coords.new_tensor([1.0 / (h - 1), 1.0 / (w - 1)])
    return (coords + (torch.rand_like(coords) * 2 - 1) * half).clamp(-1.0, 1.0)


def n_context(n_total: int, frac: float, minimum: int = 64) -> int:
    """Context points for a fraction `frac` of `n_total` pixels: at least `minimum`, at most all."""
    return min(n_total, max(minimum, int(n_total * frac)))


def subset_indices(
    batch: int, n_total: int, n_keep: int, device: torch.device | str, generator: torch.Generator | None = None
) -> Int[Tensor, "B K"]:
    """A uniformly random subset of `n_keep` of `n_total` positions, drawn independently per image."""
    scores = torch.rand(batch, n_total, device=device, generator=generator)
    return scores.argsort(dim=1)[:, :n_keep]


def gather(x: Float[Tensor, "B N C"], idx: Int[Tensor, "B K"]) -> Float[Tensor, "B K C"]:
    """Rows `idx` of each item of `x`."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class GaussianFourierFeatures(nn.Module):
    """`[sin(xB), cos(xB)]` with a fixed random `B ~ N(0, scale²)` of shape (in_dim, mapping_size)."""

    B: Tensor

    def __init__(self, in_dim: int = 2, mapping_size: int = 96, scale: float = 15.0):
        super().__init__()
        self.register_buffer("B", torch.randn(in_dim, mapping_size) * scale)

    @property
    def out_dim(self) -> int:
        return 2 * self.B.shape[1]

    def forward(self, coords: Float[Tensor, "*batch D"]) -> Float[Tensor, "*batch F"]:
        proj = coords.to(self.B.dtype) @ self.B
        return torch.cat([proj.sin(), proj.cos()], dim=-1)
