"""The config of the `train` job kind: everything a trained neural field was made with.

It lives with the model families because they read it (`build(cfg)`, `training_loss(..., cfg)`: see
`nfjobs.models`), and a finished cell's `model.pt` stores it, so loading a trained field needs it
(`nfjobs.models.trained`). Light: no torch.
"""

from dataclasses import dataclass, field
from typing import Literal

from nfjobs.config import DataConfig, OptimConfig, runtime_field
from nfjobs.models.ginr_config import GinrConfig
from nfjobs.models.jepa_config import JepaConfig
from nfjobs.models.perceiver_config import PerceiverConfig
from nfjobs.nf.config import NceConfig


@dataclass(frozen=True)
class TrainConfig:
    """Train a neural field on images; report validation PSNR at several context fractions."""

    seed: int = 0
    """Seed of initialisation, batch order and every random draw in training."""
    data: DataConfig = DataConfig()
    """Training and validation images."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=(0.9, 0.95), warmup_steps=300, min_lr=1e-5))
    """AdamW and its warm-up + cosine learning-rate schedule."""
    model: Literal["perceiver", "ginr", "jepa"] = "perceiver"
    """Model family (`nfjobs.models.FAMILIES`); its sub-config below is used, the others are ignored."""
    perceiver: PerceiverConfig = PerceiverConfig()
    """Cascaded Perceiver-IO sizes (`model = "perceiver"`)."""
    ginr: GinrConfig = GinrConfig()
    """Mamba-GINR sizes (`model = "ginr"`)."""
    jepa: JepaConfig = JepaConfig()
    """NF+JEPA settings (`model = "jepa"`)."""
    context_frac: float = 1.0
    """Fraction of the pixels given as context in training (1.0 = full context; at least 64 points);
    the reconstruction target is always the full grid."""
    nce_weight: float = 0.0
    """Weight of the Soft-InfoNCE term added to reconstruction (0 = off), ramped in over `nce.ramp_steps`."""
    nce: NceConfig = NceConfig()
    """Soft-InfoNCE views, samples, temperature and projection."""
    jitter: bool = False
    """Move query coordinates within ±half a pixel (targets sampled bilinearly there)."""
    epochs: int = 40
    """Passes over the training images (the last incomplete batch of each is dropped)."""
    batch_size: int = 256
    """Images per optimisation step (the global batch: a cell of several ranks splits it between them)."""
    init_from: str = ""
    """Cell key or run directory of a finished `train` cell whose `model.pt` initialises the model
    (same family and sizes); empty = from scratch."""
    curve_images: int = 1000
    """Validation images scored after every epoch (the PSNR-vs-time curve); 0 = none."""
    eval_batch_size: int = runtime_field(500)
    """Images per evaluation forward pass."""
    precision: Literal["auto", "bf16", "fp32"] = runtime_field("auto")
    """Autocast dtype of the forward pass: `auto` = bf16 on CUDA, fp32 on CPU."""
    compile: bool = runtime_field(True)
    """`torch.compile` the training step (CUDA only)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = runtime_field("default")
    """`torch.compile` mode (`bench/train_throughput.py --modes` compares them)."""
    eval_split: Literal["val", "test"] = "val"
    """Split of the final evaluation: `val` (held out of the training images) or `test` (e.g. CIFAR-10's
    `test_batch`); the per-epoch curve always uses `val`."""

    def __post_init__(self):
        if not 0 < self.context_frac <= 1:
            raise ValueError(f"context_frac must be in (0, 1], got {self.context_frac}")
        if self.nce_weight < 0:
            raise ValueError(f"nce_weight must be >= 0, got {self.nce_weight}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
