"""The built-in dataset: 32x32 RGB shapes generated in code, with class labels and binary traits.

No files, no downloads; the same seed gives the same images on every machine. The class is the shape; the
traits describe colour, background, pattern, size, position, noise, a marker dot and shape families, so
classification probes and trait-scoring jobs have something real (and not trivially separable) to work on.
"""

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int, UInt8

SIZE = 32
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hbar", "vbar", "xcross", "semicircle")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "magenta": (210, 50, 200), "cyan": (40, 200, 210), "orange": (240, 140, 30), "white": (240, 240, 240),
}
BACKGROUNDS = {"black": (10, 10, 10), "gray": (110, 110, 110), "navy": (20, 25, 80), "beige": (200, 190, 160)}
PATTERNS = ("solid", "striped", "checkered")
SIZES = ("small", "medium", "large")
RADII = (5.0, 8.0, 11.0)
ROUND, THIN = {"circle", "ring", "semicircle"}, {"cross", "hbar", "vbar", "xcross"}

TRAIT_NAMES: tuple[str, ...] = (
    *(f"colour_{c}" for c in COLOURS),
    *(f"background_{b}" for b in BACKGROUNDS),
    *(f"pattern_{p}" for p in PATTERNS),
    *(f"size_{s}" for s in SIZES),
    "position_left", "position_right", "position_top", "position_bottom",
    "noisy", "has_dot", "shape_round", "shape_thin", "shape_polygon",
)


@dataclass(frozen=True)
class Shapes:
    images: UInt8[np.ndarray, "N 32 32 3"]
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"]
    class_names: tuple[str, ...] = SHAPES
    trait_names: tuple[str, ...] = TRAIT_NAMES


def _shape_masks(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks (S, N, H, W) of every shape in local coordinates u, v (radius 1 = shape size)."""
    au, av = np.abs(u), np.abs(v)
    r = np.sqrt(u**2 + v**2)
    return np.stack([
        r <= 1.0,  # circle
        (au <= 0.8) & (av <= 0.8),  # square
        (v <= 0.8) & (v >= -0.9 + 1.7 * au),  # triangle, apex up
        au + av <= 1.0,  # diamond
        ((au <= 0.28) | (av <= 0.28)) & (au <= 1.0) & (av <= 1.0),  # cross
        (r <= 1.0) & (r >= 0.6),  # ring
        (av <= 0.3) & (au <= 1.0),  # horizontal bar
        (au <= 0.3) & (av <= 1.0),  # vertical bar
        ((np.abs(u - v) <= 0.4) | (np.abs(u + v) <= 0.4)) & (au <= 0.85) & (av <= 0.85),  # diagonal cross
        (r <= 1.0) & (v >= 0.0),  # semicircle (flat side up)
    ])


def generate(n: int, seed: int = 0) -> Shapes:
    """`n` images with labels (shape index) and traits, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(SHAPES), n)
    colour = rng.integers(0, len(COLOURS), n)
    background = rng.integers(0, len(BACKGROUNDS), n)
    pattern = rng.integers(0, len(PATTERNS), n)
    size = rng.integers(0, len(SIZES), n)
    radius = np.asarray(RADII)[size] * rng.uniform(0.9, 1.1, n)
    cx = rng.uniform(radius, SIZE - 1 - radius)
    cy = rng.uniform(radius, SIZE - 1 - radius)
    noisy = rng.random(n) < 0.3
    has_dot = rng.random(n) < 0.4

    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    u = (xs[None] - cx[:, None, None]) / radius[:, None, None]
    v = (ys[None] - cy[:, None, None]) / radius[:, None, None]
    masks = _shape_masks(u, v)
    mask = masks[labels, np.arange(n)]  # (N, H, W)

    stripe = ((xs + ys).astype(int) // 3) % 2 == 0
    checker = ((xs.astype(int) // 3 + ys.astype(int) // 3) % 2) == 0
    pattern_on = np.stack([np.ones_like(stripe), stripe, checker])[pattern]  # (N, H, W)

    fg = np.asarray(list(COLOURS.values()), np.float32)[colour]  # (N, 3)
    bg = np.asarray(list(BACKGROUNDS.values()), np.float32)[background]
    shade = np.where(pattern_on, 1.0, 0.55)[..., None]  # pattern as darker fg
    img = np.where(mask[..., None], fg[:, None, None] * shade, bg[:, None, None])

    # marker dot in a corner away from the shape
    corner_x = np.where(cx > SIZE / 2, 3.0, SIZE - 4.0)
    corner_y = np.where(cy > SIZE / 2, 3.0, SIZE - 4.0)
    dot = ((xs[None] - corner_x[:, None, None]) ** 2 + (ys[None] - corner_y[:, None, None]) ** 2 <= 4.0)
    dot &= has_dot[:, None, None]
    img = np.where(dot[..., None], 255.0 - bg[:, None, None], img)
    noise = rng.normal(0.0, 25.0, img.shape).astype(np.float32)
    img = img + noise * noisy[:, None, None, None]
    images = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    one_hot = lambda idx, k: np.eye(k, dtype=bool)[idx]  # noqa: E731
    shape_names = np.asarray(SHAPES)[labels]
    traits = np.concatenate([
        one_hot(colour, len(COLOURS)),
        one_hot(background, len(BACKGROUNDS)),
        one_hot(pattern, len(PATTERNS)),
        one_hot(size, len(SIZES)),
        np.stack([cx < SIZE / 2, cx >= SIZE / 2, cy < SIZE / 2, cy >= SIZE / 2], 1),
        noisy[:, None], has_dot[:, None],
        np.isin(shape_names, list(ROUND))[:, None],
        np.isin(shape_names, list(THIN))[:, None],
        ~np.isin(shape_names, list(ROUND | THIN))[:, None],
    ], axis=1)
    return Shapes(images=images, labels=labels.astype(np.int64), traits=traits)
