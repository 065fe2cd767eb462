"""A stand-in neural field with the interface of the trained ones, for tests and benchmarks.

`encode(context (B, M, C)) -> latents (B, N, D)` (learned latents cross-attend to the context) and
`decode(queries (B, P, Q), latents) -> (rgb (B, P, 3), hidden (B, P, H))` (queries cross-attend to the
latents) — the Perceiver-IO shape of the project's fields, at any size.
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


class ToyField(nn.Module):
    def __init__(self, context_dim: int, query_dim: int, n_latents: int = 8, latent_dim: int = 32, hidden: int = 32):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, latent_dim) * 0.5)
        self.enc_attn = nn.MultiheadAttention(latent_dim, 1, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.enc_mlp = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.q_proj = nn.Linear(query_dim, hidden)
        self.dec_attn = nn.MultiheadAttention(hidden, 1, kdim=latent_dim, vdim=latent_dim, batch_first=True)
        self.dec_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
        self.to_rgb = nn.Linear(hidden, 3)

    def encode(self, context: Float[Tensor, "B M C"]) -> Float[Tensor, "B N D"]:
        lat = self.latents.expand(len(context), -1, -1)
        lat = lat + self.enc_attn(lat, context, context, need_weights=False)[0]
        return lat + self.enc_mlp(lat)

    def decode(
        self, queries: Float[Tensor, "B P Q"], latents: Float[Tensor, "B N D"]
    ) -> tuple[Float[Tensor, "B P 3"], Float[Tensor, "B P H"]]:
        q = self.q_proj(queries)
        h = q + self.dec_attn(q, latents, latents, need_weights=False)[0]
        h = h + self.dec_mlp(h)
        return self.to_rgb(h), h


def fourier_queries(h: int, w: int, n_freq: int = 8, seed: int = 0) -> Float[Tensor, "P Q"]:
    """Gaussian Fourier features of the row-major (y, x) grid in [-1, 1]², Q = 2·n_freq."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    coords = torch.stack([ys, xs], -1).reshape(-1, 2)
    proj = 2 * math.pi * coords @ (torch.randn(2, n_freq, generator=torch.Generator().manual_seed(seed)) * 3)
    return torch.cat([proj.sin(), proj.cos()], -1)
