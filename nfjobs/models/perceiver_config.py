"""Config of the cascaded Perceiver-IO neural field (dataclasses only: the CLI imports this without torch)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PerceiverConfig:
    """Cascaded Perceiver-IO: GFF(coords)+RGB context → cascaded latent blocks → processor → query decoder.
    Defaults are the seeds' configuration (about 35 M parameters)."""

    fourier_size: int = 96
    """Gaussian Fourier mapping size; coordinates embed to `2 * fourier_size` features."""
    fourier_scale: float = 15.0
    """Standard deviation of the Gaussian Fourier projection."""
    latent_dims: tuple[int, ...] = (256, 384, 512)
    """Width of each cascaded encoder block's latents (one block per entry)."""
    num_latents: int = 256
    """Latent tokens of every encoder block."""
    cross_heads: int = 4
    """Heads of the encoder and decoder cross-attention."""
    cross_dim_head: int = 128
    """Width of each cross-attention head."""
    self_heads: int = 8
    """Heads of the latent self-attention."""
    self_dim_head: int = 128
    """Width of each self-attention head."""
    ff_mult: int = 4
    """GEGLU feed-forward hidden width as a multiple of the token width."""
    processor_depth: int = 4
    """Self-attention + feed-forward blocks after the last encoder block."""
    decoder_ff: bool = True
    """Feed-forward layer in the decoder after the query skip connection."""
    learn_latents: bool = True
    """Train the sinusoidally initialised latent arrays (False keeps them fixed, as in the seeds)."""
    normalize_inputs: bool = True
    """Map RGB from [0, 1] to [-1, 1] for the context tokens and the decoder output (the model's API
    stays in [0, 1])."""

    def __post_init__(self):
        if not self.latent_dims:
            raise ValueError("latent_dims needs at least one entry")
        if any(d % 2 for d in self.latent_dims):
            raise ValueError(f"latent_dims must be even (sinusoidal init), got {self.latent_dims}")
