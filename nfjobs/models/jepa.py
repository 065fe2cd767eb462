"""NF+JEPA (seed 002): a neural field trained to predict target-encoder embeddings of unseen pixels.

Per step, each image is split at random into a sparse context (`obs_frac` of the pixels) and a disjoint target
set (`target_frac`). The context encoder reads the observed (coordinate, RGB) pairs in raster order; the EMA
target encoder reads all pixels without gradients; the predictor maps the context tokens and the target
coordinates to the target embeddings. An INR decoder reconstructs every pixel from the context tokens.

`encode(coords, values)` takes observations in raster order, not images (the interface of the Perceiver's
`encode(coords, rgb)`); `observe(images, frac)` samples them, and `NfJepa.context_size` says how many pixels a
fraction is, for callers that sample their own (the cache job). Coordinates follow the project convention
(`nfjobs.nf.fields.grid`: (y, x) in [−1, 1]).
"""

import copy
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from nfjobs.models.ginr import CrossAttention, fourier_features, unit
from nfjobs.models.jepa_config import JepaConfig
from nfjobs.models.mamba import SequenceEncoder, resolve_backend
from nfjobs.nf import fields


class SetEncoder(nn.Module):
    """(coordinate, RGB) observations, in raster order → one token each."""

    def __init__(self, jc: JepaConfig, backend: str):
        super().__init__()
        self.register_buffer("omegas", 2.0 * torch.arange(1, jc.n_freqs + 1), persistent=False)
        self.embed = nn.Linear(4 * jc.n_freqs + 3, jc.dim)
        self.encoder = SequenceEncoder(backend, jc.dim, jc.depth, jc.ff_dim, True, jc.d_state, jc.d_conv,
                                       jc.expand, jc.transformer_heads)

    def forward(self, coords: Float[Tensor, "B K 2"], values: Float[Tensor, "B K 3"]) -> Float[Tensor, "B K D"]:
        gamma = fourier_features(unit(coords.float()), self.omegas)
        return self.encoder(self.embed(torch.cat([gamma, values.float()], dim=-1)))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention from queries to context tokens, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_c = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads, dim // heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: Float[Tensor, "B T D"], ctx: Float[Tensor, "B K D"]) -> Float[Tensor, "B T D"]:
        q = q + self.attn(self.norm_q(q), self.norm_c(ctx))
        return q + self.ff(self.norm_ff(q))


class Predictor(nn.Module):
    """Context tokens + target coordinates → predicted target embeddings (`cross_attn` or `pool`)."""

    def __init__(self, jc: JepaConfig):
        super().__init__()
        self.mode, d, feat = jc.pred_mode, jc.dim, 4 * jc.n_freqs
        self.register_buffer("omegas", 2.0 * torch.arange(1, jc.n_freqs + 1), persistent=False)
        if self.mode == "cross_attn":
            self.query = nn.Linear(feat, d)
            self.blocks = nn.ModuleList(CrossAttnBlock(d, jc.transformer_heads) for _ in range(jc.pred_depth))
            self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        else:
            layers, width = [], d + feat
            for _ in range(jc.pred_depth):
                layers += [nn.Linear(width, d), nn.GELU()]
                width = d
            self.out = nn.Sequential(*layers, nn.Linear(width, d))

    def forward(self, ctx: Float[Tensor, "B K D"], target_coords: Float[Tensor, "B T 2"]) -> Float[Tensor, "B T D"]:
        gamma = fourier_features(unit(target_coords.float()), self.omegas)
        if self.mode == "pool":
            pooled = ctx.mean(1, keepdim=True).expand(-1, gamma.shape[1], -1)
            return self.out(torch.cat([pooled, gamma], dim=-1))
        q = self.query(gamma)
        for block in self.blocks:
            q = block(q, ctx)
        return self.out(q)


