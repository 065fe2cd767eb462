"""The cascaded Perceiver-IO neural field (the seeds' model) and its training objectives.

Context tokens are `[RGB, GFF(coords)]` (3 + 2·fourier_size features); queries are `GFF(coords)`.
Three cascaded encoder blocks (each: its own latent array cross-attends to the context, adds the projected
previous block's latents, then self-attention and GEGLU feed-forward), a self-attention processor, and a
decoder in which the queries cross-attend to the last latents, keep a skip connection, go through an optional
feed-forward layer and a linear map to RGB. All attention goes through `F.scaled_dot_product_attention`.
"""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nfjobs.models.perceiver_config import PerceiverConfig
from nfjobs.models.train_config import TrainConfig
from nfjobs.nf import fields
from nfjobs.nf.geglu import geglu
from nfjobs.nf.nce import soft_infonce
from nfjobs.nf.views import map_coords, sample_affine, warp

EVAL_FRACS = (0.05, 0.1, 0.2, 0.5, 1.0)
"""Context fractions every evaluation reports (plus the training fraction)."""
EVAL_SEED = 0
"""Seed of the evaluation's context subsets: every cell is scored on the same subsets."""


def sinusoidal(n: int, d: int) -> Float[Tensor, "n d"]:
    """Transformer sinusoidal embeddings of positions 0..n-1."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    out = torch.zeros(n, d)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


class GEGLUFeedForward(nn.Module):
    """Pre-norm `Linear → GEGLU → Linear`."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, dim * mult * 2)
        self.down = nn.Linear(dim * mult, dim)

    def forward(self, x: Float[Tensor, "B N D"]) -> Float[Tensor, "B N D"]:
        return self.down(geglu(self.up(self.norm(x))))


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention of `x` over `context` (both normalised by their own LayerNorm)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Float[Tensor, "b N D"], context: Float[Tensor, "B M C"]) -> Float[Tensor, "B N D"]:
        """`x` may be a batch of one (queries shared by every item): projected once, broadcast to B."""
        c = self.norm_context(context)
        return self.attend(x, [F.linear(c, w) for w in self.to_kv.weight.chunk(2)])

    def attend(self, x: Float[Tensor, "b N D"], kv: list[Float[Tensor, "B M HK"]]) -> Float[Tensor, "B N D"]:
        """Attention of `x` over already projected keys and values `kv = [k, v]`."""
        b, n = kv[0].shape[0], x.shape[1]
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in kv)  # (B, heads, M, dim_head)
        if k.shape[2] == 1:  # softmax over a single key is 1: every query gets that key's value
            return self.to_out(kv[1]).expand(b, n, -1)
        q = self.to_q(self.norm(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q.expand(b, -1, -1, -1), k, v)  # (B, heads, N, dim_head)
        return self.to_out(out.transpose(1, 2).flatten(2))


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention (one `to_qkv` weight, applied as three projections)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Float[Tensor, "B N D"]) -> Float[Tensor, "B N D"]:
        # One GEMM per row block of the fused weight: each of q, k, v is then a dense tensor, so SDPA's backward
        # returns its gradient in the projection's own layout and no copy assembles a fused (B, N, 3·H·K) gradient.
        h = self.norm(x)
        q, k, v = (F.linear(h, w).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for w in self.to_qkv.weight.chunk(3))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class LatentBlock(nn.Module):
    """Residual self-attention then residual GEGLU feed-forward."""

    def __init__(self, dim: int, cfg: PerceiverConfig):
        super().__init__()
        self.attn = SelfAttention(dim, cfg.self_heads, cfg.self_dim_head)
        self.ff = GEGLUFeedForward(dim, cfg.ff_mult)

    def forward(self, x: Float[Tensor, "B N D"]) -> Float[Tensor, "B N D"]:
        x = x + self.attn(x)
        return x + self.ff(x)


class EncoderBlock(nn.Module):
    """One cascade stage: latents ← latents + CrossAttn(latents, context) + proj(previous), then a LatentBlock."""

    def __init__(self, dim: int, prev_dim: int | None, context_dim: int, cfg: PerceiverConfig):
        super().__init__()
        init = sinusoidal(cfg.num_latents, dim)
        if cfg.learn_latents:
            self.latents = nn.Parameter(init)
        else:
            self.register_buffer("latents", init)
        self.cross = CrossAttention(dim, context_dim, cfg.cross_heads, cfg.cross_dim_head)
        self.proj = nn.Linear(prev_dim, dim) if prev_dim is not None and prev_dim != dim else nn.Identity()
        self.latent = LatentBlock(dim, cfg)

    def forward(
        self, kv: list[Float[Tensor, "B M HK"]], previous: Float[Tensor, "B N P"] | None
    ) -> Float[Tensor, "B N D"]:
        """`kv`: this block's cross-attention keys and values of the context (`PerceiverField.context_kv`)."""
        lat = self.latents + self.cross.attend(self.latents.unsqueeze(0), kv)  # latents' queries computed once
        if previous is not None:
            lat = lat + self.proj(previous)
        return self.latent(lat)


