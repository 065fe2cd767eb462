"""Options of token-decoded spatial maps, shared by the `cache` (frozen maps) and `probe` (maps decoded while a
field trains) job kinds. Light: no torch."""

from dataclasses import dataclass
from typing import Literal

from nfjobs.config import runtime_field


@dataclass(frozen=True)
class TdsmOptions:
    """Token-decoded spatial maps: which tokens, how each component image becomes channels."""

    every: int = 4
    """Decode every `every`-th latent token (ignored when `tokens` is given)."""
    tokens: tuple[int, ...] = ()
    """Explicit latent token indices to decode."""
    reduce: Literal["mean", "rgb", "l2"] = "mean"
    """Per pixel and token: mean over RGB, RGB kept (3 channels per token), or L2 norm."""
    chunk: int = runtime_field(512)
    """(image, token) pairs per decoder forward in the batched variant; 0 = one forward per token (loop)."""