class ReconDecoder(nn.Module):
    """INR decoder: query coordinate + (attended or mean-pooled) context → RGB."""

    def __init__(self, jc: JepaConfig):
        super().__init__()
        self.mode, d, feat, hid = jc.recon_decoder, jc.dim, 4 * jc.n_freqs, jc.recon_hidden
        self.register_buffer("omegas", 2.0 * torch.arange(1, jc.n_freqs + 1), persistent=False)
        if self.mode == "cross_attn":
            self.query = nn.Linear(feat, d)
            self.norm = nn.LayerNorm(d)
            self.attn = CrossAttention(d, jc.transformer_heads, d // jc.transformer_heads)
        self.mlp = nn.Sequential(nn.Linear(d + feat, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU())
        self.out = nn.Linear(hid, 3)

    def forward(self, queries: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B K D"]
                ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q H"]]:
        gamma = fourier_features(unit(queries.float()), self.omegas)
        if self.mode == "cross_attn":
            context = self.attn(self.query(gamma), self.norm(latents))
        else:
            context = latents.mean(1, keepdim=True).expand(-1, gamma.shape[1], -1)
        h = self.mlp(torch.cat([context, gamma], dim=-1))
        return self.out(h), h


class NfJepa(nn.Module):
    """Context encoder, EMA target encoder (frozen to the optimiser), predictor and INR decoder."""

    def __init__(self, jc: JepaConfig, backend: str):
        super().__init__()
        self.context_encoder = SetEncoder(jc, backend)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.predictor = Predictor(jc)
        self.decoder = ReconDecoder(jc)

    @property
    def backend(self) -> str:
        return self.context_encoder.encoder.backend

    def encode(self, coords: Float[Tensor, "B K 2"], values: Float[Tensor, "B K 3"]) -> Float[Tensor, "B K D"]:
        """One token per observation: the observed pixels' (y, x) coordinates and RGB in [0, 1], in raster order
        (the order the Mamba mixer scans; `observe` and training sample them that way)."""
        return self.context_encoder(coords, values)

    @staticmethod
    def context_size(n_pixels: int, frac: float) -> int:
        """Observed pixels for a context fraction, as `obs_frac` counts them: round(frac · n_pixels), at least 1
        (no 64-point minimum). The cache job samples sparse context with it."""
        return count(frac, n_pixels)

    def decode(self, queries: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B K D"]
               ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q H"]]:
        return self.decoder(queries, latents)

    @torch.no_grad()
    def update_target(self, momentum: float | Tensor) -> None:
        """target ← momentum · target + (1 − momentum) · context."""
        for t, c in zip(self.target_encoder.parameters(), self.context_encoder.parameters(), strict=True):
            t.lerp_(c, 1.0 - momentum)


def build(cfg) -> NfJepa:
    """The NF+JEPA model of `cfg.jepa` (its context is `jepa.obs_frac`; the train job's `context_frac`, `jitter`
    and `nce_weight` do not apply)."""
    if cfg.context_frac != 1.0 or cfg.jitter or cfg.nce_weight > 0:
        raise ValueError("model='jepa' samples its own context: leave context_frac=1, jitter=false, nce_weight=0 "
                         "and set jepa.obs_frac")
    return NfJepa(cfg.jepa, resolve_backend(cfg.jepa.mamba_backend))


def pixels(images: Float[Tensor, "B 3 H W"]) -> tuple[Float[Tensor, "B HW 2"], Float[Tensor, "B HW 3"]]:
    """Every pixel's (y, x) coordinate and RGB value, row-major."""
    b, _, h, w = images.shape
    return fields.grid(h, w, images.device).expand(b, -1, -1), fields.pixels(images)


def split_indices(b: int, n: int, k: int, t: int, device, generator: torch.Generator | None = None
                  ) -> tuple[Int[Tensor, "B k"], Int[Tensor, "B t"]]:
    """Disjoint random context (k) and target (t) pixel indices per image, each sorted (raster order)."""
    perm = torch.rand(b, n, device=device, generator=generator).argsort(dim=1)
    return perm[:, :k].sort(dim=1).values, perm[:, k:k + t].sort(dim=1).values


def count(frac: float, n: int) -> int:
    return max(1, round(frac * n))


def observe(images: Float[Tensor, "B 3 H W"], frac: float, generator: torch.Generator | None = None
            ) -> tuple[Float[Tensor, "B K 2"], Float[Tensor, "B K 3"]]:
    """A random `frac` of each image's pixels as (coordinates, values), in raster order."""
    coords, values = pixels(images)
    idx, _ = split_indices(len(images), coords.shape[1], count(frac, coords.shape[1]), 0, images.device, generator)
    return fields.gather(coords, idx), fields.gather(values, idx)


def ema_momentum(step: int | Tensor, jc: JepaConfig) -> Tensor:
    """Linear ramp from `ema_momentum` to `ema_momentum_end` over `ema_ramp_steps` (a 0-d tensor, no host sync)."""
    ramp = (torch.as_tensor(step, dtype=torch.float32) / max(jc.ema_ramp_steps, 1)).clamp(max=1.0)
    return jc.ema_momentum + (jc.ema_momentum_end - jc.ema_momentum) * ramp


def embedding_std(emb: Float[Tensor, "*S D"]) -> Tensor:
    """Collapse monitor: per-dimension std of L2-normalised embeddings × √D (≈1 when spread, 0 when collapsed)."""
    z = F.normalize(emb.detach().float().reshape(-1, emb.shape[-1]), dim=-1)
    return z.std(dim=0).mean() * math.sqrt(emb.shape[-1])


def target_grad_problems(model: NfJepa) -> list[str]:
    """Target-encoder parameters that could be trained by backprop: `requires_grad` set or a `.grad` present.

    Empty means the target encoder is updated by EMA only (seed 002's "target encoder grad check: PASS").
    """
    return [name for name, p in model.target_encoder.named_parameters() if p.requires_grad or p.grad is not None]


def jepa_loss(pred: Float[Tensor, "B T D"], target: Float[Tensor, "B T D"], kind: str) -> Tensor:
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
    return (pred - target).square().mean()


def training_loss(model: NfJepa, images: Float[Tensor, "B 3 H W"], step: Tensor, cfg
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """JEPA loss on the target pixels plus the reconstruction loss of every pixel from the context."""
    jc: JepaConfig = cfg.jepa
    coords, values = pixels(images)
    n = coords.shape[1]
    ctx_idx, tgt_idx = split_indices(len(images), n, count(jc.obs_frac, n), count(jc.target_frac, n), images.device)
    ctx = model.encode(fields.gather(coords, ctx_idx), fields.gather(values, ctx_idx))
    with torch.no_grad():
        target = fields.gather(model.target_encoder(coords, values), tgt_idx).float()
        if jc.target_layernorm:
            target = F.layer_norm(target, target.shape[-1:])
    pred = model.predictor(ctx, fields.gather(coords, tgt_idx)).float()
    loss_jepa = jepa_loss(pred, target, jc.loss)
    # recon_weight 0: the decoder still learns, on detached latents, so PSNR remains a readout.
    rgb, _ = model.decode(coords, ctx if jc.recon_weight > 0 else ctx.detach())
    mse = (rgb.float() - values).square().flatten(1).mean(1)
    loss = loss_jepa + (jc.recon_weight if jc.recon_weight > 0 else 1.0) * mse.mean()
    logs = {
        "jepa": loss_jepa.detach(),
        "recon_mse": mse.mean().detach(),
        "psnr": (-10.0 * torch.log10(mse.detach().clamp_min(1e-10))).mean(),
        "emb_std": embedding_std(ctx),
        "z_std": embedding_std(ctx.mean(1)),
        "target_std": embedding_std(target),
        "ema_momentum": ema_momentum(step, jc),
    }
    return loss, logs


def after_step(model: NfJepa, step: Tensor, cfg) -> None:
    """EMA update of the target encoder after the optimiser step."""
    model.update_target(ema_momentum(step, cfg.jepa))


@torch.no_grad()
def reconstruct(model: NfJepa, images: Float[Tensor, "B 3 H W"], frac: float) -> Float[Tensor, "B 3 H W"]:
    """Full-grid reconstruction from a fixed random `frac` of each image's pixels."""
    b, _, h, w = images.shape
    coords, _ = pixels(images)
    ctx = model.encode(*observe(images, frac, torch.Generator(images.device).manual_seed(0)))
    return model.decode(coords, ctx)[0].float().clamp(0, 1).transpose(1, 2).reshape(b, 3, h, w)


@torch.no_grad()
def evaluate(model: NfJepa, images: Float[Tensor, "B 3 H W"], cfg) -> list[dict]:
    """Reconstruction PSNR (clamped to [0, 1]) of all pixels from a random `obs_frac` of them, per obs_frac."""
    jc: JepaConfig = cfg.jepa
    was_training = model.training
    model.eval()
    grad_ok = not target_grad_problems(model)
    rows = []
    for frac in jc.eval_obs_fracs:
        generator = torch.Generator(images.device).manual_seed(0)
        mses = []
        for chunk in images.split(cfg.eval_batch_size):
            coords, values = pixels(chunk)
            ctx = model.encode(*observe(chunk, frac, generator))
            mses.append((model.decode(coords, ctx)[0].float().clamp(0, 1) - values).square().flatten(1).mean(1))
        mse = torch.cat(mses)
        rows.append({"eval_context_frac": frac, "psnr": (-10.0 * torch.log10(mse.clamp_min(1e-10))).mean().item(),
                     "mse": mse.mean().item(), "backend": model.backend, "target_grad_ok": grad_ok})
    model.train(was_training)
    return rows
