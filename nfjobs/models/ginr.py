"""Mamba-GINR with the LAINR decoder (issue 5; reference: colpark/ArbitScaleFeature `trans-inr-master`).

Encoder: 2×2 patches → linear projection ⊕ fixed Fourier positional embedding; learnable position (LP) tokens
interleaved equidistantly; a bidirectional Mamba encoder; the outputs at the LP positions are the latents.
Decoder (LAINR): multi-scale Fourier features of the query coordinate; one cross-attention from each query to
the latents with an additive spatial bias −α·d²; per-band branches modulated by the attention output, chained
residually, each with an RGB head; the heads' outputs sum.

Query coordinates follow the project convention (`nfjobs.nf.fields.grid`: (y, x) in [−1, 1], row-major).
Inside, they are mapped to the unit square u = (q + 1)/2, where the reference's formulas live (its Fourier
features sin(π ω u), its α on unit-square distances, its jitter std).
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from nfjobs.models.ginr_config import GinrConfig
from nfjobs.models.mamba import SequenceEncoder, resolve_backend
from nfjobs.nf import fields


def unit(coords: Float[Tensor, "*S 2"]) -> Float[Tensor, "*S 2"]:
    """Project coordinates in [−1, 1] → the unit square of the reference code."""
    return (coords + 1.0) / 2.0


def patch_centres(image_size: int, patch_size: int) -> Float[Tensor, "N 2"]:
    """Unit-square (y, x) centre of each patch (mean of its pixels' coordinates), row-major."""
    g = image_size // patch_size
    pix = unit(fields.grid(image_size, image_size)).reshape(g, patch_size, g, patch_size, 2)
    return pix.mean(dim=(1, 3)).reshape(g * g, 2)


def fourier_features(x: Float[Tensor, "*S 2"], omegas: Float[Tensor, " F"]) -> Float[Tensor, "*S 4F"]:
    """[sin(π ω x), cos(π ω x)] of both coordinates for every frequency ω."""
    arg = math.pi * x.unsqueeze(-1) * omegas  # (*S, 2, F)
    return torch.cat([arg.sin(), arg.cos()], dim=-1).flatten(-2)


def log_frequencies(n: int, lo: float, hi: float) -> Float[Tensor, " n"]:
    """`n` frequencies log-spaced from `lo` to `hi` (the reference's `torch.logspace(1, log10(σ), n)`)."""
    return torch.logspace(math.log10(lo), math.log10(hi), n)


class CrossAttention(nn.Module):
    """Queries attend to shared latent tokens; an optional additive float mask biases the logits."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)

    def forward(self, x: Float[Tensor, "B Q D"], context: Float[Tensor, "B N C"],
                bias: Float[Tensor, "B 1 Q N"] | None = None) -> Float[Tensor, "B Q D"]:
        q = rearrange(self.to_q(x), "b q (h d) -> b h q d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out(rearrange(out, "b h q d -> b q (h d)"))


class SpatialBias(nn.Module):
    """Additive attention bias −α·d² between query coordinates and latent tokens.

    `2d`: d = ‖x − p_k‖ with p_k the centre of the patch next to LP token k in the scan.
    `faithful_1d`: the reference's raster distance, d = |idx(x)/n_patches − (k + ½)/num_lp|, idx(x) the
    row-major index of the patch containing x.
    """

    def __init__(self, mode: str, alpha: float, learnable: bool, token_pos: Float[Tensor, "N 2"],
                 grid: tuple[int, int]):
        super().__init__()
        self.mode, self.grid = mode, grid
        log_alpha = torch.tensor(math.log(alpha))
        if learnable:
            self.log_alpha = nn.Parameter(log_alpha)
        else:
            self.register_buffer("log_alpha", log_alpha)
        n = token_pos.shape[0]
        self.register_buffer("token_pos", token_pos, persistent=False)
        self.register_buffer("token_rank", (torch.arange(n) + 0.5) / n, persistent=False)

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def forward(self, queries: Float[Tensor, "B Q 2"]) -> Float[Tensor, "B 1 Q N"]:
        if self.mode == "2d":
            dist2 = (queries.unsqueeze(2) - self.token_pos).square().sum(-1)
        else:
            gh, gw = self.grid
            row = (queries[..., 0] * gh).floor().clamp(0, gh - 1)
            col = (queries[..., 1] * gw).floor().clamp(0, gw - 1)
            t = (row * gw + col) / (gh * gw)
            dist2 = (t.unsqueeze(-1) - self.token_rank).square()
        return (-self.alpha * dist2).unsqueeze(1)


class LainrDecoder(nn.Module):
    """Locality-aware INR decoder: biased cross-attention modulates multi-scale Fourier branches."""

    def __init__(self, cfg: GinrConfig, token_pos: Float[Tensor, "N 2"], grid: tuple[int, int]):
        super().__init__()
        n, d, bands = cfg.feature_dim // 4, cfg.dim, cfg.sigma_bands
        self.register_buffer("omega_q", log_frequencies(n, cfg.omega_min, cfg.sigma_q), persistent=False)
        self.register_buffer("omega_bands", torch.stack([log_frequencies(n, cfg.omega_min, s) for s in bands]),
                             persistent=False)
        self.query = nn.Linear(cfg.feature_dim, d)
        self.attn = CrossAttention(d, cfg.heads, cfg.head_dim)
        self.bias = (None if cfg.spatial_bias == "none"
                     else SpatialBias(cfg.spatial_bias, cfg.alpha, cfg.alpha_learnable, token_pos, grid))
        self.band_in = nn.ModuleList(nn.Linear(cfg.feature_dim, d) for _ in bands)
        self.band_mod = nn.ModuleList(nn.Linear(d, d) for _ in bands)
        self.chain = nn.ModuleList(nn.Linear(d, d) for _ in bands[1:])
        self.out = nn.ModuleList(nn.Linear(d, 3) for _ in bands)

    def forward(self, queries: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B N D"]
                ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q D"]]:
        queries = unit(queries.float())
        x_q = F.relu(self.query(fourier_features(queries, self.omega_q)))
        bias = None if self.bias is None else self.bias(queries).to(x_q.dtype)
        modulation = self.attn(x_q, latents, bias)
        h, rgb = None, 0.0
        for k, omegas in enumerate(self.omega_bands):
            m = F.relu(F.relu(self.band_in[k](fourier_features(queries, omegas))) + self.band_mod[k](modulation))
            h = m if h is None else F.relu(self.chain[k - 1](m + h))
            rgb = rgb + self.out[k](h)
        return rgb, h


class SimpleDecoder(nn.Module):
    """Seed 003's notebook decoder: unbiased cross-attention, concat with Fourier features, MLP."""

    def __init__(self, cfg: GinrConfig):
        super().__init__()
        feat, hid = 4 * cfg.simple_freqs, cfg.simple_hidden
        self.register_buffer("omegas", 2.0 * torch.arange(1, cfg.simple_freqs + 1), persistent=False)
        self.query = nn.Linear(feat, cfg.dim)
        self.attn = CrossAttention(cfg.dim, cfg.heads, cfg.head_dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim + feat, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU())
        self.out = nn.Linear(hid, 3)

    def forward(self, queries: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B N D"]
                ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q H"]]:
        gamma = fourier_features(unit(queries.float()), self.omegas)
        modulation = self.attn(self.query(gamma), latents)
        h = self.mlp(torch.cat([modulation, gamma], dim=-1))
        return self.out(h), h


def interleave_order(n_patches: int, num_lp: int) -> tuple[Int[Tensor, " L"], Int[Tensor, " num_lp"]]:
    """Scan order over `cat([patches, lps])` with LPs inserted equidistantly, and the LPs' scan positions."""
    total = n_patches + num_lp
    lp_pos = torch.linspace(0, total - 1, num_lp).long()
    order = torch.empty(total, dtype=torch.long)
    is_lp = torch.zeros(total, dtype=torch.bool)
    is_lp[lp_pos] = True
    order[lp_pos] = n_patches + torch.arange(num_lp)
    order[~is_lp] = torch.arange(n_patches)
    return order, lp_pos


class MambaGinr(nn.Module):
    """Images → latents at the LP tokens → RGB at any continuous (y, x) query coordinate in [−1, 1].

    `token_cells[k]` is the patch (row-major on the `token_grid` of patches) that LP token k precedes in the scan,
    where the 2-D bias places it: patch k itself when `num_lp` equals the number of patches."""

    def __init__(self, cfg: GinrConfig, backend: str):
        super().__init__()
        p = cfg.patch_size
        if cfg.image_size % p:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {p}")
        self.patch_size, self.image_size = p, cfg.image_size
        g = cfg.image_size // p
        n_patches = g * g
        self.proj = nn.Linear(3 * p * p, cfg.dim - cfg.pos_emb_dim)
        centres = patch_centres(cfg.image_size, p)
        pos_omegas = 2.0 * torch.arange(1, cfg.pos_emb_dim // 4 + 1)
        self.register_buffer("pos_emb", fourier_features(centres, pos_omegas), persistent=False)
        self.lps = nn.Parameter(torch.randn(cfg.num_lp, cfg.dim))
        order, lp_pos = interleave_order(n_patches, cfg.num_lp)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("lp_pos", lp_pos, persistent=False)
        self.encoder = SequenceEncoder(backend, cfg.dim, cfg.depth, cfg.ff_dim, cfg.encoder_final_norm,
                                       cfg.d_state, cfg.d_conv, cfg.expand, cfg.transformer_heads)
        # LP k sits just before the (k - #LPs before it)-th patch of the scan: that patch's centre is its position.
        next_patch = (lp_pos - torch.arange(cfg.num_lp)).clamp(max=n_patches - 1)
        self.token_grid = (g, g)
        self.register_buffer("token_cells", next_patch, persistent=False)
        self.decoder = LainrDecoder(cfg, centres[next_patch], (g, g)) if cfg.decoder == "lainr" else SimpleDecoder(cfg)

    @property
    def backend(self) -> str:
        return self.encoder.backend

    def encode(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N D"]:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"model built for {self.image_size}² images (ginr.image_size), got {tuple(images.shape)}")
        p = self.patch_size
        patches = rearrange(images, "b c (gh p) (gw q) -> b (gh gw) (c p q)", p=p, q=p)
        tokens = torch.cat([self.proj(patches), self.pos_emb.expand(len(images), -1, -1)], dim=-1)
        seq = torch.cat([tokens, self.lps.expand(len(images), -1, -1)], dim=1)[:, self.order]
        return self.encoder(seq)[:, self.lp_pos]

    def decode(self, queries: Float[Tensor, "B Q 2"], latents: Float[Tensor, "B N D"]
               ) -> tuple[Float[Tensor, "B Q 3"], Float[Tensor, "B Q H"]]:
        return self.decoder(queries, latents)

    def forward(self, images: Float[Tensor, "B 3 H W"], queries: Float[Tensor, "B Q 2"]) -> Float[Tensor, "B Q 3"]:
        return self.decode(queries, self.encode(images))[0]


def build(cfg) -> MambaGinr:
    """The Mamba-GINR model of `cfg.ginr` (the train job's `context_frac`, `jitter`, `nce_weight` do not apply)."""
    if cfg.context_frac != 1.0 or cfg.jitter or cfg.nce_weight > 0:
        raise ValueError("model='ginr' encodes whole images: leave context_frac=1, jitter=false, nce_weight=0 "
                         "(its coordinate jitter is ginr.jitter_std)")
    return MambaGinr(cfg.ginr, resolve_backend(cfg.ginr.mamba_backend))


def _psnr(mse: Float[Tensor, " B"]) -> Float[Tensor, " B"]:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def _grid(images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B HW 2"]:
    b, _, h, w = images.shape
    return fields.grid(h, w, images.device).expand(b, -1, -1)


def training_loss(model: MambaGinr, images: Float[Tensor, "B 3 H W"], step: Tensor, cfg
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """MSE on every pixel (the reference's full-image protocol); queries jittered by `ginr.jitter_std`
    (unit-square units, so 2× that in [−1, 1]), targets stay the pixel values."""
    coords = _grid(images)
    if cfg.ginr.jitter_std > 0:
        coords = coords + 2.0 * cfg.ginr.jitter_std * torch.randn_like(coords)
    mse = (model(images, coords).float() - fields.pixels(images)).square().flatten(1).mean(1)
    logs = {"mse": mse.mean().detach(), "psnr": _psnr(mse.detach()).mean()}
    bias = getattr(model.decoder, "bias", None)
    if bias is not None:
        logs["alpha"] = bias.alpha.detach()
    return mse.mean(), logs


CONTEXT_FREE = True
"""`reconstruct` ignores `frac`: GINR always encodes the whole image (family contract, `nfjobs.models`)."""


@torch.no_grad()
def reconstruct(model: MambaGinr, images: Float[Tensor, "B 3 H W"], frac: float) -> Float[Tensor, "B 3 H W"]:
    """Full-grid reconstruction from the whole image (`frac` is ignored: `CONTEXT_FREE`)."""
    b, _, h, w = images.shape
    return model(images, _grid(images)).float().clamp(0, 1).transpose(1, 2).reshape(b, 3, h, w)


@torch.no_grad()
def evaluate(model: MambaGinr, images: Float[Tensor, "B 3 H W"], cfg) -> list[dict]:
    """Mean per-image PSNR (predictions clamped to [0, 1]) of full reconstructions on the pixel grid."""
    was_training = model.training
    model.eval()
    mses = []
    for chunk in images.split(cfg.eval_batch_size):
        rgb = model(chunk, _grid(chunk)).float().clamp(0, 1)
        mses.append((rgb - fields.pixels(chunk)).square().flatten(1).mean(1))
    model.train(was_training)
    mse = torch.cat(mses)
    return [{"eval_context_frac": 1.0, "psnr": _psnr(mse).mean().item(), "mse": mse.mean().item(),
             "backend": model.backend}]
