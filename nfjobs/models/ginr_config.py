"""Config of the Mamba-GINR family (patch tokens + learnable position tokens → bidirectional Mamba → LAINR).

Light module (dataclasses and typing only): the CLI and the sweep validator import it without torch.
Defaults are the *corrected* model of issue 5; the reference code (colpark/ArbitScaleFeature,
`cfgs/imgrec_cifar10_mamba_lainr_fourier_bias.yaml`) is `spatial_bias="faithful_1d", alpha=10,
alpha_learnable=False, jitter_std=0, encoder_final_norm=False` (see docs/models-ginr-jepa.md).
"""

from dataclasses import dataclass
from typing import Literal

MambaBackend = Literal["auto", "mamba_ssm", "triton", "pure", "transformer"]


@dataclass(frozen=True)
class GinrConfig:
    """Mamba-GINR: patch tokenizer, learnable position (LP) tokens, bidirectional Mamba encoder, LAINR decoder."""

    image_size: int = 32
    """Side of the (square) training images; fixes the number of patch tokens."""
    patch_size: int = 2
    """Side of the square image patches the tokenizer flattens (2 on 32×32 images → 256 patch tokens)."""
    dim: int = 256
    """Token width of the encoder; also the decoder's hidden width."""
    pos_emb_dim: int = 32
    """Channels of the fixed Fourier positional embedding concatenated to each patch's projection
    (the projection gets `dim - pos_emb_dim`)."""
    num_lp: int = 256
    """Learnable position tokens interleaved equidistantly with the patch tokens; their encoder outputs
    are the latents."""
    depth: int = 6
    """Encoder blocks (each: bidirectional mixer + feed-forward, pre-norm residual)."""
    ff_dim: int = 1024
    """Hidden width of each encoder block's feed-forward layer."""
    mamba_backend: MambaBackend = "auto"
    """Sequence mixer: `auto` (the first of mamba_ssm, triton, pure that runs on the device), `mamba_ssm`
    (compiled CUDA kernels), `triton` (Triton scan, CUDA), `pure` (pure-PyTorch selective scan, mambapy) or
    `transformer` (self-attention)."""
    d_state: int = 16
    """Mamba SSM state size per channel."""
    d_conv: int = 4
    """Mamba depthwise causal convolution width."""
    expand: int = 2
    """Mamba inner width = `expand * dim`."""
    transformer_heads: int = 4
    """Attention heads of the `transformer` backend."""
    encoder_final_norm: bool = True
    """Add the last block's residual stream and apply a final LayerNorm to the encoder output. False
    reproduces the reference, which returns the last feed-forward output without residual or norm."""

    decoder: Literal["lainr", "simple"] = "lainr"
    """`lainr`: multi-scale Fourier features, spatially biased cross-attention, per-band heads summed.
    `simple`: the notebook decoder of seed 003 (unbiased cross-attention, concat with Fourier features, MLP)."""
    feature_dim: int = 64
    """LAINR Fourier feature width per band (4 × frequencies: sin and cos of both coordinates)."""
    sigma_q: float = 16.0
    """Highest frequency of the query encoding (frequencies log-spaced from `omega_min`)."""
    sigma_bands: tuple[float, ...] = (128.0, 32.0)
    """Highest frequency of each band; one output head per band, outputs summed."""
    omega_min: float = 10.0
    """Lowest frequency of every Fourier encoding (features are sin/cos(π ω x), x in [0, 1])."""
    heads: int = 2
    """Cross-attention heads of the decoder."""
    head_dim: int = 64
    """Width of each decoder attention head."""
    spatial_bias: Literal["2d", "faithful_1d", "none"] = "2d"
    """Additive attention bias −α·d²: `2d` uses the Euclidean distance between the query coordinate and
    the LP token's patch centre; `faithful_1d` reproduces the reference (distance of raster patch indices
    normalised to [0, 1], token k at (k+½)/num_lp); `none` disables it."""
    alpha: float = 256.0
    """Bias strength α on unit-square coordinates. 256 costs about one nat at one patch spacing (≈1/16) on
    32×32 images with 2×2 patches; the reference uses 10 (nearly flat)."""
    alpha_learnable: bool = True
    """Learn α (as log α, so it stays positive) instead of keeping it fixed."""
    simple_hidden: int = 512
    """Hidden width of the `simple` decoder's MLP."""
    simple_freqs: int = 64
    """Fourier frequencies per coordinate of the `simple` decoder (linearly spaced 1…simple_freqs)."""

    jitter_std: float = 0.01
    """Std of Gaussian noise added to the query coordinates during training, in unit-square units (0 = off,
    as in the reference trainer, where the call is commented out)."""

    def __post_init__(self):
        if self.dim <= self.pos_emb_dim or self.pos_emb_dim % 4:
            raise ValueError(f"need dim > pos_emb_dim and pos_emb_dim % 4 == 0, got {self.dim}, {self.pos_emb_dim}")
        if self.feature_dim % 4:
            raise ValueError(f"feature_dim must be a multiple of 4 (sin/cos of x and y), got {self.feature_dim}")
        if not self.sigma_bands:
            raise ValueError("sigma_bands needs at least one band")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.jitter_std < 0:
            raise ValueError(f"jitter_std must be >= 0, got {self.jitter_std}")
