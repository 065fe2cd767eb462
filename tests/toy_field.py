"""A stand-in neural field with the interface of the trained ones, for tests.

`encode(coords (B, M, 2), rgb (B, M, 3)) -> latents (B, N, D)` (learned latents cross-attend to the context
pixels) and `decode(coords (B, P, 2), latents) -> (rgb (B, P, 3), hidden (B, P, H))` (Fourier-embedded query
coordinates cross-attend to the latents): the interface of `nfjobs.models.perceiver.PerceiverField`, at any
size and without its cascade.
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


class ToyField(nn.Module):
    def __init__(self, n_freq: int = 8, n_latents: int = 8, latent_dim: int = 32, hidden: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.randn(2, n_freq) * 3)
        context_dim, query_dim = 3 + 2 * n_freq, 2 * n_freq
        self.latents = nn.Parameter(torch.randn(n_latents, latent_dim) * 0.5)
        self.enc_attn = nn.MultiheadAttention(latent_dim, 1, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.enc_mlp = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.q_proj = nn.Linear(query_dim, hidden)
        self.dec_attn = nn.MultiheadAttention(hidden, 1, kdim=latent_dim, vdim=latent_dim, batch_first=True)
        self.dec_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
        self.to_rgb = nn.Linear(hidden, 3)

    def embed(self, coords: Float[Tensor, "B P 2"]) -> Float[Tensor, "B P Q"]:
        proj = 2 * math.pi * coords @ self.freqs
        return torch.cat([proj.sin(), proj.cos()], -1)

    def encode(self, coords: Float[Tensor, "B M 2"], rgb: Float[Tensor, "B M 3"]) -> Float[Tensor, "B N D"]:
        context = torch.cat([rgb, self.embed(coords)], -1)
        lat = self.latents.expand(len(context), -1, -1)
        lat = lat + self.enc_attn(lat, context, context, need_weights=False)[0]
        return lat + self.enc_mlp(lat)

    def decode(
        self, coords: Float[Tensor, "B P 2"], latents: Float[Tensor, "B N D"]
    ) -> tuple[Float[Tensor, "B P 3"], Float[Tensor, "B P H"]]:
        q = self.q_proj(self.embed(coords))
        h = q + self.dec_attn(q, latents, latents, need_weights=False)[0]
        h = h + self.dec_mlp(h)
        return self.to_rgb(h), h
