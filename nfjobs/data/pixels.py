"""The builtin dataset as activations: every image cut into 4x4 RGB patches (what `activations =
"builtin-pixels"` names in `score` and `sae` cells), so the prototype protocol runs without a cache cell."""

from typing import Literal

import numpy as np
from einops import rearrange

from nfjobs.config import DataConfig
from nfjobs.data import load_split

PATCH = 4


def builtin_pixels(data: DataConfig, split: Literal["train", "val"]):
    """(images, 64, 48) float32 activations (4x4 RGB patches in [0, 1]), traits and trait names of the builtin
    dataset."""
    s = load_split(data, split)
    acts = rearrange(s.images, "n (h p1) (w p2) c -> n (h w) (p1 p2 c)", p1=PATCH, p2=PATCH)
    return acts.astype(np.float32) / 255.0, s.traits, s.trait_names
