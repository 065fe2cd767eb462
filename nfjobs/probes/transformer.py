"""The small transformer classifier of seed 000: tokens (B, L, d_in) → class logits."""

import torch
from jaxtyping import Float
from torch import Tensor, nn


class SmallTransformer(nn.Module):
    """Linear projection to `d_model`, learned position embedding, pre-norm encoder, mean pool, linear head."""

    def __init__(
        self, d_in: int, n_tokens: int, n_classes: int, d_model: int = 256, n_heads: int = 4, n_layers: int = 2,
        mlp_ratio: int = 2, dropout: float = 0.1,
    ):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=d_model * mlp_ratio, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: Float[Tensor, "B L d_in"]) -> Float[Tensor, "B C"]:
        h = self.encoder(self.proj(x) + self.pos[:, : x.shape[1]])
        return self.head(self.norm(h).mean(dim=1))