class PerceiverField(nn.Module):
    """Cascaded Perceiver-IO neural field with `encode` (context → latents) and `decode` (queries → RGB)."""

    def __init__(self, cfg: PerceiverConfig, proj_dim: int = 128):
        super().__init__()
        self.cfg = cfg
        self.gff = fields.GaussianFourierFeatures(2, cfg.fourier_size, cfg.fourier_scale)
        query_dim = self.gff.out_dim
        context_dim = 3 + query_dim
        prev: int | None = None
        blocks = []
        for dim in cfg.latent_dims:
            blocks.append(EncoderBlock(dim, prev, context_dim, cfg))
            prev = dim
        self.encoder = nn.ModuleList(blocks)
        latent_dim = cfg.latent_dims[-1]
        self.processor = nn.Sequential(*(LatentBlock(latent_dim, cfg) for _ in range(cfg.processor_depth)))
        self.decoder_attn = CrossAttention(query_dim, latent_dim, cfg.cross_heads, cfg.cross_dim_head)
        self.decoder_ff = GEGLUFeedForward(query_dim, cfg.ff_mult) if cfg.decoder_ff else None
        self.to_rgb = nn.Linear(query_dim, 3)
        self.nce_head = nn.Linear(query_dim, proj_dim)
        """Projection of the decoder hidden state for Soft-InfoNCE (unused by plain reconstruction)."""

    def encode(self, coords: Float[Tensor, "B M 2"], rgb: Float[Tensor, "B M 3"]) -> Float[Tensor, "B N D"]:
        """Latents ("last latent": encoder + processor output) from context pixels `rgb` in [0, 1] at `coords`."""
        if self.cfg.normalize_inputs:
            rgb = rgb * 2 - 1
        context = torch.cat([rgb, self.gff(coords)], dim=-1)
        lat = None
        for block, kv in zip(self.encoder, self.context_kv(context), strict=True):
            lat = block(kv, lat)
        return self.processor(lat)

    def context_kv(self, context: Float[Tensor, "B M C"]) -> list[list[Float[Tensor, "B M HK"]]]:
        """Every encoder block's cross-attention keys and values `[k, v]` from one shared normalisation.

        The blocks' context LayerNorms share their statistics, so each block's affine folds into its projection,
        `W(γ⊙x̂ + β) = (W diag γ) x̂ + Wβ`: the same function and gradients as separate LayerNorm → Linear, with
        one normalisation and no input gradient (x̂ depends on the data only). The feature axis is zero-padded to
        a multiple of 8 so the bf16 GEMM rows are 16-byte aligned.
        """
        crosses = [block.cross for block in self.encoder]
        pad = -context.shape[-1] % 8
        xhat = F.pad(F.layer_norm(context, context.shape[-1:], eps=crosses[0].norm_context.eps), (0, pad))
        out = []
        for c in crosses:
            gamma, beta = c.norm_context.weight, c.norm_context.bias
            out.append([F.linear(xhat, F.pad(w * gamma, (0, pad)), w @ beta) for w in c.to_kv.weight.chunk(2)])
        return out

    def decode(
        self, coords: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B N D"]
    ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q E"]]:
        """RGB (in [0, 1] units, unclamped) and the decoder hidden state at query `coords`.

        Coordinates expanded over the batch (stride 0, e.g. a shared grid) are embedded and projected once."""
        if coords.shape[0] > 1 and coords.stride(0) == 0:
            coords = coords[:1]
        q = self.gff(coords)
        hidden = q + self.decoder_attn(q, latents)
        if self.decoder_ff is not None:
            hidden = hidden + self.decoder_ff(hidden)
        rgb = self.to_rgb(hidden)
        if self.cfg.normalize_inputs:
            rgb = rgb * 0.5 + 0.5
        return rgb, hidden

    def encode_images(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N D"]:
        """Latents from all pixels of `images` (full context)."""
        b, _, h, w = images.shape
        return self.encode(fields.grid(h, w, images.device).expand(b, -1, -1), fields.pixels(images))


def build(cfg: TrainConfig) -> PerceiverField:
    """The model described by `cfg.perceiver` (Soft-InfoNCE projection width from `cfg.nce`)."""
    return PerceiverField(cfg.perceiver, cfg.nce.proj_dim)


def context(
    images: Float[Tensor, "B 3 H W"], frac: float, generator: torch.Generator | None = None
) -> tuple[Float[Tensor, "B M 2"], Float[Tensor, "B M 3"]]:
    """Context coordinates and pixels: all pixels when `frac >= 1`, else a random subset per image
    (`fields.n_context`: fraction `frac`, at least 64 points)."""
    b, _, h, w = images.shape
    coords = fields.grid(h, w, images.device).expand(b, -1, -1)
    rgb = fields.pixels(images)
    if frac >= 1.0:
        return coords, rgb
    idx = fields.subset_indices(b, h * w, fields.n_context(h * w, frac), images.device, generator)
    return fields.gather(coords, idx), fields.gather(rgb, idx)


def training_loss(
    model: PerceiverField, images: Float[Tensor, "B 3 H W"], step: Tensor, cfg: TrainConfig
) -> tuple[Float[Tensor, ""], dict[str, Tensor]]:
    """Full-grid reconstruction MSE from a (sparse) context, plus ramped Soft-InfoNCE when `cfg.nce_weight > 0`.

    `step` is the global step as a 0-d tensor (so compiled code does not specialise on it).
    """
    b, _, h, w = images.shape
    queries = fields.grid(h, w, images.device).expand(b, -1, -1)
    if cfg.jitter:
        queries = fields.jitter(queries, h, w)
        target = fields.sample(images, queries)
    else:
        target = fields.pixels(images)
    latents_a = model.encode(*context(images, cfg.context_frac))
    if cfg.nce_weight <= 0:
        rgb, _ = model.decode(queries, latents_a)
        recon = F.mse_loss(rgb.float(), target)
        return recon, {"recon": recon.detach()}

    nce = cfg.nce
    a, t = sample_affine(b, nce, images.device)
    latents_b = model.encode(*context(warp(images, a, t), cfg.context_frac))
    anchors = torch.rand(b, nce.n_anchors, 2, device=images.device) * 2 - 1
    candidates = torch.rand(b, nce.n_candidates, 2, device=images.device) * 2 - 1
    rgb, hidden_a = model.decode(torch.cat([queries, anchors], dim=1), latents_a)
    _, hidden_b = model.decode(candidates, latents_b)
    recon = F.mse_loss(rgb[:, : h * w].float(), target)
    phi_a = F.normalize(model.nce_head(hidden_a[:, h * w :]).float(), dim=-1)
    phi_b = F.normalize(model.nce_head(hidden_b).float(), dim=-1)
    loss_nce = soft_infonce(phi_a, phi_b, map_coords(anchors, a, t), candidates, nce.tau, nce.sigma)
    weight = cfg.nce_weight * (step.float() / max(nce.ramp_steps, 1)).clamp(max=1.0)
    return recon + weight * loss_nce, {"recon": recon.detach(), "nce": loss_nce.detach()}


@torch.no_grad()
def reconstruct(model: PerceiverField, images: Float[Tensor, "B 3 H W"], frac: float) -> Float[Tensor, "B 3 H W"]:
    """Full-grid reconstruction of `images` from a context fraction `frac` (fixed evaluation subsets)."""
    b, _, h, w = images.shape
    gen = torch.Generator(images.device).manual_seed(EVAL_SEED)
    latents = model.encode(*context(images, frac, gen))
    rgb, _ = model.decode(fields.grid(h, w, images.device).expand(b, -1, -1), latents)
    return rgb.float().clamp(0, 1).transpose(1, 2).reshape(b, 3, h, w)


@torch.no_grad()
def evaluate(model: PerceiverField, images: Float[Tensor, "N 3 H W"], cfg: TrainConfig) -> list[dict]:
    """Validation PSNR (from the mean squared error over all pixels, outputs clamped to [0, 1]) at each
    context fraction of `EVAL_FRACS` and the training fraction, on fixed per-image context subsets."""
    rows = []
    for frac in sorted({*EVAL_FRACS, min(cfg.context_frac, 1.0)}):
        gen = torch.Generator(images.device).manual_seed(EVAL_SEED)
        sse = torch.zeros((), device=images.device)
        for batch in images.split(cfg.eval_batch_size):
            b, _, h, w = batch.shape
            latents = model.encode(*context(batch, frac, gen))
            rgb, _ = model.decode(fields.grid(h, w, batch.device).expand(b, -1, -1), latents)
            sse += (rgb.float().clamp(0, 1) - fields.pixels(batch)).square().sum()
        mse = sse.item() / images[:, :3].numel()
        rows.append({"split": "val", "eval_context_frac": frac, "mse": mse, "psnr": -10 * math.log10(max(mse, 1e-12))})
    return rows
