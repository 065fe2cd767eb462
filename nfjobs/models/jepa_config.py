"""Config of the NF+JEPA family (seed 002): sparse-observation set encoder, EMA target encoder, predictor.

Light module (dataclasses and typing only): the CLI and the sweep validator import it without torch.
Seed 002's ablation flags map to fields: `obs_frac`, `target_frac`, `recon_weight`, `pred_mode`,
`use_mamba` → `mamba_backend` (`transformer` = use_mamba false), `jepa_loss_type` → `loss`.
"""

from dataclasses import dataclass
from typing import Literal

MambaBackend = Literal["auto", "mamba_ssm", "triton", "pure", "transformer"]


@dataclass(frozen=True)
class JepaConfig:
    """NF+JEPA: predict EMA-target embeddings of unseen pixels from a sparse set of observed pixels."""

    obs_frac: float = 0.1
    """Fraction of the pixels observed by the context encoder during training."""
    target_frac: float = 0.2
    """Fraction of the pixels (disjoint from the context) whose target embeddings are predicted."""
    dim: int = 256
    """Token width of the encoders and the predictor."""
    depth: int = 4
    """Encoder blocks (bidirectional mixer + feed-forward, pre-norm residual, final norm)."""
    ff_dim: int = 1024
    """Hidden width of the encoder feed-forward layers."""
    n_freqs: int = 16
    """Fourier frequencies per coordinate in the observation and query encodings."""
    mamba_backend: MambaBackend = "auto"
    """Set-encoder mixer: `auto`, `mamba_ssm`, `triton`, `pure` (mambapy) or `transformer` (seed 002's fallback).
    Mamba reads the observed pixels in raster order."""
    d_state: int = 16
    """Mamba SSM state size per channel."""
    d_conv: int = 4
    """Mamba depthwise causal convolution width."""
    expand: int = 2
    """Mamba inner width = `expand * dim`."""
    transformer_heads: int = 4
    """Attention heads of the `transformer` backend and of the predictor / decoder cross-attention."""

    pred_mode: Literal["cross_attn", "pool"] = "cross_attn"
    """Predictor: target-coordinate queries cross-attend to the context tokens (`cross_attn`), or an MLP
    on the mean-pooled context and the target coordinate (`pool`)."""
    pred_depth: int = 2
    """Cross-attention blocks (`cross_attn`) or hidden layers (`pool`) of the predictor."""
    loss: Literal["mse", "cosine"] = "mse"
    """JEPA loss between predicted and target embeddings: mean squared error or 1 − cosine similarity."""
    target_layernorm: bool = True
    """Layer-normalise target embeddings (no affine) before the loss, as in I-JEPA."""
    ema_momentum: float = 0.996
    """Target-encoder EMA momentum at step 0."""
    ema_momentum_end: float = 1.0
    """EMA momentum reached (linearly) after `ema_ramp_steps`."""
    ema_ramp_steps: int = 10_000
    """Steps over which the momentum ramps from `ema_momentum` to `ema_momentum_end`."""

    recon_weight: float = 1.0
    """Weight of the INR reconstruction loss on all pixels. 0 = JEPA only: the decoder then still trains on
    detached latents, so reconstruction PSNR stays a readout that cannot shape the encoder."""
    recon_decoder: Literal["cross_attn", "global"] = "cross_attn"
    """INR decoder: query coordinates cross-attend to the context tokens, or an MLP on the mean-pooled
    context vector (seed 002's `INRDecoder(z_global, coords)`)."""
    recon_hidden: int = 256
    """Hidden width of the reconstruction decoder's MLP."""

    eval_obs_fracs: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
    """Observation fractions at which `evaluate` reports reconstruction PSNR."""

    def __post_init__(self):
        for name in ("obs_frac", "target_frac"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.obs_frac + self.target_frac > 1.0:
            raise ValueError(f"obs_frac + target_frac must be <= 1, got {self.obs_frac} + {self.target_frac}")
        if not 0.0 <= self.ema_momentum <= self.ema_momentum_end <= 1.0:
            raise ValueError(
                f"need 0 <= ema_momentum <= ema_momentum_end <= 1, got {self.ema_momentum}, {self.ema_momentum_end}"
            )
        if self.recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {self.recon_weight}")
        if any(not 0.0 < f <= 1.0 for f in self.eval_obs_fracs):
            raise ValueError(f"eval_obs_fracs must lie in (0, 1], got {self.eval_obs_fracs}")
