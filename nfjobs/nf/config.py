"""Soft-InfoNCE settings (dataclasses only: the CLI imports this without torch)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class NceConfig:
    """Soft-InfoNCE between two affine views: anchors in view A, candidates in view B, soft positives
    `w_ij ∝ exp(-|x_j - T(x_i)|² / 2σ²)`."""

    n_anchors: int = 256
    """Anchor coordinates per image in view A (uniform, continuous)."""
    n_candidates: int = 1024
    """Candidate coordinates per image in view B (uniform, continuous)."""
    tau: float = 0.1
    """Softmax temperature of the similarity logits."""
    sigma: float = 0.08
    """Width of the Gaussian soft-positive weights, in [-1, 1] coordinate units."""
    proj_dim: int = 128
    """Width of the linear projection of the decoder hidden state (then L2-normalised)."""
    ramp_steps: int = 500
    """The NCE weight rises linearly from 0 to `nce_weight` over this many steps."""
    max_angle_deg: float = 15.0
    """Largest rotation of view B, in degrees (uniform in ±this)."""
    scale_min: float = 0.8
    """Smallest isotropic scale of view B (uniform in [scale_min, scale_max])."""
    scale_max: float = 1.0
    """Largest isotropic scale of view B."""
    max_translate: float = 0.1
    """Largest translation of view B per axis, in [-1, 1] coordinate units."""

    def __post_init__(self):
        if self.tau <= 0 or self.sigma <= 0:
            raise ValueError(f"tau and sigma must be > 0, got tau={self.tau}, sigma={self.sigma}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
