"""Datasets as in-memory arrays: images are uint8 (N, H, W, 3), labels int64 (N,), traits bool (N, T).

Images are loaded once into memory (CIFAR-10 is 150 MB) and moved to the device by the job; augmentation
happens there, not per sample.
"""

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Bool, Int, UInt8

from nfjobs.config import DataConfig


@dataclass(frozen=True)
class Split:
    images: UInt8[np.ndarray, "N H W 3"]
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"] | None
    class_names: tuple[str, ...]
    trait_names: tuple[str, ...] = ()


def check(cfg: DataConfig, prefix: str = "data") -> list[tuple[str, str]]:
    """Pre-submission problems with `cfg` as `(dotted key, message)` pairs; empty when fine (a new list each
    call; the file-system checks behind it are memoised, since a sweep asks once per cell)."""
    return list(_check(cfg, prefix))


@functools.lru_cache(maxsize=1024)
def _check(cfg: DataConfig, prefix: str) -> tuple[tuple[str, str], ...]:
    if cfg.name == "cifar10":
        from nfjobs.data.cifar10 import check_root

        problem = check_root(cfg.root)
        return ((f"{prefix}.root", f"CIFAR-10 root {problem}"),) if problem else ()
    if cfg.name == "cub":
        from nfjobs.data.cub import check_root as check_cub

        problem = check_cub(cfg.root)
        return ((f"{prefix}.root", f"CUB-200-2011 root {problem}"),) if problem else ()
    return ()


def _hold_out(n: int, cfg: DataConfig, split: str) -> slice:
    n_val = int(round(n * cfg.val_frac))
    if split == "val":
        return slice(n - n_val, n)
    stop = n - n_val if cfg.n_train == 0 else min(cfg.n_train, n - n_val)
    return slice(0, stop)


def load_split(cfg: DataConfig, split: Literal["train", "val"]) -> Split:
    """The training images (minus the held-out tail) or the held-out validation images."""
    if cfg.name == "builtin":
        from nfjobs.data import builtin

        data = builtin.generate(cfg.builtin_n, cfg.builtin_seed)
        s = _hold_out(cfg.builtin_n, cfg, split)
        return Split(data.images[s], data.labels[s], data.traits[s], data.class_names, data.trait_names)
    if cfg.name == "cifar10":
        from nfjobs.data import cifar10

        images, labels, names = cifar10.load_train(cfg.root)
        s = _hold_out(len(images), cfg, split)
        return Split(images[s], labels[s], None, names)
    if cfg.name == "cub":
        from nfjobs.data import cub

        return cub.load_split(cfg, split)
    raise ValueError(f"unknown dataset {cfg.name!r}")
